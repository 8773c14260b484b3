//! Holds conntrackd.conf to Neutron: every router of every scenario in
//! tests/golden/conntrackd/scenarios must render to exactly the bytes
//! Neutron's own `ConntrackdManager.build_config()` wrote for it, and every
//! router Neutron refused (a path over conntrackd's limits) must be refused
//! by our parser too, on its line, naming the same path and limit. The
//! goldens come from tests/golden/conntrackd/neutron_oracle.py (neutron
//! 29.0.0); so does neutron_options.txt, Neutron's default and minimum for
//! each `ha_conntrackd_*` key, which our parser must share.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use harouterd::config::{self, DaemonConfig};
use harouterd::conntrackd::conf;
use harouterd::core::layout::Layout;
use harouterd::keepalived::{self, conf::Secrets};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/conntrackd")
}

fn scenarios() -> Vec<(String, PathBuf, String)> {
    let mut found: Vec<PathBuf> = fs::read_dir(golden_dir().join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    found.sort();
    assert!(found.len() >= 7, "scenarios missing: {found:?}");
    found
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).unwrap();
            (path.file_stem().unwrap().to_string_lossy().into_owned(), path, text)
        })
        .collect()
}

fn golden_names(suffix: &str) -> BTreeSet<String> {
    fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect()
}

/// `[router ID]` header lines of a scenario: (line, ID).
fn router_headers(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| Some((i + 1, l.trim().strip_prefix("[router ")?.strip_suffix(']')?.to_owned())))
        .collect()
}

#[test]
fn every_scenario_matches_neutron_byte_for_byte() {
    let dir = golden_dir();
    let mut used = BTreeSet::new();
    let mut compared = 0;
    for (name, path, text) in scenarios() {
        let parsed = match config::parse(&path, &text) {
            Ok(parsed) => parsed.config,
            Err(_) => continue, // refused scenarios: next test
        };
        let layout = Layout::new(&parsed.daemon.ha_confs_path);
        for router in &parsed.routers {
            let golden = format!("{name}.{}.conntrackd.conf", router.id);
            assert!(!dir.join(format!("{name}.{}.error", router.id)).exists(), "Neutron refused {golden}, we did not");
            let files = keepalived::router_files(&parsed.daemon, router, &layout, Secrets::Show);
            let ours: Vec<_> = files.iter().filter(|f| f.path.ends_with(conf::CONF_FILE)).collect();
            match fs::read_to_string(dir.join(&golden)) {
                Ok(expected) => {
                    assert_eq!(ours.len(), 1, "{golden}: we render {} conntrackd.conf", ours.len());
                    assert_eq!(ours[0].path, layout.router_dir(&router.id).join("conntrackd.conf"), "{golden}");
                    assert_eq!(ours[0].mode, 0o600, "{golden}");
                    assert_eq!(
                        ours[0].contents, expected,
                        "{golden} differs\n--- ours ---\n{}\n--- neutron ---\n{expected}",
                        ours[0].contents
                    );
                    used.insert(golden);
                    compared += 1;
                }
                Err(_) => assert!(ours.is_empty(), "{golden}: Neutron's oracle wrote none, we render one"),
            }
        }
    }
    assert!(compared >= 7, "only {compared} files compared");
    let orphans: Vec<_> = golden_names(".conntrackd.conf").into_iter().filter(|n| !used.contains(n)).collect();
    assert!(orphans.is_empty(), "golden files no scenario produced: {orphans:?}");
}

/// Neutron's message: `Configuration file path "PATH" exceeds maximum
/// length of N characters.` -> (PATH, N).
fn neutron_refusal(message: &str) -> (String, usize) {
    let rest = message.strip_prefix("Configuration file path \"").unwrap_or_else(|| panic!("{message}"));
    let (path, rest) = rest.split_once('"').unwrap();
    let limit = rest.strip_prefix(" exceeds maximum length of ").and_then(|r| r.strip_suffix(" characters.")).unwrap();
    (path.to_owned(), limit.parse().unwrap())
}

