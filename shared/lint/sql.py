"""Every SQL statement Cascade would send for a pipeline, analyzed by BigQuery's own analyzer.

``statements(pipeline)`` does not rebuild any SQL: it drives the real code paths - ``Warehouse``
(MERGEs, the fence and row-count reads, the strict-mode gap query ``present_dates``), the backfill
validation queries (``backfill.validate``: duplicate keys, NULL critical columns, coverage) and the
processors' own SELECTs - against a recording BigQuery client that answers every job with an empty
result, and keeps each statement with the query parameters it was sent with. So the text analyzed
is exactly the text Cascade sends, and the parameter types are exactly the ones it declares
(``@data_date DATE``, ``@rows ARRAY<STRUCT<...>>``, ...).

``Analyzer`` checks them with ZetaSQL (PyPI ``zetasql``, GoogleSQL compiled to WASM, offline; a dev
dependency, never in the functions' runtime) against a catalog of the declared tables, named
exactly as rendered (``cascade-lint.nba_raw.nbac_schedule``) with the framework's lineage columns.
The catalog (and so ZetaSQL's WASM start, ~15-40 s) is built on the first statement it analyzes.

**Warm across runs.** ``AnalysisCache`` keeps each statement's verdict in a file
(``$CASCADE_LINT_CACHE``, default ``~/.cache/cascade/lint-analysis.json``), keyed by everything the
verdict depends on: the statement's text, its parameters' names and types, the declared columns of
every table it names, the zetasql version and ``CACHE_VERSION``. A second lint analyzes only the
statements that changed - none at all, and ZetaSQL never starts, when nothing did.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from cascade.definition.columns import all_columns
from cascade.definition.model import Pipeline, Processor
from cascade.errors import CascadeError

PROJECT = "cascade-lint"

# Definition / query-parameter type name -> ZetaSQL TypeKind attribute name.
_TYPE_KIND = {"DATE": "TYPE_DATE", "STRING": "TYPE_STRING", "INT64": "TYPE_INT64", "FLOAT64": "TYPE_DOUBLE",
              "BOOL": "TYPE_BOOL", "TIMESTAMP": "TYPE_TIMESTAMP", "NUMERIC": "TYPE_NUMERIC",
              "BIGNUMERIC": "TYPE_BIGNUMERIC", "BYTES": "TYPE_BYTES", "DATETIME": "TYPE_DATETIME"}

# (GoogleSQL message pattern, pattern the statement must contain or None, the usual fix); first match
# wins. Mostly DuckDB-isms the local emulator (DuckDB + SQLGlot) accepts and BigQuery does not.
_HINTS: list[tuple[str, str | None, str]] = [
    (r"ILIKE", None, "BigQuery has no ILIKE: use LOWER(x) LIKE LOWER(pattern)"),
    (r"but got \":\"", r"::", "BigQuery has no `x::TYPE` cast: use CAST(x AS TYPE)"),
    (r"QUALIFY clause must be used in conjunction with WHERE", None,
     "BigQuery needs a WHERE, GROUP BY or HAVING with QUALIFY: add `WHERE TRUE` before QUALIFY"),
    (r"Function not found: LIST\b", None, "use ARRAY_AGG(x)"),
    (r"Function not found: MEDIAN", None,
     "use PERCENTILE_CONT(x, 0.5) OVER () or APPROX_QUANTILES(x, 2)[OFFSET(1)]"),
    (r"Function not found: STRFTIME", None, "use FORMAT_DATE('%Y-%m-%d', d) / FORMAT_TIMESTAMP"),
    (r"date part name is required but found (DAYS|MONTHS|YEARS|WEEKS|HOURS)", None,
     "interval parts are singular in BigQuery: INTERVAL 1 DAY"),
    (r"Unexpected \"/\"", r"//", "BigQuery has no `//`: use DIV(a, b) for integer division"),
    (r"keyword EXCLUDE", None, "BigQuery spells it SELECT * EXCEPT (col)"),
    (r"got \"\(\"", r"(?i)FILTER\s*\(\s*WHERE",
     "BigQuery has no aggregate FILTER (WHERE ...): use COUNTIF(cond) or SUM(IF(cond, x, 0))"),
    (r"No matching signature for operator", None,
     "compare values of one type: CAST one side (CAST(x AS INT64)) or write a literal of the column's type "
     "(DATE '2025-01-15', 5 not '5')"),
    (r"No matching signature for function", None, "pass arguments of the types the function takes (CAST them)"),
    (r"Table not found", None,
     "read tables through `{dataset.table}` placeholders of processors the definition declares"),
    (r"Unrecognized name|Name \w+ not found", None,
     "use the columns the table declares in the definition (see `cascade describe`)"),
    (r"Query parameter '(\w+)' not found", None,
     "processor SQL may use the parameters @data_date and @window_start (DATE) only"),
]


@dataclass
class Statement:
    """One statement Cascade would send: what it is, for which processor, its text and parameters."""

    role: str  # transform, merge, export query, gap query, ...
    processor: str
    sql: str
    params: list[Any] = field(default_factory=list)
    # Where the text comes from in the processor's YAML (("sql",), ("gates", 0, "sql")), and how the
    # statement's lines are shifted against it; None for statements the framework derives.
    yaml_path: tuple[Any, ...] | None = None
    line_offset: int = 0


@dataclass
class SqlError:
    statement: Statement
    message: str
    line: int | None  # 1-based line inside the statement (from the analyzer), when known
    column: int | None
    fix: str


# ---------------------------------------------------------------------- capture
class _Row(dict):
    def __missing__(self, key: str) -> int:
        return 0


class _Job:
    num_dml_affected_rows = 0

    def result(self, timeout: float | None = None) -> list[_Row]:
        return [_Row()]


class RecordingClient:
    """A stand-in ``bigquery.Client`` that records each query and answers with one all-zero row."""

    def __init__(self) -> None:
        self.recorded: list[tuple[str, list[Any]]] = []

    def query(self, sql: str, job_config: Any = None, **_kw: Any) -> _Job:
        self.recorded.append((sql, list(getattr(job_config, "query_parameters", None) or [])))
        return _Job()


def _sample_row(proc: Processor, day: date) -> dict[str, Any]:
    return {c: (day if c == proc.output.date_column else None) for c, _ in proc.output.columns}


def _gate_queries(wh: Any, proc: Processor, day: date, capture: Callable[..., None]) -> None:
    """The quality gates' queries (``shared/runtime/gates.py``, sent by the warehouse): the one query of the
    built-in gates, each ``sql`` gate's query, and the sample query a failed ``not_null`` / ``range`` gate
    sends."""
    from cascade.runtime import gates as gates_module

    gates = gates_module.Gates(wh.pipeline, wh)
    report = gates_module.GateReport()
    builtin = [g for g in proc.gates if g.kind != "sql"]
    if builtin:
        capture("gate query (row_count/not_null/range)", lambda: gates._builtin(proc, day, builtin, report))
    for g in proc.gates:
        if g.kind == "sql":  # sent as "SELECT * FROM (\n<gate sql>\n) ...": one line above the YAML text
            capture(f"gate {g.name}", lambda: gates._sql(proc, day, g, report),
                    ("gates", proc.gates.index(g), "sql"), -1)
        elif g.kind == "not_null":
            capture(f"gate {g.name} sample",
                    lambda: wh.null_sample(proc, day, list(g.columns), gates_module.SAMPLE_ROWS))
        elif g.kind == "range":
            capture(f"gate {g.name} sample", lambda: wh.outside_sample(proc, day, g, gates_module.SAMPLE_ROWS))


def statements(pipeline: Pipeline, day: date, project: str = PROJECT) -> list[Statement]:
    """Every statement Cascade sends for ``pipeline`` (as on ``day``), with its parameters."""
    from cascade.backfill import validate as backfill_validate
    from cascade.runtime.warehouse import Warehouse
    from cascade.runtime.warehouse.sql import processor_select

    client = RecordingClient()
    wh = Warehouse(client, pipeline, project)  # type: ignore[arg-type]
    app = SimpleNamespace(pipeline=pipeline, warehouse=wh, project=project)
    out: list[Statement] = []

    def capture(role: str, proc: Processor, call: Callable[[], Any], yaml_path: tuple[Any, ...] | None = None,
                line_offset: int = 0) -> None:
        start = len(client.recorded)
        try:
            call()
        except Exception as exc:
            # After its statements were recorded, a code path may trip over the stand-in's empty
            # answers (the empty-source refusal, a missing column of a result row): that is fine.
            if len(client.recorded) == start and not isinstance(exc, CascadeError):
                raise
        for i, (sql, params) in enumerate(client.recorded[start:]):
            out.append(Statement(role if i == 0 else f"{role} (follow-up read)", proc.name, sql, params,
                                 yaml_path if i == 0 else None, line_offset))

    for proc in pipeline.processors:
        start, _ = proc.window(day, pipeline.calendar)
        if proc.kind == "sql":
            select = processor_select(pipeline.render_sql(proc, project), day, start)
            out.append(Statement("transform", proc.name, select.sql, select.params, ("sql",)))
            capture("merge", proc, lambda: wh.merge_select(proc, day, "lint", 1))
        elif proc.kind == "gcs_json_export":
            select = processor_select(pipeline.render_sql(proc, project), day, start)  # as the export sends it
            out.append(Statement("transform", proc.name, select.sql, select.params, ("export", "sql")))
            capture("merge", proc, lambda: wh.merge_rows(proc, day, [_sample_row(proc, day)], "lint", 1))
        else:  # raw loads and Python processors MERGE rows handed over as @rows
            capture("merge", proc, lambda: wh.merge_rows(proc, day, [_sample_row(proc, day)], "lint", 1))
        capture("row count", proc, lambda: wh.count_rows(proc.output, day))
        for u in proc.upstreams:
            if u.has_lookback:
                lo, hi = u.window(day, pipeline.calendar)
                up = pipeline.processor(u.processor).output
                capture(f"strict-mode gap query ({u.processor})", proc, lambda: wh.present_dates(up, lo, hi))
        capture("validation: duplicate keys / NULL critical columns", proc,
                lambda: backfill_validate.validate(app, day, day, processors=[proc.name]))  # type: ignore[arg-type]
        capture("validation: coverage", proc,
                lambda: backfill_validate.coverage(app, day, day, processors=[proc.name]))  # type: ignore[arg-type]
        if getattr(proc, "gates", ()):
            _gate_queries(wh, proc, day, lambda role, call, *where: capture(role, proc, call, *where))
    return out


# ---------------------------------------------------------------------- analysis
CACHE_VERSION = 1  # bump when the analysis itself changes (language options, catalog building)


def _is_array(param: Any) -> bool:
    """A query parameter that is an ``ArrayQueryParameter`` (the only kind with an ``array_type``)."""
    return hasattr(param, "array_type")


def _is_struct(param: Any) -> bool:
    """A query parameter that is a ``StructQueryParameter`` (the only kind with ``struct_types``)."""
    return hasattr(param, "struct_types")


def _param_signature(param: Any) -> Any:
    """A query parameter's name and type, as the analyzer sees it (values do not matter)."""
    if _is_array(param):
        values = param.values or []
        if values and _is_struct(values[0]):
            return [param.name, "ARRAY<STRUCT>", sorted((k, str(v)) for k, v in values[0].struct_types.items())]
        return [param.name, f"ARRAY<{param.array_type}>"]
    return [param.name, str(getattr(param, "type_", ""))]


