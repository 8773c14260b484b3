//! Supervising each router's keepalived: writing its files (retried with
//! backoff when the disk refuses), acting on what its supervisor reports,
//! reviving it when its namespace or HA interface was re-created, reaping
//! children, and reading keepalived's own view from its notify FIFO.

use std::time::Instant;

use super::router::{ErrorSource, Router};
use super::state_writes::write_retry_delay;
use super::{Daemon, Source, Timer};
use crate::core::ident::RouterId;
use crate::keepalived;
use crate::keepalived::conf::Secrets;
use crate::keepalived::notify_fifo::KaState;
use crate::supervisor::{Outcome as KaOutcome, Sighup, Supervisor};
use crate::sys::event_loop::{Owner, TimerId};
use crate::sys::spawn;

/// How [`Daemon::revive_keepalived`] gets keepalived going again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Revive {
    /// SIGHUP if it runs (it re-reads its interfaces), else start it.
    Sighup,
    /// Stop it, then start it (it must move to another namespace).
    Restart,
}

pub(super) struct FilesRetry {
    /// Failed attempts in a row.
    pub(super) failures: u32,
    pub(super) timer: TimerId,
    /// A file did change in one of the failed attempts: keepalived must
    /// re-read them once all are written, even if the last attempt finds
    /// that one unchanged.
    pub(super) changed: bool,
}

/// Why a router's keepalived files could not all be written.
pub(super) struct FilesFailed {
    pub(super) message: String,
    /// Whether a file was replaced before the failure.
    pub(super) changed: bool,
}

impl Daemon {
    pub(super) fn reap(&mut self, now: Instant) {
        for (pid, exit) in spawn::reap() {
            if self.hooks.child_exited(pid, exit) {
                continue;
            }
            let owner = self.routers.iter().find_map(|(id, r)| {
                let ka = r.supervisor.as_ref().is_some_and(|s| s.owns(pid));
                let ct = r.conntrackd.as_ref().is_some_and(|c| c.owns(pid));
                (ka || ct).then(|| (id.clone(), ka))
            });
            let Some((id, is_keepalived)) = owner else { continue };
            let Some(router) = self.routers.get_mut(&id) else { continue };
            if is_keepalived {
                let outcomes = router.supervisor.as_mut().map(|s| s.child_exited(pid, exit, now)).unwrap_or_default();
                self.keepalived_outcomes(&id, outcomes, now);
            } else if let Some(sync) = router.conntrackd.as_mut() {
                let done = sync.exited(pid, exit);
                for synced in &done {
                    synced.log(&id);
                }
            }
        }
    }

    /// Writes the router's keepalived files with their modes, skipping
    /// those already right; returns whether one changed.
    pub(super) fn write_files(&self, router: &Router) -> Result<bool, FilesFailed> {
        let cfg = &router.rt.cfg;
        let dir = self
            .confs
            .router_dir_fd(&cfg.id, true)
            .map_err(|e| FilesFailed { message: e.to_string(), changed: false })?;
        let mut changed = false;
        for file in keepalived::router_files(&self.config.daemon, cfg, self.confs.layout(), Secrets::Show) {
            let name = match file.path.file_name() {
                Some(name) if file.path.parent() == Some(dir.path()) => name,
                _ => {
                    let message = format!("{} is not in the router's directory", file.path.display());
                    return Err(FilesFailed { message, changed });
                }
            };
            let current = dir.read(name, file.contents.len() as u64 + 1).ok();
            if current.as_deref() == Some(file.contents.as_bytes()) {
                continue;
            }
            dir.write(name, file.contents.as_bytes(), file.mode)
                .map_err(|e| FilesFailed { message: e.to_string(), changed })?;
            changed = true;
        }
        Ok(changed)
    }

