//! A router's conntrackd.conf: byte for byte what Neutron's
//! `ConntrackdManager.build_config()` (neutron/agent/linux/conntrackd.py)
//! writes, so a router moved from Neutron's L3 agent to harouterd keeps
//! replicating its connections with the peer node exactly as before
//! (tests/golden/conntrackd holds Neutron's own output).
//!
//! Pure: values in, text out. It also knows what conntrackd cannot read
//! (paths over its buffers, interface names its lexer takes for something
//! else, a Group beyond a UDP port), so the config parser can refuse those
//! with a line number instead of conntrackd failing at start.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::config::{ConntrackdOptions, RouterConfig};
use crate::core::ident::RouterId;
use crate::core::layout::Layout;

/// Names inside the router's directory, as Neutron names them.
pub const CONF_FILE: &str = "conntrackd.conf";
pub const LOCK_FILE: &str = "conntrackd.lock";
pub const CTL_FILE: &str = "conntrackd.ctl";
/// conntrackd writes no pidfile of its own: Neutron's agent writes this one
/// (from `pgrep`) once conntrackd runs, and the daemon writes it (from the
/// pid it spawned), so a conntrackd started by either is found by the other.
pub const PID_FILE: &str = "conntrackd.pid";

/// Mode of conntrackd.conf. Neutron writes 0644; it holds no secret, but
/// only root's conntrackd (and the state-change monitor, which keeps
/// CAP_DAC_OVERRIDE for the sync) reads it, so it gets keepalived.conf's
/// 0600.
pub const CONF_MODE: u32 = 0o600;

/// conntrackd copies file paths (`LockFile`) into 256-byte buffers, and
/// Neutron refuses any path of conntrackd's over 255 characters.
pub const PATH_MAX: usize = 255;

/// conntrackd `strcpy`s the control socket path into a `sockaddr_un`
/// (108 bytes with the NUL) without a length check; Neutron refuses paths
/// over 107 characters.
pub const UNIX_PATH_MAX: usize = 107;

/// `Group` is the UDP port of the sync channel (an `unsigned short` in
/// conntrackd).
pub const MAX_GROUP: u32 = 65535;

/// Protocols whose kernel conntrack events are synced, in Neutron's order.
const PROTOCOLS: [&str; 6] = ["TCP", "SCTP", "DCCP", "UDP", "ICMP", "IPv6-ICMP"];

/// Words conntrackd's lexer (conntrack-tools 1.4, src/read_config_lex.l)
/// turns into keywords, case-sensitively (82 of them, space separated): an
/// interface named one of them is a syntax error in `Interface NAME`.
const KEYWORDS: &str = "\
    ACKWindowSize Accept Address Backlog CLOSE CLOSED CLOSE_WAIT CacheTimeout Checksum CommitTimeout Default \
    DisableExternalCache DisableInternalCache ESTABLISHED ErrorQueueLength EventIterationLimit ExpectMax \
    ExpectTimeout ExpectationSync FIN_WAIT Filter From General Group HashLimit HashSize Helper \
    IPv4_Destination_Address IPv4_address IPv4_interface IPv6_Destination_Address IPv6_address \
    IPv6_interface Ignore Interface Kernelspace LAST_ACK LISTEN LockFile LogFile Mode Multicast \
    NetlinkBufferSize NetlinkBufferSizeMaxGrowth NetlinkEventsReliable NetlinkOverrunResync Nice Options \
    Path Policy PollSecs Port Priority Protocol PurgeTimeout QueueLen QueueNum RcvSocketBuffer RefreshTime \
    ResendQueueSize SYN_RECV SYN_SENT Scheduler Setup SndSocketBuffer SocketBufferSize \
    SocketBufferSizeMaxGrown SocketBufferSizeMaxGrowth StartupResync State Stats Sync Syslog Systemd TCP \
    TCPWindowTracking TIME_WAIT Type UDP UNIX Userspace for";

/// Words the same lexer matches in any case (`on`, `off`, `yes`, `no` and
/// the sync modes).
const KEYWORDS_ANY_CASE: [&str; 8] = ["on", "off", "yes", "no", "nack", "alarm", "ftfw", "notrack"];

/// The paths of a router's conntrackd, all in the router's directory: the
/// three conntrackd.conf names, and the pidfile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub conf: PathBuf,
    pub lock: PathBuf,
    pub ctl: PathBuf,
    pub pid: PathBuf,
}

impl Paths {
    pub fn new(layout: &Layout, id: &RouterId) -> Paths {
        let dir = layout.router_dir(id);
        Paths { conf: dir.join(CONF_FILE), lock: dir.join(LOCK_FILE), ctl: dir.join(CTL_FILE), pid: dir.join(PID_FILE) }
    }

    /// Refuses a path conntrackd cannot hold, checked in the order Neutron
    /// takes them (conntrackd.conf, the lock file, the control socket), so
    /// the path named is the one Neutron would name.
    pub fn check(&self) -> Result<(), String> {
        for (path, max, what) in [
            (&self.conf, PATH_MAX, "conntrackd.conf path"),
            (&self.lock, PATH_MAX, "conntrackd lock file path"),
            (&self.ctl, UNIX_PATH_MAX, "conntrackd control socket path"),
        ] {
            let len = path.as_os_str().len();
            if len > max {
                return Err(format!(
                    "{what} {} is {len} bytes, over conntrackd's limit of {max}; shorten ha_confs_path or the \
                     router ID",
                    path.display()
                ));
            }
        }
        Ok(())
    }
}

