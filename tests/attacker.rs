//! Issue 15, played for real: a local unprivileged user (uid/gid 65534,
//! `nobody`) against the root daemon. One test per item this suite owns:
//!
//! - 15.3 a stale keepalived pidfile whose pid now belongs to nobody's
//!   `tail -f CONF` (and to a copy of `tail` named `keepalived`);
//! - 15.4 the daemon under umask 000, pre-existing unsafe state directories,
//!   a router directory swapped for a symlink;
//! - 15.5 the control socket's directory writable by nobody, with nobody
//!   racing to swap the socket for a symlink to a root-only file;
//! - 15.6 a VRRP password in a malformed line (`check`, and a rejected
//!   reload in the daemon's log);
//! - extras: no core dump from the daemon (it holds the password), and
//!   `check` warnings about files others can change.
//!
//! 15.7 (the init script and a reused pid) lives in tests/init_script.rs,
//! beside the init script's other tests.
//!
//! The attacker runs as a real uid 65534 (`setpriv`, or fork + setuid for
//! the tight race loop), files are real, keepalived is the real one. Needs
//! root (and keepalived and ip where a router runs keepalived): skipped
//! otherwise, failing under CI=true.

mod common;

use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use common::lab::{Lab, RouterSpec, cmdline, processes_matching, read_pid, send_signal, wait_for, wait_until};
use common::{Netns, TempDir, tool};

const BIN: &str = env!("CARGO_BIN_EXE_harouterd");
const NOBODY: u32 = 65534;
const SEC: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// The attacker and the daemon

/// `program` run as uid and gid 65534 with no supplementary groups.
fn nobody(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(tool("setpriv"));
    command.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(program);
    command
}

/// A child killed and reaped on drop, also when the test panics.
struct Proc(Child);

