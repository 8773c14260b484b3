//! One test per class of config error: each asserts the line and the
//! message, so a message that stops naming the bad value fails here.

use std::path::Path;

use super::*;

const HEAD: &str = "[daemon]\nstate_path = /var/lib/h\n\n[router r1]\nha_interface = ha-1\nvrid = 1\n";

fn parse_text(text: &str) -> Result<Parsed, ConfigErrors> {
    parse(Path::new("/etc/h.conf"), text)
}

/// The errors as `line: message` strings, for compact assertions.
fn errors(text: &str) -> Vec<String> {
    match parse_text(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(ConfigErrors(errors)) => errors.iter().map(|e| format!("{}: {}", e.line.unwrap_or(0), e.message)).collect(),
    }
}

/// Exactly one error, on `line`, whose message contains every fragment.
#[track_caller]
fn assert_error(text: &str, line: usize, fragments: &[&str]) {
    let found = errors(text);
    assert_eq!(found.len(), 1, "expected one error, got {found:?}");
    let (at, message) = found[0].split_once(": ").unwrap();
    assert_eq!(at, line.to_string(), "wrong line in {found:?}");
    for f in fragments {
        assert!(message.contains(f), "message {message:?} lacks {f:?}");
    }
}

fn router(text: &str) -> RouterConfig {
    parse_text(text).unwrap_or_else(|e| panic!("{e}")).config.routers.remove(0)
}

#[test]
fn valid_file_with_every_key() {
    let text = "\
# comment
; another
[daemon]
state_path = /srv/h
socket_mode = 0640
socket_group = neutron
allowed_uids = 1000, neutron 42
keepalived_path = /usr/sbin/keepalived
conntrackd_path = conntrackd
ha_vrrp_advert_int = 3
ha_vrrp_auth_type = AH
ha_vrrp_auth_password = pw
ha_vrrp_health_check_interval = 10
ha_conntrackd_enabled = yes
check_child_processes_action = exit
keepalived_email_from = me@example.org
keepalived_router_id = node1
on_exit = stop
transition_script = /usr/local/bin/t.sh
transition_script_timeout = 5
notify_agent_socket = /run/agent.sock
ipv6_forwarding_on_primary = true
metrics_listen = [::1]:9652

[router r1]\r
namespace = qrouter-1
ha_interface = ha-1
ha_cidr = 169.254.192.0/18
vrid = 254
priority = 254
advert_int = 1
auth_type = PASS
auth_password = other
vip = 10.0.0.1/24 dev qr-1
vip = fe80::1/64 dev qg-1 scope link
route = 0.0.0.0/0 via 10.0.0.254 dev qr-1
route = 10.0.0.9 dev qr-1 scope link
track_interface = qg-1
mcast_src_ip = 169.254.192.1
unicast_src_ip = 169.254.192.1
unicast_peer = 169.254.192.2
health_check_interval = 0
keepalived = false
";
    let parsed = parse_text(text).unwrap_or_else(|e| panic!("{e}"));
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let c = parsed.config;
    assert_eq!(c.daemon.ha_confs_path, Path::new("/srv/h/ha_confs"));
    assert_eq!(c.daemon.socket, Path::new("/srv/h/harouterd.sock"));
    assert_eq!(c.daemon.socket_mode, 0o640);
    assert_eq!(c.daemon.allowed_uids.len(), 3);
    assert_eq!(c.daemon.child_action, ChildAction::Exit);
    assert_eq!(c.daemon.on_exit, OnExit::Stop);
    assert!(c.daemon.conntrackd_enabled && c.daemon.ipv6_forwarding_on_primary);
    assert_eq!(c.daemon.transition_script_timeout, 5);
    assert_eq!(c.daemon.metrics_listen, Some("[::1]:9652".parse().unwrap()));
    assert!(c.holds_password);
    let r = &c.routers[0];
    assert_eq!(r.namespace, Some(crate::core::ident::Namespace::Named("qrouter-1".into())));
    assert_eq!((r.vrid, r.priority, r.advert_int, r.health_check_interval), (254, 254, 1, 0));
    let auth = r.auth.as_ref().unwrap();
    assert_eq!((auth.auth_type, auth.password.expose()), (AuthType::Pass, "other"));
    assert_eq!(r.vips.len(), 2);
    assert_eq!(r.routes.len(), 2);
    assert!(!r.keepalived);
    assert_eq!(r.primary_vip.to_string(), "169.254.0.254/24");
}

#[test]
fn router_inherits_daemon_defaults() {
    let r = router(
        "[daemon]\nha_vrrp_advert_int = 5\nha_vrrp_auth_type = AH\nha_vrrp_auth_password = pw\n\
         ha_vrrp_health_check_interval = 3\n[router r1]\nha_interface = ha-1\nvrid = 1\n",
    );
    assert_eq!((r.advert_int, r.health_check_interval, r.priority), (5, 3, 50));
    assert_eq!(r.auth.unwrap().auth_type, AuthType::Ah);
    assert_eq!(r.ha_cidr.to_string(), "169.254.192.0/18");
    let r = router("[router r1]\nha_interface = ha-1\nvrid = 1\n");
    assert_eq!(r.advert_int, 2);
    assert!(r.auth.is_none() && r.namespace.is_none() && r.keepalived);
}

#[test]
fn no_daemon_section_is_all_defaults() {
    let c = parse_text("").unwrap().config;
    assert_eq!(c.daemon.state_path, Path::new("/var/lib/harouterd"));
    assert!(c.routers.is_empty());
}

#[test]
fn metrics_listen_and_script_timeout() {
    let c = parse_text("").unwrap().config;
    assert_eq!((c.daemon.metrics_listen, c.daemon.transition_script_timeout), (None, 60));
    let c = parse_text("[daemon]\nmetrics_listen = 127.0.0.1:0\n").unwrap().config;
    assert_eq!(c.daemon.metrics_listen, Some("127.0.0.1:0".parse().unwrap()));
    assert_error("[daemon]\nmetrics_listen = 127.0.0.1\n", 2, &["'127.0.0.1' is not ADDRESS:PORT", "port is missing"]);
    assert_error("[daemon]\nmetrics_listen = ::1:9652\n", 2, &["IPv6 address in brackets"]);
    assert_error("[daemon]\nmetrics_listen = localhost:9652\n", 2, &["is not ADDRESS:PORT"]);
    assert_error("[daemon]\nmetrics_listen = 127.0.0.1:65536\n", 2, &["is not ADDRESS:PORT"]);
    assert_error("[daemon]\ntransition_script_timeout = 0\n", 2, &["0 is out of range 1..=86400"]);
    assert_error("[daemon]\ntransition_script_timeout = 86401\n", 2, &["out of range"]);
}

#[test]
fn key_outside_section() {
    assert_error("priority = 5\n[daemon]\n", 1, &["'priority' is outside any section"]);
}

