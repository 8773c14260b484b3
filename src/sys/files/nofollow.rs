//! Opening paths that someone else may control, as root, without letting
//! them redirect the open (issue 15): the drop-in monitor's `--pid_file`,
//! `--log-file` and `--conf_dir` live in directories Neutron's agent user
//! owns, and the daemon's own `--pidfile` goes through the same code.
//!
//! The rule: **a symbolic link is followed only where only root could have
//! put it**, that is in a directory owned by uid 0 that is neither group-
//! nor world-writable. `/var/run -> /run` works; a link planted by the agent
//! user in its own directory (or in a sticky `/tmp`) is refused, whether it
//! stands for the file itself or for any directory on the way.
//!
//! How: the path is walked one component at a time from `/` (or the current
//! directory), each directory opened with `openat(O_PATH | O_DIRECTORY |
//! O_NOFOLLOW)` relative to the previous one, so the kernel never resolves a
//! link on our behalf and nothing can be swapped between a check and a use:
//! every check is made on the descriptor that is then used. The file itself
//! is opened relative to its directory with `O_NOFOLLOW`, and then refused
//! unless it is a regular file with a single link (a hard link to a
//! root-only file would otherwise be an alias for it; `O_NONBLOCK` keeps the
//! open of a planted FIFO from hanging before that check).
//!
//! Callers keep the directory descriptor when they later create, rename or
//! unlink in it ([`super::atomic::write_atomic_at`], the pidfile's
//! removal): the name is then resolved in the directory that was checked,
//! not looked up again.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

use super::open_at;
use super::walk::{Entered, Level, Rules, Walk, parts};

/// Why a path was refused or could not be opened; [`PathError`] adds the
/// path that was asked for.
#[derive(Debug)]
pub enum Problem {
    /// A symbolic link in a directory others than root may change.
    UntrustedSymlink {
        link: PathBuf,
        owner: u32,
        mode: u32,
    },
    TooManySymlinks,
    /// A component that must be a directory is something else.
    NotADirectory {
        at: PathBuf,
    },
    /// The file is a FIFO, socket, device or directory.
    NotRegular {
        kind: &'static str,
    },
    /// The file has more than one name.
    HardLinked {
        links: u64,
    },
    /// The path ends in `/`, `.` or `..`.
    NoFileName,
    /// A system call failed; `step` says which, `at` on what.
    Io {
        step: &'static str,
        at: PathBuf,
        source: io::Error,
    },
}

/// A path that could not be opened safely.
#[derive(Debug)]
pub struct PathError {
    pub path: PathBuf,
    pub problem: Problem,
}

impl PathError {
    /// The OS error, when a system call failed.
    pub fn raw_os_error(&self) -> Option<i32> {
        match &self.problem {
            Problem::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match &self.problem {
            Problem::UntrustedSymlink { link, owner, mode } => write!(
                f,
                "{path}: refusing to follow the symbolic link {}: its directory may be changed by others than root \
                 (owner uid {owner}, mode {mode:04o})",
                link.display()
            ),
            Problem::TooManySymlinks => write!(f, "{path}: too many levels of symbolic links"),
            Problem::NotADirectory { at } => write!(f, "{path}: {} is not a directory", at.display()),
            Problem::NotRegular { kind } => write!(f, "{path}: refusing a {kind}: a regular file is expected"),
            Problem::HardLinked { links } => {
                write!(f, "{path}: refusing a file with {links} hard links: it may be another file's alias")
            }
            Problem::NoFileName => write!(f, "{path}: not a file name"),
            Problem::Io { step, at, source } if at == &self.path => write!(f, "{path}: {step}: {source}"),
            Problem::Io { step, at, source } => write!(f, "{path}: {step} {}: {source}", at.display()),
        }
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.problem {
            Problem::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// How [`open_file`] opens the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read and write, created with this mode when missing (a pidfile).
    ReadWrite { create_mode: u32 },
    /// Append-only, created with this mode when missing (a log file).
    Append { create_mode: u32 },
}

/// An opened file, with the directory it was found in and its name there.
#[derive(Debug)]
pub struct Opened {
    pub dir: OwnedFd,
    pub name: OsString,
    pub file: File,
}

const DIR_FLAGS: OFlag = OFlag::O_PATH.union(OFlag::O_DIRECTORY);

/// The rules of a walk through directories others may control: nothing is
/// judged but the symbolic links, followed only in a directory root alone
/// could have put them in ([`trusted`]).
struct Untrusted<'a> {
    /// The path asked for, for errors.
    whole: &'a Path,
}

impl Untrusted<'_> {
    fn io(&self, step: &'static str, at: PathBuf, e: Errno) -> PathError {
        PathError { path: self.whole.to_path_buf(), problem: Problem::Io { step, at, source: e.into() } }
    }

    fn fail(&self, problem: Problem) -> PathError {
        PathError { path: self.whole.to_path_buf(), problem }
    }

    /// `name` in `top` could not be opened without following it: fine only
    /// if it is a link root alone could have made.
    fn check_link(&self, top: &Level, name: &OsStr, want_dir: bool) -> Result<(), PathError> {
        let at = top.shown.join(name);
        let st = fstatat(top.fd.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| self.io("cannot stat", at.clone(), e))?;
        if !is(&st, SFlag::S_IFLNK) {
            return Err(if want_dir {
                self.fail(Problem::NotADirectory { at })
            } else {
                self.io("cannot open", at, Errno::ELOOP)
            });
        }
        let dir = fstat(top.fd.as_fd()).map_err(|e| self.io("cannot stat", top.shown.clone(), e))?;
        if !trusted(&dir) {
            return Err(self.fail(Problem::UntrustedSymlink {
                link: at,
                owner: dir.st_uid,
                mode: dir.st_mode & 0o7777,
            }));
        }
        Ok(())
    }
}

impl Rules for Untrusted<'_> {
    type Error = PathError;

