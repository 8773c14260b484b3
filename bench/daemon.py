#!/usr/bin/env python3
"""Benchmark of `harouterd run`, the daemon (SPEC section 5), Python 3.11 stdlib only.

Three parts, each with its own daemon, config and namespaces (`--only`):

- respawn: one router with real keepalived in a namespace; keepalived is
  killed with SIGKILL `--kills` times, far enough apart (`--kill-gap`) that
  the daemon's crash-loop backoff does not apply, and the time until the
  pidfile names a new live keepalived running our config is taken (target
  < 100 ms). Then a `--burst` of kills in a row shows the backoff (100 ms
  doubling), and keepalived's own start-up is timed without the daemon.
- ctrespawn: the same for the router's conntrackd (`ha_conntrackd_enabled`,
  real conntrackd): `--ct-kills` SIGKILLs, each timed until the daemon's
  `ID/conntrackd.pid` names a new live conntrackd running our config
  (target < 100 ms), and until its control socket is there (it is up).
- idle: context switches of the daemon over `--idle` seconds with 100
  monitor-only routers in 100 namespaces (half of them primary), then with
  10 routers running real keepalived, which keep sending VRRP adverts
  (target: none at all, in both).
- scale: 1000 monitor-only routers in 1000 namespaces: the daemon's PSS
  (target < 16 MiB), then `--rounds` flips of every primary VIP at once, up
  (primary, delayed by advert_int on purpose) and down (backup, at once),
  timed from the last address change to the last notification received on
  `notify_agent_socket` (target < 100 ms; advert_int on top for primary).
  The flips are made by `bench_flipper` (bench/flipper.rs), which holds one
  rtnetlink socket per namespace and changes all addresses back to back.

Needs root. Everything it creates (namespaces `hbd-PID-N`, a temp dir
`hbd-bench-*`, daemons, keepalived processes whose command line names the
temp dir) is removed in a `finally`, also on Ctrl-C, SIGTERM and errors.
Exit status: 0 all targets met, 1 a target missed, 2 set-up or run failure.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from state_change import (  # noqa: E402  (the sibling benchmark's helpers)
    REPLY,
    SetupError,
    ctxt_switches,
    kv_file,
    fs_type,
    memory,
    now_ns,
    run,
    summary,
)

# harouterd syncs each state file it wrote once it has been quiet for this
# long (src/core/sync_later.rs): the last thing it does before idling, so
# idle windows start after it.
SYNC_QUIET_S = 1.0

# Targets (SPEC section 5).
RESPAWN_TARGET_MS = 100.0  # keepalived or conntrackd
IDLE_CTXT_TARGET = 0
PSS_TARGET_KIB = 16 * 1024
ALL_NOTIFIED_TARGET_MS = 100.0

# The daemon's respawn policy (src/keepalived/process.rs BackoffPolicy::default):
# first death of a streak respawned at once, then 100 ms doubling to 30 s; a
# keepalived that ran 10 s or more starts a new streak.
BACKOFF_FIRST_MS = 100
BACKOFF_STABLE_S = 10

HA_IFACE, HA_PEER = "ha0", "ha0p"  # monitor-only routers: a veth pair, down
KA_IFACE, KA_PEER = "ha-a", "ha-b"  # keepalived routers: a veth pair, up
HA_ADDR = "169.254.192.1/18"  # this node's address on the HA network

CLK_TCK = os.sysconf("SC_CLK_TCK")
libc = ctypes.CDLL(None, use_errno=True)


# --------------------------------------------------------------------------
# Small helpers


def ip_batch(lines: list[str], force: bool = False) -> None:
    """One `ip -batch -` for many commands (no process per command)."""
    if not lines:
        return
    argv = ["ip"] + (["-force"] if force else []) + ["-batch", "-"]
    r = subprocess.run(argv, input="".join(line + "\n" for line in lines), capture_output=True, text=True)
    if r.returncode != 0 and not force:
        raise SetupError(f"ip -batch ({lines[0]} ...): exit {r.returncode}: {r.stderr.strip()[:500]}")


def cpu_ms(pid: int) -> float:
    """utime + stime of `pid`, milliseconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / CLK_TCK


