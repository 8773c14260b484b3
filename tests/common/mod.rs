//! Shared support for integration tests that need root: tool discovery and
//! skip/fail gating, network namespaces and veth pairs with RAII cleanup, and
//! temporary directories.
//!
//! Only std and libc are used (the crate's dependency list is fixed).
//! Everything here is test-side plumbing: the product never shells out to
//! `ip netns exec`.

#![allow(dead_code)]

pub mod frozen;
pub mod http_receiver;
pub mod lab;
pub mod tmpfs;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

/// Directories searched for tools in addition to `$PATH` (keepalived and ip
/// live in sbin, which a non-login `$PATH` may lack).
const SBIN_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// One counter for every unique name this process generates.
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn next_id() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Absolute path of `name` found in `$PATH`, /usr/local/sbin, /usr/sbin or
/// /sbin; a name containing `/` is checked as is.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// `find_tool(name)`, falling back to the bare name (so a missing tool shows
/// up as a spawn error naming it).
pub fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| PathBuf::from(name))
}

/// True when running as root and every tool is found. Otherwise: under
/// `CI=true` panic naming what is missing; elsewhere print
/// `SKIP <test>: needs root and <tools>` to stderr and return false.
///
/// ```ignore
/// if !common::require_root_and(&["keepalived", "ip"]) { return; }
/// ```
pub fn require_root_and(tools: &[&str]) -> bool {
    require(true, tools)
}

/// [`require_root_and`] for a test that needs the tools only (a lint, a
/// renderer): it runs, or skips, the same for anyone.
pub fn require_tools(tools: &[&str]) -> bool {
    require(false, tools)
}

