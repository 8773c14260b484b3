//! The state-change monitor: the drop-in for Neutron's per-router
//! `neutron-keepalived-state-change` (SPEC section 4), once its process is
//! set up (`cmd/state_change.rs`).
//!
//! One router, one rtnetlink socket inside its namespace, one event loop.
//! The monitored CIDR present on the monitored interface means `primary`,
//! absent means `backup`. Each change (and the initial state, at once) is
//! POSTed to the L3 agent (once conntrackd is synced, when enabled) and
//! written to `CONF_DIR/state`; the log lines are the ones Neutron's tests
//! and operators grep for.
//!
//! Invariants: a state is reported only when it differs from the last one
//! (an address update that changes nothing is not a transition), and the
//! loop never blocks: conntrackd runs as reaped children, the agent is
//! notified through the non-blocking [`Notifier`]. **Nothing on the disk
//! path delays a notification**: the request is on the agent's socket (or
//! conntrackd's sync started) before the state file is written, and the
//! file is written without a sync (temp file, rename: microseconds); its
//! `fdatasync` waits for quiet time ([`SyncLater`]), so a slow or busy disk
//! never sits between an address change and the agent. The log therefore
//! still says `Wrote router ID state S` before `Notified agent router ID,
//! state S`: the latter is logged when the agent's answer arrives.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::{Interest, Token};
use nix::sys::signal::Signal;

use crate::Exit;
use crate::conntrackd::sync::{ConntrackdSync, Synced};
use crate::core::backoff::{Backoff, Retry};
use crate::core::ident::{Namespace, RouterId, namespace_name};
use crate::core::net::Cidr;
use crate::core::state::State;
use crate::core::sync_later::SyncLater;
use crate::netlink::{Change, NetlinkError, RECV_BUFFER, Read, RtSocket, VipWatch};
use crate::notify::{Delivery, Notifier};
use crate::sys::child_output::ChildOutputs;
use crate::sys::event_loop::{EventLoop, Owner, Signals, Sources, Timers, earliest};
use crate::sys::files::{self, nofollow};
use crate::sys::netns::{NetnsDirWatch, NetnsError};
use crate::sys::{privdrop, process, spawn};

/// The agent's socket under `--state_path` (Neutron's
/// `get_keepalived_state_change_socket_path`).
pub const AGENT_SOCKET_NAME: &str = "keepalived-state-change";

/// Reopening a namespace that was missing: first retry after this, doubling.
const REOPEN: Backoff = Backoff::new(Duration::from_millis(500), REOPEN_MAX);
const REOPEN_MAX: Duration = Duration::from_secs(30);
/// First retry once the namespace file appeared: `ip netns add` creates
/// it just before it bind-mounts the namespace on it.
const REOPEN_SOON: Backoff = Backoff::new(Duration::from_millis(50), REOPEN_MAX);

/// The monitor's own kinds of sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Signals,
    Netlink,
    /// The inotify watch on /run/netns.
    NetnsDir,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    ReopenNetlink,
}

/// What the process set-up hands the monitor (`cmd/state_change.rs`).
pub struct Parts {
    pub router: RouterId,
    pub namespace: Option<Namespace>,
    /// `--conf_dir`, and the directory itself, opened without following
    /// links others could plant: the state file is written relative to it.
    pub conf_dir: PathBuf,
    pub conf_dir_fd: Option<OwnedFd>,
    pub iface: String,
    /// `None` when `--monitor_cidr` is not a CIDR: nothing can match.
    pub cidr: Option<Cidr>,
    pub conntrackd: Option<ConntrackdSync>,
    /// Where the agent listens.
    pub agent_socket: PathBuf,
}

pub struct Monitor {
    router: RouterId,
    namespace: Option<Namespace>,
    conf_dir: PathBuf,
    conf_dir_fd: Option<OwnedFd>,
    iface: String,
    cidr: Option<Cidr>,
    state: Option<State>,
    socket: Option<(RtSocket, Token)>,
    scratch: Vec<u8>,
    conntrackd: Option<ConntrackdSync>,
    notifier: Notifier,
    timers: Timers<Timer>,
    reopen: Retry,
    /// /run/netns, watched when `--namespace` lives there: our own socket
    /// keeps a deleted namespace alive, so netlink alone never tells.
    netns_dir: Option<NetnsDirWatch>,
    /// The last read stopped at its budget with data still queued.
    more: bool,
    /// Re-entering the namespace was refused (EPERM), already logged.
    reopen_denied: bool,
    event_loop: EventLoop,
    sources: Sources<Source>,
    signals: Signals,
    /// What conntrackd writes.
    outputs: ChildOutputs,
    /// The state file, written and not synced yet.
    unsynced: SyncLater<()>,
    /// What start-up alone needed is given back (once the initial state
    /// is reported: [`process::release_startup_memory`]).
    released: bool,
}

