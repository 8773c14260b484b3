#!/usr/bin/env python3
"""VIP change -> agent notified (SPEC section 5), Python 3.11 stdlib only.

The reference time is read just before the address change is handed to an
already-running `ip -n NS -force -batch -` (started once; one command per
flip written to its stdin pipe, which `ip` reads and executes line by line
as it arrives). The receiver is a Unix-socket HTTP server that stamps the
time when a request head is complete. Sample = receipt - reference; the
next flip waits for the matching notification, so each sample is one
change. Nearest-rank percentiles.

Subjects, each with its state directory on ext4 (--disk-dir, default /tmp)
and on tmpfs (--tmpfs-dir, default /dev/shm):

- state-change: `harouterd state-change` with Neutron's command line, one
  router; every flip (VIP added, then removed) is a sample.
- daemon: `harouterd run` with `notify_agent_socket`, --daemon-routers
  monitor-only routers in the same namespace, each on its own veth. Judged
  on the backup direction (a removed VIP: never debounced); the primary
  direction is shown too (forwarded at once when the daemon sends raw
  changes, after advert_int when it sends effective ones).
- neutron-shell: Neutron's own `neutron-keepalived-state-change` (the dash
  script of neutron >= 29, `--neutron-monitor`), same command line, same
  harness, for reference.

Calibration rows: `ip -batch` write -> the kernel's address event (this
script's own rtnetlink listener, no monitor running): the floor under every
sample; the receiver's own floor; the state-file write (temp, fdatasync,
rename) on each filesystem.

Needs root. Everything it creates (namespace `hbl-PID`, temp dirs, the
processes) is removed in a `finally`, also on Ctrl-C and SIGTERM. Exit
status: 0 all targets met, 1 a target missed, 2 set-up or run failure.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from state_change import (  # noqa: E402  (the sibling benchmark's helpers)
    AddrEvents,
    Receiver,
    SetupError,
    calibrate_receiver,
    fs_type,
    now_ns,
    run,
    summary,
)

# Targets (SPEC section 5), state directory on a disk filesystem.
P50_TARGET_MS = 0.5
P99_TARGET_MS = 2.0

VIP = "169.254.0.1/24"  # the primary VIP of VRID 1 with the default HA network
SC_IFACE, SC_PEER = "ha-a", "ha-b"
NOTIFY_TIMEOUT = 5.0
CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# --------------------------------------------------------------------------
# Drivers: how an address change reaches the kernel


class IpBatch:
    """One `ip -n NS -force -batch -` for the whole run. `ip` reads its
    batch with getline() on a pipe: each read(2) returns as soon as a line
    is there, and the command runs at once (checked with strace -ttt: the
    sendmsg follows the read within microseconds; and by the calibration
    row). `-force`: an error does not end the batch; stderr is collected."""

    name = "ip -batch"

    def __init__(self, ns: str):
        self.proc = subprocess.Popen(
            ["ip", "-n", ns, "-force", "-batch", "-"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, bufsize=0,
        )  # fmt: skip
        self.fd = self.proc.stdin.fileno()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._stderr, name="ip-stderr", daemon=True)
        self.thread.start()

    def _stderr(self) -> None:
        for line in self.proc.stderr:
            self.errors.append(line.decode(errors="replace").strip())

    def change(self, action: str, iface: str, cidr: str) -> int:
        """Hands one change to `ip`; the reference time, read just before."""
        line = f"address {action} {cidr} dev {iface}\n".encode()
        t0 = now_ns()
        os.write(self.fd, line)
        return t0

    def many(self, changes: list[tuple[str, str, str]]) -> int:
        data = "".join(f"address {a} {c} dev {i}\n" for a, i, c in changes).encode()
        t0 = now_ns()
        os.write(self.fd, data)
        return t0

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class NetlinkDriver:
    """The alternative reference (--driver netlink): this script sends
    RTM_NEWADDR/RTM_DELADDR itself on an rtnetlink socket opened inside the
    namespace; the reference time is read just before sendto(2). The ack is
    read after, outside the sample."""

    name = "rtnetlink from the harness"

    def __init__(self, ns: str, ifaces: list[str]):
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
        got: dict = {}

        def inside() -> None:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                got["error"] = os.strerror(ctypes.get_errno())
                return
            got["sock"] = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            got["index"] = {name: socket.if_nametoindex(name) for name in ifaces}

        t = threading.Thread(target=inside)
        t.start()
        t.join()
        os.close(fd)
        if "sock" not in got:
            raise SetupError(f"rtnetlink socket in {ns}: {got.get('error')}")
        self.sock, self.index = got["sock"], got["index"]
        self.seq = 0
        self.errors: list[str] = []
        self.pending = 0

    def _message(self, action: str, iface: str, cidr: str) -> bytes:
        self.seq += 1
        addr, prefix = cidr.split("/")
        kind, flags = (20, 0x1 | 0x4 | 0x400 | 0x200) if action == "add" else (21, 0x1 | 0x4)
        body = struct.pack("=BBBBI", socket.AF_INET, int(prefix), 0, 0, self.index[iface])
        raw = socket.inet_aton(addr)
        attrs = struct.pack("=HH", 8, 2) + raw + struct.pack("=HH", 8, 1) + raw  # IFA_LOCAL, IFA_ADDRESS
        return struct.pack("=IHHII", 16 + len(body) + len(attrs), kind, flags, self.seq, 0) + body + attrs

    def _acks(self) -> None:
        while self.pending:
            data = self.sock.recv(65536)
            off = 0
            while off + 20 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if kind == 2:  # NLMSG_ERROR: the ack
                    code = struct.unpack_from("=i", data, off + 16)[0]
                    if code:
                        self.errors.append(os.strerror(-code))
                    self.pending -= 1
                off += max(16, (length + 3) & ~3)

    def change(self, action: str, iface: str, cidr: str) -> int:
        msg = self._message(action, iface, cidr)
        t0 = now_ns()
        self.sock.sendto(msg, (0, 0))
        self.pending += 1
        self._acks()
        return t0

    def many(self, changes: list[tuple[str, str, str]]) -> int:
        t0 = now_ns()
        for a, i, c in changes:
            self.change(a, i, c)
        return t0

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------
# Notifications


class Inbox:
    """Notifications of one receiver, matched by (router, state); anything
    else received meanwhile is kept for the `unexpected` count."""

    def __init__(self, receiver: Receiver):
        self.receiver = receiver
        self.held: list[tuple[int, str, str]] = []
        self.unexpected: list[dict] = []

    def wait(self, router: str, state: str, timeout: float) -> int | None:
        for i, (t, r, s) in enumerate(self.held):
            if (r, s) == (router, state):
                del self.held[i]
                return t
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                t, r, s = self.receiver.got.get(timeout=left)
            except queue.Empty:
                return None
            if (r, s) == (router, state):
                return t
            self.held.append((t, r, s))

    def settle(self, seconds: float) -> None:
        """Collects stragglers; everything not waited for is unexpected."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.held.append(self.receiver.got.get(timeout=left))
            except queue.Empty:
                break
        self.unexpected += [{"router_id": r, "state": s} for _, r, s in self.held]
        self.held = []


