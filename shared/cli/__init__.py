"""The ``cascade`` command: what users and scripts rely on.

Each sub-command lives in a module of this package and registers itself with ``register(sub)``.
Exit codes: 0 success, 1 a failure the command reports (failed/blocked/validation problem),
2 usage errors and timeouts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import logs
from . import daily_cmds, extra_cmds, local_cmds, ops_cmds, reliability_cmds, ui_cmds

# Command modules, in the order their commands appear in `cascade --help`.
_MODULES = [local_cmds, ops_cmds, extra_cmds, daily_cmds, reliability_cmds, ui_cmds]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cascade",
        description="Cascade: event-driven, date-partitioned, multi-phase data pipelines on Google Cloud. "
                    "Reads the emulator addresses from the environment or from .cascade/env (written by `cascade up`).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Library log records go to stderr as Cloud Logging JSON lines (stdout stays the command's output).
    logs.configure(level=getattr(logging, os.environ.get("CASCADE_LOG_LEVEL", "WARNING").upper(), logging.WARNING),
                   stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
