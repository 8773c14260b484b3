//! `harouterd state-change`, the Neutron drop-in monitor, for real: the
//! binary runs against a namespace the test creates, addresses are changed
//! with `ip`, the agent is a real Unix-socket HTTP receiver, conntrackd is
//! the real program (a real daemon in the namespace, or none at all, so
//! that every sync command really fails).
//!
//! The monitor is started the ways Neutron starts it: as releases up to 28
//! do (a blocking execute whose pipes are read to EOF, then `--pid_file`),
//! as 29+ do (an async child whose pipes are never read, tracked by
//! `--pid_file`), or `--foreground`. The test process is a child subreaper,
//! so a detached monitor becomes its child: its exit status can be waited
//! for, and nothing is left behind.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::http_receiver::Receiver;
use common::{Netns, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_harouterd");
const VIP: &str = "169.254.0.1/24";
const IFACE: &str = "ha-a";
const SECOND: Duration = Duration::from_secs(1);
const NOBODY: u32 = 65534;
/// Neutron's pid file name for router r1 (`ProcessManager` with uuid
/// `r1.monitor`, service `neutron-keepalived-state-change-monitor`).
const PID_NAME: &str = "r1.monitor.pid.neutron-keepalived-state-change-monitor";
/// What Neutron's `ProcessManager.active` looks for in the command line.
const UUID: &str = "r1.monitor";
/// "At once" for a blocking start: generous for a loaded 2-CPU box, far
/// from Neutron 28's 60 s timeout on a monitor that never returns.
const AT_ONCE: Duration = Duration::from_secs(3);
/// A blocking start that has not returned by then never will.
const HANG: Duration = Duration::from_secs(15);

fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: prctl with integer arguments.
    ONCE.call_once(|| assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0));
}

/// A monitor process: our direct child (`--foreground`) or a detached one
/// (re-parented to us, the subreaper).
enum Monitor {
    Child(Child),
    Detached(i32),
}

impl Monitor {
    fn pid(&self) -> i32 {
        match self {
            Monitor::Child(c) => c.id() as i32,
            Monitor::Detached(pid) => *pid,
        }
    }

