//! Supervising each router's keepalived and conntrackd: writing their
//! files (retried with backoff when the disk refuses), acting on what their
//! supervisors report, reviving them when the namespace or HA interface was
//! re-created, reaping children, and reading keepalived's own view from its
//! notify FIFO.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::time::{Duration, Instant};

use super::router::{ErrorSource, Router};
use super::state_writes::write_retry_delay;
use super::{Daemon, Source, Timer};
use crate::conntrackd::conf as conntrackd_conf;
use crate::conntrackd::sync::ConntrackdSync;
use crate::core::ident::RouterId;
use crate::keepalived;
use crate::keepalived::conf::Secrets;
use crate::keepalived::notify_fifo::KaState;
use crate::supervisor::{Kind, Outcome, Sighup, Supervisor};
use crate::sys::event_loop::{Owner, TimerId};
use crate::sys::spawn;
use crate::sys::spawn::ChildExit;

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

/// How [`Daemon::revive`] gets a program going again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Revive {
    /// keepalived: SIGHUP if it runs (it re-reads its interfaces), else
    /// start it. conntrackd re-reads nothing: it is restarted.
    Sighup,
    /// Stop it, then start it (it must move to another namespace).
    Restart,
}

/// Which of a router's programs must re-read their files: keepalived
/// (keepalived.conf, health-check script: a SIGHUP) and conntrackd
/// (conntrackd.conf: a restart, it has no reload).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Changed {
    pub(super) keepalived: bool,
    pub(super) conntrackd: bool,
}

impl Changed {
    fn or(self, other: Changed) -> Changed {
        Changed { keepalived: self.keepalived || other.keepalived, conntrackd: self.conntrackd || other.conntrackd }
    }
}

/// The router's files as [`Daemon::write_files`] left them.
pub(super) struct Written {
    pub(super) changed: Changed,
    /// A conntrackd.conf (or conntrackd pidfile) is there though the router
    /// gets none (conntrackd turned off, while the daemon ran or not): its
    /// conntrackd must be stopped and its files removed.
    pub(super) conntrackd_left: bool,
}

pub(super) struct FilesRetry {
    /// Failed attempts in a row.
    pub(super) failures: u32,
    pub(super) timer: TimerId,
    /// Files did change in the failed attempts: their programs must re-read
    /// them once all are written, even if the last attempt finds them
    /// unchanged.
    pub(super) changed: Changed,
}

/// Why a router's files could not all be written.
pub(super) struct FilesFailed {
    pub(super) message: String,
    /// What was replaced before the failure.
    pub(super) changed: Changed,
}

/// Who waits for a child's exit.
#[derive(Clone, Copy)]
enum Owned {
    Program(Kind),
    Sync,
}

