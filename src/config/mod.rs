//! The configuration file (SPEC section 2): types, and `load` which reads a
//! file and hands its text to the pure parser in [`parse`].
//!
//! Router values are *resolved* at parse time (a router's `advert_int` is its
//! own or the daemon's), so the renderer, the daemon and the reload diff all
//! see one value per setting and a change in `[daemon]` shows up as a change
//! of every router that inherits it.

mod hints;
mod parse;
pub mod runtime;
/// The second pass: sections to typed values, rules across routers.
mod sections;
/// Value parsers, one per kind of value.
mod values;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::core::ident::{Namespace, RouterId};
use crate::core::net::Cidr;

pub use parse::parse;

/// One problem in a config file, printed as `path:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based; `None` for problems with the file as a whole.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// All problems found in one file; a config is accepted only when empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A VRRP password. Its `Debug` never shows the value, so a stray `{:?}` in
/// a log line cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthType {
    Pass,
    Ah,
}

impl AuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Pass => "PASS",
            AuthType::Ah => "AH",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    pub auth_type: AuthType,
    pub password: Secret,
}

/// What to do when a supervised keepalived dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildAction {
    Respawn,
    Exit,
}

/// `transition_script_timeout` when not given: a script may take its time
/// (it may talk to other systems), but one that hangs must not hold its
/// router's later transitions back for ever.
pub const DEFAULT_SCRIPT_TIMEOUT: u32 = 60;

/// Whether keepalived keeps running when the daemon exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExit {
    Keep,
    Stop,
}

/// A user or group given by number or by name; names are resolved when the
/// daemon starts, so `check` stays free of lookups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Id(u32),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    pub state_path: PathBuf,
    pub ha_confs_path: PathBuf,
    pub socket: PathBuf,
    pub socket_mode: u32,
    pub socket_group: Option<Principal>,
    pub allowed_uids: Vec<Principal>,
    pub keepalived_path: String,
    pub conntrackd_path: String,
    pub conntrackd_enabled: bool,
    /// What goes into each router's conntrackd.conf.
    pub conntrackd: ConntrackdOptions,
    pub child_action: ChildAction,
    pub email_from: String,
    pub keepalived_router_id: String,
    pub on_exit: OnExit,
    pub transition_script: Option<PathBuf>,
    /// Seconds a transition script may run before it is killed.
    pub transition_script_timeout: u32,
    pub notify_agent_socket: Option<PathBuf>,
    pub ipv6_forwarding_on_primary: bool,
    /// Where `GET /metrics` is also served over TCP; `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
}

/// The `ha_conntrackd_*` keys: Neutron's names and defaults
/// (neutron/conf/agent/l3/ha.py), so an l3_agent.ini's values carry over.
/// Numbers are bounded by what conntrackd reads them into (a C `int`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConntrackdOptions {
    pub hashsize: u32,
    pub hashlimit: u32,
    pub unix_backlog: u32,
    pub socket_buffer_size: u32,
    pub socket_buffer_size_max_grown: u32,
    /// Always a multicast address (224.0.0.0/4).
    pub ipv4_mcast_addr: Ipv4Addr,
    /// The base of the UDP port: each router syncs on `group + vrid`.
    pub group: u32,
    pub snd_socket_buffer: u32,
    pub rcv_socket_buffer: u32,
}

impl Default for ConntrackdOptions {
    fn default() -> ConntrackdOptions {
        ConntrackdOptions {
            hashsize: 32768,
            hashlimit: 131072,
            unix_backlog: 20,
            socket_buffer_size: 262142,
            socket_buffer_size_max_grown: 655355,
            ipv4_mcast_addr: Ipv4Addr::new(225, 0, 0, 50),
            group: 3780,
            snd_socket_buffer: 24985600,
            rcv_socket_buffer: 24985600,
        }
    }
}

/// `vip = CIDR dev IFACE [scope S]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vip {
    pub cidr: Cidr,
    pub dev: String,
    pub scope: Option<String>,
}

/// A route destination: a network, or a bare host address (Neutron writes
/// on-link gateway host routes that way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteDest {
    Net(Cidr),
    Host(IpAddr),
}

