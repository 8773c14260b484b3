//! The notify FIFO against the real keepalived (2.2.x): one namespace, one
//! VRRP instance with no peer, its keepalived.conf rendered by the crate.
//! Read through `NotifyFifo` in a mio loop, keepalived must report MASTER
//! (no peer heard for ~3 advert intervals), FAULT when the HA interface
//! goes down, and STOP on SIGTERM; after keepalived is gone the FIFO must
//! stay quiet (our own write end: no EOF, no spin).
//!
//! Needs root, keepalived and ip; skipped otherwise (fails under CI=true).

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Netns, TempDir};
use harouterd::core::layout::Layout;
use harouterd::keepalived::notify_fifo::{FifoEvent, KaState, NotifyFifo};
use harouterd::keepalived::{self, conf::Secrets};
use mio::{Events, Interest, Poll, Token};

/// keepalived running in the foreground (`-n`); killed (SIGKILL, both the
/// parent and its VRRP child) and reaped on drop, so a failing test never
/// leaves it behind.
struct Keepalived {
    child: Child,
    vrrp_pidfile: std::path::PathBuf,
}

impl Keepalived {
    fn kill_all(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.vrrp_pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) with a pid read from keepalived's own pidfile;
            // at worst the process is already gone (ESRCH).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) for keepalived to exit by itself.
    fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Events read from the FIFO until one with `state` arrives or `within`
/// passes; every event seen is appended to `seen`.
fn wait_for(
    poll: &mut Poll,
    fifo: &mut NotifyFifo,
    state: KaState,
    within: Duration,
    seen: &mut Vec<FifoEvent>,
) -> bool {
    let deadline = Instant::now() + within;
    let mut events = Events::with_capacity(8);
    loop {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        poll.poll(&mut events, Some(deadline - now)).expect("poll");
        if events.iter().any(|e| e.token() == Token(0)) {
            let got = fifo.read();
            let found = got.iter().any(|e| e.state == state);
            seen.extend(got);
            if found {
                return true;
            }
        }
    }
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

#[test]
fn real_keepalived_reports_master_fault_stop_through_the_fifo() {
    if !common::require_root_and(&["keepalived", "ip"]) {
        return;
    }
    let tmp = TempDir::new("fifo");
    let ns = Netns::new("fifo");
    let ha = common::unique_ifname();
    let peer = common::unique_ifname();
    common::add_veth_pair(&ns, &ha, &peer);
    // keepalived puts an instance in FAULT when its interface has no IPv4
    // address; Neutron's HA ports get one from the HA network.
    ns.ip(&["addr", "add", "169.254.192.1/18", "dev", &ha]);

    let text = format!(
        "[daemon]\nstate_path = {}\nha_vrrp_advert_int = 1\n\n\
         [router r1]\nnamespace = {}\nha_interface = {ha}\nvrid = 1\npriority = 100\n",
        tmp.path().display(),
        ns.name()
    );
    let config = harouterd::config::parse(&tmp.join("harouterd.conf"), &text).unwrap_or_else(|e| panic!("{e}")).config;
    let router = &config.routers[0];
    let layout = Layout::new(&config.daemon.ha_confs_path);
    std::fs::create_dir_all(layout.router_dir(&router.id)).unwrap();
    let files = keepalived::router_files(&config.daemon, router, &layout, Secrets::Show);
    for file in &files {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(file.mode).open(&file.path).unwrap();
        f.write_all(file.contents.as_bytes()).unwrap();
    }
    let conf_path = layout.keepalived_conf(&router.id);
    let fifo_path = layout.notify_fifo(&router.id);
    assert!(
        files[0].contents.contains(&format!("    notify_fifo {}\n", fifo_path.display())),
        "rendered config lacks notify_fifo:\n{}",
        files[0].contents
    );

    // The FIFO exists before keepalived starts, as the daemon makes it.
    let mut fifo = NotifyFifo::create(&fifo_path).expect("create FIFO");
    let mut poll = Poll::new().unwrap();
    poll.registry().register(&mut fifo, Token(0), Interest::READABLE).unwrap();

    let ka_log = tmp.join("keepalived.log");
    let log_file = File::create(&ka_log).unwrap();
    let vrrp_pidfile = layout.vrrp_pid_file(&router.id);
    let child = Command::new(common::tool("ip"))
        .args(["netns", "exec", ns.name()])
        .arg(common::tool("keepalived"))
        .arg("-n")
        .arg("-P")
        .arg("-f")
        .arg(&conf_path)
        .arg("-p")
        .arg(layout.pid_file(&router.id))
        .arg("-r")
        .arg(&vrrp_pidfile)
        .arg("-l")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("start keepalived");
    let mut ka = Keepalived { child, vrrp_pidfile };

    let mut seen = Vec::new();
    assert!(
        wait_for(&mut poll, &mut fifo, KaState::Master, Duration::from_secs(20), &mut seen),
        "no MASTER within 20 s; events {seen:?}\nkeepalived log:\n{}",
        log_of(&ka_log)
    );
    assert!(seen.iter().all(|e| e.instance == "VR_1" && e.priority == 100), "{seen:?}");

    ns.ip(&["link", "set", &ha, "down"]);
    assert!(
        wait_for(&mut poll, &mut fifo, KaState::Fault, Duration::from_secs(10), &mut seen),
        "no FAULT within 10 s of the link going down; events {seen:?}\nkeepalived log:\n{}",
        log_of(&ka_log)
    );

    let pid = i32::try_from(ka.child.id()).unwrap();
    // SAFETY: kill(2) on our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert!(
        wait_for(&mut poll, &mut fifo, KaState::Stop, Duration::from_secs(10), &mut seen),
        "no STOP within 10 s of SIGTERM; events {seen:?}\nkeepalived log:\n{}",
        log_of(&ka_log)
    );
    assert!(ka.wait_exit(Duration::from_secs(10)), "keepalived did not exit after SIGTERM");

    let states: Vec<KaState> = seen.iter().map(|e| e.state).collect();
    assert_eq!(states.first(), Some(&KaState::Backup), "keepalived starts as BACKUP: {seen:?}");
    assert_eq!(states.last(), Some(&KaState::Stop), "{seen:?}");

    // keepalived is gone: no writer but ours. The FIFO must not turn
    // readable (EOF / hang-up) and spin the loop.
    let mut events = Events::with_capacity(8);
    poll.poll(&mut events, Some(Duration::from_millis(300))).unwrap();
    assert_eq!(events.iter().count(), 0, "FIFO readable after keepalived exited");
    assert!(fifo.read().is_empty());
    assert_eq!(fifo.overlong_lines(), 0);

    fifo.remove().unwrap();
    assert!(std::fs::symlink_metadata(&fifo_path).is_err(), "remove() leaves the FIFO");
}
