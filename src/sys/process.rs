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

/// Gives back the memory that only start-up needed, for a process that
/// then runs for a long time doing little (the `state-change` monitor,
/// one per router, ten on a small node and hundreds on a big one, is paid
/// for in proportional set size):
/// - the pages of our own executable that start-up mapped and that are
///   still exactly the file (code and read-only data: argument parsing,
///   detaching, privilege dropping, the dynamic linker's relocation
///   tables) are unmapped (`MADV_DONTNEED`); what the monitor runs from
///   then on is mapped again from the page cache as it runs (the file is
///   shared, in the page cache for every monitor: nothing is read again).
///   A mapping holding any page written since (relocated pointers, data)
///   is never touched: dropping it would lose what was written;
/// - with glibc, heap pages freed since start-up go back to the kernel
///   (`malloc_trim`; musl's allocator does it by itself).
///
/// Returns how many KiB were unmapped. Never fails: it only gives back.
/// Never inlined: scripts/monitor-order.sh profiles what a monitor runs
/// from the moment it is called.
#[inline(never)]
pub fn release_startup_memory() -> usize {
    let released = release_clean_mappings();
    // Last: reading smaps itself needed a buffer.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    released
}

fn release_clean_mappings() -> usize {
    let Ok(exe) = nix::sys::stat::stat("/proc/self/exe") else { return 0 };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return 0 };
    let mut released = 0;
    for mapping in clean_mappings_of(&smaps, exe.st_dev, exe.st_ino) {
        // SAFETY: the range is a whole mapping of our executable that was
        // never written (Anonymous: 0 kB, not writable): after
        // MADV_DONTNEED its pages read back exactly as before, from the
        // file, when next touched.
        let rc = unsafe { libc::madvise(mapping.start as *mut libc::c_void, mapping.len, libc::MADV_DONTNEED) };
        if rc == 0 {
            released += mapping.len / 1024;
        }
    }
    released
}

/// One mapping of `/proc/self/smaps` that may be dropped and read back.
#[derive(Debug, PartialEq, Eq)]
struct CleanMapping {
    start: usize,
    len: usize,
}

/// The mappings of the file `(dev, ino)` in `smaps` that are not writable
/// and hold no anonymous (written, copied-on-write) page.
fn clean_mappings_of(smaps: &str, dev: u64, ino: u64) -> Vec<CleanMapping> {
    let mut out = Vec::new();
    let mut current: Option<(CleanMapping, bool)> = None;
    let mut finish = |current: &mut Option<(CleanMapping, bool)>| {
        if let Some((mapping, true)) = current.take() {
            out.push(mapping);
        }
    };
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16))
        {
            finish(&mut current);
            let perms = words.next().unwrap_or_default();
            let _offset = words.next();
            let device = words.next().unwrap_or_default();
            let inode: u64 = words.next().and_then(|i| i.parse().ok()).unwrap_or(0);
            let ours = inode == ino && inode != 0 && same_device(device, dev);
            let read_only = perms.starts_with('r') && perms.as_bytes().get(1) == Some(&b'-');
            current = Some((CleanMapping { start, len: end.saturating_sub(start) }, ours && read_only));
        } else if first == "Anonymous:"
            && words.next() != Some("0")
            && let Some((_, droppable)) = current.as_mut()
        {
            *droppable = false;
        }
    }
    finish(&mut current);
    out
}

/// Whether `MAJOR:MINOR` (hexadecimal, as in `/proc/PID/maps`) is `dev`.
fn same_device(text: &str, dev: u64) -> bool {
    let Some((major, minor)) = text.split_once(':') else { return false };
    let (Ok(major), Ok(minor)) = (u64::from_str_radix(major, 16), u64::from_str_radix(minor, 16)) else {
        return false;
    };
    libc::makedev(major as u32, minor as u32) == dev
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

    #[test]
    fn only_read_only_mappings_of_our_file_never_written_are_dropped() {
        let smaps = "\
55d0a0000000-55d0a0020000 r--p 00000000 fe:01 4242 /usr/sbin/harouterd
Rss:                 128 kB
Anonymous:             0 kB
55d0a0020000-55d0a0100000 r-xp 00020000 fe:01 4242 /usr/sbin/harouterd
Anonymous:             0 kB
55d0a0100000-55d0a0107000 r--p 00100000 fe:01 4242 /usr/sbin/harouterd
Anonymous:            28 kB
55d0a0107000-55d0a0109000 rw-p 00107000 fe:01 4242 /usr/sbin/harouterd
Anonymous:             0 kB
7f0000000000-7f0000020000 r-xp 00000000 fe:01 99 /usr/lib/libc.so.6
Anonymous:             0 kB
7f0000030000-7f0000031000 r-xp 00000000 fe:02 4242 /mnt/other
Anonymous:             0 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
Anonymous:            20 kB
";
        let dev = libc::makedev(0xfe, 0x01);
        assert_eq!(
            clean_mappings_of(smaps, dev, 4242),
            [
                CleanMapping { start: 0x55d0a0000000, len: 0x20000 },
                CleanMapping { start: 0x55d0a0020000, len: 0xe0000 },
            ],
            "text and read-only data, not the relocated RELRO, the data, another file or another device"
        );
        assert!(clean_mappings_of(smaps, dev, 1).is_empty());
    }

    /// Dropping our own code and read-only data while running it: the
    /// next instruction and everything after read back from the file.
    #[test]
    fn dropping_our_clean_pages_leaves_the_process_working() {
        let released = release_startup_memory();
        assert!(released > 0, "the test binary's text was not dropped");
        let text = format!("{}", std::hint::black_box(42));
        assert_eq!(text, "42");
    }
}
