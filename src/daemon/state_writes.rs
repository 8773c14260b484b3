//! Writing routers' state files without holding up the loop: queued latest
//! wins, written after the pass's notifications have gone out, a few per
//! pass, never synced on the spot (synced later, in quiet time:
//! [`crate::core::sync_later`]), and a failed write (full or read-only
//! disk) retried with backoff until it succeeds, shown in `status` and
//! `/metrics` meanwhile.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Daemon;
use super::router::ErrorSource;
use crate::core::backoff::Backoff;
use crate::core::ident::RouterId;
use crate::core::state::State;
use crate::core::sync_later::SyncLater;
use crate::sys::event_loop::{TimerId, Timers};
use crate::sys::files::confs::HaConfs;

/// State files written per loop pass; the rest wait for the next pass (with
/// a zero poll timeout), so readiness (agent answers, control requests,
/// netlink) is served in between.
pub(super) const STATE_WRITES_PER_PASS: usize = 32;

/// Time a loop pass may spend syncing state files once they are due (at
/// least one file): each sync is a disk flush the loop waits for, 0.4 ms
/// to 8 ms here, so a thousand are spread over many passes with every
/// source served in between.
pub(super) const STATE_SYNC_BUDGET: Duration = Duration::from_millis(2);

/// A file that could not be written (full or read-only disk) is tried again
/// after this, doubling per failure in a row up to [`WRITE_RETRY_MAX`]: soon
/// enough that the file says the truth shortly after space returns, rarely
/// enough that a thousand routers on a full disk cost nothing.
pub(super) const WRITE_RETRY_FIRST: Duration = Duration::from_millis(100);

pub(super) const WRITE_RETRY_MAX: Duration = Duration::from_secs(5);

/// The delay before retry number `failures` (1 = after the first failure).
pub(super) fn write_retry_delay(failures: u32) -> Duration {
    Backoff::new(WRITE_RETRY_FIRST, WRITE_RETRY_MAX).after(failures.max(1))
}

/// Raw states waiting to be written to their state files, oldest first;
/// a router changing again before its write only changes what is written.
///
/// A write with its fdatasync costs 0.4 ms to 8 ms on a shared disk: done
/// inline, a node-wide flip of 1000 routers held every agent notification
/// behind seconds of flushes, and even one delayed the next change. So the
/// write (temp file, rename: microseconds) comes after the pass's
/// notifications and events have gone out, in batches between I/O events
/// when there are many, and its sync waits for quiet time ([`SyncLater`]).
///
/// A write that fails (full or read-only disk) is not dropped: the router
/// stays pending and is tried again after [`write_retry_delay`], with
/// whatever state is latest by then, until it is written or the router is
/// forgotten. Invariant: a router is either in `order` (to write now) or
/// has a retry timer, never both, and only while it is in `pending`.
#[derive(Default)]
pub(super) struct StateWrites {
    pub(super) order: std::collections::VecDeque<RouterId>,
    pub(super) pending: HashMap<RouterId, PendingState>,
    pub(super) retries: Timers<RouterId>,
    /// Written, not synced yet.
    pub(super) unsynced: SyncLater<RouterId>,
}

pub(super) struct PendingState {
    pub(super) state: State,
    /// Failed attempts in a row.
    pub(super) failures: u32,
    /// Set while waiting for a retry.
    pub(super) retry: Option<TimerId>,
}

/// The end of one attempt to write a state file.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum StateWritten {
    Written { id: RouterId, state: State, after_failures: u32 },
    Failed { id: RouterId, state: State, error: String, failures: u32, retry_in: Duration },
}

impl StateWrites {
    pub(super) fn queue(&mut self, id: &RouterId, state: State) {
        match self.pending.get_mut(id) {
            // Latest wins; a router waiting for a retry keeps its backoff.
            Some(pending) => pending.state = state,
            None => {
                self.pending.insert(id.to_owned(), PendingState { state, failures: 0, retry: None });
                self.order.push_back(id.to_owned());
            }
        }
    }

    pub(super) fn forget(&mut self, id: &RouterId) {
        if let Some(timer) = self.pending.remove(id).and_then(|p| p.retry) {
            self.retries.cancel(timer);
        }
        self.order.retain(|i| i != id);
        self.unsynced.forget(id);
    }

    /// `now` when writes are due, else the next retry or sync.
    pub(super) fn next_deadline(&self, now: Instant) -> Option<Instant> {
        if !self.order.is_empty() {
            return Some(now);
        }
        crate::sys::event_loop::earliest([self.retries.next_deadline(), self.unsynced.deadline()])
    }

