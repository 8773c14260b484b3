//! The supervisor's inner steps: adopting what runs, cleaning up orphans,
//! stale pidfiles and leftovers, spawning, and signalling only processes
//! proven ours.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use super::proof::{Expected, NotOurs, ProcFacts, judge_process, parse_pid, resolve_program, same_process};
use super::{
    ADOPTED_POLL, Found, How, MAX_PIDFILE, ORPHAN_POLL, Outcome, Probe, READY_FIRST, READY_MAX, READY_WAIT, Run,
    STOP_GRACE, Supervisor, SupervisorError, Then, Watch,
};
use crate::config::ChildAction;
use crate::core::ident::Namespace;
use crate::sys::pidfd::{Pidfd, kill};
use crate::sys::socket::unix_socket_answers;
use crate::sys::spawn::{self, ChildExit, SpawnOptions};

/// A process pinned by [`Supervisor::pin`].
pub(super) struct Pinned {
    pub(super) watch: Watch,
    /// Proven ours in everything but the network namespace.
    pub(super) elsewhere: bool,
}

impl Supervisor {
    /// Adopts the program the pidfile names if it is proven ours and alive
    /// (state `Running`, adopted). One proven ours but running in another
    /// instance of the router's namespace is pinned the same way and
    /// reported [`Found::Elsewhere`], for the caller to stop; while the
    /// router's namespace does not exist, or when it is found only to be
    /// stopped (`to_stop`), it is adopted as it is.
    pub(super) fn try_adopt(&mut self, now: Instant, to_stop: bool, out: &mut Vec<Outcome>) -> Found {
        let path = self.program.pid_file.clone();
        let Some((pid, written)) = self.read_pidfile(&path) else { return Found::Nothing };
        let expected = self.expected();
        let pinned = match self.pin(pid, &expected, Some(written), now, ADOPTED_POLL) {
            Err(NotOurs::StartedAfterPidfile { by }) if self.vrrp_child_vouches_for(pid, &expected) => {
                // The wall clock was stepped forward since keepalived wrote
                // its pidfile (a first NTP sync after boot): its running
                // VRRP child, named by its own pidfile, proves it.
                log::info!(
                    "router {}: keepalived {pid} seems to have started {:.1} s after its pidfile was written \
                     (clock stepped?); its VRRP child vouches for it",
                    self.id,
                    by.as_secs_f64()
                );
                self.pin(pid, &expected, None, now, ADOPTED_POLL)
            }
            other => other,
        };
        let Pinned { watch, elsewhere } = match pinned {
            Ok(pinned) => pinned,
            Err(reason) => {
                self.not_ours(&path, pid, &reason);
                return Found::Nothing;
            }
        };
        let kind = self.program.kind;
        let registers = matches!(watch.how, How::Pidfd { .. });
        self.watch = Some(watch);
        self.run = Run::Running { pid, since: now, adopted: true };
        let found = if elsewhere && expected.netns.is_some() && !to_stop {
            // Logged by whoever acts on the outcome.
            out.push(Outcome::Replacing { pid });
            Found::Elsewhere
        } else {
            if elsewhere && !to_stop {
                log::warn!("router {}: adopted {kind} (pid {pid}), whose network namespace is gone", self.id);
            }
            log::debug!("router {}: adopted {kind} (pid {pid})", self.id);
            out.push(Outcome::Adopted { pid });
            Found::Here
        };
        if registers {
            out.push(Outcome::Watch);
        }
        found
    }

    /// Whether the VRRP pidfile names a live keepalived of ours whose
    /// parent is `pid`.
    pub(super) fn vrrp_child_vouches_for(&mut self, pid: u32, expected: &Expected) -> bool {
        let Some(path) = self.program.child_pid_file.clone() else { return false };
        let Some((child, _)) = self.read_pidfile(&path) else { return false };
        let facts = ProcFacts::read(child);
        facts.ppid == Some(pid) && judge_process(&facts, expected, None).is_ok()
    }

