//! Supervising one long-lived program per router (SPEC section 3.4), the
//! same way for keepalived and conntrackd: spawn it inside the router's
//! namespace, adopt one left running by a previous daemon, respawn it when
//! it dies (with backoff), stop it (SIGTERM, or conntrackd's own `-k`, then
//! SIGKILL). keepalived is also reloaded with throttled SIGHUPs. What
//! differs between the two programs is a small [`Program`] description
//! (command line, which command lines are ours, pidfiles, leftovers, when
//! it is up, how it is asked to stop); the state machine is this one.
//!
//! A [`Supervisor`] is a state machine driven by the event loop: every
//! method takes the current time (`now`) and returns at once. It never
//! sleeps, never waits for a process and never reaps one: the daemon reaps
//! children on SIGCHLD, in batches ([`crate::sys::spawn::reap_at_most`]),
//! and hands each exit to
//! [`Supervisor::child_exited`]; deaths of processes that are not our
//! children (an adopted program, an orphan to clean up) are seen through
//! a pidfd the daemon registers with its `mio::Poll`
//! ([`Supervisor::register_pidfd`], [`Supervisor::pidfd_ready`]); timers
//! (respawn backoff, SIGHUP throttle, stop escalation, the start-up check)
//! are reported by [`Supervisor::next_deadline`] and run by
//! [`Supervisor::tick`].
//!
//! keepalived runs as `KEEPALIVED -n -P -f CONF -p PID -r VRRP_PID [-D]`
//! and conntrackd as `CONNTRACKD -C CONF`: `-n`, and conntrackd without
//! Neutron's `-d`, keep the program our direct child (its death comes as
//! SIGCHLD, there is no daemonized grandchild to chase), and it starts in a
//! session of its own so a Ctrl-C to a foreground daemon never reaches it.
//! keepalived's parent forks the VRRP child, which writes `VRRP_PID`;
//! conntrackd writes no pidfile, so the supervisor writes `conntrackd.pid`
//! with the pid it spawned.
//!
//! Invariants:
//! - **One program per router.** A spawn happens only once the pidfile
//!   names no live process of ours and no orphaned child of ours (the VRRP
//!   child) is alive: an orphan is SIGKILLed and the spawn waits until it is
//!   gone (a new keepalived refuses to start while a pidfile names a live
//!   process, and a dying orphan would remove the new VRRP pidfile). A
//!   conntrackd is not spawned while anything answers on its control
//!   socket, and its leftovers (lock file, dead socket) are removed only
//!   then.
//! - **Ours** is proven, not assumed (issue 15.3): a pidfile names a live
//!   pid whose `/proc/PID/cmdline` is one of ours ([`Program::names_conf`]),
//!   whose `/proc/PID/exe` is the configured binary (same device and
//!   inode), which runs as root (real, effective, saved and filesystem uid:
//!   the daemon's own) in the router's network namespace, and which started
//!   before the pidfile was last written ([`judge_process`]). The proof is
//!   made twice, the second time after a pidfd pinned the process, and the
//!   pidfd is then checked to still name a live process, so the pid cannot
//!   have been recycled in between. A zombie has an empty cmdline, so it is
//!   never ours. Anything else a pidfile names (a user's `tail -f CONF`) is
//!   left alone: neither adopted nor signalled, its pidfile removed as
//!   stale, and a warning names it.
//! - **One namespace.** A process proven ours in everything but the
//!   namespace runs in an older instance of the router's namespace (deleted
//!   and re-created while the daemon was down): it is stopped (through its
//!   pidfd) and a new one started in the namespace the name means now,
//!   never left beside it. While the namespace does not exist at all, it is
//!   adopted (the daemon moves it once the namespace is back).
//! - **No signal to a recycled pid.** Our own child is signalled by pid only
//!   until its exit is reported (its pid cannot be reused before it is
//!   reaped, and the daemon reports what it reaps); any other process is
//!   signalled through its pidfd, or, on a kernel without pidfds, by pid
//!   right after checking its start time is still the one proven.
//! - Dropping or detaching a supervisor never signals anything: the program
//!   outlives the daemon unless [`Supervisor::stop`] was called.
//! - [`Supervisor::next_deadline`] is `None` unless a timer is pending: an
//!   idle router costs no wake-ups.

