#!/usr/bin/env bash
# Builds the Google Benchmark benchmarks (Release) into build-bench/ and runs them: the simulator
# (engine, scaling, pool core) and the analytic models, the real pool against a PostgreSQL the
# benchmark starts itself, sweeps (--jobs 1 against 2, Dask against threads) and the memory of a
# 10^8-request run; then a table of issue 8's targets, met or not. Tables on stdout, the full
# figures in build-bench/*.json. Speed lives here, never in the tests.
#
#   scripts/bench.sh [--compare] [--write-baseline] [--benchmark_filter=REGEX ...]
#
# --compare        also print each figure's ratio to bench/baseline.json (> 1: faster now)
# --write-baseline write this run's figures, with the machine they ran on, to bench/baseline.json
# Other arguments go to both Google Benchmark binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
compare=0 write=0 args=()
for a in "$@"; do
  case "$a" in
    --compare) compare=1 ;;
    --write-baseline) write=1 ;;
    *) args+=("$a") ;;
  esac
done
scripts/install-deps.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DPOOLSIM_BUILD_BENCHMARKS=ON \
  -DPOOLSIM_BUILD_TESTS=OFF -DPython3_EXECUTABLE=/usr/bin/python3 >/dev/null
cmake --build build-bench -j"${POOLSIM_JOBS:-2}" \
  --target sim_bench pg_pool_bench poolsim poolsim_core >/dev/null
echo "== the simulator (items_per_second = simulated requests per CPU second) =="
build-bench/bin/sim_bench --benchmark_out=build-bench/bench.json --benchmark_out_format=json \
  "${args[@]+"${args[@]}"}"
echo
echo "== the real pool, against a PostgreSQL the benchmark starts itself =="
build-bench/bin/pg_pool_bench --benchmark_out=build-bench/pg_pool_bench.json \
  --benchmark_out_format=json "${args[@]+"${args[@]}"}"
echo
echo "== sweeps =="
/usr/bin/python3 tests/bench/sweep_bench.py build-bench build-bench/sweep_bench.json
echo
echo "== memory =="
/usr/bin/python3 tests/bench/memory_bench.py build-bench build-bench/memory_bench.json
echo
echo "== issue 8's targets =="
/usr/bin/python3 tests/bench/targets.py build-bench
if [ "$compare" = 1 ]; then
  echo
  echo "== against bench/baseline.json =="
  /usr/bin/python3 tests/bench/baseline.py compare bench/baseline.json build-bench
fi
if [ "$write" = 1 ]; then
  /usr/bin/python3 tests/bench/baseline.py write bench/baseline.json build-bench
  echo "wrote bench/baseline.json"
fi
