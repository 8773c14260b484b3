//! `bench_flipper`: the timed part of `bench/daemon.py`, in Rust so that the
//! harness does not dominate what it measures.
//!
//! ```text
//! bench_flipper flip     < SPECS    one line per target: NETNS_FILE IFNAME ADDR/PREFIX
//! bench_flipper watch    < SPECS    same lines; then runs until stdin closes
//! bench_flipper blast SOCKET COUNT IN_FLIGHT
//! bench_flipper probe SOCKET GAP_MS < ROUTER_IDS
//! ```
//!
//! `flip` opens one NETLINK_ROUTE socket inside each target's namespace up
//! front (setns in, socket, setns back) and resolves the interface there,
//! prints `ready N`, then reads commands from stdin:
//!
//! - `add` / `del`: for every target in order, send RTM_NEWADDR (or
//!   RTM_DELADDR) for its address and read the kernel's ack right away
//!   (rtnetlink handles a request inside `sendmsg`, so the change is made,
//!   and multicast to listeners, before the ack is read). Prints `error
//!   INDEX ERRNO MESSAGE` per failed target, `acks T1 T2 ...` (each target's
//!   ack time, 0 when it failed), then `done ok=N err=E start=T0 last=TN`:
//!   `start` just before the first request, `last` the last ack.
//! - `quit` (or end of input): exit.
//!
//! `watch` opens, the same way, one NETLINK_ROUTE socket per target bound
//! to the IPv4 address group, prints `ready N`, then for every RTM_NEWADDR
//! / RTM_DELADDR of a target's address (and prefix) on its interface prints
//! `add INDEX T` or `del INDEX T`, T read when the kernel handed the
//! message over (the socket became readable); `overrun INDEX T` when a
//! socket's queue overflowed (ENOBUFS: events lost). It ends when stdin
//! closes. `bench/keepalived_scale.py` uses it to see, in 1000 namespaces at
//! once, when keepalived adds each primary VIP.
//!
//! `blast` is the agent receiver's calibration: COUNT notifications, POSTed
//! exactly as harouterd sends them (`X-Neutron-Router-Id: blast-I`), over
//! at most IN_FLIGHT connections at once; prints `done ok=N start=T0 last=TN`.
//!
//! `probe` is a control-socket client outside the harness's interpreter:
//! it reads router IDs (one a line, until an empty line), then asks SOCKET
//! `GET /v1/routers` and `GET /v1/routers/ID` (IDs in turn) alternately,
//! GAP_MS apart, and prints `list|one T DURATION STATUS BYTES` per answer
//! (T before connect, DURATION until the daemon closed the connection) or
//! `unreachable T` when the socket is not there or refuses. It ends when
//! stdin closes.
//!
//! All times are CLOCK_MONOTONIC nanoseconds, the clock of Python's
//! `time.monotonic_ns()`. Needs root (setns). Uses libc and the crate itself (its
//! namespace entry); no other dependency.

use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use harouterd::core::ident::Namespace;
use harouterd::sys::netns;

const RTM_NEWADDR: u16 = libc::RTM_NEWADDR;
const RTM_DELADDR: u16 = libc::RTM_DELADDR;
const NLMSG_ERROR: u16 = 2;
const IFA_ADDRESS: u16 = libc::IFA_ADDRESS;
const IFA_LOCAL: u16 = libc::IFA_LOCAL;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into a valid, owned timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct Target {
    sock: OwnedFd,
    ifindex: u32,
    addr: [u8; 4],
    prefix: u8,
}

fn fail(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// A NETLINK_ROUTE socket created inside the namespace `ns_path`, and the
/// index of `ifname` there (the crate's own namespace entry: always back
/// home afterwards).
fn open_target(ns_path: &str, ifname: &str) -> Result<(OwnedFd, u32), String> {
    let ns = Namespace::parse(ns_path).map_err(|e| fail(ns_path, e))?;
    netns::in_namespace(Some(&ns), || {
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(fail("socket", io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(ifname).map_err(|e| fail(ifname, e))?;
        // SAFETY: a valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(fail(&format!("interface {ifname} in {ns_path}"), io::Error::last_os_error()));
        }
        Ok((sock, ifindex))
    })
    .map_err(|e| fail(ns_path, e))?
}

fn parse_spec(line: &str) -> Result<(String, String, [u8; 4], u8), String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [ns, ifname, cidr] = fields[..] else { return Err(format!("bad spec line: {line:?}")) };
    let (addr, prefix) = cidr.split_once('/').ok_or_else(|| format!("not a CIDR: {cidr}"))?;
    let addr: std::net::Ipv4Addr = addr.parse().map_err(|e| fail(addr, e))?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("bad prefix in {cidr}"))?;
    Ok((ns.to_owned(), ifname.to_owned(), addr.octets(), prefix))
}

