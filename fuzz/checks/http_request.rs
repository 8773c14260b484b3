//! The invariants of the `http_request` fuzz target, shared with the main
//! crate's `tests/fuzz_regressions.rs` (which includes this file by path),
//! so every seed and every past crash is checked by `cargo test` too.
//!
//! Input: two bytes choosing a cut point, then the bytes a peer sent. The
//! request parser is run on the whole and on the part before the cut, and
//! held to the properties its module doc promises.

use harouterd::http::request::{MAX_BODY, MAX_HEAD, Method, Parsed, parse};
use harouterd::http::response::{reason_phrase, response};

pub fn check(input: &[u8]) {
    let (cut, data) = match input {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])) % (rest.len() + 1), rest),
        _ => (0, input),
    };
    let whole = parse(data);
    check_verdict(data, &whole);
    let prefix = parse(&data[..cut]);
    check_verdict(&data[..cut], &prefix);
    match (&prefix, &whole) {
        // Incomplete promises nothing about what follows.
        (Parsed::Incomplete, _) => {}
        // A reject is final: more bytes never change the status.
        (Parsed::Reject(a), Parsed::Reject(b)) => assert_eq!(a.status, b.status, "reject changed"),
        (Parsed::Reject(_), other) => panic!("prefix rejected, whole gave {other:?}"),
        // After a complete request, more bytes are smuggling: 400.
        (Parsed::Complete(a), Parsed::Complete(b)) => {
            assert_eq!(cut, data.len(), "a proper prefix was complete");
            assert_eq!(a, b);
        }
        (Parsed::Complete(_), Parsed::Reject(r)) => assert_eq!(r.status, 400),
        (Parsed::Complete(_), Parsed::Incomplete) => panic!("complete prefix, incomplete whole"),
    }
}

fn check_verdict(data: &[u8], verdict: &Parsed) {
    match verdict {
        Parsed::Incomplete => {
            // Incomplete never holds a whole head of MAX_HEAD bytes or more
            // that has no end: that is a 431.
            if data.len() >= MAX_HEAD {
                assert!(find(&data[..MAX_HEAD], b"\r\n\r\n").is_some(), "Incomplete with an endless 8 KiB head");
            }
        }
        Parsed::Reject(r) => {
            assert!([400, 405, 413, 414, 417, 431, 505].contains(&r.status), "status {}", r.status);
            assert!(!reason_phrase(r.status).is_empty());
            assert!(r.reason.is_ascii() && !r.reason.bytes().any(|b| b.is_ascii_control()), "reason {:?}", r.reason);
            let answer = r.response();
            assert!(answer.starts_with(format!("HTTP/1.1 {} ", r.status).as_bytes()));
        }
        Parsed::Complete(req) => {
            let head_len = data.len() - req.body.len();
            assert!(head_len <= MAX_HEAD, "head of {head_len} bytes");
            assert!(data[..head_len].ends_with(b"\r\n\r\n"));
            assert_eq!(find(&data[..head_len], b"\r\n\r\n"), Some(head_len - 4), "head ends at its first CRLFCRLF");
            assert_eq!(&data[head_len..], &req.body[..]);
            assert!(req.body.len() <= MAX_BODY);
            let declared = req.header("content-length").map(|v| v.parse::<usize>().expect("a checked length"));
            assert_eq!(declared.unwrap_or(0), req.body.len(), "body length is Content-Length");
            assert!(req.header("transfer-encoding").is_none());
            let head = std::str::from_utf8(&data[..head_len]).expect("a complete head is UTF-8");
            assert!(!head.bytes().any(|b| b.is_ascii_control() && b != b'\t' && b != b'\r' && b != b'\n'));
            assert!(head.starts_with(match req.method {
                Method::Get => "GET /",
                Method::Post => "POST /",
            }));
            assert!(req.path.starts_with('/') && !req.path.contains(['?', '#']));
            assert!(req.path.bytes().all(|b| b.is_ascii_graphic()));
            let mut names: Vec<&str> = req.headers.iter().map(|(n, _)| n.as_str()).collect();
            names.sort_unstable();
            assert!(names.windows(2).all(|w| w[0] != w[1]), "duplicate header");
            for (name, value) in &req.headers {
                assert!(!name.is_empty() && !name.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii_graphic()));
                assert!(!name.contains(':'));
                assert!(!value.starts_with([' ', '\t']) && !value.ends_with([' ', '\t']));
                assert!(!value.chars().any(|c| c.is_ascii_control() && c != '\t'));
            }
            // Written back out, the request parses to the same thing.
            let version = if head.split("\r\n").next().unwrap().ends_with("HTTP/1.0") { "1.0" } else { "1.1" };
            let mut again = format!("{} {} HTTP/{version}\r\n", req.method.as_str(), req.path).into_bytes();
            for (name, value) in &req.headers {
                again.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            again.extend_from_slice(b"\r\n");
            if again.len() <= MAX_HEAD {
                again.extend_from_slice(&req.body);
                assert_eq!(parse(&again), Parsed::Complete(req.clone()), "re-serialised request differs");
            }
            let _ = response(200, "application/json", &req.body);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
