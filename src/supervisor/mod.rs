//! Supervising one keepalived per router (SPEC section 3.4): spawn it inside
//! the router's namespace, adopt one left running by a previous daemon,
//! respawn it when it dies (with backoff), reload it with throttled SIGHUPs,
//! stop it with SIGTERM then SIGKILL.
//!
//! A [`Supervisor`] is a state machine driven by the event loop: every
//! method takes the current time (`now`) and returns at once. It never
//! sleeps, never waits for a process and never reaps one: the daemon reaps
//! all children on SIGCHLD ([`crate::sys::spawn::reap`]) and hands each exit to
//! [`Supervisor::child_exited`]; deaths of processes that are not our
//! children (an adopted keepalived, an orphan to clean up) are seen through
//! a pidfd the daemon registers with its `mio::Poll`
//! ([`Supervisor::register_pidfd`], [`Supervisor::pidfd_ready`]); timers
//! (respawn backoff, SIGHUP throttle, stop escalation) are reported by
//! [`Supervisor::next_deadline`] and run by [`Supervisor::tick`].
//!
//! keepalived runs as `KEEPALIVED -n -P -f CONF -p PID -r VRRP_PID [-D]`:
//! `-n` keeps its parent process our direct child (its death comes as
//! SIGCHLD, there is no daemonized grandchild to chase), and it starts in a
//! session of its own so a Ctrl-C to a foreground daemon never reaches it.
//! The parent forks the VRRP child, which writes `VRRP_PID`.
//!
//! Invariants:
//! - **One keepalived per router.** A spawn happens only once the main
//!   pidfile names no live keepalived of ours and no orphaned VRRP child of
//!   ours is alive: an orphan is SIGKILLed and the spawn waits until it is
//!   gone (a new keepalived refuses to start while a pidfile names a live
//!   process, and a dying orphan would remove the new VRRP pidfile).
//! - **Ours** is proven, not assumed (issue 15.3): a pidfile names a live
//!   pid whose `/proc/PID/cmdline` gives our config path to `-f`
//!   ([`cmdline_names_conf`]), whose `/proc/PID/exe` is the configured
//!   keepalived binary (same device and inode), which runs as root (real,
//!   effective, saved and filesystem uid: the daemon's own) in the router's
//!   network namespace, and which started before the pidfile was last
//!   written ([`judge_process`]). The proof is made twice, the second time
//!   after a pidfd pinned the process, and the pidfd is then checked to
//!   still name a live process, so the pid cannot have been recycled in
//!   between. A zombie has an empty cmdline, so it is never ours. Anything
//!   else a pidfile names (a user's `tail -f CONF`) is left alone: neither
//!   adopted nor signalled, its pidfile removed as stale, and a warning
//!   names it.
//! - **No signal to a recycled pid.** Our own child is signalled by pid only
//!   until its exit is reported (its pid cannot be reused before it is
//!   reaped, and the daemon reports what it reaps); any other process is
//!   signalled through its pidfd, or, on a kernel without pidfds, by pid
//!   right after checking its start time is still the one proven.
//! - Dropping or detaching a supervisor never signals anything: keepalived
//!   outlives the daemon unless [`Supervisor::stop`] was called.
//! - [`Supervisor::next_deadline`] is `None` unless a timer is pending: an
//!   idle router costs no wake-ups.

mod lifecycle;
mod outcome;
mod proof;
mod respawn;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::signal::Signal;

pub use outcome::{Outcome, Sighup, SupervisorError};
use proof::same_process;
pub use proof::{
    Expected, NotOurs, PIDFILE_SLACK, ProcFacts, cmdline_names_conf, judge_process, parse_pid, resolve_program,
};
pub use respawn::{RespawnBackoff, RespawnPolicy};

use crate::config::{ChildAction, DaemonConfig, RouterConfig};
use crate::core::ident::{Namespace, RouterId};
use crate::keepalived::throttle::SighupThrottle;
use crate::sys::files::confs::HaConfs;
use crate::sys::pidfd::Pidfd;
use crate::sys::spawn::ChildExit;

