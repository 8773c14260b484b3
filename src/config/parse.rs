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
//! keepalived itself would cut it there, which `values::keepalived_word`
//! refuses.
//! A value that looks like a habit from another syntax (an inline comment,
//! quotes, a comma list) gets the habit named ([`hints`]).
//!
//! Besides its own syntax, the parser refuses what keepalived 2.2.7 or the
//! kernel would refuse in the keepalived.conf it leads to (address
//! families, IPv6 scopes, routes the kernel cannot install), since those
//! fail only once keepalived runs, or only on a failover. Every message
//! about a router's lines names the router.

use std::collections::HashMap;
use std::path::Path;

use super::sections::{check_vrid_clashes, daemon_section, router_section};
use super::{Config, ConfigError, ConfigErrors, Parsed, hints};
use crate::core::ident::RouterId;

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
    "transition_script_timeout",
    "notify_agent_socket",
    "ipv6_forwarding_on_primary",
    "metrics_listen",
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

/// U+FEFF, the UTF-8 byte order mark some editors put first in a file.
const BOM: char = '\u{feff}';

#[derive(Clone, Copy)]
pub(super) struct Entry<'a> {
    pub(super) key: &'a str,
    pub(super) value: &'a str,
    pub(super) line: usize,
}

#[derive(Default)]
pub(super) struct Fields<'a> {
    pub(super) single: HashMap<&'a str, Entry<'a>>,
    pub(super) list: HashMap<&'a str, Vec<Entry<'a>>>,
}

impl<'a> Fields<'a> {
    pub(super) fn list(&self, key: &str) -> &[Entry<'a>] {
        self.list.get(key).map(Vec::as_slice).unwrap_or(&[])
    }
}

pub(super) enum Kind {
    Daemon,
    Router(RouterId),
}

pub(super) struct Section<'a> {
    pub(super) kind: Kind,
    pub(super) line: usize,
    pub(super) fields: Fields<'a>,
}

/// Collects errors and warnings so one run reports every problem.
pub(super) struct Diag<'p> {
    pub(super) path: &'p Path,
    /// The router whose lines are being read: every message about them
    /// starts `router 'ID': `, so a file with many routers says which one.
    pub(super) router: Option<RouterId>,
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<ConfigError>,
}

impl Diag<'_> {
    pub(super) fn named(&self, message: String) -> String {
        match &self.router {
            Some(id) => format!("router '{id}': {message}"),
            None => message,
        }
    }

    pub(super) fn error(&mut self, line: usize, message: impl Into<String>) {
        let message = self.named(message.into());
        self.errors.push(ConfigError { path: self.path.to_path_buf(), line: Some(line), message });
    }

    pub(super) fn warn(&mut self, line: usize, message: impl Into<String>) {
        let message = format!("warning: {}", self.named(message.into()));
        self.warnings.push(ConfigError { path: self.path.to_path_buf(), line: Some(line), message });
    }

    /// Parses the single key `key` if present; a bad value is reported with
    /// its line and the key's name, and yields `None`.
    pub(super) fn get<T>(
        &mut self,
        fields: &Fields,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let entry = fields.single.get(key)?;
        self.value(entry, parse)
    }

    /// A value written out of a habit from another syntax (quotes, an
    /// inline comment, a comma list) gets the habit named: after the
    /// reason when it makes the value invalid, as a warning when the value
    /// is still valid (and then means something else than intended).
    pub(super) fn value<T>(&mut self, entry: &Entry, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
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
