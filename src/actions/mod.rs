//! What runs on an effective state change besides notifications: the
//! operator's transition script and IPv6 forwarding.

pub mod hooks;
