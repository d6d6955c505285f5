"""Processor tests (``cascade test``): given rows of upstream tables, expect a processor's output rows.

A **case file** lives beside the definition - ``<definition stem>.tests/<processor>.yaml`` (e.g.
``pipelines/nba.tests/player_rolling_form.yaml``), or ``tests/<processor>.yaml`` next to a project's
``pipeline.yaml`` - and holds the cases of one SQL or Python processor::

    processor: player_rolling_form        # optional: defaults to the file's name
    cases:
      - name: averages the games inside the window
        date: 2025-01-31                  # the run's date (an expected date of the calendar)
        given:                            # rows of the tables it reads (upstream processor or dataset.table)
          nbac_player_boxscore:
            - {game_date: 2025-01-30, game_id: G1, player_id: 1, points: 20}
        expect:
          rows:                           # the output partition of `date`, in any order
            - {player_id: 1, avg_points_l10: 20.0}
          tolerance: 0.01                 # optional: absolute, every FLOAT64/NUMERIC column (or {column: t})

A case runs on the local BigQuery engine only, in a throw-away namespace: its given rows are coerced
to the declared column types exactly as a raw load coerces a file's values (``gcs_load.coerce``) and
inserted; then the processor runs for ``date`` through the executor a run uses (``executor_for``:
SQL's fenced MERGE with ``@data_date`` / ``@window_start`` and its placeholders resolved; a Python
callable with its ``PythonContext``, its declared window and the validation of its rows) with a fresh
run id and fence, inside the run's job scope, followed by the processor's quality gates. The output
partition is read back and compared with the expected rows: only the columns the expected rows name,
order-insensitive, rows matched on the output's keys when the expected rows name them; FLOAT64 and
NUMERIC values within the tolerance (default: equal up to 1e-9 relative). ``expect: {error: text}``
expects the run to be refused with a message containing ``text`` instead.

``check_sql`` analyzes every statement Cascade sends for the processors under test with ZetaSQL
(``shared/lint/sql.py``), like ``cascade lint`` does for a whole definition, sharing its cache of
verdicts (a statement lint already analyzed does not start ZetaSQL again).
"""

from __future__ import annotations

import difflib
import math
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import yaml

from cascade.definition.model import Pipeline, Processor, Table
from cascade.definition.placeholders import tables_in
from cascade.errors import CascadeError
from cascade.lint.locate import Lines

CASE_KEYS = {"name", "date", "given", "expect", "description"}
EXPECT_KEYS = {"rows", "tolerance", "error"}
FILE_KEYS = {"processor", "cases"}
DEFAULT_REL_TOL = 1e-9  # FLOAT64/NUMERIC equality without a declared tolerance: float rounding only
TESTABLE_KINDS = ("sql", "python")
DOCS = "docs/testing.md"


class CaseFileError(CascadeError):
    """A case file that cannot be run as written: which file, where, what is wrong and what to do."""

    def __init__(self, file: str | Path, message: str, fix: str, line: int | None = None) -> None:
        where = f"{file}:{line}" if line else str(file)
        super().__init__(f"{where}: {message}\n    fix: {fix}", file=str(file), line=line)
        self.file, self.line, self.problem, self.fix = str(file), line, message, fix


# ---------------------------------------------------------------------- the case file
@dataclass
class Case:
    """One case: the processor, the run's date, the given rows per table, the expected outcome."""

    processor: Processor
    name: str
    day: date
    given: dict[str, list[dict[str, Any]]]  # producing processor's name -> rows (coerced)
    expected: list[dict[str, Any]] | None  # None: an error is expected
    columns: list[str]  # the output columns compared
    tolerance: dict[str, float]  # column -> absolute tolerance
    error: str | None
    file: str
    line: int | None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


def case_files(definition: str | Path) -> list[Path]:
    """The case files of the definition at ``definition``: ``<stem>.tests/*.yaml`` beside it, and for a
    project's ``pipeline.yaml`` also ``tests/*.yaml``."""
    path = Path(definition)
    folders = [path.parent / f"{path.stem}.tests"]
    if path.name == "pipeline.yaml":
        folders.append(path.parent / "tests")
    out: list[Path] = []
    for folder in folders:
        if folder.is_dir():
            out.extend(sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]))
    return out


