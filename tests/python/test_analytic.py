"""poolsim.analytic and poolsim.size against queueing formulas computed here."""

import math

import pandas as pd
import pytest

import poolsim
from helpers import (cli_json, erlang_b, erlang_c, erlang_c_wait, markov, smallest_size,
                     without)

# --- analytic ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size,rate,hold_ms", [(20, 1800, 10), (5, 300, 10), (12, 500, 20),
                                               (1, 50, 10)])
def test_erlang_c(size, rate, hold_ms):
    """pool.timeout none, max_overflow 0, instant connects, no reset cost: M/M/c."""
    r = poolsim.analytic(**markov(pool_size=size, workload_rate=rate,
                                  workload_service=f"exp:{hold_ms}ms"))
    assert r.mode == "analytic"
    assert r.model == "erlang_c"
    expected = erlang_c_wait(size, rate, hold_ms / 1e3)
    assert r.p_wait == pytest.approx(expected["p_wait"], rel=1e-9)
    assert r.p_timeout == 0
    for key in ("mean", "p50", "p95", "p99"):
        assert r.wait_ms[key] == pytest.approx(expected[key], rel=1e-7, abs=1e-9), key
    assert r.connections.mean_in_use == pytest.approx(rate * hold_ms / 1e3, rel=1e-9)
    assert r.connections.mean_open == pytest.approx(size, rel=1e-9)


def test_erlang_c_anchor():
    """The figures the README and the command line's own test quote."""
    r = poolsim.analytic(**markov(pool_size=20))
    assert abs(r.p_wait - 0.55077) < 5e-6
    assert abs(r.wait_ms.mean - 2.7538) < 5e-5


def test_overflow_adds_servers():
    """Instant connects: size + max_overflow connections serve like that many servers."""
    a = poolsim.analytic(**markov(pool_size=15, max_overflow=5))
    assert a.p_wait == pytest.approx(erlang_c(20, 18.0), rel=1e-9)


@pytest.mark.parametrize("servers,load", [(20, 18.0), (5, 3.0), (3, 5.0)])
def test_erlang_b(servers, load):
    """pool.timeout 0: a request that would wait fails at once (M/M/c/c)."""
    r = poolsim.analytic(**markov(pool_size=servers, pool_timeout=0, workload_rate=load * 100))
    assert r.model == "erlang_b"
    assert r.p_timeout == pytest.approx(erlang_b(servers, load), rel=1e-9)
    assert r.p_wait == pytest.approx(0.0, abs=1e-12)  # nobody waits: they fail
    assert r.connections.mean_in_use == pytest.approx(load * (1 - erlang_b(servers, load)),
                                                      rel=1e-9)


def test_analytic_equals_the_command_line(binary):
    r = poolsim.analytic(**markov(pool_size=20))
    expected = cli_json("analytic", "--pool.size=20", "--pool.max_overflow=0",
                        "--pool.timeout=none", "--workload.rate=1800",
                        "--database.connect=const:0s", "--database.reset=const:0s")
    assert without(r.to_dict(), "wall_s") == without(expected, "wall_s")
    assert "erlang_c" in r.table()


def test_simulation_agrees_with_erlang_c():
    """The simulator on an exact scenario lands within its own confidence interval (fixed seed)."""
    kw = markov(pool_size=20)
    exact = poolsim.analytic(**kw)
    sim = poolsim.simulate(duration="60s", warmup="5s", replications=5, seed=1, **kw)
    assert abs(sim.p_wait - exact.p_wait) <= 3 * sim.ci95.p_wait + 0.005
    assert abs(sim.wait_ms.mean - exact.wait_ms.mean) <= 3 * sim.ci95["wait_ms.mean"] + 0.05


# --- size -------------------------------------------------------------------------------------

RATE, HOLD = 1800, 0.010


def test_size_matches_a_brute_force_erlang_c_scan():
    answer = poolsim.size("p_wait<=0.05", **markov())
    assert isinstance(answer, poolsim.SizeResult)
    expected = smallest_size(RATE, HOLD, 0, 0.05)
    assert expected == 27  # the figure the command line's test quotes, as a cross-check
    assert [dict(a) for a in answer.answers] == [{"pool.max_overflow": 0, "pool.size": expected}]
    assert "exact" in answer.method


@pytest.mark.parametrize("targets,metric,limit", [
    ("wait_ms.p99<=5", "p99", 5.0),
    ({"wait_ms.mean": 0.5}, "mean", 0.5),
    (["p_wait<=0.2"], "p_wait", 0.2),
])
def test_size_other_targets(targets, metric, limit):
    answer = poolsim.size(targets, **markov())
    assert answer.answers[0]["pool.size"] == smallest_size(RATE, HOLD, 0, limit, metric)


def test_size_several_targets_takes_the_largest():
    answer = poolsim.size(["p_wait<=0.05", "wait_ms.p99<=1"], **markov())
    expected = max(smallest_size(RATE, HOLD, 0, 0.05),
                   smallest_size(RATE, HOLD, 0, 1.0, "p99"))
    assert answer.answers[0]["pool.size"] == expected


def test_size_for_several_overflows():
    answer = poolsim.size("p_wait<=0.05", overflow=[0, 3, 10], **markov())
    got = {a["pool.max_overflow"]: a["pool.size"] for a in answer.answers}
    assert got == {o: smallest_size(RATE, HOLD, o, 0.05) for o in (0, 3, 10)}


def test_size_curve_frame():
    answer = poolsim.size("p_wait<=0.05", max_size=40, **markov())
    curve = answer.curve_frame()
    assert isinstance(curve, pd.DataFrame)
    assert {"pool.size", "pool.max_overflow", "p_wait", "meets"} <= set(curve.columns)
    assert curve["pool.size"].max() <= 40
    for size, p_wait, meets in zip(curve["pool.size"], curve["p_wait"], curve["meets"]):
        expected = erlang_c(int(size), 18.0)
        if expected is None:
            assert not meets and (p_wait is None or math.isnan(p_wait)), size
        else:
            assert p_wait == pytest.approx(expected, rel=1e-9), size
            assert bool(meets) == (expected <= 0.05), size
    assert "pool.size = 27" in answer.table()


def test_size_equals_the_command_line(binary):
    answer = poolsim.size("p_wait<=0.05", overflow=[0, 3], **markov())
    expected = cli_json("size", "--target", "p_wait<=0.05", "--overflow", "0,3",
                        "--workload.rate=1800", "--pool.max_overflow=0", "--pool.timeout=none",
                        "--database.connect=const:0s", "--database.reset=const:0s")
    assert answer.to_dict() == expected


def test_size_answer_none_when_max_size_too_small():
    answer = poolsim.size("p_wait<=0.05", max_size=10, **markov())
    assert all(a["pool.size"] is None for a in answer.answers)
