//! `harouterd check -c FILE`: parse and validate, print only problems.
//!
//! Besides the config's own errors and warnings, `check` warns (stderr,
//! exit 0) about what only this machine can tell: names and programs the
//! daemon resolves when it runs ([`runtime`]), and files someone other than
//! root could change, since root acts on them: the config file itself (it
//! says what root runs and where root writes) and the `transition_script`
//! (root runs it), each with the directories leading to it.

use std::path::{Path, PathBuf};

use super::Exit;
use crate::config::runtime::{self, FileKind, Lookup};
use crate::config::{self, Config, ConfigError, Parsed};
use crate::sys::files::trusted::{self as trusted_dir, Position};
use crate::sys::spawn::CHILD_PATH;

pub fn run(config: &Path) -> Exit {
    match config::load(config) {
        Ok(parsed) => {
            for warning in parsed.warnings.iter().chain(&runtime::warnings(&parsed, CHILD_PATH, &System)) {
                eprintln!("{warning}");
            }
            for warning in permission_warnings(config, &parsed.config) {
                eprintln!("{warning}");
            }
            let (errors, warnings) = directory_problems(&parsed);
            for problem in warnings.iter().chain(&errors) {
                eprintln!("{problem}");
            }
            if errors.is_empty() { Exit::Ok } else { Exit::Usage }
        }
        Err(errors) => {
            eprintln!("{errors}");
            Exit::Usage
        }
    }
}

/// The machine `check` runs on, looked up as the daemon will: the same
/// user and group database calls, and exec's view of a file (symlinks
/// followed, any execute bit will do for root).
struct System;

impl runtime::Host for System {
    fn group(&self, name: &str) -> Lookup {
        match nix::unistd::Group::from_name(name) {
            Ok(Some(_)) => Lookup::Found,
            Ok(None) => Lookup::Missing,
            Err(e) => Lookup::Failed(e.to_string()),
        }
    }

    fn user(&self, name: &str) -> Lookup {
        match nix::unistd::User::from_name(name) {
            Ok(Some(_)) => Lookup::Found,
            Ok(None) => Lookup::Missing,
            Err(e) => Lookup::Failed(e.to_string()),
        }
    }

    fn file(&self, path: &Path) -> FileKind {
        use std::io::ErrorKind;
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(path) {
            Ok(meta) if !meta.is_file() => FileKind::NotAFile,
            Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
                FileKind::NotExecutable(meta.permissions().mode() & 0o7777)
            }
            Ok(_) => FileKind::Executable,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => FileKind::Missing,
            Err(e) => FileKind::Unknown(e.to_string()),
        }
    }
}

/// The directories `run` checks before it writes anything (`state_path`,
/// `ha_confs_path`, the control socket's), judged by the same rule
/// ([`trusted_dir::check_dir`]), so that a file `check` passes is never
/// refused by `run` for them: `(errors, warnings)`.
///
/// - An existing directory the rule refuses (someone else's, writable by
///   others, ...) is an error: `run` would exit 2.
/// - A missing one is judged by what exists above it, as `run` creates it
///   (mode 0755, root's) below directories that passed the rule on the
///   way: nothing to say when they pass, an error when they do not.
/// - One that cannot be looked at (a directory `check`'s user may not
///   search) is a warning: only the daemon's user can tell.
pub fn directory_problems(parsed: &Parsed) -> (Vec<ConfigError>, Vec<ConfigError>) {
    let daemon = &parsed.config.daemon;
    let socket_dir = daemon.socket.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let mut seen: Vec<String> = Vec::new();
    for (key, dir) in
        [("state_path", &daemon.state_path), ("ha_confs_path", &daemon.ha_confs_path), ("socket", &socket_dir)]
    {
        let Err(e) = trusted_dir::check_dir(dir) else { continue };
        if e.is_not_found() {
            continue;
        }
        let problem = e.to_string();
        if seen.contains(&problem) {
            continue;
        }
        seen.push(problem.clone());
        let line = parsed.daemon_lines.get(key).copied();
        let given = if line.is_some() { String::new() } else { format!(" (the default, {})", dir.display()) };
        let what = if key == "socket" { "the control socket's directory" } else { key };
        let error = |message| ConfigError { path: parsed.config.path.clone(), line, message };
        if e.is_refusal() {
            errors.push(error(format!(
                "{what}{given}: refusing directory {problem}: harouterd run would refuse to start (only root may \
                 own or change the directories it writes in)"
            )));
        } else {
            warnings.push(error(format!("warning: {what}{given}: cannot check directory {problem}")));
        }
    }
    (errors, warnings)
}

/// `PATH: warning: ...` lines for the config file and the transition
/// script when someone other than root (or whoever runs `check`) owns or
/// can write them or a directory above them. A missing transition script
/// is not a permission problem and gets none.
pub fn permission_warnings(config_path: &Path, config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut warn = |what: String| warnings.push(format!("{}: warning: {what}", config_path.display()));
    for problem in file_problems(config_path) {
        warn(format!("{problem}: root reads this file and runs what it says"));
    }
    if let Some(script) = &config.daemon.transition_script
        && script.exists()
    {
        for problem in file_problems(script) {
            warn(format!("transition_script {problem}: root runs it"));
        }
    }
    warnings
}

/// What is wrong with `path` and the directories above it, each as
/// `PATH: reason`.
fn file_problems(path: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut problems = Vec::new();
    if let Ok(meta) = std::fs::metadata(path) {
        let at = Position { last: true, under_shared: false };
        if let Err(reason) = trusted_dir::judge(meta.uid(), meta.mode() & 0o777, trusted_dir::trusted_uid(), at) {
            problems.push(format!("{}: {reason}", path.display()));
        }
    }
    // The directory it is named in, and the one it really is in (the file
    // may be a symlink).
    let named = std::path::absolute(path).ok().and_then(|p| p.parent().map(Path::to_path_buf));
    let real = std::fs::canonicalize(path).ok().and_then(|p| p.parent().map(Path::to_path_buf));
    for dir in [named, real].into_iter().flatten() {
        if let Err(e) = trusted_dir::check_dir(&dir) {
            let problem = e.to_string();
            if !problems.contains(&problem) {
                problems.push(problem);
            }
        }
    }
    problems
}
