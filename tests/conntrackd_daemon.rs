//! `harouterd run` owns conntrackd as it owns keepalived (issue 12): real
//! conntrackd (Debian's 1.4.7) and real keepalived in lab namespaces
//! (tests/common/lab.rs).
//!
//! - Two nodes: a connection entered into the primary's kernel table (with
//!   the `conntrack` tool) reaches the backup's conntrackd over FTFW
//!   multicast on the HA veth, and is in the backup's kernel table once it
//!   has taken over; with `ha_conntrackd_enabled = false` it never is.
//! - One node: conntrackd starts before keepalived, is respawned at once
//!   when killed, adopted (same pid) across a `kill -9` of the daemon,
//!   restarted (keepalived not signalled) when only conntrackd.conf
//!   changes, stopped with its files removed when turned off or when the
//!   router leaves the config, and restarted when the HA interface comes
//!   back.
//! - A keepalived and a conntrackd of ours left in an old instance of the
//!   router's namespace (deleted and re-created while the daemon was down)
//!   are stopped and replaced by one each in the current namespace.
//!
//! Needs root, keepalived, conntrackd, conntrack and ip (skipped otherwise,
//! failing under CI=true). Waits are bounded polls; timings are printed
//! (`--nocapture`).

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::lab::{
    Lab, Node, OpenWatch, RouterSpec, cmdline, expect_nothing_happens, ms, send_signal, wait_for, wait_until,
};
use common::{Netns, tool};

const SEC: Duration = Duration::from_secs(1);
/// Election with advert_int 1 and a loaded 2-core box.
const CONVERGE: Duration = Duration::from_secs(20);

fn gate() -> bool {
    common::require_root_and(&["keepalived", "conntrackd", "conntrack", "ip"])
}