# --------------------------------------------------------------------------
# Subjects


class Subject:
    """A monitor under test: started with its state dir, flipped, stopped."""

    kind = ""

    def __init__(self, args: argparse.Namespace, ns: str, state_path: str):
        self.args, self.ns, self.state_path = args, ns, state_path
        self.proc: subprocess.Popen | None = None
        self.log = os.path.join(state_path, "log")

    def socket_path(self) -> str:
        """Where the agent listens: Neutron's STATE_PATH/keepalived-state-change."""
        return os.path.join(self.state_path, "keepalived-state-change")

    def _spawn(self, argv: list[str]) -> None:
        out = open(os.path.join(self.state_path, "stderr"), "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        out.close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=3)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the whole group: the shell monitor's ip too
        except ProcessLookupError:
            pass
        self.proc.wait()

    def diagnose(self, what: str) -> SetupError:
        tail = []
        for name in (self.log, os.path.join(self.state_path, "stderr")):
            try:
                with open(name, errors="replace") as f:
                    tail += [f"  {os.path.basename(name)}: {line.rstrip()}" for line in f.readlines()[-12:]]
            except OSError:
                pass
        status = "running" if self.proc and self.proc.poll() is None else f"exited {self.proc.returncode if self.proc else '-'}"
        return SetupError("\n".join([f"{self.kind}: {what} ({status})", *tail]))


def neutron_argv(program: list[str], ns: str, state_path: str, router: str) -> list[str]:
    """Neutron's command line for one router (ha_router.py), no --debug."""
    return program + [
        "--router_id", router,
        "--namespace", ns,
        "--conf_dir", os.path.join(state_path, "ha_confs", router),
        "--log-file", os.path.join(state_path, "log"),
        "--monitor_interface", SC_IFACE,
        "--monitor_cidr", VIP,
        "--pid_file", os.path.join(state_path, f"{router}.pid"),
        "--state_path", state_path,
    ]  # fmt: skip


class StateChange(Subject):
    kind = "state-change"

    def start(self) -> None:
        os.makedirs(os.path.join(self.state_path, "ha_confs", "r1"))
        # --foreground: the process started is the monitor (it would detach,
        # and the one started exit 0, as Neutron's agent expects), so the
        # harness can watch it and stop it.
        self._spawn(neutron_argv([self.args.binary, "state-change"], self.ns, self.state_path, "r1") + ["--foreground"])


class NeutronShell(Subject):
    """Neutron's dash monitor: `ip -o monitor address` into a FIFO, a
    `while read` loop, awk/cut per event, `curl --unix-socket` per
    notification. It reports its initial state only after the first
    address event, so the warm-up flip also yields that one."""

    kind = "neutron-shell"

    def start(self) -> None:
        os.makedirs(os.path.join(self.state_path, "ha_confs", "r1"))
        self._spawn(neutron_argv([self.args.neutron_monitor], self.ns, self.state_path, "r1"))

    def wait_ready(self, timeout: float) -> None:
        """Until its `ip -o monitor address` runs (a process of its session)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        sid = int(f.read().rsplit(")", 1)[1].split()[3])
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        argv = f.read().split(b"\0")
                except (OSError, ValueError, IndexError):
                    continue
                if sid == self.proc.pid and argv[:1] == [b"ip"] and b"monitor" in argv:
                    time.sleep(0.1)  # it subscribes right after exec
                    return
            if self.proc.poll() is not None:
                raise self.diagnose("exited at start")
            time.sleep(0.02)
        raise self.diagnose("its ip monitor did not start")


class DaemonSubject(Subject):
    kind = "daemon"

    def routers(self) -> list[tuple[str, str]]:
        return [(f"d{i}", f"hd{i}") for i in range(self.args.daemon_routers)]

    def socket_path(self) -> str:
        return os.path.join(self.state_path, "agent.sock")

    def start(self) -> None:
        agent = self.socket_path()
        lines = [
            "[daemon]",
            f"state_path = {self.state_path}",
            f"ha_vrrp_advert_int = {self.args.advert_int}",
            f"notify_agent_socket = {agent}",
        ]
        for rid, iface in self.routers():
            lines += ["", f"[router {rid}]", f"namespace = {self.ns}", f"ha_interface = {iface}", "vrid = 1", "keepalived = false"]
            os.makedirs(os.path.join(self.state_path, "ha_confs", rid))
        conf = os.path.join(self.state_path, "harouterd.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(conf, 0o600)
        self.log = os.path.join(self.state_path, "stderr")
        argv = [self.args.binary, "run", "-c", conf, "--foreground", "--pidfile", os.path.join(self.state_path, "harouterd.pid")]
        self._spawn(argv)


def flips_one_router(subject: Subject, driver, inbox: Inbox, count: int, iface: str, router: str) -> dict:
    """`count` flips of one router, alternating add/del, each waited for."""
    samples: dict[str, list[int]] = {"primary": [], "backup": []}
    missed = []
    for i in range(count):
        action, state = ("add", "primary") if i % 2 == 0 else ("del", "backup")
        t0 = driver.change(action, iface, VIP)
        t = inbox.wait(router, state, NOTIFY_TIMEOUT)
        if t is None:
            missed.append(i)
            if subject.proc.poll() is not None:
                raise subject.diagnose(f"flip {i}: died")
            continue
        samples[state].append(t - t0)
    return {"samples": samples, "missed": missed}


def flips_daemon(subject: DaemonSubject, driver, inbox: Inbox, backups: int, advert_int: int) -> dict:
    """Rounds over the daemon's routers until `backups` backup samples: each
    VIP added then removed, one at a time, each waited for. When the daemon
    holds `primary` for advert_int (it forwards effective states), the adds
    of a round go out together and are waited for together, so that a
    round costs one advert_int, not one per router."""
    routers = subject.routers()
    samples: dict[str, list[int]] = {"primary": [], "backup": []}
    missed = []
    # Which kind of daemon: the first add, timed alone.
    rid, iface = routers[0]
    t0 = driver.change("add", iface, VIP)
    t = inbox.wait(rid, "primary", advert_int + NOTIFY_TIMEOUT)
    if t is None:
        raise subject.diagnose("no primary notification for the first VIP added")
    held = (t - t0) > advert_int * 1e9 / 2
    samples["primary"].append(t - t0)
    up = {rid}
    while len(samples["backup"]) + len(missed) < backups:
        todo = [(r, i) for r, i in routers if r not in up]
        if held:
            starts = {}
            for r, i in todo:
                starts[r] = driver.change("add", i, VIP)
            for r, _ in todo:
                t = inbox.wait(r, "primary", advert_int + NOTIFY_TIMEOUT)
                if t is not None:
                    samples["primary"].append(t - starts[r])
        else:
            for r, i in todo:
                t0 = driver.change("add", i, VIP)
                t = inbox.wait(r, "primary", NOTIFY_TIMEOUT)
                if t is not None:
                    samples["primary"].append(t - t0)
        for r, i in routers:
            if len(samples["backup"]) + len(missed) >= backups:
                driver.change("del", i, VIP)  # leave every VIP off (not timed)
                inbox.wait(r, "backup", NOTIFY_TIMEOUT)
                continue
            t0 = driver.change("del", i, VIP)
            t = inbox.wait(r, "backup", NOTIFY_TIMEOUT)
            if t is None:
                missed.append(r)
                if subject.proc.poll() is not None:
                    raise subject.diagnose("died")
                continue
            samples["backup"].append(t - t0)
        up = set()
    return {"samples": samples, "missed": missed, "primary_held_advert_int": held}


def run_subject(kind: str, fs_dir: str, args: argparse.Namespace, ns: str, driver, cleanup: list) -> dict:
    # What a durable write costs on this filesystem right now: a disk shared
    # with other work varies by 10x within minutes.
    write_cost = state_write_probe(fs_dir, args.probe)
    state_path = tempfile.mkdtemp(prefix=f"hbl-{kind}-", dir=fs_dir)
    cleanup.append((f"{kind} temp dir", lambda: shutil.rmtree(state_path, ignore_errors=True)))
    cls = {"state-change": StateChange, "daemon": DaemonSubject, "neutron-shell": NeutronShell}[kind]
    subject = cls(args, ns, state_path)
    # The receiver first: a monitor that finds no socket retries with backoff.
    receiver = Receiver(subject.socket_path())
    cleanup.append((f"{kind} receiver", receiver.close))
    subject.start()
    cleanup.append((f"{kind} process", subject.stop))
    inbox = Inbox(receiver)
    t_start = now_ns()
    out = {"kind": kind, "state_path": state_path, "fs": fs_type(state_path), "state_write": write_cost}
    try:
        if kind == "state-change":
            if inbox.wait("r1", "backup", NOTIFY_TIMEOUT) is None:
                raise subject.diagnose("no initial notification")
            out["initial_notification_ms"] = (now_ns() - t_start) / 1e6
            flips_one_router(subject, driver, inbox, 2, SC_IFACE, "r1")  # warm-up: ip's interface cache
            inbox.settle(0.05)
            inbox.unexpected = []
            out.update(flips_one_router(subject, driver, inbox, args.flips, SC_IFACE, "r1"))
        elif kind == "neutron-shell":
            subject.wait_ready(10)
            # Warm-up: the first event makes it report its initial state too.
            driver.change("add", SC_IFACE, VIP)
            if inbox.wait("r1", "primary", NOTIFY_TIMEOUT) is None:
                raise subject.diagnose("no notification for the first flip")
            driver.change("del", SC_IFACE, VIP)
            inbox.wait("r1", "backup", NOTIFY_TIMEOUT)
            inbox.settle(0.2)
            inbox.unexpected = []
            out.update(flips_one_router(subject, driver, inbox, args.flips, SC_IFACE, "r1"))
        else:
            initial = [inbox.wait(r, "backup", 30) for r, _ in subject.routers()]
            if any(t is None for t in initial):
                raise subject.diagnose("not every router's initial backup was notified")
            out["initial_notification_ms"] = (max(initial) - t_start) / 1e6
            out.update(flips_daemon(subject, driver, inbox, args.flips, args.advert_int))
        inbox.settle(args.settle)
        if subject.proc.poll() is not None:
            raise subject.diagnose("exited during the run")
    finally:
        subject.stop()
        receiver.close()
    out["unexpected"] = inbox.unexpected[:20]
    out["unexpected_count"] = len(inbox.unexpected)
    out["receiver_errors"] = list(receiver.bad)
    out["summary"] = {state: summary(v) for state, v in out["samples"].items()}
    out["summary"]["all"] = summary(out["samples"]["primary"] + out["samples"]["backup"])
    return out


def state_write_probe(directory: str, count: int) -> dict:
    """A file written durably (new temp file, write, fdatasync, rename) in
    `directory`: what a durable write costs there right now. Before issue 13
    every notification of both subjects waited for one; now the state file
    is written after the notification and synced in quiet time."""
    probe = tempfile.mkdtemp(prefix="hbl-probe-", dir=directory)
    target = os.path.join(probe, "state")
    samples = []
    try:
        for i in range(count):
            temp = os.path.join(probe, f".state.{i}")
            t0 = now_ns()
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            os.write(fd, b"primary" if i % 2 else b"backup")
            os.fdatasync(fd)
            os.close(fd)
            os.rename(temp, target)
            samples.append(now_ns() - t0)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return summary(samples)


def calibrate_driver(ns: str, driver, count: int) -> dict:
    """The reference's own floor: write to `ip` (or sendto) -> this
    script's rtnetlink listener sees the address event. No monitor runs."""
    events = AddrEvents(ns)
    samples = []
    try:
        for i in range(count):
            action, state = ("add", "primary") if i % 2 == 0 else ("del", "backup")
            t0 = driver.change(action, SC_IFACE, VIP)
            t = events.take(state, NOTIFY_TIMEOUT)
            if t is None:
                raise SetupError(f"calibration: no address event for flip {i} ({action})")
            samples.append(t - t0)
    finally:
        events.close()
    return summary(samples)


def bench(args: argparse.Namespace, report: dict, cleanup: list) -> None:
    if os.geteuid() != 0:
        raise SetupError("needs root (network namespaces)")
    if not os.access(args.binary, os.X_OK):
        raise SetupError(f"{args.binary}: not an executable (make static, or --binary)")
    ns = f"hbl-{os.getpid()}"
    run(["ip", "netns", "add", ns])
    cleanup.append(("namespace", lambda: run(["ip", "netns", "del", ns])))
    # No IPv6: link-local addresses finishing DAD are address events the
    # monitors rightly wake for; they would land between flips.
    run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
         "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])  # fmt: skip
    links = [f"link add {SC_IFACE} type veth peer name {SC_PEER}"]
    links += [f"link add hd{i} type veth peer name hd{i}p" for i in range(args.daemon_routers)]
    ups = [f"link set {d} up" for d in [SC_IFACE, SC_PEER] + [f"hd{i}{s}" for i in range(args.daemon_routers) for s in ("", "p")]]
    r = subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(links + ups) + "\n", capture_output=True, text=True)
    if r.returncode != 0:
        raise SetupError(f"ip -batch set-up: {r.stderr.strip()[:400]}")

    if args.driver == "ip-batch":
        driver = IpBatch(ns)
    else:
        driver = NetlinkDriver(ns, [SC_IFACE] + [f"hd{i}" for i in range(args.daemon_routers)])
    cleanup.append(("driver", driver.close))
    report["config"]["driver"] = driver.name

    # Warm the driver (ip's interface cache), then its own floor.
    driver.change("add", SC_IFACE, VIP)
    driver.change("del", SC_IFACE, VIP)
    time.sleep(0.05)
    report["driver_floor"] = calibrate_driver(ns, driver, args.calibrate)

    filesystems = [("disk", args.disk_dir), ("tmpfs", args.tmpfs_dir)]
    report["filesystems"] = {label: {"dir": d, "fs": fs_type(d)} for label, d in filesystems}

    # The receiver's own floor (connect + send -> head in), once.
    floor_dir = tempfile.mkdtemp(prefix="hbl-floor-", dir=args.disk_dir)
    cleanup.append(("floor dir", lambda: shutil.rmtree(floor_dir, ignore_errors=True)))
    receiver = Receiver(os.path.join(floor_dir, "floor.sock"))
    try:
        report["receiver_floor"] = summary(calibrate_receiver(receiver, args.calibrate))
    finally:
        receiver.close()

    kinds = [k.strip() for k in args.subjects.split(",") if k.strip()]
    if "neutron-shell" in kinds and not args.neutron_monitor:
        report["skipped"] = "neutron-shell: no neutron-keepalived-state-change found (--neutron-monitor PATH)"
        kinds.remove("neutron-shell")
    report["runs"] = []
    for kind in kinds:
        for label, d in filesystems:
            if args.verbose:
                print(f"latency.py: {kind} on {label} ({d}) ...", file=sys.stderr)
            result = run_subject(kind, d, args, ns, driver, cleanup)
            result["fs_label"] = label
            result.pop("state_path", None)
            report["runs"].append(result)
            if args.verbose:
                s = result["summary"]["all"]
                print(f"  p50 {s.get('p50_ms', float('nan')):.3f} ms p99 {s.get('p99_ms', float('nan')):.3f} ms", file=sys.stderr)
    report["driver_errors"] = list(driver.errors)


