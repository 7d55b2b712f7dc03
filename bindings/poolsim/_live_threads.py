"""What the live runs through a Python pool (``sqlalchemy_live``, ``psycopg_live``) share: the
refusals, the open-loop dispatcher, the 50 ms sampler of connection counts and the result
assembly.

The schedule (arrival and hold times) is the simulator's own, drawn from the same seed by the
C++ core (``_core.schedule``). A dispatcher releases each request at its planned instant onto
its own thread whatever the pool is doing (open loop): a slow pool shows up as waits, never as
fewer arrivals. The pool's own hooks keep the connection counts (``Levels``); they are sampled
every 50 ms as ``poolsim live`` samples its pool, the server's count from ``pg_stat_activity``.
The result is built by the same C++ aggregation as every other result, so the schema is
identical.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import re
import threading
import time
from typing import Any, Callable, Mapping, Optional, Tuple

import numpy as np

from . import _core
from ._result import Result

# Scenario options a live run through a Python pool cannot honour (yet): refused, never ignored.
_UNSUPPORTED = {
    "network.drop_rate": ("0",),
    "network.idle_drop_after": ("0", "0s"),
    "network.connect_fail": ("0",),
    "database.outages": ("",),
    "app.routing": ("round_robin",),
}
_SAMPLE_EVERY_S = 0.05
# Each request in flight holds a thread; beyond this many at once, arrivals would queue.
_MAX_IN_FLIGHT = 2000

# Outcome codes of _core.live_result (sim::Samples::Outcome).
COMPLETED, TIMEOUT, CONNECT_FAILED, TOO_MANY_CONNECTIONS, DISCONNECT = range(5)


def refuse_unsupported(config: Mapping[str, str], runner: str) -> None:
    """ValueError for the faults and the closed-loop workload a Python-pool live run cannot
    make; ``runner`` names it in the message."""
    for key, allowed in _UNSUPPORTED.items():
        if config[key].strip() not in allowed:
            raise ValueError(f"{key} = {config[key]}: {runner} cannot make this fault; "
                             f"use poolsim.live (poolsim's real pool) for it")
    if config["workload.arrival"] == "closed":
        raise ValueError("workload.arrival = closed: a live run is open loop; use poisson, "
                         "constant, onoff, diurnal or trace")


def refuse_server_settings(config: Mapping[str, str]) -> None:
    """ValueError when the scenario sets the server itself, on a server the run did not start."""
    if config["database.max_connections"] != "100":
        raise ValueError(f"database.max_connections = {config['database.max_connections']}: "
                         "only a server the run starts itself (dsn='auto') can be set")


def on_database(config: Mapping[str, str], dsn: str, run: Callable[[str], Result]) -> Result:
    """run(dsn) on the server ``dsn`` names, or with ``"auto"`` on a throw-away PostgreSQL set
    up as the scenario says (database.max_connections)."""
    _core.check_dsn(dsn)
    if dsn != "auto":
        refuse_server_settings(config)
        return run(dsn)
    from ._api import TestServer

    with TestServer() as server:
        if config["database.max_connections"] != "100":
            server.set_parameter("max_connections", config["database.max_connections"])
        return run(server.dsn)


def masked(text: str) -> str:
    """text with the password of any libpq DSN or URL in it replaced by ****."""
    text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1****@", text)
    return _core.mask_password(text)


def first_line(error: BaseException) -> str:
    """The first line of an error's message, password masked."""
    lines = masked(str(error)).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def session_options(config: Mapping[str, str]) -> Optional[str]:
    """libpq ``options`` that give each session the scenario's server settings, or None."""
    idle = _core.parse_seconds(config["database.idle_session_timeout"])
    return f"-c idle_session_timeout={int(round(idle * 1000))}" if idle > 0 else None


