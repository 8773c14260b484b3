//! `harouterd check -c FILE`: parse and validate, print only problems.
//!
//! Besides the config's own errors and warnings, `check` warns (stderr,
//! exit 0) about what only this machine can tell: names and programs the
//! daemon resolves when it runs ([`runtime`]), and files someone other than
//! root could change, since root acts on them: the config file itself (it
//! says what root runs and where root writes) and the `transition_script`
//! (root runs it), each with the directories leading to it.

use std::path::Path;

use super::Exit;
use crate::config::runtime::{self, FileKind, Lookup};
use crate::config::{self, Config};
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
            Exit::Ok
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
