//! When to respawn a keepalived that keeps dying: at once the first time,
//! then after doubling delays while it keeps dying quickly. Pure.

use std::time::Duration;

use crate::core::backoff::Backoff as Doubling;

/// When to respawn a keepalived that keeps dying: the first death is
/// respawned at once (a one-off crash costs a few milliseconds of VRRP
/// silence, not seconds); each further *quick* death in a row doubles the
/// delay, from `first` up to `max`, so a keepalived that cannot start (bad
/// config, interface missing) does not spin. A death after `stable_after`
/// of running starts a fresh streak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RespawnPolicy {
    /// Delay before the second respawn of a streak (the first is immediate).
    pub first: Duration,
    /// The longest delay.
    pub max: Duration,
    /// A keepalived that ran at least this long before dying was stable.
    pub stable_after: Duration,
}

impl Default for RespawnPolicy {
    /// 0, then 100 ms doubling to 30 s; 10 s of running counts as stable.
    fn default() -> RespawnPolicy {
        RespawnPolicy {
            first: Duration::from_millis(100),
            max: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
        }
    }
}

impl RespawnPolicy {
    /// The delay before respawn number `streak` of a streak of quick deaths
    /// (0: the first, immediate): `first × 2^(streak-1)`, at most `max`.
    pub fn delay(&self, streak: u32) -> Duration {
        Doubling::new(self.first, self.max).after(streak)
    }
}

/// The backoff state of one router: how many quick deaths in a row.
#[derive(Clone, Debug)]
pub struct RespawnBackoff {
    policy: RespawnPolicy,
    streak: u32,
    current: Duration,
}

impl RespawnBackoff {
    pub fn new(policy: RespawnPolicy) -> RespawnBackoff {
        RespawnBackoff { policy, streak: 0, current: Duration::ZERO }
    }

    /// keepalived died after running for `lived`: how long to wait before
    /// respawning it.
    pub fn on_death(&mut self, lived: Duration) -> Duration {
        if lived >= self.policy.stable_after {
            self.streak = 0;
        }
        self.current = self.policy.delay(self.streak);
        self.streak = self.streak.saturating_add(1);
        self.current
    }

    /// keepalived could not even be started: how long to wait before trying
    /// again. Never zero (a missing binary must not make the loop spin).
    pub fn on_spawn_failure(&mut self) -> Duration {
        let streak = self.streak.max(1);
        self.current = self.policy.delay(streak);
        self.streak = streak.saturating_add(1);
        self.current
    }

    /// Forgets the streak (a deliberate start after a stop).
    pub fn reset(&mut self) {
        self.streak = 0;
        self.current = Duration::ZERO;
    }

    /// The delay applied to the latest death or failure.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// Quick deaths (and failed starts) in a row so far.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    pub fn policy(&self) -> RespawnPolicy {
        self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_policy_doubles_to_the_cap() {
        let p = RespawnPolicy::default();
        let delays: Vec<u128> = (0..12).map(|n| p.delay(n).as_millis()).collect();
        assert_eq!(delays, [0, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
        assert_eq!(p.delay(40), p.max);
        assert_eq!(p.delay(u32::MAX), p.max);
    }

    #[test]
    fn quick_deaths_back_off_and_a_stable_run_resets() {
        let mut b = RespawnBackoff::new(RespawnPolicy::default());
        let quick = Duration::from_secs(1);
        assert_eq!(b.on_death(quick), Duration::ZERO, "first death: at once");
        assert_eq!(b.on_death(quick), 100 * MS);
        assert_eq!(b.on_death(quick), 200 * MS);
        assert_eq!(b.on_death(Duration::from_millis(9_999)), 400 * MS, "just under stable_after");
        assert_eq!(b.current(), 400 * MS);
        assert_eq!(b.streak(), 4);
        assert_eq!(b.on_death(Duration::from_secs(10)), Duration::ZERO, "ran stably: fresh streak");
        assert_eq!(b.on_death(quick), 100 * MS);
        for _ in 0..20 {
            b.on_death(quick);
        }
        assert_eq!(b.current(), Duration::from_secs(30));
        b.reset();
        assert_eq!(b.on_death(quick), Duration::ZERO);
    }

    #[test]
    fn failed_starts_are_never_retried_at_once() {
        let mut b = RespawnBackoff::new(RespawnPolicy::default());
        assert_eq!(b.on_spawn_failure(), 100 * MS);
        assert_eq!(b.on_spawn_failure(), 200 * MS);
        assert_eq!(b.on_spawn_failure(), 400 * MS);
        // A quick death after failed starts continues the streak.
        assert_eq!(b.on_death(MS), 800 * MS);
    }
}
