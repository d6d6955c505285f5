"""Reading a definition: YAML file -> plain data -> ``Pipeline``. The structure is checked first (keys
and types, ``cascade.definition.schema``), then the parts are built, then the relations between them
are validated (``cascade.definition.validation``); the first problem raises ``DefinitionError``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from cascade.definition.calendar import Calendar, parse_date
from cascade.definition.imports import PIPELINES_FOLDER
from cascade.definition.model import GATE_KINDS, Gate, Phase, Pipeline, Processor, Table, Upstream
from cascade.definition.schema import validate as validate_structure
from cascade.definition.validation import NAME, validate
from cascade.errors import DefinitionError

# The reference definition, loaded when neither a path nor $CASCADE_PIPELINE_FILE names one.
DEFAULT_DEFINITION = PIPELINES_FOLDER / "nba.yaml"


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
        # A declared title as written; without one, from the name ("zone_demand": "Zone demand").
        phases = tuple(Phase(int(p["number"]), str(p["name"]),
                             str(p["title"]) if p.get("title") else str(p["name"]).replace("_", " ").capitalize(),
                             int(p["next"]) if p.get("next") is not None else None,
                             str(p["schedule"]) if p.get("schedule") else None,
                             str(p.get("default_date", "yesterday")),
                             int(p.get("max_instances", 10)), int(p.get("concurrency", 8))) for p in raw["phases"])
        processors = tuple(_processor(p) for p in raw["processors"])
        pipeline = Pipeline(name=str(raw["pipeline"]), description=str(raw.get("description", "")),
                            calendar=Calendar.from_dict(raw["calendar"]).with_history_starts(
                                {str(p["name"]): parse_date(str(p["history_start"])) for p in raw["processors"]
                                 if p.get("history_start") is not None}), phases=phases,
                            processors=processors, raw_bucket=str(raw.get("raw_bucket", "raw")),
                            source_path=source_path,
                            synthetic=str(raw["synthetic"]) if raw.get("synthetic") else None)
    except DefinitionError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise DefinitionError(f"invalid pipeline definition {source_path}: {type(exc).__name__}: {exc}") from exc
    validate(pipeline)
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
    if not NAME.match(gate.name):
        raise DefinitionError(f"{where}: name {gate.name!r} must be a lowercase identifier")
    if gate.min is not None and gate.max is not None and gate.min > gate.max:
        raise DefinitionError(f"{where}: min {gate.min} is greater than max {gate.max}")
    return gate
