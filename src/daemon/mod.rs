//! The daemon (`harouterd run`): every configured router in one
//! single-threaded event loop (SPEC section 3). This file holds the loop
//! and its dispatch; one file per concern holds the rest: `routers`,
//! `namespaces`, `supervision` (keepalived, conntrackd), `transitions`, `state_writes`,
//! `control` (requests), `reload` (SIGHUP).
//!
//! One `mio::Poll` owns every source: the signalfd, one rtnetlink socket
//! per namespace (routers sharing a namespace share it), an inotify watch on
//! /run/netns, each router's keepalived notify FIFO and, for keepalived
//! and conntrackd processes adopted from a previous run, their pidfds. Everything with a
//! deadline (a pending primary, a keepalived respawn, a throttled SIGHUP,
//! a stop escalation, an agent retry, a namespace retry) feeds the poll
//! timeout; with nothing pending the daemon sleeps with no timeout at all.
//!
//! This module wires sources to the pure pieces: [`transition`] decides,
//! [`keepalived::conf`] renders, [`reload`] diffs.
//!
//! [`transition`]: crate::core::transition
//! [`keepalived::conf`]: crate::keepalived::conf

mod control;
mod error;
mod namespaces;
pub mod reload;
pub mod router;
mod routers;
pub mod service;
mod state_writes;
mod supervision;
mod transitions;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::{Interest, Token};
use nix::sys::signal::Signal;

use crate::Exit;
use crate::actions::hooks::Hooks;
use crate::config::{Config, OnExit, Principal, RouterConfig};
use crate::control::api::Counters;
use crate::control::metrics_listener::MetricsListener;
use crate::control::server::ControlServer;
use crate::core::ident::Namespace;
use crate::core::ident::RouterId;
use crate::netlink::RECV_BUFFER;
use crate::notify::Notifier;
use crate::supervisor::Kind;
use crate::sys::child_output::ChildOutputs;
use crate::sys::event_loop::{EventLoop, Owner, Signals, Sources, Timers, earliest};
use crate::sys::files::confs::HaConfs;
use crate::sys::netns::NetnsDirWatch;
use crate::sys::spawn;
use crate::sys::spawn::ChildExit;
pub use error::DaemonError;
use error::setup;
use namespaces::{NsWatch, watch_netns_dir};
use router::Router;
use routers::remove_router_dir;
use service::{ReloadLog, Service};
use state_writes::{STATE_SYNC_BUDGET, STATE_WRITES_PER_PASS, StateWrites};
pub use supervision::keepalived_starting_max;

/// Enough that a node-wide flip goes out in a few loop passes.
const NOTIFIER_IN_FLIGHT: usize = 256;

/// Routers started per loop pass at most, and the time a pass may spend
/// starting them: start-up happens inside the loop, so the control socket
/// and signals are served between batches (a thousand routers take a few
/// seconds to start, keepalived's own start-up mostly).
const STARTS_PER_PASS: usize = 32;
const STARTS_BUDGET: Duration = Duration::from_millis(10);

/// How long SIGTERM waits for pending agent notifications.
const FLUSH: Duration = Duration::from_secs(2);

/// A router's namespace as a map key; `None` is the daemon's own.
type NsKey = Option<Namespace>;

/// The daemon's own kinds of sources (the shared components' are in
/// [`Owner`]).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    Signals,
    /// The inotify watch on /run/netns.
    NetnsDir,
    Netlink(NsKey),
    Fifo(RouterId),
    Pidfd(RouterId, Kind),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Timer {
    ReopenNamespace(NsKey),
    /// A namespace's socket has a delayed re-dump due: read it.
    Netlink(NsKey),
    /// Try the router's keepalived files again.
    RetryFiles(RouterId),
}

