//! When to make durable the files replaced without a sync (a router's
//! `state` file, [`crate::sys::files::atomic::replace_at`]): never on the
//! way from an address change to the agent's notification, but once the
//! process has been quiet for [`QUIET`], and at the latest [`MAX_AGE`]
//! after the oldest file waiting, so a router that keeps flapping still
//! has its file synced every few seconds. A node-wide flip of a thousand
//! routers is synced once it is over, in batches, rather than with a
//! thousand flushes in the middle of it.
//!
//! A sync blocks the loop for as long as the disk takes (0.4 ms to 8 ms
//! measured on a shared virtual disk), so whatever arrives during one waits
//! that long: that is the price, paid in quiet time, where it is least
//! likely to meet a change. Pure: the caller keeps the clock and does the
//! syncing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Quiet time after the last write before its sync.
pub const QUIET: Duration = Duration::from_secs(1);

/// The longest a written file waits for its sync, however busy the process
/// (ext4 commits its journal every 5 s by default: no later than that).
pub const MAX_AGE: Duration = Duration::from_secs(5);

/// Files written and not synced yet, by key.
#[derive(Debug)]
pub struct SyncLater<K: Ord> {
    pending: BTreeSet<K>,
    /// When the oldest pending write happened.
    first: Option<Instant>,
    /// When the latest write happened.
    last: Option<Instant>,
}

impl<K: Ord> Default for SyncLater<K> {
    fn default() -> Self {
        SyncLater { pending: BTreeSet::new(), first: None, last: None }
    }
}

impl<K: Ord + Clone> SyncLater<K> {
    /// `key`'s file was just written (a key already waiting is not added
    /// twice: one sync covers every write before it).
    pub fn written(&mut self, key: K, now: Instant) {
        self.pending.insert(key);
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// `key`'s file is gone (its router was removed): nothing to sync.
    pub fn forget(&mut self, key: &K) {
        self.pending.remove(key);
        if self.pending.is_empty() {
            self.first = None;
            self.last = None;
        }
    }

    /// When the waiting files are due: [`QUIET`] after the last write, at
    /// the latest [`MAX_AGE`] after the first. `None` with nothing waiting.
    pub fn deadline(&self) -> Option<Instant> {
        Some((self.last? + QUIET).min(self.first? + MAX_AGE))
    }

    /// Up to `at_most` keys whose files are due at `now`, oldest key order
    /// first; the rest stay due (a caller taking a batch per loop pass
    /// serves its other sources in between).
    pub fn take_due(&mut self, now: Instant, at_most: usize) -> Vec<K> {
        if self.deadline().is_none_or(|d| d > now) {
            return Vec::new();
        }
        let mut out = Vec::new();
        while out.len() < at_most {
            let Some(key) = self.pending.pop_first() else { break };
            out.push(key);
        }
        if self.pending.is_empty() {
            self.first = None;
            self.last = None;
        }
        out
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_after_a_quiet_second_and_no_later_than_five_seconds() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut s = SyncLater::default();
        assert_eq!(s.deadline(), None, "nothing waiting: no wake-up");
        s.written("r1", ms(0));
        assert_eq!(s.deadline(), Some(ms(1000)));
        assert!(s.take_due(ms(999), 10).is_empty(), "not during a burst");
        // Writes keep coming: each pushes the sync back, up to MAX_AGE.
        for n in 1..=9 {
            s.written("r2", ms(n * 600));
        }
        assert_eq!(s.deadline(), Some(ms(5000)), "at the latest 5 s after the first write");
        assert_eq!(s.take_due(ms(5000), 10), ["r1", "r2"]);
        assert_eq!(s.deadline(), None);
        assert!(s.is_empty());
    }

    #[test]
    fn batches_leave_the_rest_due_and_forgotten_keys_are_not_synced() {
        let t0 = Instant::now();
        let mut s = SyncLater::default();
        for key in ["a", "b", "c", "d"] {
            s.written(key, t0);
        }
        s.written("b", t0);
        assert_eq!(s.len(), 4, "one sync per file, however often written");
        s.forget(&"c");
        let due = t0 + QUIET;
        assert_eq!(s.take_due(due, 2), ["a", "b"]);
        assert_eq!(s.deadline(), Some(due), "the rest still due");
        assert_eq!(s.take_due(due, 2), ["d"]);
        assert_eq!(s.deadline(), None);
        s.written("e", due);
        s.forget(&"e");
        assert_eq!(s.deadline(), None, "nothing left to wait for");
    }
}