/// RTM_NEWADDR / RTM_DELADDR for one IPv4 address, as `ip addr add/del`
/// sends it: ifaddrmsg, then IFA_LOCAL and IFA_ADDRESS.
fn request(kind: u16, seq: u32, t: &Target) -> [u8; 40] {
    let flags = NLM_F_REQUEST | NLM_F_ACK | if kind == RTM_NEWADDR { NLM_F_CREATE | NLM_F_EXCL } else { 0 };
    let mut m = [0u8; 40];
    m[0..4].copy_from_slice(&40u32.to_ne_bytes());
    m[4..6].copy_from_slice(&kind.to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel fills it in. ifaddrmsg:
    m[16] = libc::AF_INET as u8;
    m[17] = t.prefix;
    m[18] = 0; // flags
    m[19] = 0; // scope: universe
    m[20..24].copy_from_slice(&t.ifindex.to_ne_bytes());
    for (off, kind) in [(24, IFA_LOCAL), (32, IFA_ADDRESS)] {
        m[off..off + 2].copy_from_slice(&8u16.to_ne_bytes());
        m[off + 2..off + 4].copy_from_slice(&kind.to_ne_bytes());
        m[off + 4..off + 8].copy_from_slice(&t.addr);
    }
    m
}

/// Sends one request and reads its ack: `Ok` or the errno the kernel gave.
fn change(t: &Target, kind: u16, seq: u32, buf: &mut [u8]) -> Result<(), i32> {
    let msg = request(kind, seq, t);
    // SAFETY: sending from a valid buffer on an owned socket (destination:
    // the kernel, netlink's default).
    let sent = unsafe { libc::send(t.sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO));
    }
    loop {
        // SAFETY: receiving into a valid, owned buffer.
        let n = unsafe { libc::recv(t.sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO));
        }
        let n = n as usize;
        if n < 20 {
            return Err(libc::EPROTO);
        }
        let kind_got = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq_got = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if kind_got != NLMSG_ERROR || seq_got != seq {
            continue; // not our ack (nothing else is expected: no groups joined)
        }
        let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        return if code == 0 { Ok(()) } else { Err(-code) };
    }
}

fn flip() -> Result<(), String> {
    let stdin = io::stdin();
    let mut lines = stdin.lock().lines();
    let targets = read_targets(&mut lines)?;
    let mut out = io::stdout().lock();
    let say = |out: &mut io::StdoutLock, text: String| -> Result<(), String> {
        out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| fail("stdout", e))
    };
    say(&mut out, format!("ready {}\n", targets.len()))?;
    let mut buf = vec![0u8; 8192];
    let mut seq = 0u32;
    let mut acks = vec![0u64; targets.len()];
    for line in lines {
        let line = line.map_err(|e| fail("stdin", e))?;
        let kind = match line.trim() {
            "add" => RTM_NEWADDR,
            "del" => RTM_DELADDR,
            "quit" => break,
            other => return Err(format!("unknown command {other:?}")),
        };
        seq = seq.wrapping_add(1);
        let mut errors = Vec::new();
        let start = now_ns();
        for (i, t) in targets.iter().enumerate() {
            match change(t, kind, seq, &mut buf) {
                Ok(()) => acks[i] = now_ns(),
                Err(errno) => {
                    acks[i] = 0;
                    errors.push((i, errno));
                }
            }
        }
        let last = acks.iter().copied().filter(|&a| a != 0).max().unwrap_or(start);
        let mut text = String::new();
        for (i, errno) in &errors {
            text += &format!("error {i} {errno} {}\n", io::Error::from_raw_os_error(*errno));
        }
        text += "acks";
        for a in &acks {
            text += &format!(" {a}");
        }
        text += &format!("\ndone ok={} err={} start={start} last={last}\n", targets.len() - errors.len(), errors.len());
        say(&mut out, text)?;
    }
    Ok(())
}

/// Reads target lines until an empty line (or the end of input) and opens
/// each target's socket.
fn read_targets(lines: &mut impl Iterator<Item = io::Result<String>>) -> Result<Vec<Target>, String> {
    let mut targets = Vec::new();
    for line in lines.by_ref() {
        let line = line.map_err(|e| fail("stdin", e))?;
        if line.trim().is_empty() {
            break;
        }
        let (ns, ifname, addr, prefix) = parse_spec(&line)?;
        let (sock, ifindex) = open_target(&ns, &ifname)?;
        targets.push(Target { sock, ifindex, addr, prefix });
    }
    Ok(targets)
}

