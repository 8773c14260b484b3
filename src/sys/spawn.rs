//! Running helper programs (keepalived, conntrackd, transition scripts)
//! inside a router's namespace without a shell and without `ip netns exec`:
//! fork, `setns`, `exec`, and reaping through SIGCHLD.
//!
//! `spawn` returns as soon as the child is forked, **without waiting for
//! its `exec`**: the child sets itself up and execs on its own time, so a
//! storm of a thousand spawns on a loaded machine never holds the event
//! loop (std's `Command` waits on a close-on-exec pipe until the child has
//! exec'd: 2 ms per spawn on an idle machine, seconds under load). What the
//! parent can check without the child, it checks before forking: the
//! program is found (a bare name in [`CHILD_PATH`]) and executable, so a
//! missing program is still an error from `spawn` itself. A child that
//! fails later (exec refused: no interpreter, a bad format, a namespace it
//! cannot enter) writes which step failed and the errno to a pipe shared by
//! every child and exits 127; [`reap`] reads it back and reports that
//! child as [`ChildExit::NotRun`], never as a program that ran and exited.
//!
//! Invariant: **every child starts clean**, whoever started us and however:
//! - an empty signal mask and every signal at its default disposition. The
//!   daemon blocks the signals it reads through its signalfd, and a parent
//!   (`nohup`, an init script, a container runtime) may have left signals
//!   ignored; both survive `exec`, so a transition script's `sleep` would
//!   survive SIGTERM and keepalived would ignore SIGHUP (a reload lost);
//! - umask [`CHILD_UMASK`], not the daemon's 077;
//! - the scheduling priority the process was started with, not the better
//!   one the daemon gives itself ([`crate::sys::process::raise_priority`]);
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
use std::collections::HashMap;
use std::ffi::{CString, c_char};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{AccessFlags, Pid};

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
    /// The program cannot be run (not found, not executable, or its child
    /// reported that `exec` failed).
    Exec {
        program: String,
        source: io::Error,
    },
    /// `fork` itself failed (no memory, the process limit).
    Fork(nix::Error),
    /// The child could not set itself up before `exec` (its namespace, its
    /// capabilities, its session).
    Setup {
        program: String,
        step: Step,
        source: io::Error,
    },
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Namespace(e) => e.fmt(f),
            SpawnError::Pipe(e) => write!(f, "cannot create a pipe for the child's output: {e}"),
            SpawnError::Exec { program, source } => write!(f, "cannot run {program}: {source}"),
            SpawnError::Fork(e) => write!(f, "cannot fork: {e}"),
            SpawnError::Setup { program, step, source } => {
                write!(f, "cannot run {program}: {} failed in the child: {source}", step.describe())
            }
        }
    }
}

impl std::error::Error for SpawnError {}

/// What a child does between `fork` and `exec` that can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `dup2` of stdin, stdout, stderr.
    Stdio,
    /// Raising the capabilities it is given ([`SpawnOptions::caps`]).
    Capabilities,
    /// `setns` into the router's network namespace.
    Namespace,
    /// `setsid`.
    Session,
    /// `execve` itself.
    Exec,
}

impl Step {
    fn describe(self) -> &'static str {
        match self {
            Step::Stdio => "setting up stdin, stdout and stderr",
            Step::Capabilities => "raising its capabilities",
            Step::Namespace => "entering the network namespace",
            Step::Session => "starting a session",
            Step::Exec => "exec",
        }
    }

    fn code(self) -> u32 {
        match self {
            Step::Stdio => 1,
            Step::Capabilities => 2,
            Step::Namespace => 3,
            Step::Session => 4,
            Step::Exec => 5,
        }
    }

    fn from_code(code: u32) -> Option<Step> {
        [Step::Stdio, Step::Capabilities, Step::Namespace, Step::Session, Step::Exec]
            .into_iter()
            .find(|s| s.code() == code)
    }
}

/// A child that never ran its program: which step failed, with what errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotRun {
    pub step: Step,
    pub errno: i32,
}