#[test]
fn unknown_section() {
    assert_error("[routers r1]\nvrid = 1\n", 1, &["unknown section '[routers r1]'"]);
    assert_error("[router]\n", 1, &["unknown section '[router]'"]);
}

#[test]
fn unclosed_section_header() {
    assert_error("[daemon\n", 1, &["'[daemon' has no closing ']'"]);
}

#[test]
fn duplicate_daemon_section() {
    assert_error("[daemon]\n[daemon]\n", 2, &["duplicate [daemon] section (first at line 1)"]);
}

#[test]
fn duplicate_router() {
    assert_error(
        &format!("{HEAD}[router r1]\nha_interface = ha-2\nvrid = 2\n"),
        7,
        &["duplicate router 'r1' (first at line 4)"],
    );
}

#[test]
fn router_id_with_path_traversal() {
    for bad in ["../etc", "a/b", ".hidden", "..", "r\u{7f}"] {
        let text = format!("[router {bad}]\nha_interface = ha-1\nvrid = 1\n");
        let found = errors(&text);
        assert!(found.iter().any(|e| e.starts_with("1: ")), "{bad}: {found:?}");
        assert!(found[0].contains("router id") || found[0].contains("control character"), "{bad}: {found:?}");
    }
    // Dots inside an ID are fine: "x.." cannot climb a directory.
    router("[router x..]\nha_interface = ha-1\nvrid = 1\n");
}

#[test]
fn unknown_key_with_hint() {
    assert_error(&format!("{HEAD}priorty = 5\n"), 7, &["unknown key 'priorty' in [router] section"]);
    assert_error(&format!("{HEAD}ha_vrrp_advert_int = 5\n"), 7, &["it belongs in [daemon]"]);
    assert_error(&format!("{HEAD}ha_vrrp_auth_type = AH\n"), 7, &["it belongs in [daemon]"]);
    assert_error("[daemon]\nvrid = 5\n", 2, &["unknown key 'vrid' in [daemon]", "[router ID]"]);
}

#[test]
fn key_set_twice() {
    assert_error(&format!("{HEAD}vrid = 2\n"), 7, &["vrid: set twice (first at line 6)"]);
}

#[test]
fn line_without_equals() {
    assert_error(&format!("{HEAD}priority 5\n"), 7, &["expected 'key = value' in the line starting with 'priority'"]);
}

/// A `key value` or `key: value` line may carry a VRRP password: the
/// error names the line and its first word, never the rest (issue 15.6).
#[test]
fn a_malformed_line_never_echoes_what_may_be_a_password() {
    let cases = [
        ("[daemon]\nha_vrrp_auth_password: Hunter2x\n", 2, "'ha_vrrp_auth_password'"),
        ("[daemon]\nha_vrrp_auth_password Hunter2x\n", 2, "'ha_vrrp_auth_password'"),
        (&format!("{HEAD}auth_password\tHunter2x\n") as &str, 7, "'auth_password'"),
        (&format!("{HEAD}auth_password Hunter2x=\n"), 7, "unknown key 'auth_password...'"),
        ("auth_password Hunter2x = 1\n[daemon]\n", 1, "'auth_password...' is outside any section"),
        ("[daemon]\n:Hunter2x\n", 2, "expected 'key = value' (the line is not shown"),
    ];
    for (text, line, fragment) in cases {
        let found = errors(text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with(&format!("{line}: ")), "{found:?}");
        assert!(found[0].contains(fragment), "{found:?} lacks {fragment:?}");
        assert!(!found[0].contains("Hunter2x"), "password echoed: {found:?}");
    }
}

#[test]
fn empty_value() {
    assert_error(&format!("{HEAD}priority =\n"), 7, &["priority: no value"]);
}

#[test]
fn numbers_out_of_range_or_malformed() {
    assert_error("[router r1]\nha_interface = ha-1\nvrid = 0\n", 3, &["vrid: 0 is out of range 1..=254"]);
    assert_error("[router r1]\nha_interface = ha-1\nvrid = 255\n", 3, &["vrid: 255 is out of range 1..=254"]);
    assert_error(&format!("{HEAD}priority = 300\n"), 7, &["priority: 300 is out of range 1..=254"]);
    assert_error(&format!("{HEAD}advert_int = 0\n"), 7, &["advert_int: 0 is out of range 1..=255"]);
    assert_error(&format!("{HEAD}priority = -1\n"), 7, &["priority: '-1' is not a whole number"]);
    assert_error(
        &format!("{HEAD}priority = 99999999999999999999\n"),
        7,
        &["'99999999999999999999' is not a whole number"],
    );
    assert_error("[daemon]\nha_vrrp_advert_int = 2s\n", 2, &["ha_vrrp_advert_int: '2s' is not a whole number"]);
}

#[test]
fn bad_boolean_and_choices() {
    assert_error(&format!("{HEAD}keepalived = maybe\n"), 7, &["keepalived: 'maybe' is not a boolean"]);
    assert_error("[daemon]\nha_vrrp_auth_type = pass\n", 2, &["ha_vrrp_auth_type: 'pass' is not one of PASS, AH"]);
    assert_error("[daemon]\ncheck_child_processes_action = restart\n", 2, &["'restart' is not one of respawn, exit"]);
    assert_error("[daemon]\non_exit = kill\n", 2, &["on_exit: 'kill' is not one of keep, stop"]);
    assert_error("[daemon]\nsocket_mode = 0999\n", 2, &["socket_mode: '0999' is not an octal file mode"]);
    assert_error("[daemon]\nallowed_uids = 1000, Bad Name\n", 2, &["allowed_uids: 'Bad' is neither a number"]);
}

#[test]
fn relative_paths() {
    assert_error("[daemon]\nstate_path = var/lib\n", 2, &["state_path: 'var/lib' is not an absolute path"]);
    assert_error("[daemon]\nkeepalived_path = bin/keepalived\n", 2, &["'bin/keepalived' is neither a program name"]);
}

#[test]
fn bad_interface_names() {
    assert_error(
        "[router r1]\nha_interface = ha-0123456789abcdef\nvrid = 1\n",
        2,
        &["invalid interface name 'ha-0123456789abcdef'"],
    );
    assert_error(&format!("{HEAD}track_interface = ../x\n"), 7, &["invalid interface name '../x'"]);
}

#[test]
fn bad_namespace() {
    assert_error(&format!("{HEAD}namespace = a/b\n"), 7, &["invalid namespace name 'a/b'"]);
    assert_error(&format!("{HEAD}namespace = /run/netns/../../etc\n"), 7, &["'..' is not allowed"]);
}

#[test]
fn bad_vips() {
    assert_error(&format!("{HEAD}vip = 10.0.0.1 dev qr-1\n"), 7, &["vip: '10.0.0.1' is not a CIDR"]);
    assert_error(
        &format!("{HEAD}vip = 10.0.0.1/24 qr-1\n"),
        7,
        &["vip: '10.0.0.1/24 qr-1' is not 'CIDR dev IFACE [scope SCOPE]'"],
    );
    assert_error(&format!("{HEAD}vip = 10.0.0.1/24 dev qr-1 scope galaxy\n"), 7, &["scope 'galaxy' is not one of"]);
    assert_error(&format!("{HEAD}vip = 10.0.0.300/24 dev qr-1\n"), 7, &["'10.0.0.300' is not an IP address"]);
}

