//! The supervisor driven without root or keepalived: stand-ins are `sh`
//! processes whose command line names the router's config.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::SystemTime;

use nix::sys::signal::Signal;

use super::*;
use crate::core::layout::Layout;
use crate::sys::pidfd::kill;

const MS: Duration = Duration::from_millis(1);

#[test]
fn cmdline_matching() {
    let conf = b"/var/lib/h/ha_confs/r1/keepalived.conf";
    let ours = b"keepalived\0-n\0-P\0-f\0/var/lib/h/ha_confs/r1/keepalived.conf\0-p\0/var/lib/h/ha_confs/r1.pid.keepalived\0-r\0/x\0";
    assert!(cmdline_names_conf(ours, conf));
    assert!(cmdline_names_conf(b"/usr/sbin/keepalived\0--use-file=/var/lib/h/ha_confs/r1/keepalived.conf\0", conf));
    assert!(cmdline_names_conf(b"keepalived\0--use-file\0/var/lib/h/ha_confs/r1/keepalived.conf", conf));
    assert!(cmdline_names_conf(b"keepalived\0-D\0-f/var/lib/h/ha_confs/r1/keepalived.conf\0", conf));
    // Another router's config, a prefix of ours, ours as a prefix.
    assert!(!cmdline_names_conf(b"keepalived\0-f\0/var/lib/h/ha_confs/r10/keepalived.conf\0", conf));
    assert!(!cmdline_names_conf(b"keepalived\0-f\0/var/lib/h/ha_confs/r1/keepalived.conf.bak\0", conf));
    assert!(!cmdline_names_conf(b"keepalived\0-f\0/var/lib/h/ha_confs/r1/keepalived\0", conf));
    // The path without the option, or as argv[0]: not keepalived's config.
    assert!(!cmdline_names_conf(b"less\0/var/lib/h/ha_confs/r1/keepalived.conf\0", conf));
    assert!(!cmdline_names_conf(b"/var/lib/h/ha_confs/r1/keepalived.conf\0", conf));
    assert!(!cmdline_names_conf(b"x\0-p\0/var/lib/h/ha_confs/r1/keepalived.conf\0", conf));
    // A zombie's cmdline is empty; an empty conf never matches.
    assert!(!cmdline_names_conf(b"", conf));
    assert!(!cmdline_names_conf(ours, b""));
}

#[test]
fn pid_parsing() {
    assert_eq!(parse_pid(b"4242\n"), Some(4242));
    assert_eq!(parse_pid(b"  17 "), Some(17));
    assert_eq!(parse_pid(b"2147483647"), Some(2147483647));
    for bad in [&b""[..], b"\n", b"0", b"-1", b"+5", b"12a", b"1 2", b"2147483648", b"99999999999999999999"] {
        assert_eq!(parse_pid(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

// ---- the state machine, without root or keepalived ----

use crate::test_support::TempDir as Dir;

fn supervisor(dir: &Path, program: &str, namespace: Option<&str>) -> Supervisor {
    supervisor_with(dir, program, namespace, "")
}

fn supervisor_with(dir: &Path, program: &str, namespace: Option<&str>, daemon_extra: &str) -> Supervisor {
    let ns = namespace.map(|n| format!("namespace = {n}\n")).unwrap_or_default();
    let text = format!(
        "[daemon]\nha_confs_path = {}\nkeepalived_path = {program}\n{daemon_extra}\
         [router r1]\n{ns}ha_interface = ha-1\nvrid = 1\n",
        dir.display()
    );
    let config = crate::config::parse(Path::new("test.conf"), &text).expect("valid config").config;
    let confs = HaConfs::new(Layout::new(&config.daemon.ha_confs_path));
    let mut sup = Supervisor::keepalived(&config.daemon, &config.routers[0], &confs, false);
    // The stand-in keepalived below is `sh`: a running process is ours
    // when it runs that binary (the proof is otherwise unchanged).
    sup.expect_exe = Some(PathBuf::from("/bin/sh"));
    sup
}

fn names_conf(pid: u32, conf: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    cmdline_names_conf(&ProcFacts::read(pid).cmdline, conf.as_os_str().as_bytes())
}

/// A stand-in for keepalived: one `sh` process, no children, whose
/// cmdline gives `conf` to `-f`, blocked opening a FIFO nobody writes.
struct Fake {
    child: std::process::Child,
}

impl Fake {
    fn start(dir: &Path, conf: &Path) -> Fake {
        Fake::start_with(dir, conf, "read line < \"$1\"")
    }

    fn start_with(dir: &Path, conf: &Path, script: &str) -> Fake {
        Fake::start_program(dir, Path::new("sh"), conf, script, &[])
    }

    /// `program -c script sh FIFO -f CONF extra...`.
    fn start_program(dir: &Path, program: &Path, conf: &Path, script: &str, extra: &[&Path]) -> Fake {
        let fifo = dir.join(format!("fifo-{}", dir.read_dir().map(|d| d.count()).unwrap_or(0)));
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let mut command = std::process::Command::new(program);
        command.args(["-c", script, "sh"]).arg(&fifo).arg("-f").arg(conf).args(extra);
        // Started clean like the daemon's children, so a test runner
        // started under `nohup` does not hand sh an ignored SIGHUP.
        crate::sys::spawn::start_with_clean_signals(&mut command);
        let child = command.spawn().expect("spawn sh");
        // Until sh has exec'd, its cmdline is still ours.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !names_conf(child.id(), conf) {
            assert!(Instant::now() < deadline, "fake keepalived never showed up");
            std::thread::sleep(MS);
        }
        Fake { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child the supervisor spawned, killed and reaped when the test ends,
/// passed or failed: a failing test must not leave its stand-in running.
struct Reaped(u32);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.0 as i32), None);
    }
}

/// Calls `pidfd_ready` until it reports something (the process was
/// signalled; its exit takes a moment).
fn until_pidfd_ready(sup: &mut Supervisor) -> Vec<Outcome> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = sup.pidfd_ready(Instant::now());
        if !out.is_empty() {
            return out;
        }
        assert!(Instant::now() < deadline, "pidfd never became readable");
        std::thread::sleep(MS);
    }
}

