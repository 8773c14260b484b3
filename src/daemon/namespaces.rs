//! The rtnetlink watch on each namespace, shared by its routers: opening it
//! (with backoff while the namespace is missing), noticing a namespace
//! deleted or re-created under /run/netns, and turning the namespace's view
//! into each router's VIP presence and HA interface.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mio::{Interest, Token};

use super::router::ErrorSource;
use super::supervision::Revive;
use super::{Daemon, NsKey, Source, Timer};
use crate::core::backoff::{Backoff, Retry};
use crate::core::ident::{Namespace, RouterId, namespace_name};
use crate::netlink::{Change, Read, RtSocket};
use crate::supervisor::Kind;
use crate::sys::event_loop::{Owner, Sources};
use crate::sys::netns::{NetnsDirWatch, NsIdentity};

/// Retrying a namespace that could not be opened: first after this, doubling.
const NS_RETRY_FIRST: Duration = Duration::from_secs(1);
const NS_RETRY_MAX: Duration = Duration::from_secs(30);
const NS_RETRY: Backoff = Backoff::new(NS_RETRY_FIRST, NS_RETRY_MAX);
/// First retry of a namespace whose file just appeared.
const NS_RETRY_SOON: Backoff = Backoff::new(Duration::from_millis(50), NS_RETRY_MAX);

/// The rtnetlink watch on one namespace, shared by its routers.
pub(super) struct NsWatch {
    pub(super) socket: Option<(RtSocket, Token)>,
    pub(super) routers: BTreeSet<RouterId>,
    pub(super) retry: Retry,
    pub(super) retry_pending: bool,
    /// The namespace the name meant when the socket was last opened: one
    /// with another identity is a new namespace (deleted and re-created).
    pub(super) identity: Option<NsIdentity>,
    /// The socket's delayed re-dump already has a [`Timer::Netlink`].
    pub(super) timer_at: Option<Instant>,
}

/// What the daemon last saw of a router's HA interface. keepalived 2.2.7
/// (without `dynamic_interfaces`, which Neutron's config does not set)
/// binds its VRRP instance to the interface's index: an interface deleted
/// and re-created leaves it in BACKUP for good, and one missing at start
/// makes it exit with a config error. Either way it must be revived once
/// the interface is there (a SIGHUP makes it re-read its interfaces; one
/// that exited is started).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HaLink {
    /// Not seen yet (before the namespace's first dump, or in a namespace
    /// just re-created).
    Unknown,
    Missing,
    Present(u32),
}

impl HaLink {
    /// The next value for the interface's index now (`None`: missing), and
    /// whether keepalived must be revived: the interface appeared after
    /// being seen missing, or is there with another index than before.
    pub(super) fn observe(self, index: Option<u32>) -> (HaLink, bool) {
        match (self, index) {
            (_, None) => (HaLink::Missing, false),
            (HaLink::Missing, Some(i)) => (HaLink::Present(i), true),
            (HaLink::Present(old), Some(i)) => (HaLink::Present(i), old != i),
            (HaLink::Unknown, Some(i)) => (HaLink::Present(i), false),
        }
    }
}

impl Daemon {
    pub(super) fn attach_namespace(&mut self, id: &RouterId, ns: NsKey, now: Instant) {
        if self.netns_dir.is_none() && matches!(ns, Some(Namespace::Named(_))) {
            self.netns_dir = watch_netns_dir(&mut self.sources, true);
        }
        let watch = self.namespaces.entry(ns.clone()).or_insert_with(|| NsWatch {
            socket: None,
            routers: BTreeSet::new(),
            retry: Retry::new(NS_RETRY),
            retry_pending: false,
            identity: None,
            timer_at: None,
        });
        watch.routers.insert(id.clone());
        if watch.socket.is_none() && !watch.retry_pending {
            self.open_namespace(&ns, now);
        } else {
            self.check_keepalived_namespace(id, now);
            self.evaluate(id, now);
        }
    }

