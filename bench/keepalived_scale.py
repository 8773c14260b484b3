#!/usr/bin/env python3
"""1000 routers with real keepalived on one node (SPEC section 5), Python 3.11 stdlib only.

Two nodes on one host, each a `harouterd run` with --routers routers, one
network namespace per router, joined router by router by a veth pair
(`ha-a` in the node under test, `ha-b` in its peer; 169.254.192.1/18 and
.2/18, IPv6 address generation off, so the only address events are
keepalived's):

- the peer (priority 100, on_exit = stop) starts first and, alone, every
  router becomes primary after keepalived's master-down timeout;
- the node under test (priority 50, `notify_agent_socket`) starts:
  start -> every keepalived running (main and VRRP child: pidfiles naming
  live processes whose /proc/PID/cmdline holds the router's config) and
  every initial state known (GET /v1/routers), target < 10 s;
- every keepalived process of the node under test is SIGKILLed at once, as
  an OOM kill would: -> every one running again, target < 5 s;
- node-wide failover: the peer daemon gets SIGTERM (on_exit = stop: its
  keepalived say goodbye with priority 0) or, with `--failover kill`, it and
  all its keepalived get SIGKILL; every router of the node under test
  becomes primary. Last primary VIP appearing (seen by `bench_flipper
  watch`, one rtnetlink socket per namespace) -> every router announced
  primary on GET /v1/events, target < advert_int + 100 ms (primary is held
  advert_int on purpose, SPEC 3.5). The agent socket's notifications are
  shown alongside.

Throughout: the daemon's PSS (smaps_rollup, sampled every 200 ms; target
< 16 MiB) and CPU time (utime + stime) per phase, and a thread asking the
control socket GET /v1/routers and GET /v1/routers/ID in turn, every
--probe-gap-ms, whose answer times (connect -> last byte) are reported per
phase (target: max < 100 ms). The asking client runs at the daemon's own
priority (--probe-nice, process and autogroup, in a session of its own):
the target is the daemon's responsiveness; on 2 CPUs saturated by a
thousand keepalived starting, each in an autogroup of its own, a client at
nice 0 waits up to a second for a CPU itself (measured), whatever the
daemon does. `--probe-nice 0` measures such a client.

Needs root, keepalived, and bench_flipper (cargo build --release --example
bench_flipper). Limits it raises when too low, and restores: the open-file
limit of this process, kernel.pid_max. Everything it creates (namespaces
`hks-PID-*`, temp dir `hks-bench-*`, both daemons, every keepalived whose
command line names the temp dir) is removed in a `finally`, also on Ctrl-C
and SIGTERM. Exit status: 0 all targets met, 1 a target missed, 2 set-up or
run failure.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon import Agent, Inotify, cmdline, cpu_ms, fd_count, loadavg, ms, read_pid  # noqa: E402
from state_change import SetupError, fs_type, memory, now_ns, summary  # noqa: E402

# Targets (SPEC section 5; issue 13).
START_TARGET_S = 10.0
RESPAWN_TARGET_S = 5.0
ANNOUNCE_MARGIN_MS = 100.0
STATUS_TARGET_MS = 100.0
PSS_TARGET_KIB = 16 * 1024

IFACE_A, IFACE_B = "ha-a", "ha-b"
ADDR_A, ADDR_B = "169.254.192.1/18", "169.254.192.2/18"
IN_Q_OVERFLOW = 0x4000


# --------------------------------------------------------------------------
# Set-up helpers


def ip_batch(lines: list[str], force: bool = False) -> None:
    if not lines:
        return
    argv = ["ip"] + (["-force"] if force else []) + ["-batch", "-"]
    r = subprocess.run(argv, input="".join(line + "\n" for line in lines), capture_output=True, text=True)
    if r.returncode != 0 and not force:
        raise SetupError(f"ip -batch ({lines[0]} ...): exit {r.returncode}: {r.stderr.strip()[:500]}")


def ip_in(ns: str, lines: list[str]) -> None:
    r = subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n", capture_output=True, text=True)
    if r.returncode != 0:
        raise SetupError(f"ip -n {ns} -batch: {r.stderr.strip()[:300]}")


def sysctl_read(name: str) -> str:
    with open("/proc/sys/" + name.replace(".", "/")) as f:
        return f.read().strip()


def sysctl_write(name: str, value: str) -> None:
    with open("/proc/sys/" + name.replace(".", "/"), "w") as f:
        f.write(value)


def pss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def http(path: str, request_path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    """One GET over the control socket: (status, body). Raises OSError
    when the socket cannot be reached."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(f"GET {request_path} HTTP/1.1\r\nHost: harouterd\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            data = s.recv(262144)
            if not data:
                break
            chunks.append(data)
    finally:
        s.close()
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    return status, body


# --------------------------------------------------------------------------
# The lab: namespaces, nodes, cleanup


