#!/usr/bin/env python3
"""The benchmark baseline: bench/baseline.json holds one run's figures and the machine they were
measured on; `compare` prints this run's ratio to it for every figure the two share.

    baseline.py write BASELINE.json BUILD_BENCH_DIR
    baseline.py compare BASELINE.json BUILD_BENCH_DIR

Figures: items_per_second of every Google Benchmark (simulated requests or checkouts per
second: higher is better), and the sweep benchmark's speed-up and times (times: lower is better).
"""

import datetime
import json
import os
import platform
import subprocess
import sys


def google_benchmarks(build):
    """name -> the Google Benchmark row of each run that did not fail or get skipped."""
    rows = {}
    for name in ("bench.json", "pg_pool_bench.json"):
        path = os.path.join(build, name)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            for b in json.load(f)["benchmarks"]:
                if b.get("run_type") != "aggregate" and "error_occurred" not in b:
                    rows[b["name"]] = b
    return rows


def figures(build):
    out = {name: {"value": b["items_per_second"], "unit": "items/s", "higher_is_better": True}
           for name, b in google_benchmarks(build).items() if "items_per_second" in b}
    path = os.path.join(build, "sweep_bench.json")
    if os.path.exists(path):
        with open(path) as f:
            for key, value in json.load(f).items():
                if key == "dask_overhead":  # a difference, not a figure to take a ratio of
                    continue
                out["sweep." + key] = {"value": value, "unit": "s" if key.endswith("_s") else "",
                                       "higher_is_better": key == "cli_speedup"}
    return out


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    compiler = subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
            "compiler": compiler.splitlines()[0] if compiler else "unknown"}


def main(argv):
    if len(argv) != 4 or argv[1] not in ("write", "compare"):
        print(__doc__, file=sys.stderr)
        return 2
    _, command, baseline_path, build = argv
    now = figures(build)
    if not now:
        print(f"{build}: no benchmark results (run scripts/bench.sh)", file=sys.stderr)
        return 1
    if command == "write":
        with open(baseline_path, "w") as f:
            json.dump({"measured": datetime.date.today().isoformat(), "machine": machine(),
                       "figures": now}, f, indent=1)
            f.write("\n")
        return 0
    with open(baseline_path) as f:
        baseline = json.load(f)
    m = baseline["machine"]
    print(f"baseline of {baseline['measured']} on {m['cpu']} ({m['cores']} cores), {m['compiler']}")
    print(f"{'figure':52} {'baseline':>12} {'now':>12} {'ratio':>7}")
    for name, fig in now.items():
        old = baseline["figures"].get(name)
        if old is None or not old["value"] or not fig["value"]:
            continue
        ratio = fig["value"] / old["value"] if fig["higher_is_better"] else old["value"] / fig["value"]
        print(f"{name:52} {old['value']:12.4g} {fig['value']:12.4g} {ratio:6.2f}x")
    print("(ratio > 1: better than the baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
