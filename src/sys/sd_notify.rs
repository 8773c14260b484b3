//! systemd's service notification protocol (`sd_notify(3)`), without
//! libsystemd: one datagram of `KEY=VALUE` lines to the Unix socket named
//! by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//!
//! What the daemon says, as keepalived does under `Type=notify`:
//! `READY=1` once serving, `RELOADING=1` with `MONOTONIC_USEC=` (so
//! systemd ≥ 253 ties the reload to the `systemctl reload` that caused it)
//! when a SIGHUP is taken, `READY=1` again when the reload is over (applied
//! or rejected: the daemon runs either way), `STOPPING=1` on SIGTERM, and
//! a `STATUS=` line each time for `systemctl status`.
//!
//! Invariants:
//! - **Never blocks, never fails the daemon.** The socket is non-blocking;
//!   a full or missing receiver loses the message, which is logged at
//!   debug (systemd then times the start out or marks it failed: its own
//!   rules). Nothing is retried.
//! - Only the process that reads `$NOTIFY_SOCKET` sends; children get a
//!   fixed environment without it ([`crate::sys::spawn`]), so no helper can
//!   speak for the daemon.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// A connection-less sender to systemd's notification socket.
#[derive(Debug)]
pub struct SdNotify {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// As given, for messages.
    name: String,
}

impl SdNotify {
    /// The sender for `$NOTIFY_SOCKET`: `None` when it is unset or empty
    /// (not started by systemd as a notify service), an error when it
    /// names something that cannot be used.
    pub fn from_env() -> Option<io::Result<SdNotify>> {
        let value = std::env::var_os(NOTIFY_SOCKET)?;
        (!value.is_empty()).then(|| SdNotify::new(&value))
    }

    /// A sender for the socket `name`: an absolute path, or `@NAME` for an
    /// abstract socket.
    pub fn new(name: &OsStr) -> io::Result<SdNotify> {
        let bytes = name.as_bytes();
        let addr = match bytes.split_first() {
            Some((b'@', abstract_name)) => SocketAddr::from_abstract_name(abstract_name)?,
            Some((b'/', _)) => SocketAddr::from_pathname(name)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "neither an absolute path nor an abstract socket name (@...)",
                ));
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(SdNotify { socket, addr, name: name.to_string_lossy().into_owned() })
    }

    /// Sends `message` (newline-separated `KEY=VALUE` lines) at once, or
    /// not at all.
    pub fn send(&self, message: &str) -> io::Result<()> {
        match self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            Ok(n) if n == message.len() => Ok(()),
            Ok(n) => Err(io::Error::other(format!("sent {n} of {} bytes", message.len()))),
            Err(e) => Err(e),
        }
    }

    /// [`SdNotify::send`], a failure logged at debug (see the module docs).
    pub fn notify(&self, message: &str) {
        if let Err(e) = self.send(message) {
            log::debug!("cannot notify systemd at {}: {e}", self.name);
        }
    }
}

/// `CLOCK_MONOTONIC` in microseconds, as `MONOTONIC_USEC=` wants it.
pub fn monotonic_usec() -> u64 {
    use nix::sys::time::TimeValLike;
    // In i64 whatever the width of time_t (32 bits on 32-bit musl targets).
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(0, |ts| u64::try_from(ts.num_microseconds()).unwrap_or(0))
}

/// `STATUS=` text: one line, as systemd shows one.
pub fn status_line(text: &str) -> String {
    format!("STATUS={}", text.replace(['\n', '\r'], " "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;
    use std::time::Duration;

    fn receive(server: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = server.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn path_and_abstract_sockets() {
        let dir = TempDir::new("sdnotify");
        let path = dir.join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let sender = SdNotify::new(path.as_os_str()).unwrap();
        sender.send("READY=1\nSTATUS=serving").unwrap();
        assert_eq!(receive(&server), "READY=1\nSTATUS=serving");

        let name = format!("harouterd-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let sender = SdNotify::new(OsStr::new(&format!("@{name}"))).unwrap();
        sender.send("STOPPING=1").unwrap();
        assert_eq!(receive(&server), "STOPPING=1");
    }

    #[test]
    fn a_missing_receiver_is_an_error_not_a_wait() {
        let dir = TempDir::new("sdnotify-missing");
        let sender = SdNotify::new(dir.join("nobody").as_os_str()).unwrap();
        assert!(sender.send("READY=1").is_err());
        sender.notify("READY=1");
        assert!(SdNotify::new(OsStr::new("relative")).is_err());
        assert!(SdNotify::new(OsStr::new("")).is_err());
    }

    #[test]
    fn monotonic_and_status() {
        let a = monotonic_usec();
        let b = monotonic_usec();
        assert!(a > 0 && b >= a);
        assert_eq!(status_line("reload failed: a\nb"), "STATUS=reload failed: a b");
    }
}
