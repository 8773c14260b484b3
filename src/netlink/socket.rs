//! The NETLINK_ROUTE socket of one namespace: it only moves bytes between
//! the kernel and the [`Tracker`](super::view::Tracker).

use std::fmt;
use std::io::{self, Cursor};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use mio::unix::SourceFd;
use neli::ToBytes;
use neli::consts::nl::NlmF;
use neli::consts::rtnl::{RtAddrFamily, RtScope, Rtm};
use neli::consts::socket::{Msg, NlFamily};
use neli::nl::{NlPayload, NlmsghdrBuilder};
use neli::rtnl::{IfaddrmsgBuilder, IfinfomsgBuilder};
use neli::socket::NlSocket;
use neli::utils::Groups;

use super::NetlinkError;
use super::view::{Change, Dump, NsView, Request, Tracker};
use crate::core::ident::{Namespace, namespace_name};
use crate::sys::netns::{self, NsIdentity};

/// rtnetlink multicast groups (`RTNLGRP_*`).
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV6_IFADDR: u32 = 9;

/// Large enough for any datagram the kernel sends on NETLINK_ROUTE: dump
/// chunks are sized to the reader's largest buffer and capped at 32 KiB.
/// Shared by all sockets of a process so a thousand namespaces do not cost
/// a thousand buffers.
pub const RECV_BUFFER: usize = 32 * 1024;

/// Datagrams one [`RtSocket::read`] handles before giving the loop back
/// ([`Read::More`]): a node-wide flip of a thousand routers takes a few
/// passes, and a flood never holds signals or the control socket back.
pub const READ_BUDGET: usize = 256;

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
        let ns_name = namespace_name(namespace);
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
        // Received into the capacity, never zero-filled: only the pages a
        // datagram reaches become resident (see `sys::recv`).
        scratch.clear();
        scratch.reserve(RECV_BUFFER);
        for _ in 0..READ_BUDGET {
            match crate::sys::recv::recv_into(self.sock.as_raw_fd(), scratch) {
                Ok(n) => {
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
    let addr: nix::sys::socket::NetlinkAddr = nix::sys::socket::getsockname(fd)?;
    Ok(addr.pid())
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
