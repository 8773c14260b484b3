//! The control socket: the transport (`server`), what each request means
//! (`api`) and the JSON it answers with (`json`). HTTP itself is in `http`.

pub mod api;
mod conn;
pub mod json;
pub mod metrics_listener;
pub mod server;
