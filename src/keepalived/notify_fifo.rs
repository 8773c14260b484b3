//! keepalived's own view of a router (MASTER, BACKUP, FAULT, STOP), read
//! from the FIFO named by `notify_fifo` in the router's `global_defs`
//! (SPEC sections 3.3 and 3.5: a FAULT takes effect at once).
//!
//! # What keepalived 2.2.7 writes
//!
//! Captured from the Debian `keepalived` 2.2.7 on the build machine, one
//! namespace, one instance `VR_1` of priority 100 and no peer, `advert_int 1`
//! (every line ends in `\n`, nothing else on it):
//!
//! ```text
//! INSTANCE "VR_1" BACKUP 100      start-up (state BACKUP in the config)
//! INSTANCE "VR_1" MASTER 100      ~3 advert intervals later, no peer heard
//! INSTANCE "VR_1" FAULT 100       `ip link set ha0 down` on the HA interface
//! INSTANCE "VR_1" BACKUP 100      link back up
//! INSTANCE "VR_1" MASTER 100
//! INSTANCE "VR_1" STOP 100        SIGTERM to keepalived
//! ```
//!
//! Without an IPv4 address on the HA interface the first line is already
//! `INSTANCE "VR_1" FAULT 100` ("no IPv4 address for interface"). A SIGHUP
//! reload writes nothing when the state does not change. With a
//! `vrrp_sync_group G1` every instance line is followed by a group line,
//! whose number is always 0: `GROUP "G1" BACKUP 0`, `GROUP "G1" MASTER 0`,
//! `GROUP "G1" FAULT 0`, `GROUP "G1" STOP 0`. The number on `INSTANCE`
//! lines is the instance's configured priority. keepalived's sources also
//! know other states (`MASTER_RX_LOWER_PRI`, and virtual-server lines from
//! the checker process); [`parse_line`] ignores every line it does not
//! understand, so a newer keepalived cannot confuse the daemon.
//!
//! keepalived's VRRP child opens the FIFO `O_RDWR | O_NONBLOCK`: it never
//! blocks on us, and when nobody reads, lines are lost once the pipe is full
//! (64 KiB). Each line is far below `PIPE_BUF`, so lines never interleave.
//! keepalived creates the FIFO itself when it is missing, and leaves it in
//! place when it stops.
//!
//! # Invariants
//!
//! - **No spin on EOF.** We hold a write end of our own for as long as the
//!   [`NotifyFifo`] lives, so keepalived stopping, crashing or restarting
//!   never leaves the read end with no writer: no EOF, no hang-up, no
//!   endless readiness in the event loop.
//! - **An existing FIFO is kept** (same inode): after a daemon restart the
//!   adopted keepalived still writes to the FIFO it opened; replacing it
//!   would cut it off. Anything else at the path (a regular file, a symlink,
//!   a FIFO owned by another user) is replaced.
//! - **Bounded memory.** At most [`MAX_LINE`] bytes of an unfinished line
//!   are kept; a longer line is dropped whole and counted.
//! - The FIFO is mode 0600: whoever can write to it can fake a FAULT.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, mkfifoat, unlinkat};

use crate::sys::files::confs::RouterDir;

/// The longest line kept (newline excluded). keepalived's lines are under
/// 100 bytes; anything longer is not from keepalived and is dropped.
pub const MAX_LINE: usize = 4096;

/// The FIFO's permissions: only the owner (root) may write fake states.
pub const FIFO_MODE: u32 = 0o600;

/// A VRRP instance's state as keepalived names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KaState {
    Master,
    Backup,
    Fault,
    /// keepalived is shutting the instance down (SIGTERM, or the instance
    /// was removed by a reload).
    Stop,
}

impl KaState {
    fn parse(word: &str) -> Option<KaState> {
        match word {
            "MASTER" => Some(KaState::Master),
            "BACKUP" => Some(KaState::Backup),
            "FAULT" => Some(KaState::Fault),
            "STOP" => Some(KaState::Stop),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KaState::Master => "MASTER",
            KaState::Backup => "BACKUP",
            KaState::Fault => "FAULT",
            KaState::Stop => "STOP",
        }
    }
}

impl fmt::Display for KaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `INSTANCE "NAME" STATE PRIORITY` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FifoEvent {
    /// The `vrrp_instance` name, `VR_<vrid>` in configs we render.
    pub instance: String,
    pub state: KaState,
    pub priority: u8,
}