class Node:
    """One `harouterd run` with its routers, config, state dir and log."""

    def __init__(self, lab: Lab, name: str, namespaces: list[str], iface: str, priority: int, on_exit: str, agent: str | None):
        self.lab, self.name = lab, name
        self.dir = os.path.join(lab.dir, name)
        self.ha_confs = os.path.join(self.dir, "ha_confs")
        self.socket = os.path.join(self.dir, "harouterd.sock")
        self.ids = [f"r{i}" for i in range(len(namespaces))]
        os.makedirs(self.ha_confs)
        lines = [
            "[daemon]",
            f"state_path = {self.dir}",
            f"ha_vrrp_advert_int = {lab.args.advert_int}",
            f"on_exit = {on_exit}",
        ]
        if agent:
            lines.append(f"notify_agent_socket = {agent}")
        if lab.args.keepalived_path:
            lines.append(f"keepalived_path = {lab.args.keepalived_path}")
        for rid, ns in zip(self.ids, namespaces):
            lines += ["", f"[router {rid}]", f"namespace = {ns}", f"ha_interface = {iface}", "vrid = 1", f"priority = {priority}"]
        self.config = os.path.join(lab.dir, f"{name}.conf")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.config, 0o600)
        self.log = os.path.join(lab.dir, f"{name}.log")
        self.proc: subprocess.Popen | None = None
        lab.nodes.append(self)

    def conf(self, rid: str) -> bytes:
        return os.path.join(self.ha_confs, rid, "keepalived.conf").encode()

    def pidfiles(self, rid: str) -> tuple[str, str]:
        base = os.path.join(self.ha_confs, f"{rid}.pid.keepalived")
        return base, base + "-vrrp"

    def running(self, rid: str) -> tuple[int, int] | None:
        """(main pid, VRRP child pid) when both pidfiles name live
        processes running this router's config, else None."""
        main, vrrp = (read_pid(p) for p in self.pidfiles(rid))
        if main is None or vrrp is None:
            return None
        conf = self.conf(rid)
        if conf not in cmdline(main) or conf not in cmdline(vrrp):
            return None
        return main, vrrp

    def start(self) -> None:
        argv = [self.lab.binary, "run", "-c", self.config, "--foreground", "--pidfile", os.path.join(self.dir, "harouterd.pid")]
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

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait()

    def renice(self, nice: int) -> None:
        """The daemon and every keepalived of this node at `nice`, their
        autogroups too (each keepalived runs in a session, so an autogroup,
        of its own: with autogroups on, a process's nice value only counts
        within its group). What the daemon did to its own priority is undone."""
        for pid in [self.pid] + self.keepalived_pids():
            try:
                os.setpriority(os.PRIO_PROCESS, pid, nice)
                with open(f"/proc/{pid}/autogroup", "w") as f:
                    f.write(str(nice))
            except OSError:
                pass

    def keepalived_pids(self) -> list[int]:
        """Every keepalived process running one of this node's configs."""
        needle = self.ha_confs.encode() + b"/"
        mine = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                argv = cmdline(int(entry)).split(b"\0")
                if argv and b"keepalived" in os.path.basename(argv[0]) and any(needle in a for a in argv[1:]):
                    mine.append(int(entry))
        return mine

    def status(self) -> list[dict]:
        code, body = http(self.socket, "/v1/routers")
        if code != 200:
            raise SetupError(f"{self.name}: GET /v1/routers answered {code}")
        return json.loads(body)

    def diagnose(self, what: str) -> SetupError:
        try:
            with open(self.log, errors="replace") as f:
                tail = [f"  {line.rstrip()}" for line in f.readlines()[-20:]]
        except OSError:
            tail = []
        state = "running" if self.alive() else f"exited {self.proc.returncode if self.proc else '-'}"
        return SetupError("\n".join([f"{self.name}: {what} (daemon {state}; log {self.log})", *tail]))