    pub(super) fn open_namespace(&mut self, ns: &NsKey, now: Instant) {
        let Some(watch) = self.namespaces.get_mut(ns) else { return };
        watch.retry_pending = false;
        if watch.socket.is_some() {
            return;
        }
        match RtSocket::open(ns.as_ref(), None) {
            Ok(mut socket) => {
                let owner = Owner::Loop(Source::Netlink(ns.clone()));
                let token = match self.sources.register(&mut socket, owner, Interest::READABLE) {
                    Ok(token) => token,
                    Err(e) => {
                        log::error!("cannot watch rtnetlink in {}: {e}", namespace_name(ns.as_ref()));
                        return;
                    }
                };
                let watch = self.namespaces.get_mut(ns).expect("checked above");
                let identity = socket.identity();
                let recreated = watch.identity.is_some() && watch.identity != identity;
                watch.identity = identity;
                watch.socket = Some((socket, token));
                watch.retry = Retry::new(NS_RETRY);
                let routers: Vec<RouterId> = watch.routers.iter().cloned().collect();
                if recreated {
                    log::warn!(
                        "network namespace {} is a new one ({}; routers {})",
                        namespace_name(ns.as_ref()),
                        identity.map_or_else(String::new, |i| i.to_string()),
                        list(&routers)
                    );
                }
                for id in routers {
                    if let Some(r) = self.routers.get_mut(&id) {
                        r.rt.clear_error(ErrorSource::Namespace);
                        if recreated {
                            r.ha_link = HaLink::Unknown;
                        }
                    }
                    self.check_keepalived_namespace(&id, now);
                }
            }
            Err(e) => {
                let delay = watch.retry.failed();
                watch.retry_pending = true;
                let routers: Vec<RouterId> = watch.routers.iter().cloned().collect();
                if delay < NS_RETRY_FIRST {
                    log::debug!("{e}; retrying in {} ms", delay.as_millis());
                } else {
                    log::error!("{e} (routers {}); retrying in {} s", list(&routers), delay.as_secs());
                }
                self.timers.schedule(now + delay, Timer::ReopenNamespace(ns.clone()));
                for id in routers {
                    if let Some(r) = self.routers.get_mut(&id) {
                        r.rt.set_error(ErrorSource::Namespace, e.to_string());
                    }
                }
            }
        }
    }

    /// keepalived and conntrackd must run in the namespace the router's
    /// namespace name means now: one running elsewhere (the namespace was
    /// deleted and re-created, possibly while the daemon was down) is
    /// restarted, and one waiting out a respawn backoff (its namespace was
    /// missing) is started at once.
    pub(super) fn check_keepalived_namespace(&mut self, id: &RouterId, now: Instant) {
        for kind in [Kind::Conntrackd, Kind::Keepalived] {
            let Some(router) = self.routers.get(id) else { return };
            let Some(sup) = router.sup(kind).filter(|s| !s.is_stopping()) else { continue };
            let Some(want) = self.namespaces.get(&router.rt.cfg.namespace).and_then(|w| w.identity) else { return };
            let ns = namespace_name(router.rt.cfg.namespace.as_ref());
            let why = match sup.pid() {
                Some(pid) => match sup.netns() {
                    Some((dev, ino)) if (NsIdentity { dev, ino }) != want => {
                        format!("{kind} (pid {pid}) runs in an old instance of {ns}")
                    }
                    _ => continue,
                },
                None if sup.next_restart().is_some() => format!("network namespace {ns} is there now"),
                None => continue,
            };
            self.revive(id, kind, &why, Revive::Restart, now);
        }
    }

