#!/usr/bin/env bash
# Builds the Google Benchmark benchmarks (Release) into build-bench/ and runs them: the simulator
# and the analytic models, then the real pool against a PostgreSQL the benchmark starts itself.
# Tables on stdout, the full figures in build-bench/*.json. Speed lives here, never in the tests.
#   scripts/bench.sh [--benchmark_filter=REGEX ...]   (extra arguments go to both benchmarks)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DPOOLSIM_BUILD_BENCHMARKS=ON \
  -DPOOLSIM_BUILD_TESTS=OFF >/dev/null
cmake --build build-bench -j"${POOLSIM_JOBS:-2}" --target sim_bench pg_pool_bench >/dev/null
build-bench/bin/sim_bench --benchmark_out=build-bench/bench.json --benchmark_out_format=json "$@"
echo "(items_per_second = simulated requests per second of CPU time; full figures: build-bench/bench.json)"
echo
echo "== the real pool, against a PostgreSQL the benchmark starts itself =="
build-bench/bin/pg_pool_bench --benchmark_out=build-bench/pg_pool_bench.json \
  --benchmark_out_format=json "$@"
