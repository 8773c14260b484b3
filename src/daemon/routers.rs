//! A router's life in the daemon: started with the config (or a reload:
//! conntrackd, then keepalived), stopped (keepalived, then conntrackd, then
//! its files), forgotten.

use std::time::Instant;

use mio::Interest;

use super::router::{ErrorSource, Router};
use super::supervision::{Changed, Written};
use super::{Daemon, Source};
use crate::config::{OnExit, RouterConfig};
use crate::conntrackd::sync::ConntrackdSync;
use crate::core::ident::RouterId;
use crate::core::layout::NOTIFY_FIFO;
use crate::keepalived::notify_fifo::NotifyFifo;
use crate::supervisor::{Kind, Supervisor};
use crate::sys::event_loop::Owner;
use crate::sys::files::confs::HaConfs;

impl Daemon {
    pub(super) fn start_router(&mut self, cfg: RouterConfig, now: Instant) {
        let id = cfg.id.clone();
        let ns = cfg.namespace.clone();
        let mut router = Router::new(cfg);
        // The state file lives there for every router, monitor-only ones too.
        let dir = match self.confs.router_dir_fd(&router.rt.cfg.id, true) {
            Ok(dir) => Some(dir),
            Err(e) => {
                log::error!("router {id}: {e}");
                router.rt.set_error(ErrorSource::Files, e.to_string());
                None
            }
        };
        if self.config.daemon.conntrackd_enabled {
            router.conntrackd = Some(self.conntrackd_for(&router.rt.cfg));
        }
        if !router.rt.cfg.keepalived {
            self.routers.insert(id.clone(), router);
            log::info!("router {id}: started (monitor only)");
            self.attach_namespace(&id, ns, now);
            return;
        }
        let written = self.sync_files(&mut router, now);
        match dir.as_ref().map(|d| NotifyFifo::create_in(d, NOTIFY_FIFO)) {
            Some(Ok(mut fifo)) => {
                let owner = Owner::Loop(Source::Fifo(id.clone()));
                match self.sources.register(&mut fifo, owner, Interest::READABLE) {
                    Ok(token) => router.fifo = Some((fifo, token)),
                    Err(e) => log::warn!("router {id}: cannot watch the notify FIFO: {e}"),
                }
            }
            Some(Err(e)) => log::warn!("router {id}: {e}"),
            None => {}
        }
        // conntrackd first, as Neutron starts it (keepalived is not held
        // back until it answers: the transition syncs wait for it instead).
        let conntrackd = self.runs_conntrackd(&router.rt.cfg).then(|| {
            let mut sup = Supervisor::conntrackd(&self.config.daemon, &router.rt.cfg, &self.confs);
            let outcomes = sup.start(now);
            (sup, outcomes)
        });
        let mut sup = Supervisor::keepalived(&self.config.daemon, &router.rt.cfg, &self.confs, self.debug);
        let ka_outcomes = sup.start(now);
        router.supervisor = Some(sup);
        let ct_outcomes = conntrackd.map(|(sup, outcomes)| {
            router.conntrackd_sup = Some(sup);
            outcomes
        });
        self.routers.insert(id.clone(), router);
        if let Some(outcomes) = ct_outcomes {
            self.supervisor_outcomes(&id, Kind::Conntrackd, outcomes, now);
        }
        self.supervisor_outcomes(&id, Kind::Keepalived, ka_outcomes, now);
        // A program adopted runs the config it read before we started: if
        // that file just changed, it must re-read it. One spawned just now
        // read the new one.
        let adopted = |kind| self.routers.get(&id).and_then(|r| r.sup(kind)).is_some_and(Supervisor::adopted);
        let changed = Changed {
            keepalived: written.changed.keepalived && adopted(Kind::Keepalived),
            conntrackd: written.changed.conntrackd && adopted(Kind::Conntrackd),
        };
        self.apply_written(&id, Written { changed, ..written }, now);
        log::info!("router {id}: started");
        self.attach_namespace(&id, ns, now);
    }

    /// Whether the router gets a conntrackd of its own: with
    /// `ha_conntrackd_enabled`, every router but monitor-only ones (the
    /// config requires their `ha_address`).
    pub(super) fn runs_conntrackd(&self, cfg: &RouterConfig) -> bool {
        self.config.daemon.conntrackd_enabled && cfg.keepalived && cfg.ha_address.is_some()
    }

    /// The conntrackd sync of a router (`ha_conntrackd_enabled`).
    pub(super) fn conntrackd_for(&self, cfg: &RouterConfig) -> ConntrackdSync {
        let conf_dir = self.confs.layout().router_dir(&cfg.id);
        ConntrackdSync::new(&self.config.daemon.conntrackd_path, conf_dir, cfg.namespace.clone(), &cfg.id)
    }