impl Monitor {
    /// The monitor, its signals and its /run/netns watch registered with
    /// `event_loop`; nothing is watched in the namespace yet.
    pub fn new(
        parts: Parts,
        event_loop: EventLoop,
        mut signals: Signals,
        netns_dir: Option<NetnsDirWatch>,
    ) -> Result<Monitor, String> {
        let registry = event_loop.registry().try_clone().map_err(|e| format!("cannot clone the poll registry: {e}"))?;
        let mut sources = Sources::new(registry);
        sources
            .register(&mut signals, Owner::Loop(Source::Signals), Interest::READABLE)
            .map_err(|e| format!("cannot watch signals: {e}"))?;
        let netns_dir = netns_dir.and_then(|mut watch| {
            match sources.register(&mut watch, Owner::Loop(Source::NetnsDir), Interest::READABLE) {
                Ok(_) => Some(watch),
                Err(e) => {
                    log::warn!("cannot watch /run/netns: {e}; a deleted namespace will not be noticed");
                    None
                }
            }
        });
        let Parts { router, namespace, conf_dir, conf_dir_fd, iface, cidr, conntrackd, agent_socket } = parts;
        Ok(Monitor {
            router,
            namespace,
            conf_dir,
            conf_dir_fd,
            iface,
            cidr,
            state: None,
            socket: None,
            scratch: Vec::with_capacity(RECV_BUFFER),
            conntrackd,
            notifier: Notifier::new(agent_socket, 1),
            timers: Timers::default(),
            reopen: Retry::new(REOPEN),
            netns_dir,
            more: false,
            reopen_denied: false,
            event_loop,
            sources,
            signals,
            outputs: ChildOutputs::new(),
            unsynced: SyncLater::default(),
            released: false,
        })
    }

    /// Starts watching with the socket opened at start-up; `Err` (no
    /// namespace, a bad `--monitor_cidr`) reports `backup` at once, as
    /// Neutron's monitor does, and keeps trying the namespace.
    pub fn start(&mut self, initial: Result<RtSocket, String>, now: Instant) {
        let failure = match initial {
            Ok(socket) => {
                self.attach(socket);
                return;
            }
            Err(reason) => reason,
        };
        if self.cidr.is_some() {
            self.schedule_reopen(now);
        }
        log::error!("Failed to get initial status of router {}: {failure}", self.router);
        log::warn!("Timeout reading the initial status of router {}, state is set to \"backup\".", self.router);
        self.transition(State::Backup, now);
    }

    /// Runs until SIGTERM/SIGINT.
    pub fn run(&mut self) -> Exit {
        loop {
            self.outputs.adopt(&mut self.sources, spawn::take_outputs(), Instant::now());
            let deadline = earliest([
                self.timers.next_deadline(),
                self.notifier.next_deadline(),
                self.netlink_deadline(Instant::now()),
                self.unsynced.deadline(),
            ]);
            let Some(tokens) = self.event_loop.ready_tokens(deadline) else { return Exit::Runtime };
            for token in tokens {
                let now = Instant::now();
                match self.sources.owner(token).cloned() {
                    Some(Owner::Loop(Source::Signals)) => {
                        for signal in self.signals.drain() {
                            match signal {
                                Signal::SIGTERM | Signal::SIGINT => {
                                    log::info!("Received {signal}, exiting (router {})", self.router);
                                    return Exit::Ok;
                                }
                                Signal::SIGCHLD => self.reap(now),
                                _ => log::debug!("ignoring {signal}"),
                            }
                        }
                    }
                    Some(Owner::Loop(Source::Netlink)) => self.netlink_ready(now),
                    Some(Owner::Loop(Source::NetnsDir)) => self.netns_dir_changed(now),
                    Some(Owner::ChildOutput) => self.outputs.ready(&mut self.sources, token, now),
                    Some(Owner::Notifier) => {
                        let deliveries = self.notifier.ready(&mut self.sources, token, now);
                        log_deliveries(deliveries);
                    }
                    Some(Owner::Control | Owner::Metrics) | None => {}
                }
            }
            let now = Instant::now();
            while let Some(timer) = self.timers.pop_due(now) {
                match timer {
                    Timer::ReopenNetlink => self.reopen(now),
                }
            }
            if self.netlink_deadline(now).is_some_and(|d| d <= now) {
                self.netlink_ready(now);
            }
            let deliveries = self.notifier.tick(&mut self.sources, now);
            log_deliveries(deliveries);
            if !self.unsynced.take_due(now, 1).is_empty() {
                self.sync_state();
            }
            if !self.released && self.state.is_some() {
                // A node runs one monitor per router: each pays for what it
                // keeps mapped.
                self.released = true;
                let kib = process::release_startup_memory();
                log::debug!("router {}: {kib} KiB of start-up pages given back", self.router);
            }
        }
    }

