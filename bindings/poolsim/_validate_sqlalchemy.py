"""``python3 -m poolsim._validate_sqlalchemy``: the SQLAlchemy live run of the command line's
``poolsim validate --against sqlalchemy`` (kept out of the package's __init__ so that runpy
imports it once)."""

import json

from . import _core, _sqlalchemy


def _main() -> int:
    """``python3 -m poolsim._validate_sqlalchemy``: the live side of ``poolsim validate --against
    sqlalchemy``. Reads the scenario's options (JSON) on stdin, the DSN from POOLSIM_DSN and the
    SQL from POOLSIM_SQL (environment, so the password is not on a command line; with
    POOLSIM_CALIBRATE=1 it measures SQLAlchemy's statement overhead first), and writes
    the live result (JSON) on stdout. Bad input: one line on stderr, exit status 2."""
    import os
    import sys

    try:
        options = json.load(sys.stdin)
        result = _sqlalchemy.sqlalchemy_live(options, dsn=os.environ["POOLSIM_DSN"],
                                             sql=os.environ.get("POOLSIM_SQL") or None,
                                             calibrate=os.environ.get("POOLSIM_CALIBRATE") == "1")
    except (ValueError, TypeError) as e:
        print(f"poolsim: {_core.mask_password(str(e))}", file=sys.stderr)
        return 2
    except Exception as e:  # the database failed: say so without the password
        print(f"poolsim: sqlalchemy_live: {type(e).__name__}: {_core.mask_password(str(e))}",
              file=sys.stderr)
        return 1
    json.dump(result.to_dict(), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
