//! Command-line parsing (lexopt): argv in, a [`Command`] or a usage error
//! out. Pure, so every spelling is unit-tested without running anything.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use lexopt::prelude::*;

/// Name under which the binary acts as the Neutron per-router monitor.
pub const NEUTRON_MONITOR_NAME: &str = "neutron-keepalived-state-change";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `--help` anywhere: print this text to stdout, exit 0.
    Help(&'static str),
    Version,
    Check {
        config: PathBuf,
    },
    Render {
        config: PathBuf,
        router: Option<String>,
        /// A file name in the router's directory (`--file`).
        file: Option<String>,
        show_secrets: bool,
    },
    StateChange(StateChangeArgs),
    Run(RunArgs),
    Status(ClientArgs),
    Events(ClientArgs),
}

/// `harouterd status` / `harouterd events`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientArgs {
    pub socket: Option<PathBuf>,
    /// Read the socket path from this config file.
    pub config: Option<PathBuf>,
    pub json: bool,
}

/// The control socket when neither `--socket` nor `-c` says otherwise
/// (`socket` under the default `state_path`).
pub const DEFAULT_SOCKET: &str = "/var/lib/harouterd/harouterd.sock";

/// `harouterd run`.
#[derive(Debug, PartialEq, Eq)]
pub struct RunArgs {
    pub config: PathBuf,
    pub foreground: bool,
    pub pidfile: PathBuf,
    pub log_level: log::LevelFilter,
}

/// Where the daemon's own pid file goes unless `--pidfile` says otherwise.
pub const DEFAULT_PIDFILE: &str = "/run/harouterd.pid";

/// Neutron's `neutron-keepalived-state-change` arguments, kept as given:
/// the monitor itself decides what a bad CIDR or a missing namespace means
/// (SPEC section 4: logged, `backup` reported, no crash).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StateChangeArgs {
    pub router_id: String,
    pub namespace: Option<String>,
    pub conf_dir: PathBuf,
    pub log_file: Option<PathBuf>,
    pub monitor_interface: String,
    pub monitor_cidr: String,
    pub pid_file: Option<PathBuf>,
    pub state_path: PathBuf,
    pub user: Option<String>,
    pub group: Option<String>,
    pub enable_conntrackd: bool,
    pub debug: bool,
    /// Stay attached (not a Neutron option: for a supervisor that tracks
    /// the process it started, and for debugging).
    pub foreground: bool,
}

pub const MAIN_HELP: &str = "\
harouterd - VRRP high availability for virtual routers (keepalived supervisor)

Usage: harouterd COMMAND [OPTIONS]

Commands:
  run     -c FILE [--foreground] [--pidfile P] [--log-level L]  the daemon
  status  [--socket S | -c FILE] [--json]       ask a running daemon for its routers
  events  [--socket S | -c FILE] [--json]       follow a running daemon's transitions
  check   -c FILE                               validate a config file
  render  -c FILE [--router ID] [--file NAME] [--show-secrets]
                                                print the files each router gets
  state-change --router_id ID ...               Neutron's per-router monitor

Options:
  -h, --help       show help (also after a command)
  -V, --version    show the version

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
";

pub const CHECK_HELP: &str = "\
Usage: harouterd check -c FILE

Parse and validate FILE. Prints nothing but problems (as PATH:LINE: message)
and exits 0 when the file is valid, 2 when it is not.
";

pub const RUN_HELP: &str = "\
Usage: harouterd run -c FILE [--foreground] [--pidfile P] [--log-level L]

Run the daemon: render and supervise one keepalived per router, watch each
router's primary VIP, announce transitions. Without --foreground it detaches
and logs to syslog; with it, it stays attached and logs to stderr.
  --pidfile P     the daemon's pid file, held with flock (default /run/harouterd.pid)
  --log-level L   error, warn, info (default) or debug
Signals: SIGHUP re-reads FILE (a broken file is rejected whole), SIGTERM and
SIGINT stop (keepalived keeps running unless on_exit = stop).
";