impl Proc {
    fn spawn(mut command: Command) -> Proc {
        Proc(command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn"))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// `None` while it runs; how it ended otherwise (a signal it got).
    fn ended(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().expect("try_wait")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).mode() & 0o7777
}

fn write_config(path: &Path, text: &str) {
    fs::write(path, text).expect("write config");
    chmod(path, 0o600);
}

/// `harouterd run --foreground` on `config`, stderr (the log) into `log`.
/// `umask`: the umask it starts with.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(config: &Path, dir: &Path, umask: Option<u32>) -> Daemon {
        let log = dir.join("daemon.log");
        let file = fs::File::create(&log).expect("log file");
        let mut command = Command::new(BIN);
        command
            .args(["run", "--foreground", "--log-level", "debug", "-c"])
            .arg(config)
            .arg("--pidfile")
            .arg(dir.join("harouterd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        if let Some(mask) = umask {
            // SAFETY: umask(2) only, between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    libc::umask(mask);
                    Ok(())
                });
            }
        }
        Daemon { child: command.spawn().expect("start harouterd"), log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: libc::c_int) {
        send_signal(self.child.id(), signal);
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_for(timeout, || self.child.try_wait().ok().flatten()).map(|(s, _)| s)
    }

    /// Waits for the log to show `needle`; panics with the log otherwise.
    fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let found = wait_until(timeout, || self.log().contains(needle));
        assert!(found.is_some(), "the log never showed {needle:?}:\n{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon that must refuse to start: its exit status and stderr. One
/// still running after 5 s is killed and reported as such.
fn run_expecting_refusal(config: &Path, dir: &Path) -> (Option<i32>, String) {
    let mut daemon = Daemon::start(config, dir, None);
    let status = daemon.wait_exit(5 * SEC);
    (status.and_then(|s| s.code()), daemon.log())
}

/// `GET path` on the control socket: the body, `None` when nobody answers.
fn get(socket: &Path, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(5 * SEC)).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// A number field of a JSON object, as the daemon writes it (`"key":N`).
fn json_u32(body: &str, key: &str) -> Option<u32> {
    let rest = body.split_once(&format!("\"{key}\":"))?.1;
    rest.split([',', '}']).next()?.trim().parse().ok()
}

/// The (device, inode) a path resolves to.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether `pid` runs the real keepalived binary.
fn is_real_keepalived(pid: u32) -> bool {
    let exe = file_id(Path::new(&format!("/proc/{pid}/exe")));
    exe.is_some() && exe == file_id(&tool("keepalived"))
}

fn names_conf(pid: u32, conf: &Path) -> bool {
    cmdline(pid).contains(&format!("-f {}", conf.display()))
}

// ---------------------------------------------------------------------------
// 15.3

/// A stale keepalived pidfile names nobody's `tail -f CONF` (the main
/// pidfile) and nobody's copy of `tail` named `keepalived`, run with
/// `-f CONF` (the VRRP pidfile): both have our config after `-f` in their
/// command line, which is all the daemon checked. The daemon must adopt
/// neither, signal neither (SIGHUP on a reload, SIGTERM on stop, SIGKILL
/// for an "orphaned VRRP child": any of them ends `tail`), and run a real
/// keepalived instead.
#[test]
fn item3_a_reused_keepalived_pid_is_neither_adopted_nor_signalled() {
    if !common::require_root_and(&["keepalived", "ip", "setpriv", "tail"]) {
        return;
    }
    let mut lab = Lab::new("atk3", &["n1"], vec![RouterSpec::new("r1", 1)], &["on_exit = stop"]);
    let node = &lab.nodes[0];
    fs::create_dir_all(&node.ha_confs).expect("mkdir ha_confs");
    let conf = node.conf("r1");

    let mut reused = Proc::spawn({
        let mut c = nobody(tool("tail"));
        c.arg("-f").arg(&conf).arg("/dev/null");
        c
    });
    let evil = lab.dir().join("nobody");
    fs::create_dir(&evil).expect("mkdir");
    chown(&evil, NOBODY, NOBODY);
    let impostor_exe = evil.join("keepalived");
    fs::copy(tool("tail"), &impostor_exe).expect("copy tail");
    chown(&impostor_exe, NOBODY, NOBODY);
    let mut impostor = Proc::spawn({
        let mut c = nobody(&impostor_exe);
        c.arg("-f").arg(&conf).arg("/dev/null");
        c
    });
    for p in [&reused, &impostor] {
        assert!(wait_until(5 * SEC, || names_conf(p.pid(), &conf)).is_some(), "attacker never ran");
    }
    // The pids "reused" after a crash: planted in the stale pidfiles.
    fs::write(node.pid_file("r1"), format!("{}\n", reused.pid())).expect("plant pid");
    fs::write(node.vrrp_pid_file("r1"), format!("{}\n", impostor.pid())).expect("plant pid");

    node.start();
    let socket = node.state_path.join("harouterd.sock");
    let (shown, _) = wait_for(10 * SEC, || json_u32(&get(&socket, "/v1/routers/r1")?, "keepalived_pid"))
        .unwrap_or_else(|| panic!("no keepalived pid in status\n{}", node.log_text()));
    assert_ne!(shown, reused.pid(), "the daemon adopted nobody's `tail -f CONF`\n{}", node.log_text());
    assert!(is_real_keepalived(shown), "status shows pid {shown}, not a keepalived\n{}", node.log_text());
    let up = wait_until(10 * SEC, || {
        read_pid(&node.pid_file("r1")) == Some(shown)
            && read_pid(&node.vrrp_pid_file("r1")).is_some_and(|v| v != impostor.pid() && is_real_keepalived(v))
    });
    assert!(up.is_some(), "the real keepalived never came up fully\n{}", node.log_text());

    // A reload (keepalived.conf changes: one SIGHUP for keepalived), then
    // a stop (on_exit = stop: SIGTERM).
    lab.nodes[0].daemon_extra.push("keepalived_email_from = reload@example.org".into());
    lab.write_config(0);
    let node = &lab.nodes[0];
    node.signal(libc::SIGHUP);
    let reloaded = wait_until(10 * SEC, || node.log_text().contains("keepalived.conf changed, reloading keepalived"));
    assert!(reloaded.is_some(), "no reload\n{}", node.log_text());
    node.signal(libc::SIGTERM);
    let status = node.wait_exit(15 * SEC).unwrap_or_else(|| panic!("daemon never exited\n{}", node.log_text()));
    assert_eq!(status.code(), Some(0), "{}", node.log_text());
    assert!(
        processes_matching(&format!("-f {} ", conf.display())).iter().all(|&p| !is_real_keepalived(p)),
        "keepalived still runs after on_exit = stop"
    );

    assert_eq!(reused.ended(), None, "nobody's `tail -f CONF` was signalled\n{}", node.log_text());
    assert_eq!(impostor.ended(), None, "nobody's fake keepalived was signalled\n{}", node.log_text());
    let log = node.log_text();
    for pid in [reused.pid(), impostor.pid()] {
        assert!(log.contains(&format!("pid {pid}")), "no warning names the planted pid {pid}:\n{log}");
    }
}

// ---------------------------------------------------------------------------
// 15.4

/// A router with the health-check script (a gateway route, checks on).
fn health_check_config(state: &Path, ns: &Netns) -> String {
    format!(
        "[daemon]\nstate_path = {}\nkeepalived_path = {}\nha_vrrp_advert_int = 1\n\
         ha_vrrp_health_check_interval = 5\non_exit = stop\n\
         [router r1]\nnamespace = {}\nha_interface = ha-a\nvrid = 1\n\
         vip = 10.0.0.1/24 dev ha-a\nroute = 0.0.0.0/0 via 10.0.0.254\n",
        state.display(),
        tool("keepalived").display(),
        ns.name()
    )
}

/// Under `umask 000` the daemon's directories must still be private: no
/// directory it creates is group- or world-writable, and nobody cannot
/// replace the health-check script keepalived runs as root.
#[test]
fn item4_under_umask_000_nobody_cannot_replace_the_health_check_script() {
    if !common::require_root_and(&["keepalived", "ip", "setpriv", "sh"]) {
        return;
    }
    let ns = Netns::new("atk4u");
    common::add_veth_pair(&ns, "ha-a", "ha-b");
    ns.ip(&["addr", "add", "169.254.192.1/18", "dev", "ha-a"]);
    let dir = TempDir::new("atk4u");
    let state = dir.join("state");
    let config = dir.join("harouterd.conf");
    write_config(&config, &health_check_config(&state, &ns));
    let mut daemon = Daemon::start(&config, dir.path(), Some(0));
    let router = state.join("ha_confs").join("r1");
    let script = router.join("ha_check_script_1.sh");
    let written = wait_until(10 * SEC, || script.exists());
    assert!(written.is_some(), "no health-check script\n{}", daemon.log());
    let original = fs::read(&script).expect("read script");

    for d in [&state, &state.join("ha_confs"), &router] {
        assert_eq!(mode(d) & 0o022, 0, "{} is mode {:04o} under umask 000", d.display(), mode(d));
    }
    let attack = nobody("sh")
        .args([
            "-c",
            "printf '#!/bin/sh\\nid > /tmp/pwned\\n' > \"$1/.x\" && mv -f \"$1/.x\" \"$1/ha_check_script_1.sh\"",
            "sh",
        ])
        .arg(&router)
        .output()
        .expect("run the attack");
    assert!(!attack.status.success(), "nobody replaced the health-check script");
    assert_eq!(fs::read(&script).expect("read script"), original, "the script changed");
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(15 * SEC).is_some(), "daemon never exited\n{}", daemon.log());
}

