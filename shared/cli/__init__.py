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
from pathlib import Path

from google.api_core import exceptions as gexc

from cascade.cli import (
    alerts_cmds,
    backfill_cmds,
    daily_cmds,
    init_cmds,
    lint_cmds,
    local_cmds,
    ops_cmds,
    reliability_cmds,
    test_cmds,
    ui_cmds,
)
from cascade.cli._common import handle_cascade_error
from cascade.errors import CascadeError
from cascade.runtime import logs

# Command modules, in the order their commands appear in `cascade --help`.
_MODULES = [init_cmds, lint_cmds, test_cmds, local_cmds, ops_cmds, backfill_cmds, daily_cmds, reliability_cmds, alerts_cmds, ui_cmds]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cascade",
        description="Cascade: event-driven, date-partitioned, multi-phase data pipelines on Google Cloud. "
                    "Reads the emulator addresses from the environment or from .cascade/env (written by `cascade up`).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _MODULES:
        module.register(sub)
    return parser


def use_project_definition(cwd: Path | None = None) -> None:
    """A project folder (``cascade init``) holds its definition as ``pipeline.yaml``: when the current
    folder has one and ``$CASCADE_PIPELINE_FILE`` is unset, every command uses it (and the functions
    ``cascade up`` starts inherit it, with the folder importable for its Python processors)."""
    here = (cwd or Path.cwd()).resolve()
    own = here / "pipeline.yaml"
    if not os.environ.get("CASCADE_PIPELINE_FILE") and own.is_file():
        os.environ["CASCADE_PIPELINE_FILE"] = str(own)
        if str(here) not in sys.path:
            sys.path.insert(0, str(here))


def main(argv: list[str] | None = None) -> int:
    use_project_definition()
    parser = build_parser()
    args = parser.parse_args(argv)
    # Library log records go to stderr (stdout stays the command's output): short text lines for a
    # person, or Cloud Logging JSON lines with CASCADE_LOG_FORMAT=json.
    logs.configure(level=getattr(logging, os.environ.get("CASCADE_LOG_LEVEL", "WARNING").upper(), logging.WARNING),
                   stream=sys.stderr, plain=os.environ.get("CASCADE_LOG_FORMAT", "text").lower() != "json")
    # Errors are handled here, once: a CascadeError (bad input, unknown phase or processor, an
    # impossible range, a refused message) says what is wrong and what to do; an unreachable
    # backend says which and how to bring it up. Exit 2 for both.
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe is found here, not at the interpreter's exit
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`cascade status | head`): not a backend problem. Point
        # stdout at nothing so the interpreter's final flush does not fail again, and stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # the shell's code for a process ended by SIGPIPE
    except CascadeError as exc:
        return handle_cascade_error(exc)
    except (gexc.ServiceUnavailable, gexc.RetryError, ConnectionError) as exc:
        print(f"error: cannot reach a backend ({type(exc).__name__}: {str(exc)[:300]}); locally, start the stack "
              f"with `cascade up` (or `source .cascade/env`); in production, check the project and credentials",
              file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
