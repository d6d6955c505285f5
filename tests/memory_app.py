"""An ``App`` whose state is in memory: a ``Tracker`` on a ``MemoryStore``, a publisher that keeps
what it publishes, alerts kept in memory. For unit tests of the runner's steps and the sweeper
without emulators (nothing here reaches BigQuery, Pub/Sub or Firestore).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Callable

from cascade.definition.model import Pipeline
from cascade.runtime.alerts import MemoryAlertSink
from cascade.runtime.app import App
from cascade.runtime.settings import Settings
from cascade.state.memory import MemoryStore
from cascade.state.tracker import Tracker


class MemoryPublisher:
    """Keeps every publish; ``fail_topics`` refuses publishes to those topics (a deleted topic)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.fail_topics: set[str] = set()

    def publish(self, topic: str, data: bytes, attributes: dict[str, str] | None = None) -> str:
        if topic in self.fail_topics:
            raise ConnectionError(f"topic {topic} not found")
        self.published.append((topic, json.loads(data), dict(attributes or {})))
        return f"m{len(self.published)}"

    def to(self, topic: str) -> list[dict[str, Any]]:
        return [msg for t, msg, _ in self.published if t == topic]


def memory_app(pipeline: Pipeline, clock: Callable[[], datetime], **settings: Any) -> App:
    app = App(settings=Settings(project="unit", namespace="unit", **settings), pipeline=pipeline, clock=clock,
              alerts=MemoryAlertSink())
    app.tracker = Tracker(MemoryStore(), pipeline, clock=clock, lease_seconds=app.settings.lease_seconds)
    app.publisher = MemoryPublisher()  # type: ignore[assignment]
    return app
