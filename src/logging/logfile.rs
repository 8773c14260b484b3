//! The log sink of the Neutron drop-in monitor (SPEC section 4): lines in
//! oslo.log's default format, appended to `--log-file` or written to stderr.
//!
//! Operators and Neutron's functional tests grep these files, so a line looks
//! exactly like one from the Python monitor:
//!
//! ```text
//! 2026-11-21 07:40:09.123 12345 INFO harouterd.state_change [-] Wrote router r1 state primary
//! ```
//!
//! Invariants:
//! - **Logging never stops the monitor.** A failed or partial write (full
//!   disk, a reader that stopped reading our stderr pipe) drops the line and
//!   bumps a counter ([`dropped_lines`]); nothing panics, nothing is retried
//!   later, nothing blocks forever: the log file and a pipe on stderr are
//!   written through a non-blocking file description, a socket on stderr
//!   (journald) with `MSG_DONTWAIT`.
//! - **One `write` per line.** The whole line, newline included, goes out in
//!   one system call on an `O_APPEND` descriptor, so lines from several
//!   monitors sharing a file never interleave and `logrotate copytruncate`
//!   works.
//! - **The file is opened once**, before privileges are dropped (it is often
//!   root-owned), and the descriptor is kept for the process lifetime; it is
//!   never reopened, so rotation must use `copytruncate`.
//! - **Root writes only where it was meant to.** `--log-file` usually sits
//!   in a directory the agent user owns; it is opened with
//!   [`crate::sys::files::nofollow`], so a symbolic link planted there (for the file or
//!   a directory on the way), a hard link to another file, a FIFO or a
//!   device is refused instead of receiving root's lines.
//! - The pid in each line is the process's at the time of the line: the
//!   monitor opens its log before detaching and logs from the detached
//!   process afterwards.
//! - Times are UTC, computed here from [`SystemTime`] (no date crate).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::sys::socket::MsgFlags;
use std::time::{SystemTime, UNIX_EPOCH};

/// Why the logger could not be set up.
#[derive(Debug)]
pub enum LogFileError {
    /// `--log-file` could not be opened for appending, or was refused.
    Open(crate::sys::files::nofollow::PathError),
    /// A logger was already installed in this process.
    AlreadyInitialized,
}

impl fmt::Display for LogFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogFileError::Open(e) => write!(f, "cannot open log file {e}"),
            LogFileError::AlreadyInitialized => f.write_str("a logger is already installed in this process"),
        }
    }
}

impl std::error::Error for LogFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogFileError::Open(e) => Some(e),
            LogFileError::AlreadyInitialized => None,
        }
    }
}

/// Where lines go. Every variant writes without blocking indefinitely, except
/// a terminal on stderr (a user who pressed Ctrl-S asked for that).
#[derive(Debug)]
enum Sink {
    /// Our own descriptor, `O_APPEND | O_NONBLOCK`: the log file, or a pipe
    /// on stderr reopened through `/proc/self/fd/2` so that `O_NONBLOCK` is
    /// set on a description nobody else shares.
    Own(File),
    /// stderr is a socket (journald under systemd): `send(MSG_DONTWAIT)`.
    StderrSocket,
    /// stderr as it is (terminal, regular file, /dev/null).
    Stderr,
}

const STDERR_FD: i32 = 2;

impl Sink {
    fn stderr() -> Sink {
        let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else { return Sink::Stderr };
        let kind = meta.file_type();
        if kind.is_socket() {
            Sink::StderrSocket
        } else if kind.is_fifo() {
            // A new open file description of the same pipe: O_NONBLOCK on it
            // does not change the caller's (or our parent's) stderr.
            OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open("/proc/self/fd/2")
                .map_or(Sink::Stderr, Sink::Own)
        } else {
            Sink::Stderr
        }
    }

