//! The latest-wins delivery schedule of agent notifications: which router
//! is sent next, which waits, which backs off. Free of I/O and clocks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::{BACKOFF_INITIAL, BACKOFF_MAX};
use crate::core::backoff::Backoff;
use crate::core::ident::RouterId;
use crate::core::state::State;

/// Delay before the next attempt after `failures` consecutive failures
/// (`failures >= 1`): 50 ms doubling per failure, capped at 5 s. Never
/// overflows, whatever the count.
pub fn backoff_delay(failures: u32) -> Duration {
    Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX).after(failures.max(1))
}

/// Where a router with undelivered state stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// In `Queue::waiting`, to be started when a slot frees up.
    Waiting,
    /// A request carrying this state is in flight.
    InFlight(State),
    /// In `Queue::retries` under this key.
    RetryAt((Instant, u64)),
}

#[derive(Debug)]
struct Entry {
    /// The latest state not yet handed out for sending.
    pending: Option<State>,
    phase: Phase,
    /// Consecutive failures, for the backoff; reset by a success.
    failures: u32,
}

/// The latest-wins scheduling state machine, free of I/O and clocks.
///
/// Invariants:
/// - a router has an entry iff it has something undelivered (a pending state
///   or a request in flight); a delivered, idle router is forgotten;
/// - `Waiting` ⇔ the router is in `waiting` exactly once, and has a pending
///   state; `RetryAt(k)` ⇔ `retries[k]` is the router, with a pending state;
/// - `in_flight` counts `InFlight` entries and never exceeds `max_in_flight`,
///   so one router is never sent twice concurrently.
#[derive(Debug)]
pub struct Queue {
    max_in_flight: usize,
    routers: HashMap<RouterId, Entry>,
    /// Routers ready to start, in the order they became ready.
    waiting: VecDeque<RouterId>,
    /// Routers backing off; the sequence number keeps equal instants apart.
    retries: BTreeMap<(Instant, u64), RouterId>,
    in_flight: usize,
    next_seq: u64,
}

impl Queue {
    /// `max_in_flight` of 0 is taken as 1: a queue that can never send would
    /// hold states forever.
    pub fn new(max_in_flight: usize) -> Queue {
        Queue {
            max_in_flight: max_in_flight.max(1),
            routers: HashMap::new(),
            waiting: VecDeque::new(),
            retries: BTreeMap::new(),
            in_flight: 0,
            next_seq: 0,
        }
    }

    /// Records `state` as the router's latest. A waiting or backing-off
    /// router keeps its place and its retry time (a flapping router must not
    /// dodge the backoff); an in-flight one gets it after the request ends.
    pub fn submit(&mut self, router_id: &RouterId, state: State) {
        if let Some(entry) = self.routers.get_mut(router_id) {
            entry.pending = Some(state);
            return;
        }
        self.routers.insert(router_id.clone(), Entry { pending: Some(state), phase: Phase::Waiting, failures: 0 });
        self.waiting.push_back(router_id.clone());
    }

