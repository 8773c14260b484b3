//! A router's file operations in `ha_confs_path` (issue 15.4): the
//! directory is opened once, after [`super::trusted`] checked every
//! directory down to it, and each router's directory is opened from it with
//! `O_NOFOLLOW` and checked to be root's alone ([`HaConfs::router_dir_fd`]).
//! A router directory swapped for a symlink is refused, never followed;
//! files in it are written, read and removed with `openat`/`renameat`/
//! `unlinkat` on names, never on paths. Where the files are is the pure
//! [`Layout`]'s.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::atomic::{self, StateFileError};
use super::trusted::{self, DirError};
use super::{open_at, sync_state, write_state};
use crate::config::DaemonConfig;
use crate::core::ident::RouterId;
use crate::core::layout::{DIR_MODE, Layout, ROUTER_DIR_MODE, STATE_FILE};
use crate::core::state::State;

/// `ha_confs_path` and the router files in it.
#[derive(Clone, Debug)]
pub struct HaConfs {
    layout: Layout,
    /// `ha_confs_path`, opened once its path was checked; `None` for one
    /// that opens it by path when a file operation needs it (tests, tools).
    dir: Option<Arc<OwnedFd>>,
}

/// A router file operation that failed: the directory, or the file in it.
#[derive(Debug)]
pub enum FileError {
    Dir(DirError),
    /// The file `path` could not be written: its directory is refused.
    DirOf {
        path: PathBuf,
        source: DirError,
    },
    File(StateFileError),
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Dir(e) => write!(f, "router directory {e}"),
            FileError::DirOf { path, source } => {
                write!(f, "cannot write {}: router directory {source}", path.display())
            }
            FileError::File(e) => e.fmt(f),
            FileError::Io { path, action, source } => write!(f, "cannot {action} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for FileError {}

impl From<DirError> for FileError {
    fn from(e: DirError) -> FileError {
        FileError::Dir(e)
    }
}

/// A router's directory, open and checked: files in it are reached by name.
#[derive(Debug)]
pub struct RouterDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl RouterDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Atomically replaces the file `name` with exactly `mode`, without a
    /// sync ([`atomic::replace_at`]): the router's files (keepalived.conf,
    /// its health-check script, conntrackd.conf) are the daemon's rendering
    /// of its config, compared and written again at every start before
    /// keepalived is started, so one a crash of the machine left empty is
    /// repaired before anything reads it. A sync each would block the loop
    /// for a disk flush per router: seconds at the first start or a reload
    /// of a thousand routers.
    pub fn write(&self, name: &OsStr, contents: &[u8], mode: u32) -> Result<(), FileError> {
        atomic::replace_at(self.fd(), &self.path, name, contents, mode).map_err(FileError::File)
    }

    /// The first `limit` bytes of the file `name`; a symlink is an error.
    pub fn read(&self, name: &OsStr, limit: u64) -> io::Result<Vec<u8>> {
        atomic::read_at(self.fd(), name, limit)
    }
}

impl HaConfs {
    /// Opens `ha_confs_path` by path for each operation.
    pub fn new(layout: Layout) -> HaConfs {
        HaConfs { layout, dir: None }
    }

