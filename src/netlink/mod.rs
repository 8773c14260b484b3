//! rtnetlink (NETLINK_ROUTE) on neli 0.7: one non-blocking socket per
//! network namespace, subscribed to link and IPv4/IPv6 address changes, and
//! the namespace's links and addresses as the kernel last told them.
//!
//! The protocol logic is the pure [`Tracker`] (bytes and losses in, changes
//! and dump requests out, time passed in); [`RtSocket`] only moves bytes.
//!
//! Invariants:
//! - [`RtSocket::view`] converges on the kernel's truth. While no message
//!   is lost, every event is applied in arrival order and reported as a
//!   [`Change`] the moment it is applied (an add then a delete in one read
//!   are two changes).
//! - When messages may have been lost (a receive-queue overrun, ENOBUFS,
//!   or a dump the kernel marks interrupted) the view is **replaced**, never
//!   merged into: everything still queued from before is stale (the events
//!   that would have undone it may be the lost ones) and is discarded
//!   unread; a fresh dump (links, then addresses) builds a new view, with
//!   the events that arrive while it runs applied to it in order; the
//!   changes reported are the differences between the old view and the new
//!   one, then [`Change::Resynced`]. So an add and its delete both lost
//!   report nothing, a lost delete reports one removal.
//! - Re-dumps back off: the first after a quiet spell starts as soon as the
//!   queue is drained, each further loss before the loop has caught up
//!   doubles the delay (10 ms up to 1 s), so sustained overruns cost at
//!   most about one dump a second.
//! - A message that cannot be decoded is skipped, counted and logged; it
//!   never causes a re-dump (the same bytes would come back in the dump).
//! - Nothing here blocks, and one [`RtSocket::read`] handles at most
//!   [`READ_BUDGET`] datagrams, so a flood cannot keep the event loop from
//!   its signals and control connections.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, Cursor};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use neli::FromBytes;
use neli::ToBytes;
use neli::consts::nl::NlmF;
use neli::consts::rtnl::{Ifa, Ifla, RtAddrFamily, RtScope, Rtm};
use neli::consts::socket::{Msg, NlFamily};
use neli::nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder};
use neli::rtnl::{Ifaddrmsg, IfaddrmsgBuilder, Ifinfomsg, IfinfomsgBuilder};
use neli::socket::NlSocket;
use neli::utils::Groups;

use crate::core::ident::Namespace;
use crate::core::net::Cidr;
use crate::sys::netns::{self, NetnsError, NsIdentity};

/// rtnetlink multicast groups (`RTNLGRP_*`).
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV6_IFADDR: u32 = 9;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLMSG_HDRLEN: usize = 16;

/// Large enough for any datagram the kernel sends on NETLINK_ROUTE: dump
/// chunks are sized to the reader's largest buffer and capped at 32 KiB.
/// Shared by all sockets of a process so a thousand namespaces do not cost
/// a thousand buffers.
pub const RECV_BUFFER: usize = 32 * 1024;

/// Datagrams one [`RtSocket::read`] handles before giving the loop back
/// ([`Read::More`]): a node-wide flip of a thousand routers takes a few
/// passes, and a flood never holds signals or the control socket back.
pub const READ_BUDGET: usize = 256;

/// The delay before a re-dump that follows another loss (see [`Tracker`]).
const RESYNC_FIRST: Duration = Duration::from_millis(10);
const RESYNC_MAX: Duration = Duration::from_secs(1);

/// The delay before the re-dump after `streak` losses in a row without the
/// loop catching up: none for the first, then 10 ms doubling to 1 s.
pub fn resync_delay(streak: u32) -> Duration {
    if streak == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(streak - 1).unwrap_or(u32::MAX);
    RESYNC_FIRST.checked_mul(factor).unwrap_or(RESYNC_MAX).min(RESYNC_MAX)
}

#[derive(Debug)]
pub enum NetlinkError {
    Namespace(NetnsError),
    Socket { namespace: String, step: &'static str, source: io::Error },
    Encode { namespace: String, message: String },
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetlinkError::Namespace(e) => e.fmt(f),
            NetlinkError::Socket { namespace, step, source } => {
                write!(f, "rtnetlink socket in {namespace}: {step}: {source}")
            }
            NetlinkError::Encode { namespace, message } => write!(f, "rtnetlink request in {namespace}: {message}"),
        }
    }
}

