#!/usr/bin/env python3
"""targets.py judges benchmark figures against issue 8's thresholds: figures just either side of
each threshold, written as the benchmarks write them, must get the verdict the issue's text
gives. No benchmark runs here."""

import json
import os
import pathlib
import sys
import tempfile
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import targets  # noqa: E402


def speed(name, per_second):
    return {"name": name, "run_type": "iteration", "items_per_second": per_second,
            "real_time": 1e9 / per_second, "time_unit": "ns"}


def timed(name, ns, **counters):
    return {"name": name, "run_type": "iteration", "real_time": ns, "time_unit": "ns", **counters}


def verdicts(sim=(), pg=(), sweep=None, memory=None):
    with tempfile.TemporaryDirectory() as build:
        for name, rows in (("bench.json", sim), ("pg_pool_bench.json", pg)):
            if rows:
                with open(os.path.join(build, name), "w") as f:
                    json.dump({"benchmarks": list(rows)}, f)
        for name, figures in (("sweep_bench.json", sweep), ("memory_bench.json", memory)):
            if figures is not None:
                with open(os.path.join(build, name), "w") as f:
                    json.dump(figures, f)
        return {target: met for target, _, met in targets.rows(build)}


def find(table, prefix):
    (met,) = [met for target, met in table.items() if target.startswith(prefix)]
    return met


class Targets(unittest.TestCase):
    def test_speed_against_8_million_and_the_hand_loop(self):
        t = verdicts(sim=[speed("BM_ReferenceModel", 7.99e6), speed("BM_HandWrittenLoop", 12e6)])
        self.assertIs(find(t, ">= 8 M"), False)
        self.assertIs(find(t, "within 1.5x"), False)  # 12 / 7.99 = 1.502
        t = verdicts(sim=[speed("BM_ReferenceModel", 8.01e6), speed("BM_HandWrittenLoop", 12e6)])
        self.assertIs(find(t, ">= 8 M"), True)
        self.assertIs(find(t, "within 1.5x"), True)

    def test_every_fault_model_on(self):
        self.assertIs(find(verdicts(sim=[speed("BM_ReferenceModelAllFaults", 2.9e6)]), ">= 3 M"),
                      False)
        self.assertIs(find(verdicts(sim=[speed("BM_ReferenceModelAllFaults", 3.1e6)]), ">= 3 M"),
                      True)

    def test_scaling_is_flat_or_not(self):
        flat = [speed(f"BM_ScalePoolSize/{n}", 6e6 - 100 * n) for n in (1, 10, 100, 1000)]
        self.assertIs(find(verdicts(sim=flat), "cost per request flat in pool size"), True)
        linear = [speed(f"BM_ScalePoolSize/{n}", 6e6 / n) for n in (1, 10, 100, 1000)]
        self.assertIs(find(verdicts(sim=linear), "cost per request flat in pool size"), False)

    def test_memory_needs_the_whole_run_under_100_mb(self):
        def met(mb, requests):
            return find(verdicts(memory={"requests": requests, "max_rss_mb": mb, "wall_s": 1}),
                        "10^8 requests")
        self.assertIs(met(99, 10**8), True)
        self.assertIs(met(101, 10**8), False)
        self.assertIs(met(10, 10**6), False)  # a short run proves nothing about 10^8

    def test_sweeps_and_dask(self):
        t = verdicts(sweep={"cli_speedup": 1.79, "dask_overhead": 0.11})
        self.assertIs(find(t, ">= 1.8x"), False)
        self.assertIs(find(t, "Dask"), False)
        t = verdicts(sweep={"cli_speedup": 1.81, "dask_overhead": 0.09})
        self.assertIs(find(t, ">= 1.8x"), True)
        self.assertIs(find(t, "Dask"), True)

    def test_real_pool(self):
        contended = [speed(f"BM_PgPoolContended/real_time/threads:{n}", v)
                     for n, v in ((4, 3e6), (8, 3e5), (32, 1.4e5))]
        t = verdicts(pg=[timed("BM_PgPoolCheckoutReturn", 310),
                         timed("BM_SelectOnePaired", 1e5, pooled_us=106, dedicated_us=100,
                               extra_pct=6.0), *contended])
        self.assertIs(find(t, "real pool checkout"), False)
        self.assertIs(find(t, "pooled SELECT 1"), False)
        self.assertIs(find(t, "no collapse"), False)  # 32 threads at under half of 8's rate
        contended[2] = speed("BM_PgPoolContended/real_time/threads:32", 1.6e5)
        t = verdicts(pg=[timed("BM_PgPoolCheckoutReturn", 290),
                         timed("BM_SelectOnePaired", 1e5, pooled_us=104, dedicated_us=100,
                               extra_pct=4.0), *contended])
        self.assertIs(find(t, "real pool checkout"), True)
        self.assertIs(find(t, "pooled SELECT 1"), True)
        self.assertIs(find(t, "no collapse"), True)

    def test_what_did_not_run_is_not_judged(self):
        t = verdicts()
        self.assertTrue(t)
        self.assertTrue(all(met is None for met in t.values()), t)


if __name__ == "__main__":
    unittest.main()
