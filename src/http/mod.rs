//! The HTTP/1.1 subset spoken on Unix sockets, shared by the control
//! socket's server and the clients (agent notifications, `status`).

pub mod request;
