//! Forwarding state changes to the Neutron L3 agent (SPEC sections 3.5 and 4).
//!
//! The agent listens on a Unix stream socket (`STATE_PATH/keepalived-state-change`
//! for the drop-in monitor, `notify_agent_socket` for the daemon) and takes one
//! `POST /` per change, the router and state in `X-Neutron-Router-Id` and
//! `X-Neutron-State` headers. A `200` answer means the agent has it; anything
//! else is retried with backoff.
//!
//! Everything runs inside the single mio loop, so nothing here blocks: sockets
//! are non-blocking, waiting is expressed as [`Notifier::next_deadline`], and
//! time only moves through the `now` the caller passes in.
//!
//! The module is two layers:
//! - pure parts, tested without sockets or clocks: [`build_request`],
//!   [`parse_status_line`], [`backoff_delay`] and the latest-wins [`Queue`];
//! - [`Notifier`], the I/O shell that owns one connection per in-flight
//!   request and turns socket readiness into [`Outcome`]s.
//!
//! Delivery rules (the agent only cares about a router's *current* state):
//! - only the latest submitted state per router is kept pending;
//! - at most one request per router is in flight; a state submitted meanwhile
//!   is sent after that request ends, unless the request succeeded with the
//!   very same state;
//! - a failed router retries its latest state after [`backoff_delay`], which
//!   grows per consecutive failure of that router and resets on success;
//! - routers are started in submission order, at most `max_in_flight` at once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, send};

/// How long one attempt (connect, send, status line) may take before it
/// counts as failed. Neutron's own client waits about as long.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Delay before the first retry of a router.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(50);

/// Longest delay between two attempts for one router: an agent that comes
/// back is noticed within this long.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A status line longer than this is garbage; it also bounds what is kept of
/// a response.
const MAX_STATUS_LINE: usize = 1024;

/// Why one attempt failed. The socket path is in every I/O variant because a
/// warning that does not name the socket is useless to an operator.
#[derive(Debug)]
pub enum NotifyError {
    /// The router ID or state cannot go into an HTTP header (empty, or holds
    /// bytes outside visible ASCII). Such a value is never sent nor retried.
    InvalidValue {
        field: &'static str,
        value: String,
    },
    /// `connect(2)` failed: socket missing (ENOENT), nobody listening
    /// (ECONNREFUSED), backlog full (EAGAIN), path too long...
    Connect {
        path: PathBuf,
        source: io::Error,
    },
    /// The connection could not be added to the poll.
    Register {
        path: PathBuf,
        source: io::Error,
    },
    Send {
        path: PathBuf,
        source: io::Error,
    },
    Receive {
        path: PathBuf,
        source: io::Error,
    },
    /// End of stream before any status line.
    Closed {
        path: PathBuf,
    },
    /// Something that is not an HTTP/1.x status line.
    BadResponse {
        path: PathBuf,
        detail: String,
    },
    /// A well-formed answer other than 200.
    Status {
        path: PathBuf,
        code: u16,
    },
    /// No status line within [`RESPONSE_TIMEOUT`].
    Timeout {
        path: PathBuf,
        after: Duration,
    },
}

impl fmt::Display for NotifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotifyError::InvalidValue { field, value } => {
                write!(f, "{field} '{}' cannot be sent in an HTTP header; dropped", value.escape_debug())
            }
            NotifyError::Connect { path, source } => {
                write!(f, "cannot connect to agent socket {}: {source}", path.display())
            }
            NotifyError::Register { path, source } => {
                write!(f, "cannot poll connection to agent socket {}: {source}", path.display())
            }
            NotifyError::Send { path, source } => write!(f, "sending to agent socket {}: {source}", path.display()),
            NotifyError::Receive { path, source } => {
                write!(f, "reading answer from agent socket {}: {source}", path.display())
            }
            NotifyError::Closed { path } => {
                write!(f, "agent socket {} closed the connection without answering", path.display())
            }
            NotifyError::BadResponse { path, detail } => {
                write!(f, "agent socket {} answered garbage: {detail}", path.display())
            }
            NotifyError::Status { path, code } => write!(f, "agent socket {} answered status {code}", path.display()),
            NotifyError::Timeout { path, after } => {
                write!(f, "no answer from agent socket {} within {after:?}", path.display())
            }
        }
    }
}

