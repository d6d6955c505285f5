"""The definition file's structure, declared once: validation, JSON Schema and the reference page.

``SCHEMA`` says which keys a pipeline definition (``pipelines/*.yaml``) may have, their types, which
are required, and what each means. Three things derive from it, so they cannot drift apart:

* ``issues(raw)`` / ``validate(raw)``: structural validation of the raw YAML data, run first by
  ``pipeline.from_dict`` (unknown keys - typos like ``lookback_day`` - wrong types, missing keys).
  Each issue carries its path (``("processors", 2, "output", "keys")``) so ``cascade lint`` can map
  it to a file and line. Relations between parts (undeclared upstreams, cycles, key columns that are
  not columns) stay in ``pipeline._validate``.
* ``json_schema()``: JSON Schema (draft-07) for editors - ``python -m shared.definition_schema
  --write`` regenerates ``docs/definition-schema.json`` (``--check`` exits 1 when it is stale).
* ``reference_markdown()``: ``docs/definition-reference.md``, one row per key with its description.

Pure Python with no dependencies: it ships inside every function's zip (imported by the loader).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Iterator

from .errors import DefinitionError

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "docs" / "definition-schema.json"
REFERENCE_PATH = REPO_ROOT / "docs" / "definition-reference.md"
SCHEMA_ID = "https://cascade.dev/schemas/pipeline-definition.json"

Path_ = tuple[Any, ...]  # keys and list indexes from the document root, e.g. ("processors", 2, "sql")


@dataclass(frozen=True)
class Issue:
    """One structural problem: where (path from the root) and what."""

    path: Path_
    message: str

    def where(self, raw: Any = None) -> str:
        """``processor 'x': output.keys`` style location (the processor/phase named when known)."""
        return describe_path(self.path, raw)

    def render(self, raw: Any = None) -> str:
        where = self.where(raw)
        return f"{where}: {self.message}" if where else self.message


# ---------------------------------------------------------------------- nodes
class Node:
    """A value's declared shape. ``message`` replaces the generic text of a failure at this node."""

    kind = "value"

    def __init__(self, description: str = "", *, required: bool = False, default: Any = None,
                 message: str | None = None, examples: list[Any] | None = None) -> None:
        self.description = description
        self.required = required
        self.default = default
        self.message = message
        self.examples = examples or []

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        raise NotImplementedError

    def _json(self) -> dict[str, Any]:
        raise NotImplementedError

    def json(self) -> dict[str, Any]:
        out = self._json()
        if self.description:
            out["description"] = self.description
        if self.default is not None:
            out["default"] = self.default
        if self.examples:
            out["examples"] = self.examples
        return out

    def label(self) -> str:
        return self.kind

    def _fail(self, out: list[Issue], path: Path_, text: str, custom: bool = True) -> None:
        out.append(Issue(path, (self.message if custom else None) or text))

    def children(self) -> Iterator[tuple[str, "Node"]]:
        return iter(())


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Str(Node):
    kind = "string"

    def __init__(self, description: str = "", *, pattern: str | None = None, enum: list[str] | None = None,
                 max_length: int | None = None, **kw: Any) -> None:
        super().__init__(description, **kw)
        self.pattern, self.enum, self.max_length = pattern, enum, max_length

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        if not isinstance(value, str):
            return self._fail(out, path, f"expected a string, got {_got(value)}")
        if self.enum is not None and value not in self.enum:
            return self._fail(out, path, f"expected one of {self.enum}, got {_got(value)}")
        if self.pattern and not re.search(self.pattern, value):
            return self._fail(out, path, f"{_got(value)} does not match {self.pattern}")
        if self.max_length is not None and len(value) > self.max_length:
            return self._fail(out, path, f"at most {self.max_length} characters, got {len(value)}")

    def _json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string"}
        if self.enum is not None:
            out["enum"] = self.enum
        if self.pattern:
            out["pattern"] = self.pattern
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        return out

    def label(self) -> str:
        return " \\| ".join(f"`{e}`" for e in self.enum) if self.enum else "string"


