//! The agent notifier driven for real: a `mio::Poll` loop like the daemon's,
//! a Unix socket, and an HTTP receiver standing in for Neutron's L3 agent.
//!
//! Time is real except where a test must get past the 5 s response deadline:
//! the loop then runs on a clock shifted forward, which the notifier cannot
//! tell from the real one because it only ever sees the `now` it is given.

mod common;

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use common::TempDir;
use common::http_receiver::{Receiver, Reply};
use harouterd::core::ident::RouterId;
use harouterd::core::state::State;
use harouterd::notify::{BACKOFF_INITIAL, Delivery, DeliveryKind, Notifier, RESPONSE_TIMEOUT};
use harouterd::sys::event_loop::{Owner, Sources};
use mio::{Events, Poll};

const LIMIT: Duration = Duration::from_secs(3);

/// The daemon's loop in miniature: poll with the notifier's deadline as the
/// timeout, route its tokens to `ready`, then `tick`.
struct Loop {
    poll: Poll,
    events: Events,
    /// The loop's tokens, as the daemon keeps them.
    sources: Sources<()>,
    notifier: Notifier,
    outcomes: Vec<Delivery>,
    /// Added to the real clock (see the module comment).
    shift: Duration,
    wakeups: usize,
}

impl Loop {
    fn new(socket: &std::path::Path, max_in_flight: usize) -> Loop {
        let poll = Poll::new().expect("create poll");
        let sources = Sources::new(poll.registry().try_clone().expect("clone the registry"));
        Loop {
            poll,
            events: Events::with_capacity(64),
            sources,
            notifier: Notifier::new(socket.to_path_buf(), max_in_flight),
            outcomes: Vec::new(),
            shift: Duration::ZERO,
            wakeups: 0,
        }
    }

    fn now(&self) -> Instant {
        Instant::now() + self.shift
    }

    fn submit(&mut self, router_id: &str, state: &str) {
        let now = self.now();
        let router_id = RouterId::parse(router_id).expect("a router id");
        let state = State::parse(state).expect("a state");
        let ended = self.notifier.submit(&mut self.sources, &router_id, state, now);
        self.outcomes.extend(ended);
    }

    /// One iteration, waiting at most `max_wait`.
    fn turn(&mut self, max_wait: Duration) {
        let now = self.now();
        let timeout =
            self.notifier.next_deadline().map_or(max_wait, |d| d.saturating_duration_since(now).min(max_wait));
        self.poll.poll(&mut self.events, Some(timeout)).expect("poll");
        self.wakeups += 1;
        let now = self.now();
        for event in self.events.iter() {
            let token = event.token();
            assert_eq!(self.sources.owner(token), Some(&Owner::Notifier), "event for a foreign token {token:?}");
            self.outcomes.extend(self.notifier.ready(&mut self.sources, token, now));
        }
        self.outcomes.extend(self.notifier.tick(&mut self.sources, now));
    }

    /// Turns until `done` holds; panics after `limit` of real time.
    fn run_until(&mut self, what: &str, limit: Duration, done: impl Fn(&Loop) -> bool) {
        let give_up = Instant::now() + limit;
        while !done(self) {
            let left = give_up.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "gave up waiting for {what}; outcomes so far: {:#?}", self.outcomes);
            self.turn(left.min(Duration::from_millis(200)));
        }
    }

    fn run_until_idle(&mut self) {
        self.run_until("the notifier to go idle", LIMIT, |l| l.notifier.is_idle());
    }

    fn failures(&self) -> Vec<(String, String, String, Duration)> {
        self.outcomes
            .iter()
            .filter_map(|o| match &o.kind {
                DeliveryKind::Failed { reason, retry_in } => {
                    Some((o.router_id.to_string(), o.state.to_string(), reason.clone(), *retry_in))
                }
                DeliveryKind::Delivered => None,
            })
            .collect()
    }

    fn delivered(&self) -> Vec<(String, String)> {
        self.outcomes
            .iter()
            .filter(|o| o.is_delivered())
            .map(|o| (o.router_id.to_string(), o.state.to_string()))
            .collect()
    }

    /// Idle for real: no deadline, no pending work, and a poll that is
    /// given time to wake up finds nothing.
    fn assert_quiet(&mut self) {
        assert!(self.notifier.is_idle());
        assert_eq!(self.notifier.pending(), 0);
        assert_eq!(self.notifier.next_deadline(), None, "an idle notifier must not ask for wake-ups");
        assert!(self.sources.is_empty(), "an idle notifier holds no token");
        self.poll.poll(&mut self.events, Some(Duration::from_millis(100))).expect("poll");
        assert!(self.events.is_empty(), "idle notifier produced events");
    }
}

