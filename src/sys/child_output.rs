//! What children write to stdout and stderr, into our log (SPEC 3.5).
//!
//! Every child gets a pipe of its own for both ([`crate::sys::spawn`]); the event
//! loop registers the read ends here and turns each line into a log line
//! naming the child (`router r1: conntrackd -c: ERROR: ...`).
//!
//! Invariants:
//! - **A child never waits on us for long**: every readable pipe is drained
//!   whenever the loop runs, whatever the log can take. Logging is what is
//!   bounded, not reading: at most [`LINES_PER_WINDOW`] lines per child per
//!   [`WINDOW`] reach the log, lines are cut at [`MAX_LINE`] bytes, and what
//!   is dropped is counted and said once the window ends.
//! - **A chatty child cannot starve the loop**: one readiness event reads at
//!   most [`READ_PER_EVENT`] bytes, then re-arms the (edge-triggered)
//!   registration so the rest comes in a later pass, after other sources.
//! - Nothing a child writes can forge a log line: control characters are
//!   replaced.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};

use crate::sys::event_loop::{Owner, Sources};

/// Longest line logged; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 1024;
/// Lines logged per child per [`WINDOW`]; more are counted, not logged.
pub const LINES_PER_WINDOW: u32 = 100;
pub const WINDOW: Duration = Duration::from_secs(10);
/// Bytes read per readiness event before other sources get their turn.
pub const READ_PER_EVENT: usize = 64 * 1024;

/// How many lines the log takes from one child: [`LINES_PER_WINDOW`] per
/// [`WINDOW`]. Pure: time is passed in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineBudget {
    window_start: Option<Instant>,
    used: u32,
    dropped: u64,
}

/// What to do with one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Log it; `dropped_before` lines were dropped in the window that just
    /// ended (say so first).
    Log {
        dropped_before: u64,
    },
    Drop,
}

impl LineBudget {
    pub fn admit(&mut self, now: Instant) -> Admit {
        let mut dropped_before = 0;
        if self.window_start.is_none_or(|start| now.saturating_duration_since(start) >= WINDOW) {
            self.window_start = Some(now);
            self.used = 0;
            dropped_before = std::mem::take(&mut self.dropped);
        }
        if self.used < LINES_PER_WINDOW {
            self.used += 1;
            Admit::Log { dropped_before }
        } else {
            self.dropped += 1;
            Admit::Drop
        }
    }

    /// Lines dropped in the current window, not reported yet.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Splits a byte stream into log lines: `\n`-terminated, at most
/// [`MAX_LINE`] bytes each (the excess of a longer line is dropped),
/// control characters replaced. Pure.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    /// The current line was cut: drop bytes until its end.
    cut: bool,
}

impl LineSplitter {
    pub fn push(&mut self, bytes: &[u8], mut line: impl FnMut(String)) {
        for &b in bytes {
            match b {
                b'\n' => {
                    if !self.cut {
                        line(clean(&self.partial, false));
                    }
                    self.partial.clear();
                    self.cut = false;
                }
                // The rest of a line already logged as cut.
                _ if self.cut => {}
                _ if self.partial.len() < MAX_LINE => self.partial.push(b),
                _ => {
                    line(clean(&self.partial, true));
                    self.partial.clear();
                    self.cut = true;
                }
            }
        }
    }

    /// End of the stream: the unterminated rest, if any.
    pub fn finish(&mut self) -> Option<String> {
        let rest = (!self.partial.is_empty()).then(|| clean(&self.partial, false));
        self.partial.clear();
        self.cut = false;
        rest
    }
}

fn clean(bytes: &[u8], cut: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text.chars().map(|c| if c.is_control() && c != '\t' { '?' } else { c }).collect();
    if cut {
        out.push_str(" [cut]");
    }
    out
}

/// The read end of one child's stdout/stderr pipe.
#[derive(Debug)]
pub struct ChildOutput {
    fd: OwnedFd,
    label: String,
    pid: u32,
    lines: LineSplitter,
    budget: LineBudget,
}

impl ChildOutput {
    /// `fd` must be non-blocking.
    pub fn new(fd: OwnedFd, label: String, pid: u32) -> ChildOutput {
        ChildOutput { fd, label, pid, lines: LineSplitter::default(), budget: LineBudget::default() }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Reads what is there (at most [`READ_PER_EVENT`] bytes) and logs it.
    pub fn read(&mut self, now: Instant) -> ReadStatus {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        loop {
            if total >= READ_PER_EVENT {
                return ReadStatus::More;
            }
            match nix::unistd::read(&self.fd, &mut buf) {
                Ok(0) => {
                    if let Some(rest) = self.lines.finish() {
                        self.log(rest, now);
                    }
                    self.report_dropped();
                    return ReadStatus::Closed;
                }
                Ok(n) => {
                    total += n;
                    let mut lines = Vec::new();
                    self.lines.push(&buf[..n], |l| lines.push(l));
                    for line in lines {
                        self.log(line, now);
                    }
                }
                Err(nix::Error::EAGAIN) => return ReadStatus::Drained,
                Err(nix::Error::EINTR) => {}
                Err(e) => {
                    log::warn!("{} (pid {}): cannot read its output: {e}", self.label, self.pid);
                    return ReadStatus::Closed;
                }
            }
        }
    }

    fn log(&mut self, line: String, now: Instant) {
        match self.budget.admit(now) {
            Admit::Log { dropped_before } => {
                if dropped_before > 0 {
                    log::warn!("{} (pid {}): {dropped_before} lines of output not logged", self.label, self.pid);
                }
                log::info!("{}: {line}", self.label);
            }
            Admit::Drop => {}
        }
    }

    fn report_dropped(&mut self) {
        let dropped = std::mem::take(&mut self.budget.dropped);
        if dropped > 0 {
            log::warn!("{} (pid {}): {dropped} lines of output not logged", self.label, self.pid);
        }
    }
}

/// What [`ChildOutput::read`] left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// Everything read; wait for the next readiness.
    Drained,
    /// Stopped at [`READ_PER_EVENT`]: more is waiting.
    More,
    /// End of file (every writer is gone) or a read error.
    Closed,
}