/// State directories others can write, or owned by nobody, or under a
/// parent others can write: refused at start with exit 2 and a message
/// naming the directory and why, before anything is written into them.
#[test]
fn item4_unsafe_state_directories_are_refused_at_start() {
    if !common::require_root_and(&[]) {
        return;
    }
    type Setup = fn(&Path);
    let cases: [(&str, Setup, &str); 5] = [
        ("state", |d| chmod(d, 0o777), "writable by others"),
        ("state", |d| chown(d, NOBODY, NOBODY), "owned by uid 65534"),
        ("state/ha_confs", |d| chown(d, NOBODY, NOBODY), "owned by uid 65534"),
        ("state/ha_confs", |d| chmod(d, 0o775), "writable by its group"),
        ("parent", |d| chmod(d, 0o777), "writable by others"),
    ];
    for (which, setup, reason) in cases {
        let dir = TempDir::new("atk4d");
        let parent = dir.join("parent");
        let state = parent.join("state");
        fs::create_dir_all(state.join("ha_confs")).expect("mkdir");
        for d in [&parent, &state, &state.join("ha_confs")] {
            chmod(d, 0o755);
        }
        let target = match which {
            "parent" => parent.clone(),
            other => parent.join(other),
        };
        setup(&target);
        let config = dir.join("harouterd.conf");
        write_config(&config, &format!("[daemon]\nstate_path = {}\n", state.display()));
        let (code, log) = run_expecting_refusal(&config, dir.path());
        assert_eq!(code, Some(2), "{which} ({reason}): not refused\n{log}");
        assert!(log.contains(&target.display().to_string()) && log.contains(reason), "{which}: unclear error:\n{log}");
        assert!(!state.join("harouterd.sock").exists(), "{which}: a socket was created");
    }
}

