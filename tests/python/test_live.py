"""Live runs on a real PostgreSQL: poolsim.live (poolsim's libpq pool), poolsim.sqlalchemy_live
(a real SQLAlchemy QueuePool) and poolsim.validate. Skipped where no PostgreSQL can be started.

One throw-away server (poolsim.TestServer) serves the whole module; every run is a few seconds
of real time, about 25 s in all.
"""

import os
import time

import pytest

import poolsim
from helpers import cli, cli_json

pytestmark = pytest.mark.skipif(
    not poolsim.postgres_available(),
    reason="no PostgreSQL here: poolsim.postgres_available() is False (initdb/pg_ctl not "
           "installed, or poolsim built without libpq)")

# The brief's load: 50 requests/s on a pool of 2 (exp:10ms holds), 1 s warm-up + 2 s counted.
LIVE = dict(duration="2s", warmup="1s", workload_rate=50, pool_size=2, seed=5)
# A pool that must time out: 1 connection, no overflow, 0.2 s patience, 100 ms holds at 50/s.
TIGHT = dict(duration="2s", pool_size=1, max_overflow=0, pool_timeout=0.2, workload_rate=50,
             workload_service="const:100ms", seed=3)
POOLSIM_APP = f"poolsim_live_{os.getpid()}"  # real_pool/live.cpp's application_name


@pytest.fixture(scope="module")
def server():
    with poolsim.TestServer() as s:
        yield s
        # After every run of the module: no backend of any pool is left behind.
        assert _wait_for_no_backends(s) == (0, 0)


def _fields(dsn):
    return dict(item.split("=", 1) for item in dsn.split())


def _sqlalchemy_backends(server):
    import psycopg2

    with psycopg2.connect(server.dsn) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                       "'poolsim_sqlalchemy%%' AND pid <> pg_backend_pid()")
        count = cursor.fetchone()[0]
    conn.close()
    return count


def _wait_for_no_backends(server, patience_s=5.0):
    """(poolsim live backends, SQLAlchemy backends) once both are 0, or when patience runs out:
    a backend leaves pg_stat_activity a moment after its client closed the socket."""
    deadline = time.monotonic() + patience_s
    while True:
        counts = (server.connections(POOLSIM_APP), _sqlalchemy_backends(server))
        if counts == (0, 0) or time.monotonic() > deadline:
            return counts
        time.sleep(0.1)


def _accounted(r):
    return r.completed + r.timeouts + sum(r.errors.values()) == r.requests


@pytest.fixture(scope="module")
def live_run(server):
    return poolsim.live(dsn=server.dsn, **LIVE)


@pytest.fixture(scope="module")
def sqlalchemy_run(server):
    return poolsim.sqlalchemy_live(dsn=server.dsn, **LIVE)


@pytest.fixture(scope="module")
def scheduled():
    """The arrivals in the window [warmup, warmup + duration) of the seed's schedule: the
    simulator counts every arrival of an open-loop workload once."""
    return poolsim.simulate(**LIVE)


# --- poolsim.live -----------------------------------------------------------------------------

def test_live_result(live_run, scheduled, server):
    r = live_run
    assert isinstance(r, poolsim.Result)
    assert r.mode == "live"
    assert r.requests > 0
    assert _accounted(r)
    assert r.config["pool.size"] == 2 and r.config["workload.rate"] == 50
    assert r.sim_time_s == 2.0
    # the simulator's schema, minus what only a simulation has
    assert set(r.to_dict()) == set(scheduled.to_dict()) - {"events"}
    assert set(r.wait_ms) == set(scheduled.wait_ms)
    assert set(r.connections) == set(scheduled.connections)
    assert 1 <= r.connections.peak_server <= 2 + 10  # pool.size + max_overflow
    assert r.latency_ms.mean >= 5  # holds are real pg_sleep()s of 10 ms on average
    assert _wait_for_no_backends(server)[0] == 0  # the pool closed every connection


def test_live_requests_are_the_scheduled_arrivals(live_run, scheduled):
    assert live_run.requests == scheduled.requests


# --- poolsim.sqlalchemy_live ------------------------------------------------------------------

def test_sqlalchemy_live_result(sqlalchemy_run, live_run, server):
    r = sqlalchemy_run
    assert isinstance(r, poolsim.Result)
    assert r.mode == "live"
    assert "sqlalchemy" in r.driver.lower()
    assert set(r.to_dict()) == set(live_run.to_dict()) | {"driver"}
    for section in ("errors", "wait_ms", "latency_ms", "connections"):
        assert set(r[section]) == set(live_run[section]), section
    assert r.config == live_run.config
    assert r.requests > 0
    assert _accounted(r)
    assert r.latency_ms.mean >= 5
    assert 1 <= r.connections.peak <= 2 + 10
    assert _wait_for_no_backends(server) == (0, 0)