def switches(pid: int) -> tuple[int, int]:
    """(voluntary, nonvoluntary) context switches, summed over every thread.
    A voluntary switch is the process going to sleep (here: each return to
    epoll_wait), so a wake-up; a nonvoluntary one is being preempted while
    running."""
    vol = nonvol = 0
    for entry in os.listdir(f"/proc/{pid}/task"):
        try:
            s = kv_file(f"/proc/{pid}/task/{entry}/status")
        except FileNotFoundError:
            continue
        vol += int(s["voluntary_ctxt_switches"])
        nonvol += int(s["nonvoluntary_ctxt_switches"])
    return vol, nonvol


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def read_pid(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            text = f.read(64).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def ms(ns: int | float) -> float:
    return ns / 1e6


def in_netns(ns: str):
    """Context manager: the calling thread inside network namespace `ns`."""

    class _In:
        def __enter__(self):
            self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                    raise SetupError(f"setns {ns}: {os.strerror(ctypes.get_errno())}")
            finally:
                os.close(fd)

        def __exit__(self, *exc):
            if libc.setns(self.home, 0x40000000) != 0:
                raise SystemExit(f"daemon.py: cannot return to the original network namespace: {os.strerror(ctypes.get_errno())}")
            os.close(self.home)

    return _In()


class Inotify:
    """inotify on one directory (ctypes; not in the stdlib). Each event
    comes back as (time_ns, name, mask), timestamped when read."""

    IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x2, 0x8, 0x80, 0x100, 0x200
    NAMES = {0x2: "modify", 0x8: "close_write", 0x80: "moved_to", 0x100: "create", 0x200: "delete"}

    def __init__(self, directory: str):
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise SetupError(f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        mask = self.IN_MODIFY | self.IN_CLOSE_WRITE | self.IN_MOVED_TO | self.IN_CREATE | self.IN_DELETE
        if libc.inotify_add_watch(self.fd, directory.encode(), mask) < 0:
            raise SetupError(f"inotify_add_watch {directory}: {os.strerror(ctypes.get_errno())}")
        self.poll = select.poll()
        self.poll.register(self.fd, select.POLLIN)

    def read(self, timeout_s: float) -> list[tuple[int, str, int]]:
        if not self.poll.poll(max(0, int(timeout_s * 1000))):
            return []
        t = now_ns()
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        out, off = [], 0
        while off + 16 <= len(data):
            _wd, mask, _cookie, length = struct.unpack_from("iIII", data, off)
            name = data[off + 16 : off + 16 + length].rstrip(b"\0").decode(errors="replace")
            out.append((t, name, mask))
            off += 16 + length
        return out

    def drain(self) -> None:
        while self.read(0):
            pass

    def close(self) -> None:
        os.close(self.fd)

    @classmethod
    def describe(cls, mask: int) -> str:
        return "|".join(n for bit, n in cls.NAMES.items() if mask & bit) or hex(mask)


# --------------------------------------------------------------------------
# The agent stand-in


class Agent:
    """`notify_agent_socket`: one POST per connection, answered 200.

    Built for bursts of a thousand: a single thread accepts, reads the head,
    takes the receipt time, answers and closes; parsing waits until
    [`Agent.take`]. Set `want` and wait on `enough` to learn when that many
    notifications have arrived.
    """

    def __init__(self, path: str):
        self.path = path
        self.got: list[tuple[int, bytes]] = []
        self.bad: list[str] = []
        self.want: int | None = None
        self.enough = threading.Event()
        self.lock = threading.Lock()  # `got` is swapped by the main thread
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4096)
        self.thread = threading.Thread(target=self._serve, name="agent", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                buf = conn.recv(4096)
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(4096)
                    if not chunk:
                        self.bad.append(f"closed before the end of the head: {buf[:200]!r}")
                        break
                    buf += chunk
                else:
                    t = now_ns()
                    conn.sendall(REPLY)
                    with self.lock:
                        self.got.append((t, buf))
                        if self.want is not None and len(self.got) >= self.want:
                            self.enough.set()
            except OSError as e:
                self.bad.append(f"connection error: {e}")
            finally:
                conn.close()

    def expect(self, count: int) -> None:
        """Start counting afresh: `enough` is set once `count` more arrived."""
        with self.lock:
            self.enough.clear()
            self.got = []
            self.want = count

    def wait(self, timeout: float) -> bool:
        return self.enough.wait(timeout)

    def take(self) -> list[tuple[int, str | None, str | None]]:
        """Everything received since `expect`, parsed: (t_ns, router, state)."""
        with self.lock:
            got, self.got, self.want = self.got, [], None
        out = []
        for t, raw in got:
            router = state = None
            head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            if head and head[0].startswith("POST "):
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    name = name.strip().lower()
                    if name == "x-neutron-router-id":
                        router = value.strip()
                    elif name == "x-neutron-state":
                        state = value.strip()
            if router is None or state is None:
                self.bad.append(f"not a notification: {head!r}")
            out.append((t, router, state))
        return out

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=2)


# --------------------------------------------------------------------------
# Namespaces, daemons, keepalived: everything registered for cleanup


class Lab:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.prefix = f"hbd-{os.getpid()}"
        self.next_ns = 0
        self.namespaces: list[str] = []
        self.daemons: list[Daemon] = []
        self.dir = tempfile.mkdtemp(prefix="hbd-bench-", dir=args.tmpdir)
        self.binary = os.path.abspath(args.binary)

    # -- namespaces --

    def new_namespaces(self, count: int) -> list[str]:
        names = [f"{self.prefix}-{self.next_ns + i}" for i in range(count)]
        self.next_ns += count
        self.namespaces.extend(names)  # before creating: cleanup covers a half-made set
        ip_batch([f"netns add {n}" for n in names])
        return names

    def monitor_namespaces(self, count: int) -> list[str]:
        """`count` namespaces, each with a veth pair ha0/ha0p left down (no
        IPv6 link-local, no DAD: no address events but ours)."""
        names = self.new_namespaces(count)
        ip_batch([f"link add {HA_IFACE} netns {n} type veth peer name {HA_PEER} netns {n}" for n in names])
        return names

    def keepalived_namespaces(self, count: int) -> list[str]:
        """Namespaces for real keepalived: IPv6 off, veth ha-a (169.254.192.1/18)
        and ha-b, both up. A few `ip` runs each; only used for a handful."""
        names = self.new_namespaces(count)
        for ns in names:
            run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                 "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])  # fmt: skip
            run(["ip", "-n", ns, "link", "add", KA_IFACE, "type", "veth", "peer", "name", KA_PEER])
            run(["ip", "-n", ns, "addr", "add", HA_ADDR, "dev", KA_IFACE])
            for dev in ("lo", KA_IFACE, KA_PEER):
                run(["ip", "-n", ns, "link", "set", dev, "up"])
        return names

    def delete_namespaces(self, names: list[str]) -> None:
        ip_batch([f"netns del {n}" for n in names], force=True)
        gone = set(names)
        self.namespaces = [n for n in self.namespaces if n not in gone]

    # -- processes --

    def keepalived_pids(self) -> list[int]:
        """keepalived (and conntrackd) processes whose command line names our temp dir."""
        mine = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                argv = cmdline(int(entry)).split(b"\0")
                ours = any(self.dir.encode() in a for a in argv[1:])
                if argv and any(p in os.path.basename(argv[0]) for p in (b"keepalived", b"conntrackd")) and ours:
                    mine.append(int(entry))
        return mine

    def kill_keepalived(self) -> None:
        for _ in range(50):
            pids = self.keepalived_pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)

    def cleanup(self) -> None:
        problems = []
        for d in self.daemons:
            d.kill()
        self.kill_keepalived()
        if self.namespaces:
            self.delete_namespaces(list(self.namespaces))
        left = [n for n in os.listdir("/run/netns") if n.startswith(self.prefix + "-")] if os.path.isdir("/run/netns") else []
        if left:
            problems.append(f"{len(left)} namespaces left: {left[:5]}")
        if self.args.keep:
            print(f"daemon.py: kept {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        if problems:
            raise RuntimeError("; ".join(problems))


class Daemon:
    """One `harouterd run --foreground` with its own config, state dir and log."""

    def __init__(self, lab: Lab, name: str, routers: list[dict], advert_int: int, agent: Agent | None, extra: list[str] | None = None):
        self.lab, self.name = lab, name
        self.state_path = os.path.join(lab.dir, name)
        self.ha_confs = os.path.join(self.state_path, "ha_confs")
        os.makedirs(self.ha_confs)
        lines = ["[daemon]", f"state_path = {self.state_path}", f"ha_vrrp_advert_int = {advert_int}"]
        if agent:
            lines.append(f"notify_agent_socket = {agent.path}")
        if lab.args.keepalived_path:
            lines.append(f"keepalived_path = {lab.args.keepalived_path}")
        lines += extra or []
        for r in routers:
            lines += ["", f"[router {r['id']}]", f"namespace = {r['ns']}", f"ha_interface = {r['iface']}", f"vrid = {r.get('vrid', 1)}"]
            if r.get("ha_address"):
                lines.append(f"ha_address = {r['ha_address']}")
            if not r.get("keepalived", False):
                lines.append("keepalived = false")
                # The state file goes to ha_confs/ID/; for a monitor-only
                # router nothing else (in Neutron: the agent) makes that dir.
                os.makedirs(os.path.join(self.ha_confs, r["id"]))
        self.config = os.path.join(lab.dir, f"{name}.conf")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.config, 0o600)
        self.log = os.path.join(lab.dir, f"{name}.log")
        self.pidfile = os.path.join(lab.dir, f"{name}.pid")
        self.proc: subprocess.Popen | None = None
        self.routers = routers
        lab.daemons.append(self)

    def primary_vip(self, router_id: str) -> str:
        """The router's primary VIP, from `harouterd render` (never guessed).
        `render` refuses monitor-only routers (no keepalived.conf), so the
        router is rendered from a one-router copy of its section that runs
        keepalived; the VIP depends only on ha_cidr and vrid."""
        r = next(r for r in self.routers if r["id"] == router_id)
        text = f"[daemon]\nstate_path = {self.state_path}\n\n[router {r['id']}]\nha_interface = {r['iface']}\nvrid = {r.get('vrid', 1)}\n"
        path = os.path.join(self.lab.dir, f"{self.name}-vip-{router_id}.conf")
        with open(path, "w") as f:
            f.write(text)
        out = subprocess.run([self.lab.binary, "render", "-c", path, "--router", router_id], capture_output=True, text=True)
        if out.returncode != 0:
            raise SetupError(f"render {router_id}: {out.stderr.strip()}")
        lines = out.stdout.splitlines()
        for i, line in enumerate(lines):
            if line.strip() == "virtual_ipaddress {":
                return lines[i + 1].split()[0]
        raise SetupError(f"render {router_id}: no virtual_ipaddress block")

    def start(self) -> None:
        argv = [self.lab.binary, "run", "-c", self.config, "--foreground", "--pidfile", self.pidfile]
        if self.lab.args.log_level:
            argv += ["--log-level", self.lab.args.log_level]
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM (on_exit = keep: keepalived keeps running); exit code."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait()

    def diagnose(self, what: str) -> SetupError:
        tail = []
        try:
            with open(self.log, errors="replace") as f:
                tail = [f"  {line.rstrip()}" for line in f.readlines()[-20:]]
        except OSError:
            pass
        status = "running" if self.alive() else f"exited {self.proc.returncode if self.proc else '-'}"
        return SetupError("\n".join([f"{self.name}: {what} (daemon {status}; log {self.log})", *tail]))

    def log_lines(self, needle: str) -> int:
        try:
            with open(self.log, errors="replace") as f:
                return sum(1 for line in f if needle in line)
        except OSError:
            return 0