#[test]
fn duplicate_vip() {
    assert_error(
        &format!("{HEAD}vip = 10.0.0.1/24 dev qr-1\nvip = 10.0.0.1/24 dev qr-2\n"),
        8,
        &["vip: 10.0.0.1/24 listed twice (first at line 7)"],
    );
}

#[test]
fn bad_routes() {
    assert_error(
        &format!("{HEAD}route = 10.0.0.1/24 via 10.0.0.254\n"),
        7,
        &["destination '10.0.0.1/24' has host bits set"],
    );
    assert_error(&format!("{HEAD}route = 10.0.0.0/24\n"), 7, &["needs 'via NEXTHOP' or 'dev IFACE'"]);
    assert_error(
        &format!("{HEAD}route = ::/0 via 10.0.0.1\n"),
        7,
        &["next hop 10.0.0.1 is not of the same family as ::/0"],
    );
    assert_error(&format!("{HEAD}route = 10.0.0.0/24 metric 5\n"), 7, &["unknown route option 'metric'"]);
    assert_error(&format!("{HEAD}route = 10.0.0.0/24 dev a dev b\n"), 7, &["'dev' given twice"]);
    assert_error(&format!("{HEAD}route = 10.0.0.0/24 via\n"), 7, &["'via' needs a value"]);
}

#[test]
fn missing_required_keys_point_at_the_header() {
    let found = errors("[daemon]\n\n[router r1]\npriority = 5\n");
    assert_eq!(
        found,
        vec![
            "3: router 'r1': ha_interface is required".to_owned(),
            "3: router 'r1': vrid is required (1..=254)".to_owned()
        ]
    );
}

#[test]
fn duplicate_vrid_on_one_ha_interface() {
    let text = format!("{HEAD}namespace = ns\n[router r2]\nnamespace = ns\nha_interface = ha-1\nvrid = 1\n");
    assert_error(&text, 11, &["vrid 1 is already used by router 'r1' (line 4) on HA interface ha-1"]);
    // Other namespace, or other HA interface: no clash.
    parse_text(&format!("{HEAD}namespace = ns\n[router r2]\nnamespace = other\nha_interface = ha-1\nvrid = 1\n"))
        .unwrap();
    parse_text(&format!("{HEAD}namespace = ns\n[router r2]\nnamespace = ns\nha_interface = ha-2\nvrid = 1\n")).unwrap();
}

#[test]
fn no_free_primary_vip_range() {
    assert_error(&format!("{HEAD}ha_cidr = 169.254.0.0/16\n"), 7, &["router 'r1': no free /24 left", "169.254.0.0/16"]);
}

#[test]
fn ha_cidr_with_host_bits() {
    assert_error(&format!("{HEAD}ha_cidr = 169.254.192.7/18\n"), 7, &["ha_cidr: '169.254.192.7/18' has host bits set"]);
}

#[test]
fn track_interface_repeats() {
    assert_error(&format!("{HEAD}track_interface = ha-1\n"), 7, &["'ha-1' is the HA interface"]);
    assert_error(
        &format!("{HEAD}track_interface = qg\ntrack_interface = qg\n"),
        8,
        &["'qg' listed twice (first at line 7)"],
    );
}

#[test]
fn unicast_problems() {
    assert_error(
        &format!("{HEAD}unicast_src_ip = 10.0.0.1\nunicast_peer = ::1\n"),
        8,
        &["::1 is not of the same family"],
    );
    assert_error(&format!("{HEAD}unicast_peer = 10.0.0.2\nunicast_peer = 10.0.0.2\n"), 8, &["10.0.0.2 listed twice"]);
    assert_error(&format!("{HEAD}mcast_src_ip = 10.0.0\n"), 7, &["mcast_src_ip: '10.0.0' is not an IP address"]);
}

#[test]
fn password_errors_never_echo_the_password() {
    let found = errors(&format!("{HEAD}auth_password = my secret\n"));
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("7: router 'r1': auth_password: "), "{found:?}");
    assert!(!found[0].contains("secret"), "password leaked: {found:?}");
    assert_error(&format!("{HEAD}auth_password = pw#1\n"), 7, &["value not shown"]);
}

#[test]
fn keepalived_words() {
    assert_error("[daemon]\nkeepalived_router_id = a b\n", 2, &["keepalived_router_id: 'a b' must be one word"]);
    assert_error("[daemon]\nkeepalived_email_from = x!y\n", 2, &["'x!y' must be one word"]);
}

#[test]
fn control_characters() {
    assert_error("[daemon]\nstate_path = /a\u{1b}b\n", 2, &["control character"]);
}

#[test]
fn every_error_is_reported_at_once() {
    let found = errors("[router r1]\nha_interface = bad/name\nvrid = 999\npriority = x\nbogus = 1\n");
    assert_eq!(found.len(), 4, "{found:?}");
    let lines: Vec<&str> = found.iter().map(|e| e.split(':').next().unwrap()).collect();
    assert_eq!(lines, ["5", "2", "3", "4"]);
}

#[test]
fn long_password_is_a_warning() {
    let parsed = parse_text("[daemon]\nha_vrrp_auth_password = 123456789\n").unwrap();
    assert_eq!(parsed.warnings.len(), 1);
    assert_eq!(parsed.warnings[0].line, Some(2));
    assert!(parsed.warnings[0].message.contains("truncated to 8"));
    assert!(!parsed.warnings[0].to_string().contains("123456789"));
}

#[test]
fn error_display_is_path_colon_line() {
    let e = parse_text("[daemon\n").unwrap_err();
    assert_eq!(e.to_string(), "/etc/h.conf:1: section header '[daemon' has no closing ']'");
}

#[test]
fn secret_debug_is_masked() {
    let r = router(&format!("{HEAD}auth_password = hunter2\n"));
    assert!(!format!("{r:?}").contains("hunter2"));
}

#[test]
fn route_destinations() {
    let r = router(&format!("{HEAD}route = 10.0.0.9 dev qr-1 scope link\nroute = ::/0 via fe80::1 dev qg-1\n"));
    assert_eq!(r.routes[0].dest, RouteDest::Host("10.0.0.9".parse().unwrap()));
    assert!(!r.routes[0].dest.is_default());
    assert!(r.routes[1].dest.is_default());
}

// ---- conntrackd.conf inputs (ha_conntrackd_* keys, ha_address) ----

/// A router that gets a conntrackd.conf; lines 1-7, anything appended is
/// line 8 (inside [router r1]).
const CT: &str = "[daemon]\nha_conntrackd_enabled = true\n\n[router r1]\nha_interface = ha-1\nvrid = 1\n\
                  ha_address = 169.254.192.1\n";

