//! The pieces every harouterd event loop is made of: one `mio::Poll`, a
//! signalfd for the signals the process handles, and one ordered structure
//! of timers whose earliest deadline is the poll timeout.
//!
//! Invariants:
//! - With no timer pending, [`EventLoop::wait`] sleeps with no timeout: an
//!   idle process makes no wake-ups at all.
//! - Time is always passed in (`now: Instant`), never read inside the
//!   timer logic, so it is tested with a clock the test drives.
//! - Handled signals are blocked and read from the signalfd; children get
//!   an empty mask and default dispositions back ([`crate::sys::spawn`]).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Poll, Registry};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// A handle to cancel a scheduled timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId(Instant, u64);

/// Timers ordered by deadline; ties fire in the order they were scheduled.
#[derive(Debug)]
pub struct Timers<K> {
    by_deadline: BTreeMap<TimerId, K>,
    next: u64,
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Timers { by_deadline: BTreeMap::new(), next: 0 }
    }
}

impl<K> Timers<K> {
    pub fn schedule(&mut self, at: Instant, key: K) -> TimerId {
        self.next += 1;
        let id = TimerId(at, self.next);
        self.by_deadline.insert(id, key);
        id
    }

    pub fn cancel(&mut self, id: TimerId) -> Option<K> {
        self.by_deadline.remove(&id)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.keys().next().map(|id| id.0)
    }

    /// The earliest timer due at `now`, removed; call until `None`.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        let first = *self.by_deadline.keys().next()?;
        if first.0 > now {
            return None;
        }
        self.by_deadline.remove(&first)
    }

    pub fn len(&self) -> usize {
        self.by_deadline.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_deadline.is_empty()
    }
}

/// The earliest of several optional deadlines.
pub fn earliest(deadlines: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    deadlines.into_iter().flatten().min()
}

/// The poll timeout for `deadline`, rounded up to whole milliseconds so a
/// timer never wakes the loop a hair early and spins.
pub fn timeout_until(deadline: Option<Instant>, now: Instant) -> Option<Duration> {
    deadline.map(|d| {
        let left = d.saturating_duration_since(now);
        let ms = left.as_nanos().div_ceil(1_000_000);
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    })
}

/// The process's handled signals, read through a non-blocking signalfd.
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks `signals` for the process and opens a signalfd for them.
    pub fn new(signals: &[Signal]) -> io::Result<Signals> {
        let mut mask = SigSet::empty();
        for &s in signals {
            mask.add(s);
        }
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).map_err(io::Error::from)?;
        let fd =
            SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).map_err(io::Error::from)?;
        Ok(Signals { fd })
    }

    /// Every signal delivered since the last call (each kind may have been
    /// delivered more than once; SIGCHLD in particular coalesces, so the
    /// caller reaps all exited children, not one per signal).
    pub fn drain(&mut self) -> Vec<Signal> {
        let mut out = Vec::new();
        while let Ok(Some(info)) = self.fd.read_signal() {
            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                out.push(sig);
            }
        }
        out
    }
}

impl mio::event::Source for Signals {
    fn register(&mut self, registry: &Registry, token: mio::Token, interests: mio::Interest) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(&mut self, registry: &Registry, token: mio::Token, interests: mio::Interest) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).deregister(registry)
    }
}

/// One `mio::Poll` and its event buffer.
pub struct EventLoop {
    poll: Poll,
    events: Events,
}

impl EventLoop {
    pub fn new(capacity: usize) -> io::Result<EventLoop> {
        Ok(EventLoop { poll: Poll::new()?, events: Events::with_capacity(capacity) })
    }

    pub fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// Sleeps until a source is ready or `deadline` passes (`None`: no
    /// timeout at all). An interrupted wait returns no events.
    pub fn wait(&mut self, deadline: Option<Instant>) -> io::Result<&Events> {
        let timeout = timeout_until(deadline, Instant::now());
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.events.clear(),
            Err(e) => return Err(e),
        }
        Ok(&self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_deadline_then_schedule_order() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.schedule(t0 + Duration::from_millis(30), "c");
        let b = timers.schedule(t0 + Duration::from_millis(20), "b");
        timers.schedule(t0 + Duration::from_millis(10), "a1");
        timers.schedule(t0 + Duration::from_millis(10), "a2");
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(25)), Some("a1"));
        assert_eq!(timers.cancel(b), Some("b"));
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(25)), Some("a2"));
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(25)), None);
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(30)), Some("c"));
        assert!(timers.is_empty() && timers.next_deadline().is_none());
    }

    #[test]
    fn timeouts_round_up_and_none_means_forever() {
        let t0 = Instant::now();
        assert_eq!(timeout_until(None, t0), None);
        assert_eq!(timeout_until(Some(t0 + Duration::from_micros(1)), t0), Some(Duration::from_millis(1)));
        assert_eq!(timeout_until(Some(t0 + Duration::from_millis(5)), t0), Some(Duration::from_millis(5)));
        assert_eq!(timeout_until(Some(t0), t0 + Duration::from_secs(1)), Some(Duration::ZERO));
        assert_eq!(earliest([None, Some(t0 + Duration::from_secs(2)), Some(t0)]), Some(t0));
        assert_eq!(earliest([None, None]), None);
    }
}
