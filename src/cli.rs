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
        show_secrets: bool,
    },
}

pub const MAIN_HELP: &str = "\
harouterd - VRRP high availability for virtual routers (keepalived supervisor)

Usage: harouterd COMMAND [OPTIONS]

Commands:
  check   -c FILE                               validate a config file
  render  -c FILE [--router ID] [--show-secrets] print the keepalived files

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

pub const RENDER_HELP: &str = "\
Usage: harouterd render -c FILE [--router ID] [--show-secrets]

With --router ID: print exactly the keepalived.conf that router gets.
Without: every router's files, each after a '# ==> PATH <==' line.
VRRP passwords are masked unless --show-secrets is given.
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
    let (mut config, mut router, mut show_secrets) = (None, None, false);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(RENDER_HELP)),
            Short('c') | Long("config") => config = Some(PathBuf::from(parser.value()?)),
            Long("router") => router = Some(parser.value()?.string()?),
            Long("show-secrets") => show_secrets = true,
            other => return Err(other.unexpected().into()),
        }
    }
    Ok(Command::Render { config: required_config(config, "render")?, router, show_secrets })
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
            Command::Render { config: "/x".into(), router: Some("r1".into()), show_secrets: true }
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
    }

    #[test]
    fn argv0_dispatch() {
        assert_eq!(invoked_as(Some(&OsString::from("/usr/bin/neutron-keepalived-state-change"))), NEUTRON_MONITOR_NAME);
        assert!(parse(NEUTRON_MONITOR_NAME, vec![]).is_err());
    }
}