pub const STATUS_HELP: &str = "\
Usage: harouterd status [--socket S | -c FILE] [--json]

Ask a running daemon for one row per router: id, namespace, state, effective
state, since, keepalived pid, restarts, last error. --json prints the JSON
the daemon sends (GET /v1/routers). The socket is S, or the one FILE names,
or /var/lib/harouterd/harouterd.sock.
";

pub const EVENTS_HELP: &str = "\
Usage: harouterd events [--socket S | -c FILE] [--json]

Follow a running daemon's effective state changes, one line each, until
interrupted (GET /v1/events). --json prints one JSON object per line.
";

pub const RENDER_HELP: &str = "\
Usage: harouterd render -c FILE [--router ID] [--file NAME] [--show-secrets]

With --router ID: print exactly one file that router gets, nothing added:
its keepalived.conf, or with --file NAME the file of that name in its
directory (conntrackd.conf, ha_check_script_VRID.sh).
Without --router: every router's files (only those named NAME with --file),
each after a '# ==> PATH <==' line.
VRRP passwords are masked unless --show-secrets is given.
";

pub const STATE_CHANGE_HELP: &str = "\
Usage: harouterd state-change --router_id ID --conf_dir DIR
           --monitor_interface IFACE --monitor_cidr CIDR --state_path DIR
           [--namespace NS] [--pid_file FILE] [--log-file FILE]
           [--user U] [--group G] [--enable_conntrackd] [--debug]
           [--foreground]

Neutron's per-router keepalived-state-change monitor (also run as
neutron-keepalived-state-change). Watches CIDR on IFACE inside NS through
rtnetlink: present means primary, absent backup. On each change it writes
DIR/state, syncs conntrackd when enabled and POSTs the state to the agent on
the Unix socket STATE_PATH/keepalived-state-change. Each option is also
accepted with '-' for '_' and as --opt=value.

It detaches (as Neutron's Python monitor did) and exits 0 once the detached
monitor has written --pid_file and is running, or prints why not and exits
1 (2 for a bad argument). --foreground (not a Neutron option) stays attached.
";

/// A usage problem; exit code 2.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl From<lexopt::Error> for UsageError {
    fn from(e: lexopt::Error) -> Self {
        UsageError(e.to_string())
    }
}

/// Parses `args` (without argv[0]). `invoked_as` is argv[0]'s file name:
/// under [`NEUTRON_MONITOR_NAME`] the binary is the state-change monitor.
pub fn parse(invoked_as: &str, args: Vec<OsString>) -> Result<Command, UsageError> {
    let mut parser = lexopt::Parser::from_args(args);
    let command =
        if invoked_as == NEUTRON_MONITOR_NAME { "state-change".to_owned() } else { command_word(&mut parser)? };
    match command.as_str() {
        "check" => parse_check(&mut parser),
        "render" => parse_render(&mut parser),
        "state-change" => parse_state_change(&mut parser),
        "run" => parse_run(&mut parser),
        "status" => parse_client(&mut parser, STATUS_HELP, Command::Status),
        "events" => parse_client(&mut parser, EVENTS_HELP, Command::Events),
        "--help" => Ok(Command::Help(MAIN_HELP)),
        "--version" => Ok(Command::Version),
        other => Err(UsageError(format!("unknown command '{other}' (try --help)"))),
    }
}

/// The first word: a command, or `--help`/`--version` (returned by their
/// long spelling).
fn command_word(parser: &mut lexopt::Parser) -> Result<String, UsageError> {
    Ok(match parser.next()? {
        Some(Short('h') | Long("help")) => "--help".to_owned(),
        Some(Short('V') | Long("version")) => "--version".to_owned(),
        Some(Value(v)) => v.string()?,
        Some(other) => return Err(other.unexpected().into()),
        None => return Err(UsageError("no command given (try --help)".into())),
    })
}

fn parse_check(parser: &mut lexopt::Parser) -> Result<Command, UsageError> {
    let mut config = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(CHECK_HELP)),
            Short('c') | Long("config") => config = Some(PathBuf::from(parser.value()?)),
            other => return Err(other.unexpected().into()),
        }
    }
    Ok(Command::Check { config: required_config(config, "check")? })
}

