//! The per-router actions run on each *effective* state change (SPEC 3.5)
//! besides notifications: the operator's `transition_script`, and IPv6
//! forwarding with `ipv6_forwarding_on_primary`.
//!
//! Both are best effort: a script that cannot start, fails or hangs, or a
//! namespace whose forwarding cannot be written, is logged with the router
//! and the state (and, for scripts, counted in `status` and `/metrics`),
//! and the daemon goes on. Neither ever blocks the event loop.
//!
//! Transition script:
//! - Run as `SCRIPT ROUTER_ID STATE` (`primary`, `backup`, `fault`), with no
//!   shell, in the daemon's own namespace (the script may need the host's
//!   network to tell someone; it can `ip netns exec` itself), started clean
//!   like every child ([`crate::sys::spawn`]: empty signal mask, default
//!   dispositions, stdin on /dev/null, its stdout and stderr lines in the
//!   daemon's log), in a session of its own (so a timeout can end whatever
//!   it started too). Its environment is `PATH` and [`script_env`]:
//!   `HAROUTERD_ROUTER`, `HAROUTERD_STATE`, `HAROUTERD_PREVIOUS` (the
//!   effective state the router changed from, empty for its first) and
//!   `HAROUTERD_SEQ` (the event's `seq` on `/v1/events`).
//! - **One run at a time per router, the latest state winning**
//!   ([`ScriptRuns`]): a change while the router's script still runs waits
//!   for it; a later change replaces the one waiting (counted as
//!   superseded), so a script never runs with an older state after a newer
//!   one, and a slow script makes its router skip states, never replay a
//!   backlog. Routers never wait for each other.
//! - **Timeout** (`transition_script_timeout`): a run still going after it
//!   gets SIGTERM, and SIGKILL [`KILL_GRACE`] later, both sent to its
//!   process group, as keepalived does with its own scripts; then the run
//!   waiting, if any, starts.
//! - Never waited on: the daemon reaps every child on SIGCHLD
//!   ([`crate::sys::spawn::reap`]) and hands each exit to
//!   [`Hooks::child_exited`], which recognizes our scripts by pid.
//!
//! IPv6 forwarding: `1` into `/proc/sys/net/ipv6/conf/all/forwarding` on
//! `primary`, `0` otherwise (what Neutron's agent does for HA routers, so a
//! backup does not route, nor does it answer as a router in RAs). A
//! `/proc/sys/net` file belongs to the network namespace of whoever *opened*
//! it, so the file is opened inside the router's namespace
//! ([`netns::in_namespace`], which always comes back) and written after.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::core::ident::{Namespace, RouterId, namespace_name};
use crate::core::state::State;
use crate::sys::netns::{self, NetnsError};
use crate::sys::spawn::{self, ChildExit, SpawnError, SpawnOptions};

/// The sysctl written for IPv6 forwarding, relative to the opener's netns.
pub const IPV6_FORWARDING: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Between a timed-out script's SIGTERM and its SIGKILL (keepalived's own
/// grace for its scripts).
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// Why an action could not be carried out; always names the router.
#[derive(Debug)]
pub enum HookError {
    /// The transition script could not be started.
    Script { router: RouterId, state: State, script: PathBuf, source: SpawnError },
    /// The router's namespace could not be entered.
    Namespace { router: RouterId, source: NetnsError },
    /// The forwarding sysctl could not be opened or written.
    Forwarding { router: RouterId, namespace: String, value: &'static str, source: io::Error },
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookError::Script { router, state, script, source } => {
                write!(f, "router {router}: cannot run transition script {} for {state}: {source}", script.display())
            }
            HookError::Namespace { router, source } => write!(f, "router {router}: {source}"),
            HookError::Forwarding { router, namespace, value, source } => {
                write!(f, "router {router}: cannot write {value} to {IPV6_FORWARDING} in {namespace}: {source}")
            }
        }
    }
}

impl std::error::Error for HookError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HookError::Script { source, .. } => Some(source),
            HookError::Namespace { source, .. } => Some(source),
            HookError::Forwarding { source, .. } => Some(source),
        }
    }
}

/// One effective change, for the router's transition script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptJob {
    pub script: PathBuf,
    pub router: RouterId,
    pub state: State,
    /// The effective state the router changed from (`None`: its first).
    pub previous: Option<State>,
    /// The event's sequence number on `/v1/events`.
    pub seq: u64,
}

/// The script's arguments: `ROUTER_ID STATE`.
pub fn script_args(router: &RouterId, state: State) -> [String; 2] {
    [router.to_string(), state.as_str().to_owned()]
}

