"""The pipeline definition's model: the single source of truth for a pipeline's shape.

Owns phases, processors, output tables (schema, date column, MERGE keys, critical columns), upstreams
and lookbacks, gates, intra-phase dependencies and the calendar, as immutable values. The functions,
the CLI, provisioning, the Terraform inputs and the docs all derive from a ``Pipeline``; nothing else
declares a table or a topic. The names of the resources (``names.py``), reading a definition file
(``loading.py``) and its rules (``validation.py``) are beside it; ``load`` and ``from_dict`` are
reachable from here too, as the readers of a definition import them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any, Iterable

from cascade.definition.calendar import Calendar
from cascade.definition.names import ResourceNames
from cascade.definition.schema import GATE
from cascade.errors import DefinitionError, UnknownProcessorError

# The kinds of quality gates, as the definition's schema declares them (``{not_null: [col]}``, ...).
GATE_KINDS = tuple(GATE.variants)


@dataclass(frozen=True)
class Table:
    """An output table: ``dataset.name``, partitioned by ``date_column``, MERGEd on ``keys``."""

    dataset: str
    name: str
    date_column: str
    keys: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]
    critical: tuple[str, ...] = ()

    @property
    def logical(self) -> str:
        return f"{self.dataset}.{self.name}"

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]

    @property
    def merge_keys(self) -> tuple[str, ...]:
        """The declared keys plus the date column: a MERGE only ever touches one date partition."""
        return (self.date_column, *[k for k in self.keys if k != self.date_column])


@dataclass(frozen=True)
class Upstream:
    """An input of a processor: another processor's output, for the same date or a lookback window.

    ``lookback_days`` 30 on 2025-01-31 means the window 2025-01-01..2025-01-31 (inclusive).
    ``lookback_dates`` 10 means "the last 10 expected dates" (calendar-aware: dates without data and the
    off-season do not count), which may reach into last season.
    ``until_previous_day`` ends the window the day before (forward-looking readers, e.g. predictions
    for today, read history up to yesterday): 2025-01-17..2025-01-30 for lookback 14.
    A window never starts before the calendar's ``history_start``, nor before the upstream processor's
    own ``history_start``: reaching before it is a *short window by declaration* (``short_window`` says
    so), not a gap.
    """

    processor: str
    lookback_days: int = 0
    until_previous_day: bool = False
    lookback_dates: int = 0

    @property
    def has_lookback(self) -> bool:
        return self.lookback_days > 0 or self.lookback_dates > 0

    def window(self, day: date, calendar: Calendar | None = None) -> tuple[date, date]:
        """The dates of this upstream a run for ``day`` needs (inclusive on both sides), never before the
        history start of the upstream's table (the pipeline's, or the processor's own)."""
        start, end = self.declared_window(day, calendar)
        if calendar is not None:
            start = calendar.clip(start, self.processor)
        return min(start, end), end

    def declared_window(self, day: date, calendar: Calendar | None = None) -> tuple[date, date]:
        """The window as its lookback declares it, ignoring where history starts."""
        end = day - timedelta(days=1) if self.until_previous_day else day
        start = day - timedelta(days=self.lookback_days)
        if self.lookback_dates > 0:
            if calendar is None:
                raise DefinitionError(f"upstream {self.processor}: lookback_dates needs the pipeline calendar")
            start = min(start, calendar.nth_expected_on_or_before(end, self.lookback_dates))
        return min(start, end), end

    def short_window(self, day: date, calendar: Calendar | None) -> str:
        """"" when the run for ``day`` reads its whole declared window; else what it reads instead, e.g.
        "nbac_schedule: 2024-10-22..2024-10-25 of 2024-09-25..2024-10-25 (history starts 2024-10-22)"."""
        first = calendar.history_start_of(self.processor) if calendar is not None else None
        if first is None or not self.has_lookback:
            return ""
        declared = self.declared_window(day, calendar)
        start, end = self.window(day, calendar)
        if start > declared[0]:
            return f"{self.processor}: {start}..{end} of {declared[0]}..{declared[1]} (history starts {first})"
        if self.lookback_dates > 0 and calendar is not None and start <= first:
            # "The last N expected dates" stops at the history start: fewer than N exist before it.
            have = len(calendar.expected_dates(start, end))
            if have < self.lookback_dates:
                return (f"{self.processor}: {start}..{end} holds {have} of the last {self.lookback_dates} "
                        f"expected dates (history starts {first})")
        return ""