#[test]
fn missing_program_is_retried_with_backoff_and_stale_pidfiles_go() {
    let dir = Dir::new("missing");
    let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", None);
    // A stale pidfile naming a live process that is not keepalived (us).
    std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", std::process::id())).expect("seed");
    std::fs::write(dir.0.join("r1.pid.keepalived-vrrp"), "garbage").expect("seed");
    let t0 = Instant::now();
    assert_eq!(sup.start(t0), [Outcome::SpawnFailed { retry_in: 100 * MS }]);
    assert!(!dir.0.join("r1.pid.keepalived").exists() && !dir.0.join("r1.pid.keepalived-vrrp").exists());
    let error = sup.last_error().expect("an error").to_string();
    assert!(error.starts_with("router r1: cannot start keepalived (/nonexistent/keepalived): "), "{error}");
    assert_eq!(sup.pid(), None);
    assert_eq!(sup.next_deadline(), Some(t0 + 100 * MS));
    assert_eq!(sup.next_restart(), Some(t0 + 100 * MS));
    assert!(!sup.is_stopped());
    assert!(sup.tick(t0 + 99 * MS).is_empty(), "not due yet");
    assert_eq!(sup.tick(t0 + 100 * MS), [Outcome::SpawnFailed { retry_in: 200 * MS }]);
    assert_eq!(sup.backoff(), 200 * MS);
    assert_eq!(sup.restarts(), 0, "failed starts are not restarts");
    assert_eq!(sup.sighup(t0), Sighup::NotRunning);
    assert_eq!(sup.stop(t0 + 150 * MS), [Outcome::Stopped]);
    assert!(sup.is_stopped());
    assert_eq!(sup.next_deadline(), None, "stopped: no wake-ups");
}

/// A program that is there and executable but whose `exec` fails (its
/// interpreter is missing): `spawn` no longer waits to learn that, so it is
/// reported by the child's exit, and must still count as a failed start,
/// with the errno and a backoff, never as a death respawned at once.
#[test]
fn an_exec_that_fails_after_spawn_returned_is_a_failed_start_with_backoff() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new("noexec");
    let program = dir.0.join("keepalived");
    std::fs::write(&program, "#!/nonexistent/interpreter\n").expect("write");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut sup = supervisor(&dir.0, program.to_str().expect("utf-8"), None);
    let t0 = Instant::now();
    let [Outcome::Spawned { pid }] = sup.start(t0)[..] else { panic!("spawn returns before the exec") };
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None).expect("waitpid");
    assert_eq!(status, nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid as i32), 127));
    let exit = crate::sys::spawn::not_run_report(pid).map_or(ChildExit::Code(127), ChildExit::NotRun);
    let t1 = t0 + 5 * MS;
    assert_eq!(sup.child_exited(pid, exit, t1), [Outcome::SpawnFailed { retry_in: 100 * MS }]);
    let error = sup.last_error().expect("an error").to_string();
    assert_eq!(
        error,
        format!(
            "router r1: cannot start keepalived ({0}): cannot run {0}: No such file or directory (os error 2)",
            program.display()
        )
    );
    assert_eq!(sup.restarts(), 0, "a failed start is not a restart");
    assert_eq!(sup.pid(), None);
    assert_eq!(sup.next_restart(), Some(t1 + 100 * MS), "backed off, not respawned at once");
}

#[test]
fn missing_namespace_is_an_error_naming_it() {
    let dir = Dir::new("nsgone");
    let mut sup = supervisor(&dir.0, "/bin/true", Some("/nonexistent/netns/r1"));
    assert_eq!(sup.start(Instant::now()), [Outcome::SpawnFailed { retry_in: 100 * MS }]);
    let error = sup.last_error().expect("an error").to_string();
    assert!(error.contains("/nonexistent/netns/r1"), "{error}");
}

#[test]
fn adopts_a_running_keepalived_and_respawns_it_when_its_pidfd_fires() {
    let dir = Dir::new("adopt");
    let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", None);
    let mut fake = Fake::start(&dir.0, sup.conf_path());
    std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", fake.pid())).expect("seed");
    let t0 = Instant::now();
    assert_eq!(sup.start(t0), [Outcome::Adopted { pid: fake.pid() }, Outcome::Watch]);
    assert_eq!((sup.pid(), sup.adopted()), (Some(fake.pid()), true));
    assert!(sup.owns(fake.pid()));
    assert_eq!(sup.next_deadline(), None, "watched by pidfd, no timer");
    assert!(sup.pidfd_ready(t0).is_empty(), "alive: a spurious readiness is ignored");
    assert_eq!(sup.sighup(t0), Sighup::Sent, "adopted: first reload at once");
    // sh dies of the SIGHUP: the pidfd reports it.
    let out = until_pidfd_ready(&mut sup);
    let _ = fake.child.wait();
    assert!(matches!(out[0], Outcome::Died { exit: None, respawn_in: Some(Duration::ZERO), .. }), "{out:?}");
    assert_eq!(out[1], Outcome::SpawnFailed { retry_in: 100 * MS }, "{out:?}");
    assert_eq!(sup.restarts(), 1);
    assert!(!sup.owns(fake.pid()));
    assert!(sup.last_error().is_some());
}