impl NotRun {
    /// The OS error the child got.
    pub fn error(self) -> io::Error {
        io::Error::from_raw_os_error(self.errno)
    }

    /// The same failure as [`spawn`] would have returned, had it waited.
    pub fn into_spawn_error(self, program: &str) -> SpawnError {
        let program = program.to_owned();
        match self.step {
            Step::Exec => SpawnError::Exec { program, source: self.error() },
            step => SpawnError::Setup { program, step, source: self.error() },
        }
    }
}

impl fmt::Display for NotRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.step.describe(), self.error())
    }
}

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

/// The nice value children get, when the process changed its own
/// ([`set_child_nice`]); `i32::MIN`: children keep ours.
static CHILD_NICE: AtomicI32 = AtomicI32::new(i32::MIN);

/// Children start with nice value `nice` from now on, whatever ours is.
pub fn set_child_nice(nice: i32) {
    CHILD_NICE.store(nice, Ordering::Relaxed);
}

/// The pipe every child writes to when it cannot run its program (see the
/// module docs): read end non-blocking, write end non-blocking too (a full
/// pipe loses the report, never blocks a child), both close-on-exec and
/// above 2 (a child's `dup2` onto 0-2 must not clobber it).
fn report_pipe() -> Option<&'static (OwnedFd, OwnedFd)> {
    static PIPE: OnceLock<Option<(OwnedFd, OwnedFd)>> = OnceLock::new();
    PIPE.get_or_init(|| {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).ok()?;
        Some((above_stdio(read).ok()?, above_stdio(write).ok()?))
    })
    .as_ref()
}

/// Children that reported they never ran, by pid, until reaped.
static NOT_RUN: Mutex<Option<HashMap<u32, NotRun>>> = Mutex::new(None);

/// One report: pid, step, errno, native-endian, written with one `write`
/// (atomic: far below PIPE_BUF).
const REPORT_LEN: usize = 12;

/// Moves every report waiting in the pipe into [`NOT_RUN`].
fn collect_reports(not_run: &mut HashMap<u32, NotRun>) {
    let Some((read, _)) = report_pipe() else { return };
    let mut buf = [0u8; REPORT_LEN * 64];
    loop {
        let n = match nix::unistd::read(read, &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        for record in buf[..n].chunks_exact(REPORT_LEN) {
            let word = |i: usize| [record[i], record[i + 1], record[i + 2], record[i + 3]];
            let pid = u32::from_ne_bytes(word(0));
            if let Some(step) = Step::from_code(u32::from_ne_bytes(word(4))) {
                not_run.insert(pid, NotRun { step, errno: i32::from_ne_bytes(word(8)) });
            }
        }
    }
}

fn with_not_run<T>(f: impl FnOnce(&mut HashMap<u32, NotRun>) -> T) -> T {
    let mut guard = NOT_RUN.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(HashMap::new))
}

/// `fd` itself if it is above 2, else a close-on-exec duplicate that is.
fn above_stdio(fd: OwnedFd) -> nix::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let raw = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

/// The file `spawn` will exec for `program`: a path as given, a bare name
/// looked up in [`CHILD_PATH`] (what `execvp` would do in the child's
/// environment). Not found, or not executable: the error `exec` would give.
fn locate(program: &str) -> io::Result<PathBuf> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        nix::unistd::access(&path, AccessFlags::X_OK).map_err(io::Error::from)?;
        return Ok(path);
    }
    let mut denied = None;
    for dir in CHILD_PATH.split(':') {
        let path = Path::new(dir).join(program);
        match nix::unistd::access(&path, AccessFlags::X_OK) {
            Ok(()) if path.is_file() => return Ok(path),
            Ok(()) | Err(Errno::EACCES) => denied = Some(Errno::EACCES),
            Err(_) => {}
        }
    }
    Err(io::Error::from(denied.unwrap_or(Errno::ENOENT)))
}

/// Starts `program args...` inside `namespace` (`None`: ours), clean (see
/// the module docs). Returns its pid.
pub fn spawn(program: &str, args: &[String], namespace: Option<&Namespace>, label: &str) -> Result<u32, SpawnError> {
    spawn_with(program, args, namespace, SpawnOptions { label, ..SpawnOptions::default() })
}