class Levels:
    """Connection counts kept by a pool's hooks (thread-safe): open now, in use now, and opened
    and closed since the pool was created."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = self.in_use = self.opened = self.closed = 0

    def connected(self, *_args: Any) -> None:
        with self.lock:
            self.open += 1
            self.opened += 1

    def disconnected(self, *_args: Any) -> None:
        with self.lock:
            self.open -= 1
            self.closed += 1

    def checked_out(self, *_args: Any) -> None:
        with self.lock:
            self.in_use += 1

    def checked_in(self, *_args: Any) -> None:
        with self.lock:
            self.in_use -= 1


def drive(file: Optional[str], values: Mapping[str, str], config: Mapping[str, str], *,
          serve: Callable[[int, float], Tuple[int, float]], levels: Levels,
          watcher: Optional[Callable[[], Any]], application_name: str,
          start: Callable[[], None] = lambda: None, whole_window: bool = False) -> dict:
    """Run the scenario's schedule through ``serve`` and return the live result (JSON as a
    dict).

    ``serve(process, hold)`` serves one request on the pool of that process (requests go round
    robin, at most app.threads at once per process) and returns (outcome code, wait in ms);
    the latency of a completed one is measured here, from its planned arrival to serve's
    return. ``watcher()`` opens a DB-API connection on which the sampler counts the server's
    backends named ``application_name`` (None: the pool's own count stands for it).
    ``start()`` runs at time 0, just before the first arrival is due (a pool that connects in
    the background opens there, as the simulated one opens at 0). With ``whole_window`` the
    run lasts at least warmup + duration, as the simulation does, so that what a pool does in
    the background after the last request (shrinking, replacing) is counted too.
    """
    at, hold = _core.schedule(file, values)
    warmup = _core.parse_seconds(config["warmup"])
    window_end = warmup + _core.parse_seconds(config["duration"]) if whole_window else 0.0
    processes = int(config["app.processes"])
    threads = int(config["app.threads"])
    n = len(at)
    outcome = np.zeros(n, dtype=np.int8)
    wait_ms = np.zeros(n)
    latency_ms = np.full(n, math.nan)
    gates = [threading.BoundedSemaphore(threads) if threads > 0 else None
             for _ in range(processes)]
    errors: list = []

    def request(i: int, arrival: float) -> None:
        gate = gates[i % processes]
        if gate is not None:
            gate.acquire()
        try:
            outcome[i], wait_ms[i] = serve(i % processes, float(hold[i]))
            if outcome[i] == COMPLETED:
                latency_ms[i] = (time.perf_counter() - arrival) * 1e3
        except Exception as e:  # a bug here must not lose a request silently
            with levels.lock:
                errors.append(e)
        finally:
            if gate is not None:
                gate.release()

    samples = {"open": 0.0, "in_use": 0.0, "n": 0, "peak_open": 0, "peak_server": 0}
    done = threading.Event()
    counted_from = {"opened": 0, "closed": 0}

    def monitor(start_time: float) -> None:
        connection = watcher() if watcher else None
        try:
            in_window = warmup <= 0  # with no warm-up, every connection opened counts
            while not done.wait(_SAMPLE_EVERY_S):
                now = time.perf_counter() - start_time
                with levels.lock:
                    open_, in_use = levels.open, levels.in_use
                    if not in_window and now >= warmup:
                        in_window = True
                        counted_from.update(opened=levels.opened, closed=levels.closed)
                if not in_window:
                    continue
                samples["open"] += open_
                samples["in_use"] += in_use
                samples["n"] += 1
                samples["peak_open"] = max(samples["peak_open"], open_)
                server = open_
                if connection is not None:
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT count(*) FROM pg_stat_activity "
                                       "WHERE application_name = %s", (application_name,))
                        server = cursor.fetchone()[0]
                    connection.rollback()
                samples["peak_server"] = max(samples["peak_server"], server)
        finally:
            if connection is not None:
                connection.close()

    wall_start = time.perf_counter()
    watcher_thread = threading.Thread(target=monitor, args=(wall_start,), daemon=True)
    watcher_thread.start()
    # Threads are created as needed and reused once idle, as a gthread worker's are.
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=_MAX_IN_FLIGHT)
    try:
        start()
        for i in range(n):
            delay = wall_start + at[i] - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            executor.submit(request, i, wall_start + at[i])
        executor.shutdown(wait=True)
        rest = wall_start + window_end - time.perf_counter()
        if rest > 0:
            time.sleep(rest)
        wall = time.perf_counter() - wall_start
    finally:
        executor.shutdown(wait=True)
        done.set()
        watcher_thread.join()
    with levels.lock:  # before the pools close: those closes end the run, not the workload's
        opened = levels.opened - counted_from["opened"]
        closed = levels.closed - counted_from["closed"]
    if errors:
        raise errors[0]
    counted = at >= warmup
    n_samples = max(samples["n"], 1)
    measured = {"opened": float(opened), "closed": float(closed),
                "peak_open": float(samples["peak_open"]),
                "mean_open": samples["open"] / n_samples,
                "mean_in_use": samples["in_use"] / n_samples,
                "peak_server": float(samples["peak_server"])}
    text = _core.live_result(file, values, np.ascontiguousarray(outcome[counted]),
                             np.ascontiguousarray(wait_ms[counted]),
                             np.ascontiguousarray(latency_ms[counted]), measured, wall)
    return json.loads(text)
