//! Whether a process is a router's keepalived or conntrackd (issue 15.3):
//! what `/proc/PID` says about it, and the pure rule that judges it.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::program::{Kind, Program, cmdline_is_conntrackd_daemon, cmdline_names_conf};
use crate::sys::spawn;

/// `/proc/PID/cmdline` is read up to this many bytes; ours are a few
/// hundred.
const MAX_CMDLINE: u64 = 64 * 1024;

/// How much later than its pidfile's last write a process may appear to
/// have started and still be the one that wrote it. keepalived writes its
/// pidfile after it starts (and the supervisor conntrackd's after spawning
/// it); the slack covers the 10 ms granularity of
/// process start times and small clock adjustments. A pid reused by
/// another process necessarily started after the pidfile's writer died.
pub const PIDFILE_SLACK: Duration = Duration::from_secs(1);

/// The pid in a pidfile's contents: decimal, surrounding whitespace allowed
/// (keepalived writes `PID\n`), 1 ..= i32::MAX. Anything else: `None`.
pub fn parse_pid(text: &[u8]) -> Option<u32> {
    let text = text.trim_ascii();
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let pid: u32 = std::str::from_utf8(text).ok()?.parse().ok()?;
    (pid > 0 && pid <= i32::MAX as u32).then_some(pid)
}

/// What must be true of a process for it to be a router's keepalived or
/// conntrackd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Which program: what its command line must look like.
    pub kind: Kind,
    /// Its config file: given to keepalived's `-f`, or conntrackd's `-C`
    /// (the daemon, not a client command).
    pub conf: PathBuf,
    /// (device, inode) of the configured binary; `None` when it
    /// is not there (nothing running can then be proven ours, except...).
    pub exe: Option<(u64, u64)>,
    /// ... a keepalived started before the binary at this (canonical) path
    /// was replaced or removed: the kernel shows `PATH (deleted)` for it. A
    /// package upgrade does that, and an upgrade must not turn into a
    /// second program beside the first.
    pub exe_path: PathBuf,
    /// The uid every one of its uids must be: the daemon's, root.
    pub uid: u32,
    /// (device, inode) of the router's network namespace.
    pub netns: Option<(u64, u64)>,
}

/// What `/proc/PID` says about a process ([`ProcFacts::read`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcFacts {
    pub cmdline: Vec<u8>,
    /// (device, inode) of the file it runs.
    pub exe: Option<(u64, u64)>,
    /// What `/proc/PID/exe` reads as.
    pub exe_link: Option<PathBuf>,
    /// Real, effective, saved and filesystem uid.
    pub uids: Option<[u32; 4]>,
    pub ppid: Option<u32>,
    /// (device, inode) of its network namespace.
    pub netns: Option<(u64, u64)>,
    /// Clock ticks after boot (`/proc/PID/stat` field 22): with the pid,
    /// what identifies a process for as long as the system runs.
    pub start_ticks: Option<u64>,
    /// The same start time on the wall clock.
    pub started: Option<SystemTime>,
}

/// Why a process is not proven to be a router's program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotOurs {
    /// No such process (or a zombie, or it changed while being looked at).
    Gone,
    Cmdline,
    Exe {
        running: Option<PathBuf>,
    },
    Uid {
        uids: Option<[u32; 4]>,
    },
    Namespace,
    /// It started this long after the pidfile naming it was written.
    StartedAfterPidfile {
        by: Duration,
    },
}

impl fmt::Display for NotOurs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotOurs::Gone => f.write_str("no such process"),
            NotOurs::Cmdline => f.write_str("its command line is not one of ours for our config"),
            NotOurs::Exe { running: Some(exe) } => {
                write!(f, "it runs {}, not the configured program", exe.display())
            }
            NotOurs::Exe { running: None } => f.write_str("its executable is unknown"),
            NotOurs::Uid { uids: Some(u) } => write!(f, "it runs as uid {} (effective {}), not root", u[0], u[1]),
            NotOurs::Uid { uids: None } => f.write_str("its uids are unknown"),
            NotOurs::Namespace => f.write_str("it runs in another network namespace"),
            NotOurs::StartedAfterPidfile { by } => {
                write!(f, "it started {:.1} s after the pidfile was written", by.as_secs_f64())
            }
        }
    }
}

