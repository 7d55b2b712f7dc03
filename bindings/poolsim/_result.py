"""Results as Python objects: the result schema of DESIGN.md with attribute access, pandas forms
and notebook display."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any, Dict, Iterator, Optional

from . import _core

# Outcome codes of the per-request samples.
OUTCOMES = ("completed", "timeout", "connect_failed", "too_many_connections", "disconnect")


def flatten(value: Any, prefix: str = "") -> Dict[str, Any]:
    """{"wait_ms": {"p99": 1}} -> {"wait_ms.p99": 1}, as the command line's CSV does."""
    out: Dict[str, Any] = {}
    if isinstance(value, Mapping):
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    else:
        out[prefix] = value
    return out


class Section(Mapping):
    """A read-only part of a result: ``result.wait_ms.p99`` or ``result.wait_ms["p99"]``."""

    def __init__(self, data: Mapping):
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return _wrap(self._data[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return _wrap(self._data[name])
        except KeyError:
            raise AttributeError(f"no field {name!r} (fields: {', '.join(self._data)})") from None

    def __dir__(self):
        return list(self._data)

    def to_dict(self) -> dict:
        """A deep copy as plain dicts and lists."""
        return copy.deepcopy(dict(self._data))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self._data)})"


def _wrap(value: Any) -> Any:
    return Section(value) if isinstance(value, Mapping) else value


class Result(Section):
    """The result of ``simulate``, ``analytic``, ``live``, ``sqlalchemy_live`` or ``psycopg_live``.

    Fields are those of DESIGN.md's result schema, as attributes (``result.p_wait``,
    ``result.wait_ms.p99``, ``result.connections.peak_server``) or items. ``samples`` holds the
    per-request numpy arrays when they were asked for (``samples=True``).
    """

    def __init__(self, data: Mapping, samples: Optional[Mapping] = None):
        super().__init__(data)
        self._samples = samples

    @property
    def samples(self) -> Dict[str, Any]:
        """Per-request samples, one entry per request counted (after warm-up), as numpy arrays
        that share the simulator's memory (no copy): ``arrival_s`` (from the start of the run),
        ``wait_ms``, ``latency_ms`` (NaN unless completed), ``outcome`` (codes of
        ``poolsim.OUTCOMES``), ``replication``, ``process``."""
        if self._samples is None:
            raise ValueError("no samples: run with samples=True to keep them")
        return dict(self._samples)

    def samples_frame(self):
        """The samples as a pandas DataFrame, with ``outcome`` as a categorical of names."""
        import pandas as pd

        samples = self.samples
        frame = pd.DataFrame({k: v for k, v in samples.items() if k != "outcome"})
        frame.insert(3, "outcome", pd.Categorical.from_codes(samples["outcome"], OUTCOMES))
        return frame

    def to_series(self):
        """The result flattened to a pandas Series indexed "wait_ms.p99", "config.pool.size"..."""
        import pandas as pd

        return pd.Series(flatten(self._data), dtype=object)

    def table(self) -> str:
        """The command line's human table."""
        if self._data.get("mode") == "analytic":
            return "\n".join(f"{k:32} {v}" for k, v in flatten(self._data).items()) + "\n"
        return _core.table(json.dumps(self._data))

    def __repr__(self) -> str:
        d = self._data
        parts = [f"mode={d.get('mode')}"]
        for key in ("requests", "p_wait", "timeouts"):
            if key in d:
                parts.append(f"{key}={d[key]}")
        if "wait_ms" in d and "p99" in d["wait_ms"]:
            parts.append(f"wait_ms.p99={d['wait_ms']['p99']}")
        return f"<poolsim.Result {' '.join(parts)}>"

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in flatten(self._data).items()
                       if not k.startswith("config."))
        return f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>"


class Validation(Section):
    """``poolsim.validate``'s report: ``live`` and ``sim`` results and, per metric, the live
    figure, the simulated mean, its 95% half-width, the allowed difference and the verdict."""

    def __init__(self, data: Mapping, table: str):
        super().__init__(data)
        self._table = table

    @property
    def live(self) -> Result:
        return Result(self._data["live"])

    @property
    def sim(self) -> Result:
        return Result(self._data["sim"])

    def agreement_frame(self):
        """One row per metric: live, sim, ci95, allowed, within."""
        import pandas as pd

        return pd.DataFrame.from_dict(self._data["agreement"], orient="index")

    @property
    def verdict(self) -> str:
        """``"agrees"`` (every compared metric within its allowed difference), ``"differs"``,
        or ``"drift"``: with ``calibrate=True``, the machine's speed changed between the
        measurements before and after the live run (see ``drift``), and there is no verdict."""
        return self._data["verdict"]

    @property
    def drift(self) -> Optional[dict]:
        """With ``calibrate=True``: the measurements before and after the live run compared
        (``drifted``, ``rule``, ``lone_connect``, ``storm_round``); None without."""
        return self._data.get("drift")

    @property
    def agrees(self) -> bool:
        """Whether every compared metric is within its allowed difference and the machine did
        not drift during the run (a drifted run agrees with nothing: run it again)."""
        return self.verdict == "agrees"

    def table(self) -> str:
        return self._table

    def __repr__(self) -> str:
        if self.verdict == "drift":
            return "<poolsim.Validation no verdict: the machine's speed drifted during the run>"
        agreement = self._data["agreement"]
        within = sum(1 for a in agreement.values() if a["within"])
        return f"<poolsim.Validation {within} of {len(agreement)} metrics agree>"

    def _repr_html_(self) -> str:
        return self.agreement_frame()._repr_html_()


class SizeResult(Section):
    """``poolsim.size``'s answer: ``answers`` (one per max_overflow asked about) and the
    ``curve`` it came from."""

    def __init__(self, data: Mapping, table: str):
        super().__init__(data)
        self._table = table

    def curve_frame(self):
        """The curve as a DataFrame: pool.size, max_overflow, each target's value and bound."""
        import pandas as pd

        return pd.DataFrame([flatten(point) for point in self._data["curve"]])

    def table(self) -> str:
        return self._table

    def __repr__(self) -> str:
        return f"<poolsim.SizeResult {json.dumps(self._data.get('answers'))}>"
