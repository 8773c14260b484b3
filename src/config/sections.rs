//! The second pass of the parser: each section's entries turned into typed
//! values, and the rules that span routers (VRID clashes, conntrackd's
//! limits). Pure, like the rest of `config`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use super::parse::{Diag, Fields, Section};
use super::values::*;
use super::{Auth, AuthType, ChildAction, ConntrackdOptions, DaemonConfig, OnExit, RouterConfig, Secret, Vip};
use crate::conntrackd::conf as conntrackd_conf;
use crate::core::ident::{Namespace, RouterId};
use crate::core::layout::Layout;
use crate::core::net::Cidr;
use crate::core::primary_vip;

/// The HA network Neutron uses when none is configured (`l3_ha_net_cidr`).
const DEFAULT_HA_CIDR: &str = "169.254.192.0/18";

/// `[daemon]` plus the router defaults it carries.
pub(super) struct Defaults {
    pub(super) daemon: DaemonConfig,
    pub(super) advert_int: u32,
    pub(super) auth_type: AuthType,
    pub(super) password: Option<Secret>,
    pub(super) health_check_interval: u32,
}

pub(super) fn daemon_section(f: &Fields, diag: &mut Diag) -> Defaults {
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
        transition_script_timeout: diag
            .get(f, "transition_script_timeout", range(1, 86_400))
            .unwrap_or(super::DEFAULT_SCRIPT_TIMEOUT),
        notify_agent_socket: diag.get(f, "notify_agent_socket", absolute_path),
        ipv6_forwarding_on_primary: diag.get(f, "ipv6_forwarding_on_primary", boolean).unwrap_or(false),
        metrics_listen: diag.get(f, "metrics_listen", listen_address),
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

pub(super) fn router_section(
    id: &RouterId,
    section: &Section,
    defaults: &Defaults,
    diag: &mut Diag,
) -> Option<RouterConfig> {
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
pub(super) fn conntrackd_options(f: &Fields, diag: &mut Diag) -> ConntrackdOptions {
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
pub(super) fn conntrackd_checks(
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
pub(super) fn check_vrid_clashes(routers: &[RouterConfig], sections: &[Section], diag: &mut Diag) {
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

pub(super) fn warn_long_password(pw: &Secret, line: usize, diag: &mut Diag) {
    if pw.expose().len() > 8 {
        diag.warn(line, "VRRP passwords longer than 8 characters are truncated to 8 by keepalived");
    }
}
