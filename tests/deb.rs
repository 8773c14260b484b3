//! `make deb` (packaging/deb/build.sh) for real: the package built from the
//! static binary, its contents and control data checked, lintian run on it,
//! and then installed, upgraded, removed and purged with dpkg inside a
//! scratch copy of this machine, with a daemon running across it.
//!
//! The scratch root is an overlay whose lower layer is this machine's own
//! root file system (its dpkg database, keepalived, systemd files, ...) and
//! whose upper layer is a tmpfs, mounted in a private mount namespace: dpkg
//! and the maintainer scripts run in it for real (chroot), nothing reaches
//! the machine, a harouterd the machine has installed or running is never
//! touched (the scratch root's /run and /tmp are empty tmpfs), and the upper
//! layer records every file the package left behind. The scratch root is a
//! booted sysvinit machine in runlevel 2 without Docker's policy-rc.d
//! (which refuses every service action): `/sbin/runlevel` says `N 2` there.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;

const STATIC_BIN: &str = "target/x86_64-unknown-linux-musl/release/harouterd";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn static_binary() -> Option<PathBuf> {
    let path = repo().join(STATIC_BIN);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{} is missing: `make static` must run before the tests", path.display());
    }
    eprintln!("SKIP deb tests: run `make static` first");
    None
}