# --------------------------------------------------------------------------
# Output


def rows(report: dict) -> list[dict]:
    out = []

    def row(section, name, value, unit="", target=None, ok=None):
        out.append({"section": section, "metric": name, "value": value, "unit": unit, "target": target, "pass": ok})

    ref = report["config"]["driver"]
    for run_ in report.get("runs", []):
        kind, label, fs = run_["kind"], run_["fs_label"], run_["fs"]
        sec = f"{kind}, state dir on {fs}"
        judged = label == "disk" and kind in ("state-change", "daemon")
        if kind == "daemon":
            series, what = run_["summary"]["backup"], "VIP removed -> backup notified (notify_agent_socket)"
        else:
            series, what = run_["summary"]["all"], "VIP change -> notified"
        n = series.get("count", 0)
        if n:
            for p, target in (("p50", P50_TARGET_MS), ("p99", P99_TARGET_MS)):
                value = series[f"{p}_ms"]
                row(sec, f"{what} {p}", value, "ms", f"< {target} ms" if judged else None, value < target if judged else None)
            row(sec, "  p90 / max / min", f"{series['p90_ms']:.3f} / {series['max_ms']:.3f} / {series['min_ms']:.3f}", "ms")
        flips = len(run_["samples"]["backup"]) + (0 if kind == "daemon" else len(run_["samples"]["primary"]))
        want = flips + len(run_["missed"])
        complete = not run_["missed"] and not run_["unexpected_count"]
        row(sec, "every flip notified once, nothing else (samples/flips, unexpected)", f"{n}/{want}, {run_['unexpected_count']}", "",
            f"{want}/{want}, 0" if kind != "neutron-shell" else None, complete if kind != "neutron-shell" else None)  # fmt: skip
        for state in ("primary", "backup"):
            s = run_["summary"][state]
            if (kind == "daemon" and state == "backup") or not s.get("count"):
                continue
            note = ""
            if kind == "daemon":
                note = ", held advert_int" if run_.get("primary_held_advert_int") else ", forwarded at once"
            row(sec, f"  {state} direction ({s['count']}{note}) p50 / p99 / max", f"{s['p50_ms']:.3f} / {s['p99_ms']:.3f} / {s['max_ms']:.3f}", "ms")
        w = run_.get("state_write") or {}
        if w.get("count"):
            row(sec, "  durable file write here just before (temp, fdatasync, rename) p50 / p99", f"{w['p50_ms']:.3f} / {w['p99_ms']:.3f}", "ms")
    sec = "calibration"
    for key, label in (
        ("driver_floor", f"{ref}: handed over -> kernel address event (no monitor)"),
        ("receiver_floor", "receiver floor: this script's own connect+send -> head in"),
    ):
        s = report.get(key) or {}
        if s.get("count"):
            row(sec, f"{label} p50 / p99", f"{s['p50_ms']:.3f} / {s['p99_ms']:.3f}", "ms")
    return out


