//! Atomic replacement of small files: a router's `state` file and its
//! `keepalived.conf` (SPEC section 3.2).
//!
//! Invariant: **a reader of the target sees either the old complete file or
//! the new complete file, never a torn or empty one.** Neutron's agent and
//! operators read `state` at any moment, and keepalived re-reads its config
//! on SIGHUP. The recipe: write a temporary file in the same directory (so
//! `rename` stays on one filesystem) and `rename` it over the target.
//!
//! Across a crash of the machine (power loss) the invariant holds for
//! [`write_atomic_at`], which `fdatasync`s the temporary file before the
//! rename. [`replace_at`] does not sync at all: it is for the `state` file,
//! written after the agent was notified and synced later, off the path of
//! any notification ([`sync_at`], on the caller's schedule:
//! [`crate::core::sync_later`]), and for the daemon's router files, which
//! it renders again and compares at every start before keepalived runs
//! ([`super::confs::RouterDir::write`]). Until a sync, a crash of the machine
//! leaves on ext4 (data=ordered with `auto_da_alloc`, its defaults) the old
//! or the new complete file when an old one was replaced (the rename's
//! commit waits for the new file's data), and on other filesystems, or for
//! a file created for the first time, possibly an empty file or none. The
//! daemon and the monitor re-derive every state from the kernel at start
//! and write it again at once, so such a file lives until then only.
//!
//! The directory is deliberately not synced: that would make the rename
//! itself durable, but after a crash either the old or the new complete file
//! is there, both valid, and the state is re-derived at start anyway.
//!
//! Failures (a full disk, a read-only or foreign-owned directory) are
//! returned with the target path and the step that failed, and never leave
//! the temporary file behind. The file gets exactly `mode`, whatever the
//! umask (`fchmod` after creation), because modes here carry meaning: 0600
//! keeps the VRRP password private, 0520 makes the health-check script
//! executable by keepalived only.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, renameat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::{is_plain_name, open_at};

/// The step of [`write_atomic`] that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The target has no file name (`/`, `..`, empty).
    CheckPath,
    CreateTemp,
    SetMode,
    Write,
    SyncTemp,
    Rename,
}

impl Step {
    fn describe(self) -> &'static str {
        match self {
            Step::CheckPath => "checking the path",
            Step::CreateTemp => "creating the temporary file",
            Step::SetMode => "setting the mode of the temporary file",
            Step::Write => "writing the temporary file",
            Step::SyncTemp => "syncing the temporary file",
            Step::Rename => "renaming the temporary file over it",
        }
    }
}

/// A failed atomic write: which file, which step, what the OS said.
#[derive(Debug)]
pub struct StateFileError {
    /// The file being replaced.
    pub path: PathBuf,
    /// The temporary file, when one was involved (already removed).
    pub temp: Option<PathBuf>,
    pub step: Step,
    pub source: io::Error,
}

impl fmt::Display for StateFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot write {}: {}", self.path.display(), self.step.describe())?;
        if let Some(temp) = &self.temp {
            write!(f, " {}", temp.display())?;
        }
        write!(f, ": {}", self.source)
    }
}

impl std::error::Error for StateFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The temporary file's name for `name`: `.NAME.tmp.PID`, hidden, and
/// unique per process (callers are single-threaded and write one file at a
/// time). A leftover of that name can only come from an earlier process
/// with our pid that crashed between create and rename.
fn temp_name(name: &OsStr) -> OsString {
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(".tmp.{}", std::process::id()));
    temp
}

/// The directory of `path` (`.` for a bare name) and the temporary file
/// `.NAME.tmp.PID` in it; `None` when `path` has no file name.
fn temp_path(path: &Path) -> Option<(PathBuf, PathBuf)> {
    let name = path.file_name()?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Some((dir.to_path_buf(), dir.join(temp_name(name))))
}

/// Replaces `path` with `contents`, atomically, with permission bits
/// exactly `mode`: [`write_atomic_at`] in the directory `path` names.
///
/// The new file is owned by the caller's effective uid/gid; writing needs
/// write and search permission on the directory, not on the old file.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), StateFileError> {
    let Some((dir, temp)) = temp_path(path) else {
        let source = io::Error::new(io::ErrorKind::InvalidInput, "no file name");
        return Err(StateFileError { path: path.to_path_buf(), temp: None, step: Step::CheckPath, source });
    };
    let name = path.file_name().unwrap_or_default();
    let dir_fd =
        nix::fcntl::open(&dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(
            |e| StateFileError { path: path.to_path_buf(), temp: Some(temp), step: Step::CreateTemp, source: e.into() },
        )?;
    write_atomic_at(dir_fd.as_fd(), &dir, name, contents, mode)
}