class Int(Node):
    kind = "integer"

    def __init__(self, description: str = "", *, minimum: int | None = None, maximum: int | None = None,
                 nullable: bool = False, **kw: Any) -> None:
        super().__init__(description, **kw)
        self.minimum, self.maximum, self.nullable = minimum, maximum, nullable

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        if value is None and self.nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            return self._fail(out, path, f"expected an integer, got {_got(value)}", custom=False)
        if self.minimum is not None and value < self.minimum or self.maximum is not None and value > self.maximum:
            return self._fail(out, path, f"expected {self.minimum if self.minimum is not None else ''}.."
                                         f"{self.maximum if self.maximum is not None else ''}, got {value}")

    def _json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": ["integer", "null"] if self.nullable else "integer"}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out

    def label(self) -> str:
        bounds = (f" ({self.minimum if self.minimum is not None else ''}..{self.maximum if self.maximum is not None else ''})"
                  if self.minimum is not None or self.maximum is not None else "")
        return "integer" + bounds + (" or null" if self.nullable else "")


class Num(Node):
    kind = "number"

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self._fail(out, path, f"expected a number, got {_got(value)}")

    def _json(self) -> dict[str, Any]:
        return {"type": "number"}


class Bool(Node):
    kind = "boolean"

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        if not isinstance(value, bool):
            self._fail(out, path, f"expected true or false, got {_got(value)}")

    def _json(self) -> dict[str, Any]:
        return {"type": "boolean"}


class Date(Node):
    """A date ``YYYY-MM-DD`` (YAML may hand it over already parsed)."""

    kind = "date"

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        if isinstance(value, date):
            return None
        try:
            if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                date.fromisoformat(value)
                return None
        except ValueError:
            pass
        self._fail(out, path, f"expected a date YYYY-MM-DD, got {_got(value)}")

    def _json(self) -> dict[str, Any]:
        return {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}

    def label(self) -> str:
        return "date (YYYY-MM-DD)"


class List(Node):
    kind = "list"

    def __init__(self, items: Node, description: str = "", *, min_items: int = 0, **kw: Any) -> None:
        super().__init__(description, **kw)
        self.items, self.min_items = items, min_items

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        if not isinstance(value, list):
            return self._fail(out, path, f"expected a list, got {_got(value)}")
        if len(value) < self.min_items:
            return self._fail(out, path, f"expected at least {self.min_items} item(s)")
        for i, item in enumerate(value):
            self.items.check(item, (*path, i), out)

    def _json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "array", "items": self.items.json()}
        if self.min_items:
            out["minItems"] = self.min_items
        return out

    def label(self) -> str:
        return f"list of {self.items.label()}"

    def children(self) -> Iterator[tuple[str, Node]]:
        yield "[]", self.items


class Map(Node):
    """A mapping with free keys (matching ``key_pattern``) and uniform values, e.g. columns."""

    kind = "mapping"

    def __init__(self, values: Node, description: str = "", *, key_pattern: str, min_items: int = 0,
                 **kw: Any) -> None:
        super().__init__(description, **kw)
        self.values, self.key_pattern, self.min_items = values, key_pattern, min_items

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        if not isinstance(value, dict):
            return self._fail(out, path, f"expected a mapping, got {_got(value)}")
        if len(value) < self.min_items:
            return self._fail(out, path, f"expected at least {self.min_items} entr{'y' if self.min_items == 1 else 'ies'}")
        for k, v in value.items():
            if not isinstance(k, str) or not re.search(self.key_pattern, k):
                out.append(Issue((*path, k), f"key {_got(k)} does not match {self.key_pattern}"))
                continue
            self.values.check(v, (*path, k), out)

    def _json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object", "propertyNames": {"pattern": self.key_pattern},
                               "additionalProperties": self.values.json()}
        if self.min_items:
            out["minProperties"] = self.min_items
        return out

    def label(self) -> str:
        return f"mapping of name to {self.values.label()}"

    def children(self) -> Iterator[tuple[str, Node]]:
        yield "<name>", self.values


