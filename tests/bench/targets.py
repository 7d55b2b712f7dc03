#!/usr/bin/env python3
"""Issue 8's targets against this run's figures: one row per target with what was measured and
whether it is met. Reads the JSON that scripts/bench.sh writes to BUILD_BENCH_DIR; a target whose
benchmark did not run (a --benchmark_filter, no test server) says so.

    targets.py BUILD_BENCH_DIR

The absolute speed depends on the machine: the same VM has run the hand-written loop at 8.7 and
at 10.4 million requests per second on different days. The ratio to that loop, measured in the
same run, is the figure that travels.
"""

import json
import os
import sys

from baseline import google_benchmarks


def load(build, name):
    path = os.path.join(build, name)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def nanoseconds(row):
    scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[row["time_unit"]]
    return row["real_time"] * scale


def rows(build):
    """(target, measured, met) with met True, False or None (not run, or nothing to judge)."""
    bench = google_benchmarks(build)
    speed = {name: row["items_per_second"] for name, row in bench.items()
             if "items_per_second" in row}
    out = []

    def per_second(name, target, at_least):
        if name not in speed:
            out.append((target, "not run", None))
        else:
            out.append((target, f"{speed[name] / 1e6:.2f} M/s", speed[name] >= at_least))

    per_second("BM_ReferenceModel", ">= 8 M requests/s on one core", 8e6)
    if "BM_ReferenceModel" in speed and "BM_HandWrittenLoop" in speed:
        ratio = speed["BM_HandWrittenLoop"] / speed["BM_ReferenceModel"]
        out.append(("within 1.5x of the hand-written loop",
                    f"{ratio:.2f}x ({speed['BM_HandWrittenLoop'] / 1e6:.2f} M/s)", ratio <= 1.5))
    else:
        out.append(("within 1.5x of the hand-written loop", "not run", None))
    per_second("BM_ReferenceModelAllFaults", ">= 3 M requests/s, every fault model on", 3e6)

    for family, what in (("BM_ScalePoolSize/", "pool size"), ("BM_ScaleWaiters/", "waiters"),
                         ("BM_ScaleProcesses/", "processes")):
        points = sorted((int(name[len(family):]), 1e9 / value)
                        for name, value in speed.items() if name.startswith(family))
        target = f"cost per request flat in {what}"
        if len(points) < 2:
            out.append((target, "not run", None))
            continue
        costs = [cost for _, cost in points]
        spread = max(costs) / min(costs)
        out.append((target, f"{min(costs):.0f}-{max(costs):.0f} ns over {points[0][0]}.."
                            f"{points[-1][0]} ({spread:.2f}x)", spread < 2))

    memory = load(build, "memory_bench.json")
    if memory:
        out.append(("10^8 requests in < 100 MB resident",
                    f"{memory['max_rss_mb']:.1f} MB ({memory['requests']:,} requests, "
                    f"{memory['wall_s']:.1f} s)",
                    memory["max_rss_mb"] < 100 and memory["requests"] >= 10**8))
    else:
        out.append(("10^8 requests in < 100 MB resident", "not run", None))

    sweep = load(build, "sweep_bench.json")
    if "cli_speedup" in sweep:
        out.append((">= 1.8x sweep speed-up on 2 cores", f"{sweep['cli_speedup']:.2f}x",
                    sweep["cli_speedup"] >= 1.8))
    else:
        out.append((">= 1.8x sweep speed-up on 2 cores", "not run", None))
    if "dask_overhead" in sweep:
        out.append(("Dask < 10% over local processes", f"{100 * sweep['dask_overhead']:+.1f}%",
                    sweep["dask_overhead"] < 0.10))
    else:
        out.append(("Dask < 10% over local processes", "not run (no Dask?)", None))

    if "BM_PgPoolCheckoutReturn" in bench:
        ns = nanoseconds(bench["BM_PgPoolCheckoutReturn"])
        out.append(("real pool checkout + return <= 0.3 us", f"{ns / 1e3:.3f} us", ns <= 300))
    else:
        out.append(("real pool checkout + return <= 0.3 us", "not run", None))
    # Past 4 threads every checkout waits for a hand-off, a thread wake-up (QueuePool's waiters
    # are served first come, first served: no barging), so 8 threads cost more per checkout
    # than 4. The target: more threads than that make it no worse (no herd woken, no convoy).
    contended = {n: speed.get(f"BM_PgPoolContended/real_time/threads:{n}") for n in (4, 8, 32)}
    target = "no collapse at 8 (..32) threads on 4 connections"
    if all(contended.values()):
        out.append((target, "checkouts/s, 4 threads {:.2f} M, 8: {:.2f} M, 32: {:.2f} M".format(
            *(contended[n] / 1e6 for n in (4, 8, 32))), contended[32] >= 0.5 * contended[8]))
    else:
        out.append((target, "not run", None))
    paired = bench.get("BM_SelectOnePaired")
    if paired:
        out.append(("pooled SELECT 1 within 5% of dedicated",
                    f"{paired['pooled_us']:.1f} vs {paired['dedicated_us']:.1f} us "
                    f"({paired['extra_pct']:+.1f}%, paired on one backend)",
                    paired["extra_pct"] <= 5))
    else:
        out.append(("pooled SELECT 1 within 5% of dedicated", "not run", None))
    return out


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    table = rows(argv[1])
    width = max(len(target) for target, _, _ in table)
    print(f"{'target (issue 8)':{width}}  {'met':4} measured")
    for target, measured, met in table:
        verdict = {True: "yes", False: "NO", None: "-"}[met]
        print(f"{target:{width}}  {verdict:4} {measured}")
    print("(one run on this machine; the absolute speeds vary with the host, see the README)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
