//! The primary VIP: the one address in `virtual_ipaddress`, whose presence on
//! the HA interface means "this node is primary".
//!
//! Neutron's rule, kept so configs and monitors interoperate: the first /24
//! of 169.254.0.0/16 that overlaps none of 169.254.169.254/32 (metadata),
//! 169.254.64.0/18 (DVR FIP link-locals) and the router's HA network, with
//! the VRID as host part. It depends only on `ha_cidr` and `vrid`, so it never
//! changes while the router exists (changing it under a running keepalived
//! can drop the router's routes).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use crate::core::net::Cidr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoFreeRange {
    pub ha_cidr: Cidr,
}

impl fmt::Display for NoFreeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no free /24 left in 169.254.0.0/16 for the primary VIP: ha_cidr {} with 169.254.169.254/32 and 169.254.64.0/18 covers all of them",
            self.ha_cidr
        )
    }
}

/// Checking each aligned /24 in order gives the same answer as Neutron's
/// `netaddr.IPSet` difference walked with `iter_cidrs()`: the first block of
/// that decomposition large enough to hold a /24 starts at the first fully
/// free aligned /24.
pub fn primary_vip(ha_cidr: &Cidr, vrid: u8) -> Result<Cidr, NoFreeRange> {
    let excluded = [cidr4([169, 254, 169, 254], 32), cidr4([169, 254, 64, 0], 18), *ha_cidr];
    (0..=255u8)
        .map(|third| cidr4([169, 254, third, 0], 24))
        .find(|range| excluded.iter().all(|ex| !range.overlaps(ex)))
        .map(|range| match range.addr {
            IpAddr::V4(net) => {
                let [a, b, c, _] = net.octets();
                cidr4([a, b, c, vrid], 24)
            }
            IpAddr::V6(_) => unreachable!("ranges are built as IPv4"),
        })
        .ok_or(NoFreeRange { ha_cidr: *ha_cidr })
}

fn cidr4(octets: [u8; 4], prefix: u8) -> Cidr {
    Cidr { addr: IpAddr::V4(Ipv4Addr::from(octets)), prefix }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(ha: &str, vrid: u8) -> Result<String, NoFreeRange> {
        primary_vip(&Cidr::parse(ha).unwrap(), vrid).map(|c| c.to_string())
    }

    #[test]
    fn default_ha_network() {
        assert_eq!(vip("169.254.192.0/18", 1).unwrap(), "169.254.0.1/24");
        assert_eq!(vip("169.254.192.0/18", 254).unwrap(), "169.254.0.254/24");
    }

    #[test]
    fn range_moves_past_the_ha_network() {
        assert_eq!(vip("169.254.0.0/24", 3).unwrap(), "169.254.1.3/24");
        assert_eq!(vip("169.254.0.0/23", 2).unwrap(), "169.254.2.2/24");
        // The free /25 left beside it is too small.
        assert_eq!(vip("169.254.0.0/25", 2).unwrap(), "169.254.1.2/24");
        // 169.254.0.0/18 taken, 169.254.64.0/18 excluded: next is .128.
        assert_eq!(vip("169.254.0.0/18", 5).unwrap(), "169.254.128.5/24");
    }

    #[test]
    fn unrelated_or_ipv6_ha_networks_change_nothing() {
        assert_eq!(vip("10.0.0.0/8", 9).unwrap(), "169.254.0.9/24");
        assert_eq!(vip("fd00::/64", 9).unwrap(), "169.254.0.9/24");
    }

    #[test]
    fn no_free_range() {
        let err = vip("169.254.0.0/16", 1).unwrap_err();
        assert!(err.to_string().contains("no free /24"), "{err}");
        assert!(vip("0.0.0.0/0", 1).is_err());
    }
}