const CONNTRACKD_INT_KEYS: [&str; 7] = [
    "ha_conntrackd_hashsize",
    "ha_conntrackd_hashlimit",
    "ha_conntrackd_unix_backlog",
    "ha_conntrackd_socketbuffersize",
    "ha_conntrackd_socketbuffersize_max_grown",
    "ha_conntrackd_sndsocketbuffer",
    "ha_conntrackd_rcvsocketbuffer",
];

#[test]
fn conntrackd_keys_default_to_neutrons_and_parse() {
    let c = parse_text(CT).unwrap().config;
    let o = &c.daemon.conntrackd;
    assert_eq!(
        (o.hashsize, o.hashlimit, o.unix_backlog, o.socket_buffer_size, o.socket_buffer_size_max_grown),
        (32768, 131072, 20, 262142, 655355)
    );
    assert_eq!((o.ipv4_mcast_addr.to_string(), o.group), ("225.0.0.50".to_owned(), 3780));
    assert_eq!((o.snd_socket_buffer, o.rcv_socket_buffer), (24985600, 24985600));
    assert_eq!(c.routers[0].ha_address, Some("169.254.192.1".parse().unwrap()));

    let every = CT.replace(
        "\n\n[router",
        "\nha_conntrackd_hashsize = 1\nha_conntrackd_hashlimit = 2147483647\nha_conntrackd_unix_backlog = 3\n\
         ha_conntrackd_socketbuffersize = 4\nha_conntrackd_socketbuffersize_max_grown = 5\n\
         ha_conntrackd_ipv4_mcast_addr = 239.1.2.3\nha_conntrackd_group = 0\nha_conntrackd_sndsocketbuffer = 6\n\
         ha_conntrackd_rcvsocketbuffer = 7\n\n[router",
    );
    let o = parse_text(&every).unwrap_or_else(|e| panic!("{e}")).config.daemon.conntrackd;
    assert_eq!(
        o,
        ConntrackdOptions {
            hashsize: 1,
            hashlimit: 2147483647,
            unix_backlog: 3,
            socket_buffer_size: 4,
            socket_buffer_size_max_grown: 5,
            ipv4_mcast_addr: "239.1.2.3".parse().unwrap(),
            group: 0,
            snd_socket_buffer: 6,
            rcv_socket_buffer: 7,
        }
    );
}

#[test]
fn conntrackd_numbers_out_of_range() {
    for key in CONNTRACKD_INT_KEYS {
        // Neutron's minimum is 1; conntrackd reads each into a C int.
        assert_error(&format!("[daemon]\n{key} = 0\n"), 2, &[key, "0 is out of range 1..=2147483647"]);
        assert_error(
            &format!("[daemon]\n{key} = 2147483648\n"),
            2,
            &[key, "2147483648 is out of range 1..=2147483647"],
        );
        assert_error(&format!("[daemon]\n{key} = 1k\n"), 2, &[key, "'1k' is not a whole number"]);
    }
    assert_error(
        "[daemon]\nha_conntrackd_group = 65535\n",
        2,
        &["ha_conntrackd_group: 65535 is out of range 0..=65534"],
    );
    assert_error("[daemon]\nha_conntrackd_group = -1\n", 2, &["ha_conntrackd_group: '-1' is not a whole number"]);
}

#[test]
fn conntrackd_group_plus_vrid_must_be_a_port() {
    let at_limit = CT.replace("enabled = true\n", "enabled = true\nha_conntrackd_group = 65534\n");
    parse_text(&at_limit).unwrap_or_else(|e| panic!("{e}"));
    assert_error(
        &at_limit.replace("vrid = 1\n", "vrid = 2\n"),
        7,
        &["router 'r1': ha_conntrackd_group 65534 + vrid 2 = 65536, over 65535", "UDP port"],
    );
    // Without conntrackd the sum is no one's business.
    parse_text(&at_limit.replace("vrid = 1\n", "vrid = 2\n").replace("= true", "= false")).unwrap();
}

#[test]
fn bad_multicast_address() {
    let key = "ha_conntrackd_ipv4_mcast_addr";
    assert_error(&format!("[daemon]\n{key} = 10.0.0.1\n"), 2, &[key, "'10.0.0.1' is not a multicast address"]);
    assert_error(&format!("[daemon]\n{key} = 240.0.0.1\n"), 2, &["'240.0.0.1' is not a multicast address"]);
    assert_error(&format!("[daemon]\n{key} = ff02::1\n"), 2, &[key, "'ff02::1' is not an IPv4 address"]);
    assert_error(&format!("[daemon]\n{key} = 225.0.0\n"), 2, &[key, "'225.0.0' is not an IP address"]);
    assert_error(&format!("[daemon]\n{key} = 225.0.0.050\n"), 2, &[key, "'225.0.0.050' is not an IP address"]);
}

#[test]
fn bad_ha_address() {
    let with = |value: &str| CT.replace("169.254.192.1", value);
    assert_error(&with("fe80::1"), 7, &["ha_address: 'fe80::1' is not an IPv4 address"]);
    assert_error(&with("169.254.192"), 7, &["ha_address: '169.254.192' is not an IP address"]);
    for not_host in ["127.0.0.1", "0.0.0.0", "225.0.0.50", "255.255.255.255"] {
        assert_error(&with(not_host), 7, &["ha_address: ", not_host, "is not a unicast host address"]);
    }
    assert_error(
        &with("10.0.0.1"),
        7,
        &["ha_address: 10.0.0.1 is not inside ha_cidr 169.254.192.0/18", "the HA network"],
    );
    assert_error(&with("169.254.192.0"), 7, &["169.254.192.0 is not a host address of ha_cidr 169.254.192.0/18"]);
    assert_error(&with("169.254.255.255"), 7, &["169.254.255.255 is not a host address"]);
    // Inside the router's own ha_cidr, wherever that is.
    let own = format!("{}ha_cidr = 10.9.0.0/16\n", with("10.9.255.254"));
    assert_eq!(router(&own).ha_address, Some("10.9.255.254".parse().unwrap()));
    assert_error(&format!("{CT}ha_cidr = 10.9.0.0/16\n"), 7, &["169.254.192.1 is not inside ha_cidr 10.9.0.0/16"]);
}

#[test]
fn ha_address_is_required_where_a_conntrackd_conf_is_written() {
    let without = CT.replace("ha_address = 169.254.192.1\n", "");
    assert_error(
        &without,
        4,
        &["router 'r1': ha_address is required with ha_conntrackd_enabled", "own address on the HA network"],
    );
    // Not for a monitor-only router (it gets no files), nor without conntrackd.
    assert_eq!(router(&format!("{without}keepalived = false\n")).ha_address, None);
    assert_eq!(router(&without.replace("= true", "= false")).ha_address, None);
    // Given without conntrackd: checked, kept, unused.
    assert!(router(&CT.replace("= true", "= false")).ha_address.is_some());
}