def wait_notifications(daemon: Daemon, agent: Agent, want: dict[str, str], timeout: float, what: str) -> list:
    """Waits until every router in `want` was notified with its state;
    returns everything received (t, router, state). Call agent.expect first."""
    if not agent.wait(timeout):
        got = agent.take()
        missing = set(want) - {r for _, r, s in got if want.get(r) == s}
        raise daemon.diagnose(f"{what}: {len(got)} of {len(want)} notifications in {timeout:g} s; missing e.g. {sorted(missing)[:5]}")
    return agent.take()


def check_notifications(got: list, want: dict[str, str]) -> dict:
    """Matches notifications to expectations: the time each router got its
    expected state first, plus what was missing and unexpected."""
    first: dict[str, int] = {}
    unexpected = []
    for t, router, state in got:
        if want.get(router) == state and router not in first:
            first[router] = t
        else:
            unexpected.append({"router_id": router, "state": state})
    missing = sorted(set(want) - set(first))
    return {"first": first, "missing": missing, "unexpected": unexpected}


# --------------------------------------------------------------------------
# Part 1: keepalived killed -> running again


def bench_respawn(lab: Lab, args: argparse.Namespace, report: dict) -> None:
    ns = lab.keepalived_namespaces(1)[0]
    router = "r1"
    d = Daemon(lab, "respawn", [{"id": router, "ns": ns, "iface": KA_IFACE, "keepalived": True}], args.advert_int, None)
    pid_name, vrrp_name = f"{router}.pid.keepalived", f"{router}.pid.keepalived-vrrp"
    pidfile, vrrp_pidfile = os.path.join(d.ha_confs, pid_name), os.path.join(d.ha_confs, vrrp_name)
    conf = os.path.join(d.ha_confs, router, "keepalived.conf")
    state_file = os.path.join(d.ha_confs, router, "state")
    watch = Inotify(d.ha_confs)

    def ours(pid: int | None) -> bool:
        return pid is not None and conf.encode() in cmdline(pid)

    def wait_running(old: int | None, t0: int, timeout: float) -> tuple[int | None, int | None, list]:
        """Until the pidfile names a live keepalived of ours other than `old`:
        (new pid, time, the inotify events seen, relative to t0)."""
        events = []
        deadline = time.monotonic() + timeout
        while True:
            pid = read_pid(pidfile)
            if pid is not None and pid != old and ours(pid):
                return pid, now_ns(), events
            left = deadline - time.monotonic()
            if left <= 0:
                return None, None, events
            for t, name, mask in watch.read(min(left, 0.05)):  # 50 ms: a backstop, inotify wakes us
                events.append((t - t0, name, mask))

    def read_state() -> str:
        try:
            with open(state_file) as f:
                return f.read().strip()
        except OSError:
            return "?"

    t0 = now_ns()
    d.start()
    pid, t_up, _ = wait_running(None, t0, 10)
    if pid is None:
        raise d.diagnose("keepalived did not start")
    report["startup_ms"] = ms(t_up - t0)
    # Let it become primary (alone on its HA network: after ~3 adverts).
    deadline = time.monotonic() + 3 * args.advert_int + 5
    while read_state() != "primary" and time.monotonic() < deadline:
        time.sleep(0.1)

    def kill_once(label: str) -> dict:
        nonlocal pid, t_up
        old = read_pid(pidfile)
        if not ours(old):
            raise d.diagnose(f"{label}: the pidfile names no keepalived of ours")
        state = read_state()
        lived = ms(now_ns() - t_up) / 1000
        watch.drain()
        t_kill = now_ns()
        os.kill(old, signal.SIGKILL)
        new, t_new, events = wait_running(old, t_kill, 10)
        sample = {"label": label, "killed_pid": old, "state_at_kill": state, "lived_s": round(lived, 3)}
        if new is None:
            sample["missed"] = True
            if not d.alive():
                raise d.diagnose(f"{label}: daemon died")
            return sample
        pid, t_up = new, t_new
        sample.update({"new_pid": new, "ms": ms(t_new - t_kill)})
        # Where the time went, from the pidfile writes and removals.
        def first(name: str, bit: int) -> float | None:
            return next((ms(t) for t, n, m in events if n == name and m & bit), None)

        sample["pidfile_removed_ms"] = first(pid_name, Inotify.IN_DELETE)  # daemon reacted to the death
        sample["vrrp_pidfile_removed_ms"] = first(vrrp_name, Inotify.IN_DELETE)
        sample["pidfile_created_ms"] = first(pid_name, Inotify.IN_CREATE)  # new keepalived writing it
        sample["events"] = [(round(ms(t), 3), n, Inotify.describe(m)) for t, n, m in events]
        return sample

    spaced = []
    for i in range(args.kills):
        if i > 0:
            # A keepalived that lived >= 10 s starts a fresh streak: respawned at once.
            time.sleep(max(0.0, args.kill_gap - ms(now_ns() - t_up) / 1000))
        spaced.append(kill_once(f"kill {i + 1}"))
        if args.verbose:
            print(f"  respawn {spaced[-1]['label']}: {spaced[-1].get('ms', 'missed')} ms", file=sys.stderr)
    burst = []
    for j in range(args.burst):
        s = kill_once(f"burst {j + 1}")
        s["expected_backoff_ms"] = BACKOFF_FIRST_MS * 2**j
        if "ms" in s:
            s["beyond_backoff_ms"] = s["ms"] - s["expected_backoff_ms"]
        burst.append(s)
    restarts_logged = d.log_lines("keepalived started")
    code = d.stop()
    d.lab.kill_keepalived()

    # keepalived's own start-up, no daemon: spawned into the namespace by
    # this script (vfork+exec from a thread inside it), until its pidfile
    # names it. The floor under any respawn.
    alone = []
    ka = shutil.which(args.keepalived_path or "keepalived") or "keepalived"
    for _ in range(args.baseline):
        for p in (pidfile, vrrp_pidfile):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        watch.drain()
        argv = [ka, "-n", "-P", "-f", conf, "-p", pidfile, "-r", vrrp_pidfile]
        t0 = now_ns()
        with in_netns(ns):
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        new, t_new, _ = wait_running(None, t0, 10)
        if new is not None:
            alone.append(t_new - t0)
        p.kill()
        p.wait()
        lab.kill_keepalived()
    watch.close()

    samples = [s["ms"] * 1e6 for s in spaced if "ms" in s]
    report.update(
        {
            "namespace": ns,
            "advert_int": args.advert_int,
            "kill_gap_s": args.kill_gap,
            "respawn": summary(samples),
            "respawn_samples": spaced,
            "missed": sum(1 for s in spaced if "missed" in s),
            "burst": burst,
            "stages": {
                key: summary([s[key] * 1e6 for s in spaced if s.get(key) is not None])
                for key in ("pidfile_removed_ms", "vrrp_pidfile_removed_ms", "pidfile_created_ms")
            },
            "keepalived_alone": summary(alone),
            "keepalived_started_log_lines": restarts_logged,
            "daemon_exit": code,
        }
    )
    lab.delete_namespaces([ns])


