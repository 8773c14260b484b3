//! The hand-written parser for the INI-like config file. Pure: text in,
//! [`Config`] or every error found out, each with its line.
//!
//! Two passes: the first splits lines into sections and `key = value`
//! entries (catching syntax, unknown keys and repeated single keys), the
//! second turns each section's entries into typed values and checks the
//! rules that span routers (duplicate IDs, duplicate VRIDs per HA interface).
//!
//! Comments are whole lines starting with `#` or `;`. A `#` later in a line
//! is part of the value, so a password may hold one... except that
//! keepalived itself would cut it there, which [`keepalived_word`] refuses.
//! A value that looks like a habit from another syntax (an inline comment,
//! quotes, a comma list) gets the habit named ([`hints`]).
//!
//! Besides its own syntax, the parser refuses what keepalived 2.2.7 or the
//! kernel would refuse in the keepalived.conf it leads to (address
//! families, IPv6 scopes, routes the kernel cannot install), since those
//! fail only once keepalived runs, or only on a failover. Every message
//! about a router's lines names the router.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use super::{
    Auth, AuthType, ChildAction, Config, ConfigError, ConfigErrors, ConntrackdOptions, DaemonConfig, OnExit, Parsed,
    Principal, Route, RouteDest, RouterConfig, Secret, Vip, hints,
};
use crate::conntrackd::conf as conntrackd_conf;
use crate::core::ident::{self, Namespace, RouterId};
use crate::core::layout::Layout;
use crate::core::net::{self, Cidr};
use crate::core::primary_vip;

const DAEMON_KEYS: &[&str] = &[
    "state_path",
    "ha_confs_path",
    "socket",
    "socket_mode",
    "socket_group",
    "allowed_uids",
    "keepalived_path",
    "conntrackd_path",
    "ha_vrrp_advert_int",
    "ha_vrrp_auth_type",
    "ha_vrrp_auth_password",
    "ha_vrrp_health_check_interval",
    "ha_conntrackd_enabled",
    "ha_conntrackd_hashsize",
    "ha_conntrackd_hashlimit",
    "ha_conntrackd_unix_backlog",
    "ha_conntrackd_socketbuffersize",
    "ha_conntrackd_socketbuffersize_max_grown",
    "ha_conntrackd_ipv4_mcast_addr",
    "ha_conntrackd_group",
    "ha_conntrackd_sndsocketbuffer",
    "ha_conntrackd_rcvsocketbuffer",
    "check_child_processes_action",
    "keepalived_email_from",
    "keepalived_router_id",
    "on_exit",
    "transition_script",
    "notify_agent_socket",
    "ipv6_forwarding_on_primary",
];

const ROUTER_KEYS: &[&str] = &[
    "namespace",
    "ha_interface",
    "ha_cidr",
    "vrid",
    "priority",
    "advert_int",
    "auth_type",
    "auth_password",
    "vip",
    "route",
    "track_interface",
    "mcast_src_ip",
    "unicast_src_ip",
    "unicast_peer",
    "health_check_interval",
    "keepalived",
    "ha_address",
];

/// Keys that may repeat: each occurrence adds one element.
const LIST_KEYS: &[&str] = &["vip", "route", "track_interface", "unicast_peer"];

/// The HA network Neutron uses when none is configured (`l3_ha_net_cidr`).
const DEFAULT_HA_CIDR: &str = "169.254.192.0/18";

/// Scopes keepalived accepts on addresses and routes.
const SCOPES: &[&str] = &["global", "site", "link", "host", "nowhere"];

/// U+FEFF, the UTF-8 byte order mark some editors put first in a file.
const BOM: char = '\u{feff}';

#[derive(Clone, Copy)]
struct Entry<'a> {
    key: &'a str,
    value: &'a str,
    line: usize,
}

#[derive(Default)]
struct Fields<'a> {
    single: HashMap<&'a str, Entry<'a>>,
    list: HashMap<&'a str, Vec<Entry<'a>>>,
}

impl<'a> Fields<'a> {
    fn list(&self, key: &str) -> &[Entry<'a>] {
        self.list.get(key).map(Vec::as_slice).unwrap_or(&[])
    }
}

enum Kind {
    Daemon,
    Router(RouterId),
}

struct Section<'a> {
    kind: Kind,
    line: usize,
    fields: Fields<'a>,
}

/// Collects errors and warnings so one run reports every problem.
struct Diag<'p> {
    path: &'p Path,
    /// The router whose lines are being read: every message about them
    /// starts `router 'ID': `, so a file with many routers says which one.
    router: Option<RouterId>,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl Diag<'_> {
    fn named(&self, message: String) -> String {
        match &self.router {
            Some(id) => format!("router '{id}': {message}"),
            None => message,
        }
    }

    fn error(&mut self, line: usize, message: impl Into<String>) {
        let message = self.named(message.into());
        self.errors.push(ConfigError { path: self.path.to_path_buf(), line: Some(line), message });
    }

    fn warn(&mut self, line: usize, message: impl Into<String>) {
        let message = format!("warning: {}", self.named(message.into()));
        self.warnings.push(ConfigError { path: self.path.to_path_buf(), line: Some(line), message });
    }

    /// Parses the single key `key` if present; a bad value is reported with
    /// its line and the key's name, and yields `None`.
    fn get<T>(&mut self, fields: &Fields, key: &str, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let entry = fields.single.get(key)?;
        self.value(entry, parse)
    }

    /// A value written out of a habit from another syntax (quotes, an
    /// inline comment, a comma list) gets the habit named: after the
    /// reason when it makes the value invalid, as a warning when the value
    /// is still valid (and then means something else than intended).
    fn value<T>(&mut self, entry: &Entry, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let habit = hints::value_habit(entry.key, entry.value, LIST_KEYS.contains(&entry.key));
        match parse(entry.value) {
            Ok(v) => {
                if let Some(habit) = habit {
                    self.warn(entry.line, format!("{}: {habit}", entry.key));
                }
                Some(v)
            }
            Err(reason) => {
                let hint = habit.map(|h| format!(" ({h})")).unwrap_or_default();
                self.error(entry.line, format!("{}: {reason}{hint}", entry.key));
                None
            }
        }
    }
}

