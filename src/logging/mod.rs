//! Where log lines go: syslog for the daemon, oslo.log-style lines in a file
//! or on stderr for the monitor and the foreground daemon. Never blocking,
//! never failing the caller.

pub mod logfile;
pub mod syslog;
