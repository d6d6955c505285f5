"""The backfill plan: which partitions (processor x date) of a range exist, which will run, at what cost.

Owns the request's validation (range, phases, processors), the choice of processors (the cascade
chain of the first phase by default), the dates x processors status matrix built from ONE batched
Firestore read plus the calendar (done / missing / failed / blocked / running / no-game), the list
of partitions to run with the generation each runs at, and the estimate of BigQuery jobs. A plan is
recomputed from state on every invocation, so re-running a command does only what is still missing,
failed or blocked - never "resume from the last date".

Generations: a partition that exists runs at its own generation (a failed one is retried as the same
work); a missing one - or one done at an older generation than its phase's newest on that date
("outdated": an interrupted rerun or ``--force``) - at the highest generation of its phase on that
date, so the phase ends on one generation and completion tracking sees it complete; ``force`` re-runs
everything, done partitions included, at a NEW generation of the date allocated for the whole
cascade (``Tracker.new_generation``, one per date, when the backfill starts; a dry run shows the
next one), so completion tracking treats it as new work, no claim is reused, and the earlier runs'
history stays intact.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Iterable

from ..calendar import date_range
from ..errors import CascadeError, UnknownProcessorError
from ..pipeline import Pipeline, Processor
from ..state import Status
from ..tracking import BLOCKED, FAILED, RUNNING, SKIPPED, SUCCESS, WAITING, Partition

MAX_RANGE_DAYS = 3 * 366
DONE, MISSING, NO_GAME, STALE, OUTDATED = Status.DONE, Status.MISSING, Status.NO_GAME, Status.EXPIRED, Status.OUTDATED
# One character per state in the printed matrix.
SYMBOLS = {DONE: "#", MISSING: ".", FAILED: "F", BLOCKED: "B", RUNNING: "R", STALE: "r", OUTDATED: "o",
           NO_GAME: " ", WAITING: "w"}
LEGEND = ("# done  . missing  F failed  B blocked  w waiting  R running  r running (lease expired)  "
          "o done at an older generation than its phase (an interrupted rerun/--force)  (blank) no games")
# States that will run (running under a live lease is waited for: the runner answers "busy").
TO_RUN = (MISSING, FAILED, BLOCKED, STALE, RUNNING, OUTDATED, WAITING)


class UsageError(CascadeError):
    """A backfill request that cannot be planned (bad range, unknown phase or processor)."""


@dataclass(frozen=True)
class Node:
    """One partition the backfill will run, with the generation it runs at."""

    processor: str
    phase: int
    day: date
    generation: int
    table: str  # logical output table (dataset.name): the per-table MERGE limit's key
    order: int  # position in the pipeline's dependency order (tie-break of the priority)
    state: str  # its state in the plan (missing, failed, ...)

    @property
    def key(self) -> tuple[str, str]:
        return (self.processor, self.day.isoformat())

    @property
    def label(self) -> str:
        return f"{self.processor}@{self.day.isoformat()}"


def select_processors(pipeline: Pipeline, phases: Iterable[int] = (), processors: Iterable[str] = ()) -> list[Processor]:
    """The processors a backfill covers, in phase then dependency order.

    ``processors`` wins over ``phases``; neither means the cascade chain of the first phase.
    Raises UsageError for an unknown phase or processor.
    """
    phases, processors = list(phases), list(processors)
    try:
        if processors:
            chosen = {pipeline.processor(n).name for n in processors}
        else:
            if not phases:
                phases = pipeline.downstream_phases(pipeline.phases[0].number)
            for n in phases:
                pipeline.phase(n)
            chosen = {p.name for p in pipeline.processors if p.phase in set(phases)}
    except UnknownProcessorError as exc:
        raise UsageError(exc.message) from exc
    return [p for p in ordered_processors(pipeline) if p.name in chosen]


def ordered_processors(pipeline: Pipeline) -> list[Processor]:
    return [p for ph in sorted(x.number for x in pipeline.phases) for p in pipeline.processors_of(ph)]


def check_range(start: date, end: date) -> None:
    if end < start:
        raise UsageError(f"--end {end} is before --start {start}")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise UsageError(f"{start}..{end} spans {(end - start).days + 1} days; a backfill covers at most 3 years "
                         f"- split it into several commands")


def cell_state(p: Partition, expected: bool, now, phase_generation: int = 0) -> str:
    if not expected:
        return NO_GAME
    if p.status == SUCCESS:
        return DONE if p.generation >= phase_generation else OUTDATED
    if p.status == RUNNING:
        return RUNNING if p.lease_alive(now) else STALE
    if p.status in (FAILED, BLOCKED, WAITING):
        return p.status
    return MISSING  # never run, or skipped on a date the calendar now expects


@dataclass
class Plan:
    pipeline: Pipeline
    start: date
    end: date
    processors: list[Processor]
    dates: list[date]
    cells: dict[tuple[str, str], str]
    states: dict[tuple[str, str], Partition]
    nodes: list[Node]
    force: bool = False
    extra_queries: dict[str, int] = field(default_factory=dict)

    @property
    def phases(self) -> list[int]:
        return sorted({p.phase for p in self.processors})

    @property
    def expected_dates(self) -> list[date]:
        return [d for d in self.dates if self.pipeline.calendar.is_expected(d)]

    def counts(self) -> dict[str, int]:
        c = Counter(self.cells.values())
        return {k: c.get(k, 0) for k in (DONE, MISSING, FAILED, BLOCKED, WAITING, RUNNING, STALE, OUTDATED, NO_GAME)}

    def estimate(self) -> dict[str, int]:
        """BigQuery jobs: one MERGE per partition to run (strict checks are skipped in backfill mode),
        plus the preflight and validation queries."""
        merges = len(self.nodes)
        est = {"partitions": merges, "merge_jobs": merges, "check_queries": 0, **self.extra_queries}
        est["bigquery_jobs"] = merges + sum(self.extra_queries.values())
        return est

    def to_dict(self, matrix: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "start": self.start.isoformat(), "end": self.end.isoformat(), "force": self.force,
            "phases": self.phases, "processors": [p.name for p in self.processors],
            "dates": len(self.dates), "expected_dates": len(self.expected_dates),
            "cells": len(self.cells), "counts": self.counts(), "to_run": len(self.nodes),
            "to_run_by_processor": dict(Counter(n.processor for n in self.nodes)),
            "estimate": self.estimate(),
        }
        if matrix:
            d["matrix"] = {day.isoformat(): {p.name: self.cells[(p.name, day.isoformat())] for p in self.processors}
                           for day in self.dates}
        return d

    def render(self) -> str:
        """The dates x processors matrix, one line per date, and the totals."""
        names = [p.name for p in self.processors]
        lines = [f"backfill plan {self.start}..{self.end}: phases {self.phases}, {len(names)} processors x "
                 f"{len(self.dates)} dates ({len(self.expected_dates)} with games)"
                 + ("; --force: done partitions re-run with a new generation" if self.force else "")]
        lines += [f"  [{i:>2}] phase {p.phase} {p.name}" for i, p in enumerate(self.processors)]
        header = "".join(f"{i % 100:>3}" for i in range(len(names)))
        lines.append(f"{'date':<12}{header}")
        for day in self.dates:
            row = "".join(f"{SYMBOLS[self.cells[(n, day.isoformat())]]:>3}" for n in names)
            note = "" if self.pipeline.calendar.is_expected(day) else \
                f"   no games: {self.pipeline.calendar.reason_not_expected(day)}"
            lines.append(f"{day.isoformat():<12}{row}{note}")
        lines.append(LEGEND)
        c = self.counts()
        lines.append("partitions: " + ", ".join(f"{v} {k}" for k, v in c.items()))
        e = self.estimate()
        by = Counter(n.processor for n in self.nodes)
        lines.append(f"will run {len(self.nodes)} partitions"
                     + (" (" + ", ".join(f"{n} {by[n]}" for n in names if by[n]) + ")" if by else ""))
        lines.append(f"estimated BigQuery jobs: {e['bigquery_jobs']} ({e['merge_jobs']} MERGEs, 0 strict-mode check "
                     f"queries in backfill mode"
                     + "".join(f", {v} {k.replace('_', ' ')}" for k, v in self.extra_queries.items()) + ")")
        return "\n".join(lines)


def build_plan(pipeline: Pipeline, tracker: Any, processors: list[Processor], start: date, end: date,
               force: bool = False, now=None, allocate: Any = None) -> Plan:
    """The plan of ``processors`` over ``start..end`` from one batched Firestore read.

    ``allocate(day) -> int`` (with ``force``) allocates the new generation of each date; without it
    (a dry run) the plan shows the next generation without allocating it."""
    check_range(start, end)
    dates = list(date_range(start, end))
    cal = pipeline.calendar
    expected = [d for d in dates if cal.is_expected(d)]
    now = now or tracker.clock()
    # Every processor of the selected phases is read, so generations are per phase (not per selection).
    phase_members = {ph: [p.name for p in pipeline.processors_of(ph)] for ph in {p.phase for p in processors}}
    names = sorted({n for ms in phase_members.values() for n in ms})
    states: dict[tuple[str, str], Partition] = tracker.partitions(names, expected) if expected else {}
    top = {(ph, d.isoformat()): max((states[(n, d.isoformat())].generation for n in members
                                     if states[(n, d.isoformat())].status != "missing"), default=0)
           for ph, members in phase_members.items() for d in expected}
    cells = {(p.name, d.isoformat()): cell_state(states.get((p.name, d.isoformat()), Partition(p.name, d.isoformat())),
                                                  cal.is_expected(d), now, top.get((p.phase, d.isoformat()), 0))
             for p in processors for d in dates}
    order = {p.name: i for i, p in enumerate(ordered_processors(pipeline))}
    nodes: list[Node] = []
    fresh: dict[date, int] = {}
    for d in expected:
        iso = d.isoformat()
        for p in processors:
            cell = cells[(p.name, iso)]
            if cell not in TO_RUN and not (force and cell == DONE):
                continue
            phase_gen = top[(p.phase, iso)]
            own = states[(p.name, iso)]
            if force:
                if d not in fresh:
                    fresh[d] = allocate(d) if allocate else 1 + max(top[(ph, iso)] for ph in phase_members)
                gen = fresh[d]
            elif own.status in ("missing", SKIPPED) or cell == OUTDATED:
                gen = phase_gen
            else:
                gen = own.generation
            nodes.append(Node(p.name, p.phase, d, gen, p.output.logical, order[p.name], cell))
    nodes.sort(key=lambda n: (n.day, n.phase, n.order))
    return Plan(pipeline, start, end, processors, dates, cells, states, nodes, force)


def upstream_window(up: Any, day: date, calendar: Any = None) -> tuple[date, date]:
    """The dates of upstream ``up`` a run for ``day`` reads (inclusive), e.g. 30 days back to ``day``, or
    to the day before for ``until: previous_day`` readers, or its last N expected dates."""
    if hasattr(up, "window"):
        return up.window(day, calendar)
    return day - timedelta(days=up.lookback_days), day
