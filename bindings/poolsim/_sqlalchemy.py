"""The same workload through a real SQLAlchemy engine: how a Flask-SQLAlchemy user checks the
model against the pool they actually run.

The schedule, the open-loop dispatcher, the sampling and the result are _live_threads'. Each
request checks out with ``engine.connect()`` (the wait), runs ``SELECT pg_sleep(hold)``, and
closes the connection (the pool's reset-on-return). Connection counts come from the pool's own
events (connect, close, checkout, checkin).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Mapping, Optional, Tuple

import numpy as np

from . import _core
from ._live_threads import (COMPLETED, CONNECT_FAILED, DISCONNECT, TIMEOUT, TOO_MANY_CONNECTIONS,
                            Levels, drive, first_line, on_database, refuse_server_settings,
                            refuse_unsupported, session_options)
from ._options import normalize
from ._result import Result


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
    refuse_unsupported(config, "sqlalchemy_live")
    if config["pool.policy"] in ("hikari", "psycopg"):
        name = {"hikari": "HikariCP", "psycopg": "psycopg_pool"}[config["pool.policy"]]
        raise ValueError(f"pool.policy = {config['pool.policy']}: SQLAlchemy has no {name} "
                         f"pool; poolsim.simulate runs it")
    if config["pool.policy"] == "pgbouncer":
        raise ValueError("pool.policy = pgbouncer: sqlalchemy_live runs SQLAlchemy's pool; to "
                         "go through a real pgbouncer give the url of one (poolsim.Pgbouncer "
                         "starts one) with pool.policy = queuepool")
    if url is not None:
        refuse_server_settings(config)
        return _run(sqlalchemy, file, values, config, None, url, sql, calibrate)
    return on_database(config, dsn, lambda server_dsn: _run(
        sqlalchemy, file, values, config, server_dsn, None, sql, calibrate))


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
        raise ValueError(f"{what}: cannot connect to the database: {first_line(e)}") from None

    app = f"poolsim_sqlalchemy_{uuid.uuid4().hex[:8]}"
    connect_args = {"application_name": app}
    session = session_options(config)
    if session:
        connect_args["options"] = session
    if url is None:  # a libpq DSN: its fields go to psycopg2.connect() as keywords
        fields = psycopg2.extensions.parse_dsn(dsn)
        fields.pop("application_name", None)
        connect_args.update(fields)
        url = "postgresql+psycopg2://"
    statement_cost = _statement_overhead(sqlalchemy, url, connect_args) if calibrate else None
    engines = [sqlalchemy.create_engine(url, connect_args=connect_args, **_engine_kwargs(config))
               for _ in range(int(config["app.processes"]))]
    # The user's SQL takes the hold as $1, as on the command line; SQLAlchemy spells it :hold.
    statement = sqlalchemy.text(sql.replace("$1", ":hold") if sql else "SELECT pg_sleep(:hold)")

    levels = Levels()
    for engine in engines:
        sqlalchemy.event.listen(engine, "connect", levels.connected)
        sqlalchemy.event.listen(engine, "close", levels.disconnected)
        sqlalchemy.event.listen(engine, "close_detached", levels.disconnected)
        sqlalchemy.event.listen(engine, "checkout", levels.checked_out)
        sqlalchemy.event.listen(engine, "checkin", levels.checked_in)

    def serve(process: int, hold: float) -> Tuple[int, float]:
        start = time.perf_counter()
        try:
            conn = engines[process].connect()
        except sqlalchemy.exc.TimeoutError:
            return TIMEOUT, (time.perf_counter() - start) * 1e3
        except sqlalchemy.exc.DBAPIError as e:
            refused = "too many clients" in str(e) or "remaining connection slots" in str(e)
            return (TOO_MANY_CONNECTIONS if refused else CONNECT_FAILED,
                    (time.perf_counter() - start) * 1e3)
        wait_ms = (time.perf_counter() - start) * 1e3
        try:
            conn.execute(statement, {"hold": hold})
        except sqlalchemy.exc.DBAPIError as e:
            conn.close()
            return DISCONNECT if e.connection_invalidated else CONNECT_FAILED, wait_ms
        conn.close()
        return COMPLETED, wait_ms

    try:  # dispose() after the counts are taken: its closes end the run, not the workload's
        result = drive(file, values, config, serve=serve, levels=levels,
                       watcher=(lambda: psycopg2.connect(dsn)) if dsn else None,
                       application_name=app)
    finally:
        for engine in engines:
            engine.dispose()
    pool_class = type(engines[0].pool).__name__
    result["driver"] = f"sqlalchemy {sqlalchemy.__version__} ({pool_class}, psycopg2)"
    if statement_cost is not None:
        result["calibration"] = {"statement": statement_cost}
    return Result(result)