    fn attach(&mut self, mut socket: RtSocket) {
        match self.sources.register(&mut socket, Owner::Loop(Source::Netlink), Interest::READABLE) {
            Ok(token) => self.socket = Some((socket, token)),
            Err(e) => log::error!("cannot watch the rtnetlink socket of router {}: {e}", self.router),
        }
    }

    fn schedule_reopen(&mut self, now: Instant) {
        self.timers.schedule(now + self.reopen.failed(), Timer::ReopenNetlink);
    }

    /// The namespace was missing: try again, with backoff, so a namespace
    /// created late is still monitored.
    fn reopen(&mut self, now: Instant) {
        if self.socket.is_some() {
            return;
        }
        // Dropped to a user: CAP_SYS_ADMIN is permitted (with conntrackd),
        // never effective, but for this.
        match privdrop::with_effective(privdrop::SETNS_CAPS, || RtSocket::open(self.namespace.as_ref(), None)) {
            Ok(socket) => {
                log::info!("Monitoring router {} in {}", self.router, namespace_name(self.namespace.as_ref()));
                self.attach(socket);
            }
            // Without CAP_SYS_ADMIN (dropped to `--user`) the namespace can
            // never be entered again: say so once, plainly.
            Err(e @ NetlinkError::Namespace(NetnsError::Enter { source: nix::Error::EPERM, .. }))
                if !self.reopen_denied =>
            {
                self.reopen_denied = true;
                log::warn!(
                    "router {}: {e}; state stays backup (entering a namespace needs CAP_SYS_ADMIN)",
                    self.router
                );
                self.schedule_reopen(now);
            }
            Err(e) => {
                log::debug!("router {}: {e}", self.router);
                self.schedule_reopen(now);
            }
        }
    }

    /// When the socket must be read without readiness: now if the last
    /// read left data behind, or when a delayed re-dump is due.
    fn netlink_deadline(&self, now: Instant) -> Option<Instant> {
        let (socket, _) = self.socket.as_ref()?;
        if self.more { Some(now) } else { socket.deadline() }
    }

    fn netlink_ready(&mut self, now: Instant) {
        let Some((socket, _)) = self.socket.as_mut() else { return };
        let mut changes = Vec::new();
        let result = socket.read(&mut self.scratch, now, &mut |c| changes.push(c));
        self.more = matches!(result, Ok(Read::More));
        for change in changes {
            self.apply(change, now);
        }
        if let Err(e) = result {
            log::error!("router {}: {e}; reopening", self.router);
            self.close();
            self.schedule_reopen(now);
        }
    }

    fn close(&mut self) {
        self.more = false;
        if let Some((mut socket, token)) = self.socket.take() {
            self.sources.deregister(&mut socket, token);
        }
    }

