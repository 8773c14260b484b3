//! The rtnetlink module against a real kernel: a socket opened inside a
//! namespace the test creates, real address and link changes made with
//! `ip`, and a forced receive-queue overrun (tiny SO_RCVBUF, thousands of
//! changes while nobody reads) that must end in a view equal to the truth.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use harouterd::ident::Namespace;
use harouterd::net::Cidr;
use harouterd::netlink::{Change, RtSocket};
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
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {what}; seen {:?}", self.seen);
            self.poll.poll(&mut events, Some(left)).unwrap();
            let seen = &mut self.seen;
            self.socket.read(&mut self.scratch, &mut |c| seen.push(c)).unwrap();
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