impl std::error::Error for NetlinkError {}

impl From<NetnsError> for NetlinkError {
    fn from(e: NetnsError) -> Self {
        NetlinkError::Namespace(e)
    }
}

/// An address on an interface, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    pub ifindex: u32,
    pub cidr: Cidr,
    /// `RT_SCOPE_*`: 0 universe, 253 link, 254 host.
    pub scope: u8,
    /// IPv4 only: the interface (or alias) label.
    pub label: Option<String>,
}

/// One decoded rtnetlink message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    NewAddr(Addr),
    DelAddr(Addr),
    NewLink {
        ifindex: u32,
        name: String,
    },
    DelLink {
        ifindex: u32,
        name: String,
    },
    /// End of a dump.
    Done {
        seq: u32,
    },
    /// An error (or, with `errno == 0`, an ack) for request `seq`.
    Error {
        seq: u32,
        errno: i32,
    },
}

/// The header fields of one message that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// `nlmsg_pid`: the requester's port on answers and on events caused by
    /// a request, 0 on events the kernel makes by itself.
    pub port: u32,
}

/// Splits a datagram into its messages (header, whole message), in order.
/// A header whose length cannot be right ends the datagram: nothing after
/// it can be found, so the rest is returned as an error.
pub fn split(buf: &[u8]) -> (Vec<(Header, &[u8])>, Option<String>) {
    let mut out = Vec::new();
    let mut pos = 0;
    while buf.len().saturating_sub(pos) >= NLMSG_HDRLEN {
        let h = &buf[pos..pos + NLMSG_HDRLEN];
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let header = Header {
            ty: u16::from_ne_bytes([h[4], h[5]]),
            flags: u16::from_ne_bytes([h[6], h[7]]),
            seq: u32::from_ne_bytes([h[8], h[9], h[10], h[11]]),
            port: u32::from_ne_bytes([h[12], h[13], h[14], h[15]]),
        };
        if len < NLMSG_HDRLEN || len > buf.len() - pos {
            let reason = format!("message of length {len} at offset {pos} overruns a {}-byte datagram", buf.len());
            return (out, Some(reason));
        }
        out.push((header, &buf[pos..pos + len]));
        // The last message's padding may lie beyond the datagram.
        pos += (len + 3) & !3;
    }
    (out, None)
}

/// Decodes one message; `Ok(None)` for types of no interest here.
pub fn decode_message(header: &Header, msg: &[u8]) -> Result<Option<Message>, String> {
    let seq = header.seq;
    Ok(match header.ty {
        NLMSG_DONE => Some(Message::Done { seq }),
        NLMSG_ERROR => {
            let code = msg.get(16..20).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0);
            Some(Message::Error { seq, errno: -code })
        }
        t if t == u16::from(Rtm::Newaddr) || t == u16::from(Rtm::Deladdr) => {
            let addr = decode_addr(msg)?;
            Some(if t == u16::from(Rtm::Newaddr) { Message::NewAddr(addr) } else { Message::DelAddr(addr) })
        }
        t if t == u16::from(Rtm::Newlink) || t == u16::from(Rtm::Dellink) => {
            let (ifindex, name) = decode_link(msg)?;
            Some(if t == u16::from(Rtm::Newlink) {
                Message::NewLink { ifindex, name }
            } else {
                Message::DelLink { ifindex, name }
            })
        }
        _ => None,
    })
}