/// A router directory swapped for a symlink to another directory (as root
/// could do by mistake, or anyone who could write ha_confs): the daemon's
/// next state write must not land in the symlink's target.
#[test]
fn item4_a_router_directory_swapped_for_a_symlink_gets_no_state_through_it() {
    if !common::require_root_and(&["ip"]) {
        return;
    }
    let lab = Lab::new("atk4s", &["n1"], vec![RouterSpec::monitor_only("r1", 1)], &[]);
    let node = &lab.nodes[0];
    let ns = lab.ns(0, "r1");
    ns.ip(&["addr", "add", "169.254.0.1/24", "dev", "ha-r1"]);
    node.start();
    let primary = wait_until(10 * SEC, || node.state("r1").as_deref() == Some("primary"));
    assert!(primary.is_some(), "never primary\n{}", node.log_text());

    let victim = TempDir::new("atk4s-victim");
    let dir = node.router_dir("r1");
    fs::rename(&dir, dir.with_extension("moved")).expect("move the router dir");
    std::os::unix::fs::symlink(victim.path(), &dir).expect("plant the symlink");
    ns.ip(&["addr", "del", "169.254.0.1/24", "dev", "ha-r1"]);
    let seen = wait_until(10 * SEC, || {
        victim.join("state").exists() || node.log_text().contains(&format!("{}: a symlink", dir.display()))
    });
    assert!(seen.is_some(), "neither written nor refused\n{}", node.log_text());
    assert!(!victim.join("state").exists(), "root wrote `state` through the symlink\n{}", node.log_text());
    assert_eq!(fs::read_dir(victim.path()).expect("read victim").count(), 0, "something was written into the target");
}

// ---------------------------------------------------------------------------
// 15.5

/// Forks a process that becomes uid/gid 65534 and, for ever, swaps the
/// socket at `socket` for a symlink to `target` the moment one appears,
/// keeps it there a while (long enough for a chmod by name to follow it),
/// then removes it so the next daemon start finds the path free. Killed
/// on drop (and with its parent: PR_SET_PDEATHSIG).
struct Racer(libc::pid_t);

impl Racer {
    fn start(socket: &Path, target: &Path) -> Racer {
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("no NUL");
        let (socket, target, link) = (c(socket), c(target), c(&socket.with_extension("lnk")));
        // SAFETY: the child only makes async-signal-safe system calls on
        // strings prepared before the fork, and never returns.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
            if pid > 0 {
                return Racer(pid);
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(NOBODY) != 0 || libc::setuid(NOBODY) != 0 {
                libc::_exit(1);
            }
            let mut st: libc::stat = std::mem::zeroed();
            loop {
                libc::symlink(target.as_ptr(), link.as_ptr());
                if libc::lstat(socket.as_ptr(), &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK {
                    libc::rename(link.as_ptr(), socket.as_ptr());
                    let mut t0: libc::timespec = std::mem::zeroed();
                    let mut t: libc::timespec = std::mem::zeroed();
                    libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t0);
                    while {
                        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t);
                        (t.tv_sec - t0.tv_sec) * 1_000_000_000 + (t.tv_nsec - t0.tv_nsec) < 20_000_000
                    } {}
                    if libc::lstat(socket.as_ptr(), &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                        libc::unlink(socket.as_ptr());
                    }
                }
            }
        }
    }
}