    /// What a process must be to be this router's program, now (the binary
    /// and the namespace are looked at again each time: an upgrade or a
    /// re-created namespace changes them).
    pub(super) fn expected(&self) -> Expected {
        #[cfg(test)]
        let program = self.expect_exe.clone().or_else(|| resolve_program(&self.program.path));
        #[cfg(not(test))]
        let program = resolve_program(&self.program.path);
        let exe = program.as_deref().and_then(|p| std::fs::metadata(p).ok()).map(|m| (m.dev(), m.ino()));
        let exe_path = program
            .as_deref()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
            .unwrap_or_else(|| PathBuf::from(&self.program.path));
        Expected {
            kind: self.program.kind,
            conf: self.program.conf.clone(),
            exe,
            exe_path,
            uid: nix::unistd::geteuid().as_raw(),
            netns: self.namespace_id(),
        }
    }

    /// (device, inode) of the namespace the router's namespace name (or,
    /// without one, the daemon's own) means now.
    fn namespace_id(&self) -> Option<(u64, u64)> {
        let path = self.namespace.as_ref().map_or_else(|| "/proc/self/ns/net".to_owned(), Namespace::path);
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }

    /// Proves `pid` is ours, pins it with a pidfd, proves it again, and
    /// checks through the pidfd that the process it pins is still alive:
    /// the second proof was then about that very process (a pid is not
    /// reused while its process exists). Without pidfds (kernel < 5.3) the
    /// process is watched by polling every `every`, identified by its
    /// start time. A process proven ours in everything but the namespace
    /// is pinned too, marked `elsewhere`.
    pub(super) fn pin(
        &mut self,
        pid: u32,
        expected: &Expected,
        written: Option<SystemTime>,
        now: Instant,
        every: Duration,
    ) -> Result<Pinned, NotOurs> {
        let judge = |facts: &ProcFacts| match judge_process(facts, expected, written) {
            Err(NotOurs::Namespace) if facts.netns.is_some() => Ok(true),
            other => other.map(|()| false),
        };
        let first = ProcFacts::read(pid);
        let elsewhere = judge(&first)?;
        let how = match Pidfd::open(pid) {
            Ok(fd) => {
                let again = ProcFacts::read(pid);
                judge(&again)?;
                if again.start_ticks != first.start_ticks || again.netns != first.netns || fd.send_signal(None).is_err()
                {
                    return Err(NotOurs::Gone);
                }
                How::Pidfd { fd, registered: false }
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Err(NotOurs::Gone),
            Err(source) => {
                let kind = self.program.kind;
                log::warn!("router {}: no pidfd for {kind} process {pid}: {source}; polling it", self.id);
                self.last_error = Some(SupervisorError::Pidfd { router: self.id.clone(), kind, pid, source });
                How::Poll { at: now + every, every }
            }
        };
        Ok(Pinned { watch: Watch { pid, start: first.start_ticks, how }, elsewhere })
    }

    /// A pidfile names a live process that is not ours: said once, loudly
    /// (someone may be trying to get root to signal their process).
    pub(super) fn not_ours(&self, path: &Path, pid: u32, reason: &NotOurs) {
        if *reason == NotOurs::Gone {
            log::debug!("router {}: {} names pid {pid}, which is gone", self.id, path.display());
        } else {
            log::warn!(
                "router {}: {} names pid {pid}, which is not our {} ({reason}): not adopting or signalling it",
                self.id,
                path.display(),
                self.program.kind
            );
        }
    }

    /// The running program died.
    pub(super) fn on_death(&mut self, exit: Option<ChildExit>, now: Instant, out: &mut Vec<Outcome>) {
        let Run::Running { pid, since, .. } = self.run else { return };
        self.watch = None;
        self.probe = None;
        self.throttle.clear();
        let lived = now.saturating_duration_since(since);
        let (router, kind) = (self.id.clone(), self.program.kind);
        self.last_error = Some(SupervisorError::Died { router, kind, pid, exit, lived });
        if self.action == ChildAction::Exit {
            self.run = Run::Failed;
            out.push(Outcome::Died { pid, exit, respawn_in: None });
            return;
        }
        self.restarts = self.restarts.saturating_add(1);
        let delay = self.backoff.on_death(lived);
        out.push(Outcome::Died { pid, exit, respawn_in: Some(delay) });
        self.prepare(now, Then::Spawn { at: now + delay }, out);
    }

    /// The process behind the watch is gone.
    pub(super) fn watched_gone(&mut self, now: Instant) -> Vec<Outcome> {
        let mut out = Vec::new();
        let Some(watch) = self.watch.take() else { return out };
        match self.run {
            Run::Running { pid, .. } if pid == watch.pid => self.on_death(None, now, &mut out),
            Run::Stopping { pid, then, .. } if pid == watch.pid => self.prepare(now, then, &mut out),
            Run::Cleaning { orphan, then } if orphan == watch.pid => self.prepare(now, then, &mut out),
            _ => {}
        }
        out
    }

    /// With nothing of ours running: removes the stale main pidfile, kills
    /// an orphaned VRRP child (and waits for it: state `Cleaning`), then
    /// does `then` — spawn (now or at the backoff deadline) or finish a
    /// stop (the remaining pidfile and the leftovers go).
    pub(super) fn prepare(&mut self, now: Instant, then: Then, out: &mut Vec<Outcome>) {
        self.probe = None;
        self.remove_pidfile(&self.program.pid_file.clone());
        // Bounded: each round either waits for an orphan or found it gone
        // (its pidfile then reads as stale and is removed).
        for _ in 0..3 {
            let Some(orphan) = self.find_orphan(now) else { break };
            let pid = orphan.pid;
            if self.kill_orphan(orphan, out) {
                self.run = Run::Cleaning { orphan: pid, then };
                return;
            }
        }
        match then {
            Then::Spawn { at } if at <= now => self.spawn_now(now, out),
            Then::Spawn { at } => self.run = Run::Waiting { at },
            Then::Stop => {
                if let Some(path) = self.program.child_pid_file.clone() {
                    self.remove_pidfile(&path);
                }
                if !self.socket_busy() {
                    self.remove_leftovers();
                }
                self.run = Run::Stopped;
                log::debug!("router {}: {} stopped", self.id, self.program.kind);
                out.push(Outcome::Stopped);
            }
        }
    }

    /// Whether something answers on the program's socket: with nothing of
    /// ours running, that is someone else's process.
    fn socket_busy(&self) -> bool {
        self.program.socket.as_deref().is_some_and(unix_socket_answers)
    }

    fn remove_leftovers(&mut self) {
        for path in self.program.leftovers.clone() {
            self.remove_pidfile(&path);
        }
    }

    pub(super) fn spawn_now(&mut self, now: Instant, out: &mut Vec<Outcome>) {
        let kind = self.program.kind;
        if let Some(socket) = self.program.socket.clone().filter(|_| self.socket_busy()) {
            let delay = self.backoff.on_spawn_failure();
            self.last_error = Some(SupervisorError::Busy { router: self.id.clone(), kind, socket });
            self.run = Run::Waiting { at: now + delay };
            out.push(Outcome::SpawnFailed { retry_in: delay });
            return;
        }
        self.remove_leftovers();
        let args = self.program.args();
        let program = self.spawned_program();
        log::debug!("router {}: running {program} {}", self.id, args.join(" "));
        let label = format!("router {}: {kind}", self.id);
        let options = SpawnOptions { new_session: true, label: &label, ..SpawnOptions::default() };
        let netns = self.namespace_id();
        match spawn::spawn_with(&program, &args, self.namespace.as_ref(), options) {
            Ok(pid) => {
                self.spawned_in = netns;
                self.run = Run::Running { pid, since: now, adopted: false };
                self.throttle.started(Instant::now().max(now));
                if !self.program.writes_pid_file()
                    && let Err(e) = self.confs.write_pidfile(&self.program.pid_file, pid)
                {
                    let error = SupervisorError::Pidfile {
                        router: self.id.clone(),
                        path: self.program.pid_file.clone(),
                        action: "write",
                        source: io::Error::other(e.to_string()),
                    };
                    log::error!("{error}: a restarted daemon will not find this {kind}");
                    self.last_error = Some(error);
                }
                out.push(Outcome::Spawned { pid });
                if self.program.socket.is_some() {
                    self.probe = Some(Probe { at: now, every: READY_FIRST, until: now + READY_WAIT });
                    self.look_for_socket(now, out);
                }
            }
            Err(source) => self.spawn_failed(source, now, out),
        }
    }

    /// The program as spawned: the path it resolves to now, so what runs
    /// is exactly the binary a later proof of ownership expects.
    pub(super) fn spawned_program(&self) -> String {
        resolve_program(&self.program.path).map_or_else(|| self.program.path.clone(), |p| p.display().to_string())
    }

    /// The program could not be started, whether `spawn` said so or the
    /// child reported it never ran (its `exec` failed after `spawn`
    /// returned): retried after a backoff that is never zero, so a program
    /// that cannot run never makes a respawn loop.
    pub(super) fn spawn_failed(&mut self, source: spawn::SpawnError, now: Instant, out: &mut Vec<Outcome>) {
        let delay = self.backoff.on_spawn_failure();
        self.throttle.clear();
        self.probe = None;
        let (kind, program) = (self.program.kind, self.program.path.clone());
        self.last_error = Some(SupervisorError::Spawn { router: self.id.clone(), kind, program, source });
        self.run = Run::Waiting { at: now + delay };
        out.push(Outcome::SpawnFailed { retry_in: delay });
    }

    /// A spawned program is up once its socket is there: reported
    /// [`Outcome::Ready`] at the first look that finds it (looks double
    /// their spacing from [`READY_FIRST`] to [`READY_MAX`]), or
    /// [`Outcome::NotReady`] after [`READY_WAIT`].
    pub(super) fn look_for_socket(&mut self, now: Instant, out: &mut Vec<Outcome>) {
        let (Some(probe), Run::Running { pid, .. }) = (self.probe, &self.run) else { return };
        let pid = *pid;
        if probe.at > now {
            return;
        }
        let there = self
            .program
            .socket
            .as_deref()
            .is_some_and(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()));
        if there {
            self.probe = None;
            out.push(Outcome::Ready { pid });
        } else if now >= probe.until {
            self.probe = None;
            out.push(Outcome::NotReady { pid });
        } else {
            let every = (probe.every * 2).min(READY_MAX);
            self.probe = Some(Probe { at: (now + probe.every).min(probe.until), every, until: probe.until });
        }
    }

