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

import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any, Callable

from cascade.definition.model import Pipeline, Processor
from cascade.definition.placeholders import tables_in
from cascade.dev.processor_tests.cases import Case, CaseFileError, case_files, definition_of, load_cases
from cascade.dev.processor_tests.compare import Diff, compare
from cascade.errors import CascadeError

__all__ = ["Case", "CaseFileError", "CaseResult", "Diff", "Runner", "Suite", "case_files", "check_sql", "collect",
           "compare", "definition_of", "load_cases", "run_suite"]


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
