//! A namespace's links and addresses ([`NsView`]) and the pure rtnetlink
//! protocol that keeps it true across losses ([`Tracker`]): bytes and
//! losses in, [`Change`]s and dump requests out, time passed in.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::decode::{Header, Message, NLM_F_DUMP_INTR, NLMSG_DONE, NLMSG_ERROR, decode_message, split};
use crate::core::backoff::Backoff;
use crate::core::net::Cidr;

/// The delay before a re-dump that follows another loss (see [`Tracker`]).
const RESYNC_FIRST: Duration = Duration::from_millis(10);
const RESYNC_MAX: Duration = Duration::from_secs(1);

/// The delay before the re-dump after `streak` losses in a row without the
/// loop catching up: none for the first, then 10 ms doubling to 1 s.
pub fn resync_delay(streak: u32) -> Duration {
    Backoff::new(RESYNC_FIRST, RESYNC_MAX).after(streak)
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

    pub(super) fn apply(&mut self, message: &Message) {
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

/// The address whose presence on an interface tells a router's state: its
/// primary VIP on its HA interface (the daemon), `--monitor_cidr` on
/// `--monitor_interface` (the monitor). Present means `primary`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipWatch<'a> {
    pub ifname: &'a str,
    pub cidr: &'a Cidr,
}

impl VipWatch<'_> {
    /// Whether `view` holds the address on the interface now.
    pub fn present(&self, view: &NsView) -> bool {
        view.has_addr(self.ifname, self.cidr)
    }

    /// What `change` says about it: `Some(present)` when it added or
    /// removed the address on the interface, or deleted the interface
    /// (its addresses went with it); `None` when it is about something else.
    pub fn changed(&self, change: &Change) -> Option<bool> {
        match change {
            Change::Addr { ifname, cidr, added } if ifname == self.ifname && cidr == self.cidr => Some(*added),
            Change::LinkGone { ifname } if ifname == self.ifname => Some(false),
            _ => None,
        }
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