    /// The exit code (128 + signal when killed) once it has exited.
    fn try_exit(&mut self) -> Option<i32> {
        match self {
            Monitor::Child(c) => c.try_wait().unwrap().map(|s| s.code().unwrap_or(128)),
            Monitor::Detached(pid) => {
                let mut status = 0;
                // SAFETY: waitpid on a pid re-parented to us.
                let rc = unsafe { libc::waitpid(*pid, &mut status, libc::WNOHANG) };
                assert!(rc >= 0, "waitpid {pid}: {}", std::io::Error::last_os_error());
                (rc == *pid).then(|| {
                    if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) }
                })
            }
        }
    }

    fn kill(&mut self) {
        // SAFETY: kill(2) on our (adopted) child.
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.try_exit().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// `/proc/PID/cmdline` with NULs as spaces, as `ProcessManager.cmdline`
/// joins `psutil.Process(pid).cmdline()`.
fn cmdline(pid: i32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ").trim_end().to_string()
}

/// The pid in `path`, as `ProcessManager.pid` reads it (`int(f.read())`).
fn pid_in(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A `/proc/PID/status` field, as its text.
fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in\n{status}"))
        .trim()
        .to_string()
}

fn cap_mask(status: &str, name: &str) -> u64 {
    u64::from_str_radix(&status_field(status, name), 16).unwrap()
}

/// Runs `script` with `sh -c` as uid/gid 65534: the agent user planting
/// things for real.
fn as_nobody(script: &str) {
    let out = Command::new("sh").arg("-c").arg(script).uid(NOBODY).gid(NOBODY).output().unwrap();
    assert!(out.status.success(), "as uid {NOBODY}: {script}: {}", String::from_utf8_lossy(&out.stderr));
}

fn chown_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// One monitor as Neutron's L3 agent runs it: its namespace and HA
/// interface, the agent's directories and receiver. Not a daemon lab
/// (`common::lab::Lab` is that): no harouterd daemon, no keepalived.
struct MonitorLab {
    ns: Netns,
    dir: TempDir,
    conf_dir: PathBuf,
    receiver: Option<Receiver>,
    monitor: Option<Monitor>,
    /// Neutron 29's handle on what it started: kept, pipes never read.
    agent_child: Option<Child>,
    conntrackd: Option<Child>,
}

impl MonitorLab {
    /// A namespace with veth pair ha-a/ha-b (ha-a is monitored), a conf dir,
    /// Neutron's pid directory, and the agent's receiver listening.
    fn new(name: &str) -> MonitorLab {
        become_subreaper();
        let ns = Netns::new(name);
        common::add_veth_pair(&ns, IFACE, "ha-b");
        let dir = TempDir::new(name);
        let conf_dir = dir.join("ha_confs/r1");
        fs::create_dir_all(&conf_dir).unwrap();
        fs::create_dir_all(dir.join("external/pids")).unwrap();
        let mut lab =
            MonitorLab { ns, dir, conf_dir, receiver: None, monitor: None, agent_child: None, conntrackd: None };
        lab.listen();
        lab
    }

    fn agent_socket(&self) -> PathBuf {
        self.dir.join("keepalived-state-change")
    }

    fn listen(&mut self) {
        let receiver = Receiver::start(self.agent_socket());
        fs::set_permissions(self.agent_socket(), fs::Permissions::from_mode(0o666)).unwrap();
        self.receiver = Some(receiver);
    }

    fn receiver(&self) -> &Receiver {
        self.receiver.as_ref().expect("receiver running")
    }

    fn log_path(&self) -> PathBuf {
        self.conf_dir.join("neutron-keepalived-state-change.log")
    }

    fn pid_path(&self) -> PathBuf {
        self.dir.join("external/pids").join(PID_NAME)
    }

    /// The agent user owns what Neutron's agent owns: the conf dirs and
    /// the pid directory (and, for renames, their parents).
    fn agent_owns_its_directories(&self) {
        for d in [
            self.dir.join("ha_confs"),
            self.conf_dir.clone(),
            self.dir.join("external"),
            self.dir.join("external/pids"),
        ] {
            chown_nobody(&d);
        }
    }

    /// Neutron's exact command line (ha_router.py), plus `extra`.
    fn args(&self, namespace: &str, cidr: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "--router_id",
            "r1",
            "--namespace",
            namespace,
            "--conf_dir",
            self.conf_dir.to_str().unwrap(),
            "--log-file",
            self.log_path().to_str().unwrap(),
            "--monitor_interface",
            IFACE,
            "--monitor_cidr",
            cidr,
            "--pid_file",
            self.pid_path().to_str().unwrap(),
            "--state_path",
            self.dir.path().to_str().unwrap(),
            "--debug",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Starts the monitor as Neutron up to 28 does and requires success.
    fn start(&mut self, extra: &[&str]) {
        let args = self.args(self.ns.name(), VIP, extra);
        let (out, took) = self.run_blocking(Command::new(BIN).arg("state-change").args(args));
        assert!(out.status.success(), "start failed ({}): {}\nlog:\n{}", out.status, show(&out), self.log());
        assert!(took < AT_ONCE, "the blocking start took {took:?}");
    }

    /// Neutron up to 28 (`utils.execute`): stdin, stdout and stderr on
    /// pipes, both outputs read to EOF and the exit status waited for (what
    /// `Popen.communicate()` does); then the pid file is read at once. On
    /// success the pid file must name the running monitor. Where Neutron
    /// would wait for ever, this fails after [`HANG`].
    fn run_blocking(&mut self, command: &mut Command) -> (Output, Duration) {
        let started = Instant::now();
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let pipes: [(usize, Box<dyn Read + Send>); 2] =
            [(1, Box::new(child.stdout.take().unwrap())), (2, Box::new(child.stderr.take().unwrap()))];
        for (fd, mut pipe) in pipes {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                let _ = tx.send((fd, bytes));
            });
        }
        // communicate(): both pipes at EOF (nobody holds them any more) ...
        let mut outputs = [Vec::new(), Vec::new()];
        let mut closed = 0;
        while closed < 2 {
            let Ok((fd, bytes)) = rx.recv_timeout(HANG.saturating_sub(started.elapsed())) else { break };
            outputs[fd - 1] = bytes;
            closed += 1;
        }
        // ... and the exit status.
        let status = common::lab::wait_for(HANG.saturating_sub(started.elapsed()), || child.try_wait().unwrap());
        let took = started.elapsed();
        let (2, Some((status, _))) = (closed, status) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the blocking start did not return within {HANG:?} (Neutron <= 28 would wait for ever)\nlog:\n{}",
                self.log()
            );
        };
        let [stdout, stderr] = outputs;
        let out = Output { status, stdout, stderr };
        if out.status.success() {
            let pid = pid_in(&self.pid_path()).unwrap_or_else(|| panic!("no pid in the pid file after {took:?}"));
            self.monitor = Some(Monitor::Detached(pid));
        }
        (out, took)
    }

    /// Neutron 29+ (`utils.create_process` with `async_process=True`): an
    /// async child with stdin, stdout and stderr on pipes nobody reads;
    /// the monitor is then known by the pid file alone.
    fn start_async(&mut self, args: &[String]) -> (i32, Duration) {
        let started = Instant::now();
        let child = Command::new(BIN)
            .arg("state-change")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let direct = child.id() as i32;
        self.agent_child = Some(child);
        let found = common::lab::wait_for(Duration::from_secs(10), || {
            pid_in(&self.pid_path()).filter(|&pid| pid != direct && cmdline(pid).contains(UUID))
        });
        let (pid, _) = found.unwrap_or_else(|| panic!("no running monitor in the pid file\nlog:\n{}", self.log()));
        self.monitor = Some(Monitor::Detached(pid));
        (pid, started.elapsed())
    }

    /// `--foreground`: our direct child, stdout/stderr as given.
    fn start_foreground(&mut self, args: &[String], stdout: Stdio, stderr: Stdio) {
        let child = Command::new(BIN)
            .arg("state-change")
            .args(args)
            .arg("--foreground")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.monitor = Some(Monitor::Child(child));
    }

    fn pid(&self) -> i32 {
        self.monitor.as_ref().expect("monitor running").pid()
    }

    fn ip(&self, args: &[&str]) {
        self.ns.ip(args);
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits until the log holds `needle` (tests may sleep; the product may not).
    fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "log never showed {needle:?}:\n{log}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn state(&self) -> String {
        fs::read_to_string(self.conf_dir.join("state")).unwrap_or_default()
    }

    /// The state file, once it says `want`: it is written right after the
    /// agent's notification has gone out, so a test that has just seen the
    /// notification may look a moment too early.
    fn wait_state(&self, want: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state();
            if state == want || Instant::now() >= deadline {
                return state;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The notifications so far, as states, once there are `count` of them.
    fn states(&self, count: usize, timeout: Duration) -> Vec<String> {
        let got: Vec<String> = self.receiver().wait_for(count, timeout).into_iter().map(|n| n.state).collect();
        assert!(got.len() >= count, "expected {count} notifications, got {got:?}\nlog:\n{}", self.log());
        got
    }

    /// SIGTERM to the pid (as `ProcessManager.disable` sends it): the exit
    /// code and how long it took.
    fn terminate(&mut self) -> (i32, Duration) {
        let monitor = self.monitor.as_mut().expect("monitor running");
        let started = Instant::now();
        // SAFETY: kill(2) on the monitor's pid.
        unsafe { libc::kill(monitor.pid(), libc::SIGTERM) };
        let deadline = started + Duration::from_secs(5);
        loop {
            if let Some(code) = monitor.try_exit() {
                self.monitor = None;
                return (code, started.elapsed());
            }
            assert!(Instant::now() < deadline, "monitor ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn still_running(&mut self) -> bool {
        self.monitor.as_mut().is_some_and(|m| m.try_exit().is_none())
    }

    /// A real conntrackd in the namespace, with its config where Neutron
    /// puts it (CONF_DIR/conntrackd.conf).
    fn start_conntrackd(&mut self) -> PathBuf {
        self.ip(&["addr", "add", "169.254.192.1/18", "dev", "ha-b"]);
        let d = self.dir.path().display();
        let conf = format!(
            "General {{\n HashSize 1024\n HashLimit 4096\n Syslog off\n LogFile {d}/conntrackd.log\n \
             LockFile {d}/conntrackd.lock\n UNIX {{\n  Path {d}/conntrackd.ctl\n }}\n \
             SocketBufferSize 262142\n SocketBufferSizeMaxGrown 655355\n}}\n\
             Sync {{\n Mode FTFW {{\n }}\n Multicast {{\n  IPv4_address 225.0.0.50\n  Group 3780\n  \
             IPv4_interface 169.254.192.1\n  Interface ha-b\n  Checksum on\n }}\n}}\n"
        );
        let path = self.conf_dir.join("conntrackd.conf");
        fs::write(&path, conf).unwrap();
        let child = Command::new(common::tool("ip"))
            .args(["netns", "exec", self.ns.name()])
            .arg(common::tool("conntrackd"))
            .arg("-C")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.conntrackd = Some(child);
        let ctl = self.dir.join("conntrackd.ctl");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ctl.exists() {
            assert!(Instant::now() < deadline, "conntrackd did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        self.dir.join("conntrackd.log")
    }
}

impl Drop for MonitorLab {
    fn drop(&mut self) {
        if let Some(monitor) = self.monitor.as_mut() {
            monitor.kill();
        }
        for child in [self.agent_child.as_mut(), self.conntrackd.as_mut()].into_iter().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn show(out: &Output) -> String {
    format!("stdout: {:?}, stderr: {:?}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Lines of `log` that contain any of `needles`, each reduced to the
/// needle it contains, in order.
fn sequence(log: &str, needles: &[&str]) -> Vec<String> {
    log.lines().filter_map(|line| needles.iter().find(|n| line.contains(**n)).map(|n| n.to_string())).collect()
}

fn needs_root() -> bool {
    common::require_root_and(&["ip"])
}

#[test]
fn initial_backup_is_notified_at_once() {
    if !needs_root() {
        return;
    }
    let mut lab = MonitorLab::new("scb");
    let started = Instant::now();
    lab.start(&[]);
    let first = lab.receiver().wait_for(1, Duration::from_secs(5));
    assert_eq!(first.first().map(|n| n.state.as_str()), Some("backup"), "log:\n{}", lab.log());
    let after = first[0].received_at - started;
    assert!(after < SECOND, "initial state notified after {after:?}");
    println!("initial backup notified {after:?} after start");
    assert_eq!(first[0].router_id, "r1");
    assert_eq!(lab.wait_state("backup", SECOND), "backup");
    let log = lab.wait_log("Notified agent router r1, state backup", SECOND);
    assert_eq!(
        sequence(&log, &["Initial status of router r1 is backup", "Wrote router r1 state backup", "Notified agent"]),
        ["Initial status of router r1 is backup", "Wrote router r1 state backup", "Notified agent"]
    );
    assert!(!log.contains("conntrack"), "conntrackd is disabled:\n{log}");
    // The pid file holds the monitor's pid, no newline, as Neutron's do.
    assert_eq!(fs::read_to_string(lab.pid_path()).unwrap(), lab.pid().to_string());
    let request = &lab.receiver().requests()[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/"));
    assert_eq!(request.header("connection"), Some("close"));
}

#[test]
fn initial_primary_when_the_address_is_already_there() {
    if !needs_root() {
        return;
    }
    let mut lab = MonitorLab::new("scp");
    lab.ip(&["addr", "add", VIP, "dev", IFACE]);
    let started = Instant::now();
    lab.start(&[]);
    let first = lab.receiver().wait_for(1, Duration::from_secs(5));
    assert_eq!(first.first().map(|n| n.state.as_str()), Some("primary"), "log:\n{}", lab.log());
    assert!(first[0].received_at - started < SECOND);
    assert_eq!(lab.wait_state("primary", SECOND), "primary");
    lab.wait_log("Initial status of router r1 is primary", SECOND);
    lab.wait_log("Notified agent router r1, state primary", SECOND);
}

#[test]
fn transitions_follow_the_monitored_cidr_only() {
    if !needs_root() {
        return;
    }
    let mut lab = MonitorLab::new("sct");
    lab.start(&[]);
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["backup"]);

    // None of these is the monitored CIDR on the monitored interface.
    lab.ip(&["addr", "add", "10.0.0.1/24", "dev", IFACE]);
    lab.ip(&["addr", "add", VIP, "dev", "ha-b"]);
    lab.ip(&["addr", "add", "169.254.0.1/25", "dev", IFACE]);
    lab.ip(&["addr", "del", "169.254.0.1/25", "dev", IFACE]);
    // This one is: the next notification must be exactly it.
    lab.ip(&["addr", "add", VIP, "dev", IFACE]);
    assert_eq!(lab.states(2, Duration::from_secs(5)), ["backup", "primary"]);
    assert_eq!(lab.wait_state("primary", SECOND), "primary");
    lab.ip(&["addr", "del", VIP, "dev", IFACE]);
    assert_eq!(lab.states(3, Duration::from_secs(5)), ["backup", "primary", "backup"]);
    assert_eq!(lab.wait_state("backup", SECOND), "backup");
    // The third state written (right after its notification went out).
    let deadline = Instant::now() + SECOND;
    while lab.log().matches("Wrote router r1 state").count() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let log = lab.log();
    assert_eq!(log.matches("Wrote router r1 state").count(), 3, "{log}");
    // Nothing more arrives for the unrelated changes.
    lab.ip(&["addr", "del", VIP, "dev", "ha-b"]);
    lab.ip(&["addr", "add", VIP, "dev", IFACE]);
    assert_eq!(lab.states(4, Duration::from_secs(5)), ["backup", "primary", "backup", "primary"]);
}

#[test]
fn conntrackd_sync_runs_in_order_for_each_transition() {
    if !common::require_root_and(&["ip", "conntrackd"]) {
        return;
    }
    let mut lab = MonitorLab::new("scc");
    let ctd_log = lab.start_conntrackd();
    lab.start(&["--enable_conntrackd"]);
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["backup"]);
    lab.ip(&["addr", "add", VIP, "dev", IFACE]);
    assert_eq!(lab.states(2, Duration::from_secs(5)), ["backup", "primary"]);
    let log = lab.wait_log("Notified agent router r1, state primary", SECOND);
    let conf = lab.conf_dir.join("conntrackd.conf");
    // By the absolute path found in fixed root-owned directories.
    let program = harouterd::conntrackd::sync::locate().unwrap();
    assert!(program.is_absolute());
    let exec = |opt: &str| format!("Executing \"{} -C {} {opt}\" on router r1", program.display(), conf.display());
    let (t, n, c, f, r, b) = (exec("-t"), exec("-n"), exec("-c"), exec("-f"), exec("-R"), exec("-B"));
    let needles = [
        "Initial status of router r1 is backup",
        // conntrackd's first command (which the agent waits for) starts
        // before the state file is written: nothing on the disk delays it.
        t.as_str(),
        "Wrote router r1 state backup",
        n.as_str(),
        "Synced connection tracking state on backup for router r1",
        "Notified agent router r1, state backup",
        "Detected state change to: primary",
        c.as_str(),
        "Wrote router r1 state primary",
        f.as_str(),
        r.as_str(),
        b.as_str(),
        "Synced connection tracking state on primary for router r1",
        "Notified agent router r1, state primary",
    ];
    assert_eq!(sequence(&log, &needles), needles, "log:\n{log}");
    assert!(!log.contains("Failed to sync"), "{log}");
    // conntrackd itself received the commands.
    let ctd = fs::read_to_string(ctd_log).unwrap();
    assert!(ctd.contains("resync requested") && ctd.contains("sending bulk update"), "{ctd}");
}

#[test]
fn agent_socket_missing_then_appearing_gets_the_latest_state() {
    if !needs_root() {
        return;
    }
    let mut lab = MonitorLab::new("scm");
    lab.receiver.take().unwrap().stop();
    lab.start(&[]);
    lab.wait_log("Failed to notify agent router r1, state backup", Duration::from_secs(5));
    lab.ip(&["addr", "add", VIP, "dev", IFACE]);
    lab.wait_log("Wrote router r1 state primary", Duration::from_secs(5));
    assert_eq!(lab.state(), "primary");
    lab.listen();
    // Only the latest state is delivered.
    assert_eq!(lab.states(1, Duration::from_secs(10)), ["primary"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lab.receiver().notifications().len(), 1);
}

#[test]
fn agent_errors_are_retried_while_changes_keep_flowing() {
    if !needs_root() {
        return;
    }
    let mut lab = MonitorLab::new("scr");
    lab.receiver().set_responses(vec![500, 500, 500, 500]);
    lab.start(&[]);
    lab.receiver().wait_for_requests(2, Duration::from_secs(5));
    // The agent is still failing: address events are processed anyway.
    lab.ip(&["addr", "add", VIP, "dev", IFACE]);
    lab.wait_log("Wrote router r1 state primary", Duration::from_secs(5));
    assert_eq!(lab.states(1, Duration::from_secs(10)), ["primary"]);
    let requests = lab.receiver().requests();
    assert!(requests.len() >= 5, "4 failures then a success: {}", requests.len());
    assert!(lab.log().contains("answered status 500"), "{}", lab.log());
}

#[test]
fn missing_namespace_reports_backup_and_recovers_when_it_appears() {
    if !needs_root() {
        return;
    }
    let mut lab = MonitorLab::new("scn");
    let name = lab.ns.name().to_owned();
    // The namespace goes away before the monitor starts.
    common::run_ok(common::tool("ip"), &["netns", "del", &name]);
    let args = lab.args(&name, VIP, &[]);
    let (out, _) = lab.run_blocking(Command::new(BIN).arg("state-change").args(args));
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["backup"]);
    let log = lab.wait_log("Timeout reading the initial status of router r1, state is set to \"backup\".", SECOND);
    assert!(log.contains("Failed to get initial status of router r1: cannot open network namespace"), "{log}");
    assert_eq!(lab.wait_state("backup", SECOND), "backup");
    assert!(lab.still_running(), "the monitor must survive a missing namespace");

    // It appears later, with the VIP: the monitor picks it up.
    common::run_ok(common::tool("ip"), &["netns", "add", &name]);
    common::add_veth_pair(&lab.ns, IFACE, "ha-b");
    lab.ip(&["addr", "add", VIP, "dev", IFACE]);
    assert_eq!(lab.states(2, Duration::from_secs(10)), ["backup", "primary"]);
}

#[test]
fn a_cidr_that_is_not_a_cidr_reports_backup() {
    if !needs_root() {
        return;
    }
    let mut lab = MonitorLab::new("scx");
    let args = lab.args(lab.ns.name(), "not-a-cidr", &[]);
    let (out, _) = lab.run_blocking(Command::new(BIN).arg("state-change").args(args));
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["backup"]);
    let log = lab.wait_log("Timeout reading the initial status of router r1, state is set to \"backup\".", SECOND);
    assert!(log.contains("Failed to get initial status of router r1: --monitor_cidr 'not-a-cidr'"), "{log}");
    assert!(lab.still_running());
}

#[test]
fn deleting_the_monitored_interface_means_backup() {
    if !needs_root() {
        return;
    }
    let mut lab = MonitorLab::new("scd");
    lab.ip(&["addr", "add", VIP, "dev", IFACE]);
    lab.start(&[]);
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["primary"]);
    lab.ip(&["link", "del", IFACE]);
    assert_eq!(lab.states(2, Duration::from_secs(5)), ["primary", "backup"]);
    assert_eq!(lab.wait_state("backup", SECOND), "backup");
    lab.wait_log("interface ha-a was deleted", SECOND);
}

#[test]
fn sigterm_exits_zero_within_a_second_and_leaves_the_agents_files() {
    if !needs_root() {
        return;
    }
    let mut lab = MonitorLab::new("scs");
    lab.start(&[]);
    lab.states(1, Duration::from_secs(5));
    let (code, took) = lab.terminate();
    assert_eq!(code, 0);
    assert!(took < SECOND, "took {took:?}");
    println!("SIGTERM to exit: {took:?}");
    assert!(lab.pid_path().exists(), "the pid file belongs to the agent");
    assert_eq!(lab.state(), "backup");
}

#[test]
fn runs_under_the_neutron_name_and_refuses_a_second_instance() {
    if !needs_root() {
        return;
    }
    let mut lab = MonitorLab::new("scl");
    let link = lab.dir.join("neutron-keepalived-state-change");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let args = lab.args(lab.ns.name(), VIP, &[]);
    let (out, _) = lab.run_blocking(Command::new(&link).args(&args));
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["backup"]);

    // The second one fails before detaching: its caller gets status 1 and
    // the reason on stderr; the log has it too.
    let pid = lab.pid();
    let second = Command::new(&link).args(&args).stdin(Stdio::null()).output().unwrap();
    assert_eq!(second.status.code(), Some(1), "{}", show(&second));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains(&format!("held by pid {pid}")) && stderr.contains(PID_NAME), "{stderr}");
    let log = lab.wait_log(&format!("held by pid {pid}"), SECOND);
    assert!(log.contains(lab.pid_path().to_str().unwrap()), "{log}");
    assert!(lab.still_running());
    assert_eq!(pid_in(&lab.pid_path()), Some(pid), "the loser left the pid file alone");
}

#[test]
fn drops_privileges_and_still_syncs_conntrackd() {
    if !common::require_root_and(&["ip", "conntrackd"]) {
        return;
    }
    let mut lab = MonitorLab::new("scu");
    lab.start_conntrackd();
    // The unprivileged monitor writes CONF_DIR/state, as Neutron's does.
    let nobody = 65534;
    std::os::unix::fs::chown(&lab.conf_dir, Some(nobody), Some(nobody)).unwrap();
    lab.start(&["--user", "65534", "--group", "65534", "--enable_conntrackd"]);
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["backup"]);
    let pid = lab.pid();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| status.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_owned();
    assert!(field("Uid:").split_whitespace().skip(1).all(|u| u == "65534"), "{status}");
    assert!(field("Gid:").split_whitespace().skip(1).all(|g| g == "65534"), "{status}");
    lab.ip(&["addr", "add", VIP, "dev", IFACE]);
    assert_eq!(lab.states(2, Duration::from_secs(5)), ["backup", "primary"]);
    let log = lab.wait_log("Notified agent router r1, state primary", SECOND);
    assert!(log.contains("Synced connection tracking state on primary for router r1"), "{log}");
    assert!(!log.contains("Failed to sync"), "{log}");
    assert_eq!(lab.state(), "primary");
    assert!(Path::new(&lab.conf_dir.join("state")).exists());
}

// ---- how Neutron starts the monitor (issue 10.1) ----

/// What Neutron's `ProcessManager` checks, and what it needs to stop the
/// monitor: the pid file names a live process whose command line holds the
/// uuid (`r1.monitor`, from the pid file name Neutron passes) and the
/// router ID; it reports; SIGTERM to that pid ends it (exit 0, promptly).
fn behaves_as_neutron_expects(lab: &mut MonitorLab, direct: Option<u32>) {
    let pid = lab.pid();
    assert_eq!(pid_in(&lab.pid_path()), Some(pid));
    assert_ne!(Some(pid as u32), direct, "the pid file names the detached monitor, not the process started");
    let line = cmdline(pid);
    assert!(line.contains(UUID), "ProcessManager.active needs {UUID:?} in {line:?}");
    assert!(line.contains("--router_id r1"), "{line}");
    // Detached: its own session, stdio on /dev/null, nothing of the caller's.
    for fd in 0..3 {
        let target = fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert_eq!(target, Path::new("/dev/null"), "fd {fd} of the monitor");
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split_whitespace().collect();
    let (sid, tty) = (fields[3], fields[4]);
    assert!(sid != pid.to_string() && tty == "0", "session {sid} (not a leader), no tty ({tty})");

    assert_eq!(lab.states(1, Duration::from_secs(5)), ["backup"]);
    lab.ip(&["addr", "add", VIP, "dev", IFACE]);
    assert_eq!(lab.states(2, Duration::from_secs(5)), ["backup", "primary"]);
    lab.wait_log("Notified agent router r1, state primary", SECOND);
    let logged_pid = format!(" {pid} INFO harouterd.state_change [-] Notified agent router r1, state primary");
    assert!(lab.log().contains(&logged_pid), "log lines carry the monitor's pid:\n{}", lab.log());
    let (code, took) = lab.terminate();
    assert_eq!(code, 0);
    assert!(took < SECOND, "SIGTERM took {took:?}");
    assert!(lab.pid_path().exists(), "the pid file is the agent's to remove");
}

#[test]
fn neutron_28_blocking_start_returns_at_once_and_the_pid_file_names_the_monitor() {
    if !needs_root() {
        return;
    }
    let mut lab = MonitorLab::new("sc28");
    // ip_lib.IPWrapper().netns.execute(cmd, addl_env={PROCESS_TAG: ...}):
    // `env PROCESS_TAG=... neutron-keepalived-state-change ...`.
    let link = lab.dir.join("neutron-keepalived-state-change");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let args = lab.args(lab.ns.name(), VIP, &[]);
    let mut command = Command::new("env");
    command.arg("PROCESS_TAG=neutron-keepalived-state-change-monitor-r1.monitor").arg(&link).args(&args);
    let (out, took) = lab.run_blocking(&mut command);
    println!("Neutron 28 style: the blocking execute returned after {took:?}");
    assert!(out.status.success(), "{}\nlog:\n{}", show(&out), lab.log());
    assert!(took < AT_ONCE, "returned after {took:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{}", show(&out));
    behaves_as_neutron_expects(&mut lab, None);
}

#[test]
fn neutron_29_async_start_with_unread_pipes_is_tracked_by_the_pid_file() {
    if !needs_root() {
        return;
    }
    let mut lab = MonitorLab::new("sc29");
    let args = lab.args(lab.ns.name(), VIP, &[]);
    let (pid, took) = lab.start_async(&args);
    println!("Neutron 29 style: pid file named monitor {pid} after {took:?}");
    // What the agent started ends at once, successfully; its pipes were
    // never read and the monitor holds none of them.
    let child = lab.agent_child.as_mut().unwrap();
    let direct = child.id();
    let exited = common::lab::wait_for(AT_ONCE, || child.try_wait().unwrap());
    assert_eq!(exited.map(|(s, _)| s.code()), Some(Some(0)), "the process started must exit 0 at once");
    let mut rest = Vec::new();
    child.stderr.take().unwrap().read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    behaves_as_neutron_expects(&mut lab, Some(direct));
}

#[test]
fn a_failed_start_is_reported_by_the_exit_status_and_stderr() {
    if !needs_root() {
        return;
    }
    let mut lab = MonitorLab::new("scf");
    // A failure after detaching (the drop to an unknown user) still reaches
    // the caller, who waits for the verdict.
    let args = lab.args(lab.ns.name(), VIP, &["--user", "no-such-user-harouterd"]);
    let (out, took) = lab.run_blocking(Command::new(BIN).arg("state-change").args(&args));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(took < AT_ONCE, "{took:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown user \"no-such-user-harouterd\""), "{stderr}");
    assert!(lab.log().contains("unknown user \"no-such-user-harouterd\""), "{}", lab.log());
    // ... and nothing was left running for this router.
    let pid = pid_in(&lab.pid_path()).unwrap();
    let gone = common::lab::wait_until(Duration::from_secs(5), || {
        let mut status = 0;
        // SAFETY: waitpid on a pid that may have been re-parented to us.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(gone.is_some(), "monitor {pid} still there");
    // A bad argument is a usage error (2), before anything is started.
    let args = lab.args("not a name", VIP, &[]);
    let (out, _) = lab.run_blocking(Command::new(BIN).arg("state-change").args(&args));
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--namespace"), "{}", show(&out));
}

// ---- never blocked by pipes nobody reads, conntrackd failing (issue 10.2, 10.3) ----

/// Flips the VIP `flips` times, waiting for each notification, so every
/// flip must be reported on its own (latest-wins could otherwise merge
/// flips that come faster than reports).
fn flip(lab: &MonitorLab, flips: usize) {
    let started = Instant::now();
    for i in 0..flips {
        let (action, state) = if i % 2 == 0 { ("add", "primary") } else { ("del", "backup") };
        lab.ip(&["addr", action, VIP, "dev", IFACE]);
        let got = lab.receiver().wait_for(i + 2, Duration::from_secs(10));
        assert!(
            got.len() == i + 2 && got[i + 1].state == state,
            "flip {i}: expected {} notifications ending in {state}, got {}: {:?}",
            i + 2,
            got.len(),
            got.iter().rev().take(3).map(|n| &n.state).collect::<Vec<_>>()
        );
    }
    println!("{flips} flips reported in {:?}", started.elapsed());
}

#[test]
fn five_hundred_flips_with_a_failing_conntrackd_and_pipes_nobody_reads() {
    // The real conntrackd, failing for real: no conntrackd.conf, no daemon.
    // Each command says so on stderr (about 100 bytes): 500 flips write far
    // more than a 64 KiB pipe holds.
    if !common::require_root_and(&["ip", "conntrackd"]) {
        return;
    }
    let mut lab = MonitorLab::new("sc500");
    let args = lab.args(lab.ns.name(), VIP, &["--enable_conntrackd"]);
    lab.start_async(&args);
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["backup"]);
    flip(&lab, 500);
    let log = lab.log();
    assert!(log.contains("can't open config file"), "conntrackd's own complaints are in the log");
    assert!(lab.still_running());
}

#[test]
fn five_hundred_flips_in_the_foreground_logging_to_a_pipe_nobody_reads() {
    // No --log-file: the monitor's own lines (with --debug, a dozen per
    // flip) go to a stderr pipe nobody reads, full after a few dozen flips;
    // conntrackd fails on every command and writes to its own pipe.
    if !common::require_root_and(&["ip", "conntrackd"]) {
        return;
    }
    let mut lab = MonitorLab::new("sc500f");
    let mut args = lab.args(lab.ns.name(), VIP, &["--enable_conntrackd"]);
    let at = args.iter().position(|a| a == "--log-file").unwrap();
    args.drain(at..at + 2);
    let (stdout, stderr) = (Stdio::piped(), Stdio::piped());
    lab.start_foreground(&args, stdout, stderr);
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["backup"]);
    flip(&lab, 500);
    let pid = lab.pid();
    let fd2 = fs::read_link(format!("/proc/{pid}/fd/2")).unwrap();
    assert!(fd2.to_string_lossy().starts_with("pipe:"), "stderr is the unread pipe: {fd2:?}");
    assert!(lab.still_running());
}

#[test]
fn synced_line_after_a_failed_sync_beside_the_error_line() {
    if !common::require_root_and(&["ip", "conntrackd"]) {
        return;
    }
    let mut lab = MonitorLab::new("scsy");
    lab.start(&["--enable_conntrackd"]);
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["backup"]);
    let log = lab.wait_log("Notified agent router r1, state backup", SECOND);
    let error = "ERROR harouterd.state_change [-] Failed to sync connection tracking state on backup for router r1: \
                 conntrackd -t: exit code 1; conntrackd -n: exit code 1";
    assert_eq!(
        sequence(&log, &[error, "Synced connection tracking state on backup for router r1", "Notified agent"]),
        [error, "Synced connection tracking state on backup for router r1", "Notified agent"],
        "{log}"
    );
    // What conntrackd itself said is in the log, named.
    lab.wait_log("router r1: conntrackd -n: ", SECOND);
    let said = lab.log();
    assert!(
        said.lines().any(|l| l.contains("router r1: conntrackd -t: ") && l.contains("can't open config file")),
        "{said}"
    );
}

#[test]
fn the_daemon_logs_synced_after_a_failed_sync_too() {
    if !common::require_root_and(&["ip"]) {
        return;
    }
    let tmp = TempDir::new("scdsy");
    let ns = Netns::new("scdsy");
    common::add_interfaces(&ns, &["ha-d1"]);
    let config = tmp.join("harouterd.conf");
    fs::write(
        &config,
        format!(
            "[daemon]\nstate_path = {}\nha_conntrackd_enabled = true\nconntrackd_path = /bin/false\n\n\
             [router d1]\nnamespace = {}\nha_interface = ha-d1\nvrid = 1\nkeepalived = false\n",
            tmp.join("state").display(),
            ns.name()
        ),
    )
    .unwrap();
    let log = tmp.join("daemon.log");
    let log_file = fs::File::create(&log).unwrap();
    let mut daemon = Command::new(BIN)
        .args(["run", "--foreground", "-c"])
        .arg(&config)
        .arg("--pidfile")
        .arg(tmp.join("harouterd.pid"))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let synced = "Synced connection tracking state on backup for router d1";
    let text = || fs::read_to_string(&log).unwrap_or_default();
    let found = common::lab::wait_until(Duration::from_secs(10), || text().contains(synced));
    let _ = daemon.kill();
    let _ = daemon.wait();
    let text = text();
    assert!(found.is_some(), "{text}");
    let error = "Failed to sync connection tracking state on backup for router d1: \
                 conntrackd -t: exit code 1; conntrackd -n: exit code 1";
    assert_eq!(sequence(&text, &[error, synced]), [error, synced], "{text}");
}

// ---- the agent user cannot redirect root's writes (issue 15.1) ----

/// A root-only file in a root-only directory: what the agent user would
/// like root to overwrite.
fn victim(lab: &MonitorLab) -> (PathBuf, PathBuf) {
    let dir = lab.dir.join("root-only");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let file = dir.join("secret");
    fs::write(&file, "root's secret\n").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    (dir, file)
}

fn unchanged(file: &Path, before: &fs::Metadata) {
    let after = fs::metadata(file).unwrap();
    assert_eq!(fs::read_to_string(file).unwrap(), "root's secret\n", "{} was written to", file.display());
    assert_eq!(
        (after.mtime(), after.mtime_nsec(), after.nlink()),
        (before.mtime(), before.mtime_nsec(), before.nlink())
    );
}

/// The monitor, started as Neutron 28 would, refuses: exit 1, the reason on
/// stderr. Returns stderr.
fn refused(lab: &mut MonitorLab, extra: &[&str]) -> String {
    let args = lab.args(lab.ns.name(), VIP, extra);
    let (out, _) = lab.run_blocking(Command::new(BIN).arg("state-change").args(&args));
    assert_eq!(out.status.code(), Some(1), "must refuse: {}\nlog:\n{}", show(&out), lab.log());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_pid_file_symlink_planted_by_the_agent_user_is_refused() {
    if !needs_root() {
        return;
    }
    let mut lab = MonitorLab::new("scap");
    lab.agent_owns_its_directories();
    let (_, secret) = victim(&lab);
    let before = fs::metadata(&secret).unwrap();
    as_nobody(&format!("ln -s {} {}", secret.display(), lab.pid_path().display()));
    let stderr = refused(&mut lab, &[]);
    assert!(stderr.contains("refusing to follow the symbolic link") && stderr.contains(PID_NAME), "{stderr}");
    unchanged(&secret, &before);

    // A link to a file that does not exist yet: root would create it.
    fs::remove_file(lab.pid_path()).unwrap();
    let planted = secret.with_file_name("created-by-root");
    as_nobody(&format!("ln -s {} {}", planted.display(), lab.pid_path().display()));
    refused(&mut lab, &[]);
    assert!(!planted.exists());

    // The pid directory itself swapped for a link to a root-only one.
    fs::remove_file(lab.pid_path()).unwrap();
    let pids = lab.dir.join("external/pids");
    as_nobody(&format!("mv {0} {0}.old && ln -s {1} {0}", pids.display(), secret.parent().unwrap().display()));
    let stderr = refused(&mut lab, &[]);
    assert!(stderr.contains("refusing to follow the symbolic link"), "{stderr}");
    assert_eq!(fs::read_dir(secret.parent().unwrap()).unwrap().count(), 1, "nothing created in the root-only dir");
    unchanged(&secret, &before);
}

#[test]
fn a_pid_file_hard_link_to_a_root_file_is_refused() {
    // fs.protected_hardlinks keeps the agent user from making this link on
    // most systems; where it is off, root must still not write through it.
    if !needs_root() {
        return;
    }
    let mut lab = MonitorLab::new("scah");
    let (_, secret) = victim(&lab);
    fs::hard_link(&secret, lab.pid_path()).unwrap();
    let before = fs::metadata(&secret).unwrap();
    let stderr = refused(&mut lab, &[]);
    assert!(stderr.contains("2 hard links"), "{stderr}");
    unchanged(&secret, &before);
}

#[test]
fn a_log_file_symlink_planted_by_the_agent_user_gets_no_line() {
    if !needs_root() {
        return;
    }
    let mut lab = MonitorLab::new("scal");
    lab.agent_owns_its_directories();
    let (_, secret) = victim(&lab);
    let before = fs::metadata(&secret).unwrap();
    as_nobody(&format!("ln -s {} {}", secret.display(), lab.log_path().display()));
    let stderr = refused(&mut lab, &[]);
    assert!(
        stderr.contains("cannot open log file") && stderr.contains("refusing to follow the symbolic link"),
        "{stderr}"
    );
    unchanged(&secret, &before);
    assert!(!lab.pid_path().exists(), "nothing else was done");

    fs::remove_file(lab.log_path()).unwrap();
    let planted = secret.with_file_name("created-by-root.log");
    as_nobody(&format!("ln -s {} {}", planted.display(), lab.log_path().display()));
    refused(&mut lab, &[]);
    assert!(!planted.exists());
}

#[test]
fn conf_dir_links_planted_by_the_agent_user_get_no_state() {
    if !needs_root() {
        return;
    }
    let mut lab = MonitorLab::new("scac");
    lab.agent_owns_its_directories();
    let (root_dir, secret) = victim(&lab);
    // The log elsewhere: the conf dir is what is attacked here.
    let log = lab.dir.join("external/monitor.log");
    let with_log = |lab: &MonitorLab| {
        let mut args = lab.args(lab.ns.name(), VIP, &[]);
        let at = args.iter().position(|a| a == "--log-file").unwrap();
        args[at + 1] = log.display().to_string();
        args
    };

    // Swapped while the monitor runs (as root): the state goes on being
    // written into the directory it opened, never through the link.
    let args = with_log(&lab);
    let (out, _) = lab.run_blocking(Command::new(BIN).arg("state-change").args(&args));
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["backup"]);
    let conf_dir = lab.conf_dir.clone();
    let moved = conf_dir.with_file_name("r1.moved");
    as_nobody(&format!(
        "mv {} {} && ln -s {} {}",
        conf_dir.display(),
        moved.display(),
        root_dir.display(),
        conf_dir.display()
    ));
    lab.ip(&["addr", "add", VIP, "dev", IFACE]);
    assert_eq!(lab.states(2, Duration::from_secs(5)), ["backup", "primary"]);
    // Written right after the notification went out.
    let written = || fs::read_to_string(moved.join("state")).unwrap_or_default();
    let deadline = Instant::now() + SECOND;
    while written() != "primary" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(written(), "primary");
    assert!(!root_dir.join("state").exists(), "root wrote state through the agent's link");
    lab.terminate();

    // Planted before start: refused (logged), the monitor runs and reports.
    let args = with_log(&lab);
    let (out, _) = lab.run_blocking(Command::new(BIN).arg("state-change").args(&args));
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(lab.states(3, Duration::from_secs(5)), ["backup", "primary", "primary"]);
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("refusing to follow the symbolic link"), "{text}");
    assert!(!root_dir.join("state").exists());
    assert_eq!(fs::read_dir(&root_dir).unwrap().count(), 1);
    let _ = secret;
}

// ---- least privilege after the drop (issue 15.2) ----

/// `/proc/PID/status` lines worth showing.
fn caps_of(status: &str) -> String {
    status
        .lines()
        .filter(|l| ["Uid:", "Cap", "NoNewPrivs:"].iter().any(|p| l.starts_with(p)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_dropped_monitor_without_conntrackd_holds_no_capability() {
    if !needs_root() {
        return;
    }
    let mut lab = MonitorLab::new("sccap");
    lab.agent_owns_its_directories();
    lab.start(&["--user", "65534", "--group", "65534"]);
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["backup"]);
    let status = fs::read_to_string(format!("/proc/{}/status", lab.pid())).unwrap();
    println!("state-change --user 65534:\n{}", caps_of(&status));
    assert_eq!(status_field(&status, "Uid"), "65534\t65534\t65534\t65534");
    for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(cap_mask(&status, field), 0, "{field}:\n{status}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(lab.wait_state("backup", SECOND), "backup", "the state file is written as the agent user");
}

#[test]
fn with_conntrackd_only_the_conntrackd_child_holds_a_capability() {
    if !common::require_root_and(&["ip", "conntrackd"]) {
        return;
    }
    let mut lab = MonitorLab::new("scctc");
    lab.agent_owns_its_directories();
    // A stand-in for conntrackd's control socket, root-only as the real
    // one is: each `conntrackd -C CONF OPT` connects to it and waits for an
    // answer, so the test can look at the real client while it runs.
    let ctl = lab.dir.join("ctl");
    fs::write(
        lab.conf_dir.join("conntrackd.conf"),
        format!("General {{\n UNIX {{\n  Path {}\n }}\n}}\nSync {{\n Mode FTFW {{\n }}\n}}\n", ctl.display()),
    )
    .unwrap();
    let listener = UnixListener::bind(&ctl).unwrap();
    fs::set_permissions(&ctl, fs::Permissions::from_mode(0o600)).unwrap();
    listener.set_nonblocking(true).unwrap();

    let args = lab.args(lab.ns.name(), VIP, &["--user", "65534", "--group", "65534", "--enable_conntrackd"]);
    let mut command = Command::new(BIN);
    command.arg("state-change").args(&args).env("LD_LIBRARY_PATH", "/nonexistent").env("HAROUTERD_TEST_LEAK", "1");
    let (out, _) = lab.run_blocking(&mut command);
    assert!(out.status.success(), "{}", show(&out));

    // The first sync command (`-t`, initial state backup) connects.
    let ((conn, _), _) = common::lab::wait_for(Duration::from_secs(5), || listener.accept().ok())
        .unwrap_or_else(|| panic!("conntrackd never connected\nlog:\n{}", lab.log()));
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    use std::os::fd::AsRawFd;
    // SAFETY: SO_PEERCRED into a ucred of the given size.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    let child = cred.pid;
    let child_status = fs::read_to_string(format!("/proc/{child}/status")).unwrap();
    let environ = fs::read(format!("/proc/{child}/environ")).unwrap();
    let exe = fs::read_link(format!("/proc/{child}/exe")).unwrap();
    let child_cmdline = cmdline(child);
    let status = fs::read_to_string(format!("/proc/{}/status", lab.pid())).unwrap();
    println!("state-change --user 65534 --enable_conntrackd:\n{}", caps_of(&status));
    println!("its child {child_cmdline}:\n{}", caps_of(&child_status));

    // The monitor: CAP_SYS_ADMIN and CAP_DAC_OVERRIDE permitted (and in
    // the bounding set), none effective.
    assert_eq!(status_field(&status, "Uid"), "65534\t65534\t65534\t65534");
    assert_eq!(cap_mask(&status, "CapPrm"), (1 << 21) | (1 << 1), "{status}");
    assert_eq!(cap_mask(&status, "CapBnd"), (1 << 21) | (1 << 1), "{status}");
    for field in ["CapEff", "CapInh", "CapAmb"] {
        assert_eq!(cap_mask(&status, field), 0, "{field}:\n{status}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    // The child: the real conntrackd by its absolute path, as the agent
    // user, holding CAP_DAC_OVERRIDE (to reach the root-only socket it has
    // just connected to) and nothing else, with only PATH in its
    // environment.
    assert_eq!(exe, fs::canonicalize(harouterd::conntrackd::sync::locate().unwrap()).unwrap());
    assert!(
        child_cmdline.ends_with(&format!("-C {} -t", lab.conf_dir.join("conntrackd.conf").display())),
        "{child_cmdline}"
    );
    assert_eq!(status_field(&child_status, "Uid"), "65534\t65534\t65534\t65534");
    for field in ["CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(cap_mask(&child_status, field), 1 << 1, "{field}:\n{child_status}");
    }
    assert_eq!(cap_mask(&child_status, "CapInh"), 1 << 1);
    assert_eq!(status_field(&child_status, "NoNewPrivs"), "1");
    assert_eq!(String::from_utf8_lossy(&environ), format!("PATH={}\0", harouterd::sys::spawn::CHILD_PATH));

    // Let the sync finish (the client takes the closed connection as an
    // answer): `-n` connects next, and the agent hears of it.
    drop(conn);
    let ((second, _), _) = common::lab::wait_for(Duration::from_secs(5), || listener.accept().ok()).unwrap();
    drop(second);
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["backup"]);
    lab.wait_log("Synced connection tracking state on backup for router r1", SECOND);
    assert!(!lab.log().contains("Failed to sync"), "{}", lab.log());
}

/// Issue 13: nothing on the disk path delays a notification. The conf dir
/// (where the state file goes) is on a filesystem that is then frozen: a
/// write there blocks until it is thawed, as on a hung disk. Before issue
/// 13 the monitor wrote the state file first and the agent heard nothing
/// until the thaw; now the notification goes out first and the file
/// follows once the disk takes writes again.
#[test]
fn a_frozen_disk_does_not_delay_the_notification() {
    if !common::require_root_and(&["ip", "mkfs.ext4", "mount"]) {
        return;
    }
    let mut lab = MonitorLab::new("scfz");
    let mut disk = common::frozen::FreezableFs::mount(&lab.dir.join("conf.img"), &lab.conf_dir);
    // The log elsewhere: only the state file is on the disk that freezes.
    let log = lab.dir.join("external/monitor.log");
    let mut args = lab.args(lab.ns.name(), VIP, &[]);
    let at = args.iter().position(|a| a == "--log-file").unwrap();
    args[at + 1] = log.display().to_string();
    let (out, _) = lab.run_blocking(Command::new(BIN).arg("state-change").args(&args));
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["backup"]);
    assert_eq!(lab.wait_state("backup", SECOND), "backup");

    disk.freeze();
    let frozen = Instant::now();
    lab.ip(&["addr", "add", VIP, "dev", IFACE]);
    let got = lab.receiver().wait_for(2, Duration::from_secs(5));
    let states: Vec<&str> = got.iter().map(|n| n.state.as_str()).collect();
    assert_eq!(
        states,
        ["backup", "primary"],
        "the agent waited for the disk\nlog:\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    println!("primary notified {:?} after the change, the state file's disk frozen", got[1].received_at - frozen);
    assert_eq!(lab.state(), "backup", "written to a frozen filesystem?");

    disk.thaw();
    assert_eq!(lab.wait_state("primary", Duration::from_secs(5)), "primary", "the state file once thawed");
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("Wrote router r1 state primary"), "{text}");
}
