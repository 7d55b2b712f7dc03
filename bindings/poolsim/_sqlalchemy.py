"""The same workload through a real SQLAlchemy engine: how a Flask-SQLAlchemy user checks the
model against the pool they actually run.

The schedule (arrival and hold times) is the simulator's own, drawn from the same seed by the
C++ core (``_core.schedule``). A dispatcher releases each request at its planned instant onto
its own thread whatever the pool is doing (open loop): a slow pool shows up as waits, never as
fewer arrivals. Each request checks out with ``engine.connect()`` (the wait), runs
``SELECT pg_sleep(hold)``, and closes the connection (the pool's reset-on-return). Connection
counts come from the pool's own events (connect, close, checkout, checkin), sampled every 50 ms
as ``poolsim live`` samples its pool; the server's count from ``pg_stat_activity``. The result is
built by the same C++ aggregation as every other result, so the schema is identical.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import re
import threading
import time
import uuid
from typing import Any, Mapping, Optional

import numpy as np

from . import _core
from ._options import normalize
from ._result import Result

# Scenario options a SQLAlchemy live run cannot honour (yet): refused, never ignored.
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


def _engine_kwargs(config: Mapping[str, str]) -> dict:
    seconds = _core.parse_seconds  # the C++ duration parser

    kwargs = {
        "pool_pre_ping": config["pool.pre_ping"] == "true",
        "pool_reset_on_return": {"rollback": "rollback", "commit": "commit",
                                 "none": None}[config["pool.reset_on_return"]],
    }
    if config["pool.policy"] in ("null", "static"):  # create_engine refuses QueuePool's
        import sqlalchemy.pool

        kwargs["poolclass"] = {"null": sqlalchemy.pool.NullPool,
                               "static": sqlalchemy.pool.StaticPool}[config["pool.policy"]]
    else:
        kwargs.update(pool_size=int(config["pool.size"]),
                      max_overflow=int(config["pool.max_overflow"]),
                      pool_timeout=seconds(config["pool.timeout"]),
                      pool_use_lifo=config["pool.use_lifo"] == "true")
    recycle = config["pool.recycle"]
    kwargs["pool_recycle"] = -1 if recycle.strip() == "-1" else seconds(recycle)
    return kwargs


def sqlalchemy_live(scenario: Any = None, *, dsn: str = "auto", url: Optional[str] = None,
                    sql: Optional[str] = None, options: Optional[Mapping[str, Any]] = None,
                    calibrate: bool = False, **kwargs: Any) -> Result:
    """Drive the scenario's workload through ``sqlalchemy.create_engine`` (QueuePool, or
    NullPool for ``pool.policy = null``, StaticPool for ``static``; psycopg2) on threads, in
    real time, and report it in poolsim's result schema (``"mode": "live"``).

    ``url`` is a SQLAlchemy URL (``postgresql+psycopg2://user:pw@host/db``); or give ``dsn``, a
    libpq connection string, ``"auto"`` (the default) starting a throw-away PostgreSQL for the
    run. The pool settings come from the scenario: pool.size, max_overflow, timeout, recycle,
    pre_ping, use_lifo, reset_on_return; app.processes gives one engine per process (requests
    round-robin), app.threads caps the requests each runs at once. Faults the SQLAlchemy driver
    cannot make (network.*, database.outages) are refused with ValueError; use poolsim.live.

    ``calibrate=True`` first measures what a request costs through SQLAlchemy beyond its hold
    (checkout, psycopg2's BEGIN, the statement, the ROLLBACK on return, Python's share), one
    request at a time, and reports it as ``calibration.statement``: ``poolsim.validate(...,
    against="sqlalchemy", calibrate=True)`` simulates with it.
    """
    import sqlalchemy

    file, values = normalize(scenario, options, **kwargs)
    _core.check(file, values)
    config = _core.config(file, values)
    for key, allowed in _UNSUPPORTED.items():
        if config[key].strip() not in allowed:
            raise ValueError(f"{key} = {config[key]}: sqlalchemy_live cannot make this fault; "
                             f"use poolsim.live (poolsim's real pool) for it")
    if config["pool.policy"] in ("hikari", "psycopg"):
        name = {"hikari": "HikariCP", "psycopg": "psycopg_pool"}[config["pool.policy"]]
        raise ValueError(f"pool.policy = {config['pool.policy']}: SQLAlchemy has no {name} "
                         f"pool; poolsim.simulate runs it")
    if config["workload.arrival"] == "closed":
        raise ValueError("workload.arrival = closed: a live run is open loop; use poisson, "
                         "constant, onoff, diurnal or trace")
    if url is None:
        _core.check_dsn(dsn)
    if url is None and dsn == "auto":
        from ._api import TestServer

        with TestServer() as server:
            if config["database.max_connections"] != "100":
                server.set_parameter("max_connections", config["database.max_connections"])
            return _run(sqlalchemy, file, values, config, server.dsn, None, sql, calibrate)
    if config["database.max_connections"] != "100":
        raise ValueError(f"database.max_connections = {config['database.max_connections']}: "
                         "only a server the run starts itself (dsn='auto') can be set")
    return _run(sqlalchemy, file, values, config, dsn if url is None else None, url, sql,
                calibrate)


def _masked(text: str) -> str:
    """text with the password of any libpq DSN or URL in it replaced by ****."""
    text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1****@", text)
    return _core.mask_password(text)


def _statement_overhead(sqlalchemy, url, connect_args, samples: int = 50) -> dict:
    """What one request costs through SQLAlchemy beyond its hold, one at a time: from the
    checkout's return to the end of close() (psycopg2's BEGIN, ``SELECT pg_sleep(h)``, the
    reset-on-return ROLLBACK, SQLAlchemy's and Python's own time), minus h. The counterpart of
    ``poolsim calibrate``'s libpq statement cost, as a [database] distribution."""
    engine = sqlalchemy.create_engine(url, connect_args=connect_args, pool_size=1, max_overflow=0)
    statement = sqlalchemy.text("SELECT pg_sleep(:hold)")
    rng = np.random.default_rng(20261203)
    overhead = []
    try:
        engine.connect().close()  # the connect is not part of a request's hold
        for hold in 0.001 + 0.019 * rng.random(samples):
            conn = engine.connect()
            start = time.perf_counter()
            conn.execute(statement, {"hold": float(hold)})
            conn.close()
            overhead.append(max(0.0, time.perf_counter() - start - hold) * 1e3)
    finally:
        engine.dispose()
    values = np.sort(np.array(overhead))
    mean = float(values.mean())
    cv = float(values.std(ddof=1) / mean) if mean > 0 else 0.0
    return {"samples": samples, "mean_ms": mean, "cv": cv,
            "p50_ms": float(values[samples // 2]), "p95_ms": float(values[int(0.95 * samples)]),
            "max_ms": float(values[-1]), "through": "sqlalchemy",
            "distribution": f"lognormal:mean={mean * 1e3:.0f}us,cv={max(cv, 0.01):.2f}"}


def _run(sqlalchemy, file, values, config, dsn, url, sql, calibrate=False) -> Result:
    import psycopg2

    # The server must be reachable before the run starts: otherwise every request would
    # fail to connect and the "result" would be a measurement of nothing.
    try:
        if url is None:
            psycopg2.connect(dsn).close()
        else:
            probe = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
            try:
                probe.connect().close()
            finally:
                probe.dispose()
    except (psycopg2.Error, sqlalchemy.exc.SQLAlchemyError, ValueError) as e:
        what = "dsn" if url is None else "url"
        raise ValueError(f"{what}: cannot connect to the database: "
                         f"{_masked(str(e)).strip().splitlines()[0]}") from None

    app = f"poolsim_sqlalchemy_{uuid.uuid4().hex[:8]}"
    connect_args = {"application_name": app}
    idle = _core.parse_seconds(config["database.idle_session_timeout"])
    if idle > 0:
        connect_args["options"] = f"-c idle_session_timeout={int(round(idle * 1000))}"
    if url is None:  # a libpq DSN: its fields go to psycopg2.connect() as keywords
        fields = psycopg2.extensions.parse_dsn(dsn)
        fields.pop("application_name", None)
        connect_args.update(fields)
        url = "postgresql+psycopg2://"
    statement_cost = _statement_overhead(sqlalchemy, url, connect_args) if calibrate else None
    processes = int(config["app.processes"])
    threads = int(config["app.threads"])
    engines = [sqlalchemy.create_engine(url, connect_args=connect_args, **_engine_kwargs(config))
               for _ in range(processes)]
    # The user's SQL takes the hold as $1, as on the command line; SQLAlchemy spells it :hold.
    statement = sqlalchemy.text(sql.replace("$1", ":hold") if sql else "SELECT pg_sleep(:hold)")

    lock = threading.Lock()
    level = {"open": 0, "in_use": 0, "opened": 0, "closed": 0}

    def counter(name: str, delta: int):
        def listener(*_args):
            with lock:
                level[name] += delta
                if name == "open" and delta > 0:
                    level["opened"] += 1
                elif name == "open":
                    level["closed"] += 1
        return listener

    for engine in engines:
        sqlalchemy.event.listen(engine, "connect", counter("open", +1))
        sqlalchemy.event.listen(engine, "close", counter("open", -1))
        sqlalchemy.event.listen(engine, "close_detached", counter("open", -1))
        sqlalchemy.event.listen(engine, "checkout", counter("in_use", +1))
        sqlalchemy.event.listen(engine, "checkin", counter("in_use", -1))

    at, hold = _core.schedule(file, values)
    warmup = _core.parse_seconds(config["warmup"])
    n = len(at)
    outcome = np.zeros(n, dtype=np.int8)
    wait_ms = np.zeros(n)
    latency_ms = np.full(n, math.nan)
    gates = [threading.BoundedSemaphore(threads) if threads > 0 else None
             for _ in range(processes)]
    errors: list = []

    def serve(i: int, arrival: float) -> None:
        engine = engines[i % processes]
        gate = gates[i % processes]
        if gate is not None:
            gate.acquire()
        try:
            start = time.perf_counter()
            try:
                conn = engine.connect()
            except sqlalchemy.exc.TimeoutError:
                wait_ms[i] = (time.perf_counter() - start) * 1e3
                outcome[i] = 1
                return
            except sqlalchemy.exc.DBAPIError as e:
                wait_ms[i] = (time.perf_counter() - start) * 1e3
                outcome[i] = 3 if "too many clients" in str(e) or \
                    "remaining connection slots" in str(e) else 2
                return
            wait_ms[i] = (time.perf_counter() - start) * 1e3
            try:
                conn.execute(statement, {"hold": float(hold[i])})
            except sqlalchemy.exc.DBAPIError as e:
                outcome[i] = 4 if e.connection_invalidated else 2
                conn.close()
                return
            conn.close()
            latency_ms[i] = (time.perf_counter() - arrival) * 1e3
        except Exception as e:  # a bug here must not lose a request silently
            with lock:
                errors.append(e)
        finally:
            if gate is not None:
                gate.release()

    samples = {"open": 0.0, "in_use": 0.0, "n": 0, "peak_open": 0, "peak_server": 0}
    done = threading.Event()
    counted_from = {"opened": 0, "closed": 0}

    def monitor(start: float) -> None:
        watcher = psycopg2.connect(dsn) if dsn else None
        try:
            in_window = warmup <= 0  # with no warm-up, every connection opened counts
            while not done.wait(_SAMPLE_EVERY_S):
                now = time.perf_counter() - start
                with lock:
                    open_, in_use = level["open"], level["in_use"]
                    if not in_window and now >= warmup:
                        in_window = True
                        counted_from.update(opened=level["opened"], closed=level["closed"])
                if not in_window:
                    continue
                samples["open"] += open_
                samples["in_use"] += in_use
                samples["n"] += 1
                samples["peak_open"] = max(samples["peak_open"], open_)
                server = open_
                if watcher is not None:
                    with watcher.cursor() as cursor:
                        cursor.execute("SELECT count(*) FROM pg_stat_activity "
                                       "WHERE application_name = %s", (app,))
                        server = cursor.fetchone()[0]
                    watcher.rollback()
                samples["peak_server"] = max(samples["peak_server"], server)
        finally:
            if watcher is not None:
                watcher.close()

    wall_start = time.perf_counter()
    watcher_thread = threading.Thread(target=monitor, args=(wall_start,), daemon=True)
    watcher_thread.start()
    # Threads are created as needed and reused once idle, as a gthread worker's are.
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=_MAX_IN_FLIGHT)
    try:
        for i in range(n):
            delay = wall_start + at[i] - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            executor.submit(serve, i, wall_start + at[i])
        executor.shutdown(wait=True)
        wall = time.perf_counter() - wall_start
    finally:
        executor.shutdown(wait=True)
        done.set()
        watcher_thread.join()
        with lock:  # before dispose(), whose closes are the end of the run, not the workload's
            opened = level["opened"] - counted_from["opened"]
            closed = level["closed"] - counted_from["closed"]
        for engine in engines:
            engine.dispose()
    if errors:
        raise errors[0]
    counted = at >= warmup
    n_samples = max(samples["n"], 1)
    levels = {"opened": float(opened), "closed": float(closed),
              "peak_open": float(samples["peak_open"]),
              "mean_open": samples["open"] / n_samples,
              "mean_in_use": samples["in_use"] / n_samples,
              "peak_server": float(samples["peak_server"])}
    text = _core.live_result(file, values, np.ascontiguousarray(outcome[counted]),
                             np.ascontiguousarray(wait_ms[counted]),
                             np.ascontiguousarray(latency_ms[counted]), levels, wall)
    result = json.loads(text)
    pool_class = type(engines[0].pool).__name__
    result["driver"] = f"sqlalchemy {sqlalchemy.__version__} ({pool_class}, psycopg2)"
    if statement_cost is not None:
        result["calibration"] = {"statement": statement_cost}
    return Result(result)

