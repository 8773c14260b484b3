//! `harouterd render`: the files the daemon would write, on stdout.

use std::path::Path;

use super::{Exit, load_config, print};
use crate::config::Config;
use crate::ident::RouterId;
use crate::keepalived::{self, conf::Secrets};
use crate::layout::Layout;

pub fn run(config_path: &Path, router: Option<&str>, show_secrets: bool) -> Exit {
    let config = match load_config(config_path) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    let secrets = if show_secrets { Secrets::Show } else { Secrets::Mask };
    match router {
        Some(id) => match one_router(&config, id, secrets) {
            Ok(text) => print(&text),
            Err(message) => {
                eprintln!("harouterd: {message}");
                Exit::Usage
            }
        },
        None => print(&all_routers(&config, secrets)),
    }
}

/// Exactly the keepalived.conf `id` gets, nothing added.
fn one_router(config: &Config, id: &str, secrets: Secrets) -> Result<String, String> {
    let id = RouterId::parse(id)?;
    let router = config.router(id.as_str()).ok_or_else(|| format!("{}: no router '{id}'", config.path.display()))?;
    let layout = Layout::new(&config.daemon.ha_confs_path);
    keepalived::router_files(&config.daemon, router, &layout, secrets)
        .into_iter()
        .next()
        .map(|file| file.contents)
        .ok_or_else(|| format!("router '{id}' is monitor-only (keepalived = false): it has no keepalived.conf"))
}

/// Every router's files, each as `# ==> PATH <==`, the contents and a
/// newline; files separated by an empty line.
fn all_routers(config: &Config, secrets: Secrets) -> String {
    let layout = Layout::new(&config.daemon.ha_confs_path);
    config
        .routers
        .iter()
        .flat_map(|router| keepalived::router_files(&config.daemon, router, &layout, secrets))
        .map(|file| format!("# ==> {} <==\n{}\n", file.path.display(), file.contents))
        .collect::<Vec<_>>()
        .join("\n")
}