    /// Writes the router's keepalived files and settles the outcome. All
    /// written: the error goes, and the answer is whether keepalived must
    /// re-read them. A failure (full or read-only disk) is shown in
    /// `status`, counted, and retried with backoff; the answer is `false`,
    /// so keepalived is never reloaded onto a config that is not on disk.
    pub(super) fn sync_files(&mut self, router: &mut Router, now: Instant) -> bool {
        let id = router.rt.cfg.id.clone();
        let previous = router.files_retry.take();
        if let Some(retry) = &previous {
            self.timers.cancel(retry.timer);
        }
        let changed_before = previous.as_ref().is_some_and(|r| r.changed);
        match self.write_files(router) {
            Ok(changed) => {
                router.rt.clear_error(ErrorSource::Files);
                if let Some(retry) = previous {
                    log::info!("router {id}: keepalived files written after {} failed attempts", retry.failures);
                }
                changed || changed_before
            }
            Err(FilesFailed { message, changed }) => {
                let failures = previous.as_ref().map_or(0, |r| r.failures) + 1;
                let delay = write_retry_delay(failures);
                if router.rt.error(ErrorSource::Files).is_none_or(|e| !e.starts_with(&message)) {
                    log::error!(
                        "router {id}: {message}; not reloading keepalived, retrying in {} ms",
                        delay.as_millis()
                    );
                } else {
                    log::debug!("router {id}: {message} (attempt {failures}); retrying in {} ms", delay.as_millis());
                }
                router.rt.write_failures += 1;
                router.rt.set_error(ErrorSource::Files, format!("{message}; keepalived not reloaded, retrying"));
                let timer = self.timers.schedule(now + delay, Timer::RetryFiles(id.clone()));
                router.files_retry = Some(FilesRetry { failures, timer, changed: changed || changed_before });
                false
            }
        }
    }

    /// A router's keepalived files are due for another attempt; once they
    /// are written keepalived re-reads them (one throttled SIGHUP).
    pub(super) fn retry_files(&mut self, id: &RouterId, now: Instant) {
        let Some(mut router) = self.routers.remove(id) else { return };
        if router.files_retry.is_some()
            && !router.leaving
            && self.sync_files(&mut router, now)
            && let Some(sup) = router.supervisor.as_mut()
        {
            log::info!("router {id}: keepalived files written, reloading keepalived");
            sup.sighup(now);
        }
        self.routers.insert(id.to_owned(), router);
    }

    pub(super) fn keepalived_outcomes(&mut self, id: &RouterId, outcomes: Vec<KaOutcome>, now: Instant) {
        if outcomes.is_empty() {
            return;
        }
        for outcome in outcomes {
            let Some(router) = self.routers.get_mut(id) else { return };
            let last_error = || {
                router.supervisor.as_ref().and_then(Supervisor::last_error).map_or_else(String::new, |e| e.to_string())
            };
            match outcome {
                KaOutcome::Spawned { pid } => {
                    log::info!("router {id}: keepalived started (pid {pid})");
                    router.rt.clear_error(ErrorSource::Keepalived);
                }
                KaOutcome::Adopted { pid } => {
                    log::info!("router {id}: adopted the running keepalived (pid {pid})");
                    router.rt.clear_error(ErrorSource::Keepalived);
                }
                KaOutcome::Watch => self.register_pidfd(id),
                KaOutcome::Died { pid, exit, respawn_in } => {
                    if router.leaving || self.stopping.is_some() {
                        continue;
                    }
                    let how = exit.map_or_else(|| "its pidfd closed".to_owned(), |e| e.to_string());
                    let message = format!("keepalived (pid {pid}) died: {how}");
                    match respawn_in {
                        None => {
                            log::error!("router {id}: {message}; check_child_processes_action = exit");
                            self.failed = true;
                            return;
                        }
                        Some(delay) => {
                            log::warn!("router {id}: {message}; respawning in {} ms", delay.as_millis());
                            router.rt.set_error(ErrorSource::Keepalived, message);
                        }
                    }
                }
                KaOutcome::SpawnFailed { retry_in } => {
                    // The supervisor's errors name the router already.
                    let error = last_error();
                    log::error!("{error}; retrying in {} ms", retry_in.as_millis());
                    router.rt.set_error(ErrorSource::Keepalived, error);
                }
                KaOutcome::Stopped => log::info!("router {id}: keepalived stopped"),
            }
        }
        self.reap_stopped(now);
        self.finish_revive(id, now);
    }