#[test]
fn ha_interface_conntrackd_cannot_read() {
    for name in ["1ha", "ha+x", "Sync", "face"] {
        let text = CT.replace("ha_interface = ha-1", &format!("ha_interface = {name}"));
        assert_error(&text, 5, &["ha_interface: ", name, "cannot be written into conntrackd.conf"]);
        // Fine for keepalived alone.
        router(&text.replace("= true", "= false"));
    }
}

#[test]
fn conntrackd_paths_over_conntrackd_limits() {
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let text = |ha_confs_path: &str| {
        format!(
            "[daemon]\nha_conntrackd_enabled = true\nha_confs_path = {ha_confs_path}\n\n[router {id}]\n\
             ha_interface = ha-1\nvrid = 1\nha_address = 169.254.192.1\n"
        )
    };
    // 27 + 1 + 64 + "/conntrackd.ctl" = 107 bytes: the longest that fits.
    parse_text(&text("/var/lib/neutron/ha_confs/x")).unwrap_or_else(|e| panic!("{e}"));
    assert_error(
        &text("/var/lib/neutron/ha_confs/xy"),
        5,
        &[
            &format!("router '{id}': conntrackd control socket path /var/lib/neutron/ha_confs/xy/{id}/conntrackd.ctl"),
            "is 108 bytes, over conntrackd's limit of 107",
        ],
    );
    let long = format!("/{}", "d".repeat(174)); // 175 + "/" + 64 + "/conntrackd.conf" = 256
    assert_error(&text(&long), 5, &["conntrackd.conf path /ddd", "is 256 bytes, over conntrackd's limit of 255"]);
    // Only routers that get the file are held to it.
    parse_text(&text(&long).replace("= true", "= false")).unwrap();
}

// ---- issue 14.6: what keepalived or the kernel would refuse ----

/// The one warning of a file that parses, as `line: message`.
#[track_caller]
fn only_warning(text: &str) -> String {
    let parsed = parse_text(text).unwrap_or_else(|e| panic!("{e}"));
    let found: Vec<String> =
        parsed.warnings.iter().map(|w| format!("{}: {}", w.line.unwrap_or(0), w.message)).collect();
    assert_eq!(found.len(), 1, "expected one warning, got {found:?}");
    found[0].clone()
}

#[track_caller]
fn no_warnings(text: &str) {
    let parsed = parse_text(text).unwrap_or_else(|e| panic!("{e}"));
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
}

/// keepalived 2.2.7 takes the instance's family from its first VIP (the
/// IPv4 primary VIP) and drops an IPv6 source address ("address family
/// must match VRRP instance") or peer: tests/keepalived_accepts.rs shows it.
#[test]
fn source_addresses_and_peers_must_be_ipv4_like_the_primary_vip() {
    let family = "is not of the same family as the VRRP instance, which is IPv4 (its primary VIP is in \
                  169.254.0.0/16): keepalived would refuse it; use an IPv4 address on the HA network";
    assert_eq!(
        errors(&format!("{HEAD}mcast_src_ip = 2001:db8::2\n")),
        [format!("7: router 'r1': mcast_src_ip: 2001:db8::2 {family}")]
    );
    assert_eq!(
        errors(&format!("{HEAD}unicast_src_ip = fe80::1\nunicast_peer = fe80::2\n")),
        [
            format!("7: router 'r1': unicast_src_ip: fe80::1 {family}"),
            format!("8: router 'r1': unicast_peer: fe80::2 {family}")
        ]
    );
    // Without a source address too: keepalived takes the peer's family.
    assert_eq!(
        errors(&format!("{HEAD}unicast_peer = 2001:db8::3\n")),
        [format!("7: router 'r1': unicast_peer: 2001:db8::3 {family}")]
    );
    // IPv6 VIPs are fine: they go to virtual_ipaddress_excluded.
    router(&format!("{HEAD}vip = 2001:db8::1/64 dev qg-1\nunicast_peer = 169.254.192.2\n"));
}

#[test]
fn unicast_src_ip_without_a_peer() {
    assert_eq!(
        errors(&format!("{HEAD}unicast_src_ip = 169.254.192.1\n")),
        ["7: router 'r1': unicast_src_ip: 169.254.192.1 is set but no unicast_peer is: keepalived would ignore it \
          and use multicast (add unicast_peer lines, or use mcast_src_ip)"]
    );
    // An IPv6 one is reported once, for its family.
    assert_error(&format!("{HEAD}unicast_src_ip = 2001:db8::1\n"), 7, &["not of the same family"]);
    // Peers without a source address: keepalived picks the interface's.
    assert_eq!(router(&format!("{HEAD}unicast_peer = 169.254.192.2\n")).unicast_peers.len(), 1);
}

/// keepalived -t takes these without a word, so they are warnings.
#[test]
fn a_peer_that_is_this_node_is_a_warning() {
    let text = format!("{HEAD}unicast_src_ip = 169.254.192.1\nunicast_peer = 169.254.192.1\n");
    assert_eq!(
        only_warning(&text),
        "8: warning: router 'r1': unicast_peer: 169.254.192.1 is this node's own unicast_src_ip"
    );
    let text =
        format!("{HEAD}ha_address = 169.254.192.9\nunicast_peer = 169.254.192.2\nunicast_peer = 169.254.192.9\n");
    assert_eq!(
        only_warning(&text),
        "9: warning: router 'r1': unicast_peer: 169.254.192.9 is this node's own ha_address"
    );
    no_warnings(&format!("{HEAD}unicast_src_ip = 169.254.192.1\nunicast_peer = 169.254.192.2\n"));
}

#[test]
fn ipv6_vip_scopes_keepalived_would_ignore() {
    let refused = |vip: &str, scope: &str| {
        format!(
            "7: router 'r1': vip: scope {scope} on the IPv6 address {vip}: keepalived ignores scopes on IPv6 \
             addresses (the address sets it: link for fe80::/10, global otherwise); leave it out"
        )
    };
    assert_eq!(
        errors(&format!("{HEAD}vip = 2001:db8::1/64 dev qg-1 scope link\n")),
        [refused("2001:db8::1/64", "link")]
    );
    assert_eq!(errors(&format!("{HEAD}vip = fe80::1/64 dev qg-1 scope host\n")), [refused("fe80::1/64", "host")]);
    assert_eq!(
        errors(&format!("{HEAD}vip = 2001:db8::1/64 dev qg-1 scope site\n")),
        [refused("2001:db8::1/64", "site")]
    );
    // Neutron's link-local gateway VIP, no scope, or global: accepted.
    for ok in ["fe80::1/64 dev qg-1 scope link", "fe80::1/64 dev qg-1", "2001:db8::1/64 dev qg-1 scope global"] {
        no_warnings(&format!("{HEAD}vip = {ok}\n"));
    }
    for scope in ["global", "site", "link", "host", "nowhere"] {
        no_warnings(&format!("{HEAD}vip = 10.0.0.1/24 dev qr-1 scope {scope}\n"));
    }
}