#[test]
fn routers_neutron_refuses_are_refused_on_their_line() {
    let mut used = BTreeSet::new();
    for (name, path, text) in scenarios() {
        let headers = router_headers(&text);
        let refused: Vec<(usize, String, String)> = headers
            .iter()
            .filter_map(|(line, id)| {
                let golden = format!("{name}.{id}.error");
                let message = fs::read_to_string(golden_dir().join(&golden)).ok()?;
                Some((*line, golden, message))
            })
            .collect();
        let errors = match config::parse(&path, &text) {
            Ok(_) => {
                assert!(refused.is_empty(), "{name}: we accept what Neutron refused: {refused:?}");
                continue;
            }
            Err(errors) => errors.0,
        };
        assert_eq!(errors.len(), refused.len(), "{name}: {errors:?} vs Neutron's {refused:?}");
        for (line, golden, message) in refused {
            let (neutron_path, limit) = neutron_refusal(&message);
            let ours = errors.iter().find(|e| e.line == Some(line)).unwrap_or_else(|| panic!("{golden}: {errors:?}"));
            let text = ours.to_string();
            assert!(text.starts_with(&format!("{}:{line}: ", path.display())), "{text}");
            assert!(text.contains(&format!(" {neutron_path} is {} bytes", neutron_path.len())), "{golden}: {text}");
            assert!(text.contains(&format!("over conntrackd's limit of {limit}")), "{golden}: {text}");
            used.insert(golden);
        }
    }
    assert!(used.len() >= 2, "refusals covered: {used:?}");
    let orphans: Vec<_> = golden_names(".error").into_iter().filter(|n| !used.contains(n)).collect();
    assert!(orphans.is_empty(), ".error files no scenario produced: {orphans:?}");
}

/// Our value of a Neutron option, as Neutron prints its default.
fn our_value(daemon: &DaemonConfig, name: &str) -> String {
    let o = &daemon.conntrackd;
    match name {
        "ha_conntrackd_enabled" => if daemon.conntrackd_enabled { "True" } else { "False" }.to_owned(),
        "ha_conntrackd_hashsize" => o.hashsize.to_string(),
        "ha_conntrackd_hashlimit" => o.hashlimit.to_string(),
        "ha_conntrackd_unix_backlog" => o.unix_backlog.to_string(),
        "ha_conntrackd_socketbuffersize" => o.socket_buffer_size.to_string(),
        "ha_conntrackd_socketbuffersize_max_grown" => o.socket_buffer_size_max_grown.to_string(),
        "ha_conntrackd_ipv4_mcast_addr" => o.ipv4_mcast_addr.to_string(),
        "ha_conntrackd_group" => o.group.to_string(),
        "ha_conntrackd_sndsocketbuffer" => o.snd_socket_buffer.to_string(),
        "ha_conntrackd_rcvsocketbuffer" => o.rcv_socket_buffer.to_string(),
        other => panic!("Neutron has an option harouterd does not know: {other}"),
    }
}

#[test]
fn defaults_and_minimums_are_neutrons() {
    let table = fs::read_to_string(golden_dir().join("neutron_options.txt")).unwrap();
    let path = Path::new("/x.conf");
    let defaults = config::parse(path, "").unwrap().config.daemon;
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 10, "{table}");
    for row in rows {
        let [name, default, min] = row[..] else { panic!("bad row {row:?}") };
        assert_eq!(our_value(&defaults, name), default, "{name}");
        // The default, given explicitly, is accepted and kept.
        let value = if default == "False" { "false" } else { default };
        let given = config::parse(path, &format!("[daemon]\n{name} = {value}\n")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(our_value(&given.config.daemon, name), default, "{name}");
        if min == "-" {
            continue;
        }
        let min: i64 = min.parse().unwrap();
        let at_min = config::parse(path, &format!("[daemon]\n{name} = {min}\n")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(our_value(&at_min.config.daemon, name), min.to_string(), "{name}");
        let below = config::parse(path, &format!("[daemon]\n{name} = {}\n", min - 1)).unwrap_err();
        assert_eq!(below.0.len(), 1, "{name}: {below}");
        assert!(below.to_string().starts_with(&format!("/x.conf:2: {name}: ")), "{below}");
    }
}

#[test]
fn conntrackd_conf_follows_the_keepalived_files() {
    let text = "[daemon]\nha_conntrackd_enabled = true\nha_vrrp_health_check_interval = 5\n\
                [router r]\nha_interface = ha-r\nvrid = 3\nha_address = 169.254.192.3\n\
                route = 0.0.0.0/0 via 10.0.0.1 dev qg-r\n";
    let config = config::parse(Path::new("/x.conf"), text).unwrap().config;
    let layout = Layout::new(&config.daemon.ha_confs_path);
    let files = keepalived::router_files(&config.daemon, &config.routers[0], &layout, Secrets::Mask);
    let names: Vec<_> = files.iter().map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["keepalived.conf", "ha_check_script_3.sh", "conntrackd.conf"]);
    assert_eq!(files.iter().map(|f| f.mode).collect::<Vec<_>>(), [0o600, 0o520, 0o600]);
}
