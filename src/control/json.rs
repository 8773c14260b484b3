//! A minimal JSON writer for the control socket (no parser: the daemon only
//! answers JSON, it never reads any).
//!
//! Two layers:
//! - [`quote`] / [`escape_into`]: one string as a JSON string literal;
//! - [`object`] / [`array`]: whole documents built through closures, so
//!   that brackets, commas and colons are always right by construction:
//!
//! ```
//! use harouterd::control::json;
//! let doc = json::object(|o| {
//!     o.str("id", "r1");
//!     o.int("vrid", 7);
//!     o.bool("keepalived", true);
//!     o.opt_str("last_error", None);
//!     o.array("vips", |a| {
//!         a.str("10.0.0.1/24");
//!     });
//! });
//! assert_eq!(doc, r#"{"id":"r1","vrid":7,"keepalived":true,"last_error":null,"vips":["10.0.0.1/24"]}"#);
//! ```
//!
//! Escaping: `"` and `\` get a backslash; the control characters U+0000 to
//! U+001F get their short form (`\b \t \n \f \r`) or `\u00XX`; U+007F (DEL,
//! a terminal control byte) and U+2028 / U+2029 (line terminators in
//! JavaScript before ES2019) are written as `\u007f`, `\u2028`, `\u2029`.
//! Everything else is written as is (UTF-8). So the output never holds a
//! raw newline or other control byte, and one document per line (the
//! `/v1/events` stream) is always safe.
//!
//! Keys are not checked for duplicates: the caller writes each once.
//! Integers are written exactly; JavaScript readers lose precision above
//! 2^53, far beyond any counter the daemon keeps.

use std::fmt::Write as _;

/// `s` as a JSON string literal, quotes included.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    escape_into(&mut out, s);
    out
}

/// Appends `s` to `out` as a JSON string literal, quotes included.
///
/// Byte by byte: everything that needs escaping is ASCII except U+2028 and
/// U+2029 (`E2 80 A8`, `E2 80 A9` in UTF-8), so runs of anything else are
/// copied whole (this is most of the time spent answering a status of a
/// thousand routers).
pub fn escape_into(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut clean = 0; // start of the run not yet copied
    let mut i = 0;
    while i < bytes.len() {
        let (short, len): (&str, usize) = match bytes[i] {
            b'"' => ("\\\"", 1),
            b'\\' => ("\\\\", 1),
            0x08 => ("\\b", 1),
            b'\t' => ("\\t", 1),
            b'\n' => ("\\n", 1),
            0x0c => ("\\f", 1),
            b'\r' => ("\\r", 1),
            0x00..=0x1f | 0x7f => ("", 1),
            0xe2 if matches!(bytes.get(i + 1..i + 3), Some([0x80, 0xa8 | 0xa9])) => ("", 3),
            _ => {
                i += 1;
                continue;
            }
        };
        out.push_str(&s[clean..i]);
        if short.is_empty() {
            let c = s[i..].chars().next().map_or(0, u32::from);
            let _ = write!(out, "\\u{c:04x}");
        } else {
            out.push_str(short);
        }
        i += len;
        clean = i;
    }
    out.push_str(&s[clean..]);
    out.push('"');
}

/// A whole JSON object, built by `f`.
pub fn object(f: impl FnOnce(&mut Object)) -> String {
    let mut out = String::new();
    write_object(&mut out, f);
    out
}

/// A whole JSON object, built by `f`, appended to `out`: a document of
/// many objects (a thousand routers) is written into one buffer rather
/// than assembled from a string per object.
pub fn object_into(out: &mut String, f: impl FnOnce(&mut Object)) {
    write_object(out, f);
}

/// Any integer up to 128 bits, in decimal; the 64-bit ones (all of ours)
/// without 128-bit arithmetic.
fn write_int(out: &mut String, value: i128) {
    let _ = match (i64::try_from(value), u64::try_from(value)) {
        (Ok(v), _) => write!(out, "{v}"),
        (_, Ok(v)) => write!(out, "{v}"),
        _ => write!(out, "{value}"),
    };
}

/// A whole JSON array, built by `f`.
pub fn array(f: impl FnOnce(&mut Array)) -> String {
    let mut out = String::new();
    write_array(&mut out, f);
    out
}

fn write_object(out: &mut String, f: impl FnOnce(&mut Object)) {
    out.push('{');
    f(&mut Object { out, first: true });
    out.push('}');
}

fn write_array(out: &mut String, f: impl FnOnce(&mut Array)) {
    out.push('[');
    f(&mut Array { out, first: true });
    out.push(']');
}

/// The members of an object being written.
pub struct Object<'a> {
    out: &'a mut String,
    first: bool,
}

