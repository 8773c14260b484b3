//! Connection-tracking sync on a transition (Neutron's
//! `keepalived-state-change` behaviour): `conntrackd -C CONF_DIR/conntrackd.conf
//! OPT` inside the router's namespace, one option after the other.
//!
//! Failures are logged by the caller and never fatal. Only one sync runs per
//! router at a time; a transition arriving meanwhile waits, and only the
//! latest waiting one runs (an older one would be undone by it anyway).
//!
//! The daemon runs the conntrackd these commands talk to. While it starts
//! (spawned, its control socket not there yet) syncs are held
//! ([`ConntrackdSync::hold`]): they would only fail. Once it is up,
//! [`ConntrackdSync::release`] first asks the peer for a resync
//! (`conntrackd -C CONF -n`, what Neutron's agent runs after starting
//! conntrackd: a fresh conntrackd has an empty external cache), then runs
//! the latest sync held back.
//!
//! The drop-in monitor runs conntrackd with capabilities, as a user the
//! agent picks, on a command line the agent writes (through rootwrap, which
//! filters only the program name). So it never takes the program from its
//! arguments or its `PATH`: [`locate`] looks in fixed root-owned
//! directories only.

use std::collections::VecDeque;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::core::ident::{Namespace, RouterId};
use crate::core::state::State;
use crate::sys::spawn::{self, ChildExit, SpawnOptions};

/// Where [`locate`] looks for conntrackd, in order: oslo.rootwrap's
/// `exec_dirs` as Neutron ships them (`etc/neutron/rootwrap.conf`), which is
/// how Neutron's own monitor found the program it ran as root.
pub const SEARCH_DIRS: &[&str] = &["/sbin", "/usr/sbin", "/bin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"];

/// The absolute path of the first `conntrackd` in [`SEARCH_DIRS`] that is a
/// regular executable file owned by root and writable by nobody else (a
/// program the agent user could replace would be run with capabilities).
/// The error says what was found where.
pub fn locate() -> Result<PathBuf, String> {
    locate_in(SEARCH_DIRS, "conntrackd")
}

fn locate_in(dirs: &[&str], name: &str) -> Result<PathBuf, String> {
    let mut refused = Vec::new();
    for dir in dirs {
        let path = Path::new(dir).join(name);
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        let mode = meta.permissions().mode();
        if !meta.is_file() || mode & 0o111 == 0 {
            refused.push(format!("{} is not an executable file", path.display()));
        } else if meta.uid() != 0 || mode & 0o022 != 0 {
            refused.push(format!(
                "{} may be changed by others than root (owner uid {}, mode {:04o})",
                path.display(),
                meta.uid(),
                mode & 0o7777
            ));
        } else {
            return Ok(path);
        }
    }
    let mut message = format!("no usable {name} in {}", dirs.join(", "));
    if !refused.is_empty() {
        message.push_str(&format!(" ({})", refused.join("; ")));
    }
    Err(message)
}

/// The conntrackd options run for `state`, in order.
pub fn options(state: State) -> &'static [&'static str] {
    match state {
        // commit the external cache, flush caches, resync with the kernel,
        // send a bulk update to the backups
        State::Primary => &["-c", "-f", "-R", "-B"],
        // shorten kernel timers, ask the primary for a resync
        State::Backup => &["-t", "-n"],
        State::Fault => &[],
    }
}

/// A finished sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Synced {
    /// The transition it was for; `None`: the resync asked of the peer
    /// after conntrackd started.
    pub state: Option<State>,
    /// One line per command that failed (could not start or exited non-zero).
    pub failures: Vec<String>,
}

impl Synced {
    /// As Neutron's monitor: the Synced line after every attempt, whatever
    /// the commands' exit status (`check_exit_code=False`; operators and
    /// Neutron's functional tests grep for it), with an ERROR line naming
    /// each failed command first. The daemon and the monitor both log this.
    pub fn log(&self, router: &RouterId) {
        let Synced { state, failures } = self;
        let Some(state) = state else {
            if failures.is_empty() {
                log::info!("Asked the peer for a connection tracking resync for router {router}");
            } else {
                log::error!(
                    "Failed to ask the peer for a connection tracking resync for router {router}: {}",
                    failures.join("; ")
                );
            }
            return;
        };
        if !failures.is_empty() {
            log::error!(
                "Failed to sync connection tracking state on {state} for router {router}: {}",
                failures.join("; ")
            );
        }
        log::info!("Synced connection tracking state on {state} for router {router}");
    }
}

