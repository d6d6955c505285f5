"""Log lines: Cloud Logging JSON for the functions, one short text line for a person at the CLI."""

from __future__ import annotations

import json
import logging

from cascade.runtime.logs import CloudLoggingFormatter, PlainFormatter


def record(message: str, **fields) -> logging.LogRecord:
    rec = logging.LogRecord("cascade.test", logging.ERROR, __file__, 1, message, None, None)
    rec.fields = fields  # type: ignore[attr-defined]
    return rec


def test_a_function_log_line_is_cloud_logging_json_with_severity_and_labels():
    entry = json.loads(CloudLoggingFormatter().format(record("failed", processor="p", date="2025-01-02", alert=True)))
    assert entry["severity"] == "ERROR" and entry["message"] == "failed" and entry["alert"] is True
    assert entry["logging.googleapis.com/labels"] == {"processor": "p", "date": "2025-01-02"}


def test_the_cli_shows_an_alert_as_one_short_line_and_never_cuts_a_command():
    digest = ("backfill 2025-01-01..2025-01-09: 4 failed\n  FAILED a@2025-01-02: inputs missing; "
              "one backfill reaches every input it needs: cascade backfill --start 2025-01-01 --end 2025-01-09")
    line = PlainFormatter(limit=80).format(record(digest, alert=True))
    assert line == "error: alert: backfill 2025-01-01..2025-01-09: 4 failed ...  (the whole record: cascade alerts)"
    long = "x" * 50 + " then: cascade backfill --start 2025-01-01 --end 2025-01-09 --phase 2"
    assert PlainFormatter(limit=80).format(record(long)) == "error: " + "x" * 50 + " then ..."
    short = "re-run it: cascade trigger --date 2025-01-02 --phase 1"
    assert PlainFormatter(limit=80).format(record(short)) == f"error: {short}"
