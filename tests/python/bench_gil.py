#!/usr/bin/python3
"""Benchmark (not a test: pytest does not collect it): how much faster a threaded sweep runs
with 2 threads than with 1. Each point is a simulation of a few million requests; if the GIL
were held while the C++ runs, 2 threads would be no faster than 1 (ratio ~1.0); with it
released the ratio approaches the number of free cores.

    cd /work/main && PYTHONPATH=build/python /usr/bin/python3 tests/python/bench_gil.py [POINTS] [REPEATS]

Prints each timing and the ratio jobs=1 / jobs=2 (best of REPEATS). The machine's other load
shows in the figures: read them, do not assert on them.
"""

import os
import sys
import time

import poolsim

POINTS = int(sys.argv[1]) if len(sys.argv) > 1 else 8
REPEATS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
GRID = {"seed": list(range(1, POINTS + 1))}
BASE = dict(duration="60s", workload_rate=50_000, pool_size=20, max_overflow=10)


def timed(jobs: int) -> float:
    start = time.perf_counter()
    frame = poolsim.sweep(GRID, jobs=jobs, **BASE)
    took = time.perf_counter() - start
    assert len(frame) == POINTS
    return took, frame


def main() -> None:
    print(f"poolsim {poolsim.__version__}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}; {POINTS} points of ~{50_000 * 60 / 1e6:.0f}M requests")
    timed(1)  # warm up (page in the library, allocate)
    best = {}
    frames = {}
    for _ in range(REPEATS):
        for jobs in (1, 2):
            took, frames[jobs] = timed(jobs)
            best[jobs] = min(best.get(jobs, took), took)
            print(f"  jobs={jobs}: {took:.2f} s")
    same = frames[1].drop(columns="wall_s").equals(frames[2].drop(columns="wall_s"))
    print(f"best jobs=1: {best[1]:.2f} s, best jobs=2: {best[2]:.2f} s")
    print(f"ratio jobs=1 / jobs=2: {best[1] / best[2]:.2f}  (same rows: {same})")


if __name__ == "__main__":
    main()