/// Removes `dir/name` unless disarmed: every early return before the
/// rename cleans up, whichever step failed.
struct TempGuard<'a> {
    dir: BorrowedFd<'a>,
    name: &'a OsStr,
    armed: bool,
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = unlinkat(self.dir, self.name, UnlinkatFlags::NoRemoveDir);
        }
    }
}

/// Creates the temporary file exclusively, without following a symlink
/// planted at its name; a leftover of the same name is removed and
/// creation retried once.
fn create_temp_at(dir: BorrowedFd<'_>, temp: &OsStr, mode: u32) -> io::Result<File> {
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
    let open = || open_at(dir, temp, flags, mode).map(File::from);
    match open() {
        Err(nix::errno::Errno::EEXIST) => {
            unlinkat(dir, temp, UnlinkatFlags::NoRemoveDir)?;
            open().map_err(io::Error::from)
        }
        other => other.map_err(io::Error::from),
    }
}

/// Replaces the file `name` in the open directory `dir` (`dir_path` names
/// it in errors) with `contents`, atomically, with permission bits exactly
/// `mode`: the temporary file is created `O_EXCL|O_NOFOLLOW`, written,
/// `fdatasync`ed and renamed over `name`, and removed on failure. Every
/// step is relative to `dir`, so a directory swapped for a symlink after
/// `dir` was opened and checked cannot redirect the write (issue 15.4).
pub fn write_atomic_at(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &OsStr,
    contents: &[u8],
    mode: u32,
) -> Result<(), StateFileError> {
    write_at(dir, dir_path, name, contents, mode, true)
}

/// [`write_atomic_at`] without the `fdatasync`: the new file replaces the
/// old one as atomically for every reader, but is durable only once the
/// caller has [`sync_at`] it (see the module docs for what a crash leaves
/// before that). A few microseconds where a sync takes milliseconds.
pub fn replace_at(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &OsStr,
    contents: &[u8],
    mode: u32,
) -> Result<(), StateFileError> {
    write_at(dir, dir_path, name, contents, mode, false)
}

fn write_at(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &OsStr,
    contents: &[u8],
    mode: u32,
    sync: bool,
) -> Result<(), StateFileError> {
    let path = dir_path.join(name);
    let temp = temp_name(name);
    let temp_path = dir_path.join(&temp);
    let fail = |step, with_temp: bool, source| StateFileError {
        path: path.clone(),
        temp: with_temp.then(|| temp_path.clone()),
        step,
        source,
    };
    if !is_plain_name(name) {
        return Err(fail(Step::CheckPath, false, io::Error::new(io::ErrorKind::InvalidInput, "not a file name")));
    }
    let mut file = create_temp_at(dir, &temp, mode).map_err(|e| fail(Step::CreateTemp, true, e))?;
    let mut guard = TempGuard { dir, name: &temp, armed: true };
    file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777)).map_err(|e| fail(Step::SetMode, true, e))?;
    file.write_all(contents).map_err(|e| fail(Step::Write, true, e))?;
    if sync {
        file.sync_data().map_err(|e| fail(Step::SyncTemp, true, e))?;
    }
    drop(file);
    renameat(dir, &*temp, dir, name).map_err(|e| fail(Step::Rename, true, e.into()))?;
    guard.armed = false;
    Ok(())
}

/// Makes the file `name` in `dir` durable (`fdatasync`), for a file
/// written with [`replace_at`]; whatever replaced it since is synced
/// instead, which is what matters. Never follows a symlink.
pub fn sync_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let file = File::from(open_at(dir, name, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0)?);
    file.sync_data()
}