#[test]
fn kills_an_orphaned_vrrp_child_before_spawning() {
    let dir = Dir::new("orphan");
    let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", None);
    let mut orphan = Fake::start(&dir.0, sup.conf_path());
    std::fs::write(dir.0.join("r1.pid.keepalived-vrrp"), format!("{}\n", orphan.pid())).expect("seed");
    let t0 = Instant::now();
    assert_eq!(sup.start(t0), [Outcome::Watch], "waits for the orphan");
    assert!(sup.owns(orphan.pid()));
    assert_eq!(sup.next_deadline(), None);
    assert_eq!(sup.next_restart(), Some(t0));
    // The test process reaps its own child here; the daemon would have
    // reported it through child_exited instead.
    let status = orphan.child.wait().expect("wait");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    let out = until_pidfd_ready(&mut sup);
    assert_eq!(out, [Outcome::SpawnFailed { retry_in: 100 * MS }]);
    assert!(!dir.0.join("r1.pid.keepalived-vrrp").exists());
}

#[test]
fn stop_terminates_an_adopted_keepalived_then_reports_stopped() {
    let dir = Dir::new("stop");
    let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", None);
    let mut fake = Fake::start(&dir.0, sup.conf_path());
    std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", fake.pid())).expect("seed");
    let t0 = Instant::now();
    // stop() before start(): a keepalived of ours found running is
    // adopted (its pidfd to register), then stopped.
    assert_eq!(sup.stop(t0), [Outcome::Adopted { pid: fake.pid() }, Outcome::Watch]);
    assert_eq!(sup.pid(), Some(fake.pid()));
    assert_eq!(sup.next_deadline(), Some(t0 + STOP_GRACE));
    let out = until_pidfd_ready(&mut sup);
    let status = fake.child.wait().expect("wait");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGTERM));
    assert_eq!(out, [Outcome::Stopped]);
    assert!(sup.is_stopped() && sup.pid().is_none());
    assert!(!dir.0.join("r1.pid.keepalived").exists());
    assert_eq!(sup.next_deadline(), None);
}

#[test]
fn with_action_exit_a_death_is_reported_and_nothing_respawned() {
    let dir = Dir::new("exit");
    let mut sup = supervisor_with(&dir.0, "/nonexistent/keepalived", None, "check_child_processes_action = exit\n");
    let mut fake = Fake::start(&dir.0, sup.conf_path());
    std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", fake.pid())).expect("seed");
    assert_eq!(sup.start(Instant::now())[0], Outcome::Adopted { pid: fake.pid() });
    let _ = fake.child.kill();
    let out = until_pidfd_ready(&mut sup);
    assert_eq!(out, [Outcome::Died { pid: fake.pid(), exit: None, respawn_in: None }]);
    assert!(sup.is_stopped() && sup.pid().is_none());
    assert_eq!((sup.restarts(), sup.next_deadline(), sup.next_restart()), (0, None, None));
    let error = sup.last_error().expect("the death").to_string();
    assert!(error.starts_with(&format!("router r1: keepalived (pid {}) died after ", fake.pid())), "{error}");
}

#[test]
fn stop_escalates_to_sigkill_after_the_grace_period() {
    let dir = Dir::new("escalate");
    let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", None);
    let mut fake = Fake::start_with(&dir.0, sup.conf_path(), "trap '' TERM; read line < \"$1\"");
    std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", fake.pid())).expect("seed");
    // Wait until sh has run its `trap` (SIGTERM in SigIgn).
    let ignores_term = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let ign = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).unwrap_or("0").trim().to_owned();
        u64::from_str_radix(&ign, 16).is_ok_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ignores_term(fake.pid()) {
        assert!(Instant::now() < deadline, "the fake never ignored SIGTERM");
        std::thread::sleep(MS);
    }
    let t0 = Instant::now();
    assert_eq!(sup.start(t0)[0], Outcome::Adopted { pid: fake.pid() });
    assert!(sup.stop(t0).is_empty());
    assert!(sup.tick(t0 + STOP_GRACE - MS).is_empty());
    std::thread::sleep(20 * MS);
    assert!(sup.pidfd_ready(t0).is_empty(), "SIGTERM is ignored");
    assert!(sup.tick(t0 + STOP_GRACE).is_empty());
    assert_eq!(sup.next_deadline(), None, "SIGKILL sent, nothing more to escalate");
    let out = until_pidfd_ready(&mut sup);
    let status = fake.child.wait().expect("wait");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    assert_eq!(out, [Outcome::Stopped]);
}

#[test]
fn detach_leaves_the_process_alone() {
    let dir = Dir::new("detach");
    let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", None);
    let fake = Fake::start(&dir.0, sup.conf_path());
    std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", fake.pid())).expect("seed");
    let t0 = Instant::now();
    assert_eq!(sup.start(t0)[0], Outcome::Adopted { pid: fake.pid() });
    sup.detach();
    assert!(sup.is_stopped() && sup.pid().is_none());
    assert!(names_conf(fake.pid(), sup.conf_path()), "still running");
    assert!(dir.0.join("r1.pid.keepalived").exists(), "files untouched");
    // A new start adopts it again.
    assert_eq!(sup.start(t0)[0], Outcome::Adopted { pid: fake.pid() });
}

