//! The keepalived supervisor against the real keepalived in a real network
//! namespace, driven the way the daemon drives it: a mio loop with a
//! signalfd for SIGCHLD, `spawn::reap` on each SIGCHLD, pidfds registered on
//! `Outcome::Watch`, timers from `next_deadline`.
//!
//! Shown here: spawn, respawn after `kill -9` (timed), backoff over quick
//! kills, throttled SIGHUP (counted by the config opens keepalived makes, one
//! per reload, seen through inotify), stop, adoption of a keepalived that is
//! our child and of one that is not (only its pidfd can tell it died), and
//! the orphaned VRRP child killed before a spawn.
//!
//! Needs root, keepalived and ip (skipped otherwise, failing under CI=true).
//! The tests share process-wide state (SIGCHLD, the subreaper flag,
//! `waitpid(-1)`), so they run one at a time.

mod common;

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use harouterd::config::Config;
use harouterd::core::layout::Layout;
use harouterd::keepalived::conf::Secrets;
use harouterd::supervisor::{self, Outcome, Sighup, Supervisor, cmdline_names_conf, parse_pid};
use harouterd::sys::event_loop::{EventLoop, Signals, earliest};
use harouterd::sys::files::atomic::write_atomic;
use harouterd::sys::files::confs::HaConfs;
use harouterd::sys::spawn::{self, ChildExit};
use mio::Token;
use nix::sys::signal::Signal;

use common::{Netns, TempDir};

/// SIGCHLD must be blocked in *every* thread for the signalfd to see it: a
/// thread that does not block it (libtest's main thread) would take it and
/// discard it (its default action is to ignore). Blocked here, in the main
/// thread before libtest starts, so every thread inherits the mask. The
/// daemon is single-threaded and needs no such thing.
#[used]
#[unsafe(link_section = ".init_array")]
static BLOCK_SIGCHLD: extern "C" fn() = block_sigchld;

extern "C" fn block_sigchld() {
    // SAFETY: plain libc calls on a local sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

static SERIAL: Mutex<()> = Mutex::new(());

const SIGNALS: Token = Token(0);
const PIDFD: Token = Token(1);
const IFACE: &str = "ha-r1";
const SECOND: Duration = Duration::from_secs(1);
const POLL: Option<Duration> = Some(Duration::from_millis(5));

// ---------------------------------------------------------------------------
// /proc helpers

fn read_pid(path: &Path) -> Option<u32> {
    parse_pid(&fs::read(path).ok()?)
}

fn names_conf(pid: u32, conf: &Path) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| cmdline_names_conf(&c, conf.as_os_str().as_bytes()))
}

/// Every live process whose command line gives `conf` to `-f`.
fn processes_naming(conf: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    pids.retain(|&pid| names_conf(pid, conf));
    pids.sort();
    pids
}