mod lifecycle;
mod outcome;
mod program;
mod proof;
mod respawn;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::signal::Signal;

pub use outcome::{Outcome, Sighup, SupervisorError};
pub use program::{Kind, Program, cmdline_is_conntrackd_daemon, cmdline_names_conf};
use proof::same_process;
pub use proof::{Expected, NotOurs, PIDFILE_SLACK, ProcFacts, judge_process, parse_pid, resolve_program};
pub use respawn::{RespawnBackoff, RespawnPolicy};

use crate::config::{ChildAction, DaemonConfig, RouterConfig};
use crate::core::ident::{Namespace, RouterId};
use crate::keepalived::throttle::SighupThrottle;
use crate::sys::files::confs::HaConfs;
use crate::sys::pidfd::Pidfd;
use crate::sys::spawn::ChildExit;

/// How long a stopping program gets between being asked to stop (SIGTERM,
/// or conntrackd's `-k`) and SIGKILL (SPEC 3.4; Neutron waits as long for
/// conntrackd). keepalived 2.2 needs about a second to drop its VIPs and
/// say goodbye (priority 0) to its peers.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long a spawned program with a socket may take to create it before
/// it is reported [`Outcome::NotReady`] (conntrackd creates its control
/// socket within milliseconds).
pub const READY_WAIT: Duration = Duration::from_secs(10);

/// The first look for the socket after a spawn, and the longest gap
/// between two looks (doubling in between): a few looks in the first
/// tens of milliseconds, and only until it is there.
const READY_FIRST: Duration = Duration::from_millis(2);
const READY_MAX: Duration = Duration::from_secs(1);

/// How often an adopted program is checked when no pidfd can be opened
/// (kernel before 5.3, seccomp): the only polling of a running process
/// this module ever does, and only in that degraded case.
const ADOPTED_POLL: Duration = Duration::from_secs(1);

/// How often an orphan that was SIGKILLed is checked when no pidfd can be
/// opened for it (same degraded case; it dies within milliseconds).
const ORPHAN_POLL: Duration = Duration::from_millis(10);

/// A pidfile longer than this is not a pidfile.
const MAX_PIDFILE: u64 = 64;

// ---------------------------------------------------------------------------
// The supervisor

/// How the death of a watched process (adopted program, orphan being
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

/// What to do once the program (or an orphan) is gone.
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
    /// Asked to stop; SIGKILL at `kill_at` (`None`: already sent). Once it
    /// is gone, `then` (a stop, or a restart).
    Stopping {
        pid: u32,
        adopted: bool,
        kill_at: Option<Instant>,
        then: Then,
    },
    Stopped,
    /// The program died with `check_child_processes_action = exit`.
    Failed,
}

/// Looking for the socket of a program just spawned.
#[derive(Clone, Copy, Debug)]
struct Probe {
    at: Instant,
    every: Duration,
    until: Instant,
}

