//! harouterd: VRRP high availability for virtual routers.
//!
//! The library holds everything; `main.rs` only dispatches. Pure logic
//! (config parsing, rendering, identifiers) lives in modules free of I/O so
//! it is tested directly.

pub mod actions;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod conntrackd;
pub mod control;
pub mod core;
pub mod daemon;
pub mod http;
pub mod keepalived;
pub mod logging;
pub mod monitor;
pub mod netlink;
pub mod notify;
pub mod sys;

#[cfg(test)]
mod test_support;
