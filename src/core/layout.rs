//! Where each router's files live, in Neutron's layout (SPEC section 3.2).
//! The only place paths are built from router IDs; a [`RouterId`] cannot
//! hold `/` or `..`, so every path stays under `ha_confs_path`.
//!
//! Pure: the file operations on these paths, done relative to directory
//! descriptors, are [`crate::sys::files::confs`]'s.
//!
//! Keepalived's pidfiles are kept where Neutron's `ProcessManager` puts
//! them, beside the router directories: SPEC 3.2 names that layout, and a
//! keepalived started by Neutron's L3 agent is found (and adopted) there
//! after a migration. What makes a stale pidfile harmless is the proof in
//! [`crate::supervisor`] (executable, uid, namespace, start time),
//! not its location; `ha_confs_path` must be root's alone either way.

use std::path::{Path, PathBuf};

use crate::core::ident::RouterId;

/// The name of a router's state file in its directory.
pub const STATE_FILE: &str = "state";
/// The state file's mode: Neutron's agent (another user) reads it.
pub const STATE_FILE_MODE: u32 = 0o644;
/// The name of keepalived's notify FIFO in a router's directory.
pub const NOTIFY_FIFO: &str = "notify.fifo";
/// The mode the daemon's directories are created with: others may reach
/// the control socket and read state files (Neutron's agent does), nobody
/// but root may change anything. Existing directories keep their mode.
pub const DIR_MODE: u32 = 0o755;
/// The mode a router's directory is created with.
pub const ROUTER_DIR_MODE: u32 = DIR_MODE;

/// Where a router's files are, under `ha_confs_path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    ha_confs_path: PathBuf,
}

impl Layout {
    pub fn new(ha_confs_path: &Path) -> Layout {
        Layout { ha_confs_path: ha_confs_path.to_path_buf() }
    }

    pub fn ha_confs_path(&self) -> &Path {
        &self.ha_confs_path
    }

    /// `$ha_confs_path/ID`, the router's own directory.
    pub fn router_dir(&self, id: &RouterId) -> PathBuf {
        self.ha_confs_path.join(id.as_str())
    }

    pub fn keepalived_conf(&self, id: &RouterId) -> PathBuf {
        self.router_dir(id).join("keepalived.conf")
    }

    /// `primary`, `backup` or `fault`, no newline.
    pub fn state_file(&self, id: &RouterId) -> PathBuf {
        self.router_dir(id).join("state")
    }

    pub fn check_script(&self, id: &RouterId, vrid: u8) -> PathBuf {
        self.router_dir(id).join(format!("ha_check_script_{vrid}.sh"))
    }

    /// The FIFO keepalived writes its own state changes to.
    pub fn notify_fifo(&self, id: &RouterId) -> PathBuf {
        self.router_dir(id).join("notify.fifo")
    }

    /// `$ha_confs_path/ID.pid.keepalived`, beside (not in) the router's dir,
    /// where Neutron's ProcessManager puts it.
    pub fn pid_file(&self, id: &RouterId) -> PathBuf {
        self.ha_confs_path.join(format!("{id}.pid.keepalived"))
    }

    pub fn vrrp_pid_file(&self, id: &RouterId) -> PathBuf {
        self.ha_confs_path.join(format!("{id}.pid.keepalived-vrrp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neutron_layout() {
        let l = Layout::new(Path::new("/var/lib/neutron/ha_confs"));
        let id = RouterId::parse("r1").unwrap();
        assert_eq!(l.keepalived_conf(&id), Path::new("/var/lib/neutron/ha_confs/r1/keepalived.conf"));
        assert_eq!(l.state_file(&id), Path::new("/var/lib/neutron/ha_confs/r1/state"));
        assert_eq!(l.check_script(&id, 7), Path::new("/var/lib/neutron/ha_confs/r1/ha_check_script_7.sh"));
        assert_eq!(l.pid_file(&id), Path::new("/var/lib/neutron/ha_confs/r1.pid.keepalived"));
        assert_eq!(l.vrrp_pid_file(&id), Path::new("/var/lib/neutron/ha_confs/r1.pid.keepalived-vrrp"));
    }
}
