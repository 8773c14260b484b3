use std::time::{Duration, Instant};

use super::decode::{NLM_F_DUMP_INTR, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN};
use super::*;
use crate::core::net::Cidr;

/// Builds a raw netlink message: header + body, padded.
fn raw(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    raw_from(ty, flags, seq, 0, body)
}

/// Likewise, from port `port` (a dump answer carries the reader's).
fn raw_from(ty: u16, flags: u16, seq: u32, port: u32, body: &[u8]) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + body.len()) as u32;
    let mut v = Vec::new();
    v.extend_from_slice(&len.to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&port.to_ne_bytes());
    v.extend_from_slice(body);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

fn rtattr(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(payload);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

fn ifaddr(family: u8, prefix: u8, scope: u8, index: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![family, prefix, 0, scope];
    v.extend_from_slice(&index.to_ne_bytes());
    for a in attrs {
        v.extend_from_slice(a);
    }
    v
}

fn ifinfo(index: i32, name: &str) -> Vec<u8> {
    let mut v = vec![0u8, 0];
    v.extend_from_slice(&1u16.to_ne_bytes());
    v.extend_from_slice(&index.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    v.extend_from_slice(&rtattr(libc::IFLA_IFNAME, &n));
    v
}

/// Every message of a datagram, decoded; the first failure is returned.
fn decode(buf: &[u8]) -> Result<Vec<(Header, Message)>, String> {
    let (messages, broken) = split(buf);
    let mut out = Vec::new();
    for (header, msg) in messages {
        if let Some(m) = decode_message(&header, msg)? {
            out.push((header, m));
        }
    }
    broken.map_or(Ok(out), Err)
}

#[test]
fn decodes_ipv4_ipv6_addresses_links_and_done() {
    let v4 = ifaddr(
        libc::AF_INET as u8,
        24,
        0,
        7,
        &[
            rtattr(libc::IFA_ADDRESS, &[10, 0, 0, 9]),
            rtattr(libc::IFA_LOCAL, &[169, 254, 0, 1]),
            rtattr(libc::IFA_LABEL, b"ha-1\0"),
        ],
    );
    let v6 = ifaddr(
        libc::AF_INET6 as u8,
        64,
        253,
        8,
        &[rtattr(libc::IFA_ADDRESS, &[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])],
    );
    let mut buf = raw(libc::RTM_NEWADDR, 0, 0, &v4);
    buf.extend(raw(libc::RTM_DELADDR, 0, 0, &v6));
    buf.extend(raw(libc::RTM_NEWLINK, 0x2, 5, &ifinfo(7, "ha-1")));
    buf.extend(raw(libc::RTM_DELLINK, 0, 0, &ifinfo(8, "qg-2")));
    buf.extend(raw(libc::RTM_NEWROUTE, 0, 0, &[0; 12]));
    buf.extend(raw(NLMSG_DONE, NLM_F_DUMP_INTR | 0x2, 5, &0i32.to_ne_bytes()));
    buf.extend(raw(NLMSG_ERROR, 0, 6, &(-libc::EBUSY).to_ne_bytes()));
    let decoded = decode(&buf).unwrap();
    let messages: Vec<&Message> = decoded.iter().map(|(_, m)| m).collect();
    assert_eq!(
        messages,
        [
            &Message::NewAddr(Addr {
                ifindex: 7,
                cidr: Cidr::parse("169.254.0.1/24").unwrap(),
                scope: 0,
                label: Some("ha-1".into())
            }),
            &Message::DelAddr(Addr { ifindex: 8, cidr: Cidr::parse("fe80::1/64").unwrap(), scope: 253, label: None }),
            &Message::NewLink { ifindex: 7, name: "ha-1".into() },
            &Message::DelLink { ifindex: 8, name: "qg-2".into() },
            &Message::Done { seq: 5 },
            &Message::Error { seq: 6, errno: libc::EBUSY },
        ]
    );
    let interrupted = |i: usize| decoded[i].0.flags & NLM_F_DUMP_INTR != 0;
    assert!(interrupted(4) && !interrupted(0));
}

#[test]
fn rejects_truncated_and_nonsense() {
    let mut buf = raw(libc::RTM_NEWADDR, 0, 0, &ifaddr(2, 24, 0, 1, &[rtattr(libc::IFA_LOCAL, &[1, 2, 3, 4])]));
    buf[0] = 200; // length beyond the datagram
    assert!(decode(&buf).is_err());
    let no_addr = raw(libc::RTM_NEWADDR, 0, 0, &ifaddr(2, 24, 0, 1, &[]));
    assert!(decode(&no_addr).is_err());
    let bad_prefix = raw(libc::RTM_NEWADDR, 0, 0, &ifaddr(2, 40, 0, 1, &[rtattr(libc::IFA_LOCAL, &[1, 2, 3, 4])]));
    assert!(decode(&bad_prefix).is_err());
    assert_eq!(decode(&[1, 2, 3]).unwrap(), vec![]);
}

#[test]
fn view_follows_messages() {
    let mut view = NsView::default();
    let cidr = Cidr::parse("169.254.0.1/24").unwrap();
    view.apply(&Message::NewLink { ifindex: 3, name: "ha-1".into() });
    view.apply(&Message::NewAddr(Addr { ifindex: 3, cidr, scope: 0, label: None }));
    assert!(view.has_addr("ha-1", &cidr));
    assert!(!view.has_addr("ha-1", &Cidr::parse("169.254.0.1/32").unwrap()));
    view.apply(&Message::NewLink { ifindex: 3, name: "renamed".into() });
    assert!(!view.has_addr("ha-1", &cidr) && view.has_addr("renamed", &cidr));
    view.apply(&Message::DelLink { ifindex: 3, name: "renamed".into() });
    assert!(!view.has_link("renamed"));
    view.apply(&Message::NewLink { ifindex: 3, name: "renamed".into() });
    assert!(!view.has_addr("renamed", &cidr), "addresses must go with the link");
}

// ---- the tracker, fed message sequences ----

const PORT: u32 = 4242;
/// The port of `ip`, whose changes the kernel announces with its seq.
const IP: u32 = 777;

fn vip(n: u8) -> Cidr {
    Cidr::parse(&format!("169.254.0.{n}/24")).unwrap()
}

fn addr_body(index: u32, n: u8) -> Vec<u8> {
    ifaddr(libc::AF_INET as u8, 24, 0, index, &[rtattr(libc::IFA_LOCAL, &[169, 254, 0, n])])
}

/// An address event caused by `ip` (its port, its seq).
fn event(add: bool, index: u32, n: u8) -> Vec<u8> {
    let ty = if add { libc::RTM_NEWADDR } else { libc::RTM_DELADDR };
    raw_from(ty, 0, 1, IP, &addr_body(index, n))
}

fn dump_link(seq: u32, index: i32, name: &str) -> Vec<u8> {
    raw_from(libc::RTM_NEWLINK, 0x2, seq, PORT, &ifinfo(index, name))
}

fn dump_addr(seq: u32, index: u32, n: u8) -> Vec<u8> {
    raw_from(libc::RTM_NEWADDR, 0x2, seq, PORT, &addr_body(index, n))
}

fn done(seq: u32, flags: u16) -> Vec<u8> {
    raw_from(NLMSG_DONE, 0x2 | flags, seq, PORT, &0i32.to_ne_bytes())
}

struct Run {
    t: Tracker,
    now: Instant,
    seen: Vec<Change>,
}

impl Run {
    /// A tracker through its first dump: links `(index, name)`, then
    /// addresses `(index, vip n)`.
    fn synced(links: &[(i32, &str)], addrs: &[(u32, u8)]) -> Run {
        let (t, first) = Tracker::new("ns", PORT);
        assert_eq!(first, Request { dump: Dump::Links, seq: 1 });
        let mut run = Run { t, now: Instant::now(), seen: Vec::new() };
        run.dump(1, links, addrs, 0);
        assert_eq!(run.take(), [Change::Resynced], "the first dump reports no differences");
        run.drained();
        run
    }

    fn feed(&mut self, datagram: &[u8]) -> Option<Request> {
        let seen = &mut self.seen;
        self.t.datagram(datagram, self.now, &mut |c| seen.push(c))
    }

    fn lost(&mut self) {
        let seen = &mut self.seen;
        self.t.lost(self.now, &mut |c| seen.push(c));
    }

    fn drained(&mut self) -> Option<Request> {
        self.t.drained(self.now)
    }

    fn take(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.seen)
    }

    /// Answers a links dump `seq` then the addresses dump it asks for;
    /// `flags` on the addresses' DONE (e.g. interrupted).
    fn dump(&mut self, seq: u32, links: &[(i32, &str)], addrs: &[(u32, u8)], flags: u16) {
        let mut datagram = Vec::new();
        for (index, name) in links {
            datagram.extend(dump_link(seq, *index, name));
        }
        datagram.extend(done(seq, 0));
        let next = self.feed(&datagram).expect("the addresses half follows the links");
        assert_eq!(next.dump, Dump::Addrs);
        let mut datagram = Vec::new();
        for (index, n) in addrs {
            datagram.extend(dump_addr(next.seq, *index, *n));
        }
        datagram.extend(done(next.seq, flags));
        assert_eq!(self.feed(&datagram), None);
    }
}

fn addr(ifname: &str, n: u8, added: bool) -> Change {
    Change::Addr { ifname: ifname.into(), cidr: vip(n), added }
}

#[test]
fn events_in_step_are_reported_one_by_one_in_order() {
    let (t, _) = Tracker::new("ns", PORT);
    let mut run = Run { t, now: Instant::now(), seen: Vec::new() };
    // Queued before the first dump answered: the dump will tell.
    assert_eq!(run.feed(&event(true, 3, 1)), None);
    run.dump(1, &[(3, "ha-1")], &[], 0);
    assert_eq!(run.take(), [Change::Resynced]);
    assert!(run.t.is_synced() && !run.t.view().has_addr("ha-1", &vip(1)), "a stale event leaked into the view");
    let mut both = event(true, 3, 1);
    both.extend(event(false, 3, 1));
    run.feed(&both);
    assert_eq!(run.take(), [addr("ha-1", 1, true), addr("ha-1", 1, false)]);
    assert_eq!((run.t.resyncs(), run.t.undecodable()), (0, 0));
}

/// The case: after an overrun the queued events are stale (the
/// deletes that would undo the adds may be the lost ones); the view is
/// replaced by the dump and only the differences are reported.
#[test]
fn overrun_replaces_the_view_and_reports_only_the_difference() {
    let links = [(3, "ha-1"), (4, "ha-2"), (5, "ha-3"), (6, "ha-4")];
    let mut run = Run::synced(&links, &[(3, 1)]);
    run.lost();
    assert_eq!(run.take(), [Change::Overrun]);
    // Stale: VIP 4 added (its delete was lost), VIP 1 deleted then
    // added again (the final delete lost), VIP 2 added.
    for datagram in [event(true, 6, 4), event(false, 3, 1), event(true, 3, 1), event(true, 4, 2)] {
        assert_eq!(run.feed(&datagram), None);
    }
    assert!(run.take().is_empty(), "stale events were reported");
    assert!(run.t.view().has_addr("ha-1", &vip(1)), "the old view stays until the new one is complete");
    let request = run.drained().expect("the first re-dump starts once drained");
    assert_eq!(request.dump, Dump::Links);
    // Still stale: queued between the drain and the dump's answer.
    run.feed(&event(true, 6, 4));
    let mut datagram = Vec::new();
    for (index, name) in links {
        datagram.extend(dump_link(request.seq, index, name));
    }
    datagram.extend(done(request.seq, 0));
    let addrs = run.feed(&datagram).expect("addresses next");
    // A real change while the dump runs: applied to the new view.
    run.feed(&event(true, 5, 3));
    let mut datagram = dump_addr(addrs.seq, 4, 2);
    datagram.extend(done(addrs.seq, 0));
    run.feed(&datagram);
    assert_eq!(
        run.take(),
        [addr("ha-1", 1, false), addr("ha-2", 2, true), addr("ha-3", 3, true), Change::Resynced],
        "a lost delete is reported once, a lost add once, an add+delete both lost (VIP 4) not at all"
    );
    let view = run.t.view();
    assert!(!view.has_addr("ha-1", &vip(1)) && view.has_addr("ha-2", &vip(2)) && !view.has_addr("ha-4", &vip(4)));
    assert_eq!(run.t.resyncs(), 1);
    // In step again: events are reported as they come.
    run.feed(&event(false, 4, 2));
    assert_eq!(run.take(), [addr("ha-2", 2, false)]);
}

#[test]
fn an_interface_recreated_during_an_overrun_is_reported_gone_then_added() {
    let mut run = Run::synced(&[(3, "ha-1"), (4, "qr-1")], &[(3, 1)]);
    run.lost();
    let request = run.drained().expect("re-dump");
    run.take();
    run.dump(request.seq, &[(9, "ha-1"), (4, "qr-1")], &[], 0);
    assert_eq!(
        run.take(),
        [
            addr("ha-1", 1, false),
            Change::LinkGone { ifname: "ha-1".into() },
            Change::LinkAdded { ifname: "ha-1".into() },
            Change::Resynced
        ]
    );
    assert_eq!(run.t.view().link_index("ha-1"), Some(9));
}

#[test]
fn undecodable_messages_are_skipped_and_counted_never_resynced() {
    let mut run = Run::synced(&[(3, "ha-1")], &[]);
    // An address message without an address, one cut short, between
    // two good ones, all in one datagram.
    let mut datagram = event(true, 3, 1);
    datagram.extend(raw_from(libc::RTM_NEWADDR, 0, 9, IP, &ifaddr(2, 24, 0, 3, &[])));
    datagram.extend(raw_from(libc::RTM_NEWADDR, 0, 9, IP, &[2, 24]));
    datagram.extend(event(false, 3, 1));
    assert_eq!(run.feed(&datagram), None);
    assert_eq!(run.take(), [addr("ha-1", 1, true), addr("ha-1", 1, false)]);
    assert_eq!(run.t.undecodable(), 2);
    // A length that overruns the datagram: the rest of it is lost, the
    // messages before it are not.
    let mut datagram = event(true, 3, 1);
    let mut broken = event(false, 3, 1);
    broken[0] = 200;
    datagram.extend(broken);
    run.feed(&datagram);
    assert_eq!(run.take(), [addr("ha-1", 1, true)]);
    assert_eq!((run.t.undecodable(), run.t.resyncs(), run.t.deadline()), (3, 0, None), "no re-dump");
    // Inside a dump too: skipped, the dump completes.
    run.lost();
    let request = run.drained().expect("re-dump");
    let mut datagram = dump_link(request.seq, 3, "ha-1");
    datagram.extend(raw_from(libc::RTM_NEWLINK, 0x2, request.seq, PORT, &[0, 0]));
    datagram.extend(done(request.seq, 0));
    let addrs = run.feed(&datagram).expect("addresses next");
    run.feed(&done(addrs.seq, 0));
    assert_eq!(run.take(), [Change::Overrun, addr("ha-1", 1, false), Change::Resynced]);
    assert_eq!((run.t.undecodable(), run.t.resyncs()), (4, 1));
}

#[test]
fn resyncs_back_off_while_losses_go_on_and_not_after_catching_up() {
    let ms = Duration::from_millis;
    assert_eq!(
        (0..10).map(resync_delay).collect::<Vec<_>>(),
        [ms(0), ms(10), ms(20), ms(40), ms(80), ms(160), ms(320), ms(640), ms(1000), ms(1000)]
    );
    assert_eq!(resync_delay(u32::MAX), ms(1000));
    let mut run = Run::synced(&[(3, "ha-1")], &[]);
    let t0 = run.now;
    run.lost();
    // Waiting: what arrives is dropped unread, even garbage.
    run.feed(&raw_from(libc::RTM_NEWADDR, 0, 9, IP, &[2]));
    assert_eq!(run.t.undecodable(), 0);
    let mut request = run.drained().expect("the first re-dump is immediate");
    // Each dump spoiled (a loss while it runs, or the kernel's
    // interrupted flag): the next waits twice as long.
    for (round, wait) in [ms(10), ms(20), ms(40), ms(80)].into_iter().enumerate() {
        if round % 2 == 0 {
            run.lost();
            let mut links = dump_link(request.seq, 3, "ha-1");
            links.extend(done(request.seq, 0));
            assert_eq!(run.feed(&links), None, "a spoiled dump is not continued");
        } else {
            run.dump(request.seq, &[(3, "ha-1")], &[], NLM_F_DUMP_INTR);
        }
        assert_eq!(run.t.deadline(), Some(run.now + wait), "round {round}");
        assert_eq!(run.drained(), None, "not before the deadline");
        run.now += wait;
        request = run.drained().expect("due");
    }
    assert!(run.take().iter().all(|c| *c == Change::Overrun), "a spoiled dump reports nothing");
    run.dump(request.seq, &[(3, "ha-1")], &[(3, 1)], 0);
    assert_eq!(run.take(), [addr("ha-1", 1, true), Change::Resynced]);
    // A loss before the loop caught up continues the streak...
    run.lost();
    assert_eq!(run.t.deadline(), Some(run.now + ms(160)));
    run.now += ms(160);
    let request = run.drained().expect("due");
    run.dump(request.seq, &[(3, "ha-1")], &[(3, 1)], 0);
    // ...one after it caught up (read empty) starts afresh.
    assert_eq!(run.drained(), None);
    run.lost();
    assert_eq!(run.t.deadline(), Some(run.now));
    assert_eq!(run.t.resyncs(), 6);
    assert!(run.now - t0 >= ms(310));
}

#[test]
fn a_vip_watch_tells_presence_from_the_view_and_from_each_change() {
    let vip = Cidr::parse("169.254.0.1/24").unwrap();
    let other = Cidr::parse("169.254.0.2/24").unwrap();
    let watch = VipWatch { ifname: "ha-1", cidr: &vip };
    let mut view = NsView::default();
    view.apply(&Message::NewLink { ifindex: 3, name: "ha-1".into() });
    assert!(!watch.present(&view));
    view.apply(&Message::NewAddr(Addr { ifindex: 3, cidr: vip, scope: 0, label: None }));
    assert!(watch.present(&view));
    let addr = |ifname: &str, cidr: Cidr, added| Change::Addr { ifname: ifname.into(), cidr, added };
    assert_eq!(watch.changed(&addr("ha-1", vip, true)), Some(true));
    assert_eq!(watch.changed(&addr("ha-1", vip, false)), Some(false));
    assert_eq!(watch.changed(&addr("ha-1", other, true)), None, "another address");
    assert_eq!(watch.changed(&addr("ha-2", vip, true)), None, "another interface");
    assert_eq!(watch.changed(&Change::LinkGone { ifname: "ha-1".into() }), Some(false));
    assert_eq!(watch.changed(&Change::LinkGone { ifname: "ha-2".into() }), None);
    assert_eq!(watch.changed(&Change::LinkAdded { ifname: "ha-1".into() }), None);
    assert_eq!(watch.changed(&Change::Resynced), None);
}
