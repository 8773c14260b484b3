//! What follows a router's raw and effective changes: the state file, the
//! conntrackd sync and the agent hear raw changes; events, the transition
//! script and IPv6 forwarding follow effective ones.

use std::time::{Instant, SystemTime};

use super::Daemon;
use crate::actions::hooks::{self, ScriptJob};
use crate::control::api::{self, Event};
use crate::core::ident::{Namespace, RouterId};
use crate::core::state::State;
use crate::core::transition::Action;
use crate::notify::Delivery;

impl Daemon {
    pub(super) fn feed_raw(&mut self, id: &RouterId, now: Instant) {
        let Some(router) = self.routers.get_mut(id) else { return };
        let Some(raw) = router.rt.raw_input() else { return };
        let actions = router.rt.transitions.raw_change(raw, now);
        self.apply_actions(id, actions, now);
    }

    pub(super) fn apply_actions(&mut self, id: &RouterId, actions: Vec<Action>, now: Instant) {
        for action in actions {
            let Some(router) = self.routers.get_mut(id) else { return };
            match action {
                Action::Raw(state) => {
                    log::debug!("router {id}: raw state {state}");
                    self.state_writes.queue(id, state);
                    if let Some(sync) = router.conntrackd.as_mut() {
                        for synced in sync.request(state) {
                            synced.log(id);
                        }
                    }
                    // Neutron's protocol carries raw changes: the agent
                    // applies its own advert_int rule, so an effective
                    // state here would hold primary back twice.
                    if let Some(n) = self.notifier.as_mut() {
                        let deliveries = n.submit(&mut self.sources, id, state, now);
                        self.report(deliveries);
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
    pub(super) fn announce(&mut self, id: &RouterId, ns: Option<&Namespace>, state: State, previous: Option<State>) {
        self.counters.events += 1;
        let event = Event { seq: self.counters.events, router: id.clone(), state, previous, time: SystemTime::now() };
        self.control.broadcast(&mut self.sources, &api::event_json(&event), &api::event_text(&event));
        if let Some(script) = self.config.daemon.transition_script.clone() {
            let job = ScriptJob { script, router: id.clone(), state, previous, seq: event.seq };
            self.hooks.run_transition_script(job, Instant::now());
        }
        if self.config.daemon.ipv6_forwarding_on_primary {
            hooks::set_ipv6_forwarding(ns, state == State::Primary, id);
        }
    }

    /// Logs and counts the ends of agent notifications.
    pub(super) fn report(&mut self, deliveries: Vec<Delivery>) {
        for delivery in deliveries {
            if delivery.is_delivered() {
                self.counters.notify_delivered += 1;
            } else {
                self.counters.notify_failures += 1;
            }
            delivery.log();
        }
    }
}
