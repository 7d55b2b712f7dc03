"""pool.policy = pgbouncer against the real pgbouncer 1.18 (Debian 12's package pgbouncer).

The modelled set-up, for real: a throw-away PostgreSQL (poolsim.TestServer), a private
pgbouncer in front of it in transaction pooling (poolsim.Pgbouncer), and app processes each
with its own SQLAlchemy QueuePool connected to pgbouncer (poolsim.sqlalchemy_live with
pool_policy="queuepool" and pgbouncer's URL). What PostgreSQL itself sees is counted every 20 ms
in pg_stat_activity over a direct connection, and pgbouncer's SHOW POOLS on its admin console;
the same workload (a trace file written here, so both sides run the very same arrivals and
holds) goes to poolsim.simulate(pool_policy="pgbouncer") with the same pool.* and pgbouncer.*
settings and the costs measured on this machine just before.

Through pgbouncer, sqlalchemy_live's wait is only the checkout from QueuePool; the wait for a
server falls in the request's latency, so latencies are compared. pgbouncer does its timed
work at janitor ticks, 3 a second from its own start, whose phase relative to a run's start is
unknown: where an outcome depends on it, the model is run at 12 phases across the tick and the
real outcome must lie in what they span (widened by what the comments say). pgbouncer or
PostgreSQL missing is a failure, not a skip (scripts/install-deps.sh installs both). About 25 s.
"""

import os
import statistics
import threading
import time

import numpy as np
import psycopg2
import pytest
import sqlalchemy

import poolsim

TICK_S = 1 / 3  # pgbouncer's janitor period (janitor.c: USEC / 3)
PHASES = [k * TICK_S / 12 for k in range(12)]
APP = dict(pool_policy="queuepool", pool_size=5, max_overflow=10)  # each process's QueuePool


@pytest.fixture(scope="module")
def server():
    assert poolsim.postgres_available(), "PostgreSQL (initdb, pg_ctl) is not installed here: " \
        "run scripts/install-deps.sh"
    with poolsim.TestServer() as s:
        yield s


@pytest.fixture(scope="module")
def costs(server):
    return _measure_costs(server)


def _measure_costs(server):
    """What this machine charges, measured one at a time, for the model's inputs:
    database.connect (a login to PostgreSQL: TCP, SCRAM, a backend forked), pgbouncer.connect
    (an md5 login to pgbouncer, which already has a server) and the per-request cost beyond
    the hold that keeps a server busy (psycopg2's BEGIN, the statement, the ROLLBACK on return,
    SQLAlchemy's and Python's share, two hops through pgbouncer), as database.reset."""
    with poolsim.Pgbouncer(server) as bouncer:
        connect = _connect_ms(server.dsn)
        bouncer_connect = _connect_ms(bouncer.dsn)
        engine = sqlalchemy.create_engine(bouncer.url, pool_size=1, max_overflow=0)
        statement = sqlalchemy.text("SELECT pg_sleep(:hold)")
        extra = []
        try:
            engine.connect().close()
            for hold in np.linspace(0.001, 0.02, 40):
                conn = engine.connect()
                start = time.perf_counter()
                conn.execute(statement, {"hold": float(hold)})
                conn.close()
                extra.append((time.perf_counter() - start - hold) * 1e3)
        finally:
            engine.dispose()
    return dict(connect=connect, bouncer_connect=bouncer_connect,
                request=statistics.median(extra))


def _connect_ms(dsn, samples=10):
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        psycopg2.connect(dsn).close()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


class Watch:
    """Samples every 20 ms, on a thread of its own, what the server sees (backends of the test
    user and database in pg_stat_activity other than this connection) and what pgbouncer says
    (SHOW POOLS: its servers in any state, its waiting clients). Times are perf_counter."""

    def __init__(self, server, bouncer):
        self.samples = []  # (time, backends, pgbouncer's servers, waiting clients)
        self._db = psycopg2.connect(server.dsn)
        self._db.autocommit = True
        self._admin = psycopg2.connect(bouncer.admin_dsn)
        self._admin.autocommit = True
        self._stop = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            with self._db.cursor() as db, self._admin.cursor() as admin:
                while not self._stop.wait(0.02):
                    db.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                               "'client backend' AND usename = current_user AND datname = "
                               "current_database() AND pid <> pg_backend_pid()")
                    backends = db.fetchone()[0]
                    admin.execute("SHOW POOLS")
                    names = [c.name for c in admin.description]
                    pools = [dict(zip(names, row)) for row in admin.fetchall()]
                    # pgbouncer makes the pool at its first client's login
                    pool = next((p for p in pools if p["database"] == "postgres"), {})
                    servers = sum(pool.get(k, 0) for k in ("sv_active", "sv_idle", "sv_used",
                                                           "sv_tested", "sv_login"))
                    self.samples.append((time.perf_counter(), backends, servers,
                                         pool.get("cl_waiting", 0)))
        except Exception as e:  # re-raised by close()
            self._error = e

    def close(self):
        self._stop.set()
        self._thread.join()
        self._db.close()
        self._admin.close()
        if self._error is not None:
            raise self._error
        assert len(self.samples) > 10, "the watch took too few samples"

    def peak(self, column):
        return max(s[column] for s in self.samples)

    def level_at(self, t):
        """The server's backends at perf_counter time t: the last sample at or before it."""
        before = [s[1] for s in self.samples if s[0] <= t]
        return before[-1] if before else None

    def first_time(self, since, predicate):
        """The first sample time at or after `since` whose backend count satisfies predicate."""
        return next((s[0] for s in self.samples if s[0] >= since and predicate(s[1])), None)