// ---- the proof of ownership (issue 15.3) ----

fn expected() -> Expected {
    Expected {
        kind: Kind::Keepalived,
        conf: PathBuf::from("/h/r1/keepalived.conf"),
        exe: Some((8, 100)),
        exe_path: PathBuf::from("/usr/sbin/keepalived"),
        uid: 0,
        netns: Some((4, 4026532000)),
    }
}

fn keepalived_facts(started: SystemTime) -> ProcFacts {
    ProcFacts {
        cmdline: b"/usr/sbin/keepalived\0-n\0-P\0-f\0/h/r1/keepalived.conf\0".to_vec(),
        exe: Some((8, 100)),
        exe_link: Some(PathBuf::from("/usr/sbin/keepalived")),
        uids: Some([0; 4]),
        ppid: Some(1),
        netns: Some((4, 4026532000)),
        start_ticks: Some(4242),
        started: Some(started),
    }
}

#[test]
fn judging_a_process() {
    let written = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let ours = keepalived_facts(written - Duration::from_millis(30));
    let want = expected();
    assert_eq!(judge_process(&ours, &want, Some(written)), Ok(()));
    assert_eq!(judge_process(&ours, &want, None), Ok(()));

    // `tail -f CONF` of a user: same cmdline shape, nothing else.
    let tail = ProcFacts {
        cmdline: b"tail\0-f\0/h/r1/keepalived.conf\0".to_vec(),
        exe: Some((8, 200)),
        exe_link: Some(PathBuf::from("/usr/bin/tail")),
        uids: Some([65534; 4]),
        ..ours.clone()
    };
    assert_eq!(
        judge_process(&tail, &want, Some(written)),
        Err(NotOurs::Exe { running: Some(PathBuf::from("/usr/bin/tail")) })
    );
    let cases: Vec<(ProcFacts, NotOurs)> = vec![
        (ProcFacts { cmdline: Vec::new(), ..ours.clone() }, NotOurs::Gone),
        (ProcFacts { cmdline: b"keepalived\0-f\0/h/r2/keepalived.conf\0".to_vec(), ..ours.clone() }, NotOurs::Cmdline),
        (ProcFacts { exe: None, exe_link: None, ..ours.clone() }, NotOurs::Exe { running: None }),
        (ProcFacts { uids: Some([65534, 0, 0, 0]), ..ours.clone() }, NotOurs::Uid { uids: Some([65534, 0, 0, 0]) }),
        (ProcFacts { uids: Some([0, 0, 65534, 0]), ..ours.clone() }, NotOurs::Uid { uids: Some([0, 0, 65534, 0]) }),
        (ProcFacts { uids: None, ..ours.clone() }, NotOurs::Uid { uids: None }),
        (ProcFacts { netns: Some((4, 4026531840)), ..ours.clone() }, NotOurs::Namespace),
        (ProcFacts { netns: None, ..ours.clone() }, NotOurs::Namespace),
        (
            ProcFacts { started: Some(written + Duration::from_secs(90)), ..ours.clone() },
            NotOurs::StartedAfterPidfile { by: Duration::from_secs(90) },
        ),
        (ProcFacts { started: None, ..ours.clone() }, NotOurs::Gone),
    ];
    for (facts, why) in cases {
        assert_eq!(judge_process(&facts, &want, Some(written)), Err(why.clone()), "{facts:?}");
    }
    // Within the slack, or no time check: fine.
    let late = ProcFacts { started: Some(written + PIDFILE_SLACK), ..ours.clone() };
    assert_eq!(judge_process(&late, &want, Some(written)), Ok(()));
    let late = ProcFacts { started: Some(written + Duration::from_secs(90)), ..ours.clone() };
    assert_eq!(judge_process(&late, &want, None), Ok(()));
    // The binary was upgraded (replaced) under a running keepalived.
    let upgraded = ProcFacts {
        exe: Some((8, 99)),
        exe_link: Some(PathBuf::from("/usr/sbin/keepalived (deleted)")),
        ..ours.clone()
    };
    assert_eq!(judge_process(&upgraded, &want, Some(written)), Ok(()));
    let elsewhere = ProcFacts { exe_link: Some(PathBuf::from("/tmp/keepalived (deleted)")), ..upgraded };
    assert!(matches!(judge_process(&elsewhere, &want, Some(written)), Err(NotOurs::Exe { .. })));
    // The messages name what is wrong.
    assert_eq!(
        NotOurs::Exe { running: Some("/usr/bin/tail".into()) }.to_string(),
        "it runs /usr/bin/tail, not the configured program"
    );
    assert_eq!(NotOurs::Uid { uids: Some([65534; 4]) }.to_string(), "it runs as uid 65534 (effective 65534), not root");
}

#[test]
fn reads_its_own_process() {
    let me = ProcFacts::read(std::process::id());
    let uid = nix::unistd::getuid().as_raw();
    assert_eq!(me.uids.map(|u| u[0]), Some(uid));
    assert_eq!(me.ppid, Some(nix::unistd::getppid().as_raw() as u32));
    let exe = std::fs::metadata("/proc/self/exe").unwrap();
    assert_eq!(me.exe, Some((exe.dev(), exe.ino())));
    let ns = std::fs::metadata("/proc/self/ns/net").unwrap();
    assert_eq!(me.netns, Some((ns.dev(), ns.ino())));
    let started = me.started.expect("a start time");
    assert!(
        started <= SystemTime::now() && SystemTime::now().duration_since(started).unwrap() < Duration::from_secs(3600)
    );
    assert_eq!(ProcFacts::read(u32::MAX >> 1), ProcFacts::default(), "no such process");
}