    /// The VRRP child named by its pidfile, if alive and proven ours (with
    /// its pidfile's time; in any namespace: it is about to be killed),
    /// pinned; a stale VRRP pidfile is removed on the way.
    pub(super) fn find_orphan(&mut self, now: Instant) -> Option<Watch> {
        let path = self.program.child_pid_file.clone()?;
        let found = self.read_pidfile(&path).map(|(pid, written)| {
            let expected = self.expected();
            (pid, self.pin(pid, &expected, Some(written), now, ORPHAN_POLL))
        });
        match found {
            Some((_, Ok(pinned))) => Some(pinned.watch),
            other => {
                if let Some((pid, Err(reason))) = other {
                    self.not_ours(&path, pid, &reason);
                }
                self.remove_pidfile(&path);
                None
            }
        }
    }

    /// SIGKILLs a pinned orphan and starts watching it. `false`: it was
    /// already gone.
    pub(super) fn kill_orphan(&mut self, orphan: Watch, out: &mut Vec<Outcome>) -> bool {
        let pid = orphan.pid;
        let kind = self.program.kind;
        log::warn!("router {}: killing orphaned {kind} process {pid} before starting {kind}", self.id);
        let result = match &orphan.how {
            How::Pidfd { fd, .. } => fd.send_signal(Some(Signal::SIGKILL)),
            How::Poll { .. } if same_process(pid, orphan.start, &self.program) => kill(pid, Signal::SIGKILL),
            How::Poll { .. } => return false,
        };
        match result {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return false,
            Err(source) => {
                self.signal_error(pid, Signal::SIGKILL, source);
                return false;
            }
        }
        if matches!(orphan.how, How::Pidfd { .. }) {
            out.push(Outcome::Watch);
        }
        self.watch = Some(orphan);
        true
    }