/// Parses a whole config file's text. `path` is only used in messages and
/// as the config's origin.
pub fn parse(path: &Path, text: &str) -> Result<Parsed, ConfigErrors> {
    let mut diag = Diag { path, router: None, errors: Vec::new(), warnings: Vec::new() };
    // Editors on other systems may save one; it is invisible and means
    // nothing, so it is dropped rather than read as part of the first line.
    let text = match text.strip_prefix(BOM) {
        Some(rest) => {
            diag.warn(
                1,
                "the file starts with a UTF-8 byte order mark (bytes EF BB BF), which is ignored; save it without one",
            );
            rest
        }
        None => text,
    };
    let sections = split_sections(text, &mut diag);

    let empty = Fields::default();
    let daemon_fields = sections.iter().find(|s| matches!(s.kind, Kind::Daemon)).map(|s| &s.fields).unwrap_or(&empty);
    let defaults = daemon_section(daemon_fields, &mut diag);

    let mut routers = Vec::new();
    for section in &sections {
        if let Kind::Router(id) = &section.kind {
            diag.router = Some(id.clone());
            if let Some(router) = router_section(id, section, &defaults, &mut diag) {
                routers.push(router);
            }
            diag.router = None;
        }
    }
    check_vrid_clashes(&routers, &sections, &mut diag);

    if !diag.errors.is_empty() {
        return Err(ConfigErrors(diag.errors));
    }
    let daemon_lines = daemon_fields.single.values().map(|e| (e.key.to_owned(), e.line)).collect();
    let holds_password = defaults.password.is_some() || routers.iter().any(|r| r.auth.is_some());
    let config = Config { path: path.to_path_buf(), daemon: defaults.daemon, routers, holds_password };
    Ok(Parsed { config, warnings: diag.warnings, daemon_lines })
}

/// Pass one: sections, entries, unknown and repeated keys.
fn split_sections<'a>(text: &'a str, diag: &mut Diag) -> Vec<Section<'a>> {
    let mut sections: Vec<Section<'a>> = Vec::new();
    // Index into `sections` of the section entries go to; `None` before the
    // first header or after a broken one (its entries are not reported
    // again as "outside any section").
    let mut current: Option<usize> = None;
    let mut after_bad_header = false;
    let mut daemon_line: Option<usize> = None;
    let mut router_lines: HashMap<String, usize> = HashMap::new();

    for (index, raw) in text.split('\n').enumerate() {
        let line = index + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        // A BOM opening a line (files joined with cat) is reported, and the
        // line read without it, so the section it may open still counts.
        let (bom, trimmed) = match raw.trim().strip_prefix(BOM) {
            Some(rest) => (true, rest.trim()),
            None => (false, raw.trim()),
        };
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if trimmed.starts_with('[') {
            diag.router = None;
        }
        if let Some(c) = raw.chars().find(|&c| c.is_control() && c != '\t') {
            diag.error(line, format!("control character {:?} in line", c));
            continue;
        }
        if bom || trimmed.contains(BOM) {
            diag.error(line, "invisible character U+FEFF (a byte order mark, as from joining files): delete it");
            if trimmed.contains(BOM) {
                continue;
            }
        }
        if trimmed.starts_with('[') {
            current = None;
            after_bad_header = true;
            let Some(inner) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) else {
                match trimmed.split_once(']') {
                    Some((head, rest)) => {
                        let hint = hints::value_habit("", rest, false).map(|h| format!(" ({h})")).unwrap_or_default();
                        diag.error(line, format!("text after the section header '{head}]'{hint}"));
                    }
                    None => diag.error(line, format!("section header '{trimmed}' has no closing ']'")),
                }
                continue;
            };
            let words: Vec<&str> = inner.split_whitespace().collect();
            let kind = match words.as_slice() {
                ["daemon"] => {
                    if let Some(first) = daemon_line {
                        diag.error(line, format!("duplicate [daemon] section (first at line {first})"));
                        continue;
                    }
                    daemon_line = Some(line);
                    Kind::Daemon
                }
                ["router", id] => match RouterId::parse(id) {
                    Ok(id) => {
                        if let Some(first) = router_lines.get(id.as_str()) {
                            diag.error(line, format!("duplicate router '{id}' (first at line {first})"));
                            continue;
                        }
                        router_lines.insert(id.as_str().to_owned(), line);
                        Kind::Router(id)
                    }
                    Err(e) => {
                        diag.error(line, e);
                        continue;
                    }
                },
                _ => {
                    diag.error(line, format!("unknown section '{trimmed}': expected [daemon] or [router ID]"));
                    continue;
                }
            };
            if let Kind::Router(id) = &kind {
                diag.router = Some(id.clone());
            }
            sections.push(Section { kind, line, fields: Fields::default() });
            current = Some(sections.len() - 1);
            after_bad_header = false;
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            diag.error(line, no_equals_message(trimmed));
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        let Some(section) = current.map(|i| &mut sections[i]) else {
            if !after_bad_header {
                let key = shown_key(key);
                diag.error(line, format!("'{key}' is outside any section: put it under [daemon] or [router ID]"));
            }
            continue;
        };
        let (known, section_name) = match section.kind {
            Kind::Daemon => (DAEMON_KEYS, "[daemon]"),
            Kind::Router(_) => (ROUTER_KEYS, "[router]"),
        };
        if !known.contains(&key) {
            diag.error(line, unknown_key_message(&shown_key(key), section_name));
            continue;
        }
        if value.is_empty() {
            diag.error(line, format!("{key}: no value (remove the line to get the default)"));
            continue;
        }
        let entry = Entry { key, value, line };
        if LIST_KEYS.contains(&key) {
            section.fields.list.entry(key).or_default().push(entry);
        } else if let Some(first) = section.fields.single.get(key) {
            diag.error(line, format!("{key}: set twice (first at line {})", first.line));
        } else {
            section.fields.single.insert(key, entry);
        }
    }
    diag.router = None;
    sections
}