    fn start(&mut self, absolute: bool) -> Result<Level, PathError> {
        let (from, shown) = if absolute { ("/", PathBuf::from("/")) } else { (".", PathBuf::new()) };
        let fd = openat(AT_FDCWD, from, DIR_FLAGS | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| self.io("cannot open", PathBuf::from(from), e))?;
        Ok(Level { fd, shown, shared: false })
    }

    fn enter(&mut self, top: &Level, name: &OsStr, _from_link: bool) -> Result<Entered, PathError> {
        match open_at(top.fd.as_fd(), name, DIR_FLAGS, 0) {
            Ok(fd) => Ok(Entered::Dir(Level { fd, shown: top.shown.join(name), shared: false })),
            Err(Errno::ENOTDIR | Errno::ELOOP) => {
                self.check_link(top, name, true)?;
                Ok(Entered::Link)
            }
            Err(e) => Err(self.io("cannot open directory", top.shown.join(name), e)),
        }
    }

    /// `..` is never a link; it names the real parent.
    fn up(&mut self, stack: &mut Vec<Level>) -> Result<(), PathError> {
        let top = stack.last_mut().expect("a walk always holds its start");
        let at = top.shown.join("..");
        top.fd = openat(top.fd.as_fd(), "..", DIR_FLAGS | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| self.io("cannot open", at, e))?;
        top.shown.push("..");
        Ok(())
    }

    fn read_link(&mut self, top: &Level, name: &OsStr) -> Result<OsString, PathError> {
        readlinkat(top.fd.as_fd(), name).map_err(|e| self.io("cannot read the link", top.shown.join(name), e))
    }

    fn too_many_links(&self, _at: PathBuf) -> PathError {
        self.fail(Problem::TooManySymlinks)
    }
}

fn is(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind
}

/// Whether only root can change the directory `st` describes: owned by
/// uid 0, not writable by group or others.
pub fn trusted(st: &FileStat) -> bool {
    st.st_uid == 0 && st.st_mode & 0o022 == 0
}

/// Opens the directory `path` (for use with the `*at` calls), following
/// only trusted links. The descriptor is `O_PATH`: it names the directory,
/// it does not read it.
pub fn open_dir(path: &Path) -> Result<OwnedFd, PathError> {
    let mut walk = Walk::start(Untrusted { whole: path }, path)?;
    walk.walk(parts(path))?;
    Ok(walk.stack.pop().expect("a walk always holds its start").fd)
}