class Lab:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.prefix = f"hks-{os.getpid()}"
        self.namespaces: list[str] = []
        self.nodes: list[Node] = []
        self.restore: list[tuple[str, str]] = []  # sysctls to put back
        self.dir = tempfile.mkdtemp(prefix="hks-bench-", dir=args.tmpdir)
        self.binary = os.path.abspath(args.binary)

    def build(self, n: int) -> tuple[list[str], list[str]]:
        """n namespace pairs joined by veth pairs, addressed and up."""
        a = [f"{self.prefix}-a{i}" for i in range(n)]
        b = [f"{self.prefix}-b{i}" for i in range(n)]
        self.namespaces += a + b  # before creating: cleanup covers a half-made set
        ip_batch([f"netns add {x}" for x in a + b])
        ip_batch([f"link add {IFACE_A} netns {x} type veth peer name {IFACE_B} netns {y}" for x, y in zip(a, b)])
        # No IPv6 link-local addresses (no DAD events, no MLD), then up.
        jobs = [(x, IFACE_A, ADDR_A) for x in a] + [(y, IFACE_B, ADDR_B) for y in b]
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            for f in [pool.submit(ip_in, ns, [f"link set {dev} addrgenmode none", f"address add {addr} dev {dev}", f"link set {dev} up"]) for ns, dev, addr in jobs]:
                f.result()
        return a, b

    def raise_limits(self, n: int) -> dict:
        """What a 2 x n-router lab needs beyond the defaults, changed only
        when too low; returned for the report, restored in cleanup."""
        changed = {}
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = n + 1024  # bench_flipper watch (inherits it): one socket per namespace
        if soft < max(need, hard):
            new_hard = max(hard, need)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_hard, new_hard))
            changed["RLIMIT_NOFILE (this process and its children)"] = f"{soft}/{hard} -> {new_hard}/{new_hard}"
        pid_max = int(sysctl_read("kernel.pid_max"))
        running = sum(1 for e in os.listdir("/proc") if e.isdigit())
        need = running + 4 * n + 4096  # two nodes x n x (keepalived + its VRRP child), and headroom
        if pid_max < need:
            self.restore.append(("kernel.pid_max", str(pid_max)))
            sysctl_write("kernel.pid_max", str(need))
            changed["kernel.pid_max"] = f"{pid_max} -> {need}"
        return changed

    def cleanup(self) -> None:
        for node in self.nodes:
            node.kill()
        needle = self.dir.encode()
        for _ in range(100):
            pids = []
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    argv = cmdline(int(entry)).split(b"\0")
                    if argv and b"keepalived" in os.path.basename(argv[0]) and any(needle in x for x in argv[1:]):
                        pids.append(int(entry))
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        if self.namespaces:
            ip_batch([f"netns del {x}" for x in self.namespaces], force=True)
            self.namespaces = []
        for name, value in self.restore:
            try:
                sysctl_write(name, value)
            except OSError as e:
                print(f"keepalived_scale.py: cannot restore {name}={value}: {e}", file=sys.stderr)
        if self.args.keep:
            print(f"keepalived_scale.py: kept {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        left = [x for x in os.listdir("/run/netns") if x.startswith(self.prefix + "-")] if os.path.isdir("/run/netns") else []
        if left:
            raise RuntimeError(f"{len(left)} namespaces left: {left[:5]}")


# --------------------------------------------------------------------------
# Watchers


class Prober:
    """The control socket, asked in a loop by `bench_flipper probe` (a
    client outside this interpreter, so the harness's own threads cannot
    delay it): GET /v1/routers and GET /v1/routers/ID in turn,
    --probe-gap-ms apart. Each answer's time is connect -> the daemon
    closing the connection; a socket not there yet (or refusing) is
    counted, not timed."""

    def __init__(self, flipper: str, node: Node, gap_ms: float, nice: int):
        self.proc = subprocess.Popen([flipper, "probe", node.socket, str(max(1, round(gap_ms)))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)  # fmt: skip
        # Its own session is its own autogroup: both get `nice`.
        os.setpriority(os.PRIO_PROCESS, self.proc.pid, nice)
        try:
            with open(f"/proc/{self.proc.pid}/autogroup", "w") as f:
                f.write(str(nice))
        except OSError:
            pass
        self.proc.stdin.write("".join(f"{rid}\n" for rid in node.ids) + "\n")
        self.proc.stdin.flush()
        self.samples: list[tuple[int, int, str, int]] = []  # (start, duration ns, kind, status)
        self.unreachable: list[int] = []
        self.thread = threading.Thread(target=self._read, name="prober", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            parts = line.split()
            if parts[:1] == ["unreachable"] and len(parts) == 2:
                self.unreachable.append(int(parts[1]))
            elif len(parts) == 5:
                self.samples.append((int(parts[1]), int(parts[2]), parts[0], int(parts[3])))

    def first_answer(self) -> int | None:
        return next((t + d for t, d, _, c in list(self.samples) if c == 200), None)

    def window(self, start: int, end: int, outside: list[tuple[int, int]] | None = None) -> dict:
        """Answers to requests sent in [start, end), minus those sent in any
        of the `outside` windows."""
        mine = [
            (d, k, c)
            for t, d, k, c in list(self.samples)
            if start <= t < end and not any(a <= t < b for a, b in outside or [])
        ]
        out = {"count": len(mine), "errors": sum(1 for _, _, c in mine if c != 200)}
        for kind in ("list", "one"):
            out[kind] = summary([d for d, k, _ in mine if k == kind])
        out["all"] = summary([d for d, _, _ in mine])
        out["unreachable"] = sum(1 for t in self.unreachable if start <= t < end)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=65)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.thread.join(timeout=2)


class Known(threading.Thread):
    """GET /v1/routers every 50 ms from the daemon's start (each request
    waits as long as the daemon takes to answer) until one answer shows
    every router's state: when that answer was complete."""

    def __init__(self, node: Node):
        super().__init__(name="known", daemon=True)
        self.node = node
        self.at: int | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.node.lab.args.timeout
        while time.monotonic() < deadline:
            try:
                code, body = http(self.node.socket, "/v1/routers", timeout=self.node.lab.args.timeout)
                t = now_ns()
                rows = json.loads(body) if code == 200 else []
            except (OSError, ValueError):
                rows = []
            if len(rows) == len(self.node.ids) and all(r.get("state") for r in rows):
                self.at = t
                return
            time.sleep(0.05)


class Sampler(threading.Thread):
    """The daemon's PSS every 200 ms: its peak, whenever it happens."""

    def __init__(self, pid: int):
        super().__init__(name="pss", daemon=True)
        self.pid = pid
        self.samples: list[tuple[int, int]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            p = pss_kib(self.pid)
            if p is not None:
                self.samples.append((now_ns(), p))
            self.stop_event.wait(0.2)

    def peak(self, start: int = 0, end: int = 2**63) -> int | None:
        inside = [p for t, p in self.samples if start <= t < end]
        return max(inside) if inside else None

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=2)


class Events(threading.Thread):
    """GET /v1/events: every line, timestamped when read."""

    def __init__(self, path: str):
        super().__init__(name="events", daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.sendall(b"GET /v1/events HTTP/1.1\r\nHost: harouterd\r\nConnection: close\r\n\r\n")
        self.lines: list[tuple[int, bytes]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()

    def run(self) -> None:
        buf = b""
        head = True
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            t = now_ns()
            buf += data
            if head:
                if b"\r\n\r\n" not in buf:
                    continue
                buf = buf.split(b"\r\n\r\n", 1)[1]
                head = False
                self.ready.set()
            *complete, buf = buf.split(b"\n")
            with self.lock:
                self.lines += [(t, line) for line in complete if line.strip()]

    def take(self) -> list[tuple[int, str, str]]:
        with self.lock:
            lines, self.lines = self.lines, []
        out = []
        for t, line in lines:
            try:
                e = json.loads(line)
                out.append((t, e.get("router"), e.get("state")))
            except ValueError:
                out.append((t, None, line.decode(errors="replace")))
        return out

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class VipWatch:
    """`bench_flipper watch`: when each namespace's primary VIP comes and goes."""

    def __init__(self, flipper: str, namespaces: list[str], iface: str, vip: str):
        self.proc = subprocess.Popen([flipper, "watch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.proc.stdin.write("".join(f"/run/netns/{ns} {iface} {vip}\n" for ns in namespaces) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().split()
        if line[:1] != ["ready"] or int(line[1]) != len(namespaces):
            raise SetupError(f"bench_flipper watch: {line or 'no answer'} (exit {self.proc.poll()})")
        self.events: list[tuple[str, int, int]] = []  # (add|del|overrun, index, t)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, name="vipwatch", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            parts = line.split()
            if len(parts) == 3:
                with self.lock:
                    self.events.append((parts[0], int(parts[1]), int(parts[2])))

    def take(self) -> list[tuple[str, int, int]]:
        with self.lock:
            out, self.events = self.events, []
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def nice_of(pid: int) -> int | None:
    """The nice value of a process (/proc/PID/stat field 19)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[16])
    except (OSError, ValueError, IndexError):
        return None


def autogroup_nice(pid: int) -> int | None:
    """The nice value of a process's autogroup, None without autogroups."""
    try:
        with open(f"/proc/{pid}/autogroup") as f:
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def sched(pid: int) -> tuple[int, int]:
    """(ns on a CPU, ns runnable but waiting for one) of a single-threaded
    process, from /proc/PID/schedstat (exact, unlike the 10 ms ticks of
    /proc/PID/stat); (0, 0) when it is gone."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            run, wait, _ = f.read().split()
        return int(run), int(wait)
    except (OSError, ValueError):
        return 0, 0


def sched_sum(pids: list[int]) -> tuple[int, int]:
    runs, waits = zip(*(sched(p) for p in pids)) if pids else ((0,), (0,))
    return sum(runs), sum(waits)


def time_split(wall_ns: int, before: tuple[int, int], after: tuple[int, int]) -> dict:
    """Where the daemon's wall time went in a phase: on a CPU, waiting for
    one (run queue), and the rest: blocked in the kernel (a child's exec,
    fdatasync, ...) or idle in poll."""
    run, wait = after[0] - before[0], after[1] - before[1]
    return {"wall_ms": wall_ns / 1e6, "cpu_ms": run / 1e6, "runqueue_ms": wait / 1e6, "off_cpu_ms": max(0, wall_ns - run - wait) / 1e6}


def wait_running(node: Node, old: dict[str, tuple[int, int]] | None, timeout: float, watch: Inotify) -> dict[str, int]:
    """Until every router of `node` has keepalived running (main and VRRP
    child, see Node.running) with pids other than `old`'s: the time each was
    first seen so. Driven by inotify on ha_confs/ (pidfiles are written
    there), with a sweep of the routers still pending every 250 ms and on a
    queue overflow."""
    pending = set(node.ids)
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    next_sweep = 0.0

    def check(rid: str, t: int) -> None:
        pids = node.running(rid)
        if pids is None or (old is not None and (pids[0] in old[rid] or pids[1] in old[rid])):
            return
        seen[rid] = t
        pending.discard(rid)

    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        events = watch.read(min(left, 0.05))
        touched = set()
        sweep = time.monotonic() >= next_sweep
        for t, name, mask in events:
            if mask & IN_Q_OVERFLOW:
                sweep = True
            elif name.endswith(".pid.keepalived") or name.endswith(".pid.keepalived-vrrp"):
                touched.add((name.split(".pid.keepalived", 1)[0], t))
        for rid, t in touched:
            if rid in pending:
                check(rid, t)
        if sweep:
            t = now_ns()
            for rid in list(pending):
                check(rid, t)
            next_sweep = time.monotonic() + 0.25
    return seen


# --------------------------------------------------------------------------
# The benchmark


def bench(args: argparse.Namespace, lab: Lab, report: dict) -> None:
    n = args.routers
    flipper = os.path.abspath(args.flipper)
    if not os.access(flipper, os.X_OK):
        raise SetupError(f"{flipper}: not an executable (cargo build --release --example bench_flipper)")
    report["limits_changed"] = lab.raise_limits(n)

    t0 = time.monotonic()
    names_a, names_b = lab.build(n)
    report["setup_s"] = round(time.monotonic() - t0, 1)
    agent = Agent(os.path.join(lab.dir, "agent.sock"))
    try:
        _run(args, lab, report, names_a, names_b, agent, flipper)
    finally:
        report["agent_errors"] = list(agent.bad)[:10]
        agent.close()


def _run(args, lab: Lab, report: dict, names_a: list[str], names_b: list[str], agent: Agent, flipper: str) -> None:
    n = args.routers
    adv = args.advert_int
    # The peer stands for another host: on a real deployment its keepalived
    # do not share this node's CPUs. Niced once all are primary (see
    # --peer-nice), they still run (and advertise in time: adverts are
    # cheap) but leave the CPUs to the node under test when both want them.
    peer = Node(lab, "peer", names_b, IFACE_B, args.peer_priority, "stop", None)
    node = Node(lab, "node", names_a, IFACE_A, args.priority, "keep", agent.path)

    # The primary VIP of VRID 1 on the default HA network, from `render`.
    r = subprocess.run([lab.binary, "render", "-c", node.config, "--router", node.ids[0]], capture_output=True, text=True)
    lines = r.stdout.splitlines()
    vips = [lines[i + 1].split()[0] for i, line in enumerate(lines[:-1]) if line.strip() == "virtual_ipaddress {"]
    if r.returncode != 0 or not vips:
        raise SetupError(f"render: {r.stderr.strip() or 'no virtual_ipaddress'}")
    vip = vips[0]
    report["vip"] = vip
    vipwatch = VipWatch(flipper, names_a, IFACE_A, vip)
    try:
        _phases(args, lab, report, node, peer, agent, vipwatch, n, adv, flipper)
    finally:
        vipwatch.close()


def _phases(args, lab, report, node: Node, peer: Node, agent: Agent, vipwatch: VipWatch, n: int, adv: int, flipper: str) -> None:
    say = (lambda text: print(f"keepalived_scale.py: {text}", file=sys.stderr, flush=True)) if args.verbose else (lambda text: None)

    # 0. The peer alone: every router primary after the master-down timeout.
    say(f"peer: starting {n} routers")
    t = now_ns()
    peer.start()
    wait_s = 3 * adv + 60 + n * 0.05
    deadline = time.monotonic() + wait_s
    peer_primary_s = None
    while time.monotonic() < deadline:
        time.sleep(0.25)
        if not peer.alive():
            raise peer.diagnose("died at start")
        try:
            rows = peer.status()
        except (OSError, ValueError, SetupError):
            continue
        if len(rows) == n and all(r.get("state") == "primary" for r in rows):
            peer_primary_s = ms(now_ns() - t) / 1000
            break
    if peer_primary_s is None:
        raise peer.diagnose(f"not every router became primary within {wait_s:.0f} s")
    report["peer_all_primary_s"] = peer_primary_s
    report["peer_keepalived_processes"] = len(peer.keepalived_pids())
    if args.peer_nice:
        peer.renice(args.peer_nice)
    say(f"peer: all {n} primary after {peer_primary_s:.1f} s")
    time.sleep(args.settle)

    # 1. Start of the node under test.
    watch = Inotify(node.ha_confs)
    agent.expect(10**9)
    prober = Prober(flipper, node, args.probe_gap_ms, args.probe_nice)
    known = Known(node)
    say(f"node: starting {n} routers")
    t_start = now_ns()
    node.start()
    sampler = Sampler(node.pid)
    sampler.start()
    known.start()
    try:
        seen = wait_running(node, None, args.timeout, watch)
        if len(seen) < n:
            missing = sorted(set(node.ids) - set(seen))
            raise node.diagnose(f"{len(missing)} of {n} keepalived not running after {args.timeout:g} s, e.g. {missing[:5]}")
        t_all_running = max(seen.values())
        known.join(timeout=args.timeout)
        if known.at is None:
            raise node.diagnose("GET /v1/routers never showed every router's state")
        t_known = known.at
        t_end = max(t_all_running, t_known)
        first_answer = prober.first_answer()
        report["start"] = {
            "all_running_s": ms(t_all_running - t_start) / 1000,
            "first_running_s": ms(min(seen.values()) - t_start) / 1000,
            "all_known_s": ms(t_known - t_start) / 1000,
            "s": ms(max(t_all_running, t_known) - t_start) / 1000,
            "first_status_answer_s": ms(first_answer - t_start) / 1000 if first_answer else None,
            "status": prober.window(t_start, t_end),
            "window": (t_start, t_end),
            "time": time_split(t_end - t_start, (0, 0), sched(node.pid)),
            "pss_peak_kib": sampler.peak(t_start, t_end),
        }
        say(f"node: all running after {report['start']['all_running_s']:.2f} s, known after {report['start']['all_known_s']:.2f} s")
        time.sleep(args.settle)
        rows = node.status()
        report["start"]["states_after_settle"] = {s: sum(1 for r in rows if r.get("state") == s) for s in ("primary", "backup", "fault", None)}
        report["start"]["memory_after"] = memory(node.pid, lab.binary)
        report["start"]["fds_after"] = fd_count(node.pid)
        ka = node.keepalived_pids()
        report["keepalived_processes"] = len(ka)
        report["nice"] = {
            "daemon": nice_of(node.pid),
            "daemon_autogroup": autogroup_nice(node.pid),
            "keepalived": sorted({nice_of(p) for p in ka} - {None}),
            "peer": nice_of(peer.pid),
            "probe": nice_of(prober.proc.pid),
        }
        # keepalived's own start-up (exec, dynamic linking, config, forking
        # its VRRP child): the floor under any start or respawn storm.
        report["start"]["keepalived_sched"] = sched_sum(node.keepalived_pids())

        # 2. Every keepalived of the node killed at once.
        old = {rid: node.running(rid) or (0, 0) for rid in node.ids}
        pids = node.keepalived_pids()
        watch.drain()
        sched0 = sched(node.pid)
        say(f"node: SIGKILL to {len(pids)} keepalived processes")
        t_kill = now_ns()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        t_killed = now_ns()
        seen = wait_running(node, old, args.timeout, watch)
        sched1 = sched(node.pid)
        if len(seen) < n:
            missing = sorted(set(node.ids) - set(seen))
            raise node.diagnose(f"{len(missing)} of {n} keepalived not running again after {args.timeout:g} s, e.g. {missing[:5]}")
        report["respawn"] = {
            "processes_killed": len(pids),
            "kill_loop_ms": ms(t_killed - t_kill),
            "s": ms(max(seen.values()) - t_kill) / 1000,
            "first_s": ms(min(seen.values()) - t_kill) / 1000,
            "per_router": summary([t - t_kill for t in seen.values()]),
            "time": time_split(max(seen.values()) - t_kill, sched0, sched1),
        }
        say(f"node: all running again after {report['respawn']['s']:.2f} s")
        time.sleep(args.settle)
        # The storm: from the kill until the last keepalived runs again.
        t_done = max(seen.values())
        report["respawn"]["status"] = prober.window(t_kill, t_done)
        report["respawn"]["window"] = (t_kill, t_done)
        report["respawn"]["pss_peak_kib"] = sampler.peak(t_kill, now_ns())
        report["respawn"]["keepalived_sched"] = sched_sum(node.keepalived_pids())
        rows = node.status()
        restarts = [r.get("restarts", 0) for r in rows]
        report["respawn"]["restarts"] = {"min": min(restarts), "max": max(restarts)}
        report["respawn"]["states_after_settle"] = {s: sum(1 for r in rows if r.get("state") == s) for s in ("primary", "backup", "fault", None)}
        report["respawn"]["memory_after"] = memory(node.pid, lab.binary)
        watch.close()
        report["vips_before_failover"] = [(k, i) for k, i, _ in vipwatch.take()][:20]

        # 3. Node-wide failover: the peer goes away.
        events = Events(node.socket)
        events.start()
        if not events.ready.wait(5):
            raise node.diagnose("GET /v1/events did not answer")
        agent.take()
        agent.expect(10**9)
        sched0 = sched(node.pid)
        say(f"peer: {args.failover}")
        t_fail = now_ns()
        if args.failover == "sigterm":
            peer.proc.send_signal(signal.SIGTERM)
        else:
            peer.kill()
            for pid in peer.keepalived_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        vip_at: dict[int, int] = {}
        announced: dict[str, int] = {}
        notified: dict[str, int] = {}
        other_events, other_vips, received = [], [], []
        deadline = time.monotonic() + 3 * adv + 30 + n * 0.02
        while time.monotonic() < deadline and (len(vip_at) < n or len(announced) < n or len(notified) < n):
            time.sleep(0.05)
            for kind, i, t in vipwatch.take():
                if kind == "add" and i not in vip_at:
                    vip_at[i] = t
                else:
                    other_vips.append((kind, i))
            for t, rid, state in events.take():
                if state == "primary" and rid not in announced:
                    announced[rid] = t
                else:
                    other_events.append((rid, state))
            for t, rid, state in agent.take():
                received.append((t, rid, state))
                if state == "primary" and rid not in notified:
                    notified[rid] = t
        sched1 = sched(node.pid)
        agent.expect(10**9)
        time.sleep(args.settle)
        other_events += [(rid, s) for _, rid, s in events.take()]
        received_late = agent.take()
        other_vips += [(k, i) for k, i, _ in vipwatch.take()]
        t_end = now_ns()
        events.close()
        peer_code = None
        if args.failover == "sigterm":
            try:
                peer_code = peer.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                peer_code = "still running 15 s after SIGTERM"
        index = {rid: i for i, rid in enumerate(node.ids)}
        per_router = [announced[rid] - vip_at[index[rid]] for rid in announced if index[rid] in vip_at]
        per_router_agent = [notified[rid] - vip_at[index[rid]] for rid in notified if index[rid] in vip_at]
        last_vip = max(vip_at.values()) if vip_at else None
        report["failover"] = {
            "mode": args.failover,
            "vips": len(vip_at),
            "announced": len(announced),
            "notified": len(notified),
            "first_vip_ms": ms(min(vip_at.values()) - t_fail) if vip_at else None,
            "last_vip_ms": ms(last_vip - t_fail) if vip_at else None,
            "all_announced_after_last_vip_ms": ms(max(announced.values()) - last_vip) if announced and last_vip else None,
            "all_notified_after_last_vip_ms": ms(max(notified.values()) - last_vip) if notified and last_vip else None,
            "per_router_announce": summary(per_router),
            "per_router_notify": summary(per_router_agent),
            "other_events": other_events[:20],
            "other_events_count": len(other_events),
            "other_vip_events": other_vips[:20],
            "agent_other": [(rid, s) for _, rid, s in received if s != "primary"][:20] + [(rid, s) for _, rid, s in received_late][:20],
            "peer_exit": peer_code,
            "pss_peak_kib": sampler.peak(t_fail, t_end),
        }
        # The failover: from the peer going until the last router is announced and notified.
        t_done = max(list(announced.values()) + list(notified.values()) + [t_fail])
        report["failover"]["status"] = prober.window(t_fail, t_done)
        report["failover"]["window"] = (t_fail, t_done)
        report["failover"]["time"] = time_split(t_done - t_fail, sched0, sched1)
        say(f"failover: {len(vip_at)} VIPs, last {report['failover']['last_vip_ms']} ms after the peer went; "
            f"all announced {report['failover']['all_announced_after_last_vip_ms']} ms after the last VIP")  # fmt: skip
        report["memory_end"] = memory(node.pid, lab.binary)
        report["fds_end"] = fd_count(node.pid)
        report["cpu_total_ms"] = cpu_ms(node.pid)
        report["pss_peak_kib"] = sampler.peak()
        report["pss_samples"] = len(sampler.samples)
        report["status_all"] = prober.window(t_start, t_end)
        # Between the phases, nothing happening: the harness's own floor.
        windows = [report[k]["window"] for k in ("start", "respawn", "failover")]
        report["status_idle"] = prober.window(t_start, t_end, windows)
    finally:
        prober.stop()
        sampler.stop()
    node.proc.send_signal(signal.SIGTERM)
    try:
        report["node_exit"] = node.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        report["node_exit"] = "still running 15 s after SIGTERM"


# --------------------------------------------------------------------------
# Output


def rows(report: dict) -> list[dict]:
    out = []
    n = report["config"]["routers"]
    adv = report["config"]["advert_int"]
    sec = f"{n} routers with real keepalived"

    def row(name, value, unit="", target=None, ok=None):
        out.append({"section": sec, "metric": name, "value": value, "unit": unit, "target": target, "pass": ok})

    def status_rows(label: str, w: dict) -> None:
        a = w["all"]
        if not a.get("count"):
            row(f"status answers during {label}: none", "-", "", f"< {STATUS_TARGET_MS:g} ms", False)
            return
        row(f"status answers during {label}, max of {a['count']}", a["max_ms"], "ms", f"< {STATUS_TARGET_MS:g} ms", a["max_ms"] < STATUS_TARGET_MS)
        parts = []
        for kind, name in (("list", "GET /v1/routers"), ("one", "GET /v1/routers/ID")):
            s = w[kind]
            if s.get("count"):
                parts.append(f"{s['p50_ms']:.1f}/{s['p99_ms']:.1f}/{s['max_ms']:.1f} ({name})")
        row("  p50/p99/max", ", ".join(parts), "ms")
        if w["errors"]:
            row(f"status answers during {label} other than 200", w["errors"], "", "0", False)

    def states(label: str, counts: dict) -> None:
        value = "/".join(str(counts[k]) for k in ("primary", "backup", "fault", None))
        row(f"states {label} (primary/backup/fault/unknown)", value, "", f"0/{n}/0/0", counts["backup"] == n)

    def split_row(t: dict) -> None:
        row("  the daemon's wall time: on CPU / waiting for a CPU / blocked or idle",
            f"{t['cpu_ms']:.0f} / {t['runqueue_ms']:.0f} / {t['off_cpu_ms']:.0f} of {t['wall_ms']:.0f}", "ms")  # fmt: skip

    def ka_row(pair) -> None:
        if pair:
            cpus = report["config"]["cpus"]
            row(f"  keepalived's own CPU time, all its processes (/ {cpus} CPUs); their run-queue wait",
                f"{pair[0] / 1e9:.2f} (/ {cpus} = {pair[0] / 1e9 / cpus:.2f}); {pair[1] / 1e9:.2f}", "s")  # fmt: skip

    st = report.get("start")
    if st:
        row(f"daemon start -> all {n} keepalived running, all states known", st["s"], "s", f"< {START_TARGET_S:g} s", st["s"] < START_TARGET_S)
        row("  all running (main + VRRP child: pidfiles, /proc cmdline); first", f"{st['all_running_s']:.2f}; {st['first_running_s']:.3f}", "s")
        row("  all states known (GET /v1/routers); first status answer", f"{st['all_known_s']:.2f}; {st['first_status_answer_s'] if st.get('first_status_answer_s') is None else round(st['first_status_answer_s'], 2)}", "s")
        split_row(st["time"])
        ka_row(st.get("keepalived_sched"))
        states("after start", st["states_after_settle"])
        status_rows("start", st["status"])
    rs = report.get("respawn")
    if rs:
        row(f"kill -9 of all {rs['processes_killed']} keepalived processes -> all {n} running again", rs["s"], "s", f"< {RESPAWN_TARGET_S:g} s", rs["s"] < RESPAWN_TARGET_S)
        pr = rs["per_router"]
        row("  first; per router p50 / p99", f"{rs['first_s']:.3f}; {pr['p50_ms'] / 1000:.2f} / {pr['p99_ms'] / 1000:.2f}", "s")
        split_row(rs["time"])
        ka_row(rs.get("keepalived_sched"))
        row("restarts in status after the kill, min / max", f"{rs['restarts']['min']} / {rs['restarts']['max']}", "", "1 / 1", rs["restarts"]["min"] == 1 == rs["restarts"]["max"])
        states("after the respawn storm", rs["states_after_settle"])
        status_rows("the respawn storm", rs["status"])
    vb = report.get("vips_before_failover")
    if vb is not None:
        row("primary VIP changes on the node under test before the failover", len(vb), "", "0", not vb)
    fo = report.get("failover")
    if fo:
        label = "peer daemon SIGTERM, on_exit = stop" if fo["mode"] == "sigterm" else "peer daemon and keepalived SIGKILL"
        target = adv * 1000 + ANNOUNCE_MARGIN_MS
        v = fo["all_announced_after_last_vip_ms"]
        ok = v is not None and v < target and fo["vips"] == n and fo["announced"] == n
        row(f"failover ({label}): last VIP -> all {n} announced primary", v if v is not None else "-", "ms", f"< {adv} s + {ANNOUNCE_MARGIN_MS:g} ms", ok)
        row(f"  of which advert_int (deliberate: primary holds {adv} s)", adv * 1000, "ms")
        pr = fo["per_router_announce"]
        if pr.get("count"):
            row("  per router, own VIP -> its /v1/events line, p50 / max", f"{pr['p50_ms']:.1f} / {pr['max_ms']:.1f}", "ms")
        v2 = fo["all_notified_after_last_vip_ms"]
        pa = fo["per_router_notify"]
        row("  last VIP -> all notified on notify_agent_socket; per router p50 / max",
            f"{v2:.1f}; {pa['p50_ms']:.1f} / {pa['max_ms']:.1f}" if v2 is not None and pa.get("count") else "-", "ms")  # fmt: skip
        if fo["first_vip_ms"] is not None:
            row("  peer gone -> first / last VIP (keepalived's own timing)", f"{fo['first_vip_ms']:.0f} / {fo['last_vip_ms']:.0f}", "ms")
        if fo.get("time"):
            split_row(fo["time"])
        row("failover: VIPs appeared / announced / agent notified", f"{fo['vips']} / {fo['announced']} / {fo['notified']}", "", f"{n} / {n} / {n}", fo["vips"] == fo["announced"] == fo["notified"] == n)
        row("failover: other events / VIP changes", f"{fo['other_events_count']} / {len(fo['other_vip_events'])}", "", "0 / 0", not fo["other_events_count"] and not fo["other_vip_events"])
        status_rows("the failover", fo["status"])
    idle = (report.get("status_idle") or {}).get("all") or {}
    if idle.get("count"):
        row(f"  status answers between phases, nothing happening ({idle['count']}): p50 / p99 / max",
            f"{idle['p50_ms']:.1f} / {idle['p99_ms']:.1f} / {idle['max_ms']:.1f}", "ms")  # fmt: skip
    if report.get("pss_peak_kib") is not None:
        peak = report["pss_peak_kib"]
        row(f"daemon PSS, peak (every 200 ms, whole run: {report['pss_samples']} samples)", peak, "KiB", f"< {PSS_TARGET_KIB} KiB", peak < PSS_TARGET_KIB)
        for key, label in (("start", "after start"), ("respawn", "after the respawn storm")):
            m = (report.get(key) or {}).get("memory_after")
            if m:
                parts = m["by_mapping"]
                row(f"  PSS / RSS {label}; heap+stack+anon PSS", f"{m['pss_kib']} / {m['rss_kib']}; {parts['anon']['pss_kib']}", "KiB")
        m = report.get("memory_end")
        if m:
            row("  PSS / RSS at the end; VmHWM", f"{m['pss_kib']} / {m['rss_kib']}; {m['vmhwm_kib']}", "KiB")
        row("  daemon CPU time, whole run; open fds at the end", f"{report['cpu_total_ms']:.0f} ms; {report.get('fds_end')}", "")
    if report.get("peer_all_primary_s") is not None:
        row(f"peer alone: start -> all {n} primary (keepalived's master-down timeout)", report["peer_all_primary_s"], "s")
    if report.get("keepalived_processes") is not None:
        row("keepalived processes of the node under test", report["keepalived_processes"], "")
    if report.get("nice"):
        nc = report["nice"]
        row("nice: node daemon (its autogroup) / its keepalived / peer and its keepalived / status client",
            f"{nc['daemon']} ({nc['daemon_autogroup']}) / {','.join(map(str, nc['keepalived']))} / {nc['peer']} / {nc.get('probe')}", "")  # fmt: skip
    return out


def fmt_value(value, unit: str) -> str:
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return f"{text} {unit}".strip()


def print_table(report: dict, table: list[dict]) -> None:
    c = report["config"]
    print(f"harouterd with real keepalived: {c['routers']} routers (+ {c['routers']} on the peer, nice {c.get('peer_nice', 0)}), advert_int {c['advert_int']} s, binary {c['binary']}")
    print(f"host: {c['kernel']}, {c['cpus']} CPUs, keepalived {c['keepalived_version']}; state dirs on {c.get('state_path_fs', '?')}")
    print(f"load average at start / end: {c['loadavg_start']} / {c.get('loadavg_end', '?')}; set-up {report.get('setup_s', '?')} s; limits raised: {report.get('limits_changed') or 'none'}")
    print()
    widths = (
        max([50] + [len(r["metric"]) for r in table]),
        max([10] + [len(fmt_value(r["value"], r["unit"])) for r in table]),
        max([8] + [len(r["target"] or "-") for r in table]),
    )
    print(f"{'metric':<{widths[0]}} {'measured':>{widths[1]}}  {'target':<{widths[2]}} result")
    print("-" * (sum(widths) + 12))
    section = None
    for r in table:
        if r["section"] != section:
            section = r["section"]
            print(f"[{section}]")
        result = "info" if r["pass"] is None else ("pass" if r["pass"] else "MISS")
        print(f"{r['metric']:<{widths[0]}} {fmt_value(r['value'], r['unit']):>{widths[1]}}  {r['target'] or '-':<{widths[2]}} {result}")


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    target = os.path.join(here, "..", "target")
    p = argparse.ArgumentParser(description="1000 routers with real keepalived on one node: start, kill -9 of all, node-wide failover, memory, CPU, control socket.")
    p.add_argument("--routers", type=int, default=1000, help="routers on the node under test (and as many on its peer); default 1000")
    p.add_argument("--binary", default=os.path.join(target, "x86_64-unknown-linux-musl", "release", "harouterd"), help="harouterd (default: the static musl build)")
    p.add_argument("--flipper", default=os.path.join(target, "release", "examples", "bench_flipper"), help="bench_flipper (default target/release/examples/bench_flipper)")
    p.add_argument("--advert-int", type=int, default=1, help="ha_vrrp_advert_int of both nodes (default 1)")
    p.add_argument("--priority", type=int, default=50, help="priority of the node under test (default 50)")
    p.add_argument("--peer-priority", type=int, default=100, help="priority of the peer (default 100: it is primary first)")
    p.add_argument("--peer-nice", type=int, default=10, help="nice value (process and autogroup) of the peer daemon and its keepalived once all are primary: it stands for another host (default 10; 0 to compete for the CPUs as an equal)")
    p.add_argument("--failover", choices=("sigterm", "kill"), default="sigterm", help="how the peer goes: SIGTERM to its daemon (on_exit = stop), or SIGKILL to it and its keepalived")
    p.add_argument("--probe-gap-ms", type=float, default=10.0, help="pause between two control-socket requests (default 10)")
    p.add_argument("--probe-nice", type=int, default=-10, help="nice value (process and autogroup) of the status client (default -10, the daemon's own: the target is the daemon's answer time, not the client's wait for a CPU)")
    p.add_argument("--timeout", type=float, default=120.0, help="longest wait for each phase (default 120 s)")
    p.add_argument("--settle", type=float, default=3.0, help="pause between phases (default 3 s)")
    p.add_argument("--log-level", choices=("error", "warn", "info", "debug"), help="the daemons' --log-level (default: theirs, info)")
    p.add_argument("--keepalived-path", help="keepalived_path for both daemons (default: keepalived from PATH)")
    p.add_argument("--tmpdir", help="where the temp dir (both state dirs) is made (default: Python's, usually /tmp)")
    p.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, daemon logs)")
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = p.parse_args()
    if args.routers < 1 or args.advert_int < 1:
        p.error("--routers and --advert-int must be at least 1")
    if args.priority >= args.peer_priority:
        p.error("--priority must be below --peer-priority (the peer is primary first)")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    sys.setswitchinterval(0.0005)

    ka = shutil.which(args.keepalived_path or "keepalived")
    report = {
        "config": {
            "routers": args.routers,
            "advert_int": args.advert_int,
            "failover": args.failover,
            "peer_nice": args.peer_nice,
            "probe_nice": args.probe_nice,
            "binary": os.path.abspath(args.binary),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "keepalived_version": (subprocess.run([ka, "--version"], capture_output=True, text=True).stderr.split("\n")[0].strip() if ka else "not found"),
            "loadavg_start": loadavg(),
            "clock": "time.monotonic_ns (CLOCK_MONOTONIC); bench_flipper uses the same clock",
            "percentiles": "nearest rank",
        }
    }
    lab = None
    status = 0
    try:
        if os.geteuid() != 0:
            raise SetupError("needs root (network namespaces)")
        if not ka:
            raise SetupError("keepalived not found (apt-get install keepalived, or --keepalived-path)")
        if not os.access(args.binary, os.X_OK):
            raise SetupError(f"{args.binary}: not an executable (make static)")
        lab = Lab(args)
        report["config"]["state_path_fs"] = fs_type(lab.dir)
        bench(args, lab, report)
    except SetupError as e:
        print(f"keepalived_scale.py: {e}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("keepalived_scale.py: interrupted", file=sys.stderr)
        status = 130
    finally:
        if lab:
            try:
                lab.cleanup()
            except Exception as e:  # report what is left
                print(f"keepalived_scale.py: cleanup: {e}", file=sys.stderr)
    report["config"]["loadavg_end"] = loadavg()
    try:
        table = rows(report)
    except (KeyError, TypeError, ValueError) as e:
        print(f"keepalived_scale.py: incomplete report ({e!r})", file=sys.stderr)
        table = []
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
