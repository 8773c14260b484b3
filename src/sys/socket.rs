//! Whether something listens on a Unix stream socket, asked without ever
//! blocking.

use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};

/// Whether a process accepts connections on the Unix stream socket `path`:
/// a non-blocking connect that succeeds (or finds the backlog full) says
/// yes; no such file, not a socket, or a socket nobody listens on (what a
/// killed process leaves behind) say no. Never blocks, never follows a
/// path the kernel would not.
pub fn unix_socket_answers(path: &Path) -> bool {
    let Ok(addr) = UnixAddr::new(path) else { return false };
    let Ok(fd) = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)
    else {
        return false;
    };
    matches!(connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr), Ok(()) | Err(Errno::EAGAIN | Errno::EINPROGRESS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_dead_and_missing_sockets() {
        let dir = crate::test_support::TempDir::new("sock");
        let path = dir.join("s");
        assert!(!unix_socket_answers(&path), "missing");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        assert!(unix_socket_answers(&path), "listening");
        drop(listener);
        // A socket nobody listens on (made with mknod: the one just closed
        // may live on for a moment in a child another test is forking).
        let dead = dir.join("dead");
        nix::sys::stat::mknod(&dead, nix::sys::stat::SFlag::S_IFSOCK, nix::sys::stat::Mode::S_IRWXU, 0).expect("mknod");
        assert!(!unix_socket_answers(&dead), "nobody listens");
        std::fs::write(dir.join("f"), "x").expect("write");
        assert!(!unix_socket_answers(&dir.join("f")), "not a socket");
    }
}
