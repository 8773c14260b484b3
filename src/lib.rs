//! harouterd: VRRP high availability for virtual routers.
//!
//! The library holds everything; `main.rs` only dispatches. Pure logic
//! (config parsing, rendering, identifiers) lives in modules free of I/O so
//! it is tested directly.

pub mod cli;
pub mod cmd;
pub mod config;
pub mod ident;
pub mod keepalived;
pub mod layout;
pub mod net;