    /// Moves routers whose retry time has come to the back of the waiting
    /// line, earliest first.
    pub fn promote_due(&mut self, now: Instant) {
        while let Some(entry) = self.retries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let router_id = entry.remove();
            if let Some(e) = self.routers.get_mut(&router_id) {
                e.phase = Phase::Waiting;
                self.waiting.push_back(router_id);
            }
        }
    }

    /// Makes every backing-off router ready now (shutdown flush: no point
    /// waiting out a 5 s backoff when the process has 2 s left).
    pub fn promote_all(&mut self) {
        while let Some((_, router_id)) = self.retries.pop_first() {
            if let Some(e) = self.routers.get_mut(&router_id) {
                e.phase = Phase::Waiting;
                self.waiting.push_back(router_id);
            }
        }
    }

    /// Hands out the next (router, state) to send, if a slot is free.
    pub fn start_next(&mut self) -> Option<(RouterId, State)> {
        while self.in_flight < self.max_in_flight {
            let router_id = self.waiting.pop_front()?;
            let Some(entry) = self.routers.get_mut(&router_id) else { continue };
            let Some(state) = entry.pending.take() else {
                // Unreachable by the invariants; forget rather than spin.
                self.routers.remove(&router_id);
                continue;
            };
            entry.phase = Phase::InFlight(state);
            self.in_flight += 1;
            return Some((router_id, state));
        }
        None
    }

    /// Ends the router's in-flight request. Returns the backoff when it
    /// failed (the latest state is then retried after it), `None` when it
    /// was delivered or the router was not in flight.
    pub fn finish(&mut self, router_id: &RouterId, delivered: bool, now: Instant) -> Option<Duration> {
        let entry = self.routers.get_mut(router_id)?;
        let Phase::InFlight(sent) = &entry.phase else { return None };
        let sent = *sent;
        self.in_flight -= 1;
        if delivered {
            entry.failures = 0;
            if entry.pending == Some(sent) {
                entry.pending = None;
            }
            if entry.pending.is_some() {
                entry.phase = Phase::Waiting;
                self.waiting.push_back(router_id.clone());
            } else {
                self.routers.remove(router_id);
            }
            return None;
        }
        entry.failures = entry.failures.saturating_add(1);
        let delay = backoff_delay(entry.failures);
        entry.pending.get_or_insert(sent);
        let key = (now + delay, self.next_seq);
        self.next_seq += 1;
        entry.phase = Phase::RetryAt(key);
        self.retries.insert(key, router_id.clone());
        Some(delay)
    }

    /// The earliest retry time, if any router is backing off.
    pub fn next_retry(&self) -> Option<Instant> {
        self.retries.first_key_value().map(|(k, _)| k.0)
    }

    /// Routers with something undelivered.
    pub fn len(&self) -> usize {
        self.routers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routers.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The state that will be sent next for the router, if any.
    pub fn pending_state(&self, router_id: &RouterId) -> Option<State> {
        self.routers.get(router_id)?.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn id(text: &str) -> RouterId {
        RouterId::parse(text).unwrap()
    }

    #[test]
    fn backoff_doubles_from_50ms_to_a_5s_cap() {
        let delays: Vec<Duration> = (1..=9).map(backoff_delay).collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000].map(|ms| ms * MS));
        assert_eq!(backoff_delay(0), BACKOFF_INITIAL);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn queue_keeps_only_the_latest_state_per_router() {
        let mut q = Queue::new(4);
        q.submit(&id("r1"), State::Primary);
        q.submit(&id("r1"), State::Backup);
        q.submit(&id("r1"), State::Fault);
        assert_eq!(q.len(), 1);
        assert_eq!(q.start_next(), Some((id("r1"), State::Fault)));
        assert_eq!(q.start_next(), None);
    }

    #[test]
    fn queue_serves_routers_in_submission_order_within_the_limit() {
        let t0 = Instant::now();
        let mut q = Queue::new(2);
        for r in ["r1", "r2", "r3"] {
            q.submit(&id(r), State::Primary);
        }
        q.submit(&id("r1"), State::Backup); // keeps r1's place
        assert_eq!(q.start_next(), Some((id("r1"), State::Backup)));
        assert_eq!(q.start_next(), Some((id("r2"), State::Primary)));
        assert_eq!(q.start_next(), None, "limit of 2 in flight");
        assert_eq!(q.in_flight(), 2);
        assert_eq!(q.finish(&id("r2"), true, t0), None);
        assert_eq!(q.start_next(), Some((id("r3"), State::Primary)));
    }

    #[test]
    fn queue_never_sends_one_router_twice_at_once() {
        let t0 = Instant::now();
        let mut q = Queue::new(8);
        q.submit(&id("r1"), State::Primary);
        assert_eq!(q.start_next(), Some((id("r1"), State::Primary)));
        q.submit(&id("r1"), State::Backup);
        assert_eq!(q.start_next(), None, "r1 is in flight");
        assert_eq!(q.pending_state(&id("r1")), Some(State::Backup));
        // Whatever the outcome, the newer state goes next.
        assert_eq!(q.finish(&id("r1"), true, t0), None);
        assert_eq!(q.start_next(), Some((id("r1"), State::Backup)));
        assert_eq!(q.finish(&id("r1"), true, t0), None);
        assert!(q.is_empty());
    }

    #[test]
    fn queue_drops_a_pending_state_equal_to_the_one_just_delivered() {
        let t0 = Instant::now();
        let mut q = Queue::new(1);
        q.submit(&id("r1"), State::Primary);
        assert!(q.start_next().is_some());
        q.submit(&id("r1"), State::Backup);
        q.submit(&id("r1"), State::Primary);
        assert_eq!(q.finish(&id("r1"), true, t0), None);
        assert_eq!(q.start_next(), None);
        assert!(q.is_empty(), "the agent already has primary");
    }

    #[test]
    fn queue_resends_a_same_state_submitted_during_a_failed_attempt() {
        let t0 = Instant::now();
        let mut q = Queue::new(1);
        q.submit(&id("r1"), State::Primary);
        assert!(q.start_next().is_some());
        q.submit(&id("r1"), State::Primary);
        assert_eq!(q.finish(&id("r1"), false, t0), Some(50 * MS));
        q.promote_due(t0 + 50 * MS);
        assert_eq!(q.start_next(), Some((id("r1"), State::Primary)));
    }

    #[test]
    fn queue_retries_the_latest_state_with_growing_backoff() {
        let t0 = Instant::now();
        let mut q = Queue::new(4);
        q.submit(&id("r1"), State::Primary);
        assert!(q.start_next().is_some());
        assert_eq!(q.finish(&id("r1"), false, t0), Some(50 * MS));
        assert_eq!(q.next_retry(), Some(t0 + 50 * MS));
        assert_eq!(q.pending_state(&id("r1")), Some(State::Primary), "the failed state is kept");

        // Submits while backing off replace the state but not the retry time.
        q.submit(&id("r1"), State::Backup);
        q.submit(&id("r1"), State::Fault);
        assert_eq!(q.start_next(), None);
        q.promote_due(t0 + 49 * MS);
        assert_eq!(q.start_next(), None, "not due yet");
        q.promote_due(t0 + 50 * MS);
        assert_eq!(q.next_retry(), None);
        assert_eq!(q.start_next(), Some((id("r1"), State::Fault)));

        let t1 = t0 + 60 * MS;
        assert_eq!(q.finish(&id("r1"), false, t1), Some(100 * MS));
        q.promote_due(t1 + 100 * MS);
        assert!(q.start_next().is_some());
        let t2 = t1 + 200 * MS;
        assert_eq!(q.finish(&id("r1"), false, t2), Some(200 * MS));
        q.promote_due(t2 + 200 * MS);
        assert!(q.start_next().is_some());
        assert_eq!(q.finish(&id("r1"), true, t2 + 300 * MS), None);
        assert!(q.is_empty());

        // A success resets the backoff.
        q.submit(&id("r1"), State::Backup);
        assert!(q.start_next().is_some());
        assert_eq!(q.finish(&id("r1"), false, t2), Some(50 * MS));
    }

    #[test]
    fn queue_failed_attempt_keeps_a_newer_state_over_the_failed_one() {
        let t0 = Instant::now();
        let mut q = Queue::new(1);
        q.submit(&id("r1"), State::Primary);
        assert!(q.start_next().is_some());
        q.submit(&id("r1"), State::Backup);
        assert!(q.finish(&id("r1"), false, t0).is_some());
        q.promote_due(t0 + BACKOFF_MAX);
        assert_eq!(q.start_next(), Some((id("r1"), State::Backup)));
    }

    #[test]
    fn queue_backoff_of_one_router_does_not_hold_others() {
        let t0 = Instant::now();
        let mut q = Queue::new(1);
        q.submit(&id("r1"), State::Primary);
        q.submit(&id("r2"), State::Primary);
        assert_eq!(q.start_next(), Some((id("r1"), State::Primary)));
        assert!(q.finish(&id("r1"), false, t0).is_some());
        assert_eq!(q.start_next(), Some((id("r2"), State::Primary)));
        assert_eq!(q.finish(&id("r2"), true, t0), None);
        assert_eq!(q.len(), 1, "r1 still owed");
    }

    #[test]
    fn queue_due_retries_start_in_retry_order_after_those_already_waiting() {
        let t0 = Instant::now();
        let mut q = Queue::new(1);
        q.submit(&id("a"), State::Primary);
        assert!(q.start_next().is_some());
        assert!(q.finish(&id("a"), false, t0).is_some()); // retry at t0+50ms
        q.submit(&id("b"), State::Primary);
        assert!(q.start_next().is_some());
        assert!(q.finish(&id("b"), false, t0 + MS).is_some()); // retry at t0+51ms
        q.submit(&id("c"), State::Primary);
        q.promote_due(t0 + BACKOFF_MAX);
        let order: Vec<String> = std::iter::from_fn(|| {
            let (r, _) = q.start_next()?;
            q.finish(&r, true, t0);
            Some(r.to_string())
        })
        .collect();
        assert_eq!(order, ["c", "a", "b"]);
    }

    #[test]
    fn queue_promote_all_skips_the_backoff() {
        let t0 = Instant::now();
        let mut q = Queue::new(2);
        q.submit(&id("r1"), State::Primary);
        assert!(q.start_next().is_some());
        assert!(q.finish(&id("r1"), false, t0).is_some());
        q.promote_all();
        assert_eq!(q.next_retry(), None);
        assert_eq!(q.start_next(), Some((id("r1"), State::Primary)));
    }

    #[test]
    fn queue_ignores_finish_for_a_router_not_in_flight() {
        let t0 = Instant::now();
        let mut q = Queue::new(1);
        assert_eq!(q.finish(&id("nobody"), false, t0), None);
        q.submit(&id("r1"), State::Primary);
        assert_eq!(q.finish(&id("r1"), false, t0), None, "waiting, not in flight");
        assert_eq!(q.in_flight(), 0);
        assert_eq!(q.start_next(), Some((id("r1"), State::Primary)));
    }
}
