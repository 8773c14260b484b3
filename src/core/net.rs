//! IP addresses and CIDRs as the config file writes them.
//!
//! Pure values, no I/O. Addresses are kept in canonical text form (what
//! `std::net` prints, RFC 5952 for IPv6) because keepalived.conf sorts VIPs
//! by their text, exactly as Neutron does.

use std::fmt;
use std::net::IpAddr;

/// An address with a prefix length, host bits allowed (`10.0.0.1/24` is a
/// VIP on a /24, not a network).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn max_prefix(addr: &IpAddr) -> u8 {
        match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    /// Parses `ADDR/PREFIX`; the prefix is mandatory.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) =
            text.split_once('/').ok_or_else(|| format!("'{text}' is not a CIDR (expected ADDRESS/PREFIX)"))?;
        let addr = parse_addr(addr).map_err(|_| format!("'{text}': '{addr}' is not an IP address"))?;
        let max = Cidr::max_prefix(&addr);
        let prefix = parse_prefix(prefix, max)
            .ok_or_else(|| format!("'{text}': prefix length '{prefix}' is not in 0..={max}"))?;
        Ok(Cidr { addr, prefix })
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// True when no bit below the prefix is set (a network, as route
    /// destinations must be).
    pub fn is_network(&self) -> bool {
        self.network_bits() == self.addr_bits()
    }

    /// The first address of the network, as a number (IPv4 in the low bits).
    pub fn network_bits(&self) -> u128 {
        self.addr_bits() & self.mask()
    }

    fn addr_bits(&self) -> u128 {
        match self.addr {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        }
    }

    fn mask(&self) -> u128 {
        let width = u32::from(Cidr::max_prefix(&self.addr));
        let host = width - u32::from(self.prefix);
        let all: u128 = if width == 128 { u128::MAX } else { (1u128 << width) - 1 };
        if host >= 128 { 0 } else { all & !((1u128 << host) - 1) }
    }

    /// The last address of the network, as a number.
    pub fn broadcast_bits(&self) -> u128 {
        let width = u32::from(Cidr::max_prefix(&self.addr));
        let all: u128 = if width == 128 { u128::MAX } else { (1u128 << width) - 1 };
        self.network_bits() | (all & !self.mask())
    }

    /// Whether the two networks share at least one address. Networks of
    /// different families never overlap.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.addr.is_ipv4() == other.addr.is_ipv4()
            && self.network_bits() <= other.broadcast_bits()
            && other.network_bits() <= self.broadcast_bits()
    }

    /// Whether `addr` lies inside this network.
    pub fn contains(&self, addr: &IpAddr) -> bool {
        let one = Cidr { addr: *addr, prefix: Cidr::max_prefix(addr) };
        self.overlaps(&one)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses an IP address strictly (no zone index, no brackets).
pub fn parse_addr(text: &str) -> Result<IpAddr, String> {
    text.parse::<IpAddr>().map_err(|_| format!("'{text}' is not an IP address"))
}

fn parse_prefix(text: &str, max: u8) -> Option<u8> {
    if text.is_empty() || text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u8 = text.parse().ok()?;
    (n <= max).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_canonically() {
        let c = Cidr::parse("2001:DB8:0:0::1/64").unwrap();
        assert_eq!(c.to_string(), "2001:db8::1/64");
        assert_eq!(Cidr::parse("10.0.0.1/24").unwrap().to_string(), "10.0.0.1/24");
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["10.0.0.1", "10.0.0.1/33", "10.0.0.1/", "10.0.0/24", "::1/129", "10.0.0.1/+4", "x/1"] {
            assert!(Cidr::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn overlap_and_network() {
        let a = Cidr::parse("169.254.192.0/18").unwrap();
        assert!(a.is_network());
        assert!(!Cidr::parse("10.0.0.1/24").unwrap().is_network());
        assert!(a.overlaps(&Cidr::parse("169.254.255.0/24").unwrap()));
        assert!(!a.overlaps(&Cidr::parse("169.254.191.0/24").unwrap()));
        assert!(!a.overlaps(&Cidr::parse("::/0").unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().overlaps(&a));
        assert!(a.contains(&"169.254.200.1".parse().unwrap()));
    }
}
