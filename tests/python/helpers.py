"""Shared helpers of the poolsim Python tests (not collected: no test_ prefix).

The reference formulas here are written from the textbook definitions, independently of
sim/analytic.cpp, so that a mistake there cannot cancel out a mistake here.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from typing import Any, Dict, Optional

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.path.join(ROOT, "build", "bin", "poolsim")
PYTHON_DIR = os.path.join(ROOT, "build", "python")


# --- the command line -------------------------------------------------------------------------

def cli(*args: str, cwd: Optional[str] = None) -> subprocess.CompletedProcess:
    """Runs build/bin/poolsim with these arguments (text output)."""
    if not os.path.exists(BINARY):
        raise RuntimeError(f"{BINARY} is missing: build the project first")
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd or ROOT)


def cli_json(*args: str, cwd: Optional[str] = None) -> dict:
    """The JSON result of a command that must succeed."""
    p = cli(*args, "--format", "json", cwd=cwd)
    assert p.returncode == 0, f"poolsim {' '.join(args)} failed: {p.stderr}"
    return json.loads(p.stdout)


def cli_error(*args: str, cwd: Optional[str] = None) -> str:
    """The one-line error message of a command that must fail with status 2, without the
    "poolsim: " prefix the command line puts before it."""
    p = cli(*args, cwd=cwd)
    assert p.returncode == 2, f"poolsim {' '.join(args)}: status {p.returncode}, {p.stderr!r}"
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    line = lines[0]
    prefix = "poolsim: "
    assert line.startswith(prefix), line
    return line[len(prefix):]


# --- live runs --------------------------------------------------------------------------------

def backends(dsn: str, pattern: str) -> int:
    """The server's backends whose application_name is LIKE pattern, this query's own aside."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s "
                           "AND pid <> pg_backend_pid()", (pattern,))
            return cursor.fetchone()[0]
    finally:
        conn.close()


def wait_for_no_backends(dsn: str, pattern: str, patience_s: float = 5.0) -> int:
    """backends(dsn, pattern) once it is 0, or when patience runs out: a backend leaves
    pg_stat_activity a moment after its client closed the socket."""
    deadline = time.monotonic() + patience_s
    while True:
        count = backends(dsn, pattern)
        if count == 0 or time.monotonic() > deadline:
            return count
        time.sleep(0.1)


# --- results ----------------------------------------------------------------------------------

def without(d: dict, *keys: str) -> dict:
    """A copy of a result dict without the (top-level) keys, e.g. wall_s."""
    return {k: v for k, v in d.items() if k not in keys}


def flatten(value: Any, prefix: str = "") -> Dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; written here again so the tests do not trust poolsim's."""
    out: Dict[str, Any] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else key))
    else:
        out[prefix] = value
    return out


def same_value(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to NaN (pandas rows hold NaN where JSON had null)."""
    if a is None and isinstance(b, float) and math.isnan(b):
        return True
    if b is None and isinstance(a, float) and math.isnan(a):
        return True
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


# --- queueing formulas ------------------------------------------------------------------------

def erlang_b(servers: int, load: float) -> float:
    """Blocking probability of M/M/c/c with offered load `load` erlangs (stable recursion)."""
    b = 1.0
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    return b


def erlang_c(servers: int, load: float) -> Optional[float]:
    """P(wait > 0) of M/M/c with offered load `load` erlangs; None when unstable (load >= c).
    Computed from the sum of the Poisson terms, not from Erlang B, as a second route."""
    if load >= servers:
        return None
    terms = [1.0]
    for k in range(1, servers):
        terms.append(terms[-1] * load / k)
    head = sum(terms)
    tail = terms[-1] * load / servers * servers / (servers - load)
    return tail / (head + tail)


def erlang_c_wait(servers: int, rate: float, mean_hold_s: float) -> Dict[str, float]:
    """Waiting-time figures of M/M/c in ms: mean and quantiles, from P(W > t) = C e^{-(c mu -
    lambda) t}."""
    mu = 1.0 / mean_hold_s
    load = rate / mu
    c = erlang_c(servers, load)
    assert c is not None
    drain = servers * mu - rate  # per second

    def quantile(p: float) -> float:
        tail = 1.0 - p
        return 0.0 if c <= tail else 1e3 * math.log(c / tail) / drain

    return {"p_wait": c, "mean": 1e3 * c / drain, "p50": quantile(0.50), "p95": quantile(0.95),
            "p99": quantile(0.99)}


def smallest_size(rate: float, mean_hold_s: float, overflow: int, limit: float,
                  metric: str = "p_wait", max_size: int = 200) -> Optional[int]:
    """Brute force: the smallest pool.size whose Erlang C (size + overflow servers) figure
    `metric` ("p_wait" or a wait_ms key) is <= limit."""
    load = rate * mean_hold_s
    for size in range(1, max_size + 1):
        servers = size + overflow
        if erlang_c(servers, load) is None:
            continue
        value = erlang_c_wait(servers, rate, mean_hold_s)[metric]
        if value <= limit:
            return size
    return None


def markov(**extra: Any) -> Dict[str, Any]:
    """Keyword options of a scenario with an exact answer: Poisson arrivals, exponential holds,
    instant connects, no reset cost."""
    base = {"database_connect": "const:0s", "database_reset": "const:0s", "workload_rate": 1800,
            "workload_service": "exp:10ms", "max_overflow": 0, "pool_timeout": "none"}
    base.update(extra)
    return base
