"""``cascade init``: start a pipeline project that runs as generated.

Exit codes: 0 created, 2 the folder is not empty (nothing is overwritten).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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


def _init(args: argparse.Namespace) -> int:
    from cascade.dev.scaffold import scaffold
    from cascade.errors import CascadeError

    try:
        created = scaffold(Path(args.dir), name=args.name)
    except CascadeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(created.next_steps())
    return 0