    /// Writes `line` completely, or reports failure. Interrupted calls are
    /// retried a bounded number of times; `EAGAIN` is a failure (the reader
    /// is not keeping up and we do not wait for it). `Some(true)` when
    /// something but not everything was written: a torn line.
    fn write_line(&self, line: &[u8]) -> Result<(), bool> {
        let mut rest = line;
        let mut interrupts = 0;
        while !rest.is_empty() {
            let result = match self {
                Sink::Own(file) => (&*file).write(rest),
                Sink::StderrSocket => {
                    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
                    nix::sys::socket::send(STDERR_FD, rest, flags).map_err(io::Error::from)
                }
                // write(2) itself: std's stderr would pretend a closed fd 2
                // took the line.
                Sink::Stderr => nix::unistd::write(io::stderr(), rest).map_err(io::Error::from),
            };
            match result {
                Ok(n) if n > 0 => rest = rest.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted && interrupts < 8 => interrupts += 1,
                _ => return Err(rest.len() < line.len()),
            }
        }
        Ok(())
    }
}

/// How each line looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// oslo.log's layout ([`format_line`]): log files, and stderr outside
    /// journald.
    Oslo,
    /// `<N>MESSAGE` ([`format_journal_line`]): stderr connected to
    /// journald, which reads the syslog priority `N` from the prefix and
    /// stamps time, pid and unit itself (systemd's `SyslogLevelPrefix=`).
    Journal,
}

/// A [`log::Log`] writing oslo.log-style lines. Built by [`LogFile::open`];
/// [`init`] installs one as the process logger.
#[derive(Debug)]
pub struct LogFile {
    sink: Sink,
    style: Style,
    debug: bool,
    component: &'static str,
    dropped: AtomicUsize,
    /// The last line was cut short without its newline (a partial write to a
    /// full pipe): the next line starts with one, so it is not glued to the
    /// torn one.
    torn: AtomicBool,
}

impl LogFile {
    /// Opens `path` for appending (`O_APPEND | O_CREAT`, mode 0644,
    /// `O_NONBLOCK`, close-on-exec so keepalived/conntrackd do not inherit
    /// it) through [`crate::sys::files::nofollow::open_file`], or picks stderr when
    /// `path` is `None`.
    pub fn open(path: Option<&Path>, debug: bool, component: &'static str) -> Result<LogFile, LogFileError> {
        let sink = match path {
            Some(path) => crate::sys::files::nofollow::open_file(
                path,
                crate::sys::files::nofollow::Access::Append { create_mode: 0o644 },
            )
            .map(|opened| Sink::Own(opened.file))
            .map_err(LogFileError::Open)?,
            None => Sink::stderr(),
        };
        Ok(LogFile::with_sink(sink, debug, component))
    }

    fn with_sink(sink: Sink, debug: bool, component: &'static str) -> LogFile {
        LogFile {
            sink,
            style: Style::Oslo,
            debug,
            component,
            dropped: AtomicUsize::new(0),
            torn: AtomicBool::new(false),
        }
    }

    /// The same logger writing lines in `style`.
    pub fn with_style(self, style: Style) -> LogFile {
        LogFile { style, ..self }
    }

    /// The most verbose level written: DEBUG with `--debug`, else INFO
    /// (oslo's rule; TRACE is never written).
    pub fn max_level(&self) -> log::LevelFilter {
        if self.debug { log::LevelFilter::Debug } else { log::LevelFilter::Info }
    }

    /// Lines that could not be written (full disk, stalled reader).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed) as u64
    }
}

