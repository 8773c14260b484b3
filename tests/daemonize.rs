//! `daemonize()` with real forks. Each test re-executes its own binary,
//! running only itself, with an environment variable that makes the re-run
//! play the child: `daemonize_detaches_into_a_new_session` with
//! `HAROUTERD_DAEMONIZE_REPORT=FILE` calls `daemonize()` and writes what the
//! grandchild sees (pid, ppid, session, process group, cwd, umask, where fds
//! 0-2 point) to FILE. No root needed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const REPORT_ENV: &str = "HAROUTERD_DAEMONIZE_REPORT";

/// The re-executed test binary of `daemonize_detaches_into_a_new_session`:
/// daemonizes, reports to `report`, never returns.
fn daemonized_child(report: PathBuf) -> ! {
    let original = std::process::id();
    if let Err(e) = harouterd::sys::daemonize::daemonize() {
        // Still in the original or the session leader: the test sees the
        // missing report and this line on stderr (fds 0-2 not yet moved).
        eprintln!("daemonize failed: {e}");
        // SAFETY: leaving the process at once, without running the harness.
        unsafe { libc::_exit(1) };
    }
    // SAFETY: plain getters without preconditions.
    let (pid, sid, pgid) = unsafe { (libc::getpid(), libc::getsid(0), libc::getpgrp()) };
    // Wait (bounded) for the session leader, our parent, to be gone, so the
    // reported ppid is the reaper we were handed to.
    let deadline = Instant::now() + Duration::from_secs(5);
    // SAFETY: as above.
    while unsafe { libc::getppid() } == sid && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: as above; umask is read by setting and restoring it.
    let (ppid, mask) = unsafe {
        let mask = libc::umask(0o077);
        libc::umask(mask);
        (libc::getppid(), mask)
    };
    let link = |p: &str| std::fs::read_link(p).map(|t| t.display().to_string()).unwrap_or_else(|e| format!("?{e}"));
    let tty = std::fs::File::open("/dev/tty").is_ok();
    let text = format!(
        "original={original}\npid={pid}\nppid={ppid}\nsid={sid}\npgid={pgid}\numask={mask:o}\ncwd={}\nfd0={}\nfd1={}\nfd2={}\ntty={tty}\n",
        link("/proc/self/cwd"),
        link("/proc/self/fd/0"),
        link("/proc/self/fd/1"),
        link("/proc/self/fd/2"),
    );
    // Written whole, then renamed: the test never reads half a report.
    let tmp = report.with_extension("tmp");
    let ok = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &report)).is_ok();
    // SAFETY: leaving without returning into the (forked-away) harness.
    unsafe { libc::_exit(if ok { 0 } else { 1 }) };
}

fn field(report: &str, key: &str) -> String {
    report
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key} in report:\n{report}"))
        .to_string()
}

fn num(report: &str, key: &str) -> i64 {
    field(report, key).parse().unwrap_or_else(|e| panic!("{key}: {e}\n{report}"))
}