/// Characters a key is made of (and a little more, so a typo still shows).
fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// A key as it may appear in an error. A line without `=`, or whose part
/// before the first `=` is not one word, may be a `key value` line whose
/// value is a VRRP password (`ha_vrrp_auth_password: PW`, `auth_password
/// PW=`): only its leading word is ever shown, never the rest.
fn shown_key(text: &str) -> String {
    let word: String = text.chars().take_while(|&c| is_key_char(c)).collect();
    if word.len() == text.len() { word } else { format!("{word}...") }
}

/// The error for a line without `=`: names its first word only.
fn no_equals_message(line: &str) -> String {
    let word: String = line.chars().take_while(|&c| is_key_char(c)).collect();
    if word.is_empty() {
        "expected 'key = value' (the line is not shown: it may hold a secret)".to_owned()
    } else {
        format!(
            "expected 'key = value' in the line starting with '{word}' (the rest is not shown: it may hold a secret)"
        )
    }
}

/// `key` is what [`shown_key`] made of the text before `=`: a word, with
/// `...` when more followed (never shown, nor used for a suggestion).
fn unknown_key_message(key: &str, section: &str) -> String {
    let (own, other, elsewhere) = match section {
        "[router]" => (ROUTER_KEYS, DAEMON_KEYS, "[daemon]"),
        _ => (DAEMON_KEYS, ROUTER_KEYS, "a [router ID] section"),
    };
    let hint = match key.strip_suffix("...") {
        // `auth_password Hunter2x = 1`: a key followed by more words.
        Some(word) if own.contains(&word) => format!(" (the key is the one word before '=': '{word} = VALUE')"),
        Some(_) => String::new(),
        None if other.contains(&key) => format!(" (it belongs in {elsewhere})"),
        None => match key.strip_prefix("ha_vrrp_") {
            Some(short) if section == "[router]" && ROUTER_KEYS.contains(&short) => {
                format!(" (routers spell it '{short}')")
            }
            _ => match (hints::closest(key, own).as_slice(), hints::closest(key, other).as_slice()) {
                ([], []) => String::new(),
                ([], theirs) => {
                    format!(" (did you mean {}? it belongs in {elsewhere})", hints::quoted_alternatives(theirs))
                }
                (ours, _) => format!(" (did you mean {}?)", hints::quoted_alternatives(ours)),
            },
        },
    };
    format!("unknown key '{key}' in {section} section{hint}")
}

/// `[daemon]` plus the router defaults it carries.
struct Defaults {
    daemon: DaemonConfig,
    advert_int: u32,
    auth_type: AuthType,
    password: Option<Secret>,
    health_check_interval: u32,
}

