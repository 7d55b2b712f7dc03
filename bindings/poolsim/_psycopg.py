"""The same workload through a real psycopg_pool ``ConnectionPool``: the live cross-check of
``pool.policy = psycopg`` (pool_model/psycopg_core.cpp).

The schedule, the open-loop dispatcher, the sampling and the result are _live_threads'. Each
request takes a connection with ``pool.getconn()`` (its wait), runs ``SELECT pg_sleep(hold)``
and gives it back with ``pool.putconn()``. With ``pool.reset_on_return = rollback`` the
connections are psycopg's default (not autocommit), so the statement opens a transaction and
putconn() rolls it back, the model's Reset; with ``none`` they are in autocommit and come back
IDLE, with nothing to reset. The pools open when the schedule starts, as the simulated ones
open at time 0, and the run lasts the whole window (warmup + duration) so that what the pool
does in the background after the last request (ShrinkPool) is counted as the simulation counts
it. Connections opened and closed are counted by the pool's connection class.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Mapping, Optional, Tuple

from . import _core
from ._live_threads import (COMPLETED, CONNECT_FAILED, DISCONNECT, TIMEOUT, Levels, drive,
                            first_line, on_database, refuse_unsupported, session_options)
from ._options import normalize
from ._result import Result


def psycopg_live(scenario: Any = None, *, dsn: str = "auto",
                 options: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> Result:
    """Drive the scenario's workload through ``psycopg_pool.ConnectionPool`` (psycopg 3) on
    threads, in real time, and report it in poolsim's result schema (``"mode": "live"``): the
    live counterpart of ``poolsim.simulate(pool_policy="psycopg", ...)``.

    ``dsn`` is a libpq connection string, or ``"auto"`` (the default) for a throw-away
    PostgreSQL started for the run. The pool settings are the scenario's psycopg.min_size,
    max_size, timeout, max_idle, max_lifetime, reconnect_timeout and num_workers, and
    pool.reset_on_return (rollback: putconn() rolls back the request's transaction; none: the
    connections are in autocommit). app.processes gives one pool per process (requests round
    robin), app.threads caps the requests each runs at once. What psycopg_pool 3.1 or this run
    cannot do is refused with ValueError: a pool.policy other than psycopg, psycopg.check =
    true, the network.* faults, database.outages, closed-loop arrivals.
    """
    import psycopg_pool

    file, values = normalize(scenario, options, **kwargs)
    _core.check(file, values)
    config = _core.config(file, values)
    if config["pool.policy"] != "psycopg":
        raise ValueError(f"pool.policy = {config['pool.policy']}: psycopg_live runs "
                         "psycopg_pool's ConnectionPool, pool.policy = psycopg only "
                         "(sqlalchemy_live runs SQLAlchemy's pools)")
    if config["psycopg.check"] == "true":
        raise ValueError(f"psycopg.check = true: psycopg_pool {psycopg_pool.__version__} has "
                         "no check on checkout (3.2 added check=); only false is allowed, "
                         "poolsim.simulate runs true")
    refuse_unsupported(config, "psycopg_live")
    return on_database(config, dsn, lambda server_dsn: _run(file, values, config, server_dsn))


def _pool_kwargs(config: Mapping[str, str]) -> dict:
    seconds = _core.parse_seconds  # the C++ duration parser
    max_size = config["psycopg.max_size"].strip()
    return {"min_size": int(config["psycopg.min_size"]),
            "max_size": None if max_size == "min" else int(max_size),
            "timeout": seconds(config["psycopg.timeout"]),
            "max_idle": seconds(config["psycopg.max_idle"]),
            "max_lifetime": seconds(config["psycopg.max_lifetime"]),
            "reconnect_timeout": seconds(config["psycopg.reconnect_timeout"]),
            "num_workers": int(config["psycopg.num_workers"])}


class _QuietRollbacks(logging.Filter):
    """psycopg_pool logs a warning for every connection returned in a transaction; with
    reset_on_return = rollback that is every request, by design."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("rolling back returned connection")


def _counted_connection_class(psycopg, levels: Levels):
    """A psycopg Connection class that tells ``levels`` of each connect and each close."""

    class CountedConnection(psycopg.Connection):
        _poolsim_gone = False

        @classmethod
        def connect(cls, *args: Any, **kwargs: Any):
            conn = super().connect(*args, **kwargs)
            levels.connected()
            return conn

        def close(self) -> None:
            super().close()
            self.gone()

        def gone(self) -> None:
            """Count this connection closed, once: closed by the pool, or broken (a broken one
            is dropped by putconn() without a close())."""
            if not self._poolsim_gone:
                self._poolsim_gone = True
                levels.disconnected()

    CountedConnection.__qualname__ = "CountedConnection"  # as psycopg_pool's warnings show it
    return CountedConnection


def _run(file, values, config, dsn) -> Result:
    import psycopg
    import psycopg_pool

    # The server must be reachable before the run starts: psycopg_pool connects in the
    # background and retries, so every request would just time out.
    try:
        psycopg.connect(dsn).close()
    except (psycopg.Error, ValueError) as e:
        raise ValueError(f"dsn: cannot connect to the database: {first_line(e)}") from None

    app = f"poolsim_psycopg_{uuid.uuid4().hex[:8]}"
    connect_kwargs = {"application_name": app,
                      "autocommit": config["pool.reset_on_return"] == "none"}
    session = session_options(config)
    if session:
        connect_kwargs["options"] = session
    levels = Levels()
    connection_class = _counted_connection_class(psycopg, levels)
    pools = [psycopg_pool.ConnectionPool(dsn, open=False, connection_class=connection_class,
                                         kwargs=connect_kwargs, name=f"{app}-{p}",
                                         **_pool_kwargs(config))
             for p in range(int(config["app.processes"]))]
    statement = "SELECT pg_sleep(%s)"

    def serve(process: int, hold: float) -> Tuple[int, float]:
        pool = pools[process]
        start = time.perf_counter()
        try:
            conn = pool.getconn()
        except psycopg_pool.PoolTimeout:
            return TIMEOUT, (time.perf_counter() - start) * 1e3
        wait_ms = (time.perf_counter() - start) * 1e3
        levels.checked_out()
        outcome = COMPLETED
        try:
            conn.execute(statement, (hold,))
        except psycopg.Error:
            outcome = DISCONNECT if conn.closed else CONNECT_FAILED
            if conn.closed:
                conn.gone()
        finally:
            pool.putconn(conn)  # the rollback, or the replacement of a broken connection
            levels.checked_in()
        return outcome, wait_ms

    def open_pools() -> None:
        for pool in pools:
            pool.open()

    quiet = _QuietRollbacks()
    logger = logging.getLogger("psycopg.pool")
    logger.addFilter(quiet)
    try:  # close() after the counts are taken: its closes end the run, not the workload's
        result = drive(file, values, config, serve=serve, levels=levels,
                       watcher=lambda: psycopg.connect(dsn, autocommit=True),
                       application_name=app, start=open_pools, whole_window=True)
    finally:
        for pool in pools:
            pool.close()
        logger.removeFilter(quiet)
    result["driver"] = (f"psycopg_pool {psycopg_pool.__version__} (ConnectionPool, "
                        f"psycopg {psycopg.__version__})")
    return Result(result)