/// The script's environment besides `PATH`.
pub fn script_env(job: &ScriptJob) -> [(&'static str, String); 4] {
    [
        ("HAROUTERD_ROUTER", job.router.to_string()),
        ("HAROUTERD_STATE", job.state.as_str().to_owned()),
        ("HAROUTERD_PREVIOUS", job.previous.map_or("", State::as_str).to_owned()),
        ("HAROUTERD_SEQ", job.seq.to_string()),
    ]
}

/// Starts `SCRIPT ROUTER_ID STATE` for `job` in our own namespace, in a
/// session of its own; returns its pid. The caller owns reaping it.
pub fn start_transition_script(job: &ScriptJob) -> Result<u32, HookError> {
    let error =
        |source| HookError::Script { router: job.router.clone(), state: job.state, script: job.script.clone(), source };
    let program = job.script.to_str().ok_or_else(|| {
        error(SpawnError::Exec {
            program: job.script.display().to_string(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "path is not UTF-8"),
        })
    })?;
    let label = format!("router {}: transition script", job.router);
    let env = script_env(job);
    let options = SpawnOptions { new_session: true, label: &label, env: &env, ..SpawnOptions::default() };
    spawn::spawn_with(program, &script_args(&job.router, job.state), None, options).map_err(error)
}

/// One router's script runs so far, for `status` and `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScriptStats {
    /// Runs started.
    pub runs: u64,
    /// Runs that could not start, did not exit 0, or timed out.
    pub failures: u64,
    /// Runs killed for running longer than the timeout.
    pub timeouts: u64,
    /// Changes whose run was replaced by a later one before it started.
    pub superseded: u64,
    /// The last run's failure, until a run succeeds.
    pub last_error: Option<String>,
    /// The state of the run going on now.
    pub running: Option<State>,
}

/// A run going on.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Running {
    pid: u32,
    job: ScriptJob,
    started: Instant,
    /// When it is signalled next: SIGTERM at the timeout, SIGKILL after
    /// the grace; `None` once killed (its exit is awaited).
    deadline: Option<Instant>,
    /// SIGTERM was sent for running too long.
    timed_out: bool,
}

#[derive(Clone, Debug, Default)]
struct Lane {
    running: Option<Running>,
    queued: Option<ScriptJob>,
    stats: ScriptStats,
    /// Its router is gone: the lane goes when its run ends.
    forgotten: bool,
}

/// How a run ended, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    pub job: ScriptJob,
    pub exit: ChildExit,
    pub took: Duration,
    pub timed_out: bool,
}

/// The transition-script runs of every router: the pure rules of the module
/// docs (one at a time per router, latest wins, timeouts), with a clock the
/// caller drives. It decides; [`Hooks`] spawns and signals.
#[derive(Debug)]
pub struct ScriptRuns {
    timeout: Duration,
    lanes: HashMap<RouterId, Lane>,
    by_pid: HashMap<u32, RouterId>,
    /// Every run's next signal, earliest first: a loop pass looks at the
    /// due ones only, never at every router.
    deadlines: BTreeSet<(Instant, u32)>,
}

impl ScriptRuns {
    pub fn new(timeout: Duration) -> ScriptRuns {
        ScriptRuns { timeout, lanes: HashMap::new(), by_pid: HashMap::new(), deadlines: BTreeSet::new() }
    }

    /// For runs started from now on (a reload).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// An effective change: `Some(job)` to start now, `None` when it waits
    /// for the run going on (replacing the one that waited, if any: that
    /// one is returned in `superseded`).
    pub fn submit(&mut self, job: ScriptJob) -> (Option<ScriptJob>, Option<ScriptJob>) {
        let lane = self.lanes.entry(job.router.clone()).or_default();
        lane.forgotten = false;
        if lane.running.is_none() {
            return (Some(job), None);
        }
        let superseded = lane.queued.replace(job);
        lane.stats.superseded += u64::from(superseded.is_some());
        (None, superseded)
    }

    /// `job` started as `pid`.
    pub fn started(&mut self, job: ScriptJob, pid: u32, now: Instant) {
        self.by_pid.insert(pid, job.router.clone());
        let deadline = now + self.timeout;
        self.deadlines.insert((deadline, pid));
        let lane = self.lanes.entry(job.router.clone()).or_default();
        lane.stats.runs += 1;
        lane.stats.running = Some(job.state);
        lane.running = Some(Running { pid, job, started: now, deadline: Some(deadline), timed_out: false });
    }

