"""Alerts: one structured alert per blocked or failed partition, through a pluggable sink.

The default sink writes a Cloud Logging entry at severity ERROR with ``alert: true`` (a log-based
alert policy turns it into a notification: ``infra/terraform/monitoring.tf``, docs/operations.md).
Backfills collect failures into one digest instead of one alert per error.

**Where they are kept locally.** The records are the same JSON lines everywhere; only where they
land differs:

* a phase function (``CASCADE_PHASE`` set) writes them on its stdout - Cloud Logging in production,
  ``<state>/logs/<function>.log`` under ``cascade up`` (``LocalStack`` keeps each process's output);
* a CLI process (``cascade sweep``, a backfill's digest, ``cascade daily``) writes them on stderr
  and, when ``$CASCADE_ALERT_LOG`` names a file, appends the same line to it (the CLI sets it to
  ``<state>/logs/cli.log`` unless ``CASCADE_PRODUCTION=1``).

``read_alerts`` reads them back with the production filter's own terms (severity ERROR,
``alert: true``, entry label ``pipeline``): ``cascade alerts`` lists what would have been sent.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Protocol

from cascade.runtime.logs import CloudLoggingFormatter, get_logger, log

ALERT_LOG_ENV = "CASCADE_ALERT_LOG"  # a file a non-function process appends its alert records to
_LABELS = "logging.googleapis.com/labels"


@dataclass(frozen=True)
class Alert:
    title: str
    message: str
    labels: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class AlertSink(Protocol):
    def send(self, alert: Alert) -> None: ...


class LogAlertSink:
    """Writes each alert as an ERROR log entry with ``alert: true``."""

    def __init__(self) -> None:
        self.logger = get_logger("alerts")

    def send(self, alert: Alert) -> None:
        fields = dict(alert=True, **alert.labels, details=alert.details)
        log(self.logger, logging.ERROR, f"{alert.title}: {alert.message}", **fields)
        copy = local_copy_path()
        if copy is not None:
            record = self.logger.makeRecord(self.logger.name, logging.ERROR, __file__, 0,
                                            f"{alert.title}: {alert.message}", None, None,
                                            extra={"fields": fields})
            line = CloudLoggingFormatter().format(record)
            try:
                copy.parent.mkdir(parents=True, exist_ok=True)
                with _copy_lock, copy.open("a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
            except OSError:
                pass  # the record was logged; a local copy that cannot be written loses nothing else


_copy_lock = threading.Lock()


def local_copy_path() -> Path | None:
    """The file this process appends its alert records to, or None: a function's stdout is its log."""
    if os.environ.get("CASCADE_PHASE") or os.environ.get("K_SERVICE"):
        return None
    path = os.environ.get(ALERT_LOG_ENV)
    return Path(path) if path else None


def is_alert(entry: Any, pipeline: str | None = None) -> bool:
    """Does the log ``entry`` (one parsed JSON line) pass the production alert filter
    (``tfvars.alert_log_filter``: severity ERROR, ``alert: true``, label ``pipeline``)? An alert
    without a pipeline label (a backfill's digest, sent by the CLI, never by a function) belongs to
    whichever pipeline the CLI ran, so it is listed for any."""
    if not isinstance(entry, dict) or entry.get("severity") != "ERROR" or entry.get("alert") is not True:
        return False
    labelled = (entry.get(_LABELS) or {}).get("pipeline")
    return pipeline is None or labelled is None or labelled == pipeline


def read_alerts(files: Iterable[Path], pipeline: str | None = None,
                since: datetime | None = None) -> list[dict[str, Any]]:
    """The alert records in ``files`` (JSON lines, other lines skipped), oldest first, each with the
    ``file`` it came from; only ``pipeline``'s and those at or after ``since`` when given."""
    found: list[dict[str, Any]] = []
    for path in files:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not is_alert(entry, pipeline):
                continue
            if since is not None and _time(entry) < since:
                continue
            found.append({**entry, "file": str(path)})
    found.sort(key=_time)
    return found


def local_alert_files(state_dir: Path) -> list[Path]:
    """Every log the local stack and the CLI keep under ``state_dir`` (``<state>/logs/*.log``)."""
    return sorted((Path(state_dir) / "logs").glob("*.log"))


def _time(entry: dict[str, Any]) -> datetime:
    try:
        return datetime.fromisoformat(str(entry.get("time")))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)


class MemoryAlertSink:
    """Keeps alerts in memory (for tests and for building digests)."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self._lock = threading.Lock()

    def send(self, alert: Alert) -> None:
        with self._lock:
            self.alerts.append(alert)
