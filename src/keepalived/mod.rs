//! Everything about keepalived: the files a router gets (`conf` renders
//! keepalived.conf, `health_check` its script), keepalived's own view of a
//! router (`notify_fifo`), and the SIGHUP window it is reloaded in
//! (`throttle`). Running it is [`crate::supervisor`]'s.

pub mod conf;
pub mod health_check;
pub mod notify_fifo;
pub mod throttle;

use std::path::PathBuf;

use crate::config::{DaemonConfig, RouterConfig};
use crate::conntrackd::conf as conntrackd_conf;
use crate::core::layout::Layout;

/// A file the daemon writes for a router, with the mode it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterFile {
    pub path: PathBuf,
    pub contents: String,
    pub mode: u32,
}

/// Mode of keepalived.conf: it may hold the VRRP password.
pub const CONF_MODE: u32 = 0o600;

/// Every file a router with a supervised keepalived gets: its
/// keepalived.conf, then the health-check script when one is needed, then
/// conntrackd.conf with `ha_conntrackd_enabled`. Monitor-only routers
/// (`keepalived = false`) get none: whatever runs their keepalived owns
/// their directory.
pub fn router_files(
    daemon: &DaemonConfig,
    router: &RouterConfig,
    layout: &Layout,
    secrets: conf::Secrets,
) -> Vec<RouterFile> {
    if !router.keepalived {
        return Vec::new();
    }
    let mut files = vec![RouterFile {
        path: layout.keepalived_conf(&router.id),
        contents: conf::render(daemon, router, layout, secrets),
        mode: CONF_MODE,
    }];
    if health_check::is_needed(router) {
        files.push(RouterFile {
            path: layout.check_script(&router.id, router.vrid),
            contents: health_check::script(router),
            mode: health_check::SCRIPT_MODE,
        });
    }
    if daemon.conntrackd_enabled
        && let Some(ha_address) = router.ha_address
    {
        let paths = conntrackd_conf::Paths::new(layout, &router.id);
        files.push(RouterFile {
            contents: conntrackd_conf::render(&daemon.conntrackd, router, ha_address, &paths),
            path: paths.conf,
            mode: conntrackd_conf::CONF_MODE,
        });
    }
    files
}