    /// `job` could not start (`error` says why).
    pub fn start_failed(&mut self, job: &ScriptJob, error: String) {
        let lane = self.lanes.entry(job.router.clone()).or_default();
        lane.stats.failures += 1;
        lane.stats.last_error = Some(error);
    }

    /// A child exited: `None` when it was none of our runs; else how the run
    /// ended and the router's waiting run to start now, if any.
    pub fn exited(&mut self, pid: u32, exit: ChildExit, now: Instant) -> Option<(Finished, Option<ScriptJob>)> {
        let router = self.by_pid.remove(&pid)?;
        let lane = self.lanes.get_mut(&router)?;
        let run = lane.running.take_if(|r| r.pid == pid)?;
        if let Some(deadline) = run.deadline {
            self.deadlines.remove(&(deadline, pid));
        }
        let took = now.saturating_duration_since(run.started);
        let stats = &mut lane.stats;
        stats.running = None;
        let state = run.job.state;
        if run.timed_out {
            stats.failures += 1;
            stats.timeouts += 1;
            stats.last_error =
                Some(format!("transition script for {state} timed out after {} s ({exit})", self.timeout.as_secs()));
        } else if exit.success() {
            stats.last_error = None;
        } else {
            stats.failures += 1;
            stats.last_error = Some(format!("transition script for {state} failed ({exit})"));
        }
        let finished = Finished { job: run.job, exit, took, timed_out: run.timed_out };
        let next = lane.queued.take();
        if lane.forgotten {
            self.lanes.remove(&router);
        }
        Some((finished, next))
    }

    /// The router is gone (removed by a reload): a run waiting is dropped,
    /// never started; its counters go, once a run going on has ended.
    pub fn forget(&mut self, router: &RouterId) {
        let Some(lane) = self.lanes.get_mut(router) else { return };
        lane.queued = None;
        if lane.running.is_some() {
            lane.forgotten = true;
        } else {
            self.lanes.remove(router);
        }
    }

    /// The next moment a run must be signalled.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The signals due at `now`: SIGTERM for a run past its timeout,
    /// SIGKILL for one still there [`KILL_GRACE`] later; each with the run.
    pub fn tick(&mut self, now: Instant) -> Vec<(u32, Signal, ScriptJob)> {
        let mut out = Vec::new();
        while let Some(&(at, pid)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(run) = self.by_pid.get(&pid).and_then(|r| self.lanes.get_mut(r)?.running.as_mut()) else {
                continue;
            };
            let signal = if run.timed_out {
                run.deadline = None;
                Signal::SIGKILL
            } else {
                let next = now + KILL_GRACE;
                run.timed_out = true;
                run.deadline = Some(next);
                self.deadlines.insert((next, pid));
                Signal::SIGTERM
            };
            out.push((pid, signal, run.job.clone()));
        }
        out
    }

    pub fn stats(&self, router: &RouterId) -> Option<&ScriptStats> {
        self.lanes.get(router).map(|l| &l.stats)
    }

    /// Runs going on now.
    pub fn running(&self) -> usize {
        self.by_pid.len()
    }

    pub fn running_for(&self, router: &RouterId) -> usize {
        self.lanes.get(router).map_or(0, |l| usize::from(l.running.is_some()))
    }

    /// The pid of the router's run going on.
    pub fn running_pid(&self, router: &RouterId) -> Option<u32> {
        self.lanes.get(router)?.running.as_ref().map(|r| r.pid)
    }
}

/// The transition scripts: [`ScriptRuns`] deciding, this spawning,
/// signalling and logging.
#[derive(Debug)]
pub struct Hooks {
    runs: ScriptRuns,
}

impl Default for Hooks {
    fn default() -> Hooks {
        Hooks::new(Duration::from_secs(u64::from(crate::config::DEFAULT_SCRIPT_TIMEOUT)))
    }
}

impl Hooks {
    pub fn new(timeout: Duration) -> Hooks {
        Hooks { runs: ScriptRuns::new(timeout) }
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.runs.set_timeout(timeout);
    }

    /// See [`ScriptRuns::forget`].
    pub fn forget(&mut self, router: &RouterId) {
        self.runs.forget(router);
    }