impl std::error::Error for NotifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NotifyError::Connect { source, .. }
            | NotifyError::Register { source, .. }
            | NotifyError::Send { source, .. }
            | NotifyError::Receive { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The end of one attempt to deliver `state` for `router_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub router_id: String,
    pub state: String,
    pub kind: OutcomeKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutcomeKind {
    Delivered,
    /// `retry_in` is when the router is tried again; the retry carries the
    /// router's latest state, which may be newer than this outcome's.
    /// `Duration::ZERO` means never: the values cannot be sent at all.
    Failed {
        reason: String,
        retry_in: Duration,
    },
}

impl Outcome {
    pub fn is_delivered(&self) -> bool {
        self.kind == OutcomeKind::Delivered
    }
}

/// The log line: `Notified agent router ID, state STATE` (SPEC section 4:
/// operators and Neutron's functional tests grep for it) or the warning.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            OutcomeKind::Delivered => write!(f, "Notified agent router {}, state {}", self.router_id, self.state),
            OutcomeKind::Failed { reason, retry_in } => {
                write!(f, "Failed to notify agent router {}, state {}: {reason}", self.router_id, self.state)?;
                if retry_in.is_zero() { write!(f, "; not retried") } else { write!(f, "; retrying in {retry_in:?}") }
            }
        }
    }
}

/// A header value must be visible ASCII so that nothing the caller passes can
/// end a header line or inject another one.
fn check_header_value(field: &'static str, value: &str) -> Result<(), NotifyError> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(NotifyError::InvalidValue { field, value: value.to_owned() })
    }
}

/// The exact request Neutron's agent expects, `Connection: close` so that one
/// connection carries one notification and its end is unambiguous.
pub fn build_request(router_id: &str, state: &str) -> Result<Vec<u8>, NotifyError> {
    check_header_value("router id", router_id)?;
    check_header_value("state", state)?;
    Ok(format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Neutron-Router-Id: {router_id}\r\n\
         X-Neutron-State: {state}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes())
}

/// What the first bytes of a response say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusLine {
    /// Nothing wrong so far, but the line is not complete yet.
    Incomplete,
    Complete(u16),
    Invalid(String),
}

/// Parses `HTTP/1.0` or `HTTP/1.1`, one space, exactly three digits, then a
/// space and any reason phrase, or the end of the line (LF or CRLF).
///
/// `eof` says the peer closed: what was received is then all there is, so a
/// missing line terminator is forgiven but a truncated line is not. Without
/// `eof`, a prefix that can no longer become valid is rejected at once, so
/// garbage fails fast instead of waiting for the deadline.
pub fn parse_status_line(buf: &[u8], eof: bool) -> StatusLine {
    let (line, complete) = match buf.iter().position(|&b| b == b'\n') {
        Some(i) => (buf[..i].strip_suffix(b"\r").unwrap_or(&buf[..i]), true),
        None if eof => (buf, true),
        None => (buf, false),
    };
    if line.len() > MAX_STATUS_LINE {
        return StatusLine::Invalid(format!("status line longer than {MAX_STATUS_LINE} bytes"));
    }
    if complete && line.is_empty() {
        return StatusLine::Invalid(if eof && buf.is_empty() {
            "no status line".to_string()
        } else {
            "empty status line".to_string()
        });
    }
    // Positions 0..12 of "HTTP/1.x DDD" checked one by one so a prefix is
    // judged as soon as it is wrong.
    const VERSION: &[u8] = b"HTTP/1.";
    for (i, &b) in line.iter().enumerate().take(12) {
        let ok = match i {
            0..=6 => b == VERSION[i],
            7 => b == b'0' || b == b'1',
            8 => b == b' ',
            _ => b.is_ascii_digit(),
        };
        if !ok {
            return StatusLine::Invalid(format!(
                "not an HTTP/1.0 or HTTP/1.1 status line: '{}'",
                String::from_utf8_lossy(line).escape_debug()
            ));
        }
    }
    if line.len() < 12 || (line.len() == 12 && !complete) {
        return if complete {
            StatusLine::Invalid(format!("truncated status line: '{}'", String::from_utf8_lossy(line).escape_debug()))
        } else {
            StatusLine::Incomplete
        };
    }
    if line.len() > 12 && line[12] != b' ' {
        return StatusLine::Invalid(format!(
            "status code is not exactly 3 digits: '{}'",
            String::from_utf8_lossy(line).escape_debug()
        ));
    }
    if !complete {
        return StatusLine::Incomplete;
    }
    let code = line[9..12].iter().fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    StatusLine::Complete(code)
}

/// Delay before the next attempt after `failures` consecutive failures
/// (`failures >= 1`): 50 ms doubling per failure, capped at 5 s. Never
/// overflows, whatever the count.
pub fn backoff_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_INITIAL.saturating_mul(1u32 << doublings).min(BACKOFF_MAX)
}

/// Where a router with undelivered state stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// In `Queue::waiting`, to be started when a slot frees up.
    Waiting,
    /// A request carrying this state is in flight.
    InFlight(String),
    /// In `Queue::retries` under this key.
    RetryAt((Instant, u64)),
}

#[derive(Debug)]
struct Entry {
    /// The latest state not yet handed out for sending.
    pending: Option<String>,
    phase: Phase,
    /// Consecutive failures, for the backoff; reset by a success.
    failures: u32,
}

/// The latest-wins scheduling state machine, free of I/O and clocks.
///
/// Invariants:
/// - a router has an entry iff it has something undelivered (a pending state
///   or a request in flight); a delivered, idle router is forgotten;
/// - `Waiting` ⇔ the router is in `waiting` exactly once, and has a pending
///   state; `RetryAt(k)` ⇔ `retries[k]` is the router, with a pending state;
/// - `in_flight` counts `InFlight` entries and never exceeds `max_in_flight`,
///   so one router is never sent twice concurrently.
#[derive(Debug)]
pub struct Queue {
    max_in_flight: usize,
    routers: HashMap<String, Entry>,
    /// Routers ready to start, in the order they became ready.
    waiting: VecDeque<String>,
    /// Routers backing off; the sequence number keeps equal instants apart.
    retries: BTreeMap<(Instant, u64), String>,
    in_flight: usize,
    next_seq: u64,
}

impl Queue {
    /// `max_in_flight` of 0 is taken as 1: a queue that can never send would
    /// hold states forever.
    pub fn new(max_in_flight: usize) -> Queue {
        Queue {
            max_in_flight: max_in_flight.max(1),
            routers: HashMap::new(),
            waiting: VecDeque::new(),
            retries: BTreeMap::new(),
            in_flight: 0,
            next_seq: 0,
        }
    }

    /// Records `state` as the router's latest. A waiting or backing-off
    /// router keeps its place and its retry time (a flapping router must not
    /// dodge the backoff); an in-flight one gets it after the request ends.
    pub fn submit(&mut self, router_id: &str, state: &str) {
        if let Some(entry) = self.routers.get_mut(router_id) {
            entry.pending = Some(state.to_owned());
            return;
        }
        self.routers.insert(
            router_id.to_owned(),
            Entry { pending: Some(state.to_owned()), phase: Phase::Waiting, failures: 0 },
        );
        self.waiting.push_back(router_id.to_owned());
    }

    /// Moves routers whose retry time has come to the back of the waiting
    /// line, earliest first.
    pub fn promote_due(&mut self, now: Instant) {
        while let Some(entry) = self.retries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let router_id = entry.remove();
            if let Some(e) = self.routers.get_mut(&router_id) {
                e.phase = Phase::Waiting;
                self.waiting.push_back(router_id);
            }
        }
    }

    /// Makes every backing-off router ready now (shutdown flush: no point
    /// waiting out a 5 s backoff when the process has 2 s left).
    pub fn promote_all(&mut self) {
        while let Some((_, router_id)) = self.retries.pop_first() {
            if let Some(e) = self.routers.get_mut(&router_id) {
                e.phase = Phase::Waiting;
                self.waiting.push_back(router_id);
            }
        }
    }

    /// Hands out the next (router, state) to send, if a slot is free.
    pub fn start_next(&mut self) -> Option<(String, String)> {
        while self.in_flight < self.max_in_flight {
            let router_id = self.waiting.pop_front()?;
            let Some(entry) = self.routers.get_mut(&router_id) else { continue };
            let Some(state) = entry.pending.take() else {
                // Unreachable by the invariants; forget rather than spin.
                self.routers.remove(&router_id);
                continue;
            };
            entry.phase = Phase::InFlight(state.clone());
            self.in_flight += 1;
            return Some((router_id, state));
        }
        None
    }

    /// Ends the router's in-flight request. Returns the backoff when it
    /// failed (the latest state is then retried after it), `None` when it
    /// was delivered or the router was not in flight.
    pub fn finish(&mut self, router_id: &str, delivered: bool, now: Instant) -> Option<Duration> {
        let entry = self.routers.get_mut(router_id)?;
        let Phase::InFlight(sent) = &entry.phase else { return None };
        let sent = sent.clone();
        self.in_flight -= 1;
        if delivered {
            entry.failures = 0;
            if entry.pending.as_deref() == Some(sent.as_str()) {
                entry.pending = None;
            }
            if entry.pending.is_some() {
                entry.phase = Phase::Waiting;
                self.waiting.push_back(router_id.to_owned());
            } else {
                self.routers.remove(router_id);
            }
            return None;
        }
        entry.failures = entry.failures.saturating_add(1);
        let delay = backoff_delay(entry.failures);
        entry.pending.get_or_insert(sent);
        let key = (now + delay, self.next_seq);
        self.next_seq += 1;
        entry.phase = Phase::RetryAt(key);
        self.retries.insert(key, router_id.to_owned());
        Some(delay)
    }

    /// The earliest retry time, if any router is backing off.
    pub fn next_retry(&self) -> Option<Instant> {
        self.retries.first_key_value().map(|(k, _)| k.0)
    }

    /// Routers with something undelivered.
    pub fn len(&self) -> usize {
        self.routers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routers.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The state that will be sent next for the router, if any.
    pub fn pending_state(&self, router_id: &str) -> Option<&str> {
        self.routers.get(router_id)?.pending.as_deref()
    }
}

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

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn request_is_byte_exact() {
        let req = build_request("r1", "primary").expect("valid values");
        assert_eq!(
            req,
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Neutron-Router-Id: r1\r\nX-Neutron-State: primary\r\n\
              Connection: close\r\nContent-Length: 0\r\n\r\n"
                .to_vec()
        );
    }

    #[test]
    fn request_refuses_values_that_could_break_headers() {
        for (id, state) in [
            ("", "primary"),
            ("r1", ""),
            ("r1\r\nX-Evil: 1", "primary"),
            ("r1", "primary\n"),
            ("r 1", "backup"),
            ("rü", "backup"),
            ("r1", "pri\0mary"),
        ] {
            let err = build_request(id, state).expect_err(&format!("{id:?} {state:?} must be refused"));
            assert!(matches!(err, NotifyError::InvalidValue { .. }), "{err:?}");
        }
        assert!(build_request("0b7e4c2a-1f3d-4e5a-9c8b-7d6e5f4a3b2c", "fault").is_ok());
    }

    #[test]
    fn status_line_accepts_both_versions_and_any_reason() {
        for (text, code) in [
            ("HTTP/1.1 200 OK\r\n", 200),
            ("HTTP/1.0 200 OK\r\n", 200),
            ("HTTP/1.1 200\r\n", 200),
            ("HTTP/1.1 200 OK\n", 200),
            ("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", 500),
            ("HTTP/1.1 404 \r\n", 404),
            ("HTTP/1.1 999 whatever it says\r\n", 999),
        ] {
            assert_eq!(parse_status_line(text.as_bytes(), false), StatusLine::Complete(code), "{text:?}");
            assert_eq!(parse_status_line(text.as_bytes(), true), StatusLine::Complete(code), "{text:?} at eof");
        }
    }

    #[test]
    fn status_line_waits_for_the_end_of_line() {
        for text in
            ["", "H", "HTTP/1.", "HTTP/1.1 ", "HTTP/1.1 20", "HTTP/1.1 200", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK\r"]
        {
            assert_eq!(parse_status_line(text.as_bytes(), false), StatusLine::Incomplete, "{text:?}");
        }
    }

    #[test]
    fn status_line_at_eof_forgives_only_a_missing_terminator() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK", true), StatusLine::Complete(200));
        assert_eq!(parse_status_line(b"HTTP/1.1 200", true), StatusLine::Complete(200));
        assert_eq!(parse_status_line(b"", true), StatusLine::Invalid("no status line".into()));
        for text in ["HTTP/1.1 20", "HTTP/1.1", "HTTP/1.1 ", "HTTP/1.1 200x"] {
            let parsed = parse_status_line(text.as_bytes(), true);
            assert!(matches!(parsed, StatusLine::Invalid(_)), "{text:?}: {parsed:?}");
        }
    }

    #[test]
    fn status_line_rejects_garbage_early() {
        for text in [
            "GARBAGE",
            "HTTP/2 200 OK\r\n",
            "HTTP/1.2 200 OK\r\n",
            "http/1.1 200 OK\r\n",
            "HTTP/1.1  200 OK\r\n",
            "HTTP/1.1 2000 OK\r\n",
            "HTTP/1.1 20 OK\r\n",
            "HTTP/1.1 2x0 OK\r\n",
            "HTTP/1.1 200OK\r\n",
            "HTTP/1.1 -20 OK\r\n",
            "\r\n",
            "\n",
            " HTTP/1.1 200 OK\r\n",
        ] {
            let parsed = parse_status_line(text.as_bytes(), false);
            assert!(matches!(parsed, StatusLine::Invalid(_)), "{text:?}: {parsed:?}");
        }
    }

    #[test]
    fn status_line_length_is_bounded() {
        let mut long = b"HTTP/1.1 200 ".to_vec();
        long.resize(MAX_STATUS_LINE + 1, b'x');
        assert!(matches!(parse_status_line(&long, false), StatusLine::Invalid(_)));
        long.truncate(MAX_STATUS_LINE);
        assert_eq!(parse_status_line(&long, false), StatusLine::Incomplete);
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse_status_line(&long, false), StatusLine::Complete(200));
    }

    #[test]
    fn backoff_doubles_from_50ms_to_a_5s_cap() {
        let delays: Vec<Duration> = (1..=9).map(backoff_delay).collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000].map(|ms| ms * MS));
        assert_eq!(backoff_delay(0), BACKOFF_INITIAL);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn queue_keeps_only_the_latest_state_per_router() {
        let mut q = Queue::new(4);
        q.submit("r1", "primary");
        q.submit("r1", "backup");
        q.submit("r1", "fault");
        assert_eq!(q.len(), 1);
        assert_eq!(q.start_next(), Some(("r1".into(), "fault".into())));
        assert_eq!(q.start_next(), None);
    }

    #[test]
    fn queue_serves_routers_in_submission_order_within_the_limit() {
        let t0 = Instant::now();
        let mut q = Queue::new(2);
        for r in ["r1", "r2", "r3"] {
            q.submit(r, "primary");
        }
        q.submit("r1", "backup"); // keeps r1's place
        assert_eq!(q.start_next(), Some(("r1".into(), "backup".into())));
        assert_eq!(q.start_next(), Some(("r2".into(), "primary".into())));
        assert_eq!(q.start_next(), None, "limit of 2 in flight");
        assert_eq!(q.in_flight(), 2);
        assert_eq!(q.finish("r2", true, t0), None);
        assert_eq!(q.start_next(), Some(("r3".into(), "primary".into())));
    }

    #[test]
    fn queue_never_sends_one_router_twice_at_once() {
        let t0 = Instant::now();
        let mut q = Queue::new(8);
        q.submit("r1", "primary");
        assert_eq!(q.start_next(), Some(("r1".into(), "primary".into())));
        q.submit("r1", "backup");
        assert_eq!(q.start_next(), None, "r1 is in flight");
        assert_eq!(q.pending_state("r1"), Some("backup"));
        // Whatever the outcome, the newer state goes next.
        assert_eq!(q.finish("r1", true, t0), None);
        assert_eq!(q.start_next(), Some(("r1".into(), "backup".into())));
        assert_eq!(q.finish("r1", true, t0), None);
        assert!(q.is_empty());
    }

    #[test]
    fn queue_drops_a_pending_state_equal_to_the_one_just_delivered() {
        let t0 = Instant::now();
        let mut q = Queue::new(1);
        q.submit("r1", "primary");
        assert!(q.start_next().is_some());
        q.submit("r1", "backup");
        q.submit("r1", "primary");
        assert_eq!(q.finish("r1", true, t0), None);
        assert_eq!(q.start_next(), None);
        assert!(q.is_empty(), "the agent already has primary");
    }

    #[test]
    fn queue_resends_a_same_state_submitted_during_a_failed_attempt() {
        let t0 = Instant::now();
        let mut q = Queue::new(1);
        q.submit("r1", "primary");
        assert!(q.start_next().is_some());
        q.submit("r1", "primary");
        assert_eq!(q.finish("r1", false, t0), Some(50 * MS));
        q.promote_due(t0 + 50 * MS);
        assert_eq!(q.start_next(), Some(("r1".into(), "primary".into())));
    }

    #[test]
    fn queue_retries_the_latest_state_with_growing_backoff() {
        let t0 = Instant::now();
        let mut q = Queue::new(4);
        q.submit("r1", "primary");
        assert!(q.start_next().is_some());
        assert_eq!(q.finish("r1", false, t0), Some(50 * MS));
        assert_eq!(q.next_retry(), Some(t0 + 50 * MS));
        assert_eq!(q.pending_state("r1"), Some("primary"), "the failed state is kept");

        // Submits while backing off replace the state but not the retry time.
        q.submit("r1", "backup");
        q.submit("r1", "fault");
        assert_eq!(q.start_next(), None);
        q.promote_due(t0 + 49 * MS);
        assert_eq!(q.start_next(), None, "not due yet");
        q.promote_due(t0 + 50 * MS);
        assert_eq!(q.next_retry(), None);
        assert_eq!(q.start_next(), Some(("r1".into(), "fault".into())));

        let t1 = t0 + 60 * MS;
        assert_eq!(q.finish("r1", false, t1), Some(100 * MS));
        q.promote_due(t1 + 100 * MS);
        assert!(q.start_next().is_some());
        let t2 = t1 + 200 * MS;
        assert_eq!(q.finish("r1", false, t2), Some(200 * MS));
        q.promote_due(t2 + 200 * MS);
        assert!(q.start_next().is_some());
        assert_eq!(q.finish("r1", true, t2 + 300 * MS), None);
        assert!(q.is_empty());

        // A success resets the backoff.
        q.submit("r1", "backup");
        assert!(q.start_next().is_some());
        assert_eq!(q.finish("r1", false, t2), Some(50 * MS));
    }

    #[test]
    fn queue_failed_attempt_keeps_a_newer_state_over_the_failed_one() {
        let t0 = Instant::now();
        let mut q = Queue::new(1);
        q.submit("r1", "primary");
        assert!(q.start_next().is_some());
        q.submit("r1", "backup");
        assert!(q.finish("r1", false, t0).is_some());
        q.promote_due(t0 + BACKOFF_MAX);
        assert_eq!(q.start_next(), Some(("r1".into(), "backup".into())));
    }

    #[test]
    fn queue_backoff_of_one_router_does_not_hold_others() {
        let t0 = Instant::now();
        let mut q = Queue::new(1);
        q.submit("r1", "primary");
        q.submit("r2", "primary");
        assert_eq!(q.start_next(), Some(("r1".into(), "primary".into())));
        assert!(q.finish("r1", false, t0).is_some());
        assert_eq!(q.start_next(), Some(("r2".into(), "primary".into())));
        assert_eq!(q.finish("r2", true, t0), None);
        assert_eq!(q.len(), 1, "r1 still owed");
    }

    #[test]
    fn queue_due_retries_start_in_retry_order_after_those_already_waiting() {
        let t0 = Instant::now();
        let mut q = Queue::new(1);
        q.submit("a", "primary");
        assert!(q.start_next().is_some());
        assert!(q.finish("a", false, t0).is_some()); // retry at t0+50ms
        q.submit("b", "primary");
        assert!(q.start_next().is_some());
        assert!(q.finish("b", false, t0 + MS).is_some()); // retry at t0+51ms
        q.submit("c", "primary");
        q.promote_due(t0 + BACKOFF_MAX);
        let order: Vec<String> = std::iter::from_fn(|| {
            let (r, _) = q.start_next()?;
            q.finish(&r, true, t0);
            Some(r)
        })
        .collect();
        assert_eq!(order, ["c", "a", "b"]);
    }

    #[test]
    fn queue_promote_all_skips_the_backoff() {
        let t0 = Instant::now();
        let mut q = Queue::new(2);
        q.submit("r1", "primary");
        assert!(q.start_next().is_some());
        assert!(q.finish("r1", false, t0).is_some());
        q.promote_all();
        assert_eq!(q.next_retry(), None);
        assert_eq!(q.start_next(), Some(("r1".into(), "primary".into())));
    }

    #[test]
    fn queue_ignores_finish_for_a_router_not_in_flight() {
        let t0 = Instant::now();
        let mut q = Queue::new(1);
        assert_eq!(q.finish("nobody", false, t0), None);
        q.submit("r1", "primary");
        assert_eq!(q.finish("r1", false, t0), None, "waiting, not in flight");
        assert_eq!(q.in_flight(), 0);
        assert_eq!(q.start_next(), Some(("r1".into(), "primary".into())));
    }

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

    #[test]
    fn outcome_display_matches_the_grepped_log_line() {
        let ok = Outcome { router_id: "r1".into(), state: "primary".into(), kind: OutcomeKind::Delivered };
        assert_eq!(ok.to_string(), "Notified agent router r1, state primary");
        let failed = Outcome {
            router_id: "r1".into(),
            state: "backup".into(),
            kind: OutcomeKind::Failed { reason: "agent socket /s answered status 500".into(), retry_in: 100 * MS },
        };
        assert_eq!(
            failed.to_string(),
            "Failed to notify agent router r1, state backup: agent socket /s answered status 500; retrying in 100ms"
        );
    }

    #[test]
    fn errors_name_the_socket() {
        let path = PathBuf::from("/var/lib/neutron/keepalived-state-change");
        let errs = [
            NotifyError::Connect { path: path.clone(), source: io::Error::from_raw_os_error(libc::ENOENT) },
            NotifyError::Closed { path: path.clone() },
            NotifyError::Status { path: path.clone(), code: 503 },
            NotifyError::Timeout { path: path.clone(), after: RESPONSE_TIMEOUT },
            NotifyError::BadResponse { path: path.clone(), detail: "x".into() },
        ];
        for e in errs {
            assert!(e.to_string().contains("/var/lib/neutron/keepalived-state-change"), "{e}");
        }
    }
}
