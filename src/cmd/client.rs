//! The client side of the control socket, for `status` and `events`:
//! one blocking request per run (a CLI, not the daemon's loop).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Exit;
use crate::cli::ClientArgs;
use crate::http::request::get_request;
use crate::http::response::{StatusLine, parse_status_line};

/// How long a client waits to connect and for an answer to begin.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where the socket is: `--socket`, else the config's `socket`, else the
/// default state path's.
fn socket_path(args: &ClientArgs) -> Result<PathBuf, Exit> {
    if let Some(socket) = &args.socket {
        return Ok(socket.clone());
    }
    if let Some(config) = &args.config {
        return super::load_config(config).map(|c| c.daemon.socket);
    }
    Ok(PathBuf::from(crate::cli::DEFAULT_SOCKET))
}

/// Sends `GET path` and returns the reader positioned at the body, after
/// checking for a 200.
fn get(socket: &Path, path: &str, accept: &str) -> Result<BufReader<UnixStream>, String> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect to {}: {e} (is harouterd running?)", socket.display()))?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    stream.write_all(&get_request(path, accept)).map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).map_err(|e| format!("{}: no answer: {e}", socket.display()))?;
    let status = parse_status_line(status_line.as_bytes(), true);
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).map_err(|e| format!("{}: {e}", socket.display()))?;
        if n == 0 || line == "\r\n" {
            break;
        }
    }
    if status != StatusLine::Complete(200) {
        let mut body = String::new();
        let _ = reader.read_to_string(&mut body);
        return Err(format!("{} answered {}: {}", socket.display(), status_line.trim_end(), body.trim_end()));
    }
    Ok(reader)
}

/// `harouterd status`: the daemon's table (or JSON) as it sends it; in
/// text, followed by the daemon's own line (its config, the last reload),
/// when the daemon has one.
pub fn status(args: &ClientArgs) -> Exit {
    let socket = match socket_path(args) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let accept = if args.json { "application/json" } else { "text/plain" };
    match get(&socket, "/v1/routers", accept) {
        Ok(mut reader) => {
            let mut body = String::new();
            match reader.read_to_string(&mut body) {
                Ok(_) if args.json => super::print(&body),
                Ok(_) => {
                    if let Ok(mut reader) = get(&socket, "/v1/daemon", accept) {
                        let mut line = String::new();
                        if reader.read_to_string(&mut line).is_ok() {
                            body.push('\n');
                            body.push_str(&line);
                        }
                    }
                    super::print(&body)
                }
                Err(e) => {
                    eprintln!("harouterd: {}: {e}", socket.display());
                    Exit::Runtime
                }
            }
        }
        Err(e) => {
            eprintln!("harouterd: {e}");
            Exit::Runtime
        }
    }
}

/// `harouterd events`: one line per effective change until interrupted or
/// the daemon goes away.
pub fn events(args: &ClientArgs) -> Exit {
    let socket = match socket_path(args) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let accept = if args.json { "application/json" } else { "text/plain" };
    let mut reader = match get(&socket, "/v1/events", accept) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("harouterd: {e}");
            return Exit::Runtime;
        }
    };
    // Events come whenever they come: no read timeout from here on.
    let _ = reader.get_ref().set_read_timeout(None);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => {
                eprintln!("harouterd: {} closed the stream", socket.display());
                return Exit::Runtime;
            }
            Ok(_) => {
                if super::print(&line) != Exit::Ok {
                    return Exit::Runtime;
                }
            }
            Err(e) => {
                eprintln!("harouterd: {}: {e}", socket.display());
                return Exit::Runtime;
            }
        }
    }
}
