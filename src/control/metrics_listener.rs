//! `metrics_listen = ADDR:PORT`: `GET /metrics` over TCP, for a Prometheus
//! server that cannot reach the control socket (a Unix socket on the node).
//!
//! Invariants:
//! - **Read-only by construction.** A request reaches the daemon only when
//!   it is `GET /metrics`; anything else is answered here (404 for another
//!   path, 405 for another method, the parser's 400/413/414/431 for
//!   malformed ones) and never seen by the code that changes state: this
//!   listener has no way to `POST /`, to subscribe to events or to read
//!   router details beyond what `/metrics` says.
//! - The control socket's limits ([`crate::control::server`]): a request
//!   must arrive whole within [`REQUEST_DEADLINE`] and within the parser's
//!   size limits (head 8 KiB), answers not taken within 5 s are abandoned,
//!   and at most [`MAX_CONNECTIONS`] connections are open at once (more are
//!   accepted and closed at once, so the backlog cannot fill). Its table is
//!   its own: scrapers cannot take the control socket's slots, nor the
//!   other way round.
//! - On the daemon's event loop, like every other source: no thread, no
//!   blocking call.
//!
//! There is no authentication and no TLS, as with node_exporter's default:
//! bind it to a management address (or loopback behind a proxy). What it
//! tells is router IDs, their states and counters.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};

use super::conn::{HttpConn, Phase, Step, WRITE_DEADLINE, accept_next};
use super::server::{MAX_CONNECTIONS, REQUEST_DEADLINE};
use crate::http::request::{Method, Request};
use crate::http::response as http;
use crate::sys::event_loop::{Owner, Sources};

/// The only path served.
pub const METRICS_PATH: &str = "/metrics";

/// What to answer a complete request with, decided before the daemon sees
/// it: only `GET /metrics` goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Metrics,
    Refuse(u16, &'static str),
}

pub fn verdict(request: &Request) -> Verdict {
    match (request.path.as_str(), &request.method) {
        (METRICS_PATH, Method::Get) => Verdict::Metrics,
        (METRICS_PATH, _) => Verdict::Refuse(405, "only GET /metrics is served here"),
        _ => Verdict::Refuse(404, "only GET /metrics is served here"),
    }
}

pub struct MetricsListener {
    local: SocketAddr,
    listener: Option<TcpListener>,
    listener_token: Token,
    conns: HashMap<Token, HttpConn<TcpStream>>,
    /// Connections refused because the table was full.
    pub refused: u64,
}

impl MetricsListener {
    /// Listens on `addr` (port 0: any free one, see [`Self::local_addr`]),
    /// registered with the loop's `sources` under [`Owner::Metrics`].
    pub fn bind<K>(addr: SocketAddr, sources: &mut Sources<K>) -> io::Result<MetricsListener> {
        let mut listener = TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let listener_token = sources.register(&mut listener, Owner::Metrics, Interest::READABLE)?;
        Ok(MetricsListener { local, listener: Some(listener), listener_token, conns: HashMap::new(), refused: 0 })
    }

    /// Where it listens (the port chosen, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Handles readiness of the listener or a connection; returns the
    /// connections whose `GET /metrics` waits for [`Self::answer`].
    pub fn ready<K>(&mut self, sources: &mut Sources<K>, token: Token, now: Instant) -> Vec<Token> {
        if token == self.listener_token {
            self.accept(sources, now);
            return Vec::new();
        }
        let Some(conn) = self.conns.get_mut(&token) else { return Vec::new() };
        match conn.advance() {
            Step::Keep => {}
            Step::Close => self.close(sources, token),
            Step::Request(request) => match verdict(&request) {
                Verdict::Metrics => return vec![token],
                Verdict::Refuse(status, reason) => {
                    let answer = http::response_allowing(status, "GET", "text/plain", format!("{reason}\n").as_bytes());
                    self.respond(sources, token, answer, now);
                }
            },
            Step::Reject(status, reason) => {
                let body = format!("{reason}\n");
                self.respond(
                    sources,
                    token,
                    http::response_allowing(status, "GET", "text/plain", body.as_bytes()),
                    now,
                );
            }
        }
        Vec::new()
    }