impl Daemon {
    /// Reaps up to [`REAP_PER_PASS`] children and hands each exit to whoever
    /// waits for it; `reap_more` says whether more may be waiting (a
    /// SIGCHLD does not come again for them). Every child is reaped at
    /// once (a script's or a sync's end must not wait); a keepalived death
    /// is a respawn, and is held while as many keepalived are starting as
    /// the machine takes (a keepalived coming up, or the oldest starting
    /// one timing out, lets the next go).
    pub(super) fn reap(&mut self, now: Instant) {
        let reaped = spawn::reap_at_most(REAP_PER_PASS);
        self.reap_more = reaped.len() == REAP_PER_PASS;
        let mut exits: Vec<(u32, ChildExit)> = std::mem::take(&mut self.held_deaths).into();
        exits.extend(reaped);
        if exits.is_empty() {
            return;
        }
        let stopping = self.stopping.is_some();
        if !stopping {
            self.keepalived_gate_open(now);
        }
        // Who waits for which pid, in one walk over the routers: a storm
        // of a thousand deaths must not walk them once per death.
        let mut owners: HashMap<u32, (RouterId, Owned)> = HashMap::new();
        for (id, r) in &self.routers {
            for (kind, sup) in [(Kind::Keepalived, &r.supervisor), (Kind::Conntrackd, &r.conntrackd_sup)] {
                for pid in sup.iter().flat_map(Supervisor::waits_for) {
                    owners.insert(pid, (id.clone(), Owned::Program(kind)));
                }
            }
            if let Some(pid) = r.conntrackd.as_ref().and_then(ConntrackdSync::waits_for) {
                owners.insert(pid, (id.clone(), Owned::Sync));
            }
        }
        for (pid, exit) in exits {
            if self.hooks.child_exited(pid, exit, now) {
                continue;
            }
            let Some((id, owned)) = owners.get(&pid).cloned() else { continue };
            let Some(router) = self.routers.get_mut(&id) else { continue };
            match owned {
                Owned::Program(kind) => {
                    if kind == Kind::Keepalived && !stopping && self.starting_keepalived.len() >= self.starting_max {
                        self.held_deaths.push_back((pid, exit));
                        continue;
                    }
                    // Checked again: an earlier exit of this batch may have
                    // moved the router on.
                    let Some(sup) = router.sup_mut(kind).filter(|s| s.owns(pid)) else { continue };
                    let outcomes = sup.child_exited(pid, exit, now);
                    self.supervisor_outcomes(&id, kind, outcomes, now);
                }
                Owned::Sync => {
                    if let Some(sync) = router.conntrackd.as_mut().filter(|c| c.owns(pid)) {
                        for synced in sync.exited(pid, exit) {
                            synced.log(&id);
                        }
                    }
                }
            }
        }
    }

    /// Writes the router's files with their modes, skipping those already
    /// right; says which programs' files changed.
    pub(super) fn write_files(&self, router: &Router) -> Result<Written, FilesFailed> {
        let cfg = &router.rt.cfg;
        let failed = |message: String, changed| FilesFailed { message, changed };
        let dir = self.confs.router_dir_fd(&cfg.id, true).map_err(|e| failed(e.to_string(), Changed::default()))?;
        let mut changed = Changed::default();
        let files = keepalived::router_files(&self.config.daemon, cfg, self.confs.layout(), Secrets::Show);
        let conntrackd_conf = OsStr::new(conntrackd_conf::CONF_FILE);
        for file in &files {
            let name = match file.path.file_name() {
                Some(name) if file.path.parent() == Some(dir.path()) => name,
                _ => return Err(failed(format!("{} is not in the router's directory", file.path.display()), changed)),
            };
            let current = dir.read(name, file.contents.len() as u64 + 1).ok();
            if current.as_deref() == Some(file.contents.as_bytes()) {
                continue;
            }
            dir.write(name, file.contents.as_bytes(), file.mode).map_err(|e| failed(e.to_string(), changed))?;
            if name == conntrackd_conf {
                changed.conntrackd = true;
            } else {
                changed.keepalived = true;
            }
        }
        let gets_conntrackd = files.iter().any(|f| f.path.file_name() == Some(conntrackd_conf));
        let conntrackd_left = !gets_conntrackd
            && [conntrackd_conf::CONF_FILE, conntrackd_conf::PID_FILE]
                .iter()
                .any(|name| dir.read(OsStr::new(name), 0).is_ok());
        Ok(Written { changed, conntrackd_left })
    }

