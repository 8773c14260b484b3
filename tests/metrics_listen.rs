//! `metrics_listen` through the real daemon and a real TCP client on
//! 127.0.0.1 (issue 14.8): `GET /metrics` is served (200, Prometheus text),
//! and nothing else: another method 405 (`Allow: GET`), another path 404
//! (Neutron's `POST /` included: the router's state does not move),
//! garbage 400, an oversized head 431, a peer too slow 408, connections
//! past the cap closed at once (counted), while the control socket keeps
//! its own table and answers throughout.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;
use common::lab::wait_until;

const BIN: &str = env!("CARGO_BIN_EXE_harouterd");
const WITHIN: Duration = Duration::from_secs(20);
/// The control socket's (and the listener's) connection cap.
const MAX_CONNECTIONS: usize = 256;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `raw` on a new connection and reads the answer to EOF: status
/// line, whole text.
fn exchange(addr: SocketAddr, raw: &[u8]) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to metrics_listen");
    stream.set_read_timeout(Some(WITHIN)).unwrap();
    // A refused connection may be reset before this is written.
    let _ = stream.write_all(raw);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    (text.lines().next().unwrap_or_default().to_owned(), text)
}

fn get(addr: SocketAddr, path: &str) -> (String, String) {
    exchange(addr, format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
}

#[test]
fn metrics_listen_serves_get_metrics_and_nothing_else() {
    if !common::require_root_and(&[]) {
        return;
    }
    let dir = TempDir::new("metrics");
    let config = dir.join("h.conf");
    fs::write(
        &config,
        format!(
            "[daemon]\nstate_path = {}\nmetrics_listen = 127.0.0.1:0\n\
             [router r1]\nha_interface = lo\nvrid = 1\nkeepalived = false\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["run", "--foreground", "-c"])
        .arg(&config)
        .arg("--pidfile")
        .arg(dir.join("pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("log")).unwrap())
        .spawn()
        .unwrap();
    let _daemon = Running(child);
    let socket: PathBuf = dir.join("state/harouterd.sock");
    let router = || common::http_get(&socket, "/v1/routers/r1").1;
    assert!(wait_until(WITHIN, || router().contains("\"effective_state\":\"backup\"")).is_some(), "{}", router());
    let (_, daemon) = common::http_get(&socket, "/v1/daemon");
    let addr: SocketAddr = daemon
        .split("\"metrics_listen\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no metrics_listen in {daemon}"))
        .parse()
        .unwrap();
    let log = fs::read_to_string(dir.join("log")).unwrap();
    assert!(log.contains(&format!("serving GET /metrics on {addr} (metrics_listen)")), "{log}");
    let status = Command::new(BIN).args(["status", "--socket"]).arg(&socket).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.ends_with(&format!("; GET /metrics on {addr}\n")), "{status}");

    // A peer that never finishes its request: 408 after 5 s (it waits
    // while the rest is checked).
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /metr").unwrap();
    let slow_since = Instant::now();

    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{text}");
    assert!(text.contains("Content-Type: text/plain; version=0.0.4\r\n"), "{text}");
    assert!(text.contains("\nharouterd_router_state{router=\"r1\",state=\"backup\"} 1\n"), "{text}");
    assert!(text.contains("\nharouterd_transitions_total{router=\"r1\"} 1\n"), "{text}");

    for path in ["/", "/v1/routers", "/v1/routers/r1", "/v1/events", "/v1/daemon", "/metrics/x"] {
        let (status, text) = get(addr, path);
        assert_eq!(status, "HTTP/1.1 404 Not Found", "{path}: {text}");
        assert!(!text.contains("\"id\""), "{path} leaked router details: {text}");
    }
    for method in ["POST", "HEAD", "PUT", "DELETE"] {
        let (status, text) =
            exchange(addr, format!("{method} /metrics HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").as_bytes());
        assert_eq!(status, "HTTP/1.1 405 Method Not Allowed", "{method}: {text}");
        assert!(text.contains("\r\nAllow: GET\r\n"), "{method}: {text}");
    }

    // Neutron's state change, as root would send it on the control socket:
    // not served here, and the router does not move.
    let post = "POST / HTTP/1.1\r\nHost: h\r\nX-Neutron-Router-Id: r1\r\nX-Neutron-State: primary\r\nContent-Length: 0\r\n\r\n";
    let (status, _) = exchange(addr, post.as_bytes());
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let post_metrics = post.replacen("POST / ", "POST /metrics ", 1);
    let (status, _) = exchange(addr, post_metrics.as_bytes());
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    // (A posted state is applied before the answer goes out, so by now it
    // would show.)
    let now = router();
    assert!(now.contains("\"state\":\"backup\",\"effective_state\":\"backup\""), "{now}");
    assert!(now.contains("\"transitions\":1,"), "{now}");
    assert_eq!(fs::read_to_string(dir.join("state/ha_confs/r1/state")).unwrap(), "backup");

    // Garbage and oversized heads.
    for (what, raw, want) in [
        ("a TLS hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(), "HTTP/1.1 400 Bad Request"),
        ("no Host", b"GET /metrics HTTP/1.1\r\n\r\n".to_vec(), "HTTP/1.1 400 Bad Request"),
        ("bare LF", b"GET /metrics HTTP/1.1\nHost: h\n\n".to_vec(), "HTTP/1.1 400 Bad Request"),
        (
            "a 9 KiB head",
            format!("GET /metrics HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n", "a".repeat(9 * 1024)).into_bytes(),
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
    ] {
        let (status, text) = exchange(addr, &raw);
        assert_eq!(status, want, "{what}: {text}");
    }

    // The cap: with the table full (the slow peer and 255 more idle ones),
    // one more connection is closed at once, unanswered; the control socket
    // is not affected.
    let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS - 1).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Each accepted one is registered before the next accept: once the
    // 256th is in, the next is refused.
    let refused = || {
        let (_, m) = common::http_get(&socket, "/metrics");
        m.lines().find_map(|l| l.strip_prefix("harouterd_metrics_refused_total ")).map(str::to_owned)
    };
    let (status, text) = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((status.as_str(), text.as_str()), ("", ""), "one past the cap is closed unanswered");
    assert_eq!(refused().as_deref(), Some("1"));
    assert_eq!(common::http_get(&socket, "/v1/routers").0, Some(200), "the control socket has its own table");
    drop(idle);
    assert!(
        wait_until(WITHIN, || get(addr, "/metrics").0 == "HTTP/1.1 200 OK").is_some(),
        "slots come back once the idle peers leave"
    );

    slow.set_read_timeout(Some(WITHIN)).unwrap();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    let took = slow_since.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer}");
    assert!(took >= Duration::from_millis(4900), "408 after the 5 s deadline, not {took:?}");
}
