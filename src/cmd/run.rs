//! `harouterd run`: the daemon's process set-up (config, directories,
//! pidfile, detaching, logging, process attributes), then the event loop
//! of [`crate::daemon`] until SIGTERM.
//!
//! Without `--foreground` the process detaches, and the original one waits
//! until the detached daemon serves (exit 0) or fails (its message on
//! stderr, its exit status): an init script learns the outcome from `run`
//! itself ([`crate::daemon::service`]). Errors found before detaching (the
//! config, its directories, the pidfile) are printed directly.

use super::Exit;
use crate::cli::RunArgs;
use crate::config::{self, OnExit};
use crate::daemon::Daemon;
use crate::daemon::service::Service;
use crate::logging::syslog;
use crate::sys::files::confs::HaConfs;
use crate::sys::{daemonize, pidfile, process};

pub fn run(args: RunArgs) -> Exit {
    make_private();
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
    let confs = match HaConfs::prepare(&parsed.config.daemon) {
        Ok(confs) => confs,
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
    // The original process waits until the daemon serves or fails, and
    // exits with its verdict and message (daemon/service.rs).
    let parent = match args.foreground {
        true => None,
        false => match daemonize::detach_reporting() {
            Ok(parent) => Some(parent),
            Err(e) => {
                eprintln!("harouterd: {e}");
                return Exit::Runtime;
            }
        },
    };
    let mut service = Service::from_env();
    if let Some(parent) = parent {
        service.detached(parent);
    }
    make_private();
    if let Err(e) = syslog::init_daemon_logging(args.foreground, args.log_level) {
        return service.failed(Exit::Runtime, &format!("cannot set up logging: {e}"));
    }
    service.logging();
    if let Err(e) = pidfile.write_our_pid() {
        return service.failed(Exit::Runtime, &e.to_string());
    }
    for warning in &parsed.warnings {
        log::warn!("{warning}");
    }
    if let Err(e) = process::raise_fd_limit() {
        log::warn!("cannot raise the open-file limit: {e}");
    }
    if let Err(e) = process::raise_priority() {
        log::warn!("cannot raise the scheduling priority ({e}): in a storm of keepalived, status and events may wait");
    }
    if let Err(e) = process::become_subreaper() {
        log::warn!("cannot become a child subreaper ({e}): orphaned keepalived children may linger");
    }
    let pid1 = std::process::id() == 1;
    if pid1 && parsed.config.daemon.on_exit == OnExit::Keep {
        log::warn!(
            "running as PID 1 of a PID namespace (a container without the entrypoint or --pid=host): keepalived \
             would be killed with the namespace when harouterd exits, leaving its VIPs on the interfaces, so it is \
             stopped first, as with on_exit = stop"
        );
    }
    let debug = args.log_level >= log::LevelFilter::Debug;
    let exit = match Daemon::new(args.config.clone(), parsed.config, confs, debug) {
        Ok(mut daemon) => {
            daemon.set_service(service);
            if pid1 {
                daemon.stop_keepalived_on_exit();
            }
            daemon.run()
        }
        Err(e) => service.failed(Exit::Runtime, &e.to_string()),
    };
    if let Err(e) = pidfile.remove() {
        log::warn!("{e}");
    }
    log::info!("harouterd exiting");
    exit
}

/// [`process::make_private`], said on stderr when it fails (before the log
/// exists, and harmless after).
fn make_private() {
    if let Err(e) = process::make_private() {
        eprintln!("harouterd: cannot make the process non-dumpable: {e}");
    }
}