def definition_of(case_file: str | Path) -> Path | None:
    """The definition a case file belongs to (``x.tests/f.yaml`` -> ``x.yaml``; ``tests/f.yaml`` ->
    ``pipeline.yaml``), or None."""
    folder = Path(case_file).resolve().parent
    if folder.name.endswith(".tests"):
        for ext in (".yaml", ".yml"):
            candidate = folder.parent / (folder.name[: -len(".tests")] + ext)
            if candidate.is_file():
                return candidate
    if folder.name == "tests" and (folder.parent / "pipeline.yaml").is_file():
        return folder.parent / "pipeline.yaml"
    return None


def load_cases(pipeline: Pipeline, file: str | Path) -> list[Case]:
    """The cases of ``file`` for ``pipeline``, checked and coerced; ``CaseFileError`` names the first
    problem (file, line, what to fix)."""
    file = Path(file)
    try:
        text = file.read_text()
    except OSError as exc:
        raise CaseFileError(file, f"cannot read the case file: {exc}", "pass an existing file") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise CaseFileError(file, f"not valid YAML: {getattr(exc, 'problem', exc)}",
                            "fix the YAML syntax at that line (indentation, quotes, a missing colon)",
                            mark.line + 1 if mark else None) from exc
    return _Parser(pipeline, file, raw, Lines(text)).cases()


