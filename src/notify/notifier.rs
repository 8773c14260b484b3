//! The I/O shell of agent notifications: one non-blocking connection per
//! request in flight, driven by the event loop, turned into [`Outcome`]s.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, send};

use super::queue::Queue;
use super::{NotifyError, Outcome, OutcomeKind, RESPONSE_TIMEOUT};
use crate::http::request::build_request;
use crate::http::response::{MAX_STATUS_LINE, StatusLine, parse_status_line};

/// One attempt: a connected non-blocking socket and how far the exchange got.
struct Conn {
    router_id: String,
    state: String,
    stream: UnixStream,
    request: Vec<u8>,
    written: usize,
    response: Vec<u8>,
    deadline: Instant,
}

impl Conn {
    /// Sends what is left of the request, then reads until the status line
    /// is decided. `None`: wait for readiness. Reads until `WouldBlock`
    /// because mio readiness is edge-triggered.
    fn drive(&mut self, path: &Path) -> Option<Result<(), NotifyError>> {
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
/// The loop owner routes readiness of every token in
/// `token_base .. token_base + max_in_flight` to [`Notifier::ready`], polls
/// with a timeout of [`Notifier::next_deadline`] and calls
/// [`Notifier::tick`] after each wake-up. Outcomes come back from `ready`
/// and `tick` only (also those of work started by `submit`), for the caller
/// to log.
///
/// Invariant after every public call: either no router waits to start, or
/// all slots are busy, so a wake-up is only ever needed for readiness, a
/// response deadline, a retry time or buffered outcomes.
pub struct Notifier {
    socket_path: PathBuf,
    token_base: usize,
    queue: Queue,
    /// Slot `i` uses `Token(token_base + i)`.
    slots: Vec<Option<Conn>>,
    /// Outcomes produced inside `submit`, handed out by the next call that
    /// returns outcomes.
    deferred: Vec<Outcome>,
    deferred_since: Option<Instant>,
}

impl Notifier {
    /// `max_in_flight` of 0 is taken as 1, and the range is cut short rather
    /// than let `token_base + max_in_flight` overflow.
    pub fn new(socket_path: PathBuf, token_base: usize, max_in_flight: usize) -> Notifier {
        let max_in_flight = max_in_flight.min(usize::MAX - token_base).max(1);
        Notifier {
            socket_path,
            token_base,
            queue: Queue::new(max_in_flight),
            slots: (0..max_in_flight).map(|_| None).collect(),
            deferred: Vec::new(),
            deferred_since: None,
        }
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Whether readiness for `token` belongs to this notifier.
    pub fn owns(&self, token: Token) -> bool {
        self.slot_of(token).is_some()
    }

    fn slot_of(&self, token: Token) -> Option<usize> {
        token.0.checked_sub(self.token_base).filter(|&i| i < self.slots.len())
    }

    /// Queues `state` as the router's latest state and starts sending at
    /// once when a slot is free and the router is neither in flight nor
    /// backing off. Any outcome this produces (e.g. the socket is missing)
    /// is returned by the next `ready` or `tick`; `next_deadline` is then
    /// already due.
    pub fn submit(&mut self, registry: &Registry, router_id: &str, state: &str, now: Instant) {
        let mut out = Vec::new();
        match build_request(router_id, state) {
            Ok(_) => {
                self.queue.submit(router_id, state);
                self.fill(registry, now, &mut out);
            }
            Err(err) => out.push(Outcome {
                router_id: router_id.to_owned(),
                state: state.to_owned(),
                kind: OutcomeKind::Failed { reason: err.to_string(), retry_in: Duration::ZERO },
            }),
        }
        if !out.is_empty() {
            self.deferred_since.get_or_insert(now);
            self.deferred.append(&mut out);
        }
    }

    /// Handles readiness for one of this notifier's tokens (others are
    /// ignored, as are stale events for a slot already closed).
    pub fn ready(&mut self, registry: &Registry, event: &mio::event::Event, now: Instant) -> Vec<Outcome> {
        let mut out = self.take_deferred();
        if let Some(slot) = self.slot_of(event.token()) {
            self.progress(registry, slot, now, &mut out);
        }
        self.fill(registry, now, &mut out);
        out
    }

    /// Fails attempts past their deadline, starts due retries.
    pub fn tick(&mut self, registry: &Registry, now: Instant) -> Vec<Outcome> {
        let mut out = self.take_deferred();
        for slot in 0..self.slots.len() {
            if self.slots[slot].as_ref().is_some_and(|c| c.deadline <= now) {
                // An answer may be sitting unread: look before declaring it lost.
                self.progress(registry, slot, now, &mut out);
                if let Some(conn) = self.slots[slot].take() {
                    let err = NotifyError::Timeout { path: self.socket_path.clone(), after: RESPONSE_TIMEOUT };
                    self.close(registry, conn, Err(err), now, &mut out);
                }
            }
        }
        self.queue.promote_due(now);
        self.fill(registry, now, &mut out);
        out
    }

    /// Retries every backing-off router now, for the shutdown flush.
    pub fn retry_now(&mut self, registry: &Registry, now: Instant) -> Vec<Outcome> {
        let mut out = self.take_deferred();
        self.queue.promote_all();
        self.fill(registry, now, &mut out);
        out
    }

    /// The earliest instant `tick` has work: a response deadline, a retry,
    /// or buffered outcomes (then possibly in the past: poll without
    /// waiting). `None` when nothing is pending, so the loop may sleep
    /// without a timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        let conns = self.slots.iter().flatten().map(|c| c.deadline).min();
        let deferred = self.deferred_since.filter(|_| !self.deferred.is_empty());
        [deferred, self.queue.next_retry(), conns].into_iter().flatten().min()
    }

    /// Routers whose latest state is not delivered yet.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Nothing to send and no outcome left to hand out.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.deferred.is_empty()
    }

    fn take_deferred(&mut self) -> Vec<Outcome> {
        self.deferred_since = None;
        std::mem::take(&mut self.deferred)
    }

    /// Starts waiting routers while slots are free.
    fn fill(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Outcome>) {
        loop {
            let Some(slot) = self.slots.iter().position(Option::is_none) else { return };
            let Some((router_id, state)) = self.queue.start_next() else { return };
            match self.open(registry, slot, &router_id, &state, now) {
                Ok(conn) => {
                    self.slots[slot] = Some(conn);
                    // The socket is usually writable at once: send now rather
                    // than after one more trip through the poll.
                    self.progress(registry, slot, now, out);
                }
                Err(err) => self.conclude(router_id, state, Err(err), now, out),
            }
        }
    }

    fn open(
        &self,
        registry: &Registry,
        slot: usize,
        router_id: &str,
        state: &str,
        now: Instant,
    ) -> Result<Conn, NotifyError> {
        let request = build_request(router_id, state)?;
        log::debug!("notifying agent at {}: router {router_id}, state {state}", self.socket_path.display());
        let mut stream = UnixStream::connect(&self.socket_path)
            .map_err(|source| NotifyError::Connect { path: self.socket_path.clone(), source })?;
        registry
            .register(&mut stream, Token(self.token_base + slot), Interest::READABLE | Interest::WRITABLE)
            .map_err(|source| NotifyError::Register { path: self.socket_path.clone(), source })?;
        Ok(Conn {
            router_id: router_id.to_owned(),
            state: state.to_owned(),
            stream,
            request,
            written: 0,
            response: Vec::new(),
            deadline: now + RESPONSE_TIMEOUT,
        })
    }

    fn progress(&mut self, registry: &Registry, slot: usize, now: Instant, out: &mut Vec<Outcome>) {
        let Some(conn) = self.slots[slot].as_mut() else { return };
        let Some(result) = conn.drive(&self.socket_path) else { return };
        if let Some(conn) = self.slots[slot].take() {
            self.close(registry, conn, result, now, out);
        }
    }

    fn close(
        &mut self,
        registry: &Registry,
        mut conn: Conn,
        result: Result<(), NotifyError>,
        now: Instant,
        out: &mut Vec<Outcome>,
    ) {
        // Failure is harmless: closing the descriptor removes it from epoll.
        let _ = registry.deregister(&mut conn.stream);
        drop(conn.stream);
        self.conclude(conn.router_id, conn.state, result, now, out);
    }

    fn conclude(
        &mut self,
        router_id: String,
        state: String,
        result: Result<(), NotifyError>,
        now: Instant,
        out: &mut Vec<Outcome>,
    ) {
        let retry_in = self.queue.finish(&router_id, result.is_ok(), now);
        let kind = match result {
            Ok(()) => OutcomeKind::Delivered,
            Err(err) => OutcomeKind::Failed { reason: err.to_string(), retry_in: retry_in.unwrap_or(Duration::ZERO) },
        };
        out.push(Outcome { router_id, state, kind });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_in_flight_is_taken_as_one() {
        let mut q = Queue::new(0);
        q.submit("r1", "primary");
        assert!(q.start_next().is_some());
        let n = Notifier::new(PathBuf::from("/nonexistent"), 10, 0);
        assert!(n.owns(Token(10)));
        assert!(!n.owns(Token(11)));
        assert!(!n.owns(Token(9)));
    }

    #[test]
    fn token_range_does_not_overflow() {
        let n = Notifier::new(PathBuf::from("/nonexistent"), usize::MAX - 2, 10);
        assert!(n.owns(Token(usize::MAX - 2)));
        assert!(n.owns(Token(usize::MAX - 1)));
        assert!(!n.owns(Token(0)));
    }
}
