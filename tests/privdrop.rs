//! Dropping privileges for real (`harouterd::sys::privdrop`), as root.
//!
//! A uid change cannot be undone, so each case runs in a child copy of this
//! test binary (`child_entry`, selected with an environment variable) and the
//! test process itself keeps root. The child reports through its exit status
//! and output; the parent checks both.

mod common;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use harouterd::sys::files::atomic::{Step, write_atomic};
use harouterd::sys::privdrop::{CONNTRACKD_CAPS, Capability, drop_to, mask_of, prepare_exec};

/// Names the case the child runs; absent in the parent.
const CASE_ENV: &str = "HAROUTERD_PRIVDROP_CASE";
const NETNS_ENV: &str = "HAROUTERD_PRIVDROP_NETNS";
const ROOT_DIR_ENV: &str = "HAROUTERD_PRIVDROP_ROOT_DIR";
const OWNED_DIR_ENV: &str = "HAROUTERD_PRIVDROP_OWNED_DIR";
const NOBODY: u32 = 65534;
const DONE: &str = "PRIVDROP-CASE-DONE";

/// Runs `case` in a child process (see the module doc): the test binary
/// re-running `test`, the calling test, alone, which then plays the child
/// ([`child_entry`]). Returns its stdout; panics with the child's output
/// unless it passed.
fn run_case(test: &str, case: &str, env: &[(&str, &Path)]) -> String {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"]).env(CASE_ENV, case);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().expect("spawn child test");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains(DONE), "case {case} failed ({}):\n{stdout}\n{stderr}", out.status);
    stdout
}

/// The hex mask of a `Cap*:` line of a `/proc/.../status` text.
fn cap_field(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in status:\n{status}"));
    let hex = line.split_whitespace().nth(1).unwrap_or_else(|| panic!("bad line {line:?}"));
    u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("bad mask in {line:?}: {e}"))
}

/// This thread's status: capabilities are per thread, and libtest runs the
/// test on a thread other than the one `/proc/self/status` describes.
fn thread_status() -> String {
    std::fs::read_to_string("/proc/thread-self/status").expect("read /proc/thread-self/status")
}

fn ids() -> (u32, u32, u32, Vec<u32>) {
    let groups = nix::unistd::getgroups().expect("getgroups").into_iter().map(|g| g.as_raw()).collect();
    (nix::unistd::getuid().as_raw(), nix::unistd::geteuid().as_raw(), nix::unistd::getgid().as_raw(), groups)
}

/// Runs `sh -c script` after entering the network namespace `ns` between
/// fork and exec (as the monitor runs conntrackd), after
/// `prepare_exec(effective, ambient)` when `caps` says so; returns (success,
/// stdout+stderr).
fn exec_in_netns(ns: &File, caps: Option<(u64, u64)>, script: &str) -> (bool, String) {
    let fd = ns.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    // SAFETY: only system calls (capset, prctl, setns), async-signal-safe,
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((effective, ambient)) = caps {
                prepare_exec(effective, ambient)?;
            }
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.output() {
        Ok(out) => (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        ),
        Err(e) => (false, format!("spawn failed: {e}")),
    }
}

/// The child side, called first by every test: with `CASE_ENV` (in the
/// re-run test binary) it runs the case and exits, a panic failing the
/// test; without, it does nothing.
fn child_entry() {
    let Ok(case) = std::env::var(CASE_ENV) else { return };
    match case.as_str() {
        "keep" => child_keep(),
        "none" => child_none(),
        "names" => child_names(),
        "root" => child_root(),
        "conntrackd" => child_conntrackd(),
        other => panic!("unknown case {other}"),
    }
    println!("{DONE}");
    std::process::exit(0);
}

