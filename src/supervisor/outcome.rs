//! What a [`Supervisor`](super::Supervisor) reports: the outcomes of each
//! call, what a SIGHUP request did, and its errors (each naming the router
//! and the program).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::program::Kind;
use crate::core::ident::RouterId;
use crate::sys::spawn::{ChildExit, SpawnError};

/// What went wrong, with the router, the program, and the path or the pid
/// concerned.
#[derive(Debug)]
pub enum SupervisorError {
    /// The program could not be started (missing, namespace gone).
    Spawn { router: RouterId, kind: Kind, program: String, source: SpawnError },
    /// Something not proven ours answers on the program's socket: a second
    /// program would fight it for the socket and the sync channel.
    Busy { router: RouterId, kind: Kind, socket: PathBuf },
    /// It died. `exit` is `None` for a process that was not our child
    /// (adopted): its status is not ours to collect.
    Died { router: RouterId, kind: Kind, pid: u32, exit: Option<ChildExit>, lived: Duration },
    /// A signal could not be sent.
    Signal { router: RouterId, kind: Kind, pid: u32, signal: Signal, source: io::Error },
    /// A pidfile could not be read, written or removed.
    Pidfile { router: RouterId, path: PathBuf, action: &'static str, source: io::Error },
    /// No pidfd for a process we must watch: it is polled instead.
    Pidfd { router: RouterId, kind: Kind, pid: u32, source: io::Error },
}

impl SupervisorError {
    pub fn router(&self) -> &RouterId {
        match self {
            SupervisorError::Spawn { router, .. }
            | SupervisorError::Busy { router, .. }
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
            SupervisorError::Spawn { router, kind, program, source } => {
                write!(f, "router {router}: cannot start {kind} ({program}): {source}")
            }
            SupervisorError::Busy { router, kind, socket } => write!(
                f,
                "router {router}: not starting {kind}: a process not proven ours answers on {}",
                socket.display()
            ),
            SupervisorError::Died { router, kind, pid, exit, lived } => {
                write!(f, "router {router}: {kind} (pid {pid}) ")?;
                match exit {
                    Some(exit) => write!(f, "died ({exit})")?,
                    None => f.write_str("died")?,
                }
                write!(f, " after {:.1} s", lived.as_secs_f64())
            }
            SupervisorError::Signal { router, kind, pid, signal, source } => {
                write!(f, "router {router}: cannot send {signal} to {kind} (pid {pid}): {source}")
            }
            SupervisorError::Pidfile { router, path, action, source } => {
                write!(f, "router {router}: cannot {action} pidfile {}: {source}", path.display())
            }
            SupervisorError::Pidfd { router, kind, pid, source } => {
                write!(f, "router {router}: cannot open a pidfd for {kind} pid {pid} (polling it instead): {source}")
            }
        }
    }
}

impl std::error::Error for SupervisorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SupervisorError::Spawn { source, .. } => Some(source),
            SupervisorError::Busy { .. } | SupervisorError::Died { .. } => None,
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
    /// The program was started; `pid` is our child.
    Spawned { pid: u32 },
    /// A spawned program with a socket ([`Program::socket`](super::Program::socket))
    /// created it: it is up and answers.
    Ready { pid: u32 },
    /// A spawned program did not create its socket within
    /// [`READY_WAIT`](super::READY_WAIT); it is left running.
    NotReady { pid: u32 },
    /// A program of ours found running was adopted (not restarted).
    Adopted { pid: u32 },
    /// A program of ours found running in another instance of the router's
    /// namespace is being stopped, to be replaced by one in the namespace
    /// the name means now.
    Replacing { pid: u32 },
    /// A new pidfd waits for [`Supervisor::register_pidfd`](super::Supervisor::register_pidfd).
    Watch,
    /// The program died. `respawn_in`: when it will be respawned (zero: at
    /// once, possibly already within this call, see the following
    /// `Spawned`); `None` with `check_child_processes_action = exit`: nothing
    /// more is done, the daemon is expected to exit 1.
    Died { pid: u32, exit: Option<ChildExit>, respawn_in: Option<Duration> },
    /// The program could not be started; retried in `retry_in`. The reason
    /// is [`Supervisor::last_error`](super::Supervisor::last_error).
    SpawnFailed { retry_in: Duration },
    /// A stop finished: the program and its children are gone, pidfiles
    /// (and leftovers) removed.
    Stopped,
}

/// What [`Supervisor::sighup`](super::Supervisor::sighup) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sighup {
    /// SIGHUP sent now.
    Sent,
    /// Inside the throttle window: one SIGHUP will be sent at `at`.
    Deferred { at: Instant },
    /// The program is not running: nothing to do, the next spawn reads the
    /// new file.
    NotRunning,
    /// The signal could not be sent ([`Supervisor::last_error`](super::Supervisor::last_error)).
    Failed,
}
