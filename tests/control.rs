//! The control socket of a real daemon (SPEC section 3.6): every row of the
//! table over the real socket, peers of other uids, live events, the
//! `status` and `events` commands, and a table of hostile requests after
//! which the daemon must still answer correctly with no router moved.
//!
//! The routers are monitor-only (`keepalived = false`) in a namespace the
//! test owns, so their state is whatever the test puts on the interfaces.

mod common;

use std::io::{BufRead, BufReader, Read, Write};

use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;
use common::lab::{Lab, RouterSpec, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_harouterd");

/// r1 (VIP present: primary) and r2 (absent: backup), both monitor-only in
/// one namespace; uid 65533 may POST. Started, the socket answering and r1
/// primary.
fn start(tag: &str) -> Lab {
    let routers = vec![
        RouterSpec::monitor_only("r1", 1).in_namespace("ctl").with_ha_interface("ha-a"),
        RouterSpec::monitor_only("r2", 2).in_namespace("ctl").with_ha_interface("ha-b"),
    ];
    let lab = Lab::plain(tag, &["node"], routers, &["socket_mode = 0666", "allowed_uids = 65533"]);
    lab.ns(0, "r1").ip(&["addr", "add", "169.254.0.1/24", "dev", "ha-a"]);
    lab.nodes[0].start();
    wait(&lab, "the socket answers and r1 is primary", || {
        get(&lab.nodes[0].socket(), "/v1/routers/r1").1.contains("\"effective_state\":\"primary\"")
    });
    lab
}

/// Waits up to 10 s for `done`; panics with the daemon's log.
fn wait(lab: &Lab, what: &str, done: impl FnMut() -> bool) {
    if wait_until(Duration::from_secs(10), done).is_none() {
        panic!("timed out waiting for {what}\nlog:\n{}", lab.nodes[0].log_text());
    }
}

/// Sends raw bytes, half-closes, and reads the answer to EOF: the status
/// (None when the daemon closed without answering) and the body.
fn exchange(socket: &PathBuf, raw: &[u8]) -> (Option<u16>, String) {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = stream.write_all(raw);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    parse_answer(&answer)
}

fn parse_answer(answer: &[u8]) -> (Option<u16>, String) {
    let text = String::from_utf8_lossy(answer).into_owned();
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3)).and_then(|c| c.parse().ok());
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn get(socket: &PathBuf, path: &str) -> (Option<u16>, String) {
    if !socket.exists() {
        return (None, String::new());
    }
    match UnixStream::connect(socket) {
        Ok(_) => exchange(socket, format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes()),
        Err(_) => (None, String::new()),
    }
}

fn post(socket: &PathBuf, router: &str, state: &str) -> (Option<u16>, String) {
    let raw = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Neutron-Router-Id: {router}\r\nX-Neutron-State: {state}\r\n\
         Connection: close\r\nContent-Length: 0\r\n\r\n"
    );
    exchange(socket, raw.as_bytes())
}

