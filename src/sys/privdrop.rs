//! Dropping root for `state-change --user U --group G` (SPEC section 4): the
//! monitor opens its rtnetlink socket inside the router's namespace as root,
//! then runs as the agent's user, keeping only the capabilities conntrackd
//! sync needs when it is enabled.
//!
//! Invariants, checked after the drop (an error is returned otherwise, and
//! the caller must exit rather than run with more privilege than asked):
//! - real, effective and saved uid and gid are the requested ones, and the
//!   supplementary groups are exactly the target gid (root's group 0 must not
//!   linger as a supplementary group);
//! - with a non-root target, `setuid(0)` fails: root cannot be regained;
//! - with a non-root target, **the kept capabilities are permitted, never
//!   effective**: the permitted set is exactly `keep_caps`, the effective,
//!   inheritable and ambient sets are empty, so the monitor itself acts with
//!   the agent user's rights alone (a `--conf_dir` link cannot make it write
//!   into a root-only directory). The bounding set is cut down to
//!   `keep_caps`, and `no_new_privs` is set: no later `execve` (a setuid
//!   binary, file capabilities) can give anything back.
//!
//! A capability is used only where it is needed: [`with_effective`] raises
//! one for the duration of a call (entering a namespace), and
//! [`prepare_exec`], run in a forked child between `fork` and `exec`, raises
//! what the child needs before `exec` (CAP_SYS_ADMIN for `setns`) and puts
//! what the program itself needs in the child's ambient set: ambient
//! capabilities are how a non-root process passes capabilities across
//! `execve` to a binary without file capabilities, and after `execve` such a
//! program holds exactly its ambient set (conntrackd: CAP_DAC_OVERRIDE).
//!
//! Capabilities are per thread in Linux; uid changes through libc apply to
//! every thread. Call [`drop_to`] while the process is single-threaded (the
//! monitor always is), or the kept capabilities exist only on the calling
//! thread.
//!
//! `--user`/`--group` accept numbers, as Neutron passes them
//! (`--user=1000 --group=1000`, the agent's own euid/egid), or names. Given a
//! user without a group, the user's primary group from the user database is
//! used when there is one (Neutron would keep gid 0, a surprise nobody
//! wants); a numeric user absent from the database keeps the current gid.

use std::fmt;

use nix::errno::Errno;
use nix::unistd::{Gid, Group, Uid, User};

/// A capability [`drop_to`] can keep. Only the ones harouterd has a use for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Bypass file permission checks: connecting to the root-owned control
    /// socket of the conntrackd daemon (see [`CONNTRACKD_CHILD_CAPS`]); only
    /// ever effective in that child. The monitor's state file needs none,
    /// as Neutron creates the conf dir as the agent user, the same user
    /// `--user` names.
    DacOverride,
    /// conntrack tables (conntrackd `-c`, `-f`, `-R`, `-B`, `-t`, `-n`).
    NetAdmin,
    NetRaw,
    /// `setns` into the router namespace between fork and exec.
    SysAdmin,
}

impl Capability {
    /// The kernel's capability number (`<linux/capability.h>`).
    pub const fn number(self) -> u32 {
        match self {
            Capability::DacOverride => 1,
            Capability::NetAdmin => 12,
            Capability::NetRaw => 13,
            Capability::SysAdmin => 21,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Capability::DacOverride => "CAP_DAC_OVERRIDE",
            Capability::NetAdmin => "CAP_NET_ADMIN",
            Capability::NetRaw => "CAP_NET_RAW",
            Capability::SysAdmin => "CAP_SYS_ADMIN",
        }
    }

