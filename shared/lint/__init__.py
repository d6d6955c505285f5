"""``cascade lint``: every problem of a pipeline definition, each with its file, line and fix.

One pass reports all of them (not the first only), in this order:

* **yaml** - the file does not parse.
* **schema** - unknown keys, wrong types, missing keys (``shared/definition/schema/``).
* **upstream** - an upstream names no declared processor.
* **cycle** - processors that (transitively) read each other.
* **lookback** - a window that reaches past the calendar: ``lookback_days`` longer than the
  longest season (every run would read across a whole off-season - usually "days" written where
  "the last N expected dates", ``lookback_dates``, was meant), or ``lookback_dates`` N above the number
  of expected dates in the whole calendar (for every date the window runs into the first season's
  start and silently holds fewer than N dates). A calendar without seasons is not checked.
* **placeholder** - a ``{dataset.table}`` in SQL that names no declared output table.
* **callable** - a ``python:`` processor or ``synthetic:`` generator that cannot be imported (the
  definition's folder is importable, as for the functions) or is not callable.
* **definition** - the loader's own consistency checks (keys that are not columns, upstreams in a
  later phase, ...), reported when the checks above found nothing it would repeat.
* **table** - an output column the definition removed or retyped while its table exists, with
  the commands that rebuild it. Compared with the live tables of the local stack when one is up
  (``BIGQUERY_EMULATOR_HOST``, else ``<state>/env`` written by ``cascade up``, answering): the table
  is the truth a recorded schema could miss. Without a running stack nothing is compared (the
  summary says so); ``cascade up`` compares again before it changes anything.
* **sql** - every SQL statement Cascade would send for the pipeline (``shared/lint/sql.py``),
  analyzed by ZetaSQL, BigQuery's analyzer: the processors' SELECTs, the fenced MERGEs around them,
  the strict-mode gap queries, the validation queries and the quality gates. A transform's problem
  points at its line in the YAML; a statement the framework derives points at the processor.

**One pass, even with schema errors.** A processor with a schema, upstream, cycle, placeholder or
loader problem is set aside together with every processor that reads it (by upstream or by a
``{dataset.table}`` placeholder), unknown keys are dropped, and the rest of the definition is
loaded: its lookbacks, callables and SQL are checked in the same run. Only a problem outside the
processors (calendar, phases, a top-level key of the wrong type) stops the later checks; the summary
names the processors whose SQL was not analyzed.

**Warm.** Each statement's verdict is cached (``sql.AnalysisCache``): a second lint analyzes only
the statements that changed, and does not start ZetaSQL when none did; ``lint(..., cache=False)``
(``cascade lint --no-cache``) analyzes everything. Several files in one ``lint_files`` call share one
process, so ZetaSQL starts at most once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml

from cascade.lint.checker import _Checker
from cascade.lint.locate import Lines
from cascade.lint.report import Problem, Report

__all__ = ["Problem", "Report", "default_file", "lint", "lint_files"]


def default_file() -> Path:
    """The definition in use: ``$CASCADE_PIPELINE_FILE``, ``./pipeline.yaml``, else the reference one."""
    from cascade.definition.loading import DEFAULT_DEFINITION

    if os.environ.get("CASCADE_PIPELINE_FILE"):
        return Path(os.environ["CASCADE_PIPELINE_FILE"])
    return Path("pipeline.yaml") if Path("pipeline.yaml").is_file() else DEFAULT_DEFINITION


def lint_files(paths: list[Any], sql: bool = True, cache: bool = True) -> list[Report]:
    """``lint`` of each file, in one process (ZetaSQL starts at most once for all of them)."""
    return [lint(p, sql=sql, cache=cache) for p in paths]


def lint(path: str | os.PathLike[str], sql: bool = True, cache: bool = True) -> Report:
    """Every problem of the definition at ``path`` (``sql=False`` skips the ZetaSQL analysis;
    ``cache=False`` analyzes every statement again instead of reusing unchanged verdicts)."""
    started = time.perf_counter()
    file = str(path)
    report = Report(file)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        report.problems.append(Problem("yaml", f"cannot read {file}: {exc}", "pass an existing definition file", file))
        return report
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        report.problems.append(Problem("yaml", f"not valid YAML: {getattr(exc, 'problem', exc)}",
                                       "fix the YAML syntax at that line (indentation, quotes, a missing colon)",
                                       file, mark.line + 1 if mark else None))
        return report
    checker = _Checker(file, raw, Lines(text), cache)
    checker.run(sql)
    report.problems = checker.problems
    report.statements = checker.statements
    report.statements_reused = checker.reused
    report.sql_checked = checker.sql_ran
    report.sql_not_checked = sorted(checker.set_aside) if checker.sql_ran else []
    report.tables_checked = checker.tables_checked
    report.seconds = time.perf_counter() - started
    return report
