"""The same workload through the real HikariCP: the live cross-check of ``pool.policy = hikari``.

HikariCP is Java, so the requests run in a small Java driver (``HikariLive.java`` beside this
file, compiled with javac into a temporary directory once per Python process) on Debian 12's
libhikaricp-java 2.7.9 and libpostgresql-jdbc-java 42.5.5. The schedule (arrival and hold
times) is the simulator's own (``_core.schedule``), written to the driver's standard input with
the pool settings and the credentials (never on a command line). After probes that also warm
the JVM up, the driver releases each request at its planned instant on a new thread of its own
(open loop), which runs ``getConnection()`` (the wait), ``SELECT pg_sleep(hold)`` and
``close()``; it samples the pools' HikariPoolMXBean counts and the server's backends in
``pg_stat_activity`` every 50 ms. The result is built by the same C++ aggregation as every
other result, so the schema is identical.

What 2.7.9 lacks or does differently from the 5.1 the model follows is refused or noted in the
README: it has no keepaliveTime (refused), its connection adder keeps connecting while any
thread waits (5.1: while more wait than are idle) and does not rest 30 ms after a connect, and
its housekeeper retires the oldest idle connections first.
"""

from __future__ import annotations

import atexit
import getpass
import json
import math
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from typing import Any, Dict, Mapping, Optional, Tuple, Union
from urllib.parse import quote

import numpy as np

from . import _core
from ._live_threads import masked, on_database, refuse_unsupported, session_options
from ._options import normalize
from ._result import Result

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "HikariLive.java")
# (path, Debian package): what the driver compiles and runs against, nothing downloaded.
_JARS = (("/usr/share/java/HikariCP.jar", "libhikaricp-java"),
         ("/usr/share/java/postgresql.jar", "libpostgresql-jdbc-java"),
         ("/usr/share/java/slf4j-api.jar", "libslf4j-java"),
         ("/usr/share/java/slf4j-simple.jar", "libslf4j-java"))
_TOOLS = (("javac", "openjdk-17-jdk-headless"), ("java", "openjdk-17-jdk-headless"))
# The libpq DSN fields the JDBC driver is given; any other is refused, not dropped.
_DSN_FIELDS = ("host", "port", "dbname", "user", "password", "sslmode")
_PROBES = 5  # connects timed before the run (after 12 untimed ones)

_compiled: Optional[str] = None
_compile_lock = threading.Lock()


def _classpath() -> str:
    """The driver's class path: HikariLive compiled (once per process) and the jars. Raises
    RuntimeError naming the Debian package of whatever is missing."""
    global _compiled
    for tool, package in _TOOLS:
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is missing: install {package} (scripts/install-deps.sh)")
    for jar, package in _JARS:
        if not os.path.exists(jar):
            raise RuntimeError(f"{jar} is missing: install {package} (scripts/install-deps.sh)")
    jars = [jar for jar, _ in _JARS]
    with _compile_lock:
        if _compiled is None:
            directory = tempfile.mkdtemp(prefix="poolsim-hikari-")
            atexit.register(shutil.rmtree, directory, True)
            javac = subprocess.run(["javac", "-d", directory, "-cp", os.pathsep.join(jars),
                                    _SOURCE], capture_output=True, text=True, timeout=300)
            if javac.returncode != 0:
                raise RuntimeError(f"javac {_SOURCE} failed: {javac.stderr.strip()}")
            _compiled = directory
    return os.pathsep.join([_compiled, *jars])


def _jdbc(dsn: str) -> Tuple[str, Dict[str, str]]:
    """(JDBC URL without credentials, the DSN's fields) for a libpq DSN; ValueError for what the
    JDBC driver cannot be given (a Unix socket, several hosts, another field)."""
    import psycopg2.extensions

    try:
        fields = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.Error as e:
        raise ValueError(f"dsn: {masked(str(e)).strip()}") from None
    for key in fields:
        if key not in _DSN_FIELDS:
            raise ValueError(f"dsn: {key} is not supported by hikari_live; the JDBC driver is "
                             f"given {', '.join(_DSN_FIELDS)}")
    host = fields.get("host", "")
    if not host or host.startswith("/") or "," in host:
        raise ValueError(f"dsn: host = {host or '(none: a Unix socket)'}: hikari_live needs "
                         "one TCP host name or address (the JDBC driver has no Unix sockets)")
    port = fields.get("port", "5432")
    if "," in port:
        raise ValueError(f"dsn: port = {port}: hikari_live needs one port")
    user = fields.get("user") or getpass.getuser()
    fields.update(user=user, dbname=fields.get("dbname") or user)
    name = f"[{host}]" if ":" in host else host
    return f"jdbc:postgresql://{name}:{port}/{quote(fields['dbname'], safe='')}", fields


