#!/usr/bin/python3
"""Table-driven test of the `poolsim` command line (sim/cli.cpp).

    /usr/bin/python3 tests/sim/cli_test.py build/bin/poolsim

Bad input: every case must exit with status 2, print nothing on stdout, print exactly one line
on stderr (no control characters in it) that names the key and the value (the strings listed
with the case), and leave no --output file behind.

Good input: `simulate --format json|csv`, `sweep` with two grids in grid order and the same
rows whatever --jobs, `--output FILE`, `--help` listing every option with its default, and
every scenario in examples/ running.

Prints one line per failure and ends with "N passed, M failed"; exit status 1 on any failure.
"""

import csv
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unicodedata

# kOptions of sim/scenario.cpp: every key and its default as `--help` must show it.
OPTIONS = [
    ("duration", "60s"),
    ("warmup", "0s"),
    ("seed", "1"),
    ("replications", "1"),
    ("pool.policy", "queuepool"),
    ("pool.size", "5"),
    ("pool.max_overflow", "10"),
    ("pool.timeout", "30s"),
    ("pool.recycle", "-1"),
    ("pool.pre_ping", "false"),
    ("pool.use_lifo", "false"),
    ("pool.reset_on_return", "rollback"),
    ("pool.compat", "2.0"),
    ("workload.arrival", "poisson"),
    ("workload.rate", "100"),
    ("workload.burst_rate", "none"),
    ("workload.burst_on", "1s"),
    ("workload.burst_off", "9s"),
    ("workload.period", "1h"),
    ("workload.amplitude", "0.5"),
    ("workload.service", "exp:10ms"),
    ("workload.clients", "none"),
    ("workload.think", "exp:100ms"),
    ("workload.trace", "none"),
    ("app.processes", "1"),
    ("app.threads", "0"),
    ("app.routing", "round_robin"),
    ("database.max_connections", "100"),
    ("database.connect", "const:30ms"),
    ("database.ping", "const:200us"),
    ("database.reset", "const:50us"),
    ("database.idle_session_timeout", "0"),
    ("database.connect_capacity", "0"),
    ("database.connect_sharing", "queue"),
    ("database.outages", "none"),
    ("network.idle_drop_after", "0"),
    ("network.drop_rate", "0"),
    ("network.connect_fail", "0"),
]

# The fields of DESIGN.md's result schema.
SCHEMA = {
    "": ["poolsim", "mode", "config", "replications", "requests", "completed", "timeouts", "errors",
         "p_wait", "wait_ms", "latency_ms", "connections", "events", "sim_time_s", "wall_s"],
    "errors": ["connect_failed", "too_many_connections", "disconnect"],
    "wait_ms": ["mean", "p50", "p95", "p99", "max"],
    "latency_ms": ["mean", "p50", "p95", "p99", "max"],
    "connections": ["opened", "closed", "opened_per_s", "peak", "mean_open", "mean_in_use", "peak_server"],
}

SHORT = ["--duration=2s"]  # keeps the good runs fast


class Checker:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL {name}: {detail}")
        return ok


