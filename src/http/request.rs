//! The control socket's HTTP/1.1 request parser (SPEC 3.6). Pure: bytes in,
//! a verdict out, no I/O, no state between calls.
//!
//! Everything that connects to the socket may be hostile, so the parser is
//! strict and answers as early as it can. The caller keeps everything it has
//! received from one connection in one buffer and calls [`parse`] after each
//! read: [`Parsed::Incomplete`] means "read more" (the caller's 5 s deadline
//! still applies), [`Parsed::Reject`] means "answer that status and close",
//! [`Parsed::Complete`] means the whole request, head and body, is there.
//! One request per connection: every answer says `Connection: close`.
//!
//! # Grammar accepted
//!
//! - Request line: `METHOD SP TARGET SP VERSION CRLF`, single spaces, no
//!   leading empty lines (RFC 9112 lets a server skip them; we refuse: 400).
//!   - VERSION is `HTTP/1.1` or `HTTP/1.0`; another well-formed
//!     `HTTP/DIGIT.DIGIT` → 505; anything else (`http/1.1`, `HTTP/1.10`) → 400.
//!   - METHOD is `GET` or `POST`, case-sensitive; any other RFC 9110 token
//!     (`HEAD`, `get`) → 405 (the answer carries `Allow: GET, POST`); a
//!     non-token → 400.
//!   - TARGET is origin-form only: starts with `/`, visible ASCII
//!     (0x21..=0x7E), no `#`; longer than [`MAX_TARGET`] → 414; `*` and
//!     absolute-form → 400. A query (`?...`) is allowed and dropped from
//!     [`Request::path`]. Nothing is percent-decoded: `/v1/routers/a%2Fb`
//!     asks for router `a%2Fb`, which no valid router ID matches.
//!   - Checks run in this order: shape (three parts) and method token (400),
//!     version syntax (400), version (505), target length (414), target
//!     syntax (400), method (405).
//! - Header line: `NAME ":" OWS VALUE OWS CRLF`. NAME is a token, nothing
//!   between it and the colon (`Host : x` → 400); a line without a colon →
//!   400; a line starting with SP or HTAB (obs-fold) → 400. VALUE is trimmed
//!   of SP/HTAB and may be empty. Names are stored lowercased.
//! - Line endings are CRLF only: a bare LF or a CR not followed by LF → 400.
//!   No control bytes (0x00..=0x1F, 0x7F) anywhere in the head, except HTAB
//!   inside header values → 400. The head must be valid UTF-8 → 400.
//! - The head (request line, headers, final CRLFCRLF) is at most
//!   [`MAX_HEAD`] bytes. As soon as [`MAX_HEAD`] bytes have arrived without
//!   the head ending → 431 (a head ending later could only be too long).
//!
//! # Header rules (checked once the head is complete, in this order)
//!
//! - Any header name given twice → 400. This is stricter than HTTP (which
//!   allows repeating list-valued fields) but no client of ours repeats one,
//!   and it makes every [`Request::header`] answer unambiguous: two
//!   `Content-Length`, two `Host` or two `X-Neutron-State` are all refused.
//! - `Transfer-Encoding`, whatever its value → 400 (no chunked bodies).
//! - HTTP/1.1 without `Host` → 400 (RFC 9112 §3.2 "MUST"); its value is not
//!   interpreted. HTTP/1.0 may omit it.
//! - `Expect: 100-continue` (case-insensitive) is accepted and ignored: no
//!   interim 100 is sent, the client sends the body after its own timeout
//!   (RFC 9110 §10.1.1 allows that). Any other `Expect` → 417.
//! - `Content-Length`: one or more ASCII digits only (no sign, no spaces
//!   inside, not empty; leading zeros are fine) else 400; above
//!   [`MAX_BODY`] → 413 at once, before any body byte is read (a number too
//!   long for `u64` counts as above). No `Content-Length` means an empty
//!   body, for `POST` as for `GET`; a `GET` may have a body only if
//!   `Content-Length` says so.
//! - `Connection`, `Upgrade`, `Keep-Alive` are ignored: the connection is
//!   always closed after the answer.
//!
//! # Body
//!
//! Exactly `Content-Length` bytes after the head. Fewer → `Incomplete`;
//! more (a pipelined or smuggled second request) → 400.
//!
//! # Properties the tests and the fuzz target hold it to
//!
//! - `Reject` is final: once a buffer is rejected, every extension of it is
//!   rejected with the same status (errors are found scanning left to right,
//!   and a buffer of [`MAX_HEAD`] bytes or more is judged on its first
//!   [`MAX_HEAD`] bytes plus, once the head is complete, what follows).
//! - `Complete` only when head and body are all there, and never for a
//!   proper prefix of another `Complete` buffer; extending a `Complete`
//!   buffer by any byte gives 400.
//! - Reject reasons never contain bytes from the request, so they are safe
//!   to log.
//!
//! Cost: each call rescans the buffer, O(length); with the head capped at
//! 8 KiB and the body at 64 KiB this is bounded.

