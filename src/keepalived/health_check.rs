//! The VRRP health-check script (Neutron's `KeepalivedTrackScript`): it pings
//! each gateway next hop, and exits 0 at once when the router's first VIP is
//! not on this node, so a backup never fails its check for lack of a route.

use crate::config::RouterConfig;

/// Mode Neutron writes the script with.
pub const SCRIPT_MODE: u32 = 0o520;

/// The name keepalived knows the check by, in `vrrp_script` and
/// `track_script`.
pub fn check_name(vrid: u8) -> String {
    format!("ha_health_check_{vrid}")
}

/// Whether the script is written and tracked: checks are on and the router
/// has a gateway route (destination `0.0.0.0/0` or `::/0`).
pub fn is_needed(router: &RouterConfig) -> bool {
    router.health_check_interval > 0 && router.routes.iter().any(|r| r.dest.is_default())
}

/// The script text, no trailing newline (byte-identical to Neutron's). The
/// grep looks for the first VIP as written in the config, not the first
/// after sorting; with no VIP that line stays empty, as in Neutron.
pub fn script(router: &RouterConfig) -> String {
    let mut lines = vec!["#!/bin/bash -eu".to_owned()];
    lines.push(router.vips.first().map(|v| format!("ip a | grep {} || exit 0", v.cidr.addr)).unwrap_or_default());
    for route in router.routes.iter().filter(|r| r.dest.is_default()) {
        if let Some(hop) = route.via {
            let ping = if hop.is_ipv4() { "ping" } else { "ping6" };
            lines.push(format!("{ping} -c 1 -w 1 {hop} 1>/dev/null || exit 1"));
        }
    }
    lines.join("\n")
}
