//! The daemon's log sink: syslog when it runs as a service, stderr in the
//! foreground (SPEC section 3; init-script services have no terminal, and
//! operators of appliances read syslog).
//!
//! Each record becomes one datagram per message line, sent to `/dev/log`:
//!
//! ```text
//! <30>harouterd[4242]: router r1: backup -> primary
//! ```
//!
//! That is RFC 3164's `<PRI>TAG[PID]: MSG` with facility `daemon` and no
//! timestamp or hostname: on the local socket syslogd (rsyslog, syslog-ng,
//! busybox syslogd, journald) stamps the message with its own receive time
//! and host, which is what glibc-free senders commonly do.
//!
//! Invariants:
//! - **Logging never stops or stalls the daemon.** The socket is
//!   non-blocking; a full syslog queue, a missing `/dev/log`, or any other
//!   send error drops the line and counts it ([`dropped_messages`]);
//!   nothing panics, nothing waits, nothing is queued for later.
//! - **Syslog restarts are survived.** After a send fails for any reason
//!   but a full queue, the socket is reconnected on the spot (once per
//!   line, so a syslog that is simply absent costs one failed `connect`
//!   per line and no more).
//! - **One line per datagram.** A multi-line message gives one datagram
//!   per line, each with the full prefix, so a message cannot forge a
//!   separate entry; a line is cut at [`MAX_LINE`] bytes (rsyslog's default
//!   limit is 8 KiB).
//! - Passwords never reach log calls anywhere in the crate (config `Secret`
//!   has no `Display` and a masked `Debug`), so nothing is masked here.

use std::fmt;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::logging::logfile::{self, LogFileError};

/// Where the system logger listens.
pub const DEV_LOG: &str = "/dev/log";

/// The tag in front of every message.
pub const TAG: &str = "harouterd";

/// syslog facility `daemon` (RFC 3164 numbering).
pub const FACILITY_DAEMON: u8 = 3;

/// Longest message text sent per datagram, in bytes (cut at a character
/// boundary); leaves room for the prefix under rsyslog's 8 KiB default.
pub const MAX_LINE: usize = 8000;

/// The component name shown on stderr lines in the foreground.
pub const COMPONENT: &str = "harouterd.daemon";

/// RFC 5424 severities: err, warning, info, debug (trace is debug too).
pub fn severity(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// One datagram: `<PRI>harouterd[PID]: TEXT`, PRI = facility × 8 +
/// severity. `text` is one line (no newline); it is cut to [`MAX_LINE`]
/// bytes at a character boundary.
pub fn format_datagram(pid: u32, level: log::Level, text: &str) -> String {
    let mut end = text.len().min(MAX_LINE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let pri = u16::from(FACILITY_DAEMON) * 8 + u16::from(severity(level));
    format!("<{pri}>{TAG}[{pid}]: {}", &text[..end])
}

/// The datagrams for one message: one per line; trailing newlines and `\r`
/// before a newline are dropped; an empty message still gives one
/// (empty) entry.
pub fn format_message(pid: u32, level: log::Level, message: &str) -> Vec<String> {
    message
        .trim_end_matches('\n')
        .split('\n')
        .map(|line| format_datagram(pid, level, line.trim_end_matches('\r')))
        .collect()
}

/// A [`log::Log`] sending to a syslog datagram socket (normally
/// [`DEV_LOG`]; any path for tests). Connects lazily, on the first line.
#[derive(Debug)]
pub struct Syslog {
    path: PathBuf,
    socket: Mutex<Option<UnixDatagram>>,
    pid: u32,
    max: log::LevelFilter,
    dropped: AtomicUsize,
}

impl Syslog {
    /// A logger for the socket at `path`, writing our records down to `max`
    /// and dependencies' records from warnings up. Never fails: a syslog
    /// that is not there yet is looked for again on each line.
    pub fn new(path: &Path, max: log::LevelFilter) -> Syslog {
        Syslog {
            path: path.to_path_buf(),
            socket: Mutex::new(None),
            pid: std::process::id(),
            max,
            dropped: AtomicUsize::new(0),
        }
    }

    /// Datagrams that could not be sent.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed) as u64
    }

    fn connect(&self) -> io::Result<UnixDatagram> {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        socket.connect(&self.path)?;
        Ok(socket)
    }

    /// Sends one datagram or gives up at once. A full queue (`EAGAIN`)
    /// keeps the socket (syslogd is alive, just behind); any other failure
    /// (`ECONNREFUSED` after a syslogd restart, `ENOTCONN`, ...) reconnects
    /// and tries once more.
    fn send(&self, datagram: &[u8]) -> bool {
        // A panic while the lock was held cannot leave the Option invalid.
        let mut slot = self.socket.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for _ in 0..2 {
            if slot.is_none() {
                match self.connect() {
                    Ok(socket) => *slot = Some(socket),
                    Err(_) => return false,
                }
            }
            let Some(socket) = slot.as_ref() else { return false };
            match socket.send(datagram) {
                Ok(_) => return true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => *slot = None,
            }
        }
        false
    }
}

impl log::Log for Syslog {
    /// Our records (target `harouterd...`) down to the configured level;
    /// dependencies' (neli logs every netlink message at debug) from
    /// warnings up.
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let max = if metadata.target().starts_with("harouterd") { self.max } else { log::LevelFilter::Warn };
        metadata.level() <= max
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        for datagram in format_message(self.pid, record.level(), &record.args().to_string()) {
            if !self.send(datagram.as_bytes()) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Nothing is buffered.
    fn flush(&self) {}
}

/// Why logging could not be set up.
#[derive(Debug)]
pub enum LoggingError {
    /// A logger is already installed in this process.
    AlreadyInitialized,
    /// The foreground stderr sink could not be set up.
    Stderr(LogFileError),
}

impl fmt::Display for LoggingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoggingError::AlreadyInitialized => f.write_str("a logger is already installed in this process"),
            LoggingError::Stderr(e) => write!(f, "cannot log to stderr: {e}"),
        }
    }
}

