//! What the daemon tells whoever started it, and when (issue 14, "honest
//! start-up"): the detaching parent of `harouterd run`, which waits on a
//! pipe until the daemon serves or fails ([`daemonize::detach_reporting`],
//! as the Neutron monitor does), and systemd under `Type=notify`
//! ([`SdNotify`]). Also the config's history for `status` and `/metrics`:
//! when the running config was read and how the last reload went.
//!
//! **Serving** means: the control socket is bound and listening (so
//! `harouterd status` answers), and every configured router has been
//! started: its namespace's rtnetlink socket is open with the initial
//! address dump requested, its keepalived spawned or adopted. The loop
//! starts the routers a batch per pass (answering the control socket from
//! the first pass) and says so before the first wait after the last one
//! started; a SIGTERM before that ends the wait with a failure. A start-up
//! failure before that point (a `socket_group` that does not exist, a
//! socket in use) reaches the terminal with the daemon's own message and
//! exit status, and systemd sees the process exit before `READY=1`.
//!
//! [`daemonize::detach_reporting`]: crate::sys::daemonize::detach_reporting

use std::time::{Duration, Instant, SystemTime};

use super::Daemon;
use crate::Exit;
use crate::config::{ConfigErrors, OnExit};
use crate::control::api::{DaemonStatus, ReloadOutcome};
use crate::core::ident::RouterId;
use crate::sys::daemonize::Readiness;
use crate::sys::sd_notify::{self, SdNotify};

/// The daemon's listeners: the detaching parent (until start-up is over)
/// and systemd (for the daemon's whole life).
#[derive(Debug, Default)]
pub struct Service {
    parent: Option<Readiness>,
    systemd: Option<SdNotify>,
    /// The logger is installed: failures go to the log (and, detached, to
    /// the parent) rather than straight to stderr.
    logging: bool,
    /// Said once the logger is installed.
    unusable_notify_socket: Option<String>,
}

impl Service {
    /// Listeners from the environment: systemd when `$NOTIFY_SOCKET` is
    /// set (an unusable one is logged and ignored).
    pub fn from_env() -> Service {
        let (systemd, unusable_notify_socket) = match SdNotify::from_env() {
            None => (None, None),
            Some(Ok(notify)) => (Some(notify), None),
            Some(Err(e)) => (None, Some(format!("ignoring {}: {e}", sd_notify::NOTIFY_SOCKET))),
        };
        Service { parent: None, systemd, logging: false, unusable_notify_socket }
    }

    /// The parent waits for our word from now on.
    pub fn detached(&mut self, parent: Readiness) {
        self.parent = Some(parent);
    }

    /// Failures are logged from now on.
    pub fn logging(&mut self) {
        self.logging = true;
        if let Some(warning) = self.unusable_notify_socket.take() {
            log::warn!("{warning}");
        }
    }

    /// Start-up failed: `message` goes to the log, to the waiting parent
    /// (which prints it and exits with `exit`) or, with neither, to stderr;
    /// and to systemd as the status. Returns `exit`.
    pub fn failed(&mut self, exit: Exit, message: &str) -> Exit {
        if self.logging {
            log::error!("{message}");
        }
        let text = format!("harouterd: {message}");
        match self.parent.take() {
            Some(parent) => parent.failed(exit as u8, &text),
            None if !self.logging => eprintln!("{text}"),
            None => {}
        }
        self.notify(&sd_notify::status_line(&format!("failed to start: {message}")));
        exit
    }

    /// Serving (module docs): the parent exits 0, systemd hears `READY=1`.
    pub fn serving(&mut self, status: &str) {
        if let Some(parent) = self.parent.take() {
            parent.ready();
        }
        self.notify(&format!("READY=1\n{}", sd_notify::status_line(status)));
    }

    /// A SIGHUP is being applied.
    pub fn reloading(&self) {
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", sd_notify::monotonic_usec()));
    }

