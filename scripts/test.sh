#!/usr/bin/env bash
# Runs every poolsim test on a fresh Debian 12 machine: installs the Debian packages, builds
# Release with -Werror into build/, runs ctest (unit, property and conformance tests), then
# builds once more with AddressSanitizer + UndefinedBehaviorSanitizer into build-sanitize/ and
# runs the C++ tests there too, then builds the real pool's tests with ThreadSanitizer into
# build-tsan/ and runs them (threads, sockets and a real PostgreSQL: where races would be).
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=${POOLSIM_JOBS:-2}
# Each stage's header says how long the run has taken so far (the README lists where it goes).
stage() { echo "== $1 == (at $((SECONDS / 60)) min $((SECONDS % 60)) s)"; }
scripts/install-deps.sh

stage "build (Release, -Werror)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPOOLSIM_WERROR=ON \
  -DPython3_EXECUTABLE=/usr/bin/python3 >/dev/null
cmake --build build -j"$jobs"

stage "build (AddressSanitizer + UndefinedBehaviorSanitizer)"
cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOOLSIM_WERROR=ON \
  -DPOOLSIM_SANITIZERS=ON -DPOOLSIM_BUILD_PYTHON=OFF -DPython3_EXECUTABLE=/usr/bin/python3 >/dev/null
cmake --build build-sanitize -j"$jobs"

stage "tests under the sanitizers"
ctest --test-dir build-sanitize --output-on-failure -j"$jobs"

stage "build (ThreadSanitizer: the real pool's tests only)"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOOLSIM_WERROR=ON \
  -DPOOLSIM_TSAN=ON -DPOOLSIM_BUILD_PYTHON=OFF -DPython3_EXECUTABLE=/usr/bin/python3 >/dev/null
cmake --build build-tsan -j"$jobs" --target pg_pool_tests fault_proxy_tests survival_tests poolsim

stage "real-pool tests under ThreadSanitizer"
# A race report ends the test at once (exit code 66). real_pool.validate needs the poolsim
# binary and the Python side, which this stage does not build.
TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build-tsan --output-on-failure -j"$jobs" \
  -R '^(real_pool|FaultProxy|MaskPassword)\.' -E '^real_pool\.validate$'
# poolsim live with every fault at once: worker, dispatcher, monitor and fault threads, the
# proxy's loop and a server restart (a race here once freed the monitor's connection).
TSAN_OPTIONS=halt_on_error=1 build-tsan/bin/poolsim live --dsn auto --duration=5s \
  --workload.rate=200 --pool.size=3 --pool.pre_ping=true --network.drop_rate=720 \
  --database.outages=2s+500ms --network.idle_drop_after=200ms --database.max_connections=20 \
  --format json --no-progress >/dev/null
# HikariCP's and psycopg_pool's pools on the real pool: their own connect and timer threads,
# with backends killed and (HikariCP) a server restart under them.
TSAN_OPTIONS=halt_on_error=1 build-tsan/bin/poolsim live --dsn auto --duration=3s \
  --workload.rate=200 --pool.policy=hikari --hikari.maximum_pool_size=3 \
  --hikari.connection_timeout=250ms --network.drop_rate=720 --database.outages=1s+500ms \
  --format json --no-progress >/dev/null
TSAN_OPTIONS=halt_on_error=1 build-tsan/bin/poolsim live --dsn auto --duration=3s \
  --workload.rate=200 --pool.policy=psycopg --psycopg.min_size=2 --psycopg.max_size=4 \
  --psycopg.max_idle=1s --network.drop_rate=720 --format json --no-progress >/dev/null
echo "poolsim live under ThreadSanitizer: clean"

stage "tests"
ctest --test-dir build --output-on-failure -j"$jobs"
stage "done"