/// Parses `text` with Python's json module and prints it back compactly:
/// an independent check that the daemon's hand-written JSON is JSON.
fn python_json(text: &str, expr: &str) -> String {
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", &format!("import json,sys; d=json.load(sys.stdin); print({expr})")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "not JSON: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// POST / with curl as another uid, the way Neutron's shell monitor sends.
fn curl_post_as(uid: u32, socket: &PathBuf, router: &str, state: &str) -> String {
    let out = Command::new("/usr/bin/curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "--unix-socket"])
        .arg(socket)
        .args(["-H", &format!("X-Neutron-Router-Id: {router}"), "-H", &format!("X-Neutron-State: {state}")])
        .args(["-H", "Connection: close", "http://127.0.0.1/"])
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn needs_root() -> bool {
    common::require_root_and(&["ip", "curl"])
}

#[test]
fn every_endpoint_over_the_real_socket() {
    if !needs_root() {
        return;
    }
    let lab = start("ctl");
    let s = lab.nodes[0].socket();

    let (status, body) = get(&s, "/v1/routers");
    assert_eq!(status, Some(200));
    assert_eq!(
        python_json(&body, "[(r['id'], r['state'], r['effective_state']) for r in d]"),
        "[('r1', 'primary', 'primary'), ('r2', 'backup', 'backup')]"
    );
    let (status, body) = get(&s, "/v1/routers/r2");
    assert_eq!(status, Some(200));
    assert_eq!(
        python_json(&body, "(d['id'], d['namespace'], d['keepalived'], d['keepalived_pid'])"),
        format!("('r2', '{}', False, None)", lab.ns(0, "r2").name())
    );
    assert_eq!(get(&s, "/v1/routers/nope").0, Some(404));
    assert_eq!(get(&s, "/v1/nothing").0, Some(404));
    let (status, metrics) = get(&s, "/metrics");
    assert_eq!(status, Some(200));
    assert!(metrics.contains("harouterd_router_state{router=\"r1\",state=\"primary\"} 1\n"), "{metrics}");
    assert!(metrics.contains("# TYPE harouterd_transitions_total counter"), "{metrics}");

    // Neutron's POST: fed in as a raw change.
    assert_eq!(post(&s, "r2", "fault").0, Some(200));
    assert!(get(&s, "/v1/routers/r2").1.contains("\"effective_state\":\"fault\""));
    // The state file follows within the same loop pass or the next.
    wait(&lab, "r2's state file says fault", || lab.nodes[0].state("r2").is_some_and(|s| s == "fault"));
    assert_eq!(post(&s, "r2", "master").0, Some(200), "Neutron's 'master' is 'primary'");
    wait(&lab, "r2 primary after advert_int", || {
        get(&s, "/v1/routers/r2").1.contains("\"effective_state\":\"primary\"")
    });
    assert_eq!(post(&s, "r2", "backup").0, Some(200));
    assert_eq!(post(&s, "nope", "backup").0, Some(404));
    assert_eq!(post(&s, "r2", "sideways").0, Some(400));
    assert_eq!(post(&s, "../r2", "backup").0, Some(400));
    assert_eq!(exchange(&s, b"POST / HTTP/1.1\r\nHost: h\r\nX-Neutron-State: backup\r\n\r\n").0, Some(400));
    assert_eq!(exchange(&s, b"GET /v1/routers HTTP/1.1\r\n\r\n").0, Some(400), "HTTP/1.1 requires Host");

    // Peers are told apart by SO_PEERCRED.
    assert_eq!(curl_post_as(65534, &s, "r2", "fault"), "403");
    assert!(get(&s, "/v1/routers/r2").1.contains("\"effective_state\":\"backup\""), "a 403 must change nothing");
    assert_eq!(curl_post_as(65533, &s, "r2", "fault"), "200", "allowed_uids may post");
    assert_eq!(post(&s, "r2", "backup").0, Some(200));
    // Reads are for anyone who can open the socket.
    let out = Command::new("/usr/bin/curl")
        .args(["-s", "--unix-socket"])
        .arg(&s)
        .arg("http://127.0.0.1/v1/routers/r1")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"id\":\"r1\""));

    // The status command, table and JSON.
    let out = Command::new(BIN).args(["status", "--socket"]).arg(&s).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ROUTER") && lines[0].contains("EFFECTIVE") && lines[0].contains("LAST ERROR"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("r1 ") && lines[1].contains("primary") && lines[1].contains("monitor-only"),
        "{table}"
    );
    assert!(lines[2].starts_with("r2 ") && lines[2].contains("backup"), "{table}");
    let out = Command::new(BIN).args(["status", "--json", "--socket"]).arg(&s).output().unwrap();
    assert_eq!(python_json(&String::from_utf8(out.stdout).unwrap(), "len(d)"), "2");
    let config = &lab.nodes[0].config;
    let out = Command::new(BIN).args(["status", "-c"]).arg(config).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("r2"));
}

#[test]
fn status_and_events_without_a_daemon_fail_clearly() {
    let dir = TempDir::new("ctlnone");
    for command in ["status", "events"] {
        let out = Command::new(BIN).args([command, "--socket"]).arg(dir.join("none.sock")).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{command}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot connect to") && err.contains("none.sock") && err.contains("is harouterd running?"),
            "{err}"
        );
    }
}

fn subscribe(socket: &std::path::Path, accept: &str) -> BufReader<UnixStream> {
    common::subscribe_events(socket, accept, Duration::from_secs(10))
}

