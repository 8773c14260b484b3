//! What a SIGHUP changes: the pure diff between the running config and a
//! newly read one, router by router.
//!
//! Invariant: a router is left alone (not signalled, not restarted) unless
//! something that reaches it changed: its own settings, or a daemon setting
//! that shows up in its rendered files. The line a router sits on does not
//! count, so editing one router never touches the others.

use crate::config::{Config, RouterConfig};
use crate::core::ident::RouterId;
use crate::core::layout::Layout;
use crate::keepalived::{self, conf::Secrets};

/// What to do with one router that is in both configs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterChange {
    /// Nothing that reaches it changed.
    None,
    /// Re-render; reload keepalived if its files changed; adopt new timings.
    Update,
    /// Where or what it watches changed (namespace, HA interface, primary
    /// VIP, keepalived on/off): stop it and start it again.
    Restart,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<RouterId>,
    pub removed: Vec<RouterId>,
    pub updated: Vec<RouterId>,
    pub restarted: Vec<RouterId>,
    pub unchanged: Vec<RouterId>,
}

/// How `old` and `new` differ, for one router present in both.
pub fn router_change(old_cfg: &Config, old: &RouterConfig, new_cfg: &Config, new: &RouterConfig) -> RouterChange {
    let same_place = old.namespace == new.namespace
        && old.ha_interface == new.ha_interface
        && old.primary_vip == new.primary_vip
        && old.keepalived == new.keepalived
        && old_cfg.daemon.ha_confs_path == new_cfg.daemon.ha_confs_path;
    if !same_place {
        return RouterChange::Restart;
    }
    let files = |cfg: &Config, r: &RouterConfig| {
        keepalived::router_files(&cfg.daemon, r, &Layout::new(&cfg.daemon.ha_confs_path), Secrets::Show)
    };
    let mut old_rest = old.clone();
    old_rest.line = new.line;
    let daemon_side_same = old_cfg.daemon.conntrackd_enabled == new_cfg.daemon.conntrackd_enabled
        && old_cfg.daemon.conntrackd_path == new_cfg.daemon.conntrackd_path
        && old_cfg.daemon.keepalived_path == new_cfg.daemon.keepalived_path;
    if old_rest == *new && daemon_side_same && files(old_cfg, old) == files(new_cfg, new) {
        RouterChange::None
    } else {
        RouterChange::Update
    }
}

pub fn diff(old: &Config, new: &Config) -> Diff {
    let mut d = Diff::default();
    for r in &new.routers {
        match old.router(r.id.as_str()) {
            None => d.added.push(r.id.clone()),
            Some(o) => match router_change(old, o, new, r) {
                RouterChange::None => d.unchanged.push(r.id.clone()),
                RouterChange::Update => d.updated.push(r.id.clone()),
                RouterChange::Restart => d.restarted.push(r.id.clone()),
            },
        }
    }
    for r in &old.routers {
        if new.router(r.id.as_str()).is_none() {
            d.removed.push(r.id.clone());
        }
    }
    d
}

use std::time::{Duration, Instant};

use super::{Daemon, notifier_for};
use crate::config;
use crate::supervisor::{Kind, Supervisor};

