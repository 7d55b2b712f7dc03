#!/usr/bin/env python3
"""Bad input to queuepool_conformance: one clear line on stderr, exit status 2, nothing on stdout.

  bad_input_test.py build/bin/queuepool_conformance
"""

import json
import os
import subprocess
import sys
import tempfile

GOOD_DEFAULTS = {"pool_size": 5, "max_overflow": 10, "timeout": 30.0, "recycle": -1,
                 "pre_ping": False, "use_lifo": False, "reset_on_return": "rollback"}


def doc(scenarios, **top):
    d = {"format": "queuepool-conformance/1", "clock_start": 1000.0,
         "defaults": dict(GOOD_DEFAULTS), "scenarios": scenarios}
    d.update(top)
    return json.dumps(d)


def scenario(steps, pool=None, name="s1"):
    s = {"name": name, "steps": steps}
    if pool is not None:
        s["pool"] = pool
    return s


# (what, file text or None for a missing file, extra args, words the error line must contain)
CASES = [
    ("no such file", None, [], ["cannot read"]),
    ("empty file", "", [], ["not valid JSON"]),
    ("binary garbage", "\x00\x01\xff{", [], ["not valid JSON"]),
    ("malformed JSON", '{"format": ', [], ["not valid JSON"]),
    ("wrong format", doc([], format="other/1"), [], ['"format"']),
    ("unknown op", doc([scenario([{"op": "frobnicate"}])]),
     [], ['scenario "s1"', "step 0", '"frobnicate"', "allowed"]),
    ("missing field", doc([scenario([{"op": "checkout"}])]),
     [], ['scenario "s1"', "step 0", '"as"']),
    ("negative pool size", doc([scenario([{"op": "status"}], pool={"pool_size": -3})]),
     [], ['scenario "s1"', '"pool_size" = -3', ">= 0"]),
    ("max_overflow below -1", doc([scenario([], pool={"max_overflow": -2})]),
     [], ['"max_overflow" = -2']),
    ("unknown pool key", doc([scenario([], pool={"pool_sise": 3})]),
     [], ['"pool_sise"', "allowed"]),
    ("wrong type", doc([scenario([], pool={"pre_ping": "yes"})]),
     [], ['"pre_ping"', "true or false"]),
    ("bad reset_on_return", doc([scenario([], pool={"reset_on_return": "flush"})]),
     [], ['"reset_on_return"', '"flush"']),
    ("negative advance", doc([scenario([{"op": "advance", "seconds": -1}])]),
     [], ["step 0", '"seconds" = -1']),
    ("unknown handle", doc([scenario([{"op": "checkin", "ref": "A"}])]),
     [], ["step 0", '"A"']),
    ("kill of a connection never made", doc([scenario([{"op": "kill", "conn": 4}])]),
     [], ["step 0", "#4"]),
    ("release with nothing held", doc([scenario([{"op": "release_connect"}])]),
     [], ["nothing pending"]),
    ("name used twice", doc([scenario([]), scenario([])]), [], ["used twice"]),
    ("step not an object", doc([scenario(["checkout"])]), [], ["step 0", "object"]),
    ("bad compat", doc([]), ["--compat", "3.0"], ["--compat = 3.0", "1.4 or 2.0"]),
    ("unknown option", doc([]), ["--fast"], ["unknown option --fast"]),
    ("await of an actor parked in a held connect",
     doc([scenario([{"op": "hold_connects", "count": 1}, {"op": "checkout_async", "as": "W"},
                    {"op": "await", "ref": "W"}])]),
     [], ["step 2", "held connect"]),
    ("main checkout that would wait forever",
     doc([scenario([{"op": "checkout", "as": "A"}, {"op": "checkout", "as": "B"}],
                   pool={"pool_size": 1, "max_overflow": 0, "timeout": None})]),
     [], ["step 1", "forever"]),
]


def main():
    binary = sys.argv[1]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for what, text, args, words in CASES:
            path = os.path.join(tmp, "scenarios.json")
            if os.path.exists(path):
                os.remove(path)
            if text is not None:
                with open(path, "w", encoding="latin-1") as f:
                    f.write(text)
            run = subprocess.run([binary] + args + [path], capture_output=True, text=True,
                                 errors="replace", timeout=30)
            lines = run.stderr.strip().splitlines()
            problems = []
            if run.returncode != 2:
                problems.append("exit status %d, not 2" % run.returncode)
            if run.stdout:
                problems.append("wrote to stdout")
            if len(lines) != 1:
                problems.append("%d lines on stderr, not 1" % len(lines))
            missing = [w for w in words if w not in run.stderr]
            if missing:
                problems.append("the message lacks %s" % missing)
            status = "ok  " if not problems else "FAIL"
            print("%s %-45s %s" % (status, what, lines[0] if lines else ""))
            for p in problems:
                print("       " + p)
            failures += bool(problems)
    print("%d passed, %d failed" % (len(CASES) - failures, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
