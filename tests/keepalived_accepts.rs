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

/// Addresses (`ADDR/PREFIX`, as written) that a `virtual_ipaddress*` line
/// gives `scope link`.
fn link_scoped(conf: &str) -> Vec<String> {
    conf.lines()
        .filter_map(|line| {
            let toks: Vec<&str> = line.split_whitespace().collect();
            let scoped = toks.windows(2).any(|w| w == ["scope", "link"]);
            (scoped && toks.get(1) == Some(&"dev")).then(|| toks[0].to_string())
        })
        .collect()
}

/// What a config says about itself that the judge needs.
struct ConfFacts {
    /// `vrrp_instance NAME` -> its `interface`.
    instances: BTreeMap<String, String>,
    /// Scripts referenced from a `track_script` block.
    tracked_scripts: Vec<String>,
    /// Addresses written with `scope link`.
    link_scoped: Vec<String>,
}

impl ConfFacts {
    fn of(conf: &str) -> ConfFacts {
        ConfFacts {
            instances: instance_interfaces(conf),
            tracked_scripts: tracked_scripts(conf),
            link_scoped: link_scoped(conf),
        }
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
    // fe80::/10 address (link scope is implied). For any other IPv6 address,
    // or another scope, the dropped scope changes the meaning: an error.
    if let Some(rest) = msg.strip_prefix("Cannot specify scope for IPv6 addresses (")
        && let Some(addr) = rest.strip_suffix(") - ignoring scope")
    {
        return is_ipv6_link_local(addr) && facts.link_scoped.iter().any(|a| a == addr);
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
        (
            "scope host on a link-local IPv6 VIP",
            NEUTRON_CONF.replace(
                "no_track\n    }",
                "no_track\n        fe80::f816:3eff:fe12:3456/64 dev qr-0a0b0c0d-01 scope host no_track\n    }",
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

// ---------------------------------------------------------------------------
// What `check` refuses, and what it accepts at the edges (issue 14.6)
//
// Each refusal is paired with a config `check` accepts and the text edits
// that turn its keepalived.conf into what the refused config would have
// rendered: keepalived gets exactly what harouterd would have written.

/// The router every case below extends.
const DIAG_ROUTER: &str = "[router r1]\nha_interface = ha-1\nvrid = 1\nadvert_int = 1\n";

/// A namespace holding the interfaces (and the addresses next hops need)
/// that the cases name.
fn diagnostics_namespace() -> Netns {
    let ns = Netns::new("kad");
    common::add_interfaces(&ns, &["ha-1", "qr-1", "qg-1"]);
    ns.ip(&["addr", "add", "169.254.192.1/18", "dev", "ha-1"]);
    ns.ip(&["addr", "add", "10.0.0.2/24", "dev", "qr-1"]);
    ns.ip(&["-6", "addr", "add", "2001:db8::2/64", "dev", "qg-1", "nodad"]);
    ns
}

/// Writes `[daemon]` + router r1 with `lines` and runs `harouterd ARGS -c
/// IT ...`.
fn harouterd_on(dir: &TempDir, lines: &str, args: &[&str]) -> Output {
    let path = dir.join("harouterd.conf");
    let text = format!("[daemon]\nstate_path = {}\n\n{DIAG_ROUTER}{lines}", dir.join("state").display());
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    Command::new(env!("CARGO_BIN_EXE_harouterd"))
        .arg(args[0])
        .arg("-c")
        .arg(&path)
        .args(&args[1..])
        .output()
        .expect("cannot run harouterd")
}

/// r1's keepalived.conf for `lines`, which `check` must accept.
fn rendered(dir: &TempDir, lines: &str) -> String {
    let check = harouterd_on(dir, lines, &["check"]);
    assert_eq!(check.status.code(), Some(0), "check refused:\n{lines}{}", show_output(&check));
    let out = harouterd_on(dir, lines, &["render", "--router", "r1", "--show-secrets"]);
    assert!(out.status.success(), "render failed:\n{lines}{}", show_output(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// `conf` with each `(from, to)` applied; each `from` must occur once.
fn edited(conf: &str, edits: &[(&str, &str)]) -> String {
    let mut out = conf.to_owned();
    for (from, to) in edits {
        assert_eq!(out.matches(from).count(), 1, "{from:?} is not in the rendered file exactly once:\n{out}");
        out = out.replacen(from, to, 1);
    }
    out
}

/// A config `check` refuses, and how keepalived.conf would have looked.
struct Refused {
    /// What the operator wrote (router r1's lines); its last line is the
    /// one refused.
    bad: &'static str,
    /// The nearest config `check` accepts ...
    valid: &'static str,
    /// ... and the edits that make its keepalived.conf `bad`'s.
    edits: &'static [(&'static str, &'static str)],
    /// What `check` says about `bad` (part of its message).
    message: &'static str,
}

/// `check` refuses `case.bad`, naming the line and what is wrong.
fn assert_check_refuses(dir: &TempDir, case: &Refused) {
    let out = harouterd_on(dir, case.bad, &["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "check accepted:\n{}{}", case.bad, show_output(&out));
    // `bad` starts on line 8 of the file, after [daemon] and DIAG_ROUTER.
    let conf = dir.join("harouterd.conf");
    let named = [8, 9].map(|line| format!("{}:{line}: router 'r1': {}", conf.display(), case.message));
    assert!(
        stderr.lines().any(|l| named.iter().any(|n| l.starts_with(n.as_str()))),
        "check's message for\n{}is not {:?}:\n{stderr}",
        case.bad,
        named[0]
    );
}

/// keepalived -t itself refuses (or ignores part of) each of these.
const REFUSED_BY_KEEPALIVED_T: &[Refused] = &[
    Refused {
        bad: "mcast_src_ip = 2001:db8::2\n",
        valid: "mcast_src_ip = 169.254.192.5\n",
        edits: &[("mcast_src_ip 169.254.192.5", "mcast_src_ip 2001:db8::2")],
        message: "mcast_src_ip: 2001:db8::2 is not of the same family as the VRRP instance",
    },
    Refused {
        bad: "unicast_src_ip = 2001:db8::2\nunicast_peer = 2001:db8::3\n",
        valid: "unicast_src_ip = 169.254.192.1\nunicast_peer = 169.254.192.3\n",
        edits: &[("unicast_src_ip 169.254.192.1", "unicast_src_ip 2001:db8::2"), ("169.254.192.3\n", "2001:db8::3\n")],
        message: "unicast_src_ip: 2001:db8::2 is not of the same family as the VRRP instance",
    },
    Refused {
        bad: "unicast_src_ip = 169.254.192.1\nunicast_peer = 2001:db8::3\n",
        valid: "unicast_src_ip = 169.254.192.1\nunicast_peer = 169.254.192.3\n",
        edits: &[("169.254.192.3\n", "2001:db8::3\n")],
        message: "unicast_peer: 2001:db8::3 is not of the same family as the VRRP instance",
    },
    Refused {
        bad: "unicast_peer = 2001:db8::3\n",
        valid: "unicast_peer = 169.254.192.3\n",
        edits: &[("169.254.192.3\n", "2001:db8::3\n")],
        message: "unicast_peer: 2001:db8::3 is not of the same family as the VRRP instance",
    },
    Refused {
        bad: "unicast_src_ip = 169.254.192.1\n",
        valid: "unicast_src_ip = 169.254.192.1\nunicast_peer = 169.254.192.3\n",
        edits: &[("    unicast_peer {\n        169.254.192.3\n    }\n", "")],
        message: "unicast_src_ip: 169.254.192.1 is set but no unicast_peer is",
    },
    Refused {
        bad: "vip = 2001:db8::1/64 dev qg-1 scope link\n",
        valid: "vip = 2001:db8::1/64 dev qg-1\n",
        edits: &[("2001:db8::1/64 dev qg-1 no_track", "2001:db8::1/64 dev qg-1 scope link no_track")],
        message: "vip: scope link on the IPv6 address 2001:db8::1/64",
    },
    Refused {
        bad: "vip = fe80::1/64 dev qg-1 scope host\n",
        valid: "vip = fe80::1/64 dev qg-1 scope link\n",
        edits: &[("scope link no_track", "scope host no_track")],
        message: "vip: scope host on the IPv6 address fe80::1/64",
    },
    Refused {
        bad: "route = ::/0 via 10.0.0.254 dev qg-1\n",
        valid: "route = ::/0 via fe80::1 dev qg-1\n",
        edits: &[("::/0 via fe80::1", "::/0 via 10.0.0.254")],
        message: "route: next hop 10.0.0.254 is not of the same family as ::/0",
    },
    Refused {
        bad: "route = 0.0.0.0/0 via fe80::1 dev qg-1\n",
        valid: "route = 0.0.0.0/0 via 10.0.0.254 dev qg-1\n",
        edits: &[("0.0.0.0/0 via 10.0.0.254", "0.0.0.0/0 via fe80::1")],
        message: "route: next hop fe80::1 is not of the same family as 0.0.0.0/0",
    },
];

/// Every refusal of `check` that keepalived -t agrees with: `check`
/// refuses the config, keepalived -t accepts the nearest valid one and
/// refuses what the refused one would have rendered.
#[test]
fn keepalived_t_refuses_what_check_refuses() {
    if !common::require_root_and(&["keepalived", "ip"]) {
        return;
    }
    let ns = diagnostics_namespace();
    let mut failures = Vec::new();
    for (i, case) in REFUSED_BY_KEEPALIVED_T.iter().enumerate() {
        let dir = TempDir::new("kar");
        assert_check_refuses(&dir, case);
        let valid = rendered(&dir, case.valid);
        let bad = edited(&valid, case.edits);
        for (conf, should_pass) in [(&valid, true), (&bad, false)] {
            let path = dir.join(format!("{i}.{should_pass}.conf"));
            std::fs::write(&path, conf).unwrap();
            let out = keepalived_check(&ns, &path);
            let verdict = judge(conf, &out);
            if verdict.is_ok() != should_pass {
                failures.push(format!(
                    "== {} keepalived -t {} (check: {:?})\n{}{}",
                    if should_pass { "valid" } else { "refused" },
                    if should_pass { "REJECTED it" } else { "ACCEPTED it" },
                    case.bad,
                    numbered(conf),
                    show_output(&out)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// What `check` accepts at the edges (scopes, families, link-local next
/// hops, a peer that is this node): keepalived -t accepts each, and the
/// kernel installs each (see `keepalived_fails_at_run_time_on_what_check_refuses`).
const ACCEPTED_VIPS: &str = "vip = 10.0.5.1/24 dev qr-1 scope nowhere\nvip = 10.0.6.1/24 dev qr-1 scope host\n\
                             vip = 10.0.7.1/24 dev qr-1 scope link\nvip = 10.0.8.1/24 dev qr-1 scope site\n\
                             vip = 10.0.9.1/24 dev qr-1 scope global\nvip = 10.0.9.2/24 dev qr-1\n\
                             vip = 10.0.9.3/25 dev qr-1 scope link\nvip = fe80::5/64 dev qg-1\n\
                             vip = fe80::6/64 dev qg-1 scope link\nvip = 2001:db8:20::1/64 dev qg-1 scope global\n";
const ACCEPTED_ROUTES: &str = "route = 10.4.0.0/24 via 10.0.0.254 scope site\nroute = 10.4.1.0/24 dev qr-1 scope host\n\
                               route = 10.4.2.0/24 via 10.0.0.254 dev qr-1 scope global\n\
                               route = 10.0.0.9 dev qr-1 scope link\nroute = ::/0 via fe80::1 dev qg-1\n\
                               route = 2001:db8:21::/64 via 2001:db8::1 scope link\n";
const ACCEPTED_OTHERS: &[&str] = &[
    "unicast_src_ip = 169.254.192.1\nunicast_peer = 169.254.192.2\nunicast_peer = 169.254.192.3\n",
    // A warning from check, no complaint from keepalived.
    "unicast_src_ip = 169.254.192.1\nunicast_peer = 169.254.192.1\n",
    "mcast_src_ip = 169.254.192.1\nunicast_src_ip = 169.254.192.1\nunicast_peer = 169.254.192.2\n",
    "unicast_peer = 169.254.192.2\n",
    "mcast_src_ip = 169.254.192.1\n",
];

#[test]
fn keepalived_t_accepts_what_check_accepts_at_the_edges() {
    if !common::require_root_and(&["keepalived", "ip"]) {
        return;
    }
    let ns = diagnostics_namespace();
    let lines = ACCEPTED_VIPS.lines().chain(ACCEPTED_ROUTES.lines()).map(|l| format!("{l}\n"));
    let cases: Vec<String> = lines.chain(ACCEPTED_OTHERS.iter().map(|s| s.to_string())).collect();
    let mut failures = Vec::new();
    for (i, lines) in cases.iter().enumerate() {
        let dir = TempDir::new("kaa");
        let conf = rendered(&dir, lines);
        let path = dir.join(format!("{i}.conf"));
        std::fs::write(&path, &conf).unwrap();
        let out = keepalived_check(&ns, &path);
        if let Err(problems) = judge(&conf, &out) {
            failures.push(format!("== {lines}problems: {problems:?}\n{}{}", numbered(&conf), show_output(&out)));
        }
    }
    assert!(failures.is_empty(), "keepalived -t rejected what check accepts:\n{}", failures.join("\n\n"));
}

/// keepalived -t accepts these; the kernel refuses them when keepalived
/// adds them on becoming primary, and keepalived runs on without them.
const REFUSED_BY_THE_KERNEL: &[Refused] = &[
    Refused {
        bad: "route = 10.3.0.0/24 via 10.0.0.254 scope host\n",
        valid: "route = 10.3.0.0/24 via 10.0.0.254\n",
        edits: &[("10.3.0.0/24 via 10.0.0.254 no_track", "10.3.0.0/24 via 10.0.0.254 scope host no_track")],
        message: "route: a route via a next hop (10.0.0.254) cannot have scope host",
    },
    Refused {
        bad: "route = 10.3.1.0/24 via 10.0.0.254 dev qr-1 scope link\n",
        valid: "route = 10.3.1.0/24 via 10.0.0.254 dev qr-1\n",
        edits: &[(
            "10.3.1.0/24 via 10.0.0.254 dev qr-1 no_track",
            "10.3.1.0/24 via 10.0.0.254 dev qr-1 scope link no_track",
        )],
        message: "route: a route via a next hop (10.0.0.254) cannot have scope link",
    },
    Refused {
        bad: "route = 10.3.2.0/24 dev qr-1 scope nowhere\n",
        valid: "route = 10.3.2.0/24 dev qr-1\n",
        edits: &[("10.3.2.0/24 dev qr-1 no_track", "10.3.2.0/24 dev qr-1 scope nowhere no_track")],
        message: "route: scope nowhere: the kernel refuses it on a route",
    },
    Refused {
        bad: "route = 2001:db8:30::/64 via fe80::1\n",
        valid: "route = 2001:db8:30::/64 via fe80::1 dev qg-1\n",
        edits: &[("2001:db8:30::/64 via fe80::1 dev qg-1 no_track", "2001:db8:30::/64 via fe80::1 no_track")],
        message: "route: next hop fe80::1 is link-local: it needs 'dev IFACE'",
    },
    Refused {
        bad: "route = 10.3.3.0/24 via 224.0.0.9 dev qr-1\n",
        valid: "route = 10.3.3.0/24 via 10.0.0.254 dev qr-1\n",
        edits: &[("10.3.3.0/24 via 10.0.0.254", "10.3.3.0/24 via 224.0.0.9")],
        message: "route: next hop 224.0.0.9 is not a unicast address",
    },
    Refused {
        bad: "route = 10.3.4.0/24 via 255.255.255.255 dev qr-1\n",
        valid: "route = 10.3.4.0/24 via 10.0.0.254 dev qr-1\n",
        edits: &[("10.3.4.0/24 via 10.0.0.254", "10.3.4.0/24 via 255.255.255.255")],
        message: "route: next hop 255.255.255.255 is not a unicast address",
    },
    Refused {
        bad: "route = 2001:db8:32::/64 via ff02::1 dev qg-1\n",
        valid: "route = 2001:db8:32::/64 via 2001:db8::1 dev qg-1\n",
        edits: &[("2001:db8:32::/64 via 2001:db8::1", "2001:db8:32::/64 via ff02::1")],
        message: "route: next hop ff02::1 is not a unicast address",
    },
    Refused {
        bad: "route = 2001:db8:33::/64 via :: dev qg-1\n",
        valid: "route = 2001:db8:33::/64 via 2001:db8::1 dev qg-1\n",
        edits: &[("2001:db8:33::/64 via 2001:db8::1", "2001:db8:33::/64 via ::")],
        message: "route: next hop :: is not a unicast address",
    },
    Refused {
        bad: "vip = ff05::5/64 dev qg-1\n",
        valid: "vip = 2001:db8:40::5/64 dev qg-1\n",
        edits: &[("2001:db8:40::5/64 dev qg-1", "ff05::5/64 dev qg-1")],
        message: "vip: ff05::5/64 is not a unicast address",
    },
    Refused {
        bad: "vip = 10.0.10.1/24 dev qr-1\nvip = 10.0.10.2/24 dev qr-1 scope link\n",
        valid: "vip = 10.0.10.1/24 dev qr-1\nvip = 10.0.10.2/24 dev qr-1\n",
        edits: &[("10.0.10.2/24 dev qr-1 no_track", "10.0.10.2/24 dev qr-1 scope link no_track")],
        message: "vip: 10.0.10.2/24 on qr-1 has scope link, but 10.0.10.1/24 (line 8), in the same subnet",
    },
    Refused {
        bad: "vip = ::/64 dev qg-1\n",
        valid: "vip = 2001:db8:41::1/64 dev qg-1\n",
        edits: &[("2001:db8:41::1/64 dev qg-1", "::/64 dev qg-1")],
        message: "vip: ::/64 is not a unicast address",
    },
];

/// The route rendered last: once it is in the kernel, keepalived has tried
/// every VIP and route before it.
const LAST_ROUTE: &str = "route = 10.9.99.0/24 dev qr-1\n";

/// A keepalived running in the foreground in a namespace, its output in a
/// file; stopped (SIGTERM, then SIGKILL with its VRRP child) when dropped.
struct LiveKeepalived {
    child: std::process::Child,
    log: PathBuf,
    vrrp_pidfile: PathBuf,
}

impl LiveKeepalived {
    fn start(ns: &Netns, dir: &TempDir, conf: &str) -> LiveKeepalived {
        let path = dir.join("live.conf");
        std::fs::write(&path, conf).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let log = dir.join("live.log");
        let vrrp_pidfile = dir.join("live.vrrp.pid");
        let child = Command::new(common::tool("ip"))
            .args(["netns", "exec", ns.name()])
            .arg(common::tool("keepalived"))
            .args(["-n", "-l", "-D", "-f"])
            .arg(&path)
            .arg("-p")
            .arg(dir.join("live.pid"))
            .arg("-r")
            .arg(&vrrp_pidfile)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("live.stderr")).unwrap())
            .spawn()
            .expect("cannot start keepalived");
        LiveKeepalived { child, log, vrrp_pidfile }
    }

    fn output(&self) -> String {
        let err = self.log.with_file_name("live.stderr");
        format!(
            "{}{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(err).unwrap_or_default()
        )
    }
}

impl Drop for LiveKeepalived {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child, not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let stopped = common::lab::wait_until(std::time::Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        if stopped.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            if let Some(vrrp) = std::fs::read_to_string(&self.vrrp_pidfile).ok().and_then(|p| p.trim().parse().ok()) {
                // SAFETY: kill(2); our keepalived's VRRP child, orphaned.
                unsafe { libc::kill(vrrp, libc::SIGKILL) };
            }
        }
    }
}

/// `ip -n NS [-6] route show exact DEST` is not empty.
fn route_installed(ns: &Netns, dest: &str) -> bool {
    let family = if dest.contains(':') { "-6" } else { "-4" };
    !ns.ip(&[family, "route", "show", "exact", dest]).stdout.is_empty()
}

fn address_installed(ns: &Netns, cidr: &str) -> bool {
    String::from_utf8_lossy(&ns.ip(&["-o", "addr", "show"]).stdout).contains(&format!(" {cidr} "))
}

/// What the lines of a harouterd config install: (is a route, dest or CIDR).
fn installs(lines: &str) -> Vec<(bool, String)> {
    lines
        .lines()
        .filter_map(|l| {
            let (key, value) = l.split_once(" = ")?;
            let first = value.split_whitespace().next()?.to_string();
            match key {
                "route" => Some((true, first)),
                "vip" => Some((false, first)),
                _ => None,
            }
        })
        .collect()
}

/// The kernel refusals: keepalived -t says nothing about them, so `check`
/// is the only gate before a failover. Two keepalived run side by side,
/// each alone in a namespace so each becomes primary: one on the valid
/// configs (everything installed, no netlink error), one on what the
/// refused configs would have rendered (one netlink error each, nothing of
/// theirs installed, everything else installed).
#[test]
fn keepalived_fails_at_run_time_on_what_check_refuses() {
    if !common::require_root_and(&["keepalived", "ip"]) {
        return;
    }
    let dir = TempDir::new("kal");
    for case in REFUSED_BY_THE_KERNEL {
        assert_check_refuses(&dir, case);
    }
    let valid_lines: String = REFUSED_BY_THE_KERNEL.iter().map(|c| c.valid).collect();
    let lines = format!("{ACCEPTED_VIPS}{valid_lines}{ACCEPTED_ROUTES}{LAST_ROUTE}");
    // No notify FIFO: nothing reads it here.
    let valid: String =
        rendered(&dir, &lines).lines().filter(|l| !l.contains("notify_fifo")).map(|l| format!("{l}\n")).collect();
    let edits: Vec<(&str, &str)> = REFUSED_BY_THE_KERNEL.iter().flat_map(|c| c.edits.iter().copied()).collect();
    let bad = edited(&valid, &edits);

    let (ns_valid, ns_bad) = (diagnostics_namespace(), diagnostics_namespace());
    let (dir_valid, dir_bad) = (TempDir::new("kalv"), TempDir::new("kalb"));
    let live_valid = LiveKeepalived::start(&ns_valid, &dir_valid, &valid);
    let live_bad = LiveKeepalived::start(&ns_bad, &dir_bad, &bad);
    for (ns, live) in [(&ns_valid, &live_valid), (&ns_bad, &live_bad)] {
        let last = installs(LAST_ROUTE)[0].1.clone();
        assert!(
            common::lab::wait_until(std::time::Duration::from_secs(30), || route_installed(ns, &last)).is_some(),
            "keepalived never became primary and added {last}:\n{}",
            live.output()
        );
    }
    let netlink_errors = |live: &LiveKeepalived| live.output().lines().filter(|l| l.contains("Netlink: error")).count();

    // The last line of each `valid` is the one edited into the refused one.
    let last = |lines: &str| installs(lines).pop().expect("a vip or route line");
    let replaced: Vec<String> = REFUSED_BY_THE_KERNEL.iter().map(|c| last(c.valid).1).collect();
    let mut failures = Vec::new();
    for (is_route, what) in installs(&lines) {
        let installed = |ns| if is_route { route_installed(ns, &what) } else { address_installed(ns, &what) };
        if !installed(&ns_valid) {
            failures.push(format!("valid: {what} not installed"));
        }
        if !replaced.contains(&what) && !installed(&ns_bad) {
            failures.push(format!("refused configs: {what}, which check accepts, not installed"));
        }
    }
    for case in REFUSED_BY_THE_KERNEL {
        let (is_route, what) = last(case.bad);
        let installed = if is_route { route_installed(&ns_bad, &what) } else { address_installed(&ns_bad, &what) };
        if installed {
            failures.push(format!("the kernel took {}", case.bad.trim()));
        }
    }
    if netlink_errors(&live_valid) != 0 {
        failures.push(format!("keepalived on the valid configs:\n{}", live_valid.output()));
    }
    if netlink_errors(&live_bad) != REFUSED_BY_THE_KERNEL.len() {
        failures.push(format!(
            "expected {} netlink errors from keepalived on the refused configs:\n{}",
            REFUSED_BY_THE_KERNEL.len(),
            live_bad.output()
        ));
    }
    assert!(failures.is_empty(), "{}\n--- refused configs ---\n{}", failures.join("\n"), numbered(&bad));
}
