#!/usr/bin/env python3
"""Every SPEC section 5 benchmark in one run: one table (measured value,
target, pass/miss) and a machine-readable copy.

    make bench                      # builds, then runs this
    python3 bench/run.py [--json FILE] [--quick] [--binary PATH] [--only PARTS]

Parts, in this order (`--only` takes a comma-separated subset):

- state-change: bench/state_change.py on the static musl binary (memory
  alone and per monitor with 10 running, idle wake-ups, SIGTERM), then
  again on the glibc release build (target/release/harouterd) for its
  memory, with few flips;
- latency: bench/latency.py, VIP change -> agent notified, reference
  before the change reaches an already-running `ip -batch` (state-change
  and the daemon's notify_agent_socket; ext4 judged, tmpfs and Neutron's
  shell monitor shown);
- daemon: bench/daemon.py (keepalived respawn, idle wake-ups, 1000
  monitor-only routers: memory and node-wide flips);
- keepalived: bench/keepalived_scale.py (1000 routers with real keepalived:
  start, kill -9 of all, node-wide failover, memory, control socket);
- the static binary's size.

Needs root (namespaces), keepalived, bench_flipper. Exit status: 0 every
target met, 1 a target missed, 2 a part could not run.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STATIC = os.path.join(ROOT, "target", "x86_64-unknown-linux-musl", "release", "harouterd")
GLIBC = os.path.join(ROOT, "target", "release", "harouterd")
SIZE_TARGET = 1.5 * 1024 * 1024
PARTS = ("state-change", "latency", "daemon", "keepalived", "size")


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def run_part(script, binary, extra):
    """Runs one benchmark script; returns its JSON report (or None)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = out.name
    cmd = [sys.executable, os.path.join(HERE, script), "--binary", binary, "--json", path] + extra
    print(f"==> {' '.join(cmd[1:])}   (load {loadavg()})", flush=True)
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.monotonic() - started
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError):
        print(f"    {script} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    finally:
        if os.path.exists(path):
            os.unlink(path)
    print(f"    done in {took:.0f} s (exit {proc.returncode})", flush=True)
    report["_exit"] = proc.returncode
    report["_stderr"] = proc.stderr[-2000:]
    return report


def target_rows(report, source):
    """The rows of a report that carry a target; a row's section (and the
    indented row it belongs to) goes into its name."""
    rows = []
    parent = ""
    table = (report or {}).get("table", [])
    # A section name helps only when a report has several.
    sections = len({row.get("section") for row in table}) > 1
    for row in table:
        metric = str(row.get("metric", ""))
        if not metric.startswith(" "):
            parent = metric
        if row.get("target") is None:
            continue
        name = " ".join(metric.split())
        if metric.startswith(" ") and parent:
            name = f"{' '.join(parent.split())}: {name}"
        if sections and row.get("section"):
            name = f"[{row['section']}] {name}"
        rows.append({
            "source": source,
            "metric": name,
            "value": row.get("value"),
            "unit": row.get("unit") or "",
            "target": row.get("target"),
            "pass": row.get("pass"),
        })
    return rows


def fmt_value(row):
    value = row["value"]
    if isinstance(value, float):
        value = f"{value:.3f}"
    return f"{value} {row['unit']}".strip()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default=STATIC, help="harouterd binary (default: the static musl build)")
    p.add_argument("--glibc-binary", default=GLIBC, help="the glibc build for the state-change memory row (default target/release/harouterd; skipped when missing)")
    p.add_argument("--json", metavar="FILE", help="write the table and the full reports as JSON")
    p.add_argument("--quick", action="store_true", help="fewer samples and 100 keepalived routers instead of 1000: a few minutes instead of ~10")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    args = p.parse_args()
    parts = [x.strip() for x in args.only.split(",") if x.strip()]
    if any(x not in PARTS for x in parts):
        p.error(f"--only takes {', '.join(PARTS)}")

    if os.geteuid() != 0:
        print("bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    if not os.path.exists(args.binary):
        print(f"bench: {args.binary} missing: run `make static` first", file=sys.stderr)
        return 2

    started = time.time()
    load_start = loadavg()
    reports = {}
    rows = []
    failed = []

    def part(name, script, binary, extra, source):
        report = run_part(script, binary, extra)
        reports[name] = report
        if report is None:
            failed.append(name)
        rows.extend(target_rows(report, source))

    if "state-change" in parts:
        part("state_change", "state_change.py", args.binary, ["--flips", "200"] if args.quick else [], "state-change")
        if os.path.exists(args.glibc_binary):
            part("state_change_glibc", "state_change.py", args.glibc_binary,
                 ["--flips", "20", "--idle", "1", "--baseline", "5", "--calibrate", "20"], "state-change glibc")  # fmt: skip
        else:
            print(f"    (no glibc build at {args.glibc_binary}: its memory row is skipped)", flush=True)
    if "latency" in parts:
        part("latency", "latency.py", args.binary, ["--flips", "100"] if args.quick else [], "latency")
    if "daemon" in parts:
        extra = ["--kills", "5", "--ct-kills", "3", "--idle", "5", "--rounds", "2"] if args.quick else []
        part("daemon", "daemon.py", args.binary, extra, "daemon")
    if "keepalived" in parts:
        part("keepalived", "keepalived_scale.py", args.binary, ["--routers", "100"] if args.quick else [], "keepalived")
    size = os.path.getsize(args.binary)
    if "size" in parts:
        rows.append({
            "source": "build",
            "metric": "static musl binary, stripped",
            "value": round(size / 1048576, 3),
            "unit": "MiB",
            "target": "< 1.5 MiB",
            "pass": size < SIZE_TARGET,
        })

    width = max([20] + [len(r["metric"]) for r in rows]) + 2
    vwidth = max([10] + [len(fmt_value(r)) for r in rows]) + 2
    twidth = max([8] + [len(str(r["target"])) for r in rows]) + 2
    print()
    print(f"{'part':<20}{'metric':<{width}}{'measured':>{vwidth}}  {'target':<{twidth}}result")
    for r in rows:
        result = {True: "pass", False: "MISS", None: "-"}[r["pass"]]
        print(f"{r['source']:<20}{r['metric']:<{width}}{fmt_value(r):>{vwidth}}  {str(r['target']):<{twidth}}{result}")
    machine = f"{platform.node()}: {os.cpu_count()} CPUs, kernel {platform.release()}"
    print(f"\nmachine: {machine}; binary: {args.binary} ({size} bytes); "
          f"load average {load_start} at start, {loadavg()} at the end")  # fmt: skip
    print(f"date: {time.strftime('%Y-%m-%d %H:%M', time.localtime(started))}; {'--quick' if args.quick else 'full'} run")
    if failed:
        print(f"parts that could not run: {', '.join(failed)}")
    misses = sum(1 for r in rows if r["pass"] is False)
    print(f"{len(rows)} rows with a target: {len(rows) - misses} pass, {misses} miss")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "started": started, "binary": args.binary, "quick": args.quick,
                       "load_start": load_start, "load_end": loadavg(), "rows": rows, "reports": reports}, f, indent=1)  # fmt: skip
    if failed:
        return 2
    return 0 if misses == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
