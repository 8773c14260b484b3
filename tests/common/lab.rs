//! A VRRP lab for tests of `harouterd run`: one or two "nodes", each a real
//! daemon with its own config, state_path, pidfile, log (its stderr),
//! transition-script output and agent receiver, and for each router one
//! network namespace per node. On two nodes a keepalived router's twin
//! namespaces are joined by a veth pair `ha-ID` (169.254.192.1/18 on the
//! first node, .2 on the second), so the two keepalived do real VRRP; on one
//! node `ha-ID` is a veth whose peer stays in the same namespace.
//!
//! What the daemons think is observed only through their files (state
//! files, pidfiles, keepalived.conf), their logs, a transition script that
//! appends `EPOCH.NANOS ROUTER STATE` to a file, and a real HTTP receiver on
//! `notify_agent_socket`; what is true is read with `ip -n NS addr show`.
//!
//! Cleanup always happens, in order (also when a test panics): the daemons
//! are killed, then every process whose command line names the lab's
//! directory (keepalived outlives its daemon with `on_exit = keep`, and
//! transition scripts may still run), then the namespaces, then the
//! directory.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::http_receiver::{Notification, Receiver};
use super::{Netns, TempDir, run_ok, tool};

/// How often the `wait_*` helpers look again.
pub const POLL: Duration = Duration::from_millis(20);

/// The daemon under test.
pub fn harouterd() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_harouterd"))
}

/// Polls `f` every [`POLL`] until it returns `Some` or `timeout` passes;
/// returns the value and how long it took.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<(T, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some((v, start.elapsed()));
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `f` until it holds or `timeout` passes; how long it took.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    wait_for(timeout, || f().then_some(())).map(|((), d)| d)
}

/// Asserts that nothing happens for `window`: `check` (what must stay true,
/// `Err` saying what changed) is looked at every [`POLL`] through the whole
/// window and once more at its end, and the first failure panics at once
/// with `what`. For tests whose point is an absence (no reload, no flap, no
/// announcement); the window is the time the thing would need to show.
pub fn expect_nothing_happens(window: Duration, what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let end = Instant::now() + window;
    loop {
        if let Err(e) = check() {
            panic!("{what}: {e}");
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(POLL));
    }
}

/// How long process `pid` has been running (from `/proc/PID/stat` and
/// `/proc/uptime`), `None` when it is gone.
pub fn process_age(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let start_ticks: f64 = fields.get(22 - 3)?.parse().ok()?;
    // SAFETY: sysconf with a valid name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let uptime: f64 = fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_secs_f64((uptime - start_ticks / hz).max(0.0)))
}

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Seconds since the epoch, as the transition script's `date +%s.%N` writes.
pub fn epoch_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The pid in a pidfile, if it holds one.
pub fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `/proc/PID/cmdline` with NULs as spaces; empty for a zombie or a gone pid.
pub fn cmdline(pid: u32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ").trim_end().to_string()
}

/// Live processes whose command line contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    pids.retain(|&pid| pid != me && cmdline(pid).contains(needle));
    pids.sort_unstable();
    pids
}

pub fn send_signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a pid we were given and a valid signal number.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill -{signal} {pid}: {}", std::io::Error::last_os_error());
}

/// One router of the lab.
#[derive(Clone, Debug)]
pub struct RouterSpec {
    pub id: String,
    pub vrid: u8,
    /// `false`: `keepalived = false` (monitor only).
    pub keepalived: bool,
    /// Interfaces created in the router's namespace on every node (a veth
    /// whose peer stays in the namespace), e.g. `qr-r1` for extra VIPs.
    pub extra_interfaces: Vec<String>,
    /// Extra lines for the `[router ID]` section (`vip = ...`, `advert_int = 3`).
    pub extra: Vec<String>,
    /// Routers with the same name here share one namespace on each node
    /// (by default each router has its own).
    pub namespace: Option<String>,
    /// The HA interface's name, when not `ha-ID`.
    pub ha: Option<String>,
    /// Gets `ha_address =` the node's own address on the HA veth
    /// (169.254.192.1 on the first node, .2 on the second), as conntrackd
    /// needs.
    pub ha_address: bool,
}

