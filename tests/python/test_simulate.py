"""poolsim.simulate, Result, samples, options() and the ways of spelling a scenario."""

import gc
import json
import re

import numpy as np
import pandas as pd
import pytest

import poolsim
from helpers import cli, cli_json, flatten, without

SHORT = {"duration": "5s"}

# The fields of DESIGN.md's result schema (the same list as tests/sim/cli_test.py).
SCHEMA = {
    "": ["poolsim", "mode", "config", "replications", "requests", "completed", "timeouts",
         "errors", "p_wait", "wait_ms", "latency_ms", "connections", "events", "sim_time_s",
         "wall_s"],
    "errors": ["connect_failed", "too_many_connections", "disconnect"],
    "wait_ms": ["mean", "p50", "p95", "p99", "max"],
    "latency_ms": ["mean", "p50", "p95", "p99", "max"],
    "connections": ["opened", "closed", "opened_per_s", "peak", "mean_open", "mean_in_use",
                    "peak_server"],
}

# A pool that times out often: 1 connection, no overflow, 20 ms patience, load 0.8.
TIMEOUTS = dict(duration="5s", pool_size=1, max_overflow=0, pool_timeout="20ms",
                workload_rate=80, seed=7)


# --- Result ------------------------------------------------------------------------------------

def test_result_has_every_field_of_the_schema():
    r = poolsim.simulate(**SHORT)
    assert isinstance(r, poolsim.Result)
    d = r.to_dict()
    for section, keys in SCHEMA.items():
        where = d if not section else d[section]
        assert [k for k in keys if k not in where] == [], section
    assert r.mode == "sim"
    assert r.poolsim == poolsim.__version__
    assert r.replications == 1
    assert "ci95" not in d  # one replication: no interval


def test_result_attributes_items_and_sections():
    r = poolsim.simulate(**TIMEOUTS)
    assert r.requests == r["requests"] == r.to_dict()["requests"]
    assert r.wait_ms.p99 == r["wait_ms"]["p99"] == r.to_dict()["wait_ms"]["p99"]
    assert r.connections.peak_server == r.to_dict()["connections"]["peak_server"]
    assert r.config["pool.size"] == 1
    assert set(r.wait_ms) == {"mean", "p50", "p95", "p99", "max"}
    assert len(r.errors) == 3
    assert r.completed + r.timeouts + sum(r.errors.values()) == r.requests
    assert r.timeouts > 0  # the scenario is meant to time out
    with pytest.raises(AttributeError):
        r.no_such_field
    with pytest.raises(KeyError):
        r["no_such_field"]


def test_result_to_dict_is_a_copy():
    r = poolsim.simulate(**SHORT)
    d = r.to_dict()
    d["requests"] = -1
    d["wait_ms"]["p99"] = -1
    assert r.requests != -1 and r.wait_ms.p99 != -1
    json.dumps(d)  # plain dicts, lists, numbers and strings


def test_result_table_and_repr():
    r = poolsim.simulate(**SHORT)
    assert "completed" in r.table()
    assert f"requests={r.requests}" in repr(r)
    assert "<table>" in r._repr_html_()


# --- the command line gives the same result ------------------------------------------------------

CLI_CASES = [
    # (keyword options, the same options as the command line spells them)
    ({"duration": "5s"}, ["--duration=5s"]),
    (dict(pool_size=3, max_overflow=2, pool_timeout=0.05, workload_rate=300, seed=11,
          duration=4, warmup="500ms", replications=3),
     ["--pool.size=3", "--pool.max_overflow=2", "--pool.timeout=0.05s", "--workload.rate=300",
      "--seed=11", "--duration=4s", "--warmup=500ms", "--replications=3"]),
    (dict(duration="6s", app_processes=2, app_threads=4, app_routing="random", pool_pre_ping=True,
          pool_use_lifo=True, pool_recycle=2, network_idle_drop_after="1s",
          workload_arrival="onoff", workload_burst_rate=800, workload_burst_on="500ms",
          workload_burst_off=2, workload_service="lognormal:mean=10ms,cv=1.5",
          database_outages="3s+500ms", database_connect="exp:20ms", seed=3),
     ["--duration=6s", "--app.processes=2", "--app.threads=4", "--app.routing=random",
      "--pool.pre_ping=true", "--pool.use_lifo=true", "--pool.recycle=2s",
      "--network.idle_drop_after=1s", "--workload.arrival=onoff", "--workload.burst_rate=800",
      "--workload.burst_on=500ms", "--workload.burst_off=2s",
      "--workload.service=lognormal:mean=10ms,cv=1.5", "--database.outages=3s+500ms",
      "--database.connect=exp:20ms", "--seed=3"]),
    (dict(TIMEOUTS), ["--duration=5s", "--pool.size=1", "--pool.max_overflow=0",
                      "--pool.timeout=20ms", "--workload.rate=80", "--seed=7"]),
]


