//! What the control socket says (SPEC section 3.6): routing a request to
//! one of the endpoints, and the bodies of the answers — router status as
//! JSON or a readable table, events, Prometheus metrics. Pure: values in,
//! text out.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use super::json;
use crate::actions::hooks::ScriptStats;
use crate::core::ident::RouterId;
use crate::core::state::State;
use crate::http::request::Method;

/// The endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Neutron's `POST /` state notification.
    Notify,
    Routers,
    Router(String),
    Events,
    Metrics,
    /// The daemon itself: its config and the last reload.
    Daemon,
    /// A known path with the wrong method; `allow` is the one it takes.
    MethodNotAllowed {
        allow: &'static str,
    },
    NotFound,
}

pub fn route(method: &Method, path: &str) -> Route {
    let route = match path {
        "/" => Route::Notify,
        "/v1/routers" | "/v1/routers/" => Route::Routers,
        "/v1/events" => Route::Events,
        "/metrics" => Route::Metrics,
        "/v1/daemon" => Route::Daemon,
        p => match p.strip_prefix("/v1/routers/") {
            Some(id) => Route::Router(id.to_owned()),
            None => return Route::NotFound,
        },
    };
    let (allow, want) = match route {
        Route::Notify => ("POST", Method::Post),
        _ => ("GET", Method::Get),
    };
    if *method == want { route } else { Route::MethodNotAllowed { allow } }
}

/// Whether the client asked for text rather than JSON (`Accept:
/// text/plain`): `harouterd status` and `events` do, so they stay free of a
/// JSON parser.
pub fn wants_text(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("text/plain")))
}

/// One router as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterStatus {
    pub id: RouterId,
    pub namespace: Option<String>,
    pub ha_interface: String,
    pub vrid: u8,
    pub primary_vip: String,
    /// Raw state (the state file).
    pub state: Option<State>,
    /// What was last announced.
    pub effective: Option<State>,
    pub since: Option<SystemTime>,
    /// `false`: monitor only.
    pub supervised: bool,
    pub keepalived_pid: Option<u32>,
    /// keepalived respawns after a death.
    pub restarts: u32,
    /// Whether the daemon runs a conntrackd for it (`ha_conntrackd_enabled`,
    /// not monitor-only).
    pub conntrackd: bool,
    pub conntrackd_pid: Option<u32>,
    /// conntrackd respawns after a death.
    pub conntrackd_restarts: u32,
    pub transitions: u64,
    pub last_error: Option<String>,
    /// Failed attempts to write the router's files.
    pub write_failures: u64,
    /// The router's files waiting for a retry after a failed write.
    pub writes_pending: u32,
    /// Its transition script's runs.
    pub scripts: ScriptStats,
}

pub fn router_json(r: &RouterStatus) -> String {
    let mut out = String::new();
    write_router_json(&mut out, r);
    out
}

/// [`router_json`], appended to `out`.
fn write_router_json(out: &mut String, r: &RouterStatus) {
    let since = r.since.map(rfc3339);
    json::object_into(out, |o| {
        o.str("id", r.id.as_str())
            .opt_str("namespace", r.namespace.as_deref())
            .str("ha_interface", &r.ha_interface)
            .int("vrid", r.vrid)
            .str("primary_vip", &r.primary_vip)
            .opt_str("state", r.state.map(State::as_str))
            .opt_str("effective_state", r.effective.map(State::as_str))
            .opt_str("since", since.as_deref())
            .bool("keepalived", r.supervised)
            .opt_int("keepalived_pid", r.keepalived_pid)
            .int("restarts", r.restarts)
            .bool("conntrackd", r.conntrackd)
            .opt_int("conntrackd_pid", r.conntrackd_pid)
            .int("conntrackd_restarts", r.conntrackd_restarts)
            .int("transitions", r.transitions)
            .opt_str("last_error", r.last_error.as_deref())
            .object("transition_script", |o| {
                let s = &r.scripts;
                o.opt_str("running", s.running.map(State::as_str))
                    .int("runs", s.runs)
                    .int("failures", s.failures)
                    .int("timeouts", s.timeouts)
                    .int("superseded", s.superseded)
                    .opt_str("last_error", s.last_error.as_deref());
            });
    });
}