class _Parser:
    def __init__(self, pipeline: Pipeline, file: Path, raw: Any, lines: Lines) -> None:
        self.pipeline, self.file, self.raw, self.lines = pipeline, file, raw, lines

    def fail(self, message: str, fix: str, path: tuple[Any, ...] = (), key: bool = False) -> None:
        raise CaseFileError(self.file, message, fix, self.lines.line(path, key=key) if path else None)

    def unknown(self, got: Any, allowed: set[str], path: tuple[Any, ...], what: str) -> None:
        for k in got:
            if k not in allowed:
                close = difflib.get_close_matches(str(k), sorted(allowed), n=1)
                self.fail(f"unknown key {k!r} in {what}",
                          (f"did you mean {close[0]!r}? " if close else "") + f"{what} takes {sorted(allowed)} "
                          f"({DOCS})", (*path, k), key=True)

    def cases(self) -> list[Case]:
        if not isinstance(self.raw, dict):
            self.fail("a case file is a mapping with `cases:` (and optionally `processor:`)",
                      f"start the file with `cases:` - see {DOCS}")
        self.unknown(self.raw, FILE_KEYS, (), "a case file")
        name = self.raw.get("processor", self.file.stem)
        names = [p.name for p in self.pipeline.processors]
        if name not in names:
            close = difflib.get_close_matches(str(name), names, n=1)
            self.fail(f"processor {name!r} is not declared in {self.pipeline.source_path or self.pipeline.name}",
                      (f"did you mean {close[0]!r}? " if close else "")
                      + "name the file after the processor or set `processor:`", ("processor",))
        proc = self.pipeline.processor(str(name))
        if proc.kind not in TESTABLE_KINDS:
            self.fail(f"processor {proc.name} is a {proc.kind} processor; cascade test runs SQL and Python "
                      f"processors (given rows of their input tables)",
                      "test the processors that read its output instead", ("processor",))
        cases = self.raw.get("cases")
        if not isinstance(cases, list) or not cases:
            self.fail("`cases:` must be a non-empty list of cases", f"add a case with name, date, given, expect ({DOCS})",
                      ("cases",) if "cases" in self.raw else ())
        out = [self.case(proc, i, c) for i, c in enumerate(cases)]
        seen: set[str] = set()
        for c in out:
            if c.name in seen:
                self.fail(f"two cases are named {c.name!r}", "give each case its own name")
            seen.add(c.name)
        return out

    def case(self, proc: Processor, i: int, raw: Any) -> Case:
        path: tuple[Any, ...] = ("cases", i)
        if not isinstance(raw, dict):
            self.fail(f"case {i + 1} is not a mapping", "each case has name, date, given and expect", path)
        self.unknown(raw, CASE_KEYS, path, "a case")
        for key in ("name", "date", "expect"):
            if key not in raw:
                self.fail(f"case {i + 1} has no `{key}`", f"add `{key}:` ({DOCS})", path)
        name = str(raw["name"])
        day = raw["date"]
        if isinstance(day, str):
            try:
                day = date.fromisoformat(day)
            except ValueError:
                pass
        if not isinstance(day, date) or isinstance(day, datetime):
            self.fail(f"case {name!r}: date {raw['date']!r} is not a date", "write it as YYYY-MM-DD",
                      (*path, "date"))
        if not self.pipeline.calendar.is_expected(day):
            self.fail(f"case {name!r}: {day.isoformat()} is not an expected date of the calendar (a no-data day): "
                      f"no run ever happens for it", "pick a date the calendar expects data on", (*path, "date"))
        given = self.given(proc, name, raw.get("given") or {}, (*path, "given"))
        expect = raw["expect"]
        epath = (*path, "expect")
        if not isinstance(expect, dict):
            self.fail(f"case {name!r}: `expect` must be a mapping with `rows:` (or `error:`)",
                      "write expect: {rows: [...]}", epath)
        self.unknown(expect, EXPECT_KEYS, epath, "expect")
        if ("rows" in expect) == ("error" in expect):
            self.fail(f"case {name!r}: `expect` needs exactly one of `rows` (the output partition) or `error` "
                      f"(text of the refusal expected)", "give the expected rows (rows: [] for none)", epath)
        cols = dict(proc.output.columns)
        error = str(expect["error"]) if "error" in expect else None
        expected: list[dict[str, Any]] | None = None
        columns: list[str] = []
        if error is None:
            rows = expect["rows"]
            if not isinstance(rows, list):
                self.fail(f"case {name!r}: `expect.rows` must be a list of rows", "write rows: [{col: value, ...}]",
                          (*epath, "rows"))
            expected = [self.row(proc.output, r, (*epath, "rows", j), f"case {name!r}: expected row {j + 1}",
                                 need_date=False) for j, r in enumerate(rows)]
            columns = list(dict.fromkeys(c for r in rows if isinstance(r, dict) for c in r))
            for j, r in enumerate(rows):
                lacking = [c for c in columns if c not in r]
                if lacking:
                    self.fail(f"case {name!r}: expected row {j + 1} does not name {lacking}; every expected row names "
                              f"the same columns (the ones compared)", "add them (null for NULL)",
                              (*epath, "rows", j))
            dc = proc.output.date_column
            for r in expected:
                if dc in columns and r[dc] != day:
                    self.fail(f"case {name!r}: an expected row has {dc} {r[dc]}, not the case's date {day}",
                              f"a run writes only its own date: drop {dc} or set it to {day}", (*epath, "rows"))
            keys = [k for k in proc.output.keys if k != dc]
            if keys and set(keys) <= set(columns):
                seen: set[tuple] = set()
                for r in expected:
                    key = tuple(r[k] for k in keys)
                    if key in seen:
                        self.fail(f"case {name!r}: two expected rows have the key {dict(zip(keys, key))}",
                                  f"the output holds each key {keys} once per date", (*epath, "rows"))
                    seen.add(key)
        tolerance = self.tolerance(name, expect.get("tolerance"), cols, columns, (*epath, "tolerance"))
        return Case(proc, name, day, given, expected, columns, tolerance, error, str(self.file),
                    self.lines.line(path))

    def readable(self, proc: Processor) -> dict[str, Processor]:
        """Tables the processor reads: its upstreams and any table its SQL names, by processor and table name."""
        producers = [self.pipeline.processor(u.processor) for u in proc.upstreams]
        logical = set(tables_in(proc.sql))
        producers += [p for p in self.pipeline.processors if p.output.logical in logical and p not in producers]
        out: dict[str, Processor] = {}
        for p in producers:
            out[p.name] = out[p.output.logical] = p
        return out

    def given(self, proc: Processor, name: str, raw: Any, path: tuple[Any, ...]) -> dict[str, list[dict[str, Any]]]:
        if not isinstance(raw, dict):
            self.fail(f"case {name!r}: `given` must map a table to its rows", "write given: {upstream: [rows]}", path)
        readable = self.readable(proc)
        out: dict[str, list[dict[str, Any]]] = {}
        for table, rows in raw.items():
            producer = readable.get(str(table))
            if producer is None:
                choices = sorted({p.name for p in readable.values()})
                close = difflib.get_close_matches(str(table), sorted(readable), n=1)
                self.fail(f"case {name!r}: {table!r} is not a table {proc.name} reads; it reads {choices}",
                          (f"did you mean {close[0]!r}? " if close else "")
                          + "give rows of a declared upstream (processor name or dataset.table)", (*path, table),
                          key=True)
            if producer.name in out:
                self.fail(f"case {name!r}: rows of {producer.name} are given twice", "give them once", (*path, table),
                          key=True)
            if not isinstance(rows, list):
                self.fail(f"case {name!r}: rows of {table} must be a list", "write a list of rows", (*path, table))
            shaped = [self.row(producer.output, r, (*path, table, j), f"case {name!r}: given {table} row {j + 1}",
                               need_date=True) for j, r in enumerate(rows)]
            keys = producer.output.merge_keys
            seen: dict[tuple, int] = {}
            for j, r in enumerate(shaped):
                key = tuple(r.get(k) for k in keys)
                missing = [k for k in keys if r.get(k) is None]
                if missing:
                    self.fail(f"case {name!r}: given {table} row {j + 1} has no value for key column(s) {missing}",
                              f"set them: the table's keys are {list(keys)}", (*path, table, j))
                if key in seen:
                    self.fail(f"case {name!r}: given {table} rows {seen[key] + 1} and {j + 1} have the same key "
                              f"{dict(zip(keys, key))}", "the table holds each key once per date", (*path, table, j))
                seen[key] = j
            out[producer.name] = shaped
        return out

    def row(self, table: Table, raw: Any, path: tuple[Any, ...], what: str, need_date: bool) -> dict[str, Any]:
        from cascade.runtime.processors.gcs_load import coerce

        if not isinstance(raw, dict):
            self.fail(f"{what} is not a mapping", "write it as {column: value, ...}", path)
        types = dict(table.columns)
        out: dict[str, Any] = {}
        for col, value in raw.items():
            if col not in types:
                close = difflib.get_close_matches(str(col), list(types), n=1)
                self.fail(f"{what}: {table.logical} has no column {col!r}",
                          (f"did you mean {close[0]!r}? " if close else "") + f"its columns are {list(types)}",
                          (*path, col), key=True)
            try:
                out[col] = _comparable(types[col], coerce(types[col], _as_json(value)))
            except ValueError as exc:
                self.fail(f"{what}: {col} = {value!r} is not a valid {types[col]} ({exc})",
                          "give a value of the declared type", (*path, col))
        if need_date and out.get(table.date_column) is None:
            self.fail(f"{what} has no {table.date_column} (the table's date column)",
                      f"say which date the row belongs to: {table.date_column}: YYYY-MM-DD", path)
        return out

    def tolerance(self, name: str, raw: Any, cols: dict[str, str], compared: list[str],
                  path: tuple[Any, ...]) -> dict[str, float]:
        numeric = [c for c in compared if cols.get(c) in ("FLOAT64", "NUMERIC")]
        if raw is None:
            return {}
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            if raw < 0:
                self.fail(f"case {name!r}: tolerance {raw} is negative", "give an absolute tolerance >= 0", path)
            return {c: float(raw) for c in numeric}
        if isinstance(raw, dict):
            out = {}
            for col, t in raw.items():
                if col not in numeric:
                    self.fail(f"case {name!r}: tolerance for {col!r}, which is not a compared FLOAT64/NUMERIC column",
                              f"tolerances apply to the compared numeric columns {numeric}", (*path, col), key=True)
                if isinstance(t, bool) or not isinstance(t, (int, float)) or t < 0:
                    self.fail(f"case {name!r}: tolerance of {col} must be a number >= 0, got {t!r}",
                              "give an absolute tolerance", (*path, col))
                out[col] = float(t)
            return out
        self.fail(f"case {name!r}: tolerance must be a number or a mapping column -> number, got {raw!r}",
                  "e.g. tolerance: 0.01 or tolerance: {avg_points: 0.05}", path)
        return {}