    /// This capability's bit in a 64-bit capability mask.
    pub const fn bit(self) -> u64 {
        1 << self.number()
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the monitor keeps permitted (and in its bounding set) when
/// conntrackd sync is enabled, found by running it: for each sync command
/// the monitor forks, `setns`es into the router namespace (CAP_SYS_ADMIN,
/// raised in the child only, also used by [`with_effective`] to reopen a
/// namespace) and execs `conntrackd -C CONF OPT`, which needs
/// [`CONNTRACKD_CHILD_CAPS`].
pub const CONNTRACKD_CAPS: &[Capability] = &[Capability::SysAdmin, Capability::DacOverride];

/// What the exec'd `conntrackd -C CONF OPT` holds (ambient): it is a client
/// that only connects to the control socket of the conntrackd daemon, which
/// runs as root and leaves that socket root-owned mode 0600, so the connect
/// needs CAP_DAC_OVERRIDE ("can't connect: ... appropriate permissions?"
/// without it). The conntrack table work is the daemon's: all six commands
/// (`-c -f -R -B -t -n`) were checked to succeed with this capability alone
/// (conntrack-tools 1.4.7).
pub const CONNTRACKD_CHILD_CAPS: &[Capability] = &[Capability::DacOverride];

/// Entering a namespace between `fork` and `exec`, or for a socket.
pub const SETNS_CAPS: &[Capability] = &[Capability::SysAdmin];

/// The mask of a capability list, as `/proc/PID/status` shows it (`CapEff`).
pub fn mask_of(caps: &[Capability]) -> u64 {
    caps.iter().fold(0, |mask, cap| mask | cap.bit())
}

/// Why privileges could not be dropped, naming the user or group.
#[derive(Debug)]
pub enum PrivDropError {
    /// Not a number and not in the user database.
    UnknownUser {
        user: String,
    },
    UnknownGroup {
        group: String,
    },
    /// The user or group database could not be read.
    Lookup {
        what: &'static str,
        name: String,
        source: Errno,
    },
    /// `4294967295` means "leave unchanged" to the kernel, so it is refused.
    InvalidId {
        what: &'static str,
        name: String,
    },
    /// A system call failed; `target` describes the requested ids.
    Syscall {
        target: String,
        step: String,
        source: Errno,
    },
    /// The drop "succeeded" but the result is not what was asked.
    Verify {
        target: String,
        problem: String,
    },
}

impl fmt::Display for PrivDropError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrivDropError::UnknownUser { user } => {
                write!(f, "unknown user {user:?}: not a uid and not in the user database")
            }
            PrivDropError::UnknownGroup { group } => {
                write!(f, "unknown group {group:?}: not a gid and not in the group database")
            }
            PrivDropError::Lookup { what, name, source } => {
                write!(f, "cannot look up {what} {name:?}: {} ({source})", source.desc())
            }
            PrivDropError::InvalidId { what, name } => {
                write!(f, "invalid {what} {name:?}: 4294967295 is not a valid id")
            }
            PrivDropError::Syscall { target, step, source } => {
                write!(f, "cannot drop privileges to {target}: {step}: {} ({source})", source.desc())
            }
            PrivDropError::Verify { target, problem } => write!(f, "privileges not dropped to {target}: {problem}"),
        }
    }
}

impl std::error::Error for PrivDropError {}

/// `--user` resolved: the uid, and the user's primary gid when the user
/// database knows it.
pub fn resolve_user(user: &str) -> Result<(Uid, Option<Gid>), PrivDropError> {
    if let Ok(raw) = user.parse::<u32>() {
        if raw == u32::MAX {
            return Err(PrivDropError::InvalidId { what: "user", name: user.to_string() });
        }
        let uid = Uid::from_raw(raw);
        // A numeric uid needs no database entry; the entry only supplies
        // the default group.
        let gid = User::from_uid(uid).ok().flatten().map(|u| u.gid);
        return Ok((uid, gid));
    }
    match User::from_name(user) {
        Ok(Some(u)) => Ok((u.uid, Some(u.gid))),
        Ok(None) => Err(PrivDropError::UnknownUser { user: user.to_string() }),
        Err(source) => Err(PrivDropError::Lookup { what: "user", name: user.to_string(), source }),
    }
}

/// `--group` resolved to a gid.
pub fn resolve_group(group: &str) -> Result<Gid, PrivDropError> {
    if let Ok(raw) = group.parse::<u32>() {
        if raw == u32::MAX {
            return Err(PrivDropError::InvalidId { what: "group", name: group.to_string() });
        }
        return Ok(Gid::from_raw(raw));
    }
    match Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(PrivDropError::UnknownGroup { group: group.to_string() }),
        Err(source) => Err(PrivDropError::Lookup { what: "group", name: group.to_string(), source }),
    }
}

