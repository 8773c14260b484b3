//! Entering a router's network namespace for as long as it takes to create
//! a socket (or, in a forked child, for good before `exec`).
//!
//! Invariant: [`in_namespace`] always puts the thread back in the namespace
//! it started in, whether the work inside succeeded, failed or the entry
//! itself failed half way; a daemon left in the wrong namespace would open
//! every later socket in the wrong place.

use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use nix::sched::{CloneFlags, setns};

use crate::core::ident::Namespace;

#[derive(Debug)]
pub enum NetnsError {
    /// The namespace file could not be opened (usually: it does not exist).
    Open { namespace: String, path: String, source: std::io::Error },
    /// `setns` into the target was refused (not a netns file, no privilege).
    Enter { namespace: String, source: nix::Error },
    /// Coming back failed: the process is in an unknown namespace and must
    /// not go on.
    Restore { source: nix::Error },
    /// The current namespace could not be saved before leaving it.
    Save { source: std::io::Error },
}

impl fmt::Display for NetnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetnsError::Open { namespace, path, source } => {
                write!(f, "cannot open network namespace {namespace} ({path}): {source}")
            }
            NetnsError::Enter { namespace, source } => {
                write!(f, "cannot enter network namespace {namespace}: {source}")
            }
            NetnsError::Restore { source } => write!(f, "cannot return to the original network namespace: {source}"),
            NetnsError::Save { source } => write!(f, "cannot open the current network namespace: {source}"),
        }
    }
}

impl std::error::Error for NetnsError {}

/// Opens the namespace file (for `setns`, now or in a child after fork).
pub fn open(namespace: &Namespace) -> Result<OwnedFd, NetnsError> {
    let path = namespace.path();
    File::open(&path).map(OwnedFd::from).map_err(|source| NetnsError::Open {
        namespace: namespace.to_string(),
        path,
        source,
    })
}

/// Which namespace a netns file names: the device and inode of the nsfs
/// file bind-mounted there. A namespace deleted and re-created under the
/// same name has another identity, which is the only way to tell that a
/// name now means a new, empty namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NsIdentity {
    pub dev: u64,
    pub ino: u64,
}

impl fmt::Display for NsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "net:[{}]", self.ino)
    }
}

/// The identity of the namespace the file `namespace` names now.
pub fn identity(namespace: &Namespace) -> Result<NsIdentity, NetnsError> {
    let fd = open(namespace)?;
    identity_of(&fd, namespace)
}

fn identity_of(fd: &OwnedFd, namespace: &Namespace) -> Result<NsIdentity, NetnsError> {
    let stat = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| NetnsError::Open {
        namespace: namespace.to_string(),
        path: namespace.path(),
        source: e.into(),
    })?;
    Ok(NsIdentity { dev: stat.st_dev, ino: stat.st_ino })
}

/// Runs `work` inside `namespace` (`None`: right here) and comes back.
pub fn in_namespace<T>(namespace: Option<&Namespace>, work: impl FnOnce() -> T) -> Result<T, NetnsError> {
    in_namespace_identified(namespace, work).map(|(result, _)| result)
}

/// [`in_namespace`], also telling which namespace `work` ran in (from the
/// very descriptor entered, so a re-creation in between cannot mislead).
pub fn in_namespace_identified<T>(
    namespace: Option<&Namespace>,
    work: impl FnOnce() -> T,
) -> Result<(T, Option<NsIdentity>), NetnsError> {
    let Some(namespace) = namespace else { return Ok((work(), None)) };
    let target = open(namespace)?;
    let identity = identity_of(&target, namespace)?;
    let home = File::open("/proc/thread-self/ns/net").map_err(|source| NetnsError::Save { source })?;
    setns(target.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|source| NetnsError::Enter { namespace: namespace.to_string(), source })?;
    let result = work();
    setns(home.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Restore { source })?;
    Ok((result, Some(identity)))
}
