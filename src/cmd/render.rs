//! `harouterd render`: the files the daemon would write, on stdout.

use std::path::Path;

use super::{Exit, load_config, print};
use crate::config::Config;
use crate::core::ident::RouterId;
use crate::core::layout::Layout;
use crate::keepalived::{self, RouterFile, conf::Secrets};

/// What `--router ID` alone prints, as it always has.
const DEFAULT_FILE: &str = "keepalived.conf";

pub fn run(config_path: &Path, router: Option<&str>, file: Option<&str>, show_secrets: bool) -> Exit {
    let config = match load_config(config_path) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    let secrets = if show_secrets { Secrets::Show } else { Secrets::Mask };
    let text = match router {
        Some(id) => one_file(&config, id, file.unwrap_or(DEFAULT_FILE), secrets),
        None => all_files(&config, file, secrets),
    };
    match text {
        Ok(text) => print(&text),
        Err(message) => {
            eprintln!("harouterd: {message}");
            Exit::Usage
        }
    }
}

fn file_name(file: &RouterFile) -> &str {
    file.path.file_name().and_then(|n| n.to_str()).unwrap_or_default()
}

/// Exactly the file named `name` that router `id` gets, nothing added.
fn one_file(config: &Config, id: &str, name: &str, secrets: Secrets) -> Result<String, String> {
    let id = RouterId::parse(id)?;
    let router = config.router(id.as_str()).ok_or_else(|| format!("{}: no router '{id}'", config.path.display()))?;
    let layout = Layout::new(&config.daemon.ha_confs_path);
    let files = keepalived::router_files(&config.daemon, router, &layout, secrets);
    if let Some(file) = files.iter().find(|f| file_name(f) == name) {
        return Ok(file.contents.clone());
    }
    let why = if !router.keepalived {
        " (it is monitor-only, keepalived = false: it gets no files)".to_owned()
    } else if name == crate::conntrackd::conf::CONF_FILE && !config.daemon.conntrackd_enabled {
        " (ha_conntrackd_enabled is false)".to_owned()
    } else {
        format!(" (it gets {})", files.iter().map(file_name).collect::<Vec<_>>().join(", "))
    };
    Err(format!("router '{id}' gets no {name}{why}"))
}

/// Every router's files (only those named `only`, when given), each as
/// `# ==> PATH <==`, the contents and a newline; files separated by an
/// empty line.
fn all_files(config: &Config, only: Option<&str>, secrets: Secrets) -> Result<String, String> {
    let layout = Layout::new(&config.daemon.ha_confs_path);
    let shown: Vec<String> = config
        .routers
        .iter()
        .flat_map(|router| keepalived::router_files(&config.daemon, router, &layout, secrets))
        .filter(|file| only.is_none_or(|name| file_name(file) == name))
        .map(|file| format!("# ==> {} <==\n{}\n", file.path.display(), file.contents))
        .collect();
    match only {
        Some(name) if shown.is_empty() => Err(format!("{}: no router gets a {name}", config.path.display())),
        _ => Ok(shown.join("\n")),
    }
}