class AnalysisCache:
    """Verdicts of earlier analyses (None = accepted, else the error), one JSON file shared by every lint."""

    def __init__(self, pipeline: Pipeline, path: Path | None = None, project: str = PROJECT) -> None:
        self.path = path or default_cache_path()
        self.tables = {pipeline.table_id(project, p.output): [list(c) for c in all_columns(p.output)]
                       for p in pipeline.processors}
        try:
            from importlib.metadata import version

            self.engine = version("zetasql")
        except Exception:  # noqa: BLE001 - not installed: nothing is analyzed anyway
            self.engine = "?"
        try:
            data = json.loads(self.path.read_text())
            self.known: dict[str, Any] = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self.known = {}
        self.new: dict[str, Any] = {}

    def key(self, stmt: Statement) -> str:
        named = sorted((t, cols) for t, cols in self.tables.items() if t in stmt.sql)
        text = json.dumps([CACHE_VERSION, self.engine, stmt.sql, [_param_signature(p) for p in stmt.params], named],
                          default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, stmt: Statement) -> tuple[bool, SqlError | None]:
        """(found, verdict) of ``stmt``."""
        k = self.key(stmt)
        if k not in self.known:
            return False, None
        v = self.known[k]
        if v is None:
            return True, None
        return True, SqlError(stmt, v["message"], v.get("line"), v.get("column"), hint(v["message"], stmt.sql))

    def put(self, stmt: Statement, err: SqlError | None) -> None:
        k = self.key(stmt)
        v = None if err is None else {"message": err.message, "line": err.line, "column": err.column}
        self.known[k] = self.new[k] = v

    def save(self) -> None:
        """Merge this run's verdicts into the file (other lints may have written it meanwhile)."""
        if not self.new:
            return
        with _save_lock:
            try:
                current = json.loads(self.path.read_text())
                current = current if isinstance(current, dict) else {}
            except (OSError, ValueError):
                current = {}
            current.update(self.new)
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".lint-cache-")
                with os.fdopen(fd, "w") as fh:
                    json.dump(current, fh)
                os.replace(tmp, self.path)
            except OSError:
                pass  # a cache that cannot be written costs time next run, nothing else
        self.new = {}


