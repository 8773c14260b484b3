//! The per-router actions run on each *effective* state change (SPEC 3.5)
//! besides notifications: the operator's `transition_script`, and IPv6
//! forwarding with `ipv6_forwarding_on_primary`.
//!
//! Both are best effort: a script that cannot start, or a namespace whose
//! forwarding cannot be written, is logged with the router and the state,
//! and the daemon goes on. Neither ever blocks the event loop.
//!
//! Transition script:
//! - Run as `SCRIPT ROUTER_ID STATE` (`primary`, `backup`, `fault`), with no
//!   shell, in the daemon's own namespace (the script may need the host's
//!   network to tell someone; it can `ip netns exec` itself), started clean
//!   like every child ([`crate::sys::spawn`]: empty signal mask, default
//!   dispositions, only `PATH` in its environment, stdin on /dev/null, its
//!   stdout and stderr lines in the daemon's log).
//! - Never waited on: the daemon reaps every child on SIGCHLD
//!   ([`crate::sys::spawn::reap`]) and hands each exit to
//!   [`Hooks::child_exited`], which recognizes our scripts by pid and logs
//!   how each ended, with its router and state.
//! - Runs for one router may overlap: each change starts its script at once,
//!   even while the previous one is still running. Serializing them would let
//!   one hung script silence every later transition of its router, and
//!   coalescing would hide transitions the operator asked to see. So a
//!   script must act on the state it is given, not assume it runs after the
//!   previous one finished. More than [`OVERLAP_WARNING`] runs at once for a
//!   router are still started, with a warning: the script is probably hung.
//!
//! IPv6 forwarding: `1` into `/proc/sys/net/ipv6/conf/all/forwarding` on
//! `primary`, `0` otherwise (what Neutron's agent does for HA routers, so a
//! backup does not route, nor does it answer as a router in RAs). A
//! `/proc/sys/net` file belongs to the network namespace of whoever *opened*
//! it, so the file is opened inside the router's namespace
//! ([`netns::in_namespace`], which always comes back) and written after.

use std::collections::HashMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::core::ident::{Namespace, RouterId, namespace_name};
use crate::core::state::State;
use crate::sys::netns::{self, NetnsError};
use crate::sys::spawn::{self, ChildExit, SpawnError};

/// The sysctl written for IPv6 forwarding, relative to the opener's netns.
pub const IPV6_FORWARDING: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Overlapping runs of one router's script beyond which each new run logs a
/// warning.
pub const OVERLAP_WARNING: usize = 4;

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

/// The script's arguments: `ROUTER_ID STATE`.
pub fn script_args(router: &RouterId, state: State) -> [String; 2] {
    [router.to_string(), state.as_str().to_owned()]
}

/// Starts `script ROUTER_ID STATE` in our own namespace; returns its pid.
/// The caller owns reaping it.
pub fn start_transition_script(script: &Path, router: &RouterId, state: State) -> Result<u32, HookError> {
    let error = |source| HookError::Script { router: router.clone(), state, script: script.to_path_buf(), source };
    let program = script.to_str().ok_or_else(|| {
        error(SpawnError::Exec {
            program: script.display().to_string(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "path is not UTF-8"),
        })
    })?;
    let label = format!("router {router}: transition script");
    spawn::spawn(program, &script_args(router, state), None, &label).map_err(error)
}

/// A transition script started and not reaped yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptRun {
    pub router: RouterId,
    pub state: State,
    pub started: Instant,
}

/// The transition scripts in flight, by pid.
#[derive(Debug, Default)]
pub struct Hooks {
    running: HashMap<u32, ScriptRun>,
}

impl Hooks {
    /// Starts the script for an effective change (see the module docs);
    /// a failure to start is logged, never returned. `Some(pid)` when it
    /// started.
    pub fn run_transition_script(&mut self, script: &Path, router: &RouterId, state: State) -> Option<u32> {
        let overlapping = self.running_for(router);
        if overlapping >= OVERLAP_WARNING {
            log::warn!(
                "router {router}: {overlapping} runs of transition script {} still running; starting another for {state}",
                script.display()
            );
        }
        match start_transition_script(script, router, state) {
            Ok(pid) => {
                log::debug!(
                    "router {router}: transition script {} {router} {state} started, pid {pid}",
                    script.display()
                );
                self.running.insert(pid, ScriptRun { router: router.clone(), state, started: Instant::now() });
                Some(pid)
            }
            Err(e) => {
                log::error!("{e}");
                None
            }
        }
    }

    /// Hands a reaped child to us: `true` (and its end is logged with its
    /// router and state) when it was one of our scripts, `false` when it
    /// belongs to someone else.
    pub fn child_exited(&mut self, pid: u32, exit: ChildExit) -> bool {
        match self.finished(pid) {
            Some(run) => {
                log_exit(&run, exit, run.started.elapsed());
                true
            }
            None => false,
        }
    }

    /// Forgets the run with `pid` and returns it, without logging.
    pub fn finished(&mut self, pid: u32) -> Option<ScriptRun> {
        self.running.remove(&pid)
    }

    /// Scripts started and not reaped yet.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    pub fn running_for(&self, router: &RouterId) -> usize {
        self.running.values().filter(|r| r.router == *router).count()
    }
}

fn log_exit(run: &ScriptRun, exit: ChildExit, took: Duration) {
    let ScriptRun { router, state, .. } = run;
    let ms = took.as_millis();
    if exit.success() {
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

    #[test]
    fn foreign_children_are_not_ours() {
        let mut hooks = Hooks::default();
        assert!(!hooks.child_exited(12345, ChildExit::Code(0)));
        assert_eq!(hooks.running(), 0);
    }

    #[test]
    fn a_script_that_cannot_start_is_an_error_naming_router_and_state() {
        let mut hooks = Hooks::default();
        let missing = Path::new("/nonexistent/harouterd-transition-script");
        assert_eq!(hooks.run_transition_script(missing, &id("r1"), State::Backup), None);
        assert_eq!(hooks.running(), 0);
        let e = start_transition_script(missing, &id("r1"), State::Backup).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("router r1") && text.contains("backup") && text.contains(&missing.display().to_string()));
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