    /// A namespace file under /run/netns appeared or went away.
    pub(super) fn netns_dir_changed(&mut self, now: Instant) {
        let Some((watch, _)) = &self.netns_dir else { return };
        for change in watch.changes() {
            let path = change.path;
            let Some(ns) = self.namespaces.keys().find(|k| k.as_ref().is_some_and(|n| n.path() == path)).cloned()
            else {
                continue;
            };
            if change.deleted {
                self.namespace_deleted(&ns, now);
            } else if let Some(watch) = self.namespaces.get_mut(&ns).filter(|w| w.socket.is_none()) {
                // `ip netns add` creates the file before it bind-mounts the
                // namespace on it: if it is not ready yet, look again soon.
                watch.retry = Retry::new(NS_RETRY_SOON);
                self.open_namespace(&ns, now);
            }
        }
    }

    /// Closes a namespace's socket (counters kept for `/metrics`).
    pub(super) fn close_namespace(&mut self, ns: &NsKey) {
        self.netlink_more.retain(|n| n != ns);
        let Some(watch) = self.namespaces.get_mut(ns) else { return };
        watch.timer_at = None;
        if let Some((mut socket, token)) = watch.socket.take() {
            self.netlink_closed.0 += socket.resyncs();
            self.netlink_closed.1 += socket.undecodable();
            self.sources.deregister(&mut socket, token);
        }
    }

    /// Closing our socket lets the kernel free the namespace once nothing
    /// else holds it. Its routers show the error and are `backup` (their
    /// VIP is nowhere to be seen) until it comes back; their keepalived, if
    /// it still runs in the orphaned namespace, is left alone until then
    /// (the namespace's interfaces live on with it, and killing it would
    /// force a failover nobody asked for).
    pub(super) fn namespace_deleted(&mut self, ns: &NsKey, now: Instant) {
        self.close_namespace(ns);
        let Some(watch) = self.namespaces.get(ns) else { return };
        let routers: Vec<RouterId> = watch.routers.iter().cloned().collect();
        log::error!("network namespace {} was deleted (routers {})", namespace_name(ns.as_ref()), list(&routers));
        for id in routers {
            if let Some(r) = self.routers.get_mut(&id) {
                r.rt.set_error(
                    ErrorSource::Namespace,
                    format!("network namespace {} was deleted", namespace_name(ns.as_ref())),
                );
                if r.rt.vip_present.is_some() {
                    r.rt.vip_present = Some(false);
                }
            }
            self.feed_raw(&id, now);
        }
    }

    pub(super) fn netlink_ready(&mut self, ns: &NsKey, now: Instant) {
        let Some(watch) = self.namespaces.get_mut(ns) else { return };
        let Some((socket, _)) = watch.socket.as_mut() else { return };
        let mut changes = Vec::new();
        let result = socket.read(&mut self.scratch, now, &mut |c| changes.push(c));
        if matches!(result, Ok(Read::More)) && !self.netlink_more.contains(ns) {
            self.netlink_more.push(ns.clone());
        }
        if let Some(at) = socket.deadline().filter(|at| watch.timer_at != Some(*at)) {
            watch.timer_at = Some(at);
            self.timers.schedule(at, Timer::Netlink(ns.clone()));
        }
        let routers: Vec<RouterId> = watch.routers.iter().cloned().collect();
        for change in changes {
            match change {
                Change::Resynced => {
                    for id in &routers {
                        self.evaluate(id, now);
                    }
                }
                Change::Overrun => {
                    log::warn!(
                        "rtnetlink overrun in {}: discarding what is queued and re-reading",
                        namespace_name(ns.as_ref())
                    );
                }
                change @ Change::Addr { .. } => {
                    for id in &routers {
                        let Some(r) = self.routers.get_mut(id) else { continue };
                        // Before the first dump, the dump tells.
                        let Some(present) = r.rt.vip().changed(&change).filter(|_| r.rt.vip_present.is_some()) else {
                            continue;
                        };
                        r.rt.vip_present = Some(present);
                        self.feed_raw(id, now);
                    }
                }
                Change::LinkGone { ifname } | Change::LinkAdded { ifname } => {
                    for id in &routers {
                        if self.routers.get(id).is_some_and(|r| r.rt.cfg.ha_interface == ifname) {
                            self.evaluate(id, now);
                        }
                    }
                }
            }
        }
        if let Err(e) = result {
            log::error!("{e}; reopening");
            self.close_namespace(ns);
            self.open_namespace(ns, now);
        }
    }