    fn accept<K>(&mut self, sources: &mut Sources<K>, now: Instant) {
        loop {
            let Some(listener) = &self.listener else { return };
            let name = format_args!("metrics listener {}", self.local);
            let Some((mut stream, _)) = accept_next(|| listener.accept(), &name) else { return };
            if self.conns.len() >= MAX_CONNECTIONS {
                self.refused += 1;
                continue;
            }
            let Ok(token) = sources.register(&mut stream, Owner::Metrics, Interest::READABLE) else { continue };
            self.conns.insert(token, HttpConn::reading(stream, now + REQUEST_DEADLINE));
        }
    }

    /// The metrics for the `GET /metrics` that came on `token`.
    pub fn answer<K>(&mut self, sources: &mut Sources<K>, token: Token, body: &str, now: Instant) {
        self.respond(sources, token, http::response(200, "text/plain; version=0.0.4", body.as_bytes()), now);
    }

    fn respond<K>(&mut self, sources: &mut Sources<K>, token: Token, answer: Vec<u8>, now: Instant) {
        let Some(conn) = self.conns.get_mut(&token) else { return };
        conn.phase = Phase::Writing { out: answer, written: 0 };
        conn.deadline = Some(now + WRITE_DEADLINE);
        let _ = sources.reregister(&mut conn.stream, token, Interest::READABLE | Interest::WRITABLE);
        if let Step::Close = conn.flush() {
            self.close(sources, token);
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().filter_map(|c| c.deadline).min()
    }

    /// Connections past their deadline: 408 for a request still arriving,
    /// closed for an answer nobody takes.
    pub fn tick<K>(&mut self, sources: &mut Sources<K>, now: Instant) {
        let due: Vec<(Token, bool)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(t, c)| (*t, matches!(c.phase, Phase::Reading { .. })))
            .collect();
        for (token, reading) in due {
            if reading {
                let body = b"request not received in time\n";
                self.respond(sources, token, http::response(408, "text/plain", body), now);
            } else {
                self.close(sources, token);
            }
        }
    }

    fn close<K>(&mut self, sources: &mut Sources<K>, token: Token) {
        if let Some(mut conn) = self.conns.remove(&token) {
            sources.deregister(&mut conn.stream, token);
        }
    }

    /// Stops accepting (shutdown); open connections finish.
    pub fn stop_listening<K>(&mut self, sources: &mut Sources<K>) {
        if let Some(mut listener) = self.listener.take() {
            sources.deregister(&mut listener, self.listener_token);
        }
    }

    /// Whether any answer is still being written.
    pub fn is_flushed(&self) -> bool {
        self.conns.values().all(|c| !matches!(c.phase, Phase::Writing { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{Parsed, parse};

    fn request(raw: &str) -> Request {
        match parse(raw.as_bytes()) {
            Parsed::Complete(r) => r,
            _ => panic!("not a complete request: {raw:?}"),
        }
    }

    #[test]
    fn only_get_metrics_reaches_the_daemon() {
        let get = |path: &str| request(&format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert_eq!(verdict(&get("/metrics")), Verdict::Metrics);
        for path in ["/", "/v1/routers", "/v1/routers/r1", "/v1/events", "/v1/daemon", "/metrics/", "/metricsx"] {
            assert!(matches!(verdict(&get(path)), Verdict::Refuse(404, _)), "{path}");
        }
        let post = request(
            "POST / HTTP/1.1\r\nHost: h\r\nX-Neutron-Router-Id: r1\r\nX-Neutron-State: primary\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(matches!(verdict(&post), Verdict::Refuse(404, _)), "Neutron's POST is not served here");
        let post = request("POST /metrics HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(verdict(&post), Verdict::Refuse(405, _)));
    }
}
