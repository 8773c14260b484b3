//! rtnetlink (NETLINK_ROUTE) on neli 0.7: one non-blocking socket per
//! network namespace, subscribed to link and IPv4/IPv6 address changes, and
//! the namespace's links and addresses as the kernel last told them.
//!
//! Invariants:
//! - [`RtSocket::view`] converges on the kernel's truth: every message is
//!   applied in arrival order, and any time messages may have been lost (a
//!   receive-queue overrun, ENOBUFS, or an interrupted dump) a fresh dump of
//!   links then addresses rebuilds the view and [`Change::Resynced`] tells
//!   the caller to re-evaluate everything it derives from it.
//! - Each message is reported as a [`Change`] the moment it is applied, so a
//!   caller sees an add followed by a delete as two changes even when both
//!   arrive in one read.
//! - Nothing here blocks: reads stop at EAGAIN.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, Cursor};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};

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

use crate::ident::Namespace;
use crate::net::Cidr;
use crate::netns::{self, NetnsError};

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

/// A decoded message and the header flags that matter for dumps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub message: Message,
    pub seq: u32,
    /// The dump this message belongs to changed while it was being made.
    pub interrupted: bool,
}

/// Decodes one datagram: every message in it, in order. Messages of other
/// types are skipped; a malformed one ends the datagram with an error
/// (the caller resyncs, since something was lost).
pub fn decode(buf: &[u8]) -> Result<Vec<Decoded>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while buf.len() - pos >= NLMSG_HDRLEN {
        let header = &buf[pos..pos + NLMSG_HDRLEN];
        let len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let ty = u16::from_ne_bytes([header[4], header[5]]);
        let flags = u16::from_ne_bytes([header[6], header[7]]);
        let seq = u32::from_ne_bytes([header[8], header[9], header[10], header[11]]);
        if len < NLMSG_HDRLEN || len > buf.len() - pos {
            return Err(format!("message of length {len} at offset {pos} overruns a {}-byte datagram", buf.len()));
        }
        let body = &buf[pos..pos + len];
        let message = match ty {
            NLMSG_DONE => Some(Message::Done { seq }),
            NLMSG_ERROR => {
                let code = body.get(16..20).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0);
                Some(Message::Error { seq, errno: -code })
            }
            t if t == u16::from(Rtm::Newaddr) || t == u16::from(Rtm::Deladdr) => {
                let addr = decode_addr(body)?;
                Some(if t == u16::from(Rtm::Newaddr) { Message::NewAddr(addr) } else { Message::DelAddr(addr) })
            }
            t if t == u16::from(Rtm::Newlink) || t == u16::from(Rtm::Dellink) => {
                let (ifindex, name) = decode_link(body)?;
                Some(if t == u16::from(Rtm::Newlink) {
                    Message::NewLink { ifindex, name }
                } else {
                    Message::DelLink { ifindex, name }
                })
            }
            _ => None,
        };
        if let Some(message) = message {
            out.push(Decoded { message, seq, interrupted: flags & NLM_F_DUMP_INTR != 0 });
        }
        pos += (len + 3) & !3;
    }
    Ok(out)
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
    fn ifindex(&self, name: &str) -> Option<u32> {
        self.links.iter().find(|(_, n)| n.as_str() == name).map(|(i, _)| *i)
    }

    pub fn has_link(&self, name: &str) -> bool {
        self.ifindex(name).is_some()
    }

    /// Whether `cidr` (address and prefix) is on interface `name`.
    pub fn has_addr(&self, name: &str, cidr: &Cidr) -> bool {
        self.ifindex(name).is_some_and(|i| self.addrs.contains(&(i, *cidr)))
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
}

/// What the caller learns from a read, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// An address appeared (`added`) or went away on interface `ifname`.
    Addr { ifname: String, cidr: Cidr, added: bool },
    /// An interface appeared, or was renamed to `ifname`.
    LinkAdded { ifname: String },
    /// An interface was deleted; its addresses went with it.
    LinkGone { ifname: String },
    /// Messages were lost (receive queue overrun or a broken message): a
    /// resync has started.
    Overrun,
    /// A full dump has replaced the view: re-evaluate everything.
    Resynced,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Links { seq: u32 },
    Addrs { seq: u32 },
}

/// A NETLINK_ROUTE socket opened inside one namespace.
pub struct RtSocket {
    sock: NlSocket,
    namespace: String,
    seq: u32,
    phase: Phase,
    /// Restart the running dump when it ends: messages were lost or the dump
    /// was interrupted while it ran.
    restart: bool,
    live: NsView,
    /// The view a running dump is building; events that arrive meanwhile
    /// are applied to it as well, in order, so nothing between the dump's
    /// chunks is missed.
    building: Option<NsView>,
    synced: bool,
    resyncs: u64,
}