/// How long a stopping keepalived gets between SIGTERM and SIGKILL
/// (SPEC 3.4). keepalived 2.2 needs about a second to drop its VIPs and say
/// goodbye (priority 0) to its peers.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How often an adopted keepalived is checked when no pidfd can be opened
/// (kernel before 5.3, seccomp): the only polling this module ever does,
/// and only in that degraded case.
const ADOPTED_POLL: Duration = Duration::from_secs(1);

/// How often an orphan that was SIGKILLed is checked when no pidfd can be
/// opened for it (same degraded case; it dies within milliseconds).
const ORPHAN_POLL: Duration = Duration::from_millis(10);

/// A pidfile longer than this is not a pidfile.
const MAX_PIDFILE: u64 = 64;

// ---------------------------------------------------------------------------
// The supervisor

/// How the death of a watched process (adopted keepalived, orphan being
/// killed) is learnt.
enum How {
    /// Readable when the process has exited. Closing it removes it from the
    /// daemon's epoll set (nothing else holds it: pidfds are close-on-exec).
    Pidfd { fd: Pidfd, registered: bool },
    /// No pidfd available: check `/proc` at `at`, then every `every`.
    Poll { at: Instant, every: Duration },
}

struct Watch {
    pid: u32,
    /// Its start time (clock ticks after boot), when known: without a
    /// pidfd, the only way to tell it from a later process with its pid.
    start: Option<u64>,
    how: How,
}

/// What to do once the orphans are gone.
#[derive(Clone, Copy, Debug)]
enum Then {
    Spawn { at: Instant },
    Stop,
}

#[derive(Debug)]
enum Run {
    /// Not started, or detached.
    Idle,
    Running {
        pid: u32,
        since: Instant,
        adopted: bool,
    },
    /// An orphaned VRRP child was SIGKILLed; waiting for it to be gone.
    Cleaning {
        orphan: u32,
        then: Then,
    },
    /// RespawnBackoff before the next spawn.
    Waiting {
        at: Instant,
    },
    /// SIGTERM sent; SIGKILL at `kill_at` (`None`: already sent).
    Stopping {
        pid: u32,
        adopted: bool,
        kill_at: Option<Instant>,
    },
    Stopped,
    /// keepalived died with `check_child_processes_action = exit`.
    Failed,
}

/// One router's keepalived. See the module documentation.
pub struct Supervisor {
    id: RouterId,
    program: String,
    confs: HaConfs,
    /// The binary a running keepalived must be, instead of `program`, in
    /// unit tests whose stand-in keepalived is `sh`.
    #[cfg(test)]
    expect_exe: Option<PathBuf>,
    namespace: Option<Namespace>,
    debug: bool,
    action: ChildAction,
    conf: PathBuf,
    pid_file: PathBuf,
    vrrp_pid_file: PathBuf,
    run: Run,
    /// Set only for a process whose death SIGCHLD may not tell: the adopted
    /// keepalived (Running/Stopping with `adopted`) or the orphan being
    /// killed (Cleaning). Always names that state's pid.
    watch: Option<Watch>,
    backoff: RespawnBackoff,
    throttle: SighupThrottle,
    restarts: u32,
    last_error: Option<SupervisorError>,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("router", &self.id)
            .field("run", &self.run)
            .field("watch", &self.watch.as_ref().map(|w| w.pid))
            .field("restarts", &self.restarts)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor for `router`'s keepalived; nothing happens until
    /// [`Supervisor::start`]. `debug` adds `-D` (detailed keepalived logs).
    pub fn new(daemon: &DaemonConfig, router: &RouterConfig, confs: &HaConfs, debug: bool) -> Supervisor {
        let layout = confs.layout();
        Supervisor {
            id: router.id.clone(),
            program: daemon.keepalived_path.clone(),
            confs: confs.clone(),
            #[cfg(test)]
            expect_exe: None,
            namespace: router.namespace.clone(),
            debug,
            action: daemon.child_action,
            conf: layout.keepalived_conf(&router.id),
            pid_file: layout.pid_file(&router.id),
            vrrp_pid_file: layout.vrrp_pid_file(&router.id),
            run: Run::Idle,
            watch: None,
            backoff: RespawnBackoff::new(RespawnPolicy::default()),
            throttle: SighupThrottle::for_advert_int(router.advert_int),
            restarts: 0,
            last_error: None,
        }
    }

