//! The transition script through the real daemon (issue 14.7): a
//! monitor-only router in a namespace, its changes posted on the control
//! socket (Neutron's `POST /`), a real script that records every run:
//!
//! - it gets `ROUTER_ID STATE` and `HAROUTERD_ROUTER`, `HAROUTERD_STATE`,
//!   `HAROUTERD_PREVIOUS`, `HAROUTERD_SEQ` (the event's `seq`);
//! - one run at a time per router: a change while a run goes on waits, a
//!   later one replaces it (superseded, never run after the newer state);
//! - a run past `transition_script_timeout` gets SIGTERM, then SIGKILL
//!   2 s later, with everything it started (its process group), and the
//!   waiting run goes ahead;
//! - runs, failures, timeouts and superseded runs in `status` and
//!   `/metrics`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::lab::{processes_matching, send_signal, wait_until};
use common::{ChildGuard, Netns, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_harouterd");
const WITHIN: Duration = Duration::from_secs(20);

struct Rig {
    ns: Netns,
    dir: TempDir,
}

/// Whatever the daemon started and left running when a test fails (a
/// script that ignores SIGTERM runs in a session of its own, its loop with
/// it): every process naming the test's directory, and its process group.
impl Drop for Rig {
    fn drop(&mut self) {
        for pid in processes_matching(&self.dir.path().display().to_string()) {
            // SAFETY: kill(2) on processes this test started.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

impl Rig {
    fn config(&self) -> PathBuf {
        self.dir.join("harouterd.conf")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("state/harouterd.sock")
    }

    fn runs(&self) -> String {
        fs::read_to_string(self.dir.join("runs")).unwrap_or_default()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn write_config(&self, timeout: u32) {
        fs::write(
            self.config(),
            format!(
                "[daemon]\nstate_path = {}\nha_vrrp_advert_int = 1\ntransition_script = {}\n\
                 transition_script_timeout = {timeout}\n[router r1]\nnamespace = {}\nha_interface = ha-x\n\
                 vrid = 1\nkeepalived = false\n",
                self.dir.join("state").display(),
                self.dir.join("transition.sh").display(),
                self.ns.name()
            ),
        )
        .unwrap();
    }

    fn post(&self, state: &str) {
        let request = format!(
            "POST / HTTP/1.1\r\nHost: h\r\nX-Neutron-Router-Id: r1\r\nX-Neutron-State: {state}\r\nContent-Length: 0\r\n\r\n"
        );
        let (status, body) = common::http_exchange(&self.socket(), request.as_bytes());
        assert_eq!(status, Some(200), "{body}");
    }

    fn router(&self) -> String {
        common::http_get(&self.socket(), "/v1/routers/r1").1
    }

    fn effective(&self, state: &str) -> bool {
        self.router().contains(&format!("\"effective_state\":\"{state}\""))
    }

    fn wait(&self, what: &str, mut done: impl FnMut() -> bool) {
        if wait_until(WITHIN, &mut done).is_none() {
            panic!("{what}\nruns:\n{}\nrouter: {}\nlog:\n{}", self.runs(), self.router(), self.log());
        }
    }

    fn metric(&self, name: &str) -> Option<String> {
        let (_, body) = common::http_get(&self.socket(), "/metrics");
        let sample = format!("{name}{{router=\"r1\"}} ");
        body.lines().find_map(|l| l.strip_prefix(&sample).map(str::to_owned))
    }
}

#[test]
fn scripts_run_one_at_a_time_latest_state_wins_and_hung_ones_are_killed() {
    if !common::require_root_and(&["ip", "sh"]) {
        return;
    }
    let ns = Netns::new("tscript");
    common::add_veth_pair(&ns, "ha-x", "ha-y");
    let rig = Rig { ns, dir: TempDir::new("tscript") };
    let dir = rig.dir.path().display().to_string();
    // Each run appends `start SEQ ARGS ENV` and `end SEQ`. A run for STATE
    // waits while DIR/hold-STATE exists; with DIR/hang-STATE it ignores
    // SIGTERM, and so does a child it leaves in its process group.
    let script = format!(
        "#!/bin/sh\n\
         echo \"start $HAROUTERD_SEQ $1 $2 router=$HAROUTERD_ROUTER state=$HAROUTERD_STATE previous=[$HAROUTERD_PREVIOUS]\" >> {dir}/runs\n\
         while [ -e {dir}/hold-$2 ]; do sleep 0.02; done\n\
         if [ -e {dir}/hang-$2 ]; then\n\
             trap '' TERM\n\
             sh -c 'while :; do sleep 1; done # {dir}/hung-child' &\n\
             wait\n\
         fi\n\
         echo \"end $HAROUTERD_SEQ\" >> {dir}/runs\n"
    );
    let script_path = rig.dir.join("transition.sh");
    fs::write(&script_path, script).unwrap();
    fs::set_permissions(&script_path, fs::Permissions::from_mode(0o755)).unwrap();
    rig.write_config(30);
    // The first effective state (backup, from the first dump) is held.
    fs::write(rig.dir.join("hold-backup"), "").unwrap();
    let child = Command::new(BIN)
        .args(["run", "--foreground", "--log-level", "debug", "-c"])
        .arg(rig.config())
        .arg("--pidfile")
        .arg(rig.dir.join("pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(rig.dir.join("log")).unwrap())
        .spawn()
        .unwrap();
    let daemon = ChildGuard(child);
    rig.wait("the first run", || rig.runs() == "start 1 r1 backup router=r1 state=backup previous=[]\n");

    // primary (after advert_int), then fault, while backup's run is held:
    // primary waits, fault replaces it.
    rig.post("primary");
    rig.wait("effective primary", || rig.effective("primary"));
    rig.post("fault");
    rig.wait("effective fault", || rig.effective("fault"));
    let router = rig.router();
    assert!(
        router.contains(
            "\"transition_script\":{\"running\":\"backup\",\"runs\":1,\"failures\":0,\"timeouts\":0,\"superseded\":1,"
        ),
        "{router}"
    );
    assert_eq!(rig.runs(), "start 1 r1 backup router=r1 state=backup previous=[]\n", "nothing ran beside it");
    fs::remove_file(rig.dir.join("hold-backup")).unwrap();
    rig.wait("fault's run", || rig.runs().ends_with("end 3\n"));
    assert_eq!(
        rig.runs(),
        "start 1 r1 backup router=r1 state=backup previous=[]\nend 1\n\
         start 3 r1 fault router=r1 state=fault previous=[primary]\nend 3\n",
        "primary (seq 2) was superseded: never run after the newer fault"
    );
    assert_eq!(rig.metric("harouterd_script_runs_total").as_deref(), Some("2"));
    assert_eq!(rig.metric("harouterd_script_superseded_total").as_deref(), Some("1"));

    // A 1 s timeout (a reload), and a run that ignores SIGTERM: killed with
    // its child 2 s later; the run waiting behind it goes ahead.
    rig.write_config(1);
    send_signal(daemon.0.id(), libc::SIGHUP);
    rig.wait("the reload", || common::http_get(&rig.socket(), "/v1/daemon").1.contains("\"reloads\":1,"));
    fs::write(rig.dir.join("hang-backup"), "").unwrap();
    rig.post("backup");
    rig.wait("the hanging run", || {
        rig.runs().contains("start 4 r1 backup") && !processes_matching(&format!("{dir}/hung-child")).is_empty()
    });
    fs::write(rig.dir.join("hold-primary"), "").unwrap();
    rig.post("primary");
    rig.wait("effective primary", || rig.effective("primary"));
    rig.wait("primary's run after the kill", || rig.runs().contains("start 5 "));
    assert!(!rig.runs().contains("end 4"), "the hung run never finished by itself:\n{}", rig.runs());
    assert!(rig.runs().ends_with("start 5 r1 primary router=r1 state=primary previous=[backup]\n"), "{}", rig.runs());
    assert!(processes_matching(&format!("{dir}/hung-child")).is_empty(), "its child was killed with it");
    let router = rig.router();
    assert!(
        router.contains("\"running\":\"primary\",\"runs\":4,\"failures\":1,\"timeouts\":1,\"superseded\":1,"),
        "{router}"
    );
    let timed_out = "transition script for backup timed out after 1 s (killed by signal 9)";
    assert!(router.contains(&format!("\"last_error\":\"{timed_out}\"")), "{router}");
    assert_eq!(rig.metric("harouterd_script_timeouts_total").as_deref(), Some("1"));
    assert_eq!(rig.metric("harouterd_script_failures_total").as_deref(), Some("1"));
    let table = Command::new(BIN).args(["status", "--socket"]).arg(rig.socket()).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.lines().any(|l| l.starts_with("r1 ") && l.ends_with(timed_out)), "{table}");
    let log = rig.log();
    assert!(log.contains("transition script for backup still running after 1 s; sending SIGTERM"), "{log}");
    assert!(log.contains("transition script for backup still running after 3 s; sending SIGKILL"), "{log}");
    // A run that succeeds clears the error; the counts stay.
    fs::remove_file(rig.dir.join("hold-primary")).unwrap();
    rig.wait("primary's run to end", || rig.runs().ends_with("end 5\n"));
    rig.wait("the error cleared", || rig.router().contains("\"timeouts\":1,\"superseded\":1,\"last_error\":null}"));
}
