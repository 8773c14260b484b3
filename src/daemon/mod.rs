//! `harouterd run`: every configured router in one single-threaded event
//! loop (SPEC section 3).
//!
//! One `mio::Poll` owns every source: the signalfd, one rtnetlink socket
//! per namespace (routers sharing a namespace share it), an inotify watch on
//! /run/netns, each router's keepalived notify FIFO and, for keepalived
//! processes adopted from a previous run, their pidfds. Everything with a
//! deadline (a pending primary, a keepalived respawn, a throttled SIGHUP,
//! a stop escalation, an agent retry, a namespace retry) feeds the poll
//! timeout; with nothing pending the daemon sleeps with no timeout at all.
//!
//! This module wires sources to the pure pieces: [`transition`] decides,
//! [`keepalived::conf`] renders, [`reload`] diffs.
//!
//! [`transition`]: crate::core::transition
//! [`keepalived::conf`]: crate::keepalived::conf

pub mod reload;
pub mod router;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::Signal;

use crate::actions::hooks::Hooks;
use crate::cli::RunArgs;
use crate::cmd::Exit;
use crate::config::Principal;
use crate::config::{self, Config, OnExit, RouterConfig};
use crate::conntrackd::sync::{ConntrackdSync, Synced};
use crate::control::api::{self, Counters, Event, Route, RouterStatus};
use crate::control::server::{ControlServer, Incoming, Reply};
use crate::core::backoff::{Backoff, Retry};
use crate::core::ident::Namespace;
use crate::core::layout::{Layout, NOTIFY_FIFO, STATE_FILE};
use crate::core::state::State;
use crate::core::transition::Action;
use crate::http::response as http;
use crate::keepalived::notify_fifo::{KaState, NotifyFifo};
use crate::keepalived::supervisor::{Outcome as KaOutcome, Sighup, Supervisor};
use crate::keepalived::{self, conf::Secrets};
use crate::logging::syslog;
use crate::netlink::{Change, RECV_BUFFER, Read, RtSocket};
use crate::notify::Notifier;
use crate::sys::child_output::ChildOutputs;
use crate::sys::event_loop::{EventLoop, Signals, TimerId, Timers, earliest};
use crate::sys::netns::NsIdentity;
use crate::sys::{daemonize, pidfile, spawn};
use router::{ErrorSource, RouterRuntime};

const SIGNALS: Token = Token(0);
const NETNS_DIR: Token = Token(1);
const CONTROL: Token = Token(2);
/// Control connections' tokens: their own range, never reused.
const CONTROL_CONNS: std::ops::Range<usize> = (1 << 32)..(1 << 39);
/// Dynamic tokens (netlink sockets, FIFOs, pidfds) start here and are never
/// reused, so a late event for a closed source cannot reach a new one.
const FIRST_DYNAMIC: usize = 16;
/// The agent notifier's tokens, far above any dynamic one.
const NOTIFIER_BASE: usize = 1 << 40;
/// Children's output pipes: slots reused, far above any dynamic token.
const CHILD_OUTPUT_BASE: usize = 1 << 30;
/// Enough that a node-wide flip goes out in a few loop passes.
const NOTIFIER_IN_FLIGHT: usize = 256;
/// State files written per loop pass; the rest wait for the next pass (with
/// a zero poll timeout), so readiness (agent answers, control requests,
/// netlink) is served in between.
const STATE_WRITES_PER_PASS: usize = 32;
/// A file that could not be written (full or read-only disk) is tried again
/// after this, doubling per failure in a row up to [`WRITE_RETRY_MAX`]: soon
/// enough that the file says the truth shortly after space returns, rarely
/// enough that a thousand routers on a full disk cost nothing.
const WRITE_RETRY_FIRST: Duration = Duration::from_millis(100);
const WRITE_RETRY_MAX: Duration = Duration::from_secs(5);

/// How long SIGTERM waits for pending agent notifications.
const FLUSH: Duration = Duration::from_secs(2);
/// Retrying a namespace that could not be opened: first after this, doubling.
const NS_RETRY_FIRST: Duration = Duration::from_secs(1);
const NS_RETRY_MAX: Duration = Duration::from_secs(30);
const NS_RETRY: Backoff = Backoff::new(NS_RETRY_FIRST, NS_RETRY_MAX);
/// First retry of a namespace whose file just appeared.
const NS_RETRY_SOON: Backoff = Backoff::new(Duration::from_millis(50), NS_RETRY_MAX);

/// Where iproute2 keeps named namespaces.
const NETNS_RUN_DIR: &str = "/run/netns";

/// A router's namespace as a map key; `None` is the daemon's own.
type NsKey = Option<Namespace>;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    Netlink(NsKey),
    Fifo(String),
    Pidfd(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Timer {
    ReopenNamespace(NsKey),
    /// A namespace's socket has a delayed re-dump due: read it.
    Netlink(NsKey),
    /// Try the router's keepalived files again.
    RetryFiles(String),
}

/// The rtnetlink watch on one namespace, shared by its routers.
struct NsWatch {
    socket: Option<(RtSocket, Token)>,
    routers: BTreeSet<String>,
    retry: Retry,
    retry_pending: bool,
    /// The namespace the name meant when the socket was last opened: one
    /// with another identity is a new namespace (deleted and re-created).
    identity: Option<NsIdentity>,
    /// The socket's delayed re-dump already has a [`Timer::Netlink`].
    timer_at: Option<Instant>,
}

/// A router and everything the daemon runs for it.
struct Router {
    rt: RouterRuntime,
    supervisor: Option<Supervisor>,
    fifo: Option<(NotifyFifo, Token)>,
    pidfd_token: Option<Token>,
    conntrackd: Option<ConntrackdSync>,
    /// Being stopped because it left the config (or is restarting); its
    /// replacement, if any, starts once it is gone.
    leaving: bool,
    replacement: Option<RouterConfig>,
    /// The HA interface as last seen, to tell when it comes back as a new
    /// interface.
    ha_link: HaLink,
    /// keepalived is being stopped to be started again at once (its
    /// namespace or HA interface was re-created under it).
    revive: bool,
    /// Its keepalived files could not all be written: the config they
    /// carry is not applied (keepalived not reloaded) until a retry or a
    /// later reload writes them.
    files_retry: Option<FilesRetry>,
}

/// How [`Daemon::revive_keepalived`] gets keepalived going again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Revive {
    /// SIGHUP if it runs (it re-reads its interfaces), else start it.
    Sighup,
    /// Stop it, then start it (it must move to another namespace).
    Restart,
}

/// What the daemon last saw of a router's HA interface. keepalived 2.2.7
/// (without `dynamic_interfaces`, which Neutron's config does not set)
/// binds its VRRP instance to the interface's index: an interface deleted
/// and re-created leaves it in BACKUP for good, and one missing at start
/// makes it exit with a config error. Either way it must be revived once
/// the interface is there (a SIGHUP makes it re-read its interfaces; one
/// that exited is started).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HaLink {
    /// Not seen yet (before the namespace's first dump, or in a namespace
    /// just re-created).
    Unknown,
    Missing,
    Present(u32),
}

impl HaLink {
    /// The next value for the interface's index now (`None`: missing), and
    /// whether keepalived must be revived: the interface appeared after
    /// being seen missing, or is there with another index than before.
    fn observe(self, index: Option<u32>) -> (HaLink, bool) {
        match (self, index) {
            (_, None) => (HaLink::Missing, false),
            (HaLink::Missing, Some(i)) => (HaLink::Present(i), true),
            (HaLink::Present(old), Some(i)) => (HaLink::Present(i), old != i),
            (HaLink::Unknown, Some(i)) => (HaLink::Present(i), false),
        }
    }
}

struct FilesRetry {
    /// Failed attempts in a row.
    failures: u32,
    timer: TimerId,
    /// A file did change in one of the failed attempts: keepalived must
    /// re-read them once all are written, even if the last attempt finds
    /// that one unchanged.
    changed: bool,
}