    /// Syncs the state files whose sync is due, for about `budget` (at
    /// least one). A file gone since (its router removed) needs none; any
    /// other failure is logged: the file is in place, only its durability
    /// is in doubt.
    pub(super) fn sync_due(&mut self, confs: &HaConfs, budget: Duration, now: Instant) {
        let began = Instant::now();
        loop {
            let Some(id) = self.unsynced.take_due(now, 1).pop() else { return };
            if let Err(e) = confs.sync_state(&id) {
                log::warn!("router {id}: {e}");
            }
            if began.elapsed() >= budget {
                return;
            }
        }
    }

    /// Every file written and not synced yet is synced now (shutdown).
    pub(super) fn sync_all(&mut self, confs: &HaConfs) {
        let far = Instant::now() + crate::core::sync_later::MAX_AGE;
        self.sync_due(confs, Duration::MAX, far);
    }

    /// Every router waiting for a retry is due now (shutdown).
    pub(super) fn retry_now(&mut self) {
        while let Some(at) = self.retries.next_deadline() {
            self.promote_due(at);
        }
    }

    pub(super) fn promote_due(&mut self, now: Instant) {
        while let Some(id) = self.retries.pop_due(now) {
            if let Some(pending) = self.pending.get_mut(&id) {
                pending.retry = None;
                self.order.push_back(id);
            }
        }
    }

    /// Writes up to `at_most` due state files, oldest first.
    pub(super) fn flush(&mut self, confs: &HaConfs, at_most: usize, now: Instant) -> Vec<StateWritten> {
        self.promote_due(now);
        let mut out = Vec::new();
        for _ in 0..at_most {
            let Some(id) = self.order.pop_front() else { break };
            let Some(pending) = self.pending.get_mut(&id) else { continue };
            let state = pending.state;
            match confs.write_state(&id, state) {
                Ok(()) => {
                    let after_failures = pending.failures;
                    self.pending.remove(&id);
                    self.unsynced.written(id.clone(), now);
                    out.push(StateWritten::Written { id, state, after_failures });
                }
                Err(e) => {
                    pending.failures += 1;
                    let failures = pending.failures;
                    let retry_in = write_retry_delay(failures);
                    pending.retry = Some(self.retries.schedule(now + retry_in, id.clone()));
                    out.push(StateWritten::Failed { id, state, error: e.to_string(), failures, retry_in });
                }
            }
        }
        out
    }
}