/// The children's pipes an event loop reads, each registered with the
/// loop's [`Sources`] under a token owned by [`Owner::ChildOutput`].
#[derive(Debug, Default)]
pub struct ChildOutputs {
    pipes: HashMap<Token, ChildOutput>,
}

impl ChildOutputs {
    pub fn new() -> ChildOutputs {
        ChildOutputs::default()
    }

    /// Pipes open.
    pub fn len(&self) -> usize {
        self.pipes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pipes.is_empty()
    }

    /// Registers new pipes (from [`crate::sys::spawn::take_outputs`]). What is
    /// already in them is read at once: registration is edge-triggered.
    pub fn adopt<K>(&mut self, sources: &mut Sources<K>, outputs: Vec<ChildOutput>, now: Instant) {
        for output in outputs {
            let fd = output.fd.as_raw_fd();
            let token = match sources.register(&mut SourceFd(&fd), Owner::ChildOutput, Interest::READABLE) {
                Ok(token) => token,
                Err(e) => {
                    // Closing the read end makes the child's writes fail
                    // with EPIPE instead of blocking it forever.
                    log::warn!("{} (pid {}): cannot watch its output, discarding it: {e}", output.label, output.pid);
                    continue;
                }
            };
            self.pipes.insert(token, output);
            self.ready(sources, token, now);
        }
    }

    /// `token` is readable (a stale event for a pipe closed since finds
    /// nothing).
    pub fn ready<K>(&mut self, sources: &mut Sources<K>, token: Token, now: Instant) {
        let Some(output) = self.pipes.get_mut(&token) else { return };
        match output.read(now) {
            ReadStatus::Drained => {}
            ReadStatus::More => {
                // Re-arming an edge-triggered registration reports the
                // data still waiting as a new event.
                let fd = output.fd.as_raw_fd();
                if let Err(e) = sources.reregister(&mut SourceFd(&fd), token, Interest::READABLE) {
                    log::warn!("{} (pid {}): cannot watch its output: {e}", output.label, output.pid);
                    self.close(sources, token);
                }
            }
            ReadStatus::Closed => self.close(sources, token),
        }
    }

    fn close<K>(&mut self, sources: &mut Sources<K>, token: Token) {
        if let Some(output) = self.pipes.remove(&token) {
            sources.deregister(&mut SourceFd(&output.fd.as_raw_fd()), token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| out.push(l));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn lines_across_chunks_and_an_unterminated_rest() {
        assert_eq!(split(&[b"one\ntw", b"o\n", b"three"]), ["one", "two", "three"]);
        assert_eq!(split(&[b"\n"]), [""]);
    }

    #[test]
    fn long_lines_are_cut_once_and_control_characters_replaced() {
        let long = vec![b'x'; MAX_LINE + 500];
        let mut input = long.clone();
        input.extend_from_slice(b"\nnext\x1b[31m\r\n");
        let lines = split(&[&input]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0], format!("{} [cut]", "x".repeat(MAX_LINE)));
        assert_eq!(lines[1], "next?[31m?");
    }

    #[test]
    fn budget_drops_beyond_the_window_and_reports_the_count_after() {
        let t0 = Instant::now();
        let mut b = LineBudget::default();
        for _ in 0..LINES_PER_WINDOW {
            assert_eq!(b.admit(t0), Admit::Log { dropped_before: 0 });
        }
        assert_eq!(b.admit(t0 + Duration::from_secs(1)), Admit::Drop);
        assert_eq!(b.admit(t0 + Duration::from_secs(9)), Admit::Drop);
        assert_eq!(b.dropped(), 2);
        assert_eq!(b.admit(t0 + WINDOW), Admit::Log { dropped_before: 2 });
        assert_eq!(b.dropped(), 0);
    }

    /// A child writing far more than a pipe holds is never blocked by us:
    /// the loop drains it to the end while the log takes a bounded share.
    #[test]
    fn a_chatty_child_is_drained_to_its_end() {
        let mut poll = mio::Poll::new().unwrap();
        let mut events = mio::Events::with_capacity(16);
        let mut sources: Sources<()> = Sources::new(poll.registry().try_clone().unwrap());
        let mut outputs = ChildOutputs::new();
        let script = "i=0; while [ $i -lt 20000 ]; do echo line $i; i=$((i+1)); done".to_owned();
        let pid = crate::sys::spawn::spawn("/bin/sh", &["-c".to_owned(), script], None, "chatty").unwrap();
        outputs.adopt(&mut sources, crate::sys::spawn::take_outputs(), Instant::now());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !outputs.is_empty() {
            assert!(Instant::now() < deadline, "the pipe never reached end-of-file");
            poll.poll(&mut events, Some(Duration::from_millis(100))).unwrap();
            for event in events.iter() {
                assert_eq!(sources.owner(event.token()), Some(&Owner::ChildOutput));
                outputs.ready(&mut sources, event.token(), Instant::now());
            }
        }
        assert!(sources.is_empty(), "the pipe's token is given back");
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None).unwrap();
        assert!(matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)), "{status:?}");
    }
}