pub struct Daemon {
    config_path: PathBuf,
    config: Config,
    /// `ha_confs_path`, held open: every router file goes through it.
    confs: HaConfs,
    debug: bool,
    event_loop: EventLoop,
    /// Every token of the poll and who owns it.
    sources: Sources<Source>,
    signals: Signals,
    /// The watch on /run/netns, once there is one.
    netns_dir: Option<(NetnsDirWatch, Token)>,
    namespaces: HashMap<NsKey, NsWatch>,
    routers: BTreeMap<RouterId, Router>,
    notifier: Option<Notifier>,
    hooks: Hooks,
    timers: Timers<Timer>,
    scratch: Vec<u8>,
    /// Set by SIGTERM/SIGINT: the moment the agent flush gives up.
    stopping: Option<Instant>,
    /// Set when the daemon must exit with a failure.
    failed: bool,
    /// State files still to write.
    state_writes: StateWrites,
    control: ControlServer,
    /// `GET /metrics` over TCP (`metrics_listen`).
    metrics_listener: Option<MetricsListener>,
    /// What keepalived, conntrackd and transition scripts write.
    outputs: ChildOutputs,
    /// Who may POST state changes besides root.
    allowed_uids: Vec<u32>,
    counters: Counters,
    /// Resyncs and undecodable messages of rtnetlink sockets since closed,
    /// so `/metrics` counters never go down.
    netlink_closed: (u64, u64),
    /// Namespaces whose socket still holds data after a read that reached
    /// its budget (edge-triggered: no new readiness will say so).
    netlink_more: Vec<NsKey>,
    /// Configured routers not started yet, in config order: start-up
    /// happens in the loop, a batch per pass ([`STARTS_PER_PASS`]).
    starting: VecDeque<RouterConfig>,
    /// The last reap stopped at its batch size: more children may be
    /// waiting, and no SIGCHLD will come for them.
    reap_more: bool,
    /// keepalived deaths reaped and not acted on yet: their respawns wait
    /// for a free place among the keepalived starting (oldest first).
    held_deaths: VecDeque<(u32, ChildExit)>,
    /// keepalived spawned and not up yet (its notify FIFO has not spoken),
    /// with its pid and when: at most [`supervision::keepalived_starting_max`]
    /// at once (see [`Daemon::keepalived_gate_open`]).
    starting_keepalived: HashMap<RouterId, (u32, Instant)>,
    /// [`keepalived_starting_max`], read once: it asks the cgroup files.
    starting_max: usize,
    /// Who waits for us to serve, reload and stop (`service`).
    service: Service,
    /// Serving was said (every configured router started once).
    served: bool,
    /// When the running config was read, how the reloads went.
    reload_log: ReloadLog,
    /// keepalived is stopped at exit whatever `on_exit` says.
    stop_on_exit: bool,
}

