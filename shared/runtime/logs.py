"""Structured JSON logging that Cloud Logging understands.

Every record is one JSON line on stdout with ``severity``, ``message``, ``time`` and
``logging.googleapis.com/labels`` (pipeline, phase, processor, date, run id ...), plus any
structured fields passed as ``extra={"fields": {...}}``. Cloud Functions / Cloud Run forward stdout
to Cloud Logging, which parses these keys.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

_LABEL_KEYS = ("pipeline", "phase", "processor", "date", "run_id", "generation", "correlation_id", "mode")

# Python level name -> Cloud Logging severity.
_SEVERITY = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR", "CRITICAL": "CRITICAL"}


class CloudLoggingFormatter(logging.Formatter):
    """Formats a record as one Cloud Logging structured JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = dict(getattr(record, "fields", {}) or {})
        labels = {k: str(fields.pop(k)) for k in _LABEL_KEYS if fields.get(k) is not None}
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelname, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(),
            "logger": record.name,
        }
        if labels:
            entry["logging.googleapis.com/labels"] = labels
        entry.update({k: v for k, v in fields.items() if v is not None})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class PlainFormatter(logging.Formatter):
    """One short line for a person at a terminal (the ``cascade`` CLI): ``warning: <message>``, its
    first line cut at ``limit`` characters, never inside a command (an alert's full record is in the
    local alert log, listed by ``cascade alerts``)."""

    def __init__(self, limit: int = 600) -> None:
        super().__init__()
        self.limit = limit

    def format(self, record: logging.LogRecord) -> str:
        lines = record.getMessage().splitlines() or [""]
        message = lines[0] + (" ..." if len(lines) > 1 else "")
        if len(message) > self.limit:  # never a command cut in the middle: leave it out instead
            cut = message[:self.limit]
            at = cut.rfind("cascade ")
            if at > 0 and ";" not in cut[at:]:
                cut = cut[:at].rstrip(" :;,")
            message = cut.rstrip() + " ..."
        alert = bool((getattr(record, "fields", {}) or {}).get("alert"))
        line = f"{record.levelname.lower()}: " + ("alert: " if alert else "") + message
        if alert:
            line += "  (the whole record: cascade alerts)"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


_configured = False


def configure(level: int = logging.INFO, stream: Any = None, plain: bool = False) -> None:
    """Route the ``cascade`` loggers to ``stream`` (stdout) as JSON lines - or, with ``plain`` (the CLI,
    for a person), as short text lines. Idempotent."""
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(PlainFormatter() if plain else CloudLoggingFormatter())
    root = logging.getLogger("cascade")
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    _configured = True


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"cascade.{name}")


def log(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """Log ``message`` with structured ``fields`` (label keys become Cloud Logging labels)."""
    logger.log(level, message, extra={"fields": fields})
