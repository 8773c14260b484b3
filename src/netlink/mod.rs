//! rtnetlink (NETLINK_ROUTE) on neli 0.7: one non-blocking socket per
//! network namespace (`socket`), subscribed to link and IPv4/IPv6 address
//! changes, decoded (`decode`) into the namespace's links and addresses as
//! the kernel last told them (`view`).
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

mod decode;
mod socket;
mod view;

use std::fmt;
use std::io;

pub use decode::{Addr, Header, Message, decode_message, split};
pub use socket::{READ_BUDGET, RECV_BUFFER, Read, RtSocket};
pub use view::{Change, Dump, NsView, Request, Tracker, VipWatch, resync_delay};

use crate::sys::netns::NetnsError;

/// Why a namespace cannot be watched: it cannot be entered, or its socket failed.
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

#[cfg(test)]
mod tests;
