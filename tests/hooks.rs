//! The effective-change hooks for real: the transition script receives
//! exactly `ROUTER_ID STATE` and runs in the daemon's own namespace; IPv6
//! forwarding flips inside a router's namespace (read back with `sysctl`)
//! and nowhere else.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{Netns, TempDir};
use harouterd::actions::hooks::{self, Hooks};
use harouterd::core::ident::{Namespace, RouterId};
use harouterd::core::state::State;
use harouterd::sys::spawn::ChildExit;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Waits (bounded) for one specific child. Not `spawn::reap` (waitpid -1):
/// it would steal the children of tests running beside this one.
fn wait_child(pid: u32, within: Duration) -> ChildExit {
    let deadline = Instant::now() + within;
    let pid = Pid::from_raw(i32::try_from(pid).unwrap());
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)).expect("waitpid") {
            WaitStatus::Exited(_, code) => return ChildExit::Code(code),
            WaitStatus::Signaled(_, sig, _) => return ChildExit::Signal(sig as i32),
            _ if Instant::now() >= deadline => panic!("child {pid} still running after {within:?}"),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn sysctl_forwarding(ns: &Netns) -> String {
    let out = ns.exec(&["sysctl", "-n", "net.ipv6.conf.all.forwarding"]);
    assert!(out.status.success(), "sysctl failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn own_forwarding() -> Option<String> {
    std::fs::read_to_string(hooks::IPV6_FORWARDING).ok().map(|s| s.trim().to_owned())
}

#[test]
fn ipv6_forwarding_flips_inside_the_router_namespace_only() {
    if !common::require_root_and(&["ip", "sysctl"]) {
        return;
    }
    let ns = Netns::new("fwd");
    let namespace = Namespace::parse(ns.name()).unwrap();
    let ours_before = own_forwarding();
    assert_eq!(sysctl_forwarding(&ns), "0", "a fresh namespace does not forward");

    assert!(hooks::set_ipv6_forwarding(Some(&namespace), true, &r1()));
    assert_eq!(sysctl_forwarding(&ns), "1");
    assert_eq!(own_forwarding(), ours_before, "the daemon's own namespace is untouched");

    hooks::write_ipv6_forwarding(Some(&namespace), false, &r1()).expect("backup: off");
    assert_eq!(sysctl_forwarding(&ns), "0");
    hooks::write_ipv6_forwarding(Some(&namespace), true, &r1()).expect("primary: on");
    assert_eq!(sysctl_forwarding(&ns), "1");
    assert!(hooks::set_ipv6_forwarding(Some(&namespace), false, &r1()), "fault: off");
    assert_eq!(sysctl_forwarding(&ns), "0");
    assert_eq!(own_forwarding(), ours_before);

    // The thread came back to its own namespace every time.
    let here = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    assert_eq!(here, std::fs::read_link("/proc/self/ns/net").unwrap());
}

#[test]
fn transition_script_gets_router_and_state_in_our_namespace() {
    let tmp = TempDir::new("hooks");
    let out = tmp.join("calls");
    let ns_out = tmp.join("netns");
    let script = tmp.join("transition.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1 $2\" >> '{}'\nreadlink /proc/self/ns/net > '{}'\n[ \"$2\" != fault ] || exit 3\n",
            out.display(),
            ns_out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut hooks = Hooks::default();
    let first = hooks.run_transition_script(&script, &r1(), State::Primary).expect("script starts");
    let exit = wait_child(first, Duration::from_secs(10));
    assert_eq!(exit, ChildExit::Code(0));
    assert_eq!(hooks.running_for(&r1()), 1, "not forgotten until reaped");
    assert!(hooks.child_exited(first, exit), "recognized as our script");
    assert!(!hooks.child_exited(first, exit), "only once");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "r1 primary\n");

    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(std::fs::read_to_string(&ns_out).unwrap().trim(), ours.display().to_string());

    // Overlapping runs for one router are allowed; each gets its own state.
    let a = hooks.run_transition_script(&script, &RouterId::parse("r-2.x").unwrap(), State::Backup).expect("starts");
    let b = hooks.run_transition_script(&script, &RouterId::parse("r-2.x").unwrap(), State::Fault).expect("starts");
    assert_eq!(hooks.running_for(&RouterId::parse("r-2.x").unwrap()), 2);
    let (ea, eb) = (wait_child(a, Duration::from_secs(10)), wait_child(b, Duration::from_secs(10)));
    assert_eq!((ea, eb), (ChildExit::Code(0), ChildExit::Code(3)));
    let run_b = hooks.finished(b).expect("ours");
    assert_eq!((run_b.router.as_str(), run_b.state), ("r-2.x", State::Fault));
    assert!(hooks.child_exited(a, ea));
    assert_eq!(hooks.running(), 0);

    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["r-2.x backup", "r-2.x fault", "r1 primary"]);

    // Not executable: logged, not fatal, nothing to reap.
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    // (exec needs an execute bit even for root)
    assert_eq!(hooks.run_transition_script(&script, &r1(), State::Backup), None);
    assert!(hooks::start_transition_script(&tmp.join("missing.sh"), &r1(), State::Backup).is_err());
    assert_eq!(hooks.running(), 0);
}

fn r1() -> RouterId {
    RouterId::parse("r1").expect("a router id")
}
