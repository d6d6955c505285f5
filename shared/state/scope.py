"""What every state module shares: the document store, the pipeline (whose namespace names the
collections), the clock and the partition lease length.

Also the small helpers of the state modules: ISO dates, run ids and the compare-and-set retry bound.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Callable

from cascade.definition.model import Pipeline
from cascade.state.store import DocumentStore

Clock = Callable[[], datetime]

CAS_ATTEMPTS = 20


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Scope:
    """The state of one pipeline: where its documents live, its clock and its lease length."""

    store: DocumentStore
    pipeline: Pipeline
    clock: Clock
    lease: timedelta

    def col(self, kind: str) -> str:
        """The namespaced name of the collection of ``kind`` (partitions, runs, triggers, ...)."""
        return self.pipeline.collection(kind)


def iso(day: date | str) -> str:
    return day if isinstance(day, str) else day.isoformat()


def new_run_id(processor: str, day: date | str) -> str:
    return f"{processor}-{iso(day)}-{uuid.uuid4().hex[:10]}"