/// Parses one line (with or without its newline). `None` for anything but
/// an `INSTANCE` line with a known state and a priority in 0..=255: group
/// lines, checker lines, unknown states, garbage.
pub fn parse_line(line: &str) -> Option<FifoEvent> {
    let rest = line.trim_end_matches(['\n', '\r']).strip_prefix("INSTANCE \"")?;
    // The name is quoted; it cannot hold a quote itself, but the state and
    // priority after it never do either, so split at the last quote.
    let (instance, tail) = rest.rsplit_once('"')?;
    if instance.is_empty() || instance.contains('"') || instance.chars().any(char::is_control) {
        return None;
    }
    let mut words = tail.split(' ');
    if words.next() != Some("") {
        return None; // no space between the closing quote and the state
    }
    let state = KaState::parse(words.next()?)?;
    let priority = words.next()?.parse::<u8>().ok()?;
    if words.next().is_some() {
        return None;
    }
    Some(FifoEvent { instance: instance.to_owned(), state, priority })
}

/// Splits a byte stream into lines, keeping at most [`MAX_LINE`] bytes of an
/// unfinished one. Pure, so the buffering rules are tested without a FIFO.
#[derive(Debug, Default)]
pub struct LineBuffer {
    partial: Vec<u8>,
    /// Inside a line already found too long: skip up to its newline.
    discarding: bool,
    overlong: u64,
}

impl LineBuffer {
    /// Appends `bytes` and returns every line they complete, without the
    /// newline. A line longer than [`MAX_LINE`] is dropped and counted in
    /// [`LineBuffer::overlong`], once.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (chunk, complete) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            rest = if complete { &rest[chunk.len() + 1..] } else { &[] };
            if !self.discarding {
                if self.partial.len() + chunk.len() > MAX_LINE {
                    self.partial.clear();
                    self.discarding = true;
                    self.overlong += 1;
                } else {
                    self.partial.extend_from_slice(chunk);
                }
            }
            if complete {
                if !self.discarding {
                    lines.push(std::mem::take(&mut self.partial));
                }
                self.discarding = false;
            }
        }
        lines
    }

    /// Lines dropped for being longer than [`MAX_LINE`].
    pub fn overlong(&self) -> u64 {
        self.overlong
    }

    /// Bytes of an unfinished line held (never more than [`MAX_LINE`]).
    pub fn pending(&self) -> usize {
        self.partial.len()
    }
}

/// Why a FIFO could not be set up; always names the path.
#[derive(Debug)]
pub enum FifoError {
    /// Something that is not our FIFO was at the path and could not be
    /// removed (a directory, a read-only parent).
    Remove { path: PathBuf, source: io::Error },
    /// `mkfifo` failed (missing router directory, no permission).
    Create { path: PathBuf, source: io::Error },
    /// Opening the read or the write end failed.
    Open { path: PathBuf, end: &'static str, source: io::Error },
    /// What got opened is not the FIFO just checked or created (the path
    /// was swapped under us).
    NotAFifo { path: PathBuf },
    /// `stat` or `chmod` on the FIFO failed.
    Inspect { path: PathBuf, source: io::Error },
}

impl fmt::Display for FifoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FifoError::Remove { path, source } => {
                write!(f, "cannot replace {} with a notify FIFO: {source}", path.display())
            }
            FifoError::Create { path, source } => write!(f, "cannot create notify FIFO {}: {source}", path.display()),
            FifoError::Open { path, end, source } => {
                write!(f, "cannot open the {end} end of notify FIFO {}: {source}", path.display())
            }
            FifoError::NotAFifo { path } => {
                write!(f, "{} changed while being opened and is not the notify FIFO", path.display())
            }
            FifoError::Inspect { path, source } => write!(f, "cannot inspect notify FIFO {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for FifoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FifoError::Remove { source, .. }
            | FifoError::Create { source, .. }
            | FifoError::Open { source, .. }
            | FifoError::Inspect { source, .. } => Some(source),
            FifoError::NotAFifo { .. } => None,
        }
    }
}

/// A router's notify FIFO, open for reading, registered in the event loop
/// as a [`mio::event::Source`] (readable interest).
#[derive(Debug)]
pub struct NotifyFifo {
    path: PathBuf,
    reader: File,
    /// Never written to: held so the read end always has a writer (no EOF).
    _writer: File,
    lines: LineBuffer,
    unrecognized: u64,
}

