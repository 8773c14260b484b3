//! packaging/harouterd.init for real: start, status, reload, stop against
//! the real binary (detached, as an init system runs it), with a router in
//! a namespace the test owns.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Netns, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_harouterd");

struct Rig {
    ns: Netns,
    dir: TempDir,
}

impl Rig {
    fn config(&self) -> PathBuf {
        self.dir.join("harouterd.conf")
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("harouterd.pid")
    }

    fn write_config(&self, routers: &[&str], extra: &str) {
        let mut text = format!("[daemon]\nstate_path = {}\nha_vrrp_advert_int = 1\n", self.dir.path().display());
        for (i, r) in routers.iter().enumerate() {
            text.push_str(&format!(
                "[router {r}]\nnamespace = {}\nha_interface = ha-a\nvrid = {}\nkeepalived = false\n",
                self.ns.name(),
                i + 1
            ));
        }
        text.push_str(extra);
        fs::write(self.config(), text).unwrap();
        fs::set_permissions(self.config(), fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn init(&self, action: &str) -> Output {
        Command::new("sh")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/harouterd.init"))
            .arg(action)
            .env("DAEMON", BIN)
            .env("CONFIG", self.config())
            .env("PIDFILE", self.pidfile())
            .output()
            .unwrap()
    }

    fn routers(&self) -> String {
        let out = Command::new(BIN).args(["status", "--socket"]).arg(self.dir.join("harouterd.sock")).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn daemon_pid(&self) -> Option<i32> {
        fs::read_to_string(self.pidfile()).ok()?.trim().parse().ok()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon_pid() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn start_status_reload_stop() {
    if !common::require_root_and(&["ip", "sh"]) {
        return;
    }
    let ns = Netns::new("init");
    common::add_veth_pair(&ns, "ha-a", "ha-b");
    let rig = Rig { ns, dir: TempDir::new("init") };
    rig.write_config(&["r1"], "");

    let out = rig.init("status");
    assert_eq!(out.status.code(), Some(3), "not running yet: {}", text(&out));

    let out = rig.init("start");
    assert!(out.status.success(), "{}", text(&out));
    let pid = rig.daemon_pid().expect("pid file written");
    assert!(text(&out).contains(&format!("harouterd started (pid {pid})")), "{}", text(&out));
    // Detached: its own session, not a child of the script.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    assert_eq!(fields[2], fields[3], "session id is its process group: {stat}");
    assert_eq!(fields[4], "0", "no controlling terminal: {stat}");
    assert_ne!(fields[1], std::process::id().to_string());

    let out = rig.init("status");
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out).contains(&format!("harouterd is running (pid {pid})")));
    wait_for("r1 in status", || rig.routers().contains("r1 "));

    let out = rig.init("start");
    assert!(out.status.success() && text(&out).contains("already running"), "{}", text(&out));

    // Reload picks up a new router, same daemon.
    rig.write_config(&["r1", "r2"], "");
    let out = rig.init("reload");
    assert!(out.status.success(), "{}", text(&out));
    wait_for("r2 after reload", || rig.routers().contains("r2 "));
    assert_eq!(rig.daemon_pid(), Some(pid));

    // A broken config is refused by the script and the daemon keeps going.
    rig.write_config(&["r1", "r2"], "bogus = 1\n");
    let out = rig.init("reload");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("unknown key 'bogus'"), "{}", text(&out));
    assert!(rig.routers().contains("r2 "));

    let out = rig.init("stop");
    assert!(out.status.success(), "{}", text(&out));
    assert!(unsafe { libc::kill(pid, 0) } != 0, "daemon still alive after stop");
    assert!(!rig.pidfile().exists(), "pid file left behind");
    assert!(!rig.dir.join("harouterd.sock").exists(), "socket left behind");
    let out = rig.init("status");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

/// Issue 15.7: after a crash (`kill -9`) the pidfile names a dead daemon,
/// and its pid now belongs to a user's `tail -f .../harouterd.log` (planted
/// here: a real process of uid 65534, its pid written into the pidfile).
/// The daemon's flock on the pidfile is gone and the process is not the
/// daemon's binary: `status` says not running, `stop` leaves it alone,
/// `start` starts the daemon.
#[test]
fn after_a_crash_a_reused_pid_is_neither_stopped_nor_taken_for_the_daemon() {
    if !common::require_root_and(&["ip", "sh", "flock", "setpriv", "tail"]) {
        return;
    }
    let ns = Netns::new("initpid");
    common::add_veth_pair(&ns, "ha-a", "ha-b");
    let rig = Rig { ns, dir: TempDir::new("initpid") };
    rig.write_config(&["r1"], "");
    let out = rig.init("start");
    assert!(out.status.success(), "{}", text(&out));
    let crashed = rig.daemon_pid().expect("pid file written");
    unsafe { libc::kill(crashed, libc::SIGKILL) };
    wait_for("the daemon to be gone", || !Path::new(&format!("/proc/{crashed}")).exists());

    let log = rig.dir.join("harouterd.log");
    fs::write(&log, "").unwrap();
    fs::set_permissions(&log, fs::Permissions::from_mode(0o644)).unwrap();
    let mut tail = Reaped(
        Command::new(common::tool("setpriv"))
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(common::tool("tail"))
            .arg("-f")
            .arg(&log)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let reused = tail.0.id() as i32;
    let tail_exe = fs::metadata(common::tool("tail")).map(|m| m.ino()).ok();
    wait_for("tail to run", || fs::metadata(format!("/proc/{reused}/exe")).map(|m| m.ino()).ok() == tail_exe);
    fs::write(rig.pidfile(), reused.to_string()).unwrap();

    let out = rig.init("status");
    assert_ne!(out.status.code(), Some(0), "a reused pid taken for the daemon: {}", text(&out));
    let out = rig.init("stop");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not running"), "{}", text(&out));
    assert_eq!(tail.0.try_wait().unwrap(), None, "stop killed the user's tail: {}", text(&out));

    let out = rig.init("start");
    assert!(out.status.success(), "{}", text(&out));
    let pid = rig.daemon_pid().expect("pid file written");
    assert_ne!(pid, reused, "{}", text(&out));
    assert!(text(&out).contains(&format!("harouterd started (pid {pid})")), "{}", text(&out));
    wait_for("r1 in status", || rig.routers().contains("r1 "));
    let out = rig.init("stop");
    assert!(out.status.success(), "{}", text(&out));
    assert!(unsafe { libc::kill(pid, 0) } != 0, "daemon still alive after stop");
    assert_eq!(tail.0.try_wait().unwrap(), None, "the user's tail was signalled");
}

/// A child killed and reaped on drop, also when a test fails.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
