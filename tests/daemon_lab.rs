//! `harouterd run` against real keepalived doing real VRRP (SPEC 3.1–3.5).
//!
//! Each test builds its own lab (tests/common/lab.rs): one or two nodes, a
//! daemon per node, a namespace per router per node, the two twins of a
//! router joined by a veth pair on the HA network. Priorities are equal and
//! keepalived runs with nopreempt, as Neutron configures it: whoever becomes
//! primary first stays primary. `ha_vrrp_advert_int = 1` keeps elections to
//! about 4 s.
//!
//! The daemons are observed only from outside: state files, pidfiles and
//! keepalived.conf (opens of it counted with fanotify: one per keepalived
//! (re)load), logs, a transition script appending `EPOCH ROUTER STATE`, and
//! a real HTTP receiver on `notify_agent_socket`. Where the primary VIP
//! really is comes from `ip -n NS addr show`.
//!
//! Needs root, keepalived and ip (skipped otherwise, failing under CI=true).
//! Timings are printed (`--nocapture`); waits are bounded polls, generous
//! where VRRP timers are involved, while the assertions stay strict.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::lab::{
    Lab, OpenWatch, RouterSpec, epoch_now, expect_nothing_happens, ms, process_age, send_signal, wait_for, wait_until,
};

const SEC: Duration = Duration::from_secs(1);
/// Election with advert_int 1: 3 × advert_int + skew ≈ 3.8 s, plus the
/// 1 s effective-primary delay; generous for a loaded 2-core box.
const CONVERGE: Duration = Duration::from_secs(20);
/// The SIGHUP throttle window with advert_int 1 (1.5 × advert_int).
const THROTTLE: Duration = Duration::from_millis(1500);

/// Waits until every keepalived in `pids` has run longer than the throttle
/// window a freshly spawned keepalived gets before its first SIGHUP.
fn wait_past_the_first_window(lab: &Lab, pids: &[(Key, (u32, u32))]) {
    let past = THROTTLE + Duration::from_millis(100);
    wait_until(10 * SEC, || pids.iter().all(|(_, (main, _))| process_age(*main).is_some_and(|age| age >= past)))
        .unwrap_or_else(|| panic!("a keepalived is gone\n{}", lab.dump()));
}

fn gate() -> bool {
    common::require_root_and(&["keepalived", "ip"])
}

fn three_routers() -> Vec<RouterSpec> {
    (1..=3).map(|n| RouterSpec::new(&format!("r{n}"), n)).collect()
}

/// The inode of a network namespace, as /proc/PID/ns/net shows it.
fn netns_inode(path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("net:[{}]", fs::metadata(path).expect("netns file").ino())
}

/// Waits until the router's keepalived on `node` is fully up: its pidfile
/// names a live keepalived with the router's config, its VRRP child too,
/// and exactly those two run with that config. Returns (main, vrrp).
fn wait_keepalived_up(lab: &Lab, node: usize, id: &str, timeout: Duration) -> (u32, u32) {
    let n = &lab.nodes[node];
    wait_for(timeout, || {
        let (main, vrrp) = (n.keepalived_pid(id)?, n.vrrp_pid(id)?);
        let mut both = vec![main, vrrp];
        both.sort_unstable();
        (n.keepalived_processes(id) == both).then_some((main, vrrp))
    })
    .map(|(p, _)| p)
    .unwrap_or_else(|| panic!("node {} router {id}: keepalived never fully up\n{}", n.name, lab.dump()))
}

/// A keepalived: (node index, router id).
type Key = (usize, String);
/// Every keepalived's (main, VRRP child) pids, as the pidfiles say.
type Pids = Vec<(Key, (Option<u32>, Option<u32>))>;

/// Every keepalived of every node, once fully up: (main, vrrp).
fn all_pids(lab: &Lab) -> Vec<(Key, (u32, u32))> {
    let mut v = Vec::new();
    for node in 0..lab.nodes.len() {
        for r in lab.routers.iter().filter(|r| r.keepalived) {
            v.push(((node, r.id.clone()), wait_keepalived_up(lab, node, &r.id, 5 * SEC)));
        }
    }
    v
}

fn current_pids(lab: &Lab) -> Pids {
    let mut v = Vec::new();
    for node in 0..lab.nodes.len() {
        for r in lab.routers.iter().filter(|r| r.keepalived) {
            let n = &lab.nodes[node];
            v.push(((node, r.id.clone()), (n.keepalived_pid(&r.id), n.vrrp_pid(&r.id))));
        }
    }
    v
}

fn as_options(v: &[(Key, (u32, u32))]) -> Pids {
    v.iter().map(|(k, (m, r))| (k.clone(), (Some(*m), Some(*r)))).collect()
}

/// Everything each node recorded: (transition lines, notifications).
fn records(lab: &Lab) -> Vec<(usize, usize)> {
    lab.nodes.iter().map(|n| (n.transitions().len(), n.agent.notifications().len())).collect()
}

// ---------------------------------------------------------------------------
// 1. Election

#[test]
fn two_nodes_elect_exactly_one_primary_per_router() {
    if !gate() {
        return;
    }
    let lab = Lab::new("elect", &["A", "B"], three_routers(), &[]);
    lab.start_all();
    let (holders, took) = lab.wait_consistent(CONVERGE);
    println!("election: every router consistent {:.0} ms after both daemons started; holders {holders:?}", ms(took));

    for (node, n) in lab.nodes.iter().enumerate() {
        let log = n.log_text();
        for (r, &holder) in lab.routers.iter().zip(&holders) {
            let (pid, _) = wait_keepalived_up(&lab, node, &r.id, 5 * SEC);
            // In the router's namespace, spawned as the SPEC says.
            let ns_link = fs::read_link(format!("/proc/{pid}/ns/net")).expect("ns link");
            assert_eq!(ns_link, PathBuf::from(netns_inode(&lab.ns(node, &r.id).path())), "{} {}", n.name, r.id);
            let cmdline = common::lab::cmdline(pid);
            let expected = format!(
                "-n -P -f {} -p {} -r {} -D",
                n.conf(&r.id).display(),
                n.pid_file(&r.id).display(),
                n.vrrp_pid_file(&r.id).display()
            );
            assert!(cmdline.ends_with(&expected), "node {} {}: `{cmdline}`", n.name, r.id);
            assert!(log.contains(&format!("router {}: keepalived started (pid {pid})", r.id)), "{log}");
            // The whole history, not just the last word: one effective
            // backup at start, then primary on the holder only.
            let want: Vec<&str> = if node == holder { vec!["backup", "primary"] } else { vec!["backup"] };
            assert_eq!(n.transitions_of(&r.id), want, "node {} {} transition script", n.name, r.id);
            // The agent hears raw changes (issue 10.4): every raw state the
            // daemon logged, in order (keepalived's brief both-primary
            // moment of an election included), ending where the VIP is.
            let agent: Vec<String> = n.notifications_of(&r.id).into_iter().map(|x| x.state).collect();
            assert_eq!(agent, raw_states(&log, &r.id), "node {} {} agent", n.name, r.id);
            assert_eq!(agent.last().map(String::as_str), want.last().copied(), "node {} {} agent", n.name, r.id);
            let announced = log.contains(&format!("router {}: transitioned to primary", r.id));
            assert_eq!(announced, node == holder, "node {} {}: log\n{log}", n.name, r.id);
            // Files as SPEC 3.2 has them.
            assert_eq!(mode(&n.conf(&r.id)), 0o600, "keepalived.conf may hold a password");
            assert_eq!(fs::read(n.state_file(&r.id)).expect("state"), want.last().expect("one").as_bytes());
        }
        let daemon = n.pid().expect("running");
        assert_eq!(common::lab::read_pid(&n.pidfile), Some(daemon), "the daemon's pidfile");
        // Every line of the foreground log in oslo.log's layout:
        // `YYYY-MM-DD HH:MM:SS.mmm PID LEVEL harouterd.daemon [-] message`.
        for line in log.lines() {
            assert!(oslo_line(line, daemon), "node {}: not an oslo-style line from pid {daemon}: {line:?}", n.name);
        }
    }
}

