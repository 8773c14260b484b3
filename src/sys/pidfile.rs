//! A process's own pidfile, held with an exclusive `flock` for its lifetime
//! (SPEC sections 3.2 and 4): the daemon's `--pidfile` and the drop-in
//! monitor's `--pid_file`.
//!
//! Invariant: **the lock is the truth, not the file.** While a [`Pidfile`]
//! exists, this process holds `LOCK_EX` on the open file description, and a
//! second instance started on the same path fails at once, naming the pid
//! written in the file. A file left behind by a crash (or by `kill -9`)
//! carries no lock and is simply taken over; no pid is ever "checked for
//! liveness", so pid reuse cannot fool it.
//!
//! The contents are the decimal pid with no newline, as Neutron writes its
//! pid files (`Pidfile.write` in `neutron/agent/linux/daemon.py`; the shell
//! monitor does `echo -n $$`), so the agent's `ProcessManager` reads ours.
//!
//! The path is opened with [`crate::sys::files::nofollow`]: the monitor's pid file sits
//! in a directory Neutron's agent user owns, and root must not truncate and
//! write a pid into whatever file that user points a symbolic link (or a
//! hard link, or a FIFO) at. The directory descriptor is kept, so the
//! checks after locking and the final unlink name the file in the directory
//! that was checked.
//!
//! The descriptor is close-on-exec: keepalived and conntrackd, spawned by
//! fork+exec, must not inherit the lock (a keepalived outliving a restarted
//! daemon would otherwise keep the daemon from starting). Between fork and
//! exec a child shares the lock, which is harmless: `flock` locks belong to
//! the open file description, and closing a copy does not release them. That
//! is also why dropping a [`Pidfile`] only closes the descriptor and never
//! calls `LOCK_UN`, which would release the lock for the parent too if it ran
//! in a forked child.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::sys::files::nofollow::{self, Access, PathError};

/// What went wrong with a pidfile, always naming it.
#[derive(Debug)]
pub enum PidfileError {
    /// Another process holds the lock: another instance is running. `pid`
    /// is what that instance wrote, `None` if it has not written yet or the
    /// contents are not a pid.
    Held { path: PathBuf, pid: Option<u32> },
    /// Any other failure; `step` says which operation.
    Io { path: PathBuf, step: &'static str, source: io::Error },
    /// The path was refused (a link someone else could have planted, not a
    /// regular file) or could not be opened.
    Open(PathError),
}

impl PidfileError {
    fn io(path: &Path, step: &'static str, source: io::Error) -> PidfileError {
        PidfileError::Io { path: path.to_path_buf(), step, source }
    }

    /// The pidfile concerned.
    pub fn path(&self) -> &Path {
        match self {
            PidfileError::Held { path, .. } | PidfileError::Io { path, .. } => path,
            PidfileError::Open(e) => &e.path,
        }
    }
}

impl fmt::Display for PidfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidfileError::Held { path, pid: Some(pid) } => {
                write!(f, "{} is held by pid {pid}: another instance is running", path.display())
            }
            PidfileError::Held { path, pid: None } => {
                write!(f, "{} is held by another process: another instance is running", path.display())
            }
            PidfileError::Io { path, step, source } => write!(f, "pidfile {}: {step}: {source}", path.display()),
            PidfileError::Open(e) => write!(f, "pidfile {e}"),
        }
    }
}

impl std::error::Error for PidfileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PidfileError::Held { .. } => None,
            PidfileError::Io { source, .. } => Some(source),
            PidfileError::Open(e) => Some(e),
        }
    }
}

/// A locked pidfile holding our pid. Keep it alive as long as the process
/// runs; call [`Pidfile::remove`] on a clean exit.
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    file: File,
    /// The directory the file was found in, and its name there.
    dir: OwnedFd,
    name: OsString,
}

/// How often [`Pidfile::acquire`] retries when the file it locked was
/// unlinked meanwhile by an exiting holder.
const ATTEMPTS: usize = 5;