/// Whether one netlink message (header at `m[0..]`) is an address event for
/// target `t`: `Some(true)` added, `Some(false)` removed.
fn addr_event(m: &[u8], t: &Target) -> Option<bool> {
    let kind = u16::from_ne_bytes([m[4], m[5]]);
    if (kind != RTM_NEWADDR && kind != RTM_DELADDR) || m.len() < 24 {
        return None;
    }
    let (family, prefix) = (m[16], m[17]);
    let ifindex = u32::from_ne_bytes([m[20], m[21], m[22], m[23]]);
    if family != libc::AF_INET as u8 || prefix != t.prefix || ifindex != t.ifindex {
        return None;
    }
    // IFA_LOCAL is the address; IFA_ADDRESS stands in without it.
    let (mut local, mut address) = (None, None);
    let mut a = 24;
    while a + 4 <= m.len() {
        let len = u16::from_ne_bytes([m[a], m[a + 1]]) as usize;
        let kind = u16::from_ne_bytes([m[a + 2], m[a + 3]]);
        if len < 4 || a + len > m.len() {
            break;
        }
        if len == 8 {
            let value = [m[a + 4], m[a + 5], m[a + 6], m[a + 7]];
            match kind {
                IFA_LOCAL => local = Some(value),
                IFA_ADDRESS => address = Some(value),
                _ => {}
            }
        }
        a += (len + 3) & !3;
    }
    (local.or(address) == Some(t.addr)).then_some(kind == RTM_NEWADDR)
}

fn watch() -> Result<(), String> {
    const RTMGRP_IPV4_IFADDR: u32 = 0x10;
    const STDIN: u64 = u64::MAX;
    let stdin = io::stdin();
    let mut lines = stdin.lock().lines();
    let targets = read_targets(&mut lines)?;
    drop(lines);
    // SAFETY: epoll_create1 with a valid flag; the descriptor is owned right away.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(fail("epoll_create1", io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let epoll = unsafe { OwnedFd::from_raw_fd(epfd) };
    let add = |fd: i32, data: u64| -> Result<(), String> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: data };
        // SAFETY: registering a valid descriptor with a valid event struct.
        if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(fail("epoll_ctl", io::Error::last_os_error()));
        }
        Ok(())
    };
    for (i, t) in targets.iter().enumerate() {
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        sa.nl_groups = RTMGRP_IPV4_IFADDR;
        let fd = t.sock.as_raw_fd();
        let size = 1i32 << 20;
        // SAFETY: valid socket, address and option buffers of the stated sizes.
        unsafe {
            if libc::bind(fd, (&sa as *const libc::sockaddr_nl).cast(), std::mem::size_of::<libc::sockaddr_nl>() as u32)
                != 0
            {
                return Err(fail("bind", io::Error::last_os_error()));
            }
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, (&size as *const i32).cast(), 4);
            libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK);
        }
        add(fd, i as u64)?;
    }
    add(0, STDIN)?;
    let mut out = io::stdout().lock();
    out.write_all(format!("ready {}\n", targets.len()).as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| fail("stdout", e))?;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: waiting into a valid, owned event array of the stated length.
        let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(fail("epoll_wait", e));
        }
        let t = now_ns();
        let mut text = String::new();
        for ev in &events[..n as usize] {
            if ev.u64 == STDIN {
                // SAFETY: reading into a valid, owned buffer.
                let got = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                if got <= 0 {
                    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| fail("stdout", e))?;
                    return Ok(());
                }
                continue;
            }
            let i = ev.u64 as usize;
            let target = &targets[i];
            loop {
                // SAFETY: receiving into a valid, owned buffer.
                let got = unsafe { libc::recv(target.sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if got < 0 {
                    match io::Error::last_os_error().raw_os_error() {
                        Some(libc::ENOBUFS) => {
                            text += &format!("overrun {i} {t}\n");
                            continue;
                        }
                        Some(libc::EINTR) => continue,
                        _ => break, // EAGAIN: drained
                    }
                }
                let got = got as usize;
                let mut off = 0;
                while off + 16 <= got {
                    let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
                    if len < 16 || off + len > got {
                        break;
                    }
                    match addr_event(&buf[off..off + len], target) {
                        Some(true) => text += &format!("add {i} {t}\n"),
                        Some(false) => text += &format!("del {i} {t}\n"),
                        None => {}
                    }
                    off += (len + 3) & !3;
                }
            }
        }
        if !text.is_empty() {
            out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| fail("stdout", e))?;
        }
    }
}

