//! Running helper programs (keepalived, conntrackd, transition scripts)
//! inside a router's namespace without a shell and without `ip netns exec`:
//! fork, `setns`, `exec`, and reaping through SIGCHLD.
//!
//! `spawn` returns as soon as the child has exec'd (std's `Command` waits on
//! a close-on-exec pipe for exactly that, a matter of microseconds); the
//! child's exit is collected later by [`reap`] when SIGCHLD arrives, never by
//! a blocking wait.
//!
//! Invariant: **every child starts clean**, whoever started us and however:
//! - an empty signal mask and every signal at its default disposition. The
//!   daemon blocks the signals it reads through its signalfd, and a parent
//!   (`nohup`, an init script, a container runtime) may have left signals
//!   ignored; both survive `exec`, so a transition script's `sleep` would
//!   survive SIGTERM and keepalived would ignore SIGHUP (a reload lost);
//! - umask [`CHILD_UMASK`], not the daemon's 077;
//! - a fixed, minimal environment ([`CHILD_PATH`], and the variables the
//!   caller names, such as a transition script's `HAROUTERD_*`): nothing
//!   of ours (`LD_PRELOAD`, `IFS`, proxies) reaches a program run as root;
//! - descriptors 0-2 only: stdin on /dev/null, stdout and stderr on a pipe
//!   of its own whose far end the event loop reads ([`take_outputs`],
//!   [`crate::sys::child_output`]). Never our own stdout/stderr: an agent that
//!   never reads the pipes it gave us must not be able to block a child
//!   (found with Neutron 29, whose agent never reads the monitor's pipes),
//!   and the child's complaints belong in our log.

use std::cell::RefCell;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::fcntl::OFlag;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::core::ident::Namespace;
use crate::sys::child_output::ChildOutput;
use crate::sys::netns::{self, NetnsError};

/// The whole environment of every child: a `PATH` for the programs
/// keepalived and scripts run themselves, nothing else.
pub const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Every child's umask, whatever the daemon's own.
pub const CHILD_UMASK: libc::mode_t = 0o022;

#[derive(Debug)]
pub enum SpawnError {
    Namespace(NetnsError),
    /// The pipe for the child's output could not be made.
    Pipe(nix::Error),
    Exec {
        program: String,
        source: std::io::Error,
    },
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Namespace(e) => e.fmt(f),
            SpawnError::Pipe(e) => write!(f, "cannot create a pipe for the child's output: {e}"),
            SpawnError::Exec { program, source } => write!(f, "cannot run {program}: {source}"),
        }
    }
}

impl std::error::Error for SpawnError {}

/// How [`spawn_with`] starts a child; the default is what [`spawn`] does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpawnOptions<'a> {
    /// Start the child in a session of its own (`setsid()` between fork and
    /// exec): it leaves our process group and controlling terminal, so a
    /// Ctrl-C to a foreground daemon, or a signal sent to the daemon's
    /// process group, never reaches it. For long-lived children that must
    /// outlive us (keepalived with `on_exit = keep`).
    pub new_session: bool,
    /// Who the child is, for the log lines its output becomes (`router r1:
    /// keepalived`); empty: the program's name.
    pub label: &'a str,
    /// `(effective, ambient)` capability masks for the child of a process
    /// that keeps capabilities permitted but not effective (the dropped
    /// monitor): raised between fork and exec, before `setns`, by
    /// [`crate::sys::privdrop::prepare_exec`]. `None`: the child inherits ours.
    pub caps: Option<(u64, u64)>,
    /// Variables besides `PATH` (a transition script's `HAROUTERD_*`):
    /// the caller's fixed names, never anything of our own environment.
    pub env: &'a [(&'a str, String)],
}

thread_local! {
    /// Output pipes of children spawned on this thread and not yet handed to
    /// an event loop. Like [`reap`], collecting children's output is a
    /// process-wide duty of the loop, not of whichever component spawned the
    /// child: the loop drains this after every pass ([`take_outputs`]).
    static OUTPUTS: RefCell<Vec<ChildOutput>> = const { RefCell::new(Vec::new()) };
}

