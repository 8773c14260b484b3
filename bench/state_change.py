#!/usr/bin/env python3
"""Benchmark of `harouterd state-change` (SPEC section 5), Python 3.11 stdlib only.

Measures, against the release binary running Neutron's exact command line in
a scratch network namespace:

- latency from the moment `ip addr add/del` returns to the agent receiver
  having the whole POST head, one change at a time (p50, p99, max);
- PSS, RSS (smaps_rollup) and VmHWM of the monitor after the flips;
- context switches of the monitor while idle (target: none at all).

Calibration points printed alongside (no target): the receiver's own floor
(this script connecting to its own receiver), the time `ip` itself takes,
with the monitor running and alone.

Needs root (network namespaces). Everything it creates (namespace
`hrb-PID`, a temp dir, the monitor process) is removed in a `finally`, also
on Ctrl-C, SIGTERM and errors. Exit status: 0 all targets met, 1 a target
missed, 2 set-up or run failure.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROUTER = "r1"
VIP = "169.254.0.1/24"
IFACE, PEER = "ha-a", "ha-b"
AGENT_SOCKET = "keepalived-state-change"  # under --state_path (Neutron's name)
REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
NOTIFY_TIMEOUT = 5.0  # seconds to wait for one notification before counting it missed

# Targets (SPEC section 5). The latency target is judged by bench/latency.py
# (reference: before the change reaches an already-running `ip -batch`);
# here latency is measured from `ip` returning, for information. A single
# monitor's PSS is reported; the target is the PSS per monitor with
# --monitors of them running, as a node with that many routers pays it.
SHARED_PSS_TARGET_KIB = 150
SHARED_PSS_MONITORS = 10
IDLE_CTXT_TARGET = 0

now_ns = time.monotonic_ns  # CLOCK_MONOTONIC, same clock in every thread


class SetupError(Exception):
    pass


# --------------------------------------------------------------------------
# The agent stand-in


class Receiver:
    """Neutron's agent socket: one POST per connection, answered 200.

    A single thread blocks in accept(); the receipt time is taken as soon
    as the request head (up to the empty line) is complete, before parsing
    or replying. Each notification goes to `self.got` as
    (receipt_ns, router_id, state).
    """

    def __init__(self, path: str):
        self.path = path
        self.got: queue.SimpleQueue = queue.SimpleQueue()
        self.bad: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(64)
        self.thread = threading.Thread(target=self._serve, name="receiver", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # listener shut down
            try:
                self._one(conn)
            except OSError as e:
                self.bad.append(f"connection error: {e}")
            finally:
                conn.close()

    def _one(self, conn: socket.socket) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(8192)
            if not chunk:
                self.bad.append(f"connection closed before the end of the head: {buf[:200]!r}")
                return
            buf += chunk
        t = now_ns()
        head = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        router, state = headers.get("x-neutron-router-id"), headers.get("x-neutron-state")
        if not head[0].startswith("POST ") or router is None or state is None:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.bad.append(f"not a notification: {head!r}")
            return
        conn.sendall(REPLY)
        self.got.put((t, router, state))

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=2)


class AddrEvents:
    """Optional second clock (--event-clock): our own rtnetlink listener in
    the namespace, timestamping each RTM_NEWADDR/RTM_DELADDR of the VIP as
    the kernel multicasts it, i.e. when the monitor's own socket becomes
    readable. Gives "kernel event -> POST", independent of when `ip` exits.
    It is one more thread woken per change, so it is off by default."""

    RTMGRP_IPV4_IFADDR = 0x10
    RTM_NEWADDR, RTM_DELADDR = 20, 21
    IFA_ADDRESS, IFA_LOCAL = 1, 2

    def __init__(self, ns: str):
        import ctypes

        self.got: queue.SimpleQueue = queue.SimpleQueue()
        address, prefix = VIP.split("/")
        self.want = (socket.inet_aton(address), int(prefix))
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
        opened: dict = {}

        def open_inside() -> None:
            # setns(2) changes the calling thread only; the socket stays in
            # the namespace it was created in, whoever uses it later.
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                opened["error"] = os.strerror(ctypes.get_errno())
                return
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            s.bind((0, self.RTMGRP_IPV4_IFADDR))
            opened["sock"] = s

        t = threading.Thread(target=open_inside)
        t.start()
        t.join()
        os.close(fd)
        if "sock" not in opened:
            raise SetupError(f"cannot open an rtnetlink socket in {ns}: {opened.get('error')}")
        self.sock = opened["sock"]
        self.thread = threading.Thread(target=self._listen, name="addr-events", daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        import struct

        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            t = now_ns()
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if length < 16:
                    break
                if kind in (self.RTM_NEWADDR, self.RTM_DELADDR) and length >= 24:
                    family, prefix = data[off + 16], data[off + 17]
                    local = None
                    a = off + 24
                    while a + 4 <= off + length:
                        alen, atype = struct.unpack_from("=HH", data, a)
                        if alen < 4:
                            break
                        # IFA_LOCAL is the address itself; IFA_ADDRESS too
                        # unless point-to-point, so it only stands in.
                        if atype == self.IFA_LOCAL or (atype == self.IFA_ADDRESS and local is None):
                            local = data[a + 4 : a + alen]
                        a += (alen + 3) & ~3
                    if family == socket.AF_INET and (local, prefix) == self.want:
                        self.got.put((t, "primary" if kind == self.RTM_NEWADDR else "backup"))
                off += (length + 3) & ~3

    def take(self, state: str, timeout: float) -> int | None:
        """Time of the next event of `state` (events of the other kind are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                t, got = self.got.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if got == state:
                return t

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def expect(receiver: Receiver, state: str, timeout: float, unexpected: list) -> int | None:
    """Receipt time of the next notification of `state` for ROUTER, or None
    after `timeout`. Anything else received meanwhile goes to `unexpected`."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            t, router, got = receiver.got.get(timeout=left)
        except queue.Empty:
            return None
        if router == ROUTER and got == state:
            return t
        unexpected.append({"router_id": router, "state": got, "expected": state})


# --------------------------------------------------------------------------
# Helpers


def run(argv: list[str]) -> None:
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        raise SetupError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")


def timed_ip(ns: str, action: str) -> tuple[int, int]:
    """Runs `ip -n NS addr ACTION VIP dev IFACE`; (spawn_ns, return_ns)."""
    argv = ["ip", "-n", ns, "addr", action, VIP, "dev", IFACE]
    t0 = now_ns()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t1 = now_ns()
    if r.returncode != 0:
        raise SetupError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}")
    return t0, t1


def kv_file(path: str) -> dict[str, str]:
    out = {}
    with open(path) as f:
        for line in f:
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
    return out


def kib(value: str) -> int:
    number, unit = value.split()
    assert unit == "kB", value
    return int(number)


def memory(pid: int, binary: str) -> dict:
    """Pss, Rss (smaps_rollup), VmHWM, and where the pages are: the
    harouterd binary's own mappings, shared libraries, the rest (heap,
    stack, anonymous mappings)."""
    rollup = kv_file(f"/proc/{pid}/smaps_rollup")
    status = kv_file(f"/proc/{pid}/status")
    out = {"pss_kib": kib(rollup["Pss"]), "rss_kib": kib(rollup["Rss"]), "vmhwm_kib": kib(status["VmHWM"])}
    for key, name in (("Pss_Anon", "pss_anon_kib"), ("Pss_File", "pss_file_kib"), ("Private_Dirty", "private_dirty_kib")):
        if key in rollup:
            out[name] = kib(rollup[key])
    binary = os.path.realpath(binary)
    parts = {kind: {"rss_kib": 0, "pss_kib": 0} for kind in ("binary", "libraries", "anon")}
    kind = "anon"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and ":" not in fields[0]:  # a mapping's header line
                path = fields[5] if len(fields) > 5 else ""
                kind = "binary" if path == binary else ("libraries" if path.startswith("/") else "anon")
            elif fields[0] in ("Rss:", "Pss:"):
                parts[kind][fields[0][:-1].lower() + "_kib"] += int(fields[1])
    out["by_mapping"] = parts
    return out


def ctxt_switches(pid: int) -> tuple[int, int]:
    """(voluntary + nonvoluntary switches summed over every thread, threads)."""
    total, threads = 0, 0
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            s = kv_file(status)
        except FileNotFoundError:
            continue
        total += int(s["voluntary_ctxt_switches"]) + int(s["nonvoluntary_ctxt_switches"])
        threads += 1
    return total, threads


def percentile(sorted_values: list[int], p: float) -> int:
    """Nearest-rank percentile (p in 0..100) of an already sorted list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(values_ns: list[int]) -> dict:
    if not values_ns:
        return {"count": 0}
    s = sorted(values_ns)
    return {
        "count": len(s),
        "min_ms": s[0] / 1e6,
        "p50_ms": percentile(s, 50) / 1e6,
        "p90_ms": percentile(s, 90) / 1e6,
        "p99_ms": percentile(s, 99) / 1e6,
        "max_ms": s[-1] / 1e6,
        "mean_ms": sum(s) / len(s) / 1e6,
    }


