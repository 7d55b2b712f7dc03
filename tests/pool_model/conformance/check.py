#!/usr/bin/env python3
"""Replays a conformance scenario file with poolsim's core and compares the traces.

  check.py --replay build/bin/queuepool_conformance --compat 1.4|2.0 \
           --scenarios SCENARIOS.json --expected EXPECTED.json

The comparison is run_conformance.py's own (imported from the shared conformance folder next
to the scenario file's harness). Exit status 0 only when every expected scenario is replayed
with zero differences.

Our own scenarios are recorded with SQLAlchemy 1.4.46, the only SQLAlchemy Debian 12 ships.
SQLAlchemy 1.4 and 2.0 give identical traces except with pool_size = 0 (the shipped 1.4.46
and 2.0.52 references differ in exactly that scenario; queuepool_spec.md section 13), so under
--compat 2.0 a 1.4.46 reference is compared only for the scenarios with pool_size > 0, and the
others are listed as not compared.
"""

import argparse
import json
import os
import subprocess
import sys


def load_harness(shared_dir):
    sys.path.insert(0, shared_dir)
    import run_conformance  # noqa: E402

    return run_conformance


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replay", required=True)
    ap.add_argument("--compat", required=True, choices=["1.4", "2.0"])
    ap.add_argument("--scenarios", required=True)
    ap.add_argument("--expected", required=True)
    ap.add_argument("--shared", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "shared",
        "conformance"))
    args = ap.parse_args()

    harness = load_harness(os.path.abspath(args.shared))
    with open(args.expected) as f:
        expected = json.load(f)
    run = subprocess.run([args.replay, "--compat", args.compat, args.scenarios],
                         capture_output=True, text=True)
    if run.returncode != 0:
        sys.stderr.write(run.stderr)
        print("replay failed with exit status %d" % run.returncode)
        return 1
    actual = json.loads(run.stdout)

    version = expected.get("sqlalchemy_version", "")
    skipped = []
    if args.compat == "2.0" and version.startswith("1."):
        kept = []
        for sc in expected["scenarios"]:
            (kept if sc["pool"]["pool_size"] > 0 else skipped).append(sc)
        expected["scenarios"] = kept
        skipped = [sc["name"] for sc in skipped]
        actual["scenarios"] = [sc for sc in actual["scenarios"] if sc["name"] not in skipped]

    failures = harness.compare(expected, actual, show_ok=False)
    print("%s vs poolsim core --compat %s: %d scenario(s) compared, %d differ%s" % (
        os.path.basename(args.expected), args.compat, len(expected["scenarios"]), failures,
        "; not compared (pool_size = 0 is recorded for 1.4 only): " + ", ".join(skipped)
        if skipped else ""))
    if not expected["scenarios"]:
        print("no scenario compared")
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