def run(binary, args, cwd, timeout=120):
    try:
        return subprocess.run([binary] + args, cwd=cwd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:  # the child is killed; report it as a failed run
        return subprocess.CompletedProcess([binary] + args, None, e.stdout or b"",
                                           f"(still running after {timeout} s)".encode())


def control_characters(text):
    return [c for c in text if unicodedata.category(c).startswith("C")]


def write(path, content, mode="w"):
    with open(path, mode) as f:
        f.write(content)
    return path


def make_files(tmp):
    """The scenario and trace files the bad cases refer to."""
    f = {}
    f["unknown_ini"] = write(os.path.join(tmp, "unknown.ini"), "[pool]\nsizee = 17\n")
    f["unit_ini"] = write(os.path.join(tmp, "unit.ini"), "[pool]\ntimeout = 30\n")
    f["dup_ini"] = write(os.path.join(tmp, "dup.ini"), "[pool]\nsize = 5\nsize = 6\n")
    f["dup_section_ini"] = write(os.path.join(tmp, "dup_section.ini"),
                                 "[pool]\nsize = 5\n[workload]\nrate = 50\n[pool]\nsize = 6\n")
    f["bracket_ini"] = write(os.path.join(tmp, "bracket.ini"), "[pool\nsize = 5\n")
    f["noequals_ini"] = write(os.path.join(tmp, "noequals.ini"), "[pool]\nsize 5\n")
    # An executable's header, random bytes, a carriage return and a terminal escape sequence.
    garbage = (b"\x7fELF\x02\x01\x01\x00" + random.Random(1234).randbytes(200) + b"\r\x1b[2J\n")
    f["garbage_ini"] = write(os.path.join(tmp, "garbage.ini"), garbage, "wb")
    f["garbage_text_ini"] = write(os.path.join(tmp, "garbage_text.ini"),
                                  b"\x1b[2J\x07junk\r\n[pool]\nsize = 3\n", "wb")
    f["empty_ini"] = write(os.path.join(tmp, "empty.ini"), "")
    f["comments_ini"] = write(os.path.join(tmp, "comments.ini"), "# pool settings\n[pool]\n\n[workload]\n")
    f["unsorted_csv"] = write(os.path.join(tmp, "unsorted.csv"), "0.1\n0.3\n0.2\n")
    f["malformed_csv"] = write(os.path.join(tmp, "malformed.csv"), "0.1,0.01\n0.2,abc\n")
    f["empty_csv"] = write(os.path.join(tmp, "empty.csv"), "")
    f["header_only_csv"] = write(os.path.join(tmp, "header_only.csv"), "arrival,hold\n")
    if os.geteuid() != 0:
        f["unreadable_csv"] = write(os.path.join(tmp, "unreadable.csv"), "0.1\n")
        os.chmod(f["unreadable_csv"], 0)
    else:  # root reads any file: a directory cannot be read as a trace either
        f["unreadable_csv"] = os.path.join(tmp, "a_directory.csv")
        os.mkdir(f["unreadable_csv"])
    f["trace_ini"] = write(os.path.join(tmp, "unsorted_trace.ini"),
                           "[workload]\narrival = trace\ntrace = unsorted.csv\n")
    f["scenario_dir"] = os.path.join(tmp, "scenarios.d")
    os.mkdir(f["scenario_dir"])
    f["missing_ini"] = os.path.join(tmp, "no_such_scenario.ini")
    f["missing_csv"] = os.path.join(tmp, "no_such_trace.csv")
    return f


def bad_cases(f, tmp):
    """(name, args, strings the error line must contain); --output is added to each."""
    trace = ["--workload.arrival=trace"]
    markov = ["--database.reset=const:0s", "--database.connect=const:0s"]
    return [
        # analytic and size: a scenario with no exact model names the option that prevents it
        ("analytic of lognormal holds", ["analytic", "--workload.service=lognormal:mean=10ms,cv=2"] + markov,
         ["workload.service", "lognormal"]),
        ("analytic with a reset cost", ["analytic"], ["database.reset", "const:50us"]),
        ("analytic with pre_ping", ["analytic", "--pool.pre_ping=true"] + markov, ["pool.pre_ping", "true"]),
        ("analytic with idle drops", ["analytic", "--network.idle_drop_after=10min"] + markov,
         ["network.idle_drop_after", "10min"]),
        ("analytic of a trace", ["analytic", "--workload.arrival=closed", "--workload.clients=3"] + markov,
         ["workload.arrival", "closed"]),
        ("analytic of an unstable pool", ["analytic", "--pool.timeout=none", "--pool.max_overflow=0",
                                          "--workload.rate=1000"] + markov, ["workload.rate", "1000"]),
        ("size without a target", ["size"] + markov, ["--target"]),
        ("size with a bad target", ["size", "--target", "p_wait=0.1"] + markov, ["--target", "p_wait=0.1"]),
        ("size with an unknown metric", ["size", "--target", "speed<=3"] + markov, ["--target", "speed<=3"]),
        ("size with a bad limit", ["size", "--target", "p_wait<=lots"] + markov, ["--target", "p_wait<=lots"]),
        ("size with a bad --max-size", ["size", "--target", "p_wait<=0.1", "--max-size", "0"] + markov,
         ["--max-size", "0"]),
        ("size with a bad --overflow", ["size", "--target", "p_wait<=0.1", "--overflow", "1,x"] + markov,
         ["--overflow", "1,x"]),
        # unknown keys
        ("unknown key on the command line", ["simulate", "--pool.sizee=17"], ["pool.sizee", "17"]),
        ("unknown key in a scenario file", ["simulate", f["unknown_ini"]], ["sizee", "17"]),
        ("unknown key in a sweep grid", ["sweep", "--grid", "pool.sizee=1,2"], ["pool.sizee", "1,2"]),
        # units, signs, numbers
        ("duration without a unit", ["simulate", "--pool.timeout=30"], ["pool.timeout", "30"]),
        ("duration without a unit in a file", ["simulate", f["unit_ini"]], ["pool.timeout", "30"]),
        ("unknown unit", ["simulate", "--duration=5parsecs"], ["duration", "5parsecs"]),
        ("negative duration", ["simulate", "--duration=-1s"], ["duration", "-1s"]),
        ("zero duration", ["simulate", "--duration=0s"], ["duration", "0s"]),
        ("negative pool size", ["simulate", "--pool.size=-1"], ["pool.size", "-1"]),
        ("max_overflow below -1", ["simulate", "--pool.max_overflow=-2"], ["pool.max_overflow", "-2"]),
        ("fractional pool size", ["simulate", "--pool.size=2.5"], ["pool.size", "2.5"]),
        ("negative recycle", ["simulate", "--pool.recycle=-5s"], ["pool.recycle", "-5s"]),
        ("negative timeout", ["simulate", "--pool.timeout=-1s"], ["pool.timeout", "-1s"]),
        ("rate 0", ["simulate", "--workload.rate=0"], ["workload.rate", "0"]),
        ("negative rate", ["simulate", "--workload.rate=-5"], ["workload.rate", "-5"]),
        ("rate NaN", ["simulate", "--workload.rate=nan"], ["workload.rate", "nan"]),
        ("rate inf", ["simulate", "--workload.rate=inf"], ["workload.rate", "inf"]),
        ("drop rate inf", ["simulate", "--network.drop_rate=inf"], ["network.drop_rate", "inf"]),
        ("connect_fail NaN", ["simulate", "--network.connect_fail=NaN"], ["network.connect_fail", "NaN"]),
        ("connect_fail above 1", ["simulate", "--network.connect_fail=1.5"], ["network.connect_fail", "1.5"]),
        ("amplitude above 1", ["simulate", "--workload.arrival=diurnal", "--workload.amplitude=1.5"],
         ["workload.amplitude", "1.5"]),
        ("bad boolean", ["simulate", "--pool.pre_ping=maybe"], ["pool.pre_ping", "maybe"]),
        ("bad reset_on_return", ["simulate", "--pool.reset_on_return=discard"],
         ["pool.reset_on_return", "discard"]),
        ("bad compat", ["simulate", "--pool.compat=1.3"], ["pool.compat", "1.3"]),
        ("bad use_lifo", ["simulate", "--pool.use_lifo=maybe"], ["pool.use_lifo", "maybe", "true or false"]),
        ("negative warmup", ["simulate", "--warmup=-1s"], ["warmup", "-1s"]),
        ("warmup without a unit", ["simulate", "--warmup=10"], ["warmup", "10", "unit"]),
        ("negative seed", ["simulate", "--seed=-1"], ["seed", "-1"]),
        ("seed not a number", ["simulate", "--seed=abc"], ["seed", "abc"]),
        ("seed beyond 64 bits", ["simulate", "--seed=1e30"], ["seed", "1e30"]),
        ("zero burst_on", ["simulate", "--workload.arrival=onoff", "--workload.burst_rate=100",
                           "--workload.burst_on=0s"], ["workload.burst_on", "0s"]),
        ("negative burst_off", ["simulate", "--workload.arrival=onoff", "--workload.burst_rate=100",
                                "--workload.burst_off=-1s"], ["workload.burst_off", "-1s"]),
        ("zero diurnal period", ["simulate", "--workload.arrival=diurnal", "--workload.period=0s"],
         ["workload.period", "0s"]),
        ("negative app.threads", ["simulate", "--app.threads=-2"], ["app.threads", "-2"]),
        ("fractional app.threads", ["simulate", "--app.threads=1.5"], ["app.threads", "1.5"]),
        ("ping that is not a distribution", ["simulate", "--database.ping=5"], ["database.ping", "5", "const:"]),
        ("negative ping", ["simulate", "--database.ping=exp:-1ms"], ["database.ping", "exp:-1ms"]),
        ("negative idle_session_timeout", ["simulate", "--database.idle_session_timeout=-1s"],
         ["database.idle_session_timeout", "-1s"]),
        ("idle_session_timeout without a unit", ["simulate", "--database.idle_session_timeout=5"],
         ["database.idle_session_timeout", "5", "unit"]),
        ("option without its value", ["simulate", "--pool.size", "--format", "json"],
         ["--pool.size", "no value", "--format"]),
        ("option at the end without its value", ["simulate", "--pool.size"], ["pool.size"]),
        ("bad routing", ["simulate", "--app.routing=least_busy"], ["app.routing", "least_busy"]),
        ("bad policy", ["simulate", "--pool.policy=c3p0"], ["pool.policy", "c3p0"]),
        ("pool.size with NullPool", ["simulate", "--pool.policy=null", "--pool.size=5"],
         ["pool.size", "5", "pool.policy = null"]),
        ("pool.timeout with NullPool", ["simulate", "--pool.policy=null", "--pool.timeout=1s"],
         ["pool.timeout", "1s", "pool.policy = null"]),
        ("analytic of a NullPool", ["analytic", "--pool.policy=null"] + markov,
         ["pool.policy", "null", "simulate it"]),
        ("size of a NullPool", ["size", "--target", "p_wait<=0.1", "--pool.policy=null"] + markov,
         ["pool.policy", "null"]),
        ("pool.size with HikariCP", ["simulate", "--pool.policy=hikari", "--pool.size=5"],
         ["pool.size", "5", "pool.policy = hikari", "hikari.maximum_pool_size"]),
        ("pool.pre_ping with HikariCP", ["simulate", "--pool.policy=hikari", "--pool.pre_ping=true"],
         ["pool.pre_ping", "true", "pool.policy = hikari"]),
        ("hikari.* with a QueuePool", ["simulate", "--hikari.maximum_pool_size=4"],
         ["hikari.maximum_pool_size", "4", "pool.policy = hikari only"]),
        # a key another arrival kind alone reads would be ignored: refused, naming the kind
        ("a burst rate without onoff", ["simulate", "--workload.burst_rate=500"],
         ["workload.burst_rate", "500", "workload.arrival = onoff only", "poisson"]),
        ("a burst length with diurnal", ["simulate", "--workload.arrival=diurnal", "--workload.burst_on=2s"],
         ["workload.burst_on", "2s", "workload.arrival = onoff only", "diurnal"]),
        ("an amplitude without diurnal", ["simulate", "--workload.amplitude=0.3"],
         ["workload.amplitude", "0.3", "workload.arrival = diurnal only"]),
        ("clients with an open loop", ["simulate", "--workload.clients=20"],
         ["workload.clients", "20", "workload.arrival = closed only"]),
        ("think time with onoff", ["simulate", "--workload.arrival=onoff", "--workload.burst_rate=50",
                                   "--workload.think=exp:1s"],
         ["workload.think", "exp:1s", "workload.arrival = closed only", "onoff"]),
        ("a trace file with poisson", ["simulate", f"--workload.trace={f['unsorted_csv']}"],
         ["workload.trace", "workload.arrival = trace only"]),
        ("minimum_idle above maximum_pool_size",
         ["simulate", "--pool.policy=hikari", "--hikari.maximum_pool_size=4", "--hikari.minimum_idle=5"],
         ["hikari.minimum_idle", "5", "4"]),
        ("zero maximum_pool_size", ["simulate", "--pool.policy=hikari", "--hikari.maximum_pool_size=0"],
         ["hikari.maximum_pool_size", "0"]),
        ("connection_timeout below HikariCP's 250 ms",
         ["simulate", "--pool.policy=hikari", "--hikari.connection_timeout=100ms"],
         ["hikari.connection_timeout", "100ms", "250ms"]),
        ("max_lifetime below HikariCP's 30 s", ["simulate", "--pool.policy=hikari", "--hikari.max_lifetime=10s"],
         ["hikari.max_lifetime", "10s", "30s"]),
        ("keepalive_time without a unit", ["simulate", "--pool.policy=hikari", "--hikari.keepalive_time=60"],
         ["hikari.keepalive_time", "60", "unit"]),
        ("analytic of a HikariCP pool", ["analytic", "--pool.policy=hikari"] + markov,
         ["pool.policy", "hikari", "simulate it"]),
        ("size of a HikariCP pool", ["size", "--target", "p_wait<=0.1", "--pool.policy=hikari"] + markov,
         ["pool.policy", "hikari"]),
        ("bad outage list", ["simulate", "--database.outages=20s"], ["database.outages", "20s"]),
        ("overlapping outages", ["simulate", "--database.outages=1s+5s,3s+1s"],
         ["database.outages", "1s+5s,3s+1s"]),
        # absurd sizes
        ("pool size above the limit", ["simulate", "--pool.size=10000000"], ["pool.size", "10000000"]),
        ("pool size beyond int64", ["simulate", "--pool.size=99999999999999999999999"],
         ["pool.size", "99999999999999999999999"]),
        ("pool size in exponent form", ["simulate", "--pool.size=1e12"], ["pool.size", "1e12"]),
        ("processes above the limit", ["simulate", "--app.processes=1000000"], ["app.processes", "1000000"]),
        ("replications above the limit", ["simulate", "--replications=100000"], ["replications", "100000"]),
        ("zero max_connections", ["simulate", "--database.max_connections=0"],
         ["database.max_connections", "0"]),
        ("fractional connect_capacity in a queue", ["simulate", "--database.connect_capacity=1.5"],
         ["database.connect_capacity", "1.5", "shared"]),
        ("negative connect_capacity", ["simulate", "--database.connect_capacity=-1",
                                       "--database.connect_sharing=shared"],
         ["database.connect_capacity", "-1"]),
        ("NaN connect_capacity", ["simulate", "--database.connect_capacity=nan",
                                  "--database.connect_sharing=shared"],
         ["database.connect_capacity", "nan"]),
        # database.connect_capacity as a curve of concurrency:capacity pairs (calibrate's)
        *[("connect_capacity curve " + why, ["simulate", "--database.connect_capacity=" + curve,
                                             "--database.connect_sharing=shared"],
           ["database.connect_capacity", curve, "concurrency:capacity"])
          for why, curve in [("capacity above its concurrency", "1:1,2:2.5"),
                             ("not ascending", "2:1.2,1:1"),
                             ("a repeated concurrency", "1:1,1:0.9"),
                             ("a zero concurrency", "0:1,2:1.2"),
                             ("a fractional concurrency", "1.5:1"),
                             ("a zero capacity", "1:1,2:0"),
                             ("a negative capacity", "1:-1"),
                             ("a NaN capacity", "1:nan"),
                             ("a capacity with a unit", "1:1s"),
                             ("a trailing comma", "1:1,2:1.2,"),
                             ("an empty pair", "1:1,,2:1.2"),
                             ("a pair without a colon", "1:1,2"),
                             ("a pair with two colons", "1:1:1"),
                             ("a missing capacity", "1:"),
                             ("65 points", ",".join("%d:1" % n for n in range(1, 66)))]],
        ("connect_capacity curve in a queue", ["simulate", "--database.connect_capacity=1:1,2:1.2"],
         ["database.connect_capacity", "1:1,2:1.2", "connect_sharing = shared"]),
        ("unknown connect_sharing", ["simulate", "--database.connect_sharing=fair"],
         ["database.connect_sharing", "fair", "queue or shared"]),
        ("duration beyond the longest", ["simulate", "--duration=1000000000h"], ["duration", "1000000000h"]),
        ("over 1e10 requests", ["simulate", "--workload.rate=1e9", "--duration=1h"], ["workload.rate", "1e9"]),
        # arrival kinds and their required keys
        ("unknown arrival", ["simulate", "--workload.arrival=weibull"], ["workload.arrival", "weibull"]),
        ("onoff without burst_rate", ["simulate", "--workload.arrival=onoff"], ["workload.burst_rate"]),
        ("closed without clients", ["simulate", "--workload.arrival=closed"], ["workload.clients"]),
        ("zero clients", ["simulate", "--workload.arrival=closed", "--workload.clients=0"],
         ["workload.clients", "0"]),
        # A closed loop whose cycle takes no time at all would never leave t = 0.
        ("closed loop with a zero cycle time",
         ["simulate", "--duration=1s", "--workload.arrival=closed", "--workload.clients=1",
          "--workload.think=const:0", "--workload.service=const:0", "--pool.reset_on_return=none"],
         ["workload."]),
        # distributions
        ("unknown distribution", ["simulate", "--workload.service=gamma:5ms"],
         ["workload.service", "gamma:5ms"]),
        ("negative mean", ["simulate", "--workload.service=exp:-5ms"], ["workload.service", "exp:-5ms"]),
        ("uniform with one bound", ["simulate", "--workload.service=uniform:5ms"],
         ["workload.service", "uniform:5ms"]),
        ("lognormal without cv", ["simulate", "--workload.service=lognormal:mean=10ms"],
         ["workload.service", "lognormal:mean=10ms"]),
        ("distribution without a unit", ["simulate", "--database.connect=const:30"],
         ["database.connect", "const:30"]),
        ("empirical file missing", ["simulate", "--workload.service=empirical:" + f["missing_csv"]],
         ["workload.service", "no_such_trace.csv"]),
        # traces
        ("trace without a file", ["simulate"] + trace, ["workload.trace"]),
        ("missing trace file", ["simulate"] + trace + ["--workload.trace=" + f["missing_csv"]],
         ["workload.trace", f["missing_csv"]]),
        ("unreadable trace file", ["simulate"] + trace + ["--workload.trace=" + f["unreadable_csv"]],
         ["workload.trace", f["unreadable_csv"]]),
        ("unsorted trace file", ["simulate"] + trace + ["--workload.trace=" + f["unsorted_csv"]],
         ["workload.trace", "line 3"]),
        ("unsorted trace named in a scenario file", ["simulate", f["trace_ini"]],
         ["workload.trace", "unsorted.csv", "line 3"]),
        ("malformed trace file", ["simulate"] + trace + ["--workload.trace=" + f["malformed_csv"]],
         ["workload.trace", "line 2"]),
        ("empty trace file", ["simulate"] + trace + ["--workload.trace=" + f["empty_csv"]],
         ["workload.trace", f["empty_csv"]]),
        ("trace file with only a header", ["simulate"] + trace + ["--workload.trace=" + f["header_only_csv"]],
         ["workload.trace", f["header_only_csv"]]),
        # sweep grids
        ("sweep without a grid", ["sweep"], ["--grid"]),
        ("empty grid", ["sweep", "--grid", "pool.size="], ["--grid", "pool.size="]),
        ("empty value in a grid", ["sweep", "--grid", "pool.size=1,,2"], ["--grid", "pool.size=1,,2"]),
        ("grid without =", ["sweep", "--grid", "pool.size"], ["--grid", "pool.size"]),
        ("grid without a key", ["sweep", "--grid", "=5"], ["--grid", "=5"]),
        ("grid range without a step", ["sweep", "--grid", "pool.size=1:5"], ["--grid", "pool.size=1:5"]),
        ("grid range backwards", ["sweep", "--grid", "pool.size=5:1:1"], ["--grid", "pool.size=5:1:1"]),
        ("grid range step 0", ["sweep", "--grid", "pool.size=1:5:0"], ["--grid", "pool.size=1:5:0"]),
        ("grid range not numbers", ["sweep", "--grid", "pool.size=a:b:c"], ["--grid", "pool.size=a:b:c"]),
        ("grid value refused by the key", ["sweep", "--grid", "pool.size=2,-4"], ["pool.size", "-4"]),
        ("grid key given twice", ["sweep", "--grid", "pool.size=1,2", "--grid", "pool.size=3"],
         ["--grid", "pool.size"]),
        # output options
        ("bad --format", ["simulate", "--format", "xml"], ["--format", "xml"]),
        ("bad --format in a sweep", ["sweep", "--grid", "pool.size=1,2", "--format=yaml"], ["--format", "yaml"]),
        ("--jobs 0", ["sweep", "--grid", "pool.size=1,2", "--jobs", "0"], ["--jobs", "0"]),
        ("--jobs not a number", ["sweep", "--grid", "pool.size=1,2", "--jobs", "abc"], ["--jobs", "abc"]),
        ("--jobs negative", ["sweep", "--grid", "pool.size=1,2", "--jobs=-3"], ["--jobs", "-3"]),
        ("--jobs absurd", ["sweep", "--grid", "pool.size=1,2", "--jobs", "2000"], ["--jobs", "2000"]),
        # scenario files
        ("duplicate key in a file", ["simulate", f["dup_ini"]], ["pool.size", "dup.ini"]),
        ("duplicate key in another section", ["simulate", f["dup_section_ini"]],
         ["pool.size", "dup_section.ini"]),
        ("unclosed section", ["simulate", f["bracket_ini"]], ["bracket.ini", "line 1", "[pool", "]"]),
        ("line without =", ["simulate", f["noequals_ini"]], ["noequals.ini", "line 2", "size 5", "key = value"]),
        ("binary garbage file", ["simulate", f["garbage_ini"]], ["garbage.ini", "not a text file", "INI"]),
        ("empty scenario file", ["simulate", f["empty_ini"]], ["empty.ini", "no key = value line"]),
        ("scenario file of comments and sections only", ["simulate", f["comments_ini"]],
         ["comments.ini", "no key = value line"]),
        ("control characters in a file", ["simulate", f["garbage_text_ini"]], ["garbage_text.ini"]),
        ("scenario file that does not exist", ["simulate", f["missing_ini"]], [f["missing_ini"]]),
        ("scenario file that is a directory", ["simulate", f["scenario_dir"]], [f["scenario_dir"]]),
        ("two scenario files", ["simulate", f["dup_ini"], f["unit_ini"]], ["dup.ini", "unit.ini"]),
        ("option given twice", ["simulate", "--pool.size=3", "--pool.size=4"], ["pool.size"]),
        ("sweep of a missing file", ["sweep", f["missing_ini"], "--grid", "pool.size=1,2"], [f["missing_ini"]]),
        # live runs: refused before any server starts
        ("validate against an unknown pool", ["validate", "--against", "hikari"], ["--against", "hikari"]),
        ("live with a bad pool size", ["live", "--pool.size=-1"], ["pool.size", "-1"]),
        ("live with an unknown key", ["live", "--pool.sizee=3"], ["pool.sizee", "3"]),
        ("live of a binary file", ["live", f["garbage_ini"]], ["garbage.ini", "not a text file"]),
        ("validate with a bad duration", ["validate", "--duration=5"], ["duration", "5", "unit"]),
        ("validate of an empty file", ["validate", f["empty_ini"]], ["empty.ini"]),
        ("live with an empty --dsn", ["live", "--dsn", ""], ["--dsn", "empty"]),
        ("calibrate with a blank --dsn", ["calibrate", "--dsn", "  "], ["--dsn", "empty"]),
        ("calibrate of a scenario file", ["calibrate", f["unit_ini"]], ["unit.ini", "no scenario file"]),
        ("live does not take --against", ["live", "--against", "sqlalchemy"], ["--against", "validate"]),
    ]


def check_bad(c, binary, tmp, cases):
    for i, (name, args, wanted) in enumerate(cases):
        out_file = os.path.join(tmp, f"out_{i}.txt")
        p = run(binary, args + ["--output", out_file], tmp, timeout=60)
        err = p.stderr.decode("utf-8", errors="replace")
        label = f"{name} ({' '.join(args)})"
        c.check(label + ": exit status", p.returncode == 2, f"got {p.returncode}, stderr {err!r}")
        c.check(label + ": nothing on stdout", p.stdout == b"", f"stdout {p.stdout[:200]!r}")
        one_line = err.endswith("\n") and err.count("\n") == 1
        c.check(label + ": one line on stderr", one_line, f"stderr {err!r}")
        line = err[:-1] if err.endswith("\n") else err
        c.check(label + ": printable stderr", not control_characters(line),
                f"control characters {control_characters(line)!r} in {err!r}")
        missing = [w for w in wanted if w not in err]
        c.check(label + ": names the key and the value", not missing, f"{missing} not in {err!r}")
        left = [x for x in (out_file, out_file + ".part") if os.path.exists(x)]
        c.check(label + ": no output file", not left, f"left behind: {left}")

    # Commands and usage errors without an output file.
    for name, args, wanted in [
        ("no command", [], ["usage"]),
        ("unknown command", ["frobnicate"], ["frobnicate"]),
        ("unwritable --output", ["simulate"] + SHORT + ["--output", os.path.join(tmp, "no", "dir", "x.json")],
         ["--output", os.path.join(tmp, "no", "dir", "x.json")]),
    ]:
        p = run(binary, args, tmp)
        err = p.stderr.decode("utf-8", errors="replace")
        c.check(name + ": exit status", p.returncode == 2, f"got {p.returncode}")
        c.check(name + ": nothing on stdout", p.stdout == b"", f"stdout {p.stdout[:200]!r}")
        missing = [w for w in wanted if w not in err]
        c.check(name + ": says why", not missing, f"{missing} not in {err!r}")
    c.check("unwritable --output: no partial file",
            not os.path.exists(os.path.join(tmp, "no")), "a directory was created")


def nested(d, path):
    for part in path.split("."):
        d = d[part]
    return d


def check_good(c, binary, tmp):
    # simulate --format json
    p = run(binary, ["simulate", "--format", "json"] + SHORT, tmp)
    c.check("simulate json: exit 0", p.returncode == 0, p.stderr.decode(errors="replace"))
    c.check("simulate json: quiet stderr", p.stderr == b"", p.stderr.decode(errors="replace"))
    try:
        r = json.loads(p.stdout)
    except ValueError as e:
        c.check("simulate json: parses", False, str(e))
        r = None
    if r is not None:
        for section, keys in SCHEMA.items():
            where = r if not section else r.get(section, {})
            missing = [k for k in keys if k not in where]
            c.check(f"simulate json: fields of {section or 'the top level'}", not missing, f"missing {missing}")
        c.check("simulate json: mode sim", r.get("mode") == "sim", r.get("mode"))
        c.check("simulate json: no ci95 with one replication", "ci95" not in r)
        c.check("simulate json: config echoes the options",
                r["config"].get("pool.size") == 5 and r["config"].get("duration") == "2s", r["config"])
        outcomes = r["completed"] + r["timeouts"] + sum(r["errors"].values())
        c.check("simulate json: one outcome per request", r["requests"] == outcomes,
                f"{r['requests']} != {outcomes}")
        c.check("simulate json: requests about rate * duration", 140 <= r["requests"] <= 260, r["requests"])

    p = run(binary, ["simulate", "--format=json", "--replications=3"] + SHORT, tmp)
    r = json.loads(p.stdout) if p.returncode == 0 else {}
    c.check("simulate json: ci95 with replications", "ci95" in r and "latency_ms.mean" in r["ci95"],
            list(r.keys()))

    # --format csv: a header row and one row
    p = run(binary, ["simulate", "--format", "csv"] + SHORT, tmp)
    rows = list(csv.reader(io.StringIO(p.stdout.decode())))
    c.check("simulate csv: exit 0", p.returncode == 0, p.stderr.decode(errors="replace"))
    c.check("simulate csv: header and one row", len(rows) == 2, f"{len(rows)} rows")
    if len(rows) == 2:
        header, row = rows
        c.check("simulate csv: same width", len(header) == len(row), f"{len(header)} vs {len(row)}")
        for key in ["requests", "completed", "timeouts", "errors.disconnect", "p_wait", "wait_ms.p99",
                    "latency_ms.mean", "connections.peak_server", "config.pool.size"]:
            c.check(f"simulate csv: column {key}", key in header, header)
        values = dict(zip(header, row))
        c.check("simulate csv: pool.size value", values.get("config.pool.size") == "5", values.get("config.pool.size"))

    # default format: a human table
    p = run(binary, ["simulate"] + SHORT, tmp)
    c.check("simulate table: exit 0", p.returncode == 0 and b"completed" in p.stdout, p.stdout[:300])

    # A scenario file, its relative trace, and the command line overriding the file.
    write(os.path.join(tmp, "good_trace.csv"), "arrival,hold\n0.1,0.02\n0.2,0.02\n0.3,0.02\n")
    scenario = write(os.path.join(tmp, "good.ini"),
                     "# a comment\nduration = 1s\n[pool]\nsize = 3\n[workload]\narrival = trace\n"
                     "trace = good_trace.csv\n")
    p = run(binary, ["simulate", scenario, "--pool.size=4", "--format", "json"], "/")
    r = json.loads(p.stdout) if p.returncode == 0 else {}
    c.check("scenario file: runs", p.returncode == 0, p.stderr.decode(errors="replace"))
    c.check("scenario file: trace relative to the file", r.get("requests") == 3, r.get("requests"))
    c.check("scenario file: command line wins", r.get("config", {}).get("pool.size") == 4, r.get("config"))

    # Files saved on Windows: CRLF line ends, and a UTF-8 byte order mark (Notepad's "UTF-8").
    for name, content in [("crlf.ini", b"duration = 1s\r\n[pool]\r\nsize = 3\r\n"),
                          ("bom.ini", b"\xef\xbb\xbfduration = 1s\n[pool]\nsize = 3\n")]:
        path = write(os.path.join(tmp, name), content, "wb")
        p = run(binary, ["simulate", path, "--format", "json"], tmp)
        ok = p.returncode == 0 and json.loads(p.stdout)["config"].get("pool.size") == 3
        c.check(f"scenario file {name}: runs", ok, p.stderr.decode(errors="replace"))

    # sweep: 2 x 3 points in grid order (the first --grid varies slowest), same rows for any --jobs
    grid = ["sweep", "--grid", "pool.size=2,4", "--grid", "workload.rate=100:300:100", "--format", "csv"] + SHORT
    p2 = run(binary, grid + ["--jobs", "2"], tmp)
    p1 = run(binary, grid + ["--jobs", "1"], tmp)
    c.check("sweep csv: exit 0", p1.returncode == 0 and p2.returncode == 0,
            (p1.stderr + p2.stderr).decode(errors="replace"))
    rows2 = list(csv.reader(io.StringIO(p2.stdout.decode())))
    rows1 = list(csv.reader(io.StringIO(p1.stdout.decode())))
    c.check("sweep csv: header and 6 rows", len(rows2) == 7, f"{len(rows2)} rows")
    if len(rows2) == 7 and len(rows1) == 7:
        header = rows2[0]
        size, rate = header.index("config.pool.size"), header.index("config.workload.rate")
        points = [(row[size], row[rate]) for row in rows2[1:]]
        expected = [(s, r) for s in ("2", "4") for r in ("100", "200", "300")]
        c.check("sweep csv: grid order", points == expected, points)
        wall = header.index("wall_s")
        strip = lambda rows: [[v for i, v in enumerate(row) if i != wall] for row in rows]
        c.check("sweep csv: --jobs 1 gives the same rows", rows1[0] == header and strip(rows1) == strip(rows2),
                "rows differ")
        req = header.index("requests")
        counts = [int(row[req]) for row in rows2[1:]]
        c.check("sweep csv: requests follow the rate", counts[0] < counts[1] < counts[2], counts)

    p = run(binary, ["sweep", "--grid", "pool.size=2,4", "--format", "json"] + SHORT, tmp)
    try:
        rows = json.loads(p.stdout)
        ok = [row["point"] for row in rows] == [{"pool.size": "2"}, {"pool.size": "4"}] and all(
            row["result"]["config"]["pool.size"] == int(row["point"]["pool.size"]) for row in rows)
    except (ValueError, KeyError, TypeError) as e:
        ok = False
    c.check("sweep json: one point and result per row", ok, p.stdout[:300])

    # --output FILE
    out = os.path.join(tmp, "result.json")
    p = run(binary, ["simulate", "--format", "json", "--output", out] + SHORT, tmp)
    c.check("--output: exit 0 and nothing on stdout", p.returncode == 0 and p.stdout == b"", p.stdout[:200])
    try:
        with open(out) as f:
            written = json.load(f)
        c.check("--output: the file holds the result", written.get("requests", 0) > 0, written.keys())
    except (OSError, ValueError) as e:
        c.check("--output: the file holds the result", False, str(e))
    c.check("--output: no .part file", not os.path.exists(out + ".part"))
    out_csv = os.path.join(tmp, "sweep.csv")
    p = run(binary, grid + ["--output", out_csv], tmp)
    c.check("sweep --output: writes the rows", p.returncode == 0 and os.path.exists(out_csv)
            and len(open(out_csv).read().splitlines()) == 7, p.stderr.decode(errors="replace"))

    # --help lists every option with its default
    for args in (["--help"], ["simulate", "--help"], ["sweep", "--help"]):
        p = run(binary, args, tmp)
        text = " ".join(p.stdout.decode().split())  # undo the line wrapping
        c.check(f"{' '.join(args)}: exit 0", p.returncode == 0, p.returncode)
        for key, default in OPTIONS:
            start = text.find(f"--{key} ")
            if not c.check(f"{' '.join(args)}: lists {key}", start >= 0):
                continue
            end = text.find(" --", start + 2)
            entry = text[start:end if end >= 0 else len(text)]
            c.check(f"{' '.join(args)}: default of {key}", f"[default: {default}]" in entry, entry)


def check_examples(c, binary):
    """Every examples/*.ini runs and accounts for every request (speed lives in the benchmarks)."""
    examples = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples")
    if not os.path.isdir(examples):
        return
    for name in sorted(os.listdir(examples)):
        if not name.endswith(".ini"):
            continue
        p = run(binary, ["simulate", os.path.join(examples, name), "--format", "json"], examples)
        if not c.check(f"example {name}: runs", p.returncode == 0, p.stderr.decode(errors="replace")):
            continue
        r = json.loads(p.stdout)
        outcomes = r["completed"] + r["timeouts"] + sum(r["errors"].values())
        c.check(f"example {name}: one outcome per request", r["requests"] == outcomes and r["requests"] > 0,
                f"{r['requests']} vs {outcomes}")


def check_analytic_and_size(c, binary, tmp):
    """The exact commands as a user runs them: the Erlang C anchor, and a sizing curve."""
    markov = ["--database.reset=const:0s", "--database.connect=const:0s", "--pool.max_overflow=0",
              "--pool.timeout=none", "--workload.rate=1800"]
    p = run(binary, ["analytic", "--pool.size=20", "--format", "json"] + markov, tmp)
    if c.check("analytic --format json runs", p.returncode == 0, p.stderr.decode(errors="replace")):
        r = json.loads(p.stdout)
        c.check("analytic: Erlang C anchor P(wait) = 0.55077", abs(r["p_wait"] - 0.55077) < 5e-6, r["p_wait"])
        c.check("analytic: mean wait 2.7538 ms", abs(r["wait_ms"]["mean"] - 2.7538) < 5e-5, r["wait_ms"])
        c.check("analytic: mode and model", r["mode"] == "analytic" and r["model"] == "erlang_c", r.get("model"))
    p = run(binary, ["analytic", "--pool.size=20"] + markov, tmp)
    c.check("analytic table names the model", p.returncode == 0 and b"erlang_c" in p.stdout, p.stdout[:200])
    p = run(binary, ["size", "--target", "p_wait<=0.05", "--format", "csv"] + markov, tmp)
    if c.check("size --format csv runs", p.returncode == 0, p.stderr.decode(errors="replace")):
        rows = list(csv.reader(io.StringIO(p.stdout.decode())))
        c.check("size csv header", rows[0] == ["pool.size", "pool.max_overflow", "p_wait", "meets"], rows[0])
        met = [int(r[0]) for r in rows[1:] if r[3] == "true"]
        # Erlang C at 18 erlangs: C(26) = 0.0528 > 0.05 >= C(27) = 0.0326 (computed in Python).
        c.check("size: the first size meeting p_wait<=0.05 is 27", met and met[0] == 27, met[:3])
    p = run(binary, ["size", "--target", "p_wait<=0.05"] + markov, tmp)
    c.check("size table gives the answer", p.returncode == 0 and b"pool.size = 27" in p.stdout, p.stdout[:300])


def main():
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} PATH/TO/poolsim", file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    c = Checker()
    tmp = tempfile.mkdtemp(prefix="poolsim_cli_test_")
    try:
        files = make_files(tmp)
        check_bad(c, binary, tmp, bad_cases(files, tmp))
        check_good(c, binary, tmp)
        check_analytic_and_size(c, binary, tmp)
        check_examples(c, binary)
    finally:
        if os.path.exists(files.get("unreadable_csv", "")) and os.path.isfile(files["unreadable_csv"]):
            os.chmod(files["unreadable_csv"], 0o600)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