/// The first `limit` bytes of the file `name` in `dir`, opened without
/// following a symlink (a symlink is an error, `ELOOP`).
pub fn read_at(dir: BorrowedFd<'_>, name: &OsStr, limit: u64) -> io::Result<Vec<u8>> {
    if !is_plain_name(name) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a file name"));
    }
    let file = File::from(open_at(dir, name, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0)?);
    let mut out = Vec::new();
    file.take(limit).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::TempDir;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
    }

    #[test]
    fn writes_new_file_without_newline_and_no_leftovers() {
        let dir = TempDir::new("new");
        let path = dir.join("state");
        write_atomic(&path, b"primary", 0o644).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"primary");
        assert_eq!(entries(&dir), ["state"]);
    }

    #[test]
    fn replaces_existing_file_and_sets_exact_mode_despite_umask() {
        let dir = TempDir::new("replace");
        let path = dir.join("keepalived.conf");
        std::fs::write(&path, "old contents that are longer").expect("seed");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_atomic(&path, b"global_defs {\n}", 0o600).expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "global_defs {\n}");
        assert_eq!(mode_of(&path), 0o600);
        // 0520 has group write, which the usual umask 022 would strip.
        let script = dir.join("ha_check_script_1.sh");
        write_atomic(&script, b"#!/bin/sh\n", 0o520).expect("write script");
        assert_eq!(mode_of(&script), 0o520);
        assert_eq!(entries(&dir), ["ha_check_script_1.sh", "keepalived.conf"]);
    }

    #[test]
    fn stale_temp_file_of_same_name_is_replaced() {
        let dir = TempDir::new("stale");
        let stale = dir.join(format!(".state.tmp.{}", std::process::id()));
        std::fs::write(&stale, "half-written").expect("seed stale");
        write_atomic(&dir.join("state"), b"backup", 0o644).expect("write");
        assert_eq!(entries(&dir), ["state"]);
    }

    #[test]
    fn symlink_at_temp_name_is_not_followed() {
        let dir = TempDir::new("symlink");
        let victim = dir.join("victim");
        std::fs::write(&victim, "untouched").expect("seed victim");
        let planted = dir.join(format!(".state.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).expect("symlink");
        write_atomic(&dir.join("state"), b"fault", 0o644).expect("write");
        assert_eq!(std::fs::read_to_string(&victim).expect("read victim"), "untouched");
        assert_eq!(std::fs::read_to_string(dir.join("state")).expect("read"), "fault");
    }

    #[test]
    fn missing_directory_reports_path_and_step() {
        let dir = TempDir::new("missing");
        let path = dir.join("no-such-router").join("state");
        let err = write_atomic(&path, b"primary", 0o644).expect_err("must fail");
        assert_eq!(err.step, Step::CreateTemp);
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
        let text = err.to_string();
        assert!(text.starts_with(&format!("cannot write {}: creating the temporary file ", path.display())), "{text}");
    }

    #[test]
    fn rename_failure_removes_temp_file() {
        // The target is a non-empty directory: rename(2) fails after the
        // temporary file was written and synced.
        let dir = TempDir::new("rename");
        let path = dir.join("state");
        std::fs::create_dir(&path).expect("mkdir");
        std::fs::write(path.join("keep"), "x").expect("seed");
        let err = write_atomic(&path, b"primary", 0o644).expect_err("must fail");
        assert_eq!(err.step, Step::Rename);
        assert_eq!(entries(&dir), ["state"]);
    }

    #[test]
    fn no_file_name_is_an_error() {
        let err = write_atomic(Path::new("/"), b"x", 0o644).expect_err("must fail");
        assert_eq!(err.step, Step::CheckPath);
        assert!(err.to_string().starts_with("cannot write /: checking the path"), "{err}");
    }

    #[test]
    fn temp_file_sits_beside_the_target() {
        let pid = std::process::id();
        assert_eq!(
            temp_path(Path::new("/var/lib/h/r1/state")),
            Some((PathBuf::from("/var/lib/h/r1"), PathBuf::from(format!("/var/lib/h/r1/.state.tmp.{pid}"))))
        );
        // A bare name lives in the current directory, which is then synced.
        assert_eq!(
            temp_path(Path::new("state")),
            Some((PathBuf::from("."), PathBuf::from(format!("./.state.tmp.{pid}"))))
        );
        assert_eq!(temp_path(Path::new("/")), None);
        assert_eq!(temp_path(Path::new("a/..")), None);
    }

    /// A real full disk: a one-page tmpfs mounted in a mount namespace private
    /// to this test's thread (mount namespaces are per thread until exec), so
    /// nothing shows outside and nothing needs unmounting on failure.
    #[test]
    fn full_disk_is_reported_and_cleaned_up() {
        if !nix::unistd::geteuid().is_root() {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "full_disk test needs root (CI=true: failing)");
            eprintln!("SKIP full_disk_is_reported_and_cleaned_up: needs root");
            return;
        }
        let dir = TempDir::new("full");
        let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
        let (root, tmpfs, opts) = (c("/"), c("tmpfs"), c("size=4k,mode=0755"));
        let target = c(dir.to_str().expect("utf-8 temp dir"));
        // SAFETY: plain syscalls with valid NUL-terminated strings; unshare
        // affects only this thread's view of mounts.
        unsafe {
            assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0, "unshare: {}", io::Error::last_os_error());
            let private = libc::MS_REC | libc::MS_PRIVATE;
            assert_eq!(libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), private, std::ptr::null()), 0);
            let rc = libc::mount(tmpfs.as_ptr(), target.as_ptr(), tmpfs.as_ptr(), 0, opts.as_ptr().cast());
            assert_eq!(rc, 0, "mount tmpfs: {}", io::Error::last_os_error());
        }
        let path = dir.join("keepalived.conf");
        let err = write_atomic(&path, &vec![b'x'; 256 * 1024], 0o600).expect_err("disk is full");
        assert_eq!(err.step, Step::Write);
        assert_eq!(err.source.raw_os_error(), Some(libc::ENOSPC));
        assert!(err.to_string().contains("No space left on device"), "{err}");
        assert!(entries(&dir).is_empty(), "temp file left behind: {:?}", entries(&dir));
        // A small write still fits afterwards.
        write_atomic(&dir.join("state"), b"backup", 0o644).expect("small write");
        assert_eq!(entries(&dir), ["state"]);
        // SAFETY: unmounts what this test mounted, in its own namespace.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }

    fn open_dir(path: &Path) -> std::os::fd::OwnedFd {
        nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).expect("open dir")
    }

    #[test]
    fn write_at_replaces_with_exact_mode_and_no_leftovers() {
        let dir = TempDir::new("at");
        let fd = open_dir(&dir);
        std::fs::write(dir.join("keepalived.conf"), "old").expect("seed");
        write_atomic_at(fd.as_fd(), &dir, OsStr::new("keepalived.conf"), b"new", 0o600).expect("write");
        write_atomic_at(fd.as_fd(), &dir, OsStr::new("ha_check_script_1.sh"), b"#!/bin/sh", 0o520).expect("write");
        assert_eq!(std::fs::read(dir.join("keepalived.conf")).expect("read"), b"new");
        assert_eq!((mode_of(&dir.join("keepalived.conf")), mode_of(&dir.join("ha_check_script_1.sh"))), (0o600, 0o520));
        assert_eq!(entries(&dir), ["ha_check_script_1.sh", "keepalived.conf"]);
        assert_eq!(read_at(fd.as_fd(), OsStr::new("keepalived.conf"), 2).expect("read"), b"ne");
    }

    /// The directory was opened, then swapped for a symlink to another one:
    /// the write still lands in the directory that was opened.
    #[test]
    fn write_at_ignores_a_directory_swapped_after_opening() {
        let dir = TempDir::new("at-swap");
        let (router, victim) = (dir.join("r1"), dir.join("victim"));
        std::fs::create_dir(&router).expect("mkdir");
        std::fs::create_dir(&victim).expect("mkdir");
        let fd = open_dir(&router);
        std::fs::rename(&router, dir.join("r1.moved")).expect("move");
        std::os::unix::fs::symlink(&victim, &router).expect("symlink");
        write_atomic_at(fd.as_fd(), &router, OsStr::new("state"), b"primary", 0o644).expect("write");
        assert!(entries(&victim).is_empty(), "written through the symlink");
        assert_eq!(std::fs::read(dir.join("r1.moved").join("state")).expect("read"), b"primary");
    }

    #[test]
    fn at_variants_refuse_symlinks_and_paths() {
        let dir = TempDir::new("at-refuse");
        let fd = open_dir(&dir);
        std::fs::write(dir.join("victim"), "untouched").expect("seed");
        std::os::unix::fs::symlink(dir.join("victim"), dir.join("link")).expect("symlink");
        let e = read_at(fd.as_fd(), OsStr::new("link"), 64).expect_err("a symlink");
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        let planted = format!(".state.tmp.{}", std::process::id());
        std::os::unix::fs::symlink(dir.join("victim"), dir.join(&planted)).expect("symlink");
        write_atomic_at(fd.as_fd(), &dir, OsStr::new("state"), b"fault", 0o644).expect("write");
        assert_eq!(std::fs::read_to_string(dir.join("victim")).expect("read"), "untouched");
        for bad in ["", ".", "..", "a/b", "../state"] {
            let e = write_atomic_at(fd.as_fd(), &dir, OsStr::new(bad), b"x", 0o644).expect_err(bad);
            assert_eq!(e.step, Step::CheckPath, "{bad}");
        }
        std::fs::create_dir(dir.join("sub")).expect("mkdir");
        std::fs::write(dir.join("sub").join("keep"), "x").expect("seed");
        let e = write_atomic_at(fd.as_fd(), &dir, OsStr::new("sub"), b"x", 0o644).expect_err("a directory");
        assert_eq!(e.step, Step::Rename);
        assert!(e.to_string().starts_with(&format!("cannot write {}: renaming", dir.join("sub").display())), "{e}");
        assert_eq!(
            entries(&dir),
            ["link", "state", "sub", "victim"],
            "the planted temp name was replaced, not followed"
        );
    }
}