class Obj(Node):
    """A mapping with declared keys only (an unknown key is an error: usually a typo)."""

    kind = "mapping"

    def __init__(self, fields: dict[str, Node], description: str = "", *, title: str | None = None,
                 non_empty: bool = False, **kw: Any) -> None:
        super().__init__(description, **kw)
        self.fields, self.title, self.non_empty = fields, title, non_empty

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        if not isinstance(value, dict):
            return self._fail(out, path, f"expected a mapping with keys {list(self.fields)}, got {_got(value)}")
        if self.non_empty and not value:
            return self._fail(out, path, f"expected at least one of {list(self.fields)}")
        suggested = set()
        for k in value:
            if k not in self.fields:
                close = _closest(str(k), self.fields)
                suggested.add(close)
                out.append(Issue((*path, k), f"unknown key {k!r}"
                                 + (f" (did you mean {close!r}?)" if close else f"; allowed: {list(self.fields)}")))
        for k, node in self.fields.items():
            if k in value:
                node.check(value[k], (*path, k), out)
            elif node.required and k not in suggested:  # a misspelt key is reported once, as unknown
                out.append(Issue(path, f"missing required key {k!r}"))

    def _json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object", "properties": {k: n.json() for k, n in self.fields.items()},
                               "additionalProperties": False}
        req = [k for k, n in self.fields.items() if n.required]
        if req:
            out["required"] = req
        if self.non_empty:
            out["minProperties"] = 1
        if self.title:
            out["title"] = self.title
        return out

    def children(self) -> Iterator[tuple[str, Node]]:
        yield from self.fields.items()


class Either(Node):
    """One of a few shapes, told apart by the value's type (e.g. a name, or a mapping)."""

    def __init__(self, *options: Node, description: str = "", **kw: Any) -> None:
        super().__init__(description, **kw)
        self.options = options

    _PY = {"string": str, "mapping": dict, "list": list, "integer": int, "number": (int, float), "boolean": bool}

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        for opt in self.options:
            if isinstance(value, self._PY.get(opt.kind, object)):
                return opt.check(value, path, out)
        self._fail(out, path, f"expected {' or '.join(o.label() for o in self.options)}, got {_got(value)}")

    def _json(self) -> dict[str, Any]:
        return {"anyOf": [o.json() for o in self.options]}

    def label(self) -> str:
        return " or ".join(o.label() for o in self.options)

    def children(self) -> Iterator[tuple[str, Node]]:
        for o in self.options:
            yield from o.children()


class OneKey(Node):
    """A mapping with exactly one of ``variants`` as its key (its kind), plus optional ``extra`` keys."""

    kind = "mapping"

    def __init__(self, variants: dict[str, Node], extra: dict[str, Node], description: str = "", *,
                 needs: dict[str, tuple[list[str], str]] | None = None, **kw: Any) -> None:
        super().__init__(description, **kw)
        self.variants, self.extra, self.needs = variants, extra, needs or {}

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        kinds = [k for k in (value if isinstance(value, dict) else {}) if k not in self.extra]
        if not isinstance(value, dict) or len(kinds) != 1 or kinds[0] not in self.variants:
            return self._fail(out, path, f"expected one of {list(self.variants)} (e.g. {{not_null: [col]}}), "
                                         f"got {_got(value)}")
        kind = kinds[0]
        self.variants[kind].check(value[kind], (*path, kind), out)
        for k, node in self.extra.items():
            if k in value:
                node.check(value[k], (*path, k), out)
        keys, text = self.needs.get(kind, ([], ""))
        if any(k not in value for k in keys):
            out.append(Issue(path, text))

    def _json(self) -> dict[str, Any]:
        alts = []
        for kind, node in self.variants.items():
            alts.append({"type": "object", "properties": {kind: node.json(), **{k: n.json() for k, n in self.extra.items()}},
                         "required": [kind, *self.needs.get(kind, ([], ""))[0]], "additionalProperties": False})
        return {"oneOf": alts}

    def children(self) -> Iterator[tuple[str, Node]]:
        yield from self.variants.items()
        yield from self.extra.items()


def _closest(key: str, known: dict[str, Any]) -> str | None:
    import difflib

    found = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    return found[0] if found else None


# ---------------------------------------------------------------------- the definition
# Patterns shared with pipeline.py (tests assert they are the same): lowercase identifiers, a
# `dataset.table`, a `module:attribute` callable.
NAME = r"^[a-z][a-z0-9_]*$"
TABLE = r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$"
CALLABLE = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
COLUMN_TYPES = ["DATE", "STRING", "INT64", "FLOAT64", "BOOL", "TIMESTAMP", "NUMERIC"]

_LOOKBACK = "lookbacks must be >= 0"