/// What to change to; `None` leaves that id alone.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Plan {
    uid: Option<Uid>,
    gid: Option<Gid>,
    /// For messages: `uid 1000 (neutron), gid 1000 (neutron)`.
    target: String,
}

fn plan(user: Option<&str>, group: Option<&str>) -> Result<Option<Plan>, PrivDropError> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let (uid, user_gid) = match user {
        Some(u) => {
            let (uid, gid) = resolve_user(u)?;
            (Some(uid), gid)
        }
        None => (None, None),
    };
    let gid = match group {
        Some(g) => Some(resolve_group(g)?),
        None => user_gid,
    };
    let label = |what: &str, id: Option<u32>, given: Option<&str>| match (id, given) {
        (None, _) => format!("{what} unchanged"),
        (Some(id), Some(given)) if given != id.to_string() => format!("{what} {id} ({given})"),
        (Some(id), _) => format!("{what} {id}"),
    };
    let gid_label = match (gid, group, user) {
        (Some(gid), None, Some(user)) => format!("gid {gid} (primary group of {user})"),
        _ => label("gid", gid.map(Gid::as_raw), group),
    };
    let target = format!("{}, {gid_label}", label("uid", uid.map(Uid::as_raw), user));
    Ok(Some(Plan { uid, gid, target }))
}

/// The Linux capability ABI, version 3 (`_LINUX_CAPABILITY_VERSION_3`): one
/// header and two 32-bit data words covering capabilities 0..=63.
const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    /// 0: the calling thread.
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's (effective, permitted, inheritable) masks.
fn capget() -> Result<(u64, u64, u64), Errno> {
    let mut header = CapHeader { version: CAP_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array, as version 3 requires;
    // both live across the call.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut CapHeader, data.as_mut_ptr()) };
    Errno::result(rc)?;
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
        join(data[0].inheritable, data[1].inheritable),
    ))
}

/// Sets the calling thread's effective, permitted and inheritable sets.
/// A system call and nothing else: usable between `fork` and `exec`.
fn capset(effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
    let mut header = CapHeader { version: CAP_VERSION_3, pid: 0 };
    let word = |mask: u64, high: bool| if high { (mask >> 32) as u32 } else { mask as u32 };
    let data = [false, true].map(|high| CapData {
        effective: word(effective, high),
        permitted: word(permitted, high),
        inheritable: word(inheritable, high),
    });
    // SAFETY: as in capget; the kernel only reads `data`.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) };
    Errno::result(rc).map(drop)
}

/// `prctl(option, arg2, 0, 0, 0)`.
fn prctl2(option: libc::c_int, arg: libc::c_ulong) -> Result<libc::c_int, Errno> {
    let zero: libc::c_ulong = 0;
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(option, arg, zero, zero, zero) };
    Errno::result(rc)
}

