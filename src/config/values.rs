//! The value parsers of the config: each takes a value's text and returns
//! the typed value or the reason it is refused (without the key or line,
//! which the caller adds). Pure.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use super::{AuthType, Principal, Route, RouteDest, Secret, Vip};
use crate::core::ident;
use crate::core::net::{self, Cidr};

/// Scopes keepalived accepts on addresses and routes.
pub(super) const SCOPES: &[&str] = &["global", "site", "link", "host", "nowhere"];

/// The largest number conntrackd reads into its `int` settings.
pub(super) const C_INT_MAX: u32 = i32::MAX as u32;

pub(super) fn range(min: u32, max: u32) -> impl Fn(&str) -> Result<u32, String> {
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

/// `ADDR:PORT` to listen on: an IPv4 address, or an IPv6 one in brackets
/// (`[::1]:9652`). Port 0 takes any free port (the log says which).
pub(super) fn listen_address(v: &str) -> Result<std::net::SocketAddr, String> {
    v.parse::<std::net::SocketAddr>().map_err(|_| {
        let hint = if v.parse::<IpAddr>().is_ok() { ": the port is missing" } else { "" };
        format!("'{v}' is not ADDRESS:PORT (an IPv6 address in brackets: [::1]:9652){hint}")
    })
}

pub(super) fn boolean(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("'{v}' is not a boolean (true/false)")),
    }
}

pub(super) fn absolute_path(v: &str) -> Result<PathBuf, String> {
    if !v.starts_with('/') {
        return Err(format!("'{v}' is not an absolute path"));
    }
    Ok(PathBuf::from(v))
}

/// An absolute path that ends up inside keepalived.conf (`notify_fifo`, the
/// health check's `script "..."`): one keepalived word, and no `'` or `\`,
/// which keepalived's script-line splitter would take as quoting.
pub(super) fn conf_path(v: &str) -> Result<PathBuf, String> {
    let path = absolute_path(v)?;
    keepalived_word(v)?;
    if v.contains(['\'', '\\']) {
        return Err(format!("'{}' must not contain a quote or a backslash", v.escape_debug()));
    }
    Ok(path)
}

/// A program: a bare name looked up in PATH, or an absolute path.
pub(super) fn program(v: &str) -> Result<String, String> {
    if v.contains(char::is_whitespace) || (v.contains('/') && !v.starts_with('/')) {
        return Err(format!("'{v}' is neither a program name nor an absolute path"));
    }
    Ok(v.to_owned())
}

pub(super) fn file_mode(v: &str) -> Result<u32, String> {
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

pub(super) fn principal(v: &str) -> Result<Principal, String> {
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
pub(super) fn principals(v: &str) -> Result<Vec<Principal>, String> {
    v.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()).map(principal).collect()
}

pub(super) fn auth_type(v: &str) -> Result<AuthType, String> {
    match v {
        "PASS" => Ok(AuthType::Pass),
        "AH" => Ok(AuthType::Ah),
        _ => Err(format!("'{v}' is not one of PASS, AH")),
    }
}

/// A single word of keepalived.conf: keepalived splits on whitespace and
/// treats `#` and `!` as the start of a comment, so such a value would be
/// cut short or change meaning.
pub(super) fn keepalived_word(v: &str) -> Result<String, String> {
    if v.chars().any(|c| c.is_whitespace() || matches!(c, '#' | '!' | '"' | '{' | '}')) || !v.is_ascii() {
        return Err(format!(
            "'{}' must be one word of printable ASCII without '#', '!', '\"', '{{' or '}}'",
            v.escape_debug()
        ));
    }
    Ok(v.to_owned())
}

/// Like [`keepalived_word`], without echoing the value.
pub(super) fn password(v: &str) -> Result<Secret, String> {
    keepalived_word(v).map(Secret::new).map_err(|_| {
        "the password must be one word of printable ASCII without '#', '!', '\"', '{' or '}' (value not shown)"
            .to_owned()
    })
}

/// An interface name by the kernel's rule that is also one keepalived word:
/// every interface in the config is written into keepalived.conf, where `#`
/// or `!` would start a comment and a brace or quote would change the
/// structure.
pub(super) fn ifname(v: &str) -> Result<String, String> {
    ident::check_ifname(v)?;
    keepalived_word(v)
}

pub(super) fn network(v: &str) -> Result<Cidr, String> {
    let cidr = Cidr::parse(v)?;
    if !cidr.is_network() {
        return Err(format!("'{v}' has host bits set (a network address is expected)"));
    }
    Ok(cidr)
}

/// An IPv4 multicast group (conntrackd's sync runs over IPv4 multicast, as
/// Neutron configures it).
pub(super) fn multicast(v: &str) -> Result<Ipv4Addr, String> {
    match net::parse_addr(v)? {
        IpAddr::V4(a) if a.is_multicast() => Ok(a),
        IpAddr::V4(_) => Err(format!("'{v}' is not a multicast address (224.0.0.0/4)")),
        IpAddr::V6(_) => Err(format!("'{v}' is not an IPv4 address (conntrackd syncs over IPv4 multicast)")),
    }
}

/// A node's own IPv4 address: Neutron's HA network is IPv4, and conntrackd
/// takes `IPv4_interface`.
pub(super) fn ipv4_host(v: &str) -> Result<Ipv4Addr, String> {
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
pub(super) fn host_in(addr: Ipv4Addr, cidr: &Cidr) -> Result<(), String> {
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
pub(super) fn instance_family(v: &str) -> Result<IpAddr, String> {
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
pub(super) const PRIMARY_VIP_RANGE: &str = "169.254.0.0/16";

/// Whether `addr` is an IPv6 link-local unicast address (fe80::/10).
pub(super) fn is_link_local_v6(addr: &IpAddr) -> bool {
    matches!(addr, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80)
}

pub(super) fn scope(v: &str) -> Result<String, String> {
    if SCOPES.contains(&v) { Ok(v.to_owned()) } else { Err(format!("scope '{v}' is not one of {}", SCOPES.join(", "))) }
}

/// `CIDR dev IFACE [scope S]`
pub(super) fn vip(v: &str) -> Result<Vip, String> {
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
pub(super) fn route(v: &str) -> Result<Route, String> {
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
pub(super) fn kernel_accepts_route(route: &Route) -> Result<(), String> {
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
