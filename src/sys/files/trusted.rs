//! Directories root may write into (issue 15.4): every directory a path
//! goes through, from `/` down, following symlinks the way the kernel does,
//! must be owned by root (or by the daemon's own uid, which is root in
//! production) and writable by nobody else.
//!
//! The rule, per directory met while resolving the path ([`judge`]):
//! - owned by uid 0 or the daemon's euid, otherwise refused;
//! - not writable by its group or by others, **except** a *shared* directory
//!   like `/tmp`: sticky, root-owned, not the last component, and not itself
//!   below another shared one. Its sticky bit keeps others from renaming or
//!   removing what root creates in it, so the next component (which must
//!   pass the strict rule) cannot be swapped;
//! - a symlink is followed only if the directory holding it passed, and, in
//!   a shared directory, only if root owns the symlink (others could remove
//!   theirs and plant another); its target is checked from `/` again.
//!
//! [`ensure_dir`] walks with directory descriptors (`super::walk`:
//! `openat` with `O_NOFOLLOW` from the checked parent, then `fstat` of what
//! was opened),
//! creates what is missing with an exact mode whatever the umask, and
//! returns the final directory open: callers do their file operations
//! relative to it, so nothing checked can be swapped between the check and
//! the use. The path stays meaningful too (keepalived opens its files by
//! name), because nobody but root can change any directory on it.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};

use super::open_at;
use super::walk::{Entered, Level, Rules, Walk, parts};

/// Why a directory on the path is not trusted.
#[derive(Debug)]
pub enum Reason {
    /// Owned by someone other than root (and the daemon's own uid).
    Owner {
        uid: u32,
    },
    OthersWrite {
        mode: u32,
    },
    GroupWrite {
        mode: u32,
    },
    /// A symlink where a directory must be opened without following one.
    Symlink,
    /// A symlink in a shared (sticky, world-writable) directory not owned
    /// by root: its owner may replace it at any time.
    SymlinkOwner {
        uid: u32,
    },
    NotADirectory,
    TooManySymlinks,
    NotAbsolute,
    Io {
        step: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Owner { uid } => write!(f, "owned by uid {uid}, not root"),
            Reason::OthersWrite { mode } => write!(f, "writable by others (mode {mode:04o})"),
            Reason::GroupWrite { mode } => write!(f, "writable by its group (mode {mode:04o})"),
            Reason::Symlink => f.write_str("a symlink, not a directory (not followed)"),
            Reason::SymlinkOwner { uid } => {
                write!(f, "a symlink owned by uid {uid} in a directory others can write (not followed)")
            }
            Reason::NotADirectory => f.write_str("not a directory"),
            Reason::TooManySymlinks => f.write_str("too many levels of symbolic links"),
            Reason::NotAbsolute => f.write_str("not an absolute path"),
            Reason::Io { step, source } => write!(f, "{step}: {source}"),
        }
    }
}

/// A directory that may not be used: which one, and why.
#[derive(Debug)]
pub struct DirError {
    pub path: PathBuf,
    pub reason: Reason,
}

impl DirError {
    fn new(path: &Path, reason: Reason) -> DirError {
        DirError { path: path.to_path_buf(), reason }
    }

    fn io(path: &Path, step: &'static str, errno: Errno) -> DirError {
        DirError::new(path, Reason::Io { step, source: io::Error::from(errno) })
    }

    /// Whether the directory is refused for what it is (owner, mode, a
    /// symlink...), rather than for an I/O error (a full disk).
    pub fn is_refusal(&self) -> bool {
        !matches!(self.reason, Reason::Io { .. })
    }

    /// Whether the directory (or something on its path) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(&self.reason, Reason::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

impl fmt::Display for DirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for DirError {}

/// The uid besides root whose directories are trusted: our own.
pub fn trusted_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Where a directory sits on the path being checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The directory the path names (not just one on the way to it).
    pub last: bool,
    /// Its parent is a shared directory (see the module documentation).
    pub under_shared: bool,
}