@pytest.mark.parametrize("kwargs,args", CLI_CASES, ids=["defaults", "replications", "faults",
                                                        "timeouts"])
def test_to_dict_equals_the_command_line_json(kwargs, args, binary):
    r = poolsim.simulate(**kwargs)
    expected = cli_json("simulate", *args)
    assert without(r.to_dict(), "wall_s") == without(expected, "wall_s")
    assert r.wall_s >= 0


def test_scenario_file_equals_the_command_line(tmp_path, binary):
    ini = tmp_path / "pool.ini"
    ini.write_text("# a scenario\nduration = 4s\nseed = 9\n[pool]\nsize = 3\nmax_overflow = 1\n"
                   "timeout = 50ms\n[workload]\nrate = 250\nservice = exp:12ms\n")
    expected = cli_json("simulate", str(ini))
    assert without(poolsim.simulate(str(ini)).to_dict(), "wall_s") == without(expected, "wall_s")
    # keyword options override the file, as --key=value does
    expected = cli_json("simulate", str(ini), "--pool.size=4")
    r = poolsim.simulate(ini, pool_size=4)  # a pathlib.Path works too
    assert r.config["pool.size"] == 4
    assert without(r.to_dict(), "wall_s") == without(expected, "wall_s")


def test_scenario_file_dict_and_keywords_agree(tmp_path):
    ini = tmp_path / "pool.ini"
    ini.write_text("duration = 4s\nseed = 9\n[pool]\nsize = 3\nmax_overflow = 1\n"
                   "timeout = 50ms\n[workload]\nrate = 250\n")
    as_dict = {"duration": "4s", "seed": 9, "pool.size": 3, "pool.max_overflow": 1,
               "pool.timeout": "50ms", "workload.rate": 250}
    from_file = without(poolsim.simulate(str(ini)).to_dict(), "wall_s")
    assert without(poolsim.simulate(as_dict).to_dict(), "wall_s") == from_file
    assert without(poolsim.simulate(options=as_dict).to_dict(), "wall_s") == from_file
    assert without(poolsim.simulate(duration="4s", seed=9, pool_size=3, max_overflow=1,
                                    pool_timeout="50ms", workload_rate=250).to_dict(),
                   "wall_s") == from_file


