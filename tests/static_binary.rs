//! The static musl build (`make static`): it runs where there is no libc
//! and no dynamic loader at all (an empty chroot), and stays under the SPEC
//! size target.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use common::TempDir;

const TARGET_SIZE: u64 = 1536 * 1024;

fn static_binary() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/x86_64-unknown-linux-musl/release/harouterd");
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{} is missing: `make static` must run before the tests", path.display());
    }
    eprintln!("SKIP static binary tests: run `make static` first");
    None
}

#[test]
fn static_binary_is_under_the_size_target() {
    let Some(path) = static_binary() else { return };
    let size = fs::metadata(&path).unwrap().len();
    println!("static binary: {size} bytes ({:.2} MiB)", size as f64 / 1048576.0);
    assert!(size < TARGET_SIZE, "{size} bytes is over the 1.5 MiB target");
    // No program interpreter: nothing to load at run time.
    let bytes = fs::read(&path).unwrap();
    assert!(!bytes.windows(b"ld-linux".len()).any(|w| w == b"ld-linux"), "links a dynamic loader");
}

#[test]
fn static_binary_runs_in_an_empty_chroot() {
    let Some(path) = static_binary() else { return };
    if !common::require_root_and(&["chroot"]) {
        return;
    }
    let root = TempDir::new("chroot");
    fs::copy(&path, root.join("harouterd")).unwrap();
    let run = |args: &[&str]| {
        Command::new(common::tool("chroot")).arg(root.path()).arg("/harouterd").args(args).output().unwrap()
    };
    let out = run(&["--version"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("harouterd {}\n", env!("CARGO_PKG_VERSION")));
    // More than --version: parse and render a config, file I/O included.
    fs::write(root.join("h.conf"), "[router r1]\nha_interface = ha-1\nvrid = 7\nvip = 10.0.0.1/24 dev qr-1\n").unwrap();
    let out = run(&["render", "-c", "/h.conf", "--router", "r1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("        169.254.0.7/24 dev ha-1\n"));
    let entries: Vec<_> = fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries.len(), 2, "the chroot holds only the binary and the config: {entries:?}");
}
