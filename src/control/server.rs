//! The control socket's transport: a Unix stream listener and its
//! connections as non-blocking state machines in the daemon's poll.
//!
//! Invariants:
//! - Nothing a peer does can block the loop or grow memory without bound:
//!   a request must arrive whole within [`REQUEST_DEADLINE`] and within the
//!   parser's size limits, at most [`MAX_CONNECTIONS`] are open at once
//!   (more are accepted and closed at once, so the backlog cannot fill), and
//!   an events subscriber that stops reading is dropped once
//!   [`SUBSCRIBER_BACKLOG`] bytes wait for it.
//! - No unprivileged peer can lock out a privileged one (root or
//!   `allowed_uids`, told apart by SO_PEERCRED): unprivileged peers together
//!   never hold more than [`MAX_CONNECTIONS`] − [`PRIVILEGED_RESERVE`]
//!   connections, and a privileged peer arriving at a full table evicts the
//!   oldest unprivileged connection that has not sent a whole request yet
//!   ([`admission`]).
//! - One request per connection; every answer says `Connection: close`.
//! - The peer's uid comes from SO_PEERCRED, taken at accept time.
//!
//! What a request *means* is decided by the daemon ([`Request`] in,
//! [`Reply`] out); this module only moves bytes.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Token};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, fchmodat, fstat, fstatat};
use nix::unistd::{Gid, UnlinkatFlags, fchownat, unlinkat};

use super::conn::{HttpConn, Phase, Step, WRITE_DEADLINE, accept_next};
use crate::http::request::Request;
use crate::http::response as http;
use crate::sys::event_loop::{Owner, Sources};
use crate::sys::files::trusted::{self, DirError};

/// A request must be complete this long after the connection was accepted
/// (408 otherwise).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Open connections at most; further ones are closed right away.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections only privileged peers (root, `allowed_uids`) may use: idle
/// connections of other local users can never take the last ones.
pub const PRIVILEGED_RESERVE: usize = 32;
/// Bytes allowed to wait for one events subscriber before it is dropped.
pub const SUBSCRIBER_BACKLOG: usize = 256 * 1024;

/// Removes the socket at `path` at exit: by name in its directory, checked
/// again, and only if a socket is there.
fn remove_socket(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else { return Ok(()) };
    let dir = trusted::check_dir(parent).map_err(|e| io::Error::other(e.to_string()))?;
    match fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if is_socket(&st) => match unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        },
        Ok(_) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn is_socket(st: &nix::sys::stat::FileStat) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFSOCK.bits()
}

#[derive(Debug)]
pub enum ControlError {
    /// Another daemon answers on the socket.
    InUse {
        path: PathBuf,
    },
    /// Something that is not a socket sits at the path: not ours to delete.
    NotASocket {
        path: PathBuf,
    },
    /// The socket's directory may not be used (someone else could change it).
    Directory {
        path: PathBuf,
        source: DirError,
    },
    Io {
        path: PathBuf,
        step: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::InUse { path } => {
                write!(f, "control socket {}: another daemon is answering on it", path.display())
            }
            ControlError::NotASocket { path } => {
                write!(f, "control socket {}: the path exists and is not a socket; not removing it", path.display())
            }
            ControlError::Directory { path, source } => {
                write!(f, "control socket {}: refusing directory {source}", path.display())
            }
            ControlError::Io { path, step, source } => write!(f, "control socket {}: {step}: {source}", path.display()),
        }
    }
}

impl std::error::Error for ControlError {}

/// What the daemon answers to a request.
pub enum Reply {
    /// A complete answer; the connection closes after it.
    Response(Vec<u8>),
    /// `200` and a stream of lines from [`ControlServer::broadcast`] until
    /// the peer goes away; `text` picks the readable form over JSON.
    Subscribe { head: Vec<u8>, text: bool },
}

struct Conn {
    http: HttpConn<UnixStream>,
    /// Accept order: the oldest idle connection is evicted first.
    accepted: u64,
    uid: u32,
    /// Root or one of the allowed uids.
    privileged: bool,
}

