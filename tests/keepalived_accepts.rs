//! Every keepalived.conf that `harouterd render` produces for every scenario in
//! tests/scenarios must be accepted by the real `keepalived -t` (2.2.x), run
//! inside a fresh network namespace that has every interface the config names.
//!
//! keepalived's exit code is useless for this: in 2.2.7 `-t` keeps the *least*
//! severe error class it saw (so a harmless warning masks a fatal one), exits 0
//! when the config file does not even exist, and exits 5 for the
//! "Ignoring track_interface X since own interface" notice that Neutron's
//! output always triggers. So the verdict comes from what it prints: every
//! line on stdout/stderr must be one of a short list of known-harmless
//! messages (see `harmless`); anything else (unknown keyword, bad number,
//! missing interface, missing script, unbalanced braces, missing file, ...)
//! rejects the config.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Netns, TempDir};

/// Exit codes `keepalived -t` uses when it could load the config:
/// KEEPALIVED_CHK_EXIT_OK (0), _CONFIG_TEST (5, "something was reported"),
/// _CONFIG_TEST_SECURITY (6, "scripts without script_security"). 4 means a
/// fatal error (file not found, bad interface); anything else is a crash.
const ACCEPTABLE_EXIT_CODES: [i32; 3] = [0, 5, 6];

/// The exact text of the one security notice we accept. Neutron never enables
/// script_security, so every config with a health-check script gets it. The
/// variant with " There are insecure scripts." (script or a parent directory
/// writable by non-root) is *not* accepted.
const SECURITY_NOTICE: &str = "SECURITY VIOLATION - scripts are being executed but script_security not enabled.";

/// A Neutron-style config for the self-checks; its interfaces are created by
/// `SELF_CHECK_IFACES`.
const NEUTRON_CONF: &str = "global_defs {
    notification_email_from neutron@openstack.local
    router_id neutron
}
vrrp_instance VR_1 {
    state BACKUP
    interface ha-1a2b3c4d-5e
    virtual_router_id 1
    priority 50
    garp_master_delay 60
    nopreempt
    advert_int 2
    track_interface {
        ha-1a2b3c4d-5e
    }
    virtual_ipaddress {
        169.254.0.1/24 dev ha-1a2b3c4d-5e
    }
    virtual_ipaddress_excluded {
        10.0.0.1/24 dev qr-0a0b0c0d-01 no_track
    }
}";

const SELF_CHECK_IFACES: [&str; 2] = ["ha-1a2b3c4d-5e", "qr-0a0b0c0d-01"];

// ---------------------------------------------------------------------------
// Reading keepalived.conf text

/// `vrrp_instance NAME` -> its `interface`.
fn instance_interfaces(conf: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut instance: Option<String> = None;
    let mut depth = 0usize;
    for line in conf.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        if toks.first() == Some(&"vrrp_instance") && depth == 0 {
            instance = toks.get(1).map(|s| s.to_string());
        }
        if depth == 1
            && toks.first() == Some(&"interface")
            && let (Some(i), Some(ifname)) = (&instance, toks.get(1))
        {
            map.insert(i.clone(), ifname.to_string());
        }
        depth += toks.iter().filter(|t| **t == "{").count();
        depth = depth.saturating_sub(toks.iter().filter(|t| **t == "}").count());
        if depth == 0 {
            instance = None;
        }
    }
    map
}

/// Every interface a config names: `interface X`, each `track_interface`
/// entry, and each `dev X` in virtual_ipaddress, virtual_ipaddress_excluded
/// and virtual_routes. Sorted, without duplicates.
fn conf_interfaces(conf: &str) -> Vec<String> {
    let mut found = std::collections::BTreeSet::new();
    let mut blocks: Vec<String> = Vec::new();
    for line in conf.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        let Some(first) = toks.first() else { continue };
        if toks.last() == Some(&"{") {
            blocks.push(first.to_string());
            continue;
        }
        if *first == "}" {
            blocks.pop();
            continue;
        }
        match blocks.last().map(String::as_str) {
            Some("vrrp_instance") if *first == "interface" => {
                if let Some(i) = toks.get(1) {
                    found.insert(i.to_string());
                }
            }
            Some("track_interface") => {
                found.insert(first.to_string());
            }
            Some("virtual_ipaddress" | "virtual_ipaddress_excluded" | "virtual_routes") => {
                for w in toks.windows(2) {
                    if w[0] == "dev" {
                        found.insert(w[1].to_string());
                    }
                }
            }
            _ => {}
        }
    }
    found.into_iter().collect()
}

