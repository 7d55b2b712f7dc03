"""The GIL is released while the C++ model runs: checked by behaviour, never by timing.

A ticker thread loops "count += 1; sleep 1 ms". Every iteration needs the GIL for a moment.
The simulating thread reads the count just before and just after a simulation that takes about
a second. If the simulation held the GIL, the ticker could not execute a single bytecode while
the C++ ran: the count could move only in the few instants the simulating thread spends in
Python around the call (at most a handful of ticks, one per thread switch). With the GIL
released the ticker keeps ticking the whole time (hundreds of ticks). The threshold, 50 ticks,
sits far from both, and no wall-clock time is compared with anything.

(tests/python/bench_gil.py measures the speed-up of a threaded sweep; it is not a test.)
"""

import concurrent.futures
import re
import threading
import time

import poolsim
from helpers import without

# About a second of C++ on this machine: 6 million requests.
LONG = dict(duration="60s", workload_rate=100_000, pool_size=20, max_overflow=10, seed=1)


class Ticker:
    def __init__(self):
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.count += 1
            time.sleep(0.001)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _ticks_during(call):
    out = {}
    with Ticker() as ticker:
        def work():
            before = ticker.count
            out["result"] = call()
            out["ticks"] = ticker.count - before

        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
    return out["ticks"], out["result"]


def test_another_thread_runs_while_simulate_runs():
    ticks, result = _ticks_during(lambda: poolsim.simulate(**LONG))
    assert result.requests > 5_000_000  # the run was long enough to matter
    assert ticks > 50, f"the ticker advanced only {ticks} times during the simulation"


def test_control_the_ticker_stands_still_while_the_gil_is_held():
    """The method tells the two apart: a C call that keeps the GIL (the re module's backtracking
    on a catastrophic pattern, a few tenths of a second) lets the ticker move a few times at
    most."""
    ticks, match = _ticks_during(lambda: re.fullmatch(r"(a+)+b", "a" * 24))
    assert match is None
    assert ticks <= 5, f"the ticker advanced {ticks} times while the GIL was held"


def test_another_thread_runs_while_size_searches():
    """size() on a non-exact scenario runs simulations; they release the GIL as well."""
    ticks, answer = _ticks_during(lambda: poolsim.size(
        "p_wait<=0.2", max_size=40, duration="30s", workload_rate=1500, max_overflow=0,
        pool_timeout="none"))
    assert answer.answers[0]["pool.size"] is not None
    assert ticks > 50, f"the ticker advanced only {ticks} times during the search"


def test_concurrent_simulations_equal_sequential_ones():
    """Threads running simulations at once do not disturb each other."""
    kws = [dict(duration="20s", workload_rate=5000, pool_size=s, seed=s) for s in (3, 4, 5, 6)]
    sequential = [without(poolsim.simulate(**kw).to_dict(), "wall_s") for kw in kws]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda kw: without(poolsim.simulate(**kw).to_dict(), "wall_s"),
                                 kws))
    assert threaded == sequential