/// The bounding set, read capability by capability up to the kernel's last.
fn bounding_set() -> Result<u64, Errno> {
    let mut mask = 0;
    for cap in 0..64 {
        match prctl2(libc::PR_CAPBSET_READ, cap) {
            Ok(1) => mask |= 1 << cap,
            Ok(_) => {}
            Err(Errno::EINVAL) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(mask)
}

/// Drops every capability outside `keep` from the bounding set (needs
/// CAP_SETPCAP: call it while still root).
fn limit_bounding_set(keep: u64) -> Result<(), Errno> {
    let present = bounding_set()?;
    for cap in 0..64 {
        if present & !keep & (1 << cap) != 0 {
            prctl2(libc::PR_CAPBSET_DROP, cap)?;
        }
    }
    Ok(())
}

/// Runs `f` with `caps` raised in the effective set, as far as they are
/// permitted (a process that kept nothing runs `f` as it is), and puts the
/// effective set back afterwards. For the monitor, which keeps CAP_SYS_ADMIN
/// permitted to enter its namespace again, never effective.
pub fn with_effective<T>(caps: &[Capability], f: impl FnOnce() -> T) -> T {
    let Ok((effective, permitted, inheritable)) = capget() else { return f() };
    let raised = effective | (mask_of(caps) & permitted);
    if raised == effective || capset(raised, permitted, inheritable).is_err() {
        return f();
    }
    let result = f();
    // Lowering within the permitted set cannot fail.
    let _ = capset(effective, permitted, inheritable);
    result
}

/// For a forked child, between `fork` and `exec`: raises `effective` (what
/// the child does before `exec`, such as `setns`) and makes `ambient` the
/// child's inheritable and ambient sets, so that the exec'd program, which
/// has no file capabilities, starts with exactly `ambient` (effective and
/// permitted) and nothing else. Both must be within the permitted set.
/// Only system calls, no allocation: async-signal-safe.
pub fn prepare_exec(effective: u64, ambient: u64) -> std::io::Result<()> {
    let (_, permitted, _) = capget()?;
    capset(effective & permitted, permitted, ambient & permitted)?;
    for cap in 0..64 {
        if ambient & (1 << cap) != 0 {
            prctl_ambient(libc::PR_CAP_AMBIENT_RAISE, cap)?;
        }
    }
    Ok(())
}

/// `prctl(PR_CAP_AMBIENT, op, cap, 0, 0)`.
fn prctl_ambient(op: libc::c_int, cap: libc::c_ulong) -> Result<libc::c_int, Errno> {
    let zero: libc::c_ulong = 0;
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, op as libc::c_ulong, cap, zero, zero) };
    Errno::result(rc)
}

/// Drops to `user`/`group`, keeping exactly `keep_caps` permitted, none
/// effective, the bounding set cut to them and `no_new_privs` set (see the
/// module invariants). `keep_caps` matters only when the uid changes from
/// root to another user; a group-only change, or a change to uid 0, leaves the
/// capabilities alone. A no-op when both are `None`, or when the process already
/// runs with exactly those ids (real, effective and saved) — Neutron's case
/// when the agent itself runs as root.
pub fn drop_to(user: Option<&str>, group: Option<&str>, keep_caps: &[Capability]) -> Result<(), PrivDropError> {
    let Some(plan) = plan(user, group)? else { return Ok(()) };
    let sys = |step: &str| {
        let target = plan.target.clone();
        let step = step.to_string();
        move |source| PrivDropError::Syscall { target, step, source }
    };
    let uids = nix::unistd::getresuid().map_err(sys("getresuid"))?;
    let gids = nix::unistd::getresgid().map_err(sys("getresgid"))?;
    let uid_done = plan.uid.is_none_or(|u| uids.real == u && uids.effective == u && uids.saved == u);
    let gid_done = plan.gid.is_none_or(|g| gids.real == g && gids.effective == g && gids.saved == g);
    if uid_done && gid_done {
        return Ok(());
    }

    // Groups first, while CAP_SETGID is still ours.
    let gid = plan.gid.unwrap_or(gids.effective);
    nix::unistd::setgroups(&[gid]).map_err(sys("setgroups"))?;
    if !gid_done {
        nix::unistd::setresgid(gid, gid, gid).map_err(sys("setresgid"))?;
    }
    if plan.uid.is_some_and(|uid| !uid_done && !uid.is_root()) {
        // While CAP_SETPCAP is still ours.
        limit_bounding_set(mask_of(keep_caps)).map_err(sys("prctl(PR_CAPBSET_DROP)"))?;
    }
    let dropping_root = match plan.uid {
        Some(uid) if !uid_done && uid.is_root() => {
            nix::unistd::setresuid(uid, uid, uid).map_err(sys("setresuid"))?;
            false
        }
        Some(uid) if !uid_done => {
            // Keep the permitted set across the uid change when something is
            // to be kept; the effective set is cleared anyway and restored
            // by capset.
            let keepcaps = !keep_caps.is_empty();
            if keepcaps {
                nix::sys::prctl::set_keepcaps(true).map_err(sys("prctl(PR_SET_KEEPCAPS, 1)"))?;
            }
            let result = nix::unistd::setresuid(uid, uid, uid)
                .map_err(sys("setresuid"))
                .and_then(|()| keep(keep_caps, &sys))
                .and_then(|()| nix::sys::prctl::set_no_new_privs().map_err(sys("prctl(PR_SET_NO_NEW_PRIVS)")));
            if keepcaps {
                // Exec clears it too; clear it now so nothing relies on it.
                let _ = nix::sys::prctl::set_keepcaps(false);
            }
            result?;
            true
        }
        _ => false,
    };
    verify(&plan, gid, dropping_root.then_some(keep_caps))
}