impl RouteDest {
    pub fn is_ipv4(&self) -> bool {
        match self {
            RouteDest::Net(c) => c.is_ipv4(),
            RouteDest::Host(a) => a.is_ipv4(),
        }
    }

    /// `0.0.0.0/0` or `::/0`: what makes a route a gateway route for the
    /// health check.
    pub fn is_default(&self) -> bool {
        matches!(self, RouteDest::Net(c) if c.prefix == 0)
    }
}

impl fmt::Display for RouteDest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteDest::Net(c) => c.fmt(f),
            RouteDest::Host(a) => a.fmt(f),
        }
    }
}

/// `route = DEST [via NEXTHOP] [dev IFACE] [scope S]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dest: RouteDest,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
    pub scope: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    pub id: RouterId,
    /// Line of the `[router ID]` header, for messages about the router as a
    /// whole.
    pub line: usize,
    /// `None`: the daemon's own namespace.
    pub namespace: Option<Namespace>,
    pub ha_interface: String,
    pub ha_cidr: Cidr,
    pub vrid: u8,
    pub priority: u8,
    pub advert_int: u32,
    /// `None` when no password is set anywhere: no authentication block.
    pub auth: Option<Auth>,
    /// In file order: the health-check script greps for the first one.
    pub vips: Vec<Vip>,
    /// In file order, rendered in that order.
    pub routes: Vec<Route>,
    /// Extra tracked interfaces; the HA interface is always tracked first.
    pub track_interfaces: Vec<String>,
    pub mcast_src_ip: Option<IpAddr>,
    pub unicast_src_ip: Option<IpAddr>,
    pub unicast_peers: Vec<IpAddr>,
    pub health_check_interval: u32,
    /// `false`: monitor only, something else runs keepalived.
    pub keepalived: bool,
    /// This node's own address on the HA network (Neutron takes it from the
    /// router's HA port): conntrackd syncs from it and ignores its traffic.
    /// Always inside `ha_cidr`; required when the router gets a
    /// conntrackd.conf.
    pub ha_address: Option<Ipv4Addr>,
    /// Derived from `ha_cidr` and `vrid` at parse time (so an impossible one
    /// is a config error); the same inputs always give the same address.
    pub primary_vip: Cidr,
}

impl RouterConfig {
    /// Every interface keepalived tracks: the HA interface, then the extra
    /// ones in file order.
    pub fn tracked(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.ha_interface.as_str()).chain(self.track_interfaces.iter().map(String::as_str))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    pub daemon: DaemonConfig,
    /// In file order.
    pub routers: Vec<RouterConfig>,
    /// Whether any password (daemon or router) is set in the file.
    pub holds_password: bool,
}

impl Config {
    pub fn router(&self, id: &str) -> Option<&RouterConfig> {
        self.routers.iter().find(|r| r.id.as_str() == id)
    }
}

/// A config file that parsed, with the warnings worth telling the operator
/// (things that work but should not be left as they are).
#[derive(Debug)]
pub struct Parsed {
    pub config: Config,
    pub warnings: Vec<ConfigError>,
    /// The line of each `[daemon]` key the file sets, for messages about
    /// values only judged later ([`runtime`]: names and programs that
    /// exist, or not, on the machine).
    pub daemon_lines: std::collections::HashMap<String, usize>,
}

/// Reads and parses `path`. Errors name the file (and line); warnings are for
/// things that work but should not be left as they are.
pub fn load(path: &Path) -> Result<Parsed, ConfigErrors> {
    let file_error =
        |message: String| ConfigErrors(vec![ConfigError { path: path.to_path_buf(), line: None, message }]);
    let bytes = std::fs::read(path).map_err(|e| file_error(format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        ConfigErrors(vec![ConfigError {
            path: path.to_path_buf(),
            line: Some(line),
            message: "not valid UTF-8".to_owned(),
        }])
    })?;
    let Parsed { config, mut warnings, daemon_lines } = parse(path, &text)?;
    if config.holds_password {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o004 != 0 {
                warnings.push(ConfigError {
                    path: path.to_path_buf(),
                    line: None,
                    message: format!(
                        "warning: holds a VRRP password and is readable by others (mode {mode:04o}); chmod o-r it"
                    ),
                });
            }
        }
    }
    Ok(Parsed { config, warnings, daemon_lines })
}

#[cfg(test)]
mod tests;
