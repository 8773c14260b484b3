//! The I/O shell of agent notifications: one non-blocking connection per
//! request in flight, driven by the event loop, turned into [`Delivery`]s.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::{Interest, Token};
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, send};

use super::queue::Queue;
use super::{Delivery, DeliveryKind, NotifyError, RESPONSE_TIMEOUT};
use crate::core::ident::RouterId;
use crate::core::state::State;
use crate::http::request::build_request;
use crate::http::response::{MAX_STATUS_LINE, StatusLine, parse_status_line};
use crate::sys::event_loop::{Owner, Sources};

/// One attempt: a connected non-blocking socket and how far the exchange got.
struct Conn {
    router_id: RouterId,
    state: State,
    stream: UnixStream,
    request: Vec<u8>,
    written: usize,
    response: Vec<u8>,
    deadline: Instant,
}

impl Conn {
    /// Sends what is left of the request, then (with `read`) reads until the
    /// status line is decided. `None`: wait for readiness. Reads until
    /// `WouldBlock` because mio readiness is edge-triggered.
    fn drive(&mut self, path: &Path, read: bool) -> Option<Result<(), NotifyError>> {
        while self.written < self.request.len() {
            // send(2) with MSG_NOSIGNAL: a peer that hung up must give EPIPE,
            // not a SIGPIPE that would kill the daemon.
            match send(self.stream.as_raw_fd(), &self.request[self.written..], MsgFlags::MSG_NOSIGNAL) {
                Ok(0) => {
                    return Some(Err(NotifyError::Send {
                        path: path.to_owned(),
                        source: io::Error::from(io::ErrorKind::WriteZero),
                    }));
                }
                Ok(n) => self.written += n,
                Err(Errno::EAGAIN) => return None,
                Err(Errno::EINTR) => continue,
                Err(e) => return Some(Err(NotifyError::Send { path: path.to_owned(), source: e.into() })),
            }
        }
        if !read {
            return None;
        }
        let mut buf = [0u8; 512];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) if self.response.is_empty() => return Some(Err(NotifyError::Closed { path: path.to_owned() })),
                Ok(0) => return Some(judge(path, parse_status_line(&self.response, true))),
                Ok(n) => {
                    let room = (MAX_STATUS_LINE + 2).saturating_sub(self.response.len());
                    self.response.extend_from_slice(&buf[..n.min(room)]);
                    match parse_status_line(&self.response, false) {
                        StatusLine::Incomplete => continue,
                        decided => return Some(judge(path, decided)),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Some(Err(NotifyError::Receive { path: path.to_owned(), source: e })),
            }
        }
    }
}

/// Turns a decided (or, at EOF, final) status line into the attempt's result.
fn judge(path: &Path, status: StatusLine) -> Result<(), NotifyError> {
    match status {
        StatusLine::Complete(200) => Ok(()),
        StatusLine::Complete(code) => Err(NotifyError::Status { path: path.to_owned(), code }),
        StatusLine::Invalid(detail) => Err(NotifyError::BadResponse { path: path.to_owned(), detail }),
        StatusLine::Incomplete => Err(NotifyError::Closed { path: path.to_owned() }),
    }
}

/// Delivers router state changes to the agent socket from inside a mio loop.
///
/// Each connection is registered with the loop's [`Sources`] under a token
/// owned by [`Owner::Notifier`]; the loop routes readiness of those tokens
/// to [`Notifier::ready`], polls with a timeout of
/// [`Notifier::next_deadline`] and calls [`Notifier::tick`] after each
/// wake-up. Every call that can end an attempt returns the [`Delivery`]s it
/// ended, for the caller to log and count.
///
/// Invariant after every public call: either no router waits to start, or
/// `max_in_flight` requests are in flight, so a wake-up is only ever needed
/// for readiness, a response deadline or a retry time.
pub struct Notifier {
    socket_path: PathBuf,
    queue: Queue,
    /// The requests in flight, by the token of their connection.
    conns: HashMap<Token, Conn>,
}

