//! What a [`Supervisor`](super::Supervisor) runs: the small description
//! that is all that differs between keepalived and conntrackd (command
//! line, which command lines are ours, where the pid is, what a killed one
//! leaves behind, when it is up, how it is stopped). Pure.

use std::fmt;
use std::path::PathBuf;

use crate::config::{DaemonConfig, RouterConfig};
use crate::conntrackd::conf as conntrackd_conf;
use crate::core::layout::Layout;

/// Which program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Keepalived,
    Conntrackd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Keepalived => "keepalived",
            Kind::Conntrackd => "conntrackd",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One router's program, as the supervisor runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    pub kind: Kind,
    /// `keepalived_path` or `conntrackd_path` as configured.
    pub path: String,
    /// Its config file: what a command line of ours names.
    pub conf: PathBuf,
    /// Names its (main) process. keepalived writes its own; conntrackd
    /// writes none, so the supervisor writes this one once it spawned it
    /// (Neutron's agent writes the same file from `pgrep`).
    pub pid_file: PathBuf,
    /// keepalived's VRRP child: a child outliving its parent would keep
    /// doing VRRP beside a new keepalived, so it is killed before a spawn.
    pub child_pid_file: Option<PathBuf>,
    /// What a killed conntrackd leaves behind and a new one refuses to
    /// start over (its lock file; its control socket, which would answer
    /// nobody): removed before each spawn and after a stop, once nothing of
    /// ours runs (as Neutron's `pre_cmd_callback` does).
    pub leftovers: Vec<PathBuf>,
    /// The Unix socket it listens on once it is up (conntrackd's control
    /// socket): until it is there, a spawned program is still starting. A
    /// socket some other process answers on forbids a spawn.
    pub socket: Option<PathBuf>,
    /// keepalived's `-D` (detailed logs).
    pub debug: bool,
}

impl Program {
    /// `KEEPALIVED -n -P -f CONF -p PID -r VRRP_PID [-D]`.
    pub fn keepalived(daemon: &DaemonConfig, router: &RouterConfig, layout: &Layout, debug: bool) -> Program {
        Program {
            kind: Kind::Keepalived,
            path: daemon.keepalived_path.clone(),
            conf: layout.keepalived_conf(&router.id),
            pid_file: layout.pid_file(&router.id),
            child_pid_file: Some(layout.vrrp_pid_file(&router.id)),
            leftovers: Vec::new(),
            socket: None,
            debug,
        }
    }

    /// `CONNTRACKD -C CONF`, in the foreground.
    pub fn conntrackd(daemon: &DaemonConfig, router: &RouterConfig, layout: &Layout) -> Program {
        let paths = conntrackd_conf::Paths::new(layout, &router.id);
        Program {
            kind: Kind::Conntrackd,
            path: daemon.conntrackd_path.clone(),
            conf: paths.conf,
            pid_file: paths.pid,
            child_pid_file: None,
            leftovers: vec![paths.lock, paths.ctl.clone()],
            socket: Some(paths.ctl),
            debug: false,
        }
    }

    /// The arguments it is spawned with. keepalived gets `-n` (don't fork)
    /// and conntrackd no `-d` (Neutron's daemon mode): each stays our
    /// direct child, so its death arrives as SIGCHLD, there is no
    /// daemonized grandchild to find, and its pid is known at once.
    pub fn args(&self) -> Vec<String> {
        let conf = self.conf.display().to_string();
        match self.kind {
            Kind::Keepalived => {
                let mut args: Vec<String> = vec!["-n".into(), "-P".into(), "-f".into(), conf, "-p".into()];
                args.push(self.pid_file.display().to_string());
                args.push("-r".into());
                args.extend(self.child_pid_file.iter().map(|p| p.display().to_string()));
                if self.debug {
                    args.push("-D".into());
                }
                args
            }
            Kind::Conntrackd => vec!["-C".into(), conf],
        }
    }

    /// Whether a NUL-separated `/proc/PID/cmdline` is one of ours (see
    /// [`cmdline_names_conf`] and [`cmdline_is_conntrackd_daemon`]).
    pub fn names_conf(&self, cmdline: &[u8]) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let conf = self.conf.as_os_str().as_bytes();
        match self.kind {
            Kind::Keepalived => cmdline_names_conf(cmdline, conf),
            Kind::Conntrackd => cmdline_is_conntrackd_daemon(cmdline, conf),
        }
    }

    /// Whether the program writes its own pidfile.
    pub fn writes_pid_file(&self) -> bool {
        self.kind == Kind::Keepalived
    }

    /// The command that asks it to stop (`conntrackd -C CONF -k`, as
    /// Neutron stops it), run in the router's namespace; `None`: SIGTERM.
    /// Either way SIGKILL follows after the grace period.
    pub fn stop_command(&self) -> Option<Vec<String>> {
        match self.kind {
            Kind::Keepalived => None,
            Kind::Conntrackd => Some(vec!["-C".into(), self.conf.display().to_string(), "-k".into()]),
        }
    }
}

/// Whether a NUL-separated `/proc/PID/cmdline` gives `conf` as keepalived's
/// configuration file: `-f CONF`, `-fCONF`, `--use-file CONF` or
/// `--use-file=CONF` after `argv[0]`. Requiring the option (not just the
/// path anywhere) keeps an operator's `less CONF` from ever being taken for
/// keepalived.
pub fn cmdline_names_conf(cmdline: &[u8], conf: &[u8]) -> bool {
    if conf.is_empty() {
        return false;
    }
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).skip(1).collect();
    args.iter().enumerate().any(|(i, arg)| {
        let is_option = |a: &[u8]| a == b"-f" || a == b"--use-file";
        (*arg == conf && i > 0 && is_option(args[i - 1]))
            || arg.strip_prefix(b"--use-file=") == Some(conf)
            || (arg.strip_prefix(b"-f") == Some(conf) && !arg.starts_with(b"--"))
    })
}

/// Whether a NUL-separated `/proc/PID/cmdline` is the conntrackd *daemon*
/// on `conf`: after `argv[0]`, exactly `-C CONF`, with or without `-d`
/// (Neutron's `conntrackd -d -C CONF`, adopted after a migration). Every
/// client command (`-C CONF -c`, `-n`, `-k`, ...) names the same file and
/// runs the same binary as root in the same namespace: only the shape of
/// the command line tells them apart.
pub fn cmdline_is_conntrackd_daemon(cmdline: &[u8], conf: &[u8]) -> bool {
    if conf.is_empty() {
        return false;
    }
    let mut args: Vec<&[u8]> = cmdline.split(|&b| b == 0).skip(1).collect();
    if args.last() == Some(&&b""[..]) {
        args.pop();
    }
    if let Some(at) = args.iter().position(|a| *a == b"-d") {
        args.remove(at);
    }
    args == [&b"-C"[..], conf]
}