    /// Operations go through `dir`, the already checked and opened
    /// `ha_confs_path`.
    pub fn with_dir(layout: Layout, dir: OwnedFd) -> HaConfs {
        HaConfs { layout, dir: Some(Arc::new(dir)) }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The daemon's directories at start: `state_path`, `ha_confs_path`
    /// and the control socket's directory, each checked from `/` down and
    /// created (mode [`DIR_MODE`]) where missing; the layout holds
    /// `ha_confs_path` open from then on.
    pub fn prepare(daemon: &DaemonConfig) -> Result<HaConfs, DirError> {
        trusted::ensure_dir(&daemon.state_path, Some(DIR_MODE))?;
        let confs = trusted::ensure_dir(&daemon.ha_confs_path, Some(DIR_MODE))?;
        if let Some(parent) = daemon.socket.parent() {
            trusted::ensure_dir(parent, Some(DIR_MODE))?;
        }
        Ok(HaConfs::with_dir(Layout::new(&daemon.ha_confs_path), confs))
    }

    /// Runs `work` with `ha_confs_path` open, after checking it is still
    /// root's alone (an administrator's `chmod 777` later is refused too).
    fn with_confs<T>(&self, work: impl FnOnce(BorrowedFd<'_>) -> Result<T, FileError>) -> Result<T, FileError> {
        let opened;
        let fd = match &self.dir {
            Some(fd) => fd.as_fd(),
            None => {
                let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
                opened = nix::fcntl::open(self.layout.ha_confs_path(), flags, Mode::empty())
                    .map_err(|e| self.io_error(self.layout.ha_confs_path(), "open", e))?;
                opened.as_fd()
            }
        };
        trusted::still_private(fd, self.layout.ha_confs_path())?;
        work(fd)
    }

    fn io_error(&self, path: &Path, action: &'static str, e: Errno) -> FileError {
        FileError::Io { path: path.to_path_buf(), action, source: e.into() }
    }

    /// Opens the router's directory (creating it, mode
    /// [`ROUTER_DIR_MODE`], when `create`): never through a symlink, and
    /// only if it is root's alone.
    pub fn router_dir_fd(&self, id: &RouterId, create: bool) -> Result<RouterDir, FileError> {
        let path = self.layout.router_dir(id);
        let name = OsStr::new(id.as_str());
        let fd = self.with_confs(|confs| {
            if !create {
                return Ok(trusted::open_private_at(confs, name, &path)?);
            }
            let fd = trusted::create_dir_at(confs, name, &path, ROUTER_DIR_MODE)?;
            trusted::still_private(fd.as_fd(), &path)?;
            Ok(fd)
        })?;
        Ok(RouterDir { fd, path })
    }

    /// Writes the router's `state` file ([`write_state`]) in its
    /// directory, which must exist already.
    pub fn write_state(&self, id: &RouterId, state: State) -> Result<(), FileError> {
        let dir = self.router_dir_fd(id, false).map_err(|e| match e {
            FileError::Dir(source) => FileError::DirOf { path: self.layout.router_dir(id).join(STATE_FILE), source },
            other => other,
        })?;
        write_state(dir.fd(), dir.path(), state).map_err(FileError::File)
    }

    /// Makes the router's `state` file durable (written by
    /// [`HaConfs::write_state`], which does not sync). A router directory
    /// or file gone since needs nothing.
    pub fn sync_state(&self, id: &RouterId) -> Result<(), FileError> {
        let path = self.layout.router_dir(id).join(STATE_FILE);
        let dir = match self.router_dir_fd(id, false) {
            Ok(dir) => dir,
            Err(FileError::Dir(e)) if e.is_not_found() => return Ok(()),
            Err(FileError::Dir(source)) => return Err(FileError::DirOf { path, source }),
            Err(other) => return Err(other),
        };
        match sync_state(dir.fd()) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            result => result.map_err(|source| FileError::Io { path, action: "sync", source }),
        }
    }

    /// Removes the router's directory and everything in it, without ever
    /// following a symlink (one planted in its place is removed itself).
    /// A directory already gone is fine.
    pub fn remove_router_dir(&self, id: &RouterId) -> Result<(), FileError> {
        let path = self.layout.router_dir(id);
        self.with_confs(|confs| remove_tree_at(confs, OsStr::new(id.as_str()), &path))
    }

    /// A pidfile of this layout, beside the router directories
    /// (`ID.pid.keepalived`) or in one (`ID/conntrackd.pid`): its contents
    /// (at most `limit` bytes) and when it was last written. Never follows a
    /// symlink. `Ok(None)` when there is none (or no router directory).
    pub fn read_pidfile(&self, path: &Path, limit: u64) -> Result<Option<(Vec<u8>, SystemTime)>, FileError> {
        let read = self.in_dir_of(path, |dir, name| {
            let fd = match open_at(dir, name, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => return Ok(None),
                Err(e) => return Err(self.io_error(path, "open", e)),
            };
            let file = std::fs::File::from(fd);
            let io = |source| FileError::Io { path: path.to_path_buf(), action: "read", source };
            let written = file.metadata().and_then(|m| m.modified()).map_err(io)?;
            let mut text = Vec::new();
            io::Read::read_to_end(&mut io::Read::take(&file, limit), &mut text).map_err(io)?;
            Ok(Some((text, written)))
        })?;
        Ok(read.flatten())
    }

    /// Writes `pid` into a pidfile of this layout (`PID\n`, mode 0644, as
    /// Neutron's agent writes its own), replacing it atomically. Not
    /// synced to disk: after a power loss no process it could name runs.
    /// The router's directory must exist.
    pub fn write_pidfile(&self, path: &Path, pid: u32) -> Result<(), FileError> {
        let dir_path = path.parent().unwrap_or(path);
        let written = self.in_dir_of(path, |dir, name| {
            atomic::replace_at(dir, dir_path, name, format!("{pid}\n").as_bytes(), PIDFILE_MODE)
                .map_err(FileError::File)
        })?;
        written.ok_or_else(|| FileError::Io {
            path: path.to_path_buf(),
            action: "write",
            source: io::Error::from(io::ErrorKind::NotFound),
        })
    }

    /// Removes a pidfile (or another plain file, never a directory) of this
    /// layout, beside the router directories or in one; `Ok(false)` when
    /// there was none.
    pub fn remove_pidfile(&self, path: &Path) -> Result<bool, FileError> {
        let removed = self.in_dir_of(path, |dir, name| match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(self.io_error(path, "remove", e)),
        })?;
        Ok(removed.unwrap_or(false))
    }