impl std::error::Error for LoggingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoggingError::AlreadyInitialized => None,
            LoggingError::Stderr(e) => Some(e),
        }
    }
}

static SYSLOG: OnceLock<&'static Syslog> = OnceLock::new();

/// Installs the daemon's logger, once, early (after [`crate::sys::daemonize`]):
///
/// - `foreground`: stderr, through [`logfile::LogFile`] without a path, so
///   one line per record (`2026-11-21 07:40:09.123 4242 INFO
///   harouterd.daemon [-] message`) written without blocking (a stalled
///   pipe or journald socket drops lines and counts them) and never
///   panicking. `simple_logger` is not used: with the features this crate
///   enables it prints to stdout with `println!`, which blocks on a full
///   pipe and panics on a closed one. `LogFile` writes nothing below
///   DEBUG, so `Trace` acts as `Debug`. When stderr is the journald
///   stream systemd gave us ([`logfile::stderr_is_journal`]), lines are
///   `<N>MESSAGE` instead, so journald files each at its own priority.
/// - otherwise: syslog at [`DEV_LOG`], facility daemon (see [`Syslog`]).
pub fn init_daemon_logging(foreground: bool, level: log::LevelFilter) -> Result<(), LoggingError> {
    if foreground {
        let style = if logfile::stderr_is_journal() { logfile::Style::Journal } else { logfile::Style::Oslo };
        logfile::LogFile::open(None, level >= log::LevelFilter::Debug, COMPONENT)
            .and_then(|logger| logfile::install(logger.with_style(style)))
            .map_err(|e| match e {
                LogFileError::AlreadyInitialized => LoggingError::AlreadyInitialized,
                other => LoggingError::Stderr(other),
            })?;
        // LogFile knows only INFO or DEBUG; the global filter narrows it
        // further (`--log-level warn`).
        log::set_max_level(level.min(log::LevelFilter::Debug));
        return Ok(());
    }
    install(level)
}

/// Installs a [`Syslog`] at [`DEV_LOG`], writing our records down to
/// `level`, as the process logger (once): the daemon's when it detaches,
/// the detached monitor's without `--log-file`.
pub fn install(level: log::LevelFilter) -> Result<(), LoggingError> {
    // Leaked on purpose: the logger lives as long as the process.
    let logger: &'static Syslog = Box::leak(Box::new(Syslog::new(Path::new(DEV_LOG), level)));
    log::set_logger(logger).map_err(|_| LoggingError::AlreadyInitialized)?;
    log::set_max_level(level);
    let _ = SYSLOG.set(logger);
    Ok(())
}