def test_sqlalchemy_live_requests_are_the_scheduled_arrivals(sqlalchemy_run, live_run,
                                                               scheduled):
    """The same seed gives the same schedule, whichever pool serves it."""
    assert sqlalchemy_run.requests == live_run.requests == scheduled.requests


def test_a_tight_pool_times_out_in_both(server):
    expected = poolsim.simulate(**TIGHT).requests
    ours = poolsim.live(dsn=server.dsn, **TIGHT)
    theirs = poolsim.sqlalchemy_live(url=server.url, **TIGHT)  # the SQLAlchemy URL works too
    for r in (ours, theirs):
        assert r.requests == expected
        assert _accounted(r)
        assert r.timeouts > 0
        assert r.completed > 0
        assert r.connections.peak <= 1
        # a timed-out request waited its whole patience
        assert r.wait_ms.max >= 200 * 0.95
    assert _wait_for_no_backends(server) == (0, 0)


def test_nullpool_opens_a_connection_for_every_request_in_both(server):
    """pool.policy = null is SQLAlchemy's NullPool: poolsim's pool and SQLAlchemy's own
    NullPool connect for every checkout and close on every return, as the simulation does."""
    options = dict(pool_policy="null", duration="2s", workload_rate=20, seed=4)
    sim = poolsim.simulate(**options)
    ours = poolsim.live(dsn=server.dsn, **options)
    theirs = poolsim.sqlalchemy_live(dsn=server.dsn, **options)
    for r in (sim, ours, theirs):
        assert r.requests == sim.requests > 0
        assert r.completed == r.requests and r.timeouts == 0
        assert r.connections.opened == r.requests  # one connect per request, none kept
        # closed on return: all but those still held when the run ends (at most the peak)
        c = r.connections
        assert c.opened - c.peak <= c.closed <= c.opened
        assert r.config["pool.policy"] == "null"
    assert "NullPool" in ours.table()
    assert "NullPool" in theirs.driver
    assert _wait_for_no_backends(server) == (0, 0)


def test_staticpool_shares_one_connection_in_both(server, tmp_path):
    """pool.policy = static is SQLAlchemy's StaticPool: one connection for every checkout. The
    real StaticPool on psycopg2 opens exactly one, as the simulation does, and its requests take
    turns on it (psycopg2 runs one statement at a time on a connection): the server never sees
    a second backend from the run.

    The first request comes alone: StaticPool makes its connection lazily, in a memoized
    property without a lock, so two checkouts racing that first connect open two (seen on a
    loaded machine with 50 ms between arrivals)."""
    trace = tmp_path / "static.csv"
    trace.write_text("0.000,0.005\n" + "".join(f"{1 + i / 20:.3f},0.005\n" for i in range(20)))
    options = dict(pool_policy="static", duration="2.5s", workload_arrival="trace",
                   workload_trace=str(trace), seed=4)
    sim = poolsim.simulate(**options)
    theirs = poolsim.sqlalchemy_live(dsn=server.dsn, **options)
    ours = poolsim.live(dsn=server.dsn, **options)  # StaticCore on poolsim's libpq pool
    for r in (sim, theirs, ours):
        assert r.requests == sim.requests > 0
        assert r.completed == r.requests and r.timeouts == 0
        assert r.connections.opened == 1
        assert r.connections.peak_server <= 1
        assert r.config["pool.policy"] == "static"
    assert "StaticPool" in theirs.driver and "StaticPool" in sim.table()
    assert "StaticPool" in ours.table()
    assert _wait_for_no_backends(server) == (0, 0)


# --- refusals -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,key", [
    (dict(network_drop_rate=1), "network.drop_rate"),
    (dict(network_idle_drop_after="1s"), "network.idle_drop_after"),
    (dict(network_connect_fail=0.1), "network.connect_fail"),
    (dict(database_outages="1s+1s"), "database.outages"),
    (dict(app_processes=2, app_routing="random"), "app.routing"),
    (dict(workload_arrival="closed", workload_clients=3), "workload.arrival"),
    (dict(database_max_connections=50), "database.max_connections"),
])
def test_sqlalchemy_live_refuses_what_it_cannot_do(server, kwargs, key):
    start = time.monotonic()
    with pytest.raises(ValueError) as info:
        poolsim.sqlalchemy_live(dsn=server.dsn, duration="1s", **kwargs)
    assert key in str(info.value)
    assert time.monotonic() - start < 0.9  # refused up front: the 1 s run never started


