//! packaging/Dockerfile and its entrypoint. Docker itself does not run
//! here, so what the image would do is done for real without it: the
//! image's ENTRYPOINT (read from the Dockerfile) runs as PID 1 of a new PID
//! namespace (`unshare --pid --fork --mount-proc`, as `docker run` without
//! `--pid=host` would start it) with a router whose real keepalived holds
//! its VIP, and is stopped with SIGTERM, as `docker stop` does. The build
//! context (.dockerignore) and the build stage are checked against the
//! repository, and hadolint lints the Dockerfile.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Netns, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_harouterd");
const ENTRYPOINT: &str = "packaging/docker-entrypoint.sh";
/// The static binary `make static` builds (what the old Dockerfile copied).
const STATIC_BIN: &str = "target/x86_64-unknown-linux-musl/release/harouterd";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Dockerfile's instructions, continuation lines joined and comments
/// dropped, each as (stage index, instruction word, arguments).
fn instructions() -> Vec<(usize, String, String)> {
    let text = fs::read_to_string(repo().join("packaging/Dockerfile")).unwrap();
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stage = 0;
    let mut seen_from = false;
    joined
        .into_iter()
        .map(|line| {
            let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
            let word = word.to_ascii_uppercase();
            if word == "FROM" {
                if seen_from {
                    stage += 1;
                }
                seen_from = true;
            }
            (stage, word, rest.trim().to_owned())
        })
        .collect()
}

/// `["a", "b"]` → a, b.
fn json_array(text: &str) -> Vec<String> {
    let inner = text.trim().strip_prefix('[').and_then(|t| t.strip_suffix(']')).expect("an exec-form JSON array");
    inner.split(',').map(|s| s.trim().trim_matches('"').to_owned()).collect()
}

/// The host file the final stage puts at `image_path`: a file of the build
/// context, or (from the build stage) the binary.
fn host_file_for(image_path: &str) -> PathBuf {
    let all = instructions();
    let last = all.iter().map(|(s, _, _)| *s).max().unwrap();
    for (_, word, args) in all.iter().filter(|(s, w, _)| *s == last && w == "COPY") {
        let parts: Vec<&str> = args.split_whitespace().collect();
        let from_stage = parts.iter().any(|p| p.starts_with("--from="));
        let files: Vec<&str> = parts.iter().copied().filter(|p| !p.starts_with("--")).collect();
        let (dest, srcs) = files.split_last().unwrap();
        assert_eq!(word, "COPY");
        if *dest == image_path {
            assert_eq!(srcs.len(), 1, "{args}");
            return if from_stage { PathBuf::from(BIN) } else { repo().join(srcs[0]) };
        }
    }
    if image_path == "/usr/sbin/harouterd" {
        return PathBuf::from(BIN);
    }
    panic!("the Dockerfile's final stage copies nothing to {image_path}");
}

/// The image's ENTRYPOINT as a host command line.
fn entrypoint() -> Vec<PathBuf> {
    let all = instructions();
    let last = all.iter().map(|(s, _, _)| *s).max().unwrap();
    let (_, _, args) =
        all.iter().rev().find(|(s, w, _)| *s == last && w == "ENTRYPOINT").expect("the final stage has an ENTRYPOINT");
    let argv = json_array(args);
    let mut host: Vec<PathBuf> = vec![host_file_for(&argv[0])];
    host.extend(argv[1..].iter().map(PathBuf::from));
    // A script runs with the shell Alpine has (`sh`), whatever its mode.
    if fs::read(&host[0]).unwrap().starts_with(b"#!/bin/sh") {
        host.insert(0, PathBuf::from("sh"));
    }
    host
}

/// A command run as PID 1 of a new PID namespace (and a mount namespace
/// with its own /proc), the way a container without `--pid=host` runs its
/// entrypoint. Dropping it kills the namespace (`--kill-child`).
struct Contained {
    unshare: Child,
    out: PathBuf,
}

impl Contained {
    fn start(argv: &[PathBuf], env: &[(&str, &str)], out: PathBuf) -> Contained {
        Self::start_with(&["--pid", "--fork", "--mount-proc", "--kill-child"], argv, env, out)
    }

    fn start_with(flags: &[&str], argv: &[PathBuf], env: &[(&str, &str)], out: PathBuf) -> Contained {
        let log = fs::File::create(&out).unwrap();
        let mut command = Command::new(common::tool("unshare"));
        command.args(flags).args(argv).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        command.env("HAROUTERD", BIN);
        for (k, v) in env {
            command.env(k, v);
        }
        Contained { unshare: command.spawn().unwrap(), out }
    }

