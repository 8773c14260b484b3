//! Detaching `harouterd run` from its caller when it runs as an init-script
//! service (no `--foreground`): the classic double fork.
//!
//! 1. `fork`; the original process exits 0 at once. The init script does
//!    not learn readiness from our exit status: it waits for the pidfile,
//!    which the daemon writes (and locks) after [`daemonize`] returns, so
//!    the pid in it is the final one.
//! 2. `setsid` in the child: a new session and process group, no
//!    controlling terminal, so a closing terminal or the caller's process
//!    group being signalled no longer reaches us.
//! 3. `fork` again; the session leader exits. The grandchild is not a
//!    session leader, so opening a terminal can never make it acquire one.
//! 4. In the grandchild: `chdir("/")` (no directory kept busy, no unmount
//!    blocked), `umask(022)`, and stdin, stdout, stderr on `/dev/null` (the
//!    caller's terminal or pipe may go away; a write to it must neither
//!    block nor kill us with SIGPIPE). Logging goes to syslog from then on.
//!
//! Invariants / preconditions:
//! - **Call it before any thread, event loop, signalfd or socket exists.**
//!   Only the calling thread survives `fork`; a lock another thread held
//!   stays locked for ever in the child, and descriptors registered with an
//!   epoll set in the original process are left in an odd shared state.
//! - The intermediate processes leave with `_exit`: no atexit handlers, no
//!   stdio buffers flushed twice, no destructors of the caller's values run
//!   in three processes.
//! - An error after the first fork is returned in the child; the caller logs
//!   it (syslog) and exits 1. The init script then sees no pidfile.

use std::fmt;
use std::fs::OpenOptions;
use std::io;

use nix::sys::stat::{Mode, umask};
use nix::unistd::{ForkResult, chdir, dup2_stderr, dup2_stdin, dup2_stdout, fork, setsid};

/// The umask the daemon runs with: files it creates are not group- or
/// world-writable unless it says so (keepalived.conf gets 0600 explicitly).
pub const DAEMON_UMASK: u32 = 0o022;

/// Which step of detaching failed.
#[derive(Debug)]
pub enum DaemonizeError {
    /// The first or second `fork` (`which` is 1 or 2).
    Fork {
        which: u8,
        source: nix::Error,
    },
    Setsid(nix::Error),
    Chdir(nix::Error),
    /// `/dev/null` could not be opened or put on fd `fd`.
    DevNull {
        fd: i32,
        source: io::Error,
    },
}

impl fmt::Display for DaemonizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonizeError::Fork { which, source } => write!(f, "cannot detach: fork #{which} failed: {source}"),
            DaemonizeError::Setsid(e) => write!(f, "cannot detach: setsid failed: {e}"),
            DaemonizeError::Chdir(e) => write!(f, "cannot detach: chdir to / failed: {e}"),
            DaemonizeError::DevNull { fd: -1, source } => write!(f, "cannot detach: cannot open /dev/null: {source}"),
            DaemonizeError::DevNull { fd, source } => {
                write!(f, "cannot detach: cannot point fd {fd} at /dev/null: {source}")
            }
        }
    }
}

impl std::error::Error for DaemonizeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DaemonizeError::Fork { source, .. } => Some(source),
            DaemonizeError::Setsid(e) | DaemonizeError::Chdir(e) => Some(e),
            DaemonizeError::DevNull { source, .. } => Some(source),
        }
    }
}

/// Forks in the way that leaves only the grandchild running, detached from
/// the caller's session and terminal (see the module docs); returns in the
/// grandchild. The original process exits 0 inside this call. Call it while
/// the process has a single thread.
pub fn daemonize() -> Result<(), DaemonizeError> {
    fork_and_leave_parent(1)?;
    setsid().map_err(DaemonizeError::Setsid)?;
    fork_and_leave_parent(2)?;
    chdir("/").map_err(DaemonizeError::Chdir)?;
    umask(Mode::from_bits_truncate(DAEMON_UMASK));
    null_stdio()
}

/// Forks; the parent leaves with `_exit(0)`, the child returns.
fn fork_and_leave_parent(which: u8) -> Result<(), DaemonizeError> {
    // SAFETY: the caller guarantees a single-threaded process (documented
    // precondition of `daemonize`), so the child may run arbitrary code; the
    // parent only calls `_exit`, which is async-signal-safe.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => Ok(()),
        // SAFETY: `_exit` ends the process without touching its state.
        Ok(ForkResult::Parent { .. }) => unsafe { libc::_exit(0) },
        Err(source) => Err(DaemonizeError::Fork { which, source }),
    }
}

/// stdin, stdout and stderr on `/dev/null` (read-write, like any daemon).
/// The `/dev/null` descriptor itself is close-on-exec and closed on return;
/// the three standard ones are not close-on-exec (children such as the
/// transition script inherit them, harmlessly).
fn null_stdio() -> Result<(), DaemonizeError> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|source| DaemonizeError::DevNull { fd: -1, source })?;
    let on = |fd: i32, result: nix::Result<()>| result.map_err(|e| DaemonizeError::DevNull { fd, source: e.into() });
    on(0, dup2_stdin(&null))?;
    on(1, dup2_stdout(&null))?;
    on(2, dup2_stderr(&null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_which_step() {
        let e = DaemonizeError::Fork { which: 2, source: nix::Error::EAGAIN };
        assert!(e.to_string().contains("fork #2"), "{e}");
        let e = DaemonizeError::DevNull { fd: -1, source: io::Error::from_raw_os_error(libc::ENOENT) };
        assert!(e.to_string().contains("cannot open /dev/null"), "{e}");
        let e = DaemonizeError::DevNull { fd: 2, source: io::Error::from_raw_os_error(libc::EBADF) };
        assert!(e.to_string().contains("fd 2"), "{e}");
    }
}