fn parse_render(parser: &mut lexopt::Parser) -> Result<Command, UsageError> {
    let (mut config, mut router, mut file, mut show_secrets) = (None, None, None, false);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(RENDER_HELP)),
            Short('c') | Long("config") => config = Some(PathBuf::from(parser.value()?)),
            Long("router") => router = Some(parser.value()?.string()?),
            Long("file") => file = Some(file_name(parser.value()?.string()?)?),
            Long("show-secrets") => show_secrets = true,
            other => return Err(other.unexpected().into()),
        }
    }
    Ok(Command::Render { config: required_config(config, "render")?, router, file, show_secrets })
}

/// `--file` names a file in a router's directory, not a path.
fn file_name(name: String) -> Result<String, UsageError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(UsageError(format!("--file takes a file name such as conntrackd.conf, not '{name}'")));
    }
    Ok(name)
}

fn parse_client(
    parser: &mut lexopt::Parser,
    help: &'static str,
    command: fn(ClientArgs) -> Command,
) -> Result<Command, UsageError> {
    let mut args = ClientArgs::default();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(help)),
            Long("socket") => args.socket = Some(PathBuf::from(parser.value()?)),
            Short('c') | Long("config") => args.config = Some(PathBuf::from(parser.value()?)),
            Long("json") => args.json = true,
            other => return Err(other.unexpected().into()),
        }
    }
    Ok(command(args))
}

fn parse_run(parser: &mut lexopt::Parser) -> Result<Command, UsageError> {
    let (mut config, mut foreground, mut pidfile, mut log_level) = (None, false, None, log::LevelFilter::Info);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(RUN_HELP)),
            Short('c') | Long("config") => config = Some(PathBuf::from(parser.value()?)),
            Short('f') | Long("foreground") => foreground = true,
            Long("pidfile") => pidfile = Some(PathBuf::from(parser.value()?)),
            Long("log-level") => {
                let value = parser.value()?.string()?;
                log_level = match value.as_str() {
                    "error" => log::LevelFilter::Error,
                    "warn" | "warning" => log::LevelFilter::Warn,
                    "info" => log::LevelFilter::Info,
                    "debug" => log::LevelFilter::Debug,
                    _ => {
                        return Err(UsageError(format!(
                            "run: --log-level '{value}' is not one of error, warn, info, debug"
                        )));
                    }
                };
            }
            other => return Err(other.unexpected().into()),
        }
    }
    Ok(Command::Run(RunArgs {
        config: required_config(config, "run")?,
        foreground,
        pidfile: pidfile.unwrap_or_else(|| PathBuf::from(DEFAULT_PIDFILE)),
        log_level,
    }))
}

