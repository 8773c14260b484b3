//! Supervising one keepalived per router (SPEC section 3.4): spawn it inside
//! the router's namespace, adopt one left running by a previous daemon,
//! respawn it when it dies (with backoff), reload it with throttled SIGHUPs,
//! stop it with SIGTERM then SIGKILL.
//!
//! A [`Supervisor`] is a state machine driven by the event loop: every
//! method takes the current time (`now`) and returns at once. It never
//! sleeps, never waits for a process and never reaps one: the daemon reaps
//! all children on SIGCHLD ([`crate::spawn::reap`]) and hands each exit to
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
//! - **Ours** means: its pidfile names a live pid whose `/proc/PID/cmdline`
//!   gives our config path to `-f` ([`cmdline_names_conf`]). A zombie has
//!   an empty cmdline, so it is never ours.
//! - **No signal to a recycled pid.** Our own child is signalled by pid only
//!   until its exit is reported (its pid cannot be reused before it is
//!   reaped, and the daemon reports what it reaps); any other process is
//!   signalled through its pidfd.
//! - Dropping or detaching a supervisor never signals anything: keepalived
//!   outlives the daemon unless [`Supervisor::stop`] was called.
//! - [`Supervisor::next_deadline`] is `None` unless a timer is pending: an
//!   idle router costs no wake-ups.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::signal::Signal;