fn pairs<'a>(items: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<(String, String)> {
    items.into_iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn received(agent: &Receiver) -> Vec<(String, String)> {
    agent.notifications().into_iter().map(|n| (n.router_id, n.state)).collect()
}

#[test]
fn delivers_the_exact_request_and_goes_idle() {
    let dir = TempDir::new("notify");
    let agent = Receiver::start(dir.join("keepalived-state-change"));
    let mut lp = Loop::new(agent.path(), 4);

    lp.submit("r1", "primary");
    lp.run_until_idle();

    assert_eq!(lp.delivered(), pairs([("r1", "primary")]));
    assert_eq!(lp.outcomes[0].to_string(), "Notified agent router r1, state primary");
    assert_eq!(received(&agent), pairs([("r1", "primary")]));
    let requests = agent.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        String::from_utf8_lossy(&requests[0].raw_head),
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Neutron-Router-Id: r1\r\nX-Neutron-State: primary\r\n\
         Connection: close\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!((requests[0].method.as_str(), requests[0].path.as_str()), ("POST", "/"));
    assert_eq!(requests[0].header("connection"), Some("close"));
    assert_eq!(agent.bad_requests(), 0);
    lp.assert_quiet();
}

#[test]
fn missing_socket_that_appears_later_gets_the_latest_state() {
    let dir = TempDir::new("notify");
    let path = dir.join("keepalived-state-change");
    let mut lp = Loop::new(&path, 4);

    lp.submit("r1", "backup");
    lp.run_until("a first failure", LIMIT, |l| !l.failures().is_empty());
    let (router, state, reason, retry_in) = lp.failures()[0].clone();
    assert_eq!((router.as_str(), state.as_str()), ("r1", "backup"));
    assert!(reason.contains(&path.display().to_string()), "reason must name the socket: {reason}");
    assert!(reason.contains("No such file"), "ENOENT expected: {reason}");
    assert_eq!(retry_in, BACKOFF_INITIAL);
    assert!(lp.notifier.next_deadline().is_some(), "a retry is scheduled");

    lp.submit("r1", "primary");
    lp.run_until("a second failure", LIMIT, |l| l.failures().len() >= 2);
    let (_, state, _, retry_in) = lp.failures()[1].clone();
    assert_eq!(state, "primary", "the retry carries the latest state");
    assert_eq!(retry_in, 2 * BACKOFF_INITIAL, "backoff doubles");
    assert_eq!(lp.notifier.pending(), 1);

    let agent = Receiver::start(&path);
    lp.run_until_idle();
    assert_eq!(received(&agent), pairs([("r1", "primary")]));
    assert_eq!(agent.requests().len(), 1, "backup was superseded before the socket appeared");
    assert_eq!(lp.delivered(), pairs([("r1", "primary")]));
    lp.assert_quiet();
}

