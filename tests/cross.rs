//! The cross builds (`make cross TARGET=...`; `make test` builds every
//! target of `CROSS_TARGETS` first): static binaries linked by rust-lld for
//! aarch64 (run here under `qemu-aarch64-static`) and i686 (a 32-bit
//! binary, run natively on the x86_64 kernel). Each must say byte for byte
//! what the x86_64 static binary says (`--version`, `check`, `render`, exit
//! status, stdout and stderr) on the example config, on every scenario of
//! tests/scenarios and tests/golden/conntrackd/scenarios, and on numbers at
//! and past the edges of what the parser takes (32-bit `usize`); and each
//! runs the daemon for real: a monitor-only router in a network namespace
//! whose primary VIP comes and goes (rtnetlink decoding, the signalfd, the
//! event loop's tokens and timers on that architecture).
//!
//! A missing binary or qemu fails under CI=true and is a skip otherwise.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::lab::wait_until;
use common::{Netns, TempDir};

/// A cross target and how to run its binary here.
struct Arch {
    target: &'static str,
    /// `None`: runs natively.
    runner: Option<&'static str>,
}

const AARCH64: Arch = Arch { target: "aarch64-unknown-linux-musl", runner: Some("qemu-aarch64-static") };
const I686: Arch = Arch { target: "i686-unknown-linux-musl", runner: None };

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn built(target: &str) -> Option<PathBuf> {
    let path = repo().join("target").join(target).join("release/harouterd");
    if path.exists() {
        return Some(path);
    }
    let make = if target == "x86_64-unknown-linux-musl" { "make static" } else { "make cross-all" };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{} is missing: `{make}` must run before the tests", path.display());
    }
    eprintln!("SKIP cross tests: {} is missing (run `{make}`)", path.display());
    None
}

/// The command that runs `arch`'s binary here, or `None` (skipped) when
/// the binary or its runner is missing.
fn command_for(arch: &Arch) -> Option<Command> {
    let binary = built(arch.target)?;
    match arch.runner {
        None => Some(Command::new(binary)),
        Some(runner) => {
            let Some(qemu) = common::find_tool(runner) else {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("{runner} is missing: scripts/install-test-deps.sh installs qemu-user-static");
                }
                eprintln!("SKIP {}: {runner} is missing", arch.target);
                return None;
            };
            let mut command = Command::new(qemu);
            command.arg(binary);
            Some(command)
        }
    }
}

