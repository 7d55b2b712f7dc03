#!/usr/bin/env bash
# poolsim's main job, end to end on a fresh Debian 12 machine: install the Debian packages,
# build Release into build/, then simulate the default Flask-SQLAlchemy pool
# (examples/flask_default.ini) and print the result table. After it, a short proof that the
# pool inside is SQLAlchemy's QueuePool: the conformance scenarios replayed against the real
# library's recorded traces.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=/usr/bin/python3 >/dev/null
cmake --build build -j"${POOLSIM_JOBS:-2}" >/dev/null

echo "== poolsim simulate examples/flask_default.ini =="
build/bin/poolsim simulate examples/flask_default.ini
echo

shared=${POOLSIM_SHARED_DIR:-../shared}/conformance
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== poolsim core vs the real SQLAlchemy QueuePool =="
for compat in 1.4 2.0; do
  ref=$shared/expected/sqlalchemy-$([ "$compat" = 1.4 ] && echo 1.4.46 || echo 2.0.52).json
  /usr/bin/python3 tests/pool_model/conformance/check.py --shared "$shared" \
    --replay build/bin/queuepool_conformance --compat "$compat" \
    --scenarios "$shared/scenarios.json" --expected "$ref"
  /usr/bin/python3 tests/pool_model/conformance/check.py --shared "$shared" \
    --replay build/bin/queuepool_conformance --compat "$compat" \
    --scenarios tests/pool_model/conformance/scenarios.json \
    --expected tests/pool_model/conformance/expected-sqlalchemy-1.4.46.json
done