impl RouterSpec {
    pub fn new(id: &str, vrid: u8) -> RouterSpec {
        RouterSpec {
            id: id.into(),
            vrid,
            keepalived: true,
            extra_interfaces: Vec::new(),
            extra: Vec::new(),
            namespace: None,
            ha: None,
            ha_address: false,
        }
    }

    pub fn monitor_only(id: &str, vrid: u8) -> RouterSpec {
        RouterSpec { keepalived: false, ..RouterSpec::new(id, vrid) }
    }

    pub fn with_interface(mut self, name: &str) -> RouterSpec {
        self.extra_interfaces.push(name.into());
        self
    }

    pub fn with_line(mut self, line: &str) -> RouterSpec {
        self.extra.push(line.into());
        self
    }

    /// Shares the namespace named `group` with the other routers in it.
    pub fn in_namespace(mut self, group: &str) -> RouterSpec {
        self.namespace = Some(group.into());
        self
    }

    /// Writes each node's own HA address as `ha_address`.
    pub fn with_ha_address(mut self) -> RouterSpec {
        self.ha_address = true;
        self
    }

    pub fn with_ha_interface(mut self, name: &str) -> RouterSpec {
        self.ha = Some(name.into());
        self
    }

    pub fn ha_interface(&self) -> String {
        self.ha.clone().unwrap_or_else(|| format!("ha-{}", self.id))
    }

    /// Which namespace of a node the router lives in.
    fn namespace_key(&self) -> String {
        self.namespace.clone().unwrap_or_else(|| self.id.clone())
    }

    /// What the renderer computes for the default HA network (SPEC 3.3).
    pub fn primary_vip(&self) -> String {
        format!("169.254.0.{}/24", self.vrid)
    }
}

/// A line the transition script wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// Wall clock, seconds since the epoch.
    pub at: f64,
    pub router: String,
    pub state: String,
}

/// One daemon and its files.
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub state_path: PathBuf,
    pub ha_confs: PathBuf,
    pub pidfile: PathBuf,
    pub log: PathBuf,
    pub transitions_file: PathBuf,
    pub agent: Receiver,
    /// Extra `[daemon]` lines.
    pub daemon_extra: Vec<String>,
    /// `--log-level` (`debug` unless a test floods the log).
    pub log_level: &'static str,
    /// Behind a lock so a test can wait for one node while it holds
    /// references to another.
    child: Mutex<Option<Child>>,
}

impl Node {
    pub fn router_dir(&self, id: &str) -> PathBuf {
        self.ha_confs.join(id)
    }

    pub fn conf(&self, id: &str) -> PathBuf {
        self.router_dir(id).join("keepalived.conf")
    }

    pub fn state_file(&self, id: &str) -> PathBuf {
        self.router_dir(id).join("state")
    }

    pub fn pid_file(&self, id: &str) -> PathBuf {
        self.ha_confs.join(format!("{id}.pid.keepalived"))
    }

    pub fn vrrp_pid_file(&self, id: &str) -> PathBuf {
        self.ha_confs.join(format!("{id}.pid.keepalived-vrrp"))
    }

    /// The raw state the daemon recorded (`primary`, `backup`, `fault`).
    pub fn state(&self, id: &str) -> Option<String> {
        fs::read_to_string(self.state_file(id)).ok()
    }

    /// The router's keepalived according to its pidfile, if that pid is
    /// alive and runs with the router's config (the daemon's own rule).
    pub fn keepalived_pid(&self, id: &str) -> Option<u32> {
        let pid = read_pid(&self.pid_file(id))?;
        cmdline(pid).contains(&format!("-f {}", self.conf(id).display())).then_some(pid)
    }

    /// Likewise for its VRRP child.
    pub fn vrrp_pid(&self, id: &str) -> Option<u32> {
        let pid = read_pid(&self.vrrp_pid_file(id))?;
        cmdline(pid).contains(&format!("-f {}", self.conf(id).display())).then_some(pid)
    }

