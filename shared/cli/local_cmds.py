"""``cascade up`` / ``cascade down``: the local stack on the emulators."""

from __future__ import annotations

import argparse
import os
import sys

from cascade.cli._common import date_arg, state_dir
from cascade.definition.loading import load
from cascade.dev.emulators import LocalStackError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start emulators + phase functions, create resources, write raw files",
                       description="Start the Pub/Sub, Firestore, BigQuery and GCS emulators and one "
                                   "functions-framework server per phase in the background; create topics, push "
                                   "subscriptions (retry + dead-letter policies), datasets, tables and the raw bucket "
                                   "from the pipeline definition; write the synthetic Phase 1 raw files for "
                                   "--start..--end; write .cascade/env. Idempotent. A changed definition or code "
                                   "restarts the functions that run it; a column added to an output is added to its "
                                   "table; a removed or retyped column is refused (exit 1) with the rebuild it needs.")
    p.add_argument("--start", type=date_arg, help="first date of synthetic raw files (YYYY-MM-DD)")
    p.add_argument("--end", type=date_arg, help="last date of synthetic raw files, inclusive")
    p.add_argument("--project", default=os.environ.get("CASCADE_PROJECT", "cascade-local"))
    p.add_argument("--rebuild-table", action="append", default=[], metavar="PROCESSOR",
                   help="drop PROCESSOR's output table and create it from the definition (its rows are deleted: "
                        "rebuild them with `cascade backfill ... --force`); repeatable")
    p.set_defaults(func=_up)
    d = sub.add_parser("down", help="stop exactly what `cascade up` started",
                       description="Stop the emulators and functions recorded in .cascade/pids (nothing else).")
    d.set_defaults(func=_down)


def _up(args: argparse.Namespace) -> int:
    from cascade.dev.local import up
    from cascade.runtime.warehouse import SchemaChangeError

    if (args.start is None) != (args.end is None):
        print("error: give both --start and --end (or neither)")
        return 2
    if args.start and args.end < args.start:
        print(f"error: --end {args.end} is before --start {args.start}")
        return 2
    sd = state_dir()
    sd.mkdir(parents=True, exist_ok=True)
    pipeline = load()  # a definition error is reported by the CLI like for every command
    try:
        deployment = up(pipeline, sd, args.project, args.start, args.end, rebuild=args.rebuild_table)
    except SchemaChangeError as exc:
        print(f"error: the definition changes existing tables in a way `cascade up` cannot apply in place:\n"
              f"{exc.message}", file=sys.stderr)
        return 1
    except LocalStackError as exc:
        print(f"error: `cascade up` could not bring the local stack up: {exc}\n"
              f"next step: fix what is named above and run `cascade up` again (it reuses what runs and restarts "
              f"what crashed); logs are in {sd / 'logs'}; `cascade down` stops everything it started",
              file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - never a traceback: say what failed and what to do next
        print(f"error: `cascade up` failed: {type(exc).__name__}: {str(exc)[:2000]}\n"
              f"next step: run `cascade up` again (every step is idempotent); if it fails the same way, run "
              f"`cascade down` then `cascade up`; logs are in {sd / 'logs'}", file=sys.stderr)
        return 1
    print(f"cascade is up. Trigger a date with:  cascade trigger --date YYYY-MM-DD   "
          f"(topic {open(deployment.env_file).read().split('CASCADE_TRIGGER_TOPIC=')[1].split()[0]})")
    return 0


def _down(args: argparse.Namespace) -> int:
    from cascade.dev.local import down

    try:
        down(state_dir())
    except Exception as exc:  # noqa: BLE001 - never a traceback: say what failed and what to do next
        print(f"error: `cascade down` could not stop everything: {type(exc).__name__}: {str(exc)[:2000]}\n"
              f"next step: run `cascade down` again; it stops only the processes recorded in "
              f"{state_dir() / 'pids'} (`python -m cascade.dev.localstack status --state-dir {state_dir()}` lists them)",
              file=sys.stderr)
        return 1
    return 0
