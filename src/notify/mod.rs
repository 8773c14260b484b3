//! Forwarding state changes to the Neutron L3 agent (SPEC sections 3.5 and
//! 4): the latest-wins schedule (`queue`) and the non-blocking connections
//! (`notifier`).
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
//! - pure parts, tested without sockets or clocks: the latest-wins
//!   [`Queue`] and its [`backoff_delay`] (the request and the status line
//!   are the shared HTTP subset's: [`crate::http`]);
//! - [`Notifier`], the I/O shell that owns one connection per in-flight
//!   request and turns socket readiness into [`Delivery`]s.
//!
//! Delivery rules (the agent only cares about a router's *current* state):
//! - only the latest submitted state per router is kept pending;
//! - at most one request per router is in flight; a state submitted meanwhile
//!   is sent after that request ends, unless the request succeeded with the
//!   very same state;
//! - a failed router retries its latest state after [`backoff_delay`], which
//!   grows per consecutive failure of that router and resets on success;
//! - routers are started in submission order, at most `max_in_flight` at once.

mod notifier;
mod queue;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use notifier::Notifier;

use crate::core::ident::RouterId;
use crate::core::state::State;

pub use queue::{Queue, backoff_delay};

/// How long one attempt (connect, send, status line) may take before it
/// counts as failed. Neutron's own client waits about as long.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Delay before the first retry of a router.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(50);

/// Longest delay between two attempts for one router: an agent that comes
/// back is noticed within this long.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why one attempt failed. The socket path is in every I/O variant because a
/// warning that does not name the socket is useless to an operator.
#[derive(Debug)]
pub enum NotifyError {
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
pub struct Delivery {
    pub router_id: RouterId,
    pub state: State,
    pub kind: DeliveryKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryKind {
    Delivered,
    /// `retry_in` is when the router is tried again; the retry carries the
    /// router's latest state, which may be newer than this outcome's.
    /// `Duration::ZERO` means never: the router is no longer queued.
    Failed {
        reason: String,
        retry_in: Duration,
    },
}

impl Delivery {
    pub fn is_delivered(&self) -> bool {
        self.kind == DeliveryKind::Delivered
    }

    /// The daemon's and the monitor's log line for it: INFO when delivered,
    /// WARNING when not.
    pub fn log(&self) {
        if self.is_delivered() {
            log::info!("{self}");
        } else {
            log::warn!("{self}");
        }
    }
}

/// The log line: `Notified agent router ID, state STATE` (SPEC section 4:
/// operators and Neutron's functional tests grep for it) or the warning.
impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DeliveryKind::Delivered => write!(f, "Notified agent router {}, state {}", self.router_id, self.state),
            DeliveryKind::Failed { reason, retry_in } => {
                write!(f, "Failed to notify agent router {}, state {}: {reason}", self.router_id, self.state)?;
                if retry_in.is_zero() { write!(f, "; not retried") } else { write!(f, "; retrying in {retry_in:?}") }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn outcome_display_matches_the_grepped_log_line() {
        let r1 = RouterId::parse("r1").unwrap();
        let ok = Delivery { router_id: r1.clone(), state: State::Primary, kind: DeliveryKind::Delivered };
        assert_eq!(ok.to_string(), "Notified agent router r1, state primary");
        let failed = Delivery {
            router_id: r1,
            state: State::Backup,
            kind: DeliveryKind::Failed { reason: "agent socket /s answered status 500".into(), retry_in: 100 * MS },
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