/// The rule for one directory, pure: `Ok(true)` when it is a shared
/// directory (sticky, root-owned, writable by others, allowed only on the
/// way), `Ok(false)` when it is private to root.
pub fn judge(uid: u32, mode: u32, trusted: u32, at: Position) -> Result<bool, Reason> {
    if uid != 0 && uid != trusted {
        return Err(Reason::Owner { uid });
    }
    let mode = mode & 0o7777;
    let writable = mode & 0o022 != 0;
    if !writable {
        return Ok(false);
    }
    let shared = mode & 0o1000 != 0 && uid == 0 && !at.last && !at.under_shared;
    match () {
        _ if shared => Ok(true),
        _ if mode & 0o002 != 0 => Err(Reason::OthersWrite { mode }),
        _ => Err(Reason::GroupWrite { mode }),
    }
}

/// Judges what `fd` is, after it was opened.
fn judge_fd(fd: BorrowedFd<'_>, path: &Path, at: Position) -> Result<bool, DirError> {
    let st = fstat(fd).map_err(|e| DirError::io(path, "fstat", e))?;
    if !is(&st, SFlag::S_IFDIR) {
        return Err(DirError::new(path, Reason::NotADirectory));
    }
    judge(st.st_uid, st.st_mode, trusted_uid(), at).map_err(|reason| DirError::new(path, reason))
}

fn is(st: &FileStat, kind: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == kind.bits()
}

/// Opens `name` in `dir` as a directory without following a symlink.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<OwnedFd, DirError> {
    open_at(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0).map_err(|e| match e {
        Errno::ELOOP => DirError::new(path, Reason::Symlink),
        Errno::ENOTDIR => match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if is(&st, SFlag::S_IFLNK) => DirError::new(path, Reason::Symlink),
            _ => DirError::new(path, Reason::NotADirectory),
        },
        e => DirError::io(path, "open", e),
    })
}

