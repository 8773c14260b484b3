//! Connection-tracking sync on a transition (Neutron's
//! `keepalived-state-change` behaviour): `conntrackd -C CONF_DIR/conntrackd.conf
//! OPT` inside the router's namespace, one option after the other.
//!
//! Failures are logged by the caller and never fatal. Only one sync runs per
//! router at a time; a transition arriving meanwhile waits, and only the
//! latest waiting one runs (an older one would be undone by it anyway).

use std::collections::VecDeque;
use std::path::PathBuf;

use crate::ident::Namespace;
use crate::spawn::{self, Exit};
use crate::state::State;

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
    pub state: State,
    /// One line per command that failed (could not start or exited non-zero).
    pub failures: Vec<String>,
}

struct Job {
    state: State,
    remaining: VecDeque<&'static str>,
    running: Option<(u32, &'static str)>,
    failures: Vec<String>,
}

pub struct ConntrackdSync {
    program: String,
    config: PathBuf,
    namespace: Option<Namespace>,
    router: String,
    job: Option<Job>,
    waiting: Option<State>,
}

impl ConntrackdSync {
    pub fn new(program: &str, conf_dir: PathBuf, namespace: Option<Namespace>, router: &str) -> ConntrackdSync {
        ConntrackdSync {
            program: program.to_owned(),
            config: conf_dir.join("conntrackd.conf"),
            namespace,
            router: router.to_owned(),
            job: None,
            waiting: None,
        }
    }

    /// Starts a sync for `state`, or queues it behind the running one.
    /// Returns the syncs that finished without waiting for a child (every
    /// command failed to start, or there was nothing to run).
    pub fn request(&mut self, state: State) -> Vec<Synced> {
        if self.job.is_some() {
            self.waiting = Some(state);
            return Vec::new();
        }
        self.job = Some(Job {
            state,
            remaining: options(state).iter().copied().collect(),
            running: None,
            failures: Vec::new(),
        });
        self.advance()
    }

    pub fn owns(&self, pid: u32) -> bool {
        self.job.as_ref().and_then(|j| j.running).is_some_and(|(p, _)| p == pid)
    }

    pub fn is_idle(&self) -> bool {
        self.job.is_none()
    }

    /// A child of ours exited.
    pub fn exited(&mut self, pid: u32, exit: Exit) -> Vec<Synced> {
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
    /// starting the waiting one) as long as nothing is left running.
    fn advance(&mut self) -> Vec<Synced> {
        let mut finished = Vec::new();
        loop {
            let Some(job) = self.job.as_mut() else { return finished };
            if job.running.is_some() {
                return finished;
            }
            match job.remaining.pop_front() {
                Some(option) => {
                    let args = self.command_line(option);
                    log::debug!("Executing \"{} {}\" on router {}", self.program, args.join(" "), self.router);
                    let label = format!("router {}: conntrackd {option}", self.router);
                    let job = self.job.as_mut().expect("checked above");
                    match spawn::spawn(&self.program, &args, self.namespace.as_ref(), &label) {
                        Ok(pid) => job.running = Some((pid, option)),
                        Err(e) => job.failures.push(format!("conntrackd {option}: {e}")),
                    }
                }
                None => {
                    let done = self.job.take().expect("checked above");
                    finished.push(Synced { state: done.state, failures: done.failures });
                    if let Some(next) = self.waiting.take() {
                        self.job = Some(Job {
                            state: next,
                            remaining: options(next).iter().copied().collect(),
                            running: None,
                            failures: Vec::new(),
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neutron_option_order() {
        assert_eq!(options(State::Primary), ["-c", "-f", "-R", "-B"]);
        assert_eq!(options(State::Backup), ["-t", "-n"]);
        assert!(options(State::Fault).is_empty());
    }

    #[test]
    fn missing_program_fails_every_command_without_blocking() {
        let mut sync = ConntrackdSync::new("/nonexistent/conntrackd", PathBuf::from("/tmp"), None, "r1");
        let done = sync.request(State::Primary);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].state, State::Primary);
        assert_eq!(done[0].failures.len(), 4);
        assert!(done[0].failures[0].starts_with("conntrackd -c: cannot run /nonexistent/conntrackd"), "{:?}", done[0]);
        assert!(sync.is_idle());
    }
}
