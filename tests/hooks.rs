//! The effective-change hooks for real: the transition script receives
//! exactly `ROUTER_ID STATE` and runs in the daemon's own namespace; IPv6
//! forwarding flips inside a router's namespace (read back with `sysctl`)
//! and nowhere else.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{Netns, TempDir};
use harouterd::actions::hooks::{self, Hooks, ScriptJob};
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

fn job(script: &std::path::Path, router: &str, state: State, previous: Option<State>, seq: u64) -> ScriptJob {
    ScriptJob { script: script.to_path_buf(), router: RouterId::parse(router).unwrap(), state, previous, seq }
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
            "#!/bin/sh\necho \"$1 $2 $HAROUTERD_ROUTER $HAROUTERD_STATE [$HAROUTERD_PREVIOUS] $HAROUTERD_SEQ\" >> '{}'\n\
             readlink /proc/self/ns/net > '{}'\n[ \"$2\" != fault ] || exit 3\n",
            out.display(),
            ns_out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut hooks = Hooks::default();
    let now = Instant::now();
    let first = hooks.run_transition_script(job(&script, "r1", State::Primary, None, 1), now).expect("script starts");
    let exit = wait_child(first, Duration::from_secs(10));
    assert_eq!(exit, ChildExit::Code(0));
    assert_eq!(hooks.running_for(&r1()), 1, "not forgotten until reaped");
    assert!(hooks.child_exited(first, exit, Instant::now()), "recognized as our script");
    assert!(!hooks.child_exited(first, exit, Instant::now()), "only once");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "r1 primary r1 primary [] 1\n");

    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(std::fs::read_to_string(&ns_out).unwrap().trim(), ours.display().to_string());

    // One run at a time per router: the second waits for the first.
    let r2 = RouterId::parse("r-2.x").unwrap();
    let a = hooks.run_transition_script(job(&script, "r-2.x", State::Backup, Some(State::Primary), 2), now);
    let a = a.expect("starts");
    let b = hooks.run_transition_script(job(&script, "r-2.x", State::Fault, Some(State::Backup), 3), now);
    assert_eq!(b, None, "waits for the run going on");
    assert_eq!(hooks.running_for(&r2), 1);
    let ea = wait_child(a, Duration::from_secs(10));
    assert!(hooks.child_exited(a, ea, Instant::now()));
    let b = hooks.running_pid(&r2).expect("the waiting run started when the first ended");
    let eb = wait_child(b, Duration::from_secs(10));
    assert_eq!((ea, eb), (ChildExit::Code(0), ChildExit::Code(3)));
    assert!(hooks.child_exited(b, eb, Instant::now()));
    assert_eq!(hooks.running(), 0);
    let stats = hooks.stats(&r2).unwrap();
    assert_eq!((stats.runs, stats.failures), (2, 1));
    assert_eq!(stats.last_error.as_deref(), Some("transition script for fault failed (exit code 3)"));

    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        ["r1 primary r1 primary [] 1", "r-2.x backup r-2.x backup [primary] 2", "r-2.x fault r-2.x fault [backup] 3"]
    );

    // Not executable: logged, not fatal, nothing to reap.
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    // (exec needs an execute bit even for root)
    assert_eq!(hooks.run_transition_script(job(&script, "r1", State::Backup, Some(State::Primary), 4), now), None);
    assert!(hooks::start_transition_script(&job(&tmp.join("missing.sh"), "r1", State::Backup, None, 5)).is_err());
    assert_eq!(hooks.running(), 0);
}

fn r1() -> RouterId {
    RouterId::parse("r1").expect("a router id")
}