fn daemon_section(f: &Fields, diag: &mut Diag) -> Defaults {
    let state_path = diag.get(f, "state_path", conf_path).unwrap_or_else(|| PathBuf::from("/var/lib/harouterd"));
    let ha_confs_path = diag.get(f, "ha_confs_path", conf_path).unwrap_or_else(|| state_path.join("ha_confs"));
    let socket = diag.get(f, "socket", absolute_path).unwrap_or_else(|| state_path.join("harouterd.sock"));
    let password = diag.get(f, "ha_vrrp_auth_password", password);
    if let (Some(pw), Some(entry)) = (&password, f.single.get("ha_vrrp_auth_password")) {
        warn_long_password(pw, entry.line, diag);
    }
    let daemon = DaemonConfig {
        socket_mode: diag.get(f, "socket_mode", file_mode).unwrap_or(0o660),
        socket_group: diag.get(f, "socket_group", principal),
        allowed_uids: diag.get(f, "allowed_uids", principals).unwrap_or_default(),
        keepalived_path: diag.get(f, "keepalived_path", program).unwrap_or_else(|| "keepalived".to_owned()),
        conntrackd_path: diag.get(f, "conntrackd_path", program).unwrap_or_else(|| "conntrackd".to_owned()),
        conntrackd_enabled: diag.get(f, "ha_conntrackd_enabled", boolean).unwrap_or(false),
        conntrackd: conntrackd_options(f, diag),
        child_action: diag
            .get(f, "check_child_processes_action", |v| match v {
                "respawn" => Ok(ChildAction::Respawn),
                "exit" => Ok(ChildAction::Exit),
                _ => Err(format!("'{v}' is not one of respawn, exit")),
            })
            .unwrap_or(ChildAction::Respawn),
        email_from: diag
            .get(f, "keepalived_email_from", keepalived_word)
            .unwrap_or_else(|| "neutron@openstack.local".to_owned()),
        keepalived_router_id: diag
            .get(f, "keepalived_router_id", keepalived_word)
            .unwrap_or_else(|| "neutron".to_owned()),
        on_exit: diag
            .get(f, "on_exit", |v| match v {
                "keep" => Ok(OnExit::Keep),
                "stop" => Ok(OnExit::Stop),
                _ => Err(format!("'{v}' is not one of keep, stop")),
            })
            .unwrap_or(OnExit::Keep),
        transition_script: diag.get(f, "transition_script", absolute_path),
        notify_agent_socket: diag.get(f, "notify_agent_socket", absolute_path),
        ipv6_forwarding_on_primary: diag.get(f, "ipv6_forwarding_on_primary", boolean).unwrap_or(false),
        state_path,
        ha_confs_path,
        socket,
    };
    Defaults {
        daemon,
        advert_int: diag.get(f, "ha_vrrp_advert_int", range(1, 255)).unwrap_or(2),
        auth_type: diag.get(f, "ha_vrrp_auth_type", auth_type).unwrap_or(AuthType::Pass),
        password,
        health_check_interval: diag.get(f, "ha_vrrp_health_check_interval", range(0, 86_400)).unwrap_or(0),
    }
}