/// The output pipes of every child spawned since the last call, for the
/// event loop to register ([`crate::sys::child_output::ChildOutputs::adopt`]).
/// A pipe nobody reads would block its child once 64 KiB are written, so
/// every loop that spawns must call this after each pass.
pub fn take_outputs() -> Vec<ChildOutput> {
    OUTPUTS.with(|o| std::mem::take(&mut *o.borrow_mut()))
}

/// Starts `program args...` inside `namespace` (`None`: ours), clean (see
/// the module docs). Returns its pid.
pub fn spawn(program: &str, args: &[String], namespace: Option<&Namespace>, label: &str) -> Result<u32, SpawnError> {
    spawn_with(program, args, namespace, SpawnOptions { label, ..SpawnOptions::default() })
}

/// [`spawn`] with [`SpawnOptions`].
pub fn spawn_with(
    program: &str,
    args: &[String],
    namespace: Option<&Namespace>,
    options: SpawnOptions<'_>,
) -> Result<u32, SpawnError> {
    let ns_fd = namespace.map(netns::open).transpose().map_err(SpawnError::Namespace)?;
    // Both ends close-on-exec: the child gets the write end as 1 and 2
    // through dup2 (which clears the flag), and no other child inherits
    // either end.
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(SpawnError::Pipe)?;
    // The child's end must block: a program writing faster than we read
    // waits, rather than failing with EAGAIN (which sh's echo reports).
    clear_nonblock(&write).map_err(SpawnError::Pipe)?;
    let stderr =
        write.try_clone().map_err(|e| SpawnError::Pipe(nix::Error::from_raw(e.raw_os_error().unwrap_or(0))))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", CHILD_PATH)
        .envs(options.env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(stderr));
    // SAFETY: only sigprocmask(2), sigaction(2) and umask(2), all
    // async-signal-safe, between fork and exec, on stack data.
    unsafe {
        command.pre_exec(|| {
            reset_signals();
            // The daemon runs with umask 077 (its own files are root's
            // alone); keepalived's pidfiles and what scripts create get the
            // usual 022, as under Neutron.
            libc::umask(CHILD_UMASK);
            Ok(())
        });
    }
    if let Some((effective, ambient)) = options.caps {
        // SAFETY: only capget/capset/prctl, async-signal-safe, between fork
        // and exec; registered before setns, which needs them.
        unsafe { command.pre_exec(move || crate::sys::privdrop::prepare_exec(effective, ambient)) };
    }
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
    // `command` still holds our copies of the write end; they must close now
    // or the pipe never reports end-of-file when the child exits.
    drop(command);
    let pid = child.id();
    let label = if options.label.is_empty() { program } else { options.label };
    OUTPUTS.with(|o| o.borrow_mut().push(ChildOutput::new(read, label.to_owned(), pid)));
    Ok(pid)
}

fn clear_nonblock(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK)).map(drop)
}

/// Makes `command` start with an empty signal mask and default dispositions,
/// as every child of ours does, without the rest of [`spawn`]'s set-up: for
/// tests whose stand-in processes must not inherit a test runner's ignored
/// SIGHUP (`nohup`).
pub fn start_with_clean_signals(command: &mut Command) {
    // SAFETY: reset_signals only makes async-signal-safe calls on stack data.
    unsafe {
        command.pre_exec(|| {
            reset_signals();
            Ok(())
        });
    }
}

/// Between fork and exec: an empty signal mask, and every signal back to
/// its default disposition (handlers are reset by `exec` anyway; *ignored*
/// signals would survive it).
///
/// Only async-signal-safe calls, on stack data.
pub(crate) fn reset_signals() {
    // SAFETY: sigemptyset/sigprocmask/sigaction on zeroed stack structs;
    // SIGKILL and SIGSTOP (which cannot be changed) just fail, harmlessly.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut default.sa_mask);
        for signal in 1..libc::SIGRTMAX() {
            libc::sigaction(signal, &default, std::ptr::null_mut());
        }
    }
}

/// How a reaped child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildExit {
    Code(i32),
    Signal(i32),
}

impl ChildExit {
    pub fn success(self) -> bool {
        self == ChildExit::Code(0)
    }
}

impl fmt::Display for ChildExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildExit::Code(c) => write!(f, "exit code {c}"),
            ChildExit::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// Every child that has exited, without blocking.