def _as_json(value: Any) -> Any:
    """A YAML value as the JSON value a raw file would hold (YAML reads dates and times itself)."""
    if isinstance(value, datetime):
        return value.isoformat()  # a naive time stays naive: refused like in a raw file
    if isinstance(value, date):
        return value.isoformat()
    return value


def _comparable(typ: str, value: Any) -> Any:
    """A coerced value in the Python type the BigQuery client returns for ``typ``."""
    if value is None:
        return None
    if typ == "TIMESTAMP":
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if typ == "NUMERIC":
        return Decimal(str(value))
    return value


# ---------------------------------------------------------------------- comparison
@dataclass
class Diff:
    """How the output differs from the expectation (empty: it matches)."""

    missing: list[dict[str, Any]] = field(default_factory=list)  # expected, not produced
    extra: list[dict[str, Any]] = field(default_factory=list)  # produced, not expected
    changed: list[dict[str, Any]] = field(default_factory=list)  # {key: {...}, columns: {col: {expected, actual}}}

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.changed)

    def render(self, indent: str = "    ") -> list[str]:
        lines = []
        for c in self.changed:
            lines.append(f"{indent}changed row {_show_row(c['key'])}:")
            for col, d in c["columns"].items():
                tol = f" (tolerance {d['tolerance']:g})" if d.get("tolerance") else ""
                lines.append(f"{indent}    {col}: expected {_show(d['expected'])}, got {_show(d['actual'])}{tol}")
        lines += [f"{indent}missing row (expected, not produced): {_show_row(r)}" for r in self.missing]
        lines += [f"{indent}extra row (produced, not expected): {_show_row(r)}" for r in self.extra]
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"missing": [_plain_row(r) for r in self.missing], "extra": [_plain_row(r) for r in self.extra],
                "changed": [{"key": _plain_row(c["key"]),
                             "columns": {k: {**v, "expected": _plain(v["expected"]), "actual": _plain(v["actual"])}
                                         for k, v in c["columns"].items()}} for c in self.changed]}


