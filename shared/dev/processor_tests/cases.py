"""Case files of ``cascade test``: where they live, their format, and loading them into typed ``Case``
values (every problem reported with its file, line and fix)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

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
