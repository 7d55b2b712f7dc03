"""poolsim: a discrete-event simulator of database connection pools (SQLAlchemy's QueuePool),
with the same pool core running a real pool of libpq connections.

    >>> import poolsim
    >>> r = poolsim.simulate(pool_size=5, max_overflow=10, workload_rate=400)
    >>> r.p_wait, r.wait_ms.p99, r.connections.peak_server

Functions mirror the command line: ``simulate``, ``sweep`` (a pandas DataFrame; threads or a
Dask cluster), ``analytic``, ``size``, ``live``, ``validate`` and ``calibrate``; and
``sqlalchemy_live`` and ``psycopg_live`` drive the same workload through a real SQLAlchemy
engine and a real psycopg_pool ConnectionPool, ``hikari_live`` through the real HikariCP (a
JVM). Options are spelled as in DESIGN.md: ``pool_size=20`` or ``options={"pool.size": 20}``;
``options()`` lists them. Bad options raise ValueError with the command line's message.
"""

from ._core import __version__
from ._api import (TestServer, analytic, calibrate, live, options, postgres_available, simulate,
                   size, sweep, validate)
from ._hikari import hikari_live
from ._result import OUTCOMES, Result, SizeResult, Validation
from ._psycopg import psycopg_live
from ._sqlalchemy import sqlalchemy_live

__all__ = [
    "OUTCOMES", "Result", "SizeResult", "TestServer", "Validation", "__version__", "analytic",
    "calibrate", "hikari_live", "live", "options", "postgres_available", "psycopg_live",
    "simulate", "size", "sqlalchemy_live", "sweep", "validate",
]

from ._pgbouncer import Pgbouncer  # noqa: E402

__all__ += ["Pgbouncer"]
