"""What every state module shares: the Firestore client, the pipeline (whose namespace names the
collections), the clock, the partition lease length and the count of operations sent.

Also the small helpers of the state modules: ISO dates, run ids, the compare-and-set retry bound
and the deadline of one Firestore call.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable

from cascade.definition.model import Pipeline

Clock = Callable[[], datetime]

CAS_ATTEMPTS = 20
# Deadline of one Firestore call: a call the backend never answers fails (transient, retried by
# redelivery) instead of hanging an invocation that holds a lease.
FIRESTORE_TIMEOUT = 30.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Scope:
    """The state of one pipeline: where its documents live, its clock and its lease length."""

    db: Any
    pipeline: Pipeline
    clock: Clock
    lease: timedelta
    ops: int = 0  # Firestore operations sent (for benchmarks)

    def col(self, kind: str):
        return self.db.collection(self.pipeline.collection(kind))


def iso(day: date | str) -> str:
    return day if isinstance(day, str) else day.isoformat()


def new_run_id(processor: str, day: date | str) -> str:
    return f"{processor}-{iso(day)}-{uuid.uuid4().hex[:10]}"
