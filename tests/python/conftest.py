"""pytest set-up of the poolsim Python tests.

Run from the repository root:

    PYTHONPATH=build/python /usr/bin/python3 -m pytest -q tests/python

The package under test is the one CMake built into build/python; it is put on sys.path (and on
PYTHONPATH, for Dask's worker processes) if the caller did not.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from helpers import BINARY, PYTHON_DIR  # noqa: E402

if PYTHON_DIR not in [os.path.abspath(p) for p in sys.path]:
    sys.path.insert(0, PYTHON_DIR)
# Dask's worker processes import poolsim too: give them the absolute path.
_paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
if PYTHON_DIR not in [os.path.abspath(p) for p in _paths]:
    os.environ["PYTHONPATH"] = os.pathsep.join([PYTHON_DIR] + _paths)
else:
    os.environ["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in _paths)

import poolsim  # noqa: E402


def pytest_report_header(config):
    return [f"poolsim {poolsim.__version__} from {os.path.dirname(poolsim.__file__)}",
            f"command line: {BINARY}"]


@pytest.fixture(scope="session")
def binary():
    if not os.path.exists(BINARY):
        pytest.fail(f"{BINARY} is missing: build the project first (cmake --build build)")
    return BINARY
