//! Links the release binary with the code a running `state-change` monitor
//! executes laid out first and together (issue 13, SPEC 5: PSS per monitor
//! with ten running). A node runs one monitor per router, each paying for
//! the pages of the binary it keeps mapped; the kernel maps code 64 KiB
//! around each page touched (fault-around), so a few hundred functions
//! scattered over a megabyte of code map nearly all of it. Ordered, they fit
//! in about 150 KiB.
//!
//! The list, `packaging/order/TARGET.txt`, names the symbols a profile of a
//! monitor executed after its start-up (`make monitor-order`, which runs one
//! under callgrind). Symbol names carry hashes of the toolchain and of the
//! crate's version: a name the linker does not find is skipped, so a stale
//! list costs memory, never correctness (`make bench` shows the PSS; remake
//! the list after a toolchain or version change).
//!
//! Only release builds of the `harouterd` binary, and only with LLD: with
//! rustc's default for the target (`cc` with LLD for x86_64 glibc) through
//! `-Wl,`, with `rust-lld` itself directly (the Makefile links the musl
//! targets with it); GNU ld knows no ordering file.

use std::env;
use std::path::Path;

/// The minor version of the compiler building us (0 when unknown).
fn rustc_minor() -> u32 {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = std::process::Command::new(rustc).arg("-V").output() else { return 0 };
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1).and_then(|v| v.split('.').nth(1)?.parse().ok()).unwrap_or(0)
}

fn main() {
    let target = env::var("TARGET").unwrap_or_default();
    let list = Path::new("packaging/order").join(format!("{target}.txt"));
    println!("cargo:rerun-if-changed={}", list.display());
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    if env::var("PROFILE").as_deref() != Ok("release") || !list.is_file() {
        return;
    }
    let Ok(dir) = env::var("CARGO_MANIFEST_DIR") else { return };
    let list = Path::new(&dir).join(list);
    let linker = env::var("RUSTC_LINKER").unwrap_or_default();
    let direct_lld = Path::new(&linker).file_name().is_some_and(|n| n == "rust-lld" || n == "ld.lld");
    let prefix = if direct_lld {
        ""
    } else if linker.is_empty() && target == "x86_64-unknown-linux-gnu" && rustc_minor() >= 90 {
        // Since Rust 1.90 rustc links x86_64 glibc with `cc -fuse-ld=lld`.
        "-Wl,"
    } else {
        return;
    };
    println!("cargo:rustc-link-arg-bins={prefix}--symbol-ordering-file={}", list.display());
    println!("cargo:rustc-link-arg-bins={prefix}--no-warn-symbol-ordering");
}
