//! Detaching a long-running process from its caller: the classic double
//! fork ([`daemonize`]), and the same with a start-up report to the caller
//! ([`detach_reporting`], what `harouterd run` without `--foreground` and
//! the Neutron drop-in monitor use).
//!
//! 1. `fork`; with [`daemonize`] the original process exits 0 at once (its
//!    caller learns nothing from that), with [`detach_reporting`] it waits
//!    for the detached process's verdict (below).
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
//! [`detach_reporting`] is for callers that learn from the exit status: an
//! init script starting `harouterd run` (a daemon that cannot serve must
//! not look started), and Neutron up to 28, which runs the drop-in monitor
//! with a blocking execute that returns when the command exits (and its
//! stdout and stderr reach EOF), then reads `--pid_file`. So the original
//! process does not exit at once: it waits on a close-on-exec pipe until
//! the detached process reports that start-up finished (the daemon serves;
//! the monitor's pid file is written, its socket open, privileges dropped)
//! or failed, then exits 0, or prints the reason and exits with the
//! reported status. A detached process that dies before reporting closes
//! the pipe: exit 1.
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
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, umask};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, chdir, dup2_stderr, dup2_stdin, dup2_stdout, fork, pipe2, setsid};

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
    /// The start-up report pipe could not be made.
    Pipe(nix::Error),
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
            DaemonizeError::Pipe(e) => write!(f, "cannot detach: pipe failed: {e}"),
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
            DaemonizeError::Setsid(e) | DaemonizeError::Chdir(e) | DaemonizeError::Pipe(e) => Some(e),
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

/// The detached process's end of the start-up report (see
/// [`detach_reporting`]). Dropping it without reporting tells the waiting
/// original process that start-up failed.
#[derive(Debug)]
pub struct Readiness {
    pipe: File,
}

impl Readiness {
    /// Start-up worked: the original process exits 0.
    pub fn ready(self) {
        self.send(0, "");
    }

    /// Start-up failed: the original process prints `message` on its stderr
    /// and exits `code` (1 when `code` is 0).
    pub fn failed(self, code: u8, message: &str) {
        self.send(code.max(1), message);
    }

    fn send(mut self, code: u8, message: &str) {
        // The original process may have been killed meanwhile (EPIPE; std
        // ignores SIGPIPE): nothing more to do then.
        let mut report = Vec::with_capacity(message.len() + 1);
        report.push(code);
        report.extend_from_slice(message.as_bytes());
        let _ = self.pipe.write_all(&report);
    }
}

/// Longest failure message passed on to the original process.
const MAX_REPORT: u64 = 64 * 1024;

/// Like [`daemonize`], but the original process waits for the detached one
/// to report through the returned [`Readiness`] and exits with its verdict
/// (module docs). Returns in the detached grandchild. Call it while the
/// process has a single thread.
pub fn detach_reporting() -> Result<Readiness, DaemonizeError> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC).map_err(DaemonizeError::Pipe)?;
    // SAFETY: single-threaded caller (documented precondition). The parent
    // only reads a pipe, reaps its child, writes stderr and `_exit`s.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => drop(read),
        Ok(ForkResult::Parent { child }) => {
            drop(write);
            wait_for_report(read, child)
        }
        Err(source) => return Err(DaemonizeError::Fork { which: 1, source }),
    }
    setsid().map_err(DaemonizeError::Setsid)?;
    fork_and_leave_parent(2)?;
    chdir("/").map_err(DaemonizeError::Chdir)?;
    umask(Mode::from_bits_truncate(DAEMON_UMASK));
    null_stdio()?;
    Ok(Readiness { pipe: File::from(write) })
}

/// The original process: reads the report until every copy of the write
/// end is closed (the detached process reported or died; the session
/// leader in between has `_exit`ed), reaps the session leader, exits.
fn wait_for_report(read: OwnedFd, child: Pid) -> ! {
    let mut report = Vec::new();
    let read_ok = File::from(read).take(MAX_REPORT).read_to_end(&mut report).is_ok();
    let _ = waitpid(child, None);
    let code = match report.split_first() {
        Some((0, _)) => 0,
        Some((&code, message)) => {
            let mut stderr = io::stderr().lock();
            let _ = stderr.write_all(message);
            if !message.ends_with(b"\n") {
                let _ = stderr.write_all(b"\n");
            }
            i32::from(code)
        }
        None => {
            let why = if read_ok { "ended" } else { "could not be heard from" };
            let _ = writeln!(io::stderr(), "harouterd: the detached process {why} during start-up (see its log)");
            1
        }
    };
    // SAFETY: `_exit` ends the process without touching its state.
    unsafe { libc::_exit(code) }
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
