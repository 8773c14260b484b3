//! The HTTP/1.1 subset spoken on Unix sockets, one request per connection.
//! The control socket's server and the clients (agent notifications,
//! `status`, `events`) share it: requests are parsed and built in
//! `request`, answers written and their status lines read in `response`.

pub mod request;
pub mod response;