fn router_section(id: &RouterId, section: &Section, defaults: &Defaults, diag: &mut Diag) -> Option<RouterConfig> {
    let f = &section.fields;
    let errors_before = diag.errors.len();

    let namespace = diag.get(f, "namespace", Namespace::parse);
    let ha_interface = diag.get(f, "ha_interface", ifname);
    if !f.single.contains_key("ha_interface") {
        diag.error(section.line, "ha_interface is required");
    }
    let ha_cidr = match f.single.get("ha_cidr") {
        Some(entry) => diag.value(entry, network),
        None => network(DEFAULT_HA_CIDR).ok(),
    };
    let vrid = diag.get(f, "vrid", range(1, 254)).map(|v| v as u8);
    if !f.single.contains_key("vrid") {
        diag.error(section.line, "vrid is required (1..=254)");
    }
    let priority = diag.get(f, "priority", range(1, 254)).map_or(50, |v| v as u8);
    let advert_int = diag.get(f, "advert_int", range(1, 255)).unwrap_or(defaults.advert_int);
    let auth_type_value = diag.get(f, "auth_type", auth_type).unwrap_or(defaults.auth_type);
    let own_password = diag.get(f, "auth_password", password);
    if let (Some(pw), Some(entry)) = (&own_password, f.single.get("auth_password")) {
        warn_long_password(pw, entry.line, diag);
    }
    let auth = own_password
        .or_else(|| defaults.password.clone())
        .map(|password| Auth { auth_type: auth_type_value, password });
    let health_check_interval =
        diag.get(f, "health_check_interval", range(0, 86_400)).unwrap_or(defaults.health_check_interval);
    let keepalived = diag.get(f, "keepalived", boolean).unwrap_or(true);
    let mcast_src_ip = diag.get(f, "mcast_src_ip", instance_family);
    let unicast_src_ip = diag.get(f, "unicast_src_ip", instance_family);
    let ha_address = diag.get(f, "ha_address", ipv4_host);
    if let (Some(addr), Some(cidr), Some(entry)) = (ha_address, ha_cidr, f.single.get("ha_address"))
        && let Err(e) = host_in(addr, &cidr)
    {
        diag.error(entry.line, format!("ha_address: {e}"));
    }
    if defaults.daemon.conntrackd_enabled && keepalived {
        conntrackd_checks(id, section, &defaults.daemon, ha_interface.as_deref(), vrid, diag);
    }

    let mut track_interfaces: Vec<String> = Vec::new();
    let mut seen_track: HashMap<String, usize> = HashMap::new();
    for entry in f.list("track_interface") {
        let Some(name) = diag.value(entry, ifname) else { continue };
        if Some(&name) == ha_interface.as_ref() {
            diag.error(entry.line, format!("track_interface: '{name}' is the HA interface, which is always tracked"));
        } else if let Some(first) = seen_track.get(&name) {
            diag.error(entry.line, format!("track_interface: '{name}' listed twice (first at line {first})"));
        } else {
            seen_track.insert(name.clone(), entry.line);
            track_interfaces.push(name);
        }
    }

    let mut vips = Vec::new();
    let mut seen_vips: HashMap<Cidr, usize> = HashMap::new();
    // The first IPv4 VIP of each subnet on each interface: the kernel
    // refuses ("ipv4: Invalid scope value") an address whose scope differs
    // from that of the addresses of the same subnet already there, so
    // keepalived would add one and fail on the other when it turns primary.
    let mut subnets: HashMap<(&str, u128, u8), (&Vip, usize)> = HashMap::new();
    let parsed: Vec<(Vip, usize)> =
        f.list("vip").iter().filter_map(|entry| Some((diag.value(entry, vip)?, entry.line))).collect();
    for (vip, line) in &parsed {
        if let Some(first) = seen_vips.get(&vip.cidr) {
            diag.error(*line, format!("vip: {} listed twice (first at line {first})", vip.cidr));
            continue;
        }
        seen_vips.insert(vip.cidr, *line);
        if vip.cidr.is_ipv4() {
            let key = (vip.dev.as_str(), vip.cidr.network_bits(), vip.cidr.prefix);
            let scope_of = |v: &Vip| v.scope.clone().unwrap_or_else(|| "global".to_owned());
            match subnets.get(&key) {
                Some((first, first_line)) if scope_of(first) != scope_of(vip) => diag.error(
                    *line,
                    format!(
                        "vip: {} on {} has scope {}, but {} (line {first_line}), in the same subnet on the same \
                         interface, has scope {}: the kernel refuses an address whose scope differs from the others \
                         of its subnet; give them one scope",
                        vip.cidr,
                        vip.dev,
                        scope_of(vip),
                        first.cidr,
                        scope_of(first)
                    ),
                ),
                Some(_) => {}
                None => {
                    subnets.insert(key, (vip, *line));
                }
            }
        }
    }
    vips.extend(parsed.iter().map(|(vip, _)| vip.clone()));

    let mut routes = Vec::new();
    for entry in f.list("route") {
        if let Some(route) = diag.value(entry, route) {
            routes.push(route);
        }
    }

    let mut unicast_peers = Vec::new();
    for entry in f.list("unicast_peer") {
        let Some(peer) = diag.value(entry, instance_family) else { continue };
        if unicast_peers.contains(&peer) {
            diag.error(entry.line, format!("unicast_peer: {peer} listed twice"));
            continue;
        }
        // keepalived takes these without a word; the instance would then
        // talk to itself instead of its peer.
        if unicast_src_ip == Some(peer) {
            diag.warn(entry.line, format!("unicast_peer: {peer} is this node's own unicast_src_ip"));
        } else if ha_address.map(IpAddr::V4) == Some(peer) {
            diag.warn(entry.line, format!("unicast_peer: {peer} is this node's own ha_address"));
        }
        unicast_peers.push(peer);
    }
    // keepalived 2.2.7: "A unicast keyword has been specified without any
    // unicast peers. Defaulting to multicast.": the router would quietly
    // advertise by multicast, which the operator chose unicast to avoid.
    if let (Some(src), Some(entry)) = (unicast_src_ip, f.single.get("unicast_src_ip"))
        && f.list("unicast_peer").is_empty()
    {
        diag.error(
            entry.line,
            format!(
                "unicast_src_ip: {src} is set but no unicast_peer is: keepalived would ignore it and use multicast \
                 (add unicast_peer lines, or use mcast_src_ip)"
            ),
        );
    }

    let primary = match (ha_cidr, vrid) {
        (Some(ha_cidr), Some(vrid)) => match primary_vip::primary_vip(&ha_cidr, vrid) {
            Ok(vip) => Some(vip),
            Err(e) => {
                let line = f.single.get("ha_cidr").map_or(section.line, |e| e.line);
                diag.error(line, e.to_string());
                None
            }
        },
        _ => None,
    };

    if diag.errors.len() != errors_before {
        return None;
    }
    Some(RouterConfig {
        id: id.clone(),
        line: section.line,
        namespace,
        ha_interface: ha_interface?,
        ha_cidr: ha_cidr?,
        vrid: vrid?,
        priority,
        advert_int,
        auth,
        vips,
        routes,
        track_interfaces,
        mcast_src_ip,
        unicast_src_ip,
        unicast_peers,
        health_check_interval,
        keepalived,
        ha_address,
        primary_vip: primary?,
    })
}

/// The `ha_conntrackd_*` keys; absent ones get Neutron's defaults.
fn conntrackd_options(f: &Fields, diag: &mut Diag) -> ConntrackdOptions {
    let d = ConntrackdOptions::default();
    let mut int = |key: &str, default: u32| diag.get(f, key, range(1, C_INT_MAX)).unwrap_or(default);
    ConntrackdOptions {
        hashsize: int("ha_conntrackd_hashsize", d.hashsize),
        hashlimit: int("ha_conntrackd_hashlimit", d.hashlimit),
        unix_backlog: int("ha_conntrackd_unix_backlog", d.unix_backlog),
        socket_buffer_size: int("ha_conntrackd_socketbuffersize", d.socket_buffer_size),
        socket_buffer_size_max_grown: int("ha_conntrackd_socketbuffersize_max_grown", d.socket_buffer_size_max_grown),
        snd_socket_buffer: int("ha_conntrackd_sndsocketbuffer", d.snd_socket_buffer),
        rcv_socket_buffer: int("ha_conntrackd_rcvsocketbuffer", d.rcv_socket_buffer),
        ipv4_mcast_addr: diag.get(f, "ha_conntrackd_ipv4_mcast_addr", multicast).unwrap_or(d.ipv4_mcast_addr),
        // With VRID 1 at least, a larger base could never be a port.
        group: diag.get(f, "ha_conntrackd_group", range(0, conntrackd_conf::MAX_GROUP - 1)).unwrap_or(d.group),
    }
}

