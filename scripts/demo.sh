#!/usr/bin/env bash
# poolsim's main job, end to end on a fresh Debian 12 machine: install the Debian packages,
# build Release into build/, then replay SQLAlchemy's QueuePool conformance scenarios through
# poolsim's pool core and compare them, trace for trace, with the real library's recordings.
# (Once the simulator lands this runs `poolsim simulate` on the default Flask-SQLAlchemy pool.)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=/usr/bin/python3 >/dev/null
cmake --build build -j"${POOLSIM_JOBS:-2}" >/dev/null

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

echo
echo "== one replayed trace: a database restart seen through pool_pre_ping =="
build/bin/queuepool_conformance --compat 1.4 "$shared/scenarios.json" > "$out/traces.json"
/usr/bin/python3 - "$out/traces.json" <<'PY' > "$out/one.json"
import json, sys
doc = json.load(open(sys.argv[1]))
doc["scenarios"] = [s for s in doc["scenarios"]
                    if s["name"] == "pre_ping_dead_reconnect_and_pool_invalidation"]
json.dump(doc, sys.stdout)
PY
/usr/bin/python3 "$shared/run_conformance.py" --show-file "$out/one.json"
