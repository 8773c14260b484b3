//! Answering the control socket: what each request means for the routers
//! (the transport and the JSON are in `control`).

use std::time::Instant;

use super::Daemon;
use super::router::Router;
use crate::actions::hooks::Hooks;
use crate::config::RouterConfig;
use crate::control::api;
use crate::control::api::{Route, RouterStatus};
use crate::control::server::{Incoming, Reply};
use crate::core::ident::RouterId;
use crate::core::state::State;
use crate::http::response as http;
use crate::logging::syslog;
use crate::supervisor::Supervisor;

impl Daemon {
    /// Every configured router: those started, then those still waiting
    /// to start (nothing known of them yet: no state, no keepalived).
    pub(super) fn status_rows(&self) -> Vec<RouterStatus> {
        self.routers
            .values()
            .map(|r| status_row(r, &self.hooks))
            .chain(self.starting.iter().map(starting_row))
            .collect()
    }

    /// The `/metrics` page, for the control socket and `metrics_listen`.
    pub(super) fn metrics_text(&self) -> String {
        let mut counters = self.counters.clone();
        let live = self.namespaces.values().filter_map(|w| w.socket.as_ref());
        counters.netlink_resyncs = self.netlink_closed.0 + live.clone().map(|(s, _)| s.resyncs()).sum::<u64>();
        counters.netlink_undecodable = self.netlink_closed.1 + live.map(|(s, _)| s.undecodable()).sum::<u64>();
        counters.control_refused = self.control.refused;
        counters.control_evicted = self.control.evicted;
        counters.metrics_refused = self.metrics_listener.as_ref().map_or(0, |m| m.refused);
        counters.log_dropped = syslog::dropped_messages();
        api::metrics(&self.status_rows(), &counters, &self.daemon_status())
    }

    /// The metrics listener's sources: only `GET /metrics` comes this far
    /// ([`crate::control::metrics_listener`]), and gets the page; nothing
    /// else from there reaches the daemon.
    pub(super) fn metrics_ready(&mut self, token: mio::Token, now: Instant) {
        let Some(listener) = self.metrics_listener.as_mut() else { return };
        let waiting = listener.ready(&mut self.sources, token, now);
        if waiting.is_empty() {
            return;
        }
        let body = self.metrics_text();
        let Some(listener) = self.metrics_listener.as_mut() else { return };
        for token in waiting {
            listener.answer(&mut self.sources, token, &body, now);
        }
    }

    /// Answers one control request.
    pub(super) fn handle(&mut self, incoming: Incoming, now: Instant) -> Reply {
        let Incoming { uid, request, .. } = incoming;
        let text = api::wants_text(request.header("accept"));
        let plain = |status: u16, body: &str| {
            Reply::Response(http::response(status, "text/plain; charset=utf-8", format!("{body}\n").as_bytes()))
        };
        match api::route(&request.method, &request.path) {
            Route::Notify => {
                if uid != 0 && !self.allowed_uids.contains(&uid) {
                    return plain(403, &format!("uid {uid} may not post state changes"));
                }
                let (Some(id), Some(state)) =
                    (request.header("x-neutron-router-id"), request.header("x-neutron-state"))
                else {
                    return plain(400, "X-Neutron-Router-Id and X-Neutron-State are required");
                };
                let Some(state) = State::parse(state) else {
                    return plain(400, "X-Neutron-State must be primary, backup or fault");
                };
                let Ok(id) = RouterId::parse(id) else {
                    return plain(400, "invalid router id");
                };
                let Some(router) = self.routers.get_mut(&id) else {
                    if self.starting.iter().any(|cfg| cfg.id == id) {
                        return plain(503, &format!("router {id} is still starting"));
                    }
                    return plain(404, &format!("no router {id}"));
                };
                log::info!("router {id}: state {state} posted by uid {uid}");
                let actions = router.rt.transitions.raw_change(state, now);
                self.apply_actions(&id, actions, now);
                plain(200, "ok")
            }
            Route::Routers => {
                let rows = self.status_rows();
                page(text, || api::routers_table(&rows), || api::routers_json(&rows))
            }
            Route::Router(id) => {
                let Ok(id) = RouterId::parse(&id) else {
                    return plain(400, "invalid router id");
                };
                let row = match self.routers.get(&id) {
                    Some(router) => Some(status_row(router, &self.hooks)),
                    None => self.starting.iter().find(|cfg| cfg.id == id).map(starting_row),
                };
                match row {
                    Some(row) => page(
                        text,
                        || api::routers_table(std::slice::from_ref(&row)),
                        || format!("{}\n", api::router_json(&row)),
                    ),
                    None => plain(404, &format!("no router {id}")),
                }
            }
            Route::Events => {
                let content_type = if text { "text/plain; charset=utf-8" } else { "application/x-ndjson" };
                let head = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n");
                Reply::Subscribe { head: head.into_bytes(), text }
            }
            Route::Metrics => {
                Reply::Response(http::response(200, "text/plain; version=0.0.4", self.metrics_text().as_bytes()))
            }
            Route::Daemon => {
                let status = self.daemon_status();
                page(text, || api::daemon_text(&status), || format!("{}\n", api::daemon_json(&status)))
            }
            Route::MethodNotAllowed { allow } => Reply::Response(http::response_allowing(
                405,
                allow,
                "text/plain; charset=utf-8",
                b"method not allowed\n",
            )),
            Route::NotFound => plain(404, "not found"),
        }
    }
}

