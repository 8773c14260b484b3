//! `harouterd state-change`: the drop-in for Neutron's per-router
//! `neutron-keepalived-state-change` monitor (SPEC section 4).
//!
//! One router, one rtnetlink socket inside its namespace, one event loop.
//! The monitored CIDR present on the monitored interface means `primary`,
//! absent means `backup`. Each change (and the initial state, at once) is
//! written to `CONF_DIR/state`, synced to conntrackd when enabled, then
//! POSTed to the L3 agent; the log lines are the ones Neutron's tests and
//! operators grep for.
//!
//! Invariants: a state is reported only when it differs from the last one
//! (an address update that changes nothing is not a transition), and the
//! loop never blocks: conntrackd runs as reaped children, the agent is
//! notified through the non-blocking [`Notifier`].

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::Signal;

use crate::cli::StateChangeArgs;
use crate::cmd::Exit;
use crate::conntrackd::sync::{self as conntrackd, ConntrackdSync, Synced};
use crate::core::backoff::{Backoff, Retry};
use crate::core::ident::{Namespace, RouterId};
use crate::core::net::Cidr;
use crate::core::state::State;
use crate::logging::logfile;
use crate::logging::syslog::{self, Syslog};
use crate::netlink::{Change, NetlinkError, RECV_BUFFER, Read, RtSocket};
use crate::notify::{Notifier, Outcome};
use crate::sys::child_output::ChildOutputs;
use crate::sys::daemonize::{self, Readiness};
use crate::sys::event_loop::{EventLoop, Signals, Timers, earliest};
use crate::sys::files::nofollow;
use crate::sys::netns::NetnsError;
use crate::sys::{pidfile, privdrop, spawn};

const SIGNALS: Token = Token(0);
const NETLINK: Token = Token(1);
const NETNS_DIR: Token = Token(2);
const NOTIFIER_BASE: usize = 16;
/// conntrackd's output pipes (slots reused).
const CHILD_OUTPUT_BASE: usize = 32;

/// The agent's socket under `--state_path` (Neutron's
/// `get_keepalived_state_change_socket_path`).
pub const AGENT_SOCKET_NAME: &str = "keepalived-state-change";

/// Reopening a namespace that was missing: first retry after this, doubling.
const REOPEN: Backoff = Backoff::new(Duration::from_millis(500), REOPEN_MAX);
const REOPEN_MAX: Duration = Duration::from_secs(30);
/// First retry once the namespace file appeared: `ip netns add` creates
/// it just before it bind-mounts the namespace on it.
const REOPEN_SOON: Backoff = Backoff::new(Duration::from_millis(50), REOPEN_MAX);

/// Where iproute2 keeps named namespaces.
const NETNS_RUN_DIR: &str = "/run/netns";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    ReopenNetlink,
}

struct Monitor {
    router: String,
    namespace: Option<Namespace>,
    /// `--conf_dir`, and the directory itself, opened without following
    /// links others could plant: the state file is written relative to it.
    conf_dir: PathBuf,
    conf_dir_fd: Option<OwnedFd>,
    iface: String,
    /// `None` when `--monitor_cidr` is not a CIDR: nothing can match.
    cidr: Option<Cidr>,
    state: Option<State>,
    socket: Option<RtSocket>,
    scratch: Vec<u8>,
    conntrackd: Option<ConntrackdSync>,
    notifier: Notifier,
    timers: Timers<Timer>,
    reopen: Retry,
    /// /run/netns, watched when `--namespace` lives there: our own socket
    /// keeps a deleted namespace alive, so netlink alone never tells.
    netns_dir: Option<Inotify>,
    /// The last read stopped at its budget with data still queued.
    more: bool,
    /// Re-entering the namespace was refused (EPERM), already logged.
    reopen_denied: bool,
}

/// Start-up failures go where the caller sees them: the log, and the
/// caller's stderr with the exit status (directly before detaching, through
/// the original process after: [`daemonize::Readiness`]).
struct Startup {
    readiness: Option<Readiness>,
    /// The log is not the caller's stderr: say failures there too.
    echo: bool,
}

impl Startup {
    fn fail(&mut self, exit: Exit, message: &str) -> Exit {
        log::error!("{message}");
        let text = format!("harouterd state-change: {message}");
        match self.readiness.take() {
            Some(readiness) => readiness.failed(exit as u8, &text),
            None if self.echo => eprintln!("{text}"),
            None => {}
        }
        exit
    }

