"""Rejected messages: ``rejected/{id}`` keeps every message refused as permanently invalid, with
its raw payload and the reason, so nothing is lost.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cascade.state.scope import Scope


class Rejected:
    """The rejected messages of one pipeline."""

    def __init__(self, scope: Scope) -> None:
        self.s = scope

    def record(self, phase: int, reason: str, error: str, data: bytes | None,
               attributes: dict[str, str] | None, message_id: str | None) -> str:
        """Keep a refused message (its raw payload and the reason) so nothing is lost.

        Whatever its size, the record fits one document (Firestore's limits): the payload is kept up to
        ``MAX_RECORDED_BYTES`` (16 KiB) with its original size in ``data_bytes``; attributes up to
        Pub/Sub's limits (100 of them, keys 256 bytes, values 1024 bytes) with their count.
        """
        from cascade.runtime.messages import (
            MAX_ATTRIBUTE_KEY_BYTES,
            MAX_ATTRIBUTE_VALUE_BYTES,
            MAX_ATTRIBUTES,
            MAX_RECORDED_BYTES,
            truncate_utf8,
        )

        raw = data or b""
        attrs = dict(attributes or {})
        doc_id = hashlib.sha256(f"{phase}|{message_id}|".encode("utf-8", "replace") + raw).hexdigest()[:32]
        # Attribute names become map keys: Firestore refuses empty ones and reserves __names__.
        kept = {f"[{truncate_utf8(str(k), MAX_ATTRIBUTE_KEY_BYTES)}]" if not str(k) or str(k).startswith("__")
                else truncate_utf8(str(k), MAX_ATTRIBUTE_KEY_BYTES): truncate_utf8(str(v), MAX_ATTRIBUTE_VALUE_BYTES)
                for k, v in list(attrs.items())[:MAX_ATTRIBUTES]}
        self.s.store.set(self.s.col("rejected"), doc_id, {
            "pipeline": self.s.pipeline.name, "phase": phase, "reason": truncate_utf8(reason, MAX_RECORDED_BYTES),
            "error": truncate_utf8(error, 256),
            "data": truncate_utf8(raw[:MAX_RECORDED_BYTES].decode("utf-8", "replace"), MAX_RECORDED_BYTES),
            "data_bytes": len(raw), "data_truncated": len(raw) > MAX_RECORDED_BYTES,
            "attributes": kept, "attribute_count": len(attrs),
            "message_id": None if message_id is None else truncate_utf8(str(message_id), 256),
            "rejected_at": self.s.clock()})
        return doc_id

    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.s.store.query(self.s.col("rejected"), limit=limit)

    def counts(self) -> dict[int, int]:
        """Rejected messages per phase (e.g. ``{2: 3}``), from one query that reads only ``phase``."""
        counts: dict[int, int] = {}
        for doc in self.s.store.query(self.s.col("rejected"), fields=["phase"]):
            phase = doc.get("phase")
            if isinstance(phase, int):
                counts[phase] = counts.get(phase, 0) + 1
        return counts