# --------------------------------------------------------------------------
# Part 1b: conntrackd killed -> running again


def bench_ctrespawn(lab: Lab, args: argparse.Namespace, report: dict) -> None:
    ns = lab.keepalived_namespaces(1)[0]
    router = "r1"
    ctd = shutil.which(args.conntrackd_path or "conntrackd") or "conntrackd"
    extra = ["ha_conntrackd_enabled = true", f"conntrackd_path = {ctd}"]
    entry = {"id": router, "ns": ns, "iface": KA_IFACE, "keepalived": True, "ha_address": HA_ADDR.split("/")[0]}
    d = Daemon(lab, "ctrespawn", [entry], args.advert_int, None, extra)
    rdir = os.path.join(d.ha_confs, router)
    pidfile, ctl = os.path.join(rdir, "conntrackd.pid"), os.path.join(rdir, "conntrackd.ctl")
    daemon_argv = b"\0-C\0" + os.path.join(rdir, "conntrackd.conf").encode() + b"\0"

    def ours(pid: int | None) -> bool:
        return pid is not None and cmdline(pid).endswith(daemon_argv)

    t0 = now_ns()
    d.start()
    deadline = time.monotonic() + 10
    while not os.path.isdir(rdir) and time.monotonic() < deadline:
        time.sleep(0.005)
    watch = Inotify(rdir)

    def wait_running(old: int | None, t0: int, timeout: float) -> tuple[int | None, int | None, int | None]:
        """Until the pidfile names a live conntrackd of ours other than `old`
        and its control socket is there: (new pid, running at, up at)."""
        pid = t_run = t_up = None
        deadline = time.monotonic() + timeout
        while True:
            if t_run is None:
                p = read_pid(pidfile)
                if p is not None and p != old and ours(p):
                    pid, t_run = p, now_ns()
            if t_run is not None and t_up is None and os.path.exists(ctl):
                t_up = now_ns()
            if t_up is not None:
                return pid, t_run, t_up
            left = deadline - time.monotonic()
            if left <= 0:
                return pid, t_run, t_up
            watch.read(min(left, 0.05))  # inotify wakes us; 50 ms a backstop

    pid, t_run, t_up = wait_running(None, t0, 10)
    if pid is None or t_up is None:
        raise d.diagnose("conntrackd did not start")
    report["startup_ms"] = ms(t_run - t0)
    samples, up, missed = [], [], 0
    for i in range(args.ct_kills):
        if i > 0:
            # A conntrackd that lived >= 10 s starts a fresh streak: respawned at once.
            time.sleep(max(0.0, args.kill_gap - ms(now_ns() - t_run) / 1000))
        watch.drain()
        t_kill = now_ns()
        os.kill(pid, signal.SIGKILL)
        new, t_new, t_ready = wait_running(pid, t_kill, 10)
        if new is None or t_ready is None:
            missed += 1
            if not d.alive():
                raise d.diagnose("daemon died")
            continue
        samples.append(t_new - t_kill)
        up.append(t_ready - t_kill)
        pid, t_run = new, t_new
        if args.verbose:
            print(f"  conntrackd respawn {i + 1}: {ms(t_new - t_kill):.1f} ms (up {ms(t_ready - t_kill):.1f} ms)", file=sys.stderr)
    watch.close()
    report.update(
        {
            "namespace": ns,
            "kill_gap_s": args.kill_gap,
            "respawn": summary(samples),
            "up": summary(up),
            "missed": missed,
            "conntrackd_started_log_lines": d.log_lines("conntrackd started"),
            "daemon_exit": d.stop(),
        }
    )
    lab.kill_keepalived()
    lab.delete_namespaces([ns])


# --------------------------------------------------------------------------
# Part 2: idle wake-ups


