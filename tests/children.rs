//! Every child of the daemon starts clean (SPEC 3.5), for real: a daemon
//! started the way `nohup` and an init script leave a process (SIGHUP
//! ignored, a stray variable in the environment) runs a transition script
//! and conntrackd sync commands. Each child must see an empty signal mask,
//! default dispositions, only `PATH` in its environment (and, for the
//! transition script, its `HAROUTERD_*` variables), and its output must
//! land in the daemon's log, not on the daemon's stdout/stderr.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::lab::{harouterd, wait_until};
use common::{Netns, TempDir, add_interfaces};

/// Records what a child was started with, then says something on stdout
/// and stderr. The `.status` file comes last, whole.
const RECORDER: &str = r#"#!/bin/sh
fd1=$(readlink /proc/$$/fd/1)
out="$DIR/$(basename "$0").$(echo "$*" | tr ' /' '__')"
env | grep -v -E '^(PWD|SHLVL|_)=' | sort > "$out.env"
umask > "$out.umask"
echo "$fd1" > "$out.stdout"
grep -E '^Sig(Blk|Ign)' /proc/self/status > "$out.tmp" && mv "$out.tmp" "$out.status"
"#;

fn write_script(path: &Path, body: &str) {
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn mask(status: &str, field: &str) -> u64 {
    let line = status.lines().find_map(|l| l.strip_prefix(&format!("{field}:\t"))).expect(field);
    u64::from_str_radix(line.trim(), 16).unwrap()
}

#[test]
fn transition_scripts_and_conntrackd_start_clean_and_their_output_is_logged() {
    if !common::require_root_and(&["ip"]) {
        return;
    }
    let tmp = TempDir::new("children");
    let ns = Netns::new("kids");
    add_interfaces(&ns, &["ha-k1"]);
    let dir = tmp.path().display().to_string();
    let recorder = RECORDER.replace("$DIR", &dir);
    let script = tmp.join("transition");
    write_script(
        &script,
        &format!(
            "{recorder}echo \"script says hello $2\"\necho \"script complains $2\" >&2\n\
             sleep 300 &\necho $! > {dir}/sleep.$2\n"
        ),
    );
    let conntrackd = tmp.join("conntrackd");
    write_script(&conntrackd, &format!("{recorder}echo \"ERROR: fake conntrackd $3\" >&2\nexit 1\n"));
    let config = tmp.join("harouterd.conf");
    fs::write(
        &config,
        format!(
            "[daemon]\nstate_path = {dir}/state\ntransition_script = {}\nha_vrrp_advert_int = 1\n\
             ha_conntrackd_enabled = true\nconntrackd_path = {}\n\n\
             [router k1]\nnamespace = {}\nha_interface = ha-k1\nvrid = 1\nkeepalived = false\n",
            script.display(),
            conntrackd.display(),
            ns.name()
        ),
    )
    .unwrap();
    let log = tmp.join("daemon.log");
    let log_file = fs::File::create(&log).unwrap();
    let mut command = Command::new(harouterd());
    command
        .args(["run", "--foreground", "--log-level", "debug", "-c"])
        .arg(&config)
        .arg("--pidfile")
        .arg(tmp.join("harouterd.pid"))
        .env("HAROUTERD_TEST_LEAK", "must not reach children")
        .env("LD_LIBRARY_PATH", "/nonexistent")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
    // As `nohup` leaves it.
    // SAFETY: signal(2) only, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            libc::signal(libc::SIGUSR1, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut daemon = command.spawn().unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let daemon = Kill(&mut daemon);

    // Backup at start, then primary once the VIP has stayed advert_int.
    let backup_sleep = tmp.join("sleep.backup");
    assert!(wait_until(Duration::from_secs(10), || backup_sleep.exists()).is_some(), "no backup transition");
    ns.ip(&["addr", "add", "169.254.0.1/24", "dev", "ha-k1"]);
    let primary_status = tmp.join("transition.k1_primary.status");
    assert!(wait_until(Duration::from_secs(10), || primary_status.exists()).is_some(), "no primary transition");
    let last_sync =
        tmp.join("conntrackd.-C_".to_owned() + &dir.replace('/', "_") + "_state_ha_confs_k1_conntrackd.conf_-B.status");
    assert!(
        wait_until(Duration::from_secs(10), || last_sync.exists()).is_some(),
        "conntrackd -B never ran: {:?}",
        fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>()
    );

    let recorded: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "status"))
        .collect();
    assert!(recorded.len() >= 3, "a script and conntrackd runs: {recorded:?}");
    for status_file in &recorded {
        let status = fs::read_to_string(status_file).unwrap();
        let what = status_file.display();
        assert_eq!(mask(&status, "SigBlk"), 0, "{what}: signals blocked:\n{status}");
        let ignored = mask(&status, "SigIgn");
        for signal in [libc::SIGHUP, libc::SIGUSR1, libc::SIGPIPE, libc::SIGTERM] {
            assert_eq!(ignored & (1 << (signal - 1)), 0, "{what}: signal {signal} ignored:\n{status}");
        }
        let sibling = |ext: &str| status_file.display().to_string().replace(".status", &format!(".{ext}"));
        let env = fs::read_to_string(sibling("env")).unwrap();
        let path = format!("PATH={}", harouterd::sys::spawn::CHILD_PATH);
        // Transition scripts get their HAROUTERD_* variables too (issue 14:
        // the first change, backup, is seq 1; primary follows it as seq 2).
        let name = status_file.file_name().unwrap().to_string_lossy().into_owned();
        let expected = match name.as_str() {
            "transition.k1_backup.status" => {
                format!("HAROUTERD_PREVIOUS=\nHAROUTERD_ROUTER=k1\nHAROUTERD_SEQ=1\nHAROUTERD_STATE=backup\n{path}")
            }
            "transition.k1_primary.status" => format!(
                "HAROUTERD_PREVIOUS=backup\nHAROUTERD_ROUTER=k1\nHAROUTERD_SEQ=2\nHAROUTERD_STATE=primary\n{path}"
            ),
            other => {
                assert!(other.starts_with("conntrackd."), "{what}: which child is this?");
                path
            }
        };
        assert_eq!(env.trim(), expected, "{what}: environment");
        let umask = fs::read_to_string(sibling("umask")).unwrap();
        assert_eq!(umask.trim(), "0022", "{what}: umask");
        let stdout = fs::read_to_string(sibling("stdout")).unwrap();
        assert!(stdout.starts_with("pipe:"), "{what}: stdout is {stdout}, not a pipe of its own");
    }

    // A sleep the script left behind dies of SIGTERM (it was ignored or
    // blocked before: it survived).
    let sleep_pid: i32 = fs::read_to_string(&backup_sleep).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) on a pid the script just wrote; at worst ESRCH.
    assert_eq!(unsafe { libc::kill(sleep_pid, libc::SIGTERM) }, 0);
    let gone = wait_until(Duration::from_secs(5), || {
        fs::read_to_string(format!("/proc/{sleep_pid}/stat")).map_or(true, |s| s.contains(") Z "))
    });
    assert!(gone.is_some(), "sleep {sleep_pid} survived SIGTERM");

    // Their output is in the daemon's log, named.
    let text = || fs::read_to_string(&log).unwrap_or_default();
    let logged = wait_until(Duration::from_secs(5), || {
        let t = text();
        t.contains("router k1: transition script: script says hello primary")
            && t.contains("router k1: transition script: script complains primary")
            && t.contains("router k1: conntrackd -B: ERROR: fake conntrackd -B")
    });
    assert!(logged.is_some(), "children's output not in the log:\n{}", text());
    drop(daemon);
}