_save_lock = threading.Lock()


def default_cache_path() -> Path:
    if os.environ.get("CASCADE_LINT_CACHE"):
        return Path(os.environ["CASCADE_LINT_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cascade" / "lint-analysis.json"


class Analyzer:
    """ZetaSQL analysis of statements against the pipeline's declared tables (one catalog, built on
    the first statement analyzed: a lint whose statements are all cached never starts ZetaSQL)."""

    def __init__(self, pipeline: Pipeline, project: str = PROJECT) -> None:
        self.pipeline, self.project = pipeline, project
        self.catalog: Any = None
        self.analyzed = 0  # statements this analyzer sent to ZetaSQL

    def _start(self) -> None:
        from cascade.lint import zetasql_cache

        zetasql_cache.install()  # ZetaSQL's compiled module from disk after the first time (~15 s saved)
        from zetasql.api import CatalogBuilder, TableBuilder
        from zetasql.types import LanguageOptions, TypeKind, ZetaSQLBuiltinFunctionOptions

        self._kind = lambda name: getattr(TypeKind, _TYPE_KIND[name.upper()])
        self.language = LanguageOptions.maximum_features()
        builder = CatalogBuilder("cascade")
        for proc in self.pipeline.processors:
            table = TableBuilder(self.pipeline.table_id(self.project, proc.output))
            for col, typ in all_columns(proc.output):
                table = table.add_column(col, self._kind(typ))
            builder = builder.add_table(table.build())
        self.catalog = builder.with_builtin_functions(
            ZetaSQLBuiltinFunctionOptions(language_options=self.language)).build()

    def _type(self, param: Any) -> Any:
        from zetasql.types import ArrayType, StructField, StructType, Type, TypeKind

        if _is_array(param):
            values = param.values or []
            if param.array_type == "STRUCT" or (values and _is_struct(values[0])):
                first = values[0]
                fields = [StructField(field_name=name, field_type=self._scalar(first.struct_types[name]))
                          for name in first.struct_types]
                element = Type(type_kind=TypeKind.TYPE_STRUCT, struct_type=StructType(field=fields))
            else:
                element = self._scalar(param.array_type)
            return Type(type_kind=TypeKind.TYPE_ARRAY, array_type=ArrayType(element_type=element))
        return self._scalar(param.type_)

    def _scalar(self, name: str) -> Any:
        from zetasql.types import Type

        return Type(type_kind=self._kind(str(name)))

    def check(self, stmt: Statement) -> SqlError | None:
        from zetasql.api import Analyzer as ZAnalyzer
        from zetasql.core.exceptions import ZetaSQLError
        from zetasql.types import AnalyzerOptions, ErrorMessageMode

        if self.catalog is None:
            self._start()
        self.analyzed += 1
        options = AnalyzerOptions(
            language_options=self.language, error_message_mode=ErrorMessageMode.ERROR_MESSAGE_MULTI_LINE_WITH_CARET,
            query_parameters=[AnalyzerOptions.QueryParameter(name=p.name, type=self._type(p)) for p in stmt.params])
        try:
            ZAnalyzer(options, self.catalog).analyze_statement(stmt.sql)
            return None
        except ZetaSQLError as exc:
            message = re.sub(r"\s*\[at \d+:\d+\]", "", str(getattr(exc, "message", "") or exc))
            raw = str(getattr(exc, "raw_error", "") or "")
            at = re.search(r"\[at (\d+):(\d+)\]", raw)
            return SqlError(stmt, message, int(at.group(1)) if at else None, int(at.group(2)) if at else None,
                            hint(message, stmt.sql))


def hint(message: str, sql: str = "") -> str:
    """The usual fix of a GoogleSQL analyzer ``message`` about ``sql``."""
    for pattern, in_sql, fix in _HINTS:
        if re.search(pattern, message) and (in_sql is None or re.search(in_sql, sql)):
            return fix
    return "rewrite the statement in GoogleSQL (BigQuery); the local emulator accepts some SQL BigQuery rejects"
