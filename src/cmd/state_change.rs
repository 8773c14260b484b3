//! `harouterd state-change`: the process set-up of the Neutron drop-in
//! monitor (SPEC section 4), then [`Monitor::run`] until SIGTERM.
//!
//! Start-up (README "Neutron releases"): the log file, the conf dir and the
//! pid file are opened as root, symlink-safe
//! ([`crate::sys::files::nofollow`]); then, unless `--foreground`, the
//! process detaches ([`daemonize::detach_reporting`]) and the detached one
//! writes its pid, opens its rtnetlink socket in the namespace and drops
//! privileges before it lets the original process exit 0. So Neutron up to
//! 28 (a blocking execute, then `--pid_file`) and Neutron 29+ (an async
//! child whose pipes nobody reads, tracked by `--pid_file`) both find a
//! running monitor named by the pid file, holding none of their pipes.

use std::time::Instant;

use nix::sys::signal::Signal;

use super::Exit;
use crate::cli::StateChangeArgs;
use crate::conntrackd::sync::{self as conntrackd, ConntrackdSync};
use crate::core::ident::{Namespace, RouterId};
use crate::core::net::Cidr;
use crate::logging::{logfile, syslog};
use crate::monitor::{AGENT_SOCKET_NAME, Monitor, Parts};
use crate::netlink::RtSocket;
use crate::sys::daemonize::{self, Readiness};
use crate::sys::event_loop::{EventLoop, Signals};
use crate::sys::files::nofollow;
use crate::sys::netns::{NETNS_RUN_DIR, NetnsDirWatch};
use crate::sys::{pidfile, privdrop};

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

/// Sets the monitor up (see the module docs) and runs it until
/// SIGTERM/SIGINT.
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
            // Only fails when a logger is installed already: keep that one.
            let _ = syslog::install(level(&args));
        }
        if let Some(Err(e)) = pid_file.as_ref().map(pidfile::Pidfile::write_our_pid) {
            return startup.fail(Exit::Runtime, &e.to_string());
        }
    }
    let event_loop = match EventLoop::new(64) {
        Ok(l) => l,
        Err(e) => return startup.fail(Exit::Runtime, &format!("cannot create the event loop: {e}")),
    };

    let cidr = Cidr::parse(&args.monitor_cidr);
    // The socket is opened before privileges are dropped: entering the
    // namespace needs CAP_SYS_ADMIN; so is /run/netns made and watched.
    let socket = RtSocket::open(namespace.as_ref(), None);
    let netns_dir =
        namespace.as_ref().filter(|ns| ns.path().starts_with(&format!("{NETNS_RUN_DIR}/"))).and_then(|_| {
            match NetnsDirWatch::new(true) {
                Ok(watch) => Some(watch),
                Err(e) => {
                    log::warn!("{e}; a deleted namespace will not be noticed");
                    None
                }
            }
        });
    let keep = if args.enable_conntrackd { privdrop::CONNTRACKD_CAPS } else { &[] };
    if let Err(e) = privdrop::drop_to(args.user.as_deref(), args.group.as_deref(), keep) {
        return startup.fail(Exit::Runtime, &e.to_string());
    }
    let signals = match Signals::new(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD, Signal::SIGHUP]) {
        Ok(s) => s,
        Err(e) => return startup.fail(Exit::Runtime, &format!("cannot set up signal handling: {e}")),
    };
    if let Err(e) = &conf_dir {
        log::error!("router {router}: {e}; trying again at each state change");
    }
    let conntrackd = conntrackd_program.map(|program| {
        match &program {
            Ok(path) => log::debug!("router {router}: conntrackd is {}", path.display()),
            Err(e) => log::error!("router {router}: {e}: every conntrackd sync will fail"),
        }
        let sync = ConntrackdSync::located(program, args.conf_dir.clone(), namespace.clone(), &router);
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
    let parts = Parts {
        router,
        namespace,
        conf_dir: args.conf_dir.clone(),
        conf_dir_fd: conf_dir.ok(),
        iface: args.monitor_interface.clone(),
        cidr: cidr.as_ref().ok().copied(),
        conntrackd,
        agent_socket: args.state_path.join(AGENT_SOCKET_NAME),
    };
    let mut monitor = match Monitor::new(parts, event_loop, signals, netns_dir) {
        Ok(monitor) => monitor,
        Err(e) => return startup.fail(Exit::Runtime, &e),
    };
    // Start-up worked: the original process may exit 0 now, and no child
    // spawned from here on can hold its pipe.
    startup.ready();
    let initial = match (&cidr, socket) {
        (Err(e), _) => Err(format!("--monitor_cidr {e}")),
        (Ok(_), socket) => socket.map_err(|e| e.to_string()),
    };
    monitor.start(initial, Instant::now());
    monitor.run()
}

/// The most verbose level logged: DEBUG with `--debug`, else INFO.
fn level(args: &StateChangeArgs) -> log::LevelFilter {
    if args.debug { log::LevelFilter::Debug } else { log::LevelFilter::Info }
}
