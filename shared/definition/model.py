"""The pipeline definition: the single source of truth for a pipeline's shape.

Owns phases, processors, output tables (schema, date column, MERGE keys, critical columns),
upstreams and lookbacks, intra-phase dependencies, the calendar, and every resource name derived
from them (datasets, tables, topics, subscriptions, Firestore collections). The functions, the CLI,
provisioning, the Terraform inputs and the docs all derive from a ``Pipeline``; nothing else
declares a table or a topic.

A ``namespace`` prefixes every resource name so that several instances of one definition (tests,
developers) can share a project or an emulator without seeing each other.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Iterable

import yaml

from cascade.definition.calendar import Calendar
from cascade.definition.schema import validate as validate_structure
from cascade.errors import DefinitionError, UnknownProcessorError

DEFAULT_DEFINITION = Path(__file__).resolve().parents[2] / "pipelines" / "nba.yaml"

# BigQuery column types a definition may use.
_COLUMN_TYPES = {"DATE", "STRING", "INT64", "FLOAT64", "BOOL", "TIMESTAMP", "NUMERIC"}
# Columns every output table gets, written by the framework on each MERGE: lineage (which run wrote
# the row, when) and the write fence of that run (a run with an older fence cannot change the row).
FRAMEWORK_COLUMNS = {"_run_id": "STRING", "_processed_at": "TIMESTAMP", "_fence": "INT64"}
# `{dataset.table}` placeholders in processor SQL; resolved only against declared tables.
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\}")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# `python: package.module:attribute` - the callable of a Python processor (or a synthetic-data hook).
_CALLABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# Fields of the manifest row an export processor writes (its output columns are a subset of these
# plus its date column): the file's gs:// path, its row count, its size and its SHA-256.
MANIFEST_FIELDS = {"path": "STRING", "row_count": "INT64", "bytes": "INT64", "sha256": "STRING"}
# How an export lays its rows out in the file (``export.format``; the first is the default).
EXPORT_FORMATS = ("envelope", "json_array", "json_lines")
GATE_KINDS = ("row_count", "not_null", "range", "sql")
_NUMERIC = {"INT64", "FLOAT64", "NUMERIC"}


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
    ``lookback_dates`` 10 means "the last 10 expected dates" (calendar-aware: no-game days and the
    off-season do not count), e.g. a player's last 10 game dates, which may reach into last season.
    ``until_previous_day`` ends the window the day before (forward-looking readers, e.g. predictions
    for today's games, read history up to yesterday): 2025-01-17..2025-01-30 for lookback 14.
    A window never starts before the calendar's ``history_start``: reaching before it is a *short
    window by declaration* (``short_window`` says so), not a gap.
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
        calendar's history start."""
        start, end = self.declared_window(day, calendar)
        if calendar is not None:
            start = calendar.clip(start)
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
        if calendar is None or calendar.history_start is None or not self.has_lookback:
            return ""
        declared = self.declared_window(day, calendar)
        start, end = self.window(day, calendar)
        if start <= declared[0]:
            return ""
        return (f"{self.processor}: {start}..{end} of {declared[0]}..{declared[1]} "
                f"(history starts {calendar.history_start})")


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
    ``yesterday`` (results of games played) or ``today`` (predictions for today's games).
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
class Pipeline:
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

    # ------------------------------------------------------------------ naming
    def with_namespace(self, namespace: str) -> "Pipeline":
        """A copy whose resource names carry ``namespace`` (``""`` = none)."""
        if namespace and not re.fullmatch(r"[a-z][a-z0-9]{0,19}", namespace):
            raise DefinitionError(f"namespace {namespace!r} must be 1-20 lowercase letters/digits, starting with a letter")
        # Expected dates read from data belong to one namespace's tables: the copy reads its own.
        return replace(self, namespace=namespace, calendar=self.calendar.detached())

    def dataset_id(self, dataset: str) -> str:
        return f"{self.namespace}_{dataset}" if self.namespace else dataset

    def datasets(self) -> list[str]:
        """Dataset ids (namespaced) of every output table, plus the ops dataset."""
        return sorted({self.dataset_id(p.output.dataset) for p in self.processors})

    def table_id(self, project: str, table: Table) -> str:
        return f"{project}.{self.dataset_id(table.dataset)}.{table.name}"

    def _prefix(self) -> str:
        return f"{self.namespace}-" if self.namespace else ""

    def topic(self, phase: int) -> str:
        """The trigger topic of ``phase``: users' triggers and the previous phase's completions."""
        p = self.phase(phase)
        return f"{self._prefix()}{self.name}-phase{p.number}-{p.name}"

    def function_name(self, phase: int) -> str:
        """Folder of the phase's function under ``functions/`` (and its deployed name's stem)."""
        p = self.phase(phase)
        return f"phase{p.number}_{p.name}"

    def dead_letter_topic(self, phase: int) -> str:
        return f"{self.topic(phase)}-dlq"

    def push_subscription(self, phase: int) -> str:
        return f"{self.topic(phase)}-push"

    def dead_letter_subscription(self, phase: int) -> str:
        return f"{self.dead_letter_topic(phase)}-sub"

    def collection(self, kind: str) -> str:
        """Firestore collection of ``kind`` (partitions, runs, triggers, phases, rejected, leases)."""
        return f"cascade_{self.namespace or 'default'}_{self.name}_{kind}"

    def bucket(self, project: str) -> str:
        return f"{project}-{self._prefix()}{self.raw_bucket}".lower()

    def export_bucket(self, proc: Processor, project: str) -> str:
        """The bucket ``proc``'s export is published to: its ``export.bucket`` stem, named like the raw
        bucket (``<project>-<namespace->stem``), or the raw bucket when it declares none."""
        stem = (proc.export or {}).get("bucket")
        return f"{project}-{self._prefix()}{stem}".lower() if stem else self.bucket(project)

    def buckets(self, project: str) -> list[str]:
        """Every bucket the pipeline uses: the raw bucket, then the exports' own buckets."""
        out = [self.bucket(project)]
        for p in self.processors:
            if p.export is not None and self.export_bucket(p, project) not in out:
                out.append(self.export_bucket(p, project))
        return out

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

    def render_sql(self, proc: Processor, project: str) -> str:
        """The processor's SELECT with ``{dataset.table}`` placeholders replaced by declared table ids."""
        sql = proc.sql if proc.sql is not None else (proc.export or {}).get("sql")
        if sql is None:
            raise DefinitionError(f"processor {proc.name} has no sql")
        return self.render_text(sql, project)

    def render_text(self, sql: str, project: str) -> str:
        """``sql`` with its ``{dataset.table}`` placeholders replaced by declared table ids."""
        tables = {p.output.logical: p.output for p in self.processors}

        def sub(m: re.Match[str]) -> str:
            return f"`{self.table_id(project, tables[m.group(1) + '.' + m.group(2)])}`"

        return _PLACEHOLDER.sub(sub, sql)

    # ------------------------------------------------------------------ export
    def describe(self, project: str) -> dict[str, Any]:
        """Everything a person, the CLI or Terraform needs to know about the pipeline, as plain data."""
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


# ---------------------------------------------------------------------- loading
def load(path: str | os.PathLike[str] | None = None, namespace: str | None = None) -> Pipeline:
    """Load and validate a definition (default: ``$CASCADE_PIPELINE_FILE`` or the reference NBA one).

    ``namespace`` defaults to ``$CASCADE_NAMESPACE``.
    """
    file = Path(path or os.environ.get("CASCADE_PIPELINE_FILE") or DEFAULT_DEFINITION)
    try:
        raw = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DefinitionError(f"cannot read pipeline definition {file}: {exc}") from exc
    pipeline = from_dict(raw, source_path=str(file))
    ns = os.environ.get("CASCADE_NAMESPACE", "") if namespace is None else namespace
    return pipeline.with_namespace(ns)


def from_dict(raw: dict[str, Any], source_path: str = "") -> Pipeline:
    """Build a ``Pipeline`` from plain data, raising ``DefinitionError`` naming the first problem."""
    validate_structure(raw, source_path)  # keys and types (shared/definition/schema/), before relations
    try:
        phases = tuple(Phase(int(p["number"]), str(p["name"]), str(p.get("title", p["name"]).title()),
                             int(p["next"]) if p.get("next") is not None else None,
                             str(p["schedule"]) if p.get("schedule") else None,
                             str(p.get("default_date", "yesterday")),
                             int(p.get("max_instances", 10)), int(p.get("concurrency", 8))) for p in raw["phases"])
        processors = tuple(_processor(p) for p in raw["processors"])
        pipeline = Pipeline(name=str(raw["pipeline"]), description=str(raw.get("description", "")),
                            calendar=Calendar.from_dict(raw["calendar"]), phases=phases,
                            processors=processors, raw_bucket=str(raw.get("raw_bucket", "raw")),
                            source_path=source_path,
                            synthetic=str(raw["synthetic"]) if raw.get("synthetic") else None)
    except DefinitionError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise DefinitionError(f"invalid pipeline definition {source_path}: {type(exc).__name__}: {exc}") from exc
    _validate(pipeline)
    return pipeline


def _processor(raw: dict[str, Any]) -> Processor:
    out = raw["output"]
    dataset, _, table = str(out["table"]).partition(".")
    columns = tuple((str(c), str(t).upper()) for c, t in out["columns"].items())
    upstreams = tuple(Upstream(u) if isinstance(u, str) else Upstream(
        str(u["processor"]), int(u.get("lookback_days", 0)), str(u.get("until", "same_day")) == "previous_day",
        int(u.get("lookback_dates", 0)))
        for u in raw.get("upstreams", []))
    return Processor(
        name=str(raw["name"]), phase=int(raw["phase"]), description=str(raw.get("description", "")).strip(),
        output=Table(dataset=dataset, name=table, date_column=str(out["date_column"]),
                     keys=tuple(out["keys"]), columns=columns, critical=tuple(out.get("critical", []))),
        upstreams=upstreams, sql=raw.get("sql"), source=raw.get("source"), export=raw.get("export"),
        allow_empty=bool(raw.get("allow_empty", False)),
        python=str(raw["python"]) if raw.get("python") is not None else None,
        gates=tuple(_gate(str(raw["name"]), i, g) for i, g in enumerate(raw.get("gates") or [])),
        job_timeout_seconds=int(raw["job_timeout_seconds"]) if raw.get("job_timeout_seconds") is not None else None,
        maximum_bytes_billed=int(raw["maximum_bytes_billed"]) if raw.get("maximum_bytes_billed") is not None else None)


def _gate(proc: str, index: int, raw: Any) -> Gate:
    """One ``gates:`` entry: ``{row_count: {...}}``, ``{not_null: [...]}``, ``{range: {...}}`` or
    ``{sql: "...", name: n}``."""
    where = f"processor {proc!r}: gate {index + 1}"
    kinds = [k for k in (raw if isinstance(raw, dict) else {}) if k != "name"]
    if len(kinds) != 1 or kinds[0] not in GATE_KINDS:
        raise DefinitionError(f"{where}: expected one of {list(GATE_KINDS)} (e.g. {{not_null: [col]}}), got {raw!r}")
    kind, body, name = kinds[0], raw[kinds[0]], raw.get("name")

    def number(key: str, spec: dict[str, Any]) -> float | None:
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise DefinitionError(f"{where}: {kind}.{key} must be a number, got {value!r}")
        return value

    def only(spec: Any, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(spec, dict) or not spec or set(spec) - allowed:
            raise DefinitionError(f"{where}: {kind} takes a mapping of {sorted(allowed)}, got {spec!r}")
        return spec

    if kind == "row_count":
        spec = only(body, {"min", "max", "within_pct_of_trailing_median", "days"})
        pct = number("within_pct_of_trailing_median", spec)
        days = int(spec.get("days", 14 if pct is not None else 0))
        if pct is not None and (pct <= 0 or days < 1):
            raise DefinitionError(f"{where}: within_pct_of_trailing_median must be > 0 and days >= 1")
        gate = Gate("row_count", str(name or "row_count" + ("_vs_trailing_median" if pct is not None else "")),
                    min=number("min", spec), max=number("max", spec), within_pct=pct, days=days)
    elif kind == "not_null":
        cols = [body] if isinstance(body, str) else body
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
            raise DefinitionError(f"{where}: not_null takes a list of column names, got {body!r}")
        gate = Gate("not_null", str(name or "not_null_" + "_".join(cols)), columns=tuple(cols))
    elif kind == "range":
        spec = only(body, {"column", "min", "max"})
        if not isinstance(spec.get("column"), str) or (spec.get("min") is None and spec.get("max") is None):
            raise DefinitionError(f"{where}: range needs `column` and at least one of `min`, `max`")
        gate = Gate("range", str(name or f"range_{spec['column']}"), columns=(spec["column"],),
                    min=number("min", spec), max=number("max", spec))
    else:
        if not isinstance(body, str) or not body.strip() or not name:
            raise DefinitionError(f"{where}: a sql gate needs the SELECT of its offending rows and a `name`")
        gate = Gate("sql", str(name), sql=body)
    if not _NAME.match(gate.name):
        raise DefinitionError(f"{where}: name {gate.name!r} must be a lowercase identifier")
    if gate.min is not None and gate.max is not None and gate.min > gate.max:
        raise DefinitionError(f"{where}: min {gate.min} is greater than max {gate.max}")
    return gate


def _validate(p: Pipeline) -> None:
    def fail(msg: str) -> None:
        raise DefinitionError(f"pipeline {p.name!r}: {msg}")

    numbers = [ph.number for ph in p.phases]
    if len(set(numbers)) != len(numbers):
        fail(f"duplicate phase numbers {numbers}")
    for ph in p.phases:
        if ph.default_date not in ("yesterday", "today"):
            fail(f"phase {ph.number}: default_date must be 'yesterday' or 'today'")
        if ph.next is not None and ph.next not in numbers:
            fail(f"phase {ph.number} cascades to undeclared phase {ph.next}")
        if not 1 <= ph.max_instances <= 1000 or not 1 <= ph.concurrency <= 1000:
            fail(f"phase {ph.number}: max_instances and concurrency must be between 1 and 1000")
    names = [pr.name for pr in p.processors]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        fail(f"duplicate processor names {dupes}")
    tables = [pr.output.logical for pr in p.processors]
    if len(set(tables)) != len(tables):
        fail("two processors write the same output table")
    for pr in p.processors:
        where = f"processor {pr.name!r}"
        if not _NAME.match(pr.name) or not _NAME.match(pr.output.dataset) or not _NAME.match(pr.output.name):
            fail(f"{where}: names must be lowercase identifiers")
        if len(pr.name) > 64 or sum(x.phase == pr.phase for x in p.processors) > 100:  # messages.MAX_NAME_LENGTH,
            fail(f"{where}: names are at most 64 characters, phases have at most 100 processors "  # MAX_PROCESSORS
                 f"(the message contract's bounds)")
        if pr.phase not in numbers:
            fail(f"{where}: phase {pr.phase} is not declared")
        cols = dict(pr.output.columns)
        bad_types = {c: t for c, t in cols.items() if t not in _COLUMN_TYPES}
        if bad_types:
            fail(f"{where}: unsupported column types {bad_types}")
        if cols.get(pr.output.date_column) != "DATE":
            fail(f"{where}: date_column {pr.output.date_column!r} must be a DATE column")
        for k in (*pr.output.keys, *pr.output.critical):
            if k not in cols:
                fail(f"{where}: key/critical column {k!r} is not a declared column")
        if sum(x is not None for x in (pr.sql, pr.source, pr.export, pr.python)) != 1:
            fail(f"{where}: declare exactly one of `sql`, `source`, `export` or `python`")
        if pr.export is not None and not {"gcs_json", "sql"} <= set(pr.export):
            fail(f"{where}: `export` needs `gcs_json` (path with {{date}}) and `sql`")
        if pr.export is not None:
            wrong = {c: t for c, t in cols.items() if c != pr.output.date_column and MANIFEST_FIELDS.get(c) != t}
            if wrong:
                fail(f"{where}: an export's output columns are its date column and manifest fields "
                     f"{MANIFEST_FIELDS}; not {wrong}")
            if "{date}" not in str(pr.export["gcs_json"]):
                fail(f"{where}: export path {pr.export['gcs_json']!r} needs `{{date}}` (one file per date)")
            if str(pr.export.get("format", "envelope")) not in EXPORT_FORMATS:
                fail(f"{where}: export format {pr.export.get('format')!r} is not one of {list(EXPORT_FORMATS)}")
        if pr.python is not None and not _CALLABLE.match(pr.python):
            fail(f"{where}: `python: {pr.python}` must have the form module:attribute "
                 f"(e.g. my_pipeline.features:build)")
        if pr.source is not None:
            _validate_synthetic_hints(pr, cols, fail)
        _validate_gates(p, pr, cols, fail)
        for u in pr.upstreams:
            if u.lookback_days < 0 or u.lookback_dates < 0:
                fail(f"{where}: upstream {u.processor!r}: lookbacks must be >= 0")
            if u.processor not in names:
                fail(f"{where}: upstream {u.processor!r} is not a declared processor")
            if next(x for x in p.processors if x.name == u.processor).phase > pr.phase:
                fail(f"{where}: upstream {u.processor!r} is in a later phase")
        for text in (pr.sql, (pr.export or {}).get("sql")):
            for ds, tb in _PLACEHOLDER.findall(text or ""):
                if f"{ds}.{tb}" not in tables:
                    fail(f"{where}: sql reads undeclared table {ds}.{tb}")
    for ph in p.phases:
        p.processors_of(ph.number)  # raises on cycles
    _validate_calendar(p, fail)
    if p.synthetic is not None and not _CALLABLE.match(p.synthetic):
        fail(f"`synthetic: {p.synthetic}` must have the form module:attribute")


# Python types a ``calendar.expected_from.where`` value may have, per declared column type.
_WHERE_TYPES: dict[str, tuple[type, ...]] = {"STRING": (str,), "INT64": (int,), "FLOAT64": (int, float),
                                             "NUMERIC": (int, float), "BOOL": (bool,), "DATE": (str, date)}


def _validate_calendar(p: Pipeline, fail: Any) -> None:
    """``calendar.expected_from`` names a declared processor and filters on its declared columns with
    values of their types (they become query parameters; the identifiers come from the definition)."""
    src = p.calendar.expected_from
    if src is None:
        return
    where = "calendar.expected_from"
    if src.processor not in {x.name for x in p.processors}:
        fail(f"{where}: processor {src.processor!r} is not a declared processor")
    cols = dict(p.processor(src.processor).output.columns)
    for col, values in src.where:
        if col not in cols:
            fail(f"{where}.where: {col!r} is not a column of {src.processor}; columns are {sorted(cols)}")
        kinds = _WHERE_TYPES.get(cols[col])
        if kinds is None:
            fail(f"{where}.where: {col} is {cols[col]}, which a filter cannot compare")
        for v in values:
            if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
                fail(f"{where}.where: {col} is {cols[col]}, {v!r} is not a value of that type")
    if src.refresh_seconds < 1:
        fail(f"{where}.refresh_seconds must be >= 1")


def _validate_synthetic_hints(pr: Processor, cols: dict[str, str], fail: Any) -> None:
    """``source.synthetic: {rows: N, values: {column: [choices] | {min, max}}}`` (optional) shapes
    the synthetic raw files generated for local runs and tests."""
    hints = (pr.source or {}).get("synthetic") or {}
    if not isinstance(hints, dict) or set(hints) - {"rows", "values"}:
        fail(f"processor {pr.name!r}: source.synthetic takes `rows` and `values`, got {hints!r}")
    for col, spec in (hints.get("values") or {}).items():
        if col not in cols:
            fail(f"processor {pr.name!r}: source.synthetic.values names undeclared column {col!r}")
        if not (isinstance(spec, list) and spec) and not (isinstance(spec, dict) and set(spec) <= {"min", "max"}):
            fail(f"processor {pr.name!r}: source.synthetic.values.{col} must be a list of choices or {{min, max}}")


def _validate_gates(p: Pipeline, pr: Processor, cols: dict[str, str], fail: Any) -> None:
    where = f"processor {pr.name!r}"
    names = [g.name for g in pr.gates]
    if len(set(names)) != len(names):
        fail(f"{where}: duplicate gate names {sorted({n for n in names if names.count(n) > 1})}")
    readable = {pr.output.logical} | {p.processor(u.processor).output.logical for u in pr.upstreams
                                      if u.processor in {x.name for x in p.processors}}
    for g in pr.gates:
        for c in g.columns:
            if c not in cols:
                fail(f"{where}: gate {g.name!r} names undeclared column {c!r}; columns are {sorted(cols)}")
        if g.kind == "range" and cols[g.columns[0]] not in _NUMERIC:
            fail(f"{where}: gate {g.name!r}: range needs a numeric column, {g.columns[0]} is {cols[g.columns[0]]}")
        for ds, tb in _PLACEHOLDER.findall(g.sql or ""):
            if f"{ds}.{tb}" not in readable:
                fail(f"{where}: gate {g.name!r} reads {ds}.{tb}; a gate reads only its processor's output "
                     f"and declared upstreams {sorted(readable)}")


def make_importable(pipeline: Pipeline) -> None:
    """Put the definition's folder, and the repository's ``pipelines/`` folder, on ``sys.path``
    (after everything else): a pipeline's Python modules live beside its YAML."""
    import sys

    folders = [DEFAULT_DEFINITION.parent]
    if pipeline.source_path:
        folders.insert(0, Path(pipeline.source_path).resolve().parent)
    for folder in map(str, folders):
        if folder not in sys.path:
            sys.path.append(folder)


def import_callable(pipeline: Pipeline, spec: str) -> Any:
    """The object ``spec`` (``module:attribute``) names, importable from ``PYTHONPATH`` or the folders
    of ``make_importable``. Raises ImportError / AttributeError."""
    import importlib

    make_importable(pipeline)
    module, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def upstream_map(pipeline: Pipeline) -> dict[str, list[str]]:
    return {p.name: [u.processor for u in p.upstreams] for p in pipeline.processors}


def all_columns(table: Table) -> list[tuple[str, str]]:
    """The declared columns plus the framework's lineage columns."""
    return [*table.columns, *FRAMEWORK_COLUMNS.items()]


def names(items: Iterable[Processor]) -> list[str]:
    return [p.name for p in items]
