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
        self.init_with(action, &[])
    }

    /// The init script with settings in `env` replacing the rig's (and,
    /// with `("AS_USER", "65534")`, run as that user).
    fn init_with(&self, action: &str, env: &[(&str, &str)]) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/harouterd.init");
        let mut command = match env.iter().find(|(k, _)| *k == "AS_USER") {
            Some((_, uid)) => {
                let mut c = Command::new(common::tool("setpriv"));
                c.args([&format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups", "--", "sh"]);
                c
            }
            None => Command::new("sh"),
        };
        command.arg(script).arg(action).env("DAEMON", BIN).env("CONFIG", self.config()).env("PIDFILE", self.pidfile());
        for (k, v) in env.iter().filter(|(k, _)| *k != "AS_USER") {
            command.env(k, v);
        }
        command.output().unwrap()
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
    assert_eq!(out.status.code(), Some(6), "LSB: program not configured: {}", text(&out));
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

/// Issue 14.2: `restart`, `try-restart` and `force-reload` with a broken
/// config used to stop the daemon and then refuse to start it. The config
/// is now checked first: the script exits 6 (LSB "not configured") with
/// check's own message, and the same daemon keeps serving. A good config
/// then restarts it (a new pid) and force-reloads it (same pid, SIGHUP).
#[test]
fn restart_and_force_reload_with_a_broken_config_stop_nothing() {
    if !common::require_root_and(&["ip", "sh", "flock", "setpriv"]) {
        return;
    }
    let ns = Netns::new("initrs");
    common::add_veth_pair(&ns, "ha-a", "ha-b");
    let rig = Rig { ns, dir: TempDir::new("initrs") };
    rig.write_config(&["r1"], "");
    let out = rig.init("start");
    assert!(out.status.success(), "{}", text(&out));
    let pid = rig.daemon_pid().expect("pid file written");

    // Not root: LSB 4, for status too while the lock is held (only root
    // can tell whose it is).
    for action in ["stop", "restart", "force-reload"] {
        let out = rig.init_with(action, &[("AS_USER", "65534")]);
        assert_eq!(out.status.code(), Some(4), "{action} as uid 65534: {}", text(&out));
    }
    let out = rig.init_with("status", &[("AS_USER", "65534")]);
    assert_eq!(out.status.code(), Some(4), "status as uid 65534: {}", text(&out));

    rig.write_config(&["r1", "r2"], "bogus = 1\n");
    for action in ["restart", "try-restart", "force-reload", "reload"] {
        let out = rig.init(action);
        assert_eq!(out.status.code(), Some(6), "{action}: {}", text(&out));
        assert!(text(&out).contains("unknown key 'bogus'"), "{action}: check's message: {}", text(&out));
        assert!(text(&out).contains("not changing anything"), "{action}: {}", text(&out));
        assert_eq!(rig.daemon_pid(), Some(pid), "{action} replaced the daemon: {}", text(&out));
        assert!(rig.routers().contains("r1 "), "{action} stopped the daemon: {}", text(&out));
        assert!(!rig.routers().contains("r2 "), "{action} applied a broken config");
    }
    let out = rig.init("status");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    rig.write_config(&["r1", "r2"], "");
    let out = rig.init("force-reload");
    assert!(out.status.success(), "{}", text(&out));
    wait_for("r2 after force-reload", || rig.routers().contains("r2 "));
    assert_eq!(rig.daemon_pid(), Some(pid), "force-reload reloads, it does not restart");

    let out = rig.init("restart");
    assert!(out.status.success(), "{}", text(&out));
    let new_pid = rig.daemon_pid().expect("pid file written");
    assert_ne!(new_pid, pid, "{}", text(&out));
    assert!(text(&out).contains(&format!("harouterd started (pid {new_pid})")), "{}", text(&out));
    assert!(unsafe { libc::kill(pid, 0) } != 0, "the old daemon is still alive");
    // Serving when start says so: it answered on its control socket.
    assert!(rig.routers().contains("r2 "), "{}", rig.routers());

    let out = rig.init("stop");
    assert!(out.status.success(), "{}", text(&out));
    // Not running: try-restart and force-reload have nothing to do, reload
    // says not running (7).
    for (action, code) in [("try-restart", 0), ("force-reload", 0), ("reload", 7), ("status", 3)] {
        let out = rig.init(action);
        assert_eq!(out.status.code(), Some(code), "{action} while stopped: {}", text(&out));
    }
    assert!(rig.daemon_pid().is_none(), "something was started");
}

/// LSB exit codes when nothing runs: not installed (5), not root (4), no
/// or a broken config (6), an unknown action (2).
#[test]
fn lsb_exit_codes_when_nothing_can_start() {
    if !common::require_root_and(&["ip", "sh", "flock", "setpriv"]) {
        return;
    }
    let ns = Netns::new("initlsb");
    let rig = Rig { ns, dir: TempDir::new("initlsb") };
    rig.write_config(&["r1"], "");
    let missing = rig.dir.join("no-such-harouterd");
    let missing = missing.to_str().unwrap();
    for action in ["start", "restart", "reload", "force-reload"] {
        let out = rig.init_with(action, &[("DAEMON", missing)]);
        assert_eq!(out.status.code(), Some(5), "{action} without the binary: {}", text(&out));
        assert!(text(&out).contains("is not installed"), "{}", text(&out));
    }
    // stop and status need no binary: nothing runs.
    assert_eq!(rig.init_with("stop", &[("DAEMON", missing)]).status.code(), Some(0));
    assert_eq!(rig.init_with("status", &[("DAEMON", missing)]).status.code(), Some(3));

    let out = rig.init_with("start", &[("AS_USER", "65534")]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("needs root"), "{}", text(&out));

    let absent = rig.dir.join("absent.conf");
    let out = rig.init_with("start", &[("CONFIG", absent.to_str().unwrap())]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(text(&out).contains(absent.to_str().unwrap()), "names the file: {}", text(&out));

    rig.write_config(&["r1"], "vrid = 300\n");
    let out = rig.init("start");
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(text(&out).contains("harouterd.conf:"), "check's PATH:LINE message: {}", text(&out));

    let out = rig.init("frobnicate");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("Usage:"), "{}", text(&out));
    assert!(rig.daemon_pid().is_none());
}

/// `start` shows the daemon's own error and uses its exit status: a state
/// directory the daemon refuses (`run` exits 2, LSB 6), a pid file locked by
/// another process (`run` exits 1), and a daemon that dies after detaching
/// (an unknown `socket_group`, which `check` passes): reported at once as
/// a failure, not after START_WAIT, and never as started.
#[test]
fn start_reports_the_daemons_error_and_exit_status() {
    if !common::require_root_and(&["ip", "sh", "flock"]) {
        return;
    }
    let ns = Netns::new("initerr");
    common::add_veth_pair(&ns, "ha-a", "ha-b");
    let rig = Rig { ns, dir: TempDir::new("initerr") };

    let open = rig.dir.join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(
        rig.config(),
        format!("[daemon]\nstate_path = {}\n[router r1]\nnamespace = {}\nha_interface = ha-a\nvrid = 1\nkeepalived = false\n", open.display(), rig.ns.name()),
    )
    .unwrap();
    let out = rig.init("start");
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(text(&out).contains("refusing directory"), "the daemon's own message: {}", text(&out));

    rig.write_config(&["r1"], "");
    // Another process holds the lock (this test: an open file of its own).
    let holder = fs::File::create(rig.pidfile()).unwrap();
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&holder), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let out = rig.init("start");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let pidfile = rig.pidfile().display().to_string();
    assert!(text(&out).contains(&format!("harouterd: {pidfile} is held")), "the daemon's own message: {}", text(&out));
    drop(holder);

    let config = fs::read_to_string(rig.config()).unwrap();
    fs::write(rig.config(), config.replacen("[daemon]\n", "[daemon]\nsocket_group = hrt-no-such-group\n", 1)).unwrap();
    assert!(Command::new(BIN).args(["check", "-c"]).arg(rig.config()).status().unwrap().success(), "check passes it");
    let started = Instant::now();
    let out = rig.init_with("start", &[("START_WAIT", "60")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).contains("harouterd started"), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(30), "start waited {:?} for a dead daemon", started.elapsed());
    let out = rig.init("status");
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
}

/// packaging/harouterd.openrc without OpenRC (not installable beside
/// sysvinit here): the script is sourced by `sh` as openrc-run sources it,
/// with its output functions (`eerror`, ...) and `start-stop-daemon`
/// stubbed, and `command`/`pidfile` pointed at this test's binary and
/// files. Its own functions run for real against the real binary: a
/// restart's `stop_pre` refuses a broken config (a plain stop never does),
/// `reload` checks before signalling, and `start_post` waits for a detached
/// daemon to answer, or reports one that died after detaching.
#[test]
fn openrc_script_checks_before_restart_and_waits_for_the_daemon() {
    if !common::require_root_and(&["ip", "sh", "flock"]) {
        return;
    }
    let ns = Netns::new("openrc");
    common::add_veth_pair(&ns, "ha-a", "ha-b");
    let rig = Rig { ns, dir: TempDir::new("openrc") };
    let bin = rig.dir.join("bin");
    fs::create_dir(&bin).unwrap();
    let ssd_log = rig.dir.join("start-stop-daemon.calls");
    fs::write(bin.join("start-stop-daemon"), format!("#!/bin/sh\necho \"$*\" >> {}\n", ssd_log.display())).unwrap();
    fs::set_permissions(bin.join("start-stop-daemon"), fs::Permissions::from_mode(0o755)).unwrap();
    let openrc = |function: &str, rc_cmd: &str| -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/harouterd.openrc");
        let harness = format!(
            "eerror() {{ echo \"ERROR: $*\"; }}; ewarn() {{ echo \"WARN: $*\"; }}; einfo() {{ echo \"$*\"; }}
             ebegin() {{ echo \"* $*\"; }}; eend() {{ return \"$1\"; }}
             . \"$1\"; command=\"$2\"; pidfile=\"$3\"; {function}"
        );
        Command::new("sh")
            .args(["-c", &harness, "openrc-run"])
            .arg(script)
            .arg(BIN)
            .arg(rig.pidfile())
            .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
            .env("RC_CMD", rc_cmd)
            .env("HAROUTERD_CONFIG", rig.config())
            .env("HAROUTERD_START_WAIT", "60")
            .output()
            .unwrap()
    };

    rig.write_config(&["r1"], "bogus = 1\n");
    for (function, rc_cmd) in [("stop_pre", "restart"), ("start_pre", "start"), ("reload", "reload")] {
        let out = openrc(function, rc_cmd);
        assert!(!out.status.success(), "{function} ({rc_cmd}) accepted a broken config: {}", text(&out));
        assert!(text(&out).contains("unknown key 'bogus'"), "{}", text(&out));
        assert!(text(&out).contains("is invalid; not changing anything"), "{}", text(&out));
    }
    assert!(!ssd_log.exists(), "reload signalled despite a broken config");
    let out = openrc("stop_pre", "stop");
    assert!(out.status.success(), "a plain stop is never refused: {}", text(&out));

    rig.write_config(&["r1"], "");
    let out = openrc("stop_pre", "restart");
    assert!(out.status.success(), "{}", text(&out));
    let out = openrc("reload", "reload");
    assert!(out.status.success(), "{}", text(&out));
    assert!(fs::read_to_string(&ssd_log).unwrap().contains("--signal HUP --pidfile"), "reload sends SIGHUP");

    // What start-stop-daemon would have run, then start_post.
    let run =
        Command::new(BIN).args(["run", "-c"]).arg(rig.config()).arg("--pidfile").arg(rig.pidfile()).output().unwrap();
    assert!(run.status.success(), "{}", text(&run));
    let out = openrc("start_post", "start");
    assert!(out.status.success(), "{}", text(&out));
    assert!(rig.routers().contains("r1 "), "start_post returned before the daemon served");
    let pid = rig.daemon_pid().expect("pid file");
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_for("the daemon to stop", || !rig.pidfile().exists());

    let config = fs::read_to_string(rig.config()).unwrap();
    fs::write(rig.config(), config.replacen("[daemon]\n", "[daemon]\nsocket_group = hrt-no-such-group\n", 1)).unwrap();
    let run =
        Command::new(BIN).args(["run", "-c"]).arg(rig.config()).arg("--pidfile").arg(rig.pidfile()).output().unwrap();
    // The detaching parent waits for the daemon's verdict: start-stop-daemon
    // fails with the daemon's own message, and start_post never runs.
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    assert!(text(&run).contains("harouterd: socket_group: no group 'hrt-no-such-group'"), "{}", text(&run));
    // start_post still reports a daemon that died after `run` returned.
    fs::write(rig.config(), &config).unwrap();
    let run =
        Command::new(BIN).args(["run", "-c"]).arg(rig.config()).arg("--pidfile").arg(rig.pidfile()).output().unwrap();
    assert!(run.status.success(), "{}", text(&run));
    let pid = rig.daemon_pid().expect("pid file");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for("the killed daemon to be gone", || unsafe { libc::kill(pid, 0) } != 0);
    let started = Instant::now();
    let out = openrc("start_post", "start");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("exited during start-up"), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(30), "start_post waited {:?}", started.elapsed());
}

/// Every shell script under packaging/ (init scripts, the container's
/// entrypoint, the Debian maintainer scripts and build script) passes
/// shellcheck, each as the shell its first line names.
#[test]
fn every_packaging_shell_script_passes_shellcheck() {
    if !common::require_tools(&["shellcheck"]) {
        return;
    }
    let mut scripts = Vec::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if fs::read(&path).unwrap().starts_with(b"#!/") {
                let first = fs::read_to_string(&path).unwrap().lines().next().unwrap_or_default().to_owned();
                assert!(first.ends_with("/sh") || first.ends_with("openrc-run"), "{}: {first}", path.display());
                scripts.push(path);
            }
        }
    }
    let names: Vec<String> = scripts.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in
        ["harouterd.init", "harouterd.openrc", "docker-entrypoint.sh", "postinst", "prerm", "postrm", "build.sh"]
    {
        assert!(names.iter().any(|n| n == expected), "{expected} not found among {names:?}");
    }
    let out = Command::new(common::tool("shellcheck")).args(&scripts).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}
