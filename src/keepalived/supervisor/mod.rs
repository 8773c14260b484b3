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

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::signal::Signal;

use crate::config::{ChildAction, DaemonConfig, RouterConfig};
use crate::core::ident::{Namespace, RouterId};
use crate::core::layout::Layout;
use crate::sys::spawn::{self, Exit, SpawnError, SpawnOptions};

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

/// `/proc/PID/cmdline` is read up to this many bytes; keepalived's is a few
/// hundred.
const MAX_CMDLINE: u64 = 64 * 1024;

/// A pidfile longer than this is not a pidfile.
const MAX_PIDFILE: u64 = 64;

/// How much later than its pidfile's last write a process may appear to
/// have started and still be the one that wrote it. keepalived writes its
/// pidfile after it starts; the slack covers the 10 ms granularity of
/// process start times and small clock adjustments. A pid reused by
/// another process necessarily started after the pidfile's writer died.
pub const PIDFILE_SLACK: Duration = Duration::from_secs(1);

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`), so that
/// keepalived's own children (VRRP, checker), orphaned when their parent
/// crashes, are reparented to the daemon rather than to init: their exits
/// then arrive as SIGCHLD like any other child's. Call once at daemon start.
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

// ---------------------------------------------------------------------------
// Pure policies

/// When to respawn a keepalived that keeps dying: the first death is
/// respawned at once (a one-off crash costs a few milliseconds of VRRP
/// silence, not seconds); each further *quick* death in a row doubles the
/// delay, from `first` up to `max`, so a keepalived that cannot start (bad
/// config, interface missing) does not spin. A death after `stable_after`
/// of running starts a fresh streak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Delay before the second respawn of a streak (the first is immediate).
    pub first: Duration,
    /// The longest delay.
    pub max: Duration,
    /// A keepalived that ran at least this long before dying was stable.
    pub stable_after: Duration,
}

impl Default for BackoffPolicy {
    /// 0, then 100 ms doubling to 30 s; 10 s of running counts as stable.
    fn default() -> BackoffPolicy {
        BackoffPolicy {
            first: Duration::from_millis(100),
            max: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
        }
    }
}

impl BackoffPolicy {
    /// The delay before respawn number `streak` of a streak of quick deaths
    /// (0: the first, immediate): `first × 2^(streak-1)`, at most `max`.
    pub fn delay(&self, streak: u32) -> Duration {
        crate::core::backoff::Backoff::new(self.first, self.max).after(streak)
    }
}

/// The backoff state of one router: how many quick deaths in a row.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    streak: u32,
    current: Duration,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Backoff {
        Backoff { policy, streak: 0, current: Duration::ZERO }
    }

    /// keepalived died after running for `lived`: how long to wait before
    /// respawning it.
    pub fn on_death(&mut self, lived: Duration) -> Duration {
        if lived >= self.policy.stable_after {
            self.streak = 0;
        }
        self.current = self.policy.delay(self.streak);
        self.streak = self.streak.saturating_add(1);
        self.current
    }

    /// keepalived could not even be started: how long to wait before trying
    /// again. Never zero (a missing binary must not make the loop spin).
    pub fn on_spawn_failure(&mut self) -> Duration {
        let streak = self.streak.max(1);
        self.current = self.policy.delay(streak);
        self.streak = streak.saturating_add(1);
        self.current
    }

    /// Forgets the streak (a deliberate start after a stop).
    pub fn reset(&mut self) {
        self.streak = 0;
        self.current = Duration::ZERO;
    }

    /// The delay applied to the latest death or failure.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// Quick deaths (and failed starts) in a row so far.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    pub fn policy(&self) -> BackoffPolicy {
        self.policy
    }
}

/// At most one SIGHUP per `interval` (Neutron's rule: 1.5 × advert_int;
/// SIGHUPs closer than that can make a primary flip), coalescing requests:
/// the first request after a quiet period is sent at once, any number of
/// requests inside the window make exactly one SIGHUP when it ends.
///
/// Invariant: two sends are never closer than `interval`; a request is never
/// lost (it is sent, or pending with a deadline), except when keepalived
/// (re)starts, which reads the current file anyway ([`ReloadThrottle::started`]).
#[derive(Clone, Debug)]
pub struct ReloadThrottle {
    interval: Duration,
    last: Option<Instant>,
    pending: bool,
}

impl ReloadThrottle {
    pub fn new(interval: Duration) -> ReloadThrottle {
        ReloadThrottle { interval, last: None, pending: false }
    }

    /// 1.5 × `advert_int` seconds.
    pub fn min_interval(advert_int: u32) -> Duration {
        Duration::from_millis(u64::from(advert_int) * 1500)
    }

    pub fn for_advert_int(advert_int: u32) -> ReloadThrottle {
        ReloadThrottle::new(ReloadThrottle::min_interval(advert_int))
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A new `advert_int` takes effect for the current window too.
    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    fn window_end(&self) -> Option<Instant> {
        self.last.map(|last| last.checked_add(self.interval).unwrap_or(last))
    }

    /// A reload is wanted at `now`. `true`: send SIGHUP now; `false`: it is
    /// pending until [`ReloadThrottle::deadline`].
    pub fn request(&mut self, now: Instant) -> bool {
        match self.window_end() {
            Some(end) if now < end => {
                self.pending = true;
                false
            }
            _ => {
                self.last = Some(now);
                self.pending = false;
                true
            }
        }
    }

    /// When the pending SIGHUP is due; `None` when nothing is pending.
    pub fn deadline(&self) -> Option<Instant> {
        if self.pending { self.window_end() } else { None }
    }

    /// `true`: the pending SIGHUP is due at `now`; send it (a new window
    /// starts).
    pub fn poll(&mut self, now: Instant) -> bool {
        match self.deadline() {
            Some(due) if now >= due => {
                self.last = Some(now);
                self.pending = false;
                true
            }
            _ => false,
        }
    }

    /// keepalived was (re)started at `now`: it reads the current file, so
    /// nothing is pending, and its first SIGHUP waits a whole window (which
    /// also keeps a SIGHUP from reaching it before it handles signals, when
    /// SIGHUP's default action would kill it).
    pub fn started(&mut self, now: Instant) {
        self.last = Some(now);
        self.pending = false;
    }

    /// The SIGHUP actually went out at `at`. The window must run from the
    /// real send, not from when the loop woke up: a reload of a large
    /// config takes long enough between the two to bring two SIGHUPs
    /// closer than `interval` (measured: 1.4 s instead of 1.5 s with 400
    /// routers). A later `at` only ever moves the window end later.
    pub fn sent(&mut self, at: Instant) {
        self.last = Some(self.last.map_or(at, |last| last.max(at)));
    }

    /// Nothing sent, nothing pending (keepalived adopted or gone).
    pub fn clear(&mut self) {
        self.last = None;
        self.pending = false;
    }
}

/// Whether a NUL-separated `/proc/PID/cmdline` gives `conf` as keepalived's
/// configuration file: `-f CONF`, `-fCONF`, `--use-file CONF` or
/// `--use-file=CONF` after `argv[0]`. Requiring the option (not just the
/// path anywhere) keeps an operator's `less CONF` from ever being taken for
/// keepalived.
pub fn cmdline_names_conf(cmdline: &[u8], conf: &[u8]) -> bool {
    if conf.is_empty() {
        return false;
    }
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).skip(1).collect();
    args.iter().enumerate().any(|(i, arg)| {
        let is_option = |a: &[u8]| a == b"-f" || a == b"--use-file";
        (*arg == conf && i > 0 && is_option(args[i - 1]))
            || arg.strip_prefix(b"--use-file=") == Some(conf)
            || (arg.strip_prefix(b"-f") == Some(conf) && !arg.starts_with(b"--"))
    })
}

/// The pid in a pidfile's contents: decimal, surrounding whitespace allowed
/// (keepalived writes `PID\n`), 1 ..= i32::MAX. Anything else: `None`.
pub fn parse_pid(text: &[u8]) -> Option<u32> {
    let text = text.trim_ascii();
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let pid: u32 = std::str::from_utf8(text).ok()?.parse().ok()?;
    (pid > 0 && pid <= i32::MAX as u32).then_some(pid)
}

/// What must be true of a process for it to be a router's keepalived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// keepalived's config file, given to `-f`.
    pub conf: PathBuf,
    /// (device, inode) of the configured keepalived binary; `None` when it
    /// is not there (nothing running can then be proven ours, except...).
    pub exe: Option<(u64, u64)>,
    /// ... a keepalived started before the binary at this (canonical) path
    /// was replaced or removed: the kernel shows `PATH (deleted)` for it. A
    /// package upgrade does that, and an upgrade must not turn into a
    /// second keepalived beside the first.
    pub exe_path: PathBuf,
    /// The uid every one of its uids must be: the daemon's, root.
    pub uid: u32,
    /// (device, inode) of the router's network namespace.
    pub netns: Option<(u64, u64)>,
}

/// What `/proc/PID` says about a process ([`ProcFacts::read`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcFacts {
    pub cmdline: Vec<u8>,
    /// (device, inode) of the file it runs.
    pub exe: Option<(u64, u64)>,
    /// What `/proc/PID/exe` reads as.
    pub exe_link: Option<PathBuf>,
    /// Real, effective, saved and filesystem uid.
    pub uids: Option<[u32; 4]>,
    pub ppid: Option<u32>,
    /// (device, inode) of its network namespace.
    pub netns: Option<(u64, u64)>,
    /// Clock ticks after boot (`/proc/PID/stat` field 22): with the pid,
    /// what identifies a process for as long as the system runs.
    pub start_ticks: Option<u64>,
    /// The same start time on the wall clock.
    pub started: Option<SystemTime>,
}

/// Why a process is not proven to be a router's keepalived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotOurs {
    /// No such process (or a zombie, or it changed while being looked at).
    Gone,
    Cmdline,
    Exe {
        running: Option<PathBuf>,
    },
    Uid {
        uids: Option<[u32; 4]>,
    },
    Namespace,
    /// It started this long after the pidfile naming it was written.
    StartedAfterPidfile {
        by: Duration,
    },
}

impl fmt::Display for NotOurs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotOurs::Gone => f.write_str("no such process"),
            NotOurs::Cmdline => f.write_str("its command line does not give our config to -f"),
            NotOurs::Exe { running: Some(exe) } => {
                write!(f, "it runs {}, not the configured keepalived", exe.display())
            }
            NotOurs::Exe { running: None } => f.write_str("its executable is unknown"),
            NotOurs::Uid { uids: Some(u) } => write!(f, "it runs as uid {} (effective {}), not root", u[0], u[1]),
            NotOurs::Uid { uids: None } => f.write_str("its uids are unknown"),
            NotOurs::Namespace => f.write_str("it runs in another network namespace"),
            NotOurs::StartedAfterPidfile { by } => {
                write!(f, "it started {:.1} s after the pidfile was written", by.as_secs_f64())
            }
        }
    }
}

/// Whether `facts` prove a router's keepalived (see the module
/// documentation). `written`: when the pidfile naming it was last written
/// (`None`: no start-time check). Pure.
pub fn judge_process(facts: &ProcFacts, expected: &Expected, written: Option<SystemTime>) -> Result<(), NotOurs> {
    if facts.cmdline.is_empty() {
        return Err(NotOurs::Gone);
    }
    if !cmdline_names_conf(&facts.cmdline, expected.conf.as_os_str().as_bytes()) {
        return Err(NotOurs::Cmdline);
    }
    let same_file = facts.exe.is_some() && facts.exe == expected.exe;
    let mut deleted = expected.exe_path.as_os_str().to_owned();
    deleted.push(" (deleted)");
    let replaced = facts.exe_link.as_ref().is_some_and(|link| link.as_os_str() == deleted);
    if !same_file && !replaced {
        return Err(NotOurs::Exe { running: facts.exe_link.clone() });
    }
    if facts.uids.is_none_or(|uids| uids.iter().any(|&u| u != expected.uid)) {
        return Err(NotOurs::Uid { uids: facts.uids });
    }
    if facts.netns.is_none() || facts.netns != expected.netns {
        return Err(NotOurs::Namespace);
    }
    if let Some(written) = written {
        let Some(started) = facts.started else { return Err(NotOurs::Gone) };
        if let Ok(by) = started.duration_since(written)
            && by > PIDFILE_SLACK
        {
            return Err(NotOurs::StartedAfterPidfile { by });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Errors and outcomes

/// What went wrong, with the router, the path or the pid concerned.
#[derive(Debug)]
pub enum SupervisorError {
    /// keepalived could not be started (program missing, namespace gone).
    Spawn { router: RouterId, program: String, source: SpawnError },
    /// keepalived died. `exit` is `None` for a process that was not our child
    /// (adopted): its status is not ours to collect.
    Died { router: RouterId, pid: u32, exit: Option<Exit>, lived: Duration },
    /// A signal could not be sent.
    Signal { router: RouterId, pid: u32, signal: Signal, source: io::Error },
    /// A pidfile could not be read or removed.
    Pidfile { router: RouterId, path: PathBuf, action: &'static str, source: io::Error },
    /// No pidfd for a process we must watch: it is polled instead.
    Pidfd { router: RouterId, pid: u32, source: io::Error },
}

impl SupervisorError {
    pub fn router(&self) -> &RouterId {
        match self {
            SupervisorError::Spawn { router, .. }
            | SupervisorError::Died { router, .. }
            | SupervisorError::Signal { router, .. }
            | SupervisorError::Pidfile { router, .. }
            | SupervisorError::Pidfd { router, .. } => router,
        }
    }
}

impl fmt::Display for SupervisorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorError::Spawn { router, program, source } => {
                write!(f, "router {router}: cannot start keepalived ({program}): {source}")
            }
            SupervisorError::Died { router, pid, exit, lived } => {
                write!(f, "router {router}: keepalived (pid {pid}) ")?;
                match exit {
                    Some(exit) => write!(f, "died ({exit})")?,
                    None => f.write_str("died")?,
                }
                write!(f, " after {:.1} s", lived.as_secs_f64())
            }
            SupervisorError::Signal { router, pid, signal, source } => {
                write!(f, "router {router}: cannot send {signal} to keepalived (pid {pid}): {source}")
            }
            SupervisorError::Pidfile { router, path, action, source } => {
                write!(f, "router {router}: cannot {action} pidfile {}: {source}", path.display())
            }
            SupervisorError::Pidfd { router, pid, source } => {
                write!(f, "router {router}: cannot open a pidfd for pid {pid} (polling it instead): {source}")
            }
        }
    }
}

impl std::error::Error for SupervisorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SupervisorError::Spawn { source, .. } => Some(source),
            SupervisorError::Died { .. } => None,
            SupervisorError::Signal { source, .. }
            | SupervisorError::Pidfile { source, .. }
            | SupervisorError::Pidfd { source, .. } => Some(source),
        }
    }
}

/// Something the daemon may want to log, count or act on. A call can
/// return several (a death, then the respawn it triggered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// keepalived was started; `pid` is our child.
    Spawned { pid: u32 },
    /// A keepalived of ours found running was adopted (not restarted).
    Adopted { pid: u32 },
    /// A new pidfd waits for [`Supervisor::register_pidfd`].
    Watch,
    /// keepalived died. `respawn_in`: when it will be respawned (zero: at
    /// once, possibly already within this call, see the following
    /// `Spawned`); `None` with `check_child_processes_action = exit`: nothing
    /// more is done, the daemon is expected to exit 1.
    Died { pid: u32, exit: Option<Exit>, respawn_in: Option<Duration> },
    /// keepalived could not be started; retried in `retry_in`. The reason is
    /// [`Supervisor::last_error`].
    SpawnFailed { retry_in: Duration },
    /// A stop finished: keepalived and its children are gone, pidfiles
    /// removed.
    Stopped,
}

/// What [`Supervisor::reload`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// SIGHUP sent now.
    Sent,
    /// Inside the throttle window: one SIGHUP will be sent at `at`.
    Deferred { at: Instant },
    /// keepalived is not running: nothing to do, the next spawn reads the
    /// new file.
    NotRunning,
    /// The signal could not be sent ([`Supervisor::last_error`]).
    Failed,
}

// ---------------------------------------------------------------------------
// The supervisor

/// How the death of a watched process (adopted keepalived, orphan being
/// killed) is learnt.
enum How {
    /// Readable when the process has exited. Closing it removes it from the
    /// daemon's epoll set (nothing else holds it: pidfds are close-on-exec).
    Pidfd { fd: OwnedFd, registered: bool },
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
    /// Backoff before the next spawn.
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
    layout: Layout,
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
    backoff: Backoff,
    throttle: ReloadThrottle,
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
    pub fn new(daemon: &DaemonConfig, router: &RouterConfig, layout: &Layout, debug: bool) -> Supervisor {
        Supervisor {
            id: router.id.clone(),
            program: daemon.keepalived_path.clone(),
            layout: layout.clone(),
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
            backoff: Backoff::new(BackoffPolicy::default()),
            throttle: ReloadThrottle::for_advert_int(router.advert_int),
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
        self.throttle.set_interval(ReloadThrottle::min_interval(router.advert_int));
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
    pub fn child_exited(&mut self, pid: u32, exit: Exit, now: Instant) -> Vec<Outcome> {
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
            Some(Watch { how: How::Pidfd { fd, .. }, .. }) => pidfd_exited(fd),
            _ => false,
        };
        if ready { self.watched_gone(now) } else { Vec::new() }
    }

    /// The config file changed: SIGHUP keepalived, at most once per
    /// 1.5 × advert_int (see [`ReloadThrottle`]).
    pub fn reload(&mut self, now: Instant) -> Reload {
        let Run::Running { pid, .. } = self.run else { return Reload::NotRunning };
        if !self.throttle.request(now) {
            return match self.throttle.deadline() {
                Some(at) => Reload::Deferred { at },
                None => Reload::NotRunning,
            };
        }
        if self.hup(pid) { Reload::Sent } else { Reload::Failed }
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

    // ---- internals ----

    fn args(&self) -> Vec<String> {
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
    fn try_adopt(&mut self, now: Instant, out: &mut Vec<Outcome>) -> bool {
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
    fn vrrp_child_vouches_for(&mut self, pid: u32, expected: &Expected) -> bool {
        let path = self.vrrp_pid_file.clone();
        let Some((child, _)) = self.read_pidfile(&path) else { return false };
        let facts = ProcFacts::read(child);
        facts.ppid == Some(pid) && judge_process(&facts, expected, None).is_ok()
    }

    /// What a process must be to be this router's keepalived, now (the
    /// binary and the namespace are looked at again each time: an upgrade
    /// or a re-created namespace changes them).
    fn expected(&self) -> Expected {
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
    fn pin(
        &mut self,
        pid: u32,
        expected: &Expected,
        written: Option<SystemTime>,
        now: Instant,
        every: Duration,
    ) -> Result<Watch, NotOurs> {
        let first = ProcFacts::read(pid);
        judge_process(&first, expected, written)?;
        let how = match pidfd_open(pid) {
            Ok(fd) => {
                let again = ProcFacts::read(pid);
                judge_process(&again, expected, written)?;
                if again.start_ticks != first.start_ticks || pidfd_send_signal(&fd, None).is_err() {
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
    fn not_ours(&self, path: &Path, pid: u32, reason: &NotOurs) {
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
    fn on_death(&mut self, exit: Option<Exit>, now: Instant, out: &mut Vec<Outcome>) {
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
    fn watched_gone(&mut self, now: Instant) -> Vec<Outcome> {
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
    fn prepare(&mut self, now: Instant, then: Then, out: &mut Vec<Outcome>) {
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

    fn spawn_now(&mut self, now: Instant, out: &mut Vec<Outcome>) {
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
    fn find_orphan(&mut self, now: Instant) -> Option<Watch> {
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
    fn kill_orphan(&mut self, orphan: Watch, out: &mut Vec<Outcome>) -> bool {
        let pid = orphan.pid;
        log::warn!("router {}: killing orphaned keepalived process {pid} before starting keepalived", self.id);
        let result = match &orphan.how {
            How::Pidfd { fd, .. } => pidfd_send_signal(fd, Some(Signal::SIGKILL)),
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

    fn terminate(&mut self, now: Instant) {
        let Run::Running { pid, adopted, .. } = self.run else { return };
        log::debug!("router {}: stopping keepalived (pid {pid})", self.id);
        self.send(pid, Signal::SIGTERM);
        self.run = Run::Stopping { pid, adopted, kill_at: Some(now + STOP_GRACE) };
    }

    fn hup(&mut self, pid: u32) -> bool {
        log::debug!("router {}: SIGHUP to keepalived (pid {pid})", self.id);
        let sent = self.send(pid, Signal::SIGHUP);
        self.throttle.sent(Instant::now());
        sent
    }

    /// Signals the keepalived `pid`: through its pidfd when it has one (not
    /// our child), by pid otherwise (our child, not reaped yet). A process
    /// already gone (ESRCH) is not an error: its exit is on its way.
    fn send(&mut self, pid: u32, signal: Signal) -> bool {
        let result = match &self.watch {
            Some(Watch { pid: p, how: How::Pidfd { fd, .. }, .. }) if *p == pid => pidfd_send_signal(fd, Some(signal)),
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

    fn signal_error(&mut self, pid: u32, signal: Signal, source: io::Error) {
        let error = SupervisorError::Signal { router: self.id.clone(), pid, signal, source };
        log::error!("{error}");
        self.last_error = Some(error);
    }

    /// The pid a pidfile names and when the pidfile was last written;
    /// `None` when missing, empty or not a pid (an unreadable one, or a
    /// symlink, which is never followed, is reported too).
    fn read_pidfile(&mut self, path: &Path) -> Option<(u32, SystemTime)> {
        match self.layout.read_pidfile(path, MAX_PIDFILE) {
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

    fn remove_pidfile(&mut self, path: &Path) {
        match self.layout.remove_pidfile(path) {
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

// ---------------------------------------------------------------------------
// Processes

/// Whether `pid` still is the process proven ours earlier: alive, same
/// start time (`None`: unknown, then its cmdline alone says), still naming
/// our config.
fn same_process(pid: u32, start: Option<u64>, conf: &Path) -> bool {
    let facts = ProcFacts::read(pid);
    (start.is_none() || facts.start_ticks == start) && cmdline_names_conf(&facts.cmdline, conf.as_os_str().as_bytes())
}

/// `keepalived_path` as a file: itself when it holds a `/`, else the first
/// executable of that name in the fixed `PATH` children get
/// ([`spawn::CHILD_PATH`], where a bare name would be looked up anyway; the
/// daemon's inherited `PATH` plays no part). `None` when there is none.
pub fn resolve_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    std::env::split_paths(spawn::CHILD_PATH)
        .map(|dir| dir.join(program))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

impl ProcFacts {
    /// Reads what `/proc/PID` says; anything unreadable stays `None` (a
    /// process gone half way reads as gone: empty cmdline).
    pub fn read(pid: u32) -> ProcFacts {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let mut cmdline = Vec::new();
        let read = File::open(dir.join("cmdline")).and_then(|f| f.take(MAX_CMDLINE).read_to_end(&mut cmdline));
        if read.is_err() {
            cmdline.clear();
        }
        let id = |p: PathBuf| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
        let uids = field("Uid:").and_then(|v| {
            let ids: Vec<u32> = v.split_whitespace().filter_map(|w| w.parse().ok()).collect();
            <[u32; 4]>::try_from(ids).ok()
        });
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces and
        // parentheses): field 3 is the first.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect::<Vec<_>>());
        let start_ticks = after.as_ref().and_then(|f| f.get(22 - 3)).and_then(|t| t.parse().ok());
        ProcFacts {
            cmdline,
            exe: id(dir.join("exe")),
            exe_link: std::fs::read_link(dir.join("exe")).ok(),
            uids,
            ppid: field("PPid:").and_then(|v| v.parse().ok()),
            netns: id(dir.join("ns/net")),
            start_ticks,
            started: start_ticks.and_then(boot_ticks_to_wall_clock),
        }
    }
}

/// A time in clock ticks after boot, on the wall clock: the boot's wall
/// time (now on the wall clock minus now on CLOCK_BOOTTIME, which counts
/// from boot, suspend included, as process start times do) plus the ticks.
fn boot_ticks_to_wall_clock(ticks: u64) -> Option<SystemTime> {
    // SAFETY: sysconf and clock_gettime with a valid clock id and a local
    // timespec.
    let (hz, boot) = unsafe {
        let hz = libc::sysconf(libc::_SC_CLK_TCK);
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let rc = libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts);
        (hz, (rc == 0).then_some(ts))
    };
    let hz = u64::try_from(hz).ok().filter(|&hz| hz > 0)?;
    let boot = boot?;
    let since_boot = Duration::new(u64::try_from(boot.tv_sec).ok()?, u32::try_from(boot.tv_nsec).ok()?);
    let booted = SystemTime::now().checked_sub(since_boot)?;
    booted.checked_add(Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz))
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd (close-on-exec) or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` (`None`: none, only check the process is alive, as
/// `kill -0`) to the process `fd` pins.
fn pidfd_send_signal(fd: &OwnedFd, signal: Option<Signal>) -> io::Result<()> {
    let signal = signal.map_or(0, |s| s as libc::c_int);
    // SAFETY: pidfd_send_signal(2) with a valid pidfd, no siginfo, no flags.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), signal, std::ptr::null::<u8>(), 0) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Whether the process behind `fd` has exited (a pidfd polls readable then).
fn pidfd_exited(fd: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout: never blocks.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
}

fn kill(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_policy_doubles_to_the_cap() {
        let p = BackoffPolicy::default();
        let delays: Vec<u128> = (0..12).map(|n| p.delay(n).as_millis()).collect();
        assert_eq!(delays, [0, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
        assert_eq!(p.delay(40), p.max);
        assert_eq!(p.delay(u32::MAX), p.max);
    }

    #[test]
    fn quick_deaths_back_off_and_a_stable_run_resets() {
        let mut b = Backoff::new(BackoffPolicy::default());
        let quick = Duration::from_secs(1);
        assert_eq!(b.on_death(quick), Duration::ZERO, "first death: at once");
        assert_eq!(b.on_death(quick), 100 * MS);
        assert_eq!(b.on_death(quick), 200 * MS);
        assert_eq!(b.on_death(Duration::from_millis(9_999)), 400 * MS, "just under stable_after");
        assert_eq!(b.current(), 400 * MS);
        assert_eq!(b.streak(), 4);
        assert_eq!(b.on_death(Duration::from_secs(10)), Duration::ZERO, "ran stably: fresh streak");
        assert_eq!(b.on_death(quick), 100 * MS);
        for _ in 0..20 {
            b.on_death(quick);
        }
        assert_eq!(b.current(), Duration::from_secs(30));
        b.reset();
        assert_eq!(b.on_death(quick), Duration::ZERO);
    }

    #[test]
    fn failed_starts_are_never_retried_at_once() {
        let mut b = Backoff::new(BackoffPolicy::default());
        assert_eq!(b.on_spawn_failure(), 100 * MS);
        assert_eq!(b.on_spawn_failure(), 200 * MS);
        assert_eq!(b.on_spawn_failure(), 400 * MS);
        // A quick death after failed starts continues the streak.
        assert_eq!(b.on_death(MS), 800 * MS);
    }

    #[test]
    fn throttle_sends_first_at_once_and_coalesces_the_rest_into_one() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = ReloadThrottle::for_advert_int(2);
        assert_eq!(t.interval(), Duration::from_secs(3));
        assert_eq!(t.deadline(), None);
        assert!(t.request(t0), "quiet: sent at once");
        assert_eq!(t.deadline(), None, "nothing pending after a send");
        assert!(!t.request(t0 + s / 2));
        assert!(!t.request(t0 + s));
        assert!(!t.request(t0 + 2 * s));
        assert_eq!(t.deadline(), Some(t0 + 3 * s), "one SIGHUP at the end of the window");
        assert!(!t.poll(t0 + 3 * s - MS));
        assert!(t.poll(t0 + 3 * s));
        assert!(!t.poll(t0 + 3 * s), "exactly one");
        assert_eq!(t.deadline(), None);
        // The deferred send opened a new window.
        assert!(!t.request(t0 + 4 * s));
        assert_eq!(t.deadline(), Some(t0 + 6 * s));
        // A late poll sends once, and the window starts from the send.
        assert!(t.poll(t0 + 7 * s));
        assert!(!t.request(t0 + 9 * s));
        assert_eq!(t.deadline(), Some(t0 + 10 * s));
        assert!(t.poll(t0 + 10 * s));
        // Quiet again: at once.
        assert!(t.request(t0 + 20 * s));
    }

    #[test]
    fn throttle_after_start_and_after_clear() {
        let t0 = Instant::now();
        let mut t = ReloadThrottle::for_advert_int(1);
        t.started(t0);
        assert!(!t.request(t0 + MS), "a fresh keepalived gets a whole window first");
        assert_eq!(t.deadline(), Some(t0 + 1500 * MS));
        t.started(t0 + 100 * MS);
        assert_eq!(t.deadline(), None, "a respawned keepalived read the new file");
        t.clear();
        assert!(t.request(t0 + 200 * MS), "adopted: nothing known, sent at once");
        t.set_interval(Duration::from_secs(6));
        assert!(!t.request(t0 + Duration::from_secs(5)));
        assert_eq!(t.deadline(), Some(t0 + 200 * MS + Duration::from_secs(6)));
    }

    #[test]
    fn the_window_runs_from_the_real_send() {
        let t0 = Instant::now();
        let mut t = ReloadThrottle::for_advert_int(1);
        // The loop woke at t0, but the reload took 300 ms before the send.
        assert!(t.request(t0));
        t.sent(t0 + 300 * MS);
        assert!(!t.request(t0 + 1600 * MS), "1.5 s after the wake-up is only 1.3 s after the send");
        assert_eq!(t.deadline(), Some(t0 + 1800 * MS));
        // An earlier stamp never moves the window back.
        t.sent(t0);
        assert_eq!(t.deadline(), Some(t0 + 1800 * MS));
    }

    #[test]
    fn cmdline_matching() {
        let conf = b"/var/lib/h/ha_confs/r1/keepalived.conf";
        let ours = b"keepalived\0-n\0-P\0-f\0/var/lib/h/ha_confs/r1/keepalived.conf\0-p\0/var/lib/h/ha_confs/r1.pid.keepalived\0-r\0/x\0";
        assert!(cmdline_names_conf(ours, conf));
        assert!(cmdline_names_conf(b"/usr/sbin/keepalived\0--use-file=/var/lib/h/ha_confs/r1/keepalived.conf\0", conf));
        assert!(cmdline_names_conf(b"keepalived\0--use-file\0/var/lib/h/ha_confs/r1/keepalived.conf", conf));
        assert!(cmdline_names_conf(b"keepalived\0-D\0-f/var/lib/h/ha_confs/r1/keepalived.conf\0", conf));
        // Another router's config, a prefix of ours, ours as a prefix.
        assert!(!cmdline_names_conf(b"keepalived\0-f\0/var/lib/h/ha_confs/r10/keepalived.conf\0", conf));
        assert!(!cmdline_names_conf(b"keepalived\0-f\0/var/lib/h/ha_confs/r1/keepalived.conf.bak\0", conf));
        assert!(!cmdline_names_conf(b"keepalived\0-f\0/var/lib/h/ha_confs/r1/keepalived\0", conf));
        // The path without the option, or as argv[0]: not keepalived's config.
        assert!(!cmdline_names_conf(b"less\0/var/lib/h/ha_confs/r1/keepalived.conf\0", conf));
        assert!(!cmdline_names_conf(b"/var/lib/h/ha_confs/r1/keepalived.conf\0", conf));
        assert!(!cmdline_names_conf(b"x\0-p\0/var/lib/h/ha_confs/r1/keepalived.conf\0", conf));
        // A zombie's cmdline is empty; an empty conf never matches.
        assert!(!cmdline_names_conf(b"", conf));
        assert!(!cmdline_names_conf(ours, b""));
    }

    #[test]
    fn pid_parsing() {
        assert_eq!(parse_pid(b"4242\n"), Some(4242));
        assert_eq!(parse_pid(b"  17 "), Some(17));
        assert_eq!(parse_pid(b"2147483647"), Some(2147483647));
        for bad in [&b""[..], b"\n", b"0", b"-1", b"+5", b"12a", b"1 2", b"2147483648", b"99999999999999999999"] {
            assert_eq!(parse_pid(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    // ---- the state machine, without root or keepalived ----

    use crate::test_support::TempDir as Dir;

    fn supervisor(dir: &Path, program: &str, namespace: Option<&str>) -> Supervisor {
        supervisor_with(dir, program, namespace, "")
    }

    fn supervisor_with(dir: &Path, program: &str, namespace: Option<&str>, daemon_extra: &str) -> Supervisor {
        let ns = namespace.map(|n| format!("namespace = {n}\n")).unwrap_or_default();
        let text = format!(
            "[daemon]\nha_confs_path = {}\nkeepalived_path = {program}\n{daemon_extra}\
             [router r1]\n{ns}ha_interface = ha-1\nvrid = 1\n",
            dir.display()
        );
        let config = crate::config::parse(Path::new("test.conf"), &text).expect("valid config").config;
        let layout = Layout::new(&config.daemon.ha_confs_path);
        let mut sup = Supervisor::new(&config.daemon, &config.routers[0], &layout, false);
        // The stand-in keepalived below is `sh`: a running process is ours
        // when it runs that binary (the proof is otherwise unchanged).
        sup.expect_exe = Some(PathBuf::from("/bin/sh"));
        sup
    }

    fn names_conf(pid: u32, conf: &Path) -> bool {
        cmdline_names_conf(&ProcFacts::read(pid).cmdline, conf.as_os_str().as_bytes())
    }

    /// A stand-in for keepalived: one `sh` process, no children, whose
    /// cmdline gives `conf` to `-f`, blocked opening a FIFO nobody writes.
    struct Fake {
        child: std::process::Child,
    }

    impl Fake {
        fn start(dir: &Path, conf: &Path) -> Fake {
            Fake::start_with(dir, conf, "read line < \"$1\"")
        }

        fn start_with(dir: &Path, conf: &Path, script: &str) -> Fake {
            Fake::start_program(dir, Path::new("sh"), conf, script, &[])
        }

        /// `program -c script sh FIFO -f CONF extra...`.
        fn start_program(dir: &Path, program: &Path, conf: &Path, script: &str, extra: &[&Path]) -> Fake {
            let fifo = dir.join(format!("fifo-{}", dir.read_dir().map(|d| d.count()).unwrap_or(0)));
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
            let mut command = std::process::Command::new(program);
            command.args(["-c", script, "sh"]).arg(&fifo).arg("-f").arg(conf).args(extra);
            // Started clean like the daemon's children, so a test runner
            // started under `nohup` does not hand sh an ignored SIGHUP.
            // SAFETY: reset_signals only makes async-signal-safe calls.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                    crate::sys::spawn::reset_signals();
                    Ok(())
                });
            }
            let child = command.spawn().expect("spawn sh");
            // Until sh has exec'd, its cmdline is still ours.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !names_conf(child.id(), conf) {
                assert!(Instant::now() < deadline, "fake keepalived never showed up");
                std::thread::sleep(MS);
            }
            Fake { child }
        }

        fn pid(&self) -> u32 {
            self.child.id()
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Calls `pidfd_ready` until it reports something (the process was
    /// signalled; its exit takes a moment).
    fn until_pidfd_ready(sup: &mut Supervisor) -> Vec<Outcome> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = sup.pidfd_ready(Instant::now());
            if !out.is_empty() {
                return out;
            }
            assert!(Instant::now() < deadline, "pidfd never became readable");
            std::thread::sleep(MS);
        }
    }

    #[test]
    fn missing_program_is_retried_with_backoff_and_stale_pidfiles_go() {
        let dir = Dir::new("missing");
        let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", None);
        // A stale pidfile naming a live process that is not keepalived (us).
        std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", std::process::id())).expect("seed");
        std::fs::write(dir.0.join("r1.pid.keepalived-vrrp"), "garbage").expect("seed");
        let t0 = Instant::now();
        assert_eq!(sup.start(t0), [Outcome::SpawnFailed { retry_in: 100 * MS }]);
        assert!(!dir.0.join("r1.pid.keepalived").exists() && !dir.0.join("r1.pid.keepalived-vrrp").exists());
        let error = sup.last_error().expect("an error").to_string();
        assert!(error.starts_with("router r1: cannot start keepalived (/nonexistent/keepalived): "), "{error}");
        assert_eq!(sup.pid(), None);
        assert_eq!(sup.next_deadline(), Some(t0 + 100 * MS));
        assert_eq!(sup.next_restart(), Some(t0 + 100 * MS));
        assert!(!sup.is_stopped());
        assert!(sup.tick(t0 + 99 * MS).is_empty(), "not due yet");
        assert_eq!(sup.tick(t0 + 100 * MS), [Outcome::SpawnFailed { retry_in: 200 * MS }]);
        assert_eq!(sup.backoff(), 200 * MS);
        assert_eq!(sup.restarts(), 0, "failed starts are not restarts");
        assert_eq!(sup.reload(t0), Reload::NotRunning);
        assert_eq!(sup.stop(t0 + 150 * MS), [Outcome::Stopped]);
        assert!(sup.is_stopped());
        assert_eq!(sup.next_deadline(), None, "stopped: no wake-ups");
    }

    #[test]
    fn missing_namespace_is_an_error_naming_it() {
        let dir = Dir::new("nsgone");
        let mut sup = supervisor(&dir.0, "/bin/true", Some("/nonexistent/netns/r1"));
        assert_eq!(sup.start(Instant::now()), [Outcome::SpawnFailed { retry_in: 100 * MS }]);
        let error = sup.last_error().expect("an error").to_string();
        assert!(error.contains("/nonexistent/netns/r1"), "{error}");
    }

    #[test]
    fn adopts_a_running_keepalived_and_respawns_it_when_its_pidfd_fires() {
        let dir = Dir::new("adopt");
        let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", None);
        let mut fake = Fake::start(&dir.0, sup.conf_path());
        std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", fake.pid())).expect("seed");
        let t0 = Instant::now();
        assert_eq!(sup.start(t0), [Outcome::Adopted { pid: fake.pid() }, Outcome::Watch]);
        assert_eq!((sup.pid(), sup.adopted()), (Some(fake.pid()), true));
        assert!(sup.owns(fake.pid()));
        assert_eq!(sup.next_deadline(), None, "watched by pidfd, no timer");
        assert!(sup.pidfd_ready(t0).is_empty(), "alive: a spurious readiness is ignored");
        assert_eq!(sup.reload(t0), Reload::Sent, "adopted: first reload at once");
        // sh dies of the SIGHUP: the pidfd reports it.
        let out = until_pidfd_ready(&mut sup);
        let _ = fake.child.wait();
        assert!(matches!(out[0], Outcome::Died { exit: None, respawn_in: Some(Duration::ZERO), .. }), "{out:?}");
        assert_eq!(out[1], Outcome::SpawnFailed { retry_in: 100 * MS }, "{out:?}");
        assert_eq!(sup.restarts(), 1);
        assert!(!sup.owns(fake.pid()));
        assert!(sup.last_error().is_some());
    }

    #[test]
    fn kills_an_orphaned_vrrp_child_before_spawning() {
        let dir = Dir::new("orphan");
        let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", None);
        let mut orphan = Fake::start(&dir.0, sup.conf_path());
        std::fs::write(dir.0.join("r1.pid.keepalived-vrrp"), format!("{}\n", orphan.pid())).expect("seed");
        let t0 = Instant::now();
        assert_eq!(sup.start(t0), [Outcome::Watch], "waits for the orphan");
        assert!(sup.owns(orphan.pid()));
        assert_eq!(sup.next_deadline(), None);
        assert_eq!(sup.next_restart(), Some(t0));
        // The test process reaps its own child here; the daemon would have
        // reported it through child_exited instead.
        let status = orphan.child.wait().expect("wait");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
        let out = until_pidfd_ready(&mut sup);
        assert_eq!(out, [Outcome::SpawnFailed { retry_in: 100 * MS }]);
        assert!(!dir.0.join("r1.pid.keepalived-vrrp").exists());
    }

    #[test]
    fn stop_terminates_an_adopted_keepalived_then_reports_stopped() {
        let dir = Dir::new("stop");
        let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", None);
        let mut fake = Fake::start(&dir.0, sup.conf_path());
        std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", fake.pid())).expect("seed");
        let t0 = Instant::now();
        // stop() before start(): a keepalived of ours found running is
        // adopted (its pidfd to register), then stopped.
        assert_eq!(sup.stop(t0), [Outcome::Adopted { pid: fake.pid() }, Outcome::Watch]);
        assert_eq!(sup.pid(), Some(fake.pid()));
        assert_eq!(sup.next_deadline(), Some(t0 + STOP_GRACE));
        let out = until_pidfd_ready(&mut sup);
        let status = fake.child.wait().expect("wait");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGTERM));
        assert_eq!(out, [Outcome::Stopped]);
        assert!(sup.is_stopped() && sup.pid().is_none());
        assert!(!dir.0.join("r1.pid.keepalived").exists());
        assert_eq!(sup.next_deadline(), None);
    }

    #[test]
    fn with_action_exit_a_death_is_reported_and_nothing_respawned() {
        let dir = Dir::new("exit");
        let mut sup = supervisor_with(&dir.0, "/nonexistent/keepalived", None, "check_child_processes_action = exit\n");
        let mut fake = Fake::start(&dir.0, sup.conf_path());
        std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", fake.pid())).expect("seed");
        assert_eq!(sup.start(Instant::now())[0], Outcome::Adopted { pid: fake.pid() });
        let _ = fake.child.kill();
        let out = until_pidfd_ready(&mut sup);
        assert_eq!(out, [Outcome::Died { pid: fake.pid(), exit: None, respawn_in: None }]);
        assert!(sup.is_stopped() && sup.pid().is_none());
        assert_eq!((sup.restarts(), sup.next_deadline(), sup.next_restart()), (0, None, None));
        let error = sup.last_error().expect("the death").to_string();
        assert!(error.starts_with(&format!("router r1: keepalived (pid {}) died after ", fake.pid())), "{error}");
    }

    #[test]
    fn stop_escalates_to_sigkill_after_the_grace_period() {
        let dir = Dir::new("escalate");
        let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", None);
        let mut fake = Fake::start_with(&dir.0, sup.conf_path(), "trap '' TERM; read line < \"$1\"");
        std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", fake.pid())).expect("seed");
        // Wait until sh has run its `trap` (SIGTERM in SigIgn).
        let ignores_term = |pid: u32| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let ign = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).unwrap_or("0").trim().to_owned();
            u64::from_str_radix(&ign, 16).is_ok_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ignores_term(fake.pid()) {
            assert!(Instant::now() < deadline, "the fake never ignored SIGTERM");
            std::thread::sleep(MS);
        }
        let t0 = Instant::now();
        assert_eq!(sup.start(t0)[0], Outcome::Adopted { pid: fake.pid() });
        assert!(sup.stop(t0).is_empty());
        assert!(sup.tick(t0 + STOP_GRACE - MS).is_empty());
        std::thread::sleep(20 * MS);
        assert!(sup.pidfd_ready(t0).is_empty(), "SIGTERM is ignored");
        assert!(sup.tick(t0 + STOP_GRACE).is_empty());
        assert_eq!(sup.next_deadline(), None, "SIGKILL sent, nothing more to escalate");
        let out = until_pidfd_ready(&mut sup);
        let status = fake.child.wait().expect("wait");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
        assert_eq!(out, [Outcome::Stopped]);
    }

    #[test]
    fn detach_leaves_the_process_alone() {
        let dir = Dir::new("detach");
        let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", None);
        let fake = Fake::start(&dir.0, sup.conf_path());
        std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", fake.pid())).expect("seed");
        let t0 = Instant::now();
        assert_eq!(sup.start(t0)[0], Outcome::Adopted { pid: fake.pid() });
        sup.detach();
        assert!(sup.is_stopped() && sup.pid().is_none());
        assert!(names_conf(fake.pid(), sup.conf_path()), "still running");
        assert!(dir.0.join("r1.pid.keepalived").exists(), "files untouched");
        // A new start adopts it again.
        assert_eq!(sup.start(t0)[0], Outcome::Adopted { pid: fake.pid() });
    }

    // ---- the proof of ownership (issue 15.3) ----

    fn expected() -> Expected {
        Expected {
            conf: PathBuf::from("/h/r1/keepalived.conf"),
            exe: Some((8, 100)),
            exe_path: PathBuf::from("/usr/sbin/keepalived"),
            uid: 0,
            netns: Some((4, 4026532000)),
        }
    }

    fn keepalived_facts(started: SystemTime) -> ProcFacts {
        ProcFacts {
            cmdline: b"/usr/sbin/keepalived\0-n\0-P\0-f\0/h/r1/keepalived.conf\0".to_vec(),
            exe: Some((8, 100)),
            exe_link: Some(PathBuf::from("/usr/sbin/keepalived")),
            uids: Some([0; 4]),
            ppid: Some(1),
            netns: Some((4, 4026532000)),
            start_ticks: Some(4242),
            started: Some(started),
        }
    }

    #[test]
    fn judging_a_process() {
        let written = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ours = keepalived_facts(written - Duration::from_millis(30));
        let want = expected();
        assert_eq!(judge_process(&ours, &want, Some(written)), Ok(()));
        assert_eq!(judge_process(&ours, &want, None), Ok(()));

        // `tail -f CONF` of a user: same cmdline shape, nothing else.
        let tail = ProcFacts {
            cmdline: b"tail\0-f\0/h/r1/keepalived.conf\0".to_vec(),
            exe: Some((8, 200)),
            exe_link: Some(PathBuf::from("/usr/bin/tail")),
            uids: Some([65534; 4]),
            ..ours.clone()
        };
        assert_eq!(
            judge_process(&tail, &want, Some(written)),
            Err(NotOurs::Exe { running: Some(PathBuf::from("/usr/bin/tail")) })
        );
        let cases: Vec<(ProcFacts, NotOurs)> = vec![
            (ProcFacts { cmdline: Vec::new(), ..ours.clone() }, NotOurs::Gone),
            (
                ProcFacts { cmdline: b"keepalived\0-f\0/h/r2/keepalived.conf\0".to_vec(), ..ours.clone() },
                NotOurs::Cmdline,
            ),
            (ProcFacts { exe: None, exe_link: None, ..ours.clone() }, NotOurs::Exe { running: None }),
            (ProcFacts { uids: Some([65534, 0, 0, 0]), ..ours.clone() }, NotOurs::Uid { uids: Some([65534, 0, 0, 0]) }),
            (ProcFacts { uids: Some([0, 0, 65534, 0]), ..ours.clone() }, NotOurs::Uid { uids: Some([0, 0, 65534, 0]) }),
            (ProcFacts { uids: None, ..ours.clone() }, NotOurs::Uid { uids: None }),
            (ProcFacts { netns: Some((4, 4026531840)), ..ours.clone() }, NotOurs::Namespace),
            (ProcFacts { netns: None, ..ours.clone() }, NotOurs::Namespace),
            (
                ProcFacts { started: Some(written + Duration::from_secs(90)), ..ours.clone() },
                NotOurs::StartedAfterPidfile { by: Duration::from_secs(90) },
            ),
            (ProcFacts { started: None, ..ours.clone() }, NotOurs::Gone),
        ];
        for (facts, why) in cases {
            assert_eq!(judge_process(&facts, &want, Some(written)), Err(why.clone()), "{facts:?}");
        }
        // Within the slack, or no time check: fine.
        let late = ProcFacts { started: Some(written + PIDFILE_SLACK), ..ours.clone() };
        assert_eq!(judge_process(&late, &want, Some(written)), Ok(()));
        let late = ProcFacts { started: Some(written + Duration::from_secs(90)), ..ours.clone() };
        assert_eq!(judge_process(&late, &want, None), Ok(()));
        // The binary was upgraded (replaced) under a running keepalived.
        let upgraded = ProcFacts {
            exe: Some((8, 99)),
            exe_link: Some(PathBuf::from("/usr/sbin/keepalived (deleted)")),
            ..ours.clone()
        };
        assert_eq!(judge_process(&upgraded, &want, Some(written)), Ok(()));
        let elsewhere = ProcFacts { exe_link: Some(PathBuf::from("/tmp/keepalived (deleted)")), ..upgraded };
        assert!(matches!(judge_process(&elsewhere, &want, Some(written)), Err(NotOurs::Exe { .. })));
        // The messages name what is wrong.
        assert_eq!(
            NotOurs::Exe { running: Some("/usr/bin/tail".into()) }.to_string(),
            "it runs /usr/bin/tail, not the configured keepalived"
        );
        assert_eq!(
            NotOurs::Uid { uids: Some([65534; 4]) }.to_string(),
            "it runs as uid 65534 (effective 65534), not root"
        );
    }

    #[test]
    fn reads_its_own_process() {
        let me = ProcFacts::read(std::process::id());
        let uid = nix::unistd::getuid().as_raw();
        assert_eq!(me.uids.map(|u| u[0]), Some(uid));
        assert_eq!(me.ppid, Some(nix::unistd::getppid().as_raw() as u32));
        let exe = std::fs::metadata("/proc/self/exe").unwrap();
        assert_eq!(me.exe, Some((exe.dev(), exe.ino())));
        let ns = std::fs::metadata("/proc/self/ns/net").unwrap();
        assert_eq!(me.netns, Some((ns.dev(), ns.ino())));
        let started = me.started.expect("a start time");
        assert!(
            started <= SystemTime::now()
                && SystemTime::now().duration_since(started).unwrap() < Duration::from_secs(3600)
        );
        assert_eq!(ProcFacts::read(u32::MAX >> 1), ProcFacts::default(), "no such process");
    }

    #[test]
    fn a_process_naming_our_config_that_runs_another_binary_is_left_alone() {
        let dir = Dir::new("not-ours");
        let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", None);
        sup.expect_exe = None;
        let main = Fake::start(&dir.0, sup.conf_path());
        let vrrp = Fake::start(&dir.0, sup.conf_path());
        std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", main.pid())).expect("seed");
        std::fs::write(dir.0.join("r1.pid.keepalived-vrrp"), format!("{}\n", vrrp.pid())).expect("seed");
        let t0 = Instant::now();
        assert_eq!(sup.start(t0), [Outcome::SpawnFailed { retry_in: 100 * MS }], "neither adopted nor waited for");
        assert_eq!(sup.stop(t0), [Outcome::Stopped]);
        for fake in [&main, &vrrp] {
            assert!(names_conf(fake.pid(), sup.conf_path()), "signalled");
        }
        assert!(!dir.0.join("r1.pid.keepalived").exists() && !dir.0.join("r1.pid.keepalived-vrrp").exists());
    }

    fn age(path: &Path, by: Duration) {
        let file = std::fs::File::options().write(true).open(path).expect("open");
        file.set_modified(SystemTime::now() - by).expect("set mtime");
    }

    #[test]
    fn a_process_younger_than_its_pidfile_is_not_ours_unless_its_vrrp_child_vouches() {
        let dir = Dir::new("late");
        let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", None);
        let fake = Fake::start(&dir.0, sup.conf_path());
        let pidfile = dir.0.join("r1.pid.keepalived");
        std::fs::write(&pidfile, format!("{}\n", fake.pid())).expect("seed");
        age(&pidfile, Duration::from_secs(3600));
        assert_eq!(sup.start(Instant::now()), [Outcome::SpawnFailed { retry_in: 100 * MS }]);
        assert!(names_conf(fake.pid(), sup.conf_path()));
        drop(fake);

        // A parent whose VRRP child (its own child, named by the VRRP
        // pidfile) runs: a stepped clock, not a reused pid.
        let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", None);
        let vrrp_pidfile = dir.0.join("r1.pid.keepalived-vrrp");
        let script = "sh -c 'read line < \"$1\"' sh \"$1\" -f \"$3\" & echo $! > \"$4\"; read line < \"$1\"";
        let parent = Fake::start_program(&dir.0, Path::new("sh"), sup.conf_path(), script, &[&vrrp_pidfile]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read(&vrrp_pidfile)
            .ok()
            .and_then(|t| parse_pid(&t))
            .is_some_and(|c| names_conf(c, sup.conf_path()))
        {
            assert!(Instant::now() < deadline, "the fake VRRP child never showed up");
            std::thread::sleep(MS);
        }
        let child = std::fs::read(&vrrp_pidfile).ok().and_then(|t| parse_pid(&t)).expect("child pid");
        std::fs::write(&pidfile, format!("{}\n", parent.pid())).expect("seed");
        age(&pidfile, Duration::from_secs(3600));
        age(&vrrp_pidfile, Duration::from_secs(3600));
        assert_eq!(sup.start(Instant::now()), [Outcome::Adopted { pid: parent.pid() }, Outcome::Watch]);
        sup.detach();
        let _ = kill(child, Signal::SIGKILL);
    }

    /// A keepalived started before its binary was replaced (a package
    /// upgrade) is still ours: `/proc/PID/exe` reads `PATH (deleted)`.
    #[test]
    fn a_keepalived_whose_binary_was_upgraded_is_still_adopted() {
        let dir = Dir::new("upgraded");
        let bin = dir.0.join("keepalived-bin");
        std::fs::copy("/bin/sh", &bin).expect("copy sh");
        let mut sup = supervisor(&dir.0, &bin.display().to_string(), None);
        sup.expect_exe = None;
        let fake = Fake::start_program(&dir.0, &bin, sup.conf_path(), "read line < \"$1\"", &[]);
        let replacement = dir.0.join("keepalived-new");
        std::fs::copy("/bin/sh", &replacement).expect("copy sh");
        std::fs::rename(&replacement, &bin).expect("upgrade");
        std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", fake.pid())).expect("seed");
        assert_eq!(sup.start(Instant::now()), [Outcome::Adopted { pid: fake.pid() }, Outcome::Watch]);
        sup.detach();
    }
}