UPSTREAM = Either(
    Str("Name of an upstream processor, read for the same date.", pattern=NAME),
    Obj({
        "processor": Str("Name of the upstream processor.", pattern=NAME, required=True),
        "lookback_days": Int("Days before the run's date this processor reads: 30 on 2025-01-31 reads "
                             "2025-01-01..2025-01-31 (inclusive). Strict mode checks every expected date of the "
                             "window is present.", minimum=0, default=0, message=_LOOKBACK),
        "lookback_dates": Int("The last N expected dates (calendar-aware: no-game days and the off-season do not "
                              "count; may reach into the previous season).", minimum=0, default=0, message=_LOOKBACK),
        "until": Str("`previous_day` ends the window the day before the run's date (forward-looking readers, "
                     "e.g. predictions for today's games).", enum=["same_day", "previous_day"], default="same_day"),
    }, "An upstream with a lookback window.", title="Upstream"),
    description="A processor this one reads: its name (same date), or a mapping with a lookback window.")

GATE = OneKey(
    variants={
        "row_count": Obj({
            "min": Num("At least this many rows in the written partition."),
            "max": Num("At most this many rows."),
            "within_pct_of_trailing_median": Num("Within this many percent of the median row count of the trailing "
                                                 "`days` expected dates."),
            "days": Int("Trailing expected dates for the median (default 14).", minimum=1),
        }, "Row count bounds of the written partition.", non_empty=True),
        "not_null": Either(Str("A column name."), List(Str("A column name."), min_items=1),
                           description="Columns that must have no NULLs in the written partition."),
        "range": Obj({
            "column": Str("A numeric output column.", required=True),
            "min": Num("Smallest allowed value."),
            "max": Num("Largest allowed value."),
        }, "Values of a numeric column within min..max."),
        "sql": Str("A SELECT returning the offending rows (zero rows = pass); `@data_date` is a parameter, "
                   "`{dataset.table}` placeholders may name the output and declared upstreams."),
    },
    extra={"name": Str("Gate name (default derived from the kind); required for `sql` gates.", pattern=NAME)},
    needs={"sql": (["name"], "a sql gate needs the SELECT of its offending rows and a `name`")},
    description="A quality gate on the processor's written partition, checked before the phase can complete: "
                "exactly one of `row_count`, `not_null`, `range`, `sql` (plus an optional `name`).")

PROCESSOR = Obj({
    "name": Str("Processor name (a lowercase identifier, at most 64 characters).", pattern=NAME, max_length=64,
                required=True),
    "phase": Int("The phase this processor runs in (a declared phase number).", required=True),
    "description": Str("What the processor produces."),
    "upstreams": List(UPSTREAM, "Processors whose output this one reads (same phase: runs after them)."),
    "output": Obj({
        "table": Str("Output table `dataset.table` (datasets are namespaced per deployment).", pattern=TABLE,
                     required=True),
        "date_column": Str("The DATE column the table is partitioned on; a run writes one date's partition.",
                           required=True),
        "keys": List(Str("A column name."), "MERGE keys within a date partition.", min_items=1, required=True),
        "critical": List(Str("A column name."), "Columns validation reports NULLs of."),
        "columns": Map(Str("A BigQuery column type.", enum=COLUMN_TYPES + [t.lower() for t in COLUMN_TYPES]),
                       "Output columns and their BigQuery types (the framework adds `_run_id`, "
                       "`_processed_at`, `_fence`).", key_pattern=NAME, min_items=1, required=True),
    }, "The table this processor MERGEs into.", required=True),
    "sql": Str("A SELECT producing the date's rows; `{dataset.table}` placeholders name declared tables; "
               "parameters `@data_date` and `@window_start` (DATE)."),
    "source": Obj({
        "gcs_json": Str("Raw file path in the raw bucket, with `{date}`, e.g. `sales/{date}.json`.", required=True),
        "records": Str("Key of the list of records in the file (default `records`).", default="records"),
        "synthetic": Obj({
            "rows": Int("Records per synthetic file (default 10).", minimum=0),
            "values": Map(Either(List(Either(Str(), Num(), Bool()), min_items=1),
                                 Obj({"min": Num("Smallest value."), "max": Num("Largest value.")})),
                          "Per column: a list of choices or {min, max}.", key_pattern=NAME),
        }, "Shapes the synthetic raw files written for local runs and tests."),
    }, "Load a raw JSON file per date from GCS (phase 2 loaders)."),
    "export": Obj({
        "gcs_json": Str("Export file path with `{date}`.", required=True),
        "sql": Str("The SELECT whose rows are exported.", required=True),
    }, "Export a date's query result as a JSON file and record a manifest row."),
    "python": Str("`module:attribute` of a Python callable producing the date's rows (importable from the "
                  "definition's folder or PYTHONPATH).", pattern=CALLABLE, examples=["my_pipeline.features:build"]),
    "allow_empty": Bool("Zero rows on an expected date is a valid result (else refused, existing rows kept).",
                        default=False),
    "gates": List(GATE, "Quality gates on the written partition."),
}, "One unit of work of a phase for one date: exactly one of `sql`, `source`, `export`, `python`.",
    title="Processor")