/// Opens the file `path` as `access` says, creating it if missing, without
/// following any link a non-root user could have planted on the way or at
/// the file itself, and refuses anything but a regular file with one link.
/// The descriptor is close-on-exec, `O_NOCTTY` and `O_NONBLOCK`.
pub fn open_file(path: &Path, access: Access) -> Result<Opened, PathError> {
    let no_name = || PathError { path: path.to_path_buf(), problem: Problem::NoFileName };
    let mut name = file_name(path).ok_or_else(no_name)?;
    let dir = parent(path);
    let mut walk = Walk::start(Untrusted { whole: path }, dir)?;
    walk.walk(parts(dir))?;
    let (flags, mode) = match access {
        Access::ReadWrite { create_mode } => (OFlag::O_RDWR, create_mode),
        Access::Append { create_mode } => (OFlag::O_WRONLY | OFlag::O_APPEND, create_mode),
    };
    let flags = flags | OFlag::O_CREAT | OFlag::O_NONBLOCK;
    loop {
        match open_at(walk.top().fd.as_fd(), name.as_os_str(), flags, mode) {
            Ok(fd) => {
                let file = File::from(fd);
                check_regular(&walk.rules, &file, walk.top().shown.join(&name))?;
                let dir = walk.stack.pop().expect("a walk always holds its start").fd;
                return Ok(Opened { dir, name, file });
            }
            Err(Errno::ELOOP) => {
                // The file itself is a link: follow it only if trusted,
                // resolving its target from the link's directory.
                walk.rules.check_link(walk.top(), &name, false)?;
                let target = PathBuf::from(walk.follow(&name)?);
                let next = file_name(&target).ok_or_else(no_name)?;
                walk.walk(parts(parent(&target)))?;
                name = next;
            }
            Err(e) => return Err(walk.rules.io("cannot open", walk.top().shown.join(&name), e)),
        }
    }
}

fn check_regular(rules: &Untrusted<'_>, file: &File, at: PathBuf) -> Result<(), PathError> {
    let st = fstat(file).map_err(|e| rules.io("cannot stat", at, e))?;
    let kind = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => None,
        SFlag::S_IFDIR => Some("directory"),
        SFlag::S_IFIFO => Some("FIFO"),
        SFlag::S_IFSOCK => Some("socket"),
        SFlag::S_IFCHR => Some("character device"),
        SFlag::S_IFBLK => Some("block device"),
        _ => Some("special file"),
    };
    if let Some(kind) = kind {
        return Err(rules.fail(Problem::NotRegular { kind }));
    }
    if st.st_nlink > 1 {
        // nlink_t is 64 bits on x86_64, 32 on 32-bit targets.
        #[allow(clippy::useless_conversion)]
        let links = u64::from(st.st_nlink);
        return Err(rules.fail(Problem::HardLinked { links }));
    }
    Ok(())
}