@dataclass(frozen=True)
class Gate:
    """A quality assertion on a processor's output partition, evaluated right after its write.

    ``row_count`` (``min``/``max`` rows, or ``within_pct`` of the median row count of the trailing
    ``days`` expected dates), ``not_null`` (``columns``), ``range`` (``column`` within ``min``..``max``)
    or ``sql`` (a SELECT returning the offending rows; ``@data_date`` is a parameter).
    """

    kind: str
    name: str
    columns: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    within_pct: float | None = None
    days: int = 0
    sql: str | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "name": self.name}
        for k in ("columns", "min", "max", "within_pct", "days", "sql"):
            v = getattr(self, k)
            if v not in (None, (), 0):
                out[k] = list(v) if isinstance(v, tuple) else v
        return out


@dataclass(frozen=True)
class Processor:
    """One unit of work of a phase for one date: reads upstreams, MERGEs its output table."""

    name: str
    phase: int
    description: str
    output: Table
    upstreams: tuple[Upstream, ...] = ()
    sql: str | None = None
    source: dict[str, Any] | None = None
    export: dict[str, Any] | None = None
    allow_empty: bool = False  # zero rows on an expected date is a valid result (else refused)
    python: str | None = None  # "module:attribute" of a Python processor's callable
    gates: tuple[Gate, ...] = ()  # quality assertions on the written partition
    job_timeout_seconds: int | None = None  # a BigQuery job of a run still running then is cancelled
    maximum_bytes_billed: int | None = None  # cap of every BigQuery job the processor sends

    @property
    def kind(self) -> str:
        """``gcs_json_load`` (raw files -> table), ``sql`` (SELECT -> table), ``python`` (a callable
        returning rows -> table) or ``gcs_json_export``."""
        return ("gcs_json_load" if self.source else "gcs_json_export" if self.export
                else "python" if self.python else "sql")

    @property
    def lookback_days(self) -> int:
        return max((u.lookback_days for u in self.upstreams), default=0)

    def window(self, day: date, calendar: Calendar | None = None) -> tuple[date, date]:
        """The dates this processor reads for ``day`` (inclusive on both sides): the union of its
        upstreams' windows and the day itself."""
        starts = [u.window(day, calendar)[0] for u in self.upstreams]
        return min([day, *starts]), day

    def short_window(self, day: date, calendar: Calendar | None) -> str:
        """Which lookbacks of the run for ``day`` are short by declaration (they reach before the history
        start and read what exists from it), "" when none is."""
        shorts = [s for s in (u.short_window(day, calendar) for u in self.upstreams) if s]
        return ("short window by declaration: " + "; ".join(shorts)) if shorts else ""


@dataclass(frozen=True)
class Phase:
    """An ordered stage; ``next`` is the phase its completion triggers.

    ``schedule`` (optional) is a cron expression in the pipeline's time zone at which a scheduler
    publishes a date-less trigger; ``default_date`` says which date a date-less trigger means:
    ``yesterday`` (results of the day before) or ``today`` (predictions for the day).
    """

    number: int
    name: str
    title: str
    next: int | None = None
    schedule: str | None = None
    default_date: str = "yesterday"
    max_instances: int = 10  # deployed function instances at most (Cloud Run autoscaling cap)
    concurrency: int = 8  # requests one instance serves at once (gen2 concurrency)


