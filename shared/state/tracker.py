"""The ``Tracker``: the one entry point to a pipeline's recorded state.

A facade over the state modules, one per kind of document (collection names come from
``Pipeline.collection``):

* ``partitions`` - ``partitions/{processor}__{date}``: a partition's state and its run's lease;
* ``history`` - ``runs/{run_id}``: run history, one document per attempt; alert-once markers;
* ``claims`` - ``triggers/p{phase}__{date}__g{generation}``: downstream-trigger claims;
* ``generations`` - ``generations/{date}``: the generations allocated for a date;
* ``leases`` - ``backfill_leases/{processor}``: one backfill per processor at a time;
* ``rejected`` - ``rejected/{id}``: messages refused as permanently invalid.

Callers use the ``Tracker``'s methods; each forwards to the module that owns the rule. The modules
read and write through a document store (``store``): Firestore in production and on the emulator
(``firestore_store``), in memory in unit tests (``memory``).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Callable, Iterable

from cascade.definition.model import Pipeline
from cascade.state.claims import Claims
from cascade.state.generations import Generations
from cascade.state.history import History
from cascade.state.leases import Leases
from cascade.state.partitions import Begin, Partition, Partitions
from cascade.state.rejected import Rejected
from cascade.state.scope import Clock, Scope, iso, new_run_id, utcnow
from cascade.state.status import TERMINAL
from cascade.state.store import DocumentStore

__all__ = ["Tracker", "Partition", "Begin", "Clock", "utcnow", "new_run_id", "TERMINAL"]


class Tracker:
    """The recorded state of one pipeline (namespaced), in ``store``: a ``DocumentStore``, or a
    Firestore client (wrapped in a ``FirestoreStore``)."""

    WAITING_REDELIVERY_GAP = Partitions.WAITING_REDELIVERY_GAP

    def __init__(self, store: DocumentStore | Any, pipeline: Pipeline, clock: Clock = utcnow,
                 lease_seconds: float = 120.0) -> None:
        if not isinstance(store, DocumentStore):
            from cascade.state.firestore_store import FirestoreStore
            store = FirestoreStore(store)
        self.store: DocumentStore = store
        self.scope = Scope(store, pipeline, clock, timedelta(seconds=lease_seconds))
        self.parts = Partitions(self.scope)
        self.history = History(self.scope)
        self.claims = Claims(self.scope)
        self.generations = Generations(self.scope, self.parts)
        self.leases = Leases(self.scope)
        self.rejects = Rejected(self.scope)

    @property
    def pipeline(self) -> Pipeline:
        return self.scope.pipeline

    @property
    def clock(self) -> Clock:
        return self.scope.clock

    @property
    def lease(self) -> timedelta:
        return self.scope.lease

    @property
    def ops(self) -> int:
        """Operations sent to the store (for benchmarks)."""
        return self.store.ops

    # ------------------------------------------------------------------ partitions: reads
    def partitions(self, processors: Iterable[str], days: Iterable[date | str]) -> dict[tuple[str, str], Partition]:
        return self.parts.partitions(processors, days)

    def partitions_by_keys(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Partition]:
        return self.parts.by_keys(keys)

    def partition(self, processor: str, day: date | str) -> Partition:
        return self.parts.partitions([processor], [day])[(processor, iso(day))]

    def latest_data_date(self) -> date | None:
        return self.parts.latest_data_date()

    def partitions_where(self, field_name: str, op: str, value: Any) -> list[Partition]:
        return self.parts.where(field_name, op, value)

    def watch_partitions(self, field_name: str, value: Any, on_change: Callable[[list[Partition]], None]) -> Any:
        return self.parts.watch(field_name, value, on_change)

    # ------------------------------------------------------------------ partitions: lifecycle
    def begin(self, processor: str, phase: int, day: date, generation: int, run_id: str,
              context: dict[str, Any] | None = None, trigger_id: str = "",
              inputs: Iterable[tuple[str, str]] = ()) -> Begin:
        return self.parts.begin(processor, phase, day, generation, run_id, context, trigger_id, inputs)

    def heartbeat(self, processor: str, day: date, run_id: str) -> bool:
        return self.parts.heartbeat(processor, day, run_id)

    def finish(self, processor: str, day: date, run_id: str, status: str, *, record_count: int | None = None,
               error: str = "", blocked: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Partition:
        return self.parts.finish(processor, day, run_id, status, record_count=record_count, error=error,
                                 blocked=blocked, extra=extra)

    def record_outcome(self, processor: str, phase: int, day: date, generation: int, status: str,
                       reason: str, blocked: dict[str, Any] | None = None, context: dict[str, Any] | None = None,
                       extra: dict[str, Any] | None = None) -> bool:
        return self.parts.record_outcome(processor, phase, day, generation, status, reason, blocked, context, extra)

    def expire(self, processor: str, day: date | str, run_id: str, reason: str) -> bool:
        return self.parts.expire(processor, day, run_id, reason)

    # ------------------------------------------------------------------ partitions: waiting expiry
    def waiting_until(self, part: Partition) -> datetime | None:
        return self.parts.waiting_until(part)

    def waiting_expired(self, part: Partition, now: datetime | None = None) -> bool:
        return self.parts.waiting_expired(part, now)

    def waiting_since(self, processor: str, day: date | str) -> datetime | None:
        return self.history.waiting_since(processor, day)

    def repair_waiting(self, processor: str, day: date | str, run_id: str, key: str, limit: int,
                       give_up_reason: str) -> tuple[str, int]:
        return self.parts.repair_waiting(processor, day, run_id, key, limit, give_up_reason)

    # ------------------------------------------------------------------ run history
    def runs(self, processor: str | None = None, day: date | str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return self.history.runs(processor, day, limit)

    def record_answer(self, phase: int, day: date | str, processors: Iterable[str], status: str, answer: str,
                      context: dict[str, Any] | None = None) -> None:
        self.history.record_answer(phase, day, processors, status, answer, context)

    def mark_run(self, run_id: str, status: str, error: str) -> None:
        self.history.mark_run(run_id, status, error)

    def create_once(self, kind: str, doc_id: str, data: dict[str, Any]) -> bool:
        return self.history.create_once(kind, doc_id, data)

    # ------------------------------------------------------------------ generations
    def new_generation(self, day: date | str) -> int:
        return self.generations.new_generation(day)

    # ------------------------------------------------------------------ downstream trigger claims
    def claim(self, phase: int, day: date | str, generation: int) -> dict[str, Any] | None:
        return self.claims.claim(phase, day, generation)

    def claims_for(self, phase: int, day: date | str) -> list[dict[str, Any]]:
        return self.claims.claims_for(phase, day)

    def claim_trigger(self, phase: int, day: date, generation: int, topic: str, payload: bytes,
                      claimed_by: str) -> bool:
        return self.claims.claim_trigger(phase, day, generation, topic, payload, claimed_by)

    def mark_published(self, phase: int, day: date, generation: int, message_id: str) -> None:
        self.claims.mark_published(phase, day, generation, message_id)

    def unpublished_claims(self, older_than: timedelta) -> list[dict[str, Any]]:
        return self.claims.unpublished_claims(older_than)

    def published_claims(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        return self.claims.published_claims(since, until)

    def claims_between(self, start: date | str, end: date | str) -> list[dict[str, Any]]:
        return self.claims.claims_between(start, end)

    # ------------------------------------------------------------------ backfill leases
    def lease_create(self, processor: str, doc: dict[str, Any]) -> bool:
        return self.leases.create(processor, doc)

    def lease_read(self, processor: str) -> tuple[dict[str, Any] | None, Any]:
        return self.leases.read(processor)

    def lease_update(self, processor: str, fields: dict[str, Any], version: Any) -> bool:
        return self.leases.update(processor, fields, version)

    def lease_delete(self, processor: str, version: Any) -> bool:
        return self.leases.delete(processor, version)

    def lease_docs(self, processors: Iterable[str]) -> dict[str, dict[str, Any]]:
        return self.leases.docs(processors)

    # ------------------------------------------------------------------ rejected messages
    def record_rejected(self, phase: int, reason: str, error: str, data: bytes | None,
                        attributes: dict[str, str] | None, message_id: str | None) -> str:
        return self.rejects.record(phase, reason, error, data, attributes, message_id)

    def rejected(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.rejects.list(limit)

    def rejected_counts(self) -> dict[int, int]:
        return self.rejects.counts()