struct Job {
    /// `None`: the resync after a start (`-n`).
    state: Option<State>,
    remaining: VecDeque<&'static str>,
    running: Option<(u32, &'static str)>,
    failures: Vec<String>,
}

impl Job {
    fn new(state: Option<State>) -> Job {
        let options = state.map_or(&["-n"][..], options);
        Job { state, remaining: options.iter().copied().collect(), running: None, failures: Vec::new() }
    }
}

pub struct ConntrackdSync {
    /// The program, or why there is none (every command then fails with it).
    program: Result<String, String>,
    /// Capabilities for each command (see [`SpawnOptions::caps`]).
    caps: Option<(u64, u64)>,
    config: PathBuf,
    namespace: Option<Namespace>,
    router: RouterId,
    job: Option<Job>,
    waiting: Option<State>,
    /// conntrackd is starting: no new job until [`ConntrackdSync::release`].
    held: bool,
    /// The resync to ask for before anything waiting.
    resync: bool,
}

impl ConntrackdSync {
    pub fn new(program: &str, conf_dir: PathBuf, namespace: Option<Namespace>, router: &RouterId) -> ConntrackdSync {
        ConntrackdSync {
            program: Ok(program.to_owned()),
            caps: None,
            config: conf_dir.join("conntrackd.conf"),
            namespace,
            router: router.clone(),
            job: None,
            waiting: None,
            held: false,
            resync: false,
        }
    }

    /// A sync running what [`locate`] found (or failing every command with
    /// what it said).
    pub fn located(
        program: Result<PathBuf, String>,
        conf_dir: PathBuf,
        namespace: Option<Namespace>,
        router: &RouterId,
    ) -> ConntrackdSync {
        let mut sync = ConntrackdSync::new("conntrackd", conf_dir, namespace, router);
        sync.program = program.map(|p| p.display().to_string());
        sync
    }

    /// Runs each command with these `(effective, ambient)` capabilities
    /// raised between fork and exec ([`crate::sys::privdrop::prepare_exec`]).
    pub fn with_child_caps(mut self, effective: u64, ambient: u64) -> ConntrackdSync {
        self.caps = Some((effective, ambient));
        self
    }

    /// Starts a sync for `state`, or queues it behind the running one.
    /// Returns the syncs that finished without waiting for a child (every
    /// command failed to start, or there was nothing to run).
    pub fn request(&mut self, state: State) -> Vec<Synced> {
        self.waiting = Some(state);
        self.advance()
    }

    /// conntrackd is (re)starting: syncs requested from now on wait for
    /// [`ConntrackdSync::release`] (a command already running finishes).
    pub fn hold(&mut self) {
        self.held = true;
    }

    /// conntrackd is up (`resync`: just started, so ask the peer for a
    /// resync first), or will not be soon (its start failed): run what
    /// waits.
    pub fn release(&mut self, resync: bool) -> Vec<Synced> {
        self.held = false;
        self.resync |= resync;
        self.advance()
    }

    pub fn is_held(&self) -> bool {
        self.held
    }

    pub fn owns(&self, pid: u32) -> bool {
        self.waits_for() == Some(pid)
    }

    /// The command running now, if any (see [`ConntrackdSync::owns`]).
    pub fn waits_for(&self) -> Option<u32> {
        self.job.as_ref().and_then(|j| j.running).map(|(pid, _)| pid)
    }

    pub fn is_idle(&self) -> bool {
        self.job.is_none()
    }

    /// A child of ours exited.
    pub fn exited(&mut self, pid: u32, exit: ChildExit) -> Vec<Synced> {
        let Some(job) = self.job.as_mut() else { return Vec::new() };
        if let Some((running, option)) = job.running.take_if(|(p, _)| *p == pid) {
            debug_assert_eq!(running, pid);
            if !exit.success() {
                job.failures.push(format!("conntrackd {option}: {exit}"));
            }
        }
        self.advance()
    }

    fn command_line(&self, option: &str) -> Vec<String> {
        vec!["-C".into(), self.config.display().to_string(), option.into()]
    }

