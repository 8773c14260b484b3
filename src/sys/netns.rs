//! Entering a router's network namespace for as long as it takes to create
//! a socket (or, in a forked child, for good before `exec`).
//!
//! Invariant: [`in_namespace`] always puts the thread back in the namespace
//! it started in, whether the work inside succeeded, failed or the entry
//! itself failed half way; a daemon left in the wrong namespace would open
//! every later socket (and "come back" from every later entry) in the wrong
//! place. Should coming back ever fail, the process does not go on: it
//! logs why and exits 1 on the spot, whoever called.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;

use mio::unix::SourceFd;
use nix::sched::{CloneFlags, setns};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::core::ident::Namespace;

#[derive(Debug)]
pub enum NetnsError {
    /// The namespace file could not be opened (usually: it does not exist).
    Open { namespace: String, path: String, source: std::io::Error },
    /// `setns` into the target was refused (not a netns file, no privilege).
    Enter { namespace: String, source: nix::Error },
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
    if let Err(source) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
        lost(namespace, source);
    }
    Ok((result, Some(identity)))
}

/// The thread cannot come back from `namespace`: it is in an unknown
/// namespace, where every later socket would be opened, so the process
/// stops at once (exit status 1), with the reason in the log and on stderr.
fn lost(namespace: &Namespace, source: nix::Error) -> ! {
    let message = format!("cannot return to the original network namespace from {namespace}: {source}; exiting");
    log::error!("{message}");
    eprintln!("harouterd: {message}");
    std::process::exit(1)
}

/// Where iproute2 keeps named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A namespace file under [`NETNS_RUN_DIR`] that appeared or went away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetnsDirChange {
    /// The namespace file's path, as [`Namespace::path`] spells it.
    pub path: String,
    pub deleted: bool,
}

/// An inotify watch on [`NETNS_RUN_DIR`]: a deleted namespace is seen at
/// once and a re-created one picked up, without polling (a process's own
/// rtnetlink socket keeps a deleted namespace alive, so netlink alone never
/// tells). Register it with the loop for readability.
#[derive(Debug)]
pub struct NetnsDirWatch {
    inotify: Inotify,
}

impl NetnsDirWatch {
    /// Starts watching. With `create`, the directory is made first, as `ip
    /// netns add` would make it (0755), when it does not exist yet.
    pub fn new(create: bool) -> Result<NetnsDirWatch, String> {
        if create
            && let Err(e) = std::fs::DirBuilder::new().mode(0o755).create(NETNS_RUN_DIR)
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            return Err(format!("cannot create {NETNS_RUN_DIR} to watch it: {e}"));
        }
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| format!("cannot watch {NETNS_RUN_DIR}: inotify: {e}"))?;
        inotify
            .add_watch(NETNS_RUN_DIR, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_DELETE)
            .map_err(|e| format!("cannot watch {NETNS_RUN_DIR}: {e}"))?;
        Ok(NetnsDirWatch { inotify })
    }

    /// Everything that changed since the last call. One read returns what
    /// fits its buffer (64 namespace events), and the loop is told of
    /// readiness once per edge: so it reads until nothing is left, or a
    /// burst (an agent's resync of many routers) would leave the rest
    /// unread until some later change.
    pub fn changes(&self) -> Vec<NetnsDirChange> {
        let mut changes = Vec::new();
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) if !events.is_empty() => events,
                Ok(_) | Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => {
                    log::warn!("reading the {NETNS_RUN_DIR} watch: {e}");
                    break;
                }
            };
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    log::warn!("the {NETNS_RUN_DIR} watch overflowed: namespace changes were lost");
                }
                let Some(name) = event.name.as_ref().and_then(|n| n.to_str()) else { continue };
                let deleted = event.mask.contains(AddWatchFlags::IN_DELETE);
                changes.push(NetnsDirChange { path: format!("{NETNS_RUN_DIR}/{name}"), deleted });
            }
        }
        changes
    }
}

impl mio::event::Source for NetnsDirWatch {
    fn register(&mut self, registry: &mio::Registry, token: mio::Token, interests: mio::Interest) -> io::Result<()> {
        SourceFd(&self.inotify.as_fd().as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(&mut self, registry: &mio::Registry, token: mio::Token, interests: mio::Interest) -> io::Result<()> {
        SourceFd(&self.inotify.as_fd().as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        SourceFd(&self.inotify.as_fd().as_raw_fd()).deregister(registry)
    }
}
