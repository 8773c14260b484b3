//! The rtnetlink module against a real kernel: a socket opened inside a
//! namespace the test creates, real address and link changes made with
//! `ip`, and a forced receive-queue overrun (tiny SO_RCVBUF, thousands of
//! changes while nobody reads) that must end in a view equal to the truth.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use harouterd::core::ident::Namespace;
use harouterd::core::net::Cidr;
use harouterd::netlink::{Change, Read, RtSocket};
use mio::{Events, Interest, Poll, Token};

use common::{Netns, TempDir};

struct Watch {
    poll: Poll,
    socket: RtSocket,
    scratch: Vec<u8>,
    seen: Vec<Change>,
}

impl Watch {
    fn open(ns: &Netns, rcvbuf: Option<usize>) -> Watch {
        let namespace = Namespace::parse(ns.name()).unwrap();
        let mut socket = RtSocket::open(Some(&namespace), rcvbuf).unwrap();
        let poll = Poll::new().unwrap();
        poll.registry().register(&mut socket, Token(0), Interest::READABLE).unwrap();
        Watch { poll, socket, scratch: Vec::new(), seen: Vec::new() }
    }

    /// Reads until `done` holds for what was seen so far, or panics after 5 s.
    fn until(&mut self, what: &str, done: impl Fn(&[Change], &RtSocket) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut events = Events::with_capacity(4);
        while !done(&self.seen, &self.socket) {
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            assert!(!left.is_zero(), "timed out waiting for {what}; seen {:?}", self.seen);
            // A delayed re-dump is due at the socket's deadline, readable or not.
            let wake = self.socket.deadline().map_or(left, |d| d.saturating_duration_since(now).min(left));
            self.poll.poll(&mut events, Some(wake)).unwrap();
            let seen = &mut self.seen;
            while self.socket.read(&mut self.scratch, Instant::now(), &mut |c| seen.push(c)).unwrap() == Read::More {}
        }
    }
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).unwrap()
}

#[test]
fn follows_addresses_and_links_in_a_namespace() {
    if !common::require_root_and(&["ip"]) {
        return;
    }
    let ns = Netns::new("nl");
    common::add_veth_pair(&ns, "ha-a", "ha-b");
    ns.ip(&["addr", "add", "10.9.9.9/24", "dev", "ha-b"]);
    let mut w = Watch::open(&ns, None);
    w.until("the initial dump", |seen, _| seen.contains(&Change::Resynced));
    assert!(w.socket.is_synced());
    assert!(w.socket.view().has_addr("ha-b", &cidr("10.9.9.9/24")));
    assert!(!w.socket.view().has_addr("ha-a", &cidr("169.254.0.1/24")));

    ns.ip(&["addr", "add", "169.254.0.1/24", "dev", "ha-a"]);
    let added = Change::Addr { ifname: "ha-a".into(), cidr: cidr("169.254.0.1/24"), added: true };
    w.until("the address added", |seen, _| seen.contains(&added));
    assert!(w.socket.view().has_addr("ha-a", &cidr("169.254.0.1/24")));

    ns.ip(&["addr", "add", "2001:db8::1/64", "dev", "ha-a", "nodad"]);
    let v6 = Change::Addr { ifname: "ha-a".into(), cidr: cidr("2001:db8::1/64"), added: true };
    w.until("the IPv6 address", |seen, _| seen.contains(&v6));

    ns.ip(&["addr", "del", "169.254.0.1/24", "dev", "ha-a"]);
    let removed = Change::Addr { ifname: "ha-a".into(), cidr: cidr("169.254.0.1/24"), added: false };
    w.until("the address removed", |seen, _| seen.contains(&removed));
    assert!(!w.socket.view().has_addr("ha-a", &cidr("169.254.0.1/24")));

    ns.ip(&["link", "del", "ha-a"]);
    w.until("the link deleted", |seen, _| seen.contains(&Change::LinkGone { ifname: "ha-a".into() }));
    assert!(!w.socket.view().has_link("ha-a") && !w.socket.view().has_link("ha-b"));
    assert_eq!(w.socket.resyncs(), 0);
}

#[test]
fn missing_namespace_is_a_clear_error() {
    if !common::require_root_and(&["ip"]) {
        return;
    }
    let gone = Namespace::parse("hrt-no-such-namespace").unwrap();
    let err = RtSocket::open(Some(&gone), None).err().expect("opened a missing namespace");
    let text = err.to_string();
    assert!(text.contains("hrt-no-such-namespace") && text.contains("/run/netns/"), "{text}");
}

