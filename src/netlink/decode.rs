//! Decoding rtnetlink datagrams: split into messages, then each message
//! into the few facts the watch needs (addresses and links). Pure.

use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use neli::FromBytes;
use neli::consts::rtnl::{Ifa, Ifla, Rtm};
use neli::nl::{NlPayload, Nlmsghdr};
use neli::rtnl::{Ifaddrmsg, Ifinfomsg};

use crate::core::net::Cidr;

pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLMSG_DONE: u16 = 3;
pub(super) const NLM_F_DUMP_INTR: u16 = 0x10;
pub(super) const NLMSG_HDRLEN: usize = 16;

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
