//! Doubling delays: every retry in harouterd (agent notifications, failed
//! file writes, namespaces that cannot be opened, keepalived respawns,
//! rtnetlink re-dumps) waits longer after each failure in a row, so a
//! fault that lasts costs next to nothing, and never longer than a cap, so
//! its end is noticed soon. Pure: the caller keeps the clock.

use std::time::Duration;

/// Delays that start at `first` and double per failure in a row, up to
/// `max`. Invariant: [`Backoff::after`] never overflows and never exceeds
/// `max`, whatever the count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max }
    }

    /// The delay after `failures` failures in a row: none for 0 (the first
    /// attempt is not delayed), then `first`, `2 × first`, ... at most
    /// `max`.
    pub fn after(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let doublings = (failures - 1).min(31);
        self.first.checked_mul(1u32 << doublings).map_or(self.max, |d| d.min(self.max))
    }
}

/// A [`Backoff`] with its count of failures in a row: for a retry that is
/// scheduled by the caller each time [`Retry::failed`] says how long to
/// wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    backoff: Backoff,
    failures: u32,
}

impl Retry {
    pub const fn new(backoff: Backoff) -> Retry {
        Retry { backoff, failures: 0 }
    }

    /// One more failure: how long to wait before the next attempt (`first`
    /// after the first failure).
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.backoff.after(self.failures)
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn backoff(&self) -> Backoff {
        self.backoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_from_first_to_the_cap_and_never_overflows() {
        let b = Backoff::new(100 * MS, Duration::from_secs(5));
        let delays: Vec<Duration> = (0..10).map(|n| b.after(n)).collect();
        assert_eq!(delays, [0, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000].map(|ms| ms * MS));
        assert_eq!(b.after(32), b.max);
        assert_eq!(b.after(u32::MAX), b.max);
        let huge = Backoff::new(Duration::MAX / 2, Duration::MAX);
        assert_eq!(huge.after(3), Duration::MAX);
    }

    #[test]
    fn a_retry_counts_its_failures() {
        let mut r = Retry::new(Backoff::new(50 * MS, 150 * MS));
        assert_eq!(r.failures(), 0);
        assert_eq!([r.failed(), r.failed(), r.failed()], [50 * MS, 100 * MS, 150 * MS]);
        assert_eq!(r.failures(), 3);
        assert_eq!(Retry::new(r.backoff()).failed(), 50 * MS, "a new retry starts over");
    }
}