/// A burst of address changes into a socket with a tiny receive buffer that
/// nobody reads: the kernel drops messages (ENOBUFS). The socket must report
/// the overrun, re-dump, and end with exactly the kernel's addresses, the
/// monitored one included, so no transition is lost.
#[test]
fn overrun_is_detected_and_reconciled() {
    if !common::require_root_and(&["ip"]) {
        return;
    }
    let ns = Netns::new("ovr");
    common::add_veth_pair(&ns, "ha-a", "ha-b");
    let mut w = Watch::open(&ns, Some(1024));
    w.until("the initial dump", |seen, _| seen.contains(&Change::Resynced));

    // 3000 changes; the monitored address flips many times and ends present.
    let dir = TempDir::new("ovr");
    let batch = dir.join("batch");
    let mut f = std::fs::File::create(&batch).unwrap();
    for i in 0..1000u32 {
        writeln!(f, "addr add 10.{}.{}.1/32 dev ha-b", i / 250, i % 250).unwrap();
        let verb = if i % 2 == 0 { "add" } else { "del" };
        writeln!(f, "addr {verb} 169.254.0.1/24 dev ha-a").unwrap();
    }
    for i in 0..500u32 {
        writeln!(f, "addr del 10.{}.{}.1/32 dev ha-b", i / 250, i % 250).unwrap();
    }
    writeln!(f, "addr add 169.254.0.1/24 dev ha-a").unwrap();
    drop(f);
    let status =
        std::process::Command::new(common::tool("ip")).args(["-n", ns.name(), "-batch"]).arg(&batch).status().unwrap();
    assert!(status.success());

    w.until("an overrun and the resync after it", |seen, _| {
        seen.iter().position(|c| *c == Change::Overrun).is_some_and(|i| seen[i..].contains(&Change::Resynced))
    });
    let view = w.socket.view();
    assert!(view.has_addr("ha-a", &cidr("169.254.0.1/24")), "monitored address lost");
    for i in 0..1000u32 {
        let c = cidr(&format!("10.{}.{}.1/32", i / 250, i % 250));
        assert_eq!(view.has_addr("ha-b", &c), i >= 500, "{c} wrong after resync");
    }
    assert!(w.socket.resyncs() >= 1);
}

/// An undecodable message on a real socket (sent to it by another netlink
/// socket in the namespace, as root may): skipped and counted, no re-dump,
/// and the changes before and after it are seen.
#[test]
fn undecodable_message_on_a_real_socket_is_skipped_and_counted() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    if !common::require_root_and(&["ip"]) {
        return;
    }
    let ns = Netns::new("undec");
    common::add_veth_pair(&ns, "ha-a", "ha-b");
    let mut w = Watch::open(&ns, None);
    w.until("the initial dump", |seen, _| seen.contains(&Change::Resynced));
    // SAFETY: zeroed sockaddr_nl; getsockname writes at most `len` bytes.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    let rc = unsafe { libc::getsockname(w.socket.as_raw_fd(), (&mut addr as *mut libc::sockaddr_nl).cast(), &mut len) };
    assert_eq!(rc, 0);
    let port = addr.nl_pid;
    let namespace = Namespace::parse(ns.name()).unwrap();
    let raw = harouterd::sys::netns::in_namespace(Some(&namespace), || unsafe {
        libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE)
    })
    .unwrap();
    assert!(raw >= 0);
    // SAFETY: the kernel just returned this descriptor.
    let injector = unsafe { OwnedFd::from_raw_fd(raw) };
    let send = |msg: &[u8]| {
        // SAFETY: zeroed sockaddr_nl with family and pid set; valid buffers.
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as u16;
        to.nl_pid = port;
        let rc = unsafe {
            libc::sendto(
                injector.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        assert_eq!(rc, msg.len() as isize, "sendto: {}", std::io::Error::last_os_error());
    };
    ns.ip(&["addr", "add", "169.254.0.1/24", "dev", "ha-a"]);
    // RTM_NEWADDR with an ifaddrmsg but no address; then one cut short.
    let header = |len: u32| {
        let mut m = Vec::new();
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&libc::RTM_NEWADDR.to_ne_bytes());
        m.extend_from_slice(&[0, 0, 7, 0, 0, 0, 0, 0, 0, 0]);
        m
    };
    let mut no_address = header(24);
    no_address.extend_from_slice(&[2, 24, 0, 0, 1, 0, 0, 0]);
    send(&no_address);
    let mut cut = header(20);
    cut.extend_from_slice(&[2, 24, 0, 0]);
    send(&cut);
    ns.ip(&["addr", "del", "169.254.0.1/24", "dev", "ha-a"]);
    let added = Change::Addr { ifname: "ha-a".into(), cidr: cidr("169.254.0.1/24"), added: true };
    let removed = Change::Addr { ifname: "ha-a".into(), cidr: cidr("169.254.0.1/24"), added: false };
    w.until("the change after the garbage", |seen, _| seen.contains(&removed));
    assert_eq!(w.seen[1..], [added, removed], "exactly the two real changes, in order");
    assert_eq!((w.socket.undecodable(), w.socket.resyncs()), (2, 0));
}