/// `count` POSTs to `path` with at most `in_flight` connections open: a
/// client as fast as harouterd's notifier, to calibrate the receiver.
fn blast(path: &str, count: usize, in_flight: usize) -> Result<(), String> {
    let mut open: std::collections::VecDeque<UnixStream> = std::collections::VecDeque::new();
    let mut ok = 0usize;
    let mut reply = [0u8; 512];
    let mut finish = |mut conn: UnixStream| -> Result<(), String> {
        let mut got = 0;
        loop {
            let n = conn.read(&mut reply[got..]).map_err(|e| fail("read", e))?;
            got += n;
            if n == 0 || reply[..got].windows(4).any(|w| w == b"\r\n\r\n") || got == reply.len() {
                break;
            }
        }
        if reply[..got].starts_with(b"HTTP/1.1 200") || reply[..got].starts_with(b"HTTP/1.0 200") {
            ok += 1;
        }
        Ok(())
    };
    let start = now_ns();
    for i in 0..count {
        if open.len() >= in_flight.max(1)
            && let Some(conn) = open.pop_front()
        {
            finish(conn)?;
        }
        let mut conn = UnixStream::connect(path).map_err(|e| fail(path, e))?;
        let req = format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Neutron-Router-Id: blast-{i}\r\n\
             X-Neutron-State: primary\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        conn.write_all(req.as_bytes()).map_err(|e| fail("write", e))?;
        open.push_back(conn);
    }
    while let Some(conn) = open.pop_front() {
        finish(conn)?;
    }
    let last = now_ns();
    println!("done ok={ok} start={start} last={last}");
    Ok(())
}

/// One `GET path` over the Unix socket at `socket`, read to the end:
/// (status, bytes). `Err` when it cannot connect.
fn get(socket: &str, path: &str, buf: &mut Vec<u8>) -> io::Result<(u16, usize)> {
    let mut conn = UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: harouterd\r\nConnection: close\r\n\r\n").as_bytes())?;
    buf.clear();
    conn.read_to_end(buf)?;
    let status = buf.split(|&b| b == b' ').nth(1).and_then(|s| std::str::from_utf8(s).ok()?.parse().ok()).unwrap_or(0);
    Ok((status, buf.len()))
}

fn probe(socket: &str, gap_ms: u64) -> Result<(), String> {
    let mut ids = Vec::new();
    let mut line = String::new();
    let stdin = io::stdin();
    loop {
        line.clear();
        if stdin.lock().read_line(&mut line).map_err(|e| fail("stdin", e))? == 0 || line.trim().is_empty() {
            break;
        }
        ids.push(line.trim().to_owned());
    }
    if ids.is_empty() {
        return Err("probe: no router IDs on stdin".to_owned());
    }
    let mut out = io::stdout().lock();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut scratch = [0u8; 256];
    let mut i = 0usize;
    loop {
        let mut pfd = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
        // SAFETY: polling one valid, owned pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, gap_ms as i32) };
        if ready > 0 {
            // SAFETY: reading into a valid, owned buffer.
            if unsafe { libc::read(0, scratch.as_mut_ptr().cast(), scratch.len()) } <= 0 {
                return Ok(());
            }
        }
        let (kind, path) = if i.is_multiple_of(2) {
            ("list", "/v1/routers".to_owned())
        } else {
            ("one", format!("/v1/routers/{}", ids[(i / 2) % ids.len()]))
        };
        let t0 = now_ns();
        let text = match get(socket, &path, &mut buf) {
            Ok((status, bytes)) => {
                i += 1;
                format!("{kind} {t0} {} {status} {bytes}\n", now_ns() - t0)
            }
            Err(_) => format!("unreachable {t0}\n"),
        };
        out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| fail("stdout", e))?;
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["flip"] => flip(),
        ["watch"] => watch(),
        ["probe", path, gap_ms] => match gap_ms.parse() {
            Ok(gap_ms) => probe(path, gap_ms),
            Err(_) => Err("probe: GAP_MS is a number".to_owned()),
        },
        ["blast", path, count, in_flight] => match (count.parse(), in_flight.parse()) {
            (Ok(count), Ok(in_flight)) => blast(path, count, in_flight),
            _ => Err("blast: COUNT and IN_FLIGHT are numbers".to_owned()),
        },
        _ => Err("usage: bench_flipper flip|watch < SPECS | bench_flipper blast SOCKET COUNT IN_FLIGHT | bench_flipper probe SOCKET GAP_MS < IDS".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_flipper: {e}");
            ExitCode::from(2)
        }
    }
}
