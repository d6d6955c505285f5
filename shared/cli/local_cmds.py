"""``cascade up`` / ``cascade down``: the local stack on the emulators."""

from __future__ import annotations

import argparse
import os

from ..pipeline import load
from ._common import date_arg, state_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start emulators + phase functions, create resources, write raw files",
                       description="Start the Pub/Sub, Firestore, BigQuery and GCS emulators and one "
                                   "functions-framework server per phase in the background; create topics, push "
                                   "subscriptions (retry + dead-letter policies), datasets, tables and the raw bucket "
                                   "from the pipeline definition; write the synthetic Phase 1 raw files for "
                                   "--start..--end; write .cascade/env. Idempotent.")
    p.add_argument("--start", type=date_arg, help="first date of synthetic raw files (YYYY-MM-DD)")
    p.add_argument("--end", type=date_arg, help="last date of synthetic raw files, inclusive")
    p.add_argument("--project", default=os.environ.get("CASCADE_PROJECT", "cascade-local"))
    p.set_defaults(func=_up)
    d = sub.add_parser("down", help="stop exactly what `cascade up` started",
                       description="Stop the emulators and functions recorded in .cascade/pids (nothing else).")
    d.set_defaults(func=_down)


def _up(args: argparse.Namespace) -> int:
    from ..local import up

    if (args.start is None) != (args.end is None):
        print("error: give both --start and --end (or neither)")
        return 2
    if args.start and args.end < args.start:
        print(f"error: --end {args.end} is before --start {args.start}")
        return 2
    sd = state_dir()
    sd.mkdir(parents=True, exist_ok=True)
    deployment = up(load(), sd, args.project, args.start, args.end)
    print(f"cascade is up. Trigger a date with:  cascade trigger --date YYYY-MM-DD   "
          f"(topic {open(deployment.env_file).read().split('CASCADE_TRIGGER_TOPIC=')[1].split()[0]})")
    return 0


def _down(args: argparse.Namespace) -> int:
    from ..local import down

    down(state_dir())
    return 0