    /// Runs the next command of the current job, finishing jobs (and
    /// starting the resync, then the waiting one, unless held) as long as
    /// nothing is left running.
    fn advance(&mut self) -> Vec<Synced> {
        let mut finished = Vec::new();
        loop {
            if self.job.is_none() && !self.held {
                if std::mem::take(&mut self.resync) {
                    self.job = Some(Job::new(None));
                } else if let Some(next) = self.waiting.take() {
                    self.job = Some(Job::new(Some(next)));
                }
            }
            let Some(job) = self.job.as_mut() else { return finished };
            if job.running.is_some() {
                return finished;
            }
            match job.remaining.pop_front() {
                Some(option) => {
                    let args = self.command_line(option);
                    let label = format!("router {}: conntrackd {option}", self.router);
                    let started = match &self.program {
                        Ok(program) => {
                            log::debug!("Executing \"{program} {}\" on router {}", args.join(" "), self.router);
                            let options = SpawnOptions { label: &label, caps: self.caps, ..SpawnOptions::default() };
                            spawn::spawn_with(program, &args, self.namespace.as_ref(), options)
                                .map_err(|e| e.to_string())
                        }
                        Err(why) => Err(why.clone()),
                    };
                    let job = self.job.as_mut().expect("checked above");
                    match started {
                        Ok(pid) => job.running = Some((pid, option)),
                        Err(e) => job.failures.push(format!("conntrackd {option}: {e}")),
                    }
                }
                None => {
                    let done = self.job.take().expect("checked above");
                    finished.push(Synced { state: done.state, failures: done.failures });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r1() -> RouterId {
        RouterId::parse("r1").unwrap()
    }

    #[test]
    fn neutron_option_order() {
        assert_eq!(options(State::Primary), ["-c", "-f", "-R", "-B"]);
        assert_eq!(options(State::Backup), ["-t", "-n"]);
        assert!(options(State::Fault).is_empty());
    }

    #[test]
    fn locate_takes_only_root_owned_executables_from_fixed_dirs() {
        use crate::test_support::TempDir;
        let root = nix::unistd::geteuid().is_root();
        let dir = TempDir::new("locate");
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir(&a).expect("mkdir");
        std::fs::create_dir(&b).expect("mkdir");
        let dirs = [a.to_str().expect("utf-8"), b.to_str().expect("utf-8")];
        let err = locate_in(&dirs, "conntrackd").expect_err("nothing there");
        assert_eq!(err, format!("no usable conntrackd in {}, {}", dirs[0], dirs[1]));
        // Not executable, then writable by others: both refused, both said.
        std::fs::write(a.join("conntrackd"), "#!/bin/sh\n").expect("write");
        std::fs::write(b.join("conntrackd"), "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(b.join("conntrackd"), std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = locate_in(&dirs, "conntrackd").expect_err("refused");
        assert!(err.contains("a/conntrackd is not an executable file"), "{err}");
        assert!(err.contains("b/conntrackd may be changed by others than root"), "{err}");
        std::fs::set_permissions(b.join("conntrackd"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        if root {
            assert_eq!(locate_in(&dirs, "conntrackd"), Ok(b.join("conntrackd")));
        } else {
            assert!(locate_in(&dirs, "conntrackd").is_err(), "owned by a non-root user");
        }
    }

    #[test]
    fn unavailable_program_fails_every_command_with_the_reason() {
        let mut sync =
            ConntrackdSync::located(Err("no usable conntrackd in /x".into()), PathBuf::from("/tmp"), None, &r1());
        let done = sync.request(State::Backup);
        assert_eq!(done.len(), 1);
        assert_eq!(
            done[0].failures,
            ["conntrackd -t: no usable conntrackd in /x", "conntrackd -n: no usable conntrackd in /x"]
        );
        assert!(sync.is_idle());
    }

    #[test]
    fn held_syncs_wait_and_a_release_after_a_start_asks_for_a_resync_first() {
        let mut sync = ConntrackdSync::new("/nonexistent/conntrackd", PathBuf::from("/tmp"), None, &r1());
        sync.hold();
        assert!(sync.request(State::Backup).is_empty(), "held");
        assert!(sync.request(State::Primary).is_empty(), "held; the latest wins");
        assert!(sync.is_held() && sync.is_idle());
        let done = sync.release(true);
        let what: Vec<(Option<State>, usize)> = done.iter().map(|s| (s.state, s.failures.len())).collect();
        assert_eq!(what, [(None, 1), (Some(State::Primary), 4)], "-n first, then the latest held sync");
        assert!(done[0].failures[0].starts_with("conntrackd -n: cannot run /nonexistent/conntrackd"), "{done:?}");
        // A release without a start (conntrackd could not start): no -n.
        sync.hold();
        assert!(sync.request(State::Backup).is_empty());
        let done = sync.release(false);
        assert_eq!(done.iter().map(|s| s.state).collect::<Vec<_>>(), [Some(State::Backup)]);
        assert!(sync.release(false).is_empty(), "nothing waits");
    }

    #[test]
    fn missing_program_fails_every_command_without_blocking() {
        let mut sync = ConntrackdSync::new("/nonexistent/conntrackd", PathBuf::from("/tmp"), None, &r1());
        let done = sync.request(State::Primary);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].state, Some(State::Primary));
        assert_eq!(done[0].failures.len(), 4);
        assert!(done[0].failures[0].starts_with("conntrackd -c: cannot run /nonexistent/conntrackd"), "{:?}", done[0]);
        assert!(sync.is_idle());
    }
}
