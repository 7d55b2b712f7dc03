"""Bad input: the exception type, and the message the command line gives for the same value."""

import math

import numpy as np
import pytest

import poolsim
from helpers import cli_error, markov

# --- values the C++ parser refuses: the same message as the command line ----------------------

SAME_MESSAGE = [
    # (keyword options, the command line's spelling of the same bad value)
    (dict(pool_timeout="3 parsecs"), ["--pool.timeout=3 parsecs"]),
    (dict(pool_timeout="30"), ["--pool.timeout=30"]),
    (dict(pool_timeout=-1), ["--pool.timeout=-1s"]),
    (dict(duration=0), ["--duration=0s"]),
    (dict(duration="5parsecs"), ["--duration=5parsecs"]),
    (dict(pool_size=-1), ["--pool.size=-1"]),
    (dict(pool_size=2.5), ["--pool.size=2.5"]),
    (dict(pool_size="1e12"), ["--pool.size=1e12"]),
    (dict(pool_size=True), ["--pool.size=true"]),
    (dict(max_overflow=-2), ["--pool.max_overflow=-2"]),
    (dict(workload_rate=0), ["--workload.rate=0"]),
    (dict(workload_rate="nan"), ["--workload.rate=nan"]),
    (dict(workload_rate="inf"), ["--workload.rate=inf"]),
    (dict(network_connect_fail=1.5), ["--network.connect_fail=1.5"]),
    (dict(pool_pre_ping="maybe"), ["--pool.pre_ping=maybe"]),
    (dict(pool_reset_on_return="discard"), ["--pool.reset_on_return=discard"]),
    (dict(workload_service="gamma:5ms"), ["--workload.service=gamma:5ms"]),
    (dict(database_connect="const:30"), ["--database.connect=const:30"]),
    (dict(database_outages="1s+5s,3s+1s"), ["--database.outages=1s+5s,3s+1s"]),
    (dict(workload_arrival="weibull"), ["--workload.arrival=weibull"]),
    (dict(workload_arrival="closed"), ["--workload.arrival=closed"]),
    (dict(workload_rate=1e9, duration="1h"), ["--workload.rate=1000000000.0", "--duration=1h"]),
]


@pytest.mark.parametrize("kwargs,args", SAME_MESSAGE,
                         ids=[",".join(a) for _, a in SAME_MESSAGE])
def test_value_error_with_the_command_line_message(kwargs, args, binary):
    with pytest.raises(ValueError) as info:
        poolsim.simulate(**kwargs)
    assert str(info.value) == cli_error("simulate", *args)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs,args", [
    (dict(workload_rate=float("nan")), ["--workload.rate=nan"]),
    (dict(workload_rate=math.inf), ["--workload.rate=inf"]),
], ids=["nan", "inf"])
def test_nan_and_inf_floats_get_the_command_line_message(kwargs, args, binary):
    """The package promises "ValueError with the command line's message"; a float NaN or inf
    is refused in Python with its own wording ("must be a finite number") instead."""
    with pytest.raises(ValueError) as info:
        poolsim.simulate(**kwargs)
    assert str(info.value) == cli_error("simulate", *args)


@pytest.mark.parametrize("key,value", [
    ("workload_rate", float("nan")), ("workload_rate", math.inf), ("workload_rate", -math.inf),
    ("pool_timeout", float("nan")), ("pool_timeout", math.inf), ("network_drop_rate", math.inf),
    ("pool_size", np.float64("nan")),
])
def test_nan_and_inf_are_value_errors_naming_the_key(key, value):
    with pytest.raises(ValueError) as info:
        poolsim.simulate(**{key: value})
    assert key.replace("_", ".", 1) in str(info.value)


def test_scenario_file_errors_equal_the_command_line(tmp_path, binary):
    cases = {
        "unknown.ini": "[pool]\nsizee = 17\n",
        "unit.ini": "[pool]\ntimeout = 30\n",
        "dup.ini": "[pool]\nsize = 5\nsize = 6\n",
        "bracket.ini": "[pool\nsize = 5\n",
        "noequals.ini": "[pool]\nsize 5 \x1b[2J\n",
        "empty.ini": "",
        "comments.ini": "# nothing set\n[pool]\n",
        "garbage.ini": b"\x7fELF\x02\x01\x01\x00\xff\xfe\r\n",
        "latin1.ini": b"# caf\xe9\n[pool]\nsize = 5\n",
    }
    for name, text in cases.items():
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        with pytest.raises(ValueError) as info:
            poolsim.simulate(str(path))
        assert str(info.value) == cli_error("simulate", str(path)), name
        assert str(info.value) and str(info.value).isprintable(), name
    missing = str(tmp_path / "no_such.ini")
    with pytest.raises(ValueError) as info:
        poolsim.simulate(missing)
    assert str(info.value) == cli_error("simulate", missing)