def _write_trace(path, rows, shift=0.0):
    path.write_text("".join(f"{at + shift:.6f},{hold:.6f}\n" for at, hold in rows))
    return str(path)


def _poisson(rng, rate, mean_hold, start, end):
    rows, at = [], start
    while True:
        at += rng.exponential(1 / rate)
        if at >= end:
            return rows
        rows.append((at, rng.exponential(mean_hold)))


def _live(server, settings, options, watch_until_s=None):
    """The trace through SQLAlchemy and a private pgbouncer with `settings`, watched (with
    watch_until_s, until that long after the start). Returns (result, watch, pgbouncer's log,
    the start's perf_counter)."""
    with poolsim.Pgbouncer(server, **settings) as bouncer:
        watch = Watch(server, bouncer)
        try:
            start = time.perf_counter()
            live = poolsim.sqlalchemy_live(url=bouncer.url, **options)
            if watch_until_s is not None:
                time.sleep(max(0.0, start + watch_until_s - time.perf_counter()))
        finally:
            watch.close()
        return live, watch, bouncer.log(), start


def _model(costs, bouncer_settings, request_ms=None, **options):
    """poolsim.simulate of pgbouncer with the measured costs (a request's own: request_ms)."""
    request_ms = costs["request"] if request_ms is None else request_ms
    return poolsim.simulate(
        database_connect=f"const:{costs['connect']:.3f}ms",
        pgbouncer_connect=f"const:{costs['bouncer_connect']:.3f}ms",
        database_reset=f"const:{request_ms:.3f}ms",
        options={"pool.policy": "pgbouncer",
                 **{f"pgbouncer.{k}": v for k, v in bouncer_settings.items()}},
        **{k: v for k, v in options.items() if k != "pool_policy"})


def _at_every_phase(tmp_path, rows, duration, run):
    """run(options, shift) for the trace shifted by each of PHASES (the janitor's ticks fall at
    k/3 s of the model's clock, so a shift of d moves them by -d relative to the trace)."""
    results = []
    for i, shift in enumerate(PHASES):
        trace = _write_trace(tmp_path / f"phase{i}.csv", rows, shift)
        results.append(run(dict(workload_arrival="trace", workload_trace=trace,
                                duration=duration + shift), shift))
    return results


def _model_levels(costs, settings, options, tmp_path, rows, end_s, step_s=0.02):
    """(grid, curves): the model's count of pgbouncer's servers at each time of the grid (its
    peak_server over 1 ms after a warm-up of that length), one curve per janitor phase."""
    grid = np.arange(0.0, end_s, step_s)

    def run(o, shift):
        levels = []
        for t in grid:
            window = dict(options, **o)
            window.update(warmup=t + shift, duration=0.001)
            levels.append(int(_model(costs, settings, **window).connections.peak_server))
        return levels

    return grid, _at_every_phase(tmp_path, rows, end_s, run)


def _first(grid, levels, predicate, since):
    return next(t for t, n in zip(grid, levels) if t >= since and predicate(n))


# --- the class ----------------------------------------------------------------------------------

