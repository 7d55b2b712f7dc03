"""The database password never leaves poolsim: every command that takes a DSN is run against a
throw-away PostgreSQL, in every output format, to files and to the terminal, on success and on
failure, and its stdout, stderr and output files are searched for the password (issue 9)."""

import os
import subprocess

import pytest

import poolsim

from helpers import BINARY

pytestmark = pytest.mark.skipif(not poolsim.postgres_available(),
                                reason="PostgreSQL (initdb) is not installed here")

SHORT = ["--duration=1s", "--workload.rate=40", "--pool.size=2", "--no-progress"]


@pytest.fixture(scope="module")
def server():
    with poolsim.TestServer() as s:
        yield s


def password_of(dsn):
    return dict(item.split("=", 1) for item in dsn.split())["password"]


def runs(dsn, tmp):
    """(name, argv) of every command that takes a DSN, in each format and to a file."""
    out = []
    for fmt in ("table", "json", "csv"):
        out.append((f"live {fmt}", ["live", "--dsn", dsn, "--format", fmt] + SHORT))
        out.append((f"validate {fmt}", ["validate", "--dsn", dsn, "--format", fmt] + SHORT))
    out.append(("calibrate", ["calibrate", "--dsn", dsn]))
    out.append(("calibrate json", ["calibrate", "--dsn", dsn, "--format", "json"]))
    out.append(("live to a file", ["live", "--dsn", dsn, "--format", "json",
                                   "--output", os.path.join(tmp, "live.json")] + SHORT))
    out.append(("validate against sqlalchemy", ["validate", "--against", "sqlalchemy", "--dsn",
                                                dsn, "--format", "json"] + SHORT))
    return out


def test_no_command_prints_the_password(server, tmp_path):
    secret = password_of(server.dsn)
    assert len(secret) >= 8
    for name, argv in runs(server.dsn, str(tmp_path)):
        p = subprocess.run([BINARY] + argv, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, f"{name}: exit {p.returncode}: {p.stderr}"
        assert secret not in p.stdout, f"{name}: the password is on stdout"
        assert secret not in p.stderr, f"{name}: the password is on stderr"
    for path in tmp_path.iterdir():
        assert secret not in path.read_text(), f"{path.name}: the password is in the file"


@pytest.mark.parametrize("how", ["wrong port", "wrong password", "bad keyword"])
def test_failing_commands_do_not_print_the_password(server, how):
    secret = password_of(server.dsn)
    dsn = {"wrong port": server.dsn.replace(f"port={server.port}", "port=1"),
           "wrong password": server.dsn + " password=" + secret[::-1],
           "bad keyword": server.dsn + " nosuchkeyword=1"}[how]
    for command in ("live", "validate", "calibrate"):
        argv = [BINARY, command, "--dsn", dsn] + (SHORT if command != "calibrate" else [])
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert p.returncode != 0, f"{command} with a {how} succeeded"
        assert p.stderr.strip(), f"{command} with a {how}: no message"
        for text in (p.stdout, p.stderr):
            assert secret not in text and secret[::-1] not in text, \
                f"{command} with a {how} printed the password: {p.stderr}"


def test_python_results_do_not_hold_the_password(server):
    secret = password_of(server.dsn)
    for result in (poolsim.live(dsn=server.dsn, duration="1s", workload_rate=40),
                   poolsim.sqlalchemy_live(dsn=server.dsn, duration="1s", workload_rate=40)):
        assert secret not in repr(result.to_dict()) and secret not in result.table()
    calibration = poolsim.calibrate(dsn=server.dsn, samples=5)
    assert secret not in repr(calibration)