    /// Runs the script for an effective change now, or once the router's
    /// run going on is over (see the module docs). A failure to start is
    /// logged and counted, never returned. `Some(pid)` when it started now.
    pub fn run_transition_script(&mut self, job: ScriptJob, now: Instant) -> Option<u32> {
        match self.runs.submit(job) {
            (Some(job), _) => self.start(job, now),
            (None, superseded) => {
                if let Some(old) = superseded {
                    log::info!(
                        "router {}: transition script for {} (seq {}) superseded before it ran",
                        old.router,
                        old.state,
                        old.seq
                    );
                }
                None
            }
        }
    }

    fn start(&mut self, job: ScriptJob, now: Instant) -> Option<u32> {
        match start_transition_script(&job) {
            Ok(pid) => {
                log::debug!(
                    "router {}: transition script {} {} {} started (seq {}), pid {pid}",
                    job.router,
                    job.script.display(),
                    job.router,
                    job.state,
                    job.seq
                );
                self.runs.started(job, pid, now);
                Some(pid)
            }
            Err(e) => {
                log::error!("{e}");
                self.runs.start_failed(&job, e.to_string());
                None
            }
        }
    }

    /// Hands a reaped child to us: `true` (its end logged and counted, and
    /// the router's waiting run started) when it was one of our scripts,
    /// `false` when it belongs to someone else.
    pub fn child_exited(&mut self, pid: u32, exit: ChildExit, now: Instant) -> bool {
        let Some((finished, next)) = self.runs.exited(pid, exit, now) else { return false };
        log_exit(&finished);
        if let Some(job) = next {
            self.start(job, now);
        }
        true
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.runs.next_deadline()
    }

    /// Signals the runs past their time: their whole process group (the
    /// script leads its own session).
    pub fn tick(&mut self, now: Instant) {
        for (pid, signal, job) in self.runs.tick(now) {
            let Ok(raw) = i32::try_from(pid) else { continue };
            log::warn!(
                "router {}: transition script for {} still running after {} s; sending {signal} to its process group",
                job.router,
                job.state,
                self.runs.timeout.as_secs() + if signal == Signal::SIGKILL { KILL_GRACE.as_secs() } else { 0 }
            );
            // The run is not reaped yet (it would have left `runs`), so the
            // group is still its own.
            if let Err(e) = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(raw), signal) {
                log::debug!("router {}: killpg {pid} {signal}: {e}", job.router);
            }
        }
    }

    pub fn stats(&self, router: &RouterId) -> Option<&ScriptStats> {
        self.runs.stats(router)
    }

    /// Scripts started and not reaped yet.
    pub fn running(&self) -> usize {
        self.runs.running()
    }

    pub fn running_for(&self, router: &RouterId) -> usize {
        self.runs.running_for(router)
    }

    pub fn running_pid(&self, router: &RouterId) -> Option<u32> {
        self.runs.running_pid(router)
    }
}

fn log_exit(run: &Finished) {
    let Finished { job, exit, took, timed_out } = run;
    let ms = took.as_millis();
    let (router, state) = (&job.router, job.state);
    if *timed_out {
        log::error!("router {router}: transition script for {state} timed out and was killed ({exit}, {ms} ms)");
    } else if exit.success() {
        log::info!("router {router}: transition script for {state} finished ({exit}, {ms} ms)");
    } else {
        log::warn!("router {router}: transition script for {state} failed ({exit}, {ms} ms)");
    }
}