def _plain(v: Any) -> Any:
    if isinstance(v, (date, datetime)):
        return v.isoformat()
    if isinstance(v, Decimal):
        return str(v)
    return v


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in row.items()}


def _show(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, (date, datetime)):
        return v.isoformat()
    if isinstance(v, Decimal):
        return str(v)
    return repr(v) if isinstance(v, str) else str(v)


def _show_row(row: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in row.items()) + "}"


def _equal(typ: str, expected: Any, actual: Any, tolerance: float | None) -> bool:
    if expected is None or actual is None:
        return expected is None and actual is None
    if typ in ("FLOAT64", "NUMERIC"):
        e, a = float(expected), float(actual)
        if tolerance is not None:
            return abs(e - a) <= tolerance + 1e-12
        return math.isclose(e, a, rel_tol=DEFAULT_REL_TOL, abs_tol=1e-12)
    return expected == actual


def compare(case: Case, actual: list[dict[str, Any]]) -> Diff:
    """The expected rows against the output partition's rows, order-insensitive. Rows are matched on
    the output's keys when the compared columns include them (a mismatch is a changed row naming its
    columns); otherwise as a multiset (a mismatch is a missing and an extra row)."""
    assert case.expected is not None
    table = case.processor.output
    types = dict(table.columns)
    cols = case.columns
    keys = [k for k in table.keys if k != table.date_column]
    diff = Diff()

    def same(e: dict[str, Any], a: dict[str, Any], col: str) -> bool:
        return _equal(types[col], e[col], a.get(col), case.tolerance.get(col))

    shown = list(dict.fromkeys([*keys, *cols])) if keys else cols
    if keys and set(keys) <= set(cols):
        by_key = {tuple(a.get(k) for k in keys): a for a in actual}
        for e in case.expected:
            key = tuple(e[k] for k in keys)
            a = by_key.pop(key, None)
            if a is None:
                diff.missing.append({c: e[c] for c in cols})
                continue
            wrong = {c: {"expected": e[c], "actual": a.get(c), "tolerance": case.tolerance.get(c)}
                     for c in cols if c not in keys and not same(e, a, c)}
            if wrong:
                diff.changed.append({"key": dict(zip(keys, key)), "columns": wrong})
        diff.extra = [{c: a.get(c) for c in shown} for a in by_key.values()]
        return diff
    left = list(actual)
    for e in case.expected:
        match = next((a for a in left if all(same(e, a, c) for c in cols)), None)
        if match is None:
            diff.missing.append({c: e[c] for c in cols})
        else:
            left.remove(match)
    diff.extra = [{c: a.get(c) for c in shown} for a in left]
    return diff


