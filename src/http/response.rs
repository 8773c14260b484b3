//! HTTP answers: the server writes them ([`response`]), the clients read
//! their status line ([`parse_status_line`]). Pure.

/// A whole answer: status line, `Content-Type`, `Content-Length`,
/// `Connection: close`, then `body`. A 405 goes through
/// [`response_allowing`]: only its caller knows what is allowed.
pub fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    debug_assert!(status != 405, "a 405 says what is allowed: response_allowing");
    response_allowing(status, "", content_type, body)
}

/// [`response`], with `Allow: ALLOW` on a 405 (RFC 9110 requires it): the
/// methods the server, or the path asked for, accepts.
pub fn response_allowing(status: u16, allow: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    debug_assert!((100..=999).contains(&status), "status {status} is not three digits");
    debug_assert!(!content_type.bytes().any(|b| b.is_ascii_control()), "control byte in content type");
    debug_assert!(!allow.bytes().any(|b| b.is_ascii_control()), "control byte in Allow");
    let allow = if status == 405 { format!("Allow: {allow}\r\n") } else { String::new() };
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        reason_phrase(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The standard reason phrase (RFC 9110 names); empty for a status not
/// listed, which the status-line grammar allows.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A status line longer than this is garbage; it also bounds what is kept of
/// a response.
pub const MAX_STATUS_LINE: usize = 1024;

/// What the first bytes of a response say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusLine {
    /// Nothing wrong so far, but the line is not complete yet.
    Incomplete,
    Complete(u16),
    Invalid(String),
}

/// Parses `HTTP/1.0` or `HTTP/1.1`, one space, exactly three digits, then a
/// space and any reason phrase, or the end of the line (LF or CRLF).
///
/// `eof` says the peer closed: what was received is then all there is, so a
/// missing line terminator is forgiven but a truncated line is not. Without
/// `eof`, a prefix that can no longer become valid is rejected at once, so
/// garbage fails fast instead of waiting for the deadline.
pub fn parse_status_line(buf: &[u8], eof: bool) -> StatusLine {
    let (line, complete) = match buf.iter().position(|&b| b == b'\n') {
        Some(i) => (buf[..i].strip_suffix(b"\r").unwrap_or(&buf[..i]), true),
        None if eof => (buf, true),
        None => (buf, false),
    };
    if line.len() > MAX_STATUS_LINE {
        return StatusLine::Invalid(format!("status line longer than {MAX_STATUS_LINE} bytes"));
    }
    if complete && line.is_empty() {
        return StatusLine::Invalid(if eof && buf.is_empty() {
            "no status line".to_string()
        } else {
            "empty status line".to_string()
        });
    }
    // Positions 0..12 of "HTTP/1.x DDD" checked one by one so a prefix is
    // judged as soon as it is wrong.
    const VERSION: &[u8] = b"HTTP/1.";
    for (i, &b) in line.iter().enumerate().take(12) {
        let ok = match i {
            0..=6 => b == VERSION[i],
            7 => b == b'0' || b == b'1',
            8 => b == b' ',
            _ => b.is_ascii_digit(),
        };
        if !ok {
            return StatusLine::Invalid(format!(
                "not an HTTP/1.0 or HTTP/1.1 status line: '{}'",
                String::from_utf8_lossy(line).escape_debug()
            ));
        }
    }
    if line.len() < 12 || (line.len() == 12 && !complete) {
        return if complete {
            StatusLine::Invalid(format!("truncated status line: '{}'", String::from_utf8_lossy(line).escape_debug()))
        } else {
            StatusLine::Incomplete
        };
    }
    if line.len() > 12 && line[12] != b' ' {
        return StatusLine::Invalid(format!(
            "status code is not exactly 3 digits: '{}'",
            String::from_utf8_lossy(line).escape_debug()
        ));
    }
    if !complete {
        return StatusLine::Incomplete;
    }
    let code = line[9..12].iter().fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    StatusLine::Complete(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::Reject;

    #[test]
    fn response_format() {
        assert_eq!(
            response(200, "application/json", b"[]"),
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]"
        );
        assert_eq!(
            response_allowing(405, "GET", "text/plain", b""),
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\
              Allow: GET\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(response_allowing(200, "GET", "text/plain", b"x"), response(200, "text/plain", b"x"));
        let r = Reject { status: 431, reason: "too big".to_owned() };
        assert!(r.response().starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(r.response().ends_with(b"\r\n\r\ntoo big\n"));
        assert_eq!(reason_phrase(299), "");
        for s in [400, 403, 404, 405, 408, 413, 414, 417, 431, 505] {
            assert!(!reason_phrase(s).is_empty(), "{s}");
        }
    }

    #[test]
    fn status_line_accepts_both_versions_and_any_reason() {
        for (text, code) in [
            ("HTTP/1.1 200 OK\r\n", 200),
            ("HTTP/1.0 200 OK\r\n", 200),
            ("HTTP/1.1 200\r\n", 200),
            ("HTTP/1.1 200 OK\n", 200),
            ("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", 500),
            ("HTTP/1.1 404 \r\n", 404),
            ("HTTP/1.1 999 whatever it says\r\n", 999),
        ] {
            assert_eq!(parse_status_line(text.as_bytes(), false), StatusLine::Complete(code), "{text:?}");
            assert_eq!(parse_status_line(text.as_bytes(), true), StatusLine::Complete(code), "{text:?} at eof");
        }
    }

    #[test]
    fn status_line_waits_for_the_end_of_line() {
        for text in
            ["", "H", "HTTP/1.", "HTTP/1.1 ", "HTTP/1.1 20", "HTTP/1.1 200", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK\r"]
        {
            assert_eq!(parse_status_line(text.as_bytes(), false), StatusLine::Incomplete, "{text:?}");
        }
    }

    #[test]
    fn status_line_at_eof_forgives_only_a_missing_terminator() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK", true), StatusLine::Complete(200));
        assert_eq!(parse_status_line(b"HTTP/1.1 200", true), StatusLine::Complete(200));
        assert_eq!(parse_status_line(b"", true), StatusLine::Invalid("no status line".into()));
        for text in ["HTTP/1.1 20", "HTTP/1.1", "HTTP/1.1 ", "HTTP/1.1 200x"] {
            let parsed = parse_status_line(text.as_bytes(), true);
            assert!(matches!(parsed, StatusLine::Invalid(_)), "{text:?}: {parsed:?}");
        }
    }

    #[test]
    fn status_line_rejects_garbage_early() {
        for text in [
            "GARBAGE",
            "HTTP/2 200 OK\r\n",
            "HTTP/1.2 200 OK\r\n",
            "http/1.1 200 OK\r\n",
            "HTTP/1.1  200 OK\r\n",
            "HTTP/1.1 2000 OK\r\n",
            "HTTP/1.1 20 OK\r\n",
            "HTTP/1.1 2x0 OK\r\n",
            "HTTP/1.1 200OK\r\n",
            "HTTP/1.1 -20 OK\r\n",
            "\r\n",
            "\n",
            " HTTP/1.1 200 OK\r\n",
        ] {
            let parsed = parse_status_line(text.as_bytes(), false);
            assert!(matches!(parsed, StatusLine::Invalid(_)), "{text:?}: {parsed:?}");
        }
    }

    #[test]
    fn status_line_length_is_bounded() {
        let mut long = b"HTTP/1.1 200 ".to_vec();
        long.resize(MAX_STATUS_LINE + 1, b'x');
        assert!(matches!(parse_status_line(&long, false), StatusLine::Invalid(_)));
        long.truncate(MAX_STATUS_LINE);
        assert_eq!(parse_status_line(&long, false), StatusLine::Incomplete);
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse_status_line(&long, false), StatusLine::Complete(200));
    }
}