def idle_window(lab: Lab, d: Daemon, agent: Agent, seconds: float, extra_pids: list[int]) -> dict:
    """Context switches (all threads), CPU time and notifications of the
    daemon over `seconds` with nothing happening; plus `extra_pids'` switches.

    The daemon watches /run/netns (inotify) so that a namespace created or
    deleted under it is noticed at once: any namespace anyone creates or
    deletes on the host wakes it, by design. Such events are counted here
    with a watch of our own, and a window that saw one is measured again
    (`--idle-retries` times); every discarded window is in the report."""
    discarded = []
    for attempt in range(lab.args.idle_retries + 1):
        netns = Inotify("/run/netns")
        agent.expect(10**9)
        ctx0, threads = ctxt_switches(d.pid)
        vol0, _ = switches(d.pid)
        cpu0 = cpu_ms(d.pid)
        others0 = sum(ctxt_switches(p)[0] for p in extra_pids)
        time.sleep(seconds)
        ctx1, _ = ctxt_switches(d.pid)
        vol1, _ = switches(d.pid)
        cpu1 = cpu_ms(d.pid)
        others1 = sum(ctxt_switches(p)[0] for p in extra_pids)
        late = agent.take()
        foreign = [name for _, name, mask in netns.read(0) if mask & (Inotify.IN_CREATE | Inotify.IN_DELETE)]
        netns.close()
        if not d.alive():
            raise d.diagnose("daemon died while idle")
        window = {
            "seconds": seconds,
            "ctxt_switches": ctx1 - ctx0,
            "voluntary": vol1 - vol0,
            "nonvoluntary": (ctx1 - ctx0) - (vol1 - vol0),
            "threads": threads,
            "cpu_ms": cpu1 - cpu0,
            "notifications": len(late),
            "others_ctxt_switches": others1 - others0 if extra_pids else None,
            "others": len(extra_pids),
            "netns_events": len(foreign),
            "netns_event_names": foreign[:10],
        }
        if not foreign or attempt == lab.args.idle_retries:
            window["discarded_windows"] = discarded
            return window
        discarded.append(window)
        if lab.args.verbose:
            print(f"  idle window disturbed by {len(foreign)} /run/netns events ({foreign[:3]}), "
                  f"{window['ctxt_switches']} switches; measuring again", file=sys.stderr)  # fmt: skip
    raise AssertionError("unreachable")