/// `packaging/deb/build.sh` into `out`: the .deb's path.
fn build_deb(out: &Path) -> PathBuf {
    let binary = static_binary().expect("static binary");
    let built = Command::new("sh").arg(repo().join("packaging/deb/build.sh")).arg(binary).arg(out).output().unwrap();
    assert!(built.status.success(), "build.sh: {}", text(&built));
    let deb = PathBuf::from(String::from_utf8(built.stdout).unwrap().trim());
    assert_eq!(deb, out.join(format!("harouterd_{}_amd64.deb", env!("CARGO_PKG_VERSION"))));
    deb
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new(common::tool("dpkg-deb")).args(args).arg(deb).output().unwrap();
    assert!(out.status.success(), "dpkg-deb {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// What the package holds, its modes and owners, its control data, the
/// conffiles, and a copyright file naming every crate linked into the
/// binary. Two builds give the same bytes.
#[test]
fn the_package_holds_what_an_installation_needs() {
    if static_binary().is_none() || !common::require_root_and(&["dpkg-deb", "cargo"]) {
        return;
    }
    let out = TempDir::new("debc");
    let deb = build_deb(out.path());
    let listing = dpkg_deb(&["-c"], &deb);
    let mut entries = std::collections::BTreeMap::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let path = fields[5].trim_start_matches('.').to_owned();
        assert_eq!(fields[1], "root/root", "{line}");
        let mode = fields[0];
        assert!(mode.as_bytes()[5] != b'w' && mode.as_bytes()[8] != b'w', "writable by others: {line}");
        entries.insert(path.trim_end_matches('/').to_owned(), mode.to_owned());
    }
    for (path, mode) in [
        ("/usr/sbin/harouterd", "-rwxr-xr-x"),
        ("/etc/harouterd/harouterd.conf", "-rw-------"),
        ("/etc/default/harouterd", "-rw-r--r--"),
        ("/etc/init.d/harouterd", "-rwxr-xr-x"),
        ("/etc/logrotate.d/harouterd", "-rw-r--r--"),
        ("/lib/systemd/system/harouterd.service", "-rw-r--r--"),
        ("/usr/share/man/man8/harouterd.8.gz", "-rw-r--r--"),
        ("/usr/share/man/man5/harouterd.conf.5.gz", "-rw-r--r--"),
        ("/usr/share/doc/harouterd/copyright", "-rw-r--r--"),
        ("/usr/share/doc/harouterd/changelog.gz", "-rw-r--r--"),
        ("/usr/share/doc/harouterd/README.Debian", "-rw-r--r--"),
        ("/usr/share/doc/harouterd/examples/harouterd.conf.example", "-rw-r--r--"),
        ("", "drwxr-xr-x"),
    ] {
        assert_eq!(entries.get(path).map(String::as_str), Some(mode), "{path} in:\n{listing}");
    }
    assert!(
        !entries.keys().any(|p| p.contains("neutron-keepalived-state-change")),
        "the Neutron name is the operator's to take:\n{listing}"
    );
    let shipped = fs::read(repo().join("packaging/harouterd.conf.example")).unwrap();
    let extracted = TempDir::new("debx");
    common::run_ok(common::tool("dpkg-deb"), &[Path::new("-x"), &deb, extracted.path()]);
    assert_eq!(fs::read(extracted.join("etc/harouterd/harouterd.conf")).unwrap(), shipped);
    assert_eq!(fs::read(extracted.join("usr/sbin/harouterd")).unwrap(), fs::read(repo().join(STATIC_BIN)).unwrap());

    let control = dpkg_deb(&["-f"], &deb);
    for field in [
        format!("Version: {}", env!("CARGO_PKG_VERSION")),
        "Package: harouterd".into(),
        "Architecture: amd64".into(),
        "Recommends: keepalived".into(),
    ] {
        assert!(control.lines().any(|l| l == field), "{field} in:\n{control}");
    }
    assert!(!control.contains("Depends:"), "a static binary depends on nothing:\n{control}");
    let conffiles = Command::new(common::tool("dpkg-deb")).arg("-I").arg(&deb).arg("conffiles").output().unwrap();
    assert!(conffiles.status.success(), "{}", text(&conffiles));
    let conffiles: BTreeSet<String> = String::from_utf8(conffiles.stdout).unwrap().lines().map(str::to_owned).collect();
    let etc: BTreeSet<String> =
        entries.iter().filter(|(p, m)| p.starts_with("/etc/") && m.starts_with('-')).map(|(p, _)| p.clone()).collect();
    assert_eq!(conffiles, etc, "every file in /etc is a conffile");

    // Every crate linked into the binary is named in the copyright file.
    let tree = Command::new("cargo")
        .args(["tree", "--offline", "--locked", "-e", "normal,no-proc-macro", "--prefix", "none"])
        .args(["--target", "x86_64-unknown-linux-musl", "--format", "{p}"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(tree.status.success(), "cargo tree: {}", text(&tree));
    let copyright = fs::read_to_string(extracted.join("usr/share/doc/harouterd/copyright")).unwrap();
    let crates: BTreeSet<String> = String::from_utf8(tree.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "harouterd")
        .collect();
    assert!(crates.contains("neli") && crates.contains("libc"), "{crates:?}");
    let missing: Vec<&String> = crates.iter().filter(|c| !copyright.contains(&format!("embedded/{c}/*"))).collect();
    assert!(missing.is_empty(), "packaging/deb/copyright does not name {missing:?}");

    let again = TempDir::new("debc2");
    let second = build_deb(again.path());
    assert_eq!(fs::read(&deb).unwrap(), fs::read(&second).unwrap(), "the same inputs give the same package");
}

/// lintian finds nothing (the overrides shipped in the package say why for
/// the two deliberate exceptions).
#[test]
fn lintian_finds_nothing() {
    if static_binary().is_none() || !common::require_root_and(&["dpkg-deb", "lintian"]) {
        return;
    }
    let out = TempDir::new("debl");
    let deb = build_deb(out.path());
    let lint = Command::new(common::tool("lintian")).arg("--fail-on").arg("warning").arg(&deb).output().unwrap();
    let findings: Vec<String> = String::from_utf8_lossy(&lint.stdout)
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:") || l.starts_with("I:"))
        .map(str::to_owned)
        .collect();
    assert!(lint.status.success() && findings.is_empty(), "lintian: {}", text(&lint));
}

/// A private overlay of this machine (see the module's doc). Dropping it
/// kills whatever still runs chrooted in it, then the namespace.
struct ScratchRoot {
    dir: TempDir,
    holder: Child,
}

impl ScratchRoot {
    fn new() -> ScratchRoot {
        let dir = TempDir::new("deb");
        let setup = format!(
            r#"set -e
D='{}'
mount -t tmpfs -o mode=0755 tmpfs "$D"
mkdir "$D/upper" "$D/work" "$D/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$D/upper,workdir=$D/work" "$D/root"
mount --bind /proc "$D/root/proc"
mount --rbind /dev "$D/root/dev"
mount -t tmpfs -o mode=0755 tmpfs "$D/root/run"
mount -t tmpfs -o mode=1777 tmpfs "$D/root/tmp"
echo ready
exec sleep 100000"#,
            dir.path().display()
        );
        let mut command = Command::new(common::tool("unshare"));
        command.args(["--mount", "--propagation", "private", "sh", "-c", &setup]).stdout(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; the sleeper dies with this
        // thread if the test is killed before dropping it.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut holder = command.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let scratch = ScratchRoot { dir, holder };
        assert_eq!(line, "ready\n", "setting up the scratch root failed");
        scratch
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// `sh -c script` in the namespace, outside the chroot (`$ROOT` is the
    /// scratch root, `$UPPER` its upper layer).
    fn outside(&self, script: &str) -> Output {
        Command::new(common::tool("nsenter"))
            .arg("-t")
            .arg(self.holder.id().to_string())
            .args(["-m", "--", "sh", "-c", script])
            .env("ROOT", self.root())
            .env("UPPER", self.dir.join("upper"))
            .output()
            .unwrap()
    }

    /// `sh -c script` chrooted into the scratch root.
    fn sh(&self, script: &str) -> Output {
        Command::new(common::tool("nsenter"))
            .arg("-t")
            .arg(self.holder.id().to_string())
            .args(["-m", "--", "chroot"])
            .arg(self.root())
            .args(["sh", "-c", script])
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .output()
            .unwrap()
    }

    fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(out.status.success(), "`{script}` in the scratch root: {}", text(&out));
        text(&out)
    }

    fn exists(&self, path: &str) -> bool {
        self.sh(&format!("test -e '{path}' || test -L '{path}'")).status.success()
    }

    fn daemon_pid(&self) -> Option<i32> {
        self.sh("cat /run/harouterd.pid")
            .status
            .success()
            .then(|| String::from_utf8(self.sh("cat /run/harouterd.pid").stdout).unwrap().trim().parse().unwrap())
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        let root = self.root();
        if let Ok(procs) = fs::read_dir("/proc") {
            for entry in procs.flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
                if fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|r| r == root) {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 14.4: `dpkg -i` installs a package that enables and starts
/// nothing, whose shipped config passes `check` and whose man pages (the
/// unit's `Documentation=`) resolve; an upgrade leaves a disabled service
/// alone, restarts an enabled one on the new binary (keeping the operator's
/// config), and with a broken config leaves it running; `dpkg -r` stops the
/// daemon and keeps the conffiles; `dpkg --purge` leaves nothing behind.
#[test]
fn dpkg_installs_upgrades_removes_and_purges_cleanly() {
    if static_binary().is_none()
        || !common::require_root_and(&["dpkg-deb", "unshare", "nsenter", "chroot", "systemd-analyze"])
    {
        return;
    }
    let out = TempDir::new("debi");
    let deb = build_deb(out.path());
    let scratch = ScratchRoot::new();
    let prepare = scratch.outside(&format!(
        r#"set -e
cp '{}' "$ROOT/tmp/harouterd.deb"
rm -f "$ROOT/usr/sbin/policy-rc.d"
rm -f "$ROOT/usr/sbin/runlevel"
printf '#!/bin/sh\necho "N 2"\n' > "$ROOT/usr/sbin/runlevel"
chmod 0755 "$ROOT/usr/sbin/runlevel""#,
        deb.display()
    ));
    assert!(prepare.status.success(), "{}", text(&prepare));
    // A harouterd package this machine has is purged from the copy first.
    if scratch
        .sh("dpkg-query -W -f='${Status}' harouterd 2>/dev/null | grep -q ' installed\\| config-files'")
        .status
        .success()
    {
        scratch.sh_ok("dpkg --purge harouterd");
    }

    let installed = scratch.sh_ok("dpkg -i /tmp/harouterd.deb");
    assert!(scratch.sh_ok("dpkg-query -W -f='${Status}' harouterd") == "install ok installed", "{installed}");
    let conffiles = scratch.sh_ok("dpkg-query -W -f='${Conffiles}' harouterd");
    for conffile in ["/etc/harouterd/harouterd.conf", "/etc/init.d/harouterd", "/etc/default/harouterd"] {
        assert!(conffiles.contains(conffile), "{conffile} is not a conffile: {conffiles}");
    }
    assert_eq!(scratch.sh_ok("stat -c '%a %U %G' /var/lib/harouterd").trim(), "755 root root");
    assert!(scratch.daemon_pid().is_none(), "installing started the daemon: {installed}");
    let links = scratch.sh_ok("ls /etc/rc0.d /etc/rc2.d /etc/rc3.d /etc/rc5.d");
    assert!(links.contains("K01harouterd") && !links.contains("S01harouterd"), "registered, not enabled: {links}");

    // The shipped config passes check, quietly.
    let check = scratch.sh("harouterd check -c /etc/harouterd/harouterd.conf");
    assert!(check.status.success() && text(&check).is_empty(), "{}", text(&check));
    // The man pages resolve, for the unit's Documentation= too.
    let unit = scratch.sh_ok("cat /lib/systemd/system/harouterd.service");
    let documentation: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Documentation="))
        .flat_map(str::split_whitespace)
        .filter_map(|d| d.strip_prefix("man:"))
        .collect();
    assert!(documentation.contains(&"harouterd(8)"), "{unit}");
    for page in documentation.iter().chain(&["harouterd.conf(5)"]) {
        let (name, section) = page.trim_end_matches(')').split_once('(').unwrap();
        let found = scratch.sh_ok(&format!("man -w {section} {name}"));
        assert_eq!(found.trim(), format!("/usr/share/man/man{section}/{name}.{section}.gz"));
        let rendered = scratch.sh_ok(&format!("MANWIDTH=80 man {section} {name} 2>&1 | head -3"));
        assert!(rendered.contains(&name.to_uppercase()), "{rendered}");
    }
    scratch.sh_ok("systemd-analyze verify /lib/systemd/system/harouterd.service");

    // The operator's config (a monitor-only router) and a daemon started by
    // hand while the service is disabled.
    let config =
        "[daemon]\nha_vrrp_advert_int = 1\n[router r1]\nha_interface = hrt-none\nvrid = 1\nkeepalived = false\n";
    scratch.sh_ok(&format!("printf '{}' > /etc/harouterd/harouterd.conf", config.replace('\n', "\\n")));
    let started = scratch.sh_ok("/etc/init.d/harouterd start");
    let first = scratch.daemon_pid().expect("pid file");
    assert!(started.contains(&format!("harouterd started (pid {first})")), "{started}");
    scratch.sh_ok("harouterd status -c /etc/harouterd/harouterd.conf");

    let upgraded = scratch.sh_ok("dpkg -i /tmp/harouterd.deb");
    assert_eq!(scratch.daemon_pid(), Some(first), "a disabled service was restarted: {upgraded}");

    scratch.sh_ok("update-rc.d harouterd enable");
    let upgraded = scratch.sh_ok("dpkg -i /tmp/harouterd.deb");
    let second = scratch.daemon_pid().expect("pid file after the upgrade");
    assert_ne!(second, first, "the upgrade did not restart the enabled service: {upgraded}");
    assert!(!alive(first), "the old daemon is still running");
    assert_eq!(scratch.sh_ok("cat /etc/harouterd/harouterd.conf"), config, "the operator's config was replaced");
    scratch.sh_ok("harouterd status -c /etc/harouterd/harouterd.conf");

    scratch.sh_ok("echo 'bogus = 1' >> /etc/harouterd/harouterd.conf");
    let upgraded = scratch.sh_ok("dpkg -i /tmp/harouterd.deb");
    assert!(upgraded.contains("unknown key 'bogus'") && upgraded.contains("not restarted"), "{upgraded}");
    assert_eq!(scratch.daemon_pid(), Some(second), "a broken config stopped the daemon: {upgraded}");
    assert!(alive(second));

    let removed = scratch.sh_ok("dpkg -r harouterd");
    wait_until("the daemon to stop", || !alive(second));
    assert!(removed.contains("harouterd stopped"), "{removed}");
    assert_eq!(scratch.sh_ok("dpkg-query -W -f='${Status}' harouterd"), "deinstall ok config-files");
    assert!(!scratch.exists("/usr/sbin/harouterd") && scratch.exists("/etc/harouterd/harouterd.conf"));

    scratch.sh_ok("dpkg --purge harouterd");
    for gone in ["/etc/harouterd", "/etc/init.d/harouterd", "/etc/default/harouterd", "/var/lib/harouterd"] {
        assert!(!scratch.exists(gone), "{gone} is left after purge");
    }
    let links = scratch.sh_ok("ls /etc/rc0.d /etc/rc1.d /etc/rc2.d /etc/rc3.d /etc/rc4.d /etc/rc5.d /etc/rc6.d");
    assert!(!links.contains("harouterd"), "service links left after purge: {links}");

    // Nothing left: every file in the upper layer is dpkg's bookkeeping, a
    // log or cache, or this test's own change; every directory there
    // exists on this machine (copied up), none is new.
    let upper = scratch.outside(r#"cd "$UPPER" && find . -mindepth 1 -printf '%y %P\n'"#);
    assert!(upper.status.success(), "{}", text(&upper));
    let allowed = ["var/lib/dpkg/", "var/log/", "var/cache/man/", "var/cache/debconf/"];
    let own = ["usr/sbin/policy-rc.d", "usr/sbin/runlevel"];
    let mut left = Vec::new();
    for line in String::from_utf8(upper.stdout).unwrap().lines() {
        let (kind, path) = line.split_once(' ').unwrap();
        if allowed.iter().any(|a| path.starts_with(a)) || own.contains(&path) {
            continue;
        }
        if kind == "d" && Path::new("/").join(path).is_dir() {
            continue;
        }
        left.push(line.to_owned());
    }
    assert!(left.is_empty(), "left behind after purge:\n{}", left.join("\n"));
}