fn decode_addr(body: &[u8]) -> Result<Addr, String> {
    let msg = Nlmsghdr::<Rtm, Ifaddrmsg>::from_bytes(&mut Cursor::new(body))
        .map_err(|e| format!("undecodable address message: {e}"))?;
    let NlPayload::Payload(ifa) = msg.nl_payload() else {
        return Err("address message without payload".into());
    };
    let (mut local, mut address, mut label) = (None, None, None);
    for attr in ifa.rtattrs().iter() {
        let payload = attr.rta_payload().as_ref();
        match attr.rta_type() {
            Ifa::Local => local = ip_from(payload),
            Ifa::Address => address = ip_from(payload),
            Ifa::Label => label = c_string(payload),
            _ => {}
        }
    }
    // IPv4 puts the address in IFA_LOCAL (IFA_ADDRESS is the peer on
    // point-to-point links); IPv6 only sends IFA_ADDRESS.
    let ip = local.or(address).ok_or("address message without an address")?;
    let prefix = *ifa.ifa_prefixlen();
    if prefix > Cidr::max_prefix(&ip) {
        return Err(format!("prefix length {prefix} too long for {ip}"));
    }
    Ok(Addr { ifindex: *ifa.ifa_index(), cidr: Cidr { addr: ip, prefix }, scope: u8::from(*ifa.ifa_scope()), label })
}

fn decode_link(body: &[u8]) -> Result<(u32, String), String> {
    let msg = Nlmsghdr::<Rtm, Ifinfomsg>::from_bytes(&mut Cursor::new(body))
        .map_err(|e| format!("undecodable link message: {e}"))?;
    let NlPayload::Payload(ifi) = msg.nl_payload() else {
        return Err("link message without payload".into());
    };
    let name = ifi
        .rtattrs()
        .iter()
        .find(|a| *a.rta_type() == Ifla::Ifname)
        .and_then(|a| c_string(a.rta_payload().as_ref()))
        .ok_or("link message without a name")?;
    let index = u32::try_from(*ifi.ifi_index()).map_err(|_| "negative interface index")?;
    Ok((index, name))
}

fn ip_from(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
        16 => <[u8; 16]>::try_from(bytes).ok().map(|b| IpAddr::V6(Ipv6Addr::from(b))),
        _ => None,
    }
}

fn c_string(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).ok().map(str::to_owned)
}

/// A namespace's links and addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NsView {
    links: HashMap<u32, String>,
    addrs: HashSet<(u32, Cidr)>,
}

impl NsView {
    /// The interface's index, if it exists: a deleted and re-created
    /// interface comes back with a new one.
    pub fn link_index(&self, name: &str) -> Option<u32> {
        self.links.iter().find(|(_, n)| n.as_str() == name).map(|(i, _)| *i)
    }

    pub fn has_link(&self, name: &str) -> bool {
        self.link_index(name).is_some()
    }

    /// Whether `cidr` (address and prefix) is on interface `name`.
    pub fn has_addr(&self, name: &str, cidr: &Cidr) -> bool {
        self.link_index(name).is_some_and(|i| self.addrs.contains(&(i, *cidr)))
    }

    pub fn link_name(&self, ifindex: u32) -> Option<&str> {
        self.links.get(&ifindex).map(String::as_str)
    }

    fn apply(&mut self, message: &Message) {
        match message {
            Message::NewAddr(a) => {
                self.addrs.insert((a.ifindex, a.cidr));
            }
            Message::DelAddr(a) => {
                self.addrs.remove(&(a.ifindex, a.cidr));
            }
            Message::NewLink { ifindex, name } => {
                self.links.insert(*ifindex, name.clone());
            }
            Message::DelLink { ifindex, .. } => {
                self.links.remove(ifindex);
                self.addrs.retain(|(i, _)| i != ifindex);
            }
            Message::Done { .. } | Message::Error { .. } => {}
        }
    }

