//! The subcommands: each takes parsed arguments, sets its process up and
//! returns an [`Exit`]. The two long-running front-ends' set-up is here too
//! (`run`: the daemon, `state_change`: the monitor); what they then run is
//! in `daemon/` and `monitor/`.

pub mod check;
pub mod client;
pub mod render;
pub mod run;
pub mod state_change;

use std::io::Write;

pub use crate::Exit;

/// Writes to stdout without panicking on a closed pipe (`render | head`):
/// a failed write is a runtime failure, reported once.
pub fn print(text: &str) -> Exit {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Exit::Ok,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Runtime,
        Err(e) => {
            eprintln!("harouterd: writing to stdout: {e}");
            Exit::Runtime
        }
    }
}

/// Loads a config for a one-shot command: warnings and errors go to stderr,
/// errors make it a usage/config failure (exit 2).
pub fn load_config(path: &std::path::Path) -> Result<crate::config::Config, Exit> {
    match crate::config::load(path) {
        Ok(parsed) => {
            for warning in &parsed.warnings {
                eprintln!("{warning}");
            }
            Ok(parsed.config)
        }
        Err(errors) => {
            eprintln!("{errors}");
            Err(Exit::Usage)
        }
    }
}