# ---------------------------------------------------------------------- running
@dataclass
class CaseResult:
    case: Case
    passed: bool
    seconds: float
    diff: Diff | None = None
    error: str | None = None  # the run's refusal / error (unexpected, or not the expected one)
    rows: int = 0  # rows in the output partition
    outside_window: int = 0  # given rows dated outside the processor's window (a run must not see them)
    gates: dict[str, Any] | None = None

    def render(self) -> str:
        c = self.case
        head = (f"{'PASS' if self.passed else 'FAIL'} {c.processor.name} {c.day.isoformat()} - {c.name} "
                f"({self.seconds * 1000:.0f} ms)")
        if self.passed:
            return head
        lines = [head, f"    {c.where}"]
        if self.error:
            lines += ["    " + line for line in self.error.splitlines()[:12]]
        if self.diff is not None and not self.diff.ok:
            lines.append(f"    output {c.processor.output.logical} for {c.day.isoformat()}: {self.rows} row(s); "
                         f"compared columns {c.columns}")
            lines += self.diff.render()
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        c = self.case
        return {"processor": c.processor.name, "case": c.name, "date": c.day.isoformat(), "file": c.file,
                "line": c.line, "passed": self.passed, "seconds": round(self.seconds, 4), "rows": self.rows,
                "given_rows_outside_window": self.outside_window, "error": self.error,
                "diff": self.diff.to_dict() if self.diff is not None else None, "gates": self.gates}