/// One router's keepalived or conntrackd. See the module documentation.
pub struct Supervisor {
    id: RouterId,
    program: Program,
    confs: HaConfs,
    /// The binary a running program must be, instead of `program.path`, in
    /// unit tests whose stand-in program is `sh`.
    #[cfg(test)]
    expect_exe: Option<std::path::PathBuf>,
    namespace: Option<Namespace>,
    action: ChildAction,
    run: Run,
    /// Set only for a process whose death SIGCHLD may not tell: the adopted
    /// program (Running/Stopping with `adopted`) or the orphan being
    /// killed (Cleaning). Always names that state's pid.
    watch: Option<Watch>,
    /// The stop command (`conntrackd -k`) running, our child.
    helper: Option<u32>,
    /// While a spawned program's socket is not there yet.
    probe: Option<Probe>,
    /// (device, inode) of the namespace our running child was spawned
    /// into: known at once, where `/proc/PID/ns/net` would show the
    /// daemon's own until the child has entered it.
    spawned_in: Option<(u64, u64)>,
    backoff: RespawnBackoff,
    throttle: SighupThrottle,
    restarts: u32,
    last_error: Option<SupervisorError>,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("router", &self.id)
            .field("program", &self.program.kind)
            .field("run", &self.run)
            .field("watch", &self.watch.as_ref().map(|w| w.pid))
            .field("restarts", &self.restarts)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor for `program`, run for `router`; nothing happens until
    /// [`Supervisor::start`].
    pub fn new(program: Program, daemon: &DaemonConfig, router: &RouterConfig, confs: &HaConfs) -> Supervisor {
        Supervisor {
            id: router.id.clone(),
            program,
            confs: confs.clone(),
            #[cfg(test)]
            expect_exe: None,
            namespace: router.namespace.clone(),
            action: daemon.child_action,
            run: Run::Idle,
            watch: None,
            helper: None,
            probe: None,
            spawned_in: None,
            backoff: RespawnBackoff::new(RespawnPolicy::default()),
            throttle: SighupThrottle::for_advert_int(router.advert_int),
            restarts: 0,
            last_error: None,
        }
    }

    /// The router's keepalived. `debug` adds `-D` (detailed keepalived logs).
    pub fn keepalived(daemon: &DaemonConfig, router: &RouterConfig, confs: &HaConfs, debug: bool) -> Supervisor {
        Supervisor::new(Program::keepalived(daemon, router, confs.layout(), debug), daemon, router, confs)
    }

    /// The router's conntrackd (`ha_conntrackd_enabled`).
    pub fn conntrackd(daemon: &DaemonConfig, router: &RouterConfig, confs: &HaConfs) -> Supervisor {
        Supervisor::new(Program::conntrackd(daemon, router, confs.layout()), daemon, router, confs)
    }

    /// A new config for the same router: the program's path,
    /// `check_child_processes_action` and the SIGHUP throttle (advert_int)
    /// apply at once; a new namespace only at the next spawn (moving a
    /// running program takes a stop and a start, which is the daemon's call).
    /// A new path for a program waiting out a respawn backoff (one that
    /// could not run) is tried at once.
    pub fn update(&mut self, daemon: &DaemonConfig, router: &RouterConfig, now: Instant) -> Vec<Outcome> {
        let path = match self.program.kind {
            Kind::Keepalived => &daemon.keepalived_path,
            Kind::Conntrackd => &daemon.conntrackd_path,
        };
        let new_path = *path != self.program.path;
        self.program.path = path.clone();
        self.action = daemon.child_action;
        self.namespace = router.namespace.clone();
        self.throttle.set_interval(SighupThrottle::min_interval(router.advert_int));
        match self.run {
            Run::Waiting { .. } if new_path => self.restart(now),
            _ => Vec::new(),
        }
    }

    pub fn router_id(&self) -> &RouterId {
        &self.id
    }

    pub fn kind(&self) -> Kind {
        self.program.kind
    }

    pub fn conf_path(&self) -> &Path {
        &self.program.conf
    }

