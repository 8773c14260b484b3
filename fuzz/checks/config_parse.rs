//! The invariants of the `config_parse` fuzz target, shared with the main
//! crate's `tests/fuzz_regressions.rs` (which includes this file by path).
//!
//! Input: arbitrary bytes; if UTF-8, a config file's text. Errors must point
//! at real lines; what is accepted must render into keepalived.conf files
//! that keep the renderer's structure, whatever the values.

use std::path::{Component, Path};

use harouterd::config;
use harouterd::core::ident::RouterId;
use harouterd::core::layout::Layout;
use harouterd::keepalived::{self, conf::Secrets};

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("/fuzz.conf");
    // The parser numbers lines by '\n' (a trailing line may be empty).
    let lines = text.split('\n').count();
    let line_ok = |line: Option<usize>| line.is_none_or(|l| (1..=lines).contains(&l));
    let parsed = match config::parse(path, text) {
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error without a message");
            for e in &errors.0 {
                assert!(line_ok(e.line), "line {:?} of a {lines}-line text: {}", e.line, e.message);
                assert_eq!(e.path, path);
            }
            return;
        }
        Ok(parsed) => parsed,
    };
    for w in &parsed.warnings {
        assert!(line_ok(w.line), "warning line {:?} of a {lines}-line text", w.line);
    }
    let cfg = &parsed.config;
    let layout = Layout::new(&cfg.daemon.ha_confs_path);
    for router in &cfg.routers {
        let id = router.id.as_str();
        // A router ID is one plain path component: it cannot leave
        // ha_confs_path.
        assert!(RouterId::parse(id).is_ok(), "accepted id {id:?} fails RouterId::parse");
        assert!(!id.contains('/') && id != "." && id != "..", "id {id:?}");
        assert!(matches!(Path::new(id).components().collect::<Vec<_>>()[..], [Component::Normal(_)]), "id {id:?}");
        assert_eq!(layout.router_dir(&router.id).parent(), Some(cfg.daemon.ha_confs_path.as_path()));
        assert!(line_ok(Some(router.line)));
        for secrets in [Secrets::Mask, Secrets::Show] {
            for file in keepalived::router_files(&cfg.daemon, router, &layout, secrets) {
                for line in file.contents.split('\n') {
                    assert!(
                        !line.starts_with("# ==> "),
                        "{}: a '# ==> ' line:\n{}",
                        file.path.display(),
                        file.contents
                    );
                }
                if file.path.ends_with("keepalived.conf") {
                    keepalived_syntax(&file.contents);
                }
                assert!(
                    !file.contents.chars().any(|c| c.is_control() && c != '\n'),
                    "control character in {}:\n{}",
                    file.path.display(),
                    file.contents
                );
            }
        }
    }
}

/// keepalived.conf stays what the renderer meant: blocks open with a
/// trailing ` {` and close with a lone `}`, no other brace, no comment
/// character (keepalived cuts a line at `#` or `!`), quotes only around the
/// `script` path.
fn keepalived_syntax(conf: &str) {
    let mut depth = 0usize;
    for line in conf.split('\n') {
        let t = line.trim();
        assert!(!t.contains(['#', '!']), "comment character in keepalived.conf line {line:?}:\n{conf}");
        if t == "}" {
            depth = depth.checked_sub(1).unwrap_or_else(|| panic!("unbalanced '}}':\n{conf}"));
            continue;
        }
        let body = t.strip_suffix(" {").inspect(|_| depth += 1).unwrap_or(t);
        assert!(!body.contains(['{', '}']), "stray brace in keepalived.conf line {line:?}:\n{conf}");
        match body.strip_prefix("script ") {
            Some(path) => assert!(
                path.len() >= 2
                    && path.starts_with('"')
                    && path.ends_with('"')
                    && !path[1..path.len() - 1].contains(['"', '\'', '\\', ' ', '\t']),
                "bad script line {line:?}"
            ),
            None => assert!(!body.contains('"'), "quote in keepalived.conf line {line:?}:\n{conf}"),
        }
        if body.starts_with("notify_fifo ") || body.starts_with("interface ") {
            assert_eq!(body.split_whitespace().count(), 2, "value with whitespace in line {line:?}");
        }
    }
    assert_eq!(depth, 0, "unbalanced braces:\n{conf}");
}
