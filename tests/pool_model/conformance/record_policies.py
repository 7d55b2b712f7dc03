#!/usr/bin/env python3
"""The shared conformance harness, for SQLAlchemy's other pool classes as well as QueuePool.

  record_policies.py [run_conformance.py's arguments]

../shared/conformance/run_conformance.py drives QueuePool only. This wrapper imports it and
changes two things, so the same scenarios, fake DBAPI, scripted clock and trace format record
the real library's other pools: a scenario whose "pool" has "policy": "null" runs on
sqlalchemy.pool.NullPool, one with "policy": "static" on sqlalchemy.pool.StaticPool (both
built with the Pool arguments they take: recycle, pre_ping, reset_on_return, dialect;
pool_size, max_overflow, timeout and use_lifo do not apply to them), and such a pool's status
is what it has instead of size()/checkedin()/...: its status() text, {"status": "NullPool"}
or {"status": "StaticPool"}. Without "policy" (or with "queuepool") nothing changes.

Record the NullPool reference (from the project root):

  /usr/bin/python3 tests/pool_model/conformance/record_policies.py --quiet --write \\
      --scenarios tests/pool_model/conformance/nullpool_scenarios.json \\
      --expected tests/pool_model/conformance/expected-nullpool-sqlalchemy-1.4.46.json

and the StaticPool one the same way, with staticpool_scenarios.json and
expected-staticpool-sqlalchemy-1.4.46.json.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("POOLSIM_SHARED_CONFORMANCE",
                        os.path.join(HERE, "..", "..", "..", "..", "shared", "conformance"))
sys.path.insert(0, os.path.abspath(SHARED))
import run_conformance  # noqa: E402

_queuepool_make_pool = run_conformance.Runner._make_pool
_queuepool_status = run_conformance.Runner.status


def _make_pool(self):
    policy = self.cfg.get("policy", "queuepool")
    if policy == "queuepool":
        return _queuepool_make_pool(self)
    if policy not in _POOL_CLASSES:
        raise run_conformance.ScenarioError(
            "policy %r: must be queuepool, null or static" % policy)
    import sqlalchemy.pool

    c = self.cfg
    ror = {"rollback": "rollback", "commit": "commit", "none": None}[c["reset_on_return"]]
    dialect_cls = run_conformance._make_dialect_class(self.sa["pool_base"]._ConnDialect)
    pool_class = getattr(sqlalchemy.pool, _POOL_CLASSES[policy])
    return pool_class(self.db.creator, recycle=c["recycle"], pre_ping=c["pre_ping"],
                      reset_on_return=ror, dialect=dialect_cls(self.db))


_POOL_CLASSES = {"null": "NullPool", "static": "StaticPool"}


def _status(self, pool=None):
    p = pool or self.pool
    if type(p).__name__ in _POOL_CLASSES.values():
        return {"status": p.status()}
    return _queuepool_status(self, pool)


def _settle(self, limit=20.0):
    """run_conformance's settle(); a NullPool or StaticPool has no queue to wait on, only
    connects."""
    if type(self.pool).__name__ not in _POOL_CLASSES.values():
        return _queuepool_settle(self, limit)
    deadline = run_conformance._real_time.monotonic() + limit
    while True:
        running = [a for a in self.actors.values() if not a.done.is_set()]
        with self.db.cv:
            in_connect = self.db.blocked_in_connect
        if len(running) == in_connect:
            return
        if run_conformance._real_time.monotonic() > deadline:
            raise run_conformance.ScenarioError("actors did not settle")
        run_conformance._real_time.sleep(0.0005)


_queuepool_settle = run_conformance.Runner.settle
run_conformance.Runner.settle = _settle
run_conformance.Runner._make_pool = _make_pool
run_conformance.Runner.status = _status

if __name__ == "__main__":
    sys.exit(run_conformance.main())