    /// The reload is over, applied or not: the daemon serves either way.
    pub fn reloaded(&self, status: &str) {
        self.notify(&format!("READY=1\n{}", sd_notify::status_line(status)));
    }

    /// SIGTERM: stopping.
    pub fn stopping(&self) {
        self.notify("STOPPING=1");
    }

    fn notify(&self, message: &str) {
        if let Some(systemd) = &self.systemd {
            systemd.notify(message);
        }
    }
}

/// When the running config was read and how the reloads went.
#[derive(Clone, Debug)]
pub(super) struct ReloadLog {
    started: SystemTime,
    loaded: SystemTime,
    last: Option<ReloadOutcome>,
    reloads: u64,
    failures: u64,
}

impl ReloadLog {
    pub(super) fn new() -> ReloadLog {
        let now = SystemTime::now();
        ReloadLog { started: now, loaded: now, last: None, reloads: 0, failures: 0 }
    }
}

impl Daemon {
    /// Hands the daemon its listeners (see [`Service`]).
    pub fn set_service(&mut self, service: Service) {
        self.service = service;
    }

    /// Stops keepalived at exit whatever `on_exit` says: when the daemon is
    /// PID 1 of a PID namespace, every process in it dies with it anyway
    /// (SIGKILL from the kernel), leaving VIPs on the interfaces and the
    /// peer unaware; stopping them first lets each remove its VIPs and send
    /// its priority-0 advert.
    pub fn stop_keepalived_on_exit(&mut self) {
        self.stop_on_exit = true;
    }

    /// What happens to keepalived when the daemon exits.
    pub(super) fn on_exit(&self) -> OnExit {
        if self.stop_on_exit { OnExit::Stop } else { self.config.daemon.on_exit }
    }

    /// Once every configured router was started (see the module docs).
    pub(super) fn started_serving(&mut self) {
        let status = format!("serving {} routers", self.routers.len());
        log::info!("{status}");
        self.service.serving(&status);
    }

    /// SIGHUP: the reload between systemd's `RELOADING=1` and `READY=1`.
    pub(super) fn reload_signalled(&mut self, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        self.service.reloading();
        self.reload(now);
        let status = self.daemon_status();
        let text = match (&status.last_reload, status.applied()) {
            (Some(ReloadOutcome { error: Some(e), .. }), _) => format!("reload rejected: {e}"),
            (_, false) => format!("serving {} routers; reloaded, some files not written yet", self.routers.len()),
            (_, true) => format!("serving {} routers; reloaded", self.routers.len()),
        };
        self.service.reloaded(&text);
    }

    /// The reload read a config it cannot use: the old one keeps running.
    pub(super) fn reload_rejected(&mut self, errors: &ConfigErrors) {
        let log = &mut self.reload_log;
        log.reloads += 1;
        log.failures += 1;
        log.last = Some(ReloadOutcome { time: SystemTime::now(), error: Some(errors.to_string()) });
    }

    /// The reload's config was accepted and its diff applied.
    pub(super) fn reload_applied(&mut self) {
        self.hooks.set_timeout(Duration::from_secs(u64::from(self.config.daemon.transition_script_timeout)));
        let now = SystemTime::now();
        let log = &mut self.reload_log;
        log.reloads += 1;
        log.loaded = now;
        log.last = Some(ReloadOutcome { time: now, error: None });
    }

    pub(super) fn daemon_status(&self) -> DaemonStatus {
        let log = &self.reload_log;
        let unwritten: Vec<RouterId> = self
            .routers
            .iter()
            .filter(|(_, r)| r.files_retry.is_some() && !r.leaving)
            .map(|(id, _)| id.clone())
            .collect();
        DaemonStatus {
            pid: std::process::id(),
            config: self.config_path.display().to_string(),
            started: log.started,
            loaded: log.loaded,
            last_reload: log.last.clone(),
            reloads: log.reloads,
            reload_failures: log.failures,
            unwritten,
            metrics_listen: self.metrics_listener.as_ref().map(|m| m.local_addr().to_string()),
        }
    }
}