/// What a router that gets a conntrackd.conf (ha_conntrackd_enabled, and
/// keepalived not false) must have for conntrackd to read it: its own HA
/// address, an interface name conntrackd's lexer reads as one, a sync port
/// that fits in 16 bits, and paths within conntrackd's buffers.
fn conntrackd_checks(
    id: &RouterId,
    section: &Section,
    daemon: &DaemonConfig,
    ha_interface: Option<&str>,
    vrid: Option<u8>,
    diag: &mut Diag,
) {
    let f = &section.fields;
    if !f.single.contains_key("ha_address") {
        diag.error(
            section.line,
            "ha_address is required with ha_conntrackd_enabled (this node's own address on the HA network, which \
             conntrackd syncs over)",
        );
    }
    if let (Some(name), Some(entry)) = (ha_interface, f.single.get("ha_interface"))
        && let Err(e) = conntrackd_conf::check_interface(name)
    {
        diag.error(entry.line, format!("ha_interface: {e} (ha_conntrackd_enabled)"));
    }
    if let (Some(vrid), Some(entry)) = (vrid, f.single.get("vrid")) {
        let group = conntrackd_conf::group(&daemon.conntrackd, vrid);
        if group > conntrackd_conf::MAX_GROUP {
            diag.error(
                entry.line,
                format!(
                    "ha_conntrackd_group {} + vrid {vrid} = {group}, over {} (conntrackd's sync Group is a UDP \
                     port)",
                    daemon.conntrackd.group,
                    conntrackd_conf::MAX_GROUP
                ),
            );
        }
    }
    if let Err(e) = conntrackd_conf::Paths::new(&Layout::new(&daemon.ha_confs_path), id).check() {
        diag.error(section.line, e.to_string());
    }
}

/// Two routers on the same HA interface of the same namespace must not share
/// a VRID: their VRRP adverts would be taken for one another's.
fn check_vrid_clashes(routers: &[RouterConfig], sections: &[Section], diag: &mut Diag) {
    let mut seen: HashMap<(Option<&Namespace>, &str, u8), &RouterConfig> = HashMap::new();
    for router in routers {
        let key = (router.namespace.as_ref(), router.ha_interface.as_str(), router.vrid);
        if let Some(first) = seen.get(&key) {
            let line = sections
                .iter()
                .find(|s| s.line == router.line)
                .and_then(|s| s.fields.single.get("vrid"))
                .map_or(router.line, |e| e.line);
            diag.router = Some(router.id.clone());
            diag.error(
                line,
                format!(
                    "vrid {} is already used by router '{}' (line {}) on HA interface {} in the same namespace",
                    router.vrid, first.id, first.line, router.ha_interface
                ),
            );
            diag.router = None;
        } else {
            seen.insert(key, router);
        }
    }
}

fn warn_long_password(pw: &Secret, line: usize, diag: &mut Diag) {
    if pw.expose().len() > 8 {
        diag.warn(line, "VRRP passwords longer than 8 characters are truncated to 8 by keepalived");
    }
}

// ---- value parsers: each returns the reason a value is refused ----

/// The largest number conntrackd reads into its `int` settings.
const C_INT_MAX: u32 = i32::MAX as u32;

fn range(min: u32, max: u32) -> impl Fn(&str) -> Result<u32, String> {
    move |v| {
        let n = (!v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()))
            .then(|| v.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| format!("'{v}' is not a whole number"))?;
        if n < u64::from(min) || n > u64::from(max) {
            return Err(format!("{n} is out of range {min}..={max}"));
        }
        Ok(n as u32)
    }
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("'{v}' is not a boolean (true/false)")),
    }
}

fn absolute_path(v: &str) -> Result<PathBuf, String> {
    if !v.starts_with('/') {
        return Err(format!("'{v}' is not an absolute path"));
    }
    Ok(PathBuf::from(v))
}

/// An absolute path that ends up inside keepalived.conf (`notify_fifo`, the
/// health check's `script "..."`): one keepalived word, and no `'` or `\`,
/// which keepalived's script-line splitter would take as quoting.
fn conf_path(v: &str) -> Result<PathBuf, String> {
    let path = absolute_path(v)?;
    keepalived_word(v)?;
    if v.contains(['\'', '\\']) {
        return Err(format!("'{}' must not contain a quote or a backslash", v.escape_debug()));
    }
    Ok(path)
}

/// A program: a bare name looked up in PATH, or an absolute path.
fn program(v: &str) -> Result<String, String> {
    if v.contains(char::is_whitespace) || (v.contains('/') && !v.starts_with('/')) {
        return Err(format!("'{v}' is neither a program name nor an absolute path"));
    }
    Ok(v.to_owned())
}

fn file_mode(v: &str) -> Result<u32, String> {
    let digits = v.strip_prefix("0o").unwrap_or(v);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!("'{v}' is not an octal file mode such as 0660"));
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|_| format!("'{v}' is not an octal file mode"))?;
    if mode > 0o777 {
        return Err(format!("'{v}' has bits beyond 0777"));
    }
    Ok(mode)
}

