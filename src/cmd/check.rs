//! `harouterd check -c FILE`: parse and validate, print only problems.
//!
//! Besides the config's own errors and warnings, `check` warns (stderr,
//! exit 0) about files someone other than root could change, since root
//! acts on them: the config file itself (it says what root runs and where
//! root writes) and the `transition_script` (root runs it), each with the
//! directories leading to it.

use std::path::Path;

use super::{Exit, load_config};
use crate::config::Config;
use crate::sys::files::trusted::{self as trusted_dir, Position};

pub fn run(config: &Path) -> Exit {
    match load_config(config) {
        Ok(parsed) => {
            for warning in permission_warnings(config, &parsed) {
                eprintln!("{warning}");
            }
            Exit::Ok
        }
        Err(exit) => exit,
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
