//! One HTTP/1.1 connection as a non-blocking state machine, whatever it
//! runs over (the control socket's Unix streams, the metrics listener's TCP
//! ones): read a request within the parser's limits, write one answer, or
//! stream lines. The servers own the policy (who may connect, deadlines,
//! what a request means); this only moves bytes.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crate::http::request::{self, Parsed, Request};

/// An answer not taken by the peer within this long is abandoned.
pub(super) const WRITE_DEADLINE: Duration = Duration::from_secs(5);

/// The next connection a non-blocking listener holds (`accept` is its
/// accept call): `None` when none is waiting, or when accepting failed
/// (logged, naming `listener`; the next readiness tries again).
pub(super) fn accept_next<S>(mut accept: impl FnMut() -> io::Result<S>, listener: &dyn std::fmt::Display) -> Option<S> {
    loop {
        match accept() {
            Ok(accepted) => return Some(accepted),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("{listener}: accept: {e}");
                return None;
            }
        }
    }
}

/// Where a connection is in its one exchange.
pub(super) enum Phase {
    Reading { buf: Vec<u8> },
    Writing { out: Vec<u8>, written: usize },
    Streaming { out: VecDeque<u8>, text: bool },
}

/// What the server does next with a connection.
pub(super) enum Step {
    Keep,
    Close,
    Request(Request),
    Reject(u16, String),
}

/// A connection, its phase and the moment it must have moved on.
pub(super) struct HttpConn<S> {
    pub(super) stream: S,
    pub(super) phase: Phase,
    pub(super) deadline: Option<Instant>,
}

impl<S: Read + Write> HttpConn<S> {
    /// A connection just accepted: its request must arrive by `deadline`.
    pub(super) fn reading(stream: S, deadline: Instant) -> HttpConn<S> {
        HttpConn { stream, phase: Phase::Reading { buf: Vec::new() }, deadline: Some(deadline) }
    }

    /// Reads what is there (or writes what is pending) and says what next.
    pub(super) fn advance(&mut self) -> Step {
        match &mut self.phase {
            Phase::Reading { buf } => {
                let mut chunk = [0u8; 4096];
                loop {
                    match self.stream.read(&mut chunk) {
                        Ok(0) => return Step::Close,
                        Ok(n) => {
                            buf.extend_from_slice(&chunk[..n]);
                            match request::parse(buf) {
                                Parsed::Incomplete => {}
                                Parsed::Complete(request) => return Step::Request(request),
                                Parsed::Reject(reject) => return Step::Reject(reject.status, reject.reason),
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Keep,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Step::Close,
                    }
                }
            }
            Phase::Writing { .. } | Phase::Streaming { .. } => {
                // Peers of an answer or a stream say nothing more; reading
                // only tells whether they went away.
                let mut sink = [0u8; 512];
                loop {
                    match self.stream.read(&mut sink) {
                        Ok(0) => return Step::Close,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Step::Close,
                    }
                }
                self.flush()
            }
        }
    }

    /// Writes as much pending output as the socket takes.
    pub(super) fn flush(&mut self) -> Step {
        match &mut self.phase {
            Phase::Writing { out, written } => {
                while *written < out.len() {
                    match self.stream.write(&out[*written..]) {
                        Ok(0) => return Step::Close,
                        Ok(n) => *written += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Keep,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Step::Close,
                    }
                }
                Step::Close
            }
            Phase::Streaming { out, .. } => {
                while !out.is_empty() {
                    let (front, _) = out.as_slices();
                    match self.stream.write(front) {
                        Ok(0) => return Step::Close,
                        Ok(n) => {
                            out.drain(..n);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Keep,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Step::Close,
                    }
                }
                Step::Keep
            }
            Phase::Reading { .. } => Step::Keep,
        }
    }
}
