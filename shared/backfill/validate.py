"""Data checks around a backfill: coverage per table, duplicate keys, NULL critical columns, preflight.

* ``coverage(app, start, end, phases)``: per output table, the expected dates (calendar-aware), the
  dates present, the missing list and the percentage - one query per table for the whole range.
* ``validate(app, start, end)``: per table, duplicate MERGE keys (GROUP BY the keys HAVING
  COUNT(*) > 1) and NULLs in the critical columns declared in the definition - two queries per table.
* ``outside_inputs(app, plan)``: every input a planned partition reads that the backfill itself does
  not produce - lookback history before ``--start`` (of selected upstreams too), upstreams not
  selected - verified per partition before anything runs: one query per upstream table. A
  partition whose inputs are short fails with the missing dates and the backfill that fills them
  (``--widen``: what they need in turn is rebuilt by the same command), then this one again.
* ``preflight(app, processors, start, end, threshold)``: before a backfill, the coverage of what
  the selected processors read but do not produce themselves - upstream tables over the range
  widened by the lookback, or raw files in the bucket for loaders - must reach ``threshold``
  (default 95 % of expected dates); lists the missing dates.

The queries are the warehouse's (``present_dates``, ``duplicate_keys``, ``null_counts``): parameterized,
identifiers (tables, columns) only from the pipeline definition.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any, Iterable

from cascade.backfill.plan import ordered_processors
from cascade.definition.model import Processor
from cascade.runtime.app import App
from cascade.state.freshness import Freshness
from cascade.state.status import Status

DEFAULT_THRESHOLD = 0.95


def _short(dates: list[str], limit: int = 12) -> str:
    return ", ".join(dates[:limit]) + (f", ... ({len(dates) - limit} more)" if len(dates) > limit else "")


@dataclass
class Coverage:
    source: str  # table id, or gs:// pattern for raw files
    processor: str
    phase: int
    start: str
    end: str
    expected: int
    present: int
    missing: list[str] = field(default_factory=list)
    stale: dict[str, str] = field(default_factory=dict)  # date -> why its partition is stale

    @property
    def pct(self) -> float:
        return 100.0 if not self.expected else round(100.0 * (self.expected - len(self.missing)) / self.expected, 2)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pct": self.pct}

    def render(self) -> str:
        return (f"{self.source:<58} {self.expected - len(self.missing):>4}/{self.expected:<4} {self.pct:6.2f}%"
                + (f"  missing: {_short(self.missing)}" if self.missing else "")
                + (f"  stale: {_short(sorted(self.stale))} (e.g. {next(iter(sorted(self.stale.items())))[1][:160]})"
                   if self.stale else ""))


def _processors(app: App, phases: Iterable[int] | None = None, processors: Iterable[str] | None = None) -> list[Processor]:
    names = set(processors or ())
    wanted = set(phases or ())
    return [p for p in ordered_processors(app.pipeline)
            if (not names or p.name in names) and (not wanted or p.phase in wanted)]


def table_coverage(app: App, proc: Processor, start: date, end: date) -> Coverage:
    """Coverage of ``proc``'s output table over ``start..end``: one query. Dates before its history
    start (the pipeline's or its own) are not expected: nothing is missing there."""
    expected = app.pipeline.calendar.dates_with_rows(start, end, proc.name)
    present = app.warehouse.present_dates(proc.output, start, end) if expected else set()
    missing = [d.isoformat() for d in expected if d not in present]
    table_id = f"{app.pipeline.dataset_id(proc.output.dataset)}.{proc.output.name}"
    return Coverage(table_id, proc.name, proc.phase, start.isoformat(), end.isoformat(), len(expected),
                    len(expected) - len(missing), missing)


def raw_coverage(app: App, proc: Processor, start: date, end: date) -> Coverage:
    """Coverage of a loader's raw files in the bucket over ``start..end``: one listing per source."""
    assert proc.source is not None
    pattern = str(proc.source["gcs_json"])
    prefix = pattern.split("{date}")[0]
    bucket = app.pipeline.bucket(app.project)
    names = {b.name for b in app.storage.list_blobs(bucket, prefix=prefix)}
    expected = app.pipeline.calendar.expected_dates(start, end, proc.name)
    missing = [d.isoformat() for d in expected if pattern.format(date=d.isoformat()) not in names]
    return Coverage(f"gs://{bucket}/{pattern}", proc.name, proc.phase, start.isoformat(), end.isoformat(),
                    len(expected), len(expected) - len(missing), missing)


def coverage(app: App, start: date, end: date, phases: Iterable[int] | None = None,
             processors: Iterable[str] | None = None) -> list[Coverage]:
    """Per table: the expected dates present, those missing, and those whose partition is stale
    (present, but built by other code or from inputs rebuilt since)."""
    procs = _processors(app, phases, processors)
    out = [table_coverage(app, p, start, end) for p in procs]
    days = app.pipeline.calendar.expected_dates(start, end)
    if procs and days:
        states = app.tracker.partitions([p.name for p in procs], days)
        fresh = Freshness(app.pipeline, dict(states), load=app.tracker.partitions_by_keys, versions=app.versions)
        stale = fresh.evaluate([k for k, st in states.items() if st.status == Status.SUCCESS])
        for cov in out:
            cov.stale = {d: s.reason for (n, d), s in stale.items() if n == cov.processor}
    return out


@dataclass
class TableValidation:
    table: str
    processor: str
    duplicate_keys: int = 0
    duplicate_examples: list[dict[str, Any]] = field(default_factory=list)
    null_critical: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.duplicate_keys and not any(self.null_critical.values())

    def problems(self) -> list[str]:
        out = []
        if self.duplicate_keys:
            ex = "; ".join(", ".join(f"{k}={v}" for k, v in e.items()) for e in self.duplicate_examples[:3])
            out.append(f"{self.table}: {self.duplicate_keys} duplicate key(s) (e.g. {ex})")
        for col, n in self.null_critical.items():
            if n:
                out.append(f"{self.table}: {n} row(s) with NULL critical column {col}")
        return out


def validate(app: App, start: date, end: date, phases: Iterable[int] | None = None,
             processors: Iterable[str] | None = None) -> list[TableValidation]:
    """Duplicate MERGE keys and NULL critical columns of every selected table over ``start..end``."""
    out = []
    for proc in _processors(app, phases, processors):
        t = proc.output
        res = TableValidation(f"{app.pipeline.dataset_id(t.dataset)}.{t.name}", proc.name)
        dupes = app.warehouse.duplicate_keys(t, start, end)
        res.duplicate_keys = len(dupes)
        res.duplicate_examples = [{k: (v.isoformat() if isinstance(v, date) else v) for k, v in r.items()}
                                  for r in dupes[:5]]
        if t.critical:
            res.null_critical = app.warehouse.null_counts(t, t.critical, start, end)
        out.append(res)
    return out


@dataclass
class OutsideNeed:
    """What one planned partition reads outside the backfill and cannot have: upstream dates without
    rows (``missing``) and partitions that failed, are blocked or are stale (``unusable``, with why)."""

    missing: dict[str, list[str]] = field(default_factory=dict)  # processor -> ISO dates
    unusable: dict[str, list[str]] = field(default_factory=dict)
    why: dict[tuple[str, str], str] = field(default_factory=dict)  # (processor, ISO date) -> state

    def dates(self) -> list[str]:
        return [d for ds in (*self.missing.values(), *self.unusable.values()) for d in ds]

    def processors(self) -> list[str]:
        return list(dict.fromkeys([*self.unusable, *self.missing]))


def outside_needs(app: App, plan: Any) -> dict[tuple[str, str], OutsideNeed]:
    """Partitions of ``plan`` (key -> what they lack) whose inputs outside the backfill are missing
    or cannot be read.

    An input is outside when its date is before ``--start`` / after ``--end`` or its processor is not
    selected; inside inputs are the wavefront's own dependencies. Presence is read from the
    upstream tables (data is the truth, whoever loaded it): one query per upstream table over the
    union of the dates needed, never one per date."""
    pipeline, cal = app.pipeline, app.pipeline.calendar
    selected = {p.name for p in plan.processors}
    needs: dict[tuple[str, str], list[tuple[str, date]]] = {}
    wanted: dict[str, set[date]] = {}
    for node in plan.nodes:
        for u in pipeline.processor(node.processor).upstreams:
            lo, hi = u.window(node.day, cal)
            for d in cal.expected_dates(lo, hi):
                if u.processor in selected and plan.start <= d <= plan.end:
                    continue
                needs.setdefault(node.key, []).append((u.processor, d))
                wanted.setdefault(u.processor, set()).add(d)
    present = {name: app.warehouse.present_dates(pipeline.processor(name).output, min(ds), max(ds))
               for name, ds in wanted.items()}
    # Rows alone are not enough: an input whose partition failed (a quality gate keeps its rows),
    # is blocked, or is stale is never read as if it were complete. No state at all is data loaded
    # outside Cascade: its rows are the truth.
    keys = sorted({(n, d.isoformat()) for n, ds in wanted.items() for d in ds})
    states = app.tracker.partitions_by_keys(keys) if keys else {}
    fresh = Freshness(pipeline, dict(states), load=app.tracker.partitions_by_keys, versions=app.versions)
    stale = fresh.evaluate([k for k, st in states.items() if st.status == Status.SUCCESS])
    bad_state = {k: (f"stale ({stale[k].reason})" if k in stale else f"{st.status}"
                     + (f" ({st.error[:120]})" if st.error else ""))
                 for k, st in states.items()
                 if k in stale or st.status in (Status.FAILED, Status.BLOCKED)}
    out: dict[tuple[str, str], OutsideNeed] = {}
    for key, items in needs.items():
        need = OutsideNeed()
        for name, d in items:
            iso = d.isoformat()
            if (name, iso) in bad_state:
                need.unusable.setdefault(name, []).append(iso)
                need.why[(name, iso)] = bad_state[(name, iso)]
            elif d not in present[name]:
                need.missing.setdefault(name, []).append(iso)
        if need.missing or need.unusable:
            out[key] = need
    return out


def outside_inputs(app: App, plan: Any) -> dict[tuple[str, str], str]:
    """Partitions of ``plan`` (key -> reason) whose inputs outside the backfill are missing or cannot
    be read, each reason ending with the backfill that fills them - with ``--widen``, so what those
    inputs need in turn (a lookback reading a lookback, a stale chain) is rebuilt by the same command
    - then "re-run this backfill"."""
    pipeline = app.pipeline
    out: dict[tuple[str, str], str] = {}
    for key, need in outside_needs(app, plan).items():
        what = []
        if need.missing:
            what.append("inputs outside the backfill are missing: "
                        + "; ".join(f"{pipeline.dataset_id(pipeline.processor(n).output.dataset)}."
                                    f"{pipeline.processor(n).output.name} lacks {_short(ds, 6)}"
                                    for n, ds in need.missing.items()))
        if need.unusable:
            what.append("inputs outside the backfill cannot be read: "
                        + "; ".join(f"{n}@{ds[0]} is {need.why[(n, ds[0])]}"
                                    + (f" (and {len(ds) - 1} more date(s))" if len(ds) > 1 else "")
                                    for n, ds in need.unusable.items()))
        dates = need.dates()
        fill = (f"cascade backfill --start {min(dates)} --end {max(dates)} "
                + " ".join(f"--processor {n}" for n in need.processors()) + " --widen")
        out[key] = "; ".join(what) + f"{FILL_FIRST}{fill}, then re-run this backfill"
    return out


FILL_FIRST = "; fill them first: "  # how the reason of a partition short of outside inputs gives its fix


@dataclass
class Preflight:
    threshold: float
    checks: list[Coverage] = field(default_factory=list)

    @property
    def failing(self) -> list[Coverage]:
        return [c for c in self.checks if c.expected and c.pct + 1e-9 < 100.0 * self.threshold]

    @property
    def ok(self) -> bool:
        return not self.failing

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "threshold": self.threshold, "checks": [c.to_dict() for c in self.checks],
                "failing": [c.source for c in self.failing]}

    def render(self) -> str:
        lines = [f"preflight (upstream coverage >= {100 * self.threshold:.0f}% of expected dates):"]
        lines += ["  " + ("ok   " if c not in self.failing else "FAIL ") + c.render() for c in self.checks]
        if not self.checks:
            lines.append("  nothing upstream to check")
        if self.failing:
            lines.append("  backfill the missing upstream dates first (or pass --skip-preflight / "
                         "--preflight-threshold to run anyway)")
        return "\n".join(lines)


def preflight(app: App, processors: list[Processor], start: date, end: date,
              threshold: float = DEFAULT_THRESHOLD) -> Preflight:
    """Coverage of what ``processors`` read but do not produce (windows widened by their lookbacks)."""
    selected = {p.name for p in processors}
    first: dict[str, date] = {}
    last: dict[str, date] = {}
    for p in processors:
        for u in p.upstreams:
            if u.processor not in selected:
                lo, _ = u.window(start, app.pipeline.calendar)
                _, hi = u.window(end, app.pipeline.calendar)
                first[u.processor] = min(first.get(u.processor, lo), lo)
                last[u.processor] = max(last.get(u.processor, hi), hi)
    report = Preflight(threshold)
    for p in processors:
        if p.source is not None:
            report.checks.append(raw_coverage(app, p, start, end))
    for name in [p.name for p in ordered_processors(app.pipeline) if p.name in first]:
        proc = app.pipeline.processor(name)
        report.checks.append(table_coverage(app, proc, first[name], last[name]))
    return report
