"""Alerts: one structured alert per blocked or failed partition, through a pluggable sink.

The default sink writes a Cloud Logging entry at severity ERROR (a log-based alert policy turns it
into a notification). Backfills collect failures into one digest instead of one alert per error.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from .logs import get_logger, log


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
        log(self.logger, logging.ERROR, f"{alert.title}: {alert.message}", alert=True, **alert.labels,
            details=alert.details)


class MemoryAlertSink:
    """Keeps alerts in memory (for tests and for building digests)."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self._lock = threading.Lock()

    def send(self, alert: Alert) -> None:
        with self._lock:
            self.alerts.append(alert)
