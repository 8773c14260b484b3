//! The pieces every harouterd event loop is made of: one `mio::Poll`, the
//! tokens of every source registered with it ([`Sources`]), a signalfd for
//! the signals the process handles, and one ordered structure of timers
//! whose earliest deadline is the poll timeout.
//!
//! Invariants:
//! - One token scheme: every source, the loop's own and those of the shared
//!   components (control connections, agent notifications, children's
//!   output), gets its token from [`Sources`], which says who owns it. A
//!   token is not given out again while it is in use, nor until the counter
//!   has gone once round all of `usize` (2^32 on a 32-bit target), so an
//!   event still queued for a source closed in the same pass cannot reach a
//!   new one.
//! - With no timer pending, [`EventLoop::wait`] sleeps with no timeout: an
//!   idle process makes no wake-ups at all.
//! - Time is always passed in (`now: Instant`), never read inside the
//!   timer logic, so it is tested with a clock the test drives.
//! - Handled signals are blocked and read from the signalfd; children get
//!   an empty mask and default dispositions back ([`crate::sys::spawn`]).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Who a token belongs to: one of the loop's own kinds of sources (`K`), or
/// one of the components that register their own connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner<K> {
    Loop(K),
    /// The control socket: its listener and its connections.
    Control,
    /// The TCP metrics listener (`metrics_listen`) and its connections.
    Metrics,
    /// A connection to the agent socket ([`crate::notify::Notifier`]).
    Notifier,
    /// A child's output pipe ([`crate::sys::child_output::ChildOutputs`]).
    ChildOutput,
}

/// The poll's registry and the owner of every token registered with it.
#[derive(Debug)]
pub struct Sources<K> {
    registry: Registry,
    /// The next token to try.
    next: usize,
    owners: HashMap<Token, Owner<K>>,
}

impl<K> Sources<K> {
    pub fn new(registry: Registry) -> Sources<K> {
        Sources { registry, next: 0, owners: HashMap::new() }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A fresh token for `owner`, not registered with anything yet.
    pub fn add(&mut self, owner: Owner<K>) -> Token {
        loop {
            let token = Token(self.next);
            self.next = self.next.wrapping_add(1);
            if let Entry::Vacant(free) = self.owners.entry(token) {
                free.insert(owner);
                return token;
            }
        }
    }

    /// Registers `source` under a fresh token for `owner`.
    pub fn register<S>(&mut self, source: &mut S, owner: Owner<K>, interest: Interest) -> io::Result<Token>
    where
        S: mio::event::Source + ?Sized,
    {
        let token = self.add(owner);
        match self.registry.register(source, token, interest) {
            Ok(()) => Ok(token),
            Err(e) => {
                self.owners.remove(&token);
                Err(e)
            }
        }
    }

    pub fn reregister<S>(&self, source: &mut S, token: Token, interest: Interest) -> io::Result<()>
    where
        S: mio::event::Source + ?Sized,
    {
        self.registry.reregister(source, token, interest)
    }

    /// Deregisters `source` (failure is harmless: closing the descriptor
    /// removes it from epoll) and forgets its token.
    pub fn deregister<S>(&mut self, source: &mut S, token: Token)
    where
        S: mio::event::Source + ?Sized,
    {
        let _ = self.registry.deregister(source);
        self.owners.remove(&token);
    }

    /// Forgets `token` (its source was closed, or never registered).
    pub fn remove(&mut self, token: Token) -> Option<Owner<K>> {
        self.owners.remove(&token)
    }

    /// Who `token` belongs to; `None` for a token given up since.
    pub fn owner(&self, token: Token) -> Option<&Owner<K>> {
        self.owners.get(&token)
    }

    /// Tokens in use.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }
}

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

    /// [`EventLoop::wait`], for the loops' own use: the tokens that are
    /// ready (copied out, so the loop may borrow anything while it serves
    /// them), or `None` when polling itself failed (logged; the process
    /// cannot go on).
    pub fn ready_tokens(&mut self, deadline: Option<Instant>) -> Option<Vec<Token>> {
        match self.wait(deadline) {
            Ok(events) => Some(events.iter().map(|e| e.token()).collect()),
            Err(e) => {
                log::error!("poll failed: {e}");
                None
            }
        }
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
    fn tokens_are_never_given_twice_while_in_use_and_wrap_round() {
        let poll = Poll::new().unwrap();
        let mut sources: Sources<&str> = Sources::new(poll.registry().try_clone().unwrap());
        let a = sources.add(Owner::Loop("a"));
        let b = sources.add(Owner::Notifier);
        assert_ne!(a, b);
        assert_eq!((sources.owner(a), sources.owner(b)), (Some(&Owner::Loop("a")), Some(&Owner::Notifier)));
        assert_eq!(sources.remove(a), Some(Owner::Loop("a")));
        assert_eq!(sources.owner(a), None, "a token given up belongs to nobody");
        let c = sources.add(Owner::Control);
        assert!(c != a && c != b, "not reused at once");
        // Near the end of usize the counter wraps, skipping tokens in use.
        sources.next = usize::MAX;
        let last = sources.add(Owner::ChildOutput);
        assert_eq!(last, Token(usize::MAX));
        let wrapped = sources.add(Owner::ChildOutput);
        assert_eq!(wrapped, Token(0), "token 0 was given up");
        assert_eq!(sources.add(Owner::ChildOutput), Token(3), "1 (b) and 2 (c) are in use");
        assert_eq!(sources.len(), 5);
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