/// What to do with a new connection, given who it is and how full the
/// table is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Accept,
    /// Accept it after closing the oldest unprivileged connection that has
    /// not sent a whole request (when there is none: refuse).
    Evict,
    /// Close it at once.
    Refuse,
}

/// The connection-table policy. `open`: connections open now, `unprivileged`
/// of them from unprivileged peers. An unprivileged peer gets a slot while
/// the table has room and unprivileged peers hold fewer than
/// `MAX_CONNECTIONS - PRIVILEGED_RESERVE`; a privileged one while the table
/// has room, else by evicting an idle unprivileged connection. Privileged
/// peers never evict each other: the cap on them is the operator's own.
pub fn admission(privileged: bool, open: usize, unprivileged: usize) -> Admission {
    if privileged {
        if open < MAX_CONNECTIONS { Admission::Accept } else { Admission::Evict }
    } else if open < MAX_CONNECTIONS && unprivileged < MAX_CONNECTIONS - PRIVILEGED_RESERVE {
        Admission::Accept
    } else {
        Admission::Refuse
    }
}

/// A request ready for the daemon, with who sent it.
pub struct Incoming {
    pub token: Token,
    pub uid: u32,
    pub request: Request,
}

pub struct ControlServer {
    path: PathBuf,
    listener: Option<UnixListener>,
    listener_token: Token,
    conns: HashMap<Token, Conn>,
    /// Connections accepted so far.
    accepted: u64,
    /// Uids besides root whose connections are privileged.
    allowed_uids: Vec<u32>,
    /// Open connections of unprivileged peers.
    unprivileged: usize,
    /// Connections refused because the table (or the unprivileged share of
    /// it) was full.
    pub refused: u64,
    /// Idle unprivileged connections closed to make room for a privileged
    /// peer.
    pub evicted: u64,
    /// Subscribers dropped for not reading.
    pub dropped_subscribers: u64,
}