impl Notifier {
    /// `max_in_flight` of 0 is taken as 1.
    pub fn new(socket_path: PathBuf, max_in_flight: usize) -> Notifier {
        Notifier { socket_path, queue: Queue::new(max_in_flight), conns: HashMap::new() }
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Queues `state` as the router's latest state and starts sending at
    /// once when a request may start and the router is neither in flight
    /// nor backing off. Returns the attempts this ended already (the socket
    /// is missing or cannot be polled); an answer is only ever read later,
    /// when the connection is readable.
    pub fn submit<K>(
        &mut self,
        sources: &mut Sources<K>,
        router_id: &RouterId,
        state: State,
        now: Instant,
    ) -> Vec<Delivery> {
        let mut out = Vec::new();
        self.queue.submit(router_id, state);
        self.fill(sources, now, &mut out);
        out
    }

    /// Handles readiness for one of this notifier's tokens (a stale event
    /// for a connection already closed is ignored).
    pub fn ready<K>(&mut self, sources: &mut Sources<K>, token: Token, now: Instant) -> Vec<Delivery> {
        let mut out = Vec::new();
        self.progress(sources, token, now, &mut out);
        self.fill(sources, now, &mut out);
        out
    }

    /// Fails attempts past their deadline, starts due retries.
    pub fn tick<K>(&mut self, sources: &mut Sources<K>, now: Instant) -> Vec<Delivery> {
        let mut out = Vec::new();
        let due: Vec<Token> = self.conns.iter().filter(|(_, c)| c.deadline <= now).map(|(t, _)| *t).collect();
        for token in due {
            // An answer may be sitting unread: look before declaring it lost.
            self.progress(sources, token, now, &mut out);
            if let Some(conn) = self.conns.remove(&token) {
                let err = NotifyError::Timeout { path: self.socket_path.clone(), after: RESPONSE_TIMEOUT };
                self.close(sources, token, conn, Err(err), now, &mut out);
            }
        }
        self.queue.promote_due(now);
        self.fill(sources, now, &mut out);
        out
    }

    /// Retries every backing-off router now, for the shutdown flush.
    pub fn retry_now<K>(&mut self, sources: &mut Sources<K>, now: Instant) -> Vec<Delivery> {
        let mut out = Vec::new();
        self.queue.promote_all();
        self.fill(sources, now, &mut out);
        out
    }

    /// The earliest instant `tick` has work: a response deadline or a
    /// retry. `None` when nothing is pending, so the loop may sleep without
    /// a timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        let conns = self.conns.values().map(|c| c.deadline).min();
        [self.queue.next_retry(), conns].into_iter().flatten().min()
    }

    /// Drops every request in flight (the agent socket changed): their
    /// connections close and their tokens are given back.
    pub fn abandon<K>(mut self, sources: &mut Sources<K>) {
        for (token, mut conn) in self.conns.drain() {
            sources.deregister(&mut conn.stream, token);
        }
    }

    /// Routers whose latest state is not delivered yet.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Nothing to send, nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// Starts waiting routers while requests may start.
    fn fill<K>(&mut self, sources: &mut Sources<K>, now: Instant, out: &mut Vec<Delivery>) {
        while let Some((router_id, state)) = self.queue.start_next() {
            match self.open(sources, &router_id, state, now) {
                Ok((token, conn)) => {
                    self.conns.insert(token, conn);
                    // The socket is usually writable at once: send now rather
                    // than after one more trip through the poll. The answer
                    // is read when readiness says it is there (registered
                    // before the send, so its edge is never missed): the
                    // caller's own follow-up (the state file) comes first,
                    // and the agent's answer is never judged in the call
                    // that asked.
                    self.send(token);
                }
                Err(err) => self.conclude(router_id, state, Err(err), now, out),
            }
        }
    }

