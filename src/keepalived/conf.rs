//! Renders a router's keepalived.conf (SPEC section 3.3). Pure: config in,
//! text out.
//!
//! Invariant: for the same router the text is byte-for-byte what Neutron's
//! `KeepalivedConf.get_config_str()` writes (lines joined by `\n`, no final
//! newline), apart from the `notify_fifo` line; `tests/golden/` holds
//! Neutron's own output to hold us to it. The unicast options, which Neutron
//! lacks, follow `mcast_src_ip`.

use std::path::Path;

use crate::config::{DaemonConfig, Route, RouterConfig, Vip};
use crate::core::layout::Layout;
use crate::keepalived::health_check;

/// Whether `auth_pass` is written out or masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secrets {
    Show,
    Mask,
}

/// What replaces a password in masked output.
pub const MASK: &str = "********";

/// The keepalived.conf for `router`.
pub fn render(daemon: &DaemonConfig, router: &RouterConfig, layout: &Layout, secrets: Secrets) -> String {
    let mut out: Vec<String> = vec![
        "global_defs {".into(),
        format!("    notification_email_from {}", daemon.email_from),
        format!("    router_id {}", daemon.keepalived_router_id),
        format!("    notify_fifo {}", layout.notify_fifo(&router.id).display()),
        "}".into(),
    ];
    if router.health_check_interval > 0 {
        vrrp_script(&mut out, router, &layout.check_script(&router.id, router.vrid));
    }
    vrrp_instance(&mut out, router, secrets);
    out.join("\n")
}

/// Neutron writes the preamble whenever checks are on, even when no gateway
/// route makes the instance track it; one empty line before and after.
fn vrrp_script(out: &mut Vec<String>, router: &RouterConfig, script: &Path) {
    out.extend([
        String::new(),
        format!("vrrp_script {} {{", health_check::check_name(router.vrid)),
        format!("    script \"{}\"", script.display()),
        format!("    interval {}", router.health_check_interval),
        "    fall 2".into(),
        "    rise 2".into(),
        "}".into(),
        String::new(),
    ]);
}

fn vrrp_instance(out: &mut Vec<String>, router: &RouterConfig, secrets: Secrets) {
    out.extend([
        format!("vrrp_instance VR_{} {{", router.vrid),
        "    state BACKUP".into(),
        format!("    interface {}", router.ha_interface),
        format!("    virtual_router_id {}", router.vrid),
        format!("    priority {}", router.priority),
        "    garp_master_delay 60".into(),
        "    nopreempt".into(),
        format!("    advert_int {}", router.advert_int),
    ]);
    if let Some(auth) = &router.auth {
        let pass = match secrets {
            Secrets::Show => auth.password.expose(),
            Secrets::Mask => MASK,
        };
        out.extend([
            "    authentication {".into(),
            format!("        auth_type {}", auth.auth_type.as_str()),
            format!("        auth_pass {pass}"),
            "    }".into(),
        ]);
    }
    if let Some(ip) = router.mcast_src_ip {
        out.push(format!("    mcast_src_ip {ip}"));
    }
    if let Some(ip) = router.unicast_src_ip {
        out.push(format!("    unicast_src_ip {ip}"));
    }
    block(out, "unicast_peer", router.unicast_peers.iter().map(|p| p.to_string()));
    block(out, "track_interface", router.tracked().map(str::to_owned));
    out.extend([
        "    virtual_ipaddress {".into(),
        format!("        {} dev {}", router.primary_vip, router.ha_interface),
        "    }".into(),
    ]);
    let mut vips: Vec<(String, &Vip)> = router.vips.iter().map(|v| (v.cidr.to_string(), v)).collect();
    vips.sort_by(|a, b| a.0.cmp(&b.0));
    block(out, "virtual_ipaddress_excluded", vips.iter().map(|(text, vip)| vip_line(text, vip, router)));
    block(out, "virtual_routes", router.routes.iter().map(route_line));
    if health_check::is_needed(router) {
        block(out, "track_script", std::iter::once(health_check::check_name(router.vrid)));
    }
    out.push("}".into());
}

/// A `    NAME {` ... `    }` block, left out entirely when empty.
fn block(out: &mut Vec<String>, name: &str, items: impl Iterator<Item = String>) {
    let start = out.len();
    out.extend(items.map(|item| format!("        {item}")));
    if out.len() > start {
        out.insert(start, format!("    {name} {{"));
        out.push("    }".into());
    }
}

/// A VIP on an interface keepalived does not track gets `no_track`, so that
/// interface going down does not put the whole instance into FAULT.
fn vip_line(text: &str, vip: &Vip, router: &RouterConfig) -> String {
    let mut line = format!("{text} dev {}", vip.dev);
    if let Some(scope) = &vip.scope {
        line.push_str(&format!(" scope {scope}"));
    }
    if !router.tracked().any(|t| t == vip.dev) {
        line.push_str(" no_track");
    }
    line
}

/// `protocol static` matches what Neutron's own `ip route` calls use, so the
/// agent and keepalived do not install the same route twice.
fn route_line(route: &Route) -> String {
    let mut line = route.dest.to_string();
    if let Some(via) = route.via {
        line.push_str(&format!(" via {via}"));
    }
    if let Some(dev) = &route.dev {
        line.push_str(&format!(" dev {dev}"));
    }
    if let Some(scope) = &route.scope {
        line.push_str(&format!(" scope {scope}"));
    }
    line.push_str(" no_track protocol static");
    line
}