// ---------------------------------------------------------------------------
// Judging keepalived's output

/// Strip keepalived's location prefix, `(Line N) ` or `(FILE: Line N) `.
fn strip_location(line: &str) -> &str {
    let Some(rest) = line.strip_prefix('(') else { return line };
    let Some(end) = rest.find(") ") else { return line };
    let is_location = rest[..end].rsplit_once("Line ").is_some_and(|(before, n)| {
        (before.is_empty() || before.ends_with(": ")) && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    });
    if is_location { &rest[end + 2..] } else { line }
}

fn is_ipv6_link_local(addr_with_prefix: &str) -> bool {
    let addr = addr_with_prefix.split('/').next().unwrap_or("");
    addr.parse::<Ipv6Addr>().map(|a| a.segments()[0] & 0xffc0 == 0xfe80).unwrap_or(false)
}

/// Names listed in `track_script { }` blocks (scripts an instance really uses).
fn tracked_scripts(conf: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut inside = false;
    for line in conf.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        match toks.as_slice() {
            ["track_script", "{"] => inside = true,
            ["}", ..] => inside = false,
            [name, ..] if inside => names.push(name.to_string()),
            _ => {}
        }
    }
    names
}

/// What a config says about itself that the judge needs.
struct ConfFacts {
    /// `vrrp_instance NAME` -> its `interface`.
    instances: BTreeMap<String, String>,
    /// Scripts referenced from a `track_script` block.
    tracked_scripts: Vec<String>,
}

impl ConfFacts {
    fn of(conf: &str) -> ConfFacts {
        ConfFacts { instances: instance_interfaces(conf), tracked_scripts: tracked_scripts(conf) }
    }
}

/// Whether one line of `keepalived -t` output is a known-harmless notice for
/// this config. Everything not listed here is an error.
fn harmless(line: &str, facts: &ConfFacts) -> bool {
    let msg = strip_location(line);

    // "(VR_1) Ignoring track_interface ha-x since own interface": Neutron
    // always lists the HA interface under track_interface; keepalived drops
    // the redundant entry. Only accepted for the instance's own interface.
    if let Some(rest) = msg.strip_prefix('(')
        && let Some((inst, rest)) = rest.split_once(") Ignoring track_interface ")
        && let Some(ifname) = rest.strip_suffix(" since own interface")
    {
        return facts.instances.get(inst).map(String::as_str) == Some(ifname);
    }

    // "Cannot specify scope for IPv6 addresses (fe80::.../64) - ignoring
    // scope": Neutron writes its IPv6 link-local gateway VIP with
    // `scope link`; keepalived drops the scope, which changes nothing for a
    // fe80::/10 address (link scope is implied). For any other IPv6 address
    // the dropped scope changes the meaning, so it is an error.
    if let Some(rest) = msg.strip_prefix("Cannot specify scope for IPv6 addresses (")
        && let Some(addr) = rest.strip_suffix(") - ignoring scope")
    {
        return is_ipv6_link_local(addr);
    }

    // "Disabling track script X since not found/accessible": Neutron declares
    // `vrrp_script ha_health_check_<vrid>` whenever the health-check interval
    // is > 0, but only writes the script and adds `track_script` when there
    // are gateway routes. An unreferenced script that keepalived drops changes
    // nothing; a *tracked* one that is missing silently disables the health
    // check, which is an error.
    if let Some(rest) = msg.strip_prefix("Disabling track script ")
        && let Some(name) = rest.strip_suffix(" since not found/accessible")
    {
        return !facts.tracked_scripts.iter().any(|t| t == name);
    }

    msg == SECURITY_NOTICE
}