#[test]
fn a_process_naming_our_config_that_runs_another_binary_is_left_alone() {
    let dir = Dir::new("not-ours");
    let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", None);
    sup.expect_exe = None;
    let main = Fake::start(&dir.0, sup.conf_path());
    let vrrp = Fake::start(&dir.0, sup.conf_path());
    std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", main.pid())).expect("seed");
    std::fs::write(dir.0.join("r1.pid.keepalived-vrrp"), format!("{}\n", vrrp.pid())).expect("seed");
    let t0 = Instant::now();
    assert_eq!(sup.start(t0), [Outcome::SpawnFailed { retry_in: 100 * MS }], "neither adopted nor waited for");
    assert_eq!(sup.stop(t0), [Outcome::Stopped]);
    for fake in [&main, &vrrp] {
        assert!(names_conf(fake.pid(), sup.conf_path()), "signalled");
    }
    assert!(!dir.0.join("r1.pid.keepalived").exists() && !dir.0.join("r1.pid.keepalived-vrrp").exists());
}

fn age(path: &Path, by: Duration) {
    let file = std::fs::File::options().write(true).open(path).expect("open");
    file.set_modified(SystemTime::now() - by).expect("set mtime");
}

#[test]
fn a_process_younger_than_its_pidfile_is_not_ours_unless_its_vrrp_child_vouches() {
    let dir = Dir::new("late");
    let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", None);
    let fake = Fake::start(&dir.0, sup.conf_path());
    let pidfile = dir.0.join("r1.pid.keepalived");
    std::fs::write(&pidfile, format!("{}\n", fake.pid())).expect("seed");
    age(&pidfile, Duration::from_secs(3600));
    assert_eq!(sup.start(Instant::now()), [Outcome::SpawnFailed { retry_in: 100 * MS }]);
    assert!(names_conf(fake.pid(), sup.conf_path()));
    drop(fake);

    // A parent whose VRRP child (its own child, named by the VRRP
    // pidfile) runs: a stepped clock, not a reused pid.
    let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", None);
    let vrrp_pidfile = dir.0.join("r1.pid.keepalived-vrrp");
    let script = "sh -c 'read line < \"$1\"' sh \"$1\" -f \"$3\" & echo $! > \"$4\"; read line < \"$1\"";
    let parent = Fake::start_program(&dir.0, Path::new("sh"), sup.conf_path(), script, &[&vrrp_pidfile]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read(&vrrp_pidfile).ok().and_then(|t| parse_pid(&t)).is_some_and(|c| names_conf(c, sup.conf_path()))
    {
        assert!(Instant::now() < deadline, "the fake VRRP child never showed up");
        std::thread::sleep(MS);
    }
    let child = std::fs::read(&vrrp_pidfile).ok().and_then(|t| parse_pid(&t)).expect("child pid");
    std::fs::write(&pidfile, format!("{}\n", parent.pid())).expect("seed");
    age(&pidfile, Duration::from_secs(3600));
    age(&vrrp_pidfile, Duration::from_secs(3600));
    assert_eq!(sup.start(Instant::now()), [Outcome::Adopted { pid: parent.pid() }, Outcome::Watch]);
    sup.detach();
    let _ = kill(child, Signal::SIGKILL);
}

/// A keepalived started before its binary was replaced (a package
/// upgrade) is still ours: `/proc/PID/exe` reads `PATH (deleted)`.

#[test]
fn a_keepalived_whose_binary_was_upgraded_is_still_adopted() {
    let dir = Dir::new("upgraded");
    let bin = dir.0.join("keepalived-bin");
    std::fs::copy("/bin/sh", &bin).expect("copy sh");
    let mut sup = supervisor(&dir.0, &bin.display().to_string(), None);
    sup.expect_exe = None;
    let fake = Fake::start_program(&dir.0, &bin, sup.conf_path(), "read line < \"$1\"", &[]);
    let replacement = dir.0.join("keepalived-new");
    std::fs::copy("/bin/sh", &replacement).expect("copy sh");
    std::fs::rename(&replacement, &bin).expect("upgrade");
    std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", fake.pid())).expect("seed");
    assert_eq!(sup.start(Instant::now()), [Outcome::Adopted { pid: fake.pid() }, Outcome::Watch]);
    sup.detach();
}

// ---- one program, two namespaces (a namespace re-created while the
// daemon was down) ----

#[test]
fn ours_in_another_namespace_is_stopped_and_replaced() {
    let dir = Dir::new("elsewhere");
    // The router's "namespace" is a plain file: it exists, and it is not
    // the namespace the fake below runs in. Entering it fails, which ends
    // the replacement in a spawn failure (without root).
    let ns_file = dir.0.join("netns-now");
    std::fs::write(&ns_file, "").expect("write");
    let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", Some(ns_file.to_str().unwrap()));
    let mut fake = Fake::start(&dir.0, sup.conf_path());
    std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", fake.pid())).expect("seed");
    let t0 = Instant::now();
    assert_eq!(sup.start(t0), [Outcome::Replacing { pid: fake.pid() }, Outcome::Watch]);
    assert_eq!(sup.pid(), Some(fake.pid()));
    assert!(sup.is_stopping());
    assert_eq!(sup.next_deadline(), Some(t0 + STOP_GRACE), "asked to stop, SIGKILL armed");
    let out = until_pidfd_ready(&mut sup);
    let status = fake.child.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGTERM),
        "stopped through its pidfd"
    );
    assert_eq!(out, [Outcome::SpawnFailed { retry_in: 100 * MS }], "then a new one is started in the namespace");
    let error = sup.last_error().expect("an error").to_string();
    // setns(2) refuses the plain file.
    assert!(error.starts_with("router r1: cannot start keepalived"), "{error}");
    assert_eq!(sup.restarts(), 0, "a replacement is no death");
}