def test_trace_is_relative_to_the_scenario_file(tmp_path, monkeypatch):
    (tmp_path / "arrivals.csv").write_text("arrival,hold\n0.1,0.02\n0.2,0.02\n0.3,0.02\n")
    ini = tmp_path / "trace.ini"
    ini.write_text("duration = 1s\n[workload]\narrival = trace\ntrace = arrivals.csv\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert poolsim.simulate(str(ini)).requests == 3
    # a dict has no file: a relative trace is relative to the working directory
    monkeypatch.chdir(tmp_path)
    assert poolsim.simulate({"duration": "1s", "workload.arrival": "trace",
                             "workload.trace": "arrivals.csv"}).requests == 3


def test_precedence_scenario_then_options_then_keywords(tmp_path):
    ini = tmp_path / "p.ini"
    ini.write_text("duration = 1s\n[pool]\nsize = 2\nmax_overflow = 3\n")
    r = poolsim.simulate(str(ini), options={"pool.size": 4, "workload.rate": 50}, pool_size=6)
    assert r.config["pool.size"] == 6
    assert r.config["pool.max_overflow"] == 3
    assert r.config["workload.rate"] == 50
    r = poolsim.simulate({"pool.size": 2, "duration": "1s"}, options={"pool.size": 4})
    assert r.config["pool.size"] == 4


# --- spellings --------------------------------------------------------------------------------

def _same(a, b):
    return without(a.to_dict(), "wall_s") == without(b.to_dict(), "wall_s")


def test_keyword_dotted_and_alias_spellings_are_the_same_option():
    base = dict(duration="3s", workload_rate=400, seed=4)
    a = poolsim.simulate(pool_size=3, max_overflow=2, **base)
    b = poolsim.simulate(pool_size=3, pool_max_overflow=2, **base)
    c = poolsim.simulate(options={"pool.size": 3, "pool.max_overflow": 2}, **base)
    d = poolsim.simulate({"pool_size": 3, "max_overflow": 2}, **base)
    assert a.config["pool.size"] == 3 and a.config["pool.max_overflow"] == 2
    assert _same(a, b) and _same(a, c) and _same(a, d)


def test_numbers_for_durations_are_seconds():
    base = dict(duration="3s", pool_size=1, max_overflow=0, workload_rate=90, seed=2)
    a = poolsim.simulate(pool_timeout=2, **base)
    b = poolsim.simulate(pool_timeout="2s", **base)
    assert a.config["pool.timeout"] == "2s"
    assert _same(a, b)
    # a fraction of a second: the same run as the millisecond spelling (the echo keeps the text)
    c = poolsim.simulate(pool_timeout=0.02, **base)
    d = poolsim.simulate(pool_timeout="20ms", **base)
    assert c.timeouts == d.timeouts > 0
    assert without(c.to_dict(), "wall_s", "config") == without(d.to_dict(), "wall_s", "config")
    # duration itself and warmup
    e = poolsim.simulate(duration=3, warmup=0.5, pool_size=2)
    f = poolsim.simulate(duration="3s", warmup="500ms", pool_size=2)
    assert e.sim_time_s == 3.0
    assert without(e.to_dict(), "wall_s", "config") == without(f.to_dict(), "wall_s", "config")


def test_recycle_minus_one_means_never():
    r = poolsim.simulate(duration=1, pool_recycle=-1)
    assert r.config["pool.recycle"] == -1
    r = poolsim.simulate(duration=1, pool_recycle=5)
    assert r.config["pool.recycle"] == "5s"


def test_bools_and_numpy_scalars():
    a = poolsim.simulate(duration="2s", pool_pre_ping=True, pool_size=np.int64(3),
                         workload_rate=np.float64(150.0))
    b = poolsim.simulate(duration="2s", pool_pre_ping="true", pool_size=3, workload_rate=150.0)
    assert a.config["pool.pre_ping"] is True
    assert _same(a, b)


# --- determinism ------------------------------------------------------------------------------

def test_same_seed_gives_the_same_result():
    kw = dict(duration="5s", seed=42, pool_size=2, workload_rate=300, replications=2)
    a, b = poolsim.simulate(**kw), poolsim.simulate(**kw)
    assert without(a.to_dict(), "wall_s") == without(b.to_dict(), "wall_s")


def test_other_seed_gives_another_result():
    a = poolsim.simulate(duration="5s", seed=1, pool_size=2, workload_rate=300)
    b = poolsim.simulate(duration="5s", seed=2, pool_size=2, workload_rate=300)
    assert (a.requests, a.p_wait, a.latency_ms.mean) != (b.requests, b.p_wait, b.latency_ms.mean)


def test_same_seed_gives_the_same_samples():
    a = poolsim.simulate(samples=True, **TIMEOUTS).samples
    b = poolsim.simulate(samples=True, **TIMEOUTS).samples
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


# --- samples ----------------------------------------------------------------------------------

SAMPLE_DTYPES = {"arrival_s": np.float64, "wait_ms": np.float64, "latency_ms": np.float64,
                 "outcome": np.int8, "replication": np.int32, "process": np.int32}

SAMPLE_CASES = [
    dict(TIMEOUTS),
    dict(duration="5s", warmup="1s", replications=3, pool_size=2, max_overflow=1,
         pool_timeout=0.01, workload_rate=200, seed=3, app_processes=2),
]


@pytest.mark.parametrize("kwargs", SAMPLE_CASES, ids=["one_replication", "three_replications"])
def test_samples_are_numpy_views(kwargs):
    r = poolsim.simulate(samples=True, **kwargs)
    s = r.samples
    assert set(s) == set(SAMPLE_DTYPES)
    for key, dtype in SAMPLE_DTYPES.items():
        arr = s[key]
        assert isinstance(arr, np.ndarray), key
        assert arr.dtype == dtype, key
        assert arr.ndim == 1 and arr.shape == (r.requests,), key
        # no copy: the array views memory owned by the C++ samples
        assert arr.base is not None, key
        assert not arr.flags.owndata, key
    # one owner for all of them
    assert len({id(s[key].base) for key in s}) == 1


@pytest.mark.parametrize("kwargs", SAMPLE_CASES, ids=["one_replication", "three_replications"])
def test_samples_agree_with_the_result(kwargs):
    r = poolsim.simulate(samples=True, **kwargs)
    s = r.samples
    n = r.requests
    outcome = s["outcome"]
    assert np.count_nonzero(outcome == 0) == r.completed
    assert np.count_nonzero(outcome == 1) == r.timeouts
    assert np.count_nonzero(outcome == 2) == r.errors.connect_failed
    assert np.count_nonzero(outcome == 3) == r.errors.too_many_connections
    assert np.count_nonzero(outcome == 4) == r.errors.disconnect
    assert r.timeouts > 0
    wait = s["wait_ms"]
    assert wait.mean() == pytest.approx(r.wait_ms.mean, rel=1e-6)
    assert wait.max() == pytest.approx(r.wait_ms.max, rel=1e-9)
    assert np.count_nonzero(wait > 0) / n == pytest.approx(r.p_wait, rel=1e-12)
    latency = s["latency_ms"]
    assert np.all(np.isnan(latency[outcome != 0]))
    assert not np.any(np.isnan(latency[outcome == 0]))
    assert np.nanmean(latency) == pytest.approx(r.latency_ms.mean, rel=1e-6)
    # percentiles: within the histogram's stated relative error (1/256) of the sample quantile,
    # whatever rank convention it uses
    rel = 1.0 / 256
    for key, values in (("wait_ms", wait), ("latency_ms", latency[outcome == 0])):
        for name, p in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
            lo = np.quantile(values, max(0.0, p - 1.0 / len(values)), method="lower")
            hi = np.quantile(values, min(1.0, p + 1.0 / len(values)), method="higher")
            reported = r[key][name]
            assert lo * (1 - rel) - 1e-9 <= reported <= hi * (1 + rel) + 1e-9, (key, name)
    # arrivals lie in the counted window, after the warm-up
    warmup = {"1s": 1.0}.get(kwargs.get("warmup"), 0.0)
    assert s["arrival_s"].min() >= warmup
    assert s["arrival_s"].max() <= warmup + r.sim_time_s
    assert set(np.unique(s["replication"])) == set(range(r.replications))
    assert set(np.unique(s["process"])) <= set(range(r.config["app.processes"]))


def test_samples_outlive_the_result():
    r = poolsim.simulate(samples=True, **TIMEOUTS)
    wait = r.samples["wait_ms"]
    expected = wait.copy()
    del r
    gc.collect()
    # the arrays keep the C++ memory alive: still the same values after the result is gone
    poolsim.simulate(samples=True, duration="5s", workload_rate=500)  # reuse freed memory
    np.testing.assert_array_equal(wait, expected)


def test_samples_frame():
    r = poolsim.simulate(samples=True, **TIMEOUTS)
    frame = r.samples_frame()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["arrival_s", "wait_ms", "latency_ms", "outcome",
                                   "replication", "process"]
    assert len(frame) == r.requests
    assert isinstance(frame["outcome"].dtype, pd.CategoricalDtype)
    assert list(frame["outcome"].cat.categories) == list(poolsim.OUTCOMES)
    assert (frame["outcome"] == "timeout").sum() == r.timeouts
    assert (frame["outcome"] == "completed").sum() == r.completed
    np.testing.assert_array_equal(frame["wait_ms"].to_numpy(), r.samples["wait_ms"])


def test_no_samples_unless_asked():
    r = poolsim.simulate(**SHORT)
    with pytest.raises(ValueError, match="samples=True"):
        r.samples
    with pytest.raises(ValueError):
        r.samples_frame()


# --- to_series ----------------------------------------------------------------------------------

def test_to_series_is_the_flattened_result():
    r = poolsim.simulate(replications=2, **SHORT)
    series = r.to_series()
    assert isinstance(series, pd.Series)
    expected = flatten(r.to_dict())
    assert list(series.index) == list(expected)
    for key in ("wait_ms.p99", "errors.disconnect", "connections.peak_server",
                "config.pool.size", "ci95.p_wait", "requests"):
        assert key in series.index, key
    for key, value in expected.items():
        assert series[key] == value, key
    assert not any(isinstance(v, dict) for v in series.values)


# --- options() ----------------------------------------------------------------------------------

def _help_defaults(binary):
    text = " ".join(cli("--help").stdout.split())  # undo the line wrapping
    defaults = {}
    for match in re.finditer(r"--([a-z_.]+) V .*?\[default: ([^\]]*)\]", text):
        defaults[match.group(1)] = match.group(2)
    return defaults


def test_options_frame_matches_the_command_line_help(binary):
    frame = poolsim.options()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["key", "keyword", "default", "meaning"]
    assert frame["key"].is_unique
    assert (frame["keyword"] == frame["key"].str.replace(".", "_", regex=False)).all()
    assert frame["meaning"].str.len().min() > 0
    help_defaults = _help_defaults(binary)
    assert len(frame) == len(help_defaults) > 30
    # options without a default are "" here and "none" in --help; both mean unset
    defaults = {key: default or "none" for key, default in zip(frame["key"], frame["default"])}
    assert defaults == help_defaults


ARRIVAL_ONLY = {"workload.burst_rate": "onoff", "workload.burst_on": "onoff",
                "workload.burst_off": "onoff", "workload.period": "diurnal",
                "workload.amplitude": "diurnal", "workload.clients": "closed",
                "workload.think": "closed", "workload.trace": "trace"}


def test_every_option_keyword_is_accepted_with_its_default():
    """Each keyword spelling from options() runs, and its default changes nothing.

    hikari.* keys apply to pool.policy = hikari only, so they are tried on a HikariCP pool,
    psycopg.* on a psycopg_pool and pgbouncer.* behind pgbouncer. The keys one other arrival
    kind alone reads are refused with the default poisson arrival, naming that kind."""
    frame = poolsim.options()
    policies = ("queuepool", "hikari", "psycopg", "pgbouncer")
    reference = {policy: without(poolsim.simulate(duration="1s", pool_policy=policy).to_dict(),
                                 "wall_s")
                 for policy in policies}
    for keyword, key, default in zip(frame["keyword"], frame["key"], frame["default"]):
        if key in ("duration", "pool.policy"):
            continue
        if key in ARRIVAL_ONLY:
            with pytest.raises(ValueError, match=f"^{key} = .*: applies to workload.arrival = "
                                                 f"{ARRIVAL_ONLY[key]} only"):
                poolsim.simulate(duration="1s", **{keyword: default})
            continue
        prefix = key.split(".")[0]
        policy = prefix if prefix in policies else "queuepool"
        r = poolsim.simulate(duration="1s", pool_policy=policy, **{keyword: default})
        assert without(r.to_dict(), "wall_s") == reference[policy], keyword
    assert len({str(reference[p]) for p in policies}) == len(policies)


def test_hikari_policy_reproduces_hikaricps_spike(tmp_path):
    """HikariCP's published case through the Python API: 5 idle connections, 50 threads at
    once holding 2 ms, 150 ms connects. HikariCP serves them all with the 5 (and at most one
    more); SQLAlchemy's QueuePool(5, 45) opens an overflow connection for 45 of them."""
    trace = tmp_path / "spike.csv"
    trace.write_text("0.0,0.2\n" * 5 + "1.0,0.002\n" * 50)
    common = dict(duration="1.5s", warmup="0.9s", workload_arrival="trace",
                  workload_trace=str(trace), database_connect="const:150ms",
                  database_reset="const:0s")
    hikari = poolsim.simulate(pool_policy="hikari", hikari_maximum_pool_size=50,
                              hikari_minimum_idle=5, **common)
    queuepool = poolsim.simulate(pool_size=5, max_overflow=45, **common)
    assert hikari.config["pool.policy"] == "hikari"
    assert hikari.config["hikari.maximum_pool_size"] == 50
    assert hikari.completed == queuepool.completed == 50
    assert hikari.connections.opened <= 1 and hikari.connections.peak <= 6
    assert hikari.wait_ms.max < 30
    assert queuepool.connections.opened == 45
    assert queuepool.wait_ms.max >= 150
    assert "HikariCP maximumPoolSize 50, minimumIdle 5" in hikari.table()


def test_hikari_refuses_sqlalchemys_pool_options():
    with pytest.raises(ValueError, match=r"pool\.size = 5: does not apply to pool\.policy = hikari"):
        poolsim.simulate(pool_policy="hikari", pool_size=5)
    with pytest.raises(ValueError, match=r"hikari\.minimum_idle = 20"):
        poolsim.simulate(pool_policy="hikari", hikari_minimum_idle=20)
    with pytest.raises(ValueError, match=r"hikari\.idle_timeout = 60s: applies to pool\.policy"):
        poolsim.simulate(hikari_idle_timeout=60)


def test_public_names():
    for name in poolsim.__all__:
        assert hasattr(poolsim, name), name
    assert poolsim.OUTCOMES == ("completed", "timeout", "connect_failed", "too_many_connections",
                                "disconnect")