impl ControlServer {
    /// Creates the socket at `path` with `mode` and, when given, group
    /// `gid`. A socket file left by a crashed daemon is replaced; one that
    /// another daemon still answers on is refused.
    ///
    /// Nothing here follows a name someone else could change (issue 15.5):
    /// the socket's directory must be root's alone, checked from `/` down
    /// ([`trusted`]) and held open; the old socket is inspected without
    /// following a symlink and removed by name in that directory; the new
    /// one is bound through `/proc/self/fd/DIR/NAME` (so into the directory
    /// checked), born with the daemon's umask 077, then opened `O_PATH |
    /// O_NOFOLLOW` by name, checked to be a socket, and given its mode and
    /// group through that descriptor (`chmod` of `/proc/self/fd/N`,
    /// `fchownat(AT_EMPTY_PATH)`): never by a name that could have become a
    /// symlink. (An AF_UNIX socket cannot be `fchmod`ed before `bind`, and
    /// changing the umask around `bind` would race other threads' files.)
    pub fn bind(path: &Path, mode: u32, gid: Option<u32>) -> Result<UnixListener, ControlError> {
        let io_err = |step| move |source| ControlError::Io { path: path.to_path_buf(), step, source };
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io_err("checking the path")(io::Error::from(io::ErrorKind::InvalidInput)));
        };
        let dir = trusted::ensure_dir(parent, Some(crate::core::layout::DIR_MODE))
            .map_err(|source| ControlError::Directory { path: path.to_path_buf(), source })?;
        let via = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        match fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if is_socket(&st) => {
                if std::os::unix::net::UnixStream::connect(&via).is_ok() {
                    return Err(ControlError::InUse { path: path.to_path_buf() });
                }
                match unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(io_err("removing the stale socket")(e.into())),
                }
            }
            Ok(_) => return Err(ControlError::NotASocket { path: path.to_path_buf() }),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(io_err("inspecting the path")(e.into())),
        }
        let listener = UnixListener::bind(&via).map_err(io_err("bind"))?;
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let socket = openat(&dir, name, flags, Mode::empty()).map_err(|e| io_err("opening it")(e.into()))?;
        let st = fstat(&socket).map_err(|e| io_err("checking it")(e.into()))?;
        if !is_socket(&st) {
            return Err(io_err("checking it")(io::Error::other("not the socket just bound")));
        }
        let by_fd = format!("/proc/self/fd/{}", socket.as_raw_fd());
        fchmodat(AT_FDCWD, by_fd.as_str(), Mode::from_bits_truncate(mode & 0o777), FchmodatFlags::FollowSymlink)
            .map_err(|e| io_err("chmod")(e.into()))?;
        if let Some(gid) = gid {
            fchownat(&socket, "", None, Some(Gid::from_raw(gid)), AtFlags::AT_EMPTY_PATH)
                .map_err(|e| io_err("chown")(e.into()))?;
        }
        Ok(listener)
    }

    /// Serves `listener`; it and every connection are registered with the
    /// loop's `sources` under tokens owned by [`Owner::Control`].
    pub fn new<K>(
        path: &Path,
        mut listener: UnixListener,
        sources: &mut Sources<K>,
    ) -> Result<ControlServer, ControlError> {
        let listener_token = sources
            .register(&mut listener, Owner::Control, Interest::READABLE)
            .map_err(|source| ControlError::Io { path: path.to_path_buf(), step: "watching", source })?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            listener: Some(listener),
            listener_token,
            conns: HashMap::new(),
            accepted: 0,
            allowed_uids: Vec::new(),
            unprivileged: 0,
            refused: 0,
            evicted: 0,
            dropped_subscribers: 0,
        })
    }

    /// The uids besides root that count as privileged peers (the daemon's
    /// `allowed_uids`).
    pub fn set_allowed_uids(&mut self, uids: &[u32]) {
        self.allowed_uids = uids.to_vec();
    }

    /// Handles readiness of the listener or a connection; returns complete
    /// requests for the daemon to answer with [`ControlServer::reply`].
    pub fn ready<K>(&mut self, sources: &mut Sources<K>, token: Token, now: Instant) -> Vec<Incoming> {
        if token == self.listener_token {
            self.accept(sources, now);
            return Vec::new();
        }
        let mut out = Vec::new();
        let Some(conn) = self.conns.get_mut(&token) else { return out };
        match conn.http.advance() {
            Step::Keep => {}
            Step::Close => self.close(sources, token),
            Step::Request(request) => out.push(Incoming { token, uid: conn.uid, request }),
            Step::Reject(status, reason) => {
                log::debug!("control socket: rejected a request with {status}: {reason}");
                let body = format!("{reason}\n");
                // The parser refuses methods the socket never takes.
                let answer = http::response_allowing(status, "GET, POST", "text/plain", body.as_bytes());
                self.reply(sources, token, Reply::Response(answer), now);
            }
        }
        out
    }

    fn accept<K>(&mut self, sources: &mut Sources<K>, now: Instant) {
        loop {
            let Some(listener) = &self.listener else { return };
            let name = format_args!("control socket {}", self.path.display());
            let Some((mut stream, _)) = accept_next(|| listener.accept(), &name) else { return };
            let uid = match getsockopt(&stream, PeerCredentials) {
                Ok(cred) => cred.uid(),
                Err(e) => {
                    log::warn!("control socket: no peer credentials ({e}); closing");
                    continue;
                }
            };
            let privileged = uid == 0 || self.allowed_uids.contains(&uid);
            let admitted = match admission(privileged, self.conns.len(), self.unprivileged) {
                Admission::Accept => true,
                Admission::Evict => self.evict_idle_unprivileged(sources),
                Admission::Refuse => false,
            };
            if !admitted {
                self.refused += 1;
                continue;
            }
            let Ok(token) = sources.register(&mut stream, Owner::Control, Interest::READABLE) else { continue };
            self.accepted += 1;
            let conn = Conn {
                http: HttpConn::reading(stream, now + REQUEST_DEADLINE),
                accepted: self.accepted,
                uid,
                privileged,
            };
            // Registering reports data already queued (epoll reports the
            // current level on ADD), so nothing is missed here.
            self.conns.insert(token, conn);
            self.unprivileged += usize::from(!privileged);
        }
    }

    /// Closes the oldest unprivileged connection still waiting for its
    /// request; `false` when there is none.
    /// Peers that did send a request (an answer being written, an events
    /// stream) are never evicted.
    fn evict_idle_unprivileged<K>(&mut self, sources: &mut Sources<K>) -> bool {
        let oldest = self
            .conns
            .iter()
            .filter(|(_, c)| !c.privileged && matches!(c.http.phase, Phase::Reading { .. }))
            .min_by_key(|(_, c)| c.accepted)
            .map(|(token, _)| *token);
        let Some(token) = oldest else { return false };
        if let Some(conn) = self.conns.get(&token) {
            log::debug!("control socket: evicting an idle connection of uid {} for a privileged peer", conn.uid);
        }
        self.close(sources, token);
        self.evicted += 1;
        true
    }

    /// Answers the request that came on `token`.
    pub fn reply<K>(&mut self, sources: &mut Sources<K>, token: Token, reply: Reply, now: Instant) {
        let Some(conn) = self.conns.get_mut(&token) else { return };
        match reply {
            Reply::Response(out) => {
                conn.http.phase = Phase::Writing { out, written: 0 };
                conn.http.deadline = Some(now + WRITE_DEADLINE);
            }
            Reply::Subscribe { head, text } => {
                conn.http.phase = Phase::Streaming { out: head.into(), text };
                conn.http.deadline = None;
            }
        }
        let _ = sources.reregister(&mut conn.http.stream, token, Interest::READABLE | Interest::WRITABLE);
        if let Step::Close = conn.http.flush() {
            self.close(sources, token);
        }
    }

    /// Sends one event to every subscriber, as JSON or text as each asked.
    /// A subscriber with too much waiting is dropped, not buffered for.
    pub fn broadcast<K>(&mut self, sources: &mut Sources<K>, json_line: &str, text_line: &str) {
        let mut gone = Vec::new();
        for (token, conn) in self.conns.iter_mut() {
            let Phase::Streaming { out, text } = &mut conn.http.phase else { continue };
            let line = if *text { text_line } else { json_line };
            if out.len() + line.len() + 1 > SUBSCRIBER_BACKLOG {
                self.dropped_subscribers += 1;
                log::warn!("control socket: dropping an events subscriber that does not keep up");
                gone.push(*token);
                continue;
            }
            out.extend(line.as_bytes());
            out.push_back(b'\n');
            if let Step::Close = conn.http.flush() {
                gone.push(*token);
            }
        }
        for token in gone {
            self.close(sources, token);
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().filter_map(|c| c.http.deadline).min()
    }

    /// Connections past their deadline: 408 for a request still arriving,
    /// closed for an answer nobody takes.
    pub fn tick<K>(&mut self, sources: &mut Sources<K>, now: Instant) {
        let due: Vec<Token> =
            self.conns.iter().filter(|(_, c)| c.http.deadline.is_some_and(|d| d <= now)).map(|(t, _)| *t).collect();
        for token in due {
            let reading = self.conns.get(&token).is_some_and(|c| matches!(c.http.phase, Phase::Reading { .. }));
            if reading {
                let body = b"request not received in time\n";
                self.reply(sources, token, Reply::Response(http::response(408, "text/plain", body)), now);
                if let Some(conn) = self.conns.get_mut(&token) {
                    conn.http.deadline = Some(now + WRITE_DEADLINE);
                }
            } else {
                self.close(sources, token);
            }
        }
    }

    fn close<K>(&mut self, sources: &mut Sources<K>, token: Token) {
        if let Some(mut conn) = self.conns.remove(&token) {
            self.unprivileged -= usize::from(!conn.privileged);
            sources.deregister(&mut conn.http.stream, token);
        }
    }

    /// Stops accepting and removes the socket file (shutdown). Open
    /// connections are left to finish.
    pub fn stop_listening<K>(&mut self, sources: &mut Sources<K>) {
        if let Some(mut listener) = self.listener.take() {
            sources.deregister(&mut listener, self.listener_token);
            if let Err(e) = remove_socket(&self.path) {
                log::warn!("cannot remove {}: {e}", self.path.display());
            }
        }
    }

    /// Whether any answer is still being written (shutdown waits for them
    /// within its flush window; subscribers do not count).
    pub fn is_flushed(&self) -> bool {
        self.conns.values().all(|c| !matches!(c.http.phase, Phase::Writing { .. }))
    }
}