/// What is written to the forwarding sysctl: forwarding only on primary.
pub fn forwarding_value(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

/// Writes IPv6 forwarding `on`/off for the router's namespace (`None`: our
/// own). The file is opened inside the namespace, written outside it.
pub fn write_ipv6_forwarding(namespace: Option<&Namespace>, on: bool, router: &RouterId) -> Result<(), HookError> {
    let value = forwarding_value(on);
    let error =
        |source| HookError::Forwarding { router: router.clone(), namespace: namespace_name(namespace), value, source };
    let file = netns::in_namespace(namespace, || OpenOptions::new().write(true).open(IPV6_FORWARDING))
        .map_err(|source| HookError::Namespace { router: router.clone(), source })?
        .map_err(error)?;
    (&file).write_all(value.as_bytes()).map_err(error)
}

/// [`write_ipv6_forwarding`], logging instead of returning the error (it is
/// never fatal). Returns whether it worked.
pub fn set_ipv6_forwarding(namespace: Option<&Namespace>, on: bool, router: &RouterId) -> bool {
    match write_ipv6_forwarding(namespace, on, router) {
        Ok(()) => {
            log::debug!("router {router}: IPv6 forwarding set to {}", forwarding_value(on));
            true
        }
        Err(e) => {
            log::error!("{e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn id(text: &str) -> RouterId {
        RouterId::parse(text).unwrap()
    }

    #[test]
    fn script_gets_router_and_state() {
        assert_eq!(script_args(&id("r1"), State::Primary), ["r1".to_owned(), "primary".to_owned()]);
        assert_eq!(script_args(&id("r-2.x"), State::Fault), ["r-2.x".to_owned(), "fault".to_owned()]);
    }

    #[test]
    fn forwarding_only_on_primary() {
        assert_eq!(forwarding_value(true), "1");
        assert_eq!(forwarding_value(false), "0");
    }

    fn job(router: &str, state: State, previous: Option<State>, seq: u64) -> ScriptJob {
        ScriptJob { script: PathBuf::from("/t.sh"), router: id(router), state, previous, seq }
    }

    #[test]
    fn the_environment_names_router_state_previous_and_seq() {
        let env = script_env(&job("r1", State::Backup, Some(State::Primary), 7));
        assert_eq!(
            env.map(|(k, v)| format!("{k}={v}")),
            ["HAROUTERD_ROUTER=r1", "HAROUTERD_STATE=backup", "HAROUTERD_PREVIOUS=primary", "HAROUTERD_SEQ=7"]
        );
        let first = script_env(&job("r1", State::Backup, None, 1));
        assert_eq!(first[2], ("HAROUTERD_PREVIOUS", String::new()));
    }

    #[test]
    fn a_removed_routers_waiting_run_never_starts_and_its_counters_go() {
        let t0 = Instant::now();
        let mut runs = ScriptRuns::new(Duration::from_secs(60));
        let (start, _) = runs.submit(job("r1", State::Backup, None, 1));
        runs.started(start.expect("starts"), 100, t0);
        assert_eq!(runs.submit(job("r1", State::Primary, Some(State::Backup), 2)), (None, None));
        runs.forget(&id("r1"));
        assert!(runs.stats(&id("r1")).is_some(), "kept while its run goes on");
        let (finished, next) = runs.exited(100, ChildExit::Code(0), t0).expect("our run");
        assert_eq!((finished.job.seq, next), (1, None), "the waiting run is not started");
        assert!(runs.stats(&id("r1")).is_none(), "counters gone with the router");
        // An idle router is forgotten at once; one added again starts afresh.
        let (start, _) = runs.submit(job("r2", State::Backup, None, 3));
        runs.started(start.expect("starts"), 200, t0);
        runs.exited(200, ChildExit::Code(1), t0).expect("our run");
        runs.forget(&id("r2"));
        assert!(runs.stats(&id("r2")).is_none());
        let (again, _) = runs.submit(job("r2", State::Primary, None, 4));
        assert!(again.is_some());
        assert_eq!(runs.stats(&id("r2")).map(|s| s.failures), Some(0));
    }

    #[test]
    fn one_run_per_router_and_the_latest_waiting_state_wins() {
        let t0 = Instant::now();
        let mut runs = ScriptRuns::new(Duration::from_secs(60));
        let (start, _) = runs.submit(job("r1", State::Backup, None, 1));
        runs.started(start.expect("idle: starts at once"), 100, t0);
        // Another router is not held back.
        let (other, _) = runs.submit(job("r2", State::Backup, None, 2));
        runs.started(other.expect("r2 starts"), 200, t0);
        // r1 is busy: primary waits, then fault replaces it.
        assert_eq!(runs.submit(job("r1", State::Primary, Some(State::Backup), 3)), (None, None));
        let (none, superseded) = runs.submit(job("r1", State::Fault, Some(State::Primary), 4));
        assert_eq!((none, superseded.map(|j| j.seq)), (None, Some(3)));
        assert_eq!(runs.stats(&id("r1")).unwrap().superseded, 1);
        assert_eq!(runs.stats(&id("r1")).unwrap().running, Some(State::Backup));
        // The run ends: the latest waiting state starts, never the older.
        let (finished, next) = runs.exited(100, ChildExit::Code(0), t0 + Duration::from_millis(5)).unwrap();
        assert_eq!((finished.job.seq, finished.took), (1, Duration::from_millis(5)));
        let next = next.expect("fault waits");
        assert_eq!((next.state, next.previous, next.seq), (State::Fault, Some(State::Primary), 4));
        runs.started(next, 101, t0);
        let (_, next) = runs.exited(101, ChildExit::Code(3), t0).unwrap();
        assert_eq!(next, None, "nothing waits");
        let stats = runs.stats(&id("r1")).unwrap();
        assert_eq!((stats.runs, stats.failures, stats.timeouts, stats.running), (2, 1, 0, None));
        assert_eq!(stats.last_error.as_deref(), Some("transition script for fault failed (exit code 3)"));
        assert!(runs.exited(101, ChildExit::Code(0), t0).is_none(), "only once");
        assert!(runs.exited(999, ChildExit::Code(0), t0).is_none(), "not ours");
        // A success clears the error; the counts stay.
        let (start, _) = runs.submit(job("r1", State::Backup, Some(State::Fault), 5));
        runs.started(start.unwrap(), 102, t0);
        runs.exited(102, ChildExit::Code(0), t0).unwrap();
        let stats = runs.stats(&id("r1")).unwrap();
        assert_eq!((stats.runs, stats.failures, stats.last_error.as_deref()), (3, 1, None));
    }

    #[test]
    fn a_run_past_its_timeout_gets_sigterm_then_sigkill() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut runs = ScriptRuns::new(s(10));
        let (start, _) = runs.submit(job("r1", State::Primary, Some(State::Backup), 1));
        runs.started(start.unwrap(), 100, t0);
        assert_eq!(runs.next_deadline(), Some(t0 + s(10)));
        assert!(runs.tick(t0 + s(9)).is_empty());
        let due: Vec<(u32, Signal)> = runs.tick(t0 + s(10)).into_iter().map(|(p, sig, _)| (p, sig)).collect();
        assert_eq!(due, [(100, Signal::SIGTERM)]);
        assert_eq!(runs.next_deadline(), Some(t0 + s(10) + KILL_GRACE));
        assert!(runs.tick(t0 + s(11)).is_empty());
        let due: Vec<(u32, Signal)> = runs.tick(t0 + s(12)).into_iter().map(|(p, sig, _)| (p, sig)).collect();
        assert_eq!(due, [(100, Signal::SIGKILL)]);
        assert_eq!(runs.next_deadline(), None, "nothing more to send; its exit is awaited");
        assert!(runs.tick(t0 + s(100)).is_empty());
        runs.submit(job("r1", State::Backup, Some(State::Primary), 2));
        let (finished, next) = runs.exited(100, ChildExit::Signal(9), t0 + s(12)).unwrap();
        assert!(finished.timed_out);
        assert_eq!(next.map(|j| j.seq), Some(2), "the waiting run goes ahead");
        let stats = runs.stats(&id("r1")).unwrap();
        assert_eq!((stats.failures, stats.timeouts), (1, 1));
        assert_eq!(
            stats.last_error.as_deref(),
            Some("transition script for primary timed out after 10 s (killed by signal 9)")
        );
        // A run that ends within its time is never signalled.
        runs.set_timeout(s(1));
        let (start, _) = runs.submit(job("r2", State::Backup, None, 3));
        runs.started(start.unwrap(), 200, t0);
        runs.exited(200, ChildExit::Code(0), t0 + Duration::from_millis(500)).unwrap();
        assert!(runs.tick(t0 + s(5)).is_empty());
    }

    #[test]
    fn foreign_children_are_not_ours() {
        let mut hooks = Hooks::default();
        assert!(!hooks.child_exited(12345, ChildExit::Code(0), Instant::now()));
        assert_eq!(hooks.running(), 0);
    }

    #[test]
    fn a_script_that_cannot_start_is_an_error_naming_router_and_state() {
        let mut hooks = Hooks::default();
        let missing = Path::new("/nonexistent/harouterd-transition-script");
        let job = ScriptJob { script: missing.to_path_buf(), ..job("r1", State::Backup, None, 1) };
        assert_eq!(hooks.run_transition_script(job.clone(), Instant::now()), None);
        assert_eq!(hooks.running(), 0);
        let stats = hooks.stats(&id("r1")).unwrap();
        assert_eq!((stats.runs, stats.failures), (0, 1));
        let e = start_transition_script(&job).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("router r1") && text.contains("backup") && text.contains(&missing.display().to_string()));
        assert_eq!(stats.last_error.as_deref(), Some(text.as_str()));
    }

    #[test]
    fn a_missing_namespace_is_an_error_naming_the_router() {
        let ns = Namespace::parse("harouterd-no-such-namespace").unwrap();
        let e = write_ipv6_forwarding(Some(&ns), true, &id("r9")).unwrap_err();
        assert!(matches!(e, HookError::Namespace { .. }), "{e:?}");
        assert!(e.to_string().contains("router r9"), "{e}");
        assert!(!set_ipv6_forwarding(Some(&ns), false, &id("r9")));
    }
}