/// Whether `facts` prove a router's program (see the module
/// documentation). `written`: when the pidfile naming it was last written
/// (`None`: no start-time check). [`NotOurs::Namespace`] comes last: it
/// means everything else proves the process ours. Pure.
pub fn judge_process(facts: &ProcFacts, expected: &Expected, written: Option<SystemTime>) -> Result<(), NotOurs> {
    if facts.cmdline.is_empty() {
        return Err(NotOurs::Gone);
    }
    let conf = expected.conf.as_os_str().as_bytes();
    let ours = match expected.kind {
        Kind::Keepalived => cmdline_names_conf(&facts.cmdline, conf),
        Kind::Conntrackd => cmdline_is_conntrackd_daemon(&facts.cmdline, conf),
    };
    if !ours {
        return Err(NotOurs::Cmdline);
    }
    let same_file = facts.exe.is_some() && facts.exe == expected.exe;
    let mut deleted = expected.exe_path.as_os_str().to_owned();
    deleted.push(" (deleted)");
    let replaced = facts.exe_link.as_ref().is_some_and(|link| link.as_os_str() == deleted);
    if !same_file && !replaced {
        return Err(NotOurs::Exe { running: facts.exe_link.clone() });
    }
    if facts.uids.is_none_or(|uids| uids.iter().any(|&u| u != expected.uid)) {
        return Err(NotOurs::Uid { uids: facts.uids });
    }
    if let Some(written) = written {
        let Some(started) = facts.started else { return Err(NotOurs::Gone) };
        if let Ok(by) = started.duration_since(written)
            && by > PIDFILE_SLACK
        {
            return Err(NotOurs::StartedAfterPidfile { by });
        }
    }
    if facts.netns.is_none() || facts.netns != expected.netns {
        return Err(NotOurs::Namespace);
    }
    Ok(())
}

/// Whether `pid` still is the process proven ours earlier: alive, same
/// start time (`None`: unknown, then its cmdline alone says), its command
/// line still one of `program`'s.
pub(super) fn same_process(pid: u32, start: Option<u64>, program: &Program) -> bool {
    let facts = ProcFacts::read(pid);
    (start.is_none() || facts.start_ticks == start) && program.names_conf(&facts.cmdline)
}

/// `keepalived_path` (or `conntrackd_path`) as a file: itself when it holds a `/`, else the first
/// executable of that name in the fixed `PATH` children get
/// ([`spawn::CHILD_PATH`], where a bare name would be looked up anyway; the
/// daemon's inherited `PATH` plays no part). `None` when there is none.
pub fn resolve_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    std::env::split_paths(spawn::CHILD_PATH)
        .map(|dir| dir.join(program))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

impl ProcFacts {
    /// Reads what `/proc/PID` says; anything unreadable stays `None` (a
    /// process gone half way reads as gone: empty cmdline).
    pub fn read(pid: u32) -> ProcFacts {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let mut cmdline = Vec::new();
        let read = File::open(dir.join("cmdline")).and_then(|f| f.take(MAX_CMDLINE).read_to_end(&mut cmdline));
        if read.is_err() {
            cmdline.clear();
        }
        let id = |p: PathBuf| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
        let uids = field("Uid:").and_then(|v| {
            let ids: Vec<u32> = v.split_whitespace().filter_map(|w| w.parse().ok()).collect();
            <[u32; 4]>::try_from(ids).ok()
        });
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces and
        // parentheses): field 3 is the first.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect::<Vec<_>>());
        let start_ticks = after.as_ref().and_then(|f| f.get(22 - 3)).and_then(|t| t.parse().ok());
        ProcFacts {
            cmdline,
            exe: id(dir.join("exe")),
            exe_link: std::fs::read_link(dir.join("exe")).ok(),
            uids,
            ppid: field("PPid:").and_then(|v| v.parse().ok()),
            netns: id(dir.join("ns/net")),
            start_ticks,
            started: start_ticks.and_then(boot_ticks_to_wall_clock),
        }
    }
}

/// A time in clock ticks after boot, on the wall clock: the boot's wall
/// time (now on the wall clock minus now on CLOCK_BOOTTIME, which counts
/// from boot, suspend included, as process start times do) plus the ticks.
fn boot_ticks_to_wall_clock(ticks: u64) -> Option<SystemTime> {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    let hz = u64::try_from(hz).ok().filter(|&hz| hz > 0)?;
    let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    let since_boot = Duration::new(u64::try_from(boot.tv_sec()).ok()?, u32::try_from(boot.tv_nsec()).ok()?);
    let booted = SystemTime::now().checked_sub(since_boot)?;
    booted.checked_add(Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz))
}
