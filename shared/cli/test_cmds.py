"""``cascade test``: run the processor test cases declared beside a definition (docs/testing.md).

Each case gives rows of a processor's input tables and expects its output rows for a date; it runs on
the local BigQuery engine only (no Pub/Sub, no Firestore) through the executor a run uses
(``cascade.dev.processor_tests``). The engine is the running local stack's BigQuery (``cascade up``) when
there is one, else a bqemulator started alone on a free port for the command and stopped after it.

Exit codes: 0 every case passed (and the SQL of the processors under test analyzes clean), 1 a case
failed or GoogleSQL rejects a statement, 2 a case file (or definition) that cannot be run as written.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cascade.cli._common import print_json, state_dir
from cascade.lint.live import answers

ENGINE_PROJECT = "cascade-test"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "test", help="run processor test cases: given input rows, expect output rows (local BigQuery engine only)",
        description="Run the test cases declared beside a definition (<definition>.tests/*.yaml, or tests/*.yaml "
                    "next to a project's pipeline.yaml; format: docs/testing.md). Each case loads the given rows of "
                    "a SQL or Python processor's input tables into a throw-away namespace of the local BigQuery "
                    "engine, runs the processor for the case's date through the code a run uses (placeholders, "
                    "@data_date/@window_start, the declared window, row validation, quality gates) and compares "
                    "the output partition with the expected rows, printing a diff. The SQL of the processors under "
                    "test is analyzed by ZetaSQL. Uses the running local stack's BigQuery, else starts the engine "
                    "alone. Exit 0 all passed, 1 a failure, 2 a case file that cannot be run.")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="definition file(s), project folder(s) or case file(s) (default: the definition in use)")
    p.add_argument("--processor", help="only the cases of this processor")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--no-sql", action="store_true", help="skip the ZetaSQL analysis (faster while iterating)")
    p.set_defaults(func=_test)


def _groups(args: argparse.Namespace) -> list[tuple[Path, list[Path] | None]]:
    """(definition, case files or None for all of them) per path given."""
    from cascade.dev.processor_tests import CaseFileError, definition_of
    from cascade.lint import default_file

    out: dict[Path, list[Path] | None] = {}
    for text in args.paths or [str(default_file())]:
        path = Path(text)
        if path.is_dir():
            path = path / "pipeline.yaml"
        if not path.is_file():
            raise CaseFileError(text, "no such definition, project folder or case file",
                                "pass a pipeline definition (pipeline.yaml), its folder or one of its case files")
        definition = definition_of(path)
        if definition is None:
            out.setdefault(path.resolve(), None)
        else:
            files = out.setdefault(definition.resolve(), [])
            if files is not None:
                files.append(path)
    return list(out.items())


def _running_engine() -> tuple[str, str] | None:
    """(BigQuery endpoint, project) of a running local stack (environment, else ``<state>/env``)."""
    host, project = os.environ.get("BIGQUERY_EMULATOR_HOST"), os.environ.get("CASCADE_PROJECT")
    if not host:
        env_file = state_dir() / "env"
        try:
            lines = env_file.read_text().splitlines()
        except OSError:
            lines = []
        values = dict(line.removeprefix("export ").partition("=")[::2] for line in lines if "=" in line)
        host, project = values.get("BIGQUERY_EMULATOR_HOST"), values.get("CASCADE_PROJECT", project)
    if host and answers(host):
        return host, project or "cascade-local"
    return None


@contextlib.contextmanager
def engine() -> Iterator[tuple[object, str, str]]:
    """(BigQuery client, project, description): the running local stack's engine, else bqemulator
    started alone on a free port (its own state folder) and stopped afterwards."""
    from cascade.dev.emulators import emulator_spec
    from cascade.dev.localstack import LocalStack, free_port
    from cascade.runtime import clients

    found = _running_engine()
    saved = os.environ.get("BIGQUERY_EMULATOR_HOST")
    folder = None
    stack = None
    try:
        if found is not None:
            host, project = found
            what = f"the local stack's BigQuery at {host}"
        else:
            folder = Path(tempfile.mkdtemp(prefix="cascade-test-engine-"))
            stack = LocalStack(folder, project=ENGINE_PROJECT, log=lambda _m: None)
            port = free_port()
            argv, env, ready, _extra = emulator_spec("bigquery", port, ENGINE_PROJECT, folder / "gcloud-config",
                                                     free_port)
            stack.start_process("bigquery", argv, env, ready["url"], timeout=60)
            host, project = f"http://127.0.0.1:{port}", ENGINE_PROJECT
            what = f"bqemulator started alone on {host}"
        os.environ["BIGQUERY_EMULATOR_HOST"] = host
        yield clients.bigquery(project), project, what
    finally:
        if saved is None:
            os.environ.pop("BIGQUERY_EMULATOR_HOST", None)
        else:
            os.environ["BIGQUERY_EMULATOR_HOST"] = saved
        if stack is not None:
            stack.stop()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _test(args: argparse.Namespace) -> int:
    from cascade.dev.processor_tests import CaseFileError, collect, run_suite
    from cascade.errors import CascadeError

    if not args.no_sql:
        try:
            import zetasql  # noqa: F401  (dev dependency: requirements.txt, not the functions' runtime)
        except ImportError:
            print("error: the SQL analysis needs zetasql (pip install -r requirements.txt); or pass --no-sql",
                  file=sys.stderr)
            return 2
    try:
        groups = [collect(definition, files, args.processor) for definition, files in _groups(args)]
    except CaseFileError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except CascadeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    if not any(cases for _, cases in groups):
        where = ", ".join(f"{p.source_path}" for p, _ in groups)
        print(f"no test cases for {where}" + (f" (processor {args.processor})" if args.processor else "")
              + ": write <definition>.tests/<processor>.yaml (or tests/<processor>.yaml beside pipeline.yaml); "
                "see docs/testing.md", file=sys.stderr)
        return 0

    def progress(result) -> None:
        if not args.json:
            print(result.render(), flush=True)

    with engine() as (client, project, what):
        suite = run_suite(groups, client, project, engine=what, sql=not args.no_sql, on_result=progress)
    if args.json:
        print_json(suite.to_dict())
    else:
        for problem in suite.sql_problems:
            print(problem.render())
        print(suite.render().splitlines()[-1])
    return 0 if suite.ok else 1
