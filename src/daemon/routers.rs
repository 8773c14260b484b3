//! A router's life in the daemon: started with the config (or a reload),
//! stopped (keepalived first, then its files), forgotten.

use std::time::Instant;

use mio::Interest;

use super::namespaces::HaLink;
use super::router::{ErrorSource, Router, RouterRuntime};
use super::{Daemon, Source};
use crate::config::RouterConfig;
use crate::conntrackd::sync::ConntrackdSync;
use crate::core::ident::RouterId;
use crate::core::layout::NOTIFY_FIFO;
use crate::keepalived::notify_fifo::NotifyFifo;
use crate::supervisor::{Outcome as KaOutcome, Supervisor};
use crate::sys::event_loop::Owner;
use crate::sys::files::confs::HaConfs;

impl Daemon {
    pub(super) fn start_router(&mut self, cfg: RouterConfig, now: Instant) {
        let id = cfg.id.clone();
        let ns = cfg.namespace.clone();
        let mut router = Router {
            rt: RouterRuntime::new(cfg),
            supervisor: None,
            fifo: None,
            pidfd_token: None,
            conntrackd: None,
            leaving: false,
            replacement: None,
            ha_link: HaLink::Unknown,
            revive: false,
            files_retry: None,
        };
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
        if router.rt.cfg.keepalived {
            let files_changed = self.sync_files(&mut router, now);
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
            let mut sup = Supervisor::new(&self.config.daemon, &router.rt.cfg, &self.confs, self.debug);
            let outcomes = sup.start(now);
            // An adopted keepalived runs the config it read before we
            // started; if that file just changed, it must re-read it.
            if files_changed && outcomes.iter().any(|o| matches!(o, KaOutcome::Adopted { .. })) {
                sup.sighup(now);
            }
            router.supervisor = Some(sup);
            self.routers.insert(id.clone(), router);
            self.keepalived_outcomes(&id, outcomes, now);
        } else {
            self.routers.insert(id.clone(), router);
        }
        log::info!("router {id}: started{}", if self.routers[&id].rt.cfg.keepalived { "" } else { " (monitor only)" });
        self.attach_namespace(&id, ns, now);
    }

    /// Stops a router: keepalived is stopped (SIGTERM, then SIGKILL), and
    /// once it is gone its files go too. Without keepalived it goes at once.
    /// The conntrackd sync of a router (`ha_conntrackd_enabled`).
    pub(super) fn conntrackd_for(&self, cfg: &RouterConfig) -> ConntrackdSync {
        let conf_dir = self.confs.layout().router_dir(&cfg.id);
        ConntrackdSync::new(&self.config.daemon.conntrackd_path, conf_dir, cfg.namespace.clone(), &cfg.id)
    }

    pub(super) fn stop_router(&mut self, id: &RouterId, now: Instant) {
        let Some(router) = self.routers.get_mut(id) else { return };
        router.leaving = true;
        match router.supervisor.as_mut() {
            Some(sup) => {
                let outcomes = sup.stop(now);
                self.keepalived_outcomes(id, outcomes, now);
            }
            None => self.forget_router(id),
        }
        self.reap_stopped(now);
    }

    /// Routers that were leaving and whose keepalived is gone: drop them and
    /// start their replacements.
    pub(super) fn reap_stopped(&mut self, now: Instant) {
        let gone: Vec<RouterId> = self
            .routers
            .iter()
            .filter(|(_, r)| r.leaving && r.supervisor.as_ref().is_none_or(Supervisor::is_stopped))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            let replacement = self.routers.get_mut(&id).and_then(|r| r.replacement.take());
            self.forget_router(&id);
            if let Some(cfg) = replacement {
                self.start_router(cfg, now);
            }
        }
    }

    pub(super) fn forget_router(&mut self, id: &RouterId) {
        let Some(mut router) = self.routers.remove(id) else { return };
        self.state_writes.forget(id);
        if let Some(retry) = router.files_retry.take() {
            self.timers.cancel(retry.timer);
        }
        if let Some((mut fifo, token)) = router.fifo.take() {
            self.sources.deregister(&mut fifo, token);
            // Closed here; it goes with the router's directory below
            // (removed by name relative to ha_confs, never through a symlink).
            drop(fifo);
        }
        if let Some(token) = router.pidfd_token.take() {
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
