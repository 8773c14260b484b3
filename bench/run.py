#!/usr/bin/env python3
"""Every SPEC section 5 benchmark in one run: one table (measured value,
target, pass/fail) and a machine-readable copy.

    make bench                      # builds, then runs this
    python3 bench/run.py [--json FILE] [--quick] [--binary PATH]

It runs bench/state_change.py (the Neutron drop-in: latency, memory, idle
wake-ups) and bench/daemon.py (keepalived respawn, idle wake-ups, 1000
routers: memory and node-wide flip), both against the static musl binary
the appliances ship (`make static`), and measures that binary's size.
Needs root (namespaces). Exit status: 0 all targets met, 1 a target missed,
2 a benchmark could not run.
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
SIZE_TARGET = 1.5 * 1024 * 1024


def run_part(script, binary, extra):
    """Runs one benchmark script; returns its JSON report (or None)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = out.name
    cmd = [sys.executable, os.path.join(HERE, script), "--binary", binary, "--json", path] + extra
    print(f"==> {' '.join(cmd[1:])}", flush=True)
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
    return report


def target_rows(report, source):
    """The rows of a report that carry a target."""
    rows = []
    for row in (report or {}).get("table", []):
        if row.get("target") is None:
            continue
        rows.append({
            "source": source,
            "metric": " ".join(str(row.get("metric", "")).split()),
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
    p.add_argument("--json", metavar="FILE", help="write the table and the full reports as JSON")
    p.add_argument("--quick", action="store_true", help="fewer samples (200 flips, 5 kills): minutes instead of ~5")
    args = p.parse_args()

    if os.geteuid() != 0:
        print("bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    if not os.path.exists(args.binary):
        print(f"bench: {args.binary} missing: run `make static` first", file=sys.stderr)
        return 2

    sc_extra = ["--flips", "200"] if args.quick else []
    daemon_extra = ["--kills", "5"] if args.quick else []
    started = time.time()
    state_change = run_part("state_change.py", args.binary, sc_extra)
    daemon = run_part("daemon.py", args.binary, daemon_extra)

    size = os.path.getsize(args.binary)
    rows = target_rows(state_change, "state-change") + target_rows(daemon, "daemon")
    rows.append({
        "source": "build",
        "metric": "static musl binary, stripped",
        "value": round(size / 1048576, 3),
        "unit": "MiB",
        "target": "< 1.5 MiB",
        "pass": size < SIZE_TARGET,
    })

    width = max(len(r["metric"]) for r in rows) + 2
    print()
    print(f"{'':14}{'metric':<{width}}{'measured':>22}  {'target':<22}result")
    for r in rows:
        result = {True: "pass", False: "FAIL", None: "-"}[r["pass"]]
        print(f"{r['source']:<14}{r['metric']:<{width}}{fmt_value(r):>22}  {str(r['target']):<22}{result}")
    machine = f"{platform.node()}: {os.cpu_count()} CPUs, kernel {platform.release()}"
    print(f"\nmachine: {machine}; binary: {args.binary} ({size} bytes)")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "started": started, "binary": args.binary, "rows": rows,
                       "state_change": state_change, "daemon": daemon}, f, indent=1)
    if state_change is None or daemon is None:
        return 2
    return 0 if all(r["pass"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