#[cfg(test)]
mod bind_tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;
    use crate::test_support::TempDir;

    fn private(dir: &Path) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn binds_with_the_exact_mode_and_group_and_replaces_only_stale_sockets() {
        let dir = TempDir::new("bind");
        private(&dir);
        let path = dir.join("s.sock");
        let gid = nix::unistd::getegid().as_raw();
        // 0666 survives no umask but 0: the mode is set, not left to the umask.
        let listener = ControlServer::bind(&path, 0o666, Some(gid)).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o666, gid));
        assert!(matches!(ControlServer::bind(&path, 0o660, None), Err(ControlError::InUse { .. })));
        drop(listener);
        // Stale (nobody answers): replaced, with the new mode.
        let _listener = ControlServer::bind(&path, 0o600, None).unwrap();
        assert_eq!(std::fs::symlink_metadata(&path).unwrap().mode() & 0o7777, 0o600);
        remove_socket(&path).unwrap();
        assert!(std::fs::symlink_metadata(&path).is_err());
    }

    #[test]
    fn a_symlink_at_the_path_is_never_followed() {
        let dir = TempDir::new("bind-link");
        private(&dir);
        let target = dir.join("root-only");
        std::fs::write(&target, "x").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.join("s.sock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(matches!(ControlServer::bind(&path, 0o666, None), Err(ControlError::NotASocket { .. })));
        remove_socket(&path).unwrap();
        assert!(std::fs::symlink_metadata(&path).is_ok(), "not a socket: left alone at exit too");
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let dir = TempDir::new("bind-dir");
        private(&dir);
        let open = dir.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = ControlServer::bind(&open.join("s.sock"), 0o660, None).unwrap_err();
        assert!(matches!(e, ControlError::Directory { .. }), "{e}");
        assert!(e.to_string().contains(&format!("refusing directory {}: ", open.display())), "{e}");
        assert!(std::fs::read_dir(&open).unwrap().next().is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNPRIVILEGED_CAP: usize = MAX_CONNECTIONS - PRIVILEGED_RESERVE;

    #[test]
    fn unprivileged_peers_cannot_take_the_reserved_slots() {
        assert_eq!(admission(false, 0, 0), Admission::Accept);
        assert_eq!(admission(false, UNPRIVILEGED_CAP - 1, UNPRIVILEGED_CAP - 1), Admission::Accept);
        assert_eq!(admission(false, UNPRIVILEGED_CAP, UNPRIVILEGED_CAP), Admission::Refuse);
        // Root holding connections does not give unprivileged peers more.
        assert_eq!(admission(false, UNPRIVILEGED_CAP, 10), Admission::Accept);
        assert_eq!(admission(false, MAX_CONNECTIONS, 10), Admission::Refuse);
    }

    #[test]
    fn privileged_peers_use_any_slot_and_evict_when_full() {
        assert_eq!(admission(true, UNPRIVILEGED_CAP, UNPRIVILEGED_CAP), Admission::Accept);
        assert_eq!(admission(true, MAX_CONNECTIONS - 1, UNPRIVILEGED_CAP), Admission::Accept);
        assert_eq!(admission(true, MAX_CONNECTIONS, UNPRIVILEGED_CAP), Admission::Evict);
        assert_eq!(admission(true, MAX_CONNECTIONS, 0), Admission::Evict, "evict finds none: refused");
    }
}