impl Daemon {
    pub(super) fn reload(&mut self, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        let parsed = match config::load(&self.config_path) {
            Ok(parsed) => parsed,
            Err(errors) => {
                for e in &errors.0 {
                    log::error!("reload rejected, keeping the running config: {e}");
                }
                self.reload_rejected(&errors);
                return;
            }
        };
        for w in &parsed.warnings {
            log::warn!("{w}");
        }
        let new = parsed.config;
        let mut diff = diff(&self.config, &new);
        // A router whose files could not be written was not applied: this
        // reload writes them again, whatever the diff says.
        let (unwritten, unchanged) = std::mem::take(&mut diff.unchanged)
            .into_iter()
            .partition(|id| self.routers.get(id).is_some_and(|r| r.files_retry.is_some() && !r.leaving));
        diff.unchanged = unchanged;
        diff.updated.extend::<Vec<RouterId>>(unwritten);
        log::info!(
            "reloading {}: {} added, {} removed, {} updated, {} restarted, {} unchanged",
            self.config_path.display(),
            diff.added.len(),
            diff.removed.len(),
            diff.updated.len(),
            diff.restarted.len(),
            diff.unchanged.len()
        );
        let listen = |c: &Config| c.daemon.metrics_listen.map_or_else(|| "nowhere".to_owned(), |a| a.to_string());
        for (what, old, new_value) in [
            ("socket", self.config.daemon.socket.display().to_string(), new.daemon.socket.display().to_string()),
            ("metrics_listen", listen(&self.config), listen(&new)),
            (
                "state_path",
                self.config.daemon.state_path.display().to_string(),
                new.daemon.state_path.display().to_string(),
            ),
            (
                "ha_confs_path",
                self.config.daemon.ha_confs_path.display().to_string(),
                new.daemon.ha_confs_path.display().to_string(),
            ),
        ] {
            if old != new_value {
                log::warn!("{what} changed from {old} to {new_value}: takes effect on restart");
            }
        }
        let old = std::mem::replace(&mut self.config, new.clone());
        self.config.daemon.ha_confs_path = old.daemon.ha_confs_path.clone();
        self.config.daemon.state_path = old.daemon.state_path.clone();
        self.config.daemon.socket = old.daemon.socket.clone();
        self.config.daemon.metrics_listen = old.daemon.metrics_listen;
        self.requeue_starting();
        if old.daemon.notify_agent_socket != self.config.daemon.notify_agent_socket
            && let Some(old) = std::mem::replace(&mut self.notifier, notifier_for(&self.config))
        {
            old.abandon(&mut self.sources);
        }
        for id in &diff.removed {
            self.stop_router(id, now);
        }
        for id in &diff.restarted {
            let cfg = new.router(id.as_str()).cloned();
            if let Some(router) = self.routers.get_mut(id) {
                router.replacement = cfg;
            }
            self.stop_router(id, now);
        }
        for id in &diff.updated {
            let Some(cfg) = new.router(id.as_str()).cloned() else { continue };
            self.update_router(id, cfg, now);
        }
        for id in &diff.added {
            if let Some(cfg) = new.router(id.as_str()).cloned() {
                self.start_router(cfg, now);
            }
        }
        self.reload_applied();
    }

