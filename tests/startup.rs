//! Honest start-up and service-manager integration of `harouterd run`
//! (issue 14.2), through the real binary:
//!
//! - detached (no `--foreground`), the original process exits only once
//!   the daemon serves (its control socket answers at once), or fails with
//!   the daemon's own message and exit status (a `socket_group` that does
//!   not exist: `check` cannot know, the daemon refuses);
//! - under systemd's `Type=notify` (a fake `NOTIFY_SOCKET`: a datagram
//!   socket this test binds): `READY=1` once serving, `RELOADING=1` with
//!   `MONOTONIC_USEC` and `READY=1` around each SIGHUP (a rejected reload
//!   too), `STOPPING=1` on SIGTERM; the reload outcome in `status` and
//!   `/metrics`;
//! - journald (a fake `JOURNAL_STREAM` naming stderr's device and inode):
//!   `<N>` priority prefixes, and none when the variable names another file;
//! - as PID 1 of its own PID namespace (a container run without the
//!   entrypoint), keepalived is stopped at exit whatever `on_exit` says, so
//!   no VIP is left behind.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::lab::{send_signal, wait_until};
use common::{Netns, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_harouterd");
const WITHIN: Duration = Duration::from_secs(20);

/// A daemon's files in a temp dir; no routers unless given.
struct Rig {
    dir: TempDir,
}

impl Rig {
    fn new(tag: &str, extra: &str) -> Rig {
        let rig = Rig { dir: TempDir::new(tag) };
        rig.write_config(extra);
        rig
    }

    fn config(&self) -> PathBuf {
        self.dir.join("harouterd.conf")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("state/harouterd.sock")
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("harouterd.pid")
    }

    fn write_config(&self, extra: &str) {
        let text = format!("[daemon]\nstate_path = {}\n{extra}", self.dir.join("state").display());
        fs::write(self.config(), text).unwrap();
        fs::set_permissions(self.config(), fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn command(&self) -> Command {
        let mut command = Command::new(BIN);
        command.args(["run", "--log-level", "debug", "-c"]).arg(self.config()).arg("--pidfile").arg(self.pidfile());
        command.stdin(Stdio::null());
        // Nothing of the test runner's environment decides these.
        command.env_remove("NOTIFY_SOCKET").env_remove("JOURNAL_STREAM");
        command
    }

    fn metric(&self, name: &str) -> Option<String> {
        let (_, body) = common::http_get(&self.socket(), "/metrics");
        body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
    }

    fn status(&self) -> String {
        let out = Command::new(BIN).args(["status", "--socket"]).arg(self.socket()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A foreground daemon, killed if the test fails.
struct Running(Child);

impl Running {
    fn signal(&self, signal: libc::c_int) {
        send_signal(self.0.id(), signal);
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut status = None;
        wait_until(WITHIN, || {
            status = self.0.try_wait().unwrap();
            status.is_some()
        })
        .expect("the daemon exits");
        status.unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the pid exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// The detached daemon whose pid is in `pidfile`, stopped (SIGTERM) when
/// dropped, and waited for.
struct Detached(i32);

impl Drop for Detached {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the daemon this test started.
        unsafe { libc::kill(self.0, libc::SIGTERM) };
        wait_until(WITHIN, || !alive(self.0));
    }
}

/// Without `--foreground`, `run` used to exit 0 right after forking: the
/// caller could not tell a daemon that serves from one that died a moment
/// later, and its reason went to syslog only. Now the original process
/// waits: a refused `socket_group` is exit 1 with the daemon's message on
/// stderr, and a 0 means the control socket answers at once.
#[test]
fn the_detaching_parent_waits_for_the_daemons_verdict() {
    let rig = Rig::new("start-fail", "socket_group = hrt-no-such-group\n");
    let check = Command::new(BIN).args(["check", "-c"]).arg(rig.config()).output().unwrap();
    assert!(check.status.success(), "check passes it (a warning at most)");
    let out = rig.command().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr, "harouterd: socket_group: no group 'hrt-no-such-group'\n");
    assert!(!rig.socket().exists(), "nothing serves");

    // A good config: once `run` has returned 0 the daemon answers, with no
    // retry.
    rig.write_config("");
    let started = Instant::now();
    let out = rig.command().output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let pid: i32 = fs::read_to_string(rig.pidfile()).unwrap().trim().parse().unwrap();
    let _daemon = Detached(pid);
    let (status, body) = common::http_get(&rig.socket(), "/v1/daemon");
    assert_eq!(status, Some(200), "the control socket answers as soon as run returns: {body}");
    assert!(body.contains(&format!("\"pid\":{pid},")), "{body}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    println!("run returned after {:?}", started.elapsed());
}

/// Routers start inside the loop, a batch per pass, so that the control
/// socket answers from the first pass; "serving" (the parent's exit 0,
/// `READY=1`) is still said only once every configured router has been
/// started: 100 monitor-only routers take several passes, and READY's
/// status counts all of them.
#[test]
fn ready_is_said_once_every_router_has_started() {
    if !common::require_root_and(&["ip"]) {
        return;
    }
    let ns = Netns::new("ready");
    let routers: String = (1..=100)
        .map(|i| {
            format!(
                "[router r{i}]\nnamespace = {}\nha_interface = ha-{i}\nvrid = {}\nkeepalived = false\n\n",
                ns.name(),
                i % 255 + 1
            )
        })
        .collect();
    let rig = Rig::new("ready", &format!("\n{routers}"));
    let notify_path = rig.dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(WITHIN)).unwrap();
    let child = rig
        .command()
        .arg("--foreground")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Running(child);
    assert_eq!(datagram(&notify), "READY=1\nSTATUS=serving 100 routers");
}

fn datagram(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification from the daemon");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn monotonic_usec() -> u64 {
    harouterd::sys::sd_notify::monotonic_usec()
}

/// `Type=notify` with a fake NOTIFY_SOCKET, and journald priorities on
/// stderr through a fake JOURNAL_STREAM naming the file stderr goes to.
#[test]
fn systemd_hears_ready_reloading_and_stopping_and_journald_gets_priorities() {
    let rig = Rig::new("notify", "");
    let notify_path = rig.dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(WITHIN)).unwrap();
    let log = rig.dir.join("stderr");
    let stderr = fs::File::create(&log).unwrap();
    let meta = stderr.metadata().unwrap();
    let child = rig
        .command()
        .arg("--foreground")
        .env("NOTIFY_SOCKET", &notify_path)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut daemon = Running(child);

    assert_eq!(datagram(&notify), "READY=1\nSTATUS=serving 0 routers");
    // Ready means serving: no retry needed.
    assert_eq!(common::http_get(&rig.socket(), "/v1/routers").0, Some(200));
    assert!(rig.status().ends_with(", not reloaded since\n"), "{}", rig.status());
    assert_eq!(rig.metric("harouterd_config_last_reload_successful").as_deref(), Some("1"));

    // An applied reload (of a file that gets a warning, for a <4> line).
    rig.write_config("ha_vrrp_auth_password = pw12\n");
    fs::set_permissions(rig.config(), fs::Permissions::from_mode(0o644)).unwrap();
    let before = monotonic_usec();
    daemon.signal(libc::SIGHUP);
    let reloading = datagram(&notify);
    let after = monotonic_usec();
    let usec: u64 = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("{reloading:?}"))
        .parse()
        .unwrap();
    assert!((before..=after).contains(&usec), "MONOTONIC_USEC {usec} not within {before}..={after}");
    assert_eq!(datagram(&notify), "READY=1\nSTATUS=serving 0 routers; reloaded");
    assert!(rig.status().contains(" applied\n"), "{}", rig.status());
    assert_eq!(rig.metric("harouterd_config_reloads_total").as_deref(), Some("1"));

    // A rejected one: READY=1 all the same (the old config runs), the
    // reason in status and /metrics.
    fs::write(rig.config(), "[daemon]\nvrid = 3\n").unwrap();
    daemon.signal(libc::SIGHUP);
    assert!(datagram(&notify).starts_with("RELOADING=1\nMONOTONIC_USEC="));
    let ready = datagram(&notify);
    let config = rig.config().display().to_string();
    assert_eq!(
        ready,
        format!(
            "READY=1\nSTATUS=reload rejected: {config}:2: unknown key 'vrid' in [daemon] section (it belongs in a [router ID] section)"
        )
    );
    let status = rig.status();
    assert!(status.contains(" REJECTED, still running the config loaded "), "{status}");
    assert!(status.contains(&format!("{config}:2: unknown key 'vrid'")), "{status}");
    assert_eq!(rig.metric("harouterd_config_last_reload_successful").as_deref(), Some("0"));
    assert_eq!(rig.metric("harouterd_config_reload_failures_total").as_deref(), Some("1"));
    let (_, daemon_json) = common::http_get(&rig.socket(), "/v1/daemon");
    assert!(daemon_json.contains("\"result\":\"rejected\""), "{daemon_json}");

    daemon.signal(libc::SIGTERM);
    assert_eq!(datagram(&notify), "STOPPING=1");
    assert_eq!(daemon.wait_exit().code(), Some(0));

    // Every line carries its journald priority and nothing journald adds
    // itself (time, pid).
    let text = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.iter().all(|l| l.len() > 3 && l.starts_with('<') && l[1..2].parse::<u8>().is_ok() && &l[2..3] == ">"),
        "{text}"
    );
    assert!(lines.contains(&"<6>serving 0 routers"), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("<3>reload rejected, keeping the running config: ")), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("<4>") && l.contains("readable by others")), "{text}");
}

/// JOURNAL_STREAM naming some other file (stderr was redirected since
/// systemd set it): no prefixes, the usual lines.
#[test]
fn a_journal_stream_that_is_not_stderr_gets_plain_lines() {
    let rig = Rig::new("nojournal", "");
    let log = rig.dir.join("stderr");
    let other = fs::File::create(rig.dir.join("other")).unwrap().metadata().unwrap();
    let child = rig
        .command()
        .arg("--foreground")
        .env("JOURNAL_STREAM", format!("{}:{}", other.dev(), other.ino()))
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut daemon = Running(child);
    wait_until(WITHIN, || common::http_get(&rig.socket(), "/v1/routers").0 == Some(200)).expect("serving");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.lines().any(|l| l.ends_with(" INFO harouterd.daemon [-] serving 0 routers")), "{text}");
    assert!(!text.contains("<6>"), "{text}");
}