    fn ready(&mut self) {
        if let Some(readiness) = self.readiness.take() {
            readiness.ready();
        }
    }
}

/// Runs the monitor until SIGTERM/SIGINT.
///
/// Start-up (SPEC section 4, README "Neutron releases"): the log file, the
/// conf dir and the pid file are opened as root, symlink-safe
/// ([`crate::sys::files::nofollow`]); then, unless `--foreground`, the process detaches
/// ([`daemonize::detach_reporting`]) and the detached one writes its pid,
/// opens its rtnetlink socket in the namespace and drops privileges before
/// it lets the original process exit 0. So Neutron up to 28 (a blocking
/// execute, then `--pid_file`) and Neutron 29+ (an async child whose pipes
/// nobody reads, tracked by `--pid_file`) both find a running monitor
/// named by the pid file, holding none of their pipes.
pub fn run(args: StateChangeArgs) -> Exit {
    let component = "harouterd.state_change";
    // Without --log-file a detached monitor logs to syslog, set up once
    // detached (the pid in each line is the final one).
    if (args.log_file.is_some() || args.foreground)
        && let Err(e) = logfile::init(args.log_file.as_deref(), args.debug, component)
    {
        eprintln!("harouterd state-change: {e}");
        return Exit::Runtime;
    }
    let mut startup = Startup { readiness: None, echo: !(args.foreground && args.log_file.is_none()) };
    let router = match RouterId::parse(&args.router_id) {
        Ok(id) => id,
        Err(e) => return startup.fail(Exit::Usage, &e.to_string()),
    };
    let namespace = match args.namespace.as_deref().map(Namespace::parse).transpose() {
        Ok(ns) => ns,
        Err(e) => return startup.fail(Exit::Usage, &format!("--namespace: {e}")),
    };
    // Held, not removed, for our whole life: the pid file belongs to the
    // agent's process manager, which reads it to find us.
    let pid_file = match args.pid_file.as_deref().map(pidfile::Pidfile::acquire).transpose() {
        Ok(p) => p,
        Err(e) => return startup.fail(Exit::Runtime, &e.to_string()),
    };
    // Opened as root; the state file is always written relative to it.
    let conf_dir = nofollow::open_dir(&args.conf_dir);
    let conntrackd_program = args.enable_conntrackd.then(conntrackd::locate);
    if !args.foreground {
        match daemonize::detach_reporting() {
            Ok(readiness) => startup.readiness = Some(readiness),
            Err(e) => return startup.fail(Exit::Runtime, &e.to_string()),
        }
        if args.log_file.is_none() {
            let logger: &'static Syslog = Box::leak(Box::new(Syslog::new(Path::new(syslog::DEV_LOG), level(&args))));
            if log::set_logger(logger).is_ok() {
                log::set_max_level(level(&args));
            }
        }
        if let Some(Err(e)) = pid_file.as_ref().map(pidfile::Pidfile::write_our_pid) {
            return startup.fail(Exit::Runtime, &e.to_string());
        }
    }
    let mut event_loop = match EventLoop::new(64) {
        Ok(l) => l,
        Err(e) => return startup.fail(Exit::Runtime, &format!("cannot create the event loop: {e}")),
    };

    let cidr = Cidr::parse(&args.monitor_cidr);
    // The socket is opened before privileges are dropped: entering the
    // namespace needs CAP_SYS_ADMIN.
    let socket = RtSocket::open(namespace.as_ref(), None);
    let netns_dir = namespace.as_ref().and_then(|ns| watch_netns_dir(ns, event_loop.registry()));
    let keep = if args.enable_conntrackd { privdrop::CONNTRACKD_CAPS } else { &[] };
    if let Err(e) = privdrop::drop_to(args.user.as_deref(), args.group.as_deref(), keep) {
        return startup.fail(Exit::Runtime, &e.to_string());
    }
    let mut signals = match Signals::new(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD, Signal::SIGHUP]) {
        Ok(s) => s,
        Err(e) => return startup.fail(Exit::Runtime, &format!("cannot set up signal handling: {e}")),
    };
    if let Err(e) = event_loop.registry().register(&mut signals, SIGNALS, Interest::READABLE) {
        return startup.fail(Exit::Runtime, &format!("cannot watch signals: {e}"));
    }
    if let Err(e) = &conf_dir {
        log::error!("router {router}: {e}; trying again at each state change");
    }
    let conntrackd = conntrackd_program.map(|program| {
        match &program {
            Ok(path) => log::debug!("router {router}: conntrackd is {}", path.display()),
            Err(e) => log::error!("router {router}: {e}: every conntrackd sync will fail"),
        }
        let sync = ConntrackdSync::located(program, args.conf_dir.clone(), namespace.clone(), router.as_str());
        // Dropped to a user: the kept capabilities are permitted only, and
        // each conntrackd command raises what it needs, alone.
        match nix::unistd::geteuid().is_root() {
            true => sync,
            false => sync.with_child_caps(
                privdrop::mask_of(privdrop::SETNS_CAPS),
                privdrop::mask_of(privdrop::CONNTRACKD_CHILD_CAPS),
            ),
        }
    });

    let mut monitor = Monitor {
        router: router.to_string(),
        namespace: namespace.clone(),
        conf_dir: args.conf_dir.clone(),
        conf_dir_fd: conf_dir.ok(),
        iface: args.monitor_interface.clone(),
        cidr: cidr.as_ref().ok().copied(),
        state: None,
        socket: None,
        scratch: Vec::with_capacity(RECV_BUFFER),
        conntrackd,
        notifier: Notifier::new(args.state_path.join(AGENT_SOCKET_NAME), NOTIFIER_BASE, 1),
        timers: Timers::default(),
        reopen: Retry::new(REOPEN),
        netns_dir,
        more: false,
        reopen_denied: false,
    };
    // Start-up worked: the original process may exit 0 now, and no child
    // spawned from here on can hold its pipe.
    startup.ready();

    let initial_failure = match (&cidr, socket) {
        (Err(e), _) => Some(format!("--monitor_cidr {e}")),
        (Ok(_), Err(e)) => {
            monitor.schedule_reopen(Instant::now());
            Some(e.to_string())
        }
        (Ok(_), Ok(socket)) => {
            monitor.attach(event_loop.registry(), socket);
            None
        }
    };
    if let Some(reason) = initial_failure {
        log::error!("Failed to get initial status of router {}: {reason}", monitor.router);
        log::warn!("Timeout reading the initial status of router {}, state is set to \"backup\".", monitor.router);
        monitor.transition(State::Backup, event_loop.registry(), Instant::now());
    }

    let mut outputs = ChildOutputs::new(CHILD_OUTPUT_BASE);
    loop {
        outputs.adopt(event_loop.registry(), spawn::take_outputs(), Instant::now());
        let deadline = earliest([
            monitor.timers.next_deadline(),
            monitor.notifier.next_deadline(),
            monitor.netlink_deadline(Instant::now()),
        ]);
        let events = match event_loop.wait(deadline) {
            Ok(events) => events.iter().map(|e| (e.token(), e.clone())).collect::<Vec<_>>(),
            Err(e) => {
                log::error!("poll failed: {e}");
                return Exit::Runtime;
            }
        };
        let registry = event_loop.registry();
        for (token, event) in events {
            let now = Instant::now();
            match token {
                SIGNALS => {
                    for signal in signals.drain() {
                        match signal {
                            Signal::SIGTERM | Signal::SIGINT => {
                                log::info!("Received {signal}, exiting (router {})", monitor.router);
                                return Exit::Ok;
                            }
                            Signal::SIGCHLD => monitor.reap(registry, now),
                            _ => log::debug!("ignoring {signal}"),
                        }
                    }
                }
                NETLINK => monitor.netlink_ready(registry, now),
                NETNS_DIR => monitor.netns_dir_changed(registry, now),
                t if outputs.owns(t) => outputs.ready(registry, t, now),
                t if monitor.notifier.owns(t) => {
                    let outcomes = monitor.notifier.ready(registry, &event, now);
                    monitor.report(outcomes);
                }
                _ => {}
            }
        }
        let now = Instant::now();
        while let Some(timer) = monitor.timers.pop_due(now) {
            match timer {
                Timer::ReopenNetlink => monitor.reopen(registry, now),
            }
        }
        if monitor.netlink_deadline(now).is_some_and(|d| d <= now) {
            monitor.netlink_ready(registry, now);
        }
        let outcomes = monitor.notifier.tick(registry, now);
        monitor.report(outcomes);
    }
}