    /// What changed from `old` to `new`, as the events that would have
    /// told it, in an order a caller can apply one by one: addresses that
    /// went away, links that went away (or lost their name), links that
    /// appeared (or were renamed, or came back with a new index), then
    /// addresses that appeared. Sorted within each group, so the result
    /// does not depend on hashing.
    pub fn diff(old: &NsView, new: &NsView) -> Vec<Change> {
        fn sorted_addrs<'a>(from: &'a NsView, other: &NsView, named: &'a NsView) -> Vec<(&'a str, u32, Cidr)> {
            let mut v: Vec<(&str, u32, Cidr)> = from
                .addrs
                .iter()
                .filter(|a| !other.addrs.contains(a))
                .filter_map(|&(i, c)| Some((named.link_name(i)?, i, c)))
                .collect();
            v.sort_by(|a, b| (a.0, a.1, a.2.addr, a.2.prefix).cmp(&(b.0, b.1, b.2.addr, b.2.prefix)));
            v
        }
        fn sorted_links<'a>(from: &'a NsView, other: &NsView) -> Vec<&'a str> {
            let mut v: Vec<&str> =
                from.links.iter().filter(|(i, n)| other.links.get(i) != Some(*n)).map(|(_, n)| n.as_str()).collect();
            v.sort_unstable();
            v
        }
        let mut out = Vec::new();
        for (ifname, _, cidr) in sorted_addrs(old, new, old) {
            out.push(Change::Addr { ifname: ifname.to_owned(), cidr, added: false });
        }
        for ifname in sorted_links(old, new) {
            out.push(Change::LinkGone { ifname: ifname.to_owned() });
        }
        for ifname in sorted_links(new, old) {
            out.push(Change::LinkAdded { ifname: ifname.to_owned() });
        }
        for (ifname, _, cidr) in sorted_addrs(new, old, new) {
            out.push(Change::Addr { ifname: ifname.to_owned(), cidr, added: true });
        }
        out
    }
}

/// What the caller learns from a read, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// An address appeared (`added`) or went away on interface `ifname`.
    Addr { ifname: String, cidr: Cidr, added: bool },
    /// An interface appeared, was renamed to `ifname`, or came back with a
    /// new index.
    LinkAdded { ifname: String },
    /// An interface was deleted; its addresses went with it.
    LinkGone { ifname: String },
    /// Messages were lost (receive-queue overrun): what is queued is
    /// discarded and a re-dump will replace the view. Reported once per
    /// incident, not per lost batch.
    Overrun,
    /// A full dump has replaced the view (after the first dump: its
    /// differences were reported just before).
    Resynced,
}

/// Which half of a full dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dump {
    Links,
    Addrs,
}

/// A dump request the socket must send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub dump: Dump,
    pub seq: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// In step with the kernel: events go to the live view and out.
    Live,
    /// Messages were lost: everything read is stale and dropped unread; a
    /// dump starts once the queue is drained and `at` has come.
    Waiting { at: Instant },
    /// A dump runs. In the links half, messages before its first answer
    /// were queued before the request and are dropped (`stale`).
    Dumping { dump: Dump, seq: u32, stale: bool },
}

/// The rtnetlink protocol of one namespace, without the socket: feed it
/// what was received ([`Tracker::datagram`]), each loss
/// ([`Tracker::lost`]) and each time the socket reads empty
/// ([`Tracker::drained`]); send the [`Request`]s it returns. Time is passed
/// in, so the unit tests drive it with sequences of messages and a clock.
#[derive(Debug)]
pub struct Tracker {
    namespace: String,
    /// Our socket's port: dump answers carry it (with the request's seq).
    port: u32,
    seq: u32,
    phase: Phase,
    live: NsView,
    building: NsView,
    /// The running dump lost events or was interrupted: its result is
    /// thrown away and a new one follows (with backoff).
    spoiled: bool,
    /// A full dump has completed at least once.
    synced: bool,
    /// Since the last dump completed, the socket read empty: the loop has
    /// caught up, so the next loss is a new incident.
    settled: bool,
    /// Losses since the loop last caught up.
    streak: u32,
    resyncs: u64,
    undecodable: u64,
}

impl Tracker {
    /// A tracker whose first dump (links) must be sent now.
    pub fn new(namespace: &str, port: u32) -> (Tracker, Request) {
        let request = Request { dump: Dump::Links, seq: 1 };
        let tracker = Tracker {
            namespace: namespace.to_owned(),
            port,
            seq: 1,
            phase: Phase::Dumping { dump: Dump::Links, seq: 1, stale: true },
            live: NsView::default(),
            building: NsView::default(),
            spoiled: false,
            synced: false,
            settled: false,
            streak: 0,
            resyncs: 0,
            undecodable: 0,
        };
        (tracker, request)
    }

