"""Backfill leases: one document per processor (``backfill_leases/{processor}``), written only by
its holder. ``version`` is the document's update time, for compare-and-set; the rules (expiry,
heartbeat, take-over) are ``cascade.backfill.lease``'s.
"""

from __future__ import annotations

from typing import Any, Iterable

from google.api_core import exceptions as gexc

from cascade.state.scope import FIRESTORE_TIMEOUT, Scope


class Leases:
    """The backfill lease documents of one pipeline."""

    def __init__(self, scope: Scope) -> None:
        self.s = scope

    def ref(self, processor: str):
        return self.s.col("backfill_leases").document(processor)

    def create(self, processor: str, doc: dict[str, Any]) -> bool:
        """Create the lease document: True for the one creator, False when it exists."""
        try:
            self.s.ops += 1
            self.ref(processor).create(doc, timeout=FIRESTORE_TIMEOUT)
            return True
        except gexc.AlreadyExists:
            return False

    def read(self, processor: str) -> tuple[dict[str, Any] | None, Any]:
        """(document or None, version)."""
        self.s.ops += 1
        snap = self.ref(processor).get(timeout=FIRESTORE_TIMEOUT)
        return (snap.to_dict() or {}, snap.update_time) if snap.exists else (None, None)

    def update(self, processor: str, fields: dict[str, Any], version: Any) -> bool:
        """Compare-and-set ``fields`` on the lease document at ``version``; False if it changed."""
        try:
            self.s.ops += 1
            self.ref(processor).update(fields, option=self.s.db.write_option(last_update_time=version),
                                       timeout=FIRESTORE_TIMEOUT)
            return True
        except (gexc.FailedPrecondition, gexc.Aborted, gexc.NotFound):
            return False

    def delete(self, processor: str, version: Any) -> bool:
        """Delete the lease document if still at ``version``."""
        try:
            self.s.ops += 1
            self.ref(processor).delete(option=self.s.db.write_option(last_update_time=version),
                                       timeout=FIRESTORE_TIMEOUT)
            return True
        except (gexc.FailedPrecondition, gexc.Aborted, gexc.NotFound):
            return False

    def docs(self, processors: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Lease documents of ``processors`` that exist, in one batched read."""
        refs = [self.ref(p) for p in processors]
        if not refs:
            return {}
        self.s.ops += 1
        return {snap.reference.id: snap.to_dict() or {} for snap in self.s.db.get_all(refs, timeout=FIRESTORE_TIMEOUT)
                if snap.exists}