#[test]
fn ours_in_another_namespace_is_only_stopped_by_a_stop() {
    let dir = Dir::new("elsewhere-stop");
    let ns_file = dir.0.join("netns-now");
    std::fs::write(&ns_file, "").expect("write");
    let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", Some(ns_file.to_str().unwrap()));
    let mut fake = Fake::start(&dir.0, sup.conf_path());
    std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", fake.pid())).expect("seed");
    assert_eq!(sup.stop(Instant::now()), [Outcome::Adopted { pid: fake.pid() }, Outcome::Watch]);
    let out = until_pidfd_ready(&mut sup);
    let _ = fake.child.wait();
    assert_eq!(out, [Outcome::Stopped]);
}

#[test]
fn ours_while_the_namespace_is_gone_is_adopted() {
    let dir = Dir::new("nsgone-adopt");
    let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", Some("/nonexistent/netns/r1"));
    let fake = Fake::start(&dir.0, sup.conf_path());
    std::fs::write(dir.0.join("r1.pid.keepalived"), format!("{}\n", fake.pid())).expect("seed");
    assert_eq!(sup.start(Instant::now()), [Outcome::Adopted { pid: fake.pid() }, Outcome::Watch]);
    assert!(sup.adopted() && !sup.is_stopping());
    sup.detach();
}

#[test]
fn an_orphan_in_another_namespace_is_killed_before_a_spawn() {
    let dir = Dir::new("orphan-elsewhere");
    let ns_file = dir.0.join("netns-now");
    std::fs::write(&ns_file, "").expect("write");
    let mut sup = supervisor(&dir.0, "/nonexistent/keepalived", Some(ns_file.to_str().unwrap()));
    let mut orphan = Fake::start(&dir.0, sup.conf_path());
    std::fs::write(dir.0.join("r1.pid.keepalived-vrrp"), format!("{}\n", orphan.pid())).expect("seed");
    assert_eq!(sup.start(Instant::now()), [Outcome::Watch], "waits for the orphan");
    let status = orphan.child.wait().expect("wait");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    assert_eq!(until_pidfd_ready(&mut sup), [Outcome::SpawnFailed { retry_in: 100 * MS }]);
}

// ---- conntrackd ----

#[test]
fn conntrackd_command_lines() {
    let conf = b"/h/r1/conntrackd.conf";
    assert!(cmdline_is_conntrackd_daemon(b"conntrackd\0-C\0/h/r1/conntrackd.conf\0", conf));
    assert!(cmdline_is_conntrackd_daemon(b"/usr/sbin/conntrackd\0-C\0/h/r1/conntrackd.conf", conf));
    // Neutron's daemon mode, adopted after a migration.
    assert!(cmdline_is_conntrackd_daemon(b"conntrackd\0-d\0-C\0/h/r1/conntrackd.conf\0", conf));
    assert!(cmdline_is_conntrackd_daemon(b"conntrackd\0-C\0/h/r1/conntrackd.conf\0-d\0", conf));
    // Client commands name the same file: never the daemon.
    for client in ["-c", "-f", "-R", "-B", "-t", "-n", "-k", "-s"] {
        let line = format!("conntrackd\0-C\0/h/r1/conntrackd.conf\0{client}\0");
        assert!(!cmdline_is_conntrackd_daemon(line.as_bytes(), conf), "{client}");
    }
    assert!(!cmdline_is_conntrackd_daemon(b"conntrackd\0-C\0/h/r10/conntrackd.conf\0", conf));
    assert!(!cmdline_is_conntrackd_daemon(b"conntrackd\0-d\0-d\0-C\0/h/r1/conntrackd.conf\0", conf));
    assert!(!cmdline_is_conntrackd_daemon(b"less\0/h/r1/conntrackd.conf\0", conf));
    assert!(!cmdline_is_conntrackd_daemon(b"", conf));
    assert!(!cmdline_is_conntrackd_daemon(b"conntrackd\0-C\0\0", b""));
}

fn conntrackd_supervisor(dir: &Path, program: &str) -> Supervisor {
    let text = format!(
        "[daemon]\nha_confs_path = {}\nconntrackd_path = {program}\nha_conntrackd_enabled = true\n\
         [router r1]\nha_interface = ha-1\nvrid = 1\nha_address = 169.254.192.1\n",
        dir.display()
    );
    let config = crate::config::parse(Path::new("test.conf"), &text).expect("valid config").config;
    let confs = HaConfs::new(Layout::new(&config.daemon.ha_confs_path));
    confs.router_dir_fd(&config.routers[0].id, true).expect("router dir");
    let mut sup = Supervisor::conntrackd(&config.daemon, &config.routers[0], &confs);
    sup.expect_exe = Some(PathBuf::from("/bin/sh"));
    sup
}