fn with_conntrackd() -> Vec<String> {
    vec!["ha_conntrackd_enabled = true".into(), format!("conntrackd_path = {}", tool("conntrackd").display())]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn is_socket(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Waits until the router's conntrackd on `node` runs and is up (its
/// control socket is there) and is the only conntrackd with its config.
fn wait_conntrackd_up(lab: &Lab, node: usize, id: &str, timeout: Duration) -> u32 {
    let n = &lab.nodes[node];
    wait_for(timeout, || {
        let pid = n.conntrackd_pid(id)?;
        (is_socket(&n.router_dir(id).join("conntrackd.ctl")) && n.conntrackd_processes(id) == [pid]).then_some(pid)
    })
    .map(|(pid, _)| pid)
    .unwrap_or_else(|| {
        panic!("node {} router {id}: conntrackd never up: {:?}\n{}", n.name, n.conntrackd_processes(id), lab.dump())
    })
}

/// `conntrack ARGS` inside `ns`; its stdout.
fn conntrack(ns: &Netns, args: &[&str]) -> String {
    let mut argv = vec![tool("conntrack").display().to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let out = ns.exec(&argv);
    assert!(out.status.success(), "conntrack {args:?} in {}: {}", ns.name(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `conntrackd -C CONF OPT` inside `ns` (a client command); its stdout.
fn conntrackd_client(ns: &Netns, conf: &Path, opt: &str) -> String {
    let out = ns.exec(&[&tool("conntrackd").display().to_string(), "-C", &conf.display().to_string(), opt]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TCP connection as `conntrack -L` shows it (original direction).
const FLOW: &str = "src=10.9.0.2 dst=10.9.1.2 sport=40001 dport=2222";

fn has_flow(table: &str) -> bool {
    table.contains(FLOW)
}

/// Enters the established TCP connection [`FLOW`] into the kernel table of
/// `ns`, as a connection routed through the router would be.
fn track_a_connection(ns: &Netns) {
    conntrack(
        ns,
        &[
            "-I",
            "-p",
            "tcp",
            "-s",
            "10.9.0.2",
            "-d",
            "10.9.1.2",
            "--sport",
            "40001",
            "--dport",
            "2222",
            "--state",
            "ESTABLISHED",
            "-u",
            "ASSURED",
            "-t",
            "600",
        ],
    );
    assert!(has_flow(&conntrack(ns, &["-L"])), "the entry is not in {}'s table", ns.name());
}

/// The VIP leaves node A: SIGTERM with `on_exit = stop` makes A's keepalived
/// send its priority-0 advert, and B takes over at once.
fn fail_over_to_b(lab: &Lab, id: &str) -> Duration {
    let t0 = Instant::now();
    lab.nodes[0].signal(libc::SIGTERM);
    let b = &lab.nodes[1];
    wait_until(CONVERGE, || lab.holders(id) == [1] && b.state(id).as_deref() == Some("primary"))
        .unwrap_or_else(|| panic!("B never took over\n{}", lab.dump()));
    let status = lab.nodes[0].wait_exit(15 * SEC).unwrap_or_else(|| panic!("A never exited\n{}", lab.dump()));
    assert_eq!(status.code(), Some(0), "A's exit\n{}", lab.dump());
    t0.elapsed()
}

// ---------------------------------------------------------------------------
// 1. A failover keeps the connection

/// The point of issue 12: with conntrackd, a connection the primary tracks
/// is in the backup's kernel table after a failover. On the way it is seen
/// in the backup's external cache (so it crossed the HA veth, FTFW over
/// multicast 225.0.0.50), and not yet in its kernel table (only the
/// daemon's `-c` on becoming primary commits it).
#[test]
fn a_tracked_connection_survives_a_failover() {
    if !gate() {
        return;
    }
    let mut extra = with_conntrackd();
    extra.push("on_exit = stop".into());
    let id = "c1";
    let lab = Lab::new("ctfo", &["A", "B"], vec![RouterSpec::new(id, 7).with_ha_address()], &strs(&extra));
    lab.start_staggered(CONVERGE);
    let (holders, _) = lab.wait_consistent(CONVERGE);
    assert_eq!(holders, [0], "staggered start: A primary");
    let a_ctd = wait_conntrackd_up(&lab, 0, id, 10 * SEC);
    let b_ctd = wait_conntrackd_up(&lab, 1, id, 10 * SEC);
    for (n, node) in lab.nodes.iter().enumerate() {
        let conf = fs::read_to_string(node.conntrackd_conf(id)).expect("conntrackd.conf");
        let own = format!("IPv4_interface 169.254.192.{}\n", n + 1);
        assert!(conf.contains(&own) && conf.contains("Group 3787\n"), "node {}: {conf}", node.name);
    }
    println!("conntrackd: A pid {a_ctd}, B pid {b_ctd}");

    let (a_ns, b_ns) = (lab.ns(0, id), lab.ns(1, id));
    track_a_connection(a_ns);
    let b_conf = lab.nodes[1].conntrackd_conf(id);
    let replicated = wait_until(10 * SEC, || has_flow(&conntrackd_client(b_ns, &b_conf, "-e")))
        .unwrap_or_else(|| panic!("the connection never reached B's external cache\n{}", lab.dump()));
    println!("A's connection in B's external cache after {:.0} ms", ms(replicated));
    assert!(!has_flow(&conntrack(b_ns, &["-L"])), "in B's kernel table before any failover");

    let took = fail_over_to_b(&lab, id);
    let committed = wait_until(10 * SEC, || has_flow(&conntrack(b_ns, &["-L"])));
    let committed = committed.unwrap_or_else(|| panic!("not in B's kernel table after the failover\n{}", lab.dump()));
    println!(
        "failover: B primary {:.0} ms after SIGTERM to A; the connection in B's kernel table {:.0} ms later",
        ms(took),
        ms(committed)
    );
    let log = lab.nodes[1].log_text();
    assert!(log.contains(&format!("Synced connection tracking state on primary for router {id}")), "{log}");
    // on_exit = stop: A stopped its conntrackd too (after keepalived).
    let a = &lab.nodes[0];
    assert!(a.conntrackd_processes(id).is_empty() && cmdline(a_ctd).is_empty(), "A's conntrackd still runs");
    assert!(!a.router_dir(id).exists(), "A left its router directory");
}

/// The same lab without conntrackd: the connection the primary tracked is
/// nowhere on the new primary, for longer than it took above.
#[test]
fn without_conntrackd_the_connection_is_lost() {
    if !gate() {
        return;
    }
    let id = "c1";
    let lab = Lab::new("ctoff", &["A", "B"], vec![RouterSpec::new(id, 7).with_ha_address()], &["on_exit = stop"]);
    lab.start_staggered(CONVERGE);
    let (holders, _) = lab.wait_consistent(CONVERGE);
    assert_eq!(holders, [0], "staggered start: A primary");
    let (a_ns, b_ns) = (lab.ns(0, id), lab.ns(1, id));
    track_a_connection(a_ns);
    fail_over_to_b(&lab, id);
    expect_nothing_happens(3 * SEC, "on the new primary without conntrackd", || {
        match has_flow(&conntrack(b_ns, &["-L"])) {
            true => Err("the connection is in B's kernel table".into()),
            false => Ok(()),
        }
    });
    for node in &lab.nodes {
        assert!(node.conntrackd_processes(id).is_empty(), "a conntrackd runs on {}", node.name);
        assert!(!node.conntrackd_conf(id).exists(), "{} has a conntrackd.conf", node.name);
    }
}

// ---------------------------------------------------------------------------
// 2. Supervision on one node

fn status_field(node: &Node, id: &str, key: &str) -> Option<String> {
    let (status, body) = common::http_get(&node.socket(), &format!("/v1/routers/{id}"));
    (status == Some(200)).then_some(())?;
    let rest = body.split_once(&format!("\"{key}\":"))?.1;
    Some(rest.split([',', '}']).next()?.trim().to_owned())
}

fn metric(node: &Node, line_start: &str) -> Option<String> {
    let (_, body) = common::http_get(&node.socket(), "/metrics");
    body.lines().find_map(|l| l.strip_prefix(line_start).map(|v| v.trim().to_owned()))
}

/// conntrackd killed: respawned at once (timed here; `bench/` has the
/// measurement), shown in `status` and `/metrics`, and the peer is asked
/// for a resync again; the daemon killed: the same conntrackd is adopted
/// (no second one); the router removed: conntrackd is gone with every file.
#[test]
fn conntrackd_is_respawned_adopted_and_removed_with_its_router() {
    if !gate() {
        return;
    }
    let id = "c1";
    let mut lab = Lab::new("ctsup", &["A"], vec![RouterSpec::new(id, 3).with_ha_address()], &strs(&with_conntrackd()));
    let node = &lab.nodes[0];
    node.start();
    let first = wait_conntrackd_up(&lab, 0, id, 10 * SEC);
    lab.wait_consistent(CONVERGE);
    let log = node.log_text();
    let (ct, ka) = (
        log.find(&format!("router {id}: conntrackd started (pid {first})")),
        log.find(&format!("router {id}: keepalived started (pid")),
    );
    assert!(ct.is_some() && ka.is_some() && ct < ka, "conntrackd must start before keepalived:\n{log}");
    let resync = format!("Asked the peer for a connection tracking resync for router {id}");
    wait_until(5 * SEC, || node.log_text().matches(&resync).count() == 1)
        .unwrap_or_else(|| panic!("no resync asked after the start\n{}", lab.dump()));

    // Killed: running again, at once.
    let killed = Instant::now();
    send_signal(first, libc::SIGKILL);
    let mut second = None;
    while killed.elapsed() < 5 * SEC {
        if let Some(p) = node.conntrackd_pid(id).filter(|&p| p != first) {
            second = Some(p);
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = killed.elapsed();
    let second = second.unwrap_or_else(|| panic!("conntrackd not running again 5 s after kill -9\n{}", lab.dump()));
    println!("kill -9 of conntrackd (pid {first}) -> pid {second} running with its config after {:.1} ms", ms(took));
    assert!(took < 2 * SEC, "respawn took {took:?}");
    assert_eq!(wait_conntrackd_up(&lab, 0, id, 5 * SEC), second, "respawned once");
    wait_until(5 * SEC, || node.log_text().matches(&resync).count() == 2)
        .unwrap_or_else(|| panic!("no resync asked after the respawn\n{}", lab.dump()));
    let shown = wait_until(5 * SEC, || {
        status_field(node, id, "conntrackd_pid") == Some(second.to_string())
            && status_field(node, id, "conntrackd_restarts").as_deref() == Some("1")
            && metric(node, &format!("harouterd_conntrackd_restarts_total{{router=\"{id}\"}}")).as_deref() == Some("1")
    });
    assert!(shown.is_some(), "status/metrics do not show the respawn\n{}", lab.dump());
    assert!(node.log_text().contains(&format!("conntrackd (pid {first}) died")), "{}", node.log_text());

    // The daemon killed and started again: the same conntrackd, adopted.
    node.kill9();
    assert_eq!(node.conntrackd_pid(id), Some(second), "kill -9 of the daemon touched conntrackd");
    let offset = node.log_text().len();
    node.start();
    let adopted = format!("router {id}: adopted the running conntrackd (pid {second})");
    wait_until(10 * SEC, || node.log_text()[offset..].contains(&adopted))
        .unwrap_or_else(|| panic!("conntrackd not adopted\n{}", lab.dump()));
    node.wait_answering(10 * SEC);
    expect_nothing_happens(SEC, "after the adoption", || match node.conntrackd_processes(id) {
        p if p == [second] => Ok(()),
        p => Err(format!("conntrackd processes {p:?}, not [{second}]")),
    });
    assert!(!node.log_text()[offset..].contains("conntrackd started"), "{}", node.log_text());
    assert_eq!(status_field(node, id, "conntrackd_pid"), Some(second.to_string()));

    // The router leaves the config: conntrackd goes, and every file.
    let dir = node.router_dir(id);
    assert!(dir.join("conntrackd.pid").exists() && dir.join("conntrackd.lock").exists());
    lab.routers.clear();
    lab.write_config(0);
    let node = &lab.nodes[0];
    node.signal(libc::SIGHUP);
    let gone = wait_until(10 * SEC, || {
        node.conntrackd_processes(id).is_empty() && node.keepalived_processes(id).is_empty() && !dir.exists()
    });
    assert!(
        gone.is_some(),
        "router removed: conntrackd {:?}, dir {}\n{}",
        node.conntrackd_processes(id),
        dir.exists(),
        { node.log_text() }
    );
    assert!(cmdline(second).is_empty(), "conntrackd {second} still runs");
    let log = node.log_text();
    let (ka, ct) = (
        log.rfind(&format!("router {id}: keepalived stopped")),
        log.rfind(&format!("router {id}: conntrackd stopped")),
    );
    assert!(ka.is_some() && ct.is_some() && ka < ct, "keepalived must stop before conntrackd:\n{log}");
}

/// SIGHUP: a new conntrackd.conf alone restarts conntrackd and sends
/// keepalived nothing; `ha_conntrackd_enabled = false` stops conntrackd and
/// removes its files (keepalived untouched); turned on again, it starts.
#[test]
fn conntrackd_follows_its_config_on_sighup_without_touching_keepalived() {
    if !gate() {
        return;
    }
    let id = "c1";
    let mut lab = Lab::new("ctcfg", &["A"], vec![RouterSpec::new(id, 4).with_ha_address()], &strs(&with_conntrackd()));
    lab.nodes[0].start();
    let first = wait_conntrackd_up(&lab, 0, id, 10 * SEC);
    lab.wait_consistent(CONVERGE);
    let node = &lab.nodes[0];
    let keepalived = node.keepalived_pid(id).expect("keepalived");
    let dir = node.router_dir(id);
    let opens = OpenWatch::new(std::slice::from_ref(&dir));
    let untouched = |lab: &Lab| -> Result<(), String> {
        let node = &lab.nodes[0];
        let reloads = opens.keepalived_opens(&node.conf(id));
        match (node.keepalived_pid(id), reloads.is_empty()) {
            (Some(p), true) if p == keepalived => Ok(()),
            (p, _) => Err(format!("keepalived {p:?} (was {keepalived}), reloads {reloads:?}")),
        }
    };

    // conntrackd.conf alone changes.
    lab.nodes[0].daemon_extra.push("ha_conntrackd_hashsize = 16384".into());
    lab.write_config(0);
    let node = &lab.nodes[0];
    node.signal(libc::SIGHUP);
    let restarted = wait_for(10 * SEC, || {
        let pid = node.conntrackd_pid(id).filter(|&p| p != first && cmdline(first).is_empty())?;
        is_socket(&dir.join("conntrackd.ctl")).then_some(pid)
    });
    let (second, took) = restarted.unwrap_or_else(|| panic!("conntrackd not restarted\n{}", lab.dump()));
    println!("new conntrackd.conf: conntrackd {first} -> {second} after {:.0} ms", ms(took));
    let conf = fs::read_to_string(node.conntrackd_conf(id)).expect("conntrackd.conf");
    assert!(conf.contains("    HashSize 16384\n"), "{conf}");
    assert!(node.log_text().contains(&format!("router {id}: conntrackd.conf changed, restarting conntrackd")));
    // Longer than keepalived's SIGHUP throttle (1.5 s): a deferred SIGHUP
    // would show.
    expect_nothing_happens(2 * SEC, "keepalived after a conntrackd.conf change", || untouched(&lab));
    assert_eq!(status_field(node, id, "conntrackd_restarts").as_deref(), Some("0"), "a restart is no death");

    // Turned off: stopped, files gone, keepalived untouched.
    lab.nodes[0].daemon_extra.retain(|l| !l.starts_with("ha_conntrackd_enabled"));
    lab.write_config(0);
    let node = &lab.nodes[0];
    node.signal(libc::SIGHUP);
    let names = ["conntrackd.conf", "conntrackd.pid", "conntrackd.lock", "conntrackd.ctl"];
    let off = wait_until(10 * SEC, || {
        node.conntrackd_processes(id).is_empty() && names.iter().all(|n| !dir.join(n).exists())
    });
    assert!(off.is_some(), "conntrackd off: {:?}, files {:?}\n{}", node.conntrackd_processes(id), listing(&dir), {
        lab.dump()
    });
    assert!(cmdline(second).is_empty());
    assert_eq!(status_field(node, id, "conntrackd").as_deref(), Some("false"));
    untouched(&lab).unwrap_or_else(|e| panic!("turning conntrackd off: {e}"));

    // On again.
    lab.nodes[0].daemon_extra.extend(with_conntrackd().into_iter().filter(|l| l.starts_with("ha_conntrackd_enabled")));
    lab.write_config(0);
    lab.nodes[0].signal(libc::SIGHUP);
    let third = wait_conntrackd_up(&lab, 0, id, 10 * SEC);
    assert!(third != second);
    expect_nothing_happens(2 * SEC, "keepalived after conntrackd was turned on", || untouched(&lab));
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned())).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The HA interface deleted and created again: conntrackd's multicast
/// membership went with the old interface, so a new conntrackd starts. The
/// namespace deleted and created again: a new conntrackd runs in the new
/// one.
#[test]
fn conntrackd_is_restarted_when_its_interface_or_namespace_comes_back() {
    if !gate() {
        return;
    }
    let id = "c1";
    let lab = Lab::new("ctha", &["A"], vec![RouterSpec::new(id, 5).with_ha_address()], &strs(&with_conntrackd()));
    lab.nodes[0].start();
    let first = wait_conntrackd_up(&lab, 0, id, 10 * SEC);
    lab.wait_consistent(CONVERGE);
    let ns = lab.ns(0, id);
    ns.ip(&["link", "del", "ha-c1"]);
    common::add_interfaces(ns, &["ha-c1"]);
    ns.ip(&["addr", "add", "169.254.192.1/18", "dev", "ha-c1"]);
    let node = &lab.nodes[0];
    let second = wait_for(10 * SEC, || node.conntrackd_pid(id).filter(|&p| p != first && cmdline(first).is_empty()));
    let (second, took) = second.unwrap_or_else(|| panic!("conntrackd not restarted\n{}", lab.dump()));
    println!("HA interface re-created: conntrackd {first} -> {second} {:.0} ms after the poll began", ms(took));
    let log = node.log_text();
    assert!(log.contains("is back as a new interface (ifindex") && log.contains("restarting conntrackd"), "{log}");
    lab.wait_consistent(CONVERGE);

    let name = ns.name().to_owned();
    common::run_ok(tool("ip"), &["netns", "del", &name]);
    common::recreate_namespace(&name, "ha-c1", "169.254.192.1/18");
    let inode = fs::metadata(ns.path()).expect("namespace").ino();
    // A conntrackd started before the namespace's interface is up may die
    // and be respawned: what must hold is one conntrackd, in the new
    // namespace, and nothing left of the old one.
    let third = wait_for(10 * SEC, || {
        node.conntrackd_pid(id).filter(|&p| {
            p != second
                && cmdline(second).is_empty()
                && netns_of(p) == Some(inode)
                && node.conntrackd_processes(id) == [p]
        })
    });
    let (third, took) = third.unwrap_or_else(|| panic!("no conntrackd in the new namespace\n{}", lab.dump()));
    println!("namespace re-created: conntrackd {second} -> {third} after {:.0} ms", ms(took));
    lab.wait_consistent(CONVERGE);
}

/// A conntrackd that cannot be started, then one that dies at once: each
/// is shown in `status` and retried with backoff while keepalived serves
/// the router and the transition syncs run (and fail, logged) rather than
/// wait; the real one, configured on SIGHUP, then runs.
#[test]
fn a_conntrackd_that_cannot_run_is_shown_and_retried_while_keepalived_serves() {
    if !gate() {
        return;
    }
    let id = "c1";
    let extra = ["ha_conntrackd_enabled = true", "conntrackd_path = /nonexistent/conntrackd"];
    let mut lab = Lab::new("ctbad", &["A"], vec![RouterSpec::new(id, 2).with_ha_address()], &extra);
    lab.nodes[0].start();
    lab.wait_consistent(CONVERGE);
    let node = &lab.nodes[0];
    let error = |node: &Node| status_field(node, id, "last_error").unwrap_or_default();
    wait_until(5 * SEC, || error(node).contains("cannot start conntrackd (/nonexistent/conntrackd)"))
        .unwrap_or_else(|| panic!("status: {}\n{}", error(node), lab.dump()));
    let failed_sync = format!("Failed to sync connection tracking state on primary for router {id}");
    wait_until(5 * SEC, || node.log_text().contains(&failed_sync))
        .unwrap_or_else(|| panic!("the sync waited for a conntrackd that cannot start\n{}", lab.dump()));
    assert_eq!(status_field(node, id, "conntrackd_pid").as_deref(), Some("null"));

    // One that dies at once: deaths counted, backed off.
    lab.nodes[0].daemon_extra.retain(|l| !l.starts_with("conntrackd_path"));
    lab.nodes[0].daemon_extra.push("conntrackd_path = /bin/false".into());
    lab.write_config(0);
    let node = &lab.nodes[0];
    node.signal(libc::SIGHUP);
    let restarts = |node: &Node| status_field(node, id, "conntrackd_restarts").and_then(|r| r.parse::<u32>().ok());
    wait_until(10 * SEC, || restarts(node).is_some_and(|r| r >= 2) && error(node).contains("conntrackd (pid"))
        .unwrap_or_else(|| panic!("deaths not shown: {:?} {}\n{}", restarts(node), error(node), lab.dump()));
    let deaths = restarts(node).unwrap_or_default();
    std::thread::sleep(SEC);
    let more = restarts(node).unwrap_or_default() - deaths;
    assert!(more <= 4, "{more} deaths in 1 s: no backoff");
    assert_eq!(lab.holders(id), [0], "keepalived kept serving");

    // The real one: tried at once, not at the end of the backoff.
    lab.nodes[0].daemon_extra.retain(|l| !l.starts_with("conntrackd_path"));
    lab.nodes[0].daemon_extra.push(format!("conntrackd_path = {}", tool("conntrackd").display()));
    lab.write_config(0);
    let backoff_ms = |log: &str| -> Option<u64> {
        let died = format!("router {id}: conntrackd (pid");
        let line = log.lines().rev().find(|l| l.contains(&died) && l.contains("respawning in "))?;
        line.rsplit_once("respawning in ")?.1.strip_suffix(" ms")?.parse().ok()
    };
    let hup = Instant::now();
    lab.nodes[0].signal(libc::SIGHUP);
    wait_conntrackd_up(&lab, 0, id, 10 * SEC);
    let took = hup.elapsed();
    // The backoff the last death scheduled, as logged once the SIGHUP came.
    let backoff = backoff_ms(&lab.nodes[0].log_text()).expect("a logged respawn delay");
    println!("conntrackd_path fixed: conntrackd up {:.0} ms after the SIGHUP (backoff {backoff} ms)", ms(took));
    assert!(
        backoff >= 400 && took < Duration::from_millis(backoff),
        "up after {took:?}, backoff {backoff} ms: waited it out"
    );
}

// ---------------------------------------------------------------------------
// 3. A namespace re-created while the daemon was down

fn netns_of(pid: u32) -> Option<u64> {
    fs::metadata(format!("/proc/{pid}/ns/net")).ok().map(|m| m.ino())
}

/// keepalived and conntrackd of ours still running in the old instance of
/// the router's namespace when the daemon starts: each is stopped (through
/// its pidfd) and one is started in the current namespace. Before, neither
/// was adopted nor stopped, and a second keepalived served the router.
#[test]
fn programs_left_in_an_old_namespace_are_replaced_after_a_daemon_restart() {
    if !gate() {
        return;
    }
    let id = "c1";
    let lab = Lab::new("ctns", &["A"], vec![RouterSpec::new(id, 6).with_ha_address()], &strs(&with_conntrackd()));
    let node = &lab.nodes[0];
    node.start();
    let old_ct = wait_conntrackd_up(&lab, 0, id, 10 * SEC);
    lab.wait_consistent(CONVERGE);
    let (old_ka, old_vrrp) = (node.keepalived_pid(id).expect("keepalived"), node.vrrp_pid(id).expect("vrrp"));
    let name = lab.ns(0, id).name().to_owned();
    let path: PathBuf = lab.ns(0, id).path();
    let old_ns = netns_of(old_ka).expect("its namespace");

    node.kill9();
    common::run_ok(tool("ip"), &["netns", "del", &name]);
    common::recreate_namespace(&name, "ha-c1", "169.254.192.1/18");
    let new_ns = fs::metadata(&path).expect("namespace").ino();
    assert_ne!(new_ns, old_ns);
    for pid in [old_ka, old_vrrp, old_ct] {
        assert_eq!(netns_of(pid), Some(old_ns), "pid {pid} left the old namespace");
    }

    node.start();
    let replaced = wait_until(20 * SEC, || {
        let (Some(ka), Some(vrrp), Some(ct)) = (node.keepalived_pid(id), node.vrrp_pid(id), node.conntrackd_pid(id))
        else {
            return false;
        };
        [old_ka, old_vrrp, old_ct].iter().all(|&p| cmdline(p).is_empty())
            && [ka, vrrp, ct].iter().all(|&p| netns_of(p) == Some(new_ns))
            && node.keepalived_processes(id).len() == 2
            && node.conntrackd_processes(id) == [ct]
    });
    let took = replaced.unwrap_or_else(|| {
        panic!(
            "old programs alive: keepalived {} vrrp {} conntrackd {}; keepalived processes {:?}, conntrackd {:?}\n{}",
            !cmdline(old_ka).is_empty(),
            !cmdline(old_vrrp).is_empty(),
            !cmdline(old_ct).is_empty(),
            node.keepalived_processes(id),
            node.conntrackd_processes(id),
            lab.dump()
        )
    });
    println!(
        "daemon restarted over a re-created namespace: old keepalived {old_ka} and conntrackd {old_ct} replaced \
         after {:.0} ms",
        ms(took)
    );
    let log = node.log_text();
    for kind in ["keepalived", "conntrackd"] {
        assert!(log.contains(&format!("router {id}: {kind} (pid ")) && log.contains("older instance"), "{log}");
    }
    lab.wait_consistent(CONVERGE);
    assert_eq!(lab.holders(id), [0], "one primary");
}