impl Daemon {
    /// Settles state-file writes: errors shown (and logged once) while a
    /// router's file cannot be written, cleared once it is.
    pub(super) fn state_written(&mut self, outcomes: Vec<StateWritten>) {
        for outcome in outcomes {
            match outcome {
                StateWritten::Written { id, state, after_failures } => {
                    if after_failures > 0 {
                        log::info!("router {id}: state file written ({state}) after {after_failures} failed attempts");
                    }
                    if let Some(router) = self.routers.get_mut(&id) {
                        router.rt.state_write_pending = false;
                        router.rt.clear_error(ErrorSource::StateFile);
                    }
                }
                StateWritten::Failed { id, state, error, failures, retry_in } => {
                    let Some(router) = self.routers.get_mut(&id) else { continue };
                    if router.rt.error(ErrorSource::StateFile).is_none_or(|e| !e.starts_with(&error)) {
                        log::error!(
                            "router {id}: {error}; state {state} not written, retrying in {} ms",
                            retry_in.as_millis()
                        );
                    } else {
                        log::debug!(
                            "router {id}: {error} (attempt {failures}); retrying in {} ms",
                            retry_in.as_millis()
                        );
                    }
                    router.rt.write_failures += 1;
                    router.rt.state_write_pending = true;
                    router
                        .rt
                        .set_error(ErrorSource::StateFile, format!("{error}; state {state} not written yet, retrying"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::layout::Layout;
    use crate::core::sync_later::QUIET;
    use crate::test_support::TempDir;

    fn id(text: &str) -> RouterId {
        RouterId::parse(text).unwrap()
    }

    fn state(dir: &TempDir, id: &str) -> Option<String> {
        std::fs::read_to_string(dir.join(id).join("state")).ok()
    }

    #[test]
    fn state_writes_are_latest_wins_in_order_and_bounded_per_pass() {
        let dir = TempDir::new("statewrites");
        for id in ["r1", "r2", "r3"] {
            std::fs::create_dir(dir.join(id)).unwrap();
        }
        let layout = HaConfs::new(Layout::new(&dir));
        let mut writes = StateWrites::default();
        writes.queue(&id("r1"), State::Primary);
        writes.queue(&id("r2"), State::Fault);
        writes.queue(&id("r1"), State::Backup);
        writes.queue(&id("r3"), State::Primary);
        writes.forget(&id("r3"));
        let now = Instant::now();
        assert_eq!(writes.next_deadline(now), Some(now));
        writes.flush(&layout, 1, now);
        assert_eq!(state(&dir, "r1").as_deref(), Some("backup"), "the latest state, in first-queued order");
        assert_eq!(state(&dir, "r2"), None, "one write per pass here");
        assert!(!writes.pending.is_empty());
        writes.flush(&layout, usize::MAX, now);
        assert_eq!(state(&dir, "r2").as_deref(), Some("fault"));
        assert_eq!(state(&dir, "r3"), None, "a forgotten router is not written");
        assert!(writes.pending.is_empty());
        // Written, not synced: the sync waits for a quiet second, then
        // nothing is left to wake up for.
        assert_eq!(writes.next_deadline(now), Some(now + QUIET));
        writes.sync_due(&layout, Duration::MAX, now);
        assert_eq!(writes.unsynced.len(), 2, "not synced before it is due");
        writes.sync_due(&layout, Duration::MAX, now + QUIET);
        assert!(writes.unsynced.is_empty());
        assert_eq!(writes.next_deadline(now + QUIET), None);
    }

    #[test]
    fn a_failed_state_write_is_retried_with_backoff_and_the_latest_state_wins() {
        let dir = TempDir::new("statewrites-retry");
        let layout = HaConfs::new(Layout::new(&dir));
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut writes = StateWrites::default();
        // r1's directory is missing: the write fails (ENOENT), as it would
        // on a full or read-only disk.
        writes.queue(&id("r1"), State::Primary);
        let out = writes.flush(&layout, usize::MAX, t0);
        let [StateWritten::Failed { id: failed, state: State::Primary, error, failures: 1, retry_in }] = &out[..]
        else {
            panic!("{out:?}")
        };
        assert_eq!((failed.as_str(), *retry_in), ("r1", Duration::from_millis(100)));
        assert!(error.contains("r1/state") && error.contains("No such file or directory"), "{error}");
        assert_eq!(writes.next_deadline(t0), Some(ms(100)), "waits for the retry: no busy loop");
        assert!(!writes.pending.is_empty(), "not forgotten");
        // Changes meanwhile: only the latest is kept, the backoff too.
        writes.queue(&id("r1"), State::Backup);
        writes.queue(&id("r1"), State::Fault);
        assert_eq!(writes.next_deadline(ms(10)), Some(ms(100)));
        assert!(writes.flush(&layout, usize::MAX, ms(99)).is_empty(), "not due yet");
        let out = writes.flush(&layout, usize::MAX, ms(100));
        assert!(matches!(&out[..], [StateWritten::Failed { failures: 2, state: State::Fault, .. }]), "{out:?}");
        assert_eq!(writes.next_deadline(ms(100)), Some(ms(300)), "the delay doubles");
        // Space is back: the next retry writes the latest state.
        std::fs::create_dir(dir.join("r1")).unwrap();
        let out = writes.flush(&layout, usize::MAX, ms(300));
        assert_eq!(out, [StateWritten::Written { id: id("r1"), state: State::Fault, after_failures: 2 }], "{out:?}");
        assert_eq!(state(&dir, "r1").as_deref(), Some("fault"));
        assert!(writes.pending.is_empty());
        assert_eq!(writes.next_deadline(ms(300)), Some(ms(300) + QUIET), "only its sync is left");
        writes.sync_due(&layout, Duration::MAX, ms(300) + QUIET);
        assert!(writes.next_deadline(ms(300)).is_none());
        // A failing router that is forgotten leaves no retry behind.
        writes.queue(&id("r2"), State::Primary);
        writes.flush(&layout, usize::MAX, ms(400));
        writes.forget(&id("r2"));
        assert!(writes.pending.is_empty() && writes.next_deadline(ms(400)).is_none());
        // Shutdown: every waiting router is tried once more at once.
        writes.queue(&id("r3"), State::Backup);
        writes.flush(&layout, usize::MAX, ms(500));
        std::fs::create_dir(dir.join("r3")).unwrap();
        writes.retry_now();
        assert_eq!(writes.next_deadline(ms(500)), Some(ms(500)));
        writes.flush(&layout, usize::MAX, ms(500));
        assert_eq!(state(&dir, "r3").as_deref(), Some("backup"));
    }

    #[test]
    fn write_retries_back_off_to_a_cap() {
        let delays: Vec<u64> = (1..=8).map(|n| write_retry_delay(n).as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(write_retry_delay(u32::MAX), WRITE_RETRY_MAX);
    }
}