    /// The running program's (main process) pid.
    pub fn pid(&self) -> Option<u32> {
        match self.run {
            Run::Running { pid, .. } | Run::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// (device, inode) of the network namespace the running program is in:
    /// the one it was spawned into, or for one adopted, what
    /// `/proc/PID/ns/net` says.
    pub fn netns(&self) -> Option<(u64, u64)> {
        let pid = self.pid()?;
        if self.adopted() {
            let meta = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
            return Some((std::os::unix::fs::MetadataExt::dev(&meta), std::os::unix::fs::MetadataExt::ino(&meta)));
        }
        self.spawned_in
    }

    /// Whether the running program was found running rather than spawned.
    pub fn adopted(&self) -> bool {
        matches!(self.run, Run::Running { adopted: true, .. } | Run::Stopping { adopted: true, .. })
    }

    /// Whether it is being stopped (to stay stopped, or to be restarted).
    pub fn is_stopping(&self) -> bool {
        matches!(self.run, Run::Stopping { .. })
    }

    /// How many times it died and was (or is being) respawned.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// When it will be respawned, while waiting to.
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

    /// Whether `pid` is a process this supervisor waits for (its program,
    /// an orphan being killed, its stop command): give its exit to
    /// [`Supervisor::child_exited`].
    pub fn owns(&self, pid: u32) -> bool {
        self.waits_for().any(|p| p == pid)
    }

    /// The processes this supervisor waits for (see [`Supervisor::owns`]):
    /// lets a caller index children by pid.
    pub fn waits_for(&self) -> impl Iterator<Item = u32> + use<> {
        let run = match self.run {
            Run::Running { pid, .. } | Run::Stopping { pid, .. } => Some(pid),
            Run::Cleaning { orphan, .. } => Some(orphan),
            _ => None,
        };
        run.into_iter().chain(self.helper)
    }

    /// Starts supervising: adopts a program of ours found running (no
    /// restart, no VRRP flap on a daemon upgrade), or cleans up (stale
    /// pidfiles, orphaned VRRP child, leftovers) and spawns one. One found
    /// running in an older instance of the namespace is stopped and
    /// replaced. Does nothing unless idle, stopped or failed.
    pub fn start(&mut self, now: Instant) -> Vec<Outcome> {
        let mut out = Vec::new();
        if !self.is_stopped() {
            return out;
        }
        self.backoff.reset();
        self.throttle.clear();
        match self.try_adopt(now, false, &mut out) {
            Found::Here => {}
            Found::Elsewhere => self.terminate(now, Then::Spawn { at: now }),
            Found::Nothing => self.prepare(now, Then::Spawn { at: now }, &mut out),
        }
        out
    }

    /// Stops the program and starts it again once it is gone (a new config
    /// it does not reload, a new namespace): a deliberate restart, not
    /// counted in [`Supervisor::restarts`] and not backed off. One waiting
    /// out a respawn backoff starts at once.
    pub fn restart(&mut self, now: Instant) -> Vec<Outcome> {
        let mut out = Vec::new();
        self.backoff.reset();
        self.throttle.clear();
        match self.run {
            Run::Idle | Run::Stopped | Run::Failed => return self.start(now),
            Run::Running { .. } => self.terminate(now, Then::Spawn { at: now }),
            Run::Waiting { .. } => self.prepare(now, Then::Spawn { at: now }, &mut out),
            Run::Cleaning { orphan, .. } => self.run = Run::Cleaning { orphan, then: Then::Spawn { at: now } },
            Run::Stopping { pid, adopted, kill_at, .. } => {
                self.run = Run::Stopping { pid, adopted, kill_at, then: Then::Spawn { at: now } }
            }
        }
        out
    }

    /// A child of the daemon exited (reaped by the daemon). Empty
    /// when it was not ours ([`Supervisor::owns`] tells beforehand).
    pub fn child_exited(&mut self, pid: u32, exit: ChildExit, now: Instant) -> Vec<Outcome> {
        let mut out = Vec::new();
        if self.helper == Some(pid) {
            self.helper = None;
            self.stop_command_exited(exit);
            return out;
        }
        let kind = self.program.kind;
        match self.run {
            Run::Running { pid: p, .. } if p == pid => match exit {
                // It never ran: a spawn failure learnt late, not a death.
                ChildExit::NotRun(failure) => {
                    let source = failure.into_spawn_error(&self.spawned_program());
                    self.spawn_failed(source, now, &mut out);
                }
                exit => self.on_death(Some(exit), now, &mut out),
            },
            Run::Stopping { pid: p, then, .. } if p == pid => {
                log::debug!("router {}: {kind} (pid {pid}) stopped ({exit})", self.id);
                self.watch = None;
                self.prepare(now, then, &mut out);
            }
            Run::Cleaning { orphan, then } if orphan == pid => {
                log::debug!("router {}: orphaned {kind} process {pid} gone ({exit})", self.id);
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
    /// 1.5 × advert_int (see [`SighupThrottle`]). conntrackd is restarted
    /// instead ([`Supervisor::restart`]): it re-reads nothing on SIGHUP.
    pub fn sighup(&mut self, now: Instant) -> Sighup {
        let Run::Running { pid, .. } = self.run else { return Sighup::NotRunning };
        if self.program.kind != Kind::Keepalived {
            return Sighup::NotRunning;
        }
        if !self.throttle.request(now) {
            return match self.throttle.deadline() {
                Some(at) => Sighup::Deferred { at },
                None => Sighup::NotRunning,
            };
        }
        if self.hup(pid) { Sighup::Sent } else { Sighup::Failed }
    }

    /// Stops the program: SIGTERM (conntrackd: `conntrackd -C CONF -k`, as
    /// Neutron does, SIGTERM if that cannot run or fails), SIGKILL after
    /// [`STOP_GRACE`] if still alive; once it (and any orphaned child) is
    /// gone, its pidfiles and leftovers are removed and
    /// [`Outcome::Stopped`] is reported (possibly at once). The router's
    /// directory and config files are the daemon's to remove.
    pub fn stop(&mut self, now: Instant) -> Vec<Outcome> {
        let mut out = Vec::new();
        self.throttle.clear();
        match self.run {
            Run::Idle => {
                // Never started or detached: a program of ours may run.
                if self.try_adopt(now, true, &mut out) == Found::Nothing {
                    self.prepare(now, Then::Stop, &mut out);
                } else {
                    self.terminate(now, Then::Stop);
                }
            }
            Run::Running { .. } => self.terminate(now, Then::Stop),
            Run::Waiting { .. } | Run::Failed => self.prepare(now, Then::Stop, &mut out),
            Run::Cleaning { orphan, .. } => self.run = Run::Cleaning { orphan, then: Then::Stop },
            Run::Stopping { pid, adopted, kill_at, .. } => {
                self.run = Run::Stopping { pid, adopted, kill_at, then: Then::Stop }
            }
            Run::Stopped => {}
        }
        out
    }

    /// Lets go of the program without touching it (`on_exit = keep`): the
    /// pidfd is closed, no signal is sent, no file removed. A later
    /// [`Supervisor::start`] (by this or a new daemon) adopts it again.
    pub fn detach(&mut self) {
        self.watch = None;
        self.probe = None;
        self.throttle.clear();
        self.run = Run::Idle;
    }

    /// The earliest timer: respawn backoff, deferred SIGHUP, stop
    /// escalation, the look for a new program's socket, or the
    /// degraded-mode liveness check. `None` when nothing is pending.
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
        crate::sys::event_loop::earliest([run, poll, self.probe.map(|p| p.at)])
    }

    /// Runs whatever timer is due at `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<Outcome> {
        let mut out = Vec::new();
        if let Some(Watch { pid, start, how: How::Poll { at, every } }) = &mut self.watch
            && *at <= now
        {
            if same_process(*pid, *start, &self.program) {
                *at = now + *every;
            } else {
                out.extend(self.watched_gone(now));
            }
        }
        self.look_for_socket(now, &mut out);
        let kind = self.program.kind;
        match self.run {
            Run::Running { pid, .. } if self.throttle.poll(now) => {
                log::info!("router {}: sending the deferred SIGHUP to {kind}", self.id);
                self.hup(pid);
            }
            Run::Waiting { at } if at <= now => self.prepare(now, Then::Spawn { at }, &mut out),
            Run::Stopping { pid, adopted, kill_at: Some(kill_at), then } if kill_at <= now => {
                log::warn!(
                    "router {}: {kind} (pid {pid}) still running {} s after being asked to stop: sending SIGKILL",
                    self.id,
                    STOP_GRACE.as_secs()
                );
                self.send(pid, Signal::SIGKILL);
                self.run = Run::Stopping { pid, adopted, kill_at: None, then };
            }
            _ => {}
        }
        out
    }
}

/// What [`Supervisor::try_adopt`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    Nothing,
    /// Adopted: ours, running where it should.
    Here,
    /// Ours, but in another instance of the router's namespace: pinned
    /// (state `Running`), to be stopped and replaced.
    Elsewhere,
}