impl Drop for Racer {
    fn drop(&mut self) {
        // SAFETY: our own child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// The socket's directory belongs to nobody, who loops swapping the socket
/// for a symlink to a root-only file while the daemon is started again and
/// again: the file's mode and owner never change, and the daemon refuses
/// the directory (exit 2) instead of racing.
#[test]
fn item5_the_control_socket_race_never_reaches_a_root_file() {
    if !common::require_root_and(&[]) {
        return;
    }
    let dir = TempDir::new("atk5");
    let state = dir.join("state");
    fs::create_dir(&state).expect("mkdir");
    let sock_dir = dir.join("sock");
    fs::create_dir(&sock_dir).expect("mkdir");
    chown(&sock_dir, NOBODY, NOBODY);
    let target = dir.join("root-only");
    fs::write(&target, "secret").expect("target");
    chmod(&target, 0o600);
    let before = fs::metadata(&target).expect("stat");
    let socket = sock_dir.join("harouterd.sock");
    let config = dir.join("harouterd.conf");
    write_config(
        &config,
        &format!(
            "[daemon]\nstate_path = {}\nsocket = {}\nsocket_mode = 0666\nsocket_group = {NOBODY}\n",
            state.display(),
            socket.display()
        ),
    );
    let _racer = Racer::start(&socket, &target);
    let mut codes = Vec::new();
    for round in 0..15 {
        let mut daemon = Daemon::start(&config, dir.path(), None);
        let _ = wait_for(10 * SEC, || {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Some(status.code());
            }
            daemon.log().contains("starting with").then_some(None)
        });
        if daemon.child.try_wait().ok().flatten().is_none() {
            daemon.signal(libc::SIGTERM);
        }
        let status = daemon.wait_exit(10 * SEC).expect("daemon exited");
        codes.push(status.code());
        let now = fs::metadata(&target).expect("stat");
        assert_eq!(
            (now.mode(), now.uid(), now.gid()),
            (before.mode(), before.uid(), before.gid()),
            "round {round}: root changed the target through nobody's symlink\n{}",
            daemon.log()
        );
        assert_eq!(status.code(), Some(2), "round {round}: nobody's socket directory accepted\n{}", daemon.log());
        assert!(daemon.log().contains(&format!("{}: owned by uid 65534", sock_dir.display())), "{}", daemon.log());
    }
    assert_eq!(fs::read_to_string(&target).expect("read"), "secret");
}

// ---------------------------------------------------------------------------
// 15.6

/// A VRRP password on a line without `=`: neither `check` nor the daemon's
/// log of a rejected reload may show it.
#[test]
fn item6_a_password_in_a_malformed_line_is_never_echoed() {
    if !common::require_root_and(&[]) {
        return;
    }
    let dir = TempDir::new("atk6");
    let config = dir.join("harouterd.conf");
    let good = format!("[daemon]\nstate_path = {}\n", dir.join("state").display());
    let bad = format!(
        "{good}ha_vrrp_auth_password: Hunter2x\n[router r1]\nauth_password Swordfi5h\nvrid = 1\nha_interface = ha\n"
    );
    write_config(&config, &bad);
    let out: Output = Command::new(BIN).args(["check", "-c"]).arg(&config).output().expect("check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(":3: ") && stderr.contains(":5: "), "errors name the lines: {stderr}");
    for secret in ["Hunter2x", "Swordfi5h"] {
        assert!(!stderr.contains(secret), "check echoed the password: {stderr}");
    }

    write_config(&config, &good);
    let mut daemon = Daemon::start(&config, dir.path(), None);
    daemon.wait_log("starting with 0 routers", 10 * SEC);
    write_config(&config, &bad);
    daemon.signal(libc::SIGHUP);
    daemon.wait_log(":5: ", 10 * SEC);
    let log = daemon.log();
    assert!(log.contains("reload rejected"), "{log}");
    for secret in ["Hunter2x", "Swordfi5h"] {
        assert!(!log.contains(secret), "the log shows the password:\n{log}");
    }
}

// ---------------------------------------------------------------------------
// Extras

/// The daemon holds the VRRP password in memory: a crash must leave no core
/// file (PR_SET_DUMPABLE 0). The same setup makes `sleep` dump core, so the
/// machine does dump cores.
#[test]
fn extra_the_daemon_never_dumps_core() {
    if !common::require_root_and(&["sleep"]) {
        return;
    }
    let dir = TempDir::new("atkcore");
    let unlimited = |command: &mut Command| {
        command.current_dir(dir.path());
        // SAFETY: setrlimit(2) only, between fork and exec.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
                libc::setrlimit(libc::RLIMIT_CORE, &limit);
                Ok(())
            });
        }
    };
    let mut control = Command::new(tool("sleep"));
    control.arg("60");
    unlimited(&mut control);
    let mut control = control.spawn().expect("sleep");
    send_signal(control.id(), libc::SIGABRT);
    let status = control.wait().expect("wait");
    assert!(status.core_dumped(), "this machine dumps no core for a plain process ({status}): cannot test");
    let _ = fs::remove_file(dir.join("core"));

    let config = dir.join("harouterd.conf");
    write_config(
        &config,
        &format!("[daemon]\nstate_path = {}\nha_vrrp_auth_password = Hunter2x\n", dir.join("state").display()),
    );
    let log = fs::File::create(dir.join("daemon.log")).expect("log");
    let mut command = Command::new(BIN);
    command.args(["run", "--foreground", "-c"]).arg(&config).arg("--pidfile").arg(dir.join("p.pid")).stderr(log);
    unlimited(&mut command);
    let mut daemon = Daemon { child: command.spawn().expect("daemon"), log: dir.join("daemon.log") };
    daemon.wait_log("starting with 0 routers", 10 * SEC);
    daemon.signal(libc::SIGABRT);
    let status = daemon.wait_exit(10 * SEC).expect("exited");
    assert_eq!(status.signal(), Some(libc::SIGABRT));
    assert!(!status.core_dumped(), "the daemon dumped core");
    let cores: Vec<_> = fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with("core"))
        .collect();
    assert!(cores.is_empty(), "core files: {cores:?}");
}

