"""A live command interrupted by SIGINT, SIGTERM or SIGHUP stops and deletes its --dsn auto server.

Each command runs with TMPDIR set to a directory of this test, so the servers it starts are
the only poolsim-pg-* directories there. The signal comes once the server is up (pg_ctl said
"server started") and the run has begun; the test then checks the exit status (128 +
the signal), that the directory is gone, and that no process of that server is left. One more
run is interrupted while initdb is still writing the cluster.

usage: signal_test.py POOLSIM_BINARY
"""

import glob
import os
import signal
import subprocess
import sys
import tempfile
import time


def processes_mentioning(text):
    """pids whose command line contains text (a server's data directory)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def wait_for(condition, seconds):
    """condition()'s first true value within the time, else its last value."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    return condition()


def main():
    binary = sys.argv[1]
    failures = []
    live = ["live", "--duration=60s", "--workload.rate=20"]
    commands = [
        ("live", signal.SIGINT, "running", live),
        ("live", signal.SIGTERM, "running", live),
        ("validate", signal.SIGHUP, "running", ["validate", "--duration=60s", "--workload.rate=20"]),
        ("calibrate", signal.SIGTERM, "running", ["calibrate"]),
        ("live", signal.SIGINT, "initdb", live),
    ]
    for name, sig, when, args in commands:
        label = f"{name} + {signal.Signals(sig).name} ({when})"
        with tempfile.TemporaryDirectory(prefix="poolsim-signal-") as tmp:
            os.chmod(tmp, 0o755)  # the server runs as postgres and must reach its directory
            env = dict(os.environ, TMPDIR=tmp)
            p = subprocess.Popen([binary] + args + ["--dsn", "auto", "--no-progress"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if when == "running":  # pg_ctl start -w has returned: the run has begun
                up = wait_for(lambda: [d for d in glob.glob(os.path.join(tmp, "poolsim-pg-*"))
                                       if "server started" in read(os.path.join(d, "tools.log"))],
                              60)
                pause = 1.0  # into the run (calibrate: into its connects)
            else:  # while initdb writes the cluster
                up = wait_for(lambda: glob.glob(os.path.join(tmp, "poolsim-pg-*", "data", "base")), 60)
                pause = 0.0
            if not up:
                p.kill()
                failures.append(f"{label}: the server did not start: {p.communicate()[1]!r}")
                continue
            data_dir = os.path.join(tmp, os.path.relpath(up[0], tmp).split(os.sep)[0], "data")
            time.sleep(pause)
            if p.poll() is not None:
                failures.append(f"{label}: ended before the signal: {p.communicate()[1]!r}")
                continue
            p.send_signal(sig)
            try:
                _, err = p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                failures.append(f"{label}: still running 30 s after the signal")
                continue
            err = err.decode(errors="replace")
            if p.returncode != 128 + sig:
                failures.append(f"{label}: exit status {p.returncode}, not {128 + sig}: {err!r}")
            if "stopped and deleted" not in err or "WARNING" in err:
                failures.append(f"{label}: stderr does not say it cleaned up, or is noisy: {err!r}")
            left = glob.glob(os.path.join(tmp, "poolsim-pg-*"))
            if left:
                failures.append(f"{label}: server directory left behind: {left}")
            if not wait_for(lambda: not processes_mentioning(data_dir), 10):
                failures.append(f"{label}: server processes left: {processes_mentioning(data_dir)}")
                for pid in processes_mentioning(data_dir):
                    os.kill(pid, signal.SIGKILL)
            print(f"{label}: exit {p.returncode}, directory and processes gone", flush=True)
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
