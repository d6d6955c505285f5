"""The backfill plan: which partitions (processor x date) of a range exist, which will run, at what cost.

Owns the request's validation (range, phases, processors), the choice of processors (the cascade
chain of the first phase by default), the dates x processors status matrix built from ONE batched
Firestore read plus the calendar (done / stale / missing / failed / blocked / running / not expected),
with the reason of every cell that is not done, the list of partitions to run with the generation
each runs at, and the estimate of BigQuery jobs. A plan is recomputed from state on every
invocation, so re-running a command does only what is still missing, failed, blocked or stale -
never "resume from the last date".

What runs: every missing, failed, blocked, waiting, crashed or **stale** partition (``freshness``:
its code changed, or an input it read was rebuilt), plus every selected partition in the range that
reads one of those (same date, or a lookback window that includes it) - it becomes stale the moment
its input is rebuilt, so the same wavefront rebuilds it. ``force`` re-runs everything selected.

Generations (``handoff``): a date on which something that already succeeded is rebuilt, or whose
phase could have been handed on already, runs at a NEW generation of the date allocated for the
whole cascade when the backfill starts (a dry run shows the next one), so completion tracking treats
it as new work and no claim is reused; a date whose selected phases never ran at all keeps its
current generation.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Iterable

from cascade.definition.calendar import date_range
from cascade.definition.model import Pipeline, Processor
from cascade.errors import CascadeError, UnknownProcessorError
from cascade.runtime import handoff
from cascade.state.freshness import Freshness, input_keys
from cascade.state.status import Status
from cascade.state.tracker import Partition

MAX_RANGE_DAYS = 3 * 366
DONE, MISSING, NO_GAME, EXPIRED, STALE = Status.DONE, Status.MISSING, Status.NO_GAME, Status.EXPIRED, Status.STALE
# One character per state in the printed matrix.
SYMBOLS = {DONE: "#", MISSING: ".", Status.FAILED: "F", Status.BLOCKED: "B", Status.RUNNING: "R", EXPIRED: "r", STALE: "s",
           NO_GAME: " ", Status.WAITING: "w"}
LEGEND = ("# done  s stale (code changed or an input was rebuilt)  . missing  F failed  B blocked  w waiting  "
          "R running  r running (lease expired)  (blank) no data expected")
# States that will run (running under a live lease is waited for: the runner answers "busy").
TO_RUN = (MISSING, Status.FAILED, Status.BLOCKED, EXPIRED, Status.RUNNING, Status.WAITING, STALE)


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

    ``processors`` wins over ``phases``; neither means the cascade chain of the first phase. Named
    processors bring their same-phase dependents: the phase is handed on as a whole, so what reads
    a rebuilt partition in its own phase is rebuilt with it (else the hand-off would carry it stale).
    Raises UsageError for an unknown phase or processor.
    """
    phases, processors = list(phases), list(processors)
    try:
        if processors:
            chosen = {pipeline.processor(n).name for n in processors}
            for phase in {pipeline.processor(n).phase for n in chosen}:
                chosen |= set(handoff.same_phase_dependents(pipeline, phase, chosen))
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


def gate_queries(proc: Processor) -> int:
    """The queries ``proc``'s quality gates send after a write that passes them (``runtime.gates``)."""
    return (1 if any(g.kind != "sql" for g in proc.gates) else 0) + sum(1 for g in proc.gates if g.kind == "sql")


