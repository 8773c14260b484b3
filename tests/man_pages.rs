//! The man pages packaging/man/harouterd.8 and harouterd.conf.5 render
//! without a warning and keep up with the product: every option that any
//! `harouterd COMMAND --help` lists is documented under that command in
//! harouterd(8), and harouterd.conf(5) documents exactly the keys the
//! parser accepts, each in its section (read from the parser's key tables,
//! so a key added to the parser fails here until it is documented).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_harouterd");

fn page(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/man").join(name)
}

/// The page as plain text: ASCII, no wrapping, no hyphenation, so an
/// option is never split across lines.
fn render(name: &str) -> String {
    let out = Command::new(common::tool("groff"))
        .args(["-man", "-Tascii", "-rLL=2000n", "-rHY=0", "-P-cbou"])
        .arg(page(name))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Rendered sections: `.SH` headings start in column 0, `.SS` headings in
/// column 3. Returns (heading, body) for each subsection and section.
fn sections(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let heading = !line.trim().is_empty() && (indent == 0 || indent == 3);
        if heading {
            out.push((line.trim().to_owned(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

fn body_of<'a>(sections: &'a [(String, String)], heading: &str) -> &'a str {
    sections
        .iter()
        .find(|(h, _)| h == heading)
        .map(|(_, b)| b.as_str())
        .unwrap_or_else(|| panic!("no section '{heading}' in the page; sections: {:?}", headings(sections)))
}

fn headings(sections: &[(String, String)]) -> Vec<&str> {
    sections.iter().map(|(h, _)| h.as_str()).collect()
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Every `-x` and `--long_option` in `text`, as words of their own.
fn options(text: &str) -> BTreeSet<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut found = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !is_word(chars[i - 1]);
        if starts_word && chars[i] == '-' {
            let dashes = if chars.get(i + 1) == Some(&'-') { 2 } else { 1 };
            let mut j = i + dashes;
            if chars.get(j).is_some_and(|c| c.is_ascii_alphabetic()) {
                while j < chars.len() && is_word(chars[j]) {
                    j += 1;
                }
                let option: String = chars[i..j].iter().collect();
                if dashes == 2 || option.len() == 2 {
                    found.insert(option);
                }
                i = j;
                continue;
            }
        }
        i += 1;
    }
    found
}

fn mentions(text: &str, option: &str) -> bool {
    text.match_indices(option).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + option.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

fn help(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(out.status.success(), "harouterd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The commands `harouterd --help` lists (the first word of each line of
/// its Commands: block).
fn commands(main_help: &str) -> Vec<String> {
    main_help
        .split("Commands:\n")
        .nth(1)
        .expect("a Commands: block")
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("    "))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect()
}

#[test]
fn both_pages_render_without_warnings() {
    if !common::require_tools(&["groff", "man"]) {
        return;
    }
    for name in ["harouterd.8", "harouterd.conf.5"] {
        let out =
            Command::new(common::tool("groff")).args(["-man", "-Tutf8", "-ww", "-z"]).arg(page(name)).output().unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff on {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(common::tool("man"))
            .args(["--warnings", "-l"])
            .arg(page(name))
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "man -l {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("SEE ALSO"), "man -l {name} rendered nothing");
    }
}

#[test]
fn harouterd_8_documents_every_option_of_every_help() {
    if !common::require_tools(&["groff"]) {
        return;
    }
    let text = render("harouterd.8");
    let sections = sections(&text);
    let main = help(&["--help"]);
    let general = main.split("Options:\n").nth(1).expect("an Options: block");
    let general_options = options(general);
    assert!(general_options.contains("--version") && general_options.contains("-h"), "{general_options:?}");
    let options_section = body_of(&sections, "OPTIONS");
    let mut missing: Vec<String> =
        general_options.iter().filter(|o| !mentions(options_section, o)).map(|o| format!("OPTIONS: {o}")).collect();

    let commands = commands(&main);
    assert!(commands.len() >= 6 && commands.contains(&"state-change".to_owned()), "{commands:?}");
    for command in &commands {
        let listed = options(&help(&[command, "--help"]));
        assert!(!listed.is_empty(), "{command} --help lists no option");
        let section = body_of(&sections, &format!("harouterd {command}"));
        missing.extend(listed.iter().filter(|o| !mentions(section, o)).map(|o| format!("harouterd {command}: {o}")));
    }
    assert!(missing.is_empty(), "harouterd.8 does not document:\n{}", missing.join("\n"));
}

/// The string literals of `const NAME: &[&str] = &[...]` in the crate's
/// sources (the parser's key tables).
fn key_table(name: &str) -> BTreeSet<String> {
    let mut found = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let source = fs::read_to_string(&path).unwrap();
            let Some(start) = source.find(&format!("const {name}: &[&str] = &[")) else { continue };
            let table = &source[start..];
            let table = &table[table.find("&[").unwrap() + 2..table.find("];").unwrap()];
            let keys: BTreeSet<String> = table.split('"').skip(1).step_by(2).map(str::to_owned).collect();
            found.push((path.clone(), keys));
        }
    }
    assert_eq!(found.len(), 1, "expected exactly one `const {name}: &[&str]` under src/: {found:?}");
    found.pop().unwrap().1
}

/// The keys a rendered section documents: the tag of each tagged
/// paragraph (column 7).
fn documented_keys(section: &str) -> BTreeSet<String> {
    section
        .lines()
        .filter(|l| l.len() - l.trim_start().len() == 7)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn harouterd_conf_5_documents_exactly_the_keys_the_parser_accepts() {
    if !common::require_tools(&["groff"]) {
        return;
    }
    let text = render("harouterd.conf.5");
    let sections = sections(&text);
    for (table, heading) in [("DAEMON_KEYS", "[daemon] section"), ("ROUTER_KEYS", "[router ID] section")] {
        let accepted = key_table(table);
        assert!(accepted.len() >= 15, "{table}: {accepted:?}");
        let documented = documented_keys(body_of(&sections, heading));
        let undocumented: Vec<&String> = accepted.difference(&documented).collect();
        let unknown: Vec<&String> = documented.difference(&accepted).collect();
        assert!(undocumented.is_empty(), "harouterd.conf.5 '{heading}' does not document {undocumented:?}");
        assert!(unknown.is_empty(), "harouterd.conf.5 '{heading}' documents keys the parser refuses: {unknown:?}");
    }
}

/// The systemd unit's `Documentation=man:` pages are the ones shipped.
#[test]
fn the_unit_points_at_shipped_pages() {
    let unit = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/harouterd.service")).unwrap();
    let pages: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Documentation="))
        .flat_map(str::split_whitespace)
        .filter_map(|d| d.strip_prefix("man:"))
        .collect();
    assert!(!pages.is_empty(), "no man: documentation in the unit");
    for p in pages {
        let (name, section) = p.trim_end_matches(')').split_once('(').unwrap();
        assert!(page(&format!("{name}.{section}")).exists(), "Documentation=man:{p} is not in packaging/man");
    }
}