fn wait_for_file(path: &Path, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Some(text);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn daemonize_detaches_into_a_new_session() {
    if let Some(report) = std::env::var_os(REPORT_ENV) {
        daemonized_child(PathBuf::from(report));
    }
    let dir = std::env::temp_dir().join(format!("hrt-daemonize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report");
    let _ = std::fs::remove_file(&report);

    let exe = std::env::current_exe().unwrap();
    let output = Command::new(&exe)
        .args(["--exact", "daemonize_detaches_into_a_new_session", "--nocapture", "--test-threads=1"])
        .env(REPORT_ENV, &report)
        .current_dir(&dir)
        .output()
        .expect("re-run the test binary");
    // The original process exits 0 right after the first fork.
    assert!(output.status.success(), "original exited {}: {}", output.status, String::from_utf8_lossy(&output.stderr));

    let text = wait_for_file(&report, Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
    let text = text.unwrap_or_else(|| {
        panic!("the daemonized process wrote no report; stderr: {}", String::from_utf8_lossy(&output.stderr))
    });

    let me = i64::from(std::process::id());
    let original = num(&text, "original");
    let pid = num(&text, "pid");
    let ppid = num(&text, "ppid");
    let sid = num(&text, "sid");
    // SAFETY: getsid(0) has no preconditions.
    let my_sid = i64::from(unsafe { libc::getsid(0) });

    assert_ne!(pid, original, "runs in a forked process:\n{text}");
    assert_ne!(pid, me, "{text}");
    assert_ne!(ppid, me, "not our child any more:\n{text}");
    assert_ne!(ppid, original, "{text}");
    assert_ne!(ppid, sid, "the session leader (first child) has exited:\n{text}");
    assert_ne!(sid, my_sid, "a new session:\n{text}");
    assert_ne!(sid, original, "the session was made by the first child:\n{text}");
    // Double fork: the daemon is in the new session but not its leader, so
    // it can never acquire a controlling terminal.
    assert_ne!(sid, pid, "not a session leader:\n{text}");
    assert_eq!(num(&text, "pgid"), sid, "in the session's process group:\n{text}");
    assert_eq!(field(&text, "cwd"), "/", "{text}");
    assert_eq!(field(&text, "umask"), "22", "{text}");
    for fd in ["fd0", "fd1", "fd2"] {
        assert_eq!(field(&text, fd), "/dev/null", "{text}");
    }
    assert_eq!(field(&text, "tty"), "false", "no controlling terminal:\n{text}");
}

const DETACH_CASE_ENV: &str = "HAROUTERD_DETACH_CASE";
const DETACH_DIR_ENV: &str = "HAROUTERD_DETACH_DIR";

/// In the test binary re-executed by a `detach_reporting_*` test (see
/// [`run_detach_case`]): detaches with `detach_reporting()`, then reports as
/// the case says; never returns. Elsewhere, nothing.
fn detach_reporting_child() {
    let Some(case) = std::env::var_os(DETACH_CASE_ENV) else { return };
    let dir = PathBuf::from(std::env::var_os(DETACH_DIR_ENV).expect("dir"));
    let readiness = match harouterd::sys::daemonize::detach_reporting() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("detach failed: {e}");
            // SAFETY: leaving at once, without running the harness.
            unsafe { libc::_exit(9) };
        }
    };
    // SAFETY: plain getters.
    let (pid, sid) = unsafe { (libc::getpid(), libc::getsid(0)) };
    let link = |p: &str| std::fs::read_link(p).map(|t| t.display().to_string()).unwrap_or_default();
    let text = format!("pid={pid}\nsid={sid}\nfd1={}\nfd2={}\n", link("/proc/self/fd/1"), link("/proc/self/fd/2"));
    let _ = std::fs::write(dir.join("report.tmp"), text)
        .and_then(|()| std::fs::rename(dir.join("report.tmp"), dir.join("report")));
    match case.to_str() {
        Some("ready") => readiness.ready(),
        Some("failed") => readiness.failed(2, "start-up failed: --namespace 'x y' is not a name"),
        // Dies without a word.
        _ => unsafe { libc::_exit(3) },
    }
    // Still running after the original process is gone, until released.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("release").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: leaving without returning into the (forked-away) harness.
    unsafe { libc::_exit(0) };
}

/// Runs `case` the way Neutron up to 28 runs the monitor: stdin, stdout and
/// stderr on pipes, read to EOF, and the exit status waited for. `test` is
/// the calling test, re-executed alone to play the child.
fn run_detach_case(test: &str, case: &str, dir: &Path) -> (std::process::Output, Duration) {
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let output = Command::new(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(DETACH_CASE_ENV, case)
        .env(DETACH_DIR_ENV, dir)
        .stdin(std::process::Stdio::piped())
        .output()
        .expect("re-run the test binary");
    (output, started.elapsed())
}

fn alive(pid: i64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

#[test]
fn detach_reporting_returns_once_ready_and_the_detached_process_lives_on() {
    detach_reporting_child();
    let dir = std::env::temp_dir().join(format!("hrt-detach-ready-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (output, took) =
        run_detach_case("detach_reporting_returns_once_ready_and_the_detached_process_lives_on", "ready", &dir);
    let report = std::fs::read_to_string(dir.join("report")).unwrap_or_default();
    let pid = if report.is_empty() { 0 } else { num(&report, "pid") };
    let was_alive = pid > 0 && alive(pid);
    std::fs::write(dir.join("release"), "").unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    // The caller's pipes reached EOF and the status is 0 although the
    // detached process still runs: it holds none of them.
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("detached process"), "{output:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(was_alive, "the detached process must outlive the original one:\n{report}");
    assert_eq!(field(&report, "fd1"), "/dev/null", "{report}");
    assert_eq!(field(&report, "fd2"), "/dev/null", "{report}");
    assert_ne!(num(&report, "sid"), pid, "not a session leader:\n{report}");
}

#[test]
fn detach_reporting_passes_on_a_failure_and_its_reason() {
    detach_reporting_child();
    let dir = std::env::temp_dir().join(format!("hrt-detach-failed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (output, _) = run_detach_case("detach_reporting_passes_on_a_failure_and_its_reason", "failed", &dir);
    std::fs::write(dir.join("release"), "").unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("start-up failed: --namespace 'x y' is not a name\n"), "{stderr}");
}

#[test]
fn detach_reporting_fails_when_the_detached_process_dies_silently() {
    detach_reporting_child();
    let dir = std::env::temp_dir().join(format!("hrt-detach-silent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (output, _) = run_detach_case("detach_reporting_fails_when_the_detached_process_dies_silently", "silent", &dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the detached process ended during start-up"), "{stderr}");
}