@pytest.mark.parametrize("kwargs,key", [
    (dict(network_connect_fail=0.1), "network.connect_fail"),
    (dict(workload_arrival="closed", workload_clients=3), "workload.arrival"),
    (dict(database_outages="1s+1s"), "database.outages"),  # needs a server of its own
    (dict(database_max_connections=50), "database.max_connections"),
])
def test_live_refuses_what_it_cannot_do(server, kwargs, key):
    with pytest.raises(ValueError) as info:
        poolsim.live(dsn=server.dsn, duration="1s", **kwargs)
    assert key in str(info.value)


def test_bad_options_are_refused_before_connecting(server):
    for run in (poolsim.live, poolsim.sqlalchemy_live):
        with pytest.raises(ValueError, match="pool.size"):
            run(dsn=server.dsn, pool_size=-1)
        with pytest.raises(ValueError, match="unknown option"):
            run(dsn=server.dsn, pool_sizee=1)
    with pytest.raises(ValueError, match="against"):
        poolsim.validate(dsn=server.dsn, against="hikari")


# --- validate ---------------------------------------------------------------------------------

def test_validate_against_sqlalchemy(server):
    v = poolsim.validate(dsn=server.dsn, against="sqlalchemy", duration="4s", warmup="1s",
                         workload_rate=100, pool_size=5, max_overflow=0)
    assert isinstance(v, poolsim.Validation)
    assert v.live.mode == "live" and v.live.requests > 0
    assert "sqlalchemy" in v.live.driver.lower()
    assert _accounted(v.live)
    assert v.sim.mode == "sim" and v.sim.requests > 0
    frame = v.agreement_frame()
    assert {"live", "sim", "ci95", "allowed", "within"} <= set(frame.columns)
    assert len(frame) >= 3
    assert {"p_wait", "wait_ms.mean", "latency_ms.mean"} & set(frame.index)
    assert frame["within"].map(lambda x: isinstance(x, bool)).all()
    assert isinstance(v.agrees, bool)
    assert v.verdict == ("agrees" if frame["within"].all() else "differs")  # not calibrated: no drift
    assert v.agrees == bool(frame["within"].all()) and v.drift is None
    assert v.table().strip()
    assert "metrics agree" in repr(v)
    assert _wait_for_no_backends(server) == (0, 0)


@pytest.mark.parametrize("design", [
    dict(pool_policy="hikari", hikari_maximum_pool_size=4),
    dict(pool_policy="psycopg", psycopg_min_size=2, psycopg_max_size=4),
], ids=["hikari", "psycopg"])
def test_validate_runs_the_background_pools_on_the_real_pool(server, design):
    """HikariCore and PsycopgCore drive poolsim's real pool too, with threads of their own that
    connect before anyone asks: the live run and the simulation of the same workload open the
    same connections, and the server sees the pool's and no more. (Waits and latencies are
    compared too, but a loaded test machine slows the live side: only the counts are asserted.)"""
    v = poolsim.validate(dsn=server.dsn, duration="4s", warmup="1s", workload_rate=150,
                         seed=3, **design)
    assert v.live.config["pool.policy"] == design["pool_policy"]
    assert v.live.requests > 0 and _accounted(v.live)
    assert v.live.completed == v.live.requests
    assert v.live.connections.peak_server <= 4
    assert v.sim.connections.peak_server <= 4
    frame = v.agreement_frame()
    counts = ["connections.opened_per_s", "connections.mean_open", "connections.peak_server",
              "timeouts", "errors"]
    assert frame.loc[counts, "within"].all(), frame.to_string()
    assert _wait_for_no_backends(server) == (0, 0)