/// Why a router's keepalived files could not all be written.
struct FilesFailed {
    message: String,
    /// Whether a file was replaced before the failure.
    changed: bool,
}

/// The delay before retry number `failures` (1 = after the first failure).
fn write_retry_delay(failures: u32) -> Duration {
    Backoff::new(WRITE_RETRY_FIRST, WRITE_RETRY_MAX).after(failures.max(1))
}

pub fn run(args: RunArgs) -> Exit {
    private_process();
    let parsed = match config::load(&args.config) {
        Ok(parsed) => parsed,
        Err(errors) => {
            eprintln!("{errors}");
            return Exit::Usage;
        }
    };
    for warning in &parsed.warnings {
        eprintln!("{warning}");
    }
    // Checked (and created) before detaching, so a refusal reaches the
    // terminal: exit 2, as for any other configuration error.
    let layout = match Layout::prepare(&parsed.config.daemon) {
        Ok(layout) => layout,
        Err(e) if e.is_refusal() => {
            eprintln!("harouterd: refusing directory {e}");
            return Exit::Usage;
        }
        Err(e) => {
            eprintln!("harouterd: cannot prepare directory {e}");
            return Exit::Runtime;
        }
    };
    // Taken before detaching, so "already running" reaches the terminal;
    // the lock lives in the open file, which the detached daemon inherits.
    let pidfile = match pidfile::Pidfile::acquire(&args.pidfile) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("harouterd: {e}");
            return Exit::Runtime;
        }
    };
    if !args.foreground
        && let Err(e) = daemonize::daemonize()
    {
        eprintln!("harouterd: {e}");
        return Exit::Runtime;
    }
    private_process();
    if let Err(e) = syslog::init_daemon_logging(args.foreground, args.log_level) {
        eprintln!("harouterd: cannot set up logging: {e}");
        return Exit::Runtime;
    }
    if let Err(e) = pidfile.write_our_pid() {
        log::error!("{e}");
        return Exit::Runtime;
    }
    for warning in &parsed.warnings {
        log::warn!("{warning}");
    }
    raise_fd_limit();
    if let Err(e) = keepalived::supervisor::become_subreaper() {
        log::warn!("cannot become a child subreaper ({e}): orphaned keepalived children may linger");
    }
    let debug = args.log_level >= log::LevelFilter::Debug;
    let exit = match Daemon::new(args.config.clone(), parsed.config, layout, debug) {
        Ok(mut daemon) => daemon.run(),
        Err(e) => {
            log::error!("{e}");
            Exit::Runtime
        }
    };
    if let Err(e) = pidfile.remove() {
        log::warn!("{e}");
    }
    log::info!("harouterd exiting");
    exit
}

struct Daemon {
    config_path: PathBuf,
    config: Config,
    layout: Layout,
    debug: bool,
    event_loop: EventLoop,
    registry: Registry,
    signals: Signals,
    netns_dir: Option<Inotify>,
    sources: HashMap<Token, Source>,
    next_token: usize,
    namespaces: HashMap<NsKey, NsWatch>,
    routers: BTreeMap<String, Router>,
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
}