    /// Gets a router's keepalived going again after its namespace or HA
    /// interface changed under it. [`Revive::Sighup`]: a SIGHUP (throttled
    /// like any reload) makes a running keepalived re-read its interfaces,
    /// without the second or so keepalived takes to stop.
    /// [`Revive::Restart`], or when nothing runs to reload: stop (SIGTERM,
    /// SIGKILL after the grace) then start once stopped, which also starts
    /// at once a keepalived waiting out a respawn backoff. Not for routers
    /// leaving the config.
    pub(super) fn revive_keepalived(&mut self, id: &RouterId, why: &str, how: Revive, now: Instant) {
        let Some(router) = self.routers.get_mut(id) else { return };
        if router.leaving || self.stopping.is_some() {
            return;
        }
        let Some(sup) = router.supervisor.as_mut() else { return };
        if how == Revive::Sighup && !router.revive {
            match sup.sighup(now) {
                Sighup::Sent => {
                    log::warn!("router {id}: {why}: keepalived reloaded (SIGHUP)");
                    return;
                }
                Sighup::Deferred { at } => {
                    let ms = at.saturating_duration_since(now).as_millis();
                    log::warn!("router {id}: {why}: reloading keepalived (SIGHUP in {ms} ms)");
                    return;
                }
                Sighup::NotRunning | Sighup::Failed => {}
            }
        }
        log::warn!("router {id}: {why}: restarting keepalived");
        router.revive = true;
        let outcomes = sup.stop(now);
        self.keepalived_outcomes(id, outcomes, now);
        self.finish_revive(id, now);
    }

    /// The second half of [`Daemon::revive_keepalived`], once the old
    /// keepalived is gone.
    pub(super) fn finish_revive(&mut self, id: &RouterId, now: Instant) {
        let Some(router) = self.routers.get_mut(id) else { return };
        if !router.revive || router.leaving || self.stopping.is_some() {
            return;
        }
        let Some(sup) = router.supervisor.as_mut().filter(|s| s.is_stopped()) else { return };
        router.revive = false;
        let outcomes = sup.start(now);
        self.keepalived_outcomes(id, outcomes, now);
    }

    pub(super) fn register_pidfd(&mut self, id: &RouterId) {
        let Some(router) = self.routers.get_mut(id) else { return };
        let Some(sup) = router.supervisor.as_mut() else { return };
        let token = self.sources.add(Owner::Loop(Source::Pidfd(id.clone())));
        match sup.register_pidfd(self.sources.registry(), token) {
            Ok(()) => {
                // The pidfd it replaces (if any) left the poll when it closed.
                if let Some(old) = router.pidfd_token.replace(token) {
                    self.sources.remove(old);
                }
            }
            Err(e) => {
                self.sources.remove(token);
                log::warn!("router {id}: cannot watch adopted keepalived: {e}");
            }
        }
    }

    pub(super) fn pidfd_ready(&mut self, id: &RouterId, now: Instant) {
        let Some(router) = self.routers.get_mut(id) else { return };
        let outcomes = router.supervisor.as_mut().map(|s| s.pidfd_ready(now)).unwrap_or_default();
        self.keepalived_outcomes(id, outcomes, now);
    }

    pub(super) fn fifo_ready(&mut self, id: &RouterId, now: Instant) {
        let Some(router) = self.routers.get_mut(id) else { return };
        let Some((fifo, _)) = router.fifo.as_mut() else { return };
        let events = fifo.read();
        for event in events {
            log::debug!("router {id}: keepalived reports {:?} for {}", event.state, event.instance);
            router.rt.keepalived_fault = event.state == KaState::Fault;
        }
        self.feed_raw(id, now);
    }
}