/// Opens `name` in `dir` as a directory (refusing a symlink) and checks it
/// is private to root: owned by root (or us), writable by nobody else.
/// For directories inside an already trusted one (a router's directory).
pub fn open_private_at(dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<OwnedFd, DirError> {
    let fd = open_dir_at(dir, name, path)?;
    judge_fd(fd.as_fd(), path, Position { last: true, under_shared: false })?;
    Ok(fd)
}

/// Checks that `fd` (a directory opened earlier) is still private to root:
/// a directory an administrator later made world-writable is refused.
pub fn still_private(fd: BorrowedFd<'_>, path: &Path) -> Result<(), DirError> {
    judge_fd(fd, path, Position { last: true, under_shared: false }).map(drop)
}

/// Creates `name` in `dir` with exactly `mode` (the umask does not apply)
/// unless it exists; either way opens it without following a symlink.
/// Whoever made it first, what is opened is judged by the caller.
pub fn create_dir_at(dir: BorrowedFd<'_>, name: &OsStr, path: &Path, mode: u32) -> Result<OwnedFd, DirError> {
    let created = match mkdirat(dir, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => true,
        Err(Errno::EEXIST) => false,
        Err(e) => return Err(DirError::io(path, "mkdir", e)),
    };
    let fd = open_dir_at(dir, name, path)?;
    if created {
        fchmod(fd.as_fd(), Mode::from_bits_truncate(mode & 0o7777)).map_err(|e| DirError::io(path, "chmod", e))?;
    }
    Ok(fd)
}

/// Checks every directory `path` goes through and returns the final one
/// open, creating missing components with `mode` (exactly). Nothing is
/// created when `mode` is `None`, nor ever inside a symlink's target.
pub fn ensure_dir(path: &Path, mode: Option<u32>) -> Result<OwnedFd, DirError> {
    if !path.is_absolute() {
        return Err(DirError::new(path, Reason::NotAbsolute));
    }
    let mut walk = Walk::start(Checked { create: mode }, path)?;
    walk.walk(parts(path))?;
    // Each directory was judged as one on the way; the one asked for must
    // also pass as the last (a shared directory may not be it).
    let under_shared = walk.stack.len() >= 2 && walk.stack[walk.stack.len() - 2].shared;
    let last = walk.stack.pop().expect("a walk always holds its start");
    judge_fd(last.fd.as_fd(), &last.shown, Position { last: true, under_shared })?;
    Ok(last.fd)
}

/// Checks without creating anything (`ensure_dir(path, None)`).
pub fn check_dir(path: &Path) -> Result<OwnedFd, DirError> {
    ensure_dir(path, None)
}

/// The rules of [`ensure_dir`]'s walk: every directory is judged (from
/// `/` down, link targets included), a symlink is followed (in a shared
/// directory only if root owns it), and what is missing is created.
struct Checked {
    create: Option<u32>,
}

impl Rules for Checked {
    type Error = DirError;

    fn start(&mut self, _absolute: bool) -> Result<Level, DirError> {
        let here = PathBuf::from("/");
        let fd = nix::fcntl::open("/", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| DirError::io(&here, "open", e))?;
        let shared = judge_fd(fd.as_fd(), &here, Position { last: false, under_shared: false })?;
        Ok(Level { fd, shown: here, shared })
    }

    fn enter(&mut self, top: &Level, name: &OsStr, from_link: bool) -> Result<Entered, DirError> {
        let next = top.shown.join(name);
        let create = self.create.filter(|_| !from_link);
        let st = match fstatat(top.fd.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::ENOENT) if create.is_some() => None,
            Err(e) => return Err(DirError::io(&next, "stat", e)),
        };
        let child = match st {
            Some(st) if is(&st, SFlag::S_IFLNK) => {
                if top.shared && st.st_uid != 0 && st.st_uid != trusted_uid() {
                    return Err(DirError::new(&next, Reason::SymlinkOwner { uid: st.st_uid }));
                }
                return Ok(Entered::Link);
            }
            Some(st) if !is(&st, SFlag::S_IFDIR) => return Err(DirError::new(&next, Reason::NotADirectory)),
            Some(_) => open_dir_at(top.fd.as_fd(), name, &next)?,
            None => create_dir_at(top.fd.as_fd(), name, &next, create.unwrap_or(0o755))?,
        };
        let shared = judge_fd(child.as_fd(), &next, Position { last: false, under_shared: top.shared })?;
        Ok(Entered::Dir(Level { fd: child, shown: next, shared }))
    }

    /// `..` of a canonical directory is the one before it (of `/`, `/`).
    fn up(&mut self, stack: &mut Vec<Level>) -> Result<(), DirError> {
        if stack.len() > 1 {
            stack.pop();
        }
        Ok(())
    }

    fn read_link(&mut self, top: &Level, name: &OsStr) -> Result<OsString, DirError> {
        readlinkat(top.fd.as_fd(), name).map_err(|e| DirError::io(&top.shown.join(name), "readlink", e))
    }

    fn too_many_links(&self, at: PathBuf) -> DirError {
        DirError::new(&at, Reason::TooManySymlinks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const ON_THE_WAY: Position = Position { last: false, under_shared: false };
    const LAST: Position = Position { last: true, under_shared: false };
    const UNDER_SHARED: Position = Position { last: false, under_shared: true };

    #[test]
    fn the_rule() {
        let me = 1000;
        assert!(matches!(judge(0, 0o755, me, LAST), Ok(false)));
        assert!(matches!(judge(0, 0o700, me, ON_THE_WAY), Ok(false)));
        assert!(matches!(judge(me, 0o755, me, LAST), Ok(false)), "our own uid is trusted");
        assert!(matches!(judge(65534, 0o755, me, LAST), Err(Reason::Owner { uid: 65534 })));
        assert!(matches!(judge(0, 0o777, me, LAST), Err(Reason::OthersWrite { mode: 0o777 })));
        assert!(matches!(judge(0, 0o775, me, ON_THE_WAY), Err(Reason::GroupWrite { mode: 0o775 })));
        assert!(matches!(judge(0, 0o2775, me, ON_THE_WAY), Err(Reason::GroupWrite { .. })), "setgid is not sticky");
        // /tmp: shared on the way, never as the directory itself, never twice.
        assert!(matches!(judge(0, 0o1777, me, ON_THE_WAY), Ok(true)));
        assert!(matches!(judge(0, 0o1777, me, LAST), Err(Reason::OthersWrite { .. })));
        assert!(matches!(judge(0, 0o1777, me, UNDER_SHARED), Err(Reason::OthersWrite { .. })));
        assert!(matches!(judge(0, 0o755, me, UNDER_SHARED), Ok(false)));
        // Sticky but owned by someone else (even us): not shared.
        assert!(matches!(judge(me, 0o1777, me, ON_THE_WAY), Err(Reason::OthersWrite { .. })));
    }

    fn mkdir(path: &Path, mode: u32) {
        std::fs::create_dir(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_with_exact_modes_and_refuses_unsafe_components() {
        let dir = crate::test_support::TempDir::new("trusted");
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Made 0700 first, then given the mode: 0751 shows the chmod ran
        // (no umask turns 0700 into 0751).
        ensure_dir(&dir.join("a/b"), Some(0o751)).unwrap();
        assert_eq!((mode_of(&dir.join("a")), mode_of(&dir.join("a/b"))), (0o751, 0o751));
        ensure_dir(&dir.join("a/b"), Some(0o700)).unwrap();
        assert_eq!(mode_of(&dir.join("a/b")), 0o751, "an existing directory keeps its mode");

        mkdir(&dir.join("open"), 0o777);
        let e = ensure_dir(&dir.join("open/x"), Some(0o755)).unwrap_err();
        assert_eq!(e.to_string(), format!("{}: writable by others (mode 0777)", dir.join("open").display()));
        assert!(!dir.join("open/x").exists(), "nothing created below a refused directory");

        mkdir(&dir.join("sticky"), 0o1777);
        let e = check_dir(&dir.join("sticky")).unwrap_err();
        assert!(matches!(e.reason, Reason::OthersWrite { .. } | Reason::Owner { .. }), "{e}");

        let e = check_dir(&dir.join("missing")).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        std::fs::write(dir.join("file"), "").unwrap();
        assert!(matches!(check_dir(&dir.join("file")).unwrap_err().reason, Reason::NotADirectory));
        assert!(matches!(check_dir(Path::new("relative")).unwrap_err().reason, Reason::NotAbsolute));
    }

    #[test]
    fn symlinks_are_followed_and_their_targets_checked() {
        let dir = crate::test_support::TempDir::new("trusted-links");
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        mkdir(&dir.join("real"), 0o755);
        std::os::unix::fs::symlink("real", dir.join("rel")).unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("abs")).unwrap();
        std::os::unix::fs::symlink("../real", dir.join("real").join("up")).unwrap();
        for via in ["rel", "abs", "real/up"] {
            check_dir(&dir.join(via)).unwrap_or_else(|e| panic!("{via}: {e}"));
        }
        // A symlink into an unsafe directory: the target's chain is judged.
        mkdir(&dir.join("open"), 0o777);
        mkdir(&dir.join("open/inner"), 0o755);
        std::os::unix::fs::symlink(dir.join("open/inner"), dir.join("sneaky")).unwrap();
        let e = check_dir(&dir.join("sneaky")).unwrap_err();
        assert_eq!(e.path, dir.join("open"), "{e}");
        std::os::unix::fs::symlink("loop", dir.join("loop")).unwrap();
        assert!(matches!(check_dir(&dir.join("loop")).unwrap_err().reason, Reason::TooManySymlinks));
    }

    #[test]
    fn open_private_at_refuses_symlinks_and_foreign_directories() {
        let dir = crate::test_support::TempDir::new("trusted-at");
        let fd = nix::fcntl::open(&dir.0, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        mkdir(&dir.join("r1"), 0o755);
        open_private_at(fd.as_fd(), OsStr::new("r1"), &dir.join("r1")).unwrap();
        std::os::unix::fs::symlink(dir.join("r1"), dir.join("r2")).unwrap();
        let e = open_private_at(fd.as_fd(), OsStr::new("r2"), &dir.join("r2")).unwrap_err();
        assert_eq!(e.to_string(), format!("{}: a symlink, not a directory (not followed)", dir.join("r2").display()));
        mkdir(&dir.join("r3"), 0o757);
        let e = open_private_at(fd.as_fd(), OsStr::new("r3"), &dir.join("r3")).unwrap_err();
        assert!(matches!(e.reason, Reason::OthersWrite { mode: 0o757 }), "{e}");
    }
}
