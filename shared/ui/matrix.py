"""The status matrix: dates x processors (grouped by phase) built from partition states already read.

``build_matrix`` is pure: it takes the states of one batched read (``Tracker.partitions(names,
days)`` - a single ``get_all``) and the calendar, and returns immutable rows of cells. Each cell
carries the partition's status exactly as stored (the ``Status`` vocabulary, what
``cascade.ops.date_status.date_status`` reports per processor) and whether the calendar expects data that day:
a date with no data expected is greyed, never shown as a gap. Each row also carries the phase roll-up
(``cascade.ops.date_status.phase_state``: complete, blocked, failed, running, skipped, partial, missing; and
``triggered-not-started`` - "triggered, not started" - when the phase before it published its
trigger and nothing of it began at that generation, from the trigger claims of the range).

``recovery_commands`` says what to run for a partition: the ``cascade`` commands of a blocked
reason's ``resolution`` (computed by ``recovery``), or ``cascade trigger --date D --phase N
--processor P`` for a failed, stale or missing one. Example: ``player_rolling_form`` blocked on
2025-02-22 because the raw box scores of 2025-02-21 never arrived gives ``cascade backfill --start
2025-02-21 --end 2025-02-22 --phase 2 --phase 3`` (after the resolution's "restore gs://..." step).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Mapping

from cascade.definition.calendar import date_range
from cascade.definition.model import Pipeline
from cascade.ops.date_status import phase_state, triggered_not_started
from cascade.runtime import recovery
from cascade.runtime.handoff import declared_skips
from cascade.state.status import Status
from cascade.state.tracker import Partition

# The widest range one page shows (one batched read of days x processors documents).
MAX_DAYS = 366
# Default range: the last 30 days, today (pipeline time zone) included.
DEFAULT_DAYS = 30
# One letter per status inside a cell, so the matrix reads without colour too.
GLYPHS = {Status.SUCCESS: "", Status.STALE: "S", Status.RUNNING: "R", Status.WAITING: "W", Status.BLOCKED: "B",
           Status.FAILED: "F", Status.MISSING: "", Status.SKIPPED: "-"}
# A command inside a blocked reason's resolution text: "…: cascade trigger --date … ; then …".
_COMMAND = re.compile(r"cascade [^;]+")


@dataclass(frozen=True)
class Cell:
    processor: str
    phase: int
    day: str
    status: str  # the partition's stored status (Status vocabulary)
    expected: bool  # the calendar expects data on ``day``
    title: str  # tooltip: status, rows, duration, error or blocked reason

    @property
    def css(self) -> str:
        """``s-<status>``, plus ``nogame`` when a date with no data expected has nothing run (greyed)."""
        nogame = not self.expected and self.status in (Status.MISSING, Status.SKIPPED)
        return f"s-{self.status}" + (" nogame" if nogame else "")

    @property
    def glyph(self) -> str:
        if not self.expected and self.status in (Status.MISSING, Status.SKIPPED):
            return ""
        return GLYPHS.get(self.status, "?")


@dataclass(frozen=True)
class PhaseCells:
    """One phase of one date: its roll-up state and its processors' cells."""

    number: int
    state: str
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class Row:
    day: str
    weekday: str
    expected: bool
    note: str  # why no data is expected (a declared reason), "" on an expected date
    phases: tuple[PhaseCells, ...]  # in phase order

    @property
    def cells(self) -> tuple[Cell, ...]:
        return tuple(c for ph in self.phases for c in ph.cells)


@dataclass(frozen=True)
class PhaseGroup:
    number: int
    title: str
    processors: tuple[str, ...]


@dataclass(frozen=True)
class Matrix:
    """Rows newest date first; ``counts`` of partition statuses over expected dates."""

    start: date
    end: date
    groups: tuple[PhaseGroup, ...]
    rows: tuple[Row, ...]
    counts: Mapping[str, int]

    @property
    def cells(self) -> int:
        return sum(len(r.cells) for r in self.rows)

    def states(self) -> dict[str, Any]:
        """What the page polls: ``{"cells": {"proc|date": status}, "phases": {"n|date": state}}``."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "counts": dict(self.counts),
                "cells": {f"{c.processor}|{c.day}": c.status for r in self.rows for c in r.cells},
                "phases": {f"{ph.number}|{r.day}": ph.state for r in self.rows for ph in r.phases}}


def default_range(pipeline: Pipeline, now: datetime, days: int = DEFAULT_DAYS,
                  latest: date | None = None) -> tuple[date, date]:
    """The last ``days`` days up to today in the pipeline's time zone, e.g. 2025-01-02..2025-01-31 -
    or, when the newest date any partition has (``latest``) is older than that, the ``days`` days up
    to it: the page opens on the pipeline's data, wherever in time it is (a backfilled season)."""
    end = pipeline.calendar.today(now)
    if latest is not None and latest < end - timedelta(days=days - 1):
        end = latest
    return end - timedelta(days=days - 1), end


def check_range(start: date, end: date) -> None:
    """Raise ValueError with the exact problem when the range cannot be shown."""
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    if (end - start).days + 1 > MAX_DAYS:
        raise ValueError(f"{start}..{end} is {(end - start).days + 1} days; one page shows at most {MAX_DAYS}")


def groups_of(pipeline: Pipeline, processors: list[str] | None = None) -> tuple[PhaseGroup, ...]:
    """Phases in order with their processors (dependency order), limited to ``processors`` if given."""
    wanted = set(processors) if processors is not None else None
    out = []
    for ph in pipeline.phases:
        names = tuple(p.name for p in pipeline.processors_of(ph.number) if wanted is None or p.name in wanted)
        if names:
            out.append(PhaseGroup(ph.number, ph.title, names))
    return tuple(out)


