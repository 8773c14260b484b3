//! The operating system: processes (spawn, reap, daemonize, privileges,
//! pidfds), namespaces, files opened without trusting others, the event
//! loop's poll, signals and timers. The only place `unsafe` may appear.

pub mod child_output;
pub mod daemonize;
pub mod event_loop;
pub mod files;
pub mod netns;
pub mod pidfd;
pub mod pidfile;
pub mod privdrop;
pub mod process;
pub mod recv;
pub mod sd_notify;
pub mod socket;
pub mod spawn;