    /// A new config for the same router: program, `check_child_processes_action`
    /// and the SIGHUP throttle (advert_int) apply at once; a new namespace
    /// only at the next spawn (moving a running keepalived takes a stop and
    /// a start, which is the daemon's call).
    pub fn update(&mut self, daemon: &DaemonConfig, router: &RouterConfig) {
        self.program = daemon.keepalived_path.clone();
        self.action = daemon.child_action;
        self.namespace = router.namespace.clone();
        self.throttle.set_interval(SighupThrottle::min_interval(router.advert_int));
    }

    pub fn router_id(&self) -> &RouterId {
        &self.id
    }

    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// The running keepalived's (parent process) pid.
    pub fn pid(&self) -> Option<u32> {
        match self.run {
            Run::Running { pid, .. } | Run::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// Whether the running keepalived was found running rather than spawned.
    pub fn adopted(&self) -> bool {
        matches!(self.run, Run::Running { adopted: true, .. } | Run::Stopping { adopted: true, .. })
    }

    /// How many times keepalived died and was (or is being) respawned.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// When keepalived will be respawned, while waiting to.
    pub fn next_restart(&self) -> Option<Instant> {
        match self.run {
            Run::Waiting { at } | Run::Cleaning { then: Then::Spawn { at }, .. } => Some(at),
            _ => None,
        }
    }

    /// The backoff delay applied to the latest death or failed start.
    pub fn backoff(&self) -> Duration {
        self.backoff.current()
    }

    pub fn last_error(&self) -> Option<&SupervisorError> {
        self.last_error.as_ref()
    }

    /// Nothing of ours runs and nothing will be spawned: never started,
    /// detached, stopped, or failed (`check_child_processes_action = exit`).
    pub fn is_stopped(&self) -> bool {
        matches!(self.run, Run::Idle | Run::Stopped | Run::Failed)
    }

    /// Whether `pid` is a process this supervisor waits for (its keepalived,
    /// or an orphan being killed): give its exit to [`Supervisor::child_exited`].
    pub fn owns(&self, pid: u32) -> bool {
        match self.run {
            Run::Running { pid: p, .. } | Run::Stopping { pid: p, .. } => p == pid,
            Run::Cleaning { orphan, .. } => orphan == pid,
            _ => false,
        }
    }

    /// Starts supervising: adopts a keepalived of ours found running (no
    /// restart, no VRRP flap on a daemon upgrade), or cleans up (stale
    /// pidfiles, orphaned VRRP child) and spawns one. Does nothing unless
    /// idle, stopped or failed.
    pub fn start(&mut self, now: Instant) -> Vec<Outcome> {
        let mut out = Vec::new();
        if !self.is_stopped() {
            return out;
        }
        self.backoff.reset();
        self.throttle.clear();
        if self.try_adopt(now, &mut out) {
            return out;
        }
        self.prepare(now, Then::Spawn { at: now }, &mut out);
        out
    }

    /// A child of the daemon exited (from [`crate::sys::spawn::reap`]). Empty
    /// when it was not ours ([`Supervisor::owns`] tells beforehand).
    pub fn child_exited(&mut self, pid: u32, exit: ChildExit, now: Instant) -> Vec<Outcome> {
        let mut out = Vec::new();
        match self.run {
            Run::Running { pid: p, .. } if p == pid => self.on_death(Some(exit), now, &mut out),
            Run::Stopping { pid: p, .. } if p == pid => {
                log::debug!("router {}: keepalived (pid {pid}) stopped ({exit})", self.id);
                self.watch = None;
                self.prepare(now, Then::Stop, &mut out);
            }
            Run::Cleaning { orphan, then } if orphan == pid => {
                log::debug!("router {}: orphaned keepalived process {pid} gone ({exit})", self.id);
                self.watch = None;
                self.prepare(now, then, &mut out);
            }
            _ => {}
        }
        out
    }

    /// Registers the current pidfd, if there is one not registered yet, with
    /// `registry` under `token` (readable = the process exited; then call
    /// [`Supervisor::pidfd_ready`]). Call it whenever an outcome list holds
    /// [`Outcome::Watch`]; calling it more often is harmless. A replaced or
    /// dropped pidfd leaves the epoll set by itself when it is closed.
    pub fn register_pidfd(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        if let Some(Watch { how: How::Pidfd { fd, registered }, .. }) = &mut self.watch
            && !*registered
        {
            registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
            *registered = true;
        }
        Ok(())
    }

    /// The registered pidfd was reported readable. Checked again here, so a
    /// stale event (for a pidfd replaced since) is ignored.
    pub fn pidfd_ready(&mut self, now: Instant) -> Vec<Outcome> {
        let ready = match &self.watch {
            Some(Watch { how: How::Pidfd { fd, .. }, .. }) => fd.has_exited(),
            _ => false,
        };
        if ready { self.watched_gone(now) } else { Vec::new() }
    }

    /// The config file changed: SIGHUP keepalived, at most once per
    /// 1.5 × advert_int (see [`SighupThrottle`]).
    pub fn sighup(&mut self, now: Instant) -> Sighup {
        let Run::Running { pid, .. } = self.run else { return Sighup::NotRunning };
        if !self.throttle.request(now) {
            return match self.throttle.deadline() {
                Some(at) => Sighup::Deferred { at },
                None => Sighup::NotRunning,
            };
        }
        if self.hup(pid) { Sighup::Sent } else { Sighup::Failed }
    }

    /// Stops keepalived: SIGTERM, SIGKILL after [`STOP_GRACE`] if still
    /// alive; once it (and any orphaned child) is gone, both pidfiles are
    /// removed and [`Outcome::Stopped`] is reported (possibly at once). The
    /// router's directory is the daemon's to remove.
    pub fn stop(&mut self, now: Instant) -> Vec<Outcome> {
        let mut out = Vec::new();
        self.throttle.clear();
        match self.run {
            Run::Idle => {
                // Never started or detached: a keepalived of ours may run.
                if self.try_adopt(now, &mut out) {
                    self.terminate(now);
                } else {
                    self.prepare(now, Then::Stop, &mut out);
                }
            }
            Run::Running { .. } => self.terminate(now),
            Run::Waiting { .. } | Run::Failed => self.prepare(now, Then::Stop, &mut out),
            Run::Cleaning { orphan, .. } => self.run = Run::Cleaning { orphan, then: Then::Stop },
            Run::Stopping { .. } | Run::Stopped => {}
        }
        out
    }

    /// Lets go of keepalived without touching it (`on_exit = keep`): the
    /// pidfd is closed, no signal is sent, no file removed. A later
    /// [`Supervisor::start`] (by this or a new daemon) adopts it again.
    pub fn detach(&mut self) {
        self.watch = None;
        self.throttle.clear();
        self.run = Run::Idle;
    }

    /// The earliest timer: respawn backoff, deferred SIGHUP, stop
    /// escalation, or the degraded-mode liveness check. `None` when nothing
    /// is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        let run = match self.run {
            Run::Running { .. } => self.throttle.deadline(),
            Run::Waiting { at } => Some(at),
            Run::Stopping { kill_at, .. } => kill_at,
            _ => None,
        };
        let poll = match &self.watch {
            Some(Watch { how: How::Poll { at, .. }, .. }) => Some(*at),
            _ => None,
        };
        crate::sys::event_loop::earliest([run, poll])
    }

    /// Runs whatever timer is due at `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<Outcome> {
        let mut out = Vec::new();
        if let Some(Watch { pid, start, how: How::Poll { at, every } }) = &mut self.watch
            && *at <= now
        {
            if same_process(*pid, *start, &self.conf) {
                *at = now + *every;
            } else {
                out.extend(self.watched_gone(now));
            }
        }
        match self.run {
            Run::Running { pid, .. } if self.throttle.poll(now) => {
                log::info!("router {}: sending the deferred SIGHUP to keepalived", self.id);
                self.hup(pid);
            }
            Run::Waiting { at } if at <= now => self.prepare(now, Then::Spawn { at }, &mut out),
            Run::Stopping { pid, adopted, kill_at: Some(kill_at) } if kill_at <= now => {
                log::warn!(
                    "router {}: keepalived (pid {pid}) still running {} s after SIGTERM: sending SIGKILL",
                    self.id,
                    STOP_GRACE.as_secs()
                );
                self.send(pid, Signal::SIGKILL);
                self.run = Run::Stopping { pid, adopted, kill_at: None };
            }
            _ => {}
        }
        out
    }
}