impl Pidfile {
    /// Opens or creates `path` (mode 0644) without following links others
    /// than root could have planted and refusing anything but a regular file
    /// with one link ([`nofollow::open_file`]), locks it exclusively without
    /// waiting, and replaces its contents with our pid (no newline). The
    /// pid is not fsynced: after a crash the lock is gone with the process,
    /// and nothing trusts a pid from an unlocked file.
    ///
    /// Fails with [`PidfileError::Held`] when another process holds the
    /// lock. Guards against one race: the previous holder may unlink the
    /// file between our `open` and our `flock`, leaving us a lock on a
    /// nameless inode while a third instance creates a fresh file. So after
    /// locking, the path must still name the inode we locked; if not, start
    /// over.
    pub fn acquire(path: &Path) -> Result<Pidfile, PidfileError> {
        for _ in 0..ATTEMPTS {
            let opened =
                nofollow::open_file(path, Access::ReadWrite { create_mode: 0o644 }).map_err(PidfileError::Open)?;
            let pidfile = Pidfile { path: path.to_path_buf(), file: opened.file, dir: opened.dir, name: opened.name };
            lock(&pidfile.file).map_err(|e| match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => {
                    PidfileError::Held { path: path.to_path_buf(), pid: read_pid(&pidfile.file) }
                }
                _ => PidfileError::io(path, "cannot lock", e),
            })?;
            if !pidfile.names_our_file()? {
                continue;
            }
            pidfile.write_our_pid()?;
            return Ok(pidfile);
        }
        Err(PidfileError::io(path, "cannot lock", io::Error::other("the file kept being replaced while locking it")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes this process's pid over the file. Taken before daemonizing
    /// (so "already running" reaches the terminal) and rewritten after: the
    /// lock belongs to the open file, which the forked daemon inherits.
    pub fn write_our_pid(&self) -> Result<(), PidfileError> {
        let pid = std::process::id().to_string();
        self.file.set_len(0).map_err(|e| PidfileError::io(&self.path, "cannot truncate", e))?;
        self.file.write_all_at(pid.as_bytes(), 0).map_err(|e| PidfileError::io(&self.path, "cannot write our pid", e))
    }

    /// Unlinks the file, then releases the lock by closing it: for a clean
    /// exit. Unlinking first means no other instance can lock this inode
    /// and then find it gone. A file that is already gone, or that now names
    /// another inode (someone replaced it), is left alone. Needs write
    /// permission on the directory, which a process that dropped privileges
    /// may have lost: the error then says so, and the stale file is harmless
    /// (it carries no lock).
    pub fn remove(self) -> Result<(), PidfileError> {
        match self.names_our_file() {
            Ok(true) => match unlinkat(&self.dir, self.name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                Err(e) if e != Errno::ENOENT => Err(PidfileError::io(&self.path, "cannot remove", e.into())),
                _ => Ok(()),
            },
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether the name, in the directory it was opened in, still names
    /// the inode we hold; `false` when it is gone (or is now a link).
    fn names_our_file(&self) -> Result<bool, PidfileError> {
        let ours = self.file.metadata().map_err(|e| PidfileError::io(&self.path, "cannot stat the open file", e))?;
        match nix::sys::stat::fstatat(&self.dir, self.name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(now) => Ok(now.st_dev == ours.dev() && now.st_ino == ours.ino()),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(PidfileError::io(&self.path, "cannot stat", e.into())),
        }
    }
}

/// `flock(LOCK_EX | LOCK_NB)`, retried on EINTR. By hand: nix deprecated
/// its `flock` for `Flock`, which unlocks when dropped (see the module docs
/// for why that must never happen here), and std's `File::try_lock` needs
/// a newer Rust than the crate's `rust-version`.
fn lock(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor owned by `file`, valid for the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The pid the holder wrote: leading decimal digits of the first line
/// (tolerates a newline written by other tools). `None` for empty or
/// garbage contents.
fn read_pid(mut file: &File) -> Option<u32> {
    let mut buf = [0u8; 32];
    file.seek(SeekFrom::Start(0)).ok()?;
    let n = file.read(&mut buf).ok()?;
    parse_pid(buf.get(..n)?)
}

fn parse_pid(bytes: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(bytes).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    (pid > 0).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::TempDir;

    #[test]
    fn writes_pid_without_newline_over_stale_contents() {
        let dir = TempDir::new("write");
        let path = dir.join("harouterd.pid");
        std::fs::write(&path, "4294967295\nleftover garbage\n").expect("seed stale");
        let pidfile = Pidfile::acquire(&path).expect("acquire");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), std::process::id().to_string());
        assert_eq!(pidfile.path(), path);
        drop(pidfile);
    }

    #[test]
    fn second_acquire_fails_naming_path_and_pid() {
        let dir = TempDir::new("held");
        let path = dir.join("x.pid");
        let first = Pidfile::acquire(&path).expect("acquire");
        // A second open file description conflicts like another process.
        let err = Pidfile::acquire(&path).expect_err("must be held");
        let pid = std::process::id();
        assert!(matches!(err, PidfileError::Held { pid: Some(p), .. } if p == pid), "{err:?}");
        assert_eq!(err.to_string(), format!("{} is held by pid {pid}: another instance is running", path.display()));
        // The loser did not touch the contents.
        assert_eq!(std::fs::read_to_string(&path).expect("read"), pid.to_string());
        drop(first);
        // Dropping closes, which releases the lock; the file stays.
        assert!(path.exists());
        let again = Pidfile::acquire(&path).expect("re-acquire after drop");
        again.remove().expect("remove");
        assert!(!path.exists());
    }

    #[test]
    fn holder_without_pid_yet() {
        let dir = TempDir::new("nopid");
        let path = dir.join("x.pid");
        let holder = File::create(&path).expect("create");
        lock(&holder).expect("lock");
        let err = Pidfile::acquire(&path).expect_err("must be held");
        assert!(matches!(err, PidfileError::Held { pid: None, .. }), "{err:?}");
        assert!(err.to_string().ends_with("x.pid is held by another process: another instance is running"), "{err}");
    }

    #[test]
    fn descriptor_is_close_on_exec() {
        let dir = TempDir::new("cloexec");
        let pidfile = Pidfile::acquire(&dir.join("x.pid")).expect("acquire");
        let flags = nix::fcntl::fcntl(&pidfile.file, nix::fcntl::FcntlArg::F_GETFD).expect("F_GETFD");
        assert!(flags >= 0 && flags & libc::FD_CLOEXEC != 0, "flags {flags}");
        drop(pidfile);
    }

    #[test]
    fn lock_is_not_inherited_by_exec() {
        // A child exec'd while we hold the lock must not keep it: after the
        // child starts (and while it still runs) the lock is ours alone, and
        // once we drop it, it is free even though the child lives on.
        let dir = TempDir::new("exec");
        let path = dir.join("x.pid");
        let pidfile = Pidfile::acquire(&path).expect("acquire");
        // spawn() returns once exec has succeeded, so the child's file
        // table is final; it then waits for its stdin to close.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("read _")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sh");
        drop(pidfile);
        // Other tests of this process fork children too: one forked while
        // we held the lock shares it until its own exec, a matter of
        // milliseconds. Our child, running until its stdin closes, would
        // hold it for as long as we keep trying.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let reacquired = loop {
            match Pidfile::acquire(&path) {
                Err(PidfileError::Held { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other,
            }
        };
        assert!(child.try_wait().expect("try_wait").is_none(), "the child still runs");
        drop(child.stdin.take());
        child.wait().expect("wait");
        reacquired.expect("lock free while the child still runs");
    }

    #[test]
    fn remove_leaves_a_replaced_file_alone() {
        let dir = TempDir::new("replaced");
        let path = dir.join("x.pid");
        let pidfile = Pidfile::acquire(&path).expect("acquire");
        std::fs::remove_file(&path).expect("unlink");
        std::fs::write(&path, "999").expect("someone else's file");
        pidfile.remove().expect("remove");
        assert_eq!(std::fs::read_to_string(&path).expect("still there"), "999");
        // Already gone is fine too.
        std::fs::remove_file(&path).expect("unlink");
        let pidfile = Pidfile::acquire(&path).expect("acquire");
        std::fs::remove_file(&path).expect("unlink");
        pidfile.remove().expect("remove of a vanished file");
    }

    #[test]
    fn open_failure_names_the_path() {
        let err = Pidfile::acquire(Path::new("/nonexistent-dir/x.pid")).expect_err("must fail");
        assert!(
            err.to_string().starts_with("pidfile /nonexistent-dir/x.pid: cannot open directory /nonexistent-dir: "),
            "{err}"
        );
        assert_eq!(err.path(), Path::new("/nonexistent-dir/x.pid"));
    }

    #[test]
    fn a_planted_symlink_is_refused_and_its_target_untouched() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("planted");
        // Group-writable: a link in it could come from someone else.
        std::fs::set_permissions(&*dir, std::fs::Permissions::from_mode(0o775)).expect("chmod");
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").expect("seed");
        let path = dir.join("x.pid");
        std::os::unix::fs::symlink(&victim, &path).expect("symlink");
        let err = Pidfile::acquire(&path).expect_err("must refuse");
        assert!(matches!(err, PidfileError::Open(_)), "{err:?}");
        assert!(err.to_string().contains("refusing to follow the symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "precious");
    }

    #[test]
    fn pid_parsing() {
        assert_eq!(parse_pid(b"1234"), Some(1234));
        assert_eq!(parse_pid(b"1234\n"), Some(1234));
        assert_eq!(parse_pid(b""), None);
        assert_eq!(parse_pid(b"0"), None);
        assert_eq!(parse_pid(b"12ab"), None);
        assert_eq!(parse_pid(b"99999999999"), None);
        assert_eq!(parse_pid(&[0xff]), None);
    }
}