    /// A router changed in place: new files (keepalived re-reads its own,
    /// conntrackd restarts on a new conntrackd.conf), new timings, and its
    /// conntrackd started or stopped when `ha_conntrackd_enabled` toggled.
    pub(super) fn update_router(&mut self, id: &RouterId, cfg: RouterConfig, now: Instant) {
        let Some(mut router) = self.routers.remove(id) else { return };
        router.rt.transitions.set_advert_int(Duration::from_secs(u64::from(cfg.advert_int)));
        router.rt.cfg = cfg;
        if !self.config.daemon.conntrackd_enabled {
            router.conntrackd = None;
        } else if router.conntrackd.is_none() {
            router.conntrackd = Some(self.conntrackd_for(&router.rt.cfg));
        }
        let mut written = self.sync_files(&mut router, now);
        let mut updated = Vec::new();
        let sups = [(Kind::Conntrackd, router.conntrackd_sup.as_mut()), (Kind::Keepalived, router.supervisor.as_mut())];
        for (kind, sup) in sups {
            if let Some(sup) = sup {
                updated.push((kind, sup.update(&self.config.daemon, &router.rt.cfg, now)));
            }
        }
        let start_conntrackd = self.runs_conntrackd(&router.rt.cfg) && router.conntrackd_sup.is_none();
        let stop_conntrackd = !self.runs_conntrackd(&router.rt.cfg) && router.conntrackd_sup.is_some();
        self.routers.insert(id.to_owned(), router);
        for (kind, outcomes) in updated {
            self.supervisor_outcomes(id, kind, outcomes, now);
        }
        if start_conntrackd && let Some(router) = self.routers.get_mut(id) {
            log::info!("router {id}: conntrackd is on: starting it");
            let mut sup = Supervisor::conntrackd(&self.config.daemon, &router.rt.cfg, &self.confs);
            let outcomes = sup.start(now);
            router.conntrackd_sup = Some(sup);
            self.supervisor_outcomes(id, Kind::Conntrackd, outcomes, now);
            // It read the new file (unless an old one was adopted).
            let adopted = self.routers.get(id).and_then(|r| r.conntrackd_sup.as_ref()).is_some_and(Supervisor::adopted);
            written.changed.conntrackd &= adopted;
        }
        if stop_conntrackd {
            self.stop_conntrackd_for_good(id, now);
        }
        self.apply_written(id, written, now);
        self.evaluate(id, now);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn id(text: &str) -> RouterId {
        RouterId::parse(text).unwrap()
    }

    fn cfg(text: &str) -> Config {
        crate::config::parse(Path::new("/x.conf"), text).unwrap_or_else(|e| panic!("{e}")).config
    }

    const BASE: &str = "[daemon]\nha_vrrp_advert_int = 2\n\
        [router a]\nnamespace = ns-a\nha_interface = ha-a\nvrid = 1\nvip = 10.0.0.1/24 dev qr-a\n\
        [router b]\nnamespace = ns-b\nha_interface = ha-b\nvrid = 2\n";

    #[test]
    fn identical_configs_change_nothing_even_when_lines_move() {
        let moved = format!("# a comment that shifts every line\n\n{BASE}");
        let d = diff(&cfg(BASE), &cfg(&moved));
        assert_eq!(d, Diff { unchanged: vec![id("a"), id("b")], ..Diff::default() });
    }

    #[test]
    fn added_removed_and_updated_routers() {
        let new = BASE
            .replace("vip = 10.0.0.1/24 dev qr-a\n", "vip = 10.0.0.1/24 dev qr-a\nvip = 10.0.9.1/24 dev qr-a\n")
            .replace(
                "[router b]\nnamespace = ns-b\nha_interface = ha-b\nvrid = 2\n",
                "[router c]\nha_interface = ha-c\nvrid = 3\n",
            );
        let d = diff(&cfg(BASE), &cfg(&new));
        assert_eq!(d.updated, ["a"]);
        assert_eq!(d.added, ["c"]);
        assert_eq!(d.removed, ["b"]);
        assert!(d.unchanged.is_empty() && d.restarted.is_empty());
    }

    #[test]
    fn daemon_settings_reach_the_routers_that_inherit_them() {
        let new = BASE.replace("ha_vrrp_advert_int = 2", "ha_vrrp_advert_int = 3");
        assert_eq!(diff(&cfg(BASE), &cfg(&new)).updated, ["a", "b"]);
        let new = BASE.replace("[daemon]\n", "[daemon]\nkeepalived_router_id = node2\n");
        assert_eq!(diff(&cfg(BASE), &cfg(&new)).updated, ["a", "b"]);
        // A daemon setting no router uses changes no router.
        let new = BASE.replace("[daemon]\n", "[daemon]\ntransition_script = /bin/true\n");
        assert_eq!(diff(&cfg(BASE), &cfg(&new)).unchanged, ["a", "b"]);
    }

    #[test]
    fn where_a_router_lives_means_restart() {
        for (from, to) in [
            ("namespace = ns-a", "namespace = ns-z"),
            ("ha_interface = ha-a", "ha_interface = ha-z"),
            ("vrid = 1\n", "vrid = 9\n"),
            ("vrid = 1\n", "vrid = 1\nkeepalived = false\n"),
        ] {
            let d = diff(&cfg(BASE), &cfg(&BASE.replace(from, to)));
            assert_eq!(d.restarted, ["a"], "{from} -> {to}");
            assert_eq!(d.unchanged, ["b"]);
        }
    }
}