#[test]
fn events_reach_every_subscriber_in_order_and_slow_ones_are_dropped() {
    if !needs_root() {
        return;
    }
    let lab = start("ctle");
    let s = lab.nodes[0].socket();
    let mut json_sub = subscribe(&s, "application/json");
    let mut text_sub = subscribe(&s, "text/plain");
    let mut cli = Command::new(BIN).args(["events", "--socket"]).arg(&s).stdout(Stdio::piped()).spawn().unwrap();
    // A subscriber that never reads an event: subscribed once its head came.
    let mut stuck = subscribe(&s, "application/json").into_inner();

    // A real address change: r2 becomes primary after advert_int.
    lab.ns(0, "r2").ip(&["addr", "add", "169.254.0.2/24", "dev", "ha-b"]);
    let mut line = String::new();
    json_sub.read_line(&mut line).unwrap();
    let first = python_json(&line, "(d['router'], d['previous'], d['state'], d['seq'])");
    assert!(first.starts_with("('r2', 'backup', 'primary', "), "{first}");
    let first_seq: u64 = first.trim_end_matches(')').rsplit(", ").next().unwrap().parse().unwrap();
    let mut text = String::new();
    text_sub.read_line(&mut text).unwrap();
    assert!(text.ends_with(" r2 backup -> primary\n"), "{text}");
    let mut cli_out = BufReader::new(cli.stdout.take().unwrap());
    let mut cli_line = String::new();
    cli_out.read_line(&mut cli_line).unwrap();
    assert_eq!(cli_line, text, "`harouterd events` prints the text form");

    // Thousands of immediate changes (fault/backup alternate): the reading
    // subscriber sees every one, in order; the stuck one is dropped.
    let n: u64 = 6000;
    let reader = std::thread::spawn(move || {
        let mut seqs = Vec::new();
        let mut line = String::new();
        for _ in 0..n {
            line.clear();
            if json_sub.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            seqs.push(python_json_seq(&line));
        }
        seqs
    });
    for i in 0..n {
        assert_eq!(post(&s, "r1", if i % 2 == 0 { "fault" } else { "backup" }).0, Some(200));
    }
    let seqs = reader.join().unwrap();
    let expected: Vec<u64> = (first_seq + 1..=first_seq + n).collect();
    assert!(seqs == expected, "events lost or reordered: got {} events, first {:?}", seqs.len(), seqs.first());
    let (_, metrics) = get(&s, "/metrics");
    assert!(metrics.contains(&format!("harouterd_events_total {}", first_seq + n)), "{metrics}");
    let log = lab.nodes[0].log_text();
    assert!(log.contains("dropping an events subscriber that does not keep up"), "{log}");
    stuck.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = Vec::new();
    let _ = stuck.read_to_end(&mut sink);
    assert!(sink.len() < 1024 * 1024, "a dropped subscriber's stream must end");
    let _ = cli.kill();
    let _ = cli.wait();
}

/// The `seq` of a JSON event line, without spawning Python 6000 times
/// (the shape was checked with Python above).
fn python_json_seq(line: &str) -> u64 {
    let rest = line.strip_prefix("{\"seq\":").unwrap_or_else(|| panic!("not an event: {line}"));
    rest[..rest.find(',').unwrap()].parse().unwrap()
}

/// The flood below opens 1000 sockets: more than the usual soft limit.
fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(8192);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// Adds `Host:` after a well-formed HTTP/1.1 request line, so that each
/// case is refused for its own flaw, not for the missing Host header.
fn with_host(raw: &[u8]) -> Vec<u8> {
    let marker = b"HTTP/1.1\r\n";
    match raw.windows(marker.len()).position(|w| w == marker) {
        Some(i) => [&raw[..i + marker.len()], b"Host: h\r\n", &raw[i + marker.len()..]].concat(),
        None => raw.to_vec(),
    }
}

/// What a hostile request must get: a status, or the connection closed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Status(u16),
    /// Any 4xx.
    ClientError,
}