fn principal(v: &str) -> Result<Principal, String> {
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse().map(Principal::Id).map_err(|_| format!("'{v}' is out of range for an id"));
    }
    let valid = v.len() <= 32
        && v.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if valid {
        Ok(Principal::Name(v.to_owned()))
    } else {
        Err(format!("'{v}' is neither a number nor a valid user or group name"))
    }
}

/// `allowed_uids = 0, 1000, neutron`: comma or space separated.
fn principals(v: &str) -> Result<Vec<Principal>, String> {
    v.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()).map(principal).collect()
}

fn auth_type(v: &str) -> Result<AuthType, String> {
    match v {
        "PASS" => Ok(AuthType::Pass),
        "AH" => Ok(AuthType::Ah),
        _ => Err(format!("'{v}' is not one of PASS, AH")),
    }
}

/// A single word of keepalived.conf: keepalived splits on whitespace and
/// treats `#` and `!` as the start of a comment, so such a value would be
/// cut short or change meaning.
fn keepalived_word(v: &str) -> Result<String, String> {
    if v.chars().any(|c| c.is_whitespace() || matches!(c, '#' | '!' | '"' | '{' | '}')) || !v.is_ascii() {
        return Err(format!(
            "'{}' must be one word of printable ASCII without '#', '!', '\"', '{{' or '}}'",
            v.escape_debug()
        ));
    }
    Ok(v.to_owned())
}

/// Like [`keepalived_word`], without echoing the value.
fn password(v: &str) -> Result<Secret, String> {
    keepalived_word(v).map(Secret::new).map_err(|_| {
        "the password must be one word of printable ASCII without '#', '!', '\"', '{' or '}' (value not shown)"
            .to_owned()
    })
}

/// An interface name by the kernel's rule that is also one keepalived word:
/// every interface in the config is written into keepalived.conf, where `#`
/// or `!` would start a comment and a brace or quote would change the
/// structure.
fn ifname(v: &str) -> Result<String, String> {
    ident::check_ifname(v)?;
    keepalived_word(v)
}

fn network(v: &str) -> Result<Cidr, String> {
    let cidr = Cidr::parse(v)?;
    if !cidr.is_network() {
        return Err(format!("'{v}' has host bits set (a network address is expected)"));
    }
    Ok(cidr)
}

/// An IPv4 multicast group (conntrackd's sync runs over IPv4 multicast, as
/// Neutron configures it).
fn multicast(v: &str) -> Result<Ipv4Addr, String> {
    match net::parse_addr(v)? {
        IpAddr::V4(a) if a.is_multicast() => Ok(a),
        IpAddr::V4(_) => Err(format!("'{v}' is not a multicast address (224.0.0.0/4)")),
        IpAddr::V6(_) => Err(format!("'{v}' is not an IPv4 address (conntrackd syncs over IPv4 multicast)")),
    }
}

/// A node's own IPv4 address: Neutron's HA network is IPv4, and conntrackd
/// takes `IPv4_interface`.
fn ipv4_host(v: &str) -> Result<Ipv4Addr, String> {
    match net::parse_addr(v)? {
        IpAddr::V4(a) if a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast() => {
            Err(format!("'{v}' is not a unicast host address"))
        }
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(_) => Err(format!("'{v}' is not an IPv4 address (the HA network is IPv4)")),
    }
}

/// `addr` is a host of `cidr`: inside it, and neither its network nor its
/// broadcast address.
fn host_in(addr: Ipv4Addr, cidr: &Cidr) -> Result<(), String> {
    let ip = IpAddr::V4(addr);
    if !cidr.contains(&ip) {
        return Err(format!("{addr} is not inside ha_cidr {cidr}, the HA network it is this node's address on"));
    }
    let bits = u128::from(u32::from(addr));
    if cidr.prefix < 31 && (bits == cidr.network_bits() || bits == cidr.broadcast_bits()) {
        return Err(format!("{addr} is not a host address of ha_cidr {cidr}"));
    }
    Ok(())
}

/// The family of every address keepalived puts in a VRRP instance's
/// packets must be the instance's, which its first VIP sets: the primary
/// VIP, always IPv4 (169.254.0.0/16). keepalived 2.2.7 drops an IPv6
/// `mcast_src_ip` or `unicast_src_ip` ("address family must match VRRP
/// instance") and then refuses the instance for want of a VIP, and skips an
/// IPv6 `unicast_peer`. (`virtual_ipaddress_excluded` may mix families.)
fn instance_family(v: &str) -> Result<IpAddr, String> {
    let addr = net::parse_addr(v)?;
    if addr.is_ipv6() {
        return Err(format!(
            "{addr} is not of the same family as the VRRP instance, which is IPv4 (its primary VIP is in \
             {PRIMARY_VIP_RANGE}): keepalived would refuse it; use an IPv4 address on the HA network"
        ));
    }
    Ok(addr)
}

/// Where every primary VIP lies (see `primary_vip`).
const PRIMARY_VIP_RANGE: &str = "169.254.0.0/16";

/// Whether `addr` is an IPv6 link-local unicast address (fe80::/10).
fn is_link_local_v6(addr: &IpAddr) -> bool {
    matches!(addr, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80)
}