class Runner:
    """Runs cases of one pipeline on a BigQuery client (the local engine) in a throw-away namespace."""

    def __init__(self, pipeline: Pipeline, client: Any, project: str, namespace: str | None = None) -> None:
        from cascade.runtime.warehouse import Warehouse

        self.namespace = namespace or "t" + uuid.uuid4().hex[:12]
        self.pipeline = pipeline.with_namespace(self.namespace)
        self.client, self.project = client, project
        self.warehouse = Warehouse(client, self.pipeline, project, timeout=60.0)
        self._created: set[str] = set()
        self._dirty: set[str] = set()
        self._generation = 0

    def _needs(self, proc: Processor) -> list[Processor]:
        logical = set(tables_in(proc.sql))
        for gate in proc.gates:
            logical |= set(tables_in(gate.sql))
        names = {u.processor for u in proc.upstreams} | {proc.name}
        return [p for p in self.pipeline.processors if p.name in names or p.output.logical in logical]

    def _ensure(self, procs: list[Processor]) -> None:
        from cascade.runtime.warehouse import Warehouse

        missing = [p for p in procs if p.name not in self._created]
        if missing:
            Warehouse(self.client, replace(self.pipeline, processors=tuple(missing)), self.project).ensure_tables()
            self._created |= {p.name for p in missing}

    def _clear(self) -> None:
        for name in sorted(self._dirty):
            table = self.pipeline.processor(name).output
            self.warehouse.delete_all_rows(table)
        self._dirty.clear()

    def run(self, case: Case) -> CaseResult:
        from cascade.runtime.gates import Gates
        from cascade.runtime.processors import RunContext, executor_for

        started = time.perf_counter()
        proc = self.pipeline.processor(case.processor.name)
        self._ensure(self._needs(proc))
        self._clear()
        lo, hi = proc.window(case.day, self.pipeline.calendar)
        outside = 0
        run_id = f"test-{uuid.uuid4().hex[:12]}"
        for name, rows in case.given.items():
            producer = self.pipeline.processor(name)
            dc = producer.output.date_column
            outside += sum(1 for r in rows if not lo <= r[dc] <= hi)
            if rows:
                self._dirty.add(name)
                self.warehouse.insert_rows(producer.output, rows, f"given-{run_id}")
        self._dirty.add(proc.name)
        self._generation += 1
        ctx = RunContext(self.pipeline, self.project, self.warehouse, None, run_id, fence=1)
        error: str | None = None
        gates = None
        try:
            with self.warehouse.run_scope(proc, case.day, self._generation, 1):
                executor_for(proc).run(ctx, proc, case.day)
                report = Gates(self.pipeline, self.warehouse).evaluate(proc, case.day)
            if report is not None:
                gates = report.to_dict()
                if report.failed:
                    error = "quality gate(s) failed after the write: " + "; ".join(r.detail for r in report.failed)
        except CascadeError as exc:
            error = f"{type(exc).__name__}: {exc.message}"
        actual = self.warehouse.read_rows(proc.output, case.day, case.day)
        result = CaseResult(case, False, 0.0, rows=len(actual), outside_window=outside, gates=gates)
        if case.error is not None:
            result.passed = error is not None and case.error in error
            result.error = (error if error is None or result.passed or case.error in error else
                            f"expected a refusal containing {case.error!r}, got: {error}")
            if error is None:
                result.error = f"expected a refusal containing {case.error!r}, but the run succeeded " \
                               f"({len(actual)} row(s))"
        else:
            result.diff = compare(case, actual)
            result.error = error
            result.passed = error is None and result.diff.ok
        result.seconds = time.perf_counter() - started
        return result

    def run_all(self, cases: list[Case]) -> list[CaseResult]:
        """Run ``cases`` in order, then drop the namespace."""
        try:
            return [self.run(case) for case in cases]
        finally:
            self.drop()

    def drop(self) -> None:
        """Delete the throw-away namespace's datasets."""
        self.warehouse.drop_datasets(p for p in self.pipeline.processors if p.name in self._created)


# ---------------------------------------------------------------------- SQL analysis
@dataclass
class SqlProblem:
    processor: str
    statement: str
    message: str
    fix: str

    def render(self) -> str:
        return f"FAIL {self.processor} [sql: {self.statement}] GoogleSQL rejects it: {self.message}\n    fix: {self.fix}"

    def to_dict(self) -> dict[str, Any]:
        return {"processor": self.processor, "statement": self.statement, "message": self.message, "fix": self.fix}


def check_sql(pipeline: Pipeline, processors: list[str], day: date) -> tuple[int, list[SqlProblem]]:
    """ZetaSQL analysis of every statement Cascade sends for ``processors`` (as on ``day``): their
    SELECTs, the fenced MERGEs, the gates' and the checks' queries. (statements analyzed, problems)."""
    from cascade.lint import sql as sqlcheck

    stmts = [s for s in sqlcheck.statements(pipeline, day) if s.processor in processors]
    if not stmts:
        return 0, []
    # Verdicts are shared with `cascade lint` (``AnalysisCache``): a statement it (or an earlier test
    # run) already analyzed is not analyzed again, and ZetaSQL starts only when one is new.
    cache = sqlcheck.AnalysisCache(pipeline)
    analyzer = sqlcheck.Analyzer(pipeline)
    problems = []
    for stmt in stmts:
        found, err = cache.get(stmt)
        if not found:
            err = analyzer.check(stmt)
            cache.put(stmt, err)
        if err is not None:
            problems.append(SqlProblem(stmt.processor, stmt.role, err.message, err.fix))
    cache.save()
    return len(stmts), problems