    /// The host pid of the namespace's PID 1 (unshare's only child).
    fn init_pid(&self) -> i32 {
        let pid = self.unshare.id();
        let mut found = None;
        wait_until("unshare's child", || {
            found = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .ok()
                .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()));
            found.is_some()
        });
        found.unwrap()
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn wait(&mut self, what: &str) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.unshare.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{what}: still running after 30 s:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Contained {
    fn drop(&mut self) {
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn has_address(ns: &Netns, dev: &str, cidr: &str) -> bool {
    let out = ns.ip(&["-o", "addr", "show", "dev", dev]);
    String::from_utf8_lossy(&out.stdout).split_whitespace().any(|w| w == cidr)
}

fn write_config(dir: &TempDir, ns: &Netns, keepalived: bool) -> PathBuf {
    let config = dir.join("harouterd.conf");
    fs::write(
        &config,
        format!(
            "[daemon]\nstate_path = {}\nha_vrrp_advert_int = 1\n[router r1]\nnamespace = {}\nha_interface = ha-a\nvrid = 1\nkeepalived = {keepalived}\n",
            dir.path().display(),
            ns.name()
        ),
    )
    .unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    config
}

fn run_args(dir: &TempDir, config: &Path) -> Vec<PathBuf> {
    vec!["run".into(), "-c".into(), config.into(), "--foreground".into(), "--pidfile".into(), dir.join("harouterd.pid")]
}

/// Issue 14.3: run as PID 1 of its own PID namespace (no `--pid=host`), the
/// old image (`ENTRYPOINT ["/usr/sbin/harouterd"]`) let `docker stop` take
/// every keepalived down with SIGKILL when harouterd exited, leaving their
/// VIPs on the interfaces (and with on_exit = keep the peer takes over
/// too: two nodes hold them). The image's entrypoint now stops keepalived
/// cleanly: after SIGTERM to PID 1 the VIP is gone from the interface, no
/// keepalived is left, and the container exits 0.
#[test]
fn stopping_the_container_leaves_no_vip_behind() {
    if !common::require_root_and(&["ip", "keepalived", "unshare", "sh"]) {
        return;
    }
    let ns = Netns::new("ctr");
    common::add_veth_pair(&ns, "ha-a", "ha-b");
    // keepalived needs an IPv4 address on its interface (else FAULT).
    ns.ip(&["addr", "add", "169.254.192.1/18", "dev", "ha-a"]);
    let dir = TempDir::new("ctr");
    let config = write_config(&dir, &ns, true);
    let mut argv = entrypoint();
    argv.extend(run_args(&dir, &config));
    let mut container = Contained::start(&argv, &[], dir.join("container.log"));
    let vip = "169.254.0.1/24";
    let took = Instant::now() + Duration::from_secs(30);
    while !has_address(&ns, "ha-a", vip) {
        assert!(Instant::now() < took, "keepalived did not take the VIP:\n{}", container.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    let keepalived = fs::read_to_string(dir.join("ha_confs/r1.pid.keepalived")).unwrap_or_default();
    assert!(!keepalived.trim().is_empty(), "keepalived's pid file");

    // docker stop: SIGTERM to the container's PID 1.
    let init = container.init_pid();
    assert_eq!(unsafe { libc::kill(init, libc::SIGTERM) }, 0);
    let status = container.wait("the container after SIGTERM");
    let log = container.output();
    assert!(!has_address(&ns, "ha-a", vip), "the VIP was left on ha-a after the container stopped:\n{log}");
    assert!(status.success(), "{status}:\n{log}");
    let left: Vec<u32> = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c).contains(&dir.join("ha_confs/r1/keepalived.conf").display().to_string())
            })
        })
        .collect();
    assert!(left.is_empty(), "keepalived left running: {left:?}\n{log}");
}