fn child_keep() {
    let caps = &[Capability::SysAdmin, Capability::NetAdmin];
    let mask = mask_of(caps);
    assert_eq!(mask, 0x20_1000);
    // Opened before the drop, as the monitor opens its namespace.
    let ns = File::open(std::env::var_os(NETNS_ENV).expect("netns path")).expect("open netns");

    drop_to(Some("65534"), Some("65534"), caps).expect("drop_to");

    assert_eq!(ids(), (NOBODY, NOBODY, NOBODY, vec![NOBODY]));
    let status = thread_status();
    // Kept means permitted, never effective, and nothing passes on by itself.
    assert_eq!(cap_field(&status, "CapPrm"), mask, "{status}");
    for field in ["CapEff", "CapInh", "CapAmb"] {
        assert_eq!(cap_field(&status, field), 0, "{field} in\n{status}");
    }
    assert_eq!(cap_field(&status, "CapBnd"), mask, "bounding set cut down:\n{status}");
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
    assert!(nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_err(), "regained root");

    // A program exec'd plainly gets nothing.
    let out = Command::new("sh").arg("-c").arg("grep ^Cap /proc/self/status").output().expect("sh");
    let text = String::from_utf8_lossy(&out.stdout);
    for field in ["CapEff", "CapPrm", "CapAmb"] {
        assert_eq!(cap_field(&text, field), 0, "{field} in\n{text}");
    }
    // Without raising it, CAP_SYS_ADMIN cannot be used for setns.
    let (ok, out) = exec_in_netns(&ns, None, "true");
    assert!(!ok && out.contains("Operation not permitted"), "setns worked with CapEff 0:\n{out}");

    // prepare_exec in the child: CAP_SYS_ADMIN effective for setns before
    // exec, CAP_NET_ADMIN ambient for the program, which holds that alone.
    let child = (Capability::SysAdmin.bit(), Capability::NetAdmin.bit());
    let (ok, out) =
        exec_in_netns(&ns, Some(child), "id -u && ip addr add 192.0.2.77/32 dev lo && grep ^Cap /proc/self/status");
    assert!(ok, "setns + ip addr add failed:\n{out}");
    assert!(out.starts_with("65534\n"), "{out}");
    for field in ["CapEff", "CapPrm", "CapAmb"] {
        assert_eq!(cap_field(&out, field), Capability::NetAdmin.bit(), "{field} in\n{out}");
    }
    // ... and the monitor itself still holds nothing effective.
    assert_eq!(cap_field(&thread_status(), "CapEff"), 0);
}

/// Makes this thread's inheritable set equal to its permitted set (what a
/// service manager's `CapabilityInheritable=` does), so the drop has to clear
/// it. Raw capget/capset, ABI version 3.
fn raise_inheritable() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header { version: 0x2008_0522, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: a header and two data words, as version 3 requires.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut Header, data.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
    for d in &mut data {
        d.inheritable = d.permitted;
    }
    // SAFETY: as above; the kernel only reads `data`.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
    assert_ne!(cap_field(&thread_status(), "CapInh"), 0);
}

fn child_none() {
    let ns = File::open(std::env::var_os(NETNS_ENV).expect("netns path")).expect("open netns");
    raise_inheritable();
    drop_to(Some("65534"), Some("65534"), &[]).expect("drop_to");

    assert_eq!(ids(), (NOBODY, NOBODY, NOBODY, vec![NOBODY]));
    let status = thread_status();
    for field in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(cap_field(&status, field), 0, "{field} in\n{status}");
    }
    let out = Command::new("sh").arg("-c").arg("grep ^Cap /proc/self/status").output().expect("sh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(cap_field(&text, "CapEff"), 0, "{text}");
    assert_eq!(cap_field(&text, "CapAmb"), 0, "{text}");

    assert_eq!(cap_field(&status, "CapBnd"), 0, "{status}");
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
    // Without CAP_SYS_ADMIN the namespace cannot be entered, even trying.
    let (ok, out) = exec_in_netns(&ns, Some((Capability::SysAdmin.bit(), 0)), "true");
    assert!(!ok && out.contains("Operation not permitted"), "setns unexpectedly worked:\n{out}");

    // The state file: a root-owned conf dir is not writable any more (the
    // error names the file and the step); a dir owned by the user is.
    let root_dir = Path::new(&std::env::var_os(ROOT_DIR_ENV).expect("root dir")).to_path_buf();
    let err = write_atomic(&root_dir.join("state"), b"primary", 0o644).expect_err("root-owned dir");
    assert_eq!(err.step, Step::CreateTemp);
    assert_eq!(err.source.kind(), std::io::ErrorKind::PermissionDenied);
    let owned_dir = Path::new(&std::env::var_os(OWNED_DIR_ENV).expect("owned dir")).to_path_buf();
    write_atomic(&owned_dir.join("state"), b"primary", 0o644).expect("dir owned by the user");
}