# --- unknown keys -------------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: poolsim.simulate(pool_sizee=3),
    lambda: poolsim.simulate(options={"pool.sizee": 3}),
    lambda: poolsim.simulate({"pool.sizee": 3}),
    lambda: poolsim.analytic(pool_sizee=3),
    lambda: poolsim.size("p_wait<=0.1", pool_sizee=3),
], ids=["keyword", "options", "scenario_dict", "analytic", "size"])
def test_unknown_key_is_a_value_error_naming_it(call):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "sizee" in message and "unknown option" in message
    assert "\n" not in message


# --- wrong types --------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [[1], None, {"a": 1}, {1, 2}, 1j, object()],
                         ids=["list", "None", "dict", "set", "complex", "object"])
def test_type_error_for_values_that_are_not_scalars(value):
    with pytest.raises(TypeError) as info:
        poolsim.simulate(pool_size=value)
    assert "pool.size" in str(info.value)
    with pytest.raises(TypeError):
        poolsim.simulate(options={"pool.timeout": value})


def test_type_errors_for_scenario_and_options():
    with pytest.raises(TypeError):
        poolsim.simulate(42)
    with pytest.raises(TypeError):
        poolsim.simulate(options=[("pool.size", 3)])
    with pytest.raises(TypeError):
        poolsim.simulate({1: 2})


# --- analytic ---------------------------------------------------------------------------------

MARKOV_ARGS = ["--database.reset=const:0s", "--database.connect=const:0s"]
NOT_EXACT = [
    # (keyword options, command line, the option the message must name, its value)
    (dict(workload_service="lognormal:mean=10ms,cv=2", database_reset="const:0s",
          database_connect="const:0s"),
     ["--workload.service=lognormal:mean=10ms,cv=2"] + MARKOV_ARGS, "workload.service",
     "lognormal:mean=10ms,cv=2"),
    ({}, [], "database.reset", "const:50us"),
    (dict(pool_pre_ping=True, database_reset="const:0s", database_connect="const:0s"),
     ["--pool.pre_ping=true"] + MARKOV_ARGS, "pool.pre_ping", "true"),
    (dict(network_idle_drop_after="10min", database_reset="const:0s",
          database_connect="const:0s"),
     ["--network.idle_drop_after=10min"] + MARKOV_ARGS, "network.idle_drop_after", "10min"),
    (dict(workload_arrival="closed", workload_clients=3, database_reset="const:0s",
          database_connect="const:0s"),
     ["--workload.arrival=closed", "--workload.clients=3"] + MARKOV_ARGS, "workload.arrival",
     "closed"),
    (dict(pool_timeout="none", max_overflow=0, workload_rate=1000, database_reset="const:0s",
          database_connect="const:0s"),
     ["--pool.timeout=none", "--pool.max_overflow=0", "--workload.rate=1000"] + MARKOV_ARGS,
     "workload.rate", "1000"),
]


@pytest.mark.parametrize("kwargs,args,key,value", NOT_EXACT,
                         ids=[c[2] for c in NOT_EXACT])
def test_analytic_names_the_option_that_prevents_an_exact_answer(kwargs, args, key, value,
                                                                  binary):
    with pytest.raises(ValueError) as info:
        poolsim.analytic(**kwargs)
    message = str(info.value)
    assert key in message and value in message
    assert message == cli_error("analytic", *args)


# --- size ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["p_wait=0.1", "speed<=3", "p_wait<=lots"])
def test_size_bad_target(target, binary):
    with pytest.raises(ValueError) as info:
        poolsim.size(target, **markov())
    assert str(info.value) == cli_error("size", "--target", target, *MARKOV_ARGS)


def test_size_without_targets():
    for targets in ([], {}):
        with pytest.raises(ValueError, match="target"):
            poolsim.size(targets, **markov())


@pytest.mark.parametrize("max_size", [0, -3, 100001])
def test_size_bad_max_size(max_size):
    with pytest.raises(ValueError) as info:
        poolsim.size("p_wait<=0.1", max_size=max_size, **markov())
    assert str(max_size) in str(info.value) and "max" in str(info.value)


@pytest.mark.parametrize("max_size", ["5", 5.0, True, None])
def test_size_max_size_of_the_wrong_type(max_size):
    with pytest.raises(TypeError):
        poolsim.size("p_wait<=0.1", max_size=max_size, **markov())


@pytest.mark.parametrize("overflow", [[-2], -2, [2.5], [1, "x"]],
                         ids=["list_-2", "-2", "fraction", "not_a_number"])
def test_size_bad_overflow(overflow):
    """Every bad max_overflow value is refused with a message naming "overflow" and the value,
    as pool.max_overflow=2.5 is refused by simulate()."""
    with pytest.raises(ValueError) as info:
        answer = poolsim.size("p_wait<=0.05", overflow=overflow, **markov())
        pytest.fail(f"overflow={overflow!r} was accepted: {answer.answers}")
    assert "overflow" in str(info.value)


# --- sweep: refused before anything runs ------------------------------------------------------