use super::response::response_allowing;
use crate::core::ident::RouterId;
use crate::core::state::State;

/// Request line + headers + the final CRLFCRLF.
pub const MAX_HEAD: usize = 8 * 1024;
/// Largest accepted `Content-Length`.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest accepted request target (path and query).
pub const MAX_TARGET: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// A complete, well-formed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The target without its query string, not percent-decoded.
    pub path: String,
    /// In arrival order, names lowercased, values trimmed; no name twice.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Nothing wrong so far; read more.
    Incomplete,
    Complete(Request),
    /// Answer this, then close.
    Reject(Reject),
}

/// What to answer a request that cannot be served. `reason` is a fixed text
/// (never request bytes), fit for logs and for the answer's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub reason: String,
}

impl Reject {
    /// The full answer: `reason` and a newline as a `text/plain` body.
    pub fn response(&self) -> Vec<u8> {
        // A 405 from here is a method this parser takes from nobody.
        response_allowing(
            self.status,
            "GET, POST",
            "text/plain; charset=utf-8",
            format!("{}\n", self.reason).as_bytes(),
        )
    }
}

fn reject(status: u16, reason: &str) -> Parsed {
    Parsed::Reject(Reject { status, reason: reason.to_owned() })
}

/// Parses everything received so far on one connection.
pub fn parse(buf: &[u8]) -> Parsed {
    // The head is judged on its first MAX_HEAD bytes only, so that a buffer
    // that long gets the same verdict however much more arrives.
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let mut pos = 0;
    let mut line_no = 0;
    let mut start: Option<StartLine> = None;
    let mut headers: Vec<(String, String)> = Vec::new();
    let head_end = loop {
        let line = match next_line(window, pos) {
            Line::Complete(end) => &window[pos..end],
            Line::Partial => {
                return if buf.len() >= MAX_HEAD {
                    reject(431, "request head larger than 8 KiB")
                } else {
                    Parsed::Incomplete
                };
            }
            Line::Bad(reason) => return reject(400, reason),
        };
        let next = pos + line.len() + 2;
        // next_line checked the bytes: ASCII controls other than HTAB are
        // out, and the line is valid UTF-8.
        let Ok(text) = std::str::from_utf8(line) else { return reject(400, "request head is not valid UTF-8") };
        line_no += 1;
        if line_no == 1 {
            match request_line(text) {
                Ok(s) => start = Some(s),
                Err(reject) => return Parsed::Reject(reject),
            }
        } else if text.is_empty() {
            break next;
        } else {
            match header_line(text) {
                Ok(h) => headers.push(h),
                Err(reason) => return reject(400, reason),
            }
        }
        pos = next;
    };
    let Some(start) = start else { return reject(400, "missing request line") };

    let mut names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return reject(400, "a header field is given twice");
    }
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    if find("transfer-encoding").is_some() {
        return reject(400, "Transfer-Encoding is not supported: send Content-Length");
    }
    if start.http11 && find("host").is_none() {
        return reject(400, "HTTP/1.1 request without Host");
    }
    if let Some(expect) = find("expect")
        && !expect.eq_ignore_ascii_case("100-continue")
    {
        return reject(417, "only 'Expect: 100-continue' is understood");
    }
    let body_len = match find("content-length") {
        None => 0,
        Some(v) if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) => {
            return reject(400, "Content-Length is not a decimal number");
        }
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n <= MAX_BODY as u64 => n as usize,
            _ => return reject(413, "body larger than 64 KiB"),
        },
    };

    let have = buf.len() - head_end;
    if have < body_len {
        return Parsed::Incomplete;
    }
    if have > body_len {
        return reject(400, "bytes after the request: one request per connection");
    }
    Parsed::Complete(Request { method: start.method, path: start.path, headers, body: buf[head_end..].to_vec() })
}