PHASE = Obj({
    "number": Int("Phase number (its order in the cascade).", required=True),
    "name": Str("Short name, used in topic and function names.", pattern=NAME, required=True),
    "title": Str("Human title (default: the name, capitalised)."),
    "next": Int("The phase this phase's completion triggers.", nullable=True),
    "schedule": Str("Cron expression (pipeline time zone) at which a scheduler triggers this phase."),
    "default_date": Str("The date a date-less trigger means.", enum=["yesterday", "today"], default="yesterday"),
    "max_instances": Int("Deployed function instances at most.", minimum=1, maximum=1000, default=10),
    "concurrency": Int("Requests one function instance serves at once.", minimum=1, maximum=1000, default=8),
}, "An ordered stage: one Cloud Function.", title="Phase")

CALENDAR = Obj({
    "timezone": Str("IANA time zone of the pipeline's dates, e.g. America/New_York.", required=True),
    "seasons": List(Obj({
        "name": Str("Season name.", required=True),
        "start": Date("First date (inclusive).", required=True),
        "end": Date("Last date (inclusive).", required=True),
    }, "A season: dates from start to end are expected to have data (minus no-game days)."),
        "Seasons; dates outside every season are not expected."),
    "no_game": List(Obj({
        "date": Date("A single date without data."),
        "start": Date("First date of a range without data."),
        "end": Date("Last date of the range (inclusive)."),
        "reason": Str("Why (shown next to the date, never reported as a gap)."),
    }), "Dates inside seasons that have no data (holidays, breaks)."),
}, "Which dates are expected to have data.", required=True, title="Calendar")

SCHEMA = Obj({
    "pipeline": Str("Pipeline name (prefixes topics and Firestore collections).", required=True),
    "description": Str("What the pipeline does."),
    "raw_bucket": Str("Raw bucket name stem (the bucket is `<project>-<raw_bucket>`).", default="raw"),
    "synthetic": Str("`module:attribute` of a `day_files(day) -> {pattern: body}` generator of realistic raw "
                     "files for local runs (else derived from the declared columns).", pattern=CALLABLE),
    "calendar": CALENDAR,
    "phases": List(PHASE, "The phases, in order.", min_items=1, required=True),
    "processors": List(PROCESSOR, "Every processor of every phase.", min_items=1, required=True),
}, "A Cascade pipeline definition: phases, processors, tables, upstreams and the calendar.",
    title="Cascade pipeline definition")


# ---------------------------------------------------------------------- validation
def issues(raw: Any) -> list[Issue]:
    """Every structural problem of ``raw`` (the loaded YAML), in document order."""
    out: list[Issue] = []
    if not isinstance(raw, dict):
        return [Issue((), f"a pipeline definition is a mapping with keys {list(SCHEMA.fields)}, got {_got(raw)}")]
    SCHEMA.check(raw, (), out)
    return out


def validate(raw: Any, source_path: str = "") -> None:
    """Raise ``DefinitionError`` listing the structural problems of ``raw`` (none: return)."""
    found = issues(raw)
    if found:
        shown = "; ".join(i.render(raw) for i in found[:5])
        more = f" (and {len(found) - 5} more; run `cascade lint` for all)" if len(found) > 5 else ""
        raise DefinitionError(f"invalid pipeline definition {source_path}: {shown}{more}".replace("  ", " "))


