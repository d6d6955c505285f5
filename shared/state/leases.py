"""Backfill leases: one document per processor (``backfill_leases/{processor}``), written only by
its holder. ``version`` is the document's version (its update time), for compare-and-set; the rules
(expiry, heartbeat, take-over) are ``cascade.backfill.lease``'s.
"""

from __future__ import annotations

from typing import Any, Iterable

from cascade.state.scope import Scope


class Leases:
    """The backfill lease documents of one pipeline."""

    def __init__(self, scope: Scope) -> None:
        self.s = scope

    @property
    def _col(self) -> str:
        return self.s.col("backfill_leases")

    def create(self, processor: str, doc: dict[str, Any]) -> bool:
        """Create the lease document: True for the one creator, False when it exists."""
        return self.s.store.create(self._col, processor, doc)

    def read(self, processor: str) -> tuple[dict[str, Any] | None, Any]:
        """(document or None, version)."""
        doc = self.s.store.get(self._col, processor)
        return (doc.data, doc.version) if doc.exists else (None, None)

    def update(self, processor: str, fields: dict[str, Any], version: Any) -> bool:
        """Compare-and-set ``fields`` on the lease document at ``version``; False if it changed."""
        return self.s.store.update(self._col, processor, fields, version)

    def delete(self, processor: str, version: Any) -> bool:
        """Delete the lease document if still at ``version``."""
        return self.s.store.delete(self._col, processor, version)

    def docs(self, processors: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Lease documents of ``processors`` that exist, in one batched read."""
        found = self.s.store.get_all(self._col, list(processors))
        return {name: doc.data for name, doc in found.items() if doc.data is not None}