#[test]
fn ipv6_vips_the_kernel_refuses() {
    assert_eq!(
        errors(&format!("{HEAD}vip = ff05::5/64 dev qg-1\n")),
        ["7: router 'r1': vip: ff05::5/64 is not a unicast address: the kernel refuses it, so keepalived could not \
          add it"]
    );
    assert_error(&format!("{HEAD}vip = ::/64 dev qg-1\n"), 7, &["vip: ::/64 is not a unicast address"]);
}

/// keepalived -t accepts these routes; the kernel refuses them when
/// keepalived adds them on becoming primary (tests/keepalived_accepts.rs
/// runs keepalived to see it), and keepalived runs on without them.
#[test]
fn routes_the_kernel_refuses() {
    let cases = [
        ("10.1.0.0/24 dev qr-1 scope nowhere", "scope nowhere: the kernel refuses it on a route"),
        (
            "10.1.0.0/24 via 10.0.0.254 scope host",
            "a route via a next hop (10.0.0.254) cannot have scope host: the kernel refuses it; use scope global \
             (the default) or site, or leave out 'via' for an on-link route",
        ),
        ("10.1.0.0/24 via 10.0.0.254 dev qr-1 scope link", "cannot have scope link"),
        (
            "2001:db8:1::/64 via fe80::1",
            "next hop fe80::1 is link-local: it needs 'dev IFACE' (the kernel refuses it without one)",
        ),
        ("10.1.0.0/24 via 224.0.0.9 dev qr-1", "next hop 224.0.0.9 is not a unicast address: the kernel refuses it"),
        ("10.1.0.0/24 via 255.255.255.255", "next hop 255.255.255.255 is not a unicast address"),
        ("2001:db8:1::/64 via ff02::1 dev qg-1", "next hop ff02::1 is not a unicast address"),
        ("::/0 via :: dev qg-1", "next hop :: is not a unicast address"),
    ];
    for (route, message) in cases {
        assert_error(&format!("{HEAD}route = {route}\n"), 7, &["router 'r1': route: ", message]);
    }
    for ok in [
        "10.1.0.0/24 via 10.0.0.254 scope site",
        "10.1.0.0/24 via 10.0.0.254 dev qr-1 scope global",
        "10.1.0.0/24 dev qr-1 scope host",
        "10.0.0.9 dev qr-1 scope link",
        "::/0 via fe80::1 dev qg-1",
        // The kernel has no scope on IPv6 routes.
        "2001:db8:1::/64 via 2001:db8::1 scope link",
    ] {
        no_warnings(&format!("{HEAD}route = {ok}\n"));
    }
}

// ---- issue 14.6: messages that help ----

#[test]
fn every_error_in_a_router_section_names_the_router() {
    let text = "[daemon]\nbogus = 1\n\n[router r1]\nha_interface = ha-1\nvrid = 1\npriorty = 5\nvrid = 2\n\
                priority =\n[router r2]\nha_interface = ha-1\nvrid = 1\nadvert_int = 0\nnamespace\n\
                state = \u{1}\n[router r3]\nvip = 10.0.0.1 dev x\n";
    let found = errors(text);
    assert_eq!(
        found,
        [
            "2: unknown key 'bogus' in [daemon] section",
            "7: router 'r1': unknown key 'priorty' in [router] section (did you mean 'priority'?)",
            "8: router 'r1': vrid: set twice (first at line 6)",
            "9: router 'r1': priority: no value (remove the line to get the default)",
            "14: router 'r2': expected 'key = value' in the line starting with 'namespace' (the rest is not shown: \
             it may hold a secret)",
            "15: router 'r2': control character '\\u{1}' in line",
            "13: router 'r2': advert_int: 0 is out of range 1..=255",
            "16: router 'r3': ha_interface is required",
            "16: router 'r3': vrid is required (1..=254)",
            "17: router 'r3': vip: '10.0.0.1' is not a CIDR (expected ADDRESS/PREFIX)",
        ]
    );
    assert_eq!(
        errors(&format!("{HEAD}[router r2]\nha_interface = ha-1\nvrid = 1\n")),
        ["9: router 'r2': vrid 1 is already used by router 'r1' (line 4) on HA interface ha-1 in the same namespace"]
    );
}

#[test]
fn unknown_keys_get_the_closest_known_ones() {
    let at7 = |key: &str| errors(&format!("{HEAD}{key} = 5\n")).remove(0);
    assert_eq!(at7("priorty"), "7: router 'r1': unknown key 'priorty' in [router] section (did you mean 'priority'?)");
    assert_eq!(
        at7("Priority"),
        "7: router 'r1': unknown key 'Priority' in [router] section (did you mean 'priority'?)"
    );
    assert_eq!(at7("vips"), "7: router 'r1': unknown key 'vips' in [router] section (did you mean 'vip'?)");
    assert_eq!(
        at7("unicast_peers"),
        "7: router 'r1': unknown key 'unicast_peers' in [router] section (did you mean 'unicast_peer'?)"
    );
    assert_eq!(at7("vid"), "7: router 'r1': unknown key 'vid' in [router] section (did you mean 'vrid' or 'vip'?)");
    assert_eq!(
        at7("ha_vrrp_advert_itn"),
        "7: router 'r1': unknown key 'ha_vrrp_advert_itn' in [router] section (did you mean 'ha_vrrp_advert_int'? \
         it belongs in [daemon])"
    );
    assert_eq!(at7("bogus"), "7: router 'r1': unknown key 'bogus' in [router] section");
    assert_eq!(
        errors("[daemon]\nsocket_grup = neutron\n"),
        ["2: unknown key 'socket_grup' in [daemon] section (did you mean 'socket_group'?)"]
    );
    assert_eq!(
        errors("[daemon]\nadvert_int = 2\n"),
        ["2: unknown key 'advert_int' in [daemon] section (it belongs in a [router ID] section)"]
    );
    // A typo in a password key: the suggestion names keys, never the value.
    let found = errors(&format!("{HEAD}auth_pasword = Hunter2x\nauth_password Hunter2x = 1\n"));
    assert_eq!(
        found,
        [
            "7: router 'r1': unknown key 'auth_pasword' in [router] section (did you mean 'auth_password'?)",
            "8: router 'r1': unknown key 'auth_password...' in [router] section (the key is the one word before \
             '=': 'auth_password = VALUE')"
        ]
    );
}

#[test]
fn hints_edit_distance_and_limits() {
    use super::hints::{closest, edit_distance, quoted_alternatives};
    assert_eq!(edit_distance("priorty", "priority"), 1);
    assert_eq!(edit_distance("vird", "vrid"), 1, "a swap of neighbours costs one");
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    // Short keys get a short reach: 'ab' is 2 from 'vip' and not suggested.
    assert!(closest("ab", &["vip"]).is_empty());
    assert_eq!(closest("vio", &["vip", "vrid"]), ["vip"]);
    assert_eq!(
        closest("ha_vrrp_auth_pasword", &["ha_vrrp_auth_password", "ha_vrrp_auth_type"]),
        ["ha_vrrp_auth_password"]
    );
    assert_eq!(quoted_alternatives(&["a"]), "'a'");
    assert_eq!(quoted_alternatives(&["a", "b", "c"]), "'a', 'b' or 'c'");
}