/// Everything the child needs, prepared before `fork`: between `fork` and
/// `exec` the child only makes system calls on this (no allocation, no
/// lock: another thread of the parent may have held one when it forked).
struct ChildPlan {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    stdin: OwnedFd,
    output: OwnedFd,
    namespace: Option<OwnedFd>,
    report: RawFd,
    new_session: bool,
    caps: Option<(u64, u64)>,
    nice: i32,
}

/// [`spawn`] with [`SpawnOptions`].
pub fn spawn_with(
    program: &str,
    args: &[String],
    namespace: Option<&Namespace>,
    options: SpawnOptions<'_>,
) -> Result<u32, SpawnError> {
    let exec_error = |source: io::Error| SpawnError::Exec { program: program.to_owned(), source };
    let path = locate(program).map_err(exec_error)?;
    let cstring = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| exec_error(io::Error::new(io::ErrorKind::InvalidInput, "contains a NUL byte")))
    };
    let path = cstring(path.as_os_str().as_bytes())?;
    let mut argv = vec![cstring(program.as_bytes())?];
    for arg in args {
        argv.push(cstring(arg.as_bytes())?);
    }
    let mut envp = vec![cstring(format!("PATH={CHILD_PATH}").as_bytes())?];
    for (name, value) in options.env {
        envp.push(cstring(format!("{name}={value}").as_bytes())?);
    }
    let namespace = namespace.map(netns::open).transpose().map_err(SpawnError::Namespace)?;
    let stdin = nix::fcntl::open("/dev/null", OFlag::O_RDONLY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .and_then(above_stdio)
        .map_err(|e| exec_error(io::Error::other(format!("cannot open /dev/null: {e}"))))?;
    // Both ends close-on-exec: the child gets the write end as 1 and 2
    // through dup2 (which clears the flag), and no other child inherits
    // either end.
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(SpawnError::Pipe)?;
    // The child's end must block: a program writing faster than we read
    // waits, rather than failing with EAGAIN (which sh's echo reports).
    clear_nonblock(&write).map_err(SpawnError::Pipe)?;
    let output = above_stdio(write).map_err(SpawnError::Pipe)?;
    let report = report_pipe().map_or(-1, |(_, w)| w.as_raw_fd());
    let plan = ChildPlan {
        path,
        argv,
        envp,
        stdin,
        output,
        namespace,
        report,
        new_session: options.new_session,
        caps: options.caps,
        nice: CHILD_NICE.load(Ordering::Relaxed),
    };
    let mut argv_ptrs: Vec<*const c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const c_char> = plan.envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // A report left by an earlier child with the pid this one is about to
    // get would be taken for this one's: collected now, dropped below.
    with_not_run(collect_reports);
    // SAFETY: fork(2); the child only runs `child`, which makes system
    // calls on data prepared above and never returns.
    let pid = match unsafe { libc::fork() } {
        -1 => return Err(SpawnError::Fork(Errno::last())),
        0 => child(&plan, &argv_ptrs, &envp_ptrs),
        pid => pid as u32,
    };
    with_not_run(|m| m.remove(&pid));
    drop(plan);
    let label = if options.label.is_empty() { program } else { options.label };
    OUTPUTS.with(|o| o.borrow_mut().push(ChildOutput::new(read, label.to_owned(), pid)));
    Ok(pid)
}