    /// Writes the router's files and settles the outcome. All written: the
    /// error goes, and the answer is which programs must re-read them (and
    /// whether a conntrackd of a config that had it is left to stop). A
    /// failure (full or read-only disk) is shown in `status`, counted, and
    /// retried with backoff; the answer is then that nothing changed, so no
    /// program is ever reloaded onto a config that is not on disk.
    pub(super) fn sync_files(&mut self, router: &mut Router, now: Instant) -> Written {
        let id = router.rt.cfg.id.clone();
        let previous = router.files_retry.take();
        if let Some(retry) = &previous {
            self.timers.cancel(retry.timer);
        }
        let changed_before = previous.as_ref().map_or_else(Changed::default, |r| r.changed);
        match self.write_files(router) {
            Ok(written) => {
                router.rt.clear_error(ErrorSource::Files);
                if let Some(retry) = previous {
                    log::info!("router {id}: files written after {} failed attempts", retry.failures);
                }
                Written { changed: written.changed.or(changed_before), ..written }
            }
            Err(FilesFailed { message, changed }) => {
                let failures = previous.as_ref().map_or(0, |r| r.failures) + 1;
                let delay = write_retry_delay(failures);
                if router.rt.error(ErrorSource::Files).is_none_or(|e| !e.starts_with(&message)) {
                    log::error!(
                        "router {id}: {message}; not reloading keepalived or conntrackd, retrying in {} ms",
                        delay.as_millis()
                    );
                } else {
                    log::debug!("router {id}: {message} (attempt {failures}); retrying in {} ms", delay.as_millis());
                }
                router.rt.write_failures += 1;
                router.rt.set_error(ErrorSource::Files, format!("{message}; keepalived not reloaded, retrying"));
                let timer = self.timers.schedule(now + delay, Timer::RetryFiles(id.clone()));
                router.files_retry = Some(FilesRetry { failures, timer, changed: changed.or(changed_before) });
                Written { changed: Changed::default(), conntrackd_left: false }
            }
        }
    }

    /// A router's files are due for another attempt; once they are written
    /// keepalived re-reads them (one throttled SIGHUP) and conntrackd is
    /// restarted on its new file.
    pub(super) fn retry_files(&mut self, id: &RouterId, now: Instant) {
        let Some(mut router) = self.routers.remove(id) else { return };
        let written = (router.files_retry.is_some() && !router.leaving).then(|| self.sync_files(&mut router, now));
        self.routers.insert(id.to_owned(), router);
        if let Some(written) = written {
            self.apply_written(id, written, now);
        }
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
        self.starting_keepalived.len() < self.starting_max
    }

    /// When the loop must look again at work waiting for the keepalived
    /// gate (children to reap, routers to start): at once when the gate was
    /// open, else when the oldest starting keepalived times out (a FIFO
    /// message or a SIGCHLD wakes the loop before that).
    pub(super) fn gated_deadline(&self) -> Option<Instant> {
        if self.reap_more {
            return Some(Instant::now());
        }
        let waiting = !self.held_deaths.is_empty() || (!self.starting.is_empty() && self.stopping.is_none());
        if !waiting {
            return None;
        }
        if self.starting_keepalived.len() < self.starting_max {
            return Some(Instant::now());
        }
        self.starting_keepalived.values().map(|(_, since)| *since + STARTING_TIMEOUT).min()
    }

    /// Makes the router's programs follow their files: keepalived re-reads
    /// changed ones (SIGHUP), conntrackd restarts on a changed
    /// conntrackd.conf, and a conntrackd the router no longer gets is
    /// stopped (its files removed once it is gone).
    pub(super) fn apply_written(&mut self, id: &RouterId, written: Written, now: Instant) {
        let Some(router) = self.routers.get_mut(id) else { return };
        if written.changed.keepalived
            && let Some(sup) = router.supervisor.as_mut()
        {
            log::info!("router {id}: keepalived.conf changed, reloading keepalived");
            sup.sighup(now);
        }
        if written.changed.conntrackd
            && !router.conntrackd_off
            && let Some(sup) = router.conntrackd_sup.as_mut()
            && !sup.is_stopped()
        {
            log::info!("router {id}: conntrackd.conf changed, restarting conntrackd");
            let outcomes = sup.restart(now);
            self.supervisor_outcomes(id, Kind::Conntrackd, outcomes, now);
        }
        if written.conntrackd_left {
            self.stop_conntrackd_for_good(id, now);
        }
    }

