"""Quality gates: declared assertions on a processor's output partition, evaluated right after its
write and before the partition can be recorded ``success``.

Declared per processor in the definition (``gates:``):

* ``{row_count: {min: 1, max: 500}}`` - the partition's row count within bounds;
  ``{row_count: {within_pct_of_trailing_median: 50, days: 14}}`` - within 50 % of the median row
  count of the trailing 14 expected dates that have rows (no history yet: passes, saying so);
* ``{not_null: [col, ...]}`` - no NULL in those columns;
* ``{range: {column: c, min: 0.01, max: 100}}`` - every non-NULL value within the bounds;
* ``{sql: "SELECT ... FROM {dataset.table} WHERE ... = @data_date AND <bad>", name: n}`` - a SELECT
  returning the offending rows (placeholders resolved like processor SQL; ``@data_date`` and
  ``@window_start`` are parameters); any row fails the gate.

Every ``row_count``, ``not_null`` and ``range`` gate of a partition is evaluated by **one** query
(one ``COUNT``/``COUNTIF`` per gate, grouped by date so the trailing row counts come along); each
``sql`` gate is one more query. The queries are the warehouse's (``gate_counts``, ``null_sample``,
``outside_sample``, ``offending_rows``); this module judges what they return. Only a failed gate costs one more query, for a sample of its
offending rows (at most ``SAMPLE_ROWS``, values cut to ``SAMPLE_VALUE_CHARS``).

A failed gate is a permanent failure of the partition (``QualityGateError``): recorded ``failed``
with the reason, the sample and the one ``cascade trigger`` command that re-runs it, alerted once;
the phase cannot complete, so nothing downstream runs. Results (passed or not) are recorded with the
run, like the strict-mode ``checks``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from cascade.definition.model import Gate, Pipeline, Processor
from cascade.errors import PermanentError, ProcessorError
from cascade.runtime import recovery

SAMPLE_ROWS = 5
SAMPLE_VALUE_CHARS = 80
MAX_DETAIL_CHARS = 1200  # the failure reason stays well inside the run record's error bound


class QualityGateError(ProcessorError, PermanentError):
    """A declared quality gate failed for a partition: its rows are written, the partition is failed."""


@dataclass
class GateResult:
    name: str
    kind: str
    passed: bool
    detail: str
    observed: dict[str, Any] = field(default_factory=dict)
    sample: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "passed": self.passed, "detail": self.detail,
                "observed": self.observed, "sample": self.sample}


@dataclass
class GateReport:
    results: list[GateResult] = field(default_factory=list)
    queries: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> list[GateResult]:
        return [r for r in self.results if not r.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": not self.failed, "queries": self.queries, "seconds": round(self.seconds, 4),
                "results": [r.to_dict() for r in self.results]}


class Gates:
    """Evaluates the gates of one processor for one date against its output table."""

    def __init__(self, pipeline: Pipeline, warehouse: Any) -> None:
        self.pipeline = pipeline
        self.warehouse = warehouse

    def enforce(self, proc: Processor, day: date) -> GateReport | None:
        """Evaluate; None when ``proc`` declares no gates. Raises ``QualityGateError`` when one fails
        (its ``report`` attribute holds every result)."""
        report = self.evaluate(proc, day)
        if report is None or not report.failed:
            return report
        iso = day.isoformat()
        details = "; ".join(r.detail for r in report.failed)
        if len(details) > MAX_DETAIL_CHARS:
            details = details[:MAX_DETAIL_CHARS] + " ..."
        err = QualityGateError(
            f"{proc.name} {iso}: quality gate(s) {[r.name for r in report.failed]} failed - the rows are written "
            f"but the partition is failed, so phase {proc.phase} does not complete and nothing downstream runs. "
            f"Fix the cause, then re-run: {recovery.rerun_command(proc, day)}. Details: {details}",
            processor=proc.name, date=iso, gates=[r.name for r in report.failed])
        err.report = report  # type: ignore[attr-defined]
        raise err

    def evaluate(self, proc: Processor, day: date) -> GateReport | None:
        if not proc.gates:
            return None
        started = time.perf_counter()
        report = GateReport()
        builtin = [g for g in proc.gates if g.kind != "sql"]
        if builtin:
            report.results.extend(self._builtin(proc, day, builtin, report))
        for gate in proc.gates:
            if gate.kind == "sql":
                report.results.append(self._sql(proc, day, gate, report))
        report.seconds = time.perf_counter() - started
        return report

    # ------------------------------------------------------------------ row_count, not_null, range
    def _builtin(self, proc: Processor, day: date, gates: list[Gate], report: GateReport) -> list[GateResult]:
        history = max((g.days for g in gates if g.within_pct is not None), default=0)
        start = self.pipeline.calendar.nth_expected_on_or_before(day - timedelta(days=1), history) if history else day
        start = min(start, day)
        rows = self.warehouse.gate_counts(proc, gates, day, start)
        report.queries += 1
        today = next((r for r in rows if r["d"] == day), {"n": 0})
        n = int(today.get("n") or 0)
        trailing = {r["d"]: int(r["n"]) for r in rows if r["d"] != day}
        results = []
        for i, g in enumerate(gates):
            if g.kind == "row_count":
                results.append(self._row_count(g, n, trailing, start, day))
            elif g.kind == "not_null":
                nulls = {c: int(today.get(f"g{i}_{j}") or 0) for j, c in enumerate(g.columns)}
                bad = {c: k for c, k in nulls.items() if k}
                detail = (f"{g.name}: no NULL in {list(g.columns)} ({n} rows)" if not bad else
                          f"{g.name}: " + ", ".join(f"{k} of {n} rows have NULL {c}" for c, k in bad.items()))
                result = GateResult(g.name, g.kind, not bad, detail, {"rows": n, "nulls": nulls})
                if bad:
                    result.sample = self._sample(report, self.warehouse.null_sample(proc, day, list(bad), SAMPLE_ROWS))
                    result.detail += f"; sample: {result.sample}"
                results.append(result)
            elif g.kind == "range":
                col, outside = g.columns[0], int(today.get(f"g{i}") or 0)
                bounds = f"{'' if g.min is None else g.min}..{'' if g.max is None else g.max}"
                result = GateResult(g.name, g.kind, outside == 0,
                                    f"{g.name}: {outside} of {n} rows have {col} outside {bounds}",
                                    {"rows": n, "outside": outside, "min": g.min, "max": g.max})
                if outside:
                    result.sample = self._sample(report, self.warehouse.outside_sample(proc, day, g, SAMPLE_ROWS))
                    result.detail += f"; sample: {result.sample}"
                results.append(result)
        return results

    def _row_count(self, g: Gate, n: int, trailing: dict[date, int], start: date, day: date) -> GateResult:
        problems, observed = [], {"rows": n}
        if g.min is not None and n < g.min:
            problems.append(f"{n} rows, fewer than the minimum {g.min:g}")
        if g.max is not None and n > g.max:
            problems.append(f"{n} rows, more than the maximum {g.max:g}")
        note = ""
        if g.within_pct is not None:
            counts = [trailing[d] for d in self.pipeline.calendar.expected_dates(start, day - timedelta(days=1))
                      if d in trailing]
            if counts:
                median = statistics.median(counts)
                observed.update(trailing_median=median, trailing_dates=len(counts))
                low, high = median * (1 - g.within_pct / 100), median * (1 + g.within_pct / 100)
                if not low <= n <= high:
                    problems.append(f"{n} rows, not within {g.within_pct:g}% of the trailing median {median:g} "
                                    f"({len(counts)} dates from {start.isoformat()})")
            else:
                note = f" (no trailing history since {start.isoformat()}: median not checked)"
        detail = f"{g.name}: " + ("; ".join(problems) if problems else f"{n} rows{note}")
        return GateResult(g.name, g.kind, not problems, detail, observed)

    # ------------------------------------------------------------------ samples and sql gates
    @staticmethod
    def _sample(report: GateReport, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A failed gate's sample of offending rows (one more query), as plain values."""
        report.queries += 1
        return [_plain_row(r) for r in rows]

    def _sql(self, proc: Processor, day: date, gate: Gate, report: GateReport) -> GateResult:
        rows = self.warehouse.offending_rows(proc, gate, day, SAMPLE_ROWS + 1)
        report.queries += 1
        sample = [_plain_row(r) for r in rows[:SAMPLE_ROWS]]
        if not rows:
            return GateResult(gate.name, gate.kind, True, f"{gate.name}: no offending rows", {"offending": 0})
        many = f"more than {SAMPLE_ROWS}" if len(rows) > SAMPLE_ROWS else str(len(rows))
        return GateResult(gate.name, gate.kind, False, f"{gate.name}: {many} offending rows; sample: {sample}",
                          {"offending": len(rows) if len(rows) <= SAMPLE_ROWS else f">{SAMPLE_ROWS}"}, sample)


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if isinstance(v, (date, datetime)):
            v = v.isoformat()
        elif isinstance(v, Decimal):
            v = float(v)
        elif isinstance(v, str) and len(v) > SAMPLE_VALUE_CHARS:
            v = v[:SAMPLE_VALUE_CHARS] + "..."
        elif v is not None and not isinstance(v, (int, float, bool)):
            v = str(v)[:SAMPLE_VALUE_CHARS]
        out[k] = v
    return out