#[test]
fn refused_connection_is_retried() {
    let dir = TempDir::new("notify");
    let path = dir.join("agent.sock");
    // A socket file nobody listens on: ECONNREFUSED.
    drop(UnixListener::bind(&path).expect("bind"));
    let mut lp = Loop::new(&path, 4);

    lp.submit("r1", "fault");
    lp.run_until("a failure", LIMIT, |l| !l.failures().is_empty());
    assert!(lp.failures()[0].2.contains("refused"), "{:?}", lp.failures());

    std::fs::remove_file(&path).expect("remove dead socket");
    let agent = Receiver::start(&path);
    lp.run_until_idle();
    assert_eq!(received(&agent), pairs([("r1", "fault")]));
}

#[test]
fn non_200_answers_are_retried_with_backoff_until_200() {
    let dir = TempDir::new("notify");
    let agent = Receiver::start(dir.join("agent.sock"));
    agent.set_responses(vec![500, 500, 503]);
    let mut lp = Loop::new(agent.path(), 4);

    lp.submit("r1", "primary");
    lp.run_until_idle();

    let failures = lp.failures();
    let retry_ins: Vec<Duration> = failures.iter().map(|f| f.3).collect();
    assert_eq!(retry_ins, [1, 2, 4].map(|k| k * BACKOFF_INITIAL));
    assert!(failures[0].2.contains("answered status 500"), "{failures:?}");
    assert!(failures[2].2.contains("answered status 503"), "{failures:?}");
    assert_eq!(lp.delivered(), pairs([("r1", "primary")]));

    let requests = agent.requests();
    let statuses: Vec<Option<u16>> = requests.iter().map(|r| r.reply.status()).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(503), Some(200)]);
    for (i, pair) in requests.windows(2).enumerate() {
        let gap = pair[1].received_at - pair[0].received_at;
        assert!(
            gap >= retry_ins[i],
            "attempt {} came {gap:?} after the previous one, backoff was {:?}",
            i + 2,
            retry_ins[i]
        );
    }
    assert_eq!(received(&agent), pairs([("r1", "primary")]));
    lp.assert_quiet();
}

#[test]
fn states_submitted_while_failing_collapse_to_the_latest() {
    let dir = TempDir::new("notify");
    let agent = Receiver::start(dir.join("agent.sock"));
    agent.set_default(Reply::Status(500));
    let mut lp = Loop::new(agent.path(), 4);

    lp.submit("r1", "primary");
    lp.run_until("a first failure", LIMIT, |l| !l.failures().is_empty());
    // Backing off now: nothing is in flight while these arrive.
    for state in ["backup", "fault", "primary", "backup"] {
        lp.submit("r1", state);
    }
    agent.set_default(Reply::Status(200));
    lp.run_until_idle();

    assert_eq!(received(&agent), pairs([("r1", "backup")]));
    let sent: Vec<Option<String>> = agent.requests().into_iter().map(|r| r.state).collect();
    assert_eq!(sent, [Some("primary".to_string()), Some("backup".to_string())]);
    lp.assert_quiet();
}

#[test]
fn a_state_submitted_in_flight_is_sent_after_the_first_request_ends() {
    let dir = TempDir::new("notify");
    let agent = Receiver::start(dir.join("agent.sock"));
    agent.set_script_for("r1", vec![Reply::Delayed(Duration::from_millis(150), 200)]);
    let mut lp = Loop::new(agent.path(), 4);

    lp.submit("r1", "primary");
    // submit() sends at once, so the request arrives without turning the
    // loop, and it stays in flight until the loop sees the delayed answer.
    assert_eq!(agent.wait_for_requests(1, LIMIT).len(), 1);
    assert!(lp.outcomes.is_empty());
    lp.submit("r1", "backup");
    lp.submit("r1", "fault");
    lp.run_until_idle();

    let requests = agent.requests();
    let sent: Vec<Option<String>> = requests.iter().map(|r| r.state.clone()).collect();
    assert_eq!(sent, [Some("primary".to_string()), Some("fault".to_string())]);
    let first_answered = requests[0].answered_at.expect("first request answered");
    assert!(requests[1].received_at >= first_answered, "the second request overlapped the first");
    assert_eq!(received(&agent), pairs([("r1", "primary"), ("r1", "fault")]));
    lp.assert_quiet();
}

