//! harouterd: VRRP high availability for virtual routers.
//!
//! The library holds everything; `main.rs` only dispatches. Pure logic
//! (`core`, `config`, the renderers, the protocol state machines) is free of
//! I/O and tested directly; `sys` is the operating system, and the only
//! module allowed `unsafe`.

#![deny(unsafe_code)]

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
pub mod supervisor;
#[allow(unsafe_code)]
pub mod sys;

#[cfg(test)]
mod test_support;

use std::process::ExitCode;

/// The exit codes of SPEC section 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Runtime = 1,
    Usage = 2,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}
