"""Freshness: whether a succeeded partition can still be believed, derived from what it recorded.

Nothing here is stored: a partition is **fresh** while

1. the version of the code that built it (``versions``) equals its processor's version in the
   definition in use, and
2. every input partition it read is still the one it read (the same run) and is itself fresh.

Otherwise it is **stale**, with its causes, e.g. ``code changed: sql`` or
``input station_daily@2025-01-10 rebuilt at 2025-02-01 10:02:11 (run ...)``. A partition built before
versions were recorded has nothing to compare and counts as fresh. Only succeeded partitions are
fresh or stale; every other status speaks for itself.

What a run read is recorded by the run (``input_record``): for every upstream, the expected dates of
its window, each with the run id of the input partition at the time (``""`` when the input had no
state: data loaded outside Cascade). The content of a rebuilt input is not compared: a rebuild makes
its readers stale even when it wrote the same rows.

``Freshness`` evaluates a set of partitions, reading the states of the inputs they name in batches
(one batched read per level of the dependency graph) through a ``load(keys)`` callable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable, Iterable, Mapping

from cascade.definition.model import Pipeline, Processor
from cascade.definition.versions import Versions
from cascade.state.status import Status

Key = tuple[str, str]  # (processor, ISO date)
Loader = Callable[[Iterable[Key]], Mapping[Key, Any]]


def input_keys(pipeline: Pipeline, proc: Processor, day: date) -> list[Key]:
    """Every input partition a run of ``proc`` for ``day`` reads: per upstream, the expected dates of
    its window (same-date, lookback days or dates, until the previous day)."""
    cal = pipeline.calendar
    keys: list[Key] = []
    for u in proc.upstreams:
        lo, hi = u.window(day, cal)
        keys += [(u.processor, d.isoformat()) for d in cal.expected_dates(lo, hi)]
    return keys


def input_record(keys: Iterable[Key], states: Mapping[Key, Any]) -> dict[str, str]:
    """``{"processor@date": run_id}`` of the inputs as they are now (what the run is about to read)."""
    out = {}
    for key in keys:
        st = states.get(key)
        out[f"{key[0]}@{key[1]}"] = (st.run_id if st is not None and st.status == Status.SUCCESS else "")
    return out


@dataclass(frozen=True)
class Staleness:
    """Why a succeeded partition is stale: changed code parts and inputs, as readable reasons."""

    key: Key
    reasons: tuple[str, ...]
    code: tuple[str, ...] = ()
    inputs: tuple[Key, ...] = ()

    @property
    def reason(self) -> str:
        shown = list(self.reasons[:3])
        more = len(self.reasons) - len(shown)
        return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "code": list(self.code),
                "inputs": [f"{p}@{d}" for p, d in self.inputs]}


@dataclass
class Freshness:
    """Staleness of partitions under one definition; states are read as needed and cached."""

    pipeline: Pipeline
    states: dict[Key, Any] = field(default_factory=dict)
    load: Loader | None = None
    versions: Versions | None = None
    _memo: dict[Key, Staleness | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.versions is None:
            self.versions = Versions(self.pipeline)
        self.states = dict(self.states)

    # ------------------------------------------------------------------ queries
    def stale(self, key: Key) -> Staleness | None:
        """Why ``key`` is stale, or None when it is fresh (or not a success)."""
        self.evaluate([key])
        return self._memo.get(key)

    def evaluate(self, keys: Iterable[Key]) -> dict[Key, Staleness]:
        """The stale partitions among ``keys`` (reading what their recorded inputs name first)."""
        keys = list(keys)
        self._load_closure(keys)
        out = {}
        for key in keys:
            s = self._eval(key, set())
            if s is not None:
                out[key] = s
        return out

    # ------------------------------------------------------------------ internals
    def _recorded_inputs(self, st: Any) -> dict[str, str]:
        raw = getattr(st, "raw", None) or {}
        inputs = raw.get("inputs")
        return inputs if isinstance(inputs, dict) else {}

    def _load_closure(self, keys: list[Key]) -> None:
        frontier = [k for k in keys if k not in self.states]
        seen: set[Key] = set(self.states)
        if frontier and self.load is not None:
            self.states.update(self.load(frontier))
        frontier = list(keys)
        while frontier and self.load is not None:
            need: set[Key] = set()
            for key in frontier:
                st = self.states.get(key)
                if st is None or st.status != Status.SUCCESS or key in self._memo:
                    continue
                for label in self._recorded_inputs(st):
                    k = _key(label)
                    if k is not None and k not in seen and k not in self.states:
                        need.add(k)
            seen |= need
            if not need:
                break
            self.states.update(self.load(sorted(need)))
            frontier = sorted(need)

    def _eval(self, key: Key, visiting: set[Key]) -> Staleness | None:
        if key in self._memo:
            return self._memo[key]
        st = self.states.get(key)
        if st is None or st.status != Status.SUCCESS or key in visiting:
            return None
        visiting = visiting | {key}
        reasons: list[str] = []
        code: tuple[str, ...] = ()
        changed_inputs: list[Key] = []
        raw = getattr(st, "raw", None) or {}
        recorded = raw.get("version")
        try:
            version = self.versions.of(key[0])  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - a processor no longer in the definition
            version = None
        if version is None:
            reasons.append(f"processor {key[0]} is no longer in the definition")
        elif recorded and recorded != version.digest:
            code = tuple(version.changed_parts(raw.get("version_parts")))
            reasons.append("code changed: " + (", ".join(code) or "version"))
        for label, run_id in sorted(self._recorded_inputs(st).items()):
            k = _key(label)
            if k is None:
                continue
            cur = self.states.get(k)
            if cur is None:
                continue  # not read (no loader): nothing to say about it
            if cur.status != Status.SUCCESS:
                if run_id:
                    reasons.append(f"input {label} is {cur.status}")
                    changed_inputs.append(k)
                continue
            if cur.run_id != run_id:
                when = getattr(cur, "finished_at", None)
                at = f" at {when:%Y-%m-%d %H:%M:%S}" if when is not None else ""
                reasons.append(f"input {label} rebuilt{at} (run {cur.run_id})")
                changed_inputs.append(k)
                continue
            up = self._eval(k, visiting)
            if up is not None:
                reasons.append(f"input {label} is stale ({up.reasons[0]})")
                changed_inputs.append(k)
        result = Staleness(key, tuple(reasons), code, tuple(changed_inputs)) if reasons else None
        self._memo[key] = result
        return result


def _key(label: str) -> Key | None:
    proc, sep, day = label.rpartition("@")
    return (proc, day) if sep and proc and day else None