/// A `200` status page: the readable table when the client asked for text
/// (`harouterd status`), JSON otherwise; only the one asked for is built.
fn page(text: bool, table: impl FnOnce() -> String, json: impl FnOnce() -> String) -> Reply {
    let (content_type, body) = if text { ("text/plain; charset=utf-8", table()) } else { ("application/json", json()) };
    Reply::Response(http::response(200, content_type, body.as_bytes()))
}

/// A router of the config not started yet: nothing known but its config
/// (and the config part of every started router's row).
fn starting_row(cfg: &RouterConfig) -> RouterStatus {
    RouterStatus {
        id: cfg.id.clone(),
        namespace: cfg.namespace.as_ref().map(|n| n.to_string()),
        ha_interface: cfg.ha_interface.clone(),
        vrid: cfg.vrid,
        primary_vip: cfg.primary_vip.to_string(),
        state: None,
        effective: None,
        since: None,
        supervised: cfg.keepalived,
        keepalived_pid: None,
        restarts: 0,
        conntrackd: false,
        conntrackd_pid: None,
        conntrackd_restarts: 0,
        transitions: 0,
        last_error: None,
        write_failures: 0,
        writes_pending: 0,
        scripts: Default::default(),
    }
}

pub(super) fn status_row(router: &Router, hooks: &Hooks) -> RouterStatus {
    let cfg = &router.rt.cfg;
    let sup = router.supervisor.as_ref();
    let scripts = hooks.stats(&cfg.id).cloned().unwrap_or_default();
    // One being stopped for good (turned off) is no longer the router's.
    let ctd = router.conntrackd_sup.as_ref().filter(|_| !router.conntrackd_off);
    RouterStatus {
        state: router.rt.transitions.raw(),
        effective: router.rt.transitions.effective(),
        since: router.rt.since,
        keepalived_pid: sup.and_then(Supervisor::pid),
        restarts: sup.map_or(0, Supervisor::restarts),
        conntrackd: ctd.is_some(),
        conntrackd_pid: ctd.and_then(Supervisor::pid),
        conntrackd_restarts: ctd.map_or(0, Supervisor::restarts),
        transitions: router.rt.effective_changes,
        last_error: router.rt.last_error().map(str::to_owned),
        write_failures: router.rt.write_failures,
        writes_pending: u32::from(router.rt.state_write_pending) + u32::from(router.files_retry.is_some()),
        scripts,
        ..starting_row(cfg)
    }
}