# ---------------------------------------------------------------------- a whole run
@dataclass
class Suite:
    """Everything ``cascade test`` found and ran for the given paths."""

    results: list[CaseResult] = field(default_factory=list)
    sql_problems: list[SqlProblem] = field(default_factory=list)
    sql_statements: int = 0
    sql_checked: bool = False
    engine: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.results) and not self.sql_problems

    def render(self) -> str:
        lines = [r.render() for r in self.results] + [p.render() for p in self.sql_problems]
        passed = sum(r.passed for r in self.results)
        sql = (f"{self.sql_statements} SQL statements analyzed by ZetaSQL, {len(self.sql_problems)} rejected"
               if self.sql_checked else "SQL not analyzed (--no-sql)")
        lines.append(f"{passed} of {len(self.results)} case(s) passed; {sql}; engine: {self.engine}; "
                     f"{self.seconds:.1f} s")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "cases": [r.to_dict() for r in self.results],
                "passed": sum(r.passed for r in self.results), "failed": sum(not r.passed for r in self.results),
                "sql_checked": self.sql_checked, "sql_statements_analyzed": self.sql_statements,
                "sql_problems": [p.to_dict() for p in self.sql_problems], "engine": self.engine,
                "seconds": round(self.seconds, 2)}


def collect(definition: str | Path, only: list[Path] | None = None,
            processor: str | None = None) -> tuple[Pipeline, list[Case]]:
    """The pipeline at ``definition`` and its cases (from ``only`` files, else all its case files),
    optionally those of one ``processor``. Raises ``CaseFileError`` / ``DefinitionError``."""
    from cascade.definition.loading import load

    pipeline = load(definition, namespace="")
    cases: list[Case] = []
    for file in only or case_files(definition):
        cases.extend(load_cases(pipeline, file))
    if processor is not None:
        pipeline.processor(processor)  # raises naming the processors when unknown
        cases = [c for c in cases if c.processor.name == processor]
    return pipeline, cases


def run_suite(groups: list[tuple[Pipeline, list[Case]]], client: Any, project: str, engine: str = "",
              sql: bool = True, on_result: Callable[[CaseResult], None] | None = None) -> Suite:
    """Run every case (one throw-away namespace per pipeline, dropped afterwards) and, unless ``sql`` is
    False, analyze the SQL of the processors under test - in a thread while the cases run (ZetaSQL's
    start takes seconds)."""
    import threading

    started = time.perf_counter()
    suite = Suite(engine=engine, sql_checked=sql)
    analysis: list[tuple[int, list[SqlProblem]]] = []
    failures: list[BaseException] = []

    def analyze() -> None:
        try:
            for pipeline, cases in groups:
                names = list(dict.fromkeys(c.processor.name for c in cases))
                if names:
                    analysis.append(check_sql(pipeline, names, cases[0].day))
        except BaseException as exc:  # noqa: BLE001 - reported after the cases
            failures.append(exc)

    thread = threading.Thread(target=analyze, name="cascade-test-sql", daemon=True) if sql else None
    if thread is not None:
        thread.start()
    for pipeline, cases in groups:
        if not cases:
            continue
        runner = Runner(pipeline, client, project)
        try:
            for case in cases:
                result = runner.run(case)
                suite.results.append(result)
                if on_result is not None:
                    on_result(result)
        finally:
            runner.drop()
    if thread is not None:
        thread.join()
        if failures:
            raise failures[0]
        suite.sql_statements = sum(n for n, _ in analysis)
        suite.sql_problems = [p for _, problems in analysis for p in problems]
    suite.seconds = time.perf_counter() - started
    return suite
