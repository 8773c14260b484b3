//! Why the daemon cannot start, naming what it concerns (the socket, the
//! config key and the user or group, the step of the set-up).

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::control::server::ControlError;

#[derive(Debug)]
pub enum DaemonError {
    /// A step of the event loop's set-up failed (`what`: which one).
    Setup { what: &'static str, source: io::Error },
    /// A user or group the config names (`key`) does not exist.
    UnknownPrincipal { key: &'static str, kind: &'static str, name: String },
    /// The user or group database could not be read.
    Lookup { key: &'static str, name: String, source: nix::Error },
    /// The control socket (its path is in the error).
    Control(ControlError),
    /// `metrics_listen` could not be listened on.
    MetricsListen { addr: SocketAddr, source: io::Error },
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Setup { what, source } => write!(f, "cannot {what}: {source}"),
            DaemonError::UnknownPrincipal { key, kind, name } => write!(f, "{key}: no {kind} '{name}'"),
            DaemonError::Lookup { key, name, source } => write!(f, "{key}: cannot look up '{name}': {source}"),
            DaemonError::Control(e) => e.fmt(f),
            DaemonError::MetricsListen { addr, source } => {
                write!(f, "metrics_listen: cannot listen on {addr}: {source}")
            }
        }
    }
}

impl std::error::Error for DaemonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DaemonError::Setup { source, .. } => Some(source),
            DaemonError::Lookup { source, .. } => Some(source),
            DaemonError::Control(e) => Some(e),
            DaemonError::MetricsListen { source, .. } => Some(source),
            DaemonError::UnknownPrincipal { .. } => None,
        }
    }
}

impl From<ControlError> for DaemonError {
    fn from(e: ControlError) -> DaemonError {
        DaemonError::Control(e)
    }
}

/// `map_err` for a set-up step.
pub(super) fn setup(what: &'static str) -> impl FnOnce(io::Error) -> DaemonError {
    move |source| DaemonError::Setup { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_step_the_key_and_the_name() {
        let e = setup("watch signals")(io::Error::from_raw_os_error(libc::EBADF));
        assert!(e.to_string().starts_with("cannot watch signals: "), "{e}");
        let e = DaemonError::UnknownPrincipal { key: "socket_group", kind: "group", name: "ha".into() };
        assert_eq!(e.to_string(), "socket_group: no group 'ha'");
        let e = DaemonError::Lookup { key: "allowed_uids", name: "neutron".into(), source: nix::Error::EIO };
        assert!(e.to_string().starts_with("allowed_uids: cannot look up 'neutron': "), "{e}");
    }
}
