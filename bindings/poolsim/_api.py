"""The public functions: the command line's subcommands as Python calls on the same C++ code."""

from __future__ import annotations

import collections.abc
import concurrent.futures
import itertools
import json
import os
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

from . import _core
from ._options import OPTIONS, key_of, normalize, text_of
from ._result import Result, SizeResult, Validation, flatten

Scenario = Union[None, str, os.PathLike, Mapping[str, Any]]


def options():
    """Every scenario option as a pandas DataFrame: key, keyword spelling, default, meaning."""
    import pandas as pd

    return pd.DataFrame(
        [(key, key.replace(".", "_"), default, help) for key, default, help in OPTIONS],
        columns=["key", "keyword", "default", "meaning"])


def simulate(scenario: Scenario = None, *, samples: bool = False,
             options: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> Result:
    """Run the model, as ``poolsim simulate``.

    ``scenario`` is a scenario file, a dict of options, or None for the defaults (the default
    Flask-SQLAlchemy pool: 5 + 10 overflow, 30 s timeout). Options override it, spelled
    ``pool_size=20``, ``max_overflow=10``, ``workload_rate=400``, ``database_connect="const:5ms"``
    or as dotted keys in ``options={"pool.size": 20}``. Numbers given for durations are seconds.
    With ``samples=True`` the result's ``samples`` holds every request's arrival, wait and
    latency as numpy arrays (no copy). Raises ValueError for bad options, with the message the
    command line gives. The GIL is released while the model runs.
    """
    file, values = normalize(scenario, options, **kwargs)
    text, arrays = _core.simulate(file, values, samples)
    return Result(json.loads(text), arrays)


def analytic(scenario: Scenario = None, *, options: Optional[Mapping[str, Any]] = None,
             **kwargs: Any) -> Result:
    """Exact steady-state results where the scenario is Markovian, as ``poolsim analytic``.
    Raises ValueError naming the option that prevents an exact answer otherwise."""
    file, values = normalize(scenario, options, **kwargs)
    return Result(json.loads(_core.analytic(file, values)))


def size(targets: Union[str, Sequence[str], Mapping[str, float]], scenario: Scenario = None, *,
         max_size: int = 200, overflow: Union[None, int, Iterable[int]] = None,
         options: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> SizeResult:
    """The smallest pool.size meeting every target, as ``poolsim size``.

    ``targets``: "p_wait<=0.05", a list of such, or a dict ``{"wait_ms.p99": 50}``.
    ``overflow``: the max_overflow values to size for (default: the scenario's).
    """
    if isinstance(targets, str):
        targets = [targets]
    elif isinstance(targets, Mapping):
        targets = [f"{key}<={limit!r}" for key, limit in targets.items()]
    else:
        targets = list(targets)
    file, values = normalize(scenario, options, **kwargs)
    if isinstance(max_size, bool) or not isinstance(max_size, int):
        raise TypeError(f"max_size = {max_size!r}: must be a whole number")
    overflow_text = None
    if overflow is not None:  # the C++ parser checks each value and names `overflow`
        items = [overflow] if isinstance(overflow, (int, float, str)) else list(overflow)
        overflow_text = ",".join(str(o) for o in items)
    text, table = _core.size(file, values, [str(t) for t in targets], str(max_size),
                             overflow_text)
    return SizeResult(json.loads(text), table)


def _run_point(file: Optional[str], values: Mapping[str, str]) -> dict:
    """One sweep point: the flattened result (no config echo). Top-level so Dask can ship it."""
    text, _ = _core.simulate(file, dict(values), False)
    return {k: v for k, v in flatten(json.loads(text)).items() if not k.startswith("config.")}


def sweep(grid: Mapping[str, Iterable[Any]], base: Scenario = None, *, jobs: Optional[int] = None,
          client: Any = None, progress: bool = False,
          options: Optional[Mapping[str, Any]] = None, **kwargs: Any):
    """Run every combination of the grid, as ``poolsim sweep``; one DataFrame row per point.

    ``grid`` maps options (any spelling) to their values; the first key varies slowest.
    ``base`` and the keyword options set everything else. Points run on ``jobs`` threads (default:
    every core); the GIL is released while each runs, so the threads run in parallel.
    ``client`` runs the points on a Dask cluster instead: a ``distributed.Client``, or
    ``"local"`` (or True) to start a LocalCluster of ``jobs`` worker processes for this sweep.
    The rows are the same either way (same seeds), only ``wall_s`` differs. ``progress=True``
    prints how many points are done on stderr.
    """
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError("grid: must be a non-empty dict of option -> list of values")
    file, base_values = normalize(base, options, **kwargs)
    keys = [key_of(name) for name in grid]
    columns = []  # per key: (the value as given, its text for the parser)
    for name, key in zip(grid, keys):
        raw = grid[name]
        values = list(raw) if isinstance(raw, collections.abc.Iterable) and not isinstance(raw, (str, bytes)) \
            else [raw]
        if not values:
            raise ValueError(f"grid: {key} has no values")
        columns.append([(v, text_of(key, v)) for v in values])
    if len(set(keys)) != len(keys):
        raise ValueError("grid: an option is given twice")
    if jobs is None:
        jobs = os.cpu_count() or 1
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= 1024:
        raise ValueError(f"jobs = {jobs!r}: must be 1 to 1024")
    combos = list(itertools.product(*columns))
    points = [{key: given for key, (given, _) in zip(keys, combo)} for combo in combos]
    runs = [{**base_values, **{key: text for key, (_, text) in zip(keys, combo)}}
            for combo in combos]
    # Check every point before any runs, as the command line does.
    for values in runs:
        _core.check(file, values)

    report = _Progress(len(runs)) if progress else None
    if client is None:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(jobs, len(runs))) as pool:
            futures = [pool.submit(_run_point, file, values) for values in runs]
            if report:
                for _ in concurrent.futures.as_completed(futures):
                    report.step()
            rows = [f.result() for f in futures]
    elif client is True or client == "local":
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as local:
            rows = _dask_rows(local, file, runs, report)
    else:
        rows = _dask_rows(client, file, runs, report)
    if report:
        report.done()

    import pandas as pd

    frame = pd.DataFrame([{**point, **row} for point, row in zip(points, rows)])
    for key in keys:  # numeric grid values as numbers, so they plot as numbers
        try:
            frame[key] = pd.to_numeric(frame[key])
        except (ValueError, TypeError):
            pass
    return frame


def _dask_rows(client: Any, file: Optional[str], runs: list, report=None) -> list:
    futures = client.map(_run_point, [file] * len(runs), runs, pure=False)
    if report:
        from distributed import as_completed

        for _ in as_completed(futures):
            report.step()
    return client.gather(futures)


class _Progress:
    """"sweep: 12/40 points" on stderr, rewritten in place at most ten times a second."""

    def __init__(self, total: int):
        import sys
        import time

        self.total, self.count, self.stream, self.clock = total, 0, sys.stderr, time.monotonic
        self.last = 0.0

    def step(self) -> None:
        self.count += 1
        now = self.clock()
        if now - self.last >= 0.1 or self.count == self.total:
            self.last = now
            self.stream.write(f"\rsweep: {self.count}/{self.total} points")
            self.stream.flush()

    def done(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _require_libpq():
    if not _core.with_libpq:
        raise RuntimeError("poolsim was built without libpq (POOLSIM_WITH_LIBPQ=OFF)")


def live(scenario: Scenario = None, *, dsn: str = "auto", sql: Optional[str] = None,
         options: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> Result:
    """Run the scenario's workload in real time against PostgreSQL through poolsim's real pool,
    as ``poolsim live``. ``dsn="auto"`` starts a throw-away server for the run."""
    _require_libpq()
    file, values = normalize(scenario, options, **kwargs)
    return Result(json.loads(_core.live(file, values, dsn, sql or "")))


def validate(scenario: Scenario = None, *, dsn: str = "auto", against: str = "poolsim",
             calibrate: bool = False, sql: Optional[str] = None,
             options: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> Validation:
    """Run the workload live and simulated and compare them, as ``poolsim validate``.

    ``against="poolsim"`` runs the live side on poolsim's real pool (libpq);
    ``against="sqlalchemy"`` drives the same schedule through a real SQLAlchemy engine
    (QueuePool, psycopg2): how a Flask-SQLAlchemy user checks the model against the pool they
    actually run. ``calibrate=True`` measures the server's connect, ping and reset costs first
    (and, against SQLAlchemy, what a request costs through SQLAlchemy beyond its hold).
    """
    _require_libpq()
    if against not in ("poolsim", "sqlalchemy"):
        raise ValueError(f"against = {against!r}: must be 'poolsim' or 'sqlalchemy'")
    file, values = normalize(scenario, options, **kwargs)
    if against == "poolsim":
        text, table = _core.validate(file, values, dsn, sql or "", calibrate)
        return Validation(json.loads(text), table)
    from ._sqlalchemy import sqlalchemy_live

    with _server_for(dsn) as conninfo:
        def run_live(echo: Mapping[str, str]) -> str:
            return json.dumps(sqlalchemy_live(dict(echo), dsn=conninfo, sql=sql,
                                              calibrate=calibrate).to_dict())

        text, table = _core.validate(file, values, conninfo, sql or "", calibrate, run_live)
    return Validation(json.loads(text), table)


def calibrate(dsn: str = "auto", samples: int = 50) -> dict:
    """Measure connect, ping, reset and round-trip cost on a server, as ``poolsim calibrate``.
    The returned dict has the measurements, ``options`` (the [database] values) and ``ini``."""
    _require_libpq()
    if isinstance(samples, bool) or not isinstance(samples, int):
        raise TypeError(f"samples = {samples!r}: must be a whole number")
    text, ini = _core.calibrate(dsn, samples)
    out = json.loads(text)
    out["ini"] = ini
    return out


class TestServer:
    """A throw-away PostgreSQL on localhost (initdb in a private temporary directory, a free
    port, a random password), stopped and deleted by ``close()`` or at the end of a ``with``.

    ``dsn`` is its libpq connection string, ``url`` the SQLAlchemy URL.
    """

    __test__ = False  # not a pytest test class

    def __init__(self):
        _require_libpq()
        self._server = _core.TestServer()

    @property
    def dsn(self) -> str:
        return self._server.dsn

    @property
    def url(self) -> str:
        from urllib.parse import quote

        fields = dict(item.split("=", 1) for item in self.dsn.split())
        return (f"postgresql+psycopg2://{fields['user']}:{quote(fields['password'], safe='')}"
                f"@{fields['host']}:{fields['port']}/{fields['dbname']}")

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def directory(self) -> str:
        """Its private directory: the cluster in ``data/``, the server's log in ``server.log``."""
        return self._server.directory

    def connections(self, application_name: str) -> int:
        """Backends with this application_name in pg_stat_activity."""
        return self._server.connections(application_name)

    def terminate_backends(self, application_name: str) -> int:
        return self._server.terminate_backends(application_name)

    def restart(self) -> None:
        self._server.restart()

    def set_parameter(self, name: str, value: str) -> None:
        self._server.set_parameter(name, value)

    def close(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            del server  # the C++ destructor stops the server and removes its directory

    def __enter__(self) -> "TestServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<poolsim.TestServer 127.0.0.1:{self.port}>" if self._server else \
            "<poolsim.TestServer closed>"


def postgres_available() -> bool:
    """Whether a throw-away PostgreSQL can be started here (initdb and pg_ctl installed)."""
    import glob
    import shutil

    return _core.with_libpq and (shutil.which("initdb") is not None or
                                 bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")))


@contextmanager
def _server_for(dsn: str) -> Iterator[str]:
    if dsn != "auto":
        yield dsn
        return
    with TestServer() as server:
        yield server.dsn