fn child_conntrackd() {
    drop_to(Some("65534"), Some("65534"), CONNTRACKD_CAPS).expect("drop_to");
    assert_eq!(ids(), (NOBODY, NOBODY, NOBODY, vec![NOBODY]));
    let status = thread_status();
    assert_eq!(cap_field(&status, "CapPrm"), 0x20_0002, "{status}");
    assert_eq!(cap_field(&status, "CapBnd"), 0x20_0002, "{status}");
    for field in ["CapEff", "CapInh", "CapAmb"] {
        assert_eq!(cap_field(&status, field), 0, "{field} in\n{status}");
    }
    // CAP_DAC_OVERRIDE is kept for conntrackd, not for the monitor: the
    // state file cannot be written into a root-only directory (a conf_dir
    // link pointing there gets nothing).
    let root_dir = Path::new(&std::env::var_os(ROOT_DIR_ENV).expect("root dir")).to_path_buf();
    let err = write_atomic(&root_dir.join("state"), b"backup", 0o644).expect_err("root-owned dir");
    assert_eq!(err.source.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
}

fn child_names() {
    drop_to(Some("nobody"), None, &[]).expect("drop_to nobody");
    let gid = nix::unistd::User::from_name("nobody").expect("getpwnam").expect("nobody exists").gid.as_raw();
    assert_eq!(ids(), (NOBODY, NOBODY, gid, vec![gid]));
}

fn child_root() {
    // Neutron's agent running as root passes --user 0 --group 0: nothing changes.
    let before = thread_status();
    drop_to(Some("0"), Some("root"), &[Capability::NetAdmin]).expect("no-op");
    assert_eq!(ids().0, 0);
    assert_eq!(cap_field(&thread_status(), "CapEff"), cap_field(&before, "CapEff"));
}

/// A namespace to enter, a root-owned dir and a dir owned by uid 65534.
struct Fixture {
    ns: common::Netns,
    dir: common::TempDir,
}

impl Fixture {
    fn new(prefix: &str) -> Fixture {
        let ns = common::Netns::new(prefix);
        let dir = common::TempDir::new(prefix);
        std::fs::create_dir(dir.join("root-owned")).expect("mkdir");
        std::fs::create_dir(dir.join("owned")).expect("mkdir");
        let nobody = Some(nix::unistd::Uid::from_raw(NOBODY));
        nix::unistd::chown(&dir.join("owned"), nobody, Some(nix::unistd::Gid::from_raw(NOBODY))).expect("chown");
        Fixture { ns, dir }
    }

    fn run(&self, test: &str, case: &str) -> String {
        let ns = self.ns.path();
        let (root_dir, owned_dir) = (self.dir.join("root-owned"), self.dir.join("owned"));
        run_case(test, case, &[(NETNS_ENV, &ns), (ROOT_DIR_ENV, &root_dir), (OWNED_DIR_ENV, &owned_dir)])
    }
}

#[test]
fn kept_caps_are_permitted_only_and_raised_in_the_child_alone() {
    child_entry();
    if !common::require_root_and(&["ip", "sh", "grep"]) {
        return;
    }
    let fx = Fixture::new("pdkeep");
    fx.run("kept_caps_are_permitted_only_and_raised_in_the_child_alone", "keep");
    // The address added by uid 65534 from inside the namespace is there.
    let out = fx.ns.ip(&["-o", "addr", "show", "dev", "lo"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("192.0.2.77/32"));
}

#[test]
fn keeping_nothing_leaves_no_capability() {
    child_entry();
    if !common::require_root_and(&["ip", "sh", "grep"]) {
        return;
    }
    let fx = Fixture::new("pdnone");
    fx.run("keeping_nothing_leaves_no_capability", "none");
    assert_eq!(std::fs::read(fx.dir.join("owned").join("state")).expect("state written"), b"primary");
    assert!(!fx.dir.join("root-owned").join("state").exists());
}

#[test]
fn conntrackd_caps_are_permitted_not_effective() {
    child_entry();
    if !common::require_root_and(&["ip"]) {
        return;
    }
    let fx = Fixture::new("pdct");
    fx.run("conntrackd_caps_are_permitted_not_effective", "conntrackd");
    assert!(!fx.dir.join("root-owned").join("state").exists());
}

#[test]
fn user_name_without_group_takes_its_primary_group() {
    child_entry();
    if !common::require_root_and(&[]) {
        return;
    }
    if !matches!(nix::unistd::User::from_name("nobody"), Ok(Some(u)) if u.uid.as_raw() == NOBODY) {
        eprintln!("SKIP user_name_without_group_takes_its_primary_group: no user nobody with uid 65534");
        return;
    }
    run_case("user_name_without_group_takes_its_primary_group", "names", &[]);
}

#[test]
fn already_root_is_a_no_op() {
    child_entry();
    if !common::require_root_and(&[]) {
        return;
    }
    run_case("already_root_is_a_no_op", "root", &[]);
}