def fmt_value(value, unit: str) -> str:
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return f"{text} {unit}".strip()


def print_table(report: dict, table: list[dict]) -> None:
    c = report["config"]
    print(f"harouterd notification latency: {c['flips']} samples per subject, reference: {c['driver']}, binary {c['binary']}")
    print(f"host: {c['kernel']}, {c['cpus']} CPUs, Python {c['python']}; load average {c['loadavg_start']} -> {c.get('loadavg_end', '?')}")
    if report.get("skipped"):
        print(f"skipped: {report['skipped']}")
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
    if report.get("driver_errors"):
        print(f"\n{c['driver']} errors: {report['driver_errors'][:5]}")


def default_neutron_monitor() -> str | None:
    """Neutron's monitor: $NEUTRON_MONITOR, else on PATH. It must be the
    shell script (neutron >= 29), not the old Python entry point."""
    path = os.environ.get("NEUTRON_MONITOR") or shutil.which("neutron-keepalived-state-change")
    if not path or not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return path if f.read(64).startswith(b"#!/bin/sh") else None


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    static = os.path.join(here, "..", "target", "x86_64-unknown-linux-musl", "release", "harouterd")
    p = argparse.ArgumentParser(description="VIP change -> agent notified, reference before the change reaches an already-running ip -batch.")
    p.add_argument("--binary", default=static, help="harouterd (default: the static musl build)")
    p.add_argument("--flips", type=int, default=300, help="judged samples per subject (default 300; the daemon: backup flips)")
    p.add_argument("--subjects", default="state-change,daemon,neutron-shell", help="comma-separated (default: all three)")
    p.add_argument("--driver", choices=("ip-batch", "netlink"), default="ip-batch", help="reference: an already-running `ip -batch -` (default) or rtnetlink sent by this script")
    p.add_argument("--neutron-monitor", default=default_neutron_monitor(), help="Neutron's neutron-keepalived-state-change shell script (default: $NEUTRON_MONITOR or PATH)")
    p.add_argument("--daemon-routers", type=int, default=50, help="monitor-only routers of the daemon subject (default 50)")
    p.add_argument("--advert-int", type=int, default=1, help="the daemon's ha_vrrp_advert_int (default 1)")
    p.add_argument("--disk-dir", default="/tmp", help="state dirs on a disk filesystem are made here (default /tmp)")
    p.add_argument("--tmpfs-dir", default="/dev/shm", help="state dirs on tmpfs are made here (default /dev/shm)")
    p.add_argument("--calibrate", type=int, default=100, help="samples of each calibration row (default 100)")
    p.add_argument("--probe", type=int, default=100, help="state file writes timed right before each subject, in its filesystem (default 100)")
    p.add_argument("--settle", type=float, default=0.3, help="wait for stragglers after the flips (default 0.3 s)")
    p.add_argument("--json", metavar="FILE", help="also write the full report, raw samples included")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    if args.flips < 2 or args.daemon_routers < 1:
        p.error("--flips >= 2 and --daemon-routers >= 1")
    args.binary = os.path.abspath(args.binary)
    sys.setswitchinterval(0.0001)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))

    report = {
        "config": {
            "flips": args.flips,
            "binary": args.binary,
            "driver": args.driver,
            "daemon_routers": args.daemon_routers,
            "advert_int": args.advert_int,
            "neutron_monitor": args.neutron_monitor,
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_start": loadavg(),
            "clock": "time.monotonic_ns (CLOCK_MONOTONIC)",
            "percentiles": "nearest rank",
        }
    }
    cleanup: list = []
    status = 0
    try:
        bench(args, report, cleanup)
    except SetupError as e:
        print(f"latency.py: {e}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("latency.py: interrupted", file=sys.stderr)
        status = 130
    finally:
        for what, step in reversed(cleanup):
            try:
                step()
            except Exception as e:  # keep cleaning
                print(f"latency.py: cleanup of {what} failed: {e}", file=sys.stderr)
    report["config"]["loadavg_end"] = loadavg()
    if status:
        return status
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