impl log::Log for LogFile {
    /// Our own records (target `harouterd...`) down to [`LogFile::max_level`];
    /// dependencies' records (neli logs every message at debug) only from
    /// WARNING up, so `--debug` shows our story, not netlink dumps.
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let ours = metadata.target().starts_with("harouterd");
        let max = if ours { self.max_level() } else { log::LevelFilter::Warn };
        metadata.level() <= max
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        let mut line = match self.style {
            Style::Oslo => format_line(SystemTime::now(), std::process::id(), record.level(), self.component, &message),
            Style::Journal => format_journal_line(record.level(), &message),
        };
        if self.torn.load(Ordering::Relaxed) {
            line.insert(0, '\n');
        }
        match self.sink.write_line(line.as_bytes()) {
            Ok(()) => self.torn.store(false, Ordering::Relaxed),
            Err(torn) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if torn {
                    self.torn.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// Nothing is buffered: each line is written when logged.
    fn flush(&self) {}
}

static INSTALLED: OnceLock<&'static LogFile> = OnceLock::new();

/// Opens the sink (see [`LogFile::open`]) and installs it as the process
/// logger. Call once, early, before privileges are dropped; `component` is
/// the logger name shown in every line (`harouterd.state_change`).
pub fn init(path: Option<&Path>, debug: bool, component: &'static str) -> Result<(), LogFileError> {
    install(LogFile::open(path, debug, component)?)
}

/// Installs an opened [`LogFile`] as the process logger (once).
pub fn install(logger: LogFile) -> Result<(), LogFileError> {
    let max = logger.max_level();
    // Leaked on purpose: the logger lives as long as the process (log's
    // contract), and its descriptor must stay open that long anyway.
    let logger: &'static LogFile = Box::leak(Box::new(logger));
    log::set_logger(logger).map_err(|_| LogFileError::AlreadyInitialized)?;
    log::set_max_level(max);
    let _ = INSTALLED.set(logger);
    Ok(())
}

/// Lines the installed logger failed to write (0 when none is installed).
pub fn dropped_lines() -> u64 {
    INSTALLED.get().map_or(0, |logger| logger.dropped())
}

/// Whether our stderr is the journald stream systemd connected it to:
/// `$JOURNAL_STREAM` names that stream's `DEVICE:INODE`, and only when fd 2
/// is that very file (not redirected since, not inherited by something
/// systemd did not start) may lines carry journald's `<N>` prefix.
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else { return false };
    is_stream(&value.to_string_lossy(), meta.dev(), meta.ino())
}

/// Whether `journal_stream` (`DEVICE:INODE`, decimal, as systemd writes
/// it) names the file with `dev` and `ino`.
pub fn is_stream(journal_stream: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = journal_stream.split_once(':') else { return false };
    d.parse::<u64>() == Ok(dev) && i.parse::<u64>() == Ok(ino)
}

/// One record for journald: `<N>` (the syslog severity) before every
/// line of the message, newline-terminated; nothing else, since journald
/// records time, pid and unit itself.
pub fn format_journal_line(level: log::Level, message: &str) -> String {
    let severity = crate::logging::syslog::severity(level);
    let mut out = String::with_capacity(message.len() + 4);
    for text in message.trim_end_matches('\n').split('\n') {
        out.push('<');
        out.push(char::from(b'0' + severity));
        out.push('>');
        out.push_str(text.trim_end_matches('\r'));
        out.push('\n');
    }
    out
}

/// oslo.log's level names.
fn level_name(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "ERROR",
        log::Level::Warn => "WARNING",
        log::Level::Info => "INFO",
        log::Level::Debug => "DEBUG",
        log::Level::Trace => "TRACE",
    }
}

