"""Downstream-trigger claims: ``triggers/p{phase}__{date}__g{generation}``.

A phase that completed a date claims the trigger of the next phase at its generation with
``create()`` (exactly one creator wins, in production and on the emulator), publishes it, then marks
the claim ``published``. A claim left ``claimed`` is republished later (receivers dedupe); it is
never marked published when nothing was published.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from cascade.state.scope import Scope, iso
from cascade.state.status import Status
from cascade.state.store import Increment


def claim_id(phase: int, day: date | str, generation: int) -> str:
    return f"p{phase}__{iso(day)}__g{generation}"


class Claims:
    """The trigger claims of one pipeline."""

    def __init__(self, scope: Scope) -> None:
        self.s = scope

    @property
    def _col(self) -> str:
        return self.s.col("triggers")

    def claim(self, phase: int, day: date | str, generation: int) -> dict[str, Any] | None:
        return self.s.store.get(self._col, claim_id(phase, day, generation)).data

    def claims_for(self, phase: int, day: date | str) -> list[dict[str, Any]]:
        return self.s.store.query(self._col, [("phase", "==", phase), ("data_date", "==", iso(day))])

    def claim_trigger(self, phase: int, day: date, generation: int, topic: str, payload: bytes,
                      claimed_by: str) -> bool:
        """Atomically claim the downstream trigger of (phase, date, generation): True for the one winner."""
        return self.s.store.create(self._col, claim_id(phase, day, generation), {
            "pipeline": self.s.pipeline.name, "phase": phase, "data_date": iso(day), "generation": generation,
            "status": Status.CLAIMED.value, "topic": topic, "payload": payload.decode(), "claimed_by": claimed_by,
            "claimed_at": self.s.clock(), "published_at": None, "message_id": None, "publish_attempts": 0,
        })

    def mark_published(self, phase: int, day: date, generation: int, message_id: str) -> None:
        self.s.store.update(self._col, claim_id(phase, day, generation), {
            "status": Status.PUBLISHED.value, "message_id": message_id, "published_at": self.s.clock(),
            "publish_attempts": Increment(1)})

    def unpublished_claims(self, older_than: timedelta) -> list[dict[str, Any]]:
        """Claims still ``claimed`` (never marked published) for longer than ``older_than``."""
        cutoff = self.s.clock() - older_than
        return [c for c in self.s.store.query(self._col, [("status", "==", Status.CLAIMED.value)])
                if (c.get("claimed_at") or cutoff) <= cutoff]

    def published_claims(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """Claims marked published between ``since`` and ``until`` (one query, one field: only a
        published claim has a ``published_at``). A republish moves ``published_at`` on."""
        return self.s.store.query(self._col, [("published_at", ">=", since), ("published_at", "<=", until)])

    def claims_between(self, start: date | str, end: date | str) -> list[dict[str, Any]]:
        """Every trigger claim of the dates ``start..end`` (inclusive), in one query (the status page)."""
        return self.s.store.query(self._col, [("data_date", ">=", iso(start)), ("data_date", "<=", iso(end))])