/// A socket file nobody listens on, as a killed conntrackd leaves its
/// control socket. Made with mknod: a listener bound and closed here could
/// live on for a moment in a child another test is forking.
fn dead_socket(path: &Path) {
    use nix::sys::stat::{Mode, SFlag, mknod};
    mknod(path, SFlag::S_IFSOCK, Mode::from_bits_truncate(0o600), 0).expect("mknod socket");
}

/// A stand-in for conntrackd: `sh -C CONF`, which is conntrackd's command
/// line (sh takes `-C` for noclobber and runs CONF as its script, which
/// waits on a FIFO nobody writes).
fn fake_conntrackd(dir: &Path, conf: &Path) -> std::process::Child {
    let fifo = dir.join("ctd-fifo");
    let _ = nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600));
    std::fs::write(conf, format!("read line < {}\n", fifo.display())).expect("write the fake conf");
    let mut command = std::process::Command::new("sh");
    command.arg("-C").arg(conf);
    crate::sys::spawn::start_with_clean_signals(&mut command);
    let child = command.spawn().expect("spawn sh");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ProcFacts::read(child.id()).cmdline.ends_with(b"conntrackd.conf\0") {
        assert!(Instant::now() < deadline, "fake conntrackd never showed up");
        std::thread::sleep(MS);
    }
    child
}

#[test]
fn conntrackd_is_adopted_then_stopped_and_its_leftovers_go() {
    let dir = Dir::new("ctd-adopt");
    let mut sup = conntrackd_supervisor(&dir.0, "/nonexistent/conntrackd");
    let mut fake = fake_conntrackd(&dir.0, sup.conf_path());
    let router = dir.0.join("r1");
    std::fs::write(router.join("conntrackd.pid"), format!("{}\n", fake.id())).expect("seed");
    assert_eq!(sup.start(Instant::now()), [Outcome::Adopted { pid: fake.id() }, Outcome::Watch]);
    // What conntrackd leaves when killed: its lock file, a dead socket.
    std::fs::write(router.join("conntrackd.lock"), "").expect("lock");
    dead_socket(&router.join("conntrackd.ctl"));
    let t0 = Instant::now();
    // `conntrackd -k` cannot run (no such program): SIGTERM instead.
    assert!(sup.stop(t0).is_empty());
    assert_eq!(sup.next_deadline(), Some(t0 + STOP_GRACE));
    let out = until_pidfd_ready(&mut sup);
    let status = fake.wait().expect("wait");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGTERM));
    assert_eq!(out, [Outcome::Stopped]);
    let left: Vec<String> =
        std::fs::read_dir(&router).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, ["conntrackd.conf"], "pidfile, lock and socket removed; the config is the daemon's");
}

#[test]
fn a_client_command_is_never_taken_for_conntrackd() {
    let dir = Dir::new("ctd-client");
    let mut sup = conntrackd_supervisor(&dir.0, "/nonexistent/conntrackd");
    let fake = Fake::start_program(&dir.0, Path::new("sh"), sup.conf_path(), "read line < \"$1\"", &[]);
    // `sh -c SCRIPT sh FIFO -f CONF`: names the file, not conntrackd's daemon.
    std::fs::write(dir.0.join("r1").join("conntrackd.pid"), format!("{}\n", fake.pid())).expect("seed");
    assert_eq!(sup.start(Instant::now()), [Outcome::SpawnFailed { retry_in: 100 * MS }]);
    assert!(ProcFacts::read(fake.pid()).cmdline.len() > 1, "left alone");
}

#[test]
fn conntrackd_is_not_started_beside_a_process_answering_on_its_socket() {
    let dir = Dir::new("ctd-busy");
    let mut sup = conntrackd_supervisor(&dir.0, "/bin/sh");
    let router = dir.0.join("r1");
    std::fs::write(router.join("conntrackd.lock"), "").expect("lock");
    let listener = std::os::unix::net::UnixListener::bind(router.join("conntrackd.ctl")).expect("bind");
    let t0 = Instant::now();
    assert_eq!(sup.start(t0), [Outcome::SpawnFailed { retry_in: 100 * MS }]);
    let error = sup.last_error().expect("an error").to_string();
    assert_eq!(
        error,
        format!(
            "router r1: not starting conntrackd: a process not proven ours answers on {}",
            router.join("conntrackd.ctl").display()
        )
    );
    assert!(router.join("conntrackd.lock").exists(), "its lock file is left alone");
    assert_eq!(sup.stop(t0), [Outcome::Stopped]);
    assert!(router.join("conntrackd.ctl").exists() && router.join("conntrackd.lock").exists(), "still left alone");
    drop(listener);
}

