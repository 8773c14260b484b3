//! A stand-in for Neutron's L3 agent: an HTTP receiver on a Unix stream
//! socket, for tests of whatever notifies the agent (the notifier, the
//! `state-change` monitor, the daemon's `notify_agent_socket`).
//!
//! It accepts connections on a background thread, one thread per
//! connection, parses each request (method, path, headers with
//! case-insensitive names), answers from a script and records what it got.
//! Only `POST` requests carrying both `X-Neutron-Router-Id` and
//! `X-Neutron-State` count as notifications; anything else is answered 400
//! and counted in [`Receiver::bad_requests`].
//!
//! ```ignore
//! let dir = common::TempDir::new("notify");
//! let agent = Receiver::start(dir.join("keepalived-state-change"));
//! agent.set_responses(vec![500, 200]); // then 200 forever
//! // ... run the code under test ...
//! let got = agent.wait_for(1, Duration::from_secs(2));
//! assert_eq!(got[0].state, "primary");
//! ```

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest request head accepted (the daemon's own control socket limit).
const MAX_HEAD: usize = 8 * 1024;
/// Longest body read (and discarded).
const MAX_BODY: usize = 64 * 1024;
/// A request must arrive within this long, as on the daemon's control socket.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often blocked threads look at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// How the receiver answers one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `HTTP/1.1 CODE REASON` with an empty body, then close.
    Status(u16),
    /// Answer `CODE` after waiting this long (keeps the request in flight).
    Delayed(Duration, u16),
    /// Write these bytes as the whole answer, then close.
    Raw(Vec<u8>),
    /// Close without answering.
    Close,
    /// Never answer: hold the connection until the client closes it or the
    /// receiver stops (for response-deadline tests).
    Silent,
}

impl Reply {
    /// The status the client is told, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            Reply::Status(code) | Reply::Delayed(_, code) => Some(*code),
            _ => None,
        }
    }
}

/// A notification the receiver accepted: answered with a 200 status
/// ([`Reply::Status`] or [`Reply::Delayed`]; a [`Reply::Raw`] never counts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub router_id: String,
    pub state: String,
    /// When the whole request had arrived.
    pub received_at: Instant,
}

/// Every request received, accepted or not.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub version: String,
    /// In order of arrival; names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The request head exactly as received, through the empty line.
    pub raw_head: Vec<u8>,
    pub router_id: Option<String>,
    pub state: Option<String>,
    pub received_at: Instant,
    pub reply: Reply,
    /// Just before the answer went out (or the connection was closed for
    /// [`Reply::Close`]); `None` while pending and for [`Reply::Silent`].
    pub answered_at: Option<Instant>,
}

impl Request {
    /// The value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Book {
    notifications: Vec<Notification>,
    requests: Vec<Request>,
    bad_requests: usize,
    script: VecDeque<Reply>,
    per_router: HashMap<String, VecDeque<Reply>>,
    default: Option<Reply>,
}

impl Book {
    /// The router's own script first, then the shared one, then the default.
    fn next_reply(&mut self, router_id: &str) -> Reply {
        if let Some(reply) = self.per_router.get_mut(router_id).and_then(VecDeque::pop_front) {
            return reply;
        }
        if let Some(reply) = self.script.pop_front() {
            return reply;
        }
        self.default.clone().unwrap_or(Reply::Status(200))
    }
}

