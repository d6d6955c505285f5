"""Shared plumbing of the CLI commands: environment, the App, dates, output."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from cascade.definition.calendar import parse_date
from cascade.errors import CascadeError


def state_dir() -> Path:
    return Path(os.environ.get("CASCADE_STATE_DIR", ".cascade")).resolve()


def load_env_file() -> None:
    """Load ``<state>/env`` (written by ``cascade up``) for variables not already set."""
    env_file = state_dir() / "env"
    if not env_file.exists():
        return
    for line in env_file.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            os.environ.setdefault(key.strip(), value.strip())


def app(require_stack: bool = True):
    from cascade.runtime.app import App

    load_env_file()
    if os.environ.get("CASCADE_PRODUCTION") != "1":  # locally, keep this process's alerts for `cascade alerts`
        os.environ.setdefault("CASCADE_ALERT_LOG", str(state_dir() / "logs" / "cli.log"))
    if require_stack and not (os.environ.get("FIRESTORE_EMULATOR_HOST") or os.environ.get("CASCADE_PRODUCTION") == "1"):
        fail("no emulator addresses: run `cascade up` first (or `source .cascade/env`); "
             "set CASCADE_PRODUCTION=1 to use real Google Cloud with application default credentials")
    return App.from_env()


def date_arg(text: str) -> date:
    try:
        return parse_date(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid date (YYYY-MM-DD): {exc}") from exc


def bool_arg(text: str) -> bool:
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def now() -> datetime:
    return datetime.now(timezone.utc)


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def handle_cascade_error(exc: CascadeError) -> int:
    print(f"error: {exc.message}", file=sys.stderr)
    return 2