enum Line {
    /// The line ends at this index (where its CRLF starts).
    Complete(usize),
    /// No CRLF yet, and nothing wrong so far.
    Partial,
    Bad(&'static str),
}

/// Finds the CRLF ending the line that starts at `pos`, checking every byte
/// on the way (also those of an unfinished line, so that garbage is refused
/// before its line ends).
fn next_line(window: &[u8], pos: usize) -> Line {
    let rest = &window[pos..];
    for (i, &b) in rest.iter().enumerate() {
        match b {
            b'\r' => {
                return match rest.get(i + 1) {
                    Some(b'\n') => match std::str::from_utf8(&rest[..i]) {
                        Ok(_) => Line::Complete(pos + i),
                        Err(_) => Line::Bad("request head is not valid UTF-8"),
                    },
                    Some(_) => Line::Bad("CR not followed by LF"),
                    None => partial(&rest[..i]),
                };
            }
            b'\n' => return Line::Bad("bare LF: lines must end with CRLF"),
            b'\t' => {}
            0..=0x1f | 0x7f => return Line::Bad("control character in request head"),
            _ => {}
        }
    }
    partial(rest)
}

/// An unfinished line is refused only if its UTF-8 is already broken (not
/// merely cut in the middle of a character).
fn partial(bytes: &[u8]) -> Line {
    match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_some() => Line::Bad("request head is not valid UTF-8"),
        _ => Line::Partial,
    }
}

struct StartLine {
    method: Method,
    path: String,
    http11: bool,
}

fn request_line(line: &str) -> Result<StartLine, Reject> {
    let bad = |reason: &str| Reject { status: 400, reason: reason.to_owned() };
    if line.is_empty() {
        return Err(bad("empty line before the request line"));
    }
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Err(bad("request line is not 'METHOD TARGET HTTP/1.1'"));
    };
    if !is_token(method) {
        return Err(bad("malformed method"));
    }
    let http11 = match version.as_bytes() {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => {
            return Err(Reject { status: 505, reason: "only HTTP/1.1 and HTTP/1.0 are supported".to_owned() });
        }
        _ => return Err(bad("malformed HTTP version")),
    };
    if target.len() > MAX_TARGET {
        return Err(Reject { status: 414, reason: "request target longer than 1 KiB".to_owned() });
    }
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
        return Err(bad("request target must be a path: '/' then visible ASCII, no '#'"));
    }
    let method = match *method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        _ => return Err(Reject { status: 405, reason: "only GET and POST are allowed".to_owned() }),
    };
    let path = target.split_once('?').map_or(*target, |(p, _)| p);
    Ok(StartLine { method, path: path.to_owned(), http11 })
}

fn header_line(line: &str) -> Result<(String, String), &'static str> {
    if line.starts_with([' ', '\t']) {
        return Err("folded header line (obs-fold)");
    }
    let Some((name, value)) = line.split_once(':') else { return Err("header line without ':'") };
    if name.ends_with([' ', '\t']) {
        return Err("whitespace between header name and ':'");
    }
    if !is_token(name) {
        return Err("malformed header name");
    }
    Ok((name.to_ascii_lowercase(), value.trim_matches([' ', '\t']).to_owned()))
}

/// RFC 9110 token: one or more tchar.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_')
                || matches!(b, b'`' | b'|' | b'~')
        })
}

// ---------------------------------------------------------------------------
// The client side: the requests harouterd sends.