@dataclass(frozen=True)
class Pipeline(ResourceNames):
    """A validated pipeline definition, optionally bound to a namespace."""

    name: str
    description: str
    calendar: Calendar
    phases: tuple[Phase, ...]
    processors: tuple[Processor, ...]
    raw_bucket: str = ""
    namespace: str = ""
    source_path: str = ""
    synthetic: str | None = None  # "module:attribute" making realistic raw files (else derived generically)

    def with_namespace(self, namespace: str) -> "Pipeline":
        """A copy whose resource names carry ``namespace`` (``""`` = none)."""
        if namespace and not re.fullmatch(r"[a-z][a-z0-9]{0,19}", namespace):
            raise DefinitionError(f"namespace {namespace!r} must be 1-20 lowercase letters/digits, starting with a letter")
        # Expected dates read from data belong to one namespace's tables: the copy reads its own.
        return replace(self, namespace=namespace, calendar=self.calendar.detached())

    # ------------------------------------------------------------------ lookup
    def phase(self, number: int) -> Phase:
        for p in self.phases:
            if p.number == number:
                return p
        raise UnknownProcessorError(
            f"pipeline {self.name!r} has no phase {number}; phases are {[p.number for p in self.phases]}",
            phase=number)

    def processor(self, name: str) -> Processor:
        for p in self.processors:
            if p.name == name:
                return p
        raise UnknownProcessorError(
            f"pipeline {self.name!r} has no processor {name!r}; see `cascade describe`", processor=name)

    def processors_of(self, phase: int) -> list[Processor]:
        """Processors of ``phase`` in dependency order (intra-phase upstreams first, then by name)."""
        members = {p.name: p for p in self.processors if p.phase == phase}
        ordered: list[Processor] = []
        done: set[str] = set()
        while len(ordered) < len(members):
            ready = sorted(n for n, p in members.items() if n not in done
                           and all(u.processor in done or u.processor not in members for u in p.upstreams))
            if not ready:
                raise DefinitionError(f"phase {phase} has an intra-phase dependency cycle among {sorted(set(members) - done)}")
            for n in ready:
                ordered.append(members[n])
                done.add(n)
        return ordered

    def intra_phase_upstreams(self, proc: Processor) -> list[str]:
        return [u.processor for u in proc.upstreams if self.processor(u.processor).phase == proc.phase]

    def cross_phase_upstreams(self, proc: Processor) -> list[Upstream]:
        return [u for u in proc.upstreams if self.processor(u.processor).phase != proc.phase]

    def downstream_phases(self, phase: int) -> list[int]:
        """``phase`` and every phase its completion cascades to, in order (3 -> [3, 4])."""
        chain = [phase]
        nxt = self.phase(phase).next
        while nxt is not None and nxt not in chain:
            chain.append(nxt)
            nxt = self.phase(nxt).next
        return chain

    # ------------------------------------------------------------------ export
    def describe(self, project: str) -> dict[str, Any]:
        """Everything a person, the CLI or Terraform needs to know about the pipeline, as plain data."""
        starts = dict(self.calendar.processor_starts)  # the processors' own history starts
        return {
            "pipeline": self.name,
            "description": self.description,
            "namespace": self.namespace,
            "definition": self.source_path,
            "calendar": self.calendar.to_dict(),
            "raw_bucket": self.bucket(project),
            "datasets": self.datasets(),
            "phases": [
                {
                    "number": ph.number, "name": ph.name, "title": ph.title, "next": ph.next,
                    "schedule": ph.schedule, "default_date": ph.default_date,
                    "max_instances": ph.max_instances, "concurrency": ph.concurrency,
                    "function": self.function_name(ph.number),
                    "topic": self.topic(ph.number),
                    "dead_letter_topic": self.dead_letter_topic(ph.number),
                    "push_subscription": self.push_subscription(ph.number),
                    "processors": [
                        {
                            "name": p.name,
                            "description": p.description,
                            "kind": p.kind,
                            "output_table": self.table_id(project, p.output),
                            "date_column": p.output.date_column,
                            "keys": list(p.output.keys),
                            "critical_columns": list(p.output.critical),
                            "columns": [{"name": c, "type": t} for c, t in p.output.columns],
                            "upstreams": [{"processor": u.processor, "lookback_days": u.lookback_days,
                                           "lookback_dates": u.lookback_dates,
                                           "until_previous_day": u.until_previous_day} for u in p.upstreams],
                            "allow_empty": p.allow_empty,
                            # its own, when declared (the pipeline's is calendar.history_start)
                            "history_start": (own.isoformat() if (own := starts.get(p.name)) else None),
                            "lookback_days": p.lookback_days,
                            "source": p.source,
                            "export": p.export,
                            "python": p.python,
                            "gates": [g.describe() for g in p.gates],
                            "job_timeout_seconds": p.job_timeout_seconds,
                            "maximum_bytes_billed": p.maximum_bytes_billed,
                        }
                        for p in self.processors_of(ph.number)
                    ],
                }
                for ph in self.phases
            ],
        }


def upstream_map(pipeline: Pipeline) -> dict[str, list[str]]:
    return {p.name: [u.processor for u in p.upstreams] for p in pipeline.processors}


def names(items: Iterable[Processor]) -> list[str]:
    return [p.name for p in items]