    fn open<K>(
        &self,
        sources: &mut Sources<K>,
        router_id: &RouterId,
        state: State,
        now: Instant,
    ) -> Result<(Token, Conn), NotifyError> {
        let request = build_request(router_id, state);
        log::debug!("notifying agent at {}: router {router_id}, state {state}", self.socket_path.display());
        let mut stream = UnixStream::connect(&self.socket_path)
            .map_err(|source| NotifyError::Connect { path: self.socket_path.clone(), source })?;
        let token = sources
            .register(&mut stream, Owner::Notifier, Interest::READABLE | Interest::WRITABLE)
            .map_err(|source| NotifyError::Register { path: self.socket_path.clone(), source })?;
        let conn = Conn {
            router_id: router_id.clone(),
            state,
            stream,
            request,
            written: 0,
            response: Vec::new(),
            deadline: now + RESPONSE_TIMEOUT,
        };
        Ok((token, conn))
    }

    /// Sends what the socket takes of a new request; a send that fails ends
    /// the attempt at the next readiness (the socket reports the error).
    fn send(&mut self, token: Token) {
        if let Some(conn) = self.conns.get_mut(&token) {
            let _ = conn.drive(&self.socket_path, false);
        }
    }

    fn progress<K>(&mut self, sources: &mut Sources<K>, token: Token, now: Instant, out: &mut Vec<Delivery>) {
        let Some(conn) = self.conns.get_mut(&token) else { return };
        let Some(result) = conn.drive(&self.socket_path, true) else { return };
        if let Some(conn) = self.conns.remove(&token) {
            self.close(sources, token, conn, result, now, out);
        }
    }

    fn close<K>(
        &mut self,
        sources: &mut Sources<K>,
        token: Token,
        mut conn: Conn,
        result: Result<(), NotifyError>,
        now: Instant,
        out: &mut Vec<Delivery>,
    ) {
        sources.deregister(&mut conn.stream, token);
        drop(conn.stream);
        self.conclude(conn.router_id, conn.state, result, now, out);
    }

    fn conclude(
        &mut self,
        router_id: RouterId,
        state: State,
        result: Result<(), NotifyError>,
        now: Instant,
        out: &mut Vec<Delivery>,
    ) {
        let retry_in = self.queue.finish(&router_id, result.is_ok(), now);
        let kind = match result {
            Ok(()) => DeliveryKind::Delivered,
            Err(err) => DeliveryKind::Failed { reason: err.to_string(), retry_in: retry_in.unwrap_or(Duration::ZERO) },
        };
        out.push(Delivery { router_id, state, kind });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> (mio::Poll, Sources<()>) {
        let poll = mio::Poll::new().expect("poll");
        let sources = Sources::new(poll.registry().try_clone().expect("registry"));
        (poll, sources)
    }

    #[test]
    fn zero_in_flight_is_taken_as_one() {
        let mut q = Queue::new(0);
        q.submit(&RouterId::parse("r1").unwrap(), State::Primary);
        assert!(q.start_next().is_some());
        // A notifier made with 0 still makes its attempt.
        let (_poll, mut sources) = sources();
        let mut n = Notifier::new(PathBuf::from("/nonexistent/agent.sock"), 0);
        let out = n.submit(&mut sources, &RouterId::parse("r1").unwrap(), State::Backup, Instant::now());
        assert!(matches!(&out[..], [Delivery { kind: DeliveryKind::Failed { .. }, .. }]), "{out:?}");
    }

    #[test]
    fn connections_take_tokens_from_the_loop_and_give_them_back() {
        let dir = crate::test_support::TempDir::new("notifier-tokens");
        let path = dir.join("agent.sock");
        // Listening, never answering: the request stays in flight.
        let _agent = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let (_poll, mut sources) = sources();
        let mut n = Notifier::new(path, 4);
        let t0 = Instant::now();
        for r in ["r1", "r2"] {
            assert!(n.submit(&mut sources, &RouterId::parse(r).unwrap(), State::Primary, t0).is_empty());
        }
        let tokens: Vec<Token> = n.conns.keys().copied().collect();
        assert_eq!(tokens.len(), 2);
        assert!(tokens.iter().all(|t| sources.owner(*t) == Some(&Owner::Notifier)));
        let out = n.tick(&mut sources, t0 + RESPONSE_TIMEOUT);
        assert_eq!(out.len(), 2, "both timed out: {out:?}");
        assert!(sources.is_empty(), "every token given back");
    }
}