#[test]
fn the_same_state_submitted_in_flight_is_not_sent_twice() {
    let dir = TempDir::new("notify");
    let agent = Receiver::start(dir.join("agent.sock"));
    agent.set_script_for("r1", vec![Reply::Delayed(Duration::from_millis(100), 200)]);
    let mut lp = Loop::new(agent.path(), 4);

    lp.submit("r1", "primary");
    // submit() sends at once, so the request arrives without turning the
    // loop, and it stays in flight until the loop sees the delayed answer.
    assert_eq!(agent.wait_for_requests(1, LIMIT).len(), 1);
    assert!(lp.outcomes.is_empty());
    lp.submit("r1", "backup");
    lp.submit("r1", "primary");
    lp.run_until_idle();

    assert_eq!(agent.requests().len(), 1, "{:?}", lp.outcomes);
    assert_eq!(lp.delivered(), pairs([("r1", "primary")]));
    lp.assert_quiet();
}

#[test]
fn a_hung_router_does_not_block_another_and_times_out() {
    let dir = TempDir::new("notify");
    let agent = Receiver::start(dir.join("agent.sock"));
    agent.set_script_for("r1", vec![Reply::Silent]);
    let mut lp = Loop::new(agent.path(), 4);

    lp.submit("r1", "primary");
    lp.submit("r2", "backup");
    lp.run_until("r2 to be delivered", LIMIT, |l| !l.delivered().is_empty());
    assert_eq!(lp.delivered(), pairs([("r2", "backup")]));
    assert_eq!(lp.notifier.pending(), 1, "r1 still in flight");
    let deadline = lp.notifier.next_deadline().expect("r1's response deadline");
    assert!(deadline > lp.now() + RESPONSE_TIMEOUT - Duration::from_secs(1), "deadline {deadline:?}");

    // Jump past the 5 s response deadline instead of waiting it out.
    lp.shift = RESPONSE_TIMEOUT + Duration::from_millis(10);
    lp.run_until("r1 to be delivered on retry", LIMIT, |l| l.notifier.is_idle());

    let failures = lp.failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, "r1");
    assert!(failures[0].2.contains("no answer") && failures[0].2.contains("5s"), "{failures:?}");
    assert_eq!(lp.delivered(), pairs([("r2", "backup"), ("r1", "primary")]));
    assert_eq!(received(&agent), pairs([("r2", "backup"), ("r1", "primary")]));
    lp.assert_quiet();
}

#[test]
fn garbage_and_early_close_are_failures() {
    let dir = TempDir::new("notify");
    let agent = Receiver::start(dir.join("agent.sock"));
    agent.set_script(vec![
        Reply::Raw(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()),
        Reply::Close,
        Reply::Raw(b"HTTP/1.1 20".to_vec()),
        Reply::Raw(b"HTTP/1.0 200 OK\r\n\r\n".to_vec()),
    ]);
    let mut lp = Loop::new(agent.path(), 4);

    lp.submit("r1", "backup");
    lp.run_until_idle();

    let reasons: Vec<String> = lp.failures().into_iter().map(|f| f.2).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].contains("garbage"), "{reasons:?}");
    assert!(reasons[1].contains("closed the connection"), "{reasons:?}");
    assert!(reasons[2].contains("truncated"), "{reasons:?}");
    assert_eq!(lp.delivered(), pairs([("r1", "backup")]), "HTTP/1.0 200 counts");
    lp.assert_quiet();
}

