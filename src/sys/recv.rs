//! Receiving a datagram into a buffer's spare capacity, without
//! initializing it first: the netlink receive buffer is 32 KiB (a dump
//! chunk may be that large), and zero-filling it made every page of it
//! resident in every `state-change` monitor, where a datagram of a few
//! hundred bytes touches one page.

use std::io;
use std::os::fd::RawFd;

/// Receives one datagram from `fd` into `buf`'s capacity (`buf` is cleared
/// first; its length is then what was received). `WouldBlock` when
/// nothing is queued on a non-blocking socket.
pub fn recv_into(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    let spare = buf.spare_capacity_mut();
    // SAFETY: recv(2) writes at most `spare.len()` bytes into memory we
    // own for that long; those bytes are initialized once it returns `n`.
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialized the first `n` bytes (n <= capacity).
    unsafe { buf.set_len(n) };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn receives_into_the_spare_capacity_only() {
        let (a, b) = UnixDatagram::pair().expect("pair");
        b.set_nonblocking(true).expect("nonblocking");
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(b"stale");
        let e = recv_into(b.as_raw_fd(), &mut buf).expect_err("nothing queued");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        a.send(b"datagram").expect("send");
        assert_eq!(recv_into(b.as_raw_fd(), &mut buf).expect("recv"), 8);
        assert_eq!(buf, b"datagram");
        assert_eq!(buf.capacity(), 64, "no reallocation");
    }
}
