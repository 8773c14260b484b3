//! Running helper programs (keepalived, conntrackd) inside a router's
//! namespace without a shell and without `ip netns exec`: fork, `setns`,
//! `exec`, and reaping through SIGCHLD.
//!
//! `spawn` returns as soon as the child has exec'd (std's `Command` waits on
//! a close-on-exec pipe for exactly that, a matter of microseconds); the
//! child's exit is collected later by [`reap`] when SIGCHLD arrives, never by
//! a blocking wait.

use std::fmt;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::ident::Namespace;
use crate::netns::{self, NetnsError};

#[derive(Debug)]
pub enum SpawnError {
    Namespace(NetnsError),
    Exec { program: String, source: std::io::Error },
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Namespace(e) => e.fmt(f),
            SpawnError::Exec { program, source } => write!(f, "cannot run {program}: {source}"),
        }
    }
}

impl std::error::Error for SpawnError {}

/// How [`spawn_with`] starts a child; the default is what [`spawn`] does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpawnOptions {
    /// Start the child in a session of its own (`setsid()` between fork and
    /// exec): it leaves our process group and controlling terminal, so a
    /// Ctrl-C to a foreground daemon, or a signal sent to the daemon's
    /// process group, never reaches it. For long-lived children that must
    /// outlive us (keepalived with `on_exit = keep`).
    pub new_session: bool,
}

/// Starts `program args...` inside `namespace` (`None`: ours), stdin and
/// stdout on /dev/null, stderr inherited. Returns its pid.
pub fn spawn(program: &str, args: &[String], namespace: Option<&Namespace>) -> Result<u32, SpawnError> {
    spawn_with(program, args, namespace, SpawnOptions::default())
}

/// [`spawn`] with [`SpawnOptions`].
pub fn spawn_with(
    program: &str,
    args: &[String],
    namespace: Option<&Namespace>,
    options: SpawnOptions,
) -> Result<u32, SpawnError> {
    let ns_fd = namespace.map(netns::open).transpose().map_err(SpawnError::Namespace)?;
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::null());
    if let Some(fd) = &ns_fd {
        let raw = fd.as_raw_fd();
        // SAFETY: only setns(2), async-signal-safe, runs between fork and
        // exec; the fd stays open in the parent until spawn returns.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(raw, libc::CLONE_NEWNET) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
            });
        }
    }
    if options.new_session {
        // SAFETY: only setsid(2), async-signal-safe, between fork and exec.
        // It cannot fail in a freshly forked child (never a group leader).
        unsafe {
            command.pre_exec(|| if libc::setsid() >= 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) });
        }
    }
    // Children get stdin, stdout and stderr, nothing else: a descriptor the
    // daemon inherited from whoever started it (a lock, a pipe someone waits
    // on) must not live on in a keepalived that outlives the daemon (found
    // by the demo). Our own descriptors are close-on-exec already; this
    // catches the inherited ones. Marking instead of closing keeps std's
    // exec-error pipe working until the exec itself.
    // SAFETY: only close_range(2), async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
            Ok(())
        });
    }
    let child = command.spawn().map_err(|source| SpawnError::Exec { program: program.to_owned(), source })?;
    Ok(child.id())
}

/// How a reaped child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// Every child that has exited, without blocking.
pub fn reap() -> Vec<(u32, Exit)> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid.as_raw() as u32, Exit::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => out.push((pid.as_raw() as u32, Exit::Signal(sig as i32))),
            Ok(WaitStatus::StillAlive) | Err(_) => return out,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod fd_tests {
    use super::*;

    /// A descriptor the process inherited without close-on-exec (here: a
    /// `dup`, which clears the flag) must not reach a spawned child.
    #[test]
    fn inherited_descriptors_do_not_reach_children() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        // SAFETY: dup of an fd we own; closed below.
        let leaked = unsafe { libc::dup(file.as_raw_fd()) };
        assert!(leaked > 2);
        let check = format!("test -e /proc/self/fd/{leaked}");
        let pid = spawn("/bin/sh", &["-c".to_owned(), check], None).unwrap();
        let status = waitpid(Pid::from_raw(pid as i32), None).unwrap();
        // SAFETY: closing the fd dup'd above.
        unsafe { libc::close(leaked) };
        assert_eq!(status, WaitStatus::Exited(Pid::from_raw(pid as i32), 1), "fd {leaked} leaked into the child");
    }
}