/// `Ok(notices)` (the harmless lines keepalived printed) or `Err(problems)`.
fn judge(conf: &str, out: &Output) -> Result<Vec<String>, Vec<String>> {
    let facts = ConfFacts::of(conf);
    let mut problems = Vec::new();
    let mut notices = Vec::new();
    match out.status.code() {
        Some(c) if ACCEPTABLE_EXIT_CODES.contains(&c) => {}
        _ => problems.push(format!("unexpected exit status: {}", out.status)),
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stdout.lines().chain(stderr.lines()) {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if harmless(line, &facts) {
            if !notices.iter().any(|n| n == line) {
                notices.push(line.to_string());
            }
        } else {
            problems.push(line.to_string());
        }
    }
    if problems.is_empty() { Ok(notices) } else { Err(problems) }
}

fn keepalived_check(ns: &Netns, conf_path: &Path) -> Output {
    let keepalived = common::tool("keepalived");
    ns.exec(&[keepalived.as_os_str(), "-t".as_ref(), "-f".as_ref(), conf_path.as_os_str()])
}

fn numbered(text: &str) -> String {
    text.lines().enumerate().map(|(i, l)| format!("{:4} | {l}\n", i + 1)).collect()
}

fn show_output(out: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------
// Running the product

/// Split `render` output (without `--router`) into (path, content): each file
/// is `"# ==> {path} <==\n{content}\n"`, files separated by one more `"\n"`.
fn split_render_output(out: &str) -> Result<Vec<(String, String)>, String> {
    // Byte offsets of header line starts.
    let mut headers: Vec<(usize, usize, String)> = Vec::new(); // (start, body start, path)
    let mut pos = 0;
    for line in out.split_inclusive('\n') {
        let bare = line.strip_suffix('\n').unwrap_or(line);
        if let Some(rest) = bare.strip_prefix("# ==> ") {
            let path = rest.strip_suffix(" <==").ok_or_else(|| format!("malformed header line {bare:?}"))?;
            headers.push((pos, pos + line.len(), path.to_string()));
        }
        pos += line.len();
    }
    match headers.first() {
        None => return Err("no `# ==> PATH <==` header at all".into()),
        Some((0, _, _)) => {}
        Some(_) => return Err("output does not start with a `# ==> PATH <==` header".into()),
    }
    let mut files = Vec::new();
    for (i, (_, body, path)) in headers.iter().enumerate() {
        let last = i + 1 == headers.len();
        let end = if last { out.len() } else { headers[i + 1].0 };
        let chunk = &out[*body..end];
        let suffix = if last { "\n" } else { "\n\n" };
        let content = chunk
            .strip_suffix(suffix)
            .ok_or_else(|| format!("the content of {path} is not followed by {suffix:?} as the contract says"))?;
        files.push((path.clone(), content.to_string()));
    }
    Ok(files)
}

/// Copy a scenario with its `state_path` pointed at `state`.
fn scenario_copy(text: &str, state: &Path) -> String {
    let mut replaced = 0;
    let mut out = String::new();
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        if key == "state_path" && line.contains('=') {
            out.push_str(&format!("state_path = {}\n", state.display()));
            replaced += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert_eq!(replaced, 1, "expected exactly one state_path line in:\n{text}");
    out
}

/// Write a rendered file at `path` (inside `root`), creating directories
/// (0755, so keepalived does not call the scripts insecure) and setting the
/// mode SPEC 3.2 gives it.
fn write_rendered(root: &Path, path: &Path, content: &str) {
    assert!(path.starts_with(root), "rendered path {} is outside state_path {}", path.display(), root.display());
    let parent = path.parent().expect("rendered path has a parent");
    std::fs::create_dir_all(parent).unwrap();
    let mut dir = parent;
    while dir != root && dir.starts_with(root) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir = dir.parent().unwrap();
    }
    let name = path.file_name().unwrap().to_string_lossy();
    let mode = if name.starts_with("ha_check_script_") && name.ends_with(".sh") { 0o520 } else { 0o600 };
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

// ---------------------------------------------------------------------------
// Tests

/// The judge must accept Neutron's own output and reject broken configs, or
/// the main test proves nothing.
#[test]
fn judge_accepts_neutron_conf_and_rejects_broken_ones() {
    // Pure parts first (no root needed).
    assert_eq!(conf_interfaces(NEUTRON_CONF), SELF_CHECK_IFACES.to_vec());
    assert_eq!(instance_interfaces(NEUTRON_CONF).get("VR_1").map(String::as_str), Some("ha-1a2b3c4d-5e"));
    assert_eq!(strip_location("(x.conf: Line 12) Unknown"), "Unknown");
    assert_eq!(strip_location("(Line 4) Unknown"), "Unknown");
    assert_eq!(strip_location("(VR_1) Ignoring"), "(VR_1) Ignoring");
    let files = split_render_output("# ==> /a <==\nA\nB\n\n# ==> /b <==\nC\n").unwrap();
    assert_eq!(files, vec![("/a".to_string(), "A\nB".to_string()), ("/b".to_string(), "C".to_string())]);

    if !common::require_root_and(&["keepalived", "ip"]) {
        return;
    }
    let tmp = TempDir::new("kajudge");
    let ns = Netns::new("kaj");
    common::add_interfaces(&ns, &SELF_CHECK_IFACES);

    let check = |label: &str, conf: &str| -> (Output, Result<Vec<String>, Vec<String>>) {
        let path = tmp.join(format!("{label}.conf"));
        std::fs::write(&path, conf).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = keepalived_check(&ns, &path);
        let verdict = judge(conf, &out);
        (out, verdict)
    };

    // Positive control: Neutron's shape, with its own-interface notice.
    let (out, verdict) = check("neutron", NEUTRON_CONF);
    assert!(
        verdict.is_ok(),
        "judge rejected a Neutron-style config:\n{}{}\n{verdict:?}",
        numbered(NEUTRON_CONF),
        show_output(&out)
    );
    let notices = verdict.unwrap();
    assert!(
        notices.iter().any(|n| n.contains("since own interface")),
        "expected keepalived to notice the tracked own interface (is keepalived \
         printing its config-check messages at all?):\n{}",
        show_output(&out)
    );

    // The IPv6 link-local VIP with `scope link` Neutron writes is accepted.
    let ll = NEUTRON_CONF.replace(
        "no_track\n    }",
        "no_track\n        fe80::f816:3eff:fe12:3456/64 dev qr-0a0b0c0d-01 scope link no_track\n    }",
    );
    let (out, verdict) = check("linklocal", &ll);
    assert!(
        verdict.is_ok(),
        "link-local VIP with scope link rejected:\n{}{}\n{verdict:?}",
        numbered(&ll),
        show_output(&out)
    );

    // A declared but unreferenced vrrp_script whose file does not exist
    // (Neutron: health checks on, no gateway route) is accepted.
    let unused = NEUTRON_CONF.replace(
        "vrrp_instance VR_1 {",
        "vrrp_script ha_health_check_1 {\n    script \"/nonexistent/ha_check_script_1.sh\"\n    interval 5\n    fall 2\n    rise 2\n}\n\nvrrp_instance VR_1 {",
    );
    let (out, verdict) = check("unused", &unused);
    assert!(
        verdict.is_ok(),
        "unreferenced missing vrrp_script rejected:\n{}{}\n{verdict:?}",
        numbered(&unused),
        show_output(&out)
    );

    let broken: Vec<(&str, String)> = vec![
        (
            "unknown keyword in vrrp_instance",
            NEUTRON_CONF.replace("    nopreempt\n", "    nopreempt\n    bogus_keyword 1\n"),
        ),
        (
            "unknown keyword in global_defs",
            NEUTRON_CONF.replace("router_id neutron\n", "router_id neutron\n    bogus_global 1\n"),
        ),
        ("priority out of range", NEUTRON_CONF.replace("priority 50", "priority 500")),
        ("advert_int not a number", NEUTRON_CONF.replace("advert_int 2", "advert_int two")),
        ("invalid VIP address", NEUTRON_CONF.replace("10.0.0.1/24", "10.0.0.300/24")),
        ("VIP on a missing interface", NEUTRON_CONF.replace("dev qr-0a0b0c0d-01", "dev qr-missing-99")),
        (
            "missing instance interface",
            NEUTRON_CONF.replace("    interface ha-1a2b3c4d-5e", "    interface ha-missing-99"),
        ),
        (
            "scope on a global IPv6 VIP",
            NEUTRON_CONF.replace(
                "no_track\n    }",
                "no_track\n        2001:db8::1/64 dev qr-0a0b0c0d-01 scope link no_track\n    }",
            ),
        ),
        ("missing closing brace", format!("{NEUTRON_CONF}\n{{")),
        (
            "tracked script missing",
            unused.replace(
                "no_track\n    }\n}",
                "no_track\n    }\n    track_script {\n        ha_health_check_1\n    }\n}",
            ),
        ),
    ];
    for (label, conf) in &broken {
        assert_ne!(conf.as_str(), NEUTRON_CONF, "self-check {label:?} did not change the config");
        let (out, verdict) = check("broken", conf);
        assert!(verdict.is_err(), "judge ACCEPTED a broken config ({label}):\n{}{}", numbered(conf), show_output(&out));
    }

    // A config file that does not exist: keepalived 2.2.7 exits 0 here.
    let out = keepalived_check(&ns, &tmp.join("does-not-exist.conf"));
    assert!(judge(NEUTRON_CONF, &out).is_err(), "judge accepted a missing config file:\n{}", show_output(&out));
}

#[test]
fn keepalived_accepts_every_rendered_scenario() {
    if !common::require_root_and(&["keepalived", "ip"]) {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    scenarios.sort();
    assert!(!scenarios.is_empty(), "no scenarios in {}", dir.display());

    let mut failures: Vec<String> = Vec::new();
    let mut checked = 0usize;
    for scenario in &scenarios {
        let sname = scenario.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(scenario).unwrap();
        let tmp = TempDir::new("ka");
        let state = tmp.join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = tmp.join(&*sname);
        std::fs::write(&copy, scenario_copy(&text, &state)).unwrap();
        // It may hold a VRRP password; keep `render` from warning about that.
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();

        let render = Command::new(env!("CARGO_BIN_EXE_harouterd"))
            .arg("render")
            .arg("-c")
            .arg(&copy)
            .arg("--show-secrets")
            .output()
            .expect("cannot run harouterd");
        let stdout = String::from_utf8_lossy(&render.stdout).into_owned();
        if !render.status.success() {
            failures.push(format!("== {sname}: `harouterd render` failed\n{}", show_output(&render)));
            continue;
        }
        let files = match split_render_output(&stdout) {
            Ok(f) => f,
            Err(e) => {
                failures.push(format!("== {sname}: cannot split render output: {e}\n{stdout}"));
                continue;
            }
        };
        for (path, content) in &files {
            write_rendered(&state, Path::new(path), content);
        }

        let confs: Vec<&(String, String)> = files.iter().filter(|(p, _)| p.ends_with("/keepalived.conf")).collect();
        let monitor_only =
            text.lines().any(|l| l.split('#').next().unwrap_or("").replace(' ', "") == "keepalived=false");
        if confs.is_empty() && !monitor_only {
            failures.push(format!("== {sname}: render produced no keepalived.conf\n{stdout}"));
        }
        for (path, conf) in confs {
            let ns = Netns::new("ka");
            common::add_interfaces(&ns, &conf_interfaces(conf));
            let out = keepalived_check(&ns, Path::new(path));
            checked += 1;
            match judge(conf, &out) {
                Ok(notices) => {
                    eprintln!("{sname}: {path}: accepted");
                    for n in notices {
                        eprintln!("    (harmless) {n}");
                    }
                }
                Err(problems) => failures.push(format!(
                    "== {sname}: keepalived rejected {path}\nproblems:\n    {}\n--- conf ---\n{}{}",
                    problems.join("\n    "),
                    numbered(conf),
                    show_output(&out)
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s) over {} scenario(s), {checked} keepalived.conf(s) checked:\n\n{}",
        failures.len(),
        scenarios.len(),
        failures.join("\n\n")
    );
}
