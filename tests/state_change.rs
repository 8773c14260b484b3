//! `harouterd state-change`, the Neutron drop-in monitor, for real: the
//! binary runs against a namespace the test creates, addresses are changed
//! with `ip`, the agent is a real Unix-socket HTTP receiver, conntrackd is
//! the real daemon running in the namespace.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::http_receiver::Receiver;
use common::{Netns, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_harouterd");
const VIP: &str = "169.254.0.1/24";
const IFACE: &str = "ha-a";
const SECOND: Duration = Duration::from_secs(1);

struct Lab {
    ns: Netns,
    dir: TempDir,
    conf_dir: PathBuf,
    receiver: Option<Receiver>,
    child: Option<Child>,
    conntrackd: Option<Child>,
}

impl Lab {
    /// A namespace with veth pair ha-a/ha-b (ha-a is monitored), a conf dir,
    /// and the agent's receiver listening.
    fn new(name: &str) -> Lab {
        let ns = Netns::new(name);
        common::add_veth_pair(&ns, IFACE, "ha-b");
        let dir = TempDir::new(name);
        let conf_dir = dir.join("ha_confs/r1");
        fs::create_dir_all(&conf_dir).unwrap();
        let mut lab = Lab { ns, dir, conf_dir, receiver: None, child: None, conntrackd: None };
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
        self.dir.join("r1.pid")
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

    fn start(&mut self, extra: &[&str]) {
        let args = self.args(self.ns.name(), VIP, extra);
        self.start_with(Command::new(BIN).arg("state-change").args(args));
    }

    fn start_with(&mut self, command: &mut Command) {
        let child = command.stdin(Stdio::null()).stderr(Stdio::inherit()).spawn().unwrap();
        self.child = Some(child);
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

    /// The notifications so far, as states, once there are `count` of them.
    fn states(&self, count: usize, timeout: Duration) -> Vec<String> {
        let got: Vec<String> = self.receiver().wait_for(count, timeout).into_iter().map(|n| n.state).collect();
        assert!(got.len() >= count, "expected {count} notifications, got {got:?}\nlog:\n{}", self.log());
        got
    }

    fn terminate(&mut self) -> (ExitStatus, Duration) {
        let child = self.child.as_mut().expect("monitor running");
        let started = Instant::now();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = started + Duration::from_secs(5);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return (status, started.elapsed());
            }
            assert!(Instant::now() < deadline, "monitor ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn still_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
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

impl Drop for Lab {
    fn drop(&mut self) {
        for child in [self.child.as_mut(), self.conntrackd.as_mut()].into_iter().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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
    let mut lab = Lab::new("scb");
    let started = Instant::now();
    lab.start(&[]);
    let first = lab.receiver().wait_for(1, Duration::from_secs(5));
    assert_eq!(first.first().map(|n| n.state.as_str()), Some("backup"), "log:\n{}", lab.log());
    let after = first[0].received_at - started;
    assert!(after < SECOND, "initial state notified after {after:?}");
    println!("initial backup notified {after:?} after start");
    assert_eq!(first[0].router_id, "r1");
    assert_eq!(lab.state(), "backup");
    let log = lab.wait_log("Notified agent router r1, state backup", SECOND);
    assert_eq!(
        sequence(&log, &["Initial status of router r1 is backup", "Wrote router r1 state backup", "Notified agent"]),
        ["Initial status of router r1 is backup", "Wrote router r1 state backup", "Notified agent"]
    );
    assert!(!log.contains("conntrack"), "conntrackd is disabled:\n{log}");
    let pid = fs::read_to_string(lab.pid_path()).unwrap();
    assert_eq!(pid, lab.child.as_ref().unwrap().id().to_string());
    let request = &lab.receiver().requests()[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/"));
    assert_eq!(request.header("connection"), Some("close"));
}

#[test]
fn initial_primary_when_the_address_is_already_there() {
    if !needs_root() {
        return;
    }
    let mut lab = Lab::new("scp");
    lab.ip(&["addr", "add", VIP, "dev", IFACE]);
    let started = Instant::now();
    lab.start(&[]);
    let first = lab.receiver().wait_for(1, Duration::from_secs(5));
    assert_eq!(first.first().map(|n| n.state.as_str()), Some("primary"), "log:\n{}", lab.log());
    assert!(first[0].received_at - started < SECOND);
    assert_eq!(lab.state(), "primary");
    lab.wait_log("Initial status of router r1 is primary", SECOND);
    lab.wait_log("Notified agent router r1, state primary", SECOND);
}

#[test]
fn transitions_follow_the_monitored_cidr_only() {
    if !needs_root() {
        return;
    }
    let mut lab = Lab::new("sct");
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
    assert_eq!(lab.state(), "primary");
    lab.ip(&["addr", "del", VIP, "dev", IFACE]);
    assert_eq!(lab.states(3, Duration::from_secs(5)), ["backup", "primary", "backup"]);
    assert_eq!(lab.state(), "backup");
    let log = lab.wait_log("Notified agent router r1, state backup\n", SECOND);
    let wrote = sequence(&log, &["Wrote router r1 state"]);
    assert_eq!(wrote.len(), 3, "{log}");
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
    let mut lab = Lab::new("scc");
    let ctd_log = lab.start_conntrackd();
    lab.start(&["--enable_conntrackd"]);
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["backup"]);
    lab.ip(&["addr", "add", VIP, "dev", IFACE]);
    assert_eq!(lab.states(2, Duration::from_secs(5)), ["backup", "primary"]);
    let log = lab.wait_log("Notified agent router r1, state primary", SECOND);
    let conf = lab.conf_dir.join("conntrackd.conf");
    // By the absolute path found in fixed root-owned directories.
    let program = harouterd::conntrackd::locate().unwrap();
    assert!(program.is_absolute());
    let exec = |opt: &str| format!("Executing \"{} -C {} {opt}\" on router r1", program.display(), conf.display());
    let (t, n, c, f, r, b) = (exec("-t"), exec("-n"), exec("-c"), exec("-f"), exec("-R"), exec("-B"));
    let needles = [
        "Initial status of router r1 is backup",
        "Wrote router r1 state backup",
        t.as_str(),
        n.as_str(),
        "Synced connection tracking state on backup for router r1",
        "Notified agent router r1, state backup",
        "Detected state change to: primary",
        "Wrote router r1 state primary",
        c.as_str(),
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
    let mut lab = Lab::new("scm");
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
    let mut lab = Lab::new("scr");
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
    let mut lab = Lab::new("scn");
    let name = lab.ns.name().to_owned();
    // The namespace goes away before the monitor starts.
    common::run_ok(common::tool("ip"), &["netns", "del", &name]);
    let args = lab.args(&name, VIP, &[]);
    lab.start_with(Command::new(BIN).arg("state-change").args(args));
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["backup"]);
    let log = lab.wait_log("Timeout reading the initial status of router r1, state is set to \"backup\".", SECOND);
    assert!(log.contains("Failed to get initial status of router r1: cannot open network namespace"), "{log}");
    assert_eq!(lab.state(), "backup");
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
    let mut lab = Lab::new("scx");
    let args = lab.args(lab.ns.name(), "not-a-cidr", &[]);
    lab.start_with(Command::new(BIN).arg("state-change").args(args));
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
    let mut lab = Lab::new("scd");
    lab.ip(&["addr", "add", VIP, "dev", IFACE]);
    lab.start(&[]);
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["primary"]);
    lab.ip(&["link", "del", IFACE]);
    assert_eq!(lab.states(2, Duration::from_secs(5)), ["primary", "backup"]);
    assert_eq!(lab.state(), "backup");
    lab.wait_log("interface ha-a was deleted", SECOND);
}

#[test]
fn sigterm_exits_zero_within_a_second_and_leaves_the_agents_files() {
    if !needs_root() {
        return;
    }
    let mut lab = Lab::new("scs");
    lab.start(&[]);
    lab.states(1, Duration::from_secs(5));
    let (status, took) = lab.terminate();
    assert_eq!(status.code(), Some(0));
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
    let mut lab = Lab::new("scl");
    let link = lab.dir.join("neutron-keepalived-state-change");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let args = lab.args(lab.ns.name(), VIP, &[]);
    lab.start_with(Command::new(&link).args(&args));
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["backup"]);

    let second = Command::new(&link).args(&args).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let pid = lab.child.as_ref().unwrap().id();
    let log = lab.wait_log(&format!("held by pid {pid}"), SECOND);
    assert!(log.contains(lab.pid_path().to_str().unwrap()), "{log}");
    assert!(lab.still_running());
}

#[test]
fn drops_privileges_and_still_syncs_conntrackd() {
    if !common::require_root_and(&["ip", "conntrackd"]) {
        return;
    }
    let mut lab = Lab::new("scu");
    lab.start_conntrackd();
    // The unprivileged monitor writes CONF_DIR/state, as Neutron's does.
    let nobody = 65534;
    std::os::unix::fs::chown(&lab.conf_dir, Some(nobody), Some(nobody)).unwrap();
    lab.start(&["--user", "65534", "--group", "65534", "--enable_conntrackd"]);
    assert_eq!(lab.states(1, Duration::from_secs(5)), ["backup"]);
    let pid = lab.child.as_ref().unwrap().id();
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
