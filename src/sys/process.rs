//! Attributes of the daemon's own process: private files and memory, the
//! orphans it reaps, the descriptors it may hold.

use std::io;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::stat::{Mode, umask};

/// Issue 15: whatever the process creates is private unless it sets a mode
/// (umask 077; directories and files get theirs explicitly), and a crash
/// leaves no core file holding the VRRP password (not dumpable, which also
/// keeps same-uid processes without CAP_SYS_PTRACE out of its memory).
/// Call at start and again after detaching (which sets its own umask).
pub fn make_private() -> io::Result<()> {
    umask(Mode::from_bits_truncate(0o077));
    nix::sys::prctl::set_dumpable(false).map_err(io::Error::from)
}

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`), so that
/// keepalived's own children (VRRP, checker), orphaned when their parent
/// crashes, are reparented to the daemon rather than to init: their exits
/// then arrive as SIGCHLD like any other child's. Call once at daemon start.
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// One socket per namespace, a FIFO per router, pidfds, connections: a
/// node with a thousand routers needs more descriptors than the usual soft
/// limit of 1024, and the hard limit is there to be used. Raises the soft
/// limit to the hard one.
pub fn raise_fd_limit() -> io::Result<()> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(())
}

/// How many nice levels better than it was started the daemon runs.
pub const PRIORITY_BOOST: i32 = 10;

/// The daemon runs [`PRIORITY_BOOST`] nice levels better than it was
/// started with, and every child it starts (keepalived, conntrackd,
/// scripts) gets the nice value it was started with
/// ([`crate::sys::spawn::set_child_nice`]). The daemon spends little CPU,
/// but in bursts that decide what everyone sees: a node-wide failover, a
/// thousand keepalived respawning. Measured with 1000 routers on 2 CPUs,
/// the daemon sat runnable for seconds behind keepalived processes doing
/// their own start-up, and status answers and primary announcements
/// waited with it.
///
/// With the kernel's autogroups (`kernel.sched_autogroup_enabled`, on in
/// Debian's kernels), CPU time is shared between sessions before nice
/// values count, and every keepalived runs in a session of its own: so the
/// daemon's autogroup gets the same boost (`/proc/self/autogroup`), or a
/// thousand keepalived sessions would each weigh as much as the daemon.
/// Whoever starts the daemon (a unit's `Nice=`) still sets the level both
/// start from. Needs CAP_SYS_NICE; without it (a container), an error and
/// nothing changed.
pub fn raise_priority() -> io::Result<()> {
    nix::errno::Errno::clear();
    // SAFETY: getpriority/setpriority on our own process, integer
    // arguments only; -1 is a valid nice value, told apart by errno.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if nice == -1 && nix::errno::Errno::last_raw() != 0 {
        return Err(io::Error::last_os_error());
    }
    let better = (nice - PRIORITY_BOOST).max(-20);
    // SAFETY: as above.
    if better != nice && unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, better) } != 0 {
        return Err(io::Error::last_os_error());
    }
    crate::sys::spawn::set_child_nice(nice);
    raise_autogroup()
}

/// Our autogroup's nice value lowered by [`PRIORITY_BOOST`]; nothing to
/// do without autogroups (no `/proc/self/autogroup`).
fn raise_autogroup() -> io::Result<()> {
    const PATH: &str = "/proc/self/autogroup";
    let text = match std::fs::read_to_string(PATH) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let Some(nice) = autogroup_nice(&text) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{PATH}: {text:?}")));
    };
    let better = (nice - PRIORITY_BOOST).max(-20);
    if better == nice {
        return Ok(());
    }
    std::fs::write(PATH, better.to_string()).map_err(|e| io::Error::new(e.kind(), format!("{PATH}: {e}")))
}

/// The nice value in `/proc/PID/autogroup` (`/autogroup-123 nice 0`).
fn autogroup_nice(text: &str) -> Option<i32> {
    text.split_whitespace().skip_while(|w| *w != "nice").nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_autogroup_nice_value() {
        assert_eq!(autogroup_nice("/autogroup-14880 nice 0\n"), Some(0));
        assert_eq!(autogroup_nice("/autogroup-7 nice -10\n"), Some(-10));
        assert_eq!(autogroup_nice("/autogroup-7\n"), None);
        assert_eq!(autogroup_nice(""), None);
    }
}
