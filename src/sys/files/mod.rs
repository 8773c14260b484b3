//! Files root writes where others may be. One way to do each thing:
//! [`open_at`] opens a name in a directory without following a link,
//! `walk` resolves a path one checked directory at a time (with the rules
//! of [`trusted`], root's own directories, or of [`nofollow`], paths others
//! control), [`atomic`] replaces a file whole, and [`confs`] does a
//! router's file operations in `ha_confs_path`, held open.

pub mod atomic;
pub mod confs;
pub mod nofollow;
pub mod trusted;
mod walk;

use std::ffi::OsStr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

use crate::core::layout::{STATE_FILE, STATE_FILE_MODE};
use crate::core::state::State;
use atomic::StateFileError;

/// Whether `name` is one plain file name: not empty, no `/`, not `.` or
/// `..` (so an `*at` call on it stays inside the directory).
pub fn is_plain_name(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty() && !bytes.contains(&b'/') && bytes != b"." && bytes != b".."
}

/// Opens `name` in `dir` as `flags` say, never following a symbolic link
/// there (`O_NOFOLLOW`: a link is `ELOOP`), close-on-exec, without
/// acquiring a controlling terminal; `mode` for a file it creates. `name`
/// must be a plain name (`EINVAL` otherwise), so the open stays in `dir`.
pub fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlag, mode: u32) -> nix::Result<OwnedFd> {
    if !is_plain_name(name) {
        return Err(Errno::EINVAL);
    }
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    openat(dir, name, flags, Mode::from_bits_truncate(mode & 0o7777))
}

/// A router's `state` file in its directory `dir` (`dir_path` names it in
/// errors): [`STATE_FILE`], replaced atomically with mode
/// [`STATE_FILE_MODE`], not synced: [`sync_state`] later, off the path of
/// any notification ([`atomic`] says what a crash leaves meanwhile). The
/// daemon and the monitor write it this way.
pub fn write_state(dir: BorrowedFd<'_>, dir_path: &Path, state: State) -> Result<(), StateFileError> {
    atomic::replace_at(dir, dir_path, OsStr::new(STATE_FILE), state.as_str().as_bytes(), STATE_FILE_MODE)
}

/// Makes the router's `state` file in `dir` durable.
pub fn sync_state(dir: BorrowedFd<'_>) -> std::io::Result<()> {
    atomic::sync_at(dir, OsStr::new(STATE_FILE))
}