#[test]
fn hostile_requests_get_4xx_and_change_nothing() {
    if !needs_root() {
        return;
    }
    raise_fd_limit();
    let lab = start("ctlh");
    let s = lab.nodes[0].socket();
    let before = get(&s, "/v1/routers").1;

    let big_head = format!("GET /v1/routers HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(9000));
    let many_headers = format!("GET /v1/routers HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(2000));
    let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(2000));
    let big_body = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", 65 * 1024);
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("no CRLF", b"GET /v1/routers HTTP/1.1\n\n".to_vec(), Expect::Status(400)),
        ("bare CR", b"GET /v1/routers HTTP/1.1\r\rHost: x\r\n\r\n".to_vec(), Expect::Status(400)),
        ("head over 8 KiB", big_head.into_bytes(), Expect::Status(431)),
        ("thousands of headers", many_headers.into_bytes(), Expect::Status(431)),
        ("NUL in the request line", b"GET /v1/rou\0ters HTTP/1.1\r\n\r\n".to_vec(), Expect::Status(400)),
        ("NUL in a header", b"GET / HTTP/1.1\r\nX-A: b\0c\r\n\r\n".to_vec(), Expect::Status(400)),
        ("invalid UTF-8", b"GET /v1/routers HTTP/1.1\r\nX-A: \xff\xfe\r\n\r\n".to_vec(), Expect::Status(400)),
        ("header without colon", b"GET /v1/routers HTTP/1.1\r\nNoColonHere\r\n\r\n".to_vec(), Expect::Status(400)),
        ("space before colon", b"GET /v1/routers HTTP/1.1\r\nHost : x\r\n\r\n".to_vec(), Expect::Status(400)),
        ("obs-fold", b"GET /v1/routers HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n".to_vec(), Expect::Status(400)),
        (
            "duplicate Content-Length",
            b"POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n".to_vec(),
            Expect::Status(400),
        ),
        (
            "conflicting Content-Length",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(),
            Expect::Status(400),
        ),
        ("negative Content-Length", b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(), Expect::Status(400)),
        ("signed Content-Length", b"POST / HTTP/1.1\r\nContent-Length: +0\r\n\r\n".to_vec(), Expect::Status(400)),
        (
            "huge Content-Length",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(),
            Expect::ClientError,
        ),
        ("body over 64 KiB", big_body.into_bytes(), Expect::Status(413)),
        ("chunked", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), Expect::Status(400)),
        (
            "chunked and length",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            Expect::Status(400),
        ),
        (
            "pipelined",
            b"GET /v1/routers HTTP/1.1\r\n\r\nGET /v1/routers HTTP/1.1\r\n\r\n".to_vec(),
            Expect::Status(400),
        ),
        (
            "smuggled after body",
            b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n".to_vec(),
            Expect::Status(400),
        ),
        ("unknown method", b"DELETE /v1/routers HTTP/1.1\r\n\r\n".to_vec(), Expect::Status(405)),
        ("lowercase method", b"get /v1/routers HTTP/1.1\r\n\r\n".to_vec(), Expect::ClientError),
        ("HTTP/2", b"GET /v1/routers HTTP/2.0\r\n\r\n".to_vec(), Expect::Status(505)),
        ("HTTP/0.9 style", b"GET /v1/routers\r\n\r\n".to_vec(), Expect::Status(400)),
        ("absolute URI", b"GET http://x/v1/routers HTTP/1.1\r\n\r\n".to_vec(), Expect::Status(400)),
        ("target too long", long_target.into_bytes(), Expect::Status(414)),
        ("router id with a slash", b"GET /v1/routers/a/b HTTP/1.1\r\n\r\n".to_vec(), Expect::ClientError),
        ("router id ..", b"GET /v1/routers/.. HTTP/1.1\r\n\r\n".to_vec(), Expect::ClientError),
        ("router id ../etc/passwd", b"GET /v1/routers/../../etc/passwd HTTP/1.1\r\n\r\n".to_vec(), Expect::ClientError),
        (
            "POST router id traversal",
            b"POST / HTTP/1.1\r\nX-Neutron-Router-Id: ../r1\r\nX-Neutron-State: backup\r\n\r\n".to_vec(),
            Expect::Status(400),
        ),
        ("POST without headers", b"POST / HTTP/1.1\r\n\r\n".to_vec(), Expect::Status(400)),
        (
            "POST bad state",
            b"POST / HTTP/1.1\r\nX-Neutron-Router-Id: r1\r\nX-Neutron-State: MASTER\r\n\r\n".to_vec(),
            Expect::Status(400),
        ),
        ("POST to a read path", b"POST /v1/routers HTTP/1.1\r\n\r\n".to_vec(), Expect::Status(405)),
        ("GET on POST path", b"GET / HTTP/1.1\r\n\r\n".to_vec(), Expect::Status(405)),
        ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), Expect::Status(400)),
        ("empty request line", b"\r\n\r\n".to_vec(), Expect::Status(400)),
    ];
    assert!(cases.len() >= 30);
    for (name, raw, expect) in &cases {
        let (status, body) = exchange(&s, &with_host(raw));
        match (expect, status) {
            (Expect::Status(want), Some(got)) => assert_eq!(got, *want, "{name}: body {body}"),
            (Expect::ClientError, Some(got)) => assert!((400..500).contains(&got), "{name}: got {got}"),
            (_, None) => panic!("{name}: closed without an answer"),
        }
    }
    // A 405 names what the path takes (RFC 9110), not what the socket does.
    for (raw, allow) in [
        (&b"POST /v1/routers HTTP/1.1\r\n\r\n"[..], "GET"),
        (b"GET / HTTP/1.1\r\n\r\n", "POST"),
        (b"DELETE /v1/routers HTTP/1.1\r\n\r\n", "GET, POST"),
    ] {
        let mut stream = UnixStream::connect(&s).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(&with_host(raw)).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let head = answer.split("\r\n\r\n").next().unwrap_or_default();
        let allows: Vec<&str> = head.lines().filter_map(|l| l.strip_prefix("Allow: ")).collect();
        assert_eq!(allows, [allow], "{head}");
    }

    // Slow and silent peers get 408 after 5 s; both run at once. Both are
    // connected before the flood below: the daemon accepts in connect
    // order, and one connecting behind the flood would be refused.
    let (connected, both_connected) = std::sync::mpsc::channel();
    let silent = std::thread::spawn({
        let s = s.clone();
        let connected = connected.clone();
        move || {
            let mut stream = UnixStream::connect(&s).unwrap();
            connected.send(()).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let start = Instant::now();
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            (parse_answer(&answer).0, start.elapsed())
        }
    });
    let trickle = std::thread::spawn({
        let s = s.clone();
        move || {
            let mut stream = UnixStream::connect(&s).unwrap();
            connected.send(()).unwrap();
            stream.set_read_timeout(Some(Duration::from_millis(1000))).unwrap();
            let mut answer = Vec::new();
            for byte in b"GET /v1/routers HTTP/1.1\r\nHost: h\r\n\r\n" {
                if stream.write_all(&[*byte]).is_err() {
                    break;
                }
                let mut buf = [0u8; 1024];
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        answer.extend_from_slice(&buf[..n]);
                        break;
                    }
                    Err(_) => {}
                }
            }
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = stream.read_to_end(&mut answer);
            parse_answer(&answer).0
        }
    });

    for _ in 0..2 {
        both_connected.recv_timeout(Duration::from_secs(10)).expect("silent and trickle peers connect");
    }

    // 1000 connections at once: at most 256 are served, the rest closed,
    // and the daemon keeps answering.
    let mut held = Vec::new();
    for _ in 0..1000 {
        match UnixStream::connect(&s) {
            Ok(c) => held.push(c),
            Err(e) => panic!("connect failed: {e}"),
        }
    }
    // The daemon closes each connection it refuses: wait for all of them.
    for c in &held {
        c.set_nonblocking(true).unwrap();
    }
    let closed = |c: &UnixStream| matches!((&*c).read(&mut [0u8; 1]), Ok(0));
    wait(&lab, "the connections over the cap refused", || held.iter().filter(|c| closed(c)).count() >= 1000 - 256 - 1);
    drop(held);
    let mut answered = (None, String::new());
    wait(&lab, "an answer once the flood is gone", || {
        answered = get(&s, "/metrics");
        answered.0.is_some()
    });
    let (status, metrics) = answered;
    assert_eq!(status, Some(200), "the daemon must answer once the flood is gone");
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("harouterd_control_refused_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(refused >= 1000 - 256 - 1, "refused {refused}");

    let (silent_status, waited) = silent.join().unwrap();
    assert_eq!(silent_status, Some(408));
    assert!(waited >= Duration::from_millis(4500) && waited < Duration::from_secs(8), "{waited:?}");
    assert_eq!(trickle.join().unwrap(), Some(408));

    // After all of it: correct answers, and no router moved.
    let (status, after) = get(&s, "/v1/routers");
    assert_eq!(status, Some(200));
    assert_eq!(after, before, "a hostile request changed router state");
    assert_eq!(post(&s, "r2", "backup").0, Some(200));
}