fn parse_state_change(parser: &mut lexopt::Parser) -> Result<Command, UsageError> {
    let mut a = StateChangeArgs::default();
    let (mut router_id, mut conf_dir, mut iface, mut cidr, mut state_path) = (None, None, None, None, None);
    while let Some(arg) = parser.next()? {
        let Long(name) = arg else {
            return Err(match arg {
                Short('h') => return Ok(Command::Help(STATE_CHANGE_HELP)),
                other => other.unexpected().into(),
            });
        };
        let name = name.replace('-', "_");
        match name.as_str() {
            "help" => return Ok(Command::Help(STATE_CHANGE_HELP)),
            "router_id" => router_id = Some(parser.value()?.string()?),
            "namespace" => a.namespace = Some(parser.value()?.string()?),
            "conf_dir" => conf_dir = Some(PathBuf::from(parser.value()?)),
            "log_file" => a.log_file = Some(PathBuf::from(parser.value()?)),
            "monitor_interface" => iface = Some(parser.value()?.string()?),
            "monitor_cidr" => cidr = Some(parser.value()?.string()?),
            "pid_file" => a.pid_file = Some(PathBuf::from(parser.value()?)),
            "state_path" => state_path = Some(PathBuf::from(parser.value()?)),
            "user" => a.user = Some(parser.value()?.string()?),
            "group" => a.group = Some(parser.value()?.string()?),
            "enable_conntrackd" => a.enable_conntrackd = true,
            "noenable_conntrackd" => a.enable_conntrackd = false,
            "debug" => a.debug = true,
            "nodebug" => a.debug = false,
            "foreground" => a.foreground = true,
            // oslo.config's own options, which Neutron may add: accepted,
            // nothing to read from them.
            "config_file" | "config_dir" => {
                parser.value()?;
            }
            _ => return Err(UsageError(format!("state-change: unknown option '--{name}' (try --help)"))),
        }
    }
    let missing = |what: &str| UsageError(format!("state-change: --{what} is required"));
    a.router_id = router_id.ok_or_else(|| missing("router_id"))?;
    a.conf_dir = conf_dir.ok_or_else(|| missing("conf_dir"))?;
    a.monitor_interface = iface.ok_or_else(|| missing("monitor_interface"))?;
    a.monitor_cidr = cidr.ok_or_else(|| missing("monitor_cidr"))?;
    a.state_path = state_path.ok_or_else(|| missing("state_path"))?;
    Ok(Command::StateChange(a))
}

fn required_config(config: Option<PathBuf>, command: &str) -> Result<PathBuf, UsageError> {
    config.ok_or_else(|| UsageError(format!("{command}: -c FILE is required")))
}