/// Every router, one buffer for the whole array (a thousand routers are
/// about 380 KB, asked for every few seconds by monitoring).
pub fn routers_json(routers: &[RouterStatus]) -> String {
    let mut out = String::with_capacity(routers.len() * 384 + 2);
    out.push('[');
    for (i, r) in routers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_router_json(&mut out, r);
    }
    out.push_str("]\n");
    out
}

/// The readable table of `harouterd status`.
pub fn routers_table(routers: &[RouterStatus]) -> String {
    let header =
        ["ROUTER", "NAMESPACE", "STATE", "EFFECTIVE", "SINCE", "KEEPALIVED", "RESTARTS", "CONNTRACKD", "LAST ERROR"];
    let rows: Vec<[String; 9]> = routers
        .iter()
        .map(|r| {
            [
                r.id.to_string(),
                r.namespace.clone().unwrap_or_else(|| "-".into()),
                r.state.map_or("-", State::as_str).to_owned(),
                r.effective.map_or("-", State::as_str).to_owned(),
                r.since.map_or_else(|| "-".into(), rfc3339),
                match (r.supervised, r.keepalived_pid) {
                    (false, _) => "monitor-only".into(),
                    (true, Some(pid)) => pid.to_string(),
                    (true, None) => "not running".into(),
                },
                r.restarts.to_string(),
                match (r.conntrackd, r.conntrackd_pid) {
                    (false, _) => "-".into(),
                    (true, Some(pid)) => format!("{pid} ({} restarts)", r.conntrackd_restarts),
                    (true, None) => format!("not running ({} restarts)", r.conntrackd_restarts),
                },
                match (&r.last_error, &r.scripts.last_error) {
                    (Some(e), Some(s)) => format!("{e}; {s}"),
                    (Some(e), None) | (None, Some(e)) => e.clone(),
                    (None, None) => "-".into(),
                },
            ]
            // One row per router, whatever an error message holds.
            .map(|cell| cell.replace(|c: char| c.is_control(), " "))
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    out
}

/// The daemon as `status` shows it above its routers: which config runs
/// and how the last reload (SIGHUP) went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonStatus {
    pub pid: u32,
    pub config: String,
    pub started: SystemTime,
    /// When the running config was read: at start, or by the last reload
    /// that was applied.
    pub loaded: SystemTime,
    /// The last reload, `None` before the first.
    pub last_reload: Option<ReloadOutcome>,
    /// Reloads taken (SIGHUP), applied or rejected.
    pub reloads: u64,
    /// Reloads whose config was rejected.
    pub reload_failures: u64,
    /// Routers whose files for the running config are not written yet (a
    /// config is applied in full only once they are).
    pub unwritten: Vec<RouterId>,
    /// Where `GET /metrics` is served over TCP, as bound.
    pub metrics_listen: Option<String>,
}

/// How one reload went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadOutcome {
    pub time: SystemTime,
    /// Why the new config was rejected (the old one keeps running);
    /// `None`: applied.
    pub error: Option<String>,
}

impl DaemonStatus {
    /// Whether the running config is the file's and is applied in full: the
    /// last reload (if any) was not rejected and every router's files are
    /// written.
    pub fn applied(&self) -> bool {
        self.last_reload.as_ref().is_none_or(|r| r.error.is_none()) && self.unwritten.is_empty()
    }

    /// `ok`, `rejected` or `pending` (accepted, files not all written).
    fn result(&self) -> &'static str {
        match &self.last_reload {
            Some(ReloadOutcome { error: Some(_), .. }) => "rejected",
            _ if !self.unwritten.is_empty() => "pending",
            _ => "ok",
        }
    }
}

