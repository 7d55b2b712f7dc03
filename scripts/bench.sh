#!/usr/bin/env bash
# Builds the Google Benchmark benchmarks (Release) into build-bench/ and runs them: a table on
# stdout and the full figures in build-bench/bench.json. Speed lives here, never in the tests.
#   scripts/bench.sh [--benchmark_filter=REGEX ...]   (extra arguments go to the benchmark)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DPOOLSIM_BUILD_BENCHMARKS=ON \
  -DPOOLSIM_BUILD_TESTS=OFF >/dev/null
cmake --build build-bench -j"${POOLSIM_JOBS:-2}" --target sim_bench >/dev/null
build-bench/bin/sim_bench --benchmark_out=build-bench/bench.json --benchmark_out_format=json "$@"
echo "(items_per_second = simulated requests per second of wall time; full figures: build-bench/bench.json)"