/// argv[0]'s file name, for name-based dispatch.
pub fn invoked_as(argv0: Option<&OsString>) -> String {
    argv0.and_then(|a| Path::new(a).file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, UsageError> {
        parse("harouterd", args.iter().map(OsString::from).collect())
    }

    #[test]
    fn commands() {
        assert_eq!(p(&["check", "-c", "/x"]).unwrap(), Command::Check { config: "/x".into() });
        assert_eq!(
            p(&["render", "--config=/x", "--router", "r1", "--show-secrets"]).unwrap(),
            Command::Render { config: "/x".into(), router: Some("r1".into()), file: None, show_secrets: true }
        );
        assert_eq!(
            p(&["render", "-c", "/x", "--file=conntrackd.conf"]).unwrap(),
            Command::Render {
                config: "/x".into(),
                router: None,
                file: Some("conntrackd.conf".into()),
                show_secrets: false
            }
        );
        assert_eq!(p(&["--version"]).unwrap(), Command::Version);
        assert_eq!(p(&["render", "--help"]).unwrap(), Command::Help(RENDER_HELP));
        assert_eq!(p(&["check", "-h"]).unwrap(), Command::Help(CHECK_HELP));
    }

    #[test]
    fn usage_errors_name_the_value() {
        assert!(p(&[]).unwrap_err().0.contains("no command"));
        assert!(p(&["frobnicate"]).unwrap_err().0.contains("'frobnicate'"));
        assert!(p(&["check"]).unwrap_err().0.contains("-c FILE"));
        assert!(p(&["check", "-c", "/x", "--bogus"]).unwrap_err().0.contains("--bogus"));
        assert!(p(&["render", "-c"]).unwrap_err().0.contains("-c"));
        assert!(
            p(&["render", "-c", "/x", "--file", "../keepalived.conf"]).unwrap_err().0.contains("'../keepalived.conf'")
        );
        assert!(p(&["render", "-c", "/x", "--file", ""]).unwrap_err().0.contains("--file takes a file name"));
    }

    const NEUTRON_ARGS: &[&str] = &[
        "--router_id",
        "r1",
        "--namespace",
        "qrouter-r1",
        "--conf_dir",
        "/ha/r1",
        "--log-file",
        "/ha/r1/neutron-keepalived-state-change.log",
        "--monitor_interface",
        "ha-1",
        "--monitor_cidr",
        "169.254.0.1/24",
        "--pid_file",
        "/ha/r1.pid",
        "--state_path",
        "/var/lib/neutron",
        "--user",
        "1000",
        "--group",
        "1000",
        "--enable_conntrackd",
        "--debug",
    ];

    fn neutron_expected() -> StateChangeArgs {
        StateChangeArgs {
            router_id: "r1".into(),
            namespace: Some("qrouter-r1".into()),
            conf_dir: "/ha/r1".into(),
            log_file: Some("/ha/r1/neutron-keepalived-state-change.log".into()),
            monitor_interface: "ha-1".into(),
            monitor_cidr: "169.254.0.1/24".into(),
            pid_file: Some("/ha/r1.pid".into()),
            state_path: "/var/lib/neutron".into(),
            user: Some("1000".into()),
            group: Some("1000".into()),
            enable_conntrackd: true,
            debug: true,
            foreground: false,
        }
    }

    #[test]
    fn neutron_command_line_both_spellings_and_argv0() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(parse(NEUTRON_MONITOR_NAME, args(NEUTRON_ARGS)).unwrap(), Command::StateChange(neutron_expected()));
        let mut sub = vec!["state-change"];
        sub.extend_from_slice(NEUTRON_ARGS);
        assert_eq!(p(&sub).unwrap(), Command::StateChange(neutron_expected()));
        let dashed: Vec<String> = NEUTRON_ARGS
            .iter()
            .map(|a| if a.starts_with("--") { a.replace('_', "-") } else { a.to_string() })
            .collect();
        let dashed: Vec<&str> = dashed.iter().map(String::as_str).collect();
        assert_eq!(parse(NEUTRON_MONITOR_NAME, args(&dashed)).unwrap(), Command::StateChange(neutron_expected()));
        assert_eq!(invoked_as(Some(&OsString::from("/usr/bin/neutron-keepalived-state-change"))), NEUTRON_MONITOR_NAME);
        let mut attached = sub.clone();
        attached.push("--foreground");
        let Command::StateChange(a) = p(&attached).unwrap() else { panic!() };
        assert!(a.foreground);
    }

    #[test]
    fn client_arguments() {
        assert_eq!(
            p(&["status", "--socket", "/s", "--json"]).unwrap(),
            Command::Status(ClientArgs { socket: Some("/s".into()), config: None, json: true })
        );
        assert_eq!(
            p(&["events", "-c", "/x"]).unwrap(),
            Command::Events(ClientArgs { config: Some("/x".into()), ..Default::default() })
        );
        assert_eq!(p(&["events", "--help"]).unwrap(), Command::Help(EVENTS_HELP));
        assert!(p(&["status", "--table"]).unwrap_err().0.contains("--table"));
    }

    #[test]
    fn run_arguments() {
        assert_eq!(
            p(&["run", "-c", "/x", "--foreground", "--pidfile", "/p", "--log-level", "debug"]).unwrap(),
            Command::Run(RunArgs {
                config: "/x".into(),
                foreground: true,
                pidfile: "/p".into(),
                log_level: log::LevelFilter::Debug
            })
        );
        let Command::Run(a) = p(&["run", "-c", "/x"]).unwrap() else { panic!() };
        assert_eq!(
            (a.foreground, a.pidfile.to_str(), a.log_level),
            (false, Some(DEFAULT_PIDFILE), log::LevelFilter::Info)
        );
        assert!(p(&["run", "-c", "/x", "--log-level", "loud"]).unwrap_err().0.contains("'loud'"));
        assert!(p(&["run"]).unwrap_err().0.contains("run: -c FILE is required"));
    }

    #[test]
    fn state_change_usage_errors() {
        let err = parse(NEUTRON_MONITOR_NAME, vec!["--router_id".into(), "r1".into()]).unwrap_err();
        assert!(err.0.contains("--conf_dir is required"), "{err:?}");
        let err = p(&["state-change", "--bogus", "1"]).unwrap_err();
        assert!(err.0.contains("unknown option '--bogus'"), "{err:?}");
        assert_eq!(p(&["state-change", "--help"]).unwrap(), Command::Help(STATE_CHANGE_HELP));
    }
}
