//! The transition rules of SPEC section 3.5, as a pure state machine driven
//! by a clock the caller passes in.
//!
//! Two states per router: the *raw* state, what the node is right now
//! (written to the state file and synced to conntrackd at once), and the
//! *effective* state, what is announced (transition script, IPv6
//! forwarding, events, the agent). Neutron's agent rule links them: `backup`
//! and `fault` take effect at once; `primary` only after `advert_int` with no
//! change in between, so keepalived's brief all-primary moment while a new
//! primary is elected is never announced.
//!
//! Invariants:
//! - The primary window restarts at the latest change to primary
//!   (Neutron's thread-per-change code measures from the first, so a
//!   primary→backup→primary flap could slip through there; not here).
//! - The first raw state (what the initial dump found) takes effect at
//!   once, `primary` included: it is where the router already is, not a
//!   change that could be a flap. A daemon restarted over a keepalived
//!   holding the VIP reports `primary` at once instead of nothing for an
//!   advert interval.

use std::time::{Duration, Instant};

use crate::core::state::State;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write the state file and sync conntrackd.
    Raw(State),
    /// Announce: script, forwarding, events, agent. `previous` is the
    /// effective state this one replaces (`None` for the first).
    Effective { state: State, previous: Option<State> },
}

#[derive(Clone, Debug)]
pub struct Transitions {
    advert_int: Duration,
    raw: Option<State>,
    effective: Option<State>,
    /// When the raw state last became primary, while it still is and the
    /// effective state is not primary yet.
    primary_since: Option<Instant>,
}

impl Transitions {
    pub fn new(advert_int: Duration) -> Transitions {
        Transitions { advert_int, raw: None, effective: None, primary_since: None }
    }

    pub fn raw(&self) -> Option<State> {
        self.raw
    }

    pub fn effective(&self) -> Option<State> {
        self.effective
    }

    /// A new advert interval (config reload); a pending primary keeps its
    /// start and waits for the new interval.
    pub fn set_advert_int(&mut self, advert_int: Duration) {
        self.advert_int = advert_int;
    }

    /// The raw state is now `state`. A repeat of the current raw state is
    /// not a change and does nothing.
    pub fn raw_change(&mut self, state: State, now: Instant) -> Vec<Action> {
        if self.raw == Some(state) {
            return Vec::new();
        }
        let first = self.raw.replace(state).is_none();
        let mut actions = vec![Action::Raw(state)];
        if first {
            self.effective = Some(state);
            actions.push(Action::Effective { state, previous: None });
            return actions;
        }
        match state {
            State::Primary => {
                if self.effective != Some(State::Primary) {
                    self.primary_since = Some(now);
                }
            }
            State::Backup | State::Fault => {
                self.primary_since = None;
                if self.effective != Some(state) {
                    let previous = self.effective.replace(state);
                    actions.push(Action::Effective { state, previous });
                }
            }
        }
        actions
    }

