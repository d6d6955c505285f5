"""Strict mode: the defensive checks a partition must pass before it runs in daily mode.

Two checks, both driven by the definition's upstreams (no per-processor code):

* **Upstream Failure** (status check): for the expected dates the run needs, the latest state of
  each upstream processor in an earlier phase - and of a same-phase upstream read over a lookback
  window - is ``success`` and fresh (``freshness``: a stale
  input - its code changed, or what it read was rebuilt - is as good as a missing one). ``failed``,
  ``blocked``, ``stale``, a ``running`` whose lease expired, a ``waiting`` that expired, or a
  missing partition *on the last date of the window* (the run's own date, or yesterday for
  forward-looking readers) block. A *live* running or waiting upstream is not a block: the report
  says ``waiting`` and the runner retries with backoff. Earlier dates of a lookback window are
  covered by the gap check (data loaded outside Cascade has no state). A window with no expected
  date (a season's opening day reading "until yesterday") passes.
* **Data Gaps** (lookback gap detection): every *expected* date (calendar-aware: dates without data are
  not gaps) in the lookback window of every upstream - other phases' and the same phase's - has
  rows in the upstream table. One parameterized query per upstream table covering the whole
  window, never one per date. Lookback 30 on 2025-01-31 checks 2025-01-01..2025-01-31; a lookback
  of 10 expected dates checks from the 10th expected date back.

Both use the pipeline's one calendar: a window never reaches before the declared ``history_start``
(the pipeline's, or the upstream processor's own: a *short window by declaration*: checked and read
from the history start on, and said so in the
check's detail, which is recorded with the run), and with expected dates from data a date the
schedule does not cover yet is expected (the detail names those dates).

A failed check yields a ``Blocked`` reason whose resolution ``recovery.next_steps`` computes from
state (the root cause, then one command that works when pasted); an error inside a check is raised
as ``TransientError`` (retry), never treated as a pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timezone
from typing import Any

from cascade.definition.calendar import iso
from cascade.definition.model import Pipeline, Processor
from cascade.definition.versions import Versions
from cascade.errors import Blocked, TransientError
from cascade.runtime.recovery import next_steps
from cascade.state.freshness import Freshness
from cascade.state.status import Status
from cascade.state.tracker import Partition, Tracker

UPSTREAM_FAILURE = "Upstream Failure"
DATA_GAPS = "Data Gaps"


@dataclass
class CheckResult:
    name: str
    upstream: str
    passed: bool
    seconds: float
    queries: int
    detail: str = ""
    blocked: Blocked | None = None
    waiting: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "upstream": self.upstream, "passed": self.passed,
                "seconds": round(self.seconds, 4), "queries": self.queries, "detail": self.detail}


@dataclass
class CheckReport:
    results: list[CheckResult] = field(default_factory=list)
    skipped_reason: str = ""
    waiting: str = ""  # a live upstream run to wait for (transient), "" when none

    @property
    def blocked(self) -> Blocked | None:
        return next((r.blocked for r in self.results if r.blocked), None)

    @property
    def queries(self) -> int:
        return sum(r.queries for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped_reason or None, "queries": self.queries,
                "seconds": round(sum(r.seconds for r in self.results), 4),
                "results": [r.to_dict() for r in self.results]}


class Checks:
    """Runs strict-mode checks for one processor and date."""

    def __init__(self, pipeline: Pipeline, tracker: Tracker, warehouse: Any, versions: Versions | None = None) -> None:
        self.pipeline = pipeline
        self.tracker = tracker
        self.warehouse = warehouse
        self.versions = versions

    def run(self, proc: Processor, day: date) -> CheckReport:
        report = CheckReport()
        try:
            status = self.upstream_status(proc, day)
            report.results.append(status)
            if status.waiting:
                report.waiting = status.detail
                return report  # the gap check waits too: the live run may be writing that data
            report.results.extend(self.lookback_gaps(proc, day))
        except TransientError:
            raise
        except Exception as exc:  # a check that cannot answer must not pass
            raise TransientError(f"strict-mode check for {proc.name} {day} could not run: {exc}",
                                 processor=proc.name, date=day.isoformat()) from exc
        return report

    # ------------------------------------------------------------------ upstream status
    def upstream_status(self, proc: Processor, day: date) -> CheckResult:
        started = time.perf_counter()
        ups = self.pipeline.cross_phase_upstreams(proc)
        needed: dict[str, list[date]] = {}
        must_exist: dict[str, date] = {}
        for u in ups:
            start, end = u.window(day, self.pipeline.calendar)
            expected = self.pipeline.calendar.expected_dates(start, end, u.processor)
            if expected:  # an empty expected window (a season's opening day) needs nothing
                needed[u.processor] = expected
                must_exist[u.processor] = expected[-1]
        # A same-phase upstream read over a lookback window: its partitions in the window must not be
        # failed, blocked or stale either (the same-phase gate already waited for the run's own date;
        # a date without a partition is the gap check's).
        same = [u for u in proc.upstreams if u.has_lookback and u not in ups]
        for u in same:
            start, end = u.window(day, self.pipeline.calendar)
            expected = self.pipeline.calendar.expected_dates(start, end, u.processor)
            if expected:
                needed[u.processor] = sorted(set(needed.get(u.processor, [])) | set(expected))
                must_exist.setdefault(u.processor, date.max)  # never "missing on the run date" here
        ups = [*ups, *same]
        all_dates = sorted({d for ds in needed.values() for d in ds})
        states = self.tracker.partitions(needed.keys(), all_dates) if needed else {}
        # A stale input (its code changed, or what it read was rebuilt) is as good as a missing one.
        fresh = Freshness(self.pipeline, dict(states), load=self.tracker.partitions_by_keys, versions=self.versions)
        stale = fresh.evaluate([k for k, st in states.items() if st.status == Status.SUCCESS])
        now = self.tracker.clock()
        bad: dict[str, list[tuple[str, Partition]]] = {}
        live: list[str] = []
        for name, dates in needed.items():
            for d in dates:
                st = states[(name, d.isoformat())]
                if st.lease_alive(now) or (st.status == Status.WAITING and not self.tracker.waiting_expired(st, now)):
                    live.append(f"{name}@{d.isoformat()} ({st.status}, run {st.run_id})")
                    continue
                if st.status == Status.WAITING:  # its waiting expired: nothing re-checks it any more
                    bad.setdefault(name, []).append((_expired_waiting(st, now, self.tracker.waiting_since(name, d)), st))
                    continue
                key = (name, d.isoformat())
                reason = (f"stale ({stale[key].reason})" if key in stale
                          else _bad_state(st, now, is_run_date=(d == must_exist[name])))
                if reason:
                    bad.setdefault(name, []).append((reason, st))
        elapsed = time.perf_counter() - started
        label = ", ".join(needed) or "no upstream of another phase"
        if not needed:
            reason = ("reads no other phase (nor a lookback of its own phase)" if not ups else
                      "no expected date in its upstreams' windows (nothing to check)")
            return CheckResult(UPSTREAM_FAILURE, label, True, elapsed, 0, reason)
        if live and not bad:
            return CheckResult(UPSTREAM_FAILURE, label, True, elapsed, 0,
                               f"upstream still running: {', '.join(live[:5])}", waiting=True)
        if not bad:
            return CheckResult(UPSTREAM_FAILURE, label, True, elapsed, 0, f"{len(all_dates)} date(s) of {label} succeeded")
        name, items = next(iter(bad.items()))
        dates = sorted(st.data_date for _, st in items)
        first_error = next((st.error for _, st in items if st.error), "")
        states_txt = sorted({reason for reason, _ in items})
        title = self.pipeline.phase(proc.phase).title
        resolution = next_steps(self.pipeline, self.tracker, self.warehouse.project, proc, day, name, dates)
        blocked = Blocked(
            check=UPSTREAM_FAILURE, upstream=name, dates=dates,
            detail=(f"{title} BLOCKED: Upstream Failure — upstream processor {name} is {'/'.join(states_txt)} "
                    f"for {dates}" + (f" ({first_error[:200]})" if first_error else "")),
            resolution=resolution)
        return CheckResult(UPSTREAM_FAILURE, label, False, elapsed, 0, blocked.detail, blocked)

    # ------------------------------------------------------------------ lookback gaps
    def lookback_gaps(self, proc: Processor, day: date) -> list[CheckResult]:
        results = []
        for u in proc.upstreams:  # other phases' and the same phase's upstreams
            if not u.has_lookback:
                continue
            started = time.perf_counter()
            table = self.pipeline.processor(u.processor).output
            start, end = u.window(day, self.pipeline.calendar)
            expected = self.pipeline.calendar.dates_with_rows(start, end, u.processor)
            present = self.warehouse.present_dates(table, start, end) if expected else set()
            missing = [d for d in expected if d not in present]
            elapsed = time.perf_counter() - started
            table_id = f"{self.pipeline.dataset_id(table.dataset)}.{table.name}"
            notes = _window_notes(self.pipeline.calendar, u, day, missing or expected)
            if not missing:
                results.append(CheckResult(DATA_GAPS, table_id, True, elapsed, 1,
                                           f"{len(expected)} expected date(s) {start}..{end} present in {table_id}"
                                           + notes))
                continue
            title = self.pipeline.phase(proc.phase).title
            blocked = Blocked(
                check=DATA_GAPS, upstream=table_id, dates=iso(missing),
                detail=f"{title} BLOCKED: Data Gaps — missing dates {iso(missing)} in {table_id}" + notes,
                resolution=next_steps(self.pipeline, self.tracker, self.warehouse.project, proc, day, u.processor,
                                      iso(missing)))
            results.append(CheckResult(DATA_GAPS, table_id, False, elapsed, 1, blocked.detail, blocked))
        return results


    # ------------------------------------------------------------------ backfill-mode inputs
    def missing_inputs(self, proc: Processor, day: date) -> str:
        """For a backfill-mode run (strict mode off): the same-date upstreams of other phases must have
        succeeded - one batched Firestore read. Returns what is missing ("" when all is there)."""
        cal = self.pipeline.calendar  # an upstream skipped by declaration on the date is done and empty
        names = [u.processor for u in self.pipeline.cross_phase_upstreams(proc)
                 if u.window(day, cal)[1] == day and not cal.skipped_by_declaration(day, u.processor)]
        if not names:
            return ""
        states = self.tracker.partitions(names, [day])
        bad = {n: s.status for (n, _), s in states.items() if s.status != Status.SUCCESS}
        if not bad:
            return ""
        first = self.pipeline.processor(next(iter(bad)))
        return (f"{proc.name} cannot run for {day} in backfill mode: same-date input(s) "
                + ", ".join(f"{n} ({st})" for n, st in bad.items())
                + f" not successful; run them first: cascade backfill --start {day} --end {day} --phase {first.phase}"
                + f", then: cascade backfill --start {day} --end {day} --processor {proc.name}")


def _window_notes(calendar, upstream, day: date, dates: list[date]) -> str:
    """What a gap check's detail says about its window: a short window by declaration (it reaches
    before the history start), and the dates expected only because the schedule does not cover them."""
    notes = []
    short = upstream.short_window(day, calendar)
    if short:
        notes.append(f"short window by declaration: {short}")
    unknown = [d for d in dates if calendar.is_unknown(d)]
    if unknown:
        notes.append(f"{', '.join(iso(unknown[:5]))}{' ...' if len(unknown) > 5 else ''}: "
                     + calendar.note(unknown[0]))
    return "".join(f" ({n})" for n in notes)


def _expired_waiting(st: Partition, now, since) -> str:
    """An upstream whose ``waiting`` expired: since when it waits, for how long, and when it was
    last re-checked (its trigger's messages are gone, so it will not move on by itself)."""
    from cascade.runtime.durations import duration

    began = since or st.started_at or st.finished_at or now
    last = st.finished_at or began
    return (f"waiting since {_stamp(began)} ({duration((now - began).total_seconds())}), "
            f"not re-checked since {_stamp(last)}")


def _stamp(t) -> str:
    return f"{t.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


def _bad_state(st: Partition, now, is_run_date: bool) -> str:
    if st.status in (Status.FAILED, Status.BLOCKED):
        return str(st.status)
    if st.status == Status.RUNNING and not st.lease_alive(now):
        return "running with an expired lease (crashed)"
    if st.status == Status.MISSING and is_run_date:
        return str(Status.MISSING)
    return ""