def build_matrix(pipeline: Pipeline, states: Mapping[tuple[str, str], Partition], start: date, end: date,
                 now: datetime, processors: list[str] | None = None,
                 stale: Mapping[tuple[str, str], Any] | None = None,
                 claims: list[Mapping[str, Any]] | None = None) -> Matrix:
    """The matrix of ``start..end`` (inclusive on both sides) from states already read.

    ``states`` maps (processor, ISO date) to a ``Partition`` (as ``Tracker.partitions`` returns);
    a key absent from it is shown as missing. ``stale`` (``Freshness.evaluate``) marks succeeded
    partitions that are stale, with their reason in the tooltip. ``claims`` (``Tracker.claims_between``)
    are the trigger claims of the range: a phase whose predecessor's claim at its current generation
    is published and that began nothing since rolls up to "triggered, not started".
    """
    stale = stale or {}
    by_claim = {(int(c["phase"]), c["data_date"], int(c["generation"])): c for c in claims or []}
    triggers = {ph.next: ph.number for ph in pipeline.phases if ph.next is not None}
    cal = pipeline.calendar
    groups = groups_of(pipeline, processors)
    counts: Counter[str] = Counter()
    rows = []
    for day in reversed(list(date_range(start, end))):
        iso = day.isoformat()
        expected = cal.is_expected(day)
        note = cal.reason_not_expected(day)
        phases = []
        for g in groups:
            parts = [states.get((name, iso)) or Partition(name, iso) for name in g.processors]
            gen = max((s.generation for s in parts if s.status != Status.MISSING), default=0)
            cells = tuple(Cell(part.processor, g.number, iso,
                               str(Status.STALE if (part.processor, iso) in stale else part.status), expected,
                               _title(part, expected, note, now, stale.get((part.processor, iso))))
                          for part in parts)
            if expected:
                counts.update(c.status for c in cells)
            n_stale = sum((part.processor, iso) in stale for part in parts)
            state = str(phase_state(parts, gen, now, n_stale, declared_skips(pipeline, day, g.processors)))
            if g.number in triggers:  # the claim of the phase before it, at that phase's current generation
                before = [states.get((p.name, iso)) or Partition(p.name, iso)
                          for p in pipeline.processors_of(triggers[g.number])]
                at = max((s.generation for s in before if s.status != Status.MISSING), default=0)
                if triggered_not_started(state, parts, by_claim.get((triggers[g.number], iso, at))):
                    state = str(Status.TRIGGERED)
            phases.append(PhaseCells(g.number, state, cells))
        rows.append(Row(iso, day.strftime("%a"), expected, note, tuple(phases)))
    return Matrix(start, end, groups, tuple(rows), dict(counts))


def _title(part: Partition, expected: bool, no_game: str, now: datetime, stale: Any = None) -> str:
    head = f"{part.processor} {part.data_date}: {part.status}"
    if stale is not None:
        head = f"{part.processor} {part.data_date}: stale - {stale.reason}"
    if not expected and part.status in (Status.MISSING, Status.SKIPPED):
        return f"{head} (no data expected: {no_game})"
    bits = [head]
    if part.record_count is not None:
        bits.append(f"{part.record_count} rows")
    if part.duration_s is not None:
        bits.append(f"{part.duration_s:.2f} s")
    if part.status == Status.RUNNING and not part.lease_alive(now):
        bits.append("lease expired (crashed run; `cascade sweep` re-triggers it)")
    if part.status == Status.FAILED and part.raw.get("transient"):
        bits.append("transient: will be retried")
    text = ", ".join(bits)
    if part.blocked:
        text += f"\n{part.blocked.get('detail') or part.error}"
    elif part.error and part.status != Status.SUCCESS:
        text += f"\n{part.error[:300]}"
    return text


def recovery_commands(pipeline: Pipeline, part: Partition, now: datetime, stale: Any = None,
                      step: str = "") -> list[str]:
    """The exact commands that recover ``part`` ([] when nothing is to be done).

    * failed, blocked or stale with a ``step`` (``recovery.partition_next_step``, as ``cascade status``
      prints it): its ``cascade`` commands, in order;
    * blocked: the ``cascade`` commands of ``blocked.resolution``, in order;
    * failed, stale, or missing on an expected date: ``cascade trigger --date D --phase N --processor P``
      (a trigger without a generation makes it complete and fresh, and re-triggers what follows);
    * running with an expired lease: ``cascade sweep``; running or waiting: ``cascade wait``.
    """
    day = date.fromisoformat(part.data_date)
    phase = pipeline.processor(part.processor).phase
    trigger = recovery.trigger_command(part.data_date, phase, [part.processor])
    from_step = [c.strip() for c in _COMMAND.findall(step)]
    if from_step and (part.status in (Status.FAILED, Status.BLOCKED) or stale is not None):
        return from_step
    if part.status == Status.BLOCKED:
        resolution = (part.blocked or {}).get("resolution") or ""
        found = [c.strip() for c in _COMMAND.findall(resolution)]
        return found or [trigger]
    if part.status == Status.FAILED or stale is not None:
        return [trigger]
    if part.status == Status.MISSING and pipeline.calendar.is_expected(day, part.processor):
        return [trigger]
    if part.status == Status.RUNNING and not part.lease_alive(now):
        return ["cascade sweep"]
    if part.status in (Status.RUNNING, Status.WAITING):
        return [f"cascade wait --date {part.data_date} --phase {phase}"]
    return []