    /// Stops the router's conntrackd (one of ours found running is adopted
    /// to be stopped); once it is gone its files are removed and its
    /// supervisor dropped ([`Daemon::conntrackd_gone`]).
    pub(super) fn stop_conntrackd_for_good(&mut self, id: &RouterId, now: Instant) {
        let Some(router) = self.routers.get_mut(id) else { return };
        if router.conntrackd_sup.is_none() {
            let sup = Supervisor::conntrackd(&self.config.daemon, &router.rt.cfg, &self.confs);
            router.conntrackd_sup = Some(sup);
        }
        if !router.conntrackd_off {
            log::info!("router {id}: conntrackd is off: stopping it and removing its files");
        }
        router.conntrackd_off = true;
        let outcomes = router.conntrackd_sup.as_mut().map(|s| s.stop(now)).unwrap_or_default();
        self.supervisor_outcomes(id, Kind::Conntrackd, outcomes, now);
    }

    /// A conntrackd stopped for good is gone: its config goes too (the
    /// supervisor removed its pidfile, lock file and control socket).
    fn conntrackd_gone(&mut self, id: &RouterId) {
        let Some(router) = self.routers.get_mut(id) else { return };
        router.conntrackd_off = false;
        router.conntrackd_sup = None;
        if let Some(token) = router.conntrackd_pidfd_token.take() {
            self.sources.remove(token);
        }
        let conf = conntrackd_conf::Paths::new(self.confs.layout(), id).conf;
        match self.confs.remove_pidfile(&conf) {
            Ok(true) => log::info!("router {id}: removed {}", conf.display()),
            Ok(false) => {}
            Err(e) => log::warn!("router {id}: cannot remove {}: {e}", conf.display()),
        }
    }

    /// Acts on what a router's supervisor of `kind` reported.
    pub(super) fn supervisor_outcomes(&mut self, id: &RouterId, kind: Kind, outcomes: Vec<Outcome>, now: Instant) {
        if outcomes.is_empty() {
            return;
        }
        let source = ErrorSource::of(kind);
        for outcome in outcomes {
            let Some(router) = self.routers.get_mut(id) else { return };
            let last_error = |router: &Router| {
                router.sup(kind).and_then(Supervisor::last_error).map_or_else(String::new, |e| e.to_string())
            };
            let sync = router.conntrackd.as_mut().filter(|_| kind == Kind::Conntrackd);
            match outcome {
                Outcome::Spawned { pid } => {
                    if kind == Kind::Keepalived {
                        self.starting_keepalived.insert(id.clone(), (pid, now));
                    }
                    log::info!("router {id}: {kind} started (pid {pid})");
                    router.rt.clear_error(source);
                    // Syncs wait until conntrackd answers.
                    if let Some(sync) = sync {
                        sync.hold();
                    }
                }
                Outcome::Ready { pid } => {
                    log::debug!("router {id}: {kind} (pid {pid}) is up");
                    if let Some(sync) = sync {
                        for synced in sync.release(true) {
                            synced.log(id);
                        }
                    }
                }
                Outcome::NotReady { pid } => {
                    let wait = crate::supervisor::READY_WAIT.as_secs();
                    let message = format!("{kind} (pid {pid}) has not created its socket after {wait} s");
                    log::error!("router {id}: {message}");
                    router.rt.set_error(source, message);
                    if let Some(sync) = sync {
                        for synced in sync.release(false) {
                            synced.log(id);
                        }
                    }
                }
                Outcome::Adopted { pid } => {
                    log::info!("router {id}: adopted the running {kind} (pid {pid})");
                    router.rt.clear_error(source);
                }
                Outcome::Replacing { pid } => {
                    log::warn!(
                        "router {id}: {kind} (pid {pid}) runs in an older instance of the router's network \
                         namespace: stopping it, a new one starts in the current namespace"
                    );
                }
                Outcome::Watch => self.register_pidfd(id, kind),
                Outcome::Died { pid, exit, respawn_in } => {
                    // Syncs wait for a respawn at once; otherwise they run
                    // (and fail, logged) rather than wait out a backoff.
                    if respawn_in != Some(Duration::ZERO)
                        && let Some(sync) = sync
                    {
                        for synced in sync.release(false) {
                            synced.log(id);
                        }
                    }
                    if router.leaving || self.stopping.is_some() || router.conntrackd_off {
                        continue;
                    }
                    let how = exit.map_or_else(|| "its pidfd closed".to_owned(), |e| e.to_string());
                    let message = format!("{kind} (pid {pid}) died: {how}");
                    match respawn_in {
                        None => {
                            log::error!("router {id}: {message}; check_child_processes_action = exit");
                            self.failed = true;
                            return;
                        }
                        Some(delay) => {
                            log::warn!("router {id}: {message}; respawning in {} ms", delay.as_millis());
                            router.rt.set_error(source, message);
                        }
                    }
                }
                Outcome::SpawnFailed { retry_in } => {
                    // The supervisor's errors name the router already.
                    let error = last_error(router);
                    log::error!("{error}; retrying in {} ms", retry_in.as_millis());
                    router.rt.set_error(source, error);
                    if let Some(sync) = router.conntrackd.as_mut().filter(|_| kind == Kind::Conntrackd) {
                        for synced in sync.release(false) {
                            synced.log(id);
                        }
                    }
                }
                Outcome::Stopped => {
                    log::info!("router {id}: {kind} stopped");
                    if let Some(sync) = sync {
                        for synced in sync.release(false) {
                            synced.log(id);
                        }
                    }
                    if kind == Kind::Conntrackd && router.conntrackd_off {
                        router.rt.clear_error(source);
                        self.conntrackd_gone(id);
                    }
                }
            }
        }
        self.reap_stopped(now);
    }

