"""The rules relating a definition's parts, checked once its structure is valid: unique names, declared
phases and upstreams, column types, keys that are columns, one kind per processor, exports' manifests,
gates reading only what their processor may read, SQL naming only declared tables, no dependency cycle
within a phase, and a calendar reading declared columns. ``validate`` raises ``DefinitionError`` naming
the pipeline and the first broken rule.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from cascade.definition.columns import COLUMN_TYPES, MANIFEST_FIELDS, NUMERIC_TYPES
from cascade.definition.imports import CALLABLE
from cascade.definition.model import Pipeline, Processor
from cascade.definition.placeholders import PLACEHOLDER
from cascade.definition.schema import EXPORT_FORMATS
from cascade.definition.schema import NAME as _NAME_PATTERN
from cascade.errors import DefinitionError

# A lowercase identifier: processor, dataset, table, column and gate names.
NAME = re.compile(_NAME_PATTERN)


def validate(p: Pipeline) -> None:
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
        if not NAME.match(pr.name) or not NAME.match(pr.output.dataset) or not NAME.match(pr.output.name):
            fail(f"{where}: names must be lowercase identifiers")
        if len(pr.name) > 64 or sum(x.phase == pr.phase for x in p.processors) > 100:  # messages.MAX_NAME_LENGTH,
            fail(f"{where}: names are at most 64 characters, phases have at most 100 processors "  # MAX_PROCESSORS
                 f"(the message contract's bounds)")
        if pr.phase not in numbers:
            fail(f"{where}: phase {pr.phase} is not declared")
        cols = dict(pr.output.columns)
        bad_types = {c: t for c, t in cols.items() if t not in COLUMN_TYPES}
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
        if pr.python is not None and not CALLABLE.match(pr.python):
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
            for ds, tb in PLACEHOLDER.findall(text or ""):
                if f"{ds}.{tb}" not in tables:
                    fail(f"{where}: sql reads undeclared table {ds}.{tb}")
    for ph in p.phases:
        p.processors_of(ph.number)  # raises on cycles
    _validate_calendar(p, fail)
    if p.synthetic is not None and not CALLABLE.match(p.synthetic):
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
        if g.kind == "range" and cols[g.columns[0]] not in NUMERIC_TYPES:
            fail(f"{where}: gate {g.name!r}: range needs a numeric column, {g.columns[0]} is {cols[g.columns[0]]}")
        for ds, tb in PLACEHOLDER.findall(g.sql or ""):
            if f"{ds}.{tb}" not in readable:
                fail(f"{where}: gate {g.name!r} reads {ds}.{tb}; a gate reads only its processor's output "
                     f"and declared upstreams {sorted(readable)}")
