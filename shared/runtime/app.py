"""The application context of one process: settings, definition, clients, tracker, warehouse.

Built once per process (functions keep it across invocations) from the environment; tests and the
CLI build their own with an injected clock or namespace.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Callable

from cascade.definition.loading import load
from cascade.definition.model import Pipeline
from cascade.definition.versions import Versions
from cascade.runtime import clients
from cascade.runtime.alerts import AlertSink, LogAlertSink
from cascade.runtime.publisher import Publisher
from cascade.runtime.settings import Settings
from cascade.runtime.warehouse import Warehouse
from cascade.state.tracker import Tracker, utcnow


@dataclass
class App:
    settings: Settings
    pipeline: Pipeline
    clock: Callable[[], datetime] = utcnow
    alerts: AlertSink = field(default_factory=LogAlertSink)

    def __post_init__(self) -> None:
        # A calendar whose expected dates come from data reads them through this process's warehouse
        # (once, on first use, then every ``refresh_seconds``); a plain calendar ignores it.
        self.pipeline.calendar.attach(lambda source, start, end: self.warehouse.calendar_dates(source, start, end))

    @staticmethod
    def from_env(**overrides: Any) -> "App":
        settings = Settings.from_env()
        pipeline = load(namespace=settings.namespace)
        return App(settings=settings, pipeline=pipeline, **overrides)

    @property
    def project(self) -> str:
        return self.settings.project

    @cached_property
    def tracker(self) -> Tracker:
        return Tracker(clients.firestore(self.project), self.pipeline, clock=self.clock,
                       lease_seconds=self.settings.lease_seconds)

    @cached_property
    def warehouse(self) -> Warehouse:
        return Warehouse(clients.bigquery(self.project), self.pipeline, self.project,
                         timeout=self.settings.bigquery_timeout_seconds)

    @cached_property
    def versions(self) -> Versions:
        """The code version of every processor of the definition in use (computed once)."""
        return Versions(self.pipeline)

    @cached_property
    def publisher(self) -> Publisher:
        return Publisher(clients.publisher(), self.project, timeout=self.settings.publish_timeout_seconds)

    @cached_property
    def storage(self) -> Any:
        return clients.storage(self.project)


_default: App | None = None
_lock = threading.Lock()


def default_app() -> App:
    """The process-wide App (created on first use from the environment)."""
    global _default
    with _lock:
        if _default is None:
            _default = App.from_env()
        return _default