    /// When [`Transitions::tick`] has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        self.primary_since.map(|since| since + self.advert_int)
    }

    /// Applies a primary that has held for `advert_int`.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        match self.deadline() {
            Some(due) if now >= due => {
                self.primary_since = None;
                let previous = self.effective.replace(State::Primary);
                vec![Action::Effective { state: State::Primary, previous }]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADV: Duration = Duration::from_secs(2);

    fn eff(state: State, previous: Option<State>) -> Action {
        Action::Effective { state, previous }
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn backup_and_fault_take_effect_at_once() {
        let t0 = Instant::now();
        let mut t = Transitions::new(ADV);
        assert_eq!(t.raw_change(State::Backup, t0), [Action::Raw(State::Backup), eff(State::Backup, None)]);
        assert_eq!(t.raw_change(State::Backup, t0), []);
        assert_eq!(
            t.raw_change(State::Fault, ms(t0, 1)),
            [Action::Raw(State::Fault), eff(State::Fault, Some(State::Backup))]
        );
        assert_eq!(t.deadline(), None);
    }

    #[test]
    fn primary_waits_advert_int() {
        let t0 = Instant::now();
        let mut t = Transitions::new(ADV);
        t.raw_change(State::Backup, t0);
        assert_eq!(t.raw_change(State::Primary, ms(t0, 100)), [Action::Raw(State::Primary)]);
        assert_eq!(t.deadline(), Some(ms(t0, 2100)));
        assert_eq!(t.tick(ms(t0, 2099)), []);
        assert_eq!(t.effective(), Some(State::Backup));
        assert_eq!(t.tick(ms(t0, 2100)), [eff(State::Primary, Some(State::Backup))]);
        assert_eq!((t.raw(), t.effective(), t.deadline()), (Some(State::Primary), Some(State::Primary), None));
        assert_eq!(t.tick(ms(t0, 9000)), []);
    }

    #[test]
    fn the_initial_state_takes_effect_at_once_even_primary() {
        let t0 = Instant::now();
        let mut t = Transitions::new(ADV);
        assert_eq!(t.effective(), None, "nothing known before the first dump");
        assert_eq!(t.raw_change(State::Primary, t0), [Action::Raw(State::Primary), eff(State::Primary, None)]);
        assert_eq!((t.effective(), t.deadline()), (Some(State::Primary), None));
        assert_eq!(t.tick(ms(t0, 2000)), [], "announced once, not again after advert_int");
        // From then on the usual rule: backup at once, primary waits.
        assert_eq!(
            t.raw_change(State::Backup, ms(t0, 2500)),
            [Action::Raw(State::Backup), eff(State::Backup, Some(State::Primary))]
        );
        assert_eq!(t.raw_change(State::Primary, ms(t0, 3000)), [Action::Raw(State::Primary)]);
        assert_eq!(t.tick(ms(t0, 4999)), []);
        assert_eq!(t.tick(ms(t0, 5000)), [eff(State::Primary, Some(State::Backup))]);
    }

    #[test]
    fn an_initial_fault_or_backup_is_effective_at_once_too() {
        let t0 = Instant::now();
        for state in [State::Backup, State::Fault] {
            let mut t = Transitions::new(ADV);
            assert_eq!(t.raw_change(state, t0), [Action::Raw(state), eff(state, None)]);
            assert_eq!(t.deadline(), None);
        }
    }

    #[test]
    fn backup_primary_backup_flap_changes_nothing_effective() {
        let t0 = Instant::now();
        let mut t = Transitions::new(ADV);
        t.raw_change(State::Backup, t0);
        assert_eq!(t.raw_change(State::Primary, ms(t0, 10)), [Action::Raw(State::Primary)]);
        assert_eq!(t.raw_change(State::Backup, ms(t0, 500)), [Action::Raw(State::Backup)]);
        assert_eq!(t.deadline(), None);
        assert_eq!(t.tick(ms(t0, 5000)), []);
        assert_eq!(t.effective(), Some(State::Backup));
    }

    #[test]
    fn the_window_restarts_at_the_latest_primary() {
        let t0 = Instant::now();
        let mut t = Transitions::new(ADV);
        t.raw_change(State::Backup, t0);
        t.raw_change(State::Primary, ms(t0, 0));
        t.raw_change(State::Backup, ms(t0, 1000));
        t.raw_change(State::Primary, ms(t0, 1500));
        assert_eq!(t.tick(ms(t0, 2000)), [], "measured from the first primary");
        assert_eq!(t.tick(ms(t0, 3500)), [eff(State::Primary, Some(State::Backup))]);
    }

    #[test]
    fn leaving_primary_is_immediate_and_a_fault_interrupts_a_pending_primary() {
        let t0 = Instant::now();
        let mut t = Transitions::new(ADV);
        t.raw_change(State::Primary, t0);
        t.tick(ms(t0, 2000));
        assert_eq!(
            t.raw_change(State::Backup, ms(t0, 3000)),
            [Action::Raw(State::Backup), eff(State::Backup, Some(State::Primary))]
        );
        t.raw_change(State::Primary, ms(t0, 4000));
        assert_eq!(
            t.raw_change(State::Fault, ms(t0, 4500)),
            [Action::Raw(State::Fault), eff(State::Fault, Some(State::Backup))]
        );
        assert_eq!(t.tick(ms(t0, 9000)), []);
    }

    #[test]
    fn primary_again_while_effective_primary_starts_no_window() {
        let t0 = Instant::now();
        let mut t = Transitions::new(ADV);
        t.raw_change(State::Primary, t0);
        t.tick(ms(t0, 2000));
        // A POST repeating primary, or the VIP re-added: nothing to do.
        assert_eq!(t.raw_change(State::Primary, ms(t0, 2500)), []);
        assert_eq!(t.deadline(), None);
    }

    #[test]
    fn advert_int_change_applies_to_the_pending_window() {
        let t0 = Instant::now();
        let mut t = Transitions::new(ADV);
        t.raw_change(State::Backup, t0);
        t.raw_change(State::Primary, t0);
        t.set_advert_int(Duration::from_secs(5));
        assert_eq!(t.tick(ms(t0, 2000)), []);
        assert_eq!(t.tick(ms(t0, 5000)), [eff(State::Primary, Some(State::Backup))]);
    }
}