def fs_type(path: str) -> str:
    """Filesystem type holding `path` (longest matching mount point)."""
    best, kind = "", "?"
    real = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            mnt = fields[1].replace("\\040", " ")
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, fields[2]
    return kind


# --------------------------------------------------------------------------
# The benchmark


def calibrate_receiver(receiver: Receiver, count: int) -> list[int]:
    """This process connecting to its own receiver: connect + send of the
    same request, to the receipt timestamp. What the receiver (and Python)
    add on their own; the monitor's numbers include something like it."""
    request = (
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Neutron-Router-Id: calibrate\r\n"
        "X-Neutron-State: backup\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    samples, unexpected = [], []
    for _ in range(count):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        t0 = now_ns()
        c.connect(receiver.path)
        c.sendall(request)
        t = receiver.got.get(timeout=NOTIFY_TIMEOUT)
        c.recv(1024)
        c.close()
        if t[1] != "calibrate":
            unexpected.append(t)
            continue
        samples.append(t[0] - t0)
    if unexpected:
        raise SetupError(f"receiver calibration got foreign notifications: {unexpected}")
    return samples


def bench(args: argparse.Namespace, report: dict, cleanup: list) -> None:
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        raise SetupError(f"{binary}: not an executable (build it: cargo build --release)")
    if os.geteuid() != 0:
        raise SetupError("needs root (network namespaces)")

    ns = f"hrb-{os.getpid()}"
    run(["ip", "netns", "add", ns])
    cleanup.append(("namespace", lambda: run(["ip", "netns", "del", ns])))
    # No IPv6 in the namespace: link-local addresses finishing DAD a second
    # or two after link-up are address events the monitor rightly wakes
    # for; they would land in the idle window and count as wake-ups.
    run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
         "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])  # fmt: skip
    run(["ip", "-n", ns, "link", "add", IFACE, "type", "veth", "peer", "name", PEER])
    for dev in ("lo", IFACE, PEER):
        run(["ip", "-n", ns, "link", "set", dev, "up"])

    state_path = tempfile.mkdtemp(prefix="hrb-bench-", dir=args.tmpdir)
    cleanup.append(("temp dir", lambda: shutil.rmtree(state_path)))
    os.makedirs(os.path.join(state_path, "ha_confs", ROUTER))

    report["config"].update(
        {
            "binary": binary,
            "binary_bytes": os.path.getsize(binary),
            "namespace": ns,
            "state_path": state_path,
            "state_path_fs": fs_type(state_path),
        }
    )

    # The receiver first: the monitor notifies at once on start.
    receiver = Receiver(os.path.join(state_path, AGENT_SOCKET))
    cleanup.append(("receiver", receiver.close))
    receiver_floor = calibrate_receiver(receiver, args.calibrate)

    def monitor_argv(router: str) -> list[str]:
        """Neutron's command line for `router` (ha_router.py), no --debug, plus --foreground."""
        return [
            binary, "state-change",
            "--router_id", router,
            "--namespace", ns,
            "--conf_dir", os.path.join(state_path, "ha_confs", router),
            "--log-file", os.path.join(state_path, "log" if router == ROUTER else f"log.{router}"),
            "--monitor_interface", IFACE,
            "--monitor_cidr", VIP,
            "--pid_file", os.path.join(state_path, f"{router}.pid"),
            "--state_path", state_path,
            # Attached, so the Popen pid is the monitor's (it detaches
            # otherwise, as Neutron expects; same process image either way).
            "--foreground",
        ]  # fmt: skip

    argv = monitor_argv(ROUTER)
    report["config"]["command"] = argv
    stderr = open(os.path.join(state_path, "stderr"), "wb")
    monitor = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, start_new_session=True)
    stderr.close()

    def stop_monitor() -> None:
        if monitor.poll() is None:
            monitor.kill()
            monitor.wait()

    cleanup.append(("monitor", stop_monitor))

    def diagnose(what: str) -> SetupError:
        tail = []
        for name in ("log", "stderr"):
            try:
                with open(os.path.join(state_path, name), errors="replace") as f:
                    tail += [f"  {name}: {line.rstrip()}" for line in f.readlines()[-15:]]
            except OSError:
                pass
        status = "running" if monitor.poll() is None else f"exited {monitor.returncode}"
        return SetupError("\n".join([f"{what} (monitor {status})", *tail]))

    unexpected: list = []
    t_start = now_ns()
    t_initial = expect(receiver, "backup", NOTIFY_TIMEOUT, unexpected)
    if t_initial is None:
        raise diagnose("no initial notification (backup) from the monitor")
    report["startup_to_initial_notification_ms"] = (t_initial - t_start) / 1e6
    time.sleep(0.2)
    mem_start = memory(monitor.pid, binary)

    events = None
    if args.event_clock:
        events = AddrEvents(ns)
        cleanup.append(("address listener", events.close))

    # The flips: one change at a time, waiting for its notification.
    latency, from_spawn, from_event, ip_runtime, missed = [], [], [], [], []
    for i in range(args.flips):
        action, state = ("add", "primary") if i % 2 == 0 else ("del", "backup")
        t_spawn, t_ret = timed_ip(ns, action)
        t_recv = expect(receiver, state, NOTIFY_TIMEOUT, unexpected)
        ip_runtime.append(t_ret - t_spawn)
        if t_recv is None:
            missed.append(i)
            if monitor.poll() is not None:
                raise diagnose(f"flip {i}: monitor died")
            continue
        latency.append(t_recv - t_ret)
        from_spawn.append(t_recv - t_spawn)
        if events:
            t_event = events.take(state, 1.0)
            if t_event is not None:
                from_event.append(t_recv - t_event)
        if args.gap_ms:
            time.sleep(args.gap_ms / 1000)

    # Steady state: memory, then the idle window, once the state file's
    # sync (a quiet second after the last change, src/core/sync_later.rs:
    # the last thing the monitor does before idling) is behind us.
    time.sleep(args.settle + 1.0)
    if monitor.poll() is not None:
        raise diagnose("monitor exited during the run")
    mem = memory(monitor.pid, binary)
    ctx_before, threads = ctxt_switches(monitor.pid)
    time.sleep(args.idle)
    ctx_after, _ = ctxt_switches(monitor.pid)
    late = []
    while True:  # anything that arrived after the flips is a spurious notification
        try:
            late.append(receiver.got.get_nowait())
        except queue.Empty:
            break

    # Optional: PSS per monitor with N of them running, as on a network node
    # with N HA routers, where the binary's pages are shared N ways. The
    # extra monitors watch the same interface and CIDR under other router
    # IDs; only their initial notifications are waited for, nothing is timed.
    shared = None
    if args.monitors > 1:
        extras = []

        def stop_extras() -> None:
            for p in extras:
                if p.poll() is None:
                    p.kill()
                    p.wait()

        cleanup.append(("extra monitors", stop_extras))
        routers = [f"x{i}" for i in range(2, args.monitors + 1)]
        for router in routers:
            os.makedirs(os.path.join(state_path, "ha_confs", router))
            extras.append(
                subprocess.Popen(monitor_argv(router), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
            )
        pending, deadline = set(routers), time.monotonic() + NOTIFY_TIMEOUT
        while pending and time.monotonic() < deadline:
            try:
                pending.discard(receiver.got.get(timeout=max(0.0, deadline - time.monotonic()))[1])
            except queue.Empty:
                break
        if pending:
            raise diagnose(f"{len(pending)} extra monitors sent no initial notification")
        time.sleep(args.settle)
        mems = [memory(pid, binary) for pid in [monitor.pid] + [p.pid for p in extras]]
        shared = {
            "monitors": args.monitors,
            "pss_kib_mean": sum(m["pss_kib"] for m in mems) / len(mems),
            "pss_kib_max": max(m["pss_kib"] for m in mems),
            "rss_kib_max": max(m["rss_kib"] for m in mems),
            "pss_kib_total": sum(m["pss_kib"] for m in mems),
        }
        stop_extras()

    # SIGTERM: the monitor must exit 0 promptly.
    t0 = now_ns()
    monitor.send_signal(signal.SIGTERM)
    try:
        code = monitor.wait(timeout=5)
    except subprocess.TimeoutExpired:
        code = None
    report["sigterm_exit"] = {"code": code, "ms": (now_ns() - t0) / 1e6}

    # `ip` alone, no monitor listening in the namespace.
    ip_alone = []
    for i in range(args.baseline):
        t_spawn, t_ret = timed_ip(ns, "add" if i % 2 == 0 else "del")
        ip_alone.append(t_ret - t_spawn)

    report.update(
        {
            "latency_ns": latency,
            "latency": summary(latency),
            "negative_samples": sum(1 for v in latency if v < 0),
            "from_ip_spawn": summary(from_spawn),
            "from_kernel_event": summary(from_event),
            "ip_runtime_with_monitor": summary(ip_runtime),
            "ip_runtime_alone": summary(ip_alone),
            "receiver_floor": summary(receiver_floor),
            "missed_flips": missed,
            "unexpected_notifications": unexpected + [{"router_id": r, "state": s, "late": True} for _, r, s in late],
            "receiver_errors": list(receiver.bad),
            "memory_after_start": mem_start,
            "memory": mem,
            "idle": {"seconds": args.idle, "ctxt_switches": ctx_after - ctx_before, "threads": threads},
            "memory_shared": shared,
        }
    )


# --------------------------------------------------------------------------
# Output


def rows(report: dict) -> list[dict]:
    """(metric, value, target, pass) rows; pass None means information only."""
    out = []

    def row(name, value, unit, target=None, ok=None):
        out.append({"metric": name, "value": value, "unit": unit, "target": target, "pass": ok})

    lat = report["latency"]
    flips = report["config"]["flips"]
    if lat["count"]:
        row("latency p50 (ip returns -> POST head in; see latency.py)", lat["p50_ms"], "ms")
        row("latency p99", lat["p99_ms"], "ms")
        row("latency max", lat["max_ms"], "ms")
        row("latency min (negative: POST before ip exited)", lat["min_ms"], "ms")
    row("notifications received / flips", f"{lat['count']}/{flips}", "", f"{flips}/{flips}", lat["count"] == flips)
    row("unexpected notifications", len(report["unexpected_notifications"]), "", "0", not report["unexpected_notifications"])
    mem = report["memory"]
    row("PSS after flips, alone", mem["pss_kib"], "KiB")
    row("RSS after flips, alone", mem["rss_kib"], "KiB")
    row("VmHWM (peak RSS)", mem["vmhwm_kib"], "KiB")
    parts = mem["by_mapping"]
    row(
        "PSS / RSS: binary, libraries, heap+stack+anon",
        " ".join(f"{p['pss_kib']}/{p['rss_kib']}" for p in (parts["binary"], parts["libraries"], parts["anon"])),
        "KiB",
    )
    sh = report["memory_shared"]
    if sh:
        judged = sh["monitors"] == SHARED_PSS_MONITORS
        row(
            f"PSS per monitor, {sh['monitors']} running (mean; node total / {sh['monitors']})",
            round(sh["pss_kib_mean"]),
            "KiB",
            f"< {SHARED_PSS_TARGET_KIB} KiB" if judged else None,
            sh["pss_kib_mean"] < SHARED_PSS_TARGET_KIB if judged else None,
        )
        row("  max of one", sh["pss_kib_max"], "KiB")
    idle = report["idle"]
    row(f"context switches while idle {idle['seconds']:g} s", idle["ctxt_switches"], "", "0", idle["ctxt_switches"] == IDLE_CTXT_TARGET)
    row("threads", idle["threads"], "")
    sig = report["sigterm_exit"]
    row("SIGTERM -> exit", "timeout" if sig["code"] is None else f"code {sig['code']} in {sig['ms']:.1f} ms", "", "code 0", sig["code"] == 0)
    # Calibration, no targets.
    for key, label in (
        ("from_kernel_event", "POST head in, from kernel event (--event-clock)"),
        ("from_ip_spawn", "POST head in, from before spawning ip"),
        ("ip_runtime_with_monitor", "ip runtime, monitor running"),
        ("ip_runtime_alone", "ip runtime, no monitor"),
        ("receiver_floor", "receiver floor (own connect+send)"),
    ):
        s = report[key]
        if s["count"]:
            row(f"{label} p50/p99", f"{s['p50_ms']:.3f} / {s['p99_ms']:.3f}", "ms")
    row("initial notification after start", report["startup_to_initial_notification_ms"], "ms")
    row("PSS / RSS right after start", f"{report['memory_after_start']['pss_kib']} / {report['memory_after_start']['rss_kib']}", "KiB")
    return out


def fmt_value(value, unit: str) -> str:
    if isinstance(value, float):
        text = f"{value:.3f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def print_table(report: dict, table: list[dict]) -> None:
    c = report["config"]
    print(f"harouterd state-change benchmark: {c['flips']} flips, binary {c['binary']} ({c['binary_bytes']} bytes)")
    print(f"host: {c['kernel']}, {c['cpus']} CPUs, Python {c['python']}; state_path on {c['state_path_fs']}")
    print()
    widths = (48, 24, 14)
    print(f"{'metric':<{widths[0]}} {'value':>{widths[1]}}  {'target':<{widths[2]}} result")
    print("-" * (sum(widths) + 12))
    for r in table:
        result = "info" if r["pass"] is None else ("pass" if r["pass"] else "FAIL")
        print(f"{r['metric']:<{widths[0]}} {fmt_value(r['value'], r['unit']):>{widths[1]}}  {r['target'] or '-':<{widths[2]}} {result}")
    print()
    n, neg = report["latency"]["count"], report["negative_samples"]
    print(
        f"Latency samples are receipt time minus the time `ip` returned, not clamped: "
        f"{neg} of {n} are negative (the POST head arrived before `ip` had exited and been reaped)."
    )
    if report["missed_flips"]:
        print(f"Missed flips (no notification within {NOTIFY_TIMEOUT:g} s): {report['missed_flips']}")
    if report["unexpected_notifications"]:
        print(f"Unexpected notifications: {report['unexpected_notifications'][:10]}")
    if report["receiver_errors"]:
        print(f"Receiver errors: {report['receiver_errors'][:10]}")


# --------------------------------------------------------------------------


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description="Benchmark harouterd state-change: VIP change -> agent notification latency, memory, idle wake-ups.")
    p.add_argument("--flips", type=int, default=500, help="address changes to time (default 500)")
    p.add_argument("--binary", default=os.path.join(here, "..", "target", "release", "harouterd"), help="harouterd binary (default target/release/harouterd)")
    p.add_argument("--json", metavar="FILE", help="also write the full report, raw samples included, as JSON")
    p.add_argument("--idle", type=float, default=5.0, help="idle window for the wake-up count, seconds (default 5)")
    p.add_argument("--settle", type=float, default=0.5, help="pause after the flips before memory and idle sampling (default 0.5 s)")
    p.add_argument("--gap-ms", type=float, default=0.0, help="pause between a notification and the next flip (default 0)")
    p.add_argument("--baseline", type=int, default=100, help="`ip` runs timed with no monitor (default 100)")
    p.add_argument("--calibrate", type=int, default=200, help="receiver self-test connections (default 200)")
    p.add_argument("--event-clock", action="store_true", help="also time from the kernel's address event, seen by a netlink listener of this script's own (one more woken thread per change)")
    p.add_argument("--monitors", type=int, default=10, help="after the single-monitor numbers, also measure PSS per monitor with this many running (default 10; 1 skips it)")
    p.add_argument("--tmpdir", help="where the state_path dir is made (default: Python's tempdir, usually /tmp); the monitor writes the state file after notifying and syncs it in quiet time")
    args = p.parse_args()
    if args.flips < 2:
        p.error("--flips must be at least 2")

    # Tight hand-over between the receiver thread and this one.
    sys.setswitchinterval(0.0001)
    # SIGTERM/SIGHUP clean up like Ctrl-C does.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))

    report = {
        "config": {
            "flips": args.flips,
            "gap_ms": args.gap_ms,
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "clock": "time.monotonic_ns (CLOCK_MONOTONIC)",
            "percentiles": "nearest rank",
        }
    }
    cleanup: list = []
    try:
        bench(args, report, cleanup)
    except SetupError as e:
        print(f"state_change.py: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("state_change.py: interrupted", file=sys.stderr)
        return 130
    finally:
        for what, step in reversed(cleanup):
            try:
                step()
            except Exception as e:  # keep cleaning
                print(f"state_change.py: cleanup of {what} failed: {e}", file=sys.stderr)

    table = rows(report)
    report["table"] = table
    print_table(report, table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    return 0 if all(r["pass"] is not False for r in table) else 1


if __name__ == "__main__":
    sys.exit(main())