#[test]
fn one_in_flight_serves_routers_in_submission_order() {
    let dir = TempDir::new("notify");
    let agent = Receiver::start(dir.join("agent.sock"));
    let mut lp = Loop::new(agent.path(), 1);

    for r in ["r4", "r2", "r3", "r1"] {
        lp.submit(r, "primary");
    }
    lp.submit("r3", "backup");
    lp.run_until_idle();

    assert_eq!(received(&agent), pairs([("r4", "primary"), ("r2", "primary"), ("r3", "backup"), ("r1", "primary")]));
    lp.assert_quiet();
}

#[test]
fn many_routers_flipping_at_once_each_end_on_their_latest_state() {
    let dir = TempDir::new("notify");
    let agent = Receiver::start(dir.join("agent.sock"));
    let mut lp = Loop::new(agent.path(), 16);
    let routers: Vec<String> = (0..200).map(|i| format!("router-{i:03}")).collect();

    for r in &routers {
        lp.submit(r, "primary");
    }
    for r in routers.iter().step_by(2) {
        lp.submit(r, "backup");
    }
    lp.run_until_idle();

    let mut last = std::collections::HashMap::new();
    for n in agent.notifications() {
        last.insert(n.router_id, n.state);
    }
    for (i, r) in routers.iter().enumerate() {
        let want = if i % 2 == 0 { "backup" } else { "primary" };
        assert_eq!(last.get(r).map(String::as_str), Some(want), "{r}");
    }
    assert!(lp.failures().is_empty(), "{:?}", lp.failures());
    assert!(agent.requests().len() <= 200 + 16, "only routers in flight at the second submit are sent twice");
    lp.assert_quiet();
}

#[test]
fn receiver_reads_headers_case_insensitively_and_refuses_non_notifications() {
    use std::io::{Read, Write};
    let dir = TempDir::new("notify");
    let agent = Receiver::start(dir.join("agent.sock"));
    let exchange = |request: &str| {
        let mut s = std::os::unix::net::UnixStream::connect(agent.path()).expect("connect");
        s.write_all(request.as_bytes()).expect("write");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read");
        answer
    };
    let ok = exchange(
        "POST / HTTP/1.1\r\nx-neutron-router-id: r9\r\nX-NEUTRON-STATE: backup\r\ncontent-length: 2\r\n\r\n{}",
    );
    assert!(ok.starts_with("HTTP/1.1 200 "), "{ok}");
    let bad = exchange("POST / HTTP/1.1\r\nX-Neutron-Router-Id: r9\r\n\r\n");
    assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
    let garbage = exchange("hello\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");

    assert_eq!(agent.wait_for(1, LIMIT).len(), 1);
    assert_eq!(received(&agent), pairs([("r9", "backup")]));
    assert_eq!(agent.bad_requests(), 2);
    assert_eq!(agent.wait_for_requests(2, LIMIT)[0].header("X-Neutron-State"), Some("backup"));
}

#[test]
fn receiver_stop_removes_its_socket() {
    let dir = TempDir::new("notify");
    let path = dir.join("agent.sock");
    let mut agent = Receiver::start(&path);
    assert!(path.exists());
    agent.stop();
    assert!(!path.exists());
    agent.stop(); // idempotent
    let dropped = Receiver::start(&path);
    drop(dropped);
    assert!(!path.exists());
}

#[test]
fn tokens_of_ended_requests_are_owned_by_nobody() {
    let dir = TempDir::new("notify-tokens");
    let agent = Receiver::start(dir.join("keepalived-state-change"));
    let mut lp = Loop::new(agent.path(), 4);
    lp.submit("r1", "primary");
    let in_flight: Vec<_> = (0..64).map(mio::Token).filter(|t| lp.sources.owner(*t).is_some()).collect();
    assert_eq!(in_flight.len(), 1, "one connection, one token");
    assert_eq!(lp.sources.owner(in_flight[0]), Some(&Owner::Notifier));
    lp.run_until_idle();
    assert_eq!(lp.sources.owner(in_flight[0]), None, "given back once the request ended");
    lp.assert_quiet();
}