/// Messages the installed daemon logger could not deliver (syslog or
/// stderr); 0 when none is installed.
pub fn dropped_messages() -> u64 {
    SYSLOG.get().map_or(0, |s| s.dropped()) + logfile::dropped_lines()
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::{Level, Log, Record};
    use std::time::Duration;

    #[test]
    fn priorities_and_layout() {
        assert_eq!(format_datagram(42, Level::Error, "boom"), "<27>harouterd[42]: boom");
        assert_eq!(format_datagram(42, Level::Warn, "w"), "<28>harouterd[42]: w");
        assert_eq!(
            format_datagram(42, Level::Info, "router r1: backup -> primary"),
            "<30>harouterd[42]: router r1: backup -> primary"
        );
        assert_eq!(format_datagram(1, Level::Debug, ""), "<31>harouterd[1]: ");
        assert_eq!(format_datagram(1, Level::Trace, "t"), "<31>harouterd[1]: t");
    }

    #[test]
    fn one_datagram_per_line() {
        assert_eq!(format_message(7, Level::Warn, "a\r\nb\n\n"), vec!["<28>harouterd[7]: a", "<28>harouterd[7]: b"]);
        assert_eq!(format_message(7, Level::Info, ""), vec!["<30>harouterd[7]: "]);
        assert_eq!(
            format_message(7, Level::Info, "a\n\nb"),
            vec!["<30>harouterd[7]: a", "<30>harouterd[7]: ", "<30>harouterd[7]: b"]
        );
    }

    #[test]
    fn long_lines_are_cut_at_a_character_boundary() {
        let text = "é".repeat(MAX_LINE); // 2 bytes each
        let d = format_datagram(1, Level::Info, &text);
        let body = d.strip_prefix("<30>harouterd[1]: ").unwrap();
        assert_eq!(body.len(), MAX_LINE);
        let odd = format!("x{text}");
        let d = format_datagram(1, Level::Info, &odd);
        assert_eq!(d.strip_prefix("<30>harouterd[1]: ").unwrap().len(), MAX_LINE - 1);
    }

    use crate::test_support::TempDir as Dir;

    fn server(path: &Path) -> UnixDatagram {
        let s = UnixDatagram::bind(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    fn recv(s: &UnixDatagram) -> String {
        let mut buf = vec![0u8; 16 * 1024];
        let n = s.recv(&mut buf).expect("a datagram");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn log_at(logger: &Syslog, level: Level, target: &str, message: &str) {
        logger.log(&Record::builder().args(format_args!("{message}")).level(level).target(target).build());
    }

    #[test]
    fn round_trip_through_a_datagram_socket() {
        let dir = Dir::new("rt");
        let path = dir.0.join("log");
        let srv = server(&path);
        let logger = Syslog::new(&path, log::LevelFilter::Info);
        let pid = std::process::id();

        log_at(&logger, Level::Warn, "harouterd::daemon", "router r1: keepalived died\nrespawning");
        assert_eq!(recv(&srv), format!("<28>harouterd[{pid}]: router r1: keepalived died"));
        assert_eq!(recv(&srv), format!("<28>harouterd[{pid}]: respawning"));

        // Below the level, and a dependency's chatter: not sent.
        log_at(&logger, Level::Debug, "harouterd::daemon", "hidden");
        log_at(&logger, Level::Info, "neli::socket", "hidden");
        log_at(&logger, Level::Error, "neli::socket", "shown");
        assert_eq!(recv(&srv), format!("<27>harouterd[{pid}]: shown"));
        assert_eq!(logger.dropped(), 0);
    }

    #[test]
    fn missing_syslog_drops_and_a_restarted_one_is_found_again() {
        let dir = Dir::new("restart");
        let path = dir.0.join("log");
        let logger = Syslog::new(&path, log::LevelFilter::Info);

        log_at(&logger, Level::Info, "harouterd", "nobody listens");
        assert_eq!(logger.dropped(), 1);

        let srv = server(&path);
        log_at(&logger, Level::Info, "harouterd", "first");
        assert!(recv(&srv).ends_with(": first"));

        // syslogd restarts: old socket gone, a new one bound at the path.
        drop(srv);
        std::fs::remove_file(&path).unwrap();
        log_at(&logger, Level::Info, "harouterd", "lost");
        assert_eq!(logger.dropped(), 2);
        let srv = server(&path);
        log_at(&logger, Level::Info, "harouterd", "second");
        assert!(recv(&srv).ends_with(": second"));
        assert_eq!(logger.dropped(), 2);

        // A restart between two lines: the stale socket's send fails, the
        // reconnect finds the new one, and the line is not lost.
        drop(srv);
        std::fs::remove_file(&path).unwrap();
        let srv = server(&path);
        log_at(&logger, Level::Info, "harouterd", "third");
        assert!(recv(&srv).ends_with(": third"));
        assert_eq!(logger.dropped(), 2);
    }

    #[test]
    fn a_full_syslog_drops_instead_of_blocking() {
        let dir = Dir::new("full");
        let path = dir.0.join("log");
        let srv = server(&path);
        let logger = Syslog::new(&path, log::LevelFilter::Info);
        let line = "x".repeat(1000);
        // Nobody reads: the receive queue fills up and further lines are
        // dropped; the loop finishes (no send ever blocks).
        for _ in 0..5000 {
            log_at(&logger, Level::Info, "harouterd", &line);
        }
        assert!(logger.dropped() > 0);
        // Still connected: once syslog catches up, lines flow again.
        let mut buf = vec![0u8; 16 * 1024];
        srv.set_nonblocking(true).unwrap();
        while srv.recv(&mut buf).is_ok() {}
        let before = logger.dropped();
        log_at(&logger, Level::Info, "harouterd", "after");
        assert_eq!(logger.dropped(), before);
    }
}