pub fn reap() -> Vec<(u32, ChildExit)> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid.as_raw() as u32, ChildExit::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => out.push((pid.as_raw() as u32, ChildExit::Signal(sig as i32))),
            Ok(WaitStatus::StillAlive) | Err(_) => return out,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, pthread_sigmask, signal};

    use super::*;

    /// Runs `sh -c script` through [`spawn`], waits for it (a test may
    /// block) and returns its exit status and everything it wrote.
    fn run_sh(script: &str) -> (WaitStatus, String) {
        let pid = spawn("/bin/sh", &["-c".to_owned(), script.to_owned()], None, "test").unwrap();
        let status = waitpid(Pid::from_raw(pid as i32), None).unwrap();
        let mut text = String::new();
        for output in take_outputs().into_iter().filter(|o| o.pid() == pid) {
            let fd: OwnedFd = output.into_fd();
            clear_nonblock(&fd).unwrap();
            std::fs::File::from(fd).read_to_string(&mut text).unwrap();
        }
        (status, text)
    }

    /// A descriptor the process inherited without close-on-exec (here: a
    /// `dup`, which clears the flag) must not reach a spawned child.
    #[test]
    fn inherited_descriptors_do_not_reach_children() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        // SAFETY: dup of an fd we own; closed below.
        let leaked = unsafe { libc::dup(file.as_raw_fd()) };
        assert!(leaked > 2);
        let (status, _) = run_sh(&format!("test -e /proc/self/fd/{leaked}"));
        // SAFETY: closing the fd dup'd above.
        unsafe { libc::close(leaked) };
        assert!(matches!(status, WaitStatus::Exited(_, 1)), "fd {leaked} leaked into the child: {status:?}");
    }

    /// The daemon blocks the signals its signalfd reads, and may have been
    /// started with signals ignored (`nohup`): a child must see neither.
    /// Runs in a thread of its own, since the mask is per thread.
    #[test]
    fn children_start_with_an_empty_mask_and_default_dispositions() {
        std::thread::spawn(|| {
            let mut blocked = SigSet::empty();
            for s in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
                blocked.add(s);
            }
            pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None).unwrap();
            // SAFETY: SIG_IGN installs no handler; restored below.
            let old = unsafe { signal(Signal::SIGUSR1, SigHandler::SigIgn) }.unwrap();
            let (status, text) = run_sh("grep -E '^Sig(Blk|Ign)' /proc/self/status");
            // SAFETY: restores the disposition saved above.
            unsafe { signal(Signal::SIGUSR1, old) }.unwrap();
            assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
            assert!(text.contains("SigBlk:\t0000000000000000"), "signals blocked in the child:\n{text}");
            // sh itself ignores nothing at start; SIGUSR1 is bit 10 (0x200).
            let ign = text.lines().find_map(|l| l.strip_prefix("SigIgn:\t")).unwrap();
            let mask = u64::from_str_radix(ign.trim(), 16).unwrap();
            assert_eq!(mask & (1 << (libc::SIGUSR1 - 1)), 0, "SIGUSR1 still ignored in the child:\n{text}");
        })
        .join()
        .unwrap();
    }

    /// Nothing of our environment reaches a child but the fixed PATH.
    #[test]
    fn children_get_a_fixed_minimal_environment() {
        // SAFETY: tests in this module do not read the environment
        // concurrently; the variable is removed again below.
        unsafe { std::env::set_var("HAROUTERD_TEST_LEAK", "1") };
        let (_, text) = run_sh("env");
        // SAFETY: as above.
        unsafe { std::env::remove_var("HAROUTERD_TEST_LEAK") };
        let mut vars: Vec<&str> = text.lines().filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=")).collect();
        vars.retain(|l| !l.starts_with("_="));
        assert_eq!(vars, [format!("PATH={CHILD_PATH}")], "the child's environment");
    }

    /// stdout and stderr both reach the pipe handed to the loop, never our
    /// own descriptors.
    #[test]
    fn output_goes_to_a_pipe_of_its_own() {
        let (_, text) = run_sh("echo out; echo err >&2; readlink /proc/self/fd/1");
        assert!(text.starts_with("out\nerr\npipe:"), "{text:?}");
    }
}