def test_pgbouncer_runs_privately_and_cleans_up(server):
    password = dict(item.split("=", 1) for item in server.dsn.split())["password"]
    with poolsim.Pgbouncer(server, default_pool_size=3, query_wait_timeout=2.5) as bouncer:
        directory = bouncer.directory
        ini = open(f"{directory}/pgbouncer.ini").read()
        assert "pool_mode = transaction" in ini and "listen_addr = 127.0.0.1" in ini
        assert "default_pool_size = 3" in ini and "query_wait_timeout = 2.5" in ini
        assert password not in repr(bouncer) and password not in ini
        with psycopg2.connect(bouncer.dsn) as conn, conn.cursor() as cursor:
            cursor.execute("SHOW port")  # answered by the server behind pgbouncer
            assert int(cursor.fetchone()[0]) == server.port
        engine = sqlalchemy.create_engine(bouncer.url, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
        engine.dispose()
        pools = [p for p in bouncer.show("POOLS") if p["database"] == "postgres"]
        assert pools and pools[0]["pool_mode"] == "transaction"
        assert [c for c in bouncer.show("CONFIG") if c["key"] == "default_pool_size"][0][
            "value"] == "3"
        port = bouncer.port
    assert not os.path.exists(directory)
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(f"host=127.0.0.1 port={port} dbname=postgres user=postgres "
                         f"password={password} connect_timeout=2")
    with pytest.raises(ValueError, match="listen_port"):
        poolsim.Pgbouncer(server, listen_port=6432)


# --- cross-checks against the model -------------------------------------------------------------

def test_processes_share_default_pool_size_servers(server, costs, tmp_path):
    """Four processes, QueuePool 5 + 10 each (60 app connections possible), behind
    default_pool_size 4 with a reserve of 1 after 5 s: 489 requests in 8 s, Poisson 60/s with
    exponential holds of 40 ms (about 2.5 erlangs on 4 servers, in bursts: queueing at
    pgbouncer, no overload). The server must never see more than 4 backends (the reserve needs
    a 5 s wait, which this load never comes near), the model's peak_server must be 4 too,
    everything completes, and the latencies agree. Without pgbouncer each process would open
    its own: the model of the same processes straight on the server sees more than 4."""
    settings = dict(default_pool_size=4, reserve_pool_size=1, reserve_pool_timeout=5)
    rows = _poisson(np.random.default_rng(60), 60, 0.040, 0.0, 8.0)
    options = dict(APP, app_processes=4, workload_arrival="trace", duration=9,
                   workload_trace=_write_trace(tmp_path / "trace.csv", rows))
    live, watch, _, _ = _live(server, settings, options)
    sim = _model(costs, settings, **options)
    free = _model(costs, settings, request_ms=0.0, **options)
    loaded = _model(costs, settings, request_ms=costs["request"] + 4.0, **options)
    direct = poolsim.simulate(database_connect=f"const:{costs['connect']:.3f}ms", **options)

    assert watch.peak(1) <= settings["default_pool_size"] + settings["reserve_pool_size"]
    assert watch.peak(1) == watch.peak(2) == 4  # the server and pgbouncer agree: 4, no reserve
    assert sim.connections.peak_server == 4 == loaded.connections.peak_server
    assert direct.connections.peak_server > 4
    assert watch.peak(3) >= 1 and sim.p_wait > 0.1  # transactions did queue at pgbouncer
    assert live.requests == sim.requests == len(rows)
    assert live.completed == sim.completed == len(rows)

    # Tolerance. The model is given the per-request cost measured one request at a time (the
    # median, 1.1-1.5 ms here). In a run a request may pay more: four processes' threads,
    # pgbouncer and PostgreSQL share two cores with whatever else the machine runs. Measured:
    # live means 62.0-66.1 ms against the model's 61.3-62.5 (6 runs, load averages 1.8-5, two
    # of them beside four busy loops), p95 165-173 against 164-167; once, beside a compiler and
    # another live test suite, 76.6 ms, as the model with 4 ms more per request. Allowed: from
    # the model with no per-request cost at all, less 2 ms (a request's thread may start a
    # little late or early), to the model with 4 ms more per request, plus 2 ms; p95 likewise
    # with 5 ms, as one request's jitter moves a quantile of 489 more than the mean. The model
    # of the same processes without pgbouncer (they never queue for a server) is about 20 ms
    # faster on the mean and 35 ms on p95: outside the band.
    print(f"costs {costs}; latency mean/p95 live {live.latency_ms.mean:.1f}/"
          f"{live.latency_ms.p95:.1f}, model {sim.latency_ms.mean:.1f}/{sim.latency_ms.p95:.1f} "
          f"(free {free.latency_ms.mean:.1f}/{free.latency_ms.p95:.1f}, loaded "
          f"{loaded.latency_ms.mean:.1f}/{loaded.latency_ms.p95:.1f}, no pgbouncer "
          f"{direct.latency_ms.mean:.1f}/{direct.latency_ms.p95:.1f}); server peak "
          f"{watch.peak(1)}, model {sim.connections.peak_server:g}")
    low, high = free.latency_ms.mean - 2.0, loaded.latency_ms.mean + 2.0
    assert low <= live.latency_ms.mean <= high, (live.latency_ms, sim.latency_ms, costs)
    assert not low <= direct.latency_ms.mean <= high
    low, high = free.latency_ms.p95 - 5.0, loaded.latency_ms.p95 + 5.0
    assert low <= live.latency_ms.p95 <= high, (live.latency_ms, sim.latency_ms, costs)
    assert not low <= direct.latency_ms.p95 <= high


def test_query_wait_timeout_refuses_transactions_at_janitor_ticks(server, costs, tmp_path):
    """default_pool_size 1 and query_wait_timeout 1 s under a 2x overload: two processes with
    QueuePool 5 + 10 (30 app connections, all waiting at pgbouncer), Poisson 40/s of
    exponential 50 ms holds for 4 s (139 requests) on one server that serves about 20/s.
    pgbouncer refuses each transaction that has waited more than 1 s at its next janitor tick
    and disconnects its client: its log says "closing because: query_wait_timeout", but the
    client sees only "server closed the connection unexpectedly" (the error message pgbouncer
    sends is lost with the connection), which SQLAlchemy takes as a disconnect (errors.
    disconnect); the model counts them as timeouts. The real counts must lie within those the
    model gives across the janitor's phases and the request costs, widened as said below."""
    settings = dict(default_pool_size=1, query_wait_timeout=1)
    rows = _poisson(np.random.default_rng(40), 40, 0.050, 0.0, 4.0)
    options = dict(APP, app_processes=2, workload_arrival="trace", duration=5,
                   workload_trace=_write_trace(tmp_path / "trace.csv", rows))
    live, watch, log, _ = _live(server, settings, options)
    refused = live.errors.disconnect + live.errors.connect_failed
    # Every refusal was pgbouncer's query_wait_timeout, once a client.
    assert log.count("closing because: query_wait_timeout") == refused > 0
    assert live.timeouts == 0  # none waited pool.timeout (30 s) for an app connection
    assert live.completed + refused == len(rows)
    assert watch.peak(1) == watch.peak(2) == 1

    def run(o, _shift):
        return [_model(costs, settings, request_ms=cost, **dict(options, **o))
                for cost in (0.0, costs["request"], costs["request"] + 4.0)]

    models = [m for ms in _at_every_phase(tmp_path, rows, 5, run) for m in ms]
    assert all(m.connections.peak_server == 1 for m in models)
    assert all(m.requests == len(rows) for m in models)
    timeouts = [m.timeouts for m in models]
    assert min(timeouts) > 0
    # Tolerance. Across the 12 phases and three request costs (none, as measured, and 4 ms
    # more for a loaded machine, as in the test above) the model's timeouts span about 19-36 of
    # 139, 22-30 at the measured cost: whether one more request is served before a tick is a
    # coin toss at every tick. The real run has its own phase and its own per-request jitter,
    # so 7 (5 % of the requests) more either way. Measured: 24-25 refused in 6 runs at load
    # averages 1.8-5.
    margin = 0.05 * len(rows)
    means = [m.latency_ms.mean for m in models]
    print(f"refused live {refused}, model {min(timeouts)}-{max(timeouts)} (at the measured cost "
          f"{sorted(timeouts[1::3])}); completed live {live.completed}, model "
          f"{min(m.completed for m in models)}-{max(m.completed for m in models)}; latency mean "
          f"live {live.latency_ms.mean:.0f}, model {min(means):.0f}-{max(means):.0f}")
    assert min(timeouts) - margin <= refused <= max(timeouts) + margin, (refused, timeouts)
    # The served ones waited up to 1 s plus up to one tick, so their mean latency (about 1 s:
    # 936-1130 ms across the models, 976-1033 ms measured) is set by when the timeout's rule
    # refuses the others. 10 % either way for the same jitter.
    assert 0.9 * min(means) <= live.latency_ms.mean <= 1.1 * max(means), \
        (live.latency_ms.mean, means)


def test_server_idle_timeout_closes_idle_servers(server, costs, tmp_path):
    """server_idle_timeout 1 s on default_pool_size 4: a burst (Poisson 100/s of 40 ms holds
    for 0.6 s: all 4 servers), then a trickle of one 10 ms request every 150 ms until 2.4 s,
    then nothing. pgbouncer reuses its idle servers last in, first out, so the trickle keeps
    only one of them busy and the other three are closed at the first tick more than 1 s after
    the burst; the last one at the first tick more than 1 s after the trickle. What the server
    sees is compared with the model's count of pgbouncer's servers at every 20 ms (peak_server
    over a 1 ms window after a warm-up of that length), across the janitor's phases."""
    settings = dict(default_pool_size=4, server_idle_timeout=1)
    rng = np.random.default_rng(100)
    rows = _poisson(rng, 100, 0.040, 0.0, 0.6) + [(0.75 + 0.15 * k, 0.010) for k in range(12)]
    end_s = 4.6
    options = dict(APP, app_processes=2, workload_arrival="trace", duration=end_s,
                   workload_trace=_write_trace(tmp_path / "trace.csv", rows))
    live, watch, _, start = _live(server, settings, options, watch_until_s=end_s)
    assert live.completed == len(rows)

    grid, curves = _model_levels(costs, settings, options, tmp_path, rows, end_s)

    # During the burst both see the 4 servers; late in the trickle (2.2-2.4 s: 0.2 s after
    # every phase's close of the three) both see exactly 1, the one LIFO reuse keeps
    # busy (with round-robin reuse all 4 would stay: each would be idle 0.6 s at most); at the
    # end 0.
    for levels in curves:
        assert max(levels[:int(0.6 / 0.02)]) == 4
        assert all(n == 1 for t, n in zip(grid, levels) if 2.2 <= t <= 2.4)
        assert levels[-1] == 0
    assert watch.peak(1) == 4
    trickle = [n for t, n, _, _ in watch.samples if start + 2.2 <= t <= start + 2.4]
    assert trickle and all(n == 1 for n in trickle)
    assert watch.level_at(start + end_s - 0.05) == 0

    # When the three and the last are closed. The model's times span one tick across the
    # phases; the real ones may be later by the run's start-up before its t = 0 (sqlalchemy_live
    # connects once to check the server: about 10-30 ms), by the 20 ms between samples and by a
    # backend's exit after pgbouncer's Terminate, and earlier by nothing but that start-up
    # estimate's error: 0.1 s either way.
    for since, below in ((0.6, 4), (0.6, 2), (2.4, 1)):
        model_times = [_first(grid, levels, lambda n: n < below, since) for levels in curves]
        real = watch.first_time(start + since, lambda n: n < below)
        assert real is not None, f"the server never went below {below} backends"
        real -= start
        print(f"below {below} servers after {since} s: live {real:.2f} s, model "
              f"{min(model_times):.2f}-{max(model_times):.2f} s")
        assert min(model_times) - 0.1 <= real <= max(model_times) + 0.1, (below, model_times)


def test_the_reserve_opens_after_reserve_pool_timeout(server, costs, tmp_path):
    """default_pool_size 1 with a reserve of 1 after 0.5 s, one process: A holds the server
    from 0 s for 2 s; B (at 0.1 s) and C (at 0.15 s) want one for 0.3 s each. B has waited
    0.5 s at 0.6 s, and at the first event or tick from then pgbouncer logs in the reserve
    server ("taking connection from reserve_pool"), which serves B and then C: the server sees
    2 backends from about 0.6-0.95 s on, never 3, and C waits for B, not for A."""
    settings = dict(default_pool_size=1, reserve_pool_size=1, reserve_pool_timeout=0.5)
    rows = [(0.0, 2.0), (0.1, 0.3), (0.15, 0.3)]
    end_s = 2.2
    options = dict(APP, app_processes=1, workload_arrival="trace", duration=end_s,
                   workload_trace=_write_trace(tmp_path / "trace.csv", rows))
    live, watch, log, start = _live(server, settings, options)
    assert live.completed == 3
    assert log.count("taking connection from reserve_pool") == 1
    assert watch.peak(1) == watch.peak(2) == 2

    grid, curves = _model_levels(costs, settings, options, tmp_path, rows, end_s)
    assert all(max(levels) == 2 for levels in curves)
    model_times = [_first(grid, levels, lambda n: n >= 2, 0.0) for levels in curves]
    real = watch.first_time(start, lambda n: n >= 2)
    assert real is not None
    real -= start
    print(f"reserve server from: live {real:.2f} s, model {min(model_times):.2f}-"
          f"{max(model_times):.2f} s; latency max live {live.latency_ms.max:.0f} ms")
    # The reserve's login starts at B's 0.5 s wait or the first tick after it (0.6-0.93 s),
    # and a login takes a connect (7-30 ms here); the real time may be later by the run's
    # start-up, the sampling and a loaded machine's delays: 0.1 s either way, as above.
    assert min(model_times) - 0.1 <= real <= max(model_times) + 0.1, (real, model_times)
    # A's latency, the largest, is its hold: the reserve is not for A, and no one waited for A.
    assert 2000 <= live.latency_ms.max <= 2100
