//! The fuzz targets' invariants (fuzz/checks/, included by path) run by
//! `cargo test` on every committed seed and every input that once crashed a
//! target (fuzz/regressions/TARGET/, when there is one), plus the minimal
//! form of each finding with the exact verdict it must get now. The input
//! counts asserted below catch a seed directory gone missing.

use std::path::{Path, PathBuf};

#[path = "../fuzz/checks/http_request.rs"]
mod http_checks;

#[path = "../fuzz/checks/config_parse.rs"]
mod config_checks;

use harouterd::config;

fn files(dirs: &[&str], ext: Option<&str>) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() && ext.is_none_or(|ext| path.extension().is_some_and(|e| e == ext)) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn http_seeds_and_regressions_hold_the_invariants() {
    let inputs = files(&["fuzz/seeds/http_request", "fuzz/regressions/http_request"], None);
    assert!(inputs.len() >= 10, "seeds missing: {inputs:?}");
    for path in inputs {
        let data = std::fs::read(&path).unwrap();
        // Many cut points, not only the one the file's first bytes choose:
        // all of them for small inputs, a spread and both ends for big ones.
        let body = &data[2.min(data.len())..];
        let step = (body.len() / 200).max(1);
        let cuts = (0..=body.len()).filter(|c| c % step == 0 || c + 8 >= body.len() || c.abs_diff(8192) < 8);
        for cut in cuts {
            let mut input = (cut as u16).to_le_bytes().to_vec();
            input.extend_from_slice(body);
            http_checks::check(&input);
        }
        eprintln!("ok {}", path.display());
    }
}

#[test]
fn config_seeds_and_regressions_hold_the_invariants() {
    let mut inputs = files(&["tests/scenarios"], Some("conf"));
    inputs.extend(files(&["fuzz/regressions/config_parse"], None));
    assert!(inputs.len() >= 15, "inputs missing: {inputs:?}");
    for path in inputs {
        config_checks::check(&std::fs::read(&path).unwrap());
        eprintln!("ok {}", path.display());
    }
}

/// `text` must be refused, with an error on `line` whose message holds
/// `needle`.
fn refused(text: &str, line: usize, needle: &str) {
    let errors = match config::parse(Path::new("/t.conf"), text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(errors) => errors.0,
    };
    assert!(
        errors.iter().any(|e| e.line == Some(line) && e.message.contains(needle)),
        "no error on line {line} containing {needle:?}: {errors:?}"
    );
}

const ROUTER: &str = "[router r1]\nvrid = 1\n";

// Findings of the config_parse target (first runs): values written into
// keepalived.conf that keepalived would read differently. Interface names
// may hold `#`, `!`, `"`, `{`, `}` by the kernel's rule, and paths anything
// printable; the parser now refuses those that reach keepalived.conf.

#[test]
fn interface_names_keepalived_would_misread_are_refused() {
    for name in ["ha-#1", "ha!1", "ha{1", "ha}1", "ha\"1"] {
        refused(&format!("{ROUTER}ha_interface = {name}\n"), 3, "ha_interface");
        refused(&format!("{ROUTER}ha_interface = ha-1\ntrack_interface = {name}\n"), 4, "track_interface");
        refused(&format!("{ROUTER}ha_interface = ha-1\nvip = 10.0.0.1/24 dev {name}\n"), 4, "vip");
        refused(&format!("{ROUTER}ha_interface = ha-1\nroute = 10.1.0.0/16 dev {name}\n"), 4, "route");
    }
}

#[test]
fn paths_that_reach_keepalived_conf_are_one_plain_word() {
    for key in ["state_path", "ha_confs_path"] {
        for value in ["/var/lib/a b", "/var/lib/a\"b", "/var/lib/a#b", "/var/lib/a!b", "/x{", "/x}", "/a'b", "/a\\b"] {
            refused(&format!("[daemon]\n{key} = {value}\n{ROUTER}ha_interface = ha-1\n"), 2, key);
        }
    }
    // Paths that never reach keepalived.conf keep their old rule.
    let ok = "[daemon]\nsocket = /run/my socket\ntransition_script = /usr/local/bin/on change\n";
    assert!(config::parse(Path::new("/t.conf"), &format!("{ok}{ROUTER}ha_interface = ha-1\n")).is_ok());
}

#[test]
fn the_minimal_findings_render_cleanly_once_fixed() {
    // Each of these was accepted and rendered into a broken keepalived.conf.
    for text in [
        "[router r1]\nvrid = 1\nha_interface = ha-#1\n",
        "[router r1]\nvrid = 1\nha_interface = ha-1\nroute = ::/5 via 2001:db8::1 dev qg-}f\n",
        "[router r1]\nvrid = 1\nha_interface = ha-1\nvip = 10.0.0.1/24 dev qr-#3\n",
        "[daemon]\nstate_path = /var/lib/x\"y\n[router r1]\nvrid = 1\nha_interface = ha-1\n",
        "[daemon]\nstate_path = / authentivar\n[router r1]\nvrid = 1\nha_interface = ha-1\n",
    ] {
        config_checks::check(text.as_bytes());
        assert!(config::parse(Path::new("/t.conf"), text).is_err(), "accepted:\n{text}");
    }
}
