//! Supervising each router's keepalived: writing its files (retried with
//! backoff when the disk refuses), acting on what its supervisor reports,
//! reviving it when its namespace or HA interface was re-created, reaping
//! children, and reading keepalived's own view from its notify FIFO.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::router::{ErrorSource, Router};
use super::state_writes::write_retry_delay;
use super::{Daemon, Source, Timer};
use crate::conntrackd::sync::ConntrackdSync;
use crate::core::ident::RouterId;
use crate::keepalived;
use crate::keepalived::conf::Secrets;
use crate::keepalived::notify_fifo::KaState;
use crate::keepalived::supervisor::{Outcome as KaOutcome, Sighup, Supervisor};
use crate::sys::event_loop::{Owner, TimerId};
use crate::sys::spawn;

/// Children reaped per loop pass: each keepalived death is a respawn
/// (pidfiles, proofs, a fork), so a storm of a thousand is handled in
/// batches with the control socket and signals served in between.
pub(super) const REAP_PER_PASS: usize = 32;

/// How many keepalived may be starting at once (spawned, their notify FIFO
/// not heard from yet): four per CPU. keepalived's own start-up (exec,
/// dynamic linking, config, its VRRP child) costs 10-15 ms of CPU; a
/// thousand of them made runnable at once (a start, an OOM kill of all)
/// thrash the CPUs and starve the daemon itself: measured with 1000
/// routers on 2 CPUs, everything started later than when one keepalived
/// started after another, and status answers waited seconds. A handful
/// per CPU keeps the CPUs busy and the run queue short.
pub fn keepalived_starting_max() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from).saturating_mul(4).clamp(4, 64)
}

/// A keepalived not heard from within this long no longer counts as
/// starting (a FIFO that could not be made, a keepalived stuck).
pub(super) const STARTING_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether `pid` is a live process (not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()))
        .is_some_and(|state| state != 'Z' && state != 'X')
}

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
    /// Reaps up to [`REAP_PER_PASS`] children and hands each exit to whoever
    /// waits for it; `reap_more` says whether more may be waiting (a
    /// SIGCHLD does not come again for them).
    pub(super) fn reap(&mut self, now: Instant) {
        // A keepalived death is a respawn: held back while as many
        // keepalived are starting as the machine takes (the deaths wait as
        // zombies; SIGCHLD or a keepalived coming up wakes us again).
        if self.stopping.is_none() && !self.keepalived_gate_open(now) {
            self.reap_more = true;
            return;
        }
        // No more than the free places take (a router's keepalived is two
        // processes: its main one and the VRRP child, orphaned with it).
        let free = keepalived_starting_max().saturating_sub(self.starting_keepalived.len());
        let reaped = spawn::reap_at_most(REAP_PER_PASS.min(2 * free).max(1));
        self.reap_more = reaped.len() == REAP_PER_PASS.min(2 * free).max(1);
        if reaped.is_empty() {
            return;
        }
        // Who waits for which pid, in one walk over the routers: a storm
        // of a thousand deaths must not walk them once per death.
        let mut owners: HashMap<u32, (RouterId, bool)> = HashMap::new();
        for (id, r) in &self.routers {
            if let Some(pid) = r.supervisor.as_ref().and_then(Supervisor::waits_for) {
                owners.insert(pid, (id.clone(), true));
            }
            if let Some(pid) = r.conntrackd.as_ref().and_then(ConntrackdSync::waits_for) {
                owners.insert(pid, (id.clone(), false));
            }
        }
        for (pid, exit) in reaped {
            if self.hooks.child_exited(pid, exit) {
                continue;
            }
            let Some((id, is_keepalived)) = owners.get(&pid).cloned() else { continue };
            let Some(router) = self.routers.get_mut(&id) else { continue };
            if is_keepalived {
                // Checked again: an earlier exit of this batch may have
                // moved the router on.
                let Some(sup) = router.supervisor.as_mut().filter(|s| s.owns(pid)) else { continue };
                let outcomes = sup.child_exited(pid, exit, now);
                self.keepalived_outcomes(&id, outcomes, now);
            } else if let Some(sync) = router.conntrackd.as_mut().filter(|c| c.owns(pid)) {
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

    /// Whether another keepalived may start now (see
    /// [`keepalived_starting_max`]), after forgetting those no longer
    /// starting: heard from (FIFO), dead (a zombie waiting to be reaped
    /// counts as dead), replaced, or past [`STARTING_TIMEOUT`].
    pub(super) fn keepalived_gate_open(&mut self, now: Instant) -> bool {
        let routers = &self.routers;
        self.starting_keepalived.retain(|id, (pid, since)| {
            now < *since + STARTING_TIMEOUT
                && routers.get(id).and_then(|r| r.supervisor.as_ref()?.pid()) == Some(*pid)
                && alive(*pid)
        });
        self.keepalived_gated = self.starting_keepalived.len() >= keepalived_starting_max();
        !self.keepalived_gated
    }

    /// When the loop must look again at work waiting for the keepalived
    /// gate (children to reap, routers to start): at once when the gate was
    /// open, else when the oldest starting keepalived times out (a FIFO
    /// message or a SIGCHLD wakes the loop before that).
    pub(super) fn gated_deadline(&self) -> Option<Instant> {
        let waiting = self.reap_more || (!self.starting.is_empty() && self.stopping.is_none());
        if !waiting {
            return None;
        }
        if !self.keepalived_gated {
            return Some(Instant::now());
        }
        self.starting_keepalived.values().map(|(_, since)| *since + STARTING_TIMEOUT).min()
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
                    self.starting_keepalived.insert(id.clone(), (pid, now));
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
        if !events.is_empty() {
            // It is up: its place among those starting is free.
            self.starting_keepalived.remove(id);
        }
        for event in events {
            log::debug!("router {id}: keepalived reports {:?} for {}", event.state, event.instance);
            router.rt.keepalived_fault = event.state == KaState::Fault;
        }
        self.feed_raw(id, now);
    }
}