/// After the uid change: the permitted set becomes exactly `keep_caps`, the
/// effective and inheritable sets empty (a setuid without keepcaps clears
/// permitted and effective but not inheritable), and the ambient set is
/// cleared.
fn keep<F>(keep_caps: &[Capability], sys: &impl Fn(&str) -> F) -> Result<(), PrivDropError>
where
    F: FnOnce(Errno) -> PrivDropError,
{
    capset(0, mask_of(keep_caps), 0).map_err(sys("capset"))?;
    prctl_ambient(libc::PR_CAP_AMBIENT_CLEAR_ALL, 0).map_err(sys("prctl(PR_CAP_AMBIENT_CLEAR_ALL)"))?;
    Ok(())
}

/// Checks the module invariants. `keep_caps` is `Some` when a non-root uid
/// was just taken (capabilities and the no-way-back check apply).
fn verify(plan: &Plan, gid: Gid, keep_caps: Option<&[Capability]>) -> Result<(), PrivDropError> {
    let fail = |problem: String| PrivDropError::Verify { target: plan.target.clone(), problem };
    let uids = nix::unistd::getresuid().map_err(|e| fail(format!("getresuid: {e}")))?;
    if let Some(uid) = plan.uid
        && (uids.real != uid || uids.effective != uid || uids.saved != uid)
    {
        return Err(fail(format!("uids are {}/{}/{} (real/effective/saved)", uids.real, uids.effective, uids.saved)));
    }
    let gids = nix::unistd::getresgid().map_err(|e| fail(format!("getresgid: {e}")))?;
    if gids.real != gid || gids.effective != gid || gids.saved != gid {
        return Err(fail(format!("gids are {}/{}/{} (real/effective/saved)", gids.real, gids.effective, gids.saved)));
    }
    let groups = nix::unistd::getgroups().map_err(|e| fail(format!("getgroups: {e}")))?;
    if groups != [gid] {
        return Err(fail(format!("supplementary groups are {groups:?}")));
    }
    let Some(keep_caps) = keep_caps else { return Ok(()) };
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(fail("setuid(0) succeeded: root can be regained".to_string()));
    }
    let mask = mask_of(keep_caps);
    let (effective, permitted, inheritable) = capget().map_err(|e| fail(format!("capget: {e}")))?;
    if effective != 0 || permitted != mask || inheritable != 0 {
        return Err(fail(format!(
            "capabilities are effective {effective:#x}, permitted {permitted:#x}, inheritable {inheritable:#x}; \
             expected 0, {mask:#x}, 0"
        )));
    }
    for cap in 0..64 {
        match prctl_ambient(libc::PR_CAP_AMBIENT_IS_SET, cap) {
            Ok(0) => {}
            Ok(_) => return Err(fail(format!("capability {cap} is in the ambient set"))),
            Err(Errno::EINVAL) => break,
            Err(e) => return Err(fail(format!("prctl(PR_CAP_AMBIENT_IS_SET, {cap}): {e}"))),
        }
    }
    let bounding = bounding_set().map_err(|e| fail(format!("prctl(PR_CAPBSET_READ): {e}")))?;
    if bounding != mask {
        return Err(fail(format!("the bounding set is {bounding:#x}, expected {mask:#x}")));
    }
    if nix::sys::prctl::get_no_new_privs() != Ok(true) {
        return Err(fail("no_new_privs is not set".to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_numbers_and_masks() {
        assert_eq!(Capability::NetAdmin.number(), 12);
        assert_eq!(Capability::SysAdmin.number(), 21);
        assert_eq!(mask_of(&[Capability::SysAdmin, Capability::NetAdmin]), 0x20_1000);
        assert_eq!(mask_of(&[]), 0);
        assert_eq!(mask_of(CONNTRACKD_CAPS), 0x20_0002);
        assert_eq!(mask_of(CONNTRACKD_CHILD_CAPS), 0x2);
        assert_eq!(mask_of(CONNTRACKD_CHILD_CAPS) & !mask_of(CONNTRACKD_CAPS), 0, "the child's are kept");
        assert_eq!(Capability::NetAdmin.to_string(), "CAP_NET_ADMIN");
    }

    #[test]
    fn numeric_ids_need_no_database() {
        assert_eq!(resolve_user("4000000").expect("numeric").0, Uid::from_raw(4_000_000));
        assert_eq!(resolve_group("1000").expect("numeric"), Gid::from_raw(1000));
        assert_eq!(resolve_user("0").expect("root").0, Uid::from_raw(0));
    }

    #[test]
    fn names_resolve_through_the_database() {
        // root/uid 0 is in every user database.
        assert_eq!(resolve_user("root").expect("root"), (Uid::from_raw(0), Some(Gid::from_raw(0))));
        assert_eq!(resolve_user("0").expect("root").1, Some(Gid::from_raw(0)));
    }

    #[test]
    fn unknown_names_and_invalid_ids_are_errors_naming_them() {
        let err = resolve_user("no-such-user-harouterd").expect_err("unknown");
        assert_eq!(err.to_string(), "unknown user \"no-such-user-harouterd\": not a uid and not in the user database");
        let err = resolve_group("no-such-group-harouterd").expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown group \"no-such-group-harouterd\": not a gid and not in the group database"
        );
        let err = resolve_user("4294967295").expect_err("-1");
        assert_eq!(err.to_string(), "invalid user \"4294967295\": 4294967295 is not a valid id");
        assert!(matches!(resolve_group("4294967295"), Err(PrivDropError::InvalidId { .. })));
        // Negative numbers are not ids; as names they are unknown.
        assert!(matches!(resolve_user("-1"), Err(PrivDropError::UnknownUser { .. })));
    }

    #[test]
    fn plan_labels_and_defaults() {
        assert_eq!(plan(None, None).expect("plan"), None);
        let p = plan(Some("1000"), Some("1001")).expect("plan").expect("some");
        assert_eq!((p.uid, p.gid), (Some(Uid::from_raw(1000)), Some(Gid::from_raw(1001))));
        assert_eq!(p.target, "uid 1000, gid 1001");
        let p = plan(Some("root"), None).expect("plan").expect("some");
        assert_eq!(p.target, "uid 0 (root), gid 0 (primary group of root)");
        let p = plan(Some("root"), Some("root")).expect("plan").expect("some");
        assert_eq!(p.target, "uid 0 (root), gid 0 (root)");
        let p = plan(None, Some("0")).expect("plan").expect("some");
        assert_eq!((p.uid, p.gid), (None, Some(Gid::from_raw(0))));
        assert_eq!(p.target, "uid unchanged, gid 0");
        // A numeric user unknown to the database keeps the current gid.
        let p = plan(Some("4000000"), None).expect("plan").expect("some");
        assert_eq!(p.gid, None);
        assert_eq!(p.target, "uid 4000000, gid unchanged");
    }

    #[test]
    fn nothing_to_do_is_a_no_op_for_anyone() {
        drop_to(None, None, &[]).expect("no-op");
        drop_to(None, None, &[Capability::NetAdmin]).expect("no-op");
        // Already these ids: nothing is called, so this works unprivileged.
        let uid = nix::unistd::getuid().to_string();
        let gid = nix::unistd::getgid().to_string();
        let uids = nix::unistd::getresuid().expect("getresuid");
        let gids = nix::unistd::getresgid().expect("getresgid");
        if uids.real == uids.saved
            && uids.effective == uids.saved
            && gids.real == gids.saved
            && gids.effective == gids.saved
        {
            drop_to(Some(&uid), Some(&gid), &[Capability::NetAdmin]).expect("already there");
        }
    }

    #[test]
    fn capget_reads_this_thread() {
        let (effective, permitted, _) = capget().expect("capget");
        assert_eq!(effective & !permitted, 0, "effective is a subset of permitted");
    }
}