impl Object<'_> {
    fn key(&mut self, key: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        escape_into(self.out, key);
        self.out.push(':');
        self.out
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        escape_into(self.key(key), value);
        self
    }

    /// A string, or `null` for `None`.
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(key, v),
            None => self.null(key),
        }
    }

    /// Any integer type up to 64 bits, signed or not.
    pub fn int(&mut self, key: &str, value: impl Into<i128>) -> &mut Self {
        write_int(self.key(key), value.into());
        self
    }

    /// An integer, or `null` for `None`.
    pub fn opt_int<T: Into<i128>>(&mut self, key: &str, value: Option<T>) -> &mut Self {
        match value {
            Some(v) => self.int(key, v),
            None => self.null(key),
        }
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key).push_str(if value { "true" } else { "false" });
        self
    }

    pub fn null(&mut self, key: &str) -> &mut Self {
        self.key(key).push_str("null");
        self
    }

    pub fn object(&mut self, key: &str, f: impl FnOnce(&mut Object)) -> &mut Self {
        write_object(self.key(key), f);
        self
    }

    pub fn array(&mut self, key: &str, f: impl FnOnce(&mut Array)) -> &mut Self {
        write_array(self.key(key), f);
        self
    }
}

/// The elements of an array being written.
pub struct Array<'a> {
    out: &'a mut String,
    first: bool,
}

impl Array<'_> {
    fn next(&mut self) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out
    }

    pub fn str(&mut self, value: &str) -> &mut Self {
        escape_into(self.next(), value);
        self
    }

    pub fn opt_str(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(v),
            None => self.null(),
        }
    }

    pub fn int(&mut self, value: impl Into<i128>) -> &mut Self {
        write_int(self.next(), value.into());
        self
    }

    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.next().push_str(if value { "true" } else { "false" });
        self
    }

    pub fn null(&mut self) -> &mut Self {
        self.next().push_str("null");
        self
    }

    pub fn object(&mut self, f: impl FnOnce(&mut Object)) -> &mut Self {
        write_object(self.next(), f);
        self
    }

    pub fn array(&mut self, f: impl FnOnce(&mut Array)) -> &mut Self {
        write_array(self.next(), f);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_character_is_escaped() {
        for b in 0u8..0x20 {
            let s = (b as char).to_string();
            let want = match b {
                0x08 => "\"\\b\"".to_owned(),
                0x09 => "\"\\t\"".to_owned(),
                0x0a => "\"\\n\"".to_owned(),
                0x0c => "\"\\f\"".to_owned(),
                0x0d => "\"\\r\"".to_owned(),
                _ => format!("\"\\u{:04x}\"", b),
            };
            assert_eq!(quote(&s), want, "byte {b:#04x}");
        }
        assert_eq!(quote("\u{7f}"), "\"\\u007f\"");
        let all: String = (0u8..0x20).map(char::from).collect();
        assert!(!quote(&all).bytes().any(|b| b < 0x20 || b == 0x7f));
    }

    #[test]
    fn quotes_and_backslashes() {
        assert_eq!(quote(r#"a"b"#), r#""a\"b""#);
        assert_eq!(quote(r"a\b"), r#""a\\b""#);
        assert_eq!(quote(r#"\""#), r#""\\\"""#);
        assert_eq!(quote(r"\u0041"), r#""\\u0041""#);
        assert_eq!(quote("/"), "\"/\"");
        assert_eq!(quote(""), "\"\"");
    }

    #[test]
    fn unicode_passes_through_except_line_separators() {
        assert_eq!(quote("h\u{e9}llo \u{1F600} \u{4e2d}"), "\"h\u{e9}llo \u{1F600} \u{4e2d}\"");
        assert_eq!(quote("a\u{2028}b\u{2029}c"), "\"a\\u2028b\\u2029c\"");
        assert_eq!(quote("\u{85}"), "\"\u{85}\""); // NEL is not a JSON control
        assert_eq!(quote("é\nà"), "\"é\\nà\"");
    }

    #[test]
    fn nesting() {
        let doc = array(|a| {
            a.object(|o| {
                o.str("k", "v").int("neg", -5i64).int("big", u64::MAX).bool("f", false).null("n");
                o.object("empty", |_| {});
                o.array("inner", |a| {
                    a.array(|_| {}).int(0u8).opt_str(None).opt_str(Some("x")).bool(true);
                });
                o.opt_int("none", None::<u32>).opt_int("some", Some(3u32)).opt_str("s", Some("\""));
            });
            a.str("tail");
        });
        assert_eq!(
            doc,
            r#"[{"k":"v","neg":-5,"big":18446744073709551615,"f":false,"n":null,"empty":{},"inner":[[],0,null,"x",true],"none":null,"some":3,"s":"\""},"tail"]"#
        );
        assert_eq!(object(|_| {}), "{}");
        assert_eq!(array(|_| {}), "[]");
        assert_eq!(
            object(|o| {
                o.str("a\nb", "");
            }),
            "{\"a\\nb\":\"\"}"
        );
    }

    #[test]
    fn escape_into_appends() {
        let mut s = String::from("x=");
        escape_into(&mut s, "\"");
        assert_eq!(s, "x=\"\\\"\"");
    }
}
