#!/usr/bin/env python3
"""Memory and descriptors of `harouterd run` across reloads and flips
(issue 9: they must stay flat), Python 3.11 stdlib only. Not a test: it
prints numbers (and exits 1 when the growth passes `--max-growth-kib` or a
descriptor leaked).

Set-up: 10 monitor-only routers `m1`..`m10` in one namespace (one veth each,
the HA interfaces), one router `k1` with real keepalived in a second
namespace (alone, so it becomes primary), an agent receiver on
`notify_agent_socket` and `transition_script = /bin/true`.

1. warm-up: 10 reloads and 200 flips, so the allocator has its steady
   state; then descriptors (`/proc/PID/fd`), RSS and PSS are taken;
2. `--reloads` SIGHUPs (default 200), alternating between two configs that
   differ in k1's priority (an update: new keepalived.conf, a throttled
   SIGHUP to keepalived) and in a monitor-only router `x1` that is added and
   removed; each reload is waited for in the daemon's log; measured again;
3. `--flips` VIP changes (default 5000): the primary VIP of all ten
   monitor-only routers added, then deleted (one `ip -batch` each), waiting
   each time until every state file says so; measured again after the
   agent has every last notification.

Needs root, ip and keepalived. Everything it creates (namespaces
`hbf-PID-N`, a temp dir, the daemon, keepalived) is removed in a `finally`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon import Agent, fd_count, read_pid  # noqa: E402
from state_change import SetupError, memory, run  # noqa: E402

MONITORS = 10


def wait(what: str, timeout: float, check) -> float:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise SetupError(f"timed out waiting for {what}")
        time.sleep(0.002)
    return time.monotonic() - t0


def read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def config(d: str, ns_mon: str, ns_ka: str, agent: str, variant: int) -> str:
    text = (
        f"[daemon]\nstate_path = {d}/state\nha_vrrp_advert_int = 1\nkeepalived_path = {shutil.which('keepalived')}\n"
        "on_exit = stop\n"
        f"notify_agent_socket = {agent}\ntransition_script = /bin/true\n"
        f"\n[router k1]\nnamespace = {ns_ka}\nha_interface = ha-k1\nvrid = 1\npriority = {50 + 10 * variant}\n"
    )
    for i in range(1, MONITORS + 1):
        text += f"\n[router m{i}]\nnamespace = {ns_mon}\nha_interface = ha-m{i}\nvrid = {i + 1}\nkeepalived = false\n"
    if variant == 0:
        text += f"\n[router x1]\nnamespace = {ns_mon}\nha_interface = ha-x1\nvrid = 99\nkeepalived = false\n"
    return text


def ip_in(ns: str, lines: list[str]) -> None:
    """One `ip -n NS -batch -`."""
    subprocess.run(["ip", "-n", ns, "-batch", "-"], input="".join(f"{line}\n" for line in lines), text=True, check=True)


def measure(pid: int, binary: str) -> dict:
    m = memory(pid, binary)
    fds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return {"fd_targets": dict(sorted(fds.items())), "fds": fd_count(pid), "rss_kib": m["rss_kib"], "pss_kib": m["pss_kib"], "anon_rss_kib": m["by_mapping"]["anon"]["rss_kib"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default="target/x86_64-unknown-linux-musl/release/harouterd")
    p.add_argument("--reloads", type=int, default=200)
    p.add_argument("--flips", type=int, default=5000)
    p.add_argument("--max-growth-kib", type=int, default=256)
    p.add_argument("--json")
    args = p.parse_args()
    binary = os.path.abspath(args.binary)
    d = tempfile.mkdtemp(prefix="hbf-bench-")
    os.chmod(d, 0o755)
    ns_mon, ns_ka = f"hbf-{os.getpid()}-1", f"hbf-{os.getpid()}-2"
    daemon = None
    agent = None
    report: dict = {"binary": binary}
    try:
        for ns in (ns_mon, ns_ka):
            run(["ip", "netns", "add", ns])
        lines = ["link set lo up"]
        for name in [f"m{i}" for i in range(1, MONITORS + 1)] + ["x1"]:
            lines += [f"link add ha-{name} type veth peer name p-{name}", f"link set ha-{name} up", f"link set p-{name} up"]
        ip_in(ns_mon, lines)
        ip_in(ns_ka, ["link set lo up", "link add ha-k1 type veth peer name p-k1", "link set ha-k1 up",
                      "link set p-k1 up", "address add 169.254.192.1/18 dev ha-k1"])
        agent = Agent(f"{d}/agent.sock")
        conf = f"{d}/harouterd.conf"

        def write_config(variant: int) -> None:
            # Atomically: a reload must never read half a file.
            with open(f"{conf}.new", "w") as f:
                f.write(config(d, ns_mon, ns_ka, f"{d}/agent.sock", variant))
            os.chmod(f"{conf}.new", 0o600)
            os.rename(f"{conf}.new", conf)

        write_config(0)
        log = open(f"{d}/log", "w")
        daemon = subprocess.Popen([binary, "run", "-c", conf, "--foreground", "--pidfile", f"{d}/pid"],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        state = lambda r: read(f"{d}/state/ha_confs/{r}/state")  # noqa: E731
        monitors = [f"m{i}" for i in range(1, MONITORS + 1)]
        wait("every router known", 20, lambda: all(state(r) == "backup" for r in monitors) and state("k1") is not None)
        wait("k1 primary", 20, lambda: state("k1") == "primary")
        reloads = 0

        def reload_n(n: int) -> None:
            nonlocal reloads
            for _ in range(n):
                reloads += 1
                write_config(reloads % 2)
                daemon.send_signal(signal.SIGHUP)
                wait(f"reload {reloads}", 10, lambda: read(f"{d}/log").count(f"reloading {conf}: ") >= reloads)

        flipped = 0

        def flip_n(n: int) -> None:
            nonlocal flipped
            while n > 0:
                for action, want in (("add", "primary"), ("del", "backup")):
                    ip_in(ns_mon, [f"address {action} 169.254.0.{i + 1}/24 dev ha-m{i}" for i in range(1, MONITORS + 1)])
                    wait(f"flip to {want}", 10, lambda: all(state(r) == want for r in monitors))
                    flipped += MONITORS
                    n -= MONITORS

        reload_n(11)  # ends on variant 1 (x1 absent), as the measured runs do
        flip_n(200)
        time.sleep(0.5)
        report["start"] = measure(daemon.pid, binary)
        t = time.monotonic()
        reload_n(args.reloads)
        report["reloads"] = {"count": args.reloads, "seconds": round(time.monotonic() - t, 1)}
        time.sleep(0.5)
        report["after_reloads"] = measure(daemon.pid, binary)
        t = time.monotonic()
        flip_n(args.flips)
        report["flips"] = {"count": args.flips, "seconds": round(time.monotonic() - t, 1)}
        time.sleep(0.5)
        report["after_flips"] = measure(daemon.pid, binary)
        report["alive"] = daemon.poll() is None
    except SetupError as e:
        print(f"set-up or run failure: {e}", file=sys.stderr)
        return 2
    finally:
        if daemon is not None:
            # on_exit = stop: the daemon stops k1's keepalived itself.
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            for suffix in ("", "-vrrp"):
                pid = read_pid(f"{d}/state/ha_confs/k1.pid.keepalived{suffix}")
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        ours = f"{d}/".encode() in f.read()
                    if ours:
                        os.kill(pid, signal.SIGKILL)
                except (OSError, TypeError):
                    pass
        if agent is not None:
            agent.close()
        for ns in (ns_mon, ns_ka):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL, check=False)
        if os.environ.get("FLAT_KEEP"):
            print(f"kept {d}", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)
    print(f"{'':<16}{'fds':>6}{'RSS KiB':>10}{'PSS KiB':>10}{'anon RSS KiB':>14}")
    for key in ("start", "after_reloads", "after_flips"):
        m = report[key]
        print(f"{key:<16}{m['fds']:>6}{m['rss_kib']:>10}{m['pss_kib']:>10}{m['anon_rss_kib']:>14}")
    print(f"{args.reloads} reloads in {report['reloads']['seconds']} s, {args.flips} flips in {report['flips']['seconds']} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    s, e = report["start"], report["after_flips"]
    flat = e["fds"] == s["fds"] == report["after_reloads"]["fds"] and e["rss_kib"] - s["rss_kib"] <= args.max_growth_kib
    return 0 if flat and report["alive"] else 1


if __name__ == "__main__":
    sys.exit(main())
