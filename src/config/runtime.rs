//! What `check` can only judge on the machine the daemon will run on:
//! names resolved when the daemon starts (`socket_group`, `allowed_uids`)
//! and programs it runs (`keepalived_path`, `conntrackd_path`,
//! `transition_script`).
//!
//! These are warnings, not errors: a config may be checked where it is
//! built (a package, an image) rather than where it runs, and a user or
//! binary may be installed after it. The lookups themselves are the
//! caller's ([`Host`]), so the rules here stay pure and testable.

use std::path::{Path, PathBuf};

use super::{ConfigError, Parsed, Principal};

/// The answer to a user or group lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Found,
    Missing,
    /// The lookup itself failed (an unreadable /etc/group, ...).
    Failed(String),
}

/// What a path is, as far as running it goes (symlinks followed, as exec
/// does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileKind {
    Missing,
    /// A directory, a device, ...
    NotAFile,
    /// A regular file without any execute bit (its permission bits).
    NotExecutable(u32),
    Executable,
    /// Something else went wrong looking at it (permission denied on a
    /// directory on the way, ...).
    Unknown(String),
}

/// The machine, as `check` sees it.
pub trait Host {
    fn group(&self, name: &str) -> Lookup;
    fn user(&self, name: &str) -> Lookup;
    fn file(&self, path: &Path) -> FileKind;
}

/// Warnings (`path:line: warning: ...`) about the names and programs of
/// `parsed` that do not resolve on `host`. `search_path` is the `PATH`
/// children get, where a bare `keepalived_path` or `conntrackd_path` is
/// looked up (never the caller's own `PATH`).
pub fn warnings(parsed: &Parsed, search_path: &str, host: &dyn Host) -> Vec<ConfigError> {
    let config = &parsed.config;
    let daemon = &config.daemon;
    let mut out = Vec::new();
    let mut warn = |key: &str, message: String| {
        out.push(ConfigError {
            path: config.path.clone(),
            line: parsed.daemon_lines.get(key).copied(),
            message: format!("warning: {key}: {message}"),
        });
    };

    if let Some(Principal::Name(name)) = &daemon.socket_group {
        match host.group(name) {
            Lookup::Found => {}
            Lookup::Missing => {
                warn("socket_group", format!("no group '{name}' on this system: the daemon would refuse to start"))
            }
            Lookup::Failed(e) => warn("socket_group", format!("cannot look up group '{name}': {e}")),
        }
    }
    for principal in &daemon.allowed_uids {
        let Principal::Name(name) = principal else { continue };
        match host.user(name) {
            Lookup::Found => {}
            Lookup::Missing => {
                warn("allowed_uids", format!("no user '{name}' on this system: the daemon would refuse to start"))
            }
            Lookup::Failed(e) => warn("allowed_uids", format!("cannot look up user '{name}': {e}")),
        }
    }

    // A program only matters when something runs it: keepalived for the
    // routers that are not monitor-only, conntrackd for those too when
    // ha_conntrackd_enabled.
    let runs_keepalived = config.routers.iter().any(|r| r.keepalived);
    let programs = [
        ("keepalived_path", &daemon.keepalived_path, runs_keepalived, "no keepalived could be started"),
        (
            "conntrackd_path",
            &daemon.conntrackd_path,
            runs_keepalived && daemon.conntrackd_enabled,
            "conntrackd could not be run",
        ),
    ];
    for (key, program, used, consequence) in programs {
        if !used {
            continue;
        }
        let given = if parsed.daemon_lines.contains_key(key) { "" } else { " (the default)" };
        if program.starts_with('/') {
            if let Some(problem) = not_runnable(host.file(Path::new(program))) {
                warn(key, format!("{program}{given} {problem}: {consequence}"));
            }
        } else if find_program(program, search_path, host).is_none() {
            warn(
                key,
                format!(
                    "'{program}'{given} is not found in the PATH the daemon gives its children ({search_path}): \
                     {consequence}"
                ),
            );
        }
    }

    if let Some(script) = &daemon.transition_script
        && let Some(problem) = not_runnable(host.file(script))
    {
        warn("transition_script", format!("{} {problem}: no transition could run it", script.display()));
    }
    out
}

/// The first executable file `name` in the directories of `search_path`,
/// as execvp would pick it.
fn find_program(name: &str, search_path: &str, host: &dyn Host) -> Option<PathBuf> {
    search_path
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| host.file(candidate) == FileKind::Executable)
}

/// Why a file cannot be run, or `None` when it can.
fn not_runnable(kind: FileKind) -> Option<String> {
    match kind {
        FileKind::Executable => None,
        FileKind::Missing => Some("does not exist".to_owned()),
        FileKind::NotAFile => Some("is not a regular file".to_owned()),
        FileKind::NotExecutable(mode) => Some(format!("is not executable (mode {mode:04o})")),
        FileKind::Unknown(e) => Some(format!("cannot be checked ({e})")),
    }
}