/// `check` warns (stderr, exit 0) about a config file others can change or
/// that root does not own, and about a transition script others can change.
#[test]
fn extra_check_warns_about_files_others_can_change() {
    if !common::require_root_and(&[]) {
        return;
    }
    let dir = TempDir::new("atkchk");
    let script = dir.join("transition.sh");
    fs::write(&script, "#!/bin/sh\n").expect("script");
    let config = dir.join("harouterd.conf");
    let text = format!("[daemon]\nstate_path = /var/lib/x\ntransition_script = {}\n", script.display());
    let check = || {
        let out = Command::new(BIN).args(["check", "-c"]).arg(&config).output().expect("check");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };

    write_config(&config, &text);
    chmod(&script, 0o755);
    assert_eq!(check(), (Some(0), String::new()), "a safe setup gets no warning");

    chmod(&config, 0o666);
    let (code, stderr) = check();
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains(&format!("{}: warning: ", config.display())) && stderr.contains("writable by others"),
        "{stderr}"
    );
    chmod(&config, 0o600);
    chown(&config, NOBODY, NOBODY);
    let (code, stderr) = check();
    assert_eq!(code, Some(0));
    assert!(stderr.contains("owned by uid 65534"), "{stderr}");
    chown(&config, 0, 0);

    chmod(&script, 0o757);
    let (code, stderr) = check();
    assert_eq!(code, Some(0));
    assert!(stderr.contains(&script.display().to_string()) && stderr.contains("writable by others"), "{stderr}");
    chmod(&script, 0o755);
    let evil = dir.join("nobody");
    fs::create_dir(&evil).expect("mkdir");
    chown(&evil, NOBODY, NOBODY);
    let moved = evil.join("transition.sh");
    fs::rename(&script, &moved).expect("move");
    write_config(&config, &text.replace(&script.display().to_string(), &moved.display().to_string()));
    let (code, stderr) = check();
    assert_eq!(code, Some(0));
    assert!(stderr.contains(&format!("{}: owned by uid 65534", evil.display())), "{stderr}");
}