def test_validate_calibrates_through_what_it_runs(server):
    """--calibrate measures the server (connects alone and storms of 1 to 16 at once) before and
    after the live run and, against SQLAlchemy, what a request costs through SQLAlchemy; the
    simulation uses exactly those figures."""
    v = poolsim.validate(dsn=server.dsn, against="sqlalchemy", calibrate=True, duration="2s",
                         workload_rate=50, pool_size=3, max_overflow=0)
    report = v.to_dict()
    calibration = report["calibration"]
    storms = calibration["connect_storms"]
    assert [s["connects_at_once"] for s in storms] == [1, 2, 4, 8, 16]
    # Measured twice, before and after the live run: 7 rounds of each storm size each time.
    assert all(s["rounds"] == 14 and s["per_s"] > 0 and 0 < s["capacity"] <= s["connects_at_once"]
               for s in storms), storms
    assert calibration["connect"]["samples"] == 100
    config = report["sim"]["config"]
    assert config["database.connect_sharing"] == "shared"
    curve = calibration["options"]["database.connect_capacity"]
    assert config["database.connect_capacity"] == curve
    assert [int(p.split(":")[0]) for p in curve.split(",")] == [1, 2, 4, 8, 16]
    assert [float(p.split(":")[1]) for p in curve.split(",")] == [
        round(s["capacity"], 2) for s in storms]
    drift = report["drift"]
    assert set(drift) == {"drifted", "rule", "lone_connect", "storm_round"}
    assert v.drift == drift and v.verdict == report["verdict"]
    assert v.agrees == (v.verdict == "agrees")
    assert report["verdict"] == ("drift" if drift["drifted"] else
                                 "agrees" if all(a["within"] for a in report["agreement"].values())
                                 else "differs")
    runner = calibration["runner_statement"]
    assert runner["through"] == "sqlalchemy" and runner["samples"] == 50 and runner["mean_ms"] > 0
    assert config["database.reset"] == runner["distribution"]
    assert "calibration" not in report["live"]  # moved to the report's calibration block
    assert _wait_for_no_backends(server) == (0, 0)


def test_sqlalchemy_live_calibrate_reports_its_statement_cost(server):
    r = poolsim.sqlalchemy_live(dsn=server.dsn, calibrate=True, duration="1s", workload_rate=20)
    statement = r.to_dict()["calibration"]["statement"]
    assert statement["p50_ms"] <= statement["p95_ms"] <= statement["max_ms"]
    # The distribution is one the simulator accepts, with the measured mean.
    assert poolsim.simulate(database_reset=statement["distribution"], duration="1s").requests > 0
    assert f"mean={statement['mean_ms'] * 1e3:.0f}us" in statement["distribution"]
    assert "calibration" not in poolsim.sqlalchemy_live(dsn=server.dsn, duration="1s",
                                                        workload_rate=20).to_dict()


# --- no password in any error -----------------------------------------------------------------

def _secret(server):
    return _fields(server.dsn)["password"]


def _assert_no_secret(error, *secrets):
    text = " ".join([str(error), repr(error)] + [str(a) for a in error.args])
    for secret in secrets:
        assert secret not in text, f"the password appears in {type(error).__name__}: {text}"


def _wrong_port(server):
    return server.dsn.replace(f"port={server.port}", "port=1")


@pytest.mark.parametrize("how", ["wrong_port", "wrong_password", "garbage", "bad_keyword"])
def test_live_errors_never_show_the_password(server, how):
    secret = _secret(server)
    wrong = "WRONGSECRET4242"
    dsn = {"wrong_port": _wrong_port(server),
           "wrong_password": server.dsn.replace(secret, wrong),
           "garbage": server.dsn + " nonsense",
           "bad_keyword": server.dsn + " frobnicate=1"}[how]
    calls = [lambda: poolsim.live(dsn=dsn, duration="1s"),
             lambda: poolsim.validate(dsn=dsn, duration="1s"),
             lambda: poolsim.calibrate(dsn=dsn, samples=5)]
    for call in calls:
        with pytest.raises((ValueError, RuntimeError)) as info:
            call()
        _assert_no_secret(info.value, secret, wrong)


def test_test_server_repr_hides_the_password(server):
    assert _secret(server) not in repr(server)


def test_sqlalchemy_live_bad_url_does_not_show_the_password(server):
    """A mistyped SQLAlchemy URL: poolsim masks passwords in every error of its own (C++
    mask_password), but sqlalchemy_live hands the URL to create_engine, whose ArgumentError
    quotes the whole URL, password included."""
    url = server.url.replace("postgresql+psycopg2://", "postgresql+psycopg2 ://")
    with pytest.raises(Exception) as info:
        poolsim.sqlalchemy_live(url=url, duration="1s", workload_rate=5)
    _assert_no_secret(info.value, _secret(server))


# --- an unreachable server --------------------------------------------------------------------