def bench_idle(lab: Lab, args: argparse.Namespace, report: dict, agent: Agent) -> None:
    # (a) monitor-only routers, half of them primary.
    n = args.idle_routers
    names = lab.monitor_namespaces(n)
    routers = [{"id": f"m{i}", "ns": ns, "iface": HA_IFACE} for i, ns in enumerate(names)]
    d = Daemon(lab, "idle-monitor", routers, args.advert_int, agent)
    vip = d.primary_vip(routers[0]["id"])
    agent.expect(n)
    d.start()
    wait_notifications(d, agent, {r["id"]: "backup" for r in routers}, 30, "initial backup")
    half = routers[: n // 2]
    agent.expect(len(half))
    for r in half:
        run(["ip", "-n", r["ns"], "addr", "add", vip, "dev", HA_IFACE])
    wait_notifications(d, agent, {r["id"]: "primary" for r in half}, args.advert_int + 30, "half primary")
    time.sleep(args.settle + SYNC_QUIET_S)
    report["monitor"] = {"routers": n, "primary": len(half), **idle_window(lab, d, agent, args.idle, [])}
    report["monitor"]["exit"] = d.stop()
    lab.delete_namespaces(names)

    # (b) routers with real keepalived, each primary and advertising.
    k = args.idle_keepalived
    if k:
        names = lab.keepalived_namespaces(k)
        routers = [{"id": f"k{i}", "ns": ns, "iface": KA_IFACE, "keepalived": True} for i, ns in enumerate(names)]
        d = Daemon(lab, "idle-keepalived", routers, args.advert_int, agent)
        agent.expect(2 * k)  # initial backup, then primary once keepalived is master
        d.start()
        got = wait_notifications(d, agent, {r["id"]: "primary" for r in routers}, 3 * args.advert_int + 30, "keepalived routers primary")
        time.sleep(args.settle + SYNC_QUIET_S)
        ka = lab.keepalived_pids()
        report["keepalived"] = {"routers": k, "keepalived_processes": len(ka), "notifications_before": len(got), **idle_window(lab, d, agent, args.idle, ka)}
        report["keepalived"]["exit"] = d.stop()
        lab.kill_keepalived()
        lab.delete_namespaces(names)


# --------------------------------------------------------------------------
# Part 3: 1000 routers: memory, all VIPs at once


def state_write_probe(state_path: str, count: int) -> dict:
    """What one durable file write costs in this state dir right now (new
    temp file, write, fdatasync, rename over the target), `count` times in
    a row: what the daemon did for each router that changed, inside its
    loop, before issue 13. Now it writes without the fdatasync after the
    notifications and syncs in quiet time (sys/files/atomic.rs)."""
    probe = os.path.join(state_path, ".probe")
    os.makedirs(probe)
    target = os.path.join(probe, "state")
    samples = []
    for i in range(count):
        temp = os.path.join(probe, f".state.tmp.{i}")
        t0 = now_ns()
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        os.write(fd, b"primary" if i % 2 else b"backup")
        os.fdatasync(fd)
        os.close(fd)
        os.rename(temp, target)
        samples.append(now_ns() - t0)
    shutil.rmtree(probe)
    return summary(samples)


class Flipper:
    """bench_flipper flip: one rtnetlink socket per namespace, opened up front."""

    def __init__(self, binary: str, specs: list[tuple[str, str, str]]):
        self.proc = subprocess.Popen([binary, "flip"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        t0 = now_ns()
        self.proc.stdin.write("".join(f"/run/netns/{ns} {dev} {cidr}\n" for ns, dev, cidr in specs) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().split()
        if line[:1] != ["ready"] or int(line[1]) != len(specs):
            raise SetupError(f"bench_flipper: {line or 'no answer'} (exit {self.proc.poll()})")
        self.setup_ms = ms(now_ns() - t0)

    def flip(self, action: str) -> dict:
        self.proc.stdin.write(action + "\n")
        self.proc.stdin.flush()
        errors, acks = [], []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SetupError(f"bench_flipper exited {self.proc.wait()}")
            if line.startswith("error "):
                errors.append(line.strip())
            elif line.startswith("acks"):
                acks = [int(x) for x in line.split()[1:]]
            elif line.startswith("done "):
                fields = dict(f.split("=") for f in line.split()[1:])
                return {"start": int(fields["start"]), "last": int(fields["last"]), "errors": errors, "acks": acks}

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def bench_scale(lab: Lab, args: argparse.Namespace, report: dict, agent: Agent) -> None:
    n = args.routers
    flipper_bin = os.path.abspath(args.flipper)
    if not os.access(flipper_bin, os.X_OK):
        raise SetupError(f"{flipper_bin}: not an executable (cargo build --release --example bench_flipper)")
    t0 = time.monotonic()
    names = lab.monitor_namespaces(n)
    report["setup_namespaces_s"] = time.monotonic() - t0
    routers = [{"id": f"s{i}", "ns": ns, "iface": HA_IFACE} for i, ns in enumerate(names)]
    ids = [r["id"] for r in routers]
    d = Daemon(lab, "scale", routers, args.advert_int, agent)
    vip = d.primary_vip(ids[0])
    if d.primary_vip(ids[-1]) != vip:
        raise SetupError("routers with the same VRID and HA network render different primary VIPs")
    report["vip"] = vip
    report["state_path_fs"] = fs_type(d.state_path)
    report["state_write_probe"] = state_write_probe(d.state_path, args.probe)

    agent.expect(n)
    t_start = now_ns()
    d.start()
    got = wait_notifications(d, agent, dict.fromkeys(ids, "backup"), 60, "initial backup")
    report["startup_all_notified_ms"] = ms(max(t for t, _, _ in got) - t_start)
    # The state files' syncs come a quiet second after the last write, a
    # few per loop pass: a thousand take a moment more.
    time.sleep(args.settle + SYNC_QUIET_S + 2.0)
    report["memory_after_start"] = memory(d.pid, lab.binary)
    report["fds"] = fd_count(d.pid)
    if args.scale_idle:
        report["idle"] = idle_window(lab, d, agent, args.scale_idle, [])

    flipper = Flipper(flipper_bin, [(ns, HA_IFACE, vip) for ns in names])
    report["flipper_setup_ms"] = flipper.setup_ms
    index = {rid: i for i, rid in enumerate(ids)}
    rounds = []
    try:
        for rnd in range(args.rounds):
            for action, state in (("add", "primary"), ("del", "backup")):
                agent.expect(n)
                ctx0, cpu0 = ctxt_switches(d.pid)[0], cpu_ms(d.pid)
                f = flipper.flip(action)
                if f["errors"]:
                    raise SetupError(f"flip {action}: {len(f['errors'])} errors, e.g. {f['errors'][:3]}")
                got = wait_notifications(d, agent, dict.fromkeys(ids, state), args.advert_int + 60, f"round {rnd + 1} {state}")
                ctx1, cpu1 = ctxt_switches(d.pid)[0], cpu_ms(d.pid)
                # Stragglers (duplicates) would arrive right after: collect briefly.
                agent.expect(10**9)
                time.sleep(args.settle)
                got += agent.take()
                c = check_notifications(got, dict.fromkeys(ids, state))
                times = sorted(c["first"].values())
                per_router = [c["first"][rid] - f["acks"][index[rid]] for rid in c["first"]]
                rounds.append(
                    {
                        "round": rnd + 1,
                        "action": action,
                        "state": state,
                        "flip_ms": ms(f["last"] - f["start"]),
                        "all_notified_ms": ms(times[-1] - f["last"]),
                        "first_notified_ms": ms(times[0] - f["last"]),
                        "per_router": summary(per_router),
                        "notified": len(c["first"]),
                        "missing": c["missing"][:20],
                        "unexpected": c["unexpected"][:20],
                        "unexpected_count": len(c["unexpected"]),
                        "daemon_cpu_ms": cpu1 - cpu0,
                        "daemon_ctxt_switches": ctx1 - ctx0,
                        # Every router's notification, ms after the last change, sorted.
                        "notified_ms": [round(ms(t - f["last"]), 3) for t in times],
                    }
                )
                if args.verbose:
                    r = rounds[-1]
                    print(f"  scale round {rnd + 1} {state}: all notified {r['all_notified_ms']:.1f} ms after the last change "
                          f"(flip {r['flip_ms']:.1f} ms, daemon cpu {r['daemon_cpu_ms']:.0f} ms)", file=sys.stderr)  # fmt: skip
    finally:
        flipper.close()
    report["rounds"] = rounds
    report["memory_after_flips"] = memory(d.pid, lab.binary)
    report["fds_after_flips"] = fd_count(d.pid)

    # The receiver's own floor: the same number of POSTs from a client as
    # fast as the daemon's notifier (Rust, 32 connections in flight).
    floors = []
    for _ in range(2):
        agent.expect(n)
        r = subprocess.run([flipper_bin, "blast", agent.path, str(n), "32"], capture_output=True, text=True)
        if r.returncode != 0 or not agent.wait(10):
            raise SetupError(f"receiver calibration failed: {r.stderr.strip()}")
        got = agent.take()
        start = int(dict(f.split("=") for f in r.stdout.split()[1:])["start"])
        floors.append(ms(max(t for t, _, _ in got) - start))
    report["receiver_floor_ms"] = floors
    report["exit"] = d.stop()
    lab.delete_namespaces(names)


# --------------------------------------------------------------------------
# Output


def rows(report: dict) -> list[dict]:
    out = []

    def row(section, name, value, unit="", target=None, ok=None):
        out.append({"section": section, "metric": name, "value": value, "unit": unit, "target": target, "pass": ok})

    def idle_row(sec, label, w):
        """Judged on every switch, unless namespaces were created or deleted
        on the host in the window: each wakes the daemon (it watches
        /run/netns by design), so then only the switches beyond those count."""
        sw, ev = w["ctxt_switches"], w["netns_events"]
        split = f"{sw} ({w['voluntary']} + {w['nonvoluntary']})"
        if not ev:
            row(sec, label, split, "", "0", sw == IDLE_CTXT_TARGET)
            return
        row(sec, label, split, "")
        row(sec, "  /run/netns changes by others in the window (wake it by design)", ev, "")
        # Each such change may wake the daemon once (a voluntary switch
        # when it sleeps again); being preempted meanwhile on a busy host
        # adds nonvoluntary ones. Only wake-ups beyond the changes count.
        row(sec, "  wake-ups (voluntary) beyond those", max(0, w["voluntary"] - ev), "", "0", w["voluntary"] <= ev)

    def idle_notes(sec, w):
        if w["discarded_windows"]:
            row(sec, "  windows re-measured (netns changes): switches", " ".join(str(x["ctxt_switches"]) for x in w["discarded_windows"]), "")

    rs = report.get("respawn")
    if rs:
        sec = "respawn"
        r = rs["respawn"]
        n = rs["config_kills"]
        if r["count"]:
            row(sec, f"keepalived SIGKILL -> running again, median ({r['count']} kills)", r["p50_ms"], "ms", f"< {RESPAWN_TARGET_MS:g} ms", r["p50_ms"] < RESPAWN_TARGET_MS)
            row(sec, "  max", r["max_ms"], "ms", f"< {RESPAWN_TARGET_MS:g} ms", r["max_ms"] < RESPAWN_TARGET_MS)
            row(sec, "  min", r["min_ms"], "ms")
        row(sec, "respawned / kills", f"{r['count']}/{n}", "", f"{n}/{n}", r["count"] == n)
        for key, label in (
            ("pidfile_removed_ms", "  stage: daemon reaped it, removed its pidfile, median"),
            ("vrrp_pidfile_removed_ms", "  stage: orphaned VRRP child gone, its pidfile removed, median"),
            ("pidfile_created_ms", "  stage: new keepalived creates its pidfile, median"),
        ):
            s = rs["stages"][key]
            if s["count"]:
                row(sec, label, s["p50_ms"], "ms")
        a = rs["keepalived_alone"]
        if a["count"]:
            row(sec, f"  keepalived alone: spawn -> pidfile, median of {a['count']}", a["p50_ms"], "ms")
        if rs["burst"]:
            vals = " ".join(f"{s['ms']:.0f}" if "ms" in s else "-" for s in rs["burst"])
            exp = " ".join(str(s["expected_backoff_ms"]) for s in rs["burst"])
            row(sec, f"kills in a row (backoff {exp} ms)", vals, "ms")
        row(sec, "daemon start -> keepalived running", rs["startup_ms"], "ms")
    cr = report.get("ctrespawn")
    if cr:
        sec = "ctrespawn"
        r, n = cr["respawn"], cr["config_kills"]
        if r["count"]:
            row(sec, f"conntrackd SIGKILL -> running again, median ({r['count']} kills)", r["p50_ms"], "ms", f"< {RESPAWN_TARGET_MS:g} ms", r["p50_ms"] < RESPAWN_TARGET_MS)
            row(sec, "  max", r["max_ms"], "ms", f"< {RESPAWN_TARGET_MS:g} ms", r["max_ms"] < RESPAWN_TARGET_MS)
            row(sec, "  min", r["min_ms"], "ms")
            row(sec, "  -> its control socket there (up), median", cr["up"]["p50_ms"], "ms")
            row(sec, "  -> up, max", cr["up"]["max_ms"], "ms")
        row(sec, "respawned / kills", f"{r['count']}/{n}", "", f"{n}/{n}", r["count"] == n)
        row(sec, "daemon start -> conntrackd running", cr["startup_ms"], "ms")
    idle = report.get("idle")
    if idle:
        sec = "idle"
        m = idle["monitor"]
        idle_row(sec, f"ctxt switches (vol + nonvol), {m['routers']} monitor-only, {m['primary']} primary, {m['seconds']:g} s", m)
        row(sec, "  daemon CPU time in the window", m["cpu_ms"], "ms")
        idle_notes(sec, m)
        k = idle.get("keepalived")
        if k:
            idle_row(sec, f"ctxt switches (vol + nonvol), {k['routers']} with keepalived, primary, {k['seconds']:g} s", k)
            row(sec, f"  keepalived's own ({k['keepalived_processes']} processes), same window", k["others_ctxt_switches"], "")
            row(sec, "  notifications in the window", k["notifications"], "", "0", k["notifications"] == 0)
            idle_notes(sec, k)
    sc = report.get("scale")
    if sc:
        sec = "scale"
        n = sc["routers"]
        pss = max(sc["memory_after_start"]["pss_kib"], sc["memory_after_flips"]["pss_kib"])
        row(sec, f"PSS, {n} routers (max of after start / after flips)", pss, "KiB", f"< {PSS_TARGET_KIB} KiB", pss < PSS_TARGET_KIB)
        for key, label in (("memory_after_start", "after start"), ("memory_after_flips", "after flips")):
            m = sc[key]
            parts = m["by_mapping"]
            row(sec, f"  PSS / RSS {label}", f"{m['pss_kib']} / {m['rss_kib']}", "KiB")
            row(sec, "    heap+stack+anon PSS, binary PSS", f"{parts['anon']['pss_kib']}, {parts['binary']['pss_kib']}", "KiB")
        row(sec, "  VmHWM (peak RSS)", sc["memory_after_flips"]["vmhwm_kib"], "KiB")
        row(sec, "  open fds", sc["fds_after_flips"], "")
        row(sec, f"start -> all {n} initial backup notified", sc["startup_all_notified_ms"], "ms")
        if sc.get("idle"):
            i = sc["idle"]
            idle_row(sec, f"ctxt switches (vol + nonvol) idle, {n} routers, {i['seconds']:g} s", i)
            idle_notes(sec, i)
        adv = sc["advert_int"]
        for state, target_ms, label in (
            ("primary", adv * 1000 + ALL_NOTIFIED_TARGET_MS, f"VIPs added: last add -> all {n} primary notified"),
            ("backup", ALL_NOTIFIED_TARGET_MS, f"VIPs deleted: last del -> all {n} backup notified"),
        ):
            rr = [r for r in sc["rounds"] if r["state"] == state]
            if not rr:
                continue
            vals = [r["all_notified_ms"] for r in rr]
            ok = all(not r["missing"] and not r["unexpected_count"] for r in rr)
            tgt = f"< {adv} s + {ALL_NOTIFIED_TARGET_MS:g} ms" if state == "primary" else f"< {ALL_NOTIFIED_TARGET_MS:g} ms"
            row(sec, f"{label}, worst of {len(rr)}", max(vals), "ms", tgt, max(vals) < target_ms)
            row(sec, "  each round", " ".join(f"{v:.1f}" for v in vals), "ms")
            if state == "primary":
                row(sec, f"  of which advert_int (deliberate: primary holds {adv} s)", adv * 1000, "ms")
            row(sec, "  first notification after the last change, median", statistics.median(r["first_notified_ms"] for r in rr), "ms")
            row(sec, "  per router (own change -> its notification) p50 / max", f"{statistics.median(r['per_router']['p50_ms'] for r in rr):.1f} / {max(r['per_router']['max_ms'] for r in rr):.1f}", "ms")
            row(sec, f"  the flip itself (first -> last of {n} changes), median", statistics.median(r["flip_ms"] for r in rr), "ms")
            row(sec, "  daemon CPU time per flip, median", statistics.median(r["daemon_cpu_ms"] for r in rr), "ms")
            row(sec, "  every router notified once, right state", "yes" if ok else "NO", "", "yes", ok)
        pr = sc.get("state_write_probe")
        if pr and pr["count"]:
            row(sec, f"durable file write here (temp, fdatasync, rename; the daemon syncs in quiet time) p50 / max of {pr['count']}", f"{pr['p50_ms']:.3f} / {pr['max_ms']:.3f}", "ms")
            row(sec, f"  x {n} routers, one after the other (p50)", pr["p50_ms"] * n, "ms")
        row(sec, f"receiver floor: {n} POSTs from a fast client (Rust, 32 in flight)", " / ".join(f"{v:.1f}" for v in sc["receiver_floor_ms"]), "ms")
    return out


def fmt_value(value, unit: str) -> str:
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return f"{text} {unit}".strip()


def print_table(report: dict, table: list[dict]) -> None:
    c = report["config"]
    print(f"harouterd daemon benchmark: binary {c['binary']} ({c['binary_bytes']} bytes)")
    print(f"host: {c['kernel']}, {c['cpus']} CPUs, Python {c['python']}, keepalived {c['keepalived_version']}; state dirs on {c['state_path_fs']}")
    print(f"load average at start / end: {c['loadavg_start']} / {c.get('loadavg_end', '?')} (other work on the host skews every timing)")
    print()
    widths = (max([66] + [len(r["metric"]) for r in table]), 22, 20)
    print(f"{'metric':<{widths[0]}} {'measured':>{widths[1]}}  {'target':<{widths[2]}} result")
    print("-" * (sum(widths) + 12))
    section = None
    for r in table:
        if r["section"] != section:
            section = r["section"]
            print(f"[{section}]")
        result = "info" if r["pass"] is None else ("pass" if r["pass"] else "FAIL")
        print(f"{r['metric']:<{widths[0]}} {fmt_value(r['value'], r['unit']):>{widths[1]}}  {r['target'] or '-':<{widths[2]}} {result}")
    print()
    if report.get("agent_errors"):
        print(f"Receiver errors: {report['agent_errors'][:10]}")


# --------------------------------------------------------------------------


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    target = os.path.join(here, "..", "target", "release")
    p = argparse.ArgumentParser(description="Benchmark harouterd run: keepalived respawn, idle wake-ups, 1000-router memory and mass flips.")
    p.add_argument("--only", default="respawn,ctrespawn,idle,scale", help="comma-separated subset of respawn,ctrespawn,idle,scale (default: all, in that order)")
    p.add_argument("--binary", default=os.path.join(target, "harouterd"), help="harouterd binary (default target/release/harouterd)")
    p.add_argument("--flipper", default=os.path.join(target, "examples", "bench_flipper"), help="bench_flipper (default target/release/examples/bench_flipper)")
    p.add_argument("--json", metavar="FILE", help="also write the full report, raw samples included, as JSON")
    p.add_argument("--advert-int", type=int, default=1, help="ha_vrrp_advert_int for every daemon (default 1, the smallest: primary waits this long)")
    p.add_argument("--kills", type=int, default=20, help="respawn: spaced SIGKILLs to time (default 20)")
    p.add_argument("--kill-gap", type=float, default=BACKOFF_STABLE_S + 0.5, help=f"respawn: seconds keepalived runs before the next kill (default {BACKOFF_STABLE_S + 0.5}; < {BACKOFF_STABLE_S} measures the backoff instead)")
    p.add_argument("--burst", type=int, default=4, help="respawn: kills in a row after the spaced ones, to show the backoff (default 4)")
    p.add_argument("--baseline", type=int, default=5, help="respawn: keepalived start-ups timed without the daemon (default 5)")
    p.add_argument("--ct-kills", type=int, default=10, help="ctrespawn: spaced SIGKILLs of conntrackd to time (default 10)")
    p.add_argument("--conntrackd-path", help="conntrackd_path for the ctrespawn daemon (default: conntrackd from PATH)")
    p.add_argument("--idle", type=float, default=10.0, help="idle window, seconds (default 10)")
    p.add_argument("--idle-retries", type=int, default=3, help="measure an idle window again when namespaces were created or deleted on the host during it (default 3)")
    p.add_argument("--idle-routers", type=int, default=100, help="idle: monitor-only routers (default 100)")
    p.add_argument("--idle-keepalived", type=int, default=10, help="idle: routers with real keepalived (default 10; 0 skips)")
    p.add_argument("--routers", type=int, default=1000, help="scale: monitor-only routers, one namespace each (default 1000)")
    p.add_argument("--rounds", type=int, default=3, help="scale: up+down flips of every VIP at once (default 3)")
    p.add_argument("--scale-idle", type=float, default=5.0, help="scale: idle window with all routers, seconds (default 5; 0 skips)")
    p.add_argument("--probe", type=int, default=200, help="scale: state-file writes timed in the state dir, the daemon's way (default 200)")
    p.add_argument("--settle", type=float, default=1.0, help="pause before memory and idle sampling, and after each flip (default 1 s)")
    p.add_argument("--log-level", choices=("error", "warn", "info", "debug"), help="the daemons' --log-level (default: theirs, info)")
    p.add_argument("--keepalived-path", help="keepalived_path for the daemons (default: keepalived from PATH)")
    p.add_argument("--tmpdir", help="where the temp dir (state_path of every daemon) is made (default: Python's, usually /tmp); the daemon writes each state file (no sync on the way) and syncs it in quiet time")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, daemon logs) for inspection")
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = p.parse_args()
    parts = [x.strip() for x in args.only.split(",") if x.strip()]
    if not parts or any(x not in ("respawn", "ctrespawn", "idle", "scale") for x in parts):
        p.error("--only takes respawn, ctrespawn, idle, scale (comma-separated)")
    if args.kills < 1 or args.rounds < 1 or args.advert_int < 1:
        p.error("--kills, --rounds and --advert-int must be at least 1")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    sys.setswitchinterval(0.0001)

    binary = os.path.abspath(args.binary)
    ka = shutil.which(args.keepalived_path or "keepalived")
    report = {
        "config": {
            "only": parts,
            "binary": binary,
            "binary_bytes": os.path.getsize(binary) if os.path.exists(binary) else None,
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "keepalived_version": (subprocess.run([ka, "--version"], capture_output=True, text=True).stderr.split("\n")[0].strip() if ka else "not found"),
            "advert_int": args.advert_int,
            "loadavg_start": loadavg(),
            "clock": "time.monotonic_ns (CLOCK_MONOTONIC); bench_flipper uses the same clock",
            "percentiles": "nearest rank",
        }
    }
    lab = agent = None
    status = 0
    try:
        if not os.access(binary, os.X_OK):
            raise SetupError(f"{binary}: not an executable (build it: cargo build --release)")
        if os.geteuid() != 0:
            raise SetupError("needs root (network namespaces)")
        if ("respawn" in parts or "ctrespawn" in parts or ("idle" in parts and args.idle_keepalived)) and not ka:
            raise SetupError("keepalived not found (apt-get install keepalived, or --keepalived-path); --only scale needs none")
        if "ctrespawn" in parts and not shutil.which(args.conntrackd_path or "conntrackd"):
            raise SetupError("conntrackd not found (apt-get install conntrackd, or --conntrackd-path)")
        # A thousand namespaces: a socket each in the daemon and in the flipper.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        lab = Lab(args)
        report["config"]["state_path_fs"] = fs_type(lab.dir)
        report["config"]["temp_dir"] = lab.dir
        agent = Agent(os.path.join(lab.dir, "agent.sock"))
        for part in parts:
            t0 = time.monotonic()
            if args.verbose:
                print(f"daemon.py: {part} ...", file=sys.stderr)
            if part == "respawn":
                r = report["respawn"] = {"config_kills": args.kills}
                bench_respawn(lab, args, r)
            elif part == "ctrespawn":
                r = report["ctrespawn"] = {"config_kills": args.ct_kills}
                bench_ctrespawn(lab, args, r)
            elif part == "idle":
                bench_idle(lab, args, report.setdefault("idle", {}), agent)
            else:
                r = report["scale"] = {"routers": args.routers, "advert_int": args.advert_int}
                bench_scale(lab, args, r, agent)
            report.setdefault("duration_s", {})[part] = round(time.monotonic() - t0, 1)
    except SetupError as e:
        print(f"daemon.py: {e}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("daemon.py: interrupted", file=sys.stderr)
        status = 130
    finally:
        if agent:
            report["agent_errors"] = list(agent.bad)
            agent.close()
        if lab:
            try:
                lab.cleanup()
            except Exception as e:  # keep going: report what is left
                print(f"daemon.py: cleanup: {e}", file=sys.stderr)

    report["config"]["loadavg_end"] = loadavg()
    if status == 0 or any(k in report for k in ("respawn", "ctrespawn", "idle", "scale")):
        try:
            table = rows(report)
        except (KeyError, TypeError, ValueError):
            table = []  # a part broke half way: its rows are incomplete
        report["table"] = table
        if table:
            print_table(report, table)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1, default=str)
                f.write("\n")
        if status == 0 and any(r["pass"] is False for r in table):
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