/// The router's sync port: Neutron adds the VRID to the base group, so two
/// routers of one node never share a channel.
pub fn group(options: &ConntrackdOptions, vrid: u8) -> u32 {
    options.group + u32::from(vrid)
}

/// Whether conntrackd reads `name` back as an interface name in
/// `Interface NAME`: its lexer takes a letter followed by letters, digits,
/// `.`, `-` or `_`, unless the whole word is one of its keywords or 1 to 4
/// hex digits (which it reads as an IPv6 address).
pub fn check_interface(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let word = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !word {
        return Err(format!(
            "'{name}' cannot be written into conntrackd.conf: conntrackd reads an interface name as a letter \
             followed by letters, digits, '.', '-' or '_'"
        ));
    }
    // The lexer's `persistent` class ends in `[T|T]`: only a capital T.
    let persistent = name.len() == 10 && name[..9].eq_ignore_ascii_case("persisten") && name.ends_with('T');
    if KEYWORDS.split_whitespace().any(|k| k == name)
        || KEYWORDS_ANY_CASE.iter().any(|k| k.eq_ignore_ascii_case(name))
        || persistent
        || (name.len() <= 4 && name.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(format!(
            "'{name}' cannot be written into conntrackd.conf: conntrackd reads that word as a keyword or an \
             address, not an interface name"
        ));
    }
    Ok(())
}

/// The file. `ha_address` is the router's (required whenever a router gets
/// this file, which the parser enforces).
pub fn render(options: &ConntrackdOptions, router: &RouterConfig, ha_address: Ipv4Addr, paths: &Paths) -> String {
    let protocols: String = PROTOCOLS.iter().map(|p| format!("\n            {p}")).collect();
    format!(
        "
General {{
    HashSize {hash_size}
    HashLimit {hash_limit}
    Syslog on
    LockFile {lock}
    UNIX {{
        Path {ctl}
        Backlog {backlog}
    }}
    SocketBufferSize {buffer}
    SocketBufferSizeMaxGrown {buffer_max}
    Filter From Kernelspace {{
        Protocol Accept {{{protocols}
        }}
        Address Ignore {{
            IPv4_address 127.0.0.1
            IPv6_address ::1
            IPv4_address {ha_address}
        }}
    }}
}}
Sync {{
    Mode FTFW {{
    }}
    Multicast Default {{
        IPv4_address {mcast}
        IPv4_interface {ha_address}
        Group {group}
        Interface {interface}
        SndSocketBuffer {snd}
        RcvSocketBuffer {rcv}
        Checksum on
    }}
}}",
        hash_size = options.hashsize,
        hash_limit = options.hashlimit,
        lock = paths.lock.display(),
        ctl = paths.ctl.display(),
        backlog = options.unix_backlog,
        buffer = options.socket_buffer_size,
        buffer_max = options.socket_buffer_size_max_grown,
        mcast = options.ipv4_mcast_addr,
        group = group(options, router.vrid),
        interface = router.ha_interface,
        snd = options.snd_socket_buffer,
        rcv = options.rcv_socket_buffer,
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn paths(ha_confs_path: &str, id: &str) -> Paths {
        Paths::new(&Layout::new(Path::new(ha_confs_path)), &RouterId::parse(id).unwrap())
    }

    #[test]
    fn paths_are_neutrons() {
        let p = paths("/var/lib/neutron/ha_confs", "r1");
        assert_eq!(p.conf, Path::new("/var/lib/neutron/ha_confs/r1/conntrackd.conf"));
        assert_eq!(p.lock, Path::new("/var/lib/neutron/ha_confs/r1/conntrackd.lock"));
        assert_eq!(p.ctl, Path::new("/var/lib/neutron/ha_confs/r1/conntrackd.ctl"));
        assert_eq!(p.pid, Path::new("/var/lib/neutron/ha_confs/r1/conntrackd.pid"));
    }

    #[test]
    fn control_socket_path_limit_is_107_bytes() {
        // 27 + 1 + 64 + 15 = 107: the longest accepted.
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(paths("/var/lib/neutron/ha_confs/x", id).check(), Ok(()));
        let err = paths("/var/lib/neutron/ha_confs/xy", id).check().unwrap_err();
        assert!(err.starts_with("conntrackd control socket path /var/lib/neutron/ha_confs/xy/"), "{err}");
        assert!(err.contains("/conntrackd.ctl is 108 bytes, over conntrackd's limit of 107"), "{err}");
    }

    #[test]
    fn file_path_limit_is_255_bytes_and_named_first() {
        let long = format!("/{}", "d".repeat(236)); // + "/r1/conntrackd.conf" = 256
        let err = paths(&long, "r1").check().unwrap_err();
        assert!(err.starts_with("conntrackd.conf path /ddd"), "{err}");
        assert!(err.contains("is 256 bytes, over conntrackd's limit of 255"), "{err}");
    }

    #[test]
    fn interface_names_conntrackd_can_read() {
        for ok in ["ha-1", "ha-5f2a9c1d-e3", "ha-vlan.100", "H-x.1_2", "Syncx", "faced", "eth0", "persistent"] {
            assert_eq!(check_interface(ok), Ok(()), "{ok}");
        }
        for bad in ["1ha", "ha@x", "ha+1", "ha:1", "on", "OFF", "Yes", "no", "FTFW", "Sync", "Checksum", "for"] {
            assert!(check_interface(bad).is_err(), "{bad} accepted");
        }
        for hex in ["abc", "face", "F00D", "a"] {
            assert!(check_interface(hex).unwrap_err().contains("keyword or an address"), "{hex}");
        }
        assert!(check_interface("persistenT").is_err());
    }
}