    /// A router the daemon is stopping before it ever started it (SIGTERM
    /// during start-up, with `on_exit = stop`): its supervisors, not started,
    /// take part in the stop, so a keepalived (or conntrackd) an earlier
    /// daemon left running for it is adopted and stopped. Nothing is
    /// spawned and no file is written.
    pub(super) fn add_unstarted(&mut self, cfg: RouterConfig) {
        if !cfg.keepalived {
            return;
        }
        let mut router = Router::new(cfg);
        let cfg = &router.rt.cfg;
        router.supervisor = Some(Supervisor::keepalived(&self.config.daemon, cfg, &self.confs, self.debug));
        if self.runs_conntrackd(cfg) {
            router.conntrackd_sup = Some(Supervisor::conntrackd(&self.config.daemon, cfg, &self.confs));
        }
        self.routers.insert(router.rt.cfg.id.clone(), router);
    }

    /// Stops a router: keepalived first (SIGTERM, then SIGKILL), then its
    /// conntrackd (Neutron's order: the peer takes over while ours still
    /// replicates), and once both are gone its files go too. Without
    /// keepalived it goes at once.
    pub(super) fn stop_router(&mut self, id: &RouterId, now: Instant) {
        let Some(router) = self.routers.get_mut(id) else { return };
        router.leaving = true;
        match router.supervisor.as_mut() {
            Some(sup) => {
                let outcomes = sup.stop(now);
                self.supervisor_outcomes(id, Kind::Keepalived, outcomes, now);
            }
            None => self.forget_router(id),
        }
        self.reap_stopped(now);
    }

    /// Routers that are going (leaving the config, or the daemon stopping
    /// with `on_exit = stop`): once keepalived is gone, their conntrackd is
    /// stopped; once both are, leaving routers are dropped and their
    /// replacements started.
    pub(super) fn reap_stopped(&mut self, now: Instant) {
        let all_going = self.stopping.is_some() && self.on_exit() == OnExit::Stop;
        let (mut next, mut gone) = (Vec::new(), Vec::new());
        for (id, r) in &self.routers {
            if !(r.leaving || all_going) || !r.supervisor.as_ref().is_none_or(Supervisor::is_stopped) {
                continue;
            }
            match r.conntrackd_sup.as_ref() {
                Some(ctd) if !ctd.is_stopped() && !ctd.is_stopping() => next.push(id.clone()),
                Some(ctd) if !ctd.is_stopped() => {}
                _ if r.leaving => gone.push(id.clone()),
                _ => {}
            }
        }
        for id in next {
            let Some(sup) = self.routers.get_mut(&id).and_then(|r| r.conntrackd_sup.as_mut()) else { continue };
            let outcomes = sup.stop(now);
            self.supervisor_outcomes(&id, Kind::Conntrackd, outcomes, now);
        }
        for id in gone {
            // Looked at again: a nested call (a start below reports
            // outcomes) may have replaced it already.
            let Some(router) = self.routers.get_mut(&id).filter(|r| r.leaving && r.programs_stopped()) else {
                continue;
            };
            let replacement = router.replacement.take();
            self.forget_router(&id);
            if let Some(cfg) = replacement {
                self.start_router(cfg, now);
            }
        }
    }

    pub(super) fn forget_router(&mut self, id: &RouterId) {
        let Some(mut router) = self.routers.remove(id) else { return };
        self.state_writes.forget(id);
        self.hooks.forget(id);
        if let Some(retry) = router.files_retry.take() {
            self.timers.cancel(retry.timer);
        }
        if let Some((mut fifo, token)) = router.fifo.take() {
            self.sources.deregister(&mut fifo, token);
            // Closed here; it goes with the router's directory below
            // (removed by name relative to ha_confs, never through a symlink).
            drop(fifo);
        }
        for token in [router.pidfd_token.take(), router.conntrackd_pidfd_token.take()].into_iter().flatten() {
            self.sources.remove(token);
        }
        remove_router_dir(&self.confs, id);
        let ns = router.rt.cfg.namespace.clone();
        if let Some(watch) = self.namespaces.get_mut(&ns) {
            watch.routers.remove(id);
            if watch.routers.is_empty() {
                // Its counters stay in /metrics.
                self.close_namespace(&ns);
                self.namespaces.remove(&ns);
            }
        }
        log::info!("router {id}: removed");
    }
}

pub(super) fn remove_router_dir(confs: &HaConfs, id: &RouterId) {
    if let Err(e) = confs.remove_router_dir(id) {
        log::warn!("router {id}: cannot remove its directory: {e}");
    }
}