/// Decision: a BOM is invisible and means nothing, so it is dropped with a
/// warning; the lines keep their numbers.
#[test]
fn a_byte_order_mark_is_named() {
    let text = format!("\u{feff}{HEAD}priority = 7\n");
    let parsed = parse_text(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed.config.routers[0].priority, 7);
    assert_eq!(
        only_warning(&text),
        "1: warning: the file starts with a UTF-8 byte order mark (bytes EF BB BF), which is ignored; save it \
         without one"
    );
    // One inside the file (files joined with cat) is an error on its line.
    let bom = "invisible character U+FEFF (a byte order mark, as from joining files): delete it";
    assert_eq!(errors(&format!("{HEAD}\u{feff}[router r2]\nha_interface = ha-2\nvrid = 2\n")), [format!("7: {bom}")]);
    assert_eq!(errors(&format!("{HEAD}\u{feff}priority = 5\n")), [format!("7: router 'r1': {bom}")]);
    assert_eq!(errors(&format!("{HEAD}priority = 5\u{feff}\n")), [format!("7: router 'r1': {bom}")]);
}

#[test]
fn an_inline_comment_is_named() {
    let hint = "(did you mean a comment? comments are whole lines starting with '#' or ';': a '#' or ';' after a \
                value is part of it)";
    assert_eq!(
        errors(&format!("{HEAD}priority = 100 # the primary\n")),
        [format!("7: router 'r1': priority: '100 # the primary' is not a whole number {hint}")]
    );
    assert_error(&format!("{HEAD}vip = 10.0.0.1/24 dev qr-1 ; gateway\n"), 7, &["vip: ", hint]);
    // Never the password, with the hint or without.
    let found = errors(&format!("{HEAD}auth_password = Hunter2x # rotated\n"));
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("7: router 'r1': auth_password: ") && found[0].ends_with(hint), "{found:?}");
    assert!(!found[0].contains("Hunter2x") && !found[0].contains("rotated"), "{found:?}");
    // A value still valid with the comment in it keeps it, with a warning.
    let text = "[daemon]\ntransition_script = /usr/local/bin/t.sh # notify\n";
    let c = parse_text(text).unwrap().config;
    assert_eq!(c.daemon.transition_script.unwrap(), Path::new("/usr/local/bin/t.sh # notify"));
    assert_eq!(only_warning(text), format!("2: warning: transition_script: {}", &hint[1..hint.len() - 1]));
    // A '#' not after a space is not a comment habit.
    no_warnings("[daemon]\ntransition_script = /usr/local/bin/t#1.sh\n");
}

#[test]
fn a_comment_after_a_section_header_is_named() {
    assert_eq!(
        errors("[daemon] # the defaults\n"),
        ["1: text after the section header '[daemon]' (did you mean a comment? comments are whole lines starting \
          with '#' or ';': a '#' or ';' after a value is part of it)"]
    );
    assert_eq!(errors("[router r1] r2\n"), ["1: text after the section header '[router r1]'"]);
}

#[test]
fn a_quoted_value_is_named() {
    let hint = "(values are written bare: quotes are not needed and would be part of the value)";
    assert_eq!(
        errors(&format!("{HEAD}priority = \"100\"\n")),
        [format!("7: router 'r1': priority: '\"100\"' is not a whole number {hint}")]
    );
    assert_error("[daemon]\ntransition_script = '/x.sh'\n", 2, &["is not an absolute path", hint]);
    // Valid with its quotes (keepalived would get them): a warning.
    let text = "[daemon]\nkeepalived_router_id = 'node1'\n";
    assert_eq!(parse_text(text).unwrap().config.daemon.keepalived_router_id, "'node1'");
    assert_eq!(only_warning(text), format!("2: warning: keepalived_router_id: {}", &hint[1..hint.len() - 1]));
    // Passwords: the habit is named, the value never.
    let w = only_warning(&format!("{HEAD}auth_password = 'Hunt2'\n"));
    assert!(w.starts_with("7: warning: router 'r1': auth_password: values are written bare") && !w.contains("Hunt2"));
    let found = errors(&format!("{HEAD}auth_password = \"Hunter 2\"\n"));
    assert!(found[0].ends_with(hint) && !found[0].contains("Hunter"), "{found:?}");
    // A quote inside a value is not quoting.
    no_warnings("[daemon]\nkeepalived_router_id = node'1\n");
}

/// Decision: list keys repeat (SPEC 2); a comma list is named, not read.
#[test]
fn a_comma_list_in_a_list_key_is_named() {
    let hint = "(did you mean a list? one item per line: repeat 'unicast_peer =' for each)";
    assert_eq!(
        errors(&format!("{HEAD}unicast_peer = 169.254.192.2, 169.254.192.3\n")),
        [format!("7: router 'r1': unicast_peer: '169.254.192.2, 169.254.192.3' is not an IP address {hint}")]
    );
    assert_error(&format!("{HEAD}vip = 10.0.0.1/24 dev qr-1,10.0.0.2/24 dev qr-1\n"), 7, &["repeat 'vip =' for each"]);
    // A comma is legal in an interface name: warned about, kept.
    assert_eq!(
        only_warning(&format!("{HEAD}track_interface = qg-1,qg-2\n")),
        "7: warning: router 'r1': track_interface: did you mean a list? one item per line: repeat 'track_interface \
         =' for each"
    );
    // allowed_uids is one key holding a list: commas are its syntax.
    no_warnings("[daemon]\nallowed_uids = 1000, neutron\n");
}

// ---- issue 14.6: names and programs only the machine can tell ----

mod machine {
    use std::collections::HashMap;
    use std::path::Path;

    use super::super::runtime::{self, FileKind, Host, Lookup};
    use super::parse_text;