@pytest.fixture
def no_runs(monkeypatch):
    """Counts the simulations poolsim starts (the C++ entry point every sweep point goes to)."""
    calls = []
    real = poolsim._core.simulate

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(poolsim._core, "simulate", counting)
    yield calls
    assert calls == [], f"{len(calls)} simulations ran before the error"


def test_the_counter_sees_sweep_runs(monkeypatch):
    """The no_runs fixture would notice: a good sweep goes through the patched entry point."""
    calls = []
    real = poolsim._core.simulate
    monkeypatch.setattr(poolsim._core, "simulate",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    poolsim.sweep({"pool_size": [1, 2]}, duration="1s", jobs=1)
    assert len(calls) == 2


@pytest.mark.parametrize("grid", [{}, [], None, [("pool.size", [1, 2])]],
                         ids=["empty_dict", "empty_list", "None", "list_of_pairs"])
def test_sweep_needs_a_non_empty_dict(grid, no_runs):
    with pytest.raises(ValueError, match="grid"):
        poolsim.sweep(grid, duration="1s")


def test_sweep_unknown_key(no_runs):
    with pytest.raises(ValueError) as info:
        poolsim.sweep({"pool_size": [1, 2], "pool.sizee": [1, 2]}, duration="1s")
    assert "pool.sizee" in str(info.value) and "unknown option" in str(info.value)


def test_sweep_key_without_values(no_runs):
    with pytest.raises(ValueError) as info:
        poolsim.sweep({"pool_size": [1, 2], "workload_rate": []}, duration="1s")
    assert "workload.rate" in str(info.value)


def test_sweep_bad_value_in_a_later_point(no_runs, binary):
    """Every point is checked before any runs, as the command line does."""
    with pytest.raises(ValueError) as info:
        poolsim.sweep({"workload_rate": [100, 200], "pool_size": [2, -4]}, duration="1s")
    assert str(info.value) == cli_error("sweep", "--grid", "pool.size=2,-4")


def test_sweep_bad_base_option(no_runs):
    with pytest.raises(ValueError, match="pool.timeout"):
        poolsim.sweep({"pool_size": [1, 2]}, duration="1s", pool_timeout="3 parsecs")


def test_sweep_key_given_twice(no_runs):
    with pytest.raises(ValueError, match="twice"):
        poolsim.sweep({"pool_size": [1], "pool.size": [2]}, duration="1s")


@pytest.mark.parametrize("jobs", [0, -1, 1025, True, 1.5, "2"])
def test_sweep_bad_jobs(jobs, no_runs):
    with pytest.raises(ValueError, match="jobs"):
        poolsim.sweep({"pool_size": [1, 2]}, duration="1s", jobs=jobs)


def test_sweep_value_of_the_wrong_type(no_runs):
    with pytest.raises(TypeError, match="pool.size"):
        poolsim.sweep({"pool_size": [1, None]}, duration="1s")


# --- live runs: an empty DSN is refused before libpq falls back to its defaults ------------------

@pytest.mark.parametrize("call", [
    lambda: poolsim.live(duration="1s", dsn=""),
    lambda: poolsim.validate(duration="1s", dsn=" "),
    lambda: poolsim.validate(duration="1s", dsn="", against="sqlalchemy"),
    lambda: poolsim.sqlalchemy_live(duration="1s", dsn=""),
    lambda: poolsim.calibrate(dsn=""),
], ids=["live", "validate", "validate_sqlalchemy", "sqlalchemy_live", "calibrate"])
def test_empty_dsn_is_the_command_lines_error(call, binary):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == cli_error("live", "--dsn", "")


# --- pool.policy = pgbouncer runs in the simulator only: live runs refuse it before connecting -

@pytest.mark.parametrize("call", [
    lambda: poolsim.live(pool_policy="pgbouncer", dsn="postgresql://u:pw@127.0.0.1:1/x"),
    lambda: poolsim.validate(pool_policy="pgbouncer", dsn="postgresql://u:pw@127.0.0.1:1/x"),
], ids=["live", "validate"])
def test_live_runs_refuse_the_pgbouncer_policy_as_the_command_line_does(call, binary):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == cli_error("live", "--pool.policy=pgbouncer",
                                        "--dsn=postgresql://u:pw@127.0.0.1:1/x")
    assert "simulator only" in str(info.value)


def test_sqlalchemy_live_refuses_the_pgbouncer_policy_and_says_how_to_use_one():
    with pytest.raises(ValueError, match="pool.policy = pgbouncer: .*poolsim.Pgbouncer"):
        poolsim.sqlalchemy_live({"pool.policy": "pgbouncer"},
                                dsn="postgresql://u:pw@127.0.0.1:1/x")


def test_sqlalchemy_live_refuses_the_hikari_policy():
    with pytest.raises(ValueError, match="SQLAlchemy has no HikariCP pool"):
        poolsim.sqlalchemy_live({"pool.policy": "hikari"}, dsn="postgresql://u:pw@127.0.0.1:1/x")
