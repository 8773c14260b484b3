//! What the daemon must never wait for on the way from a change to its
//! notification, or from a request to its answer (issue 13), each shown
//! with the real binary, real keepalived and real sockets, the slow part
//! made slow for real:
//! - the state file's sync: `fdatasync` delayed 3 s by strace's syscall
//!   fault injection; a change right after another is still notified at
//!   once (the sync waits for quiet time);
//! - a child's `exec`: every keepalived's exec held by a file lease on the
//!   program (the kernel blocks an open for exec of a leased file until
//!   the lease goes); the daemon still answers, with start-up inside the
//!   loop and at most [`keepalived_starting_max`] keepalived starting;
//! - an exec that fails after `spawn` returned: still a failed start with
//!   a backoff and the errno, never a death respawned at once.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::lab::{Lab, RouterSpec, ms, wait_for, wait_until};
use harouterd::daemon::keepalived_starting_max;

const SEC: Duration = Duration::from_secs(1);

/// A router's row of GET /v1/routers: id, keepalived pid, raw state.
type Row = (String, Option<u32>, Option<String>);

/// The rows of GET /v1/routers, from the JSON (the one parser this needs:
/// our own answer's fixed layout).
fn rows(socket: &Path) -> Option<Vec<Row>> {
    let (status, body) = common::http_get(socket, "/v1/routers");
    if status != Some(200) {
        return None;
    }
    let field = |obj: &str, key: &str| -> Option<String> {
        let at = obj.find(&format!("\"{key}\":"))? + key.len() + 3;
        let rest = &obj[at..];
        let value = rest.split([',', '}']).next()?;
        (value != "null").then(|| value.trim_matches('"').to_owned())
    };
    Some(
        body.split("},{")
            .filter_map(|obj| {
                let id = field(obj, "id")?;
                Some((id, field(obj, "keepalived_pid").and_then(|p| p.parse().ok()), field(obj, "state")))
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// The state file's sync is not between a change and the next one's
// notification.

/// strace attached to `pid`, delaying every `fdatasync`/`fsync` by
/// `delay`; detached (killed) when dropped.
struct SlowSync {
    child: Child,
}

impl SlowSync {
    fn attach(pid: u32, delay: Duration, log: &Path) -> SlowSync {
        let delay_us = delay.as_micros().to_string();
        let mut child = Command::new(common::tool("strace"))
            .args(["-f", "-p", &pid.to_string(), "-e", "trace=fdatasync,fsync"])
            .arg("-e")
            .arg(format!("inject=fdatasync:delay_enter={delay_us}"))
            .arg("-e")
            .arg(format!("inject=fsync:delay_enter={delay_us}"))
            .arg("-o")
            .arg(log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start strace");
        // strace says so on stderr once attached to every thread.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("attached") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(5 * SEC).expect("strace did not attach within 5 s");
        SlowSync { child }
    }
}

impl Drop for SlowSync {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Before issue 13 the daemon wrote each state file with an fdatasync in
/// the loop pass that notified the agent: a second change arriving during
/// that flush waited for it. Here every flush takes 3 s, for real (strace
/// delays the system call), and the second change must still reach the
/// agent in well under that.
#[test]
fn a_slow_disk_does_not_delay_the_next_change() {
    if !common::require_root_and(&["ip", "strace"]) {
        return;
    }
    let lab = Lab::new("slowsync", &["A"], vec![RouterSpec::monitor_only("m1", 1)], &[]);
    fs::create_dir_all(lab.nodes[0].router_dir("m1")).expect("router dir");
    let node = &lab.nodes[0];
    node.start();
    node.wait_answering(10 * SEC);
    wait_until(5 * SEC, || node.last_notification("m1").as_deref() == Some("backup"))
        .unwrap_or_else(|| panic!("no initial backup\n{}", lab.dump()));
    // Past the quiet second: the initial state's sync is done before the
    // disk turns slow.
    wait_until(5 * SEC, || node.state("m1").as_deref() == Some("backup")).expect("state file");
    std::thread::sleep(2 * SEC);
    let pid = node.pid().expect("running");
    let _slow = SlowSync::attach(pid, 3 * SEC, &lab.dir().join("strace.log"));

    let vip = lab.router("m1").primary_vip();
    let ns = lab.ns(0, "m1");
    ns.ip(&["addr", "add", &vip, "dev", "ha-m1"]);
    wait_until(5 * SEC, || node.last_notification("m1").as_deref() == Some("primary"))
        .unwrap_or_else(|| panic!("primary not notified\n{}", lab.dump()));
    let changed = Instant::now();
    ns.ip(&["addr", "del", &vip, "dev", "ha-m1"]);
    let took = wait_until(10 * SEC, || node.last_notification("m1").as_deref() == Some("backup"))
        .unwrap_or_else(|| panic!("backup not notified\n{}", lab.dump()));
    println!("the next change notified {:.0} ms after it was made, every sync taking 3 s", ms(changed.elapsed()));
    assert!(took < SEC, "the second change waited {took:?} for the first one's sync");
    // Both files still end up right (written at once, synced later).
    wait_until(2 * SEC, || node.state("m1").as_deref() == Some("backup"))
        .unwrap_or_else(|| panic!("state file not written\n{}", lab.dump()));
}

// ---------------------------------------------------------------------------
// A keepalived's exec is not waited for; start-up runs inside the loop.

/// A write lease on `path`, held by this process: while it is held, any
/// open of the file by another process (an exec's included) blocks in the
/// kernel. Released when dropped (or by [`Lease::release`]).
struct Lease {
    file: Option<fs::File>,
}

const F_SETLEASE: libc::c_int = 1024;

impl Lease {
    fn take(path: &Path) -> Lease {
        // The lease break notice (SIGIO by default, which would end the
        // test process) is not needed: the test releases the lease itself.
        // SAFETY: SIG_IGN installs no handler.
        unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
        let file = fs::File::open(path).expect("open the leased file");
        // SAFETY: fcntl on a descriptor we own, integer argument.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), F_SETLEASE, libc::F_WRLCK) };
        assert_eq!(rc, 0, "F_SETLEASE: {}", std::io::Error::last_os_error());
        Lease { file: Some(file) }
    }

    fn release(&mut self) {
        if let Some(file) = self.file.take() {
            // SAFETY: as above.
            unsafe { libc::fcntl(file.as_raw_fd(), F_SETLEASE, libc::F_UNLCK) };
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release();
    }
}

/// A copy of keepalived in the lab's directory: a lease on it stops its
/// execs without touching the system's.
fn keepalived_copy(lab: &Lab) -> PathBuf {
    let copy = lab.dir().join("keepalived");
    fs::copy(common::tool("keepalived"), &copy).expect("copy keepalived");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod");
    copy
}

/// Every keepalived's exec is held (a lease on the program: each child
/// blocks in the kernel until it goes). Before issue 13 the daemon waited
/// for each child's exec, and started every router before its loop ran:
/// it answered nothing. Now it answers at once, lists every router, has
/// started only as many keepalived as may start at once (the rest wait for
/// their turn, in the loop), and once the lease goes every keepalived runs.
#[test]
fn the_daemon_answers_while_keepalived_execs_are_held() {
    if !common::require_root_and(&["ip", "keepalived"]) {
        return;
    }
    let max = keepalived_starting_max();
    let n = max + 2;
    let routers: Vec<RouterSpec> =
        (0..n).map(|i| RouterSpec::new(&format!("r{i}"), (i + 1) as u8).in_namespace("shared")).collect();
    let lab = Lab::new("heldexec", &["A"], routers, &[]);
    let copy = keepalived_copy(&lab);
    let mut lab = lab;
    let node = &mut lab.nodes[0];
    node.daemon_extra.retain(|l| !l.starts_with("keepalived_path"));
    node.daemon_extra.push(format!("keepalived_path = {}", copy.display()));
    lab.write_config(0);
    let mut lease = Lease::take(&copy);
    let node = &lab.nodes[0];
    node.start();
    let socket = node.socket();
    // Answered while no keepalived has exec'd.
    let ((), took) = wait_for(5 * SEC, || rows(&socket).map(|_| ()))
        .unwrap_or_else(|| panic!("no answer while keepalived execs are held\n{}", node.log_text()));
    println!("first answer {:.0} ms after start, every exec held", ms(took));
    let spawned = |rows: &[Row]| rows.iter().filter(|r| r.1.is_some()).count();
    let ((), _) = wait_for(5 * SEC, || rows(&socket).filter(|r| spawned(r) == max).map(|_| ()))
        .unwrap_or_else(|| panic!("not {max} keepalived spawned: {:?}\n{}", rows(&socket), node.log_text()));
    let now = rows(&socket).expect("rows");
    assert_eq!(now.len(), n, "every configured router is listed: {now:?}");
    assert!(common::lab::processes_matching(&copy.display().to_string()).is_empty(), "a keepalived ran anyway");
    // The last two wait for their turn: no keepalived yet, and a posted
    // state is refused for now rather than lost silently.
    let waiting: Vec<&str> = now.iter().filter(|r| r.1.is_none()).map(|r| r.0.as_str()).collect();
    assert_eq!(waiting.len(), 2, "{now:?}");
    let post = format!(
        "POST / HTTP/1.1\r\nHost: h\r\nX-Neutron-Router-Id: {}\r\nX-Neutron-State: primary\r\nContent-Length: 0\r\n\r\n",
        waiting[0]
    );
    let (status, body) = common::http_exchange(&socket, post.as_bytes());
    assert_eq!(status, Some(503), "{body}");
    assert!(body.contains("still starting"), "{body}");
    // Still answering a while later (the loop is not stuck in a spawn).
    std::thread::sleep(SEC);
    let t = Instant::now();
    assert!(rows(&socket).is_some());
    assert!(t.elapsed() < SEC, "answer took {:?}", t.elapsed());

    lease.release();
    let ids = lab.ids();
    let took = wait_until(30 * SEC, || ids.iter().all(|id| node.keepalived_pid(id).is_some()))
        .unwrap_or_else(|| panic!("not every keepalived runs after the lease went\n{}", lab.dump()));
    println!("all {n} keepalived running {:.0} ms after the lease went", ms(took));
    wait_until(10 * SEC, || rows(&socket).is_some_and(|r| r.len() == n && r.iter().all(|r| r.2.is_some())))
        .unwrap_or_else(|| panic!("states not all known: {:?}", rows(&socket)));
}

/// SIGTERM while routers still wait for their turn to start, with
/// `on_exit = stop`: the waiting ones have nothing of ours running, and
/// nothing is spawned for them only to be killed; the daemon exits 0.
#[test]
fn a_stop_during_start_up_spawns_nothing_for_routers_not_started() {
    if !common::require_root_and(&["ip", "keepalived"]) {
        return;
    }
    let max = keepalived_starting_max();
    let n = max + 2;
    let routers: Vec<RouterSpec> =
        (0..n).map(|i| RouterSpec::new(&format!("r{i}"), (i + 1) as u8).in_namespace("shared")).collect();
    let lab = Lab::new("stopstart", &["A"], routers, &["on_exit = stop"]);
    let copy = keepalived_copy(&lab);
    let mut lab = lab;
    let node = &mut lab.nodes[0];
    node.daemon_extra.retain(|l| !l.starts_with("keepalived_path"));
    node.daemon_extra.push(format!("keepalived_path = {}", copy.display()));
    lab.write_config(0);
    let _lease = Lease::take(&copy);
    let node = &lab.nodes[0];
    node.start();
    let socket = node.socket();
    let spawned = |rows: &[Row]| rows.iter().filter(|r| r.1.is_some()).count();
    wait_for(5 * SEC, || rows(&socket).filter(|r| spawned(r) == max).map(|_| ()))
        .unwrap_or_else(|| panic!("not {max} keepalived spawned: {:?}\n{}", rows(&socket), node.log_text()));
    let waiting: Vec<String> =
        rows(&socket).expect("rows").into_iter().filter(|r| r.1.is_none()).map(|r| r.0).collect();
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    node.signal(libc::SIGTERM);
    let status = node.wait_exit(20 * SEC).unwrap_or_else(|| panic!("no exit\n{}", node.log_text()));
    assert!(status.success(), "{status:?}\n{}", node.log_text());
    let log = node.log_text();
    assert!(log.contains("2 routers were not started yet"), "{log}");
    for id in &waiting {
        let started = format!("router {id}: keepalived started");
        assert!(!log.contains(&started), "`{started}` during the stop\n{log}");
    }
}

// ---------------------------------------------------------------------------
// An exec that fails after spawn returned is still a failed start.

/// A program that is there and executable but cannot be exec'd (its
/// interpreter is missing): `spawn` returns before the exec, so the
/// failure comes back with the child's exit. It must read as before: a
/// failed start naming the errno, retried with a growing backoff, no
/// restart counted, never a respawn loop.
#[test]
fn a_keepalived_that_cannot_exec_is_a_failed_start_with_backoff() {
    if !common::require_root_and(&["ip"]) {
        return;
    }
    let lab = Lab::new("noexec", &["A"], vec![RouterSpec::new("r1", 1)], &[]);
    let bad = lab.dir().join("keepalived");
    fs::write(&bad, "#!/nonexistent/interpreter\n").expect("write");
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut lab = lab;
    let node = &mut lab.nodes[0];
    node.daemon_extra.retain(|l| !l.starts_with("keepalived_path"));
    node.daemon_extra.push(format!("keepalived_path = {}", bad.display()));
    lab.write_config(0);
    let node = &lab.nodes[0];
    node.start();
    let want = format!(
        "router r1: cannot start keepalived ({0}): cannot run {0}: No such file or directory (os error 2)",
        bad.display()
    );
    let log = |n: usize| node.log_text().matches(&want).count() >= n;
    wait_until(10 * SEC, || log(3)).unwrap_or_else(|| panic!("no third failed start\n{}", node.log_text()));
    let text = node.log_text();
    let delays: Vec<u64> = text
        .lines()
        .filter(|l| l.contains(&want))
        .filter_map(|l| l.split("retrying in ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert!(delays.len() >= 3 && delays[..3] == [100, 200, 400], "backoff {delays:?}\n{text}");
    assert!(!text.contains("died"), "taken for a death:\n{text}");
    let (status, body) = common::http_get(&node.socket(), "/v1/routers/r1");
    assert_eq!(status, Some(200));
    assert!(body.contains("\"restarts\":0"), "{body}");
    assert!(body.contains("No such file or directory (os error 2)"), "{body}");
    // Backing off, not spinning: a handful of attempts in a few seconds.
    std::thread::sleep(2 * SEC);
    let attempts = node.log_text().matches(&want).count();
    assert!(attempts <= 7, "{attempts} failed starts within ~3 s: no backoff?");
}