    /// Every live process running with the router's config.
    pub fn keepalived_processes(&self, id: &str) -> Vec<u32> {
        processes_matching(&format!("-f {} ", self.conf(id).display()))
    }

    pub fn conntrackd_conf(&self, id: &str) -> PathBuf {
        self.router_dir(id).join("conntrackd.conf")
    }

    /// The router's conntrackd according to its pidfile (the daemon's,
    /// `ID/conntrackd.pid`), if that pid is alive and runs `-C CONF` (the
    /// daemon, not a client command).
    pub fn conntrackd_pid(&self, id: &str) -> Option<u32> {
        let pid = read_pid(&self.router_dir(id).join("conntrackd.pid"))?;
        cmdline(pid).ends_with(&format!(" -C {}", self.conntrackd_conf(id).display())).then_some(pid)
    }

    /// Every live conntrackd daemon (not a client command) with the
    /// router's config.
    pub fn conntrackd_processes(&self, id: &str) -> Vec<u32> {
        let daemon = format!(" -C {}", self.conntrackd_conf(id).display());
        processes_matching(&daemon).into_iter().filter(|&p| cmdline(p).ends_with(&daemon)).collect()
    }

    pub fn transitions(&self) -> Vec<Transition> {
        fs::read_to_string(&self.transitions_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let at = w.next()?.parse().ok()?;
                Some(Transition { at, router: w.next()?.into(), state: w.next()?.into() })
            })
            .collect()
    }

    /// The states the transition script was run with for one router.
    pub fn transitions_of(&self, id: &str) -> Vec<String> {
        self.transitions().into_iter().filter(|t| t.router == id).map(|t| t.state).collect()
    }

    pub fn last_transition(&self, id: &str) -> Option<String> {
        self.transitions_of(id).pop()
    }

    pub fn notifications_of(&self, id: &str) -> Vec<Notification> {
        self.agent.notifications().into_iter().filter(|n| n.router_id == id).collect()
    }

    pub fn last_notification(&self, id: &str) -> Option<String> {
        self.notifications_of(id).pop().map(|n| n.state)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The control socket (the default under `state_path`).
    pub fn socket(&self) -> PathBuf {
        self.state_path.join("harouterd.sock")
    }

    /// Waits until the daemon answers on its control socket: its loop runs,
    /// so everything it does when it starts (adopting, reloading, stopping
    /// keepalived) or on a signal it has read is done.
    pub fn wait_answering(&self, timeout: Duration) {
        wait_until(timeout, || super::http_get(&self.socket(), "/v1/routers").0 == Some(200))
            .unwrap_or_else(|| panic!("node {} does not answer on its control socket\n{}", self.name, self.log_text()));
    }

    /// Starts the daemon in the foreground, stderr appended to the log.
    pub fn start(&self) {
        assert!(!self.is_running(), "node {} already running", self.name);
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("open log");
        let child = Command::new(harouterd())
            .arg("run")
            .arg("-c")
            .arg(&self.config)
            .arg("--foreground")
            .arg("--pidfile")
            .arg(&self.pidfile)
            .args(["--log-level", self.log_level])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start harouterd for node {}: {e}", self.name));
        *self.child() = Some(child);
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child().as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn signal(&self, signal: libc::c_int) {
        send_signal(self.pid().expect("daemon started"), signal);
    }

    /// Waits for the daemon to exit; its status, or `None` on timeout.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let mut guard = self.child();
        let child = guard.as_mut()?;
        wait_for(timeout, || child.try_wait().ok().flatten()).map(|(s, _)| s)
    }

    /// `kill -9` the daemon and reap it.
    pub fn kill9(&self) {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The lab: nodes, routers, namespaces, one directory. The one harness
/// of every test that runs `harouterd run`: VRRP between two nodes, a
/// control socket's peers, hundreds of monitor-only routers under fire.
pub struct Lab {
    pub nodes: Vec<Node>,
    pub routers: Vec<RouterSpec>,
    /// By node and namespace key (see [`RouterSpec::in_namespace`]).
    namespaces: BTreeMap<(usize, String), Netns>,
    dir: TempDir,
}

impl Lab {
    /// Builds the namespaces and links and writes each node's config and
    /// transition script. `daemon_extra`: lines for every node's `[daemon]`
    /// (each node's own can be changed through `nodes[i].daemon_extra`
    /// before [`Lab::write_config`]). Nothing is started.
    pub fn new(tag: &str, node_names: &[&str], routers: Vec<RouterSpec>, daemon_extra: &[&str]) -> Lab {
        Lab::build(tag, node_names, routers, daemon_extra, true)
    }

    /// [`Lab::new`] without the transition script and the agent socket in
    /// the config (their receivers see nothing), and logging at `info`: for
    /// tests that make thousands of changes, where a script run or a debug
    /// line for each would be the load.
    pub fn plain(tag: &str, node_names: &[&str], routers: Vec<RouterSpec>, daemon_extra: &[&str]) -> Lab {
        Lab::build(tag, node_names, routers, daemon_extra, false)
    }

    fn build(tag: &str, node_names: &[&str], routers: Vec<RouterSpec>, daemon_extra: &[&str], hooks: bool) -> Lab {
        assert!(matches!(node_names.len(), 1 | 2), "one or two nodes");
        let dir = TempDir::new(&format!("lab-{tag}"));
        let mut nodes = Vec::new();
        for name in node_names {
            let node_dir = dir.join(name);
            fs::create_dir(&node_dir).expect("node dir");
            let transitions_file = node_dir.join("transitions");
            let script = node_dir.join("transition.sh");
            fs::write(&script, format!("#!/bin/sh\necho \"$(date +%s.%N) $1 $2\" >> {}\n", transitions_file.display()))
                .expect("write transition script");
            fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod script");
            let state_path = node_dir.join("state");
            let agent_socket = node_dir.join("agent.sock");
            let mut extra = vec![
                format!("state_path = {}", state_path.display()),
                format!("keepalived_path = {}", tool("keepalived").display()),
                "ha_vrrp_advert_int = 1".to_string(),
            ];
            if hooks {
                extra.push(format!("transition_script = {}", script.display()));
                extra.push(format!("notify_agent_socket = {}", agent_socket.display()));
            }
            extra.extend(daemon_extra.iter().map(|s| s.to_string()));
            nodes.push(Node {
                name: name.to_string(),
                config: node_dir.join("harouterd.conf"),
                ha_confs: state_path.join("ha_confs"),
                state_path,
                pidfile: node_dir.join("harouterd.pid"),
                log: node_dir.join("harouterd.log"),
                transitions_file,
                agent: Receiver::start(&agent_socket),
                daemon_extra: extra,
                log_level: if hooks { "debug" } else { "info" },
                dir: node_dir,
                child: Mutex::new(None),
            });
        }
        let mut lab = Lab { nodes, routers, namespaces: BTreeMap::new(), dir };
        lab.build_networks(tag);
        for i in 0..lab.nodes.len() {
            lab.write_config(i);
        }
        lab.check_primary_vips();
        lab
    }

    fn build_networks(&mut self, tag: &str) {
        let two = self.nodes.len() == 2;
        // Each namespace, and what goes into it in one `ip -batch`.
        let mut batches: BTreeMap<(usize, String), String> = BTreeMap::new();
        for r in self.routers.clone() {
            let key = r.namespace_key();
            for (i, node) in self.nodes.iter().enumerate() {
                self.namespaces
                    .entry((i, key.clone()))
                    .or_insert_with(|| Netns::new(&format!("{tag}-{}-{key}", node.name)));
            }
            let ha = r.ha_interface();
            if two && r.keepalived {
                let (a, b) = (&self.namespaces[&(0, key.clone())], &self.namespaces[&(1, key.clone())]);
                run_ok(
                    tool("ip"),
                    &["link", "add", &ha, "netns", a.name(), "type", "veth", "peer", "name", &ha, "netns", b.name()],
                );
                for (n, ns) in [a, b].into_iter().enumerate() {
                    ns.ip(&["link", "set", &ha, "up"]);
                    ns.ip(&["addr", "add", &format!("169.254.192.{}/18", n + 1), "dev", &ha]);
                }
            } else {
                for i in 0..self.nodes.len() {
                    let batch = batches.entry((i, key.clone())).or_default();
                    veth_lines(batch, &ha);
                    if r.keepalived {
                        // keepalived goes FAULT on an interface without IPv4.
                        batch.push_str(&format!("addr add 169.254.192.{}/18 dev {ha}\n", i + 1));
                    }
                }
            }
            for i in 0..self.nodes.len() {
                let batch = batches.entry((i, key.clone())).or_default();
                for name in &r.extra_interfaces {
                    veth_lines(batch, name);
                }
            }
        }
        for ((i, key), text) in batches {
            let ns = &self.namespaces[&(i, key.clone())];
            let file = self.dir.join(format!("net-{i}-{key}"));
            fs::write(&file, text).expect("write the network batch");
            run_ok(tool("ip"), &["-n", ns.name(), "-batch", &file.display().to_string()]);
        }
    }

    /// `harouterd render --router ID` puts the primary VIP we expect on the
    /// HA interface (the lab's notion of "where the VIP is" hangs on it).
    fn check_primary_vips(&self) {
        for r in self.routers.iter().filter(|r| r.keepalived) {
            let out =
                run_ok(harouterd(), &["render", "-c", &self.nodes[0].config.display().to_string(), "--router", &r.id]);
            let text = String::from_utf8_lossy(&out.stdout);
            let line = format!("{} dev {}", r.primary_vip(), r.ha_interface());
            assert!(text.contains(&line), "render of {} lacks `{line}`:\n{text}", r.id);
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn router(&self, id: &str) -> &RouterSpec {
        self.routers.iter().find(|r| r.id == id).unwrap_or_else(|| panic!("no router {id}"))
    }

    pub fn ids(&self) -> Vec<String> {
        self.routers.iter().map(|r| r.id.clone()).collect()
    }

    /// The namespace of router `id` on node `node`.
    pub fn ns(&self, node: usize, id: &str) -> &Netns {
        &self.namespaces[&(node, self.router(id).namespace_key())]
    }

    /// The config text for a node, from the current router specs.
    pub fn config_text(&self, node: usize) -> String {
        let n = &self.nodes[node];
        let mut text = String::from("[daemon]\n");
        for line in &n.daemon_extra {
            text.push_str(line);
            text.push('\n');
        }
        for r in &self.routers {
            text.push_str(&format!(
                "\n[router {}]\nnamespace = {}\nha_interface = {}\nvrid = {}\n",
                r.id,
                self.ns(node, &r.id).name(),
                r.ha_interface(),
                r.vrid
            ));
            if !r.keepalived {
                text.push_str("keepalived = false\n");
            }
            if r.ha_address {
                text.push_str(&format!("ha_address = 169.254.192.{}\n", node + 1));
            }
            for line in &r.extra {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    pub fn write_config(&self, node: usize) {
        let n = &self.nodes[node];
        fs::write(&n.config, self.config_text(node)).expect("write config");
        fs::set_permissions(&n.config, fs::Permissions::from_mode(0o600)).expect("chmod config");
    }

    /// The addresses on `dev` in router `id`'s namespace on `node` (empty
    /// when the namespace or the interface is gone).
    pub fn addrs(&self, node: usize, id: &str, dev: &str) -> String {
        let out =
            Command::new(tool("ip")).args(["-n", self.ns(node, id).name(), "-o", "addr", "show", "dev", dev]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    }

    /// Whether `cidr` (e.g. `10.0.0.1/24`) is on `dev` in router `id`'s
    /// namespace on `node`.
    pub fn has_addr(&self, node: usize, id: &str, dev: &str, cidr: &str) -> bool {
        self.addrs(node, id, dev).split_whitespace().any(|w| w == cidr)
    }

    /// Whether the router's primary VIP really is on `node`.
    pub fn vip_on(&self, node: usize, id: &str) -> bool {
        let r = self.router(id);
        self.has_addr(node, id, &r.ha_interface(), &r.primary_vip())
    }

    /// The nodes where the router's primary VIP is.
    pub fn holders(&self, id: &str) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&n| self.vip_on(n, id)).collect()
    }

    /// `Ok(holder)` when exactly one node holds the router's primary VIP
    /// and every node's state file, last transition-script run and last
    /// agent notification agree with where it is.
    pub fn consistent(&self, id: &str) -> Result<usize, String> {
        let holders = self.holders(id);
        let [holder] = holders[..] else {
            return Err(format!("router {id}: VIP held by nodes {holders:?}"));
        };
        for (i, node) in self.nodes.iter().enumerate() {
            let want = if i == holder { "primary" } else { "backup" };
            let got = (node.state(id), node.last_transition(id), node.last_notification(id));
            if got != (Some(want.into()), Some(want.into()), Some(want.into())) {
                return Err(format!(
                    "router {id}: VIP on node {}, node {} records (state file, script, agent) = {got:?}",
                    self.nodes[holder].name, node.name
                ));
            }
        }
        Ok(holder)
    }

    /// [`Lab::consistent`] for every router: their holders, in router order.
    pub fn all_consistent(&self) -> Result<Vec<usize>, String> {
        self.routers.iter().map(|r| self.consistent(&r.id)).collect()
    }

    /// Waits until every router is consistent; panics with the last
    /// discrepancy after `timeout`.
    pub fn wait_consistent(&self, timeout: Duration) -> (Vec<usize>, Duration) {
        let mut last = String::new();
        wait_for(timeout, || self.all_consistent().map_err(|e| last = e).ok())
            .unwrap_or_else(|| panic!("not consistent after {timeout:?}: {last}\n{}", self.dump()))
    }

    /// Starts node 0, waits until it holds every keepalived router's VIP,
    /// then starts the others: with equal priorities and nopreempt node 0
    /// then stays primary everywhere, which makes roles known in advance.
    pub fn start_staggered(&self, timeout: Duration) -> Duration {
        self.nodes[0].start();
        let ids: Vec<String> = self.routers.iter().filter(|r| r.keepalived).map(|r| r.id.clone()).collect();
        let took = wait_until(timeout, || ids.iter().all(|id| self.vip_on(0, id)))
            .unwrap_or_else(|| panic!("node {} never became primary everywhere\n{}", self.nodes[0].name, self.dump()));
        for n in self.nodes.iter().skip(1) {
            n.start();
        }
        took
    }

    pub fn start_all(&self) {
        for n in &self.nodes {
            n.start();
        }
    }

    /// Everything useful for a failure message.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            s.push_str(&format!("==== node {} (daemon pid {:?})\n", n.name, n.pid()));
            for r in &self.routers {
                s.push_str(&format!(
                    "  {}: vip_here={} state={:?} script={:?} agent={:?} keepalived={:?}\n",
                    r.id,
                    self.vip_on(i, &r.id),
                    n.state(&r.id),
                    n.transitions_of(&r.id),
                    n.notifications_of(&r.id).iter().map(|x| x.state.clone()).collect::<Vec<_>>(),
                    n.keepalived_pid(&r.id)
                ));
            }
            let log = n.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            s.push_str("  log tail:\n");
            for l in tail.into_iter().rev() {
                s.push_str("    ");
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

/// `ip -batch` lines for the interface `name`: one end of a veth pair whose
/// peer (a generated name) stays in the same namespace, both ends up. (The
/// `dummy` link type is not available on every test kernel; veth is.)
fn veth_lines(batch: &mut String, name: &str) {
    if batch.contains(&format!("link add {name} ")) {
        return;
    }
    let peer = super::unique_ifname();
    batch.push_str(&format!("link add {name} type veth peer name {peer}\nlink set {name} up\nlink set {peer} up\n"));
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.kill9();
        }
        // keepalived (on_exit = keep, or a daemon killed), scripts: anything
        // naming our directory.
        let needle = format!("{}/", self.dir.path().display());
        for _ in 0..3 {
            let left = processes_matching(&needle);
            if left.is_empty() {
                break;
            }
            for pid in left {
                // SAFETY: kill(2); the pid may be gone already, which is fine.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            wait_until(Duration::from_secs(2), || processes_matching(&needle).is_empty());
        }
        self.namespaces.clear();
    }
}

/// Opens of files under some directories, with the pid and the command
/// name of the opener and when it was seen, through fanotify. keepalived
/// 2.2.7 opens its config once at start and once per SIGHUP it acts on, so
/// the opens of `keepalived.conf` by a process named `keepalived` count its
/// reloads. (An inotify watch would also count the daemon's own reads of the
/// file.) A thread drains the queue as events come: the kernel merges an
/// open into an identical one (same file, same pid) still unread, which
/// would hide a second reload. The test process's own opens are left out.
pub struct OpenWatch {
    shared: Arc<(Mutex<Vec<Opened>>, AtomicBool)>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub pid: u32,
    pub comm: String,
    pub path: PathBuf,
    /// When the watcher read it (within milliseconds of the open).
    pub seen: Instant,
}

impl OpenWatch {
    pub fn new(dirs: &[PathBuf]) -> OpenWatch {
        // SAFETY: fanotify_init returns a new fd or -1.
        let raw = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK,
                (libc::O_RDONLY | libc::O_LARGEFILE) as libc::c_uint,
            )
        };
        assert!(raw >= 0, "fanotify_init: {}", std::io::Error::last_os_error());
        // SAFETY: the kernel just returned this fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        for dir in dirs {
            let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("no NUL");
            // SAFETY: valid fd and NUL-terminated path.
            let rc = unsafe {
                libc::fanotify_mark(
                    fd.as_raw_fd(),
                    libc::FAN_MARK_ADD,
                    libc::FAN_OPEN | libc::FAN_EVENT_ON_CHILD,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                )
            };
            assert_eq!(rc, 0, "fanotify_mark {}: {}", dir.display(), std::io::Error::last_os_error());
        }
        let shared = Arc::new((Mutex::new(Vec::new()), AtomicBool::new(false)));
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("open-watch".into())
                .spawn(move || drain(&fd, &shared))
                .expect("start the fanotify reader")
        };
        OpenWatch { shared, thread: Some(thread) }
    }

    /// Every open seen so far.
    pub fn events(&self) -> Vec<Opened> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Opens of `path` by processes named keepalived.
    pub fn keepalived_opens(&self, path: &Path) -> Vec<Opened> {
        self.events().into_iter().filter(|o| o.path == path && o.comm == "keepalived").collect()
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.shared.1.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn drain(fd: &OwnedFd, shared: &(Mutex<Vec<Opened>>, AtomicBool)) {
    let mut buf = vec![0u8; 16 * 1024];
    let header = std::mem::size_of::<libc::fanotify_event_metadata>();
    while !shared.1.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 20) } <= 0 {
            continue;
        }
        // SAFETY: reading into a local buffer of the given size.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let Ok(n) = usize::try_from(n) else { continue };
        let seen = Instant::now();
        let mut off = 0;
        let mut batch = Vec::new();
        while off + header <= n {
            // SAFETY: the kernel wrote a whole metadata record here;
            // read_unaligned copes with the byte buffer's alignment.
            let meta: libc::fanotify_event_metadata = unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            assert!(meta.mask & libc::FAN_Q_OVERFLOW == 0, "fanotify queue overflow");
            if meta.fd >= 0 {
                // SAFETY: the event's fd is ours to close.
                let file = unsafe { OwnedFd::from_raw_fd(meta.fd) };
                let path = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap_or_default();
                let pid = meta.pid as u32;
                // The test's own reads of the files are not of interest.
                if pid != std::process::id() {
                    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string();
                    batch.push(Opened { pid, comm, path, seen });
                }
            }
            off += (meta.event_len as usize).max(header);
        }
        shared.0.lock().unwrap_or_else(|e| e.into_inner()).extend(batch);
    }
}