/// The child's side of [`spawn_with`]: set itself up, exec. On failure it
/// reports the step and errno on the report pipe and exits 127.
///
/// Only async-signal-safe system calls on data prepared before the fork.
fn child(plan: &ChildPlan, argv: &[*const c_char], envp: &[*const c_char]) -> ! {
    let fail = |step: Step| -> ! {
        let errno = Errno::last_raw();
        // SAFETY: getpid, write and _exit are async-signal-safe; the record
        // is on the stack.
        unsafe {
            let pid = libc::getpid() as u32;
            let mut record = [0u8; REPORT_LEN];
            record[..4].copy_from_slice(&pid.to_ne_bytes());
            record[4..8].copy_from_slice(&step.code().to_ne_bytes());
            record[8..].copy_from_slice(&errno.to_ne_bytes());
            if plan.report >= 0 {
                libc::write(plan.report, record.as_ptr().cast(), REPORT_LEN);
            }
            libc::_exit(127)
        }
    };
    reset_signals();
    // SAFETY: umask, setpriority, setns, setsid, dup2, close_range and
    // execve are async-signal-safe system calls; every pointer is to data
    // that outlives this function (it never returns).
    unsafe {
        // The daemon runs with umask 077 (its own files are root's alone);
        // keepalived's pidfiles and what scripts create get the usual 022,
        // as under Neutron.
        libc::umask(CHILD_UMASK);
        if plan.nice != i32::MIN {
            // Lowering one's priority is always allowed; a failure leaves
            // the child at ours, which is no reason not to run it.
            libc::setpriority(libc::PRIO_PROCESS, 0, plan.nice);
        }
        // Before setns, which needs them.
        if let Some((effective, ambient)) = plan.caps
            && let Err(e) = crate::sys::privdrop::prepare_exec(effective, ambient)
        {
            Errno::set_raw(e.raw_os_error().unwrap_or(libc::EPERM));
            fail(Step::Capabilities);
        }
        if let Some(fd) = &plan.namespace
            && libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0
        {
            fail(Step::Namespace);
        }
        // It cannot fail in a freshly forked child (never a group leader).
        if plan.new_session && libc::setsid() < 0 {
            fail(Step::Session);
        }
        // Every fd here is above 2 (`above_stdio`), so no dup2 clobbers
        // another; dup2 clears close-on-exec on 0, 1 and 2.
        let output = plan.output.as_raw_fd();
        if libc::dup2(plan.stdin.as_raw_fd(), 0) < 0 || libc::dup2(output, 1) < 0 || libc::dup2(output, 2) < 0 {
            fail(Step::Stdio);
        }
        // Children get stdin, stdout and stderr, nothing else: a descriptor
        // the daemon inherited from whoever started it (a lock, a pipe
        // someone waits on) must not live on in a keepalived that outlives
        // the daemon (found by the demo). Our own descriptors are
        // close-on-exec already; this catches the inherited ones, and keeps
        // the report pipe open until the exec itself.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
        libc::execve(plan.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
    }
    fail(Step::Exec)
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
    /// It never ran its program (see the module docs): a spawn that failed
    /// late, not a program that failed.
    NotRun(NotRun),
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
            ChildExit::NotRun(n) => write!(f, "never ran: {n}"),
        }
    }
}

/// What the child `pid` reported before exiting 127 without running its
/// program, for a caller that reaped it itself (tests waiting for one
/// child); [`reap`] does this on its own.
pub fn not_run_report(pid: u32) -> Option<NotRun> {
    with_not_run(|not_run| {
        collect_reports(not_run);
        not_run.remove(&pid)
    })
}

/// Every child that has exited, without blocking.
pub fn reap() -> Vec<(u32, ChildExit)> {
    reap_at_most(usize::MAX)
}

/// At most `limit` of the children that have exited, without blocking: a
/// caller with more to do per child (a respawn each) serves its other
/// sources between batches. Fewer than `limit` returned means none is left.
pub fn reap_at_most(limit: usize) -> Vec<(u32, ChildExit)> {
    let mut out = Vec::new();
    while out.len() < limit {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid.as_raw() as u32, ChildExit::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => out.push((pid.as_raw() as u32, ChildExit::Signal(sig as i32))),
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if out.iter().any(|(_, exit)| *exit == ChildExit::Code(127)) {
        // A child writes its report before it exits: it is in the pipe.
        with_not_run(|not_run| {
            collect_reports(not_run);
            for (pid, exit) in &mut out {
                if let Some(failure) = not_run.remove(pid) {
                    *exit = ChildExit::NotRun(failure);
                }
            }
        });
    }
    out
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