def cell_state(p: Partition, expected: bool, now, stale: bool = False) -> str:
    if not expected:
        return NO_GAME
    if p.status == Status.SUCCESS:
        return STALE if stale else DONE
    if p.status == Status.RUNNING:
        return Status.RUNNING if p.lease_alive(now) else EXPIRED
    if p.status in (Status.FAILED, Status.BLOCKED, Status.WAITING):
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
    reasons: dict[tuple[str, str], str] = field(default_factory=dict)  # why a cell is not done / will run

    @property
    def phases(self) -> list[int]:
        return sorted({p.phase for p in self.processors})

    @property
    def expected_dates(self) -> list[date]:
        return [d for d in self.dates if self.pipeline.calendar.is_expected(d)]

    def counts(self) -> dict[str, int]:
        c = Counter(self.cells.values())
        return {k: c.get(k, 0) for k in (DONE, STALE, MISSING, Status.FAILED, Status.BLOCKED, Status.WAITING, Status.RUNNING, EXPIRED, NO_GAME)}

    def estimate(self) -> dict[str, int]:
        """BigQuery jobs: one MERGE per partition to run (strict checks are skipped in backfill mode),
        the quality gates' queries after each write (one for the built-in gates, one per ``sql`` gate;
        a failing gate's sample of rows adds one), plus the preflight and validation queries."""
        merges = len(self.nodes)
        gates = sum(gate_queries(self.pipeline.processor(n.processor)) for n in self.nodes)
        est = {"partitions": merges, "merge_jobs": merges, "check_queries": 0, "gate_queries": gates,
               **self.extra_queries}
        est["bigquery_jobs"] = merges + gates + sum(self.extra_queries.values())
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
            d["partitions"] = [{"processor": p, "date": day, "state": self.cells.get((p, day), MISSING),
                                "reason": reason, "runs": (p, day) in {n.key for n in self.nodes}}
                               for (p, day), reason in sorted(self.reasons.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
        return d

    def render(self) -> str:
        """The dates x processors matrix, one line per date, and the totals."""
        names = [p.name for p in self.processors]
        lines = [f"backfill plan {self.start}..{self.end}: phases {self.phases}, {len(names)} processors x "
                 f"{len(self.dates)} dates ({len(self.expected_dates)} expected)"
                 + ("; --force: done partitions re-run with a new generation" if self.force else "")]
        lines += [f"  [{i:>2}] phase {p.phase} {p.name}" for i, p in enumerate(self.processors)]
        header = "".join(f"{i % 100:>3}" for i in range(len(names)))
        lines.append(f"{'date':<12}{header}")
        for day in self.dates:
            row = "".join(f"{SYMBOLS[self.cells[(n, day.isoformat())]]:>3}" for n in names)
            note = "" if self.pipeline.calendar.is_expected(day) else \
                f"   no data expected: {self.pipeline.calendar.reason_not_expected(day)}"
            lines.append(f"{day.isoformat():<12}{row}{note}")
        lines.append(LEGEND)
        stale = [(k, r) for k, r in sorted(self.reasons.items(), key=lambda kv: (kv[0][1], kv[0][0]))
                 if self.cells.get(k) == STALE or r.startswith("reads ")]
        for (name, day), reason in stale[:10]:
            lines.append(f"  {name}@{day}: {reason}")
        if len(stale) > 10:
            lines.append(f"  ... and {len(stale) - 10} more (--json lists every partition with its reason)")
        c = self.counts()
        lines.append("partitions: " + ", ".join(f"{v} {k}" for k, v in c.items()))
        e = self.estimate()
        by = Counter(n.processor for n in self.nodes)
        lines.append(f"will run {len(self.nodes)} partitions"
                     + (" (" + ", ".join(f"{n} {by[n]}" for n in names if by[n]) + ")" if by else ""))
        lines.append(f"estimated BigQuery jobs: {e['bigquery_jobs']} ({e['merge_jobs']} MERGEs, "
                     f"{e['gate_queries']} quality-gate queries, 0 strict-mode check queries in backfill mode"
                     + "".join(f", {v} {k.replace('_', ' ')}" for k, v in self.extra_queries.items()) + ")")
        return "\n".join(lines)


def build_plan(pipeline: Pipeline, tracker: Any, processors: list[Processor], start: date, end: date,
               force: bool = False, now=None, allocate: Any = None, versions: Any = None) -> Plan:
    """The plan of ``processors`` over ``start..end`` from one batched Firestore read (plus the states
    of the inputs the range's partitions recorded, for freshness).

    ``allocate(day) -> int`` allocates a new generation of a date (see the module's docstring);
    without it (a dry run) the plan shows the next generation without allocating it."""
    check_range(start, end)
    dates = list(date_range(start, end))
    cal = pipeline.calendar
    # Per processor: the processor a from-data calendar reads its dates from is expected on every
    # declared date (it defines the calendar), the others on the dates its data lists.
    expects = {p.name: {d for d in dates if cal.is_expected(d, p.name)} for p in processors}
    expected = [d for d in dates if any(d in ds for ds in expects.values())]
    now = now or tracker.clock()
    # Every processor of the selected phases is read, so generations are per phase (not per selection).
    phase_members = {ph: [p.name for p in pipeline.processors_of(ph)] for ph in {p.phase for p in processors}}
    names = sorted({n for ms in phase_members.values() for n in ms})
    states: dict[tuple[str, str], Partition] = tracker.partitions(names, expected) if expected else {}
    fresh = Freshness(pipeline, dict(states), load=getattr(tracker, "partitions_by_keys", None), versions=versions)
    stale = fresh.evaluate([k for k, st in states.items() if st.status == Status.SUCCESS])
    cells: dict[tuple[str, str], str] = {}
    reasons: dict[tuple[str, str], str] = {}
    for p in processors:
        for d in dates:
            key = (p.name, d.isoformat())
            st = states.get(key, Partition(p.name, d.isoformat()))
            cells[key] = cell_state(st, d in expects[p.name], now, key in stale)
            if key in stale:
                reasons[key] = stale[key].reason
            elif cells[key] in (Status.FAILED, Status.BLOCKED, Status.WAITING, EXPIRED) and st.error:
                reasons[key] = f"{cells[key]}: {st.error[:200]}"
    order = {p.name: i for i, p in enumerate(ordered_processors(pipeline))}
    selected = {p.name for p in processors}
    # What runs: not-done cells, then (in dependency order) every selected partition reading one.
    runs: dict[tuple[str, str], str] = {}
    for d in expected:
        iso = d.isoformat()
        for p in sorted(processors, key=lambda x: (x.phase, order[x.name])):
            key = (p.name, iso)
            if cells[key] == NO_GAME:
                continue
            if cells[key] in TO_RUN or (force and cells[key] == DONE):
                runs[key] = cells[key]
                continue
            rebuilt = next((k for k in input_keys(pipeline, p, d) if k in runs and k[0] in selected), None)
            if rebuilt is not None:
                runs[key] = cells[key]
                reasons[key] = f"reads {rebuilt[0]}@{rebuilt[1]}, which this backfill rebuilds"
    # Generations: a new one for a date where anything already succeeded (a rebuild, or a phase that
    # may have been handed on); else the phase's current one.
    nodes: list[Node] = []
    fresh_gen: dict[date, int] = {}
    top = {(ph, d.isoformat()): handoff.phase_generation(states[(n, d.isoformat())] for n in members)
           for ph, members in phase_members.items() for d in expected}
    for d in expected:
        iso = d.isoformat()
        keys = [k for k in runs if k[1] == iso]
        if not keys:
            continue
        phases_here = {pipeline.processor(k[0]).phase for k in keys}
        touched = any(states[(n, iso)].status == Status.SUCCESS for ph in phases_here for n in phase_members[ph])
        if touched:
            fresh_gen[d] = allocate(d) if allocate else 1 + max(top[(ph, iso)] for ph in phase_members)
        for name, _ in keys:
            p = pipeline.processor(name)
            gen = fresh_gen.get(d, top[(p.phase, iso)])
            nodes.append(Node(p.name, p.phase, d, gen, p.output.logical, order[p.name], runs[(name, iso)]))
    nodes.sort(key=lambda n: (n.day, n.phase, n.order))
    return Plan(pipeline, start, end, processors, dates, cells, states, nodes, force, reasons=reasons)
