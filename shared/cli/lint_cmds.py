"""``cascade lint``: check a definition before deploying it.

Exit codes: 0 clean, 1 problems found, 2 usage (no such file, zetasql missing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cascade.cli._common import print_json


def register(sub: argparse._SubParsersAction) -> None:
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
