//! The conntrackd.conf harouterd renders is one the real conntrackd
//! (Debian's 1.4.7) runs on: started with `conntrackd -d -C FILE` inside a
//! namespace that holds the HA interface and the node's HA address, it
//! creates its lock file and control socket and answers every command the
//! transition sync sends; `-k` stops it. One file sits exactly at the
//! control socket path limit (107 bytes); the file the daemon itself wrote
//! into the router's directory is the one the daemon's own conntrackd runs
//! on. And the interface names the parser refuses for conntrackd are
//! exactly those real conntrackd cannot parse.
//!
//! Needs root, conntrackd and ip (keepalived too for the daemon test);
//! skipped otherwise, failing under CI=true. Every conntrackd started here
//! is stopped (by `-k`, else SIGKILL) even when an assertion fails.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::lab::{Lab, RouterSpec, processes_matching, wait_until};
use common::{Netns, TempDir};
use harouterd::conntrackd::conf;

const BIN: &str = env!("CARGO_BIN_EXE_harouterd");
const UP: Duration = Duration::from_secs(10);

fn show(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn is_socket(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// A conntrackd started on `conf` inside `ns`: stopped with `-k` when the
/// test is done with it, and SIGKILLed on drop if it is still there (the
/// needle is the config path, unique to this test's temp dir).
struct Conntrackd<'a> {
    ns: &'a Netns,
    conf: PathBuf,
    /// Started by this test (stopped on drop), not by a daemon.
    ours: bool,
}

impl<'a> Conntrackd<'a> {
    fn start(ns: &'a Netns, conf: &Path) -> Conntrackd<'a> {
        let guard = Conntrackd { ns, conf: conf.to_path_buf(), ours: true };
        let out = guard.run(&["-d"]);
        assert!(out.status.success(), "conntrackd -d -C {} failed: {}", conf.display(), show(&out));
        guard
    }

    fn run(&self, opts: &[&str]) -> Output {
        let conntrackd = common::tool("conntrackd");
        let conf = self.conf.to_str().unwrap();
        let mut argv = vec![conntrackd.to_str().unwrap()];
        argv.extend_from_slice(opts);
        argv.extend_from_slice(&["-C", conf]);
        self.ns.exec(&argv)
    }

    fn pids(&self) -> Vec<u32> {
        processes_matching(&format!("-C {}", self.conf.display()))
    }

    /// Up: its control socket and lock file exist and it answers `-s`.
    fn wait_up(&self) {
        let paths = PathBuf::from(self.conf.parent().unwrap());
        let up = wait_until(UP, || is_socket(&paths.join("conntrackd.ctl"))).is_some();
        assert!(up, "no control socket in {} after {UP:?}; conntrackd: {:?}", paths.display(), self.pids());
        assert!(paths.join("conntrackd.lock").exists(), "no lock file in {}", paths.display());
        let stats = self.run(&["-s"]);
        assert!(stats.status.success(), "conntrackd -s: {}", show(&stats));
        assert!(String::from_utf8_lossy(&stats.stdout).contains("cache internal:"), "{}", show(&stats));
    }

    /// Every command the transition sync runs (SPEC 3.5), and Neutron's
    /// post-start resync request (`-n`), answered by this conntrackd.
    fn answers_sync_commands(&self) {
        for opt in ["-c", "-f", "-R", "-B", "-t", "-n"] {
            let out = self.run(&[opt]);
            assert!(out.status.success(), "conntrackd -C {} {opt}: {}", self.conf.display(), show(&out));
        }
    }

    fn kill(&self) {
        let out = self.run(&["-k"]);
        assert!(out.status.success(), "conntrackd -k: {}", show(&out));
        assert!(wait_until(UP, || self.pids().is_empty()).is_some(), "still running after -k: {:?}", self.pids());
    }
}

impl Drop for Conntrackd<'_> {
    fn drop(&mut self) {
        if !self.ours || self.pids().is_empty() {
            return;
        }
        let _ = self.run(&["-k"]);
        let _ = wait_until(Duration::from_secs(2), || self.pids().is_empty());
        for pid in self.pids() {
            // SAFETY: kill(2) on a pid whose command line names our config.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

fn write_private(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

fn render(config: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN).arg("render").arg("-c").arg(config).args(args).output().unwrap();
    assert!(out.status.success(), "render {args:?}: {}", show(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn conntrackd_runs_on_a_rendered_conf_at_the_socket_path_limit() {
    if !common::require_root_and(&["conntrackd", "ip"]) {
        return;
    }
    let tmp = TempDir::new("ctd");
    let ns = Netns::new("ctd");
    let ha = "ha-ctd.7_x"; // '.', '-' and '_': conntrackd reads them all
    common::add_interfaces(&ns, &[ha]);
    ns.ip(&["addr", "add", "169.254.192.10/18", "dev", ha]);

    // A router ID that puts the control socket at exactly 107 bytes.
    let ha_confs = tmp.path();
    let id_len = conf::UNIX_PATH_MAX - ha_confs.as_os_str().len() - "/".len() - "/conntrackd.ctl".len();
    assert!((1..=64).contains(&id_len), "temp dir {} too long for this test", ha_confs.display());
    let id: String = "ct".chars().chain(std::iter::repeat('0')).take(id_len).collect();
    let config = tmp.join("harouterd.conf");
    write_private(
        &config,
        &format!(
            "[daemon]\nha_confs_path = {}\nha_conntrackd_enabled = true\nha_conntrackd_group = 4000\n\n\
             [router {id}]\nnamespace = {}\nha_interface = {ha}\nvrid = 7\nha_address = 169.254.192.10\n",
            ha_confs.display(),
            ns.name()
        ),
    );
    let check = Command::new(BIN).arg("check").arg("-c").arg(&config).output().unwrap();
    assert!(check.status.success() && check.stderr.is_empty(), "check: {}", show(&check));

    let conf = ha_confs.join(&id).join("conntrackd.conf");
    let text = render(&config, &["--router", &id, "--file", "conntrackd.conf"]);
    let ctl = ha_confs.join(&id).join("conntrackd.ctl");
    assert_eq!(ctl.as_os_str().len(), 107);
    assert!(text.contains(&format!("        Path {}\n", ctl.display())), "{text}");
    assert!(text.contains("        Group 4007\n        Interface ha-ctd.7_x\n"), "{text}");
    write_private(&conf, &text);

    let conntrackd = Conntrackd::start(&ns, &conf);
    conntrackd.wait_up();
    conntrackd.answers_sync_commands();
    conntrackd.kill();
    assert!(!ctl.exists(), "conntrackd left its control socket behind");
}

#[test]
fn daemon_writes_a_conntrackd_conf_that_conntrackd_runs_on() {
    if !common::require_root_and(&["keepalived", "conntrackd", "ip"]) {
        return;
    }
    let conntrackd_path = format!("conntrackd_path = {}", common::tool("conntrackd").display());
    // The lab puts 169.254.192.1/18 on node A's HA interface.
    let router = RouterSpec::new("ct1", 5).with_line("ha_address = 169.254.192.1");
    let lab = Lab::new("ctd", &["A"], vec![router], &["ha_conntrackd_enabled = true", &conntrackd_path]);
    lab.start_all();
    let node = &lab.nodes[0];
    let conf = node.router_dir("ct1").join("conntrackd.conf");
    let expected = render(&node.config, &["--router", "ct1", "--file", "conntrackd.conf"]);
    let written = wait_until(UP, || fs::read_to_string(&conf).is_ok_and(|t| t == expected));
    assert!(written.is_some(), "the daemon never wrote {} as rendered:\n{expected}\n{}", conf.display(), lab.dump());
    let mode = fs::metadata(&conf).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "{}", conf.display());

    // The daemon runs its own conntrackd on it, in the router's namespace.
    let conntrackd = Conntrackd { ns: lab.ns(0, "ct1"), conf, ours: false };
    conntrackd.wait_up();
    assert_eq!(lab.nodes[0].conntrackd_processes("ct1").len(), 1, "one conntrackd: {:?}", conntrackd.pids());
    conntrackd.answers_sync_commands();
}

/// What conntrackd itself says of `Interface NAME`: parsed (true) or a
/// syntax error (false). Run as a client (`-s`) with no daemon behind the
/// socket, it parses the whole file and then fails to connect.
fn conntrackd_parses_interface(dir: &Path, base: &str, name: &str) -> bool {
    let conf = dir.join("probe.conf");
    write_private(&conf, &base.replace("Interface ha-1\n", &format!("Interface {name}\n")));
    let out = Command::new(common::tool("conntrackd")).arg("-C").arg(&conf).arg("-s").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "no conntrackd should answer on {}: {}", dir.display(), show(&out));
    if stderr.contains("parsing config file") {
        return false;
    }
    assert!(stderr.contains("can't connect"), "{name}: unexpected answer: {}", show(&out));
    true
}

#[test]
fn interface_names_refused_are_those_conntrackd_cannot_parse() {
    if !common::require_root_and(&["conntrackd"]) {
        return;
    }
    let tmp = TempDir::new("ctdif");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/conntrackd/defaults.r1.conntrackd.conf");
    let base =
        fs::read_to_string(golden).unwrap().replace("/var/lib/harouterd/ha_confs/r1", tmp.path().to_str().unwrap());
    let names = [
        "ha-1",
        "ha_1",
        "ha-v.100",
        "H-x.1_2",
        "Syncx",
        "faced",
        "eth0",
        "persistent",
        "1ha",
        "ha+x",
        "ha@x",
        "on",
        "NO",
        "Yes",
        "Sync",
        "ftfw",
        "Checksum",
        "for",
        "abc",
        "face",
        "persistenT",
    ];
    let mut disagree = Vec::new();
    for name in names {
        let ours = conf::check_interface(name).is_ok();
        let theirs = conntrackd_parses_interface(tmp.path(), &base, name);
        if ours != theirs {
            disagree.push(format!("{name}: harouterd accepts {ours}, conntrackd parses {theirs}"));
        }
    }
    assert!(disagree.is_empty(), "{disagree:#?}");
}