def test_sqlalchemy_live_unreachable_server_is_an_error(server):
    """poolsim.live refuses an unreachable server (ValueError "cannot connect to the database").
    sqlalchemy_live instead runs the whole schedule: its monitor thread dies on an unhandled
    psycopg2.OperationalError (so no connection levels are sampled) and it returns a "result"
    in which every request is a connect failure."""
    with pytest.raises((ValueError, RuntimeError)) as info:
        r = poolsim.sqlalchemy_live(dsn=_wrong_port(server), duration="1s", workload_rate=5)
        pytest.fail(f"no error; returned requests={r.requests} errors={r.errors.to_dict()}")
    _assert_no_secret(info.value, _secret(server))


@pytest.mark.parametrize("against", ["poolsim", "sqlalchemy"])
def test_validate_unreachable_server_is_an_error(server, against):
    with pytest.raises((ValueError, RuntimeError)) as info:
        v = poolsim.validate(dsn=_wrong_port(server), against=against, duration="1s",
                             workload_rate=5)
        pytest.fail(f"no error; live errors={v.live.errors.to_dict()}")
    _assert_no_secret(info.value, _secret(server))


def test_calibrate_prints_a_database_section_a_scenario_file_takes(server, tmp_path):
    """`poolsim calibrate > db.ini` is a scenario file: its options are those the JSON gives,
    and the statement's round trip is stated in a comment (validate simulates it as reset)."""
    text = cli("calibrate", "--dsn", server.dsn)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("[database]\n")
    assert "# a statement's round trip beyond its pg_sleep:" in text.stdout
    scenario = tmp_path / "db.ini"
    scenario.write_text(text.stdout)
    result = cli_json("simulate", str(scenario), "--duration=1s")
    options = {}
    for line in text.stdout.splitlines()[1:]:
        if line and not line.startswith("#"):
            key, value = (part.strip() for part in line.split("=", 1))
            options["database." + key] = value
    assert set(options) == {"database.connect", "database.ping", "database.reset",
                            "database.connect_capacity", "database.connect_sharing"}
    for key, value in options.items():
        assert str(result["config"][key]) == value, key


# What a live run may send: its requests (pg_sleep, SELECT 1 or the user's SQL), the pool's
# ping and reset, the fault schedule's pg_terminate_backend and pg_stat_activity queries,
# session settings, and SQLAlchemy's own start-up queries. Never DDL or writes.
_WRITES = ("CREATE", "ALTER", "DROP", "TRUNCATE", "GRANT", "REVOKE", "COMMENT", "INSERT",
           "UPDATE", "DELETE", "COPY", "VACUUM", "REINDEX", "CLUSTER", "LOCK")


def test_live_runs_send_no_ddl_and_no_writes(tmp_path):
    """Every statement the server logs from live, calibrate, validate and sqlalchemy_live on a
    user's database (log_statement = all) is a read: no DDL, no write."""
    import re

    with poolsim.TestServer() as server:
        server.set_parameter("log_line_prefix", "%a|")
        server.set_parameter("log_statement", "all")
        user_sql = "SELECT pg_sleep($1), 'user sql'"
        runs = [
            cli("live", "--dsn", server.dsn, "--duration=2s", "--workload.rate=50",
                "--pool.pre_ping=true", "--network.drop_rate=60",
                "--database.idle_session_timeout=1s", "--network.idle_drop_after=300ms",
                "--no-progress"),
            cli("live", "--dsn", server.dsn, "--duration=1s", "--sql", user_sql, "--no-progress"),
            cli("validate", "--dsn", server.dsn, "--calibrate", "--duration=1s", "--no-progress"),
            cli("validate", "--dsn", server.dsn, "--against", "sqlalchemy", "--duration=1s",
                "--no-progress"),
        ]
        for run in runs:
            assert run.returncode == 0, (run.args, run.stderr)
        with open(os.path.join(server.directory, "server.log"), errors="replace") as f:
            log = f.read()
    statements = []
    for app, text in re.findall(r"^([^|\n]*)\|LOG:  (?:statement|execute [^:]*): (.*)$", log,
                                re.MULTILINE):
        if app != "poolsim_test_server_admin":  # the test's own set_parameter (ALTER SYSTEM)
            statements.append((app, text.strip()))
    texts = [t for _, t in statements]
    assert any("pg_sleep" in t for t in texts), "no request was logged: is logging on?"
    assert any("'user sql'" in t for t in texts), "the user's SQL was not run"
    assert any(t.upper().startswith("ROLLBACK") for t in texts), "calibrate's reset not seen"
    assert any("pg_terminate_backend" in t for t in texts), "the drop schedule was not run"
    writes = [(app, t) for app, t in statements if t.split(None, 1)[0].upper() in _WRITES]
    assert not writes, writes