def _milliseconds(config: Mapping[str, str], key: str) -> str:
    return str(int(round(_core.parse_seconds(config[key]) * 1000)))


def _refuse(config: Mapping[str, str]) -> None:
    refuse_unsupported(config, "hikari_live")
    if config["pool.policy"] != "hikari":
        raise ValueError(f"pool.policy = {config['pool.policy']}: hikari_live runs HikariCP's "
                         "pool only: set pool.policy = hikari (sqlalchemy_live runs queuepool, "
                         "null and static)")
    if _core.parse_seconds(config["hikari.keepalive_time"]) != 0:
        raise ValueError(f"hikari.keepalive_time = {config['hikari.keepalive_time']}: must be 0 "
                         "for hikari_live: HikariCP 2.7.9 (Debian 12's libhikaricp-java) has no "
                         "keepaliveTime (added in 4.0)")
    if config["pool.reset_on_return"] == "commit":
        raise ValueError("pool.reset_on_return = commit: HikariCP never commits a returned "
                         "connection; use rollback (it rolls back an open transaction) or none")


def _driver_input(config: Mapping[str, str], url: str, fields: Mapping[str, str], app: str,
                  at: np.ndarray, hold: np.ndarray, connect_delay: float) -> str:
    maximum = config["hikari.maximum_pool_size"]
    minimum = config["hikari.minimum_idle"]
    settings = {
        "url": url, "user": fields["user"], "password": fields.get("password", ""),
        "sslmode": fields.get("sslmode", ""), "options": session_options(config) or "",
        "application_name": app,
        "pools": config["app.processes"], "threads": config["app.threads"],
        "maximum_pool_size": maximum, "minimum_idle": maximum if minimum == "max" else minimum,
        "connection_timeout_ms": _milliseconds(config, "hikari.connection_timeout"),
        "idle_timeout_ms": _milliseconds(config, "hikari.idle_timeout"),
        "max_lifetime_ms": _milliseconds(config, "hikari.max_lifetime"),
        # HikariCP rolls back only a connection returned in a transaction: with autoCommit
        # off every request leaves one (reset_on_return = rollback); with it on (HikariCP's
        # default) none does (reset_on_return = none).
        "auto_commit": "true" if config["pool.reset_on_return"] == "none" else "false",
        "connect_delay_ms": str(int(round(connect_delay * 1000))),
        "window_end_s": repr(_core.parse_seconds(config["warmup"]) +
                             _core.parse_seconds(config["duration"])),
        "probes": str(_PROBES),
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    lines.append("schedule")
    lines.extend(f"{a!r},{h!r}" for a, h in zip(at.tolist(), hold.tolist()))
    return "\n".join(lines) + "\n"


def _summary(values_ms: list) -> dict:
    """A probe's figures, as sqlalchemy_live's calibration.statement gives them."""
    values = np.sort(np.array(values_ms))
    n = len(values)
    mean = float(values.mean())
    cv = float(values.std(ddof=1) / mean) if mean > 0 and n > 1 else 0.0
    return {"samples": n, "mean_ms": mean, "cv": cv, "min_ms": float(values[0]),
            "p50_ms": float(values[n // 2]),
            "p95_ms": float(values[int(0.95 * n)]), "max_ms": float(values[-1]),
            "through": "hikaricp", "distribution": f"const:{mean * 1e3:.0f}us"}


def hikari_live(scenario: Any = None, *, dsn: str = "auto",
                options: Optional[Mapping[str, Any]] = None,
                connect_delay: Union[float, str] = 0.0, **kwargs: Any) -> Result:
    """Drive the scenario's workload through the real HikariCP (2.7.9, PostgreSQL JDBC 42.5.5,
    on a JVM) in real time and report it in poolsim's result schema (``"mode": "live"``).

    The scenario must be ``pool.policy = hikari``; hikari.maximum_pool_size, minimum_idle,
    connection_timeout, idle_timeout and max_lifetime are HikariConfig's settings (each
    app.processes gets a pool of its own, requests round robin, at most app.threads at once
    each). ``pool.reset_on_return = none`` is HikariCP's default autoCommit=true;
    ``rollback`` runs each request in a transaction (autoCommit=false) that HikariCP rolls
    back on close(). ``dsn`` is a libpq connection string with a TCP host, or ``"auto"`` (the
    default) for a throw-away PostgreSQL. ``connect_delay`` (seconds, or a duration such as
    ``"150ms"``) is added to every connect, to give a local server a remote one's connect
    time. What HikariCP 2.7.9 or the driver cannot do is refused with ValueError: other
    policies, hikari.keepalive_time (2.7.9 has none), network faults, outages, a closed loop.

    The result's ``driver`` names the versions; ``calibration`` holds what a connect
    (``connect``: with the delay, and the new backend's first statement, which loads its
    catalog caches), HikariCP's liveness check (``ping``: Connection.isValid) and a request
    beyond its hold when requests queue (``statement``: the round trip, close(), the hand-off
    to the next waiting thread; 8 threads on 2 connections with the schedule's holds) cost,
    measured before the run on connections of their own: the values to simulate it with.
    """
    file, values = normalize(scenario, options, **kwargs)
    _core.check(file, values)
    config = _core.config(file, values)
    _refuse(config)
    delay = _core.parse_seconds(connect_delay) if isinstance(connect_delay, str) \
        else float(connect_delay)
    if not delay >= 0:
        raise ValueError(f"connect_delay = {connect_delay}: must be a duration >= 0")
    classpath = _classpath()
    return on_database(config, dsn, lambda server_dsn: _run(
        file, values, config, server_dsn, classpath, delay))


def _run(file, values, config, dsn: str, classpath: str, connect_delay: float) -> Result:
    url, fields = _jdbc(dsn)
    password = fields.get("password", "")

    def hidden(text: str) -> str:
        text = masked(text)
        return text.replace(password, "****") if password else text

    app = f"poolsim_hikari_{uuid.uuid4().hex[:8]}"
    at, hold = _core.schedule(file, values)
    warmup = _core.parse_seconds(config["warmup"])
    window_end = warmup + _core.parse_seconds(config["duration"])
    patience = _core.parse_seconds(config["hikari.connection_timeout"])
    limit = None if patience == 0 else \
        window_end + float(hold.max(initial=0)) + patience + 120 + 2 * _PROBES * connect_delay
    try:
        java = subprocess.run(
            ["java", "-XX:+UseSerialGC", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
             "-cp", classpath, "HikariLive"],
            input=_driver_input(config, url, fields, app, at, hold, connect_delay),
            capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"hikari_live: the Java driver did not finish in {limit:.0f} s") \
            from None
    rows: Dict[str, list] = {}
    for line in java.stdout.splitlines():
        kind, _, rest = line.partition(",")
        rows.setdefault(kind, []).append(rest)
    if "error" in rows:
        kind, _, message = rows["error"][0].partition(",")
        if kind == "connect":
            raise ValueError(f"dsn: cannot connect to the database: {hidden(message)}")
        raise RuntimeError(f"hikari_live: the Java driver failed: {hidden(message)}")
    if java.returncode != 0 or "end" not in rows:
        tail = java.stderr.strip().splitlines()[-1:] or [f"exit status {java.returncode}"]
        raise RuntimeError(f"hikari_live: the Java driver failed: {hidden(tail[0])}")

    n = len(at)
    outcome = np.zeros(n, dtype=np.int8)
    wait_ms = np.zeros(n)
    latency_ms = np.full(n, math.nan)
    for row in rows.get("request", []):
        i, code, wait, latency = row.split(",")
        outcome[int(i)] = int(code)
        wait_ms[int(i)] = float(wait)
        latency_ms[int(i)] = float(latency)
    # sample: t, total, active, idle, waiting, server, opened so far
    samples = np.array([[float(x) for x in row.split(",")] for row in rows.get("sample", [])])
    end_t, end_total, end_opened = (float(x) for x in rows["end"][0].split(","))
    window = samples[samples[:, 0] >= warmup] if len(samples) else np.zeros((0, 7))
    # With no warm-up every connection counts, the pool's first one included.
    base_total, base_opened = (window[0, 1], window[0, 6]) if warmup > 0 and len(window) \
        else (0.0, 0.0)
    opened = end_opened - base_opened
    # A closed connection leaves the total at once (HikariPool.closeConnection), so what the
    # window opened beyond its growth is what it closed.
    closed = max(0.0, opened - (end_total - base_total))
    levels = {"opened": opened, "closed": closed,
              "peak_open": float(window[:, 1].max(initial=0)),
              "mean_open": float(window[:, 1].mean()) if len(window) else 0.0,
              "mean_in_use": float(window[:, 2].mean()) if len(window) else 0.0,
              "peak_server": float(window[:, 5].max(initial=0))}
    counted = at >= warmup
    result = json.loads(_core.live_result(
        file, values, np.ascontiguousarray(outcome[counted]),
        np.ascontiguousarray(wait_ms[counted]), np.ascontiguousarray(latency_ms[counted]),
        levels, end_t))
    hikari, jdbc, java_version = rows["driver"][0].split(",")
    result["driver"] = f"HikariCP {hikari} (PostgreSQL JDBC {jdbc}, Java {java_version})"
    result["calibration"] = {
        name: _summary([float(x) for x in rows[f"probe_{name}"]])
        for name in ("connect", "ping", "statement")}
    return Result(result)
