"""Downstream-trigger claims: ``triggers/p{phase}__{date}__g{generation}``.

A phase that completed a date claims the trigger of the next phase at its generation with
``create()`` (exactly one creator wins, in production and on the emulator), publishes it, then marks
the claim ``published``. A claim left ``claimed`` is republished later (receivers dedupe); it is
never marked published when nothing was published.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from cascade.state.scope import FIRESTORE_TIMEOUT, Scope, iso


class Claims:
    """The trigger claims of one pipeline."""

    def __init__(self, scope: Scope) -> None:
        self.s = scope

    def ref(self, phase: int, day: date | str, generation: int):
        return self.s.col("triggers").document(f"p{phase}__{iso(day)}__g{generation}")

    def claim(self, phase: int, day: date | str, generation: int) -> dict[str, Any] | None:
        self.s.ops += 1
        snap = self.ref(phase, day, generation).get(timeout=FIRESTORE_TIMEOUT)
        return snap.to_dict() if snap.exists else None

    def claims_for(self, phase: int, day: date | str) -> list[dict[str, Any]]:
        self.s.ops += 1
        q = self.s.col("triggers").where(filter=firestore.FieldFilter("phase", "==", phase)).where(
            filter=firestore.FieldFilter("data_date", "==", iso(day)))
        return [s.to_dict() for s in q.stream(timeout=FIRESTORE_TIMEOUT)]

    def claim_trigger(self, phase: int, day: date, generation: int, topic: str, payload: bytes,
                      claimed_by: str) -> bool:
        """Atomically claim the downstream trigger of (phase, date, generation): True for the one winner."""
        now = self.s.clock()
        try:
            self.s.ops += 1
            self.ref(phase, day, generation).create({
                "pipeline": self.s.pipeline.name, "phase": phase, "data_date": iso(day), "generation": generation,
                "status": "claimed", "topic": topic, "payload": payload.decode(), "claimed_by": claimed_by,
                "claimed_at": now, "published_at": None, "message_id": None, "publish_attempts": 0,
            }, timeout=FIRESTORE_TIMEOUT)
            return True
        except gexc.AlreadyExists:
            return False

    def mark_published(self, phase: int, day: date, generation: int, message_id: str) -> None:
        self.s.ops += 1
        self.ref(phase, day, generation).update({
            "status": "published", "message_id": message_id, "published_at": self.s.clock(),
            "publish_attempts": firestore.Increment(1)}, timeout=FIRESTORE_TIMEOUT)

    def unpublished_claims(self, older_than: timedelta) -> list[dict[str, Any]]:
        """Claims still ``claimed`` (never marked published) for longer than ``older_than``."""
        self.s.ops += 1
        cutoff = self.s.clock() - older_than
        q = self.s.col("triggers").where(filter=firestore.FieldFilter("status", "==", "claimed"))
        return [s.to_dict() for s in q.stream(timeout=FIRESTORE_TIMEOUT)
                if (s.to_dict().get("claimed_at") or cutoff) <= cutoff]

    def published_claims(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """Claims marked published between ``since`` and ``until`` (one query, one field: only a
        published claim has a ``published_at``). A republish moves ``published_at`` on."""
        self.s.ops += 1
        q = self.s.col("triggers").where(filter=firestore.FieldFilter("published_at", ">=", since)).where(
            filter=firestore.FieldFilter("published_at", "<=", until))
        return [s.to_dict() for s in q.stream(timeout=FIRESTORE_TIMEOUT)]

    def claims_between(self, start: date | str, end: date | str) -> list[dict[str, Any]]:
        """Every trigger claim of the dates ``start..end`` (inclusive), in one query (the status page)."""
        self.s.ops += 1
        q = self.s.col("triggers").where(filter=firestore.FieldFilter("data_date", ">=", iso(start))).where(
            filter=firestore.FieldFilter("data_date", "<=", iso(end)))
        return [s.to_dict() for s in q.stream(timeout=FIRESTORE_TIMEOUT)]
