//! The `check` and `render` commands through the real binary: exit codes,
//! what goes to stdout and stderr, and `path:line` in every error.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_harouterd");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `text` as a config only root can read.
fn config(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios").join(name)
}

/// `keepalived_path` names a program every machine has, so that `check`
/// finds it whether keepalived is installed or not (in place of an empty
/// line, so that the lines below keep their numbers).
const GOOD: &str = "[daemon]\nstate_path = /srv/h\nha_vrrp_auth_password = pw12\nkeepalived_path = /bin/true\n\
                    [router r1]\nha_interface = ha-1\nvrid = 1\nvip = 10.0.0.1/24 dev qr-1\n\n\
                    [router r2]\nha_interface = ha-2\nvrid = 2\nhealth_check_interval = 5\n\
                    vip = 10.0.0.5/24 dev qg-2\nroute = 0.0.0.0/0 via 10.0.0.254 dev qg-2\n";

#[test]
fn check_accepts_a_good_file_silently() {
    let dir = TempDir::new("cli");
    let out = run(&["check", "-c", config(&dir, "good.conf", GOOD).to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn check_rejects_a_broken_file_with_path_and_line() {
    let dir = TempDir::new("cli");
    let path = config(&dir, "bad.conf", "[daemon]\n\n[router r1]\nha_interface = ha-1\nvrid = 300\nbogus = 1\n");
    let out = run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let p = path.display();
    assert_eq!(
        stderr(&out),
        format!(
            "{p}:6: router 'r1': unknown key 'bogus' in [router] section\n\
             {p}:5: router 'r1': vrid: 300 is out of range 1..=254\n"
        )
    );
}

// ---- issue 14.6 ----

#[test]
fn check_names_the_router_and_the_key_meant() {
    let dir = TempDir::new("cli");
    let path = config(&dir, "typo.conf", &format!("{GOOD}priorty = 100\n"));
    let out = run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "{}:16: router 'r2': unknown key 'priorty' in [router] section (did you mean 'priority'?)\n",
            path.display()
        )
    );
}

/// The case: an IPv6 unicast peer, which keepalived 2.2.7 refuses
/// ("address family must match VRRP instance"), passed `check`.
#[test]
fn check_refuses_an_ipv6_unicast_peer() {
    let dir = TempDir::new("cli");
    let path = config(&dir, "v6.conf", &format!("{GOOD}unicast_src_ip = 2001:db8::1\nunicast_peer = 2001:db8::2\n"));
    let out = run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let family = "is not of the same family as the VRRP instance, which is IPv4 (its primary VIP is in \
                  169.254.0.0/16): keepalived would refuse it; use an IPv4 address on the HA network";
    let p = path.display();
    assert_eq!(
        stderr(&out),
        format!(
            "{p}:16: router 'r2': unicast_src_ip: 2001:db8::1 {family}\n\
             {p}:17: router 'r2': unicast_peer: 2001:db8::2 {family}\n"
        )
    );
}

/// Decision: a leading byte order mark is dropped with a warning, not an
/// error (it is invisible, and means nothing).
#[test]
fn check_names_a_byte_order_mark_and_passes() {
    let dir = TempDir::new("cli");
    let path = config(&dir, "bom.conf", &format!("\u{feff}{GOOD}"));
    let out = run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "{}:1: warning: the file starts with a UTF-8 byte order mark (bytes EF BB BF), which is ignored; save \
             it without one\n",
            path.display()
        )
    );
    // The same file renders as the one without the mark.
    let plain = config(&dir, "plain.conf", GOOD);
    let render = |p: &Path| stdout(&run(&["render", "-c", p.to_str().unwrap()]));
    assert_eq!(render(&path), render(&plain));
}

#[test]
fn check_names_an_inline_comment() {
    let dir = TempDir::new("cli");
    let path = config(&dir, "comment.conf", &format!("{GOOD}priority = 100  # the primary\n"));
    let out = run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "{}:16: router 'r2': priority: '100  # the primary' is not a whole number (did you mean a comment? \
             comments are whole lines starting with '#' or ';': a '#' or ';' after a value is part of it)\n",
            path.display()
        )
    );
}

