//! The supervisor's inner steps: adopting what runs, cleaning up orphans
//! and stale pidfiles, spawning, and signalling only processes proven ours.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use super::proof::{Expected, NotOurs, ProcFacts, judge_process, parse_pid, resolve_program, same_process};
use super::{
    ADOPTED_POLL, How, MAX_PIDFILE, ORPHAN_POLL, Outcome, Run, STOP_GRACE, Supervisor, SupervisorError, Then, Watch,
};
use crate::config::ChildAction;
use crate::core::ident::Namespace;
use crate::sys::pidfd::{Pidfd, kill};
use crate::sys::spawn::{self, ChildExit, SpawnOptions};

impl Supervisor {
    pub(super) fn args(&self) -> Vec<String> {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let mut args: Vec<String> = vec![
            "-n".into(),
            "-P".into(),
            "-f".into(),
            path(&self.conf),
            "-p".into(),
            path(&self.pid_file),
            "-r".into(),
            path(&self.vrrp_pid_file),
        ];
        if self.debug {
            args.push("-D".into());
        }
        args
    }

    /// Adopts the keepalived the main pidfile names if it is proven ours
    /// and alive.
    pub(super) fn try_adopt(&mut self, now: Instant, out: &mut Vec<Outcome>) -> bool {
        let path = self.pid_file.clone();
        let Some((pid, written)) = self.read_pidfile(&path) else { return false };
        let expected = self.expected();
        let watch = match self.pin(pid, &expected, Some(written), now, ADOPTED_POLL) {
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
        let watch = match watch {
            Ok(watch) => watch,
            Err(reason) => {
                self.not_ours(&path, pid, &reason);
                return false;
            }
        };
        let registers = matches!(watch.how, How::Pidfd { .. });
        self.watch = Some(watch);
        self.run = Run::Running { pid, since: now, adopted: true };
        log::debug!("router {}: adopted keepalived (pid {pid})", self.id);
        out.push(Outcome::Adopted { pid });
        if registers {
            out.push(Outcome::Watch);
        }
        true
    }

    /// Whether the VRRP pidfile names a live keepalived of ours whose
    /// parent is `pid`.
    pub(super) fn vrrp_child_vouches_for(&mut self, pid: u32, expected: &Expected) -> bool {
        let path = self.vrrp_pid_file.clone();
        let Some((child, _)) = self.read_pidfile(&path) else { return false };
        let facts = ProcFacts::read(child);
        facts.ppid == Some(pid) && judge_process(&facts, expected, None).is_ok()
    }

    /// What a process must be to be this router's keepalived, now (the
    /// binary and the namespace are looked at again each time: an upgrade
    /// or a re-created namespace changes them).
    pub(super) fn expected(&self) -> Expected {
        #[cfg(test)]
        let program = self.expect_exe.clone().or_else(|| resolve_program(&self.program));
        #[cfg(not(test))]
        let program = resolve_program(&self.program);
        let exe = program.as_deref().and_then(|p| std::fs::metadata(p).ok()).map(|m| (m.dev(), m.ino()));
        let exe_path = program
            .as_deref()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
            .unwrap_or_else(|| PathBuf::from(&self.program));
        let netns_path = self.namespace.as_ref().map_or_else(|| "/proc/self/ns/net".to_owned(), Namespace::path);
        let netns = std::fs::metadata(netns_path).ok().map(|m| (m.dev(), m.ino()));
        Expected { conf: self.conf.clone(), exe, exe_path, uid: nix::unistd::geteuid().as_raw(), netns }
    }

    /// Proves `pid` is ours, pins it with a pidfd, proves it again, and
    /// checks through the pidfd that the process it pins is still alive:
    /// the second proof was then about that very process (a pid is not
    /// reused while its process exists). Without pidfds (kernel < 5.3) the
    /// process is watched by polling every `every`, identified by its
    /// start time.
    pub(super) fn pin(
        &mut self,
        pid: u32,
        expected: &Expected,
        written: Option<SystemTime>,
        now: Instant,
        every: Duration,
    ) -> Result<Watch, NotOurs> {
        let first = ProcFacts::read(pid);
        judge_process(&first, expected, written)?;
        let how = match Pidfd::open(pid) {
            Ok(fd) => {
                let again = ProcFacts::read(pid);
                judge_process(&again, expected, written)?;
                if again.start_ticks != first.start_ticks || fd.send_signal(None).is_err() {
                    return Err(NotOurs::Gone);
                }
                How::Pidfd { fd, registered: false }
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Err(NotOurs::Gone),
            Err(source) => {
                log::warn!("router {}: no pidfd for keepalived process {pid}: {source}; polling it", self.id);
                self.last_error = Some(SupervisorError::Pidfd { router: self.id.clone(), pid, source });
                How::Poll { at: now + every, every }
            }
        };
        Ok(Watch { pid, start: first.start_ticks, how })
    }

    /// A pidfile names a live process that is not ours: said once, loudly
    /// (someone may be trying to get root to signal their process).
    pub(super) fn not_ours(&self, path: &Path, pid: u32, reason: &NotOurs) {
        if *reason == NotOurs::Gone {
            log::debug!("router {}: {} names pid {pid}, which is gone", self.id, path.display());
        } else {
            log::warn!(
                "router {}: {} names pid {pid}, which is not our keepalived ({reason}): \
                 not adopting or signalling it",
                self.id,
                path.display()
            );
        }
    }

    /// The running keepalived died.
    pub(super) fn on_death(&mut self, exit: Option<ChildExit>, now: Instant, out: &mut Vec<Outcome>) {
        let Run::Running { pid, since, .. } = self.run else { return };
        self.watch = None;
        self.throttle.clear();
        let lived = now.saturating_duration_since(since);
        self.last_error = Some(SupervisorError::Died { router: self.id.clone(), pid, exit, lived });
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
            Run::Stopping { pid, .. } if pid == watch.pid => self.prepare(now, Then::Stop, &mut out),
            Run::Cleaning { orphan, then } if orphan == watch.pid => self.prepare(now, then, &mut out),
            _ => {}
        }
        out
    }

    /// With no keepalived of ours running: removes the stale main pidfile,
    /// kills an orphaned VRRP child (and waits for it: state `Cleaning`),
    /// then does `then` — spawn (now or at the backoff deadline) or finish
    /// a stop.
    pub(super) fn prepare(&mut self, now: Instant, then: Then, out: &mut Vec<Outcome>) {
        self.remove_pidfile(&self.pid_file.clone());
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
                self.remove_pidfile(&self.vrrp_pid_file.clone());
                self.run = Run::Stopped;
                log::debug!("router {}: keepalived stopped", self.id);
                out.push(Outcome::Stopped);
            }
        }
    }

    pub(super) fn spawn_now(&mut self, now: Instant, out: &mut Vec<Outcome>) {
        let args = self.args();
        // Run by the path it resolves to now, so what runs is exactly the
        // binary a later proof of ownership expects.
        let program = resolve_program(&self.program).map_or_else(|| self.program.clone(), |p| p.display().to_string());
        log::debug!("router {}: running {program} {}", self.id, args.join(" "));
        let label = format!("router {}: keepalived", self.id);
        let options = SpawnOptions { new_session: true, label: &label, ..SpawnOptions::default() };
        match spawn::spawn_with(&program, &args, self.namespace.as_ref(), options) {
            Ok(pid) => {
                self.run = Run::Running { pid, since: now, adopted: false };
                self.throttle.started(Instant::now().max(now));
                out.push(Outcome::Spawned { pid });
            }
            Err(source) => {
                let delay = self.backoff.on_spawn_failure();
                self.last_error =
                    Some(SupervisorError::Spawn { router: self.id.clone(), program: self.program.clone(), source });
                self.run = Run::Waiting { at: now + delay };
                out.push(Outcome::SpawnFailed { retry_in: delay });
            }
        }
    }

    /// The VRRP child named by its pidfile, if alive and proven ours (with
    /// its pidfile's time), pinned; a stale VRRP pidfile is removed on the
    /// way.
    pub(super) fn find_orphan(&mut self, now: Instant) -> Option<Watch> {
        let path = self.vrrp_pid_file.clone();
        let found = self.read_pidfile(&path).map(|(pid, written)| {
            let expected = self.expected();
            (pid, self.pin(pid, &expected, Some(written), now, ORPHAN_POLL))
        });
        match found {
            Some((_, Ok(watch))) => Some(watch),
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
        log::warn!("router {}: killing orphaned keepalived process {pid} before starting keepalived", self.id);
        let result = match &orphan.how {
            How::Pidfd { fd, .. } => fd.send_signal(Some(Signal::SIGKILL)),
            How::Poll { .. } if same_process(pid, orphan.start, &self.conf) => kill(pid, Signal::SIGKILL),
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

    pub(super) fn terminate(&mut self, now: Instant) {
        let Run::Running { pid, adopted, .. } = self.run else { return };
        log::debug!("router {}: stopping keepalived (pid {pid})", self.id);
        self.send(pid, Signal::SIGTERM);
        self.run = Run::Stopping { pid, adopted, kill_at: Some(now + STOP_GRACE) };
    }

    pub(super) fn hup(&mut self, pid: u32) -> bool {
        log::debug!("router {}: SIGHUP to keepalived (pid {pid})", self.id);
        let sent = self.send(pid, Signal::SIGHUP);
        self.throttle.sent(Instant::now());
        sent
    }

    /// Signals the keepalived `pid`: through its pidfd when it has one (not
    /// our child), by pid otherwise (our child, not reaped yet). A process
    /// already gone (ESRCH) is not an error: its exit is on its way.
    pub(super) fn send(&mut self, pid: u32, signal: Signal) -> bool {
        let result = match &self.watch {
            Some(Watch { pid: p, how: How::Pidfd { fd, .. }, .. }) if *p == pid => fd.send_signal(Some(signal)),
            // Not our child and no pidfd: only if it is still the process
            // that was proven ours.
            Some(Watch { pid: p, start, how: How::Poll { .. } })
                if *p == pid && !same_process(pid, *start, &self.conf) =>
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
        let error = SupervisorError::Signal { router: self.id.clone(), pid, signal, source };
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

    pub(super) fn remove_pidfile(&mut self, path: &Path) {
        match self.confs.remove_pidfile(path) {
            Ok(true) => log::debug!("router {}: removed stale pidfile {}", self.id, path.display()),
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