/// (ppid, session) from /proc/PID/stat.
fn ppid_and_session(pid: u32) -> Option<(u32, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.get(1)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

fn kill(pid: u32, signal: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
        .unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
}

fn set_subreaper(on: bool) {
    nix::sys::prctl::set_child_subreaper(on).expect("PR_SET_CHILD_SUBREAPER");
}

/// Counts `open`s of keepalived.conf in a directory, through inotify:
/// keepalived 2.2.7 opens its config exactly once at start and once per
/// SIGHUP (in the parent; the VRRP child gets the parsed config), so this
/// counts the SIGHUPs a keepalived acted on, without strace. The directory
/// is watched, not the file: `write_atomic` replaces the file's inode.
struct ConfOpens {
    fd: OwnedFd,
    count: usize,
}

impl ConfOpens {
    fn new(dir: &Path) -> ConfOpens {
        // SAFETY: inotify_init1 returns a new fd or -1.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(raw >= 0, "inotify_init1: {}", std::io::Error::last_os_error());
        // SAFETY: the kernel just returned this fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: valid fd and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_OPEN) };
        assert!(wd >= 0, "inotify_add_watch {}: {}", dir.display(), std::io::Error::last_os_error());
        ConfOpens { fd, count: 0 }
    }

    /// Opens seen so far.
    fn count(&mut self) -> usize {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a local buffer of the given size.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let Ok(n) = usize::try_from(n) else { return self.count };
            let mut off = 0;
            while off + 16 <= n {
                let word = |at: usize| u32::from_ne_bytes(buf[off + at..off + at + 4].try_into().expect("4 bytes"));
                let (mask, len) = (word(4), word(12) as usize);
                let name = &buf[off + 16..(off + 16 + len).min(n)];
                let name = name.split(|&b| b == 0).next().unwrap_or_default();
                if mask & libc::IN_OPEN != 0 && name == b"keepalived.conf" {
                    self.count += 1;
                }
                off += 16 + len;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The rig: a namespace with the router's HA interface, its rendered files

struct Rig {
    config: Config,
    layout: Layout,
    conf: PathBuf,
    pid_file: PathBuf,
    vrrp_pid_file: PathBuf,
    // Dropped after `Drop::drop` killed whatever still runs.
    ns: Netns,
    _dir: TempDir,
}

impl Rig {
    fn new(name: &str) -> Rig {
        let ns = Netns::new(name);
        common::add_veth_pair(&ns, IFACE, "ha-peer");
        ns.ip(&["addr", "add", "169.254.192.1/18", "dev", IFACE]);
        let dir = TempDir::new(name);
        let keepalived = common::tool("keepalived");
        let text = format!(
            "[daemon]\nstate_path = {dir}\nha_confs_path = {dir}/ha_confs\nkeepalived_path = {ka}\n\
             ha_vrrp_advert_int = 1\nha_vrrp_auth_password = secret\n\
             [router r1]\nnamespace = {ns}\nha_interface = {IFACE}\nvrid = 7\nvip = 10.0.0.1/24 dev {IFACE}\n",
            dir = dir.path().display(),
            ka = keepalived.display(),
            ns = ns.name(),
        );
        let config = harouterd::config::parse(Path::new("test.conf"), &text).expect("valid config").config;
        let layout = Layout::new(&config.daemon.ha_confs_path);
        let router = &config.routers[0];
        let rig = Rig {
            conf: layout.keepalived_conf(&router.id),
            pid_file: layout.pid_file(&router.id),
            vrrp_pid_file: layout.vrrp_pid_file(&router.id),
            layout,
            config,
            ns,
            _dir: dir,
        };
        rig.write_files(50);
        rig
    }

    /// Renders the router's files with the crate's renderer, as the daemon
    /// does (a new `priority` makes a real config change).
    fn write_files(&self, priority: u8) {
        let mut router = self.config.routers[0].clone();
        router.priority = priority;
        for file in harouterd::keepalived::router_files(&self.config.daemon, &router, &self.layout, Secrets::Show) {
            fs::create_dir_all(file.path.parent().expect("parent")).expect("mkdir");
            write_atomic(&file.path, file.contents.as_bytes(), file.mode).expect("write router file");
        }
    }

    fn supervisor(&self) -> Supervisor {
        Supervisor::keepalived(&self.config.daemon, &self.config.routers[0], &HaConfs::new(self.layout.clone()), false)
    }

    /// keepalived fully up: the main pidfile names `pid`, which runs with
    /// our config, and its VRRP child has written its pidfile and runs.
    fn fully_up(&self, pid: u32) -> bool {
        read_pid(&self.pid_file) == Some(pid)
            && names_conf(pid, &self.conf)
            && read_pid(&self.vrrp_pid_file).is_some_and(|v| v != pid && names_conf(v, &self.conf))
    }

    fn vrrp_pid(&self) -> u32 {
        read_pid(&self.vrrp_pid_file).expect("VRRP pidfile")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Whatever still runs with our config (a failed assertion midway)
        // goes, before the namespace and the directory do.
        for pid in processes_naming(&self.conf) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let end = Instant::now() + SECOND;
        while !processes_naming(&self.conf).is_empty() && Instant::now() < end {
            spawn::reap();
            std::thread::sleep(Duration::from_millis(5));
        }
        spawn::reap();
    }
}

// ---------------------------------------------------------------------------
// The driver: the daemon's loop, in small

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Call,
    Sigchld,
    Pidfd,
    Tick,
}

struct Driver {
    ev: EventLoop,
    signals: Signals,
    /// Every outcome, when and how it came.
    log: Vec<(Instant, Via, Outcome)>,
    /// Exits of children no supervisor claimed (a detached keepalived).
    unclaimed: Vec<(u32, ChildExit)>,
}

impl Driver {
    fn new() -> Driver {
        let ev = EventLoop::new(16).expect("poll");
        let mut signals = Signals::new(&[Signal::SIGCHLD]).expect("signalfd");
        ev.registry().register(&mut signals, SIGNALS, mio::Interest::READABLE).expect("register signalfd");
        Driver { ev, signals, log: Vec::new(), unclaimed: Vec::new() }
    }

    fn record(&mut self, sup: &mut Supervisor, via: Via, outcomes: Vec<Outcome>) {
        for o in outcomes {
            if o == Outcome::Watch {
                sup.register_pidfd(self.ev.registry(), PIDFD).expect("register pidfd");
            }
            self.log.push((Instant::now(), via, o));
        }
    }

    /// Outcomes recorded since `mark` (an index into the log).
    fn since(&self, mark: usize) -> Vec<(Via, Outcome)> {
        self.log[mark..].iter().map(|(_, via, o)| (*via, o.clone())).collect()
    }

    /// Runs the loop until `done` holds or `timeout` passes; false on
    /// timeout. `poll`: how often `done` is re-checked for conditions on
    /// files (the supervisor itself needs no polling: `None`).
    fn run_until(
        &mut self,
        sup: &mut Supervisor,
        timeout: Duration,
        poll: Option<Duration>,
        mut done: impl FnMut(&Supervisor) -> bool,
    ) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if done(sup) {
                return true;
            }
            let now = Instant::now();
            if now >= end {
                return false;
            }
            let deadline = earliest([sup.next_deadline(), Some(end), poll.map(|p| now + p)]);
            let tokens: Vec<Token> = self.ev.wait(deadline).expect("poll").iter().map(|e| e.token()).collect();
            for token in tokens {
                let now = Instant::now();
                if token == SIGNALS {
                    self.signals.drain();
                    for (pid, exit) in spawn::reap() {
                        if sup.owns(pid) {
                            let out = sup.child_exited(pid, exit, now);
                            self.record(sup, Via::Sigchld, out);
                        } else {
                            self.unclaimed.push((pid, exit));
                        }
                    }
                } else if token == PIDFD {
                    let out = sup.pidfd_ready(now);
                    self.record(sup, Via::Pidfd, out);
                }
            }
            let now = Instant::now();
            if sup.next_deadline().is_some_and(|d| d <= now) {
                let out = sup.tick(now);
                self.record(sup, Via::Tick, out);
            }
        }
    }

    /// Runs the loop for `duration`, whatever happens.
    fn run_for(&mut self, sup: &mut Supervisor, duration: Duration) {
        self.run_until(sup, duration, None, |_| false);
    }

    fn call(&mut self, sup: &mut Supervisor, outcomes: Vec<Outcome>) {
        self.record(sup, Via::Call, outcomes);
    }
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kills keepalived (`kill -9`) and runs the loop until the supervisor has
/// a new one; returns (new pid, time to respawn, time until its pidfile
/// names it).
fn kill_and_wait_respawn(
    driver: &mut Driver,
    sup: &mut Supervisor,
    rig: &Rig,
    timeout: Duration,
) -> (u32, Duration, Duration) {
    let old = sup.pid().expect("running");
    let killed = Instant::now();
    kill(old, Signal::SIGKILL);
    let respawned = driver.run_until(sup, timeout, None, |s| s.pid().is_some_and(|p| p != old));
    assert!(respawned, "no respawn within {timeout:?} of kill -9 {old}: {:?}", driver.since(0).last());
    let spawned_after = killed.elapsed();
    let new = sup.pid().expect("running");
    assert!(
        driver.run_until(sup, 5 * SECOND, POLL, |_| read_pid(&rig.pid_file) == Some(new)),
        "pidfile never named {new}"
    );
    (new, spawned_after, killed.elapsed())
}

// ---------------------------------------------------------------------------

#[test]
fn spawn_respawn_backoff_reload_stop() {
    let _serial = serial();
    if !common::require_root_and(&["keepalived", "ip"]) {
        return;
    }
    harouterd::sys::process::become_subreaper().expect("subreaper");
    let rig = Rig::new("kaproc");
    let mut driver = Driver::new();
    let mut sup = rig.supervisor();

    // Spawn.
    let out = sup.start(Instant::now());
    driver.call(&mut sup, out.clone());
    let [Outcome::Spawned { pid }] = out[..] else { panic!("start: {out:?}") };
    assert!(!sup.adopted());
    assert!(driver.run_until(&mut sup, 5 * SECOND, POLL, |_| rig.fully_up(pid)), "keepalived never came up");
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let argv: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    assert_eq!(
        argv[1..9],
        [
            "-n",
            "-P",
            "-f",
            &rig.conf.display().to_string(),
            "-p",
            &rig.pid_file.display().to_string(),
            "-r",
            &rig.vrrp_pid_file.display().to_string()
        ]
    );
    // Our direct child (-n), in a session of its own (setsid), in the router's namespace.
    assert_eq!(ppid_and_session(pid), Some((std::process::id(), pid)));
    let netns = |p: &str| fs::read_link(p).expect("ns link");
    assert_eq!(netns(&format!("/proc/{pid}/ns/net")), {
        let f = fs::File::open(rig.ns.path()).expect("open netns");
        let st = nix::sys::stat::fstat(&f).expect("fstat");
        PathBuf::from(format!("net:[{}]", st.st_ino))
    });
    assert_eq!(processes_naming(&rig.conf).len(), 2, "parent and VRRP child");

    // kill -9: respawned at once.
    let mark = driver.log.len();
    let killed = Instant::now();
    let (pid2, spawned, pidfile) = kill_and_wait_respawn(&mut driver, &mut sup, &rig, 5 * SECOND);
    println!(
        "kill -9 -> new keepalived spawned in {:.1} ms, its pidfile written after {:.1} ms",
        ms(spawned),
        ms(pidfile)
    );
    for (at, via, outcome) in &driver.log[mark..] {
        println!("  +{:.1} ms {via:?} {outcome:?}", ms(at.saturating_duration_since(killed)));
    }
    assert!(spawned < SECOND, "respawn took {spawned:?}");
    assert_eq!(sup.restarts(), 1);
    assert!(driver.run_until(&mut sup, 5 * SECOND, POLL, |_| rig.fully_up(pid2)));
    assert_eq!(processes_naming(&rig.conf).len(), 2, "the old VRRP child is gone, not running beside the new one");

    // Five quick kills: the backoff grows, restarts count them.
    let mut delays = Vec::new();
    for i in 0..5 {
        let mark = driver.log.len();
        let (pid, spawned, _) = kill_and_wait_respawn(&mut driver, &mut sup, &rig, 5 * SECOND);
        let died = driver.since(mark).into_iter().find_map(|(_, o)| match o {
            Outcome::Died { respawn_in, .. } => respawn_in,
            _ => None,
        });
        let backoff = died.expect("a Died outcome");
        println!("quick kill {}: backoff {} ms, respawned after {:.1} ms", i + 1, backoff.as_millis(), ms(spawned));
        assert!(spawned >= backoff, "respawned before its backoff");
        assert_eq!(sup.backoff(), backoff);
        delays.push(backoff.as_millis());
        assert!(driver.run_until(&mut sup, 5 * SECOND, POLL, |_| rig.fully_up(pid)));
    }
    assert_eq!(delays, [100, 200, 400, 800, 1600]);
    assert_eq!(sup.restarts(), 6);
    assert!(matches!(
        sup.last_error(),
        Some(supervisor::SupervisorError::Died { exit: Some(ChildExit::Signal(9)), .. })
    ));

    // Reload: throttled to one SIGHUP per 1.5 × advert_int (1.5 s here).
    let pid = sup.pid().expect("running");
    let mut opens = ConfOpens::new(rig.conf.parent().expect("router dir"));
    // A freshly spawned keepalived gets a whole window before its first
    // SIGHUP: wait it out, so the next request finds a quiet period.
    driver.run_for(&mut sup, Duration::from_millis(1600));
    assert_eq!(opens.count(), 0);
    rig.write_files(60);
    let sent_at = Instant::now();
    assert_eq!(sup.sighup(sent_at), Sighup::Sent, "quiet period: at once");
    assert!(driver.run_until(&mut sup, 2 * SECOND, POLL, |_| opens.count() == 1), "keepalived never reloaded");
    rig.write_files(70);
    let mut deferred = Vec::new();
    for _ in 0..3 {
        deferred.push(sup.sighup(Instant::now()));
    }
    // The window runs from the moment the SIGHUP actually went out, a hair
    // after `sent_at`.
    let Sighup::Deferred { at: window_end } = deferred[0] else { panic!("not deferred: {deferred:?}") };
    assert_eq!(deferred, [Sighup::Deferred { at: window_end }; 3]);
    assert!(window_end >= sent_at + Duration::from_millis(1500));
    assert!(window_end < sent_at + Duration::from_millis(1550), "{:?}", window_end - sent_at);
    driver.run_until(&mut sup, 2 * SECOND, None, |s| s.next_deadline().is_none());
    let second_sighup = Instant::now();
    assert!(second_sighup >= window_end);
    assert!(driver.run_until(&mut sup, 2 * SECOND, POLL, |_| opens.count() >= 2), "the deferred SIGHUP never came");
    driver.run_for(&mut sup, Duration::from_millis(800));
    assert_eq!(opens.count(), 2, "exactly one SIGHUP for the three requests in the window");
    assert_eq!(sup.pid(), Some(pid), "same keepalived");
    assert!(rig.fully_up(pid));
    assert_eq!(sup.restarts(), 6, "reloads do not restart");
    println!(
        "reload: 1 + 3 requests -> 2 SIGHUPs to pid {pid}, the second {:.0} ms after the first",
        ms(second_sighup - sent_at)
    );

    // Stop: SIGTERM, gone, pidfiles removed.
    let vrrp = rig.vrrp_pid();
    let stopping = Instant::now();
    let out = sup.stop(stopping);
    driver.call(&mut sup, out);
    assert!(driver.run_until(&mut sup, 7 * SECOND, None, Supervisor::is_stopped), "never stopped");
    let took = stopping.elapsed();
    println!("stop: keepalived gone {:.0} ms after SIGTERM", ms(took));
    assert!(took < supervisor::STOP_GRACE, "needed SIGKILL: {took:?}");
    assert_eq!(driver.log.last().map(|l| l.2.clone()), Some(Outcome::Stopped));
    assert!(processes_naming(&rig.conf).is_empty(), "still running: {:?}", processes_naming(&rig.conf));
    assert!(!names_conf(vrrp, &rig.conf));
    assert!(!rig.pid_file.exists() && !rig.vrrp_pid_file.exists(), "pidfiles left behind");
    assert_eq!(sup.next_deadline(), None, "stopped: no wake-ups");
}

#[test]
fn adoption_and_orphans() {
    let _serial = serial();
    if !common::require_root_and(&["keepalived", "ip", "setsid"]) {
        return;
    }
    harouterd::sys::process::become_subreaper().expect("subreaper");
    let rig = Rig::new("kaadopt");
    let mut driver = Driver::new();

    // 1. A keepalived started by one supervisor, which lets go of it (a
    //    daemon exiting with on_exit = keep) ...
    let mut first = rig.supervisor();
    let out = first.start(Instant::now());
    driver.call(&mut first, out);
    let pid = first.pid().expect("spawned");
    assert!(driver.run_until(&mut first, 5 * SECOND, POLL, |_| rig.fully_up(pid)));
    first.detach();
    assert!(first.is_stopped() && first.next_deadline().is_none());
    assert!(rig.fully_up(pid), "detach touched keepalived");

    // ... is adopted by the next one: same pid, no new process.
    let mut sup = rig.supervisor();
    let out = sup.start(Instant::now());
    assert_eq!(out, [Outcome::Adopted { pid }, Outcome::Watch]);
    driver.call(&mut sup, out);
    assert_eq!((sup.pid(), sup.adopted()), (Some(pid), true));
    assert_eq!(processes_naming(&rig.conf).len(), 2);
    assert_eq!(read_pid(&rig.pid_file), Some(pid));

    // kill -9: seen (pidfd, or SIGCHLD since it is still our child), respawned.
    let mark = driver.log.len();
    let (pid2, spawned, _) = kill_and_wait_respawn(&mut driver, &mut sup, &rig, 5 * SECOND);
    let events = driver.since(mark);
    println!("adopted keepalived killed -> respawned in {:.1} ms; {events:?}", ms(spawned));
    assert!(spawned < SECOND);
    assert!(!sup.adopted());
    assert!(driver.run_until(&mut sup, 5 * SECOND, POLL, |_| rig.fully_up(pid2)));

    // 2. An orphaned VRRP child at start: stop the VRRP child (so it
    //    cannot exit by itself on its parent's death), detach, kill the
    //    parent. The orphan comes to us (subreaper), stopped, alive.
    let orphan = rig.vrrp_pid();
    kill(orphan, Signal::SIGSTOP);
    sup.detach();
    kill(pid2, Signal::SIGKILL);
    let reparented_to_us = |_: &Supervisor| {
        !names_conf(pid2, &rig.conf) && ppid_and_session(orphan).is_some_and(|(pp, _)| pp == std::process::id())
    };
    assert!(driver.run_until(&mut sup, 5 * SECOND, POLL, reparented_to_us), "the orphan was not reparented to us");
    driver.run_until(&mut sup, 2 * SECOND, POLL, |_| gone_from_proc(pid2));
    assert!(names_conf(orphan, &rig.conf), "orphan alive");
    let mut sup = rig.supervisor();
    let mark = driver.log.len();
    let out = sup.start(Instant::now());
    assert_eq!(out, [Outcome::Watch], "waits for the orphan before spawning");
    driver.call(&mut sup, out);
    assert!(sup.owns(orphan) && sup.pid().is_none());
    assert!(driver.run_until(&mut sup, 5 * SECOND, None, |s| s.pid().is_some()), "never spawned");
    let events = driver.since(mark);
    println!("orphan at start: {events:?}");
    assert!(matches!(events.last(), Some((_, Outcome::Spawned { .. }))));
    assert!(!names_conf(orphan, &rig.conf), "orphan still alive");
    let pid3 = sup.pid().expect("running");
    assert!(driver.run_until(&mut sup, 5 * SECOND, POLL, |_| rig.fully_up(pid3)));
    assert_eq!(processes_naming(&rig.conf).len(), 2);

    // 3. A keepalived that is not our descendant (started by someone else:
    //    subreaper off, `setsid -f` double fork): only its pidfd can tell
    //    it died, and its orphaned VRRP child is not ours either.
    let out = sup.stop(Instant::now());
    driver.call(&mut sup, out);
    assert!(driver.run_until(&mut sup, 7 * SECOND, None, Supervisor::is_stopped));
    set_subreaper(false);
    let status = Command::new(common::tool("ip"))
        .args(["netns", "exec", rig.ns.name(), "setsid", "-f"])
        .arg(common::tool("keepalived"))
        .args(["-n", "-P", "-f"])
        .arg(&rig.conf)
        .arg("-p")
        .arg(&rig.pid_file)
        .arg("-r")
        .arg(&rig.vrrp_pid_file)
        .status();
    set_subreaper(true);
    assert!(status.expect("run setsid keepalived").success());
    let mut sup = rig.supervisor();
    assert!(
        driver.run_until(&mut sup, 5 * SECOND, POLL, |_| read_pid(&rig.pid_file).is_some_and(|p| rig.fully_up(p))),
        "foreign keepalived never came up"
    );
    let foreign = read_pid(&rig.pid_file).expect("pid");
    assert_ne!(ppid_and_session(foreign).map(|(pp, _)| pp), Some(std::process::id()));
    let out = sup.start(Instant::now());
    assert_eq!(out, [Outcome::Adopted { pid: foreign }, Outcome::Watch]);
    driver.call(&mut sup, out);
    let mark = driver.log.len();
    let (pid4, spawned, _) = kill_and_wait_respawn(&mut driver, &mut sup, &rig, 5 * SECOND);
    let events = driver.since(mark);
    println!("foreign keepalived killed -> respawned in {:.1} ms; {events:?}", ms(spawned));
    assert!(
        matches!(events.first(), Some((Via::Pidfd, Outcome::Died { pid, exit: None, .. })) if *pid == foreign),
        "{events:?}"
    );
    assert!(driver.run_until(&mut sup, 5 * SECOND, POLL, |_| rig.fully_up(pid4)));
    assert_eq!(ppid_and_session(pid4).map(|(pp, _)| pp), Some(std::process::id()), "ours now");
    assert_eq!(processes_naming(&rig.conf).len(), 2);

    let out = sup.stop(Instant::now());
    driver.call(&mut sup, out);
    assert!(driver.run_until(&mut sup, 7 * SECOND, None, Supervisor::is_stopped));
    assert!(processes_naming(&rig.conf).is_empty());
    assert!(!rig.pid_file.exists() && !rig.vrrp_pid_file.exists());
}

/// Whether `pid` is no longer even a zombie of ours.
fn gone_from_proc(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
