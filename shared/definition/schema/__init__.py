"""The definition file's structure, declared once: validation, JSON Schema and the reference page.

``SCHEMA`` says which keys a pipeline definition (``pipelines/*.yaml``) may have, their types, which
are required, and what each means. Three things derive from it, so they cannot drift apart:

* ``issues(raw)`` / ``validate(raw)``: structural validation of the raw YAML data, run first by
  ``pipeline.from_dict`` (unknown keys - typos like ``lookback_day`` - wrong types, missing keys).
  Each issue carries its path (``("processors", 2, "output", "keys")``) so ``cascade lint`` can map
  it to a file and line. Relations between parts (undeclared upstreams, cycles, key columns that are
  not columns) stay in ``pipeline._validate``.
* ``json_schema()``: JSON Schema (draft-07) for editors - ``python -m cascade.definition.schema
  --write`` regenerates ``docs/definition-schema.json`` (``--check`` exits 1 when it is stale).
* ``reference_markdown()``: ``docs/definition-reference.md``, one row per key with its description.

The value shapes themselves (``Str``, ``Obj``, ``OneKey``, ...) are in ``nodes.py``.

Pure Python with no dependencies: it ships inside every function's zip (imported by the loader).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cascade.definition.columns import COLUMN_TYPES
from cascade.definition.schema.nodes import (
    Bool,
    Date,
    Either,
    Int,
    Issue,
    List,
    Map,
    Node,
    Num,
    Obj,
    OneKey,
    Path_,
    Str,
    _got,
)
from cascade.errors import DefinitionError

REPO_ROOT = Path(__file__).resolve().parents[3]
SCHEMA_PATH = REPO_ROOT / "docs" / "definition-schema.json"
REFERENCE_PATH = REPO_ROOT / "docs" / "definition-reference.md"

# ---------------------------------------------------------------------- the definition
# Patterns of names, used by the loader too (``validation.NAME``, ``imports.CALLABLE``): lowercase
# identifiers, a `dataset.table`, a `module:attribute` callable.
NAME = r"^[a-z][a-z0-9_]*$"
TABLE = r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$"
CALLABLE = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
# An export's bucket name stem: lowercase letters, digits, dashes (the project and namespace are prefixed).
BUCKET = r"^[a-z0-9][a-z0-9-]{0,40}[a-z0-9]$"
# How an export lays its rows out in the file (``export.format``; the first is the default).
EXPORT_FORMATS = ("envelope", "json_array", "json_lines")

_LOOKBACK = "lookbacks must be >= 0"

UPSTREAM = Either(
    Str("Name of an upstream processor, read for the same date.", pattern=NAME),
    Obj({
        "processor": Str("Name of the upstream processor.", pattern=NAME, required=True),
        "lookback_days": Int("Days before the run's date this processor reads: 30 on 2025-01-31 reads "
                             "2025-01-01..2025-01-31 (inclusive). Strict mode checks every expected date of the "
                             "window is present.", minimum=0, default=0, message=_LOOKBACK),
        "lookback_dates": Int("The last N expected dates (calendar-aware: dates without data and the off-season do not "
                              "count; may reach into the previous season).", minimum=0, default=0, message=_LOOKBACK),
        "until": Str("`previous_day` ends the window the day before the run's date (forward-looking readers, "
                     "e.g. predictions for today).", enum=["same_day", "previous_day"], default="same_day"),
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
        "columns": Map(Str("A BigQuery column type.", enum=[*COLUMN_TYPES, *(t.lower() for t in COLUMN_TYPES)]),
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
        "gcs_json": Str("Export file path with `{date}`, e.g. `exports/daily/{date}.json`.", required=True),
        "sql": Str("The SELECT whose rows are exported (`{dataset.table}` placeholders, `@data_date` and "
                   "`@window_start`); DATE and TIMESTAMP values are written as ISO 8601 text, NUMERIC as numbers.",
                   required=True),
        "bucket": Str("Bucket name stem of the export (the bucket is `<project>-<bucket>`, namespaced like "
                      "`raw_bucket`; created by `cascade up`). Default: the raw bucket.", pattern=BUCKET),
        "format": Str("File layout: `envelope` is one JSON object `{\"date\": ..., \"rows\": [...]}`; "
                      "`json_array` is the rows as one JSON array; `json_lines` is one JSON object per row and "
                      "line (newline-delimited JSON, what `bq load` and most readers stream).",
                      enum=list(EXPORT_FORMATS), default="envelope"),
    }, "Export a date's query result as a JSON file and record a manifest row (the processor's `output` "
       "columns are its date column plus any of `path`, `row_count`, `bytes`, `sha256`; keys `[path]`)."),
    "python": Str("`module:attribute` of a Python callable producing the date's rows (importable from the "
                  "definition's folder or PYTHONPATH).", pattern=CALLABLE, examples=["my_pipeline.features:build"]),
    "history_start": Date("The first date this processor's table has data for, when it starts later than the "
                          "pipeline (`calendar.history_start`), e.g. a sensor installed later: its partitions "
                          "before it are not expected (a backfill leaves them out, a run of its phase records "
                          "them skipped without running them, its phase completes without them, never a gap), "
                          "and a lookback of a reader "
                          "reaching before it is a short window by declaration (computed on what exists, "
                          "recorded with the run's checks, shown by `cascade status`), never refused by preflight."),
    "allow_empty": Bool("Zero rows on an expected date is a valid result (else refused, existing rows kept).",
                        default=False),
    "gates": List(GATE, "Quality gates on the written partition."),
    "job_timeout_seconds": Int("Longest a BigQuery job of one run may take: a job still running then is "
                               "cancelled and the partition fails with the reason (default 480: the function "
                               "timeout of 540 s less 60 s for the run's other steps).", minimum=1, maximum=540),
    "maximum_bytes_billed": Int("Cap on the bytes billed of every BigQuery job this processor sends "
                                "(`maximum_bytes_billed` of each job): a job that would bill more fails instead "
                                "of running. Default: no cap.", minimum=1),
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
    }, "A season: dates from start to end are expected to have data (minus the declared dates without data)."),
        "Seasons; dates outside every season are not expected."),
    "no_game": List(Obj({
        "date": Date("A single date without data."),
        "start": Date("First date of a range without data."),
        "end": Date("Last date of the range (inclusive)."),
        "reason": Str("Why (shown next to the date, never reported as a gap)."),
    }), "Dates inside seasons that have no data (holidays, breaks)."),
    "closed_weekdays": List(Str("A weekday.", enum=["monday", "tuesday", "wednesday", "thursday", "friday",
                                                    "saturday", "sunday"]),
                            "Weekdays without data every week (e.g. a shop closed on Sundays)."),
    "history_start": Date("The first date the pipeline has data for. Earlier dates are not expected; a lookback "
                          "reaching before it is a short window by declaration (computed on what exists, said "
                          "so in the checks and `cascade status`), never a gap, and a backfill from it needs "
                          "nothing before it."),
    "expected_from": Obj({
        "processor": Str("A declared processor (e.g. the schedule loader) whose output table lists the expected "
                         "dates: a date has data when the table has a row for it.", pattern=NAME, required=True),
        "where": Map(Either(Str(), Bool(), Num(), List(Either(Str(), Bool(), Num()), min_items=1)),
                     "Only rows matching count: column -> value or list of values, e.g. `{status: final}`. "
                     "Columns are the processor's declared output columns; values are sent as query "
                     "parameters.", key_pattern=NAME),
        "refresh_seconds": Int("How long a process keeps the dates it read before reading them again.",
                               minimum=1, default=300),
        "unlisted": Str("What a date without any row of the processor (before its last loaded date) means: "
                        "`not_expected` (the list is loaded ahead, a season at a time) or `expected` (it is "
                        "loaded date by date: that date is not loaded yet, so it is expected, unknown; only "
                        "a date whose rows all fail `where` has no data expected).",
                        enum=["not_expected", "expected"], default="not_expected"),
    }, "Expected dates from data, inside the seasons and the rules above: one query per process (kept "
       "`refresh_seconds`). A date after the processor's last loaded date, or while its table cannot be read, "
       "is expected (unknown), never a hidden gap; the processor's own partitions are expected on every "
       "declared date. See docs/calendars.md."),
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
    return {"$schema": "http://json-schema.org/draft-07/schema#", **SCHEMA.json()}


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
             "Generated from `shared/definition/schema/` by `python -m cascade.definition.schema --write` "
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
    parser = argparse.ArgumentParser(prog="python -m cascade.definition.schema",
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
            print(f"stale: {', '.join(stale)}; run: python -m cascade.definition.schema --write", file=sys.stderr)
            return 1
        return 0
    print(files[SCHEMA_PATH], end="")
    return 0