impl RtSocket {
    /// Opens the socket inside `namespace` (`None`: the current one),
    /// subscribes to link and address changes and starts the initial dump.
    /// `rcvbuf` overrides SO_RCVBUF (tests use a tiny one to force overruns).
    pub fn open(namespace: Option<&Namespace>, rcvbuf: Option<usize>) -> Result<RtSocket, NetlinkError> {
        let ns_name = namespace.map_or_else(|| "the current namespace".to_owned(), |n| n.to_string());
        let err = |step: &'static str| {
            let ns_name = ns_name.clone();
            move |source| NetlinkError::Socket { namespace: ns_name, step, source }
        };
        let groups = Groups::new_groups(&[RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR]);
        let sock = netns::in_namespace(namespace, || NlSocket::connect(NlFamily::Route, None, groups))?
            .map_err(err("socket/bind"))?;
        sock.nonblock().map_err(err("O_NONBLOCK"))?;
        if let Some(size) = rcvbuf {
            sock.set_recv_buffer_size(size).map_err(err("SO_RCVBUF"))?;
        }
        let mut socket = RtSocket {
            sock,
            namespace: ns_name,
            seq: 0,
            phase: Phase::Idle,
            restart: false,
            live: NsView::default(),
            building: None,
            synced: false,
            resyncs: 0,
        };
        socket.start_dump()?;
        Ok(socket)
    }

    /// The namespace's links and addresses as last reported.
    pub fn view(&self) -> &NsView {
        &self.live
    }

    /// Whether at least one full dump has completed: before that, the view
    /// cannot say an address is absent.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// How many times a resync was needed after the first dump.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// Starts a fresh dump (links, then addresses), or, when one is running,
    /// makes it start over once it ends: the kernel runs one dump per
    /// socket at a time.
    fn start_dump(&mut self) -> Result<(), NetlinkError> {
        if self.phase != Phase::Idle {
            self.restart = true;
            return Ok(());
        }
        self.restart = false;
        self.building = Some(NsView::default());
        let seq = self.next_seq();
        let ifi = IfinfomsgBuilder::default().ifi_family(RtAddrFamily::Unspecified).build();
        let ifi = ifi.map_err(|e| self.encode_error(e))?;
        self.send(Rtm::Getlink, seq, ifi)?;
        self.phase = Phase::Links { seq };
        Ok(())
    }

    fn request_addrs(&mut self) -> Result<(), NetlinkError> {
        let seq = self.next_seq();
        let ifa = IfaddrmsgBuilder::default()
            .ifa_family(RtAddrFamily::Unspecified)
            .ifa_prefixlen(0)
            .ifa_scope(RtScope::Universe)
            .ifa_index(0)
            .build();
        let ifa = ifa.map_err(|e| self.encode_error(e))?;
        self.send(Rtm::Getaddr, seq, ifa)?;
        self.phase = Phase::Addrs { seq };
        Ok(())
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn encode_error(&self, e: impl fmt::Display) -> NetlinkError {
        NetlinkError::Encode { namespace: self.namespace.clone(), message: e.to_string() }
    }

    fn send<P: neli::Size + ToBytes + fmt::Debug>(&self, ty: Rtm, seq: u32, payload: P) -> Result<(), NetlinkError> {
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

    /// Reads everything queued, applying it and reporting each change to
    /// `sink` in order. Stops at EAGAIN. `scratch` is the shared receive
    /// buffer (see [`RECV_BUFFER`]).
    pub fn read(&mut self, scratch: &mut Vec<u8>, sink: &mut impl FnMut(Change)) -> Result<(), NetlinkError> {
        scratch.resize(RECV_BUFFER, 0);
        loop {
            let n = match self.sock.recv(&mut scratch[..], Msg::empty()) {
                Ok((n, _)) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.lost(sink)?;
                    continue;
                }
                Err(source) => {
                    return Err(NetlinkError::Socket { namespace: self.namespace.clone(), step: "recv", source });
                }
            };
            match decode(&scratch[..n]) {
                Ok(messages) => {
                    for decoded in messages {
                        self.handle(decoded, sink)?;
                    }
                }
                Err(reason) => {
                    log::warn!("rtnetlink in {}: {reason}; resyncing", self.namespace);
                    self.lost(sink)?;
                }
            }
        }
    }

    fn lost(&mut self, sink: &mut impl FnMut(Change)) -> Result<(), NetlinkError> {
        self.resyncs += 1;
        sink(Change::Overrun);
        self.start_dump()
    }

    fn handle(&mut self, decoded: Decoded, sink: &mut impl FnMut(Change)) -> Result<(), NetlinkError> {
        let Decoded { message, seq, interrupted } = decoded;
        let in_dump = match self.phase {
            Phase::Links { seq: s } | Phase::Addrs { seq: s } => seq == s,
            Phase::Idle => false,
        };
        if in_dump && interrupted {
            self.restart = true;
        }
        match &message {
            Message::Done { .. } | Message::Error { .. } if in_dump => {
                if let Message::Error { errno, .. } = message
                    && errno != 0
                {
                    log::warn!("rtnetlink dump in {} failed: errno {errno}; retrying", self.namespace);
                    self.restart = true;
                }
                return self.dump_step_done(sink);
            }
            Message::Done { .. } | Message::Error { .. } => return Ok(()),
            _ => {}
        }
        if let Some(building) = &mut self.building {
            building.apply(&message);
        }
        if in_dump {
            // Dump entries describe the state, not a change: they only feed
            // the view being built.
            return Ok(());
        }
        let change = match &message {
            Message::NewAddr(a) | Message::DelAddr(a) => {
                let name = self
                    .live
                    .link_name(a.ifindex)
                    .or_else(|| self.building.as_ref().and_then(|b| b.link_name(a.ifindex)))
                    .map(str::to_owned)
                    .or_else(|| a.label.clone());
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
        Ok(())
    }

    fn dump_step_done(&mut self, sink: &mut impl FnMut(Change)) -> Result<(), NetlinkError> {
        match self.phase {
            Phase::Links { .. } if !self.restart => self.request_addrs(),
            Phase::Idle => Ok(()),
            _ if self.restart => {
                self.phase = Phase::Idle;
                self.start_dump()
            }
            Phase::Addrs { .. } | Phase::Links { .. } => {
                self.phase = Phase::Idle;
                if let Some(view) = self.building.take() {
                    self.live = view;
                }
                self.synced = true;
                sink(Change::Resynced);
                Ok(())
            }
        }
    }
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
        let len = (NLMSG_HDRLEN + body.len()) as u32;
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
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
        let messages: Vec<&Message> = decoded.iter().map(|d| &d.message).collect();
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
        assert!(decoded[4].interrupted && !decoded[0].interrupted);
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
}