#[test]
fn spawned_conntrackd_gets_a_pidfile_and_is_ready_once_its_socket_is_there() {
    let dir = Dir::new("ctd-spawn");
    let mut sup = conntrackd_supervisor(&dir.0, "/bin/sh");
    let router = dir.0.join("r1");
    let fifo = dir.0.join("ctd-fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    // `sh -C CONF` runs CONF: a stand-in that waits.
    std::fs::write(sup.conf_path(), format!("read line < {}\n", fifo.display())).expect("conf");
    // Leftovers of a killed conntrackd: removed before the spawn.
    std::fs::write(router.join("conntrackd.lock"), "").expect("lock");
    dead_socket(&router.join("conntrackd.ctl"));
    let t0 = Instant::now();
    let out = sup.start(t0);
    let Some(Outcome::Spawned { pid }) = out.first().cloned() else { panic!("{out:?}") };
    let _reaped = Reaped(pid);
    assert_eq!(out.len(), 1, "no socket yet: {out:?}");
    assert!(!router.join("conntrackd.lock").exists() && !router.join("conntrackd.ctl").exists());
    assert_eq!(std::fs::read_to_string(router.join("conntrackd.pid")).unwrap(), format!("{pid}\n"));
    // Looked for again soon, then less often.
    let first = sup.next_deadline().expect("a look is due");
    assert!(first <= t0 + 2 * MS, "{:?}", first - t0);
    assert!(sup.tick(first).is_empty());
    let second = sup.next_deadline().expect("another look");
    assert!(second > first && second <= first + 4 * MS, "{:?}", second - first);
    let listener = std::os::unix::net::UnixListener::bind(router.join("conntrackd.ctl")).expect("bind");
    assert_eq!(sup.tick(second), [Outcome::Ready { pid }]);
    assert_eq!(sup.next_deadline(), None, "no more looks");
    // A process proven ours is found by the pidfile the supervisor wrote,
    // once it runs the program (spawn does not wait for the exec).
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_link(format!("/proc/{pid}/exe")).ok() == std::env::current_exe().ok() {
        assert!(Instant::now() < deadline, "the stand-in conntrackd never exec'd");
        std::thread::sleep(MS);
    }
    let mut other = conntrackd_supervisor(&dir.0, "/bin/sh");
    assert_eq!(other.start(t0)[0], Outcome::Adopted { pid });
    other.detach();
    drop(listener);
}

#[test]
fn a_conntrackd_that_never_creates_its_socket_is_reported() {
    let dir = Dir::new("ctd-notready");
    let mut sup = conntrackd_supervisor(&dir.0, "/bin/sh");
    let fifo = dir.0.join("ctd-fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    std::fs::write(sup.conf_path(), format!("read line < {}\n", fifo.display())).expect("conf");
    let t0 = Instant::now();
    let Some(Outcome::Spawned { pid }) = sup.start(t0).first().cloned() else { panic!("not spawned") };
    let _reaped = Reaped(pid);
    let mut looks = 0;
    let (at, out) = loop {
        let at = sup.next_deadline().expect("looking");
        looks += 1;
        let out = sup.tick(at);
        if !out.is_empty() {
            break (at, out);
        }
    };
    assert_eq!(out, [Outcome::NotReady { pid }]);
    assert_eq!(at, t0 + READY_WAIT);
    assert!(looks < 25, "{looks} looks in {READY_WAIT:?}");
    assert_eq!(sup.next_deadline(), None, "left running, no more looks");
}

#[test]
fn restart_stops_then_starts_without_counting_a_death() {
    let dir = Dir::new("ctd-restart");
    let mut sup = conntrackd_supervisor(&dir.0, "/nonexistent/conntrackd");
    let mut fake = fake_conntrackd(&dir.0, sup.conf_path());
    std::fs::write(dir.0.join("r1").join("conntrackd.pid"), format!("{}\n", fake.id())).expect("seed");
    let t0 = Instant::now();
    assert_eq!(sup.start(t0)[0], Outcome::Adopted { pid: fake.id() });
    assert!(sup.restart(t0).is_empty());
    assert!(sup.is_stopping() && !sup.is_stopped());
    let out = until_pidfd_ready(&mut sup);
    let _ = fake.wait();
    assert_eq!(out, [Outcome::SpawnFailed { retry_in: 100 * MS }], "gone, then started again (here: cannot)");
    assert_eq!(sup.restarts(), 0);
    // A restart while waiting out a backoff starts at once.
    assert_eq!(sup.restart(t0 + 10 * MS), [Outcome::SpawnFailed { retry_in: 100 * MS }]);
}

#[test]
fn program_command_lines() {
    let text = "[daemon]\nha_confs_path = /h\nha_conntrackd_enabled = true\n\
                [router r1]\nha_interface = ha-1\nvrid = 1\nha_address = 169.254.192.1\n";
    let config = crate::config::parse(Path::new("test.conf"), text).expect("valid config").config;
    let layout = Layout::new(Path::new("/h"));
    let (daemon, router) = (&config.daemon, &config.routers[0]);
    let ka = Program::keepalived(daemon, router, &layout, true);
    assert_eq!(
        ka.args(),
        [
            "-n",
            "-P",
            "-f",
            "/h/r1/keepalived.conf",
            "-p",
            "/h/r1.pid.keepalived",
            "-r",
            "/h/r1.pid.keepalived-vrrp",
            "-D"
        ]
    );
    assert!(ka.names_conf(b"keepalived\0-n\0-f\0/h/r1/keepalived.conf\0") && ka.stop_command().is_none());
    let ct = Program::conntrackd(daemon, router, &layout);
    assert_eq!(ct.args(), ["-C", "/h/r1/conntrackd.conf"], "no -d: it stays our child");
    assert_eq!(ct.stop_command(), Some(vec!["-C".into(), "/h/r1/conntrackd.conf".into(), "-k".into()]));
    assert_eq!(ct.pid_file, Path::new("/h/r1/conntrackd.pid"));
    assert_eq!(ct.leftovers, [Path::new("/h/r1/conntrackd.lock"), Path::new("/h/r1/conntrackd.ctl")]);
    assert!(ct.names_conf(b"conntrackd\0-C\0/h/r1/conntrackd.conf\0"));
    assert!(!ct.names_conf(b"keepalived\0-f\0/h/r1/conntrackd.conf\0"));
}