use crate::config::{ChildAction, DaemonConfig, RouterConfig};
use crate::ident::{Namespace, RouterId};
use crate::layout::Layout;
use crate::spawn::{self, Exit, SpawnError, SpawnOptions};

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
        if streak == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(streak - 1).unwrap_or(u32::MAX);
        self.first.checked_mul(factor).unwrap_or(self.max).min(self.max)
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

    /// A child of the daemon exited (from [`crate::spawn::reap`]). Empty
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
        crate::event_loop::earliest([run, poll])
    }

    /// Runs whatever timer is due at `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<Outcome> {
        let mut out = Vec::new();
        if let Some(Watch { pid, how: How::Poll { at, every } }) = &mut self.watch
            && *at <= now
        {
            if process_is_ours(*pid, &self.conf) {
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

    /// Adopts the keepalived the main pidfile names if it is ours and alive.
    fn try_adopt(&mut self, now: Instant, out: &mut Vec<Outcome>) -> bool {
        let Some(pid) = self.read_pidfile(&self.pid_file.clone()) else { return false };
        if !process_is_ours(pid, &self.conf) {
            return false;
        }
        let how = match pidfd_open(pid) {
            // Checked again once the pidfd pins the process: the pid may
            // have been recycled between the first check and the open.
            Ok(fd) if process_is_ours(pid, &self.conf) => How::Pidfd { fd, registered: false },
            Ok(_) => return false,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return false,
            Err(source) => {
                log::warn!("router {}: no pidfd for adopted keepalived {pid}: {source}; polling it", self.id);
                self.last_error = Some(SupervisorError::Pidfd { router: self.id.clone(), pid, source });
                How::Poll { at: now + ADOPTED_POLL, every: ADOPTED_POLL }
            }
        };
        let registers = matches!(how, How::Pidfd { .. });
        self.watch = Some(Watch { pid, how });
        self.run = Run::Running { pid, since: now, adopted: true };
        log::debug!("router {}: adopted keepalived (pid {pid})", self.id);
        out.push(Outcome::Adopted { pid });
        if registers {
            out.push(Outcome::Watch);
        }
        true
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
            let Some(orphan) = self.find_orphan() else { break };
            if self.kill_orphan(orphan, now, out) {
                self.run = Run::Cleaning { orphan, then };
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
        log::debug!("router {}: running {} {}", self.id, self.program, args.join(" "));
        let label = format!("router {}: keepalived", self.id);
        let options = SpawnOptions { new_session: true, label: &label, ..SpawnOptions::default() };
        match spawn::spawn_with(&self.program, &args, self.namespace.as_ref(), options) {
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

    /// The VRRP child named by its pidfile, if alive and ours; a stale VRRP
    /// pidfile is removed on the way.
    fn find_orphan(&mut self) -> Option<u32> {
        let path = self.vrrp_pid_file.clone();
        match self.read_pidfile(&path) {
            Some(pid) if process_is_ours(pid, &self.conf) => Some(pid),
            _ => {
                self.remove_pidfile(&path);
                None
            }
        }
    }

    /// SIGKILLs an orphan and starts watching it. `false`: it was already
    /// gone.
    fn kill_orphan(&mut self, pid: u32, now: Instant, out: &mut Vec<Outcome>) -> bool {
        log::warn!("router {}: killing orphaned keepalived process {pid} before starting keepalived", self.id);
        let how = match pidfd_open(pid) {
            Ok(fd) => {
                if !process_is_ours(pid, &self.conf) {
                    return false;
                }
                match pidfd_send_signal(&fd, Signal::SIGKILL) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return false,
                    Err(source) => {
                        self.signal_error(pid, Signal::SIGKILL, source);
                        return false;
                    }
                }
                How::Pidfd { fd, registered: false }
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return false,
            Err(source) => {
                self.last_error = Some(SupervisorError::Pidfd { router: self.id.clone(), pid, source });
                match kill(pid, Signal::SIGKILL) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return false,
                    Err(source) => {
                        self.signal_error(pid, Signal::SIGKILL, source);
                        return false;
                    }
                }
                How::Poll { at: now + ORPHAN_POLL, every: ORPHAN_POLL }
            }
        };
        if matches!(how, How::Pidfd { .. }) {
            out.push(Outcome::Watch);
        }
        self.watch = Some(Watch { pid, how });
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
            Some(Watch { pid: p, how: How::Pidfd { fd, .. } }) if *p == pid => pidfd_send_signal(fd, signal),
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

    /// The pid a pidfile names; `None` when missing, empty or not a pid (an
    /// unreadable one is reported too).
    fn read_pidfile(&mut self, path: &Path) -> Option<u32> {
        let mut text = Vec::new();
        let read = File::open(path).and_then(|f| f.take(MAX_PIDFILE).read_to_end(&mut text));
        match read {
            Ok(_) => parse_pid(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                let error =
                    SupervisorError::Pidfile { router: self.id.clone(), path: path.to_owned(), action: "read", source };
                log::warn!("{error}");
                self.last_error = Some(error);
                None
            }
        }
    }

    fn remove_pidfile(&mut self, path: &Path) {
        match std::fs::remove_file(path) {
            Ok(()) => log::debug!("router {}: removed stale pidfile {}", self.id, path.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                let error = SupervisorError::Pidfile {
                    router: self.id.clone(),
                    path: path.to_owned(),
                    action: "remove",
                    source,
                };
                log::warn!("{error}");
                self.last_error = Some(error);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Processes

/// Whether `pid` is alive and keepalived with our config (see
/// [`cmdline_names_conf`]).
fn process_is_ours(pid: u32, conf: &Path) -> bool {
    let mut cmdline = Vec::new();
    let read = File::open(format!("/proc/{pid}/cmdline")).and_then(|f| f.take(MAX_CMDLINE).read_to_end(&mut cmdline));
    read.is_ok() && cmdline_names_conf(&cmdline, conf.as_os_str().as_bytes())
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

fn pidfd_send_signal(fd: &OwnedFd, signal: Signal) -> io::Result<()> {
    // SAFETY: pidfd_send_signal(2) with a valid pidfd, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), signal as libc::c_int, std::ptr::null::<u8>(), 0)
    };
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
        Supervisor::new(&config.daemon, &config.routers[0], &layout, false)
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
            let fifo = dir.join(format!("fifo-{}", dir.read_dir().map(|d| d.count()).unwrap_or(0)));
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
            let mut command = std::process::Command::new("sh");
            command.args(["-c", script, "sh"]).arg(&fifo).arg("-f").arg(conf);
            // Started clean like the daemon's children, so a test runner
            // started under `nohup` does not hand sh an ignored SIGHUP.
            // SAFETY: reset_signals only makes async-signal-safe calls.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                    crate::spawn::reset_signals();
                    Ok(())
                });
            }
            let child = command.spawn().expect("spawn sh");
            // Until sh has exec'd, its cmdline is still ours.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !process_is_ours(child.id(), conf) {
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
        assert!(process_is_ours(fake.pid(), sup.conf_path()), "still running");
        assert!(dir.0.join("r1.pid.keepalived").exists(), "files untouched");
        // A new start adopts it again.
        assert_eq!(sup.start(t0)[0], Outcome::Adopted { pid: fake.pid() });
    }
}
