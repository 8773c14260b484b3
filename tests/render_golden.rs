//! Holds the renderer to Neutron: every router of every scenario in
//! tests/scenarios must render to exactly the bytes Neutron's own
//! `KeepalivedConf` wrote for it (tests/golden, made by
//! tests/golden/neutron_oracle.py), once our additions are taken out: the
//! `notify_fifo` line, and the unicast options Neutron does not have.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use harouterd::config::{self, Config};
use harouterd::core::layout::Layout;
use harouterd::keepalived::{self, conf::Secrets};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scenarios() -> Vec<(String, Config)> {
    let mut found: Vec<_> = fs::read_dir(repo().join("tests/scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    found.sort();
    assert!(found.len() >= 10, "scenarios missing: {found:?}");
    found
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).unwrap();
            let parsed = config::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
            (path.file_stem().unwrap().to_string_lossy().into_owned(), parsed.config)
        })
        .collect()
}

/// Our output minus what Neutron does not write.
fn as_neutron_would(ours: &str, notify_fifo: &Path) -> String {
    let fifo_line = format!("    notify_fifo {}", notify_fifo.display());
    assert_eq!(ours.lines().filter(|l| *l == fifo_line).count(), 1, "notify_fifo line missing:\n{ours}");
    let mut kept = Vec::new();
    let mut in_peers = false;
    for line in ours.split('\n') {
        if line == fifo_line || line.starts_with("    unicast_src_ip ") {
            continue;
        }
        if line == "    unicast_peer {" {
            in_peers = true;
            continue;
        }
        if in_peers {
            in_peers = line != "    }";
            continue;
        }
        kept.push(line);
    }
    kept.join("\n")
}

#[test]
fn every_scenario_matches_neutron_byte_for_byte() {
    let golden_dir = repo().join("tests/golden");
    let mut used = BTreeSet::new();
    for (name, config) in scenarios() {
        let layout = Layout::new(&config.daemon.ha_confs_path);
        for router in &config.routers {
            let files = keepalived::router_files(&config.daemon, router, &layout, Secrets::Show);
            let conf_golden = format!("{name}.{}.keepalived.conf", router.id);
            let expected =
                fs::read_to_string(golden_dir.join(&conf_golden)).unwrap_or_else(|e| panic!("{conf_golden}: {e}"));
            let ours = as_neutron_would(&files[0].contents, &layout.notify_fifo(&router.id));
            assert_eq!(ours, expected, "{conf_golden} differs\n--- ours ---\n{ours}\n--- neutron ---\n{expected}");
            used.insert(conf_golden);

            let script_golden = format!("{name}.{}.check.sh", router.id);
            match (files.get(1), fs::read_to_string(golden_dir.join(&script_golden)).ok()) {
                (Some(ours), Some(expected)) => {
                    assert_eq!(ours.contents, expected, "{script_golden} differs");
                    assert_eq!(ours.path, layout.check_script(&router.id, router.vrid));
                    used.insert(script_golden);
                }
                (None, None) => {}
                (ours, expected) => {
                    panic!("{script_golden}: ours {:?}, Neutron's {:?}", ours.is_some(), expected.is_some())
                }
            }
        }
    }
    let all: BTreeSet<String> = fs::read_dir(&golden_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".keepalived.conf") || n.ends_with(".check.sh"))
        .collect();
    let orphans: Vec<_> = all.difference(&used).collect();
    assert!(orphans.is_empty(), "golden files no scenario produced: {orphans:?}");
}

fn render_router(scenario: &str, id: &str, secrets: Secrets) -> String {
    let (_, config) = scenarios().into_iter().find(|(n, _)| n == scenario).unwrap();
    let router = config.router(id).unwrap();
    keepalived::conf::render(&config.daemon, router, &Layout::new(&config.daemon.ha_confs_path), secrets)
}

#[test]
fn unicast_options_follow_mcast_src_ip_position() {
    let text = render_router("unicast", "uni", Secrets::Show);
    let expected = "\
        auth_pass unipass
    }
    unicast_src_ip 169.254.192.1
    unicast_peer {
        169.254.192.2
        169.254.192.3
    }
    track_interface {";
    assert!(text.contains(expected), "{text}");
}

#[test]
fn notify_fifo_is_in_global_defs() {
    let text = render_router("no_vips", "bare", Secrets::Show);
    assert!(text.starts_with(
        "global_defs {\n    notification_email_from neutron@openstack.local\n    router_id neutron\n    \
         notify_fifo /var/lib/harouterd/ha_confs/bare/notify.fifo\n}\nvrrp_instance VR_12 {\n"
    ));
}

#[test]
fn passwords_are_masked_unless_shown() {
    let masked = render_router("auth_ah", "r-ah", Secrets::Mask);
    assert!(!masked.contains("ahsecret"), "{masked}");
    assert!(masked.contains("        auth_type AH\n        auth_pass ********\n"));
    assert!(render_router("auth_ah", "r-ah", Secrets::Show).contains("auth_pass ahsecret"));
}

#[test]
fn monitor_only_routers_get_no_files() {
    let text = "[router m]\nha_interface = ha-1\nvrid = 1\nkeepalived = false\nhealth_check_interval = 5\n\
                route = 0.0.0.0/0 via 10.0.0.1 dev ha-1\n";
    let config = config::parse(Path::new("/x"), text).unwrap().config;
    let layout = Layout::new(&config.daemon.ha_confs_path);
    assert!(keepalived::router_files(&config.daemon, &config.routers[0], &layout, Secrets::Show).is_empty());
}

#[test]
fn check_script_without_vips_has_an_empty_grep_line() {
    let text = "[router c]\nha_interface = ha-1\nvrid = 1\nhealth_check_interval = 5\n\
                route = 0.0.0.0/0 via 10.0.0.1 dev ha-1\n";
    let config = config::parse(Path::new("/x"), text).unwrap().config;
    // What Neutron writes in this case (checked with the oracle).
    assert_eq!(
        keepalived::health_check::script(&config.routers[0]),
        "#!/bin/bash -eu\n\nping -c 1 -w 1 10.0.0.1 1>/dev/null || exit 1"
    );
}
