//! harouterd: VRRP high availability for virtual routers.
//!
//! The library holds everything; `main.rs` only dispatches. Pure logic
//! (config parsing, rendering, identifiers) lives in modules free of I/O so
//! it is tested directly.

pub mod child_output;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod conntrackd;
pub mod conntrackd_conf;
pub mod control;
pub mod daemon;
pub mod daemonize;
pub mod event_loop;
pub mod hooks;
pub mod ident;
pub mod keepalived;
pub mod layout;
pub mod logfile;
pub mod net;
pub mod netlink;
pub mod netns;
pub mod nofollow;
pub mod notify;
pub mod pidfile;
pub mod privdrop;
pub mod spawn;
pub mod state;
pub mod state_change;
pub mod statefile;
pub mod syslog;
pub mod transition;
pub mod trusted_dir;

#[cfg(test)]
mod test_support;