    /// Runs `work` on the directory holding `path` (open, checked) and the
    /// file's name in it: `ha_confs_path` itself, or a router's directory
    /// under it (`None` when that directory does not exist). Any other path
    /// is refused: these operations never leave the layout.
    fn in_dir_of<T>(
        &self,
        path: &Path,
        work: impl FnOnce(BorrowedFd<'_>, &OsStr) -> Result<T, FileError>,
    ) -> Result<Option<T>, FileError> {
        let refused = || FileError::Io {
            path: path.to_path_buf(),
            action: "use",
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a file of ha_confs_path or a router directory"),
        };
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else { return Err(refused()) };
        if parent == self.layout.ha_confs_path() {
            return self.with_confs(|confs| work(confs, name)).map(Some);
        }
        let id = parent
            .file_name()
            .and_then(OsStr::to_str)
            .and_then(|id| RouterId::parse(id).ok())
            .filter(|id| self.layout.router_dir(id) == parent)
            .ok_or_else(refused)?;
        match self.router_dir_fd(&id, false) {
            Ok(dir) => work(dir.fd(), name).map(Some),
            Err(FileError::Dir(e)) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The mode of the pidfiles the daemon writes: anyone may read a pid.
const PIDFILE_MODE: u32 = 0o644;

/// Removes `name` in `dir`: a directory with everything in it, anything
/// else (a symlink included) itself. Every step is relative to an open
/// directory, opened with `O_NOFOLLOW`.
fn remove_tree_at(dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<(), FileError> {
    let io = |action, e: Errno| FileError::Io { path: path.to_path_buf(), action, source: e.into() };
    let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(io("inspect", e)),
    };
    if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFDIR.bits() {
        return match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(io("remove", e)),
        };
    }
    let fd = trusted::open_dir_at(dir, name, path)?;
    let listing = fd.try_clone().map_err(|e| FileError::Io { path: path.to_path_buf(), action: "list", source: e })?;
    let mut names = Vec::new();
    let mut entries = nix::dir::Dir::from_fd(listing).map_err(|e| io("list", e))?;
    for entry in entries.iter() {
        let entry = entry.map_err(|e| io("list", e))?;
        let entry_name = entry.file_name().to_bytes();
        if entry_name != b"." && entry_name != b".." {
            names.push(<OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(entry_name).to_os_string());
        }
    }
    drop(entries);
    for entry in names {
        remove_tree_at(fd.as_fd(), &entry, &path.join(&entry))?;
    }
    match unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(io("remove", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn layout(dir: &Path) -> HaConfs {
        let fd = nix::fcntl::open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        HaConfs::with_dir(Layout::new(dir), fd)
    }

    #[test]
    fn router_files_go_through_checked_directories() {
        let dir = crate::test_support::TempDir::new("layout");
        std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let l = layout(&dir);
        let id = RouterId::parse("r1").unwrap();
        let e = l.write_state(&id, State::Primary).unwrap_err();
        assert!(matches!(&e, FileError::DirOf { source, .. } if source.is_not_found()), "{e}");
        let router = l.router_dir_fd(&id, true).unwrap();
        assert_eq!(router.path(), dir.join("r1"));
        l.write_state(&id, State::Primary).unwrap();
        assert_eq!(router.read(OsStr::new(STATE_FILE), 64).unwrap(), b"primary");
        let mode = std::fs::metadata(dir.join("r1")).unwrap().mode() & 0o7777;
        assert_eq!(mode, ROUTER_DIR_MODE);

        // Swapped for a symlink: refused, nothing written through it.
        let victim = dir.join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::rename(dir.join("r1"), dir.join("r1.moved")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("r1")).unwrap();
        let e = l.write_state(&id, State::Backup).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot write {}: router directory {}: a symlink, not a directory (not followed)",
                dir.join("r1").join("state").display(),
                dir.join("r1").display()
            )
        );
        assert!(l.router_dir_fd(&id, true).is_err(), "not replaced by a new directory either");
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
        l.remove_router_dir(&id).unwrap();
        assert!(
            victim.exists() && std::fs::symlink_metadata(dir.join("r1")).is_err(),
            "the symlink went, not its target"
        );

        // A directory others can write: refused.
        std::fs::rename(dir.join("r1.moved"), dir.join("r1")).unwrap();
        std::fs::set_permissions(dir.join("r1"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let e = l.write_state(&id, State::Backup).unwrap_err();
        assert!(e.to_string().ends_with("r1: writable by others (mode 0777)"), "{e}");

        // Removal: everything, nested too, without following symlinks.
        std::fs::create_dir(dir.join("r1").join("sub")).unwrap();
        std::fs::write(dir.join("r1").join("sub").join("f"), "x").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("r1").join("link")).unwrap();
        std::fs::write(victim.join("keep"), "x").unwrap();
        l.remove_router_dir(&id).unwrap();
        assert!(!dir.join("r1").exists());
        assert!(victim.join("keep").exists());
        l.remove_router_dir(&id).unwrap();
    }

    #[test]
    fn pidfiles_are_read_and_removed_beside_router_dirs_only() {
        let dir = crate::test_support::TempDir::new("layout-pid");
        let l = layout(&dir);
        let id = RouterId::parse("r1").unwrap();
        assert!(l.read_pidfile(&l.layout().pid_file(&id), 64).unwrap().is_none());
        std::fs::write(l.layout().pid_file(&id), "42\n").unwrap();
        let (text, written) = l.read_pidfile(&l.layout().pid_file(&id), 64).unwrap().unwrap();
        assert_eq!(text, b"42\n");
        assert!(written <= SystemTime::now());
        std::os::unix::fs::symlink(dir.join("elsewhere"), l.layout().vrrp_pid_file(&id)).unwrap();
        assert!(l.read_pidfile(&l.layout().vrrp_pid_file(&id), 64).is_err(), "a symlink is not followed");
        assert!(l.remove_pidfile(&l.layout().vrrp_pid_file(&id)).unwrap());
        assert!(l.remove_pidfile(&l.layout().pid_file(&id)).unwrap());
        assert!(!l.remove_pidfile(&l.layout().pid_file(&id)).unwrap());
        assert!(l.read_pidfile(Path::new("/etc/passwd"), 64).is_err(), "only files of this layout");
        assert!(l.read_pidfile(&dir.join("a/b/c"), 64).is_err(), "only router directories");

        // In a router's directory (conntrackd's pidfile, Neutron's place).
        let in_dir = l.layout().router_dir(&id).join("conntrackd.pid");
        assert!(l.read_pidfile(&in_dir, 64).unwrap().is_none(), "no router directory yet");
        assert!(!l.remove_pidfile(&in_dir).unwrap());
        assert!(l.write_pidfile(&in_dir, 42).is_err(), "the router directory must exist");
        l.router_dir_fd(&id, true).unwrap();
        l.write_pidfile(&in_dir, 4242).unwrap();
        l.write_pidfile(&in_dir, 4243).unwrap();
        assert_eq!(l.read_pidfile(&in_dir, 64).unwrap().unwrap().0, b"4243\n");
        assert_eq!(std::fs::metadata(&in_dir).unwrap().mode() & 0o7777, 0o644);
        assert_eq!(std::fs::read_dir(dir.join("r1")).unwrap().count(), 1, "no temporary file left");
        assert!(l.remove_pidfile(&in_dir).unwrap());
        assert!(!in_dir.exists());
    }
}