impl Daemon {
    fn new(config_path: PathBuf, config: Config, layout: Layout, debug: bool) -> Result<Daemon, String> {
        let event_loop = EventLoop::new(1024).map_err(|e| format!("cannot create the event loop: {e}"))?;
        let registry = event_loop.registry().try_clone().map_err(|e| format!("cannot clone the poll registry: {e}"))?;
        let mut signals = Signals::new(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGCHLD])
            .map_err(|e| format!("cannot set up signal handling: {e}"))?;
        registry
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| format!("cannot watch signals: {e}"))?;
        let netns_dir = watch_netns_dir(&registry, false);
        let notifier = notifier_for(&config);
        let gid = match &config.daemon.socket_group {
            None => None,
            Some(Principal::Id(gid)) => Some(*gid),
            Some(Principal::Name(name)) => match nix::unistd::Group::from_name(name) {
                Ok(Some(group)) => Some(group.gid.as_raw()),
                Ok(None) => return Err(format!("socket_group: no group '{name}'")),
                Err(e) => return Err(format!("socket_group: cannot look up '{name}': {e}")),
            },
        };
        let allowed_uids = resolve_uids(&config.daemon.allowed_uids)?;
        let listener =
            ControlServer::bind(&config.daemon.socket, config.daemon.socket_mode, gid).map_err(|e| e.to_string())?;
        let mut control = ControlServer::new(&config.daemon.socket, listener, &registry, CONTROL, CONTROL_CONNS)
            .map_err(|e| e.to_string())?;
        control.set_allowed_uids(&allowed_uids);
        let mut daemon = Daemon {
            config_path,
            layout,
            debug,
            event_loop,
            registry,
            signals,
            netns_dir,
            sources: HashMap::new(),
            next_token: FIRST_DYNAMIC,
            namespaces: HashMap::new(),
            routers: BTreeMap::new(),
            notifier,
            hooks: Hooks::default(),
            timers: Timers::default(),
            scratch: Vec::with_capacity(RECV_BUFFER),
            stopping: None,
            failed: false,
            state_writes: StateWrites::default(),
            control,
            outputs: ChildOutputs::new(CHILD_OUTPUT_BASE),
            allowed_uids,
            counters: Counters::default(),
            netlink_closed: (0, 0),
            netlink_more: Vec::new(),
            config: config.clone(),
        };
        log::info!("harouterd {} starting with {} routers", env!("CARGO_PKG_VERSION"), config.routers.len());
        let now = Instant::now();
        for router in config.routers {
            daemon.start_router(router, now);
        }
        Ok(daemon)
    }

    fn token(&mut self, source: Source) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        self.sources.insert(token, source);
        token
    }

    fn run(&mut self) -> Exit {
        loop {
            if let Some(exit) = self.finished() {
                return exit;
            }
            self.outputs.adopt(&self.registry, spawn::take_outputs(), Instant::now());
            let deadline = self.next_deadline();
            let events: Vec<(Token, mio::event::Event)> = match self.event_loop.wait(deadline) {
                Ok(events) => events.iter().map(|e| (e.token(), e.clone())).collect(),
                Err(e) => {
                    log::error!("poll failed: {e}");
                    return Exit::Runtime;
                }
            };
            for (token, event) in events {
                let now = Instant::now();
                match token {
                    SIGNALS => self.signals_ready(now),
                    NETNS_DIR => self.netns_dir_changed(now),
                    t if self.control.owns(t) => {
                        for incoming in self.control.ready(&self.registry, t, now) {
                            let token = incoming.token;
                            let reply = self.handle(incoming, now);
                            self.control.reply(&self.registry, token, reply, now);
                        }
                    }
                    t if self.outputs.owns(t) => self.outputs.ready(&self.registry, t, now),
                    t if self.notifier.as_ref().is_some_and(|n| n.owns(t)) => {
                        if let Some(n) = self.notifier.as_mut() {
                            let outcomes = n.ready(&self.registry, &event, now);
                            self.report(outcomes);
                        }
                    }
                    t => match self.sources.get(&t).cloned() {
                        Some(Source::Netlink(ns)) => self.netlink_ready(&ns, now),
                        Some(Source::Fifo(id)) => self.fifo_ready(&id, now),
                        Some(Source::Pidfd(id)) => self.pidfd_ready(&id, now),
                        None => {}
                    },
                }
            }
            self.tick(Instant::now());
            let written = self.state_writes.flush(&self.layout, STATE_WRITES_PER_PASS, Instant::now());
            self.state_written(written);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let routers = self
            .routers
            .values()
            .flat_map(|r| [r.rt.transitions.deadline(), r.supervisor.as_ref().and_then(Supervisor::next_deadline)]);
        earliest(
            routers
                .chain([self.timers.next_deadline(), self.notifier.as_ref().and_then(Notifier::next_deadline)])
                .chain([self.control.next_deadline()])
                .chain([(!self.netlink_more.is_empty()).then(Instant::now)])
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
        // Sockets whose last read stopped at its budget, after the other
        // sources had their turn.
        for ns in std::mem::take(&mut self.netlink_more) {
            self.netlink_ready(&ns, now);
        }
        // Only routers with something due: a wake-up must not cost a walk
        // over every router's state (1000 routers made that the daemon's
        // main CPU cost during a node-wide flip).
        let due_at = |d: Option<Instant>| d.is_some_and(|d| d <= now);
        let ids: Vec<String> = self
            .routers
            .iter()
            .filter(|(_, r)| {
                due_at(r.rt.transitions.deadline()) || due_at(r.supervisor.as_ref().and_then(Supervisor::next_deadline))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let Some(router) = self.routers.get_mut(&id) else { continue };
            let actions = router.rt.transitions.tick(now);
            let outcomes = router.supervisor.as_mut().map(|s| s.tick(now)).unwrap_or_default();
            self.apply_actions(&id, actions, now);
            self.keepalived_outcomes(&id, outcomes, now);
        }
        if let Some(n) = self.notifier.as_mut() {
            let outcomes = n.tick(&self.registry, now);
            self.report(outcomes);
        }
        self.control.tick(&self.registry, now);
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
        let flushed =
            (self.notifier.as_ref().is_none_or(Notifier::is_idle) && self.control.is_flushed()) || now >= deadline;
        let stopped = self.routers.values().all(|r| r.supervisor.as_ref().is_none_or(Supervisor::is_stopped));
        if !(flushed && stopped) {
            return None;
        }
        // Last chance for writes still failing: one more attempt each.
        self.state_writes.retry_now();
        let written = self.state_writes.flush(&self.layout, usize::MAX, now);
        self.state_written(written);
        if self.config.daemon.on_exit == OnExit::Stop {
            for id in self.routers.keys() {
                remove_router_dir(&self.layout, id);
            }
        }
        Some(if self.failed { Exit::Runtime } else { Exit::Ok })
    }

    // ---- signals ----

    fn signals_ready(&mut self, now: Instant) {
        for signal in self.signals.drain() {
            match signal {
                Signal::SIGCHLD => self.reap(now),
                Signal::SIGHUP => self.reload(now),
                Signal::SIGTERM | Signal::SIGINT if self.stopping.is_none() => self.shutdown(signal, now),
                _ => {}
            }
        }
    }

    fn shutdown(&mut self, signal: Signal, now: Instant) {
        log::info!("received {signal}: stopping (on_exit = {:?})", self.config.daemon.on_exit);
        self.stopping = Some(now + FLUSH);
        self.control.stop_listening(&self.registry);
        let stop = self.config.daemon.on_exit == OnExit::Stop;
        let ids: Vec<String> = self.routers.keys().cloned().collect();
        for id in ids {
            let Some(router) = self.routers.get_mut(&id) else { continue };
            let Some(sup) = router.supervisor.as_mut() else { continue };
            if stop {
                let outcomes = sup.stop(now);
                self.keepalived_outcomes(&id, outcomes, now);
            } else {
                sup.detach();
            }
        }
        if let Some(n) = self.notifier.as_mut() {
            let outcomes = n.retry_now(&self.registry, now);
            self.report(outcomes);
        }
    }

    fn reap(&mut self, now: Instant) {
        for (pid, exit) in spawn::reap() {
            if self.hooks.child_exited(pid, exit) {
                continue;
            }
            let owner = self.routers.iter().find_map(|(id, r)| {
                let ka = r.supervisor.as_ref().is_some_and(|s| s.owns(pid));
                let ct = r.conntrackd.as_ref().is_some_and(|c| c.owns(pid));
                (ka || ct).then(|| (id.clone(), ka))
            });
            let Some((id, is_keepalived)) = owner else { continue };
            let Some(router) = self.routers.get_mut(&id) else { continue };
            if is_keepalived {
                let outcomes = router.supervisor.as_mut().map(|s| s.child_exited(pid, exit, now)).unwrap_or_default();
                self.keepalived_outcomes(&id, outcomes, now);
            } else if let Some(sync) = router.conntrackd.as_mut() {
                let done = sync.exited(pid, exit);
                log_synced(&id, done);
            }
        }
    }

    // ---- routers ----

    fn start_router(&mut self, cfg: RouterConfig, now: Instant) {
        let id = cfg.id.to_string();
        let ns = cfg.namespace.clone();
        let mut router = Router {
            rt: RouterRuntime::new(cfg),
            supervisor: None,
            fifo: None,
            pidfd_token: None,
            conntrackd: None,
            leaving: false,
            replacement: None,
            ha_link: HaLink::Unknown,
            revive: false,
            files_retry: None,
        };
        // The state file lives there for every router, monitor-only ones too.
        let dir = match self.layout.router_dir_fd(&router.rt.cfg.id, true) {
            Ok(dir) => Some(dir),
            Err(e) => {
                log::error!("router {id}: {e}");
                router.rt.set_error(ErrorSource::Files, e.to_string());
                None
            }
        };
        if self.config.daemon.conntrackd_enabled {
            router.conntrackd = Some(ConntrackdSync::new(
                &self.config.daemon.conntrackd_path,
                self.layout.router_dir(&router.rt.cfg.id),
                ns.clone(),
                &id,
            ));
        }
        if router.rt.cfg.keepalived {
            let files_changed = self.sync_files(&mut router, now);
            match dir.as_ref().map(|d| NotifyFifo::create_in(d, NOTIFY_FIFO)) {
                Some(Ok(mut fifo)) => {
                    let token = self.token(Source::Fifo(id.clone()));
                    match self.registry.register(&mut fifo, token, Interest::READABLE) {
                        Ok(()) => router.fifo = Some((fifo, token)),
                        Err(e) => log::warn!("router {id}: cannot watch the notify FIFO: {e}"),
                    }
                }
                Some(Err(e)) => log::warn!("router {id}: {e}"),
                None => {}
            }
            let mut sup = Supervisor::new(&self.config.daemon, &router.rt.cfg, &self.layout, self.debug);
            let outcomes = sup.start(now);
            // An adopted keepalived runs the config it read before we
            // started; if that file just changed, it must re-read it.
            if files_changed && outcomes.iter().any(|o| matches!(o, KaOutcome::Adopted { .. })) {
                sup.sighup(now);
            }
            router.supervisor = Some(sup);
            self.routers.insert(id.clone(), router);
            self.keepalived_outcomes(&id, outcomes, now);
        } else {
            self.routers.insert(id.clone(), router);
        }
        log::info!("router {id}: started{}", if self.routers[&id].rt.cfg.keepalived { "" } else { " (monitor only)" });
        self.attach_namespace(&id, ns, now);
    }

    /// Writes the router's keepalived files with their modes, skipping
    /// those already right; returns whether one changed.
    fn write_files(&self, router: &Router) -> Result<bool, FilesFailed> {
        let cfg = &router.rt.cfg;
        let dir = self
            .layout
            .router_dir_fd(&cfg.id, true)
            .map_err(|e| FilesFailed { message: e.to_string(), changed: false })?;
        let mut changed = false;
        for file in keepalived::router_files(&self.config.daemon, cfg, &self.layout, Secrets::Show) {
            let name = match file.path.file_name() {
                Some(name) if file.path.parent() == Some(dir.path()) => name,
                _ => {
                    let message = format!("{} is not in the router's directory", file.path.display());
                    return Err(FilesFailed { message, changed });
                }
            };
            let current = dir.read(name, file.contents.len() as u64 + 1).ok();
            if current.as_deref() == Some(file.contents.as_bytes()) {
                continue;
            }
            dir.write(name, file.contents.as_bytes(), file.mode)
                .map_err(|e| FilesFailed { message: e.to_string(), changed })?;
            changed = true;
        }
        Ok(changed)
    }

    /// Writes the router's keepalived files and settles the outcome. All
    /// written: the error goes, and the answer is whether keepalived must
    /// re-read them. A failure (full or read-only disk) is shown in
    /// `status`, counted, and retried with backoff; the answer is `false`,
    /// so keepalived is never reloaded onto a config that is not on disk.
    fn sync_files(&mut self, router: &mut Router, now: Instant) -> bool {
        let id = router.rt.cfg.id.to_string();
        let previous = router.files_retry.take();
        if let Some(retry) = &previous {
            self.timers.cancel(retry.timer);
        }
        let changed_before = previous.as_ref().is_some_and(|r| r.changed);
        match self.write_files(router) {
            Ok(changed) => {
                router.rt.clear_error(ErrorSource::Files);
                if let Some(retry) = previous {
                    log::info!("router {id}: keepalived files written after {} failed attempts", retry.failures);
                }
                changed || changed_before
            }
            Err(FilesFailed { message, changed }) => {
                let failures = previous.as_ref().map_or(0, |r| r.failures) + 1;
                let delay = write_retry_delay(failures);
                if router.rt.error(ErrorSource::Files).is_none_or(|e| !e.starts_with(&message)) {
                    log::error!(
                        "router {id}: {message}; not reloading keepalived, retrying in {} ms",
                        delay.as_millis()
                    );
                } else {
                    log::debug!("router {id}: {message} (attempt {failures}); retrying in {} ms", delay.as_millis());
                }
                router.rt.write_failures += 1;
                router.rt.set_error(ErrorSource::Files, format!("{message}; keepalived not reloaded, retrying"));
                let timer = self.timers.schedule(now + delay, Timer::RetryFiles(id));
                router.files_retry = Some(FilesRetry { failures, timer, changed: changed || changed_before });
                false
            }
        }
    }

    /// A router's keepalived files are due for another attempt; once they
    /// are written keepalived re-reads them (one throttled SIGHUP).
    fn retry_files(&mut self, id: &str, now: Instant) {
        let Some(mut router) = self.routers.remove(id) else { return };
        if router.files_retry.is_some()
            && !router.leaving
            && self.sync_files(&mut router, now)
            && let Some(sup) = router.supervisor.as_mut()
        {
            log::info!("router {id}: keepalived files written, reloading keepalived");
            sup.sighup(now);
        }
        self.routers.insert(id.to_owned(), router);
    }

    /// Settles state-file writes: errors shown (and logged once) while a
    /// router's file cannot be written, cleared once it is.
    fn state_written(&mut self, outcomes: Vec<StateWritten>) {
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

    /// Stops a router: keepalived is stopped (SIGTERM, then SIGKILL), and
    /// once it is gone its files go too. Without keepalived it goes at once.
    fn stop_router(&mut self, id: &str, now: Instant) {
        let Some(router) = self.routers.get_mut(id) else { return };
        router.leaving = true;
        match router.supervisor.as_mut() {
            Some(sup) => {
                let outcomes = sup.stop(now);
                self.keepalived_outcomes(id, outcomes, now);
            }
            None => self.forget_router(id),
        }
        self.reap_stopped(now);
    }

    /// Routers that were leaving and whose keepalived is gone: drop them and
    /// start their replacements.
    fn reap_stopped(&mut self, now: Instant) {
        let gone: Vec<String> = self
            .routers
            .iter()
            .filter(|(_, r)| r.leaving && r.supervisor.as_ref().is_none_or(Supervisor::is_stopped))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            let replacement = self.routers.get_mut(&id).and_then(|r| r.replacement.take());
            self.forget_router(&id);
            if let Some(cfg) = replacement {
                self.start_router(cfg, now);
            }
        }
    }

    fn forget_router(&mut self, id: &str) {
        let Some(mut router) = self.routers.remove(id) else { return };
        self.state_writes.forget(id);
        if let Some(retry) = router.files_retry.take() {
            self.timers.cancel(retry.timer);
        }
        if let Some((mut fifo, token)) = router.fifo.take() {
            let _ = self.registry.deregister(&mut fifo);
            self.sources.remove(&token);
            // Closed here; it goes with the router's directory below
            // (removed by name relative to ha_confs, never through a symlink).
            drop(fifo);
        }
        if let Some(token) = router.pidfd_token.take() {
            self.sources.remove(&token);
        }
        remove_router_dir(&self.layout, id);
        let ns = router.rt.cfg.namespace.clone();
        if let Some(watch) = self.namespaces.get_mut(&ns) {
            watch.routers.remove(id);
            if watch.routers.is_empty()
                && let Some((mut socket, token)) = self.namespaces.remove(&ns).and_then(|w| w.socket)
            {
                let _ = self.registry.deregister(&mut socket);
                self.sources.remove(&token);
            }
        }
        if self.namespaces.get(&ns).is_some_and(|w| w.routers.is_empty()) {
            self.namespaces.remove(&ns);
        }
        log::info!("router {id}: removed");
    }

    fn keepalived_outcomes(&mut self, id: &str, outcomes: Vec<KaOutcome>, now: Instant) {
        if outcomes.is_empty() {
            return;
        }
        for outcome in outcomes {
            let Some(router) = self.routers.get_mut(id) else { return };
            let last_error = || {
                router.supervisor.as_ref().and_then(Supervisor::last_error).map_or_else(String::new, |e| e.to_string())
            };
            match outcome {
                KaOutcome::Spawned { pid } => {
                    log::info!("router {id}: keepalived started (pid {pid})");
                    router.rt.clear_error(ErrorSource::Keepalived);
                }
                KaOutcome::Adopted { pid } => {
                    log::info!("router {id}: adopted the running keepalived (pid {pid})");
                    router.rt.clear_error(ErrorSource::Keepalived);
                }
                KaOutcome::Watch => self.register_pidfd(id),
                KaOutcome::Died { pid, exit, respawn_in } => {
                    if router.leaving || self.stopping.is_some() {
                        continue;
                    }
                    let how = exit.map_or_else(|| "its pidfd closed".to_owned(), |e| e.to_string());
                    let message = format!("keepalived (pid {pid}) died: {how}");
                    match respawn_in {
                        None => {
                            log::error!("router {id}: {message}; check_child_processes_action = exit");
                            self.failed = true;
                            return;
                        }
                        Some(delay) => {
                            log::warn!("router {id}: {message}; respawning in {} ms", delay.as_millis());
                            router.rt.set_error(ErrorSource::Keepalived, message);
                        }
                    }
                }
                KaOutcome::SpawnFailed { retry_in } => {
                    let error = last_error();
                    log::error!("router {id}: {error}; retrying in {} ms", retry_in.as_millis());
                    router.rt.set_error(ErrorSource::Keepalived, error);
                }
                KaOutcome::Stopped => log::info!("router {id}: keepalived stopped"),
            }
        }
        self.reap_stopped(now);
        self.finish_revive(id, now);
    }

    /// Gets a router's keepalived going again after its namespace or HA
    /// interface changed under it. [`Revive::Sighup`]: a SIGHUP (throttled
    /// like any reload) makes a running keepalived re-read its interfaces,
    /// without the second or so keepalived takes to stop.
    /// [`Revive::Restart`], or when nothing runs to reload: stop (SIGTERM,
    /// SIGKILL after the grace) then start once stopped, which also starts
    /// at once a keepalived waiting out a respawn backoff. Not for routers
    /// leaving the config.
    fn revive_keepalived(&mut self, id: &str, why: &str, how: Revive, now: Instant) {
        let Some(router) = self.routers.get_mut(id) else { return };
        if router.leaving || self.stopping.is_some() {
            return;
        }
        let Some(sup) = router.supervisor.as_mut() else { return };
        if how == Revive::Sighup && !router.revive {
            match sup.sighup(now) {
                Sighup::Sent => {
                    log::warn!("router {id}: {why}: keepalived reloaded (SIGHUP)");
                    return;
                }
                Sighup::Deferred { at } => {
                    let ms = at.saturating_duration_since(now).as_millis();
                    log::warn!("router {id}: {why}: reloading keepalived (SIGHUP in {ms} ms)");
                    return;
                }
                Sighup::NotRunning | Sighup::Failed => {}
            }
        }
        log::warn!("router {id}: {why}: restarting keepalived");
        router.revive = true;
        let outcomes = sup.stop(now);
        self.keepalived_outcomes(id, outcomes, now);
        self.finish_revive(id, now);
    }

    /// The second half of [`Daemon::revive_keepalived`], once the old
    /// keepalived is gone.
    fn finish_revive(&mut self, id: &str, now: Instant) {
        let Some(router) = self.routers.get_mut(id) else { return };
        if !router.revive || router.leaving || self.stopping.is_some() {
            return;
        }
        let Some(sup) = router.supervisor.as_mut().filter(|s| s.is_stopped()) else { return };
        router.revive = false;
        let outcomes = sup.start(now);
        self.keepalived_outcomes(id, outcomes, now);
    }

    fn register_pidfd(&mut self, id: &str) {
        let token = self.token(Source::Pidfd(id.to_owned()));
        let Some(router) = self.routers.get_mut(id) else { return };
        let Some(sup) = router.supervisor.as_mut() else { return };
        match sup.register_pidfd(&self.registry, token) {
            Ok(()) => router.pidfd_token = Some(token),
            Err(e) => {
                self.sources.remove(&token);
                log::warn!("router {id}: cannot watch adopted keepalived: {e}");
            }
        }
    }

    fn pidfd_ready(&mut self, id: &str, now: Instant) {
        let Some(router) = self.routers.get_mut(id) else { return };
        let outcomes = router.supervisor.as_mut().map(|s| s.pidfd_ready(now)).unwrap_or_default();
        self.keepalived_outcomes(id, outcomes, now);
    }

    fn fifo_ready(&mut self, id: &str, now: Instant) {
        let Some(router) = self.routers.get_mut(id) else { return };
        let Some((fifo, _)) = router.fifo.as_mut() else { return };
        let events = fifo.read();
        for event in events {
            log::debug!("router {id}: keepalived reports {:?} for {}", event.state, event.instance);
            router.rt.keepalived_fault = event.state == KaState::Fault;
        }
        self.feed_raw(id, now);
    }

    // ---- namespaces ----

    fn attach_namespace(&mut self, id: &str, ns: NsKey, now: Instant) {
        if self.netns_dir.is_none() && matches!(ns, Some(Namespace::Named(_))) {
            self.netns_dir = watch_netns_dir(&self.registry, true);
        }
        let watch = self.namespaces.entry(ns.clone()).or_insert_with(|| NsWatch {
            socket: None,
            routers: BTreeSet::new(),
            retry: Retry::new(NS_RETRY),
            retry_pending: false,
            identity: None,
            timer_at: None,
        });
        watch.routers.insert(id.to_owned());
        if watch.socket.is_none() && !watch.retry_pending {
            self.open_namespace(&ns, now);
        } else {
            self.check_keepalived_namespace(id, now);
            self.evaluate(id, now);
        }
    }

    fn open_namespace(&mut self, ns: &NsKey, now: Instant) {
        let Some(watch) = self.namespaces.get_mut(ns) else { return };
        watch.retry_pending = false;
        if watch.socket.is_some() {
            return;
        }
        match RtSocket::open(ns.as_ref(), None) {
            Ok(mut socket) => {
                let token = Token(self.next_token);
                self.next_token += 1;
                if let Err(e) = self.registry.register(&mut socket, token, Interest::READABLE) {
                    log::error!("cannot watch rtnetlink in {}: {e}", ns_name(ns));
                    return;
                }
                self.sources.insert(token, Source::Netlink(ns.clone()));
                let watch = self.namespaces.get_mut(ns).expect("checked above");
                let identity = socket.identity();
                let recreated = watch.identity.is_some() && watch.identity != identity;
                watch.identity = identity;
                watch.socket = Some((socket, token));
                watch.retry = Retry::new(NS_RETRY);
                let routers: Vec<String> = watch.routers.iter().cloned().collect();
                if recreated {
                    log::warn!(
                        "network namespace {} is a new one ({}; routers {})",
                        ns_name(ns),
                        identity.map_or_else(String::new, |i| i.to_string()),
                        routers.join(", ")
                    );
                }
                for id in routers {
                    if let Some(r) = self.routers.get_mut(&id) {
                        r.rt.clear_error(ErrorSource::Namespace);
                        if recreated {
                            r.ha_link = HaLink::Unknown;
                        }
                    }
                    self.check_keepalived_namespace(&id, now);
                }
            }
            Err(e) => {
                let delay = watch.retry.failed();
                watch.retry_pending = true;
                let routers: Vec<String> = watch.routers.iter().cloned().collect();
                if delay < NS_RETRY_FIRST {
                    log::debug!("{e}; retrying in {} ms", delay.as_millis());
                } else {
                    log::error!("{e} (routers {}); retrying in {} s", routers.join(", "), delay.as_secs());
                }
                self.timers.schedule(now + delay, Timer::ReopenNamespace(ns.clone()));
                for id in routers {
                    if let Some(r) = self.routers.get_mut(&id) {
                        r.rt.set_error(ErrorSource::Namespace, e.to_string());
                    }
                }
            }
        }
    }

    /// keepalived must run in the namespace the router's namespace name
    /// means now: one running elsewhere (the namespace was deleted and
    /// re-created, possibly while the daemon was down) is restarted, and one
    /// waiting out a respawn backoff (its namespace was missing) is started
    /// at once.
    fn check_keepalived_namespace(&mut self, id: &str, now: Instant) {
        let Some(router) = self.routers.get(id) else { return };
        let Some(sup) = router.supervisor.as_ref() else { return };
        let Some(want) = self.namespaces.get(&router.rt.cfg.namespace).and_then(|w| w.identity) else { return };
        let why = match sup.pid() {
            Some(pid) => match process_netns(pid) {
                Some(theirs) if theirs != want => {
                    format!("keepalived (pid {pid}) runs in an old instance of {}", ns_name(&router.rt.cfg.namespace))
                }
                _ => return,
            },
            None if sup.next_restart().is_some() => {
                format!("network namespace {} is there now", ns_name(&router.rt.cfg.namespace))
            }
            None => return,
        };
        self.revive_keepalived(id, &why, Revive::Restart, now);
    }

    /// A namespace file under /run/netns appeared or went away.
    fn netns_dir_changed(&mut self, now: Instant) {
        let Some(inotify) = &self.netns_dir else { return };
        let events = inotify.read_events().unwrap_or_default();
        for event in events {
            let Some(name) = event.name.as_ref().and_then(|n| n.to_str()) else { continue };
            let path = format!("{NETNS_RUN_DIR}/{name}");
            let Some(ns) = self.namespaces.keys().find(|k| k.as_ref().is_some_and(|n| n.path() == path)).cloned()
            else {
                continue;
            };
            if event.mask.contains(AddWatchFlags::IN_DELETE) {
                self.namespace_deleted(&ns, now);
            } else if let Some(watch) = self.namespaces.get_mut(&ns).filter(|w| w.socket.is_none()) {
                // `ip netns add` creates the file before it bind-mounts the
                // namespace on it: if it is not ready yet, look again soon.
                watch.retry = Retry::new(NS_RETRY_SOON);
                self.open_namespace(&ns, now);
            }
        }
    }

    /// Closes a namespace's socket (counters kept for `/metrics`).
    fn close_namespace(&mut self, ns: &NsKey) {
        self.netlink_more.retain(|n| n != ns);
        let Some(watch) = self.namespaces.get_mut(ns) else { return };
        watch.timer_at = None;
        if let Some((mut socket, token)) = watch.socket.take() {
            self.netlink_closed.0 += socket.resyncs();
            self.netlink_closed.1 += socket.undecodable();
            let _ = self.registry.deregister(&mut socket);
            self.sources.remove(&token);
        }
    }

    /// Closing our socket lets the kernel free the namespace once nothing
    /// else holds it. Its routers show the error and are `backup` (their
    /// VIP is nowhere to be seen) until it comes back; their keepalived, if
    /// it still runs in the orphaned namespace, is left alone until then
    /// (the namespace's interfaces live on with it, and killing it would
    /// force a failover nobody asked for).
    fn namespace_deleted(&mut self, ns: &NsKey, now: Instant) {
        self.close_namespace(ns);
        let Some(watch) = self.namespaces.get(ns) else { return };
        let routers: Vec<String> = watch.routers.iter().cloned().collect();
        log::error!("network namespace {} was deleted (routers {})", ns_name(ns), routers.join(", "));
        for id in routers {
            if let Some(r) = self.routers.get_mut(&id) {
                r.rt.set_error(ErrorSource::Namespace, format!("network namespace {} was deleted", ns_name(ns)));
                if r.rt.vip_present.is_some() {
                    r.rt.vip_present = Some(false);
                }
            }
            self.feed_raw(&id, now);
        }
    }

    fn netlink_ready(&mut self, ns: &NsKey, now: Instant) {
        let Some(watch) = self.namespaces.get_mut(ns) else { return };
        let Some((socket, _)) = watch.socket.as_mut() else { return };
        let mut changes = Vec::new();
        let result = socket.read(&mut self.scratch, now, &mut |c| changes.push(c));
        if matches!(result, Ok(Read::More)) && !self.netlink_more.contains(ns) {
            self.netlink_more.push(ns.clone());
        }
        if let Some(at) = socket.deadline().filter(|at| watch.timer_at != Some(*at)) {
            watch.timer_at = Some(at);
            self.timers.schedule(at, Timer::Netlink(ns.clone()));
        }
        let routers: Vec<String> = watch.routers.iter().cloned().collect();
        for change in changes {
            match change {
                Change::Resynced => {
                    for id in &routers {
                        self.evaluate(id, now);
                    }
                }
                Change::Overrun => {
                    log::warn!("rtnetlink overrun in {}: discarding what is queued and re-reading", ns_name(ns));
                }
                Change::Addr { ifname, cidr, added } => {
                    for id in &routers {
                        let Some(r) = self.routers.get_mut(id) else { continue };
                        if r.rt.cfg.ha_interface == ifname && r.rt.cfg.primary_vip == cidr && r.rt.vip_present.is_some()
                        {
                            r.rt.vip_present = Some(added);
                            self.feed_raw(id, now);
                        }
                    }
                }
                Change::LinkGone { ifname } | Change::LinkAdded { ifname } => {
                    for id in &routers {
                        if self.routers.get(id).is_some_and(|r| r.rt.cfg.ha_interface == ifname) {
                            self.evaluate(id, now);
                        }
                    }
                }
            }
        }
        if let Err(e) = result {
            log::error!("{e}; reopening");
            self.close_namespace(ns);
            self.open_namespace(ns, now);
        }
    }

    /// Re-derives a router's VIP presence and HA interface from its
    /// namespace's view; revives keepalived when the HA interface came
    /// back as a new interface.
    fn evaluate(&mut self, id: &str, now: Instant) {
        let Some(router) = self.routers.get(id) else { return };
        let Some(watch) = self.namespaces.get(&router.rt.cfg.namespace) else { return };
        let Some((socket, _)) = watch.socket.as_ref().filter(|(s, _)| s.is_synced()) else { return };
        let view = socket.view();
        let index = view.link_index(&router.rt.cfg.ha_interface);
        let present = view.has_addr(&router.rt.cfg.ha_interface, &router.rt.cfg.primary_vip);
        let Some(router) = self.routers.get_mut(id) else { return };
        let (ha_link, came_back) = router.ha_link.observe(index);
        router.ha_link = ha_link;
        if index.is_some() {
            router.rt.clear_error(ErrorSource::HaInterface);
        } else {
            let message = format!(
                "HA interface {} not found in {}",
                router.rt.cfg.ha_interface,
                ns_name(&router.rt.cfg.namespace)
            );
            if router.rt.last_error() != Some(message.as_str()) {
                log::warn!("router {id}: {message}");
            }
            router.rt.set_error(ErrorSource::HaInterface, message);
        }
        router.rt.vip_present = Some(present);
        let why = format!(
            "HA interface {} is back as a new interface (ifindex {})",
            router.rt.cfg.ha_interface,
            index.unwrap_or_default()
        );
        self.feed_raw(id, now);
        if came_back {
            self.revive_keepalived(id, &why, Revive::Sighup, now);
        }
    }

    // ---- transitions ----

    fn feed_raw(&mut self, id: &str, now: Instant) {
        let Some(router) = self.routers.get_mut(id) else { return };
        let Some(raw) = router.rt.raw_input() else { return };
        let actions = router.rt.transitions.raw_change(raw, now);
        self.apply_actions(id, actions, now);
    }

    fn apply_actions(&mut self, id: &str, actions: Vec<Action>, now: Instant) {
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
    fn announce(&mut self, id: &str, ns: Option<&Namespace>, state: State, previous: Option<State>) {
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

    fn report(&mut self, outcomes: Vec<crate::notify::Outcome>) {
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

    // ---- control socket ----

    fn status_rows(&self) -> Vec<RouterStatus> {
        self.routers.values().map(status_row).collect()
    }

    /// Answers one control request.
    fn handle(&mut self, incoming: Incoming, now: Instant) -> Reply {
        let Incoming { uid, request, .. } = incoming;
        let text = api::wants_text(request.header("accept"));
        let json =
            |status: u16, body: String| Reply::Response(http::response(status, "application/json", body.as_bytes()));
        let plain = |status: u16, body: &str| {
            Reply::Response(http::response(status, "text/plain; charset=utf-8", format!("{body}\n").as_bytes()))
        };
        match api::route(&request.method, &request.path) {
            Route::Notify => {
                if uid != 0 && !self.allowed_uids.contains(&uid) {
                    return plain(403, &format!("uid {uid} may not post state changes"));
                }
                let (Some(id), Some(state)) =
                    (request.header("x-neutron-router-id"), request.header("x-neutron-state"))
                else {
                    return plain(400, "X-Neutron-Router-Id and X-Neutron-State are required");
                };
                let Some(state) = State::parse(state) else {
                    return plain(400, "X-Neutron-State must be primary, backup or fault");
                };
                if crate::core::ident::RouterId::parse(id).is_err() {
                    return plain(400, "invalid router id");
                }
                let id = id.to_owned();
                let Some(router) = self.routers.get_mut(&id) else {
                    return plain(404, &format!("no router {id}"));
                };
                log::info!("router {id}: state {state} posted by uid {uid}");
                let actions = router.rt.transitions.raw_change(state, now);
                self.apply_actions(&id, actions, now);
                plain(200, "ok")
            }
            Route::Routers => {
                let rows = self.status_rows();
                if text {
                    Reply::Response(http::response(
                        200,
                        "text/plain; charset=utf-8",
                        api::routers_table(&rows).as_bytes(),
                    ))
                } else {
                    json(200, api::routers_json(&rows))
                }
            }
            Route::Router(id) => {
                if crate::core::ident::RouterId::parse(&id).is_err() {
                    return plain(400, "invalid router id");
                }
                match self.routers.get(&id) {
                    Some(router) => {
                        let row = status_row(router);
                        if text {
                            Reply::Response(http::response(
                                200,
                                "text/plain; charset=utf-8",
                                api::routers_table(&[row]).as_bytes(),
                            ))
                        } else {
                            json(200, format!("{}\n", api::router_json(&row)))
                        }
                    }
                    None => plain(404, &format!("no router {id}")),
                }
            }
            Route::Events => {
                let content_type = if text { "text/plain; charset=utf-8" } else { "application/x-ndjson" };
                let head = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n");
                Reply::Subscribe { head: head.into_bytes(), text }
            }
            Route::Metrics => {
                let mut counters = self.counters.clone();
                let live = self.namespaces.values().filter_map(|w| w.socket.as_ref());
                counters.netlink_resyncs = self.netlink_closed.0 + live.clone().map(|(s, _)| s.resyncs()).sum::<u64>();
                counters.netlink_undecodable = self.netlink_closed.1 + live.map(|(s, _)| s.undecodable()).sum::<u64>();
                counters.control_refused = self.control.refused;
                counters.control_evicted = self.control.evicted;
                let body = api::metrics(&self.status_rows(), &counters);
                Reply::Response(http::response(200, "text/plain; version=0.0.4", body.as_bytes()))
            }
            Route::MethodNotAllowed => plain(405, "method not allowed"),
            Route::NotFound => plain(404, "not found"),
        }
    }

    // ---- reload ----

    fn reload(&mut self, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        let parsed = match config::load(&self.config_path) {
            Ok(parsed) => parsed,
            Err(errors) => {
                for e in &errors.0 {
                    log::error!("reload rejected, keeping the running config: {e}");
                }
                return;
            }
        };
        for w in &parsed.warnings {
            log::warn!("{w}");
        }
        let new = parsed.config;
        let mut diff = reload::diff(&self.config, &new);
        // A router whose files could not be written was not applied: this
        // reload writes them again, whatever the diff says.
        let (unwritten, unchanged) = std::mem::take(&mut diff.unchanged)
            .into_iter()
            .partition(|id| self.routers.get(id).is_some_and(|r| r.files_retry.is_some() && !r.leaving));
        diff.unchanged = unchanged;
        diff.updated.extend::<Vec<String>>(unwritten);
        log::info!(
            "reloading {}: {} added, {} removed, {} updated, {} restarted, {} unchanged",
            self.config_path.display(),
            diff.added.len(),
            diff.removed.len(),
            diff.updated.len(),
            diff.restarted.len(),
            diff.unchanged.len()
        );
        for (what, old, new_value) in [
            ("socket", self.config.daemon.socket.display().to_string(), new.daemon.socket.display().to_string()),
            (
                "state_path",
                self.config.daemon.state_path.display().to_string(),
                new.daemon.state_path.display().to_string(),
            ),
            (
                "ha_confs_path",
                self.config.daemon.ha_confs_path.display().to_string(),
                new.daemon.ha_confs_path.display().to_string(),
            ),
        ] {
            if old != new_value {
                log::warn!("{what} changed from {old} to {new_value}: takes effect on restart");
            }
        }
        let old = std::mem::replace(&mut self.config, new.clone());
        self.config.daemon.ha_confs_path = old.daemon.ha_confs_path.clone();
        self.config.daemon.state_path = old.daemon.state_path.clone();
        self.config.daemon.socket = old.daemon.socket.clone();
        if old.daemon.notify_agent_socket != self.config.daemon.notify_agent_socket {
            self.notifier = notifier_for(&self.config);
        }
        for id in &diff.removed {
            self.stop_router(id, now);
        }
        for id in &diff.restarted {
            let cfg = new.router(id).cloned();
            if let Some(router) = self.routers.get_mut(id) {
                router.replacement = cfg;
            }
            self.stop_router(id, now);
        }
        for id in &diff.updated {
            let Some(cfg) = new.router(id).cloned() else { continue };
            self.update_router(id, cfg, now);
        }
        for id in &diff.added {
            if let Some(cfg) = new.router(id).cloned() {
                self.start_router(cfg, now);
            }
        }
    }

    fn update_router(&mut self, id: &str, cfg: RouterConfig, now: Instant) {
        let Some(mut router) = self.routers.remove(id) else { return };
        router.rt.transitions.set_advert_int(Duration::from_secs(u64::from(cfg.advert_int)));
        router.rt.cfg = cfg;
        if !self.config.daemon.conntrackd_enabled {
            router.conntrackd = None;
        } else if router.conntrackd.is_none() {
            router.conntrackd = Some(ConntrackdSync::new(
                &self.config.daemon.conntrackd_path,
                self.layout.router_dir(&router.rt.cfg.id),
                router.rt.cfg.namespace.clone(),
                id,
            ));
        }
        let changed = self.sync_files(&mut router, now);
        if let Some(sup) = router.supervisor.as_mut() {
            sup.update(&self.config.daemon, &router.rt.cfg);
            if changed {
                log::info!("router {id}: keepalived.conf changed, reloading keepalived");
                sup.sighup(now);
            }
        }
        self.routers.insert(id.to_owned(), router);
        self.evaluate(id, now);
    }
}

/// One socket per namespace, a FIFO per router, pidfds, connections: a
/// node with a thousand routers needs more descriptors than the usual soft
/// limit of 1024, and the hard limit is there to be used.
fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            let wanted = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                log::warn!("cannot raise the open-file limit: {}", std::io::Error::last_os_error());
            }
        }
    }
}

fn status_row(router: &Router) -> RouterStatus {
    let cfg = &router.rt.cfg;
    let sup = router.supervisor.as_ref();
    RouterStatus {
        id: cfg.id.to_string(),
        namespace: cfg.namespace.as_ref().map(|n| n.to_string()),
        ha_interface: cfg.ha_interface.clone(),
        vrid: cfg.vrid,
        primary_vip: cfg.primary_vip.to_string(),
        state: router.rt.transitions.raw(),
        effective: router.rt.transitions.effective(),
        since: router.rt.since,
        supervised: cfg.keepalived,
        keepalived_pid: sup.and_then(Supervisor::pid),
        restarts: sup.map_or(0, Supervisor::restarts),
        transitions: router.rt.effective_changes,
        last_error: router.rt.last_error().map(str::to_owned),
        write_failures: router.rt.write_failures,
        writes_pending: u32::from(router.rt.state_write_pending) + u32::from(router.files_retry.is_some()),
    }
}

/// Raw states waiting to be written to their state files, oldest first;
/// a router changing again before its write only changes what is written.
///
/// The write (temp file, fdatasync, rename) costs about 0.35 ms on a plain
/// disk: done inline, a node-wide flip of 1000 routers held every agent
/// notification behind 350 ms of file writes. Queued, the writes still
/// happen in the same loop pass when there are few, and in batches between
/// I/O events when there are many.
///
/// A write that fails (full or read-only disk) is not dropped: the router
/// stays pending and is tried again after [`write_retry_delay`], with
/// whatever state is latest by then, until it is written or the router is
/// forgotten. Invariant: a router is either in `order` (to write now) or
/// has a retry timer, never both, and only while it is in `pending`.
#[derive(Default)]
struct StateWrites {
    order: std::collections::VecDeque<String>,
    pending: HashMap<String, PendingState>,
    retries: Timers<String>,
}

struct PendingState {
    state: State,
    /// Failed attempts in a row.
    failures: u32,
    /// Set while waiting for a retry.
    retry: Option<TimerId>,
}

/// The end of one attempt to write a state file.
#[derive(Debug, PartialEq, Eq)]
enum StateWritten {
    Written { id: String, state: State, after_failures: u32 },
    Failed { id: String, state: State, error: String, failures: u32, retry_in: Duration },
}

impl StateWrites {
    fn queue(&mut self, id: &str, state: State) {
        match self.pending.get_mut(id) {
            // Latest wins; a router waiting for a retry keeps its backoff.
            Some(pending) => pending.state = state,
            None => {
                self.pending.insert(id.to_owned(), PendingState { state, failures: 0, retry: None });
                self.order.push_back(id.to_owned());
            }
        }
    }

    fn forget(&mut self, id: &str) {
        if let Some(timer) = self.pending.remove(id).and_then(|p| p.retry) {
            self.retries.cancel(timer);
        }
        self.order.retain(|i| i != id);
    }

    /// `now` when writes are due, else the next retry.
    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        if self.order.is_empty() { self.retries.next_deadline() } else { Some(now) }
    }

    /// Every router waiting for a retry is due now (shutdown).
    fn retry_now(&mut self) {
        while let Some(at) = self.retries.next_deadline() {
            self.promote_due(at);
        }
    }

    fn promote_due(&mut self, now: Instant) {
        while let Some(id) = self.retries.pop_due(now) {
            if let Some(pending) = self.pending.get_mut(&id) {
                pending.retry = None;
                self.order.push_back(id);
            }
        }
    }

    /// Writes up to `at_most` due state files, oldest first.
    fn flush(&mut self, layout: &Layout, at_most: usize, now: Instant) -> Vec<StateWritten> {
        self.promote_due(now);
        let mut out = Vec::new();
        for _ in 0..at_most {
            let Some(id) = self.order.pop_front() else { break };
            let Some(pending) = self.pending.get_mut(&id) else { continue };
            let Ok(router) = crate::core::ident::RouterId::parse(&id) else {
                self.pending.remove(&id);
                continue;
            };
            let state = pending.state;
            match layout.write_router_file(&router, STATE_FILE, state.as_str().as_bytes(), 0o644) {
                Ok(()) => {
                    let after_failures = pending.failures;
                    self.pending.remove(&id);
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

fn notifier_for(config: &Config) -> Option<Notifier> {
    config.daemon.notify_agent_socket.clone().map(|path| Notifier::new(path, NOTIFIER_BASE, NOTIFIER_IN_FLIGHT))
}

/// Watches /run/netns for namespaces created and deleted under us, so a
/// deleted namespace is reported at once and a re-created one picked up,
/// without polling (our own socket keeps a deleted namespace alive, so
/// netlink alone never tells). With `create`, the directory is made as
/// `ip netns add` would make it (0755) when it does not exist yet;
/// otherwise `None` until then.
fn watch_netns_dir(registry: &Registry, create: bool) -> Option<Inotify> {
    if create
        && let Err(e) = std::fs::DirBuilder::new().mode(0o755).create(NETNS_RUN_DIR)
        && e.kind() != std::io::ErrorKind::AlreadyExists
    {
        log::warn!("cannot create {NETNS_RUN_DIR} to watch it: {e}");
    }
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
    inotify.add_watch(NETNS_RUN_DIR, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_DELETE).ok()?;
    registry.register(&mut SourceFd(&inotify.as_fd().as_raw_fd()), NETNS_DIR, Interest::READABLE).ok()?;
    Some(inotify)
}

fn remove_router_dir(layout: &Layout, id: &str) {
    let Ok(id) = crate::core::ident::RouterId::parse(id) else { return };
    if let Err(e) = layout.remove_router_dir(&id) {
        log::warn!("router {id}: cannot remove its directory: {e}");
    }
}

/// Issue 15: whatever the daemon creates is private unless it sets a mode
/// (umask 077; directories and files get theirs explicitly), and a crash
/// leaves no core file holding the VRRP password (not dumpable, which also
/// keeps same-uid processes without CAP_SYS_PTRACE out of its memory).
/// Called at start and again after detaching (which sets its own umask).
fn private_process() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("harouterd: cannot make the process non-dumpable: {e}");
    }
}

/// The network namespace process `pid` runs in.
fn process_netns(pid: u32) -> Option<NsIdentity> {
    let stat = nix::sys::stat::stat(format!("/proc/{pid}/ns/net").as_str()).ok()?;
    Some(NsIdentity { dev: stat.st_dev, ino: stat.st_ino })
}

fn ns_name(ns: &NsKey) -> String {
    ns.as_ref().map_or_else(|| "the daemon's namespace".to_owned(), |n| n.to_string())
}

fn resolve_uids(principals: &[Principal]) -> Result<Vec<u32>, String> {
    principals
        .iter()
        .map(|p| match p {
            Principal::Id(uid) => Ok(*uid),
            Principal::Name(name) => match nix::unistd::User::from_name(name) {
                Ok(Some(user)) => Ok(user.uid.as_raw()),
                Ok(None) => Err(format!("allowed_uids: no user '{name}'")),
                Err(e) => Err(format!("allowed_uids: cannot look up '{name}': {e}")),
            },
        })
        .collect()
}

/// As Neutron's monitor: the Synced line after every attempt, whatever the
/// commands' exit status; an ERROR line naming each failed command first.
fn log_synced(id: &str, done: Vec<Synced>) {
    for Synced { state, failures } in done {
        if !failures.is_empty() {
            log::error!("Failed to sync connection tracking state on {state} for router {id}: {}", failures.join("; "));
        }
        log::info!("Synced connection tracking state on {state} for router {id}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    fn state(dir: &TempDir, id: &str) -> Option<String> {
        std::fs::read_to_string(dir.join(id).join("state")).ok()
    }

    #[test]
    fn state_writes_are_latest_wins_in_order_and_bounded_per_pass() {
        let dir = TempDir::new("statewrites");
        for id in ["r1", "r2", "r3"] {
            std::fs::create_dir(dir.join(id)).unwrap();
        }
        let layout = Layout::new(&dir);
        let mut writes = StateWrites::default();
        writes.queue("r1", State::Primary);
        writes.queue("r2", State::Fault);
        writes.queue("r1", State::Backup);
        writes.queue("r3", State::Primary);
        writes.forget("r3");
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
        assert_eq!(writes.next_deadline(now), None);
    }

    #[test]
    fn a_failed_state_write_is_retried_with_backoff_and_the_latest_state_wins() {
        let dir = TempDir::new("statewrites-retry");
        let layout = Layout::new(&dir);
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut writes = StateWrites::default();
        // r1's directory is missing: the write fails (ENOENT), as it would
        // on a full or read-only disk.
        writes.queue("r1", State::Primary);
        let out = writes.flush(&layout, usize::MAX, t0);
        let [StateWritten::Failed { id, state: State::Primary, error, failures: 1, retry_in }] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!((id.as_str(), *retry_in), ("r1", Duration::from_millis(100)));
        assert!(error.contains("r1/state") && error.contains("No such file or directory"), "{error}");
        assert_eq!(writes.next_deadline(t0), Some(ms(100)), "waits for the retry: no busy loop");
        assert!(!writes.pending.is_empty(), "not forgotten");
        // Changes meanwhile: only the latest is kept, the backoff too.
        writes.queue("r1", State::Backup);
        writes.queue("r1", State::Fault);
        assert_eq!(writes.next_deadline(ms(10)), Some(ms(100)));
        assert!(writes.flush(&layout, usize::MAX, ms(99)).is_empty(), "not due yet");
        let out = writes.flush(&layout, usize::MAX, ms(100));
        assert!(matches!(&out[..], [StateWritten::Failed { failures: 2, state: State::Fault, .. }]), "{out:?}");
        assert_eq!(writes.next_deadline(ms(100)), Some(ms(300)), "the delay doubles");
        // Space is back: the next retry writes the latest state.
        std::fs::create_dir(dir.join("r1")).unwrap();
        let out = writes.flush(&layout, usize::MAX, ms(300));
        assert_eq!(out, [StateWritten::Written { id: "r1".into(), state: State::Fault, after_failures: 2 }], "{out:?}");
        assert_eq!(state(&dir, "r1").as_deref(), Some("fault"));
        assert!(writes.pending.is_empty() && writes.next_deadline(ms(300)).is_none());
        // A failing router that is forgotten leaves no retry behind.
        writes.queue("r2", State::Primary);
        writes.flush(&layout, usize::MAX, ms(400));
        writes.forget("r2");
        assert!(writes.pending.is_empty() && writes.next_deadline(ms(400)).is_none());
        // Shutdown: every waiting router is tried once more at once.
        writes.queue("r3", State::Backup);
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

    #[test]
    fn ha_interface_back_as_a_new_interface_revives_keepalived() {
        use HaLink::{Missing, Present, Unknown};
        // Seen for the first time: whatever keepalived did, nothing is known
        // to be stale.
        assert_eq!(Unknown.observe(Some(7)), (Present(7), false));
        assert_eq!(Unknown.observe(None), (Missing, false));
        assert_eq!(Present(7).observe(Some(7)), (Present(7), false));
        // Deleted, then back: revive (keepalived holds the old index, or
        // exited when it found no interface).
        assert_eq!(Present(7).observe(None), (Missing, false));
        assert_eq!(Missing.observe(None), (Missing, false));
        assert_eq!(Missing.observe(Some(9)), (Present(9), true));
        // Deleted and re-created between two looks (one read, or an
        // overrun's re-dump): the index tells.
        assert_eq!(Present(7).observe(Some(9)), (Present(9), true));
    }
}