    /// Re-derives a router's VIP presence and HA interface from its
    /// namespace's view; revives keepalived when the HA interface came
    /// back as a new interface.
    pub(super) fn evaluate(&mut self, id: &RouterId, now: Instant) {
        let Some(router) = self.routers.get(id) else { return };
        let Some(watch) = self.namespaces.get(&router.rt.cfg.namespace) else { return };
        let Some((socket, _)) = watch.socket.as_ref().filter(|(s, _)| s.is_synced()) else { return };
        let view = socket.view();
        let index = view.link_index(&router.rt.cfg.ha_interface);
        let present = router.rt.vip().present(view);
        let Some(router) = self.routers.get_mut(id) else { return };
        let (ha_link, came_back) = router.ha_link.observe(index);
        router.ha_link = ha_link;
        if index.is_some() {
            router.rt.clear_error(ErrorSource::HaInterface);
        } else {
            let message = format!(
                "HA interface {} not found in {}",
                router.rt.cfg.ha_interface,
                namespace_name(router.rt.cfg.namespace.as_ref())
            );
            if router.rt.last_error() != Some(message.as_str()) {
                log::warn!("router {id}: {message}");
            }
            router.rt.set_error(ErrorSource::HaInterface, message);
        }
        router.rt.vip_present = Some(present);
        let why = format!(
            "HA interface {} is back as a new interface (ifindex {})",
            router.rt.cfg.ha_interface,
            index.unwrap_or_default()
        );
        self.feed_raw(id, now);
        if came_back {
            // conntrackd's multicast membership was on the interface that
            // went: only a new conntrackd joins the group on this one.
            self.revive(id, Kind::Conntrackd, &why, Revive::Restart, now);
            self.revive(id, Kind::Keepalived, &why, Revive::Sighup, now);
        }
    }
}

/// Watches /run/netns for namespaces created and deleted under us (see
/// [`NetnsDirWatch`]). With `create`, the directory is made when it does not
/// exist yet; without, a missing one is not a problem (it is made when a
/// router first needs a named namespace).
pub(super) fn watch_netns_dir(sources: &mut Sources<Source>, create: bool) -> Option<(NetnsDirWatch, Token)> {
    let watched = NetnsDirWatch::new(create).and_then(|mut watch| {
        let owner = Owner::Loop(Source::NetnsDir);
        match sources.register(&mut watch, owner, Interest::READABLE) {
            Ok(token) => Ok((watch, token)),
            Err(e) => Err(format!("cannot watch /run/netns: {e}")),
        }
    });
    match watched {
        Ok(watched) => Some(watched),
        Err(e) if create => {
            log::warn!("{e}; a deleted namespace will not be noticed");
            None
        }
        Err(e) => {
            log::debug!("{e} (until a router needs a named namespace)");
            None
        }
    }
}

/// Router IDs for a log line.
fn list(ids: &[RouterId]) -> String {
    ids.iter().map(RouterId::as_str).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha_interface_back_as_a_new_interface_revives_keepalived() {
        use HaLink::{Missing, Present, Unknown};
        // Seen for the first time: whatever keepalived did, nothing is known
        // to be stale.
        assert_eq!(Unknown.observe(Some(7)), (Present(7), false));
        assert_eq!(Unknown.observe(None), (Missing, false));
        assert_eq!(Present(7).observe(Some(7)), (Present(7), false));
        // Deleted, then back: revive (keepalived holds the old index, or
        // exited when it found no interface).
        assert_eq!(Present(7).observe(None), (Missing, false));
        assert_eq!(Missing.observe(None), (Missing, false));
        assert_eq!(Missing.observe(Some(9)), (Present(9), true));
        // Deleted and re-created between two looks (one read, or an
        // overrun's re-dump): the index tells.
        assert_eq!(Present(7).observe(Some(9)), (Present(9), true));
    }
}
