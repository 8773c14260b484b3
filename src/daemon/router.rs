//! One router's runtime inside the daemon: its config, where its raw state
//! comes from, its transition machine, and what it shows in `status`.
//!
//! The raw state has three inputs, combined in [`RouterRuntime::raw_input`]:
//! keepalived's own FAULT (from the notify FIFO) wins; otherwise the primary
//! VIP on the HA interface means `primary`, its absence `backup`. Until the
//! namespace has been read once there is no raw state at all: nothing is
//! reported from a guess.

use std::time::{Duration, Instant, SystemTime};

use mio::Token;

use super::namespaces::HaLink;
use super::supervision::FilesRetry;
use crate::config::RouterConfig;
use crate::conntrackd::sync::ConntrackdSync;
use crate::core::state::State;
use crate::core::transition::Transitions;
use crate::keepalived::notify_fifo::NotifyFifo;
use crate::netlink::VipWatch;
use crate::supervisor::{Kind, Supervisor};

pub struct RouterRuntime {
    pub cfg: RouterConfig,
    pub transitions: Transitions,
    /// `None` until the router's namespace has been dumped.
    pub vip_present: Option<bool>,
    /// keepalived said FAULT (and has not said anything else since).
    pub keepalived_fault: bool,
    /// When the effective state last changed.
    pub since: Option<SystemTime>,
    pub effective_changes: u64,
    /// Failed attempts to write any of its files (state, keepalived.conf,
    /// health-check script), for `/metrics`.
    pub write_failures: u64,
    /// Its state file could not be written and waits for a retry.
    pub state_write_pending: bool,
    /// Problems worth showing until they are over, by source, so one
    /// source clearing its problem does not hide another's.
    pub(super) errors: Vec<(ErrorSource, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorSource {
    Namespace,
    HaInterface,
    Keepalived,
    Conntrackd,
    /// keepalived.conf, the health-check script or conntrackd.conf.
    Files,
    StateFile,
}

impl ErrorSource {
    /// Where a supervised program's problems are shown.
    pub fn of(kind: Kind) -> ErrorSource {
        match kind {
            Kind::Keepalived => ErrorSource::Keepalived,
            Kind::Conntrackd => ErrorSource::Conntrackd,
        }
    }
}

/// A router and everything the daemon runs for it.
pub(super) struct Router {
    pub(super) rt: RouterRuntime,
    /// Its keepalived.
    pub(super) supervisor: Option<Supervisor>,
    pub(super) fifo: Option<(NotifyFifo, Token)>,
    pub(super) pidfd_token: Option<Token>,
    /// The transition sync (`ha_conntrackd_enabled`).
    pub(super) conntrackd: Option<ConntrackdSync>,
    /// Its conntrackd (`ha_conntrackd_enabled`, not monitor-only).
    pub(super) conntrackd_sup: Option<Supervisor>,
    pub(super) conntrackd_pidfd_token: Option<Token>,
    /// conntrackd is being stopped for good (turned off, or left over from
    /// a config that had it): once stopped, its files go and so does
    /// `conntrackd_sup`.
    pub(super) conntrackd_off: bool,
    /// Being stopped because it left the config (or is restarting); its
    /// replacement, if any, starts once it is gone.
    pub(super) leaving: bool,
    pub(super) replacement: Option<RouterConfig>,
    /// The HA interface as last seen, to tell when it comes back as a new
    /// interface.
    pub(super) ha_link: HaLink,
    /// Its keepalived files could not all be written: the config they
    /// carry is not applied (keepalived not reloaded) until a retry or a
    /// later reload writes them.
    pub(super) files_retry: Option<FilesRetry>,
}

impl Router {
    /// A router of `cfg` with nothing started yet.
    pub(super) fn new(cfg: RouterConfig) -> Router {
        Router {
            rt: RouterRuntime::new(cfg),
            supervisor: None,
            fifo: None,
            pidfd_token: None,
            conntrackd: None,
            conntrackd_sup: None,
            conntrackd_pidfd_token: None,
            conntrackd_off: false,
            leaving: false,
            replacement: None,
            ha_link: HaLink::Unknown,
            files_retry: None,
        }
    }

    pub(super) fn sup(&self, kind: Kind) -> Option<&Supervisor> {
        match kind {
            Kind::Keepalived => self.supervisor.as_ref(),
            Kind::Conntrackd => self.conntrackd_sup.as_ref(),
        }
    }

    pub(super) fn sup_mut(&mut self, kind: Kind) -> Option<&mut Supervisor> {
        match kind {
            Kind::Keepalived => self.supervisor.as_mut(),
            Kind::Conntrackd => self.conntrackd_sup.as_mut(),
        }
    }

    pub(super) fn pidfd_token_mut(&mut self, kind: Kind) -> &mut Option<Token> {
        match kind {
            Kind::Keepalived => &mut self.pidfd_token,
            Kind::Conntrackd => &mut self.conntrackd_pidfd_token,
        }
    }

    /// Its supervisors, conntrackd's first (the order they start in).
    pub(super) fn supervisors(&self) -> impl Iterator<Item = &Supervisor> {
        self.conntrackd_sup.iter().chain(self.supervisor.iter())
    }

    /// The earliest timer of its supervisors.
    pub(super) fn supervisor_deadline(&self) -> Option<Instant> {
        crate::sys::event_loop::earliest(self.supervisors().map(Supervisor::next_deadline))
    }

    /// Nothing of its programs runs or will be spawned.
    pub(super) fn programs_stopped(&self) -> bool {
        self.supervisors().all(Supervisor::is_stopped)
    }
}

impl RouterRuntime {
    pub fn new(cfg: RouterConfig) -> RouterRuntime {
        let advert = Duration::from_secs(u64::from(cfg.advert_int));
        RouterRuntime {
            cfg,
            transitions: Transitions::new(advert),
            vip_present: None,
            keepalived_fault: false,
            since: None,
            effective_changes: 0,
            write_failures: 0,
            state_write_pending: false,
            errors: Vec::new(),
        }
    }

    /// What tells the router's raw state: its primary VIP on its HA
    /// interface.
    pub fn vip(&self) -> VipWatch<'_> {
        VipWatch { ifname: &self.cfg.ha_interface, cidr: &self.cfg.primary_vip }
    }

    pub fn raw_input(&self) -> Option<State> {
        if self.keepalived_fault {
            return Some(State::Fault);
        }
        self.vip_present.map(|present| if present { State::Primary } else { State::Backup })
    }

    pub fn set_error(&mut self, source: ErrorSource, message: String) {
        match self.errors.iter_mut().find(|(s, _)| *s == source) {
            Some(entry) => entry.1 = message,
            None => self.errors.push((source, message)),
        }
    }

    pub fn clear_error(&mut self, source: ErrorSource) {
        self.errors.retain(|(s, _)| *s != source);
    }

    /// The problem `source` has now, if any.
    pub fn error(&self, source: ErrorSource) -> Option<&str> {
        self.errors.iter().find(|(s, _)| *s == source).map(|(_, m)| m.as_str())
    }

    /// The most recent problem still standing, for `status`.
    pub fn last_error(&self) -> Option<&str> {
        self.errors.last().map(|(_, m)| m.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn runtime() -> RouterRuntime {
        let text = "[router r]\nha_interface = ha-1\nvrid = 1\n";
        RouterRuntime::new(crate::config::parse(Path::new("/x"), text).unwrap().config.routers.remove(0))
    }

    #[test]
    fn raw_state_from_inputs() {
        let mut r = runtime();
        assert_eq!(r.raw_input(), None, "nothing is reported before the first dump");
        r.vip_present = Some(false);
        assert_eq!(r.raw_input(), Some(State::Backup));
        r.vip_present = Some(true);
        assert_eq!(r.raw_input(), Some(State::Primary));
        r.keepalived_fault = true;
        assert_eq!(r.raw_input(), Some(State::Fault));
    }

    #[test]
    fn errors_by_source() {
        let mut r = runtime();
        r.set_error(ErrorSource::Namespace, "ns gone".into());
        r.set_error(ErrorSource::Keepalived, "cannot run keepalived".into());
        assert_eq!(r.last_error(), Some("cannot run keepalived"));
        r.clear_error(ErrorSource::Keepalived);
        assert_eq!(r.last_error(), Some("ns gone"));
        assert_eq!((r.error(ErrorSource::Namespace), r.error(ErrorSource::StateFile)), (Some("ns gone"), None));
        r.clear_error(ErrorSource::Namespace);
        assert_eq!(r.last_error(), None);
    }
}
