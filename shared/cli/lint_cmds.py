"""``cascade init`` / ``cascade lint``: start a pipeline project, and check a definition before deploying it.

Exit codes: ``lint`` 0 clean, 1 problems found, 2 usage (no such file, zetasql missing); ``init`` 0
created, 2 the folder is not empty (nothing is overwritten).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cascade.cli._common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init", help="scaffold a new pipeline project (definition, SQL + Python processors, gate, sample data)",
        description="Create DIR with a runnable pipeline project: pipeline.yaml (two phases: a raw load and an "
                    "analytics phase with one SQL and one Python processor, a quality gate, a calendar), the Python "
                    "module, sample raw files, a README (the tutorial) and a test. Then, inside DIR: cascade lint, "
                    "cascade up, cascade trigger, cascade wait. Refuses a folder that is not empty.")
    p.add_argument("dir", help="folder to create (its name becomes the pipeline name)")
    p.add_argument("--name", help="pipeline name (lowercase identifier; default: from DIR)")
    p.set_defaults(func=_init)

    p = sub.add_parser(
        "lint", help="every problem of a definition with file:line and the fix; SQL checked by BigQuery's analyzer",
        description="Check a pipeline definition without deploying anything: schema (keys, types), upstreams, "
                    "cycles, lookbacks against the calendar, SQL placeholders, Python callables, and every SQL "
                    "statement Cascade would send (transforms, fenced MERGEs, strict-mode gap queries, validation "
                    "queries, gates) analyzed offline by ZetaSQL (GoogleSQL, BigQuery's analyzer). FILE defaults to "
                    "the definition in use ($CASCADE_PIPELINE_FILE, ./pipeline.yaml, else pipelines/nba.yaml). "
                    "Exit 0 clean, 1 problems, 2 usage.")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="definition file(s) or project folder(s) (default: the one in use)")
    p.add_argument("--no-sql", action="store_true", help="skip the ZetaSQL analysis (structure only, instant)")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    p.add_argument("--no-cache", action="store_true",
                   help="analyze every SQL statement again (default: reuse the verdicts of statements unchanged "
                        "since an earlier lint, kept in $CASCADE_LINT_CACHE or ~/.cache/cascade/)")
    p.set_defaults(func=_lint)


def _lint(args: argparse.Namespace) -> int:
    from cascade.lint import default_file, lint_files

    # A project folder stands for its pipeline.yaml (cascade lint my_shop).
    files = [Path(f) / "pipeline.yaml" if Path(f).is_dir() else Path(f) for f in args.files] or [default_file()]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"error: no such definition file: {', '.join(missing)}", file=sys.stderr)
        return 2
    if not args.no_sql:
        try:
            import zetasql  # noqa: F401  (dev dependency: requirements.txt, not the functions' runtime)
        except ImportError:
            print("error: the SQL check needs zetasql (pip install -r requirements.txt); or pass --no-sql",
                  file=sys.stderr)
            return 2
    reports = lint_files(files, sql=not args.no_sql, cache=not args.no_cache)
    if args.json:
        print_json(reports[0].to_dict() if len(reports) == 1 else [r.to_dict() for r in reports])
    else:
        print("\n".join(r.render() for r in reports))
    return 0 if all(r.ok for r in reports) else 1


def _init(args: argparse.Namespace) -> int:
    from cascade.errors import CascadeError
    from cascade.dev.scaffold import scaffold

    try:
        created = scaffold(Path(args.dir), name=args.name)
    except CascadeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(created.next_steps())
    return 0