/// A container started without the entrypoint and without `--pid=host`
/// runs the daemon as PID 1 of its PID namespace: when it exits, the kernel
/// SIGKILLs every keepalived left in the namespace, and their VIPs stay on
/// the interfaces. So as PID 1 the daemon stops keepalived itself on
/// SIGTERM (as `on_exit = stop`), says why, and nothing is left behind.
#[test]
fn as_pid_1_of_its_namespace_keepalived_is_stopped_first() {
    if !common::require_root_and(&["ip", "keepalived", "unshare"]) {
        return;
    }
    let ns = Netns::new("pid1");
    common::add_veth_pair(&ns, "ha-a", "ha-b");
    ns.ip(&["addr", "add", "169.254.192.1/18", "dev", "ha-a"]);
    let rig = Rig::new(
        "pid1",
        &format!(
            "keepalived_path = {}\nha_vrrp_advert_int = 1\n[router r1]\nnamespace = {}\nha_interface = ha-a\nvrid = 1\n",
            common::tool("keepalived").display(),
            ns.name()
        ),
    );
    let log = rig.dir.join("stderr");
    let child = Command::new(common::tool("unshare"))
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(BIN)
        .args(["run", "--foreground", "-c"])
        .arg(rig.config())
        .arg("--pidfile")
        .arg(rig.pidfile())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut unshare = Running(child);
    let show = || fs::read_to_string(&log).unwrap_or_default();
    let has_vip = || {
        let out = ns.ip(&["-o", "addr", "show", "dev", "ha-a"]);
        String::from_utf8_lossy(&out.stdout).split_whitespace().any(|w| w == "169.254.0.1/24")
    };
    assert!(wait_until(Duration::from_secs(30), has_vip).is_some(), "keepalived never took the VIP:\n{}", show());
    assert!(show().contains("running as PID 1 of a PID namespace"), "{}", show());
    let init = fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.0.id())).unwrap();
    let init: u32 = init.split_whitespace().next().expect("unshare's child").parse().unwrap();
    send_signal(init, libc::SIGTERM);
    let status = unshare.wait_exit();
    assert!(status.success(), "{status}\n{}", show());
    assert!(!has_vip(), "the VIP was left on ha-a:\n{}", show());
    assert!(!rig.dir.join("state/ha_confs/r1").exists(), "stopped as with on_exit = stop: its files removed");
    let conf = rig.dir.join("state/ha_confs/r1/keepalived.conf");
    assert!(common::lab::processes_matching(&conf.display().to_string()).is_empty(), "keepalived left running");
}
