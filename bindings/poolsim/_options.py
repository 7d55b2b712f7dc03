"""Scenario options as Python users write them, turned into the text the C++ core parses.

One option set, three spellings: the dotted keys of DESIGN.md in a dict (``{"pool.size": 20}``),
keyword arguments with underscores (``pool_size=20``, ``workload_rate=400``), and SQLAlchemy's
own ``create_engine`` names where they differ (``max_overflow=10``). Numbers given for durations
are seconds, as SQLAlchemy's ``pool_timeout`` and ``pool_recycle`` are; strings keep their units
(``"250ms"``). Unknown keys and values of the wrong type are refused here; every value is then
checked by the same C++ parser as the command line, with the same messages.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Optional, Tuple

from . import _core

#: (key, default, help) of every scenario option, in the order of DESIGN.md's table.
OPTIONS: Tuple[Tuple[str, str, str], ...] = tuple(tuple(o) for o in _core.options())
KEYS = tuple(key for key, _, _ in OPTIONS)

# create_engine() argument names that are not the key with "_" for "."
_ALIASES = {"max_overflow": "pool.max_overflow"}
_BY_NAME = {key.replace(".", "_"): key for key in KEYS}
_BY_NAME.update(_ALIASES)

# Keys whose values are durations: a Python number means seconds.
_DURATIONS = {
    "duration", "warmup", "pool.timeout", "pool.recycle", "workload.burst_on",
    "workload.burst_off", "workload.period", "database.idle_session_timeout",
    "network.idle_drop_after", "hikari.connection_timeout", "hikari.idle_timeout",
    "hikari.max_lifetime", "hikari.keepalive_time", "psycopg.timeout", "psycopg.max_idle",
    "psycopg.max_lifetime", "psycopg.reconnect_timeout", "pgbouncer.reserve_pool_timeout",
    "pgbouncer.server_idle_timeout", "pgbouncer.server_lifetime", "pgbouncer.query_wait_timeout",
    "pgbouncer.server_login_retry", "pgbouncer.server_check_delay",
}


def key_of(name: str) -> str:
    """The dotted key of an option spelled ``pool.size``, ``pool_size`` or ``max_overflow``."""
    if name in KEYS:
        return name
    if name in _BY_NAME:
        return _BY_NAME[name]
    raise ValueError(f"{name}: unknown option (see poolsim.options() for the keys)")


def text_of(key: str, value: Any) -> str:
    """The text the C++ parser takes for one option value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)  # "nan", "inf": refused by the C++ parser with its own message
        number = repr(value) if isinstance(value, float) else str(value)
        if key in _DURATIONS and not (key == "pool.recycle" and value == -1):
            return number + "s"
        return number
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return text_of(key, value.item())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and key == "database.outages":
        return ",".join(text_of(key, v) for v in value)
    raise TypeError(
        f"{key} = {value!r}: must be a string, a number or a bool, not {type(value).__name__}")


def normalize(scenario: Any = None, options: Optional[Mapping[str, Any]] = None,
              **kwargs: Any) -> Tuple[Optional[str], dict]:
    """(scenario file or None, {dotted key: text}) from a scenario and option overrides.

    ``scenario`` is None, the path of an INI scenario file, or a mapping of options. ``options``
    and keyword arguments override it, in that order.
    """
    file: Optional[str] = None
    values: dict = {}
    sources = []
    if scenario is None:
        pass
    elif isinstance(scenario, (str, os.PathLike)):
        file = os.fspath(scenario)
    elif isinstance(scenario, Mapping):
        sources.append(scenario)
    else:
        raise TypeError(
            f"scenario = {scenario!r}: must be the path of a scenario file or a dict of options")
    if options is not None:
        if not isinstance(options, Mapping):
            raise TypeError(f"options = {options!r}: must be a dict of options")
        sources.append(options)
    sources.append(kwargs)
    for source in sources:
        for name, value in source.items():
            if not isinstance(name, str):
                raise TypeError(f"{name!r}: option names are strings")
            key = key_of(name)
            values[key] = text_of(key, value)
    return file, values
