//! At most one SIGHUP to keepalived per 1.5 × advert_int (Neutron's rule),
//! coalescing the requests in between. Pure: time is passed in.

use std::time::{Duration, Instant};

/// At most one SIGHUP per `interval` (Neutron's rule: 1.5 × advert_int;
/// SIGHUPs closer than that can make a primary flip), coalescing requests:
/// the first request after a quiet period is sent at once, any number of
/// requests inside the window make exactly one SIGHUP when it ends.
///
/// Invariant: two sends are never closer than `interval`; a request is never
/// lost (it is sent, or pending with a deadline), except when keepalived
/// (re)starts, which reads the current file anyway ([`SighupThrottle::started`]).
#[derive(Clone, Debug)]
pub struct SighupThrottle {
    interval: Duration,
    last: Option<Instant>,
    pending: bool,
}

impl SighupThrottle {
    pub fn new(interval: Duration) -> SighupThrottle {
        SighupThrottle { interval, last: None, pending: false }
    }

    /// 1.5 × `advert_int` seconds.
    pub fn min_interval(advert_int: u32) -> Duration {
        Duration::from_millis(u64::from(advert_int) * 1500)
    }

    pub fn for_advert_int(advert_int: u32) -> SighupThrottle {
        SighupThrottle::new(SighupThrottle::min_interval(advert_int))
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A new `advert_int` takes effect for the current window too.
    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    fn window_end(&self) -> Option<Instant> {
        self.last.map(|last| last.checked_add(self.interval).unwrap_or(last))
    }

    /// A reload is wanted at `now`. `true`: send SIGHUP now; `false`: it is
    /// pending until [`SighupThrottle::deadline`].
    pub fn request(&mut self, now: Instant) -> bool {
        match self.window_end() {
            Some(end) if now < end => {
                self.pending = true;
                false
            }
            _ => {
                self.last = Some(now);
                self.pending = false;
                true
            }
        }
    }

    /// When the pending SIGHUP is due; `None` when nothing is pending.
    pub fn deadline(&self) -> Option<Instant> {
        if self.pending { self.window_end() } else { None }
    }

    /// `true`: the pending SIGHUP is due at `now`; send it (a new window
    /// starts).
    pub fn poll(&mut self, now: Instant) -> bool {
        match self.deadline() {
            Some(due) if now >= due => {
                self.last = Some(now);
                self.pending = false;
                true
            }
            _ => false,
        }
    }

    /// keepalived was (re)started at `now`: it reads the current file, so
    /// nothing is pending, and its first SIGHUP waits a whole window (which
    /// also keeps a SIGHUP from reaching it before it handles signals, when
    /// SIGHUP's default action would kill it).
    pub fn started(&mut self, now: Instant) {
        self.last = Some(now);
        self.pending = false;
    }

    /// The SIGHUP actually went out at `at`. The window must run from the
    /// real send, not from when the loop woke up: a reload of a large
    /// config takes long enough between the two to bring two SIGHUPs
    /// closer than `interval` (measured: 1.4 s instead of 1.5 s with 400
    /// routers). A later `at` only ever moves the window end later.
    pub fn sent(&mut self, at: Instant) {
        self.last = Some(self.last.map_or(at, |last| last.max(at)));
    }

    /// Nothing sent, nothing pending (keepalived adopted or gone).
    pub fn clear(&mut self) {
        self.last = None;
        self.pending = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn throttle_sends_first_at_once_and_coalesces_the_rest_into_one() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = SighupThrottle::for_advert_int(2);
        assert_eq!(t.interval(), Duration::from_secs(3));
        assert_eq!(t.deadline(), None);
        assert!(t.request(t0), "quiet: sent at once");
        assert_eq!(t.deadline(), None, "nothing pending after a send");
        assert!(!t.request(t0 + s / 2));
        assert!(!t.request(t0 + s));
        assert!(!t.request(t0 + 2 * s));
        assert_eq!(t.deadline(), Some(t0 + 3 * s), "one SIGHUP at the end of the window");
        assert!(!t.poll(t0 + 3 * s - MS));
        assert!(t.poll(t0 + 3 * s));
        assert!(!t.poll(t0 + 3 * s), "exactly one");
        assert_eq!(t.deadline(), None);
        // The deferred send opened a new window.
        assert!(!t.request(t0 + 4 * s));
        assert_eq!(t.deadline(), Some(t0 + 6 * s));
        // A late poll sends once, and the window starts from the send.
        assert!(t.poll(t0 + 7 * s));
        assert!(!t.request(t0 + 9 * s));
        assert_eq!(t.deadline(), Some(t0 + 10 * s));
        assert!(t.poll(t0 + 10 * s));
        // Quiet again: at once.
        assert!(t.request(t0 + 20 * s));
    }

    #[test]
    fn throttle_after_start_and_after_clear() {
        let t0 = Instant::now();
        let mut t = SighupThrottle::for_advert_int(1);
        t.started(t0);
        assert!(!t.request(t0 + MS), "a fresh keepalived gets a whole window first");
        assert_eq!(t.deadline(), Some(t0 + 1500 * MS));
        t.started(t0 + 100 * MS);
        assert_eq!(t.deadline(), None, "a respawned keepalived read the new file");
        t.clear();
        assert!(t.request(t0 + 200 * MS), "adopted: nothing known, sent at once");
        t.set_interval(Duration::from_secs(6));
        assert!(!t.request(t0 + Duration::from_secs(5)));
        assert_eq!(t.deadline(), Some(t0 + 200 * MS + Duration::from_secs(6)));
    }

    #[test]
    fn the_window_runs_from_the_real_send() {
        let t0 = Instant::now();
        let mut t = SighupThrottle::for_advert_int(1);
        // The loop woke at t0, but the reload took 300 ms before the send.
        assert!(t.request(t0));
        t.sent(t0 + 300 * MS);
        assert!(!t.request(t0 + 1600 * MS), "1.5 s after the wake-up is only 1.3 s after the send");
        assert_eq!(t.deadline(), Some(t0 + 1800 * MS));
        // An earlier stamp never moves the window back.
        t.sent(t0);
        assert_eq!(t.deadline(), Some(t0 + 1800 * MS));
    }
}