    /// Asks the running program to stop (its stop command, else SIGTERM)
    /// and arms the SIGKILL; `then` once it is gone.
    pub(super) fn terminate(&mut self, now: Instant, then: Then) {
        let Run::Running { pid, adopted, .. } = self.run else { return };
        let kind = self.program.kind;
        log::debug!("router {}: stopping {kind} (pid {pid})", self.id);
        self.probe = None;
        self.run = Run::Stopping { pid, adopted, kill_at: Some(now + STOP_GRACE), then };
        let Some(args) = self.program.stop_command() else {
            self.send(pid, Signal::SIGTERM);
            return;
        };
        let program = self.spawned_program();
        let label = format!("router {}: {kind} {}", self.id, args.last().map_or("", String::as_str));
        match spawn::spawn(&program, &args, self.namespace.as_ref(), &label) {
            Ok(helper) => self.helper = Some(helper),
            Err(e) => {
                log::warn!("router {}: cannot run {program} {}: {e}; sending SIGTERM", self.id, args.join(" "));
                self.send(pid, Signal::SIGTERM);
            }
        }
    }

    /// The stop command finished: if it failed while the program still
    /// runs, SIGTERM (the SIGKILL stays armed).
    pub(super) fn stop_command_exited(&mut self, exit: ChildExit) {
        if exit.success() {
            return;
        }
        if let Run::Stopping { pid, kill_at: Some(_), .. } = self.run {
            log::warn!("router {}: {} stop command failed ({exit}); sending SIGTERM", self.id, self.program.kind);
            self.send(pid, Signal::SIGTERM);
        }
    }