/// One record as oslo.log's default format writes it
/// (`%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s [-] %(message)s`),
/// in UTC, newline-terminated. A multi-line message gives one prefixed line
/// per message line (as oslo does for tracebacks), so every line of the file
/// starts with a timestamp and a forged line cannot be injected.
pub fn format_line(time: SystemTime, pid: u32, level: log::Level, component: &str, message: &str) -> String {
    let (secs, millis) = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_millis()),
        Err(e) => {
            // Before 1970 (a clock reset to zero and then some): count back.
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_millis() {
                0 => (-secs, 0),
                ms => (-secs - 1, 1000 - ms),
            }
        }
    };
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = crate::core::time::civil_from_days(days);
    let prefix = format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{millis:03} {pid} {} {component} [-] ",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        level_name(level),
    );
    let mut out = String::with_capacity(prefix.len() + message.len() + 1);
    for text in message.trim_end_matches('\n').split('\n') {
        out.push_str(&prefix);
        out.push_str(text);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Log;
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use std::time::Duration;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis)
    }

    #[test]
    fn line_in_oslo_format() {
        // 2026-11-21 07:40:09.123 UTC
        let t = at(1_795_246_809, 123);
        assert_eq!(
            format_line(t, 12345, log::Level::Info, "harouterd.state_change", "Wrote router r1 state primary"),
            "2026-11-21 07:40:09.123 12345 INFO harouterd.state_change [-] Wrote router r1 state primary\n"
        );
    }

    #[test]
    fn journal_lines_carry_the_syslog_priority() {
        assert_eq!(format_journal_line(log::Level::Error, "boom"), "<3>boom\n");
        assert_eq!(format_journal_line(log::Level::Warn, "w"), "<4>w\n");
        assert_eq!(format_journal_line(log::Level::Info, "router r1: primary"), "<6>router r1: primary\n");
        assert_eq!(format_journal_line(log::Level::Debug, "d"), "<7>d\n");
        assert_eq!(format_journal_line(log::Level::Trace, "t"), "<7>t\n");
        // Every line keeps its priority: a message cannot forge another.
        assert_eq!(format_journal_line(log::Level::Warn, "a\r\n<3>b\n"), "<4>a\n<4><3>b\n");
    }

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        assert!(is_stream("8:12345", 8, 12345));
        assert!(!is_stream("8:12345", 8, 12346));
        assert!(!is_stream("9:12345", 8, 12345));
        assert!(!is_stream("8", 8, 12345));
        assert!(!is_stream("", 0, 0));
        assert!(!is_stream("x:y", 0, 0));
    }

    #[test]
    fn level_names_are_oslo_names() {
        let t = at(0, 7);
        let line = |level| format_line(t, 1, level, "c", "m");
        assert_eq!(line(log::Level::Error), "1970-01-01 00:00:00.007 1 ERROR c [-] m\n");
        assert_eq!(line(log::Level::Warn), "1970-01-01 00:00:00.007 1 WARNING c [-] m\n");
        assert_eq!(line(log::Level::Debug), "1970-01-01 00:00:00.007 1 DEBUG c [-] m\n");
        assert_eq!(line(log::Level::Trace), "1970-01-01 00:00:00.007 1 TRACE c [-] m\n");
    }

    #[test]
    fn leap_day_and_end_of_day() {
        // 2000-02-29 23:59:59.999
        let t = at(951_868_799, 999);
        assert_eq!(format_line(t, 9, log::Level::Info, "c", "x"), "2000-02-29 23:59:59.999 9 INFO c [-] x\n");
        // 2100-03-01 00:00:00.000
        let t = at(4_107_542_400, 0);
        assert_eq!(format_line(t, 9, log::Level::Info, "c", "x"), "2100-03-01 00:00:00.000 9 INFO c [-] x\n");
    }

    #[test]
    fn before_epoch() {
        let t = UNIX_EPOCH - Duration::from_millis(1);
        assert_eq!(format_line(t, 1, log::Level::Info, "c", "x"), "1969-12-31 23:59:59.999 1 INFO c [-] x\n");
        let t = UNIX_EPOCH - Duration::from_secs(86_400);
        assert_eq!(format_line(t, 1, log::Level::Info, "c", "x"), "1969-12-31 00:00:00.000 1 INFO c [-] x\n");
    }

    #[test]
    fn multi_line_message_prefixes_every_line() {
        let t = at(0, 0);
        assert_eq!(
            format_line(t, 1, log::Level::Error, "c", "first\nsecond\n"),
            "1970-01-01 00:00:00.000 1 ERROR c [-] first\n1970-01-01 00:00:00.000 1 ERROR c [-] second\n"
        );
        assert_eq!(format_line(t, 1, log::Level::Info, "c", ""), "1970-01-01 00:00:00.000 1 INFO c [-] \n");
    }

    fn record_at<'a>(level: log::Level, target: &'a str, args: fmt::Arguments<'a>) -> log::Record<'a> {
        log::Record::builder().level(level).target(target).args(args).build()
    }

    use crate::test_support::TempDir;

    #[test]
    fn appends_lines_and_filters_debug() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("append");
        let path = dir.join("monitor.log");
        std::fs::write(&path, "existing line\n").expect("seed log");
        let logger = LogFile::open(Some(&path), false, "harouterd.state_change").expect("open");
        logger.log(&record_at(
            log::Level::Info,
            "harouterd::cmd",
            format_args!("Initial status of router r1 is {}", "backup"),
        ));
        logger.log(&record_at(log::Level::Debug, "harouterd::cmd", format_args!("hidden")));
        logger.log(&record_at(log::Level::Info, "neli::nl", format_args!("dependency chatter")));
        logger.log(&record_at(log::Level::Warn, "neli::nl", format_args!("dependency warning")));
        let text = std::fs::read_to_string(&path).expect("read log");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "existing line");
        let pid = std::process::id();
        assert!(
            lines[1]
                .ends_with(&format!(" {pid} INFO harouterd.state_change [-] Initial status of router r1 is backup")),
            "{}",
            lines[1]
        );
        assert!(lines[2].ends_with(" WARNING harouterd.state_change [-] dependency warning"), "{}", lines[2]);
        assert_eq!(logger.dropped(), 0);
        // New file mode 0644 (created here with the umask the test runs under
        // at most removing bits), close-on-exec descriptor.
        let new_path = dir.join("new.log");
        let fresh = LogFile::open(Some(&new_path), true, "c").expect("open new");
        let mode = std::fs::metadata(&new_path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode & !0o644, 0, "mode {mode:o}");
        let Sink::Own(file) = &fresh.sink else { panic!("a file sink") };
        let flags = fcntl(file, FcntlArg::F_GETFD).expect("F_GETFD");
        assert!(flags & libc::FD_CLOEXEC != 0);
    }

    #[test]
    fn debug_enabled_shows_debug() {
        let dir = TempDir::new("debug");
        let path = dir.join("monitor.log");
        let logger = LogFile::open(Some(&path), true, "c").expect("open");
        assert_eq!(logger.max_level(), log::LevelFilter::Debug);
        logger.log(&record_at(log::Level::Debug, "harouterd", format_args!("shown")));
        logger.log(&record_at(log::Level::Trace, "harouterd", format_args!("never")));
        let text = std::fs::read_to_string(&path).expect("read log");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(" DEBUG c [-] shown\n"));
    }

    #[test]
    fn failed_write_is_counted_not_fatal() {
        // /dev/full fails every write with ENOSPC, like a full disk.
        if !Path::new("/dev/full").exists() {
            return;
        }
        let full = OpenOptions::new().append(true).open("/dev/full").expect("open /dev/full");
        let logger = LogFile::with_sink(Sink::Own(full), false, "c");
        logger.log(&record_at(log::Level::Error, "harouterd", format_args!("lost")));
        logger.log(&record_at(log::Level::Error, "harouterd", format_args!("lost too")));
        assert_eq!(logger.dropped(), 2);
    }

    #[test]
    fn full_pipe_drops_instead_of_blocking() {
        let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
        let (reader, writer) = (File::from(reader), File::from(writer));
        fcntl(&writer, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).expect("F_SETFL");
        let logger = LogFile::with_sink(Sink::Own(writer), false, "c");
        let big = "x".repeat(4000);
        for _ in 0..64 {
            // 64 × 4 KiB exceeds the default 64 KiB pipe: some lines must drop.
            logger.log(&record_at(log::Level::Info, "harouterd", format_args!("{big}")));
        }
        assert!(logger.dropped() > 0);
        // Drain the pipe, then log again: every complete line read back is
        // well formed, and the torn one (if any) does not swallow the next.
        let mut reader = reader;
        fcntl(&reader, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).expect("F_SETFL");
        let mut buf = vec![0u8; 1 << 20];
        let mut got = Vec::new();
        while let Ok(n @ 1..) = std::io::Read::read(&mut reader, &mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        logger.log(&record_at(log::Level::Info, "harouterd", format_args!("after")));
        while let Ok(n @ 1..) = std::io::Read::read(&mut reader, &mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8(got).expect("utf-8");
        let last = text.lines().last().expect("lines");
        assert!(last.ends_with(" INFO c [-] after"), "{last}");
        assert!(text.lines().filter(|l| l.contains("after")).all(|l| l.starts_with(|c: char| c.is_ascii_digit())));
    }

    #[test]
    fn open_failure_names_the_path() {
        let err = LogFile::open(Some(Path::new("/nonexistent-dir/x/monitor.log")), false, "c").expect_err("must fail");
        let text = err.to_string();
        assert!(
            text.starts_with(
                "cannot open log file /nonexistent-dir/x/monitor.log: cannot open directory /nonexistent-dir: "
            ),
            "{text}"
        );
    }

    #[test]
    fn a_planted_symlink_gets_no_lines() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("planted");
        // Group-writable: a link in it could come from someone else.
        std::fs::set_permissions(&*dir, std::fs::Permissions::from_mode(0o775)).expect("chmod");
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").expect("seed");
        let path = dir.join("monitor.log");
        std::os::unix::fs::symlink(&victim, &path).expect("symlink");
        let err = LogFile::open(Some(&path), false, "c").expect_err("must refuse");
        assert!(err.to_string().contains("refusing to follow the symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "precious");
    }
}