pub fn daemon_json(d: &DaemonStatus) -> String {
    let unwritten: Vec<&str> = d.unwritten.iter().map(RouterId::as_str).collect();
    json::object(|o| {
        o.str("version", env!("CARGO_PKG_VERSION"))
            .int("pid", d.pid)
            .str("config", &d.config)
            .str("started", &rfc3339(d.started))
            .str("loaded", &rfc3339(d.loaded))
            .str("result", d.result())
            .int("reloads", d.reloads)
            .int("reload_failures", d.reload_failures)
            .opt_str("metrics_listen", d.metrics_listen.as_deref())
            .array("unwritten", |a| {
                for id in &unwritten {
                    a.str(id);
                }
            });
        match &d.last_reload {
            Some(r) => o.object("last_reload", |o| {
                o.str("time", &rfc3339(r.time)).opt_str("error", r.error.as_deref());
            }),
            None => o.null("last_reload"),
        };
    })
}

/// The line `harouterd status` prints above the routers.
pub fn daemon_text(d: &DaemonStatus) -> String {
    let mut out = format!("config {}: ", d.config);
    match &d.last_reload {
        None => {
            let _ = write!(out, "loaded at start {}, not reloaded since", rfc3339(d.loaded));
        }
        Some(ReloadOutcome { time, error: None }) => {
            let _ = write!(out, "last reload {} applied", rfc3339(*time));
        }
        Some(ReloadOutcome { time, error: Some(e) }) => {
            let _ = write!(
                out,
                "last reload {} REJECTED, still running the config loaded {}: {}",
                rfc3339(*time),
                rfc3339(d.loaded),
                e.replace(|c: char| c.is_control(), " ")
            );
        }
    }
    if !d.unwritten.is_empty() {
        let ids: Vec<&str> = d.unwritten.iter().map(RouterId::as_str).collect();
        let _ = write!(out, "; files of {} not written yet (retrying)", ids.join(", "));
    }
    if let Some(addr) = &d.metrics_listen {
        let _ = write!(out, "; GET /metrics on {addr}");
    }
    out.push('\n');
    out
}

/// An effective state change, as published on `/v1/events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Increases by one per event over the daemon's life: a subscriber can
    /// tell it missed nothing.
    pub seq: u64,
    pub router: RouterId,
    pub state: State,
    pub previous: Option<State>,
    pub time: SystemTime,
}

pub fn event_json(e: &Event) -> String {
    json::object(|o| {
        o.int("seq", e.seq)
            .str("router", e.router.as_str())
            .str("state", e.state.as_str())
            .opt_str("previous", e.previous.map(State::as_str))
            .str("time", &rfc3339(e.time));
    })
}

pub fn event_text(e: &Event) -> String {
    format!("{} {} {} -> {}", rfc3339(e.time), e.router, e.previous.map_or("-", State::as_str), e.state)
}

/// Daemon-wide counters for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub netlink_resyncs: u64,
    pub netlink_undecodable: u64,
    pub notify_failures: u64,
    pub notify_delivered: u64,
    pub events: u64,
    pub control_refused: u64,
    pub control_evicted: u64,
    /// Connections to `metrics_listen` refused at the connection cap.
    pub metrics_refused: u64,
    /// Log lines the logger could not deliver (syslog full or gone).
    pub log_dropped: u64,
}