    pub(super) fn hup(&mut self, pid: u32) -> bool {
        log::debug!("router {}: SIGHUP to {} (pid {pid})", self.id, self.program.kind);
        let sent = self.send(pid, Signal::SIGHUP);
        self.throttle.sent(Instant::now());
        sent
    }

    /// Signals the program `pid`: through its pidfd when it has one (not
    /// our child), by pid otherwise (our child, not reaped yet). A process
    /// already gone (ESRCH) is not an error: its exit is on its way.
    pub(super) fn send(&mut self, pid: u32, signal: Signal) -> bool {
        let result = match &self.watch {
            Some(Watch { pid: p, how: How::Pidfd { fd, .. }, .. }) if *p == pid => fd.send_signal(Some(signal)),
            // Not our child and no pidfd: only if it is still the process
            // that was proven ours.
            Some(Watch { pid: p, start, how: How::Poll { .. } })
                if *p == pid && !same_process(pid, *start, &self.program) =>
            {
                Err(io::Error::from_raw_os_error(libc::ESRCH))
            }
            _ => kill(pid, signal),
        };
        match result {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => false,
            Err(source) => {
                self.signal_error(pid, signal, source);
                false
            }
        }
    }

    pub(super) fn signal_error(&mut self, pid: u32, signal: Signal, source: io::Error) {
        let error = SupervisorError::Signal { router: self.id.clone(), kind: self.program.kind, pid, signal, source };
        log::error!("{error}");
        self.last_error = Some(error);
    }

    /// The pid a pidfile names and when the pidfile was last written;
    /// `None` when missing, empty or not a pid (an unreadable one, or a
    /// symlink, which is never followed, is reported too).
    pub(super) fn read_pidfile(&mut self, path: &Path) -> Option<(u32, SystemTime)> {
        match self.confs.read_pidfile(path, MAX_PIDFILE) {
            Ok(found) => found.and_then(|(text, written)| Some((parse_pid(&text)?, written))),
            Err(e) => {
                let source = io::Error::other(e.to_string());
                let error =
                    SupervisorError::Pidfile { router: self.id.clone(), path: path.to_owned(), action: "read", source };
                log::warn!("{error}");
                self.last_error = Some(error);
                None
            }
        }
    }

    /// Removes a stale pidfile (or a leftover).
    pub(super) fn remove_pidfile(&mut self, path: &Path) {
        match self.confs.remove_pidfile(path) {
            Ok(true) => log::debug!("router {}: removed stale {}", self.id, path.display()),
            Ok(false) => {}
            Err(e) => {
                let error = SupervisorError::Pidfile {
                    router: self.id.clone(),
                    path: path.to_owned(),
                    action: "remove",
                    source: io::Error::other(e.to_string()),
                };
                log::warn!("{error}");
                self.last_error = Some(error);
            }
        }
    }
}