/// Names and programs the daemon resolves only when it runs: warned about
/// (exit 0), since the file may be checked on another machine than the one
/// it runs on. The lookups are the real ones (users, groups, files).
#[test]
fn check_warns_about_names_and_programs_this_machine_lacks() {
    let dir = TempDir::new("cli");
    let text = GOOD
        .replace(
            "keepalived_path = /bin/true\n",
            "keepalived_path = /nonexistent/keepalived\nconntrackd_path = hrt-no-such-conntrackd\n\
         ha_conntrackd_enabled = true\nsocket_group = hrt-nosuchgroup\nallowed_uids = 0, hrt-nosuchuser, root\n\
         transition_script = /nonexistent/transition.sh\n",
        )
        .replace("vrid = 1\n", "vrid = 1\nha_address = 169.254.192.1\n")
        .replace("vrid = 2\n", "vrid = 2\nha_address = 169.254.192.2\n");
    let path = config(&dir, "names.conf", &text);
    let out = run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let p = path.display();
    assert_eq!(
        stderr(&out),
        format!(
            "{p}:7: warning: socket_group: no group 'hrt-nosuchgroup' on this system: the daemon would refuse to \
             start\n\
             {p}:8: warning: allowed_uids: no user 'hrt-nosuchuser' on this system: the daemon would refuse to \
             start\n\
             {p}:4: warning: keepalived_path: /nonexistent/keepalived does not exist: no keepalived could be \
             started\n\
             {p}:5: warning: conntrackd_path: 'hrt-no-such-conntrackd' is not found in the PATH the daemon gives \
             its children (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin): conntrackd could not be \
             run\n\
             {p}:9: warning: transition_script: /nonexistent/transition.sh does not exist: no transition could \
             run it\n"
        )
    );
    // A bare name the children's PATH has is found there.
    let path = config(&dir, "sh.conf", &GOOD.replace("keepalived_path = /bin/true", "keepalived_path = sh"));
    let out = run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!((out.status.code(), stderr(&out)), (Some(0), String::new()));
}

#[test]
fn check_reports_unreadable_and_non_utf8_files() {
    let dir = TempDir::new("cli");
    let missing = dir.join("missing.conf");
    let out = run(&["check", "-c", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with(&format!("{}: cannot read: ", missing.display())), "{}", stderr(&out));

    let binary = dir.join("bin.conf");
    fs::write(&binary, b"[daemon]\n\n[router r\xff]\n").unwrap();
    let out = run(&["check", "-c", binary.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out), format!("{}:3: not valid UTF-8\n", binary.display()));
}

#[test]
fn world_readable_password_file_is_warned_about() {
    let dir = TempDir::new("cli");
    let path = config(&dir, "open.conf", GOOD);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains("warning: holds a VRRP password and is readable by others (mode 0644)"), "{err}");
    assert!(!err.contains("pw12"), "{err}");
}

