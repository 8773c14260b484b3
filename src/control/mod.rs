//! The control socket: HTTP/1.1 request parsing and JSON output (SPEC 3.6).
pub mod api;
pub mod http;
pub mod json;
pub mod server;
