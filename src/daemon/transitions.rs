//! What follows a router's raw and effective changes: the state file, the
//! conntrackd sync and the agent hear raw changes; events, the transition
//! script and IPv6 forwarding follow effective ones.

use std::time::{Instant, SystemTime};

use super::Daemon;
use super::supervision::log_synced;
use crate::control::api;
use crate::control::api::Event;
use crate::core::ident::Namespace;
use crate::core::state::State;
use crate::core::transition::Action;

impl Daemon {
    pub(super) fn feed_raw(&mut self, id: &str, now: Instant) {
        let Some(router) = self.routers.get_mut(id) else { return };
        let Some(raw) = router.rt.raw_input() else { return };
        let actions = router.rt.transitions.raw_change(raw, now);
        self.apply_actions(id, actions, now);
    }

    pub(super) fn apply_actions(&mut self, id: &str, actions: Vec<Action>, now: Instant) {
        for action in actions {
            let Some(router) = self.routers.get_mut(id) else { return };
            match action {
                Action::Raw(state) => {
                    log::debug!("router {id}: raw state {state}");
                    self.state_writes.queue(id, state);
                    if let Some(sync) = router.conntrackd.as_mut() {
                        let done = sync.request(state);
                        log_synced(id, done);
                    }
                    // Neutron's protocol carries raw changes: the agent
                    // applies its own advert_int rule, so an effective
                    // state here would hold primary back twice.
                    if let Some(n) = self.notifier.as_mut() {
                        n.submit(&self.registry, id, state.as_str(), now);
                    }
                }
                Action::Effective { state, previous } => {
                    router.rt.since = Some(SystemTime::now());
                    router.rt.effective_changes += 1;
                    log::info!("router {id}: transitioned to {state}");
                    let ns = router.rt.cfg.namespace.clone();
                    self.announce(id, ns.as_ref(), state, previous);
                }
            }
        }
    }

    /// An effective change: transition script, IPv6 forwarding, events (the
    /// agent hears raw changes, in `apply_actions`).
    pub(super) fn announce(&mut self, id: &str, ns: Option<&Namespace>, state: State, previous: Option<State>) {
        self.counters.events += 1;
        let event =
            Event { seq: self.counters.events, router: id.to_owned(), state, previous, time: SystemTime::now() };
        self.control.broadcast(&self.registry, &api::event_json(&event), &api::event_text(&event));
        if let Some(script) = self.config.daemon.transition_script.clone() {
            self.hooks.run_transition_script(&script, id, state);
        }
        if self.config.daemon.ipv6_forwarding_on_primary {
            crate::actions::hooks::set_ipv6_forwarding(ns, state == State::Primary, id);
        }
    }

    pub(super) fn report(&mut self, outcomes: Vec<crate::notify::Outcome>) {
        for outcome in outcomes {
            if outcome.is_delivered() {
                self.counters.notify_delivered += 1;
                log::info!("{outcome}");
            } else {
                self.counters.notify_failures += 1;
                log::warn!("{outcome}");
            }
        }
    }
}