/// The most verbose level logged: DEBUG with `--debug`, else INFO.
fn level(args: &StateChangeArgs) -> log::LevelFilter {
    if args.debug { log::LevelFilter::Debug } else { log::LevelFilter::Info }
}

impl Monitor {
    fn attach(&mut self, registry: &mio::Registry, mut socket: RtSocket) {
        match registry.register(&mut socket, NETLINK, Interest::READABLE) {
            Ok(()) => self.socket = Some(socket),
            Err(e) => log::error!("cannot watch the rtnetlink socket of router {}: {e}", self.router),
        }
    }

    fn schedule_reopen(&mut self, now: Instant) {
        self.timers.schedule(now + self.reopen.failed(), Timer::ReopenNetlink);
    }

    /// The namespace was missing: try again, with backoff, so a namespace
    /// created late is still monitored.
    fn reopen(&mut self, registry: &mio::Registry, now: Instant) {
        if self.socket.is_some() {
            return;
        }
        // Dropped to a user: CAP_SYS_ADMIN is permitted (with conntrackd),
        // never effective, but for this.
        match privdrop::with_effective(privdrop::SETNS_CAPS, || RtSocket::open(self.namespace.as_ref(), None)) {
            Ok(socket) => {
                log::info!("Monitoring router {} in {}", self.router, self.namespace_name());
                self.attach(registry, socket);
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

    fn namespace_name(&self) -> String {
        self.namespace.as_ref().map_or_else(|| "the current namespace".to_owned(), |n| n.to_string())
    }

    /// When the socket must be read without readiness: now if the last
    /// read left data behind, or when a delayed re-dump is due.
    fn netlink_deadline(&self, now: Instant) -> Option<Instant> {
        let socket = self.socket.as_ref()?;
        if self.more { Some(now) } else { socket.deadline() }
    }

    fn netlink_ready(&mut self, registry: &mio::Registry, now: Instant) {
        let Some(socket) = self.socket.as_mut() else { return };
        let mut changes = Vec::new();
        let result = socket.read(&mut self.scratch, now, &mut |c| changes.push(c));
        self.more = matches!(result, Ok(Read::More));
        for change in changes {
            self.apply(change, registry, now);
        }
        if let Err(e) = result {
            log::error!("router {}: {e}; reopening", self.router);
            self.close(registry);
            self.schedule_reopen(now);
        }
    }

    fn close(&mut self, registry: &mio::Registry) {
        self.more = false;
        if let Some(mut socket) = self.socket.take() {
            let _ = registry.deregister(&mut socket);
        }
    }

    /// A file under /run/netns appeared or went away. Ours deleted: the
    /// router is `backup` (its VIP is nowhere to be seen) and the socket is
    /// closed so the old namespace can go; ours (re-)created: it is a new
    /// namespace, watched from a fresh dump.
    fn netns_dir_changed(&mut self, registry: &mio::Registry, now: Instant) {
        let Some(namespace) = &self.namespace else { return };
        let Some(events) = self.netns_dir.as_ref().map(|i| i.read_events().unwrap_or_default()) else { return };
        let ours = namespace.path();
        for event in events {
            let Some(name) = event.name.as_ref().and_then(|n| n.to_str()) else { continue };
            if format!("{NETNS_RUN_DIR}/{name}") != ours {
                continue;
            }
            if event.mask.contains(AddWatchFlags::IN_DELETE) {
                log::warn!(
                    "network namespace {} was deleted; router {} is backup until it is back",
                    self.namespace_name(),
                    self.router
                );
                self.close(registry);
                self.transition(State::Backup, registry, now);
            } else if self.socket.is_none() {
                self.reopen = Retry::new(REOPEN_SOON);
                self.reopen(registry, now);
            }
        }
    }

    fn apply(&mut self, change: Change, registry: &mio::Registry, now: Instant) {
        let Some(cidr) = self.cidr else { return };
        match change {
            Change::Resynced => {
                let Some(socket) = &self.socket else { return };
                let present = socket.view().has_addr(&self.iface, &cidr);
                self.transition(if present { State::Primary } else { State::Backup }, registry, now);
            }
            // Until the first dump, the dump is what tells the state.
            _ if self.state.is_none() => {}
            Change::Addr { ifname, cidr: c, added } if ifname == self.iface && c == cidr => {
                self.transition(if added { State::Primary } else { State::Backup }, registry, now);
            }
            Change::LinkGone { ifname } if ifname == self.iface => {
                log::warn!("router {}: interface {ifname} was deleted", self.router);
                self.transition(State::Backup, registry, now);
            }
            Change::Overrun => {
                log::warn!(
                    "router {}: rtnetlink receive queue overrun; discarding what is queued and re-reading addresses",
                    self.router
                );
            }
            _ => {}
        }
    }

    fn transition(&mut self, new: State, registry: &mio::Registry, now: Instant) {
        match self.state {
            Some(old) if old == new => return,
            Some(_) => log::info!("Detected state change to: {new} (router {})", self.router),
            None => log::info!("Initial status of router {} is {new}", self.router),
        }
        self.state = Some(new);
        match self.write_state(new) {
            Ok(()) => log::info!("Wrote router {} state {new}", self.router),
            Err(e) => log::error!("router {}: {e}", self.router),
        }
        match &mut self.conntrackd {
            Some(sync) => {
                let done = sync.request(new);
                self.synced(done, registry, now);
            }
            None => self.notifier.submit(registry, &self.router, new.as_str(), now),
        }
    }

    /// `CONF_DIR/state`, written in the directory opened at start (or, if
    /// that failed, opened now, as the user we run as).
    fn write_state(&mut self, state: State) -> Result<(), String> {
        let dir = match self.conf_dir_fd.take() {
            Some(dir) => dir,
            None => nofollow::open_dir(&self.conf_dir).map_err(|e| e.to_string())?,
        };
        let written = nofollow::write_atomic_in(dir.as_fd(), &self.conf_dir, "state", state.as_str().as_bytes(), 0o644);
        self.conf_dir_fd = Some(dir);
        written.map_err(|e| e.to_string())
    }

    /// Neutron's monitor logs the Synced line after the commands whatever
    /// their exit status (`check_exit_code=False`), and its functional tests
    /// grep for it; failures get an ERROR line naming each command first.
    fn synced(&mut self, done: Vec<Synced>, registry: &mio::Registry, now: Instant) {
        for Synced { state, failures } in done {
            if !failures.is_empty() {
                log::error!(
                    "Failed to sync connection tracking state on {state} for router {}: {}",
                    self.router,
                    failures.join("; ")
                );
            }
            log::info!("Synced connection tracking state on {state} for router {}", self.router);
            self.notifier.submit(registry, &self.router, state.as_str(), now);
        }
    }

    fn reap(&mut self, registry: &mio::Registry, now: Instant) {
        for (pid, exit) in spawn::reap() {
            if let Some(sync) = self.conntrackd.as_mut().filter(|s| s.owns(pid)) {
                let done = sync.exited(pid, exit);
                self.synced(done, registry, now);
            }
        }
    }

    fn report(&mut self, outcomes: Vec<Outcome>) {
        for outcome in outcomes {
            if outcome.is_delivered() {
                log::info!("{outcome}");
            } else {
                log::warn!("{outcome}");
            }
        }
    }
}

/// Watches /run/netns when `namespace` lives there, creating the directory
/// as `ip netns add` would when it does not exist yet (we still run as
/// root here).
fn watch_netns_dir(namespace: &Namespace, registry: &mio::Registry) -> Option<Inotify> {
    if !namespace.path().starts_with(&format!("{NETNS_RUN_DIR}/")) {
        return None;
    }
    if let Err(e) = std::fs::DirBuilder::new().mode(0o755).create(NETNS_RUN_DIR)
        && e.kind() != std::io::ErrorKind::AlreadyExists
    {
        log::warn!("cannot create {NETNS_RUN_DIR} to watch it: {e}");
    }
    let watch = || -> Result<Inotify, String> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(|e| e.to_string())?;
        inotify
            .add_watch(NETNS_RUN_DIR, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_DELETE)
            .map_err(|e| e.to_string())?;
        registry
            .register(&mut SourceFd(&inotify.as_fd().as_raw_fd()), NETNS_DIR, Interest::READABLE)
            .map_err(|e| e.to_string())?;
        Ok(inotify)
    };
    watch()
        .inspect_err(|e| log::warn!("cannot watch {NETNS_RUN_DIR}: {e}; a deleted namespace will not be noticed"))
        .ok()
}