/// The raw states the daemon logged for a router (debug log), in order.
fn raw_states(log: &str, id: &str) -> Vec<String> {
    let needle = format!("router {id}: raw state ");
    log.lines().filter_map(|l| Some(l[l.find(&needle)? + needle.len()..].trim().to_owned())).collect()
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

fn oslo_line(line: &str, pid: u32) -> bool {
    let f: Vec<&str> = line.splitn(7, ' ').collect();
    let digits = |s: &str, seps: &[(usize, u8)]| {
        s.bytes()
            .enumerate()
            .all(|(i, b)| seps.iter().find(|(at, _)| *at == i).map_or(b.is_ascii_digit(), |(_, c)| b == *c))
    };
    f.len() == 7
        && f[0].len() == 10
        && digits(f[0], &[(4, b'-'), (7, b'-')])
        && f[1].len() == 12
        && digits(f[1], &[(2, b':'), (5, b':'), (8, b'.')])
        && f[2] == pid.to_string()
        && ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"].contains(&f[3])
        && f[4] == "harouterd.daemon"
        && f[5] == "[-]"
        && !f[6].is_empty()
}

// ---------------------------------------------------------------------------
// 2. keepalived killed

#[test]
fn killed_keepalived_is_respawned_within_a_second() {
    if !gate() {
        return;
    }
    let lab = Lab::new("respawn", &["A", "B"], three_routers(), &[]);
    lab.start_staggered(CONVERGE);
    let (holders, _) = lab.wait_consistent(CONVERGE);
    assert_eq!(holders, [0, 0, 0], "staggered start: A primary everywhere");

    let mut times = Vec::new();
    for id in lab.ids() {
        let holder = lab.consistent(&id).unwrap_or_else(|e| panic!("{e}\n{}", lab.dump()));
        let node = &lab.nodes[holder];
        let (old, old_vrrp) = wait_keepalived_up(&lab, holder, &id, 5 * SEC);
        let killed = Instant::now();
        send_signal(old, libc::SIGKILL);
        // Tight polling: this is the measurement.
        let mut new = None;
        while killed.elapsed() < 5 * SEC {
            if let Some(p) = node.keepalived_pid(&id).filter(|&p| p != old) {
                new = Some(p);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let took = killed.elapsed();
        let new = new.unwrap_or_else(|| panic!("{id}: keepalived not running again 5 s after kill -9\n{}", lab.dump()));
        println!(
            "{id}: kill -9 of node {}'s primary keepalived (pid {old}) -> pid {new} running with its config, \
             named by the pidfile, after {:.1} ms",
            node.name,
            ms(took)
        );
        times.push(took);
        assert!(took < SEC, "{id}: respawn took {took:?}");
        assert!(common::lab::cmdline(new).contains(&node.conf(&id).display().to_string()));
        let (main, vrrp) = wait_keepalived_up(&lab, holder, &id, 5 * SEC);
        assert_eq!(main, new);
        assert!(vrrp != old_vrrp && common::lab::cmdline(old_vrrp).is_empty(), "old VRRP child still running");
        let log = node.log_text();
        assert!(log.contains(&format!("router {id}: keepalived started (pid {new})")), "{log}");
        assert!(log.contains(&format!("keepalived (pid {old}) died")), "{log}");
    }
    let (holders, took) = lab.wait_consistent(CONVERGE);
    println!(
        "respawn times: {:?} ms; afterwards one primary per router again after {:.0} ms (holders {holders:?})",
        times.iter().map(|t| format!("{:.1}", ms(*t))).collect::<Vec<_>>(),
        ms(took)
    );
}

// ---------------------------------------------------------------------------
// 3. A node stopped with on_exit = stop

#[test]
fn sigterm_with_on_exit_stop_hands_every_router_over() {
    if !gate() {
        return;
    }
    let lab = Lab::new("handover", &["A", "B"], three_routers(), &["on_exit = stop"]);
    lab.start_staggered(CONVERGE);
    let (holders, _) = lab.wait_consistent(CONVERGE);
    assert_eq!(holders, [0, 0, 0], "staggered start: A primary everywhere");
    let ids = lab.ids();
    let a_pids: Vec<(u32, u32)> = ids.iter().map(|id| wait_keepalived_up(&lab, 0, id, 5 * SEC)).collect();
    let b_lines_before = lab.nodes[1].transitions().len();

    let t0 = Instant::now();
    lab.nodes[0].signal(libc::SIGTERM);
    // One loop, so each moment is measured from the SIGTERM.
    let b = &lab.nodes[1];
    let (mut vips, mut states, mut effective, mut exited) = (None, None, None, None);
    while t0.elapsed() < 15 * SEC && (vips.is_none() || states.is_none() || effective.is_none() || exited.is_none()) {
        let now = t0.elapsed();
        if vips.is_none() && ids.iter().all(|id| lab.holders(id) == [1]) {
            vips = Some(now);
        }
        if states.is_none() && ids.iter().all(|id| b.state(id).as_deref() == Some("primary")) {
            states = Some(now);
        }
        if effective.is_none()
            && ids.iter().all(|id| {
                b.last_transition(id).as_deref() == Some("primary")
                    && b.last_notification(id).as_deref() == Some("primary")
            })
        {
            effective = Some(now);
        }
        if exited.is_none() && !lab.nodes[0].is_running() {
            exited = Some(now);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (Some(vips), Some(states), Some(effective), Some(exited)) = (vips, states, effective, exited) else {
        panic!(
            "15 s after SIGTERM to A: B holds every VIP {vips:?}, B's states {states:?}, B announced \
             {effective:?}, A exited {exited:?}\n{}",
            lab.dump()
        );
    };
    let status = lab.nodes[0].wait_exit(SEC).expect("exited");
    println!(
        "SIGTERM to A (on_exit = stop): B holds every VIP after {:.0} ms, B's state files say primary after \
         {:.0} ms, B announced primary (script + agent) after {:.0} ms; A exited ({status}) after {:.0} ms",
        ms(vips),
        ms(states),
        ms(effective),
        ms(exited)
    );
    assert_eq!(status.code(), Some(0), "A's exit: {status}\n{}", lab.dump());
    let a = &lab.nodes[0];
    assert!(!a.pidfile.exists(), "A left its pidfile");
    for (id, (main, vrrp)) in ids.iter().zip(&a_pids) {
        assert!(common::lab::cmdline(*main).is_empty() && common::lab::cmdline(*vrrp).is_empty(), "{id}");
        assert!(a.keepalived_processes(id).is_empty(), "A's keepalived for {id} still runs");
        assert!(!a.pid_file(id).exists() && !a.vrrp_pid_file(id).exists(), "A's {id} pidfiles left");
        assert!(!a.router_dir(id).exists(), "A's {id} conf dir left (SPEC 3.4: removed on stop)");
        assert!(!lab.vip_on(0, id), "{id}: VIP still on A");
        assert_eq!(b.transitions_of(id).last().map(String::as_str), Some("primary"));
        println!("  {id}: A's agent last heard {:?}", a.last_notification(id));
    }
    assert_eq!(b.transitions().len(), b_lines_before + 3, "B: exactly one primary per router: {:?}", b.transitions());
    assert!(processes_of(&lab, 0).is_empty(), "A left processes: {:?}", processes_of(&lab, 0));
}

fn processes_of(lab: &Lab, node: usize) -> Vec<u32> {
    common::lab::processes_matching(&format!("{}/", lab.nodes[node].ha_confs.display()))
}

// ---------------------------------------------------------------------------
// 4. Daemon restart: adoption, no flap

#[test]
fn restarted_daemon_adopts_keepalived_and_the_peer_sees_nothing() {
    if !gate() {
        return;
    }
    let lab = Lab::new("adopt", &["A", "B"], three_routers(), &[]);
    lab.start_staggered(CONVERGE);
    let (holders, _) = lab.wait_consistent(CONVERGE);
    assert_eq!(holders, [0, 0, 0]);
    let ids = lab.ids();
    let before = all_pids(&lab);
    let dirs: Vec<PathBuf> = ids.iter().map(|id| lab.nodes[0].router_dir(id)).collect();
    let opens = OpenWatch::new(&dirs);
    let b_records = (lab.nodes[1].transitions(), lab.nodes[1].agent.notifications().len());
    let a_records = (lab.nodes[0].transitions().len(), lab.nodes[0].agent.notifications().len());

    lab.nodes[0].kill9();
    assert_eq!(as_options(&before), current_pids(&lab), "kill -9 of the daemon touched keepalived");
    let log_offset = lab.nodes[0].log_text().len();
    let restarted = Instant::now();
    lab.nodes[0].start();
    let a = &lab.nodes[0];
    let adopted = wait_until(10 * SEC, || {
        let log = a.log_text();
        let new = &log[log_offset..];
        before.iter().filter(|((n, _), _)| *n == 0).all(|((_, id), (pid, _))| {
            new.contains(&format!("router {id}: adopted the running keepalived (pid {pid})"))
        })
    })
    .unwrap_or_else(|| panic!("A never adopted every keepalived\n{}", lab.dump()));
    println!("restart: A adopted its 3 keepalived {:.0} ms after starting", ms(adopted));

    // 5 s of watching (longer than B needs to take over from a silent A):
    // VIPs stay put, B hears of nothing.
    let mut samples = 0;
    expect_nothing_happens((5 * SEC + adopted).saturating_sub(restarted.elapsed()), "during A's restart", || {
        samples += 1;
        match ids.iter().find(|id| lab.holders(id) != [0]) {
            Some(id) => Err(format!("{id}: VIP moved\n{}", lab.dump())),
            None => Ok(()),
        }
    });
    let b = &lab.nodes[1];
    assert_eq!(b.transitions(), b_records.0, "B ran its transition script during A's restart");
    assert_eq!(b.agent.notifications().len(), b_records.1, "B notified its agent during A's restart");
    assert_eq!(as_options(&before), current_pids(&lab), "keepalived pids changed");
    let reloads: Vec<_> = ids.iter().flat_map(|id| opens.keepalived_opens(&a.conf(id))).collect();
    assert!(reloads.is_empty(), "an adopted keepalived re-read its config (SIGHUP) with no change: {reloads:?}");
    let new_log = a.log_text()[log_offset..].to_string();
    assert!(!new_log.contains("keepalived started"), "A spawned a keepalived on restart:\n{new_log}");
    // The restarted daemon announces what it found, primary, once per
    // router; never a backup in between.
    let new_lines = a.transitions()[a_records.0..].to_vec();
    let mut announced: Vec<(String, String)> = new_lines.iter().map(|t| (t.router.clone(), t.state.clone())).collect();
    announced.sort();
    let want: Vec<(String, String)> = ids.iter().map(|id| (id.clone(), "primary".to_string())).collect();
    assert_eq!(announced, want, "A's transition script after the restart");
    let mut notified: Vec<(String, String)> =
        a.agent.notifications()[a_records.1..].iter().map(|n| (n.router_id.clone(), n.state.clone())).collect();
    notified.sort();
    assert_eq!(notified, want, "A's agent after the restart");
    let (holders, _) = lab.wait_consistent(SEC);
    assert_eq!(holders, [0, 0, 0]);
    let first = new_lines.iter().map(|t| t.at).fold(f64::INFINITY, f64::min);
    println!(
        "restart: {samples} samples over 5 s, no VIP moved, B silent, no SIGHUP, no new keepalived; A re-announced \
         primary for each router (script lines {:?} s after the first)",
        new_lines.iter().map(|t| format!("{:.3}", t.at - first)).collect::<Vec<_>>()
    );

    // A clean stop with on_exit = keep (the default) leaves keepalived
    // running as well (pidfiles and files in place), and the next start
    // adopts it again; B hears of neither.
    let b_records = (lab.nodes[1].transitions(), lab.nodes[1].agent.notifications().len());
    let stopping = Instant::now();
    a.signal(libc::SIGTERM);
    let status = a.wait_exit(5 * SEC).unwrap_or_else(|| panic!("A did not exit on SIGTERM\n{}", lab.dump()));
    println!("SIGTERM with on_exit = keep: A exited ({status}) after {:.0} ms", ms(stopping.elapsed()));
    assert_eq!(status.code(), Some(0));
    assert!(!a.pidfile.exists(), "A left its pidfile");
    assert_eq!(as_options(&before), current_pids(&lab), "on_exit = keep stopped or restarted a keepalived");
    for id in &ids {
        assert!(a.conf(id).exists() && a.pid_file(id).exists(), "{id}: files removed with on_exit = keep");
        assert_eq!(lab.holders(id), [0], "{id}: VIP moved when A stopped");
    }
    let log_offset = a.log_text().len();
    a.start();
    wait_until(10 * SEC, || {
        let log = a.log_text();
        before.iter().filter(|((n, _), _)| *n == 0).all(|((_, id), (pid, _))| {
            log[log_offset..].contains(&format!("router {id}: adopted the running keepalived (pid {pid})"))
        })
    })
    .unwrap_or_else(|| panic!("A did not adopt after a clean stop\n{}", lab.dump()));
    // Whatever A does when it starts is done once it answers; a SIGHUP
    // would show as a keepalived reading its config within milliseconds.
    a.wait_answering(10 * SEC);
    expect_nothing_happens(SEC, "after A adopted again", || {
        let reloads: Vec<_> = ids.iter().flat_map(|id| opens.keepalived_opens(&a.conf(id))).collect();
        match (as_options(&before) == current_pids(&lab), reloads.is_empty()) {
            (false, _) => Err("a keepalived was restarted".into()),
            (_, false) => Err(format!("a keepalived re-read its config: {reloads:?}")),
            _ => Ok(()),
        }
    });
    assert_eq!(as_options(&before), current_pids(&lab));
    assert_eq!(lab.nodes[1].transitions(), b_records.0, "B ran its transition script");
    assert_eq!(lab.nodes[1].agent.notifications().len(), b_records.1, "B notified its agent");
    let reloads: Vec<_> = ids.iter().flat_map(|id| opens.keepalived_opens(&a.conf(id))).collect();
    assert!(reloads.is_empty(), "a keepalived re-read its config: {reloads:?}");
    for id in &ids {
        assert_eq!(lab.holders(id), [0], "{id} moved");
    }
    lab.wait_consistent(5 * SEC);
}

// ---------------------------------------------------------------------------
// 5. SIGHUP

#[test]
fn sighup_reloads_only_the_changed_router_and_rejects_a_broken_config() {
    if !gate() {
        return;
    }
    let mut routers = three_routers();
    routers[1] = routers[1].clone().with_interface("qr-r2");
    let mut lab = Lab::new("reload", &["A", "B"], routers, &[]);
    lab.start_staggered(CONVERGE);
    let (holders, _) = lab.wait_consistent(CONVERGE);
    assert_eq!(holders, [0, 0, 0]);
    let ids = lab.ids();
    let pids = all_pids(&lab);
    // A keepalived just spawned gets a whole throttle window (1.5 ×
    // advert_int) before its first SIGHUP: let B's pass, so the SIGHUP below
    // goes out at once on both nodes.
    wait_past_the_first_window(&lab, &pids);
    let confs = |lab: &Lab| -> Vec<Vec<u8>> {
        (0..2)
            .flat_map(|n| ids.iter().map(move |id| (n, id.clone())))
            .map(|(n, id)| fs::read(lab.nodes[n].conf(&id)).expect("conf"))
            .collect()
    };
    let confs_before = confs(&lab);
    let dirs: Vec<PathBuf> = (0..2)
        .flat_map(|n| ids.iter().map(move |id| (n, id.clone())))
        .map(|(n, id)| lab.nodes[n].router_dir(&id))
        .collect();
    let opens = OpenWatch::new(&dirs);
    let recorded = records(&lab);

    // Add a VIP to r2 on both nodes, as Neutron would, and SIGHUP both.
    lab.routers[1].extra.push("vip = 10.2.0.1/24 dev qr-r2".into());
    lab.write_config(0);
    lab.write_config(1);
    let t0 = Instant::now();
    lab.nodes[0].signal(libc::SIGHUP);
    lab.nodes[1].signal(libc::SIGHUP);
    wait_until(10 * SEC, || lab.has_addr(0, "r2", "qr-r2", "10.2.0.1/24"))
        .unwrap_or_else(|| panic!("the new VIP never appeared on A's qr-r2\n{}", lab.dump()));
    let appeared = t0.elapsed();
    wait_until(5 * SEC, || (0..2).all(|n| opens.keepalived_opens(&lab.nodes[n].conf("r2")).len() == 1))
        .unwrap_or_else(|| panic!("r2's keepalived did not reload on both nodes: {:?}", opens.events()));
    let reloaded = opens.keepalived_opens(&lab.nodes[1].conf("r2"))[0]
        .seen
        .max(opens.keepalived_opens(&lab.nodes[0].conf("r2"))[0].seen)
        - t0;
    println!(
        "SIGHUP with a VIP added to r2: both r2 keepalived re-read their config within {:.0} ms, the VIP is on \
         the primary's qr-r2 after {:.0} ms",
        ms(reloaded),
        ms(appeared)
    );
    let r2_opens: Vec<String> = opens
        .events()
        .into_iter()
        .filter(|o| o.path.ends_with("r2/keepalived.conf"))
        .map(|o| format!("{} ({}) {}", o.comm, o.pid, o.path.display()))
        .collect();
    println!("  opens of r2's keepalived.conf (the daemon reads it too, to compare): {r2_opens:?}");
    // A second SIGHUP would come at the end of the throttle window that
    // the first one opened: watch past it.
    let window_end = t0 + reloaded + THROTTLE + Duration::from_millis(500);
    expect_nothing_happens(window_end.saturating_duration_since(Instant::now()), "after the reload", || {
        let opened = |n: usize, id: &str| opens.keepalived_opens(&lab.nodes[n].conf(id)).len();
        match (0..2)
            .flat_map(|n| ids.iter().map(move |id| (n, id)))
            .find(|(n, id)| opened(*n, id) != usize::from(id.as_str() == "r2"))
        {
            Some((n, id)) => Err(format!("node {n} {id}: keepalived config opens {:?}", opens.events())),
            None => Ok(()),
        }
    });
    for (n, node) in lab.nodes.iter().enumerate() {
        for id in &ids {
            let got = opens.keepalived_opens(&node.conf(id));
            let want = if id == "r2" { 1 } else { 0 };
            assert_eq!(got.len(), want, "node {} {id}: keepalived config opens {got:?}", node.name);
            if let Some(o) = got.first() {
                let (main, _) = pids.iter().find(|(k, _)| *k == (n, id.clone())).expect("pid").1;
                assert_eq!(o.pid, main, "node {} {id}: opened by the same keepalived", node.name);
            }
        }
        let log = node.log_text();
        let line =
            format!("reloading {}: 0 added, 0 removed, 1 updated, 0 restarted, 2 unchanged", node.config.display());
        assert!(log.contains(&line), "node {}: no `{line}` in\n{log}", node.name);
        assert!(log.contains("router r2: keepalived.conf changed, reloading keepalived"), "{log}");
    }
    assert_eq!(as_options(&pids), current_pids(&lab), "a keepalived was restarted by the reload");
    let after = confs(&lab);
    for (i, (old, new)) in confs_before.iter().zip(&after).enumerate() {
        let id = &ids[i % 3];
        if id == "r2" {
            assert!(
                String::from_utf8_lossy(new).contains("10.2.0.1/24 dev qr-r2 no_track"),
                "{}",
                String::from_utf8_lossy(new)
            );
        } else {
            assert_eq!(old, new, "{id}'s keepalived.conf was rewritten");
        }
    }
    assert!(!lab.has_addr(1, "r2", "qr-r2", "10.2.0.1/24"), "the new VIP is on the backup too");
    assert_eq!(records(&lab), recorded, "a transition was announced during the reload\n{}", lab.dump());
    for id in &ids {
        assert_eq!(lab.holders(id), [0], "{id} moved");
    }

    // A broken config: rejected whole, with its line; nothing changes.
    let confs_before = confs(&lab);
    let states: Vec<Option<String>> =
        (0..2).flat_map(|n| ids.iter().map(move |id| (n, id.clone()))).map(|(n, id)| lab.nodes[n].state(&id)).collect();
    let seen = opens.events().len();
    let mut expected_errors = Vec::new();
    for n in 0..2 {
        let text = lab.config_text(n);
        let at = text.find("[router r3]").expect("r3 section");
        let vrid_at = at + text[at..].find("vrid = 3\n").expect("r3 vrid");
        let line = text[..vrid_at].matches('\n').count() + 1;
        let broken = format!("{}vrid = 999\n{}", &text[..vrid_at], &text[vrid_at + "vrid = 3\n".len()..]);
        fs::write(&lab.nodes[n].config, broken).expect("write broken config");
        expected_errors
            .push(format!("reload rejected, keeping the running config: {}:{line}: ", lab.nodes[n].config.display()));
    }
    lab.nodes[0].signal(libc::SIGHUP);
    lab.nodes[1].signal(libc::SIGHUP);
    for (n, want) in expected_errors.iter().enumerate() {
        let node = &lab.nodes[n];
        let took = wait_until(5 * SEC, || node.log_text().contains(want))
            .unwrap_or_else(|| panic!("node {}: no `{want}` in the log\n{}", node.name, node.log_text()));
        let log = node.log_text();
        let line = log.lines().find(|l| l.contains(want)).expect("line");
        println!("broken config on node {}: logged after {:.0} ms: {line}", node.name, ms(took));
        assert!(line.contains(" ERROR harouterd.daemon [-] "), "{line}");
        assert!(line.contains("999"), "the error names the bad value: {line}");
    }
    // The rejection is all a daemon does with that SIGHUP, in the pass that
    // logged it; a keepalived signalled anyway would read its file at once.
    expect_nothing_happens(Duration::from_millis(500), "after the broken config", || {
        match opens.events().len() == seen {
            true => Ok(()),
            false => Err(format!("something opened a router file: {:?}", &opens.events()[seen..])),
        }
    });
    assert_eq!(opens.events().len(), seen, "something opened a router file: {:?}", &opens.events()[seen..]);
    assert_eq!(as_options(&pids), current_pids(&lab), "a keepalived was restarted");
    assert!(confs(&lab) == confs_before, "a keepalived.conf was rewritten");
    let states_after: Vec<Option<String>> =
        (0..2).flat_map(|n| ids.iter().map(move |id| (n, id.clone()))).map(|(n, id)| lab.nodes[n].state(&id)).collect();
    assert_eq!(states_after, states);
    assert_eq!(records(&lab), recorded, "a transition was announced\n{}", lab.dump());
    assert!(lab.has_addr(0, "r2", "qr-r2", "10.2.0.1/24"), "the reloaded VIP went away");
    for id in &ids {
        assert_eq!(lab.holders(id), [0], "{id} moved");
    }
    assert!(lab.nodes.iter().all(|n| n.is_running()), "a daemon died");

    // Three changes to r2, SIGHUPs to the daemons 200 ms apart: the first
    // reaches keepalived at once, the next two make exactly one more
    // SIGHUP, 1.5 × advert_int after the first (SPEC 3.4), which loads the
    // last config.
    let base: Vec<usize> = (0..2).map(|n| opens.keepalived_opens(&lab.nodes[n].conf("r2")).len()).collect();
    let log_offsets: Vec<usize> = lab.nodes.iter().map(|n| n.log_text().len()).collect();
    let vips = ["10.2.1.1/24", "10.2.2.1/24", "10.2.3.1/24"];
    for (k, vip) in vips.iter().enumerate() {
        if k > 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        lab.routers[1].extra.push(format!("vip = {vip} dev qr-r2"));
        for n in 0..2 {
            lab.write_config(n);
            lab.nodes[n].signal(libc::SIGHUP);
        }
    }
    let took = wait_until(10 * SEC, || vips.iter().all(|v| lab.has_addr(0, "r2", "qr-r2", v)))
        .unwrap_or_else(|| panic!("the three VIPs never all reached A's qr-r2\n{}", lab.dump()));
    // The deferred SIGHUP has been read on both nodes; a third one would
    // come a throttle window after it.
    let reloads = |n: usize| opens.keepalived_opens(&lab.nodes[n].conf("r2"));
    wait_until(5 * SEC, || (0..2).all(|n| reloads(n).len() - base[n] >= 2))
        .unwrap_or_else(|| panic!("r2's keepalived did not reload twice: {:?}", opens.events()));
    let last = (0..2).flat_map(reloads).map(|o| o.seen).max().expect("opens");
    let window_end = last + THROTTLE + Duration::from_millis(500);
    expect_nothing_happens(
        window_end.saturating_duration_since(Instant::now()),
        "after the three changes",
        || match (0..2).find(|&n| reloads(n).len() - base[n] != 2) {
            Some(n) => Err(format!("node {n}: r2's keepalived reloaded {:?}", reloads(n))),
            None => Ok(()),
        },
    );
    for (n, node) in lab.nodes.iter().enumerate() {
        let got = opens.keepalived_opens(&node.conf("r2")).len() - base[n];
        assert_eq!(
            got,
            2,
            "node {}: r2's keepalived reloads for three quick changes; opens {:?}; log since the changes:\n{}",
            node.name,
            opens.keepalived_opens(&node.conf("r2")),
            &node.log_text()[log_offsets[n]..]
        );
        for id in ["r1", "r3"] {
            assert!(opens.keepalived_opens(&node.conf(id)).is_empty(), "node {} {id} reloaded", node.name);
        }
        let (main, _) = pids.iter().find(|(k, _)| *k == (n, "r2".to_string())).expect("pid").1;
        let log = node.log_text();
        let sent: Vec<u64> = log[log_offsets[n]..]
            .lines()
            .filter(|l| l.contains(&format!("router r2: SIGHUP to keepalived (pid {main})")))
            .map(ms_of_day)
            .collect();
        assert_eq!(sent.len(), 2, "node {}: SIGHUPs logged: {sent:?}", node.name);
        // How far apart they are is `sighup_throttle_window_runs_from_the_real_send`'s business.
        let seen: Vec<Instant> = opens.keepalived_opens(&node.conf("r2"))[base[n]..].iter().map(|o| o.seen).collect();
        println!(
            "node {}: three quick changes -> 2 SIGHUPs to r2's keepalived, logged {} ms apart, its config re-read \
             {:.0} ms apart; all VIPs on A after {:.0} ms",
            node.name,
            sent[1] - sent[0],
            ms(seen[1] - seen[0]),
            ms(took)
        );
        let conf = fs::read_to_string(node.conf("r2")).expect("conf");
        for vip in vips {
            assert!(conf.contains(&format!("{vip} dev qr-r2 no_track")), "{conf}");
            assert!(!lab.has_addr(1, "r2", "qr-r2", vip), "{vip} on the backup");
        }
    }
    assert_eq!(as_options(&pids), current_pids(&lab), "a keepalived was restarted");
    assert_eq!(records(&lab), recorded, "a transition was announced\n{}", lab.dump());
}

/// Milliseconds since midnight of an oslo-style log line.
fn ms_of_day(line: &str) -> u64 {
    let time = line.split(' ').nth(1).expect("time field");
    let (hms, millis) = time.split_once('.').expect("HH:MM:SS.mmm");
    let mut t = 0;
    for part in hms.split(':') {
        t = t * 60 + part.parse::<u64>().expect("number");
    }
    t * 1000 + millis.parse::<u64>().expect("millis")
}

/// SPEC 3.4: at most one SIGHUP per 1.5 × advert_int to a keepalived. The
/// window has to run from when a SIGHUP really went out: a reload first
/// re-reads, diffs and re-renders the whole config, and on a node with many
/// routers that takes a while. Here 400 monitor-only routers of 50 VIPs
/// each (in r1's namespace, no script, no agent) make a reload take about
/// 100 ms, well above the noise of timer wake-ups.
#[test]
fn sighup_throttle_window_runs_from_the_real_send() {
    if !gate() {
        return;
    }
    const MONITORS: usize = 400;
    const VIPS: usize = 50;
    let mut lab = Lab::new("throttle", &["A"], vec![RouterSpec::new("r1", 1).with_interface("qr-r1")], &[]);
    lab.nodes[0].daemon_extra.retain(|l| !l.starts_with("transition_script") && !l.starts_with("notify_agent_socket"));
    let ns = lab.ns(0, "r1").name().to_string();
    let write = |lab: &Lab| {
        let mut text = lab.config_text(0);
        for i in 0..MONITORS {
            text.push_str(&format!(
                "\n[router m{i}]\nnamespace = {ns}\nha_interface = hx{i}\nvrid = 1\nkeepalived = false\n"
            ));
            for v in 0..VIPS {
                text.push_str(&format!("vip = 10.{}.{v}.1/24 dev qx{i}\n", 100 + i / 250));
            }
        }
        fs::write(&lab.nodes[0].config, text).expect("write config");
    };
    write(&lab);
    let node = &lab.nodes[0];
    node.start();
    let (main, vrrp) = wait_keepalived_up(&lab, 0, "r1", 10 * SEC);
    wait_until(CONVERGE, || node.state("r1").as_deref() == Some("primary"))
        .unwrap_or_else(|| panic!("r1 never primary\n{}", lab.dump()));
    // Past the window a freshly spawned keepalived gets.
    wait_past_the_first_window(&lab, &[((0, "r1".into()), (main, vrrp))]);
    let opens = OpenWatch::new(&[node.router_dir("r1")]);
    let log_offset = node.log_text().len();
    let mut signalled = Vec::new();
    for (k, vip) in ["10.1.1.1/24", "10.1.2.1/24"].into_iter().enumerate() {
        if k > 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        lab.routers[0].extra.push(format!("vip = {vip} dev qr-r1"));
        write(&lab);
        signalled.push(Instant::now());
        lab.nodes[0].signal(libc::SIGHUP);
    }
    let node = &lab.nodes[0];
    wait_until(10 * SEC, || opens.keepalived_opens(&node.conf("r1")).len() >= 2)
        .unwrap_or_else(|| panic!("keepalived did not reload twice\n{}", &node.log_text()[log_offset..]));
    let log = node.log_text();
    let sent: Vec<u64> = log[log_offset..]
        .lines()
        .filter(|l| l.contains(&format!("router r1: SIGHUP to keepalived (pid {main})")))
        .map(ms_of_day)
        .collect();
    let seen: Vec<Instant> = opens.keepalived_opens(&node.conf("r1")).iter().map(|o| o.seen).collect();
    let reloads: Vec<&str> =
        log[log_offset..].lines().filter(|l| l.contains("reloading") || l.contains("SIGHUP")).collect();
    assert_eq!(sent.len(), 2, "{sent:?}:\n  {}", reloads.join("\n  "));
    println!(
        "throttle with {MONITORS} other routers ({VIPS} VIPs each): keepalived re-read its config {:.0} ms after \
         the first SIGHUP to the daemon; SIGHUPs logged {} ms apart, keepalived re-read its config {:.0} ms apart\n  {}",
        ms(seen[0] - signalled[0]),
        sent[1] - sent[0],
        ms(seen[1] - seen[0]),
        reloads.join("\n  ")
    );
    // Log timestamps have millisecond resolution.
    assert!(
        sent[1] - sent[0] >= 1499,
        "two SIGHUPs {} ms apart, closer than 1.5 × advert_int:\n  {}",
        sent[1] - sent[0],
        reloads.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// 6. The effective-state rule on a real flap

#[test]
fn flap_inside_advert_int_is_never_announced() {
    if !gate() {
        return;
    }
    let m1 = RouterSpec::monitor_only("m1", 7).with_line("advert_int = 3");
    let vip = m1.primary_vip();
    let lab = Lab::new("flap", &["A"], vec![m1], &[]);
    lab.nodes[0].start();
    let node = &lab.nodes[0];
    wait_until(10 * SEC, || {
        node.transitions_of("m1") == ["backup"] && node.last_notification("m1").as_deref() == Some("backup")
    })
    .unwrap_or_else(|| panic!("no initial backup\n{}", lab.dump()));
    assert_eq!(node.state("m1").as_deref(), Some("backup"));

    let ns = lab.ns(0, "m1");
    let log_offset = node.log_text().len();
    let flap = Instant::now();
    ns.ip(&["addr", "add", &vip, "dev", "ha-m1"]);
    ns.ip(&["addr", "del", &vip, "dev", "ha-m1"]);
    let flap_took = flap.elapsed();
    // The daemon did see both changes (raw states)...
    let seen = wait_until(5 * SEC, || {
        let log = node.log_text();
        let new = &log[log_offset..];
        new.find("router m1: raw state primary").is_some_and(|p| new[p..].contains("router m1: raw state backup"))
    });
    assert!(seen.is_some(), "the daemon never saw the flap:\n{}", node.log_text());
    // ... and announces nothing, even well past advert_int (1 s: a primary
    // that lasted would be announced then); the agent, which applies its own
    // advert_int rule, is told both raw changes (issue 10.4).
    expect_nothing_happens((flap + 2 * SEC).saturating_duration_since(Instant::now()), "after the flap", || {
        match node.transitions_of("m1") == ["backup"] && !node.log_text().contains("router m1: transitioned to primary")
        {
            true => Ok(()),
            false => Err(format!("a flap of {flap_took:?} was announced: {:?}", node.transitions_of("m1"))),
        }
    });
    assert_eq!(node.transitions_of("m1"), ["backup"], "a flap of {flap_took:?} ran the transition script");
    wait_until(5 * SEC, || node.notifications_of("m1").len() >= 3);
    let agent: Vec<String> = node.notifications_of("m1").into_iter().map(|n| n.state).collect();
    assert_eq!(agent, ["backup", "primary", "backup"], "the agent hears raw changes");
    assert!(!node.log_text().contains("router m1: transitioned to primary"));
    assert_eq!(node.state("m1").as_deref(), Some("backup"));
    println!("flap: VIP added and removed {:.1} ms apart: raw primary+backup logged, nothing announced", ms(flap_took));

    // The VIP added for good: the state file at once, the announcement
    // advert_int later.
    let wall = epoch_now();
    let added = Instant::now();
    ns.ip(&["addr", "add", &vip, "dev", "ha-m1"]);
    let raw = wait_until(5 * SEC, || node.state("m1").as_deref() == Some("primary"))
        .unwrap_or_else(|| panic!("state file never said primary\n{}", lab.dump()));
    let (notified, _) = wait_for(10 * SEC, || {
        node.notifications_of("m1").into_iter().find(|n| n.state == "primary" && n.received_at >= added)
    })
    .unwrap_or_else(|| panic!("primary never forwarded\n{}", lab.dump()));
    let delay = notified.received_at.duration_since(added);
    let script =
        wait_for(5 * SEC, || node.transitions().into_iter().find(|t| t.router == "m1" && t.state == "primary"))
            .map(|(t, _)| t.at - wall)
            .unwrap_or_else(|| panic!("transition script never ran for primary\n{}", lab.dump()));
    println!(
        "VIP kept (advert_int 3): state file primary after {:.1} ms, agent notified (raw) after {:.0} ms, script \
         ran (effective) after {:.0} ms",
        ms(raw),
        ms(delay),
        script * 1000.0
    );
    assert!(raw < SEC, "the raw state is written at once: {raw:?}");
    assert!(delay < SEC, "the raw primary is forwarded to the agent at once: {delay:?}");
    assert!(script >= 3.0, "script ran before advert_int: {script} s");
    assert!(script < 4.5, "primary announced late: {script} s");
    assert_eq!(node.transitions_of("m1"), ["backup", "primary"]);
}

// ---------------------------------------------------------------------------
// 7. A namespace deleted under the daemon

#[test]
fn deleted_namespace_is_reported_and_the_rest_keeps_working() {
    if !gate() {
        return;
    }
    let routers = vec![RouterSpec::new("r1", 1), RouterSpec::new("r2", 2), RouterSpec::monitor_only("m3", 3)];
    let lab = Lab::new("nsdel", &["A"], routers, &[]);
    lab.nodes[0].start();
    for id in ["r1", "r2"] {
        let ok = wait_until(CONVERGE, || lab.consistent(id).is_ok());
        assert!(ok.is_some(), "{id} never primary\n{}", lab.dump());
    }
    let node = &lab.nodes[0];
    wait_until(5 * SEC, || node.last_notification("m3").as_deref() == Some("backup"))
        .unwrap_or_else(|| panic!("m3 not reported backup\n{}", lab.dump()));
    let r1 = wait_keepalived_up(&lab, 0, "r1", 5 * SEC);
    let r2 = wait_keepalived_up(&lab, 0, "r2", 5 * SEC);
    let r2_lines = node.transitions_of("r2");
    let r2_agent = node.notifications_of("r2").len();

    let ns1 = lab.ns(0, "r1").name().to_string();
    common::run_ok(common::tool("ip"), &["netns", "del", ns1.as_str()]);
    let want = format!("network namespace {ns1} was deleted (routers r1)");
    let reported = wait_until(5 * SEC, || node.log_text().contains(&want))
        .unwrap_or_else(|| panic!("no `{want}` in the log\n{}", node.log_text()));
    println!("namespace of r1 deleted: reported after {:.1} ms", ms(reported));
    let log = node.log_text();
    let line = log.lines().find(|l| l.contains(&want)).expect("line");
    assert!(line.contains(" ERROR "), "{line}");

    // The others: flip m3 (another namespace) and see it announced.
    let vip = lab.router("m3").primary_vip();
    lab.ns(0, "m3").ip(&["addr", "add", &vip, "dev", "ha-m3"]);
    let (_, took) = wait_for(5 * SEC, || {
        (node.last_transition("m3").as_deref() == Some("primary")
            && node.last_notification("m3").as_deref() == Some("primary"))
        .then_some(())
    })
    .unwrap_or_else(|| panic!("m3's flip was not announced after r1's namespace went\n{}", lab.dump()));
    println!("m3 flipped after the deletion: announced after {:.0} ms (advert_int 1)", ms(took));
    assert!(lab.nodes[0].is_running(), "the daemon died");
    let node = &lab.nodes[0];
    assert_eq!(wait_keepalived_up(&lab, 0, "r2", SEC), r2, "r2's keepalived changed");
    assert_eq!(node.transitions_of("r2"), r2_lines, "r2 saw a transition");
    assert_eq!(node.notifications_of("r2").len(), r2_agent);
    assert_eq!(node.state("r2").as_deref(), Some("primary"));
    assert!(lab.vip_on(0, "r2"));
    let log = node.log_text();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| (l.contains(" ERROR ") || l.contains(" WARNING ")) && (l.contains("r2") || l.contains("m3")))
        .collect();
    assert!(bad.is_empty(), "errors about the other routers: {bad:?}");
    println!(
        "r1's keepalived (pids {r1:?}) after its namespace was deleted: main alive = {}, r1 state file {:?}",
        !common::lab::cmdline(r1.0).is_empty(),
        node.state("r1")
    );

    // The HA interface of a router deleted (SPEC 3.5): backup at once, with
    // an error naming it.
    let ns3 = lab.ns(0, "m3").name().to_string();
    lab.ns(0, "m3").ip(&["link", "del", "ha-m3"]);
    let (_, took) = wait_for(5 * SEC, || {
        (node.state("m3").as_deref() == Some("backup")
            && node.last_transition("m3").as_deref() == Some("backup")
            && node.last_notification("m3").as_deref() == Some("backup"))
        .then_some(())
    })
    .unwrap_or_else(|| panic!("m3 not backup after its HA interface went\n{}", lab.dump()));
    println!("m3's HA interface deleted: backup announced after {:.0} ms", ms(took));
    let want = format!("router m3: HA interface ha-m3 not found in {ns3}");
    assert!(node.log_text().contains(&want), "no `{want}` in\n{}", node.log_text());
    assert_eq!(node.transitions_of("m3"), ["backup", "primary", "backup"]);
    assert_eq!(wait_keepalived_up(&lab, 0, "r2", SEC), r2, "r2's keepalived changed");
    assert_eq!(node.transitions_of("r2"), r2_lines, "r2 saw a transition");
}

// ---------------------------------------------------------------------------
// check_child_processes_action = exit

#[test]
fn exit_action_makes_the_daemon_exit_1_when_keepalived_dies() {
    if !gate() {
        return;
    }
    let lab = Lab::new("exit", &["A"], vec![RouterSpec::new("r1", 1)], &["check_child_processes_action = exit"]);
    lab.nodes[0].start();
    let (pid, _) = wait_keepalived_up(&lab, 0, "r1", 10 * SEC);
    let killed = Instant::now();
    send_signal(pid, libc::SIGKILL);
    let status = lab.nodes[0].wait_exit(5 * SEC).unwrap_or_else(|| panic!("daemon still running\n{}", lab.dump()));
    println!(
        "check_child_processes_action = exit: daemon exited ({status}) {:.1} ms after kill -9",
        ms(killed.elapsed())
    );
    assert_eq!(status.code(), Some(1), "{status}");
    let log = lab.nodes[0].log_text();
    assert!(
        log.contains(&format!("router r1: keepalived (pid {pid}) died"))
            && log.contains("check_child_processes_action = exit"),
        "{log}"
    );
    assert_eq!(log.matches("keepalived started (pid").count(), 1, "respawned:\n{log}");
}

/// SPEC 3.6 `/v1/events` on the lab: a subscriber on node B sees each of
/// B's effective transitions exactly once and in order (per router, the
/// same sequence the transition script recorded), with consecutive `seq`.
#[test]
fn events_subscriber_sees_each_lab_transition_once_in_order() {
    if !gate() {
        return;
    }
    use std::io::BufRead;
    let lab = Lab::new("events", &["A", "B"], three_routers(), &["on_exit = stop"]);
    lab.start_staggered(CONVERGE);
    let (holders, _) = lab.wait_consistent(CONVERGE);
    assert_eq!(holders, [0, 0, 0], "staggered start: A primary everywhere");
    let b = &lab.nodes[1];
    let mut reader =
        common::subscribe_events(&b.state_path.join("harouterd.sock"), "application/json", Duration::from_millis(200));
    let mut line = String::new();
    let before = b.transitions().len();

    // B takes every router over, then gives r1 back when its keepalived dies.
    lab.nodes[0].signal(libc::SIGTERM);
    let ids = lab.ids();
    let all_b = wait_until(15 * SEC, || ids.iter().all(|id| b.last_transition(id).as_deref() == Some("primary")));
    assert!(all_b.is_some(), "B never took over\n{}", lab.dump());
    let r1 = &ids[0];
    let pid = b.keepalived_pid(r1).expect("B runs keepalived for r1");
    common::lab::send_signal(pid, libc::SIGKILL);
    let gave_back = wait_until(10 * SEC, || b.transitions_of(r1).last().map(String::as_str) == Some("backup"));
    assert!(gave_back.is_some(), "r1 never went backup on B\n{}", lab.dump());

    // Read events until they tell, router by router, what the transition
    // script recorded (a lost or doubled event never gets there).
    let mut events: Vec<(u64, String, String)> = Vec::new();
    let per_router = |events: &[(u64, String, String)], script: &[common::lab::Transition], id: &str| {
        let from_events: Vec<String> = events.iter().filter(|e| e.1 == id).map(|e| e.2.clone()).collect();
        let from_script: Vec<String> = script.iter().filter(|t| t.router == id).map(|t| t.state.clone()).collect();
        from_events == from_script
    };
    let deadline = Instant::now() + 10 * SEC;
    let mut script: Vec<common::lab::Transition> = Vec::new();
    while Instant::now() < deadline {
        script = b.transitions()[before..].to_vec();
        if !script.is_empty() && ids.iter().all(|id| per_router(&events, &script, id)) {
            break;
        }
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {
                let field = |key: &str| {
                    let start =
                        line.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("{key} in {line}")) + key.len() + 3;
                    let rest = &line[start..];
                    rest.trim_start_matches('"').split(['"', ',', '}']).next().unwrap().to_owned()
                };
                events.push((field("seq").parse().unwrap(), field("router"), field("state")));
            }
            Err(_) => {}
        }
    }
    // The script's lines as they were when the events matched them (a
    // later transition may run the script while the checks below run).
    assert!(!script.is_empty());
    for pair in events.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "seq not consecutive: {events:?}");
    }
    for id in &ids {
        let from_events: Vec<&str> = events.iter().filter(|e| &e.1 == id).map(|e| e.2.as_str()).collect();
        let from_script: Vec<&str> = script.iter().filter(|t| &t.router == id).map(|t| t.state.as_str()).collect();
        assert_eq!(from_events, from_script, "{id}: events vs transition script\nall events: {events:?}");
    }
    assert_eq!(events.len(), script.len());
    println!("events on B: {events:?}");
}
