//! The control socket: the transport (`server`), what each request means
//! (`api`) and the JSON it answers with (`json`). HTTP itself is in `http`.

pub mod api;
pub mod json;
pub mod server;