    pub fn view(&self) -> &NsView {
        &self.live
    }

    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Dumps started after the first one (each after a loss).
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// Messages skipped because they could not be decoded.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// When a delayed re-dump is due: read the socket then, even if it did
    /// not become readable.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting { at } => Some(at),
            _ => None,
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// The receive queue overflowed: events were lost.
    pub fn lost(&mut self, now: Instant, sink: &mut impl FnMut(Change)) {
        match self.phase {
            Phase::Live => {
                self.streak = if self.settled { 0 } else { self.streak + 1 };
                sink(Change::Overrun);
                self.wait(now);
            }
            Phase::Waiting { .. } => {}
            Phase::Dumping { .. } => self.spoiled = true,
        }
    }

    fn wait(&mut self, now: Instant) {
        let delay = resync_delay(self.streak);
        if !delay.is_zero() {
            log::debug!("rtnetlink in {}: re-dumping in {} ms", self.namespace, delay.as_millis());
        }
        self.building = NsView::default();
        self.spoiled = false;
        self.phase = Phase::Waiting { at: now + delay };
    }

    /// The socket read empty. Returns the dump to send if one is due.
    pub fn drained(&mut self, now: Instant) -> Option<Request> {
        match self.phase {
            Phase::Live => {
                self.settled = true;
                None
            }
            Phase::Waiting { at } if now >= at => {
                let seq = self.next_seq();
                self.resyncs += 1;
                self.phase = Phase::Dumping { dump: Dump::Links, seq, stale: true };
                Some(Request { dump: Dump::Links, seq })
            }
            Phase::Waiting { .. } | Phase::Dumping { .. } => None,
        }
    }

    /// One datagram as received. Returns the dump request to send next, if
    /// any (the addresses half after the links half).
    pub fn datagram(&mut self, buf: &[u8], now: Instant, sink: &mut impl FnMut(Change)) -> Option<Request> {
        if let Phase::Waiting { .. } = self.phase {
            return None;
        }
        let (messages, broken) = split(buf);
        let mut request = None;
        for (header, msg) in messages {
            if let Some(r) = self.message(&header, msg, now, sink) {
                request = Some(r);
            }
        }
        if let Some(reason) = broken {
            self.skip(&reason);
        }
        request
    }

    fn skip(&mut self, reason: &str) {
        self.undecodable += 1;
        let n = self.undecodable;
        if n <= 10 || n.is_power_of_two() {
            log::warn!("rtnetlink in {}: skipped an undecodable message ({n} so far): {reason}", self.namespace);
        }
    }

    fn message(&mut self, header: &Header, msg: &[u8], now: Instant, sink: &mut impl FnMut(Change)) -> Option<Request> {
        let ours = match &mut self.phase {
            Phase::Waiting { .. } => return None,
            Phase::Live => false,
            Phase::Dumping { seq, stale, .. } => {
                let ours = header.seq == *seq && header.port == self.port;
                if !ours && *stale {
                    return None;
                }
                *stale = false;
                ours
            }
        };
        if ours && header.flags & NLM_F_DUMP_INTR != 0 {
            self.spoiled = true;
        }
        if header.ty == NLMSG_DONE || header.ty == NLMSG_ERROR {
            if !ours {
                return None;
            }
            if let Ok(Some(Message::Error { errno, .. })) = decode_message(header, msg)
                && errno != 0
            {
                log::warn!("rtnetlink dump in {} failed: errno {errno}; retrying", self.namespace);
                self.spoiled = true;
            }
            return self.dump_done(now, sink);
        }
        if self.spoiled {
            // This dump will be thrown away: no point decoding it.
            return None;
        }
        let message = match decode_message(header, msg) {
            Ok(Some(m)) => m,
            Ok(None) => return None,
            Err(reason) => {
                self.skip(&reason);
                return None;
            }
        };
        match self.phase {
            Phase::Live => self.event(message, sink),
            // Dump entries describe the state; events arriving while the
            // dump runs are newer than what it already sent.
            _ => self.building.apply(&message),
        }
        None
    }

    fn event(&mut self, message: Message, sink: &mut impl FnMut(Change)) {
        let change = match &message {
            Message::NewAddr(a) | Message::DelAddr(a) => {
                let name = self.live.link_name(a.ifindex).map(str::to_owned).or_else(|| a.label.clone());
                name.map(|ifname| Change::Addr { ifname, cidr: a.cidr, added: matches!(message, Message::NewAddr(_)) })
            }
            Message::NewLink { name, ifindex } => {
                (self.live.link_name(*ifindex) != Some(name)).then(|| Change::LinkAdded { ifname: name.clone() })
            }
            Message::DelLink { name, .. } => Some(Change::LinkGone { ifname: name.clone() }),
            Message::Done { .. } | Message::Error { .. } => None,
        };
        self.live.apply(&message);
        if let Some(change) = change {
            sink(change);
        }
    }