/// The last component when it is a name (not `/`, `.` or `..`).
fn file_name(path: &Path) -> Option<OsString> {
    match path.components().next_back()? {
        Component::Normal(name) => Some(name.to_owned()),
        _ => None,
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;
    use std::os::fd::AsFd;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn opens_and_creates_plain_files() {
        let dir = TempDir::new("nofollow-plain");
        let path = dir.join("a.pid");
        let opened = open_file(&path, Access::ReadWrite { create_mode: 0o644 }).expect("create");
        assert_eq!(opened.name, OsString::from("a.pid"));
        assert!(path.exists());
        let opened = open_file(&path, Access::Append { create_mode: 0o644 }).expect("reopen");
        assert_eq!(opened.file.metadata().expect("stat").ino(), std::fs::metadata(&path).expect("stat").ino());
        // Relative paths, `.` and `..` work.
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).expect("mkdir");
        let odd = sub.join("..").join(".").join("b.log");
        open_file(&odd, Access::Append { create_mode: 0o600 }).expect("dotted path");
        assert!(dir.join("b.log").exists());
    }

    #[test]
    fn refuses_a_symlinked_file_in_a_directory_others_may_change() {
        // The test's temp dir is not root-owned when the tests run
        // unprivileged; as root it is made group-writable, which is enough.
        let dir = TempDir::new("nofollow-link");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o775)).expect("chmod");
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").expect("seed");
        let link = dir.join("x.pid");
        symlink(&victim, &link).expect("symlink");
        let err = open_file(&link, Access::ReadWrite { create_mode: 0o644 }).expect_err("must refuse");
        assert!(matches!(err.problem, Problem::UntrustedSymlink { .. }), "{err}");
        assert!(err.to_string().contains("refusing to follow the symbolic link"), "{err}");
        // A dangling link would have created a file.
        let dangling = dir.join("y.log");
        symlink(dir.join("created"), &dangling).expect("symlink");
        open_file(&dangling, Access::Append { create_mode: 0o644 }).expect_err("must refuse");
        assert!(!dir.join("created").exists());
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "precious");
    }

    #[test]
    fn refuses_a_symlinked_directory_in_a_directory_others_may_change() {
        let dir = TempDir::new("nofollow-dirlink");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o775)).expect("chmod");
        std::fs::create_dir(dir.join("real")).expect("mkdir");
        symlink(dir.join("real"), dir.join("pids")).expect("symlink");
        let err = open_file(&dir.join("pids/x.pid"), Access::ReadWrite { create_mode: 0o644 }).expect_err("refuse");
        assert!(matches!(err.problem, Problem::UntrustedSymlink { .. }), "{err}");
        assert!(!dir.join("real/x.pid").exists());
        let err = open_dir(&dir.join("pids")).expect_err("refuse");
        assert!(matches!(err.problem, Problem::UntrustedSymlink { .. }), "{err}");
    }

    #[test]
    fn follows_links_only_root_could_have_made() {
        if !root() {
            return;
        }
        let dir = TempDir::new("nofollow-trusted");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::create_dir(dir.join("real")).expect("mkdir");
        symlink("real", dir.join("run")).expect("symlink");
        symlink("real/file", dir.join("file")).expect("symlink");
        open_file(&dir.join("run/x.pid"), Access::ReadWrite { create_mode: 0o644 }).expect("trusted dir link");
        assert!(dir.join("real/x.pid").exists());
        let opened = open_file(&dir.join("file"), Access::Append { create_mode: 0o644 }).expect("trusted file link");
        assert_eq!(opened.name, OsString::from("file"));
        assert!(dir.join("real/file").exists());
        open_dir(&dir.join("run")).expect("trusted dir link");
    }

    #[test]
    fn refuses_special_files_and_hard_links() {
        let dir = TempDir::new("nofollow-special");
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).expect("mkfifo");
        let err = open_file(&fifo, Access::ReadWrite { create_mode: 0o644 }).expect_err("fifo");
        assert!(matches!(err.problem, Problem::NotRegular { kind: "FIFO" }), "{err}");
        // Write-only, nobody reading: the open itself fails at once.
        let err = open_file(&fifo, Access::Append { create_mode: 0o644 }).expect_err("fifo");
        assert_eq!(err.raw_os_error(), Some(libc::ENXIO), "{err}");
        let err = open_file(Path::new("/dev/null"), Access::Append { create_mode: 0o644 }).expect_err("device");
        assert!(matches!(err.problem, Problem::NotRegular { kind: "character device" }), "{err}");
        let err = open_file(&dir, Access::ReadWrite { create_mode: 0o644 }).expect_err("dir");
        assert!(err.to_string().contains(&dir.display().to_string()), "{err}");
        std::fs::write(dir.join("file"), "x").expect("seed");
        std::fs::hard_link(dir.join("file"), dir.join("alias")).expect("link");
        let err = open_file(&dir.join("alias"), Access::Append { create_mode: 0o644 }).expect_err("alias");
        assert!(matches!(err.problem, Problem::HardLinked { links: 2 }), "{err}");
        let err = open_file(Path::new("/"), Access::Append { create_mode: 0o644 }).expect_err("no name");
        assert!(matches!(err.problem, Problem::NoFileName), "{err}");
    }

    #[test]
    fn missing_directories_name_the_component() {
        let err = open_file(Path::new("/nonexistent-dir/x.pid"), Access::ReadWrite { create_mode: 0o644 })
            .expect_err("missing");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        assert!(
            err.to_string().starts_with("/nonexistent-dir/x.pid: cannot open directory /nonexistent-dir: "),
            "{err}"
        );
        let dir = TempDir::new("nofollow-notdir");
        std::fs::write(dir.join("file"), "x").expect("seed");
        let err = open_dir(&dir.join("file/sub")).expect_err("not a dir");
        assert!(matches!(err.problem, Problem::NotADirectory { .. }), "{err}");
    }

    #[test]
    fn atomic_write_in_a_held_directory() {
        let dir = TempDir::new("nofollow-write");
        let fd = open_dir(&dir).expect("open dir");
        super::super::atomic::write_atomic_at(fd.as_fd(), &dir, OsStr::new("state"), b"primary", 0o644).expect("write");
        super::super::atomic::write_atomic_at(fd.as_fd(), &dir, OsStr::new("state"), b"backup", 0o644)
            .expect("replace");
        assert_eq!(std::fs::read(dir.join("state")).expect("read"), b"backup");
        assert_eq!(std::fs::metadata(dir.join("state")).expect("stat").permissions().mode() & 0o777, 0o644);
        // The directory is renamed away: writes still land in it, not at
        // whatever now has its old name.
        let moved = TempDir::new("nofollow-moved");
        std::fs::rename(&dir, moved.join("d")).expect("rename dir");
        std::fs::create_dir(&*dir).expect("recreate");
        super::super::atomic::write_atomic_at(fd.as_fd(), &dir, OsStr::new("state"), b"primary", 0o644).expect("write");
        assert_eq!(std::fs::read(moved.join("d/state")).expect("read"), b"primary");
        assert!(!dir.join("state").exists());
        let names: Vec<_> =
            std::fs::read_dir(moved.join("d")).expect("ls").map(|e| e.expect("e").file_name()).collect();
        assert_eq!(names, [OsString::from("state")]);
    }
}