fn run(command: &mut Command, args: &[&str]) -> Output {
    command.args(args).output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Every argument list compared: the example, each scenario, the edges.
fn cases(edges: &Path) -> Vec<Vec<String>> {
    let mut configs = vec![repo().join("packaging/harouterd.conf.example"), edges.to_path_buf()];
    for dir in ["tests/scenarios", "tests/golden/conntrackd/scenarios"] {
        let mut found: Vec<PathBuf> = fs::read_dir(repo().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        found.sort();
        assert!(!found.is_empty(), "no scenarios in {dir}");
        configs.extend(found);
    }
    let mut cases = vec![vec!["--version".to_owned()], vec!["--help".to_owned()]];
    for config in configs {
        let c = config.display().to_string();
        for args in [&["check", "-c"][..], &["render", "-c"], &["render", "--show-secrets", "-c"]] {
            let mut case: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            case.push(c.clone());
            cases.push(case);
        }
    }
    cases
}

/// A config whose numbers sit at and past the limits of the parser and of
/// what they are stored in (u8 VRIDs, u32 and C `int` settings, 64-bit
/// values that do not fit a 32-bit `usize`).
fn write_edges(dir: &TempDir) -> PathBuf {
    let path = dir.join("edges.conf");
    fs::write(
        &path,
        "[daemon]\nha_vrrp_advert_int = 255\nha_conntrackd_hashsize = 2147483647\n\
         ha_conntrackd_hashlimit = 2147483648\nha_conntrackd_unix_backlog = 4294967296\n\
         ha_conntrackd_group = 18446744073709551616\nsocket_mode = 0777\n\
         [router a]\nha_interface = ha-a\nvrid = 254\npriority = 255\nhealth_check_interval = 86400\n\
         [router b]\nha_interface = ha-b\nvrid = 4294967297\nadvert_int = 0\n",
    )
    .unwrap();
    path
}

fn same_as_x86_64(arch: &Arch) {
    let Some(reference) = built("x86_64-unknown-linux-musl") else { return };
    if command_for(arch).is_none() {
        return;
    }
    let dir = TempDir::new("cross");
    let edges = write_edges(&dir);
    let (mut compared, mut rendered) = (0, 0);
    for case in cases(&edges) {
        let args: Vec<&str> = case.iter().map(String::as_str).collect();
        let want = run(&mut Command::new(&reference), &args);
        let got = run(&mut command_for(arch).expect("checked above"), &args);
        let show = |o: &Output| {
            format!(
                "{}\n--- stdout\n{}--- stderr\n{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        };
        assert!(
            got.status.code() == want.status.code() && got.stdout == want.stdout && got.stderr == want.stderr,
            "{} `harouterd {}` differs from x86_64:\n=== {}:\n{}\n=== x86_64:\n{}",
            arch.target,
            args.join(" "),
            arch.target,
            show(&got),
            show(&want)
        );
        compared += 1;
        rendered += usize::from(args[0] == "render" && want.status.success() && !want.stdout.is_empty());
    }
    // Not a comparison of silences: every config that renders did.
    assert!(rendered >= 20, "only {rendered} non-empty renders compared");
    // The edges config is refused, and for the right reasons.
    let out = run(&mut Command::new(&reference), &["check", "-c", &edges.display().to_string()]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    for part in [
        ":5: ha_conntrackd_unix_backlog: 4294967296 is out of range",
        ":6: ha_conntrackd_group: '18446744073709551616' is not a whole number",
        "router 'b': vrid: 4294967297 is out of range 1..=254",
        "priority: 255 is out of range 1..=254",
        "advert_int: 0 is out of range 1..=255",
        ":4: ha_conntrackd_hashlimit: 2147483648 is out of range",
    ] {
        assert!(text.contains(part), "{part:?} missing from:\n{text}");
    }
    println!("{}: {compared} runs identical to x86_64", arch.target);
}

#[test]
fn aarch64_under_qemu_says_what_x86_64_says() {
    same_as_x86_64(&AARCH64);
}

#[test]
fn i686_says_what_x86_64_says() {
    same_as_x86_64(&I686);
}

/// Kills the daemon if the test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The daemon of `arch`, foreground, with one monitor-only router in a
/// fresh namespace: its state follows the primary VIP (added, removed), its
/// control socket answers, SIGTERM ends it with 0.
fn daemon_follows_the_vip(arch: &Arch, tag: &str) {
    if !common::require_root_and(&["ip"]) {
        return;
    }
    let Some(mut command) = command_for(arch) else { return };
    let ns = Netns::new(tag);
    common::add_veth_pair(&ns, "ha-x", "ha-y");
    let dir = TempDir::new(tag);
    let state = dir.join("state");
    let config = dir.join("h.conf");
    fs::write(
        &config,
        format!(
            "[daemon]\nstate_path = {}\nha_vrrp_advert_int = 1\n[router r1]\nnamespace = {}\n\
             ha_interface = ha-x\nvrid = 7\nkeepalived = false\n",
            state.display(),
            ns.name()
        ),
    )
    .unwrap();
    let log = dir.join("log");
    let child = command
        .args(["run", "--foreground", "--log-level", "debug", "-c"])
        .arg(&config)
        .arg("--pidfile")
        .arg(dir.join("pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut daemon = Running(child);
    let socket = state.join("harouterd.sock");
    let state_file = state.join("ha_confs/r1/state");
    let effective = |want: &str| {
        let (status, body) = common::http_get(&socket, "/v1/routers/r1");
        status == Some(200) && body.contains(&format!("\"effective_state\":\"{want}\""))
    };
    let log_text = || fs::read_to_string(&log).unwrap_or_default();
    let within = Duration::from_secs(20);
    assert!(wait_until(within, || effective("backup")).is_some(), "{}: never backup\n{}", arch.target, log_text());
    ns.ip(&["addr", "add", "169.254.0.7/24", "dev", "ha-x"]);
    assert!(wait_until(within, || effective("primary")).is_some(), "{}: never primary\n{}", arch.target, log_text());
    assert_eq!(fs::read_to_string(&state_file).unwrap(), "primary");
    ns.ip(&["addr", "del", "169.254.0.7/24", "dev", "ha-x"]);
    assert!(wait_until(within, || effective("backup")).is_some(), "{}: never back\n{}", arch.target, log_text());
    assert_eq!(fs::read_to_string(&state_file).unwrap(), "backup");
    let (status, metrics) = common::http_get(&socket, "/metrics");
    assert_eq!(status, Some(200));
    assert!(metrics.contains("harouterd_transitions_total{router=\"r1\"} 3\n"), "{metrics}");

    common::lab::send_signal(daemon.0.id(), libc::SIGTERM);
    let exited = wait_until(within, || matches!(daemon.0.try_wait(), Ok(Some(_))));
    assert!(exited.is_some(), "{}: still running after SIGTERM\n{}", arch.target, log_text());
    let status = daemon.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}\n{}", arch.target, log_text());
    assert!(!socket.exists(), "the socket is removed at exit");
}

#[test]
fn i686_daemon_follows_the_vip() {
    daemon_follows_the_vip(&I686, "x-i686");
}

#[test]
fn aarch64_daemon_follows_the_vip_under_qemu() {
    daemon_follows_the_vip(&AARCH64, "x-a64");
}