    fn dump_done(&mut self, now: Instant, sink: &mut impl FnMut(Change)) -> Option<Request> {
        let Phase::Dumping { dump, .. } = self.phase else { return None };
        if self.spoiled {
            self.streak += 1;
            self.wait(now);
            return None;
        }
        match dump {
            Dump::Links => {
                let seq = self.next_seq();
                // Events between the halves are newer than the links sent.
                self.phase = Phase::Dumping { dump: Dump::Addrs, seq, stale: false };
                Some(Request { dump: Dump::Addrs, seq })
            }
            Dump::Addrs => {
                let old = std::mem::replace(&mut self.live, std::mem::take(&mut self.building));
                if self.synced {
                    for change in NsView::diff(&old, &self.live) {
                        sink(change);
                    }
                }
                self.synced = true;
                self.settled = false;
                self.phase = Phase::Live;
                sink(Change::Resynced);
                None
            }
        }
    }
}

/// What one [`RtSocket::read`] left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// The socket is empty: wait for readiness (or [`RtSocket::deadline`]).
    Drained,
    /// The budget ran out with data still queued: read again soon, after
    /// serving the loop's other sources (readiness will not be reported
    /// again for data already there).
    More,
}

/// A NETLINK_ROUTE socket opened inside one namespace.
pub struct RtSocket {
    sock: NlSocket,
    namespace: String,
    identity: Option<NsIdentity>,
    tracker: Tracker,
}