struct Shared {
    book: Mutex<Book>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    /// A panicking connection thread must not take every later assertion
    /// down with a poisoned lock.
    fn lock(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running receiver; stops and removes its socket when dropped.
pub struct Receiver {
    path: PathBuf,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Binds `path` (removing a stale socket left there) and starts
    /// accepting. Panics when the socket cannot be bound.
    pub fn start(path: impl AsRef<Path>) -> Receiver {
        let path = path.as_ref().to_path_buf();
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(&path);
        }
        let listener =
            UnixListener::bind(&path).unwrap_or_else(|e| panic!("cannot bind receiver at {}: {e}", path.display()));
        listener.set_nonblocking(true).unwrap_or_else(|e| panic!("cannot make {} non-blocking: {e}", path.display()));
        let shared =
            Arc::new(Shared { book: Mutex::new(Book::default()), changed: Condvar::new(), stop: false.into() });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("http-receiver".into())
                .spawn(move || accept_loop(listener, shared))
                .unwrap_or_else(|e| panic!("cannot start receiver thread: {e}"))
        };
        Receiver { path, shared, acceptor: Some(acceptor) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Status codes for the next requests, in order, replacing the previous
    /// script; after them the default (200 unless [`Receiver::set_default`]).
    pub fn set_responses(&self, codes: Vec<u16>) {
        self.set_script(codes.into_iter().map(Reply::Status).collect());
    }

    /// Like [`Receiver::set_responses`], with any kind of reply.
    pub fn set_script(&self, replies: Vec<Reply>) {
        self.shared.lock().script = replies.into();
    }

    /// Replies for one router's requests, used before the shared script.
    pub fn set_script_for(&self, router_id: &str, replies: Vec<Reply>) {
        self.shared.lock().per_router.insert(router_id.to_string(), replies.into());
    }

    /// The reply once the scripts are used up (initially `Status(200)`).
    pub fn set_default(&self, reply: Reply) {
        self.shared.lock().default = Some(reply);
    }

    /// Accepted notifications, in order of arrival.
    pub fn notifications(&self) -> Vec<Notification> {
        self.shared.lock().notifications.clone()
    }

    /// Every request, in order of arrival, with the reply it got.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// Requests that were not a well-formed Neutron notification.
    pub fn bad_requests(&self) -> usize {
        self.shared.lock().bad_requests
    }

    /// Waits until at least `count` notifications were accepted or `timeout`
    /// passed, and returns them all (possibly fewer: the caller asserts).
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Notification> {
        self.wait_until(timeout, |b| b.notifications.len() >= count).notifications.clone()
    }

    /// Like [`Receiver::wait_for`], counting every request received.
    pub fn wait_for_requests(&self, count: usize, timeout: Duration) -> Vec<Request> {
        self.wait_until(timeout, |b| b.requests.len() >= count).requests.clone()
    }

    fn wait_until(&self, timeout: Duration, done: impl Fn(&Book) -> bool) -> MutexGuard<'_, Book> {
        let deadline = Instant::now() + timeout;
        let mut book = self.shared.lock();
        loop {
            let now = Instant::now();
            if done(&book) || now >= deadline {
                return book;
            }
            book = match self.shared.changed.wait_timeout(book, deadline - now) {
                Ok((b, _)) => b,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Stops accepting, waits for the accept thread and removes the socket.
    /// Connection threads end on their own within [`STOP_CHECK`].
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.acceptor.take() {
            let _ = handle.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits for the listener with poll(2) so the stop flag is seen promptly
/// without adding latency to accepts.
fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, count 1.
        let ready = unsafe { libc::poll(&mut pfd, 1, STOP_CHECK.as_millis() as libc::c_int) };
        if ready <= 0 {
            continue;
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    let shared = Arc::clone(&shared);
                    let _ = std::thread::Builder::new()
                        .name("http-receiver-conn".into())
                        .spawn(move || serve(stream, &shared));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }
}

fn stopping(shared: &Shared) -> bool {
    shared.stop.load(Ordering::SeqCst)
}

/// Reads into `buf` until `complete` says so, the peer closes, the deadline
/// passes or the receiver stops. Returns whether `complete` was reached.
fn read_until(
    stream: &mut UnixStream,
    buf: &mut Vec<u8>,
    limit: usize,
    deadline: Instant,
    shared: &Shared,
    complete: impl Fn(&[u8]) -> bool,
) -> bool {
    let mut chunk = [0u8; 4096];
    while !complete(buf) {
        if buf.len() > limit || Instant::now() >= deadline || stopping(shared) {
            return false;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => return false,
        }
    }
    true
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

struct Parsed {
    method: String,
    path: String,
    version: String,
    headers: Vec<(String, String)>,
}

fn parse_head(head: &[u8]) -> Option<Parsed> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.strip_suffix("\r\n\r\n")?.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, path, version) = (request_line.next()?, request_line.next()?, request_line.next()?);
    if request_line.next().is_some() || method.is_empty() || !path.starts_with('/') || !version.starts_with("HTTP/1.") {
        return None;
    }
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.is_empty() || name.contains(' ') {
            return None;
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    Some(Parsed { method: method.into(), path: path.into(), version: version.into(), headers })
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn answer(stream: &mut UnixStream, code: u16) {
    let text = format!("HTTP/1.1 {code} {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", reason(code));
    let _ = stream.write_all(text.as_bytes());
    let _ = stream.flush();
}

fn serve(mut stream: UnixStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(STOP_CHECK));
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut buf = Vec::new();
    if !read_until(&mut stream, &mut buf, MAX_HEAD, deadline, shared, |b| head_end(b).is_some()) {
        return;
    }
    let Some(end) = head_end(&buf) else { return };
    let received_at = Instant::now();
    let Some(parsed) = parse_head(&buf[..end]) else {
        shared.lock().bad_requests += 1;
        shared.changed.notify_all();
        answer(&mut stream, 400);
        return;
    };
    let find = |name: &str| parsed.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let body_len = find("content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0).min(MAX_BODY);
    let (router_id, state) = (find("x-neutron-router-id"), find("x-neutron-state"));
    let well_formed = parsed.method == "POST" && router_id.is_some() && state.is_some();
    let raw_head = buf[..end].to_vec();
    let mut body = buf[end..].to_vec();
    read_until(&mut stream, &mut body, MAX_BODY, deadline, shared, |b| b.len() >= body_len);

    let index;
    let reply;
    {
        let mut book = shared.lock();
        reply = if well_formed { book.next_reply(router_id.as_deref().unwrap_or("")) } else { Reply::Status(400) };
        if !well_formed {
            book.bad_requests += 1;
        }
        book.requests.push(Request {
            method: parsed.method,
            path: parsed.path,
            version: parsed.version,
            headers: parsed.headers.clone(),
            raw_head,
            router_id: router_id.clone(),
            state: state.clone(),
            received_at,
            reply: reply.clone(),
            answered_at: None,
        });
        index = book.requests.len() - 1;
    }
    shared.changed.notify_all();

    if let Reply::Delayed(delay, _) = &reply {
        std::thread::sleep(*delay);
    }
    if reply != Reply::Silent {
        // Booked before the answer goes out: a client that has read the
        // answer finds it recorded, and anything it does next is provably
        // later than `answered_at`.
        let mut book = shared.lock();
        book.requests[index].answered_at = Some(Instant::now());
        if reply.status() == Some(200) && well_formed {
            book.notifications.push(Notification {
                router_id: router_id.unwrap_or_default(),
                state: state.unwrap_or_default(),
                received_at,
            });
        }
        drop(book);
        shared.changed.notify_all();
    }
    match &reply {
        Reply::Status(code) | Reply::Delayed(_, code) => answer(&mut stream, *code),
        Reply::Raw(bytes) => {
            let _ = stream.write_all(bytes);
        }
        Reply::Close => {}
        Reply::Silent => {
            // Hold until the client gives up (EOF) or the receiver stops.
            let mut sink = Vec::new();
            let forever = Instant::now() + Duration::from_secs(3600);
            read_until(&mut stream, &mut sink, usize::MAX, forever, shared, |_| false);
        }
    }
}
