"""poolsim.sweep: the DataFrame, its rows against simulate(), threads and Dask."""

import itertools

import numpy as np
import pandas as pd
import pytest

import poolsim
from helpers import flatten, same_value

GRID = {"pool_size": [2, 4], "workload.rate": [100, 200, 300]}
BASE = dict(duration="5s", max_overflow=1, pool_timeout="50ms", seed=5)

# Result fields every row has (flattened, config left out), in the result's order.
RESULT_COLUMNS = [
    "poolsim", "mode", "replications", "requests", "completed", "timeouts",
    "errors.connect_failed", "errors.too_many_connections", "errors.disconnect", "p_wait",
    "wait_ms.mean", "wait_ms.p50", "wait_ms.p95", "wait_ms.p99", "wait_ms.max",
    "latency_ms.mean", "latency_ms.p50", "latency_ms.p95", "latency_ms.p99", "latency_ms.max",
    "connections.opened", "connections.closed", "connections.opened_per_s", "connections.peak",
    "connections.mean_open", "connections.mean_in_use", "connections.peak_server", "events",
    "sim_time_s", "wall_s",
]


@pytest.fixture(scope="module")
def local_sweep():
    return poolsim.sweep(GRID, jobs=2, **BASE)


def _rows(frame, drop=("wall_s",)):
    return [{k: v for k, v in row.items() if k not in drop}
            for row in frame.to_dict(orient="records")]


def _assert_same_rows(a, b):
    assert list(a.columns) == list(b.columns)
    ra, rb = _rows(a), _rows(b)
    assert len(ra) == len(rb)
    for i, (x, y) in enumerate(zip(ra, rb)):
        bad = [k for k in x if not same_value(x[k], y[k])]
        assert not bad, f"row {i} differs in {bad}"


def test_shape_columns_and_order(local_sweep):
    frame = local_sweep
    assert isinstance(frame, pd.DataFrame)
    assert frame.shape == (6, 2 + len(RESULT_COLUMNS))
    assert list(frame.columns) == ["pool.size", "workload.rate"] + RESULT_COLUMNS
    assert not any(c.startswith("config.") for c in frame.columns)
    # the first key varies slowest
    assert list(zip(frame["pool.size"], frame["workload.rate"])) == list(
        itertools.product([2, 4], [100, 200, 300]))
    assert frame.index.tolist() == list(range(6))


def test_dtypes(local_sweep):
    frame = local_sweep
    for column in ("pool.size", "workload.rate", "requests", "completed", "timeouts",
                   "errors.disconnect", "connections.opened", "events", "replications"):
        assert pd.api.types.is_integer_dtype(frame[column]), column
    for column in ("p_wait", "wait_ms.p99", "latency_ms.mean", "connections.mean_open",
                   "sim_time_s", "wall_s"):
        assert frame[column].dtype == np.float64, column
    assert (frame["mode"] == "sim").all()


def test_rows_equal_individual_simulate_calls(local_sweep):
    for row in local_sweep.to_dict(orient="records"):
        point = {"pool_size": row["pool.size"], "workload_rate": row["workload.rate"]}
        result = poolsim.simulate(**BASE, **point)
        expected = {k: v for k, v in flatten(result.to_dict()).items()
                    if not k.startswith("config.") and k != "wall_s"}
        got = {k: v for k, v in row.items() if k not in ("wall_s", "pool.size", "workload.rate")}
        assert got.keys() == expected.keys()
        bad = [k for k in got if not same_value(got[k], expected[k])]
        assert not bad, f"{point}: {bad}"
        assert result.config["pool.size"] == row["pool.size"]


def test_rows_follow_the_grid(local_sweep):
    frame = local_sweep
    for size in (2, 4):
        requests = frame[frame["pool.size"] == size]["requests"].tolist()
        assert requests[0] < requests[1] < requests[2]
    # the same arrivals for both pool sizes (seeded streams per purpose)
    assert frame[frame["pool.size"] == 2]["requests"].tolist() == \
        frame[frame["pool.size"] == 4]["requests"].tolist()


def test_jobs_1_and_jobs_2_give_the_same_rows(local_sweep):
    _assert_same_rows(poolsim.sweep(GRID, jobs=1, **BASE), local_sweep)


def test_jobs_more_than_points():
    frame = poolsim.sweep({"seed": [1, 2]}, jobs=8, duration="2s")
    assert frame["seed"].tolist() == [1, 2]


def test_base_as_file_dict_and_options(tmp_path, local_sweep):
    ini = tmp_path / "base.ini"
    ini.write_text("duration = 5s\nseed = 5\n[pool]\nmax_overflow = 1\ntimeout = 50ms\n")
    _assert_same_rows(poolsim.sweep(GRID, str(ini), jobs=2), local_sweep)
    _assert_same_rows(poolsim.sweep(GRID, {"duration": "5s", "pool.max_overflow": 1},
                                    options={"pool.timeout": "50ms"}, seed=5, jobs=2),
                      local_sweep)


def test_grid_of_strings_and_replications():
    frame = poolsim.sweep({"workload_service": ["exp:10ms", "exp:20ms"]}, duration="2s",
                          replications=3, jobs=2)
    assert frame["workload.service"].tolist() == ["exp:10ms", "exp:20ms"]
    assert "ci95.p_wait" in frame.columns
    assert (frame["replications"] == 3).all()
    assert frame["latency_ms.mean"].iloc[0] < frame["latency_ms.mean"].iloc[1]


def test_numeric_duration_grid_column_is_numeric():
    """Numbers given for a duration in the grid are seconds; the column should stay numeric
    ("numeric grid values as numbers, so they plot as numbers", _api.sweep)."""
    frame = poolsim.sweep({"pool_timeout": [0.1, 1]}, duration="2s", jobs=1)
    assert frame.shape[0] == 2
    assert pd.api.types.is_numeric_dtype(frame["pool.timeout"]), \
        f"pool.timeout column is {frame['pool.timeout'].tolist()!r}"
    assert frame["pool.timeout"].tolist() == [0.1, 1.0]


# --- Dask -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def test_dask_sweep_equals_the_local_sweep(dask_client, local_sweep):
    frame = poolsim.sweep(GRID, client=dask_client, **BASE)
    _assert_same_rows(frame, local_sweep)
    # the points really ran on the workers (other processes)
    assert len(dask_client.scheduler_info()["workers"]) == 2


def test_dask_sweep_with_a_scenario_file(dask_client, tmp_path, local_sweep):
    ini = tmp_path / "base.ini"
    ini.write_text("duration = 5s\nseed = 5\n[pool]\nmax_overflow = 1\ntimeout = 50ms\n")
    _assert_same_rows(poolsim.sweep(GRID, str(ini), client=dask_client), local_sweep)


def test_dask_local_cluster(local_sweep):
    pytest.importorskip("distributed")
    frame = poolsim.sweep(GRID, client="local", jobs=2, **BASE)
    _assert_same_rows(frame, local_sweep)