impl RtSocket {
    /// Opens the socket inside `namespace` (`None`: the current one),
    /// subscribes to link and address changes and starts the initial dump.
    /// `rcvbuf` overrides SO_RCVBUF (a library knob for tests; no config
    /// key reaches it).
    pub fn open(namespace: Option<&Namespace>, rcvbuf: Option<usize>) -> Result<RtSocket, NetlinkError> {
        let ns_name = namespace.map_or_else(|| "the current namespace".to_owned(), |n| n.to_string());
        let err = |step: &'static str| {
            let ns_name = ns_name.clone();
            move |source| NetlinkError::Socket { namespace: ns_name, step, source }
        };
        let groups = Groups::new_groups(&[RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR]);
        let (sock, identity) =
            netns::in_namespace_identified(namespace, || NlSocket::connect(NlFamily::Route, None, groups))?;
        let sock = sock.map_err(err("socket/bind"))?;
        sock.nonblock().map_err(err("O_NONBLOCK"))?;
        if let Some(size) = rcvbuf {
            sock.set_recv_buffer_size(size).map_err(err("SO_RCVBUF"))?;
        }
        let port = local_port(sock.as_raw_fd()).map_err(err("getsockname"))?;
        let (tracker, first) = Tracker::new(&ns_name, port);
        let socket = RtSocket { sock, namespace: ns_name, identity, tracker };
        socket.send(first)?;
        Ok(socket)
    }

    /// The namespace's links and addresses as last reported.
    pub fn view(&self) -> &NsView {
        self.tracker.view()
    }

    /// Whether at least one full dump has completed: before that, the view
    /// cannot say an address is absent.
    pub fn is_synced(&self) -> bool {
        self.tracker.is_synced()
    }

    /// How many times a re-dump was needed after the first dump.
    pub fn resyncs(&self) -> u64 {
        self.tracker.resyncs()
    }

    /// How many messages were skipped as undecodable.
    pub fn undecodable(&self) -> u64 {
        self.tracker.undecodable()
    }

    /// Which namespace this socket is in (device and inode of its file when
    /// it was opened; `None` for the current namespace): a namespace
    /// deleted and re-created under the same name has another one.
    pub fn identity(&self) -> Option<NsIdentity> {
        self.identity
    }

    /// When [`RtSocket::read`] must be called even without readiness: a
    /// delayed re-dump is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.tracker.deadline()
    }

    fn encode_error(&self, e: impl fmt::Display) -> NetlinkError {
        NetlinkError::Encode { namespace: self.namespace.clone(), message: e.to_string() }
    }

    fn send(&self, request: Request) -> Result<(), NetlinkError> {
        match request.dump {
            Dump::Links => {
                let ifi = IfinfomsgBuilder::default().ifi_family(RtAddrFamily::Unspecified).build();
                let ifi = ifi.map_err(|e| self.encode_error(e))?;
                self.send_dump(Rtm::Getlink, request.seq, ifi)
            }
            Dump::Addrs => {
                let ifa = IfaddrmsgBuilder::default()
                    .ifa_family(RtAddrFamily::Unspecified)
                    .ifa_prefixlen(0)
                    .ifa_scope(RtScope::Universe)
                    .ifa_index(0)
                    .build();
                let ifa = ifa.map_err(|e| self.encode_error(e))?;
                self.send_dump(Rtm::Getaddr, request.seq, ifa)
            }
        }
    }

    fn send_dump<P: neli::Size + ToBytes + fmt::Debug>(
        &self,
        ty: Rtm,
        seq: u32,
        payload: P,
    ) -> Result<(), NetlinkError> {
        let msg = NlmsghdrBuilder::default()
            .nl_type(ty)
            .nl_flags(NlmF::REQUEST | NlmF::DUMP)
            .nl_seq(seq)
            .nl_payload(NlPayload::Payload(payload))
            .build()
            .map_err(|e| self.encode_error(e))?;
        let mut bytes = Cursor::new(Vec::new());
        msg.to_bytes(&mut bytes).map_err(|e| self.encode_error(e))?;
        self.sock.send(bytes.get_ref(), Msg::empty()).map_err(|source| NetlinkError::Socket {
            namespace: self.namespace.clone(),
            step: "send dump request",
            source,
        })?;
        Ok(())
    }

    /// Reads what is queued, at most [`READ_BUDGET`] datagrams, reporting
    /// each change to `sink` in order, and sends the dump requests the
    /// protocol needs (a delayed re-dump once `now` has reached
    /// [`RtSocket::deadline`]). `scratch` is the shared receive buffer (see
    /// [`RECV_BUFFER`]).
    pub fn read(
        &mut self,
        scratch: &mut Vec<u8>,
        now: Instant,
        sink: &mut impl FnMut(Change),
    ) -> Result<Read, NetlinkError> {
        scratch.resize(RECV_BUFFER, 0);
        for _ in 0..READ_BUDGET {
            match self.sock.recv(&mut scratch[..], Msg::empty()) {
                Ok((n, _)) => {
                    if let Some(request) = self.tracker.datagram(&scratch[..n], now, sink) {
                        self.send(request)?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match self.tracker.drained(now) {
                    // The dump's first answer is queued already.
                    Some(request) => self.send(request)?,
                    None => return Ok(Read::Drained),
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => self.tracker.lost(now, sink),
                Err(source) => {
                    return Err(NetlinkError::Socket { namespace: self.namespace.clone(), step: "recv", source });
                }
            }
        }
        Ok(Read::More)
    }
}

/// The port the kernel bound our netlink socket to (`nl_pid`).
fn local_port(fd: RawFd) -> io::Result<u32> {
    // SAFETY: an all-zero sockaddr_nl is valid; getsockname writes at most
    // `len` bytes into it.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: valid fd, pointer and length.
    let rc = unsafe { libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_nl).cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(addr.nl_pid)
}

impl AsRawFd for RtSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl mio::event::Source for RtSocket {
    fn register(&mut self, registry: &mio::Registry, token: mio::Token, interests: mio::Interest) -> io::Result<()> {
        SourceFd(&self.sock.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(&mut self, registry: &mio::Registry, token: mio::Token, interests: mio::Interest) -> io::Result<()> {
        SourceFd(&self.sock.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        SourceFd(&self.sock.as_raw_fd()).deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                &Message::DelAddr(Addr {
                    ifindex: 8,
                    cidr: Cidr::parse("fe80::1/64").unwrap(),
                    scope: 253,
                    label: None
                }),
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
}