def describe_path(path: Path_, raw: Any = None) -> str:
    """``("processors", 2, "output", "keys")`` -> ``processor 'x': output.keys`` (``processors[3]`` if unnamed)."""
    parts: list[str] = []
    rest = list(path)
    if len(rest) >= 2 and rest[0] in ("processors", "phases") and isinstance(rest[1], int):
        item = _at(raw, rest[:2])
        label = "name" if rest[0] == "processors" else "number"
        ident = item.get(label) if isinstance(item, dict) else None
        parts.append(f"processor {ident!r}" if rest[0] == "processors" and isinstance(ident, str)
                     else f"phase {ident}" if rest[0] == "phases" and ident is not None
                     else f"{rest[0]}[{rest[1] + 1}]")
        rest = rest[2:]
    tail = ""
    for p in rest:
        tail += f"[{p + 1}]" if isinstance(p, int) else (f".{p}" if tail else str(p))
    if tail:
        parts.append(tail)
    return ": ".join(parts)


def _at(raw: Any, path: list[Any]) -> Any:
    for p in path:
        try:
            raw = raw[p]
        except (KeyError, IndexError, TypeError):
            return None
    return raw


# ---------------------------------------------------------------------- generated documents
def json_schema() -> dict[str, Any]:
    """The definition's JSON Schema (draft-07), for editors (yaml-language-server) and tools."""
    return {"$schema": "http://json-schema.org/draft-07/schema#", "$id": SCHEMA_ID, **SCHEMA.json()}


def declared_paths(node: Node = SCHEMA, prefix: str = "") -> list[tuple[str, Node]]:
    """Every key the schema declares, as dotted paths (``processors[].output.columns.<name>``)."""
    out: list[tuple[str, Node]] = []
    for key, child in node.children():
        path = f"{prefix}{key}" if key == "[]" else f"{prefix}.{key}" if prefix else key
        out.append((path, child))
        out.extend(declared_paths(child, path))
    return out


def reference_markdown() -> str:
    """``docs/definition-reference.md``: every key with its type, whether required, and its meaning."""
    lines = ["# Pipeline definition reference", "",
             "Generated from `shared/definition_schema.py` by `python -m shared.definition_schema --write` "
             "(do not edit by hand). The same declaration validates every definition when it is loaded "
             "(`cascade lint` reports every problem with its line) and produces "
             "[definition-schema.json](definition-schema.json) for editor completion (see "
             "[Editor completion](#editor-completion)).", "",
             "| key | type | required | default | description |", "|---|---|---|---|---|"]
    for path, node in declared_paths():
        if path.endswith("[]") and isinstance(node, (Obj, Either, OneKey)) and not node.description:
            continue
        default = "" if node.default is None else f"`{json.dumps(node.default)}`"
        desc = node.description.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{path}` | {node.label()} | {'yes' if node.required else ''} | {default} | {desc} |")
    lines += ["", "## Editor completion", "",
              "With the VS Code YAML extension (redhat.vscode-yaml) or any yaml-language-server editor, put this "
              "first line in a definition (the path is relative to the YAML file):", "",
              "```yaml", "# yaml-language-server: $schema=../docs/definition-schema.json", "```", "",
              "or map every definition at once in `.vscode/settings.json` (this repository ships one):", "",
              "```json", json.dumps({"yaml.schemas": {"./docs/definition-schema.json": ["pipelines/*.yaml",
                                                                                        "pipeline.yaml"]}}, indent=2),
              "```", "",
              "`cascade init` writes the modeline into a new project's `pipeline.yaml` with the absolute path "
              "of this checkout's schema.", ""]
    return "\n".join(lines)


def _rendered() -> dict[Path, str]:
    return {SCHEMA_PATH: json.dumps(json_schema(), indent=2) + "\n", REFERENCE_PATH: reference_markdown()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.definition_schema",
                                     description="Print, write or check docs/definition-schema.json and "
                                                 "docs/definition-reference.md (generated from this module).")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="write both files")
    group.add_argument("--check", action="store_true", help="exit 1 when a committed file is stale")
    args = parser.parse_args(argv)
    files = _rendered()
    if args.write:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO_ROOT)}")
        return 0
    if args.check:
        stale = [str(p.relative_to(REPO_ROOT)) for p, t in files.items() if not p.exists() or p.read_text() != t]
        if stale:
            print(f"stale: {', '.join(stale)}; run: python -m shared.definition_schema --write", file=sys.stderr)
            return 1
        return 0
    print(files[SCHEMA_PATH], end="")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