impl Daemon {
    /// Sets up the loop and its sources and binds the control socket; the
    /// routers start from inside [`Daemon::run`], a batch per pass, with
    /// the control socket answering from the first pass.
    pub fn new(config_path: PathBuf, config: Config, confs: HaConfs, debug: bool) -> Result<Daemon, DaemonError> {
        let event_loop = EventLoop::new(1024).map_err(setup("create the event loop"))?;
        let registry = event_loop.registry().try_clone().map_err(setup("clone the poll registry"))?;
        let mut sources = Sources::new(registry);
        let mut signals = Signals::new(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGCHLD])
            .map_err(setup("set up signal handling"))?;
        sources
            .register(&mut signals, Owner::Loop(Source::Signals), Interest::READABLE)
            .map_err(setup("watch signals"))?;
        let netns_dir = watch_netns_dir(&mut sources, false);
        let notifier = notifier_for(&config);
        let gid = match &config.daemon.socket_group {
            None => None,
            Some(Principal::Id(gid)) => Some(*gid),
            Some(Principal::Name(name)) => match nix::unistd::Group::from_name(name) {
                Ok(Some(group)) => Some(group.gid.as_raw()),
                Ok(None) => {
                    let name = name.clone();
                    return Err(DaemonError::UnknownPrincipal { key: "socket_group", kind: "group", name });
                }
                Err(source) => return Err(DaemonError::Lookup { key: "socket_group", name: name.clone(), source }),
            },
        };
        let allowed_uids = resolve_uids(&config.daemon.allowed_uids)?;
        let listener = ControlServer::bind(&config.daemon.socket, config.daemon.socket_mode, gid)?;
        let mut control = ControlServer::new(&config.daemon.socket, listener, &mut sources)?;
        control.set_allowed_uids(&allowed_uids);
        let metrics_listener = match config.daemon.metrics_listen {
            None => None,
            Some(addr) => {
                let listener = MetricsListener::bind(addr, &mut sources)
                    .map_err(|source| DaemonError::MetricsListen { addr, source })?;
                log::info!("serving GET /metrics on {} (metrics_listen)", listener.local_addr());
                Some(listener)
            }
        };
        let daemon = Daemon {
            config_path,
            confs,
            debug,
            event_loop,
            sources,
            signals,
            netns_dir,
            namespaces: HashMap::new(),
            routers: BTreeMap::new(),
            notifier,
            hooks: Hooks::new(Duration::from_secs(u64::from(config.daemon.transition_script_timeout))),
            timers: Timers::default(),
            scratch: Vec::with_capacity(RECV_BUFFER),
            stopping: None,
            failed: false,
            state_writes: StateWrites::default(),
            control,
            metrics_listener,
            outputs: ChildOutputs::new(),
            allowed_uids,
            counters: Counters::default(),
            netlink_closed: (0, 0),
            netlink_more: Vec::new(),
            starting: config.routers.iter().cloned().collect(),
            reap_more: false,
            held_deaths: VecDeque::new(),
            starting_keepalived: HashMap::new(),
            starting_max: keepalived_starting_max(),
            service: Service::default(),
            served: false,
            reload_log: ReloadLog::new(),
            stop_on_exit: false,
            config,
        };
        log::info!("harouterd {} starting with {} routers", env!("CARGO_PKG_VERSION"), daemon.starting.len());
        Ok(daemon)
    }

    /// Configured routers not started yet (start-up is done when 0).
    pub fn routers_starting(&self) -> usize {
        self.starting.len()
    }

    /// Starts the next routers of the start-up, at most
    /// [`STARTS_PER_PASS`] and for about [`STARTS_BUDGET`].
    fn start_some(&mut self, now: Instant) {
        if self.starting.is_empty() || self.stopping.is_some() {
            return;
        }
        let began = Instant::now();
        // Looked at once (it reads /proc); each start below takes a place.
        self.keepalived_gate_open(now);
        for _ in 0..STARTS_PER_PASS {
            let Some(cfg) = self.starting.front() else { break };
            if cfg.keepalived && self.starting_keepalived.len() >= self.starting_max {
                break;
            }
            let Some(cfg) = self.starting.pop_front() else { break };
            self.start_router(cfg, now);
            if began.elapsed() >= STARTS_BUDGET {
                break;
            }
        }
        if self.starting.is_empty() {
            // The queue held a copy of every router's config.
            self.starting = VecDeque::new();
            log::info!("all {} routers started", self.routers.len());
        }
    }

    /// When a reload takes a new config: routers still waiting to start
    /// take their new config, and those no longer configured are not
    /// started at all (the reload's diff only acts on routers started).
    fn requeue_starting(&mut self) {
        let config = &self.config;
        self.starting = std::mem::take(&mut self.starting)
            .into_iter()
            .filter_map(|queued| config.router(queued.id.as_str()).cloned())
            .collect();
    }

    pub fn run(&mut self) -> Exit {
        loop {
            if let Some(exit) = self.finished() {
                return exit;
            }
            if !self.served && self.starting.is_empty() && self.stopping.is_none() {
                self.served = true;
                self.started_serving();
            }
            self.outputs.adopt(&mut self.sources, spawn::take_outputs(), Instant::now());
            let deadline = self.next_deadline();
            let Some(tokens) = self.event_loop.ready_tokens(deadline) else { return Exit::Runtime };
            for token in tokens {
                let now = Instant::now();
                // A token given up earlier in this pass belongs to nobody.
                match self.sources.owner(token).cloned() {
                    Some(Owner::Loop(Source::Signals)) => self.signals_ready(now),
                    Some(Owner::Loop(Source::NetnsDir)) => self.netns_dir_changed(now),
                    Some(Owner::Loop(Source::Netlink(ns))) => self.netlink_ready(&ns, now),
                    Some(Owner::Loop(Source::Fifo(id))) => self.fifo_ready(&id, now),
                    Some(Owner::Loop(Source::Pidfd(id, kind))) => self.pidfd_ready(&id, kind, now),
                    Some(Owner::Control) => {
                        for incoming in self.control.ready(&mut self.sources, token, now) {
                            let token = incoming.token;
                            let reply = self.handle(incoming, now);
                            self.control.reply(&mut self.sources, token, reply, now);
                        }
                    }
                    Some(Owner::Metrics) => self.metrics_ready(token, now),
                    Some(Owner::ChildOutput) => self.outputs.ready(&mut self.sources, token, now),
                    Some(Owner::Notifier) => {
                        if let Some(n) = self.notifier.as_mut() {
                            let deliveries = n.ready(&mut self.sources, token, now);
                            self.report(deliveries);
                        }
                    }
                    None => {}
                }
            }
            self.tick(Instant::now());
            self.start_some(Instant::now());
            let written = self.state_writes.flush(&self.confs, STATE_WRITES_PER_PASS, Instant::now());
            self.state_written(written);
            self.state_writes.sync_due(&self.confs, STATE_SYNC_BUDGET, Instant::now());
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let routers = self.routers.values().flat_map(|r| [r.rt.transitions.deadline(), r.supervisor_deadline()]);
        earliest(
            routers
                .chain([self.timers.next_deadline(), self.notifier.as_ref().and_then(Notifier::next_deadline)])
                .chain([self.control.next_deadline(), self.hooks.next_deadline()])
                .chain([self.metrics_listener.as_ref().and_then(MetricsListener::next_deadline)])
                .chain([(!self.netlink_more.is_empty()).then(Instant::now)])
                .chain([self.gated_deadline()])
                .chain([self.stopping])
                .chain([self.state_writes.next_deadline(Instant::now())]),
        )
    }

    fn tick(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::ReopenNamespace(ns) => self.open_namespace(&ns, now),
                Timer::Netlink(ns) => {
                    if let Some(w) = self.namespaces.get_mut(&ns) {
                        w.timer_at = None;
                    }
                    self.netlink_ready(&ns, now);
                }
                Timer::RetryFiles(id) => self.retry_files(&id, now),
            }
        }
        // Children left by the last reap's batch, and keepalived deaths
        // held for a free place that there is now.
        if self.reap_more
            || (!self.held_deaths.is_empty() && (self.stopping.is_some() || self.keepalived_gate_open(now)))
        {
            self.reap(now);
        }
        // Sockets whose last read stopped at its budget, after the other
        // sources had their turn.
        for ns in std::mem::take(&mut self.netlink_more) {
            self.netlink_ready(&ns, now);
        }
        // Only routers with something due: a wake-up must not cost a walk
        // over every router's state (1000 routers made that the daemon's
        // main CPU cost during a node-wide flip).
        let due_at = |d: Option<Instant>| d.is_some_and(|d| d <= now);
        let ids: Vec<RouterId> = self
            .routers
            .iter()
            .filter(|(_, r)| due_at(r.rt.transitions.deadline()) || due_at(r.supervisor_deadline()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let Some(router) = self.routers.get_mut(&id) else { continue };
            let actions = router.rt.transitions.tick(now);
            let ct = router.conntrackd_sup.as_mut().map(|s| s.tick(now)).unwrap_or_default();
            let ka = router.supervisor.as_mut().map(|s| s.tick(now)).unwrap_or_default();
            self.apply_actions(&id, actions, now);
            self.supervisor_outcomes(&id, Kind::Conntrackd, ct, now);
            self.supervisor_outcomes(&id, Kind::Keepalived, ka, now);
        }
        if let Some(n) = self.notifier.as_mut() {
            let deliveries = n.tick(&mut self.sources, now);
            self.report(deliveries);
        }
        self.control.tick(&mut self.sources, now);
        if let Some(m) = self.metrics_listener.as_mut() {
            m.tick(&mut self.sources, now);
        }
        self.hooks.tick(now);
    }

    /// `Some` once the daemon should exit: after SIGTERM, when the agent is
    /// flushed (or the flush timed out) and every keepalived to stop has
    /// stopped.
    fn finished(&mut self) -> Option<Exit> {
        if self.failed && self.stopping.is_none() {
            return Some(Exit::Runtime);
        }
        let deadline = self.stopping?;
        let now = Instant::now();
        let flushed = (self.notifier.as_ref().is_none_or(Notifier::is_idle)
            && self.control.is_flushed()
            && self.metrics_listener.as_ref().is_none_or(MetricsListener::is_flushed))
            || now >= deadline;
        let stopped = self.routers.values().all(Router::programs_stopped);
        if !(flushed && stopped) {
            return None;
        }
        // Last chance for writes still failing: one more attempt each.
        self.state_writes.retry_now();
        let written = self.state_writes.flush(&self.confs, usize::MAX, now);
        self.state_written(written);
        self.state_writes.sync_all(&self.confs);
        if self.on_exit() == OnExit::Stop {
            for id in self.routers.keys() {
                remove_router_dir(&self.confs, id);
            }
        }
        Some(if self.failed { Exit::Runtime } else { Exit::Ok })
    }

    fn signals_ready(&mut self, now: Instant) {
        for signal in self.signals.drain() {
            match signal {
                Signal::SIGCHLD => self.reap(now),
                Signal::SIGHUP => self.reload_signalled(now),
                Signal::SIGTERM | Signal::SIGINT if self.stopping.is_none() => self.shutdown(signal, now),
                _ => {}
            }
        }
    }

    fn shutdown(&mut self, signal: Signal, now: Instant) {
        log::info!("received {signal}: stopping (on_exit = {:?})", self.on_exit());
        self.service.stopping();
        self.stopping = Some(now + FLUSH);
        self.control.stop_listening(&mut self.sources);
        if let Some(m) = self.metrics_listener.as_mut() {
            m.stop_listening(&mut self.sources);
        }
        let stop = self.on_exit() == OnExit::Stop;
        // Routers not started yet: with on_exit = keep their keepalived
        // (if one runs from an earlier daemon) is left alone, as it would
        // be once started; with stop, one found running is stopped below.
        if !self.starting.is_empty() {
            log::info!("{} routers were not started yet", self.starting.len());
        }
        for cfg in std::mem::take(&mut self.starting) {
            if stop {
                self.add_unstarted(cfg);
            }
        }
        let ids: Vec<RouterId> = self.routers.keys().cloned().collect();
        for id in ids {
            let Some(router) = self.routers.get_mut(&id) else { continue };
            if !stop {
                for sup in [router.supervisor.as_mut(), router.conntrackd_sup.as_mut()].into_iter().flatten() {
                    sup.detach();
                }
                continue;
            }
            // keepalived first; conntrackd follows once it is gone
            // (`reap_stopped`), as Neutron orders them.
            match router.supervisor.as_mut() {
                Some(sup) => {
                    let outcomes = sup.stop(now);
                    self.supervisor_outcomes(&id, Kind::Keepalived, outcomes, now);
                }
                None => self.reap_stopped(now),
            }
        }
        if let Some(n) = self.notifier.as_mut() {
            let deliveries = n.retry_now(&mut self.sources, now);
            self.report(deliveries);
        }
    }
}

fn notifier_for(config: &Config) -> Option<Notifier> {
    config.daemon.notify_agent_socket.clone().map(|path| Notifier::new(path, NOTIFIER_IN_FLIGHT))
}

fn resolve_uids(principals: &[Principal]) -> Result<Vec<u32>, DaemonError> {
    principals
        .iter()
        .map(|p| match p {
            Principal::Id(uid) => Ok(*uid),
            Principal::Name(name) => match nix::unistd::User::from_name(name) {
                Ok(Some(user)) => Ok(user.uid.as_raw()),
                Ok(None) => {
                    Err(DaemonError::UnknownPrincipal { key: "allowed_uids", kind: "user", name: name.clone() })
                }
                Err(source) => Err(DaemonError::Lookup { key: "allowed_uids", name: name.clone(), source }),
            },
        })
        .collect()
}