/// The exact request Neutron's agent expects, `Connection: close` so that one
/// connection carries one notification and its end is unambiguous. Both
/// values are typed: a [`RouterId`] is `[A-Za-z0-9][A-Za-z0-9._-]*` and a
/// [`State`] one of three words, so nothing can end a header line.
pub fn build_request(router_id: &RouterId, state: State) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Neutron-Router-Id: {router_id}\r\n\
         X-Neutron-State: {state}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The `GET` the `status` and `events` commands send.
pub fn get_request(path: &str, accept: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: harouterd\r\nAccept: {accept}\r\nConnection: close\r\n\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a case must give.
    #[derive(Debug)]
    enum Want {
        /// Complete, with this method, path, header count and body.
        Ok(Method, &'static str, usize, &'static [u8]),
        Incomplete,
        Status(u16),
    }
    use Want::*;

    const H: &str = "Host: x\r\n";

    fn cases() -> Vec<(&'static str, Vec<u8>, Want)> {
        let s = |t: &str| t.as_bytes().to_vec();
        let big_head = {
            let mut v = s("GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ");
            v.resize(MAX_HEAD, b'a');
            v
        };
        let exact_head = {
            // A head of exactly MAX_HEAD bytes is fine.
            let mut v = s("GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ");
            v.resize(MAX_HEAD - 4, b'a');
            v.extend_from_slice(b"\r\n\r\n");
            v
        };
        let long_target = format!("GET /{} HTTP/1.1\r\n{H}\r\n", "a".repeat(MAX_TARGET));
        let max_target = format!("GET /{} HTTP/1.1\r\n{H}\r\n", "a".repeat(MAX_TARGET - 1));
        let max_body = {
            let mut v = format!("POST / HTTP/1.1\r\n{H}Content-Length: {MAX_BODY}\r\n\r\n").into_bytes();
            v.resize(v.len() + MAX_BODY, b'z');
            v
        };
        vec![
            // --- good ---
            ("plain GET", s("GET /v1/routers HTTP/1.1\r\nHost: x\r\n\r\n"), Ok(Method::Get, "/v1/routers", 1, b"")),
            (
                "neutron POST",
                s("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Neutron-Router-Id: r1\r\nX-Neutron-State: primary\r\n\
                   Connection: close\r\nContent-Length: 0\r\n\r\n"),
                Ok(Method::Post, "/", 5, b""),
            ),
            ("POST without Content-Length", s("POST / HTTP/1.1\r\nHost: x\r\n\r\n"), Ok(Method::Post, "/", 1, b"")),
            (
                "POST with body",
                s("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"),
                Ok(Method::Post, "/x", 2, b"hello"),
            ),
            (
                "GET with body",
                s("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"),
                Ok(Method::Get, "/", 2, b"{}"),
            ),
            ("HTTP/1.0 without Host", s("GET /metrics HTTP/1.0\r\n\r\n"), Ok(Method::Get, "/metrics", 0, b"")),
            (
                "query dropped",
                s("GET /v1/routers?x=1&y HTTP/1.1\r\nHost: x\r\n\r\n"),
                Ok(Method::Get, "/v1/routers", 1, b""),
            ),
            ("empty query", s("GET /?  HTTP/1.1\r\n\r\n"), Status(400)),
            ("bare ? query", s("GET /? HTTP/1.1\r\nHost: x\r\n\r\n"), Ok(Method::Get, "/", 1, b"")),
            ("value trimmed", s("GET / HTTP/1.1\r\nHost:  \t x \t\r\n\r\n"), Ok(Method::Get, "/", 1, b"")),
            ("tab inside value", s("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\tb\r\n\r\n"), Ok(Method::Get, "/", 2, b"")),
            ("empty value", s("GET / HTTP/1.1\r\nHost: x\r\nX-Empty:\r\n\r\n"), Ok(Method::Get, "/", 2, b"")),
            (
                "UTF-8 value",
                s("GET / HTTP/1.1\r\nHost: x\r\nX-U: h\u{e9}\u{2028}\r\n\r\n"),
                Ok(Method::Get, "/", 2, b""),
            ),
            (
                "leading zeros",
                s("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 003\r\n\r\nabc"),
                Ok(Method::Post, "/", 2, b"abc"),
            ),
            (
                "binary body",
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n\0\r\n".to_vec(),
                Ok(Method::Post, "/", 2, b"\0\r\n"),
            ),
            (
                "expect 100-continue",
                s("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\n\r\n"),
                Ok(Method::Post, "/", 2, b""),
            ),
            (
                "odd token chars in name",
                s("GET / HTTP/1.1\r\nHost: x\r\nX!#$%&'*+.^_`|~-9: v\r\n\r\n"),
                Ok(Method::Get, "/", 2, b""),
            ),
            ("exactly MAX_HEAD", exact_head, Ok(Method::Get, "/", 2, b"")),
            ("target of MAX_TARGET", max_target.into_bytes(), Ok(Method::Get, "", 1, b"")),
            ("body of MAX_BODY", max_body, Ok(Method::Post, "/", 2, b"")),
            // --- incomplete ---
            ("empty", s(""), Incomplete),
            ("half request line", s("GET /v1"), Incomplete),
            ("no final CRLF", s("GET / HTTP/1.1\r\nHost: x\r\n"), Incomplete),
            ("CR pending", s("GET / HTTP/1.1\r\nHost: x\r\n\r"), Incomplete),
            ("body short", s("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel"), Incomplete),
            ("UTF-8 cut short", b"GET / HTTP/1.1\r\nX-U: \xc3".to_vec(), Incomplete),
            // --- request line ---
            ("unknown method", s("DELETE / HTTP/1.1\r\nHost: x\r\n\r\n"), Status(405)),
            ("HEAD", s("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"), Status(405)),
            ("lowercase get", s("get / HTTP/1.1\r\nHost: x\r\n\r\n"), Status(405)),
            ("method garbage", s("G(T / HTTP/1.1\r\nHost: x\r\n\r\n"), Status(400)),
            ("405 at end of line", s("PUT / HTTP/1.1\r\n"), Status(405)),
            ("HTTP/2.0", s("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), Status(505)),
            ("HTTP/0.9", s("GET / HTTP/0.9\r\n\r\n"), Status(505)),
            ("HTTP/1.10", s("GET / HTTP/1.10\r\nHost: x\r\n\r\n"), Status(400)),
            ("lowercase version", s("GET / http/1.1\r\nHost: x\r\n\r\n"), Status(400)),
            ("no version", s("GET /\r\nHost: x\r\n\r\n"), Status(400)),
            ("two spaces", s("GET  / HTTP/1.1\r\nHost: x\r\n\r\n"), Status(400)),
            ("trailing space", s("GET / HTTP/1.1 \r\nHost: x\r\n\r\n"), Status(400)),
            ("tab separator", s("GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n"), Status(400)),
            ("leading empty line", s("\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"), Status(400)),
            ("absolute-form", s("GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n"), Status(400)),
            ("asterisk-form", s("GET * HTTP/1.1\r\nHost: x\r\n\r\n"), Status(400)),
            ("fragment", s("GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n"), Status(400)),
            ("non-ASCII target", s("GET /\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n"), Status(400)),
            ("target too long", long_target.into_bytes(), Status(414)),
            // --- bytes and line endings ---
            ("bare LF request line", s("GET / HTTP/1.1\nHost: x\r\n\r\n"), Status(400)),
            ("bare LF header", s("GET / HTTP/1.1\r\nHost: x\n\r\n"), Status(400)),
            ("bare LF at end", s("GET / HTTP/1.1\r\nHost: x\r\n\n"), Status(400)),
            ("bare CR", s("GET / HTTP/1.1\r\nHost: x\rX\r\n\r\n"), Status(400)),
            ("NUL in target", b"GET /\0 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), Status(400)),
            ("NUL in value", b"GET / HTTP/1.1\r\nHost: x\0\r\n\r\n".to_vec(), Status(400)),
            ("NUL early", b"GET /\0".to_vec(), Status(400)),
            ("DEL in value", b"GET / HTTP/1.1\r\nHost: x\x7f\r\n\r\n".to_vec(), Status(400)),
            ("ESC in value", b"GET / HTTP/1.1\r\nHost: \x1b[2J\r\n\r\n".to_vec(), Status(400)),
            ("invalid UTF-8 value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \xff\r\n\r\n".to_vec(), Status(400)),
            ("invalid UTF-8 early", b"GET / HTTP/1.1\r\nX-A: \xc3\x28".to_vec(), Status(400)),
            // --- headers ---
            ("no Host on 1.1", s("GET / HTTP/1.1\r\n\r\n"), Status(400)),
            ("two Hosts", s("GET / HTTP/1.1\r\nHost: x\r\nhost: x\r\n\r\n"), Status(400)),
            (
                "duplicate other header",
                s("POST / HTTP/1.1\r\nHost: x\r\nX-Neutron-State: primary\r\nx-neutron-state: backup\r\n\r\n"),
                Status(400),
            ),
            ("space before colon", s("GET / HTTP/1.1\r\nHost : x\r\n\r\n"), Status(400)),
            ("tab before colon", s("GET / HTTP/1.1\r\nHost\t: x\r\n\r\n"), Status(400)),
            ("space in name", s("GET / HTTP/1.1\r\nX Y: x\r\nHost: x\r\n\r\n"), Status(400)),
            ("no colon", s("GET / HTTP/1.1\r\nHost: x\r\nJunk\r\n\r\n"), Status(400)),
            ("empty name", s("GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n"), Status(400)),
            ("obs-fold", s("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"), Status(400)),
            ("obs-fold tab", s("GET / HTTP/1.1\r\nHost: x\r\n\tX-A: a\r\n\r\n"), Status(400)),
            ("header name non-token", s("GET / HTTP/1.1\r\nHost: x\r\nX(A): a\r\n\r\n"), Status(400)),
            ("expect other", s("POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n"), Status(417)),
            ("head too large", big_head, Status(431)),
            // --- body framing ---
            (
                "Transfer-Encoding chunked",
                s("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                Status(400),
            ),
            (
                "Transfer-Encoding identity",
                s("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n"),
                Status(400),
            ),
            (
                "TE with CL",
                s("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc"),
                Status(400),
            ),
            (
                "two equal CL",
                s("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na"),
                Status(400),
            ),
            (
                "two different CL",
                s("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\nab"),
                Status(400),
            ),
            ("negative CL", s("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"), Status(400)),
            ("plus CL", s("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello"), Status(400)),
            ("space inside CL", s("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 0\r\n\r\n"), Status(400)),
            ("empty CL", s("POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n"), Status(400)),
            ("list CL", s("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1,1\r\n\r\na"), Status(400)),
            ("hex CL", s("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n"), Status(400)),
            ("CL too big", s("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n"), Status(413)),
            (
                "CL overflows u64",
                s("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
                Status(413),
            ),
            ("extra bytes after GET", s("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n"), Status(400)),
            ("extra bytes after body", s("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nab"), Status(400)),
            ("extra CRLF", s("GET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n"), Status(400)),
        ]
    }

    fn check(name: &str, input: &[u8], want: &Want) {
        let got = parse(input);
        match (want, &got) {
            (Ok(method, path, n_headers, body), Parsed::Complete(r)) => {
                assert_eq!(r.method, *method, "{name}");
                if !path.is_empty() {
                    assert_eq!(r.path, *path, "{name}");
                }
                assert_eq!(r.headers.len(), *n_headers, "{name}");
                if !body.is_empty() {
                    assert_eq!(r.body, *body, "{name}");
                }
            }
            (Incomplete, Parsed::Incomplete) => {}
            (Status(s), Parsed::Reject(r)) => assert_eq!(r.status, *s, "{name}: {}", r.reason),
            _ => panic!("{name}: want {want:?}, got {got:?}"),
        }
    }

    #[test]
    fn table() {
        let cases = cases();
        assert!(cases.len() >= 40);
        for (name, input, want) in &cases {
            check(name, input, want);
        }
    }

    /// The properties the module doc promises, for one input: no proper
    /// prefix of a Complete buffer is Complete; a Reject is final (every
    /// longer prefix has the same status); after a Complete prefix, every
    /// longer prefix is a 400.
    fn check_prefixes(name: &str, input: &[u8]) {
        let whole = parse(input);
        let mut settled: Option<Parsed> = None;
        for n in 0..input.len() {
            let got = parse(&input[..n]);
            match (&settled, &got) {
                (Some(Parsed::Reject(a)), Parsed::Reject(b)) => assert_eq!(a.status, b.status, "{name}: prefix {n}"),
                (Some(Parsed::Reject(_)), _) => panic!("{name}: prefix {n} gave {got:?} after a reject"),
                (Some(Parsed::Complete(_)), Parsed::Reject(r)) => assert_eq!(r.status, 400, "{name}: prefix {n}"),
                (Some(_), _) => panic!("{name}: prefix {n} gave {got:?} after a complete request"),
                (None, Parsed::Incomplete) => {}
                (None, _) => settled = Some(got),
            }
        }
        match (&settled, &whole) {
            (None, _) => {}
            (Some(Parsed::Reject(a)), Parsed::Reject(b)) => assert_eq!(a.status, b.status, "{name}"),
            (Some(Parsed::Complete(_)), Parsed::Reject(r)) => assert_eq!(r.status, 400, "{name}"),
            _ => panic!("{name}: whole gave {whole:?} after prefix gave {settled:?}"),
        }
    }

    #[test]
    fn valid_requests_are_incomplete_until_the_last_byte() {
        for (name, input, want) in cases() {
            if let Ok(..) = want {
                for n in 0..input.len() {
                    assert_eq!(parse(&input[..n]), Parsed::Incomplete, "{name}: prefix of {n} bytes");
                }
                assert!(matches!(parse(&input), Parsed::Complete(_)), "{name}");
            }
        }
    }

    #[test]
    fn no_prefix_of_a_bad_request_is_complete_unless_only_trailing_bytes_are_bad() {
        for (name, input, want) in cases() {
            check_prefixes(name, &input);
            if let Status(_) = want {
                let trailing_only = (0..input.len()).any(|n| matches!(parse(&input[..n]), Parsed::Complete(_)));
                // Only the cases whose fault is bytes after a complete
                // request have a complete prefix.
                assert_eq!(trailing_only, name.starts_with("extra "), "{name}");
            }
        }
    }

    #[test]
    fn head_limit_answers_at_once() {
        let mut v = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
        v.resize(MAX_HEAD - 1, b'a');
        assert_eq!(parse(&v), Parsed::Incomplete);
        v.push(b'a');
        assert!(matches!(parse(&v), Parsed::Reject(Reject { status: 431, .. })));
        // A head ending one byte too late is too large too.
        let mut v = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
        v.resize(MAX_HEAD - 3, b'a');
        v.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(parse(&v), Parsed::Reject(Reject { status: 431, .. })));
    }

    #[test]
    fn body_limit_answers_before_the_body() {
        let head = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        assert!(matches!(parse(head.as_bytes()), Parsed::Reject(Reject { status: 413, .. })));
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_names_are_lowercased() {
        let Parsed::Complete(r) =
            parse(b"POST / HTTP/1.1\r\nHOST: h\r\nX-Neutron-Router-Id: r1\r\nx-neutron-STATE:  master \r\n\r\n")
        else {
            panic!()
        };
        assert_eq!(r.header("x-neutron-router-id"), Some("r1"));
        assert_eq!(r.header("X-NEUTRON-STATE"), Some("master"));
        assert_eq!(r.header("Host"), Some("h"));
        assert_eq!(r.header("content-length"), None);
        assert_eq!(r.headers[1], ("x-neutron-router-id".to_owned(), "r1".to_owned()));
    }

    #[test]
    fn reject_reasons_never_echo_the_request() {
        for (name, input, _) in cases() {
            if let Parsed::Reject(r) = parse(&input) {
                assert!(r.reason.is_ascii() && !r.reason.bytes().any(|b| b.is_ascii_control()), "{name}");
                assert!(!r.reason.contains("X-Pad") && !r.reason.contains("chunked\r"), "{name}");
            }
        }
    }

    #[test]
    fn request_is_byte_exact() {
        let req = build_request(&RouterId::parse("r1").unwrap(), State::Primary);
        assert_eq!(
            req,
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Neutron-Router-Id: r1\r\nX-Neutron-State: primary\r\n\
              Connection: close\r\nContent-Length: 0\r\n\r\n"
                .to_vec()
        );
    }
}