fn scope(v: &str) -> Result<String, String> {
    if SCOPES.contains(&v) { Ok(v.to_owned()) } else { Err(format!("scope '{v}' is not one of {}", SCOPES.join(", "))) }
}

/// `CIDR dev IFACE [scope S]`
fn vip(v: &str) -> Result<Vip, String> {
    let words: Vec<&str> = v.split_whitespace().collect();
    let (cidr, dev, scope_word) = match words.as_slice() {
        [cidr, "dev", dev] => (cidr, dev, None),
        [cidr, "dev", dev, "scope", s] => (cidr, dev, Some(*s)),
        _ => return Err(format!("'{v}' is not 'CIDR dev IFACE [scope SCOPE]'")),
    };
    let vip = Vip { cidr: Cidr::parse(cidr)?, dev: ifname(dev)?, scope: scope_word.map(scope).transpose()? };
    if let IpAddr::V6(addr) = vip.cidr.addr {
        // What the kernel refuses when keepalived adds the address on
        // becoming primary (EADDRNOTAVAIL, EINVAL): the VIP would be missing.
        if addr.is_multicast() || addr.is_unspecified() {
            return Err(format!(
                "{} is not a unicast address: the kernel refuses it, so keepalived could not add it",
                vip.cidr
            ));
        }
        // keepalived 2.2.7: "Cannot specify scope for IPv6 addresses -
        // ignoring scope" for all but global. Neutron writes `scope link`
        // on its link-local gateway VIP, where the address implies it.
        match vip.scope.as_deref() {
            None | Some("global") => {}
            Some("link") if is_link_local_v6(&vip.cidr.addr) => {}
            Some(s) => {
                return Err(format!(
                    "scope {s} on the IPv6 address {}: keepalived ignores scopes on IPv6 addresses (the address \
                     sets it: link for fe80::/10, global otherwise); leave it out",
                    vip.cidr
                ));
            }
        }
    }
    Ok(vip)
}

/// `DEST [via NEXTHOP] [dev IFACE] [scope S]`, options in any order, each
/// once; at least a next hop or a device.
fn route(v: &str) -> Result<Route, String> {
    let mut words = v.split_whitespace();
    let dest_text = words.next().ok_or("empty route")?;
    let dest = if dest_text.contains('/') {
        let cidr = Cidr::parse(dest_text)?;
        if !cidr.is_network() {
            return Err(format!("destination '{dest_text}' has host bits set"));
        }
        RouteDest::Net(cidr)
    } else {
        RouteDest::Host(net::parse_addr(dest_text)?)
    };
    let mut route = Route { dest, via: None, dev: None, scope: None };
    while let Some(option) = words.next() {
        let value = words.next().ok_or_else(|| format!("'{option}' needs a value in '{v}'"))?;
        let twice = || format!("'{option}' given twice in '{v}'");
        match option {
            "via" if route.via.is_none() => {
                let hop = net::parse_addr(value)?;
                if hop.is_ipv4() != dest.is_ipv4() {
                    return Err(format!("next hop {hop} is not of the same family as {dest}"));
                }
                route.via = Some(hop);
            }
            "dev" if route.dev.is_none() => route.dev = Some(ifname(value)?),
            "scope" if route.scope.is_none() => route.scope = Some(scope(value)?),
            "via" | "dev" | "scope" => return Err(twice()),
            _ => return Err(format!("unknown route option '{option}' in '{v}' (expected via, dev, scope)")),
        }
    }
    if route.via.is_none() && route.dev.is_none() {
        return Err(format!("'{v}' needs 'via NEXTHOP' or 'dev IFACE'"));
    }
    kernel_accepts_route(&route)?;
    Ok(route)
}

/// What keepalived -t lets through but the kernel refuses when keepalived
/// adds the route on becoming primary (keepalived logs a netlink error and
/// runs on without the route): refused here so that a failover cannot
/// lose it. Only what the kernel refuses in any routing table a router
/// has: a multicast or broadcast next hop, or `via` with scope link, passes
/// only where a host-scoped route covers the next hop.
fn kernel_accepts_route(route: &Route) -> Result<(), String> {
    if let Some(hop) = route.via {
        let unicast = match hop {
            IpAddr::V4(a) => !a.is_multicast() && !a.is_broadcast(),
            IpAddr::V6(a) => !a.is_multicast() && !a.is_unspecified(),
        };
        if !unicast {
            return Err(format!("next hop {hop} is not a unicast address: the kernel refuses it"));
        }
        if is_link_local_v6(&hop) && route.dev.is_none() {
            return Err(format!(
                "next hop {hop} is link-local: it needs 'dev IFACE' (the kernel refuses it without one)"
            ));
        }
    }
    // IPv6 routes have no scope in the kernel (it ignores one); IPv4 ones do.
    if route.dest.is_ipv4() {
        match (route.via, route.scope.as_deref()) {
            (_, Some("nowhere")) => return Err("scope nowhere: the kernel refuses it on a route".to_owned()),
            (Some(hop), Some(s @ ("link" | "host"))) => {
                return Err(format!(
                    "a route via a next hop ({hop}) cannot have scope {s}: the kernel refuses it; use scope \
                     global (the default) or site, or leave out 'via' for an on-link route"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}