    /// Gets a router's program going again after its namespace or HA
    /// interface changed under it. [`Revive::Sighup`] (keepalived): a SIGHUP
    /// (throttled like any reload) makes a running keepalived re-read its
    /// interfaces, without the second or so keepalived takes to stop.
    /// [`Revive::Restart`], conntrackd, or when nothing runs to reload: stop
    /// (asked, SIGKILL after the grace) then start once stopped, which also
    /// starts at once a program waiting out a respawn backoff. Not for
    /// routers leaving the config.
    pub(super) fn revive(&mut self, id: &RouterId, kind: Kind, why: &str, how: Revive, now: Instant) {
        let Some(router) = self.routers.get_mut(id) else { return };
        if router.leaving || self.stopping.is_some() || (kind == Kind::Conntrackd && router.conntrackd_off) {
            return;
        }
        let Some(sup) = router.sup_mut(kind) else { return };
        if how == Revive::Sighup && kind == Kind::Keepalived && !sup.is_stopping() {
            match sup.sighup(now) {
                Sighup::Sent => {
                    log::warn!("router {id}: {why}: {kind} reloaded (SIGHUP)");
                    return;
                }
                Sighup::Deferred { at } => {
                    let ms = at.saturating_duration_since(now).as_millis();
                    log::warn!("router {id}: {why}: reloading {kind} (SIGHUP in {ms} ms)");
                    return;
                }
                Sighup::NotRunning | Sighup::Failed => {}
            }
        }
        log::warn!("router {id}: {why}: restarting {kind}");
        let outcomes = sup.restart(now);
        self.supervisor_outcomes(id, kind, outcomes, now);
    }

    pub(super) fn register_pidfd(&mut self, id: &RouterId, kind: Kind) {
        let Some(router) = self.routers.get_mut(id) else { return };
        let Some(sup) = router.sup_mut(kind) else { return };
        let token = self.sources.add(Owner::Loop(Source::Pidfd(id.clone(), kind)));
        match sup.register_pidfd(self.sources.registry(), token) {
            Ok(()) => {
                // The pidfd it replaces (if any) left the poll when it closed.
                if let Some(old) = router.pidfd_token_mut(kind).replace(token) {
                    self.sources.remove(old);
                }
            }
            Err(e) => {
                self.sources.remove(token);
                log::warn!("router {id}: cannot watch adopted {kind}: {e}");
            }
        }
    }

    pub(super) fn pidfd_ready(&mut self, id: &RouterId, kind: Kind, now: Instant) {
        let Some(router) = self.routers.get_mut(id) else { return };
        let outcomes = router.sup_mut(kind).map(|s| s.pidfd_ready(now)).unwrap_or_default();
        self.supervisor_outcomes(id, kind, outcomes, now);
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
