//! Names that end up in paths or kernel calls: router IDs, interface names,
//! network-namespace names.
//!
//! Invariant: a value that passed these checks can be joined to a directory
//! without escaping it (no `/`, no `..`, no control characters), so no router
//! ID from a config file or the control socket can ever reach outside
//! `ha_confs_path`.

use std::fmt;

/// A validated router ID: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouterId(String);

impl RouterId {
    pub fn parse(text: &str) -> Result<RouterId, String> {
        let bytes = text.as_bytes();
        let first_ok = bytes.first().is_some_and(|b| b.is_ascii_alphanumeric());
        let rest_ok = bytes.iter().skip(1).all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if !first_ok || !rest_ok || bytes.len() > 64 {
            return Err(format!(
                "invalid router id '{}': must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}",
                text.escape_debug()
            ));
        }
        Ok(RouterId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ID equals the text it was parsed from.
impl PartialEq<&str> for RouterId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for RouterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a network interface name by the kernel's rule
/// (`dev_valid_name`): 1–15 bytes, not `.` or `..`, no `/`, `:` or
/// whitespace. `:` is refused too because keepalived and iproute2 read it
/// as an alias label separator.
pub fn check_ifname(text: &str) -> Result<(), String> {
    let ok = !text.is_empty()
        && text.len() <= 15
        && text != "."
        && text != ".."
        && text.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid interface name '{}': 1-15 bytes, no '/', ':', whitespace or control characters",
            text.escape_debug()
        ))
    }
}

/// Where a router's network namespace lives: an iproute2 name (a file under
/// `/run/netns`) or an absolute path to a namespace file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Namespace {
    Named(String),
    Path(String),
}

impl Namespace {
    pub fn parse(text: &str) -> Result<Namespace, String> {
        let shown = text.escape_debug();
        if text.is_empty() || text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("invalid namespace '{shown}': empty, or holds whitespace or control characters"));
        }
        if text.starts_with('/') {
            if text.split('/').any(|part| part == "..") {
                return Err(format!("invalid namespace path '{shown}': '..' is not allowed"));
            }
            return Ok(Namespace::Path(text.to_owned()));
        }
        if text.contains('/') || text == "." || text == ".." || text.len() > 255 {
            return Err(format!(
                "invalid namespace name '{shown}': a name under /run/netns (no '/') or an absolute path"
            ));
        }
        Ok(Namespace::Named(text.to_owned()))
    }

    /// The file to open for `setns`.
    pub fn path(&self) -> String {
        match self {
            Namespace::Named(name) => format!("/run/netns/{name}"),
            Namespace::Path(path) => path.clone(),
        }
    }
}

/// How every message names a router's network namespace: its name (or
/// path), or, for a router without one, the namespace the process itself
/// runs in.
pub fn namespace_name(namespace: Option<&Namespace>) -> String {
    namespace.map_or_else(|| CURRENT_NAMESPACE.to_owned(), Namespace::to_string)
}

/// The one spelling of "no namespace configured".
pub const CURRENT_NAMESPACE: &str = "the current namespace";

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Namespace::Named(name) | Namespace::Path(name) => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_ids() {
        for good in ["r1", "0", "a.b_c-d", &"x".repeat(64)] {
            assert!(RouterId::parse(good).is_ok(), "{good} refused");
        }
        for bad in ["", ".", "..", "../etc", "a/b", "-a", ".hidden", "a b", "a\nb", "é", &"x".repeat(65)] {
            assert!(RouterId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ifnames() {
        assert!(check_ifname("ha-1a2b3c4d-5e").is_ok());
        assert!(check_ifname("123456789012345").is_ok());
        for bad in ["", "1234567890123456", "a/b", "a b", "..", ".", "eth0:1", "a\tb"] {
            assert!(check_ifname(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn namespaces() {
        assert_eq!(Namespace::parse("qrouter-1").unwrap().path(), "/run/netns/qrouter-1");
        assert_eq!(Namespace::parse("/proc/1/ns/net").unwrap().path(), "/proc/1/ns/net");
        for bad in ["", "a/b", "..", "/run/netns/../x", "a b"] {
            assert!(Namespace::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