#[test]
fn render_one_router_is_exactly_its_keepalived_conf() {
    let out = run(&["render", "-c", scenario("auth_pass.conf").to_str().unwrap(), "--router", "r1", "--show-secrets"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let golden =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/auth_pass.r1.keepalived.conf"))
            .unwrap();
    let expected = golden.replacen(
        "    router_id neutron\n",
        "    router_id neutron\n    notify_fifo /var/lib/harouterd/ha_confs/r1/notify.fifo\n",
        1,
    );
    assert_eq!(stdout(&out), expected);
}

#[test]
fn render_masks_passwords_by_default() {
    let out = run(&["render", "-c", scenario("auth_pass.conf").to_str().unwrap(), "--router", "r1"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("        auth_pass ********\n") && !text.contains("s3cr3tpw"), "{text}");
    let all = stdout(&run(&["render", "-c", scenario("health_check_gateway.conf").to_str().unwrap()]));
    assert!(!all.contains("hcpass") && all.contains("auth_pass ********"), "{all}");
}

#[test]
fn render_all_prints_each_file_after_a_header() {
    let dir = TempDir::new("cli");
    let out = run(&["render", "-c", config(&dir, "good.conf", GOOD).to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let headers: Vec<&str> = text.lines().filter(|l| l.starts_with("# ==> ")).collect();
    assert_eq!(
        headers,
        [
            "# ==> /srv/h/ha_confs/r1/keepalived.conf <==",
            "# ==> /srv/h/ha_confs/r2/keepalived.conf <==",
            "# ==> /srv/h/ha_confs/r2/ha_check_script_2.sh <==",
        ]
    );
    assert!(text.contains("<==\n#!/bin/bash -eu\nip a | grep 10.0.0.5 || exit 0\n"), "{text}");
    assert!(text.ends_with("ping -c 1 -w 1 10.0.0.254 1>/dev/null || exit 1\n"), "{text}");
    // Files are separated by exactly one empty line.
    assert!(text.contains("}\n\n# ==> /srv/h/ha_confs/r2/keepalived.conf <==\n"), "{text}");
}

#[test]
fn render_unknown_or_invalid_router() {
    let dir = TempDir::new("cli");
    let path = config(&dir, "good.conf", GOOD);
    let out = run(&["render", "-c", path.to_str().unwrap(), "--router", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out), format!("harouterd: {}: no router 'nope'\n", path.display()));
    assert!(out.stdout.is_empty());
    let out = run(&["render", "-c", path.to_str().unwrap(), "--router", "../r1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("invalid router id '../r1'"), "{}", stderr(&out));
}

#[test]
fn render_refuses_a_broken_config() {
    let dir = TempDir::new("cli");
    let path = config(&dir, "bad.conf", "[router r1]\nha_interface = ha-1\n");
    let out = run(&["render", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out), format!("{}:1: router 'r1': vrid is required (1..=254)\n", path.display()));
}

#[test]
fn help_version_and_usage_errors() {
    let out = run(&["--version"]);
    assert_eq!((out.status.code(), stdout(&out)), (Some(0), format!("harouterd {}\n", env!("CARGO_PKG_VERSION"))));
    for args in [&["--help"][..], &["check", "--help"], &["render", "-h"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(stdout(&out).contains("Usage: harouterd"), "{args:?}");
    }
    for (args, needle) in [
        (&[][..], "no command given"),
        (&["launch"], "unknown command 'launch'"),
        (&["check"], "check: -c FILE is required"),
        (&["render", "-c", "/x", "--colour"], "--colour"),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn neutron_monitor_name_dispatches_to_state_change() {
    let dir = TempDir::new("cli");
    let link = dir.join("neutron-keepalived-state-change");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let out = Command::new(&link).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("Usage: harouterd state-change"), "{}", stdout(&out));
    // Under that name the first argument is an option, not a command.
    let out = Command::new(&link).args(["--router_id", "r1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("state-change: --conf_dir is required"), "{}", stderr(&out));
}

// ---- conntrackd.conf (ha_conntrackd_enabled) ----

fn conntrackd_scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/conntrackd/scenarios").join(name)
}

fn conntrackd_golden(name: &str) -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/conntrackd").join(name)).unwrap()
}

/// The `# ==> PATH <==` lines of `render` output.
fn headers(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("# ==> ")).collect()
}

/// GOOD with conntrackd on and each router's own HA address.
fn good_with_conntrackd() -> String {
    GOOD.replace("[daemon]\n", "[daemon]\nha_conntrackd_enabled = true\n")
        .replace("vrid = 1\n", "vrid = 1\nha_address = 169.254.192.1\n")
        .replace("vrid = 2\n", "vrid = 2\nha_address = 169.254.192.2\n")
}

#[test]
fn render_all_lists_conntrackd_conf_when_enabled() {
    let dir = TempDir::new("cli");
    let out = run(&["render", "-c", config(&dir, "ct.conf", &good_with_conntrackd()).to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        headers(&text),
        [
            "# ==> /srv/h/ha_confs/r1/keepalived.conf <==",
            "# ==> /srv/h/ha_confs/r1/conntrackd.conf <==",
            "# ==> /srv/h/ha_confs/r2/keepalived.conf <==",
            "# ==> /srv/h/ha_confs/r2/ha_check_script_2.sh <==",
            "# ==> /srv/h/ha_confs/r2/conntrackd.conf <==",
        ]
    );
    // Neutron's file starts with an empty line, right after the header.
    assert!(text.contains("<==\n\nGeneral {\n    HashSize 32768\n"), "{text}");
    assert!(text.contains("        Group 3782\n        Interface ha-2\n"), "{text}");
}

#[test]
fn render_file_picks_one_file_of_a_router() {
    let path = conntrackd_scenario("defaults.conf");
    let path = path.to_str().unwrap();
    let out = run(&["render", "-c", path, "--router", "r1", "--file", "conntrackd.conf"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), conntrackd_golden("defaults.r1.conntrackd.conf"));

    // --router alone is still exactly keepalived.conf; --file can say so too.
    let alone = run(&["render", "-c", path, "--router", "r1"]);
    assert_eq!(alone.status.code(), Some(0), "{}", stderr(&alone));
    assert!(stdout(&alone).starts_with("global_defs {\n"), "{}", stdout(&alone));
    assert_eq!(stdout(&alone), stdout(&run(&["render", "-c", path, "--router", "r1", "--file", "keepalived.conf"])));

    let dir = TempDir::new("cli");
    let good = config(&dir, "good.conf", GOOD);
    let out = run(&["render", "-c", good.to_str().unwrap(), "--router", "r2", "--file", "ha_check_script_2.sh"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("#!/bin/bash -eu\n"), "{}", stdout(&out));
}

#[test]
fn render_file_without_router_shows_that_file_of_every_router() {
    let dir = TempDir::new("cli");
    let path = config(&dir, "ct.conf", &good_with_conntrackd());
    let out = run(&["render", "-c", path.to_str().unwrap(), "--file", "conntrackd.conf"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let headers: Vec<&str> = text.lines().filter(|l| l.starts_with("# ==> ")).collect();
    assert_eq!(
        headers,
        ["# ==> /srv/h/ha_confs/r1/conntrackd.conf <==", "# ==> /srv/h/ha_confs/r2/conntrackd.conf <=="]
    );
    assert!(text.ends_with("        Checksum on\n    }\n}\n"), "{text}");
}

#[test]
fn render_file_a_router_does_not_get() {
    let dir = TempDir::new("cli");
    let good = config(&dir, "good.conf", GOOD);
    let good = good.to_str().unwrap();
    for (args, message) in [
        (
            &["--router", "r1", "--file", "conntrackd.conf"][..],
            "harouterd: router 'r1' gets no conntrackd.conf (ha_conntrackd_enabled is false)\n".to_owned(),
        ),
        (
            &["--router", "r2", "--file", "notes.txt"],
            "harouterd: router 'r2' gets no notes.txt (it gets keepalived.conf, ha_check_script_2.sh)\n".to_owned(),
        ),
        (&["--file", "conntrackd.conf"], format!("harouterd: {good}: no router gets a conntrackd.conf\n")),
    ] {
        let out = run(&[&["render", "-c", good][..], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(stderr(&out), message, "{args:?}");
    }
    let monitor_only = conntrackd_scenario("defaults.conf");
    let out =
        run(&["render", "-c", monitor_only.to_str().unwrap(), "--router", "watched", "--file", "conntrackd.conf"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("router 'watched' gets no conntrackd.conf (it is monitor-only"), "{}", stderr(&out));
    let out = run(&["render", "-c", good, "--router", "r1", "--file", "../r2/keepalived.conf"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--file takes a file name"), "{}", stderr(&out));
    let help = stdout(&run(&["render", "--help"]));
    assert!(help.contains("[--file NAME]") && help.contains("conntrackd.conf"), "{help}");
}

#[test]
fn check_names_file_and_line_of_conntrackd_problems() {
    let path = conntrackd_scenario("too_long_socket.conf");
    let out = run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_eq!(
        stderr(&out),
        format!(
            "{}:7: router '{id}': conntrackd control socket path /var/lib/neutron/ha_confs/xy/{id}/conntrackd.ctl \
             is 108 bytes, over conntrackd's limit of 107; shorten ha_confs_path or the router ID\n",
            path.display()
        )
    );

    let dir = TempDir::new("cli");
    let text = good_with_conntrackd()
        .replace("ha_address = 169.254.192.2\n", "")
        .replace("ha_conntrackd_enabled = true\n", "ha_conntrackd_enabled = true\nha_conntrackd_group = 70000\n");
    let path = config(&dir, "ct.conf", &text);
    let out = run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let p = path.display();
    assert_eq!(
        stderr(&out),
        format!(
            "{p}:3: ha_conntrackd_group: 70000 is out of range 0..=65534\n\
             {p}:13: router 'r2': ha_address is required with ha_conntrackd_enabled (this node's own address on \
             the HA network, which conntrackd syncs over)\n"
        )
    );
}

/// `check` judges `state_path`, `ha_confs_path` and the control socket's
/// directory by the rule `run` applies before it writes anything: what
/// `run` refuses (exit 2, "refusing directory"), `check` refuses too, naming
/// the key's line; a missing directory below sound ones is what `run`
/// creates, and `check` says nothing about it.
#[test]
fn check_refuses_the_directories_run_would_refuse() {
    let dir = TempDir::new("clidirs");
    let open = dir.join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let cases = [
        (format!("state_path = {}", open.display()), Some(("state_path", open.clone()))),
        (format!("state_path = {}", open.join("below").display()), Some(("state_path", open.clone()))),
        (
            format!("state_path = {}\nha_confs_path = {}", dir.join("ok").display(), open.join("c").display()),
            Some(("ha_confs_path", open.clone())),
        ),
        (
            format!("state_path = {}\nsocket = {}", dir.join("ok").display(), open.join("h.sock").display()),
            Some(("the control socket's directory", open.clone())),
        ),
        (format!("state_path = {}", dir.join("new/deeper").display()), None),
    ];
    for (lines, refused) in cases {
        let path = config(&dir, "dirs.conf", &format!("[daemon]\n{lines}\n"));
        let out = run(&["check", "-c", path.to_str().unwrap()]);
        let daemon = run(&["run", "--foreground", "-c", path.to_str().unwrap(), "--pidfile", "/nonexistent/x.pid"]);
        match refused {
            Some((what, dir)) => {
                assert_eq!(out.status.code(), Some(2), "{lines}: {}", stderr(&out));
                let line = if what == "ha_confs_path" || what.starts_with("the control") { 3 } else { 2 };
                assert_eq!(
                    stderr(&out),
                    format!(
                        "{}:{line}: {what}: refusing directory {}: writable by others (mode 0777): harouterd run \
                         would refuse to start (only root may own or change the directories it writes in)\n",
                        path.display(),
                        dir.display()
                    )
                );
                assert_eq!(daemon.status.code(), Some(2), "run refuses it too: {}", stderr(&daemon));
                assert!(stderr(&daemon).contains(&format!("refusing directory {}", dir.display())));
            }
            None => {
                assert_eq!(out.status.code(), Some(0), "{lines}: {}", stderr(&out));
                assert!(out.stderr.is_empty(), "{lines}: {}", stderr(&out));
                // run got past the directories (and created them), then
                // failed on the pid file's directory.
                assert_eq!(daemon.status.code(), Some(1), "{}", stderr(&daemon));
                assert!(dir.join("new/deeper").is_dir());
            }
        }
    }
}