    /// A file under /run/netns appeared or went away. Ours deleted: the
    /// router is `backup` (its VIP is nowhere to be seen) and the socket is
    /// closed so the old namespace can go; ours (re-)created: it is a new
    /// namespace, watched from a fresh dump.
    fn netns_dir_changed(&mut self, now: Instant) {
        let Some(namespace) = &self.namespace else { return };
        let Some(changes) = self.netns_dir.as_ref().map(NetnsDirWatch::changes) else { return };
        let ours = namespace.path();
        for change in changes {
            if change.path != ours {
                continue;
            }
            if change.deleted {
                log::warn!(
                    "network namespace {} was deleted; router {} is backup until it is back",
                    namespace_name(self.namespace.as_ref()),
                    self.router
                );
                self.close();
                self.transition(State::Backup, now);
            } else if self.socket.is_none() {
                self.reopen = Retry::new(REOPEN_SOON);
                self.reopen(now);
            }
        }
    }

    fn apply(&mut self, change: Change, now: Instant) {
        let Some(cidr) = self.cidr else { return };
        let vip = VipWatch { ifname: &self.iface, cidr: &cidr };
        match change {
            Change::Resynced => {
                let Some((socket, _)) = &self.socket else { return };
                let present = vip.present(socket.view());
                self.transition(if present { State::Primary } else { State::Backup }, now);
            }
            // Until the first dump, the dump is what tells the state.
            _ if self.state.is_none() => {}
            Change::Overrun => {
                log::warn!(
                    "router {}: rtnetlink receive queue overrun; discarding what is queued and re-reading addresses",
                    self.router
                );
            }
            change => {
                let Some(present) = vip.changed(&change) else { return };
                if let Change::LinkGone { ifname } = &change {
                    log::warn!("router {}: interface {ifname} was deleted", self.router);
                }
                self.transition(if present { State::Primary } else { State::Backup }, now);
            }
        }
    }

    fn transition(&mut self, new: State, now: Instant) {
        match self.state {
            Some(old) if old == new => return,
            Some(_) => log::info!("Detected state change to: {new} (router {})", self.router),
            None => log::info!("Initial status of router {} is {new}", self.router),
        }
        self.state = Some(new);
        // The agent first (or conntrackd, which the agent waits for): the
        // request is on its socket before the disk is touched.
        match &mut self.conntrackd {
            Some(sync) => {
                let done = sync.request(new);
                self.synced(done, now);
            }
            None => {
                let deliveries = self.notifier.submit(&mut self.sources, &self.router, new, now);
                log_deliveries(deliveries);
            }
        }
        match self.write_state(new) {
            Ok(()) => {
                log::info!("Wrote router {} state {new}", self.router);
                self.unsynced.written((), now);
            }
            Err(e) => log::error!("router {}: {e}", self.router),
        }
    }

    /// `CONF_DIR/state`, written in the directory opened at start (or, if
    /// that failed, opened now, as the user we run as).
    fn write_state(&mut self, state: State) -> Result<(), String> {
        let dir = match self.conf_dir_fd.take() {
            Some(dir) => dir,
            None => nofollow::open_dir(&self.conf_dir).map_err(|e| e.to_string())?,
        };
        let written = files::write_state(dir.as_fd(), &self.conf_dir, state);
        self.conf_dir_fd = Some(dir);
        written.map_err(|e| e.to_string())
    }

    /// Makes the state file durable, in quiet time (see the module docs);
    /// a failure is logged: the file is in place, its durability in doubt.
    fn sync_state(&mut self) {
        if let Some(dir) = &self.conf_dir_fd
            && let Err(e) = files::sync_state(dir.as_fd())
        {
            log::warn!("router {}: cannot sync {}/state: {e}", self.router, self.conf_dir.display());
        }
    }

    /// The agent hears of a change once conntrackd is synced for it (each
    /// sync logged as Neutron's monitor logs it).
    fn synced(&mut self, done: Vec<Synced>, now: Instant) {
        for synced in done {
            synced.log(&self.router);
            // The monitor runs no conntrackd, so asks for no resync.
            let Some(state) = synced.state else { continue };
            let deliveries = self.notifier.submit(&mut self.sources, &self.router, state, now);
            log_deliveries(deliveries);
        }
    }

    fn reap(&mut self, now: Instant) {
        for (pid, exit) in spawn::reap() {
            if let Some(sync) = self.conntrackd.as_mut().filter(|s| s.owns(pid)) {
                let done = sync.exited(pid, exit);
                self.synced(done, now);
            }
        }
    }
}

fn log_deliveries(deliveries: Vec<Delivery>) {
    for delivery in &deliveries {
        delivery.log();
    }
}