impl NotifyFifo {
    /// Makes sure a FIFO (mode 0600, owned by us) is at `path`, keeping an
    /// existing one, and opens it. The router's directory must exist.
    pub fn create(path: &Path) -> Result<NotifyFifo, FifoError> {
        let create_error = |source| FifoError::Create { path: path.to_path_buf(), source };
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(create_error(io::Error::new(io::ErrorKind::InvalidInput, "no file name")));
        };
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let dir_fd = nix::fcntl::open(dir, flags, Mode::empty()).map_err(|e| create_error(e.into()))?;
        NotifyFifo::create_at(dir_fd.as_fd(), path, name)
    }

    /// [`NotifyFifo::create`] in a router's directory, by name: made,
    /// inspected and opened relative to `dir` without following a symlink
    /// (issue 15.4).
    pub fn create_in(dir: &RouterDir, name: &str) -> Result<NotifyFifo, FifoError> {
        NotifyFifo::create_at(dir.fd(), &dir.path().join(name), OsStr::new(name))
    }

    fn create_at(dir: BorrowedFd<'_>, path: &Path, name: &OsStr) -> Result<NotifyFifo, FifoError> {
        let owned = |source| FifoError::Inspect { path: path.to_path_buf(), source };
        let euid = nix::unistd::geteuid().as_raw();
        match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFIFO.bits() && st.st_uid == euid => {}
            Ok(_) => match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(FifoError::Remove { path: path.to_path_buf(), source: e.into() }),
            },
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(owned(e.into())),
        }
        match mkfifoat(dir, name, Mode::from_bits_truncate(FIFO_MODE)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(FifoError::Create { path: path.to_path_buf(), source: e.into() }),
        }
        // O_NOFOLLOW: a symlink planted after the check is refused, not
        // followed. O_NONBLOCK: opening a read end does not wait for a
        // writer, and reads return EAGAIN instead of blocking.
        let open = |end: &'static str, access: OFlag| {
            let flags = access | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            nix::fcntl::openat(dir, name, flags, Mode::empty()).map(File::from).map_err(|e| FifoError::Open {
                path: path.to_path_buf(),
                end,
                source: e.into(),
            })
        };
        let reader = open("read", OFlag::O_RDONLY)?;
        // With a reader open, a non-blocking O_WRONLY open succeeds at once.
        let writer = open("write", OFlag::O_WRONLY)?;
        let r = reader.metadata().map_err(owned)?;
        let w = writer.metadata().map_err(owned)?;
        if !r.file_type().is_fifo() || (r.dev(), r.ino()) != (w.dev(), w.ino()) {
            return Err(FifoError::NotAFifo { path: path.to_path_buf() });
        }
        if r.mode() & 0o7777 != FIFO_MODE {
            // A FIFO kept from before (or a umask) may have other bits.
            reader.set_permissions(std::fs::Permissions::from_mode(FIFO_MODE)).map_err(owned)?;
        }
        Ok(NotifyFifo {
            path: path.to_path_buf(),
            reader,
            _writer: writer,
            lines: LineBuffer::default(),
            unrecognized: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything keepalived wrote since the last call, drained until the
    /// FIFO is empty (the loop is edge-triggered: call this on every
    /// readiness event, it leaves nothing behind). An unfinished last line
    /// waits for the rest; lines that are not instance events are counted
    /// and logged at debug level. A read error other than "empty" is logged
    /// and ends this round.
    pub fn read(&mut self) -> Vec<FifoEvent> {
        let mut events = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match (&self.reader).read(&mut buf) {
                // Only possible if our own write end were gone.
                Ok(0) => break,
                Ok(n) => {
                    for line in self.lines.push(&buf[..n]) {
                        match std::str::from_utf8(&line).ok().and_then(parse_line) {
                            Some(event) => events.push(event),
                            None => {
                                self.unrecognized += 1;
                                log::debug!(
                                    "{}: ignoring line {:?}",
                                    self.path.display(),
                                    String::from_utf8_lossy(&line)
                                );
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("cannot read notify FIFO {}: {e}", self.path.display());
                    break;
                }
            }
        }
        events
    }

    /// Lines dropped for being longer than [`MAX_LINE`].
    pub fn overlong_lines(&self) -> u64 {
        self.lines.overlong()
    }

    /// Complete lines that were not instance events (group lines, garbage).
    pub fn unrecognized_lines(&self) -> u64 {
        self.unrecognized
    }

    /// Closes both ends and unlinks the FIFO (router removed). Not for a
    /// daemon exit that leaves keepalived running: it keeps writing to it.
    pub fn remove(self) -> Result<(), FifoError> {
        let NotifyFifo { path, .. } = self;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(FifoError::Remove { path, source }),
        }
    }
}

impl mio::event::Source for NotifyFifo {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        SourceFd(&self.reader.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        SourceFd(&self.reader.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.reader.as_raw_fd()).deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::time::Duration;

    fn ev(instance: &str, state: KaState, priority: u8) -> Option<FifoEvent> {
        Some(FifoEvent { instance: instance.into(), state, priority })
    }

    #[test]
    fn parses_the_lines_keepalived_2_2_7_wrote() {
        assert_eq!(parse_line("INSTANCE \"VR_1\" BACKUP 100\n"), ev("VR_1", KaState::Backup, 100));
        assert_eq!(parse_line("INSTANCE \"VR_1\" MASTER 100"), ev("VR_1", KaState::Master, 100));
        assert_eq!(parse_line("INSTANCE \"VR_1\" FAULT 100"), ev("VR_1", KaState::Fault, 100));
        assert_eq!(parse_line("INSTANCE \"VR_1\" STOP 100"), ev("VR_1", KaState::Stop, 100));
        assert_eq!(parse_line("INSTANCE \"VR_254\" MASTER 50\r\n"), ev("VR_254", KaState::Master, 50));
        assert_eq!(parse_line("INSTANCE \"VR_9\" BACKUP 255"), ev("VR_9", KaState::Backup, 255));
        assert_eq!(parse_line("INSTANCE \"VR_9\" BACKUP 0"), ev("VR_9", KaState::Backup, 0));
    }

    #[test]
    fn ignores_groups_other_states_and_garbage() {
        for line in [
            "GROUP \"G1\" MASTER 0",
            "GROUP \"G1\" STOP 0",
            "INSTANCE \"VR_1\" MASTER_RX_LOWER_PRI 100",
            "INSTANCE \"VR_1\" master 100",
            "INSTANCE \"VR_1\" MASTER 256",
            "INSTANCE \"VR_1\" MASTER -1",
            "INSTANCE \"VR_1\" MASTER",
            "INSTANCE \"VR_1\" MASTER 100 extra",
            "INSTANCE \"VR_1\"  MASTER 100",
            "INSTANCE \"VR_1\"MASTER 100",
            "INSTANCE \"\" MASTER 100",
            "INSTANCE \"VR\"1\" MASTER 100",
            "INSTANCE VR_1 MASTER 100",
            "INSTANCE \"VR_1 MASTER 100",
            "instance \"VR_1\" MASTER 100",
            " INSTANCE \"VR_1\" MASTER 100",
            "VS [10.0.0.1]:tcp:80 UP",
            "",
            "\n",
            "\u{0}\u{1}garbage",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn line_buffer_keeps_partial_lines_across_pushes() {
        let mut b = LineBuffer::default();
        assert!(b.push(b"INSTANCE \"VR_1\" MAS").is_empty());
        assert_eq!(b.pending(), 19);
        assert_eq!(
            b.push(b"TER 100\nGROUP \"G\" MASTER 0\nINST"),
            vec![b"INSTANCE \"VR_1\" MASTER 100".to_vec(), b"GROUP \"G\" MASTER 0".to_vec()]
        );
        assert_eq!(b.push(b"\n\n"), vec![b"INST".to_vec(), Vec::new()]);
        assert_eq!(b.pending(), 0);
    }

    #[test]
    fn line_buffer_drops_an_overlong_line_whole_and_recovers() {
        let mut b = LineBuffer::default();
        let exactly = vec![b'x'; MAX_LINE];
        assert!(b.push(&exactly).is_empty());
        assert_eq!(b.push(b"\n"), vec![exactly.clone()]);
        assert_eq!(b.overlong(), 0);

        // Too long, arriving in pieces: nothing kept beyond MAX_LINE, the
        // tail after the next newline is a fresh line.
        assert!(b.push(&exactly).is_empty());
        assert!(b.push(b"y").is_empty());
        assert_eq!(b.pending(), 0);
        for _ in 0..10 {
            assert!(b.push(&exactly).is_empty());
            assert_eq!(b.pending(), 0);
        }
        assert_eq!(b.push(b"tail\nINSTANCE \"VR_1\" FAULT 1\n"), vec![b"INSTANCE \"VR_1\" FAULT 1".to_vec()]);
        assert_eq!(b.overlong(), 1);

        // Too long within one push.
        let mut long = vec![b'z'; MAX_LINE + 1];
        long.extend_from_slice(b"\nok\n");
        assert_eq!(b.push(&long), vec![b"ok".to_vec()]);
        assert_eq!(b.overlong(), 2);
    }

    use crate::test_support::TempDir as Dir;

    fn writer(path: &Path) -> File {
        OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path).unwrap()
    }

    /// Events ready within `timeout` for a source registered with token 0.
    fn ready(poll: &mut mio::Poll, timeout: Duration) -> usize {
        let mut events = mio::Events::with_capacity(8);
        poll.poll(&mut events, Some(timeout)).unwrap();
        events.iter().count()
    }

    #[test]
    fn reads_events_and_never_sees_eof_when_keepalived_goes() {
        let dir = Dir::new("read");
        let path = dir.0.join("notify.fifo");
        let mut fifo = NotifyFifo::create(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.mode() & 0o7777, FIFO_MODE);

        let mut poll = mio::Poll::new().unwrap();
        poll.registry().register(&mut fifo, Token(0), Interest::READABLE).unwrap();
        assert_eq!(ready(&mut poll, Duration::ZERO), 0);
        assert!(fifo.read().is_empty());

        let mut ka = writer(&path);
        ka.write_all(b"INSTANCE \"VR_1\" BACKUP 50\nGROUP \"G\" BACKUP 0\nINSTANCE \"VR_1\" MAS").unwrap();
        assert_eq!(ready(&mut poll, Duration::from_secs(5)), 1);
        assert_eq!(fifo.read(), vec![FifoEvent { instance: "VR_1".into(), state: KaState::Backup, priority: 50 }]);
        assert_eq!(fifo.unrecognized_lines(), 1);
        ka.write_all(b"TER 50\n").unwrap();
        assert_eq!(ready(&mut poll, Duration::from_secs(5)), 1);
        assert_eq!(fifo.read(), vec![FifoEvent { instance: "VR_1".into(), state: KaState::Master, priority: 50 }]);

        // keepalived exits: its write end closes. Our own write end keeps
        // the pipe from reporting EOF / hang-up, so the loop stays quiet.
        drop(ka);
        assert_eq!(ready(&mut poll, Duration::ZERO), 0);
        assert!(fifo.read().is_empty());

        // A new keepalived opens the same FIFO and is heard.
        let mut ka = writer(&path);
        ka.write_all(b"INSTANCE \"VR_1\" FAULT 50\n").unwrap();
        assert_eq!(ready(&mut poll, Duration::from_secs(5)), 1);
        assert_eq!(fifo.read(), vec![FifoEvent { instance: "VR_1".into(), state: KaState::Fault, priority: 50 }]);

        fifo.remove().unwrap();
        assert!(std::fs::symlink_metadata(&path).is_err());
    }

    #[test]
    fn drains_more_than_one_buffer_in_one_call() {
        let dir = Dir::new("drain");
        let path = dir.0.join("notify.fifo");
        let mut fifo = NotifyFifo::create(&path).unwrap();
        let mut ka = writer(&path);
        let line = b"INSTANCE \"VR_7\" BACKUP 50\n";
        for _ in 0..1000 {
            ka.write_all(line).unwrap();
        }
        let events = fifo.read();
        assert_eq!(events.len(), 1000);
        assert!(events.iter().all(|e| e.instance == "VR_7" && e.state == KaState::Backup));
    }

    #[test]
    fn keeps_an_existing_fifo_and_replaces_anything_else() {
        let dir = Dir::new("replace");
        let path = dir.0.join("notify.fifo");

        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o644)).unwrap();
        let inode = std::fs::symlink_metadata(&path).unwrap().ino();
        let fifo = NotifyFifo::create(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.ino(), inode, "an existing FIFO is kept");
        assert_eq!(meta.mode() & 0o7777, FIFO_MODE, "and its mode tightened");
        drop(fifo);

        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "left over").unwrap();
        let _fifo = NotifyFifo::create(&path).unwrap();
        assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_fifo());

        let target = dir.0.join("elsewhere");
        std::fs::write(&target, "x").unwrap();
        let link = dir.0.join("link.fifo");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let _fifo = NotifyFifo::create(&link).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_fifo());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "x", "a symlink's target is not touched");
    }

    #[test]
    fn errors_name_the_path() {
        let dir = Dir::new("errors");
        let missing = dir.0.join("no-such-router").join("notify.fifo");
        let e = NotifyFifo::create(&missing).unwrap_err();
        assert!(matches!(e, FifoError::Create { .. }), "{e:?}");
        assert!(e.to_string().contains(&missing.display().to_string()), "{e}");

        let a_dir = dir.0.join("a-dir");
        std::fs::create_dir(&a_dir).unwrap();
        let e = NotifyFifo::create(&a_dir).unwrap_err();
        assert!(matches!(e, FifoError::Remove { .. }), "{e:?}");
        assert!(e.to_string().contains("a-dir"), "{e}");
    }
}