/// Prometheus text format (version 0.0.4).
pub fn metrics(routers: &[RouterStatus], counters: &Counters, daemon: &DaemonStatus) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        name.to_owned()
    };
    let state = family("harouterd_router_state", "gauge", "1 for the router's effective state, 0 for the others.");
    let mut lines = Vec::new();
    for r in routers {
        for s in [State::Primary, State::Backup, State::Fault] {
            lines.push(format!(
                "{state}{{router=\"{}\",state=\"{s}\"}} {}",
                label(r.id.as_str()),
                u8::from(r.effective == Some(s))
            ));
        }
    }
    let push = |out: &mut String, lines: &mut Vec<String>| {
        for l in lines.drain(..) {
            out.push_str(&l);
            out.push('\n');
        }
    };
    push(&mut out, &mut lines);
    let per_router = |out: &mut String, name: &str, help: &str, value: &dyn Fn(&RouterStatus) -> u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for r in routers {
            let _ = writeln!(out, "{name}{{router=\"{}\"}} {}", label(r.id.as_str()), value(r));
        }
    };
    per_router(&mut out, "harouterd_transitions_total", "Effective state changes.", &|r| r.transitions);
    per_router(
        &mut out,
        "harouterd_write_failures_total",
        "Failed attempts to write the router's state file, keepalived.conf, health-check script or conntrackd.conf.",
        &|r| r.write_failures,
    );
    let pending = "harouterd_writes_pending";
    let _ = writeln!(
        out,
        "# HELP {pending} The router's files that could not be written and wait for a retry (0: all written).\n\
         # TYPE {pending} gauge"
    );
    for r in routers {
        let _ = writeln!(out, "{pending}{{router=\"{}\"}} {}", label(r.id.as_str()), r.writes_pending);
    }
    per_router(&mut out, "harouterd_keepalived_restarts_total", "keepalived respawns after a death.", &|r| {
        u64::from(r.restarts)
    });
    let restarts = "harouterd_conntrackd_restarts_total";
    let _ = writeln!(
        out,
        "# HELP {restarts} conntrackd respawns after a death (routers the daemon runs a conntrackd for).\n\
         # TYPE {restarts} counter"
    );
    for r in routers.iter().filter(|r| r.conntrackd) {
        let _ = writeln!(out, "{restarts}{{router=\"{}\"}} {}", label(r.id.as_str()), r.conntrackd_restarts);
    }
    per_router(&mut out, "harouterd_script_runs_total", "Transition script runs started.", &|r| r.scripts.runs);
    per_router(
        &mut out,
        "harouterd_script_failures_total",
        "Transition script runs that could not start, did not exit 0, or timed out.",
        &|r| r.scripts.failures,
    );
    per_router(
        &mut out,
        "harouterd_script_timeouts_total",
        "Transition script runs killed for running past transition_script_timeout.",
        &|r| r.scripts.timeouts,
    );
    per_router(
        &mut out,
        "harouterd_script_superseded_total",
        "Effective changes whose script run was replaced by a later change before it started.",
        &|r| r.scripts.superseded,
    );
    for (name, help, value) in [
        (
            "harouterd_netlink_resyncs_total",
            "rtnetlink re-dumps after a receive-queue overrun.",
            counters.netlink_resyncs,
        ),
        (
            "harouterd_netlink_undecodable_total",
            "rtnetlink messages skipped as undecodable.",
            counters.netlink_undecodable,
        ),
        ("harouterd_notify_failures_total", "Failed attempts to notify the agent socket.", counters.notify_failures),
        ("harouterd_notify_delivered_total", "Notifications the agent accepted.", counters.notify_delivered),
        ("harouterd_events_total", "Events published on /v1/events.", counters.events),
        (
            "harouterd_control_refused_total",
            "Control connections refused at the connection cap.",
            counters.control_refused,
        ),
        (
            "harouterd_control_evicted_total",
            "Idle unprivileged control connections closed to make room for root or allowed_uids.",
            counters.control_evicted,
        ),
        (
            "harouterd_metrics_refused_total",
            "Connections to metrics_listen refused at the connection cap.",
            counters.metrics_refused,
        ),
        (
            "harouterd_log_dropped_total",
            "Log lines dropped because syslog (or stderr) would not take them.",
            counters.log_dropped,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    }
    // Named as Prometheus names its own (prometheus_config_last_reload_*).
    let seconds = |t: SystemTime| {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        format!("{}.{:03}", d.as_secs(), d.subsec_millis())
    };
    for (name, kind, help, value) in [
        (
            "harouterd_config_last_reload_successful",
            "gauge",
            "1 when the running config is the one the last reload (or the start) read and every router's files \
             are written; 0 after a rejected reload or while files wait for a retry.",
            u8::from(daemon.applied()).to_string(),
        ),
        (
            "harouterd_config_last_reload_success_timestamp_seconds",
            "gauge",
            "When the running config was read (start, or the last applied reload), Unix time.",
            seconds(daemon.loaded),
        ),
        ("harouterd_config_reloads_total", "counter", "Reloads (SIGHUP) taken.", daemon.reloads.to_string()),
        (
            "harouterd_config_reload_failures_total",
            "counter",
            "Reloads whose config was rejected (the old one kept running).",
            daemon.reload_failures.to_string(),
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
    out
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `2026-11-21T07:40:09.123Z`
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (y, m, d) = crate::core::time::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn status(id: &str) -> RouterStatus {
        RouterStatus {
            id: RouterId::parse(id).unwrap(),
            namespace: Some("qrouter-1".into()),
            ha_interface: "ha-1".into(),
            vrid: 1,
            primary_vip: "169.254.0.1/24".into(),
            state: Some(State::Primary),
            effective: Some(State::Primary),
            since: Some(UNIX_EPOCH + Duration::from_millis(1_763_710_809_123)),
            supervised: true,
            keepalived_pid: Some(42),
            restarts: 2,
            conntrackd: true,
            conntrackd_pid: Some(43),
            conntrackd_restarts: 4,
            transitions: 3,
            last_error: Some("a \"quoted\"\nerror".into()),
            write_failures: 5,
            writes_pending: 1,
            scripts: ScriptStats { runs: 4, failures: 2, timeouts: 1, superseded: 3, ..ScriptStats::default() },
        }
    }

    fn daemon() -> DaemonStatus {
        DaemonStatus {
            pid: 42,
            config: "/etc/harouterd/harouterd.conf".into(),
            started: UNIX_EPOCH + Duration::from_secs(1000),
            loaded: UNIX_EPOCH + Duration::from_millis(1_000_250),
            last_reload: None,
            reloads: 0,
            reload_failures: 0,
            unwritten: Vec::new(),
            metrics_listen: None,
        }
    }

    #[test]
    fn reload_outcome_in_status_and_metrics() {
        let at_start = daemon();
        assert_eq!(
            daemon_text(&at_start),
            "config /etc/harouterd/harouterd.conf: loaded at start 1970-01-01T00:16:40.250Z, not reloaded since\n"
        );
        let json = daemon_json(&at_start);
        assert!(
            json.contains(
                "\"result\":\"ok\",\"reloads\":0,\"reload_failures\":0,\"metrics_listen\":null,\"unwritten\":[]"
            ),
            "{json}"
        );
        assert!(json.ends_with(",\"last_reload\":null}"), "{json}");
        let m = metrics(&[], &Counters::default(), &at_start);
        assert!(m.contains("\nharouterd_config_last_reload_successful 1\n"), "{m}");
        assert!(m.contains("\nharouterd_config_last_reload_success_timestamp_seconds 1000.250\n"), "{m}");

        let rejected = DaemonStatus {
            last_reload: Some(ReloadOutcome {
                time: UNIX_EPOCH + Duration::from_secs(2000),
                error: Some("/etc/h.conf:7: vrid: 300 is out of range 1..=254".into()),
            }),
            reloads: 2,
            reload_failures: 1,
            ..daemon()
        };
        assert!(!rejected.applied());
        let text = daemon_text(&rejected);
        assert!(
            text.contains("last reload 1970-01-01T00:33:20.000Z REJECTED, still running the config loaded"),
            "{text}"
        );
        assert!(text.ends_with(": /etc/h.conf:7: vrid: 300 is out of range 1..=254\n"), "{text}");
        let json = daemon_json(&rejected);
        assert!(json.contains("\"result\":\"rejected\""), "{json}");
        assert!(json.contains("\"error\":\"/etc/h.conf:7: vrid: 300 is out of range 1..=254\"}"), "{json}");
        let m = metrics(&[], &Counters::default(), &rejected);
        assert!(m.contains("\nharouterd_config_last_reload_successful 0\n"), "{m}");
        assert!(m.contains("# TYPE harouterd_config_reloads_total counter\nharouterd_config_reloads_total 2\n"), "{m}");
        assert!(m.contains("\nharouterd_config_reload_failures_total 1\n"), "{m}");

        let pending = DaemonStatus {
            last_reload: Some(ReloadOutcome { time: UNIX_EPOCH, error: None }),
            unwritten: vec![RouterId::parse("r1").unwrap()],
            ..daemon()
        };
        assert!(!pending.applied());
        assert!(daemon_text(&pending).ends_with("applied; files of r1 not written yet (retrying)\n"));
        assert!(daemon_json(&pending).contains("\"result\":\"pending\""));
        let listening = DaemonStatus { metrics_listen: Some("127.0.0.1:9652".into()), ..daemon() };
        assert!(daemon_text(&listening).ends_with(", not reloaded since; GET /metrics on 127.0.0.1:9652\n"));
        assert!(daemon_json(&listening).contains("\"metrics_listen\":\"127.0.0.1:9652\""));
    }

    #[test]
    fn routes() {
        assert_eq!(route(&Method::Post, "/"), Route::Notify);
        assert_eq!(route(&Method::Get, "/"), Route::MethodNotAllowed { allow: "POST" });
        assert_eq!(route(&Method::Get, "/v1/routers"), Route::Routers);
        assert_eq!(route(&Method::Get, "/v1/routers/r1"), Route::Router("r1".into()));
        assert_eq!(route(&Method::Get, "/v1/routers/../etc"), Route::Router("../etc".into()));
        assert_eq!(route(&Method::Post, "/v1/events"), Route::MethodNotAllowed { allow: "GET" });
        assert_eq!(route(&Method::Get, "/metrics"), Route::Metrics);
        assert_eq!(route(&Method::Get, "/v1/daemon"), Route::Daemon);
        assert_eq!(route(&Method::Post, "/v1/daemon"), Route::MethodNotAllowed { allow: "GET" });
        assert_eq!(route(&Method::Get, "/v2"), Route::NotFound);
    }

    #[test]
    fn accept_header() {
        assert!(wants_text(Some("text/plain")));
        assert!(wants_text(Some("application/json, text/plain;q=0.5")));
        assert!(!wants_text(Some("application/json")));
        assert!(!wants_text(None));
    }

    #[test]
    fn status_json_is_escaped() {
        let json = router_json(&status("r1"));
        assert!(json.starts_with("{\"id\":\"r1\",\"namespace\":\"qrouter-1\""), "{json}");
        assert!(json.contains("\"since\":\"2025-11-21T07:40:09.123Z\""), "{json}");
        assert!(json.contains("\"last_error\":\"a \\\"quoted\\\"\\nerror\""), "{json}");
        assert!(
            json.contains(
                "\"keepalived_pid\":42,\"restarts\":2,\"conntrackd\":true,\"conntrackd_pid\":43,\
                 \"conntrackd_restarts\":4,\"transitions\":3"
            ),
            "{json}"
        );
        assert!(
            json.ends_with(
                ",\"transition_script\":{\"running\":null,\"runs\":4,\"failures\":2,\"timeouts\":1,\"superseded\":3,\"last_error\":null}}"
            ),
            "{json}"
        );
        let mut none = status("r2");
        none.namespace = None;
        none.keepalived_pid = None;
        none.effective = None;
        none.conntrackd = false;
        none.conntrackd_pid = None;
        let json = router_json(&none);
        assert!(json.contains("\"namespace\":null") && json.contains("\"effective_state\":null"), "{json}");
        assert!(json.contains("\"conntrackd\":false,\"conntrackd_pid\":null"), "{json}");
        assert_eq!(routers_json(&[]), "[]\n");
    }

    #[test]
    fn table_has_one_row_per_router() {
        let mut other = status("router-two");
        other.supervised = false;
        other.conntrackd = false;
        other.last_error = None;
        let mut stopped = status("r3");
        stopped.conntrackd_pid = None;
        let mut failing = other.clone();
        failing.id = RouterId::parse("r4").unwrap();
        failing.scripts.last_error = Some("transition script for backup failed (exit code 1)".into());
        let table = routers_table(&[status("r1"), other, stopped, failing]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("ROUTER      NAMESPACE  STATE    EFFECTIVE"), "{table}");
        assert!(lines[0].contains("  RESTARTS  CONNTRACKD  "), "{table}");
        assert!(lines[1].contains("  43 (4 restarts)  "), "{table}");
        assert!(lines[2].contains("monitor-only") && lines[2].ends_with("-"), "{table}");
        assert!(lines[3].contains("  not running (4 restarts)  "), "{table}");
        assert!(lines[4].ends_with("  transition script for backup failed (exit code 1)"), "{table}");
    }

    #[test]
    fn events_and_metrics() {
        let e = Event {
            seq: 7,
            router: RouterId::parse("r1").unwrap(),
            state: State::Backup,
            previous: Some(State::Primary),
            time: UNIX_EPOCH,
        };
        assert_eq!(
            event_json(&e),
            "{\"seq\":7,\"router\":\"r1\",\"state\":\"backup\",\"previous\":\"primary\",\"time\":\"1970-01-01T00:00:00.000Z\"}"
        );
        assert_eq!(event_text(&e), "1970-01-01T00:00:00.000Z r1 primary -> backup");
        let m = metrics(
            &[status("r1")],
            &Counters { netlink_resyncs: 4, log_dropped: 3, ..Counters::default() },
            &daemon(),
        );
        assert!(m.contains("harouterd_router_state{router=\"r1\",state=\"primary\"} 1\n"), "{m}");
        assert!(m.contains("harouterd_router_state{router=\"r1\",state=\"backup\"} 0\n"), "{m}");
        assert!(m.contains("harouterd_keepalived_restarts_total{router=\"r1\"} 2\n"), "{m}");
        for (name, value) in [("runs", 4), ("failures", 2), ("timeouts", 1), ("superseded", 3)] {
            let sample = format!(
                "# TYPE harouterd_script_{name}_total counter\nharouterd_script_{name}_total{{router=\"r1\"}} {value}\n"
            );
            assert!(m.contains(&sample), "{m}");
        }
        assert!(
            m.contains(
                "# TYPE harouterd_conntrackd_restarts_total counter\n\
                 harouterd_conntrackd_restarts_total{router=\"r1\"} 4\n"
            ),
            "{m}"
        );
        let mut off = status("r2");
        off.conntrackd = false;
        assert!(!metrics(&[off], &Counters::default(), &daemon()).contains("harouterd_conntrackd_restarts_total{"));
        assert!(m.contains("# TYPE harouterd_write_failures_total counter\n"), "{m}");
        assert!(m.contains("harouterd_write_failures_total{router=\"r1\"} 5\n"), "{m}");
        assert!(
            m.contains("# TYPE harouterd_writes_pending gauge\nharouterd_writes_pending{router=\"r1\"} 1\n"),
            "{m}"
        );
        assert!(
            m.contains("# TYPE harouterd_netlink_resyncs_total counter\nharouterd_netlink_resyncs_total 4\n"),
            "{m}"
        );
        assert!(m.contains("# TYPE harouterd_log_dropped_total counter\nharouterd_log_dropped_total 3\n"), "{m}");
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