/// Environment variables set for a command.
type Env = Vec<(&'static str, String)>;

/// The shells to run the entrypoint with: `sh` (dash here) and, as in the
/// image, busybox's ash with busybox's stat, date and sleep first in PATH
/// (the directory holding those links is returned, to live as long).
fn shells() -> (Vec<(&'static str, Env)>, TempDir) {
    let mut shells = vec![("sh", Vec::new())];
    let dir = TempDir::new("busybox");
    if let Some(busybox) = common::find_tool("busybox") {
        for applet in ["sh", "stat", "date", "sleep"] {
            std::os::unix::fs::symlink(&busybox, dir.join(applet)).unwrap();
        }
        let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
        shells.push(("busybox", vec![("PATH", path)]));
    }
    (shells, dir)
}

/// The entrypoint's decision, by PID namespace, with dash and (as in the
/// image) busybox: on the host's PID namespace it becomes harouterd
/// (`exec`: the daemon has the entrypoint's pid); as PID 1 of a namespace
/// of its own it stays PID 1 with harouterd as its child (adding
/// `--foreground` when missing); in a namespace of its own but not as PID 1
/// (`docker run --init`) it refuses, exit 2, unless
/// HAROUTERD_PID_NAMESPACE=host; commands other than `run` run as given.
#[test]
fn the_entrypoint_decides_by_pid_namespace() {
    if !common::require_root_and(&["ip", "unshare", "sh"]) {
        return;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        assert!(common::find_tool("busybox").is_some(), "busybox (Alpine's sh) is missing");
    }
    let ns = Netns::new("ctrd");
    common::add_veth_pair(&ns, "ha-a", "ha-b");
    let script = repo().join(ENTRYPOINT);
    let (shells, _applets) = shells();
    for (shell, env) in shells {
        let dir = TempDir::new("ctrd");
        let config = write_config(&dir, &ns, false);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let pidfile = dir.join("harouterd.pid");
        let socket = dir.join("harouterd.sock");
        let served = || Command::new(BIN).args(["status", "--socket"]).arg(&socket).output().unwrap().status.success();
        let sh = PathBuf::from(if shell == "busybox" { "busybox" } else { "sh" });
        let mut argv: Vec<PathBuf> = if shell == "busybox" { vec![sh.clone(), "sh".into()] } else { vec![sh.clone()] };
        argv.push(script.clone());

        // The host's PID namespace: exec.
        let mut args = argv.clone();
        args.extend(run_args(&dir, &config));
        let mut host = common::ChildGuard(
            Command::new(&args[0]).args(&args[1..]).envs(env.iter().copied()).env("HAROUTERD", BIN).spawn().unwrap(),
        );
        wait_until("the daemon on the host", &served);
        let pid: u32 = fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert_eq!(pid, host.0.id(), "{shell}: on the host's PID namespace the entrypoint execs harouterd");
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        assert!(host.0.wait().unwrap().success());

        // PID 1 of a namespace of its own, without --foreground.
        let mut args = argv.clone();
        args.extend(run_args(&dir, &config).into_iter().filter(|a| a != Path::new("--foreground")));
        let mut container = Contained::start(&args, &env, dir.join("pid1.log"));
        wait_until("the daemon as PID 1's child", &served);
        let pid: u32 = fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert!(pid > 1, "{shell}: harouterd is not PID 1 but the entrypoint's child (pid {pid} in the namespace)");
        assert!(container.output().contains("PID 1 of the container's own PID namespace"), "{}", container.output());
        unsafe { libc::kill(container.init_pid(), libc::SIGTERM) };
        let status = container.wait("PID 1 after SIGTERM");
        assert!(status.success(), "{shell}: {status}\n{}", container.output());
        assert!(!pidfile.exists(), "{shell}: harouterd did not stop cleanly");

        // A namespace of its own, not PID 1 (an init in front: docker --init).
        let mut inner: Vec<PathBuf> = vec!["sh".into(), "-c".into(), "\"$@\"; exit $?".into(), "init".into()];
        inner.extend(argv.iter().cloned());
        inner.extend(run_args(&dir, &config));
        let mut refused = Contained::start(&inner, &env, dir.join("init.log"));
        let status = refused.wait("the entrypoint behind an init");
        assert_eq!(status.code(), Some(2), "{shell}: {}", refused.output());
        assert!(refused.output().contains("--pid=host"), "{}", refused.output());
        assert!(!pidfile.exists() && !served(), "{shell}: started anyway");

        let mut env_host = env.clone();
        env_host.push(("HAROUTERD_PID_NAMESPACE", "host"));
        let mut overridden = Contained::start(&inner, &env_host, dir.join("override.log"));
        wait_until("the daemon with HAROUTERD_PID_NAMESPACE=host", &served);
        let pid: i32 = fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert!(pid > 1, "{shell}: behind an init");
        assert!(overridden.unshare.try_wait().unwrap().is_none(), "{}", overridden.output());
        drop(overridden);
        wait_until("the namespace to be gone", || !served());

        // Not `run`: as given.
        let mut args = argv.clone();
        args.extend(["check".into(), "-c".into(), config.clone()]);
        let mut check = Contained::start(&args, &env, dir.join("check.log"));
        assert!(check.wait("check").success(), "{}", check.output());
        let mut args = argv.clone();
        args.push("--version".into());
        let mut version = Contained::start(&args, &env, dir.join("version.log"));
        assert!(version.wait("--version").success());
        assert!(version.output().starts_with("harouterd "), "{}", version.output());
    }
}

/// The build stage builds with `make static` (the same recipe and flags as
/// on a workstation) and the final stage takes its output; the build
/// context keeps every file the build and the final stage need and none of
/// the build output, git data or fuzzing artifacts (.dockerignore).
#[test]
fn the_image_is_built_by_make_static_from_the_sources_alone() {
    let all = instructions();
    let stages = all.iter().map(|(s, _, _)| *s).max().unwrap() + 1;
    assert!(stages >= 2, "a multi-stage build");
    let build: Vec<&(usize, String, String)> = all.iter().filter(|(s, _, _)| *s == 0).collect();
    let runs: Vec<&str> = build.iter().filter(|(_, w, _)| w == "RUN").map(|(_, _, a)| a.as_str()).collect();
    assert!(runs.iter().any(|r| r.contains("make static MUSL_TARGET=")), "the build stage runs make static: {runs:?}");
    let makefile = fs::read_to_string(repo().join("Makefile")).unwrap();
    assert!(makefile.contains("STATIC_BIN := target/$(MUSL_TARGET)/release/harouterd"), "make static's output path");
    assert!(
        runs.iter().any(|r| r.contains("\"target/$target/release/harouterd\" /out/harouterd")),
        "the build stage takes make static's output: {runs:?}"
    );
    let last = stages - 1;
    assert!(
        all.iter().any(|(s, w, a)| *s == last && w == "COPY" && a == "--from=build /out/harouterd /usr/sbin/harouterd"),
        "the final stage copies the built binary"
    );
    assert_eq!(host_file_for("/usr/local/bin/docker-entrypoint.sh"), repo().join(ENTRYPOINT));
    let mode = fs::metadata(repo().join(ENTRYPOINT)).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "COPY keeps the mode: the entrypoint must be executable");

    let ignore = fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let patterns: Vec<&str> = ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert!(patterns.iter().all(|p| !p.starts_with('!')), "no exceptions: the matcher below does not model them");
    let ignored = |path: &str| patterns.iter().any(|p| dockerignore_match(p, path));
    for path in
        [".git/HEAD", "target/debug/harouterd", STATIC_BIN, "fuzz/artifacts/x", "fuzz/corpus/a/b", "fuzz/target/x"]
    {
        assert!(ignored(path), "{path} is sent to the docker daemon");
    }
    let tracked = Command::new("git").arg("-C").arg(repo()).arg("ls-files").output().unwrap();
    assert!(tracked.status.success());
    let tracked = String::from_utf8(tracked.stdout).unwrap();
    let mut needed: Vec<String> = vec!["Cargo.toml".into(), "Cargo.lock".into(), "Makefile".into()];
    needed.extend(tracked.lines().filter(|p| p.starts_with("src/")).map(str::to_owned));
    // Targets Cargo.toml names by path.
    let manifest = fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    needed.extend(
        manifest.lines().filter_map(|l| l.trim().strip_prefix("path = ")).map(|p| p.trim_matches('"').to_owned()),
    );
    for (_, w, args) in all.iter().filter(|(_, w, a)| w == "COPY" && !a.contains("--from=")) {
        assert_eq!(w, "COPY");
        let files: Vec<&str> = args.split_whitespace().collect();
        needed.extend(files[..files.len() - 1].iter().filter(|f| **f != ".").map(|f| f.to_string()));
    }
    for path in &needed {
        assert!(tracked.lines().any(|t| t == path) || repo().join(path).exists(), "{path} does not exist");
        assert!(!ignored(path), "{path} is needed by the image but .dockerignore leaves it out");
    }
    assert!(needed.iter().any(|p| p == "src/main.rs") && needed.iter().any(|p| p == ENTRYPOINT), "{needed:?}");
}

/// Docker's .dockerignore matching for the patterns used: a pattern names
/// a path or any path below it; `*` matches within one component, `**`
/// any number of components.
fn dockerignore_match(pattern: &str, path: &str) -> bool {
    fn components(pattern: &[&str], path: &[&str]) -> bool {
        match (pattern.first(), path.first()) {
            (None, _) => true, // the pattern named a directory above `path`
            (Some(&"**"), _) => (0..=path.len()).any(|skip| components(&pattern[1..], &path[skip..])),
            (Some(_), None) => false,
            (Some(p), Some(c)) => glob(p.as_bytes(), c.as_bytes()) && components(&pattern[1..], &path[1..]),
        }
    }
    fn glob(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
            (Some(a), Some(b)) => a == b && glob(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let pattern: Vec<&str> = pattern.trim_start_matches('/').trim_end_matches('/').split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    components(&pattern, &path)
}

#[test]
fn dockerignore_matching_as_docker_does() {
    assert!(dockerignore_match("target", "target/debug/x"));
    assert!(!dockerignore_match("target", "src/target.rs"));
    assert!(dockerignore_match("**/__pycache__", "bench/__pycache__/x.pyc"));
    assert!(dockerignore_match("**/*.deb", "harouterd_0.1.0_amd64.deb"));
    assert!(!dockerignore_match("fuzz/corpus", "fuzz/seeds/a"));
}

/// hadolint (Docker's usual linter) finds nothing to say.
#[test]
fn the_dockerfile_passes_hadolint() {
    if !common::require_tools(&["hadolint"]) {
        return;
    }
    let out = Command::new(common::tool("hadolint")).arg(repo().join("packaging/Dockerfile")).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