fn require(needs_root: bool, tools: &[&str]) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mut missing: Vec<String> = Vec::new();
    if needs_root && !root {
        missing.push("root (effective uid is not 0)".to_string());
    }
    for t in tools {
        if find_tool(t).is_none() {
            missing.push(format!("`{t}` (not in PATH, /usr/local/sbin, /usr/sbin or /sbin)"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let current = std::thread::current();
    let test = match current.name() {
        Some(n) if n != "main" => n.to_string(),
        _ => "test".to_string(),
    };
    let needs = match (needs_root, tools.is_empty()) {
        (true, true) => "root".to_string(),
        (true, false) => format!("root and {}", tools.join(", ")),
        (false, _) => tools.join(", "),
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs {needs}; missing: {} (CI=true, so this is a failure, not a skip)", missing.join(", "));
    }
    eprintln!("SKIP {test}: needs {needs} (missing: {})", missing.join(", "));
    false
}

/// Run a command, panicking with its stdout/stderr when it cannot be spawned
/// or exits non-zero.
pub fn run_ok<S: AsRef<OsStr>>(program: impl AsRef<OsStr>, args: &[S]) -> Output {
    let program = program.as_ref();
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.to_string_lossy()));
    if !out.status.success() {
        let argv: Vec<String> = args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
        panic!(
            "`{} {}` failed ({}):\nstdout: {}\nstderr: {}",
            program.to_string_lossy(),
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// A network namespace created with `ip netns add` and deleted with
/// `ip netns del` when dropped (also when the test panics).
pub struct Netns {
    name: String,
}

impl Netns {
    /// Create `hrt-<prefix>-<pid>-<n>`. Panics when `ip netns add` fails.
    pub fn new(prefix: &str) -> Netns {
        let name = format!("hrt-{prefix}-{}-{}", std::process::id(), next_id());
        run_ok(tool("ip"), &["netns", "add", name.as_str()]);
        let ns = Netns { name };
        // Loopback up, as in any usable router namespace.
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip netns exec NAME argv...`, output captured; never panics on a
    /// non-zero exit (the caller judges). Panics only when `ip` cannot be
    /// spawned or `argv` is empty.
    pub fn exec<S: AsRef<OsStr>>(&self, argv: &[S]) -> Output {
        assert!(!argv.is_empty(), "Netns::exec needs a program");
        Command::new(tool("ip"))
            .arg("netns")
            .arg("exec")
            .arg(&self.name)
            .args(argv)
            .output()
            .unwrap_or_else(|e| panic!("cannot run ip netns exec {}: {e}", self.name))
    }

    /// `ip -n NAME args...`; panics with stderr on failure.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full: Vec<&str> = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ok(tool("ip"), &full)
    }

    /// Names of the links in the namespace.
    pub fn links(&self) -> BTreeSet<String> {
        let out = self.ip(&["-o", "link", "show"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                // "3: ha-x@peer: <...> ..." -> "ha-x"
                let name = l.split(": ").nth(1)?;
                Some(name.split('@').next()?.trim().to_string())
            })
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(tool("ip")).args(["netns", "del", self.name.as_str()]).output();
    }
}

/// Re-creates a lab namespace deleted under the same name: `ip netns add`,
/// loopback, the HA interface (a veth whose peer stays inside) with its
/// HA-network address, up.
pub fn recreate_namespace(name: &str, ha: &str, address: &str) {
    run_ok(tool("ip"), &["netns", "add", name]);
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["link", "add", ha, "type", "veth", "peer", "name", &format!("{ha}-p")],
        vec!["addr", "add", address, "dev", ha],
        vec!["link", "set", ha, "up"],
        vec!["link", "set", &format!("{ha}-p"), "up"],
    ] {
        let mut full = vec!["-n", name];
        full.extend(args);
        run_ok(tool("ip"), &full);
    }
}

/// A fresh interface name (≤ 15 bytes) for the unnamed end of a veth pair:
/// `v<pid hex>-<counter hex>`.
pub fn unique_ifname() -> String {
    let name = format!("v{:x}-{:x}", std::process::id(), next_id());
    assert!(name.len() <= 15, "generated interface name too long: {name}");
    name
}

/// Create the veth pair `a` <-> `b` inside `ns` and set both ends up.
pub fn add_veth_pair(ns: &Netns, a: &str, b: &str) {
    ns.ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
    ns.ip(&["link", "set", a, "up"]);
    ns.ip(&["link", "set", b, "up"]);
}

/// Make every interface named in `names` exist in `ns` (duplicates and names
/// already present are skipped): each is one end of a veth pair whose peer
/// gets a generated name; both ends are set up. (The `dummy` link type is not
/// available on every test kernel; veth is.)
pub fn add_interfaces<S: AsRef<str>>(ns: &Netns, names: &[S]) {
    let mut present = ns.links();
    for name in names {
        let name = name.as_ref();
        assert!(
            !name.is_empty() && name.len() <= 15 && !name.contains(['/', ' ', '\t', '\n']),
            "not a valid interface name: {name:?}"
        );
        if present.contains(name) {
            continue;
        }
        let peer = unique_ifname();
        add_veth_pair(ns, name, &peer);
        present.insert(name.to_string());
        present.insert(peer);
    }
}

/// A child process killed and reaped when dropped, also when the test
/// panics before it would have stopped it.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory under `std::env::temp_dir()` removed (recursively) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Create `<tmp>/hrt-<prefix>-<pid>-<n>-<nanos>` (mode 0755, so that
    /// tools insisting on non-world-writable parents accept it).
    pub fn new(prefix: &str) -> TempDir {
        let base = std::env::temp_dir();
        loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = base.join(format!("hrt-{prefix}-{}-{}-{nanos:x}", std::process::id(), next_id()));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755));
                    return TempDir { path };
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create temp dir {}: {e}", path.display()),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Subscribes to a daemon's `/v1/events` at `socket` and returns the
/// stream positioned after the response head (asserting a 200).
pub fn subscribe_events(
    socket: &Path,
    accept: &str,
    read_timeout: std::time::Duration,
) -> std::io::BufReader<std::os::unix::net::UnixStream> {
    use std::io::{BufRead, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connect to the control socket");
    stream
        .write_all(format!("GET /v1/events HTTP/1.1\r\nHost: h\r\nAccept: {accept}\r\n\r\n").as_bytes())
        .expect("send the events request");
    // The head comes at once, but a daemon busy writing state files may
    // take longer than the caller's (short, polling) timeout to send it.
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("read timeout");
    let mut reader = std::io::BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    assert_eq!(line, "HTTP/1.1 200 OK\r\n");
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).expect("header line");
    }
    reader.get_ref().set_read_timeout(Some(read_timeout)).expect("read timeout");
    reader
}

/// Sends `raw` to a daemon's control socket, half-closes, and reads the
/// answer to EOF: the status (`None` when the daemon cannot be reached or
/// closed without answering) and the body.
pub fn http_exchange(socket: &Path, raw: &[u8]) -> (Option<u16>, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else { return (None, String::new()) };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let _ = stream.write_all(raw);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3)).and_then(|c| c.parse().ok());
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// `GET path` on a daemon's control socket (see [`http_exchange`]).
pub fn http_get(socket: &Path, path: &str) -> (Option<u16>, String) {
    http_exchange(socket, format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
}