    /// A machine with a few users, groups and files.
    struct Fake {
        users: &'static [&'static str],
        groups: &'static [&'static str],
        files: HashMap<&'static str, FileKind>,
    }

    impl Host for Fake {
        fn group(&self, name: &str) -> Lookup {
            if name == "broken" {
                return Lookup::Failed("I/O error".into());
            }
            if self.groups.contains(&name) { Lookup::Found } else { Lookup::Missing }
        }
        fn user(&self, name: &str) -> Lookup {
            if self.users.contains(&name) { Lookup::Found } else { Lookup::Missing }
        }
        fn file(&self, path: &Path) -> FileKind {
            self.files.get(path.to_str().unwrap()).cloned().unwrap_or(FileKind::Missing)
        }
    }

    fn fake() -> Fake {
        Fake {
            users: &["neutron"],
            groups: &["neutron"],
            files: HashMap::from([
                ("/usr/sbin/keepalived", FileKind::Executable),
                ("/usr/sbin/conntrackd", FileKind::Executable),
                ("/usr/local/bin/keepalived", FileKind::NotExecutable(0o644)),
                ("/etc/t.sh", FileKind::NotExecutable(0o644)),
                ("/etc", FileKind::NotAFile),
                ("/ok.sh", FileKind::Executable),
            ]),
        }
    }

    const CHILD_PATH: &str = "/usr/local/bin:/usr/sbin";

    fn warnings(text: &str) -> Vec<String> {
        let parsed = parse_text(text).unwrap_or_else(|e| panic!("{e}"));
        runtime::warnings(&parsed, CHILD_PATH, &fake()).iter().map(ToString::to_string).collect()
    }

    const ROUTER: &str = "\n[router r1]\nha_interface = ha-1\nvrid = 1\n";

    #[test]
    fn everything_resolves() {
        let text = format!(
            "[daemon]\nsocket_group = neutron\nallowed_uids = 0, neutron, 1000\nkeepalived_path = keepalived\n\
             transition_script = /ok.sh\nha_conntrackd_enabled = true\n{ROUTER}ha_address = 169.254.192.1\n"
        );
        assert_eq!(warnings(&text), Vec::<String>::new());
        // Numbers need no lookup.
        assert_eq!(warnings("[daemon]\nsocket_group = 4242\nallowed_uids = 4242\n"), Vec::<String>::new());
    }

    #[test]
    fn unknown_group_and_users() {
        assert_eq!(
            warnings("[daemon]\nsocket_group = nosuchgroup\nallowed_uids = neutron, bob 7, eve\n"),
            [
                "/etc/h.conf:2: warning: socket_group: no group 'nosuchgroup' on this system: the daemon would \
                 refuse to start",
                "/etc/h.conf:3: warning: allowed_uids: no user 'bob' on this system: the daemon would refuse to start",
                "/etc/h.conf:3: warning: allowed_uids: no user 'eve' on this system: the daemon would refuse to start",
            ]
        );
        assert_eq!(
            warnings("[daemon]\nsocket_group = broken\n"),
            ["/etc/h.conf:2: warning: socket_group: cannot look up group 'broken': I/O error"]
        );
    }

    #[test]
    fn programs_that_cannot_run() {
        let found = warnings(&format!("[daemon]\nkeepalived_path = /opt/keepalived\n{ROUTER}"));
        assert_eq!(
            found,
            ["/etc/h.conf:2: warning: keepalived_path: /opt/keepalived does not exist: no keepalived could be started"]
        );
        let found = warnings(&format!("[daemon]\nkeepalived_path = /usr/local/bin/keepalived\n{ROUTER}"));
        assert_eq!(
            found,
            ["/etc/h.conf:2: warning: keepalived_path: /usr/local/bin/keepalived is not executable (mode 0644): no \
              keepalived could be started"]
        );
        // A bare name is looked up in the children's PATH only; the first
        // candidate is not executable, the second is.
        assert_eq!(warnings(&format!("[daemon]\nkeepalived_path = keepalived\n{ROUTER}")), Vec::<String>::new());
        assert_eq!(
            warnings(&format!("[daemon]\nkeepalived_path = keepalived2\n{ROUTER}")),
            ["/etc/h.conf:2: warning: keepalived_path: 'keepalived2' is not found in the PATH the daemon gives its \
              children (/usr/local/bin:/usr/sbin): no keepalived could be started"]
        );
        // The default, from no line: the message says so and has no line.
        let parsed = parse_text(&format!("[daemon]\n{ROUTER}")).unwrap();
        let fake = Fake { files: HashMap::new(), ..fake() };
        assert_eq!(
            runtime::warnings(&parsed, CHILD_PATH, &fake).iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["/etc/h.conf: warning: keepalived_path: 'keepalived' (the default) is not found in the PATH the daemon \
              gives its children (/usr/local/bin:/usr/sbin): no keepalived could be started"]
        );
    }

    #[test]
    fn programs_nothing_runs_are_not_looked_at() {
        // No router runs keepalived: neither program matters.
        let monitor_only =
            format!("[daemon]\nkeepalived_path = /nope\nconntrackd_path = /nope2\n{ROUTER}keepalived = false\n");
        assert_eq!(warnings(&monitor_only), Vec::<String>::new());
        // conntrackd matters only with ha_conntrackd_enabled.
        let text = format!("[daemon]\nconntrackd_path = /nope2\n{ROUTER}");
        assert_eq!(warnings(&text), Vec::<String>::new());
        let enabled =
            text.replace("[daemon]\n", "[daemon]\nha_conntrackd_enabled = true\n") + "ha_address = 169.254.192.1\n";
        assert_eq!(
            warnings(&enabled),
            ["/etc/h.conf:3: warning: conntrackd_path: /nope2 does not exist: conntrackd could not be run"]
        );
    }

    #[test]
    fn transition_script_that_cannot_run() {
        for (path, problem) in [
            ("/missing.sh", "does not exist"),
            ("/etc/t.sh", "is not executable (mode 0644)"),
            ("/etc", "is not a regular file"),
        ] {
            assert_eq!(
                warnings(&format!("[daemon]\ntransition_script = {path}\n")),
                [format!("/etc/h.conf:2: warning: transition_script: {path} {problem}: no transition could run it")]
            );
        }
    }
}

/// Found by running keepalived (tests/keepalived_accepts.rs): the kernel
/// refuses a second address of a subnet with another scope.
#[test]
fn ipv4_vips_of_one_subnet_on_one_interface_share_a_scope() {
    assert_eq!(
        errors(&format!("{HEAD}vip = 10.0.7.1/24 dev qr-1\nvip = 10.0.7.2/24 dev qr-1 scope link\n")),
        ["8: router 'r1': vip: 10.0.7.2/24 on qr-1 has scope link, but 10.0.7.1/24 (line 7), in the same subnet on \
          the same interface, has scope global: the kernel refuses an address whose scope differs from the others \
          of its subnet; give them one scope"]
    );
    // Same scope, another prefix, another interface, IPv6: all fine.
    for ok in [
        "vip = 10.0.7.1/24 dev qr-1 scope host\nvip = 10.0.7.2/24 dev qr-1 scope host\n",
        "vip = 10.0.7.1/24 dev qr-1\nvip = 10.0.7.2/24 dev qr-1 scope global\n",
        "vip = 10.0.7.1/24 dev qr-1\nvip = 10.0.7.2/25 dev qr-1 scope link\n",
        "vip = 10.0.7.1/24 dev qr-1\nvip = 10.0.7.2/24 dev qg-1 scope link\n",
        "vip = 2001:db8::1/64 dev qg-1\nvip = 2001:db8::2/64 dev qg-1 scope global\n",
    ] {
        no_warnings(&format!("{HEAD}{ok}"));
    }
}
