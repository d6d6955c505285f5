"""Firestore completion tracking: partition state, leases, run history, trigger claims.

Documents (collection names come from ``Pipeline.collection``):

* ``partitions/{processor}__{date}`` - the state of one partition (processor x date): status
  (running, success, failed, blocked, skipped), generation, current run id, lease expiry,
  attempts, record count, error / blocked reason. One document per partition, so processors that
  finish concurrently never contend on a shared document (see STACK.md).
* ``runs/{run_id}`` - run history: one document per attempt, never overwritten by later runs.
* ``triggers/p{phase}__{date}__g{generation}`` - the downstream-trigger claim. Created with
  ``create()`` (exactly one creator wins, in production and on the emulator), published after the
  claim, marked ``published`` afterwards. A claim left ``claimed`` is republished later (receivers
  dedupe); it is never marked published when nothing was published.
* ``rejected/{id}`` - messages refused as permanently invalid, with their raw payload and reason.

State changes of a partition are compare-and-set on the document's update time, so two deliveries
of one trigger can never both take a live lease, and a run whose lease was taken over cannot record
its result over the new run's.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from google.api_core import exceptions as gexc
from google.cloud import firestore

from cascade.runtime import hooks as faults
from cascade.errors import LeaseLostError, TransientError
from cascade.definition.model import Pipeline
from cascade.state.status import TERMINAL, Status  # noqa: F401 - TERMINAL re-exported

Clock = Callable[[], datetime]

# Aliases of the one vocabulary (``cascade.state.status.Status``), kept short for the modules that use them.
MISSING, RUNNING, WAITING = Status.MISSING, Status.RUNNING, Status.WAITING
SUCCESS, FAILED, BLOCKED, SKIPPED = Status.SUCCESS, Status.FAILED, Status.BLOCKED, Status.SKIPPED
_CAS_ATTEMPTS = 20
# Deadline of one Firestore call: a call the backend never answers fails (transient, retried by
# redelivery) instead of hanging an invocation that holds a lease.
FIRESTORE_TIMEOUT = 30.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Partition:
    """A snapshot of one partition's state (``status`` "missing" when never run)."""

    processor: str
    data_date: str
    status: str = Status.MISSING
    generation: int = 0
    run_id: str = ""
    record_count: int | None = None
    attempts: int = 0
    lease_expires_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    error: str = ""
    blocked: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def lease_alive(self, now: datetime) -> bool:
        return self.status == RUNNING and self.lease_expires_at is not None and self.lease_expires_at > now

    @property
    def fence(self) -> int:
        return int(self.raw.get("fence") or 0)

    def done_for(self, generation: int) -> bool:
        return self.status == SUCCESS and self.generation >= generation

    @staticmethod
    def from_doc(processor: str, day: str, data: dict[str, Any] | None) -> "Partition":
        if not data:
            return Partition(processor, day)
        return Partition(
            processor=processor, data_date=day, status=_status(data.get("status")),
            generation=int(data.get("generation", 0)), run_id=data.get("run_id", ""),
            record_count=data.get("record_count"), attempts=int(data.get("attempts", 0)),
            lease_expires_at=data.get("lease_expires_at"), started_at=data.get("started_at"),
            finished_at=data.get("finished_at"), duration_s=data.get("duration_s"),
            error=data.get("error", ""), blocked=data.get("blocked"), raw=data)


@dataclass(frozen=True)
class Begin:
    """Outcome of asking to run a partition: ``run`` (lease taken), ``done``, ``stale`` or ``busy``."""

    outcome: str
    partition: Partition
    attempt: int = 0
    fence: int = 0  # the run's write fence (monotonic per partition)
    previous: Partition | None = None  # the state the lease was taken from (``run`` only)
    inputs: dict[tuple[str, str], Partition] = field(default_factory=dict)  # read with the lease (``run``)

    @property
    def took_over_crash(self) -> bool:
        """This run is a redelivery that took over its own trigger's crashed run (``running``, lease
        expired, counted as the next attempt): the previous attempt never recorded its outcome."""
        prev = self.previous
        return prev is not None and prev.status == RUNNING and self.attempt > 1


def _next_attempt(current: Partition, generation: int, trigger_id: str) -> int:
    """Attempts count the runs of one generation that ended without success and may be retried:

    * a redelivery (same trigger) taking over its own crashed run (``running`` whose lease expired:
      the process died before it recorded anything) is the next attempt - so a partition that kills
      its process every time is given up on after ``max_attempts`` (``PhaseRunner``); a new trigger
      (a replayed dead letter, ``cascade trigger`` after a fix) taking it over starts again at 1;
    * a crashed run the sweeper expired (``failed``, ``expired``) is the next attempt too;
    * a redelivery (same trigger) after a transient failure is the next attempt;
    * after a quota failure the count stays: a quota is not the partition's fault (it is retried
      more slowly, bounded by the delivery policy or the backfill's time budget);
    * anything else - a new trigger, a new generation, after a block, a success or a permanent
      failure - starts again at 1. Busy waits write nothing."""
    if current.status == MISSING or current.generation != generation:
        return 1
    if current.status == RUNNING:
        return max(current.attempts, 0) + 1 if current.raw.get("trigger_id") == trigger_id[:200] else 1
    if current.status == FAILED and current.raw.get("transient"):
        if current.raw.get("expired"):
            return current.attempts + 1
        if current.raw.get("trigger_id") == trigger_id:
            return max(current.attempts, 1) if current.raw.get("quota") else current.attempts + 1
    return 1


class Tracker:
    """Firestore state of one pipeline (namespaced)."""

    def __init__(self, client: firestore.Client, pipeline: Pipeline, clock: Clock = utcnow,
                 lease_seconds: float = 120.0) -> None:
        self.db = client
        self.pipeline = pipeline
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        self.ops = 0  # Firestore operations sent (for benchmarks)

    # ------------------------------------------------------------------ references
    def _col(self, kind: str):
        return self.db.collection(self.pipeline.collection(kind))

    def partition_ref(self, processor: str, day: date | str):
        return self._col("partitions").document(f"{processor}__{_iso(day)}")

    def claim_ref(self, phase: int, day: date | str, generation: int):
        return self._col("triggers").document(f"p{phase}__{_iso(day)}__g{generation}")

    # ------------------------------------------------------------------ reads
    def partitions(self, processors: Iterable[str], days: Iterable[date | str]) -> dict[tuple[str, str], Partition]:
        """States of every (processor, date) asked for, in one batched read."""
        days = [_iso(d) for d in days]
        return self.partitions_by_keys([(p, d) for p in processors for d in days])

    def partitions_by_keys(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Partition]:
        """States of exactly the (processor, ISO date) keys asked for, in one batched read."""
        keys = list(dict.fromkeys((p, _iso(d)) for p, d in keys))
        if not keys:
            return {}
        self.ops += 1
        refs = [self.partition_ref(p, d) for p, d in keys]
        found = {snap.reference.id: snap.to_dict() for snap in self.db.get_all(refs, timeout=FIRESTORE_TIMEOUT) if snap.exists}
        return {(p, d): Partition.from_doc(p, d, found.get(f"{p}__{d}")) for p, d in keys}

    def latest_data_date(self) -> date | None:
        """The newest date any partition of the pipeline has (None when nothing ran), from one query."""
        self.ops += 1
        q = self._col("partitions").order_by("data_date", direction=firestore.Query.DESCENDING).limit(1)
        for snap in q.stream(timeout=FIRESTORE_TIMEOUT):
            value = (snap.to_dict() or {}).get("data_date")
            if value:
                return date.fromisoformat(value)
        return None

    def partition(self, processor: str, day: date | str) -> Partition:
        return self.partitions([processor], [day])[(processor, _iso(day))]

    def claim(self, phase: int, day: date | str, generation: int) -> dict[str, Any] | None:
        self.ops += 1
        snap = self.claim_ref(phase, day, generation).get(timeout=FIRESTORE_TIMEOUT)
        return snap.to_dict() if snap.exists else None

    def claims_for(self, phase: int, day: date | str) -> list[dict[str, Any]]:
        self.ops += 1
        q = self._col("triggers").where(filter=firestore.FieldFilter("phase", "==", phase)).where(
            filter=firestore.FieldFilter("data_date", "==", _iso(day)))
        return [s.to_dict() for s in q.stream(timeout=FIRESTORE_TIMEOUT)]

    def runs(self, processor: str | None = None, day: date | str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Run history, newest first."""
        q = self._col("runs")
        if processor:
            q = q.where(filter=firestore.FieldFilter("processor", "==", processor))
        if day:
            q = q.where(filter=firestore.FieldFilter("data_date", "==", _iso(day)))
        self.ops += 1
        rows = [s.to_dict() for s in q.stream(timeout=FIRESTORE_TIMEOUT)]
        rows.sort(key=lambda r: r.get("started_at") or datetime.min.replace(tzinfo=timezone.utc), reverse=True)
        return rows[:limit]

    # ------------------------------------------------------------------ partition lifecycle
    def begin(self, processor: str, phase: int, day: date, generation: int, run_id: str,
              context: dict[str, Any] | None = None, trigger_id: str = "",
              inputs: Iterable[tuple[str, str]] = ()) -> Begin:
        """Take the partition's lease for ``run_id`` unless it is done, stale or held by a live run.

        ``done``: already succeeded for this generation (or a newer one) - dedupe on the business key.
        ``superseded``: the partition moved to a newer generation than this trigger's.
        ``busy``: another run holds a live lease - of any generation: a newer generation waits for a
        live older run instead of running beside it.

        Taking the lease increments the partition's ``fence``: every write of this run carries it,
        and a run whose fence is older than the partition's current one cannot change its rows.
        The partition update and the run-history record are one atomic batch. ``inputs`` (keys of
        the partitions the run will read) are read in the same batched read as the partition: the
        run records what it read (``Begin.inputs``) without a second round trip.
        """
        ref = self.partition_ref(processor, day)
        keys = [k for k in dict.fromkeys((p, _iso(d)) for p, d in inputs) if k != (processor, _iso(day))]
        refs = [self.partition_ref(p, d) for p, d in keys]
        for _ in range(_CAS_ATTEMPTS):
            now = self.clock()
            self.ops += 1
            snaps = {s.reference.id: s for s in self.db.get_all([ref, *refs], timeout=FIRESTORE_TIMEOUT)}
            snap = snaps[ref.id]
            current = Partition.from_doc(processor, _iso(day), snap.to_dict() if snap.exists else None)
            if snap.exists:
                if generation < current.generation:
                    return Begin(Status.SUPERSEDED, current)
                if current.done_for(generation):
                    return Begin(Status.DONE, current)
                if current.lease_alive(now):
                    return Begin(Status.BUSY, current)
            attempt = _next_attempt(current, generation, trigger_id)
            fence = current.fence + 1
            doc = {
                "pipeline": self.pipeline.name, "phase": phase, "processor": processor,
                "data_date": _iso(day), "generation": generation, "status": RUNNING.value, "run_id": run_id,
                "attempts": attempt, "fence": fence, "trigger_id": trigger_id[:200],
                "started_at": now, "finished_at": None, "duration_s": None,
                "lease_expires_at": now + self.lease, "record_count": None, "error": "", "blocked": None,
                "checks": None, "transient": False, "expired": False, "quota": False,
                "updated_at": now, **(context or {}),
            }
            batch = self.db.batch()
            if snap.exists:
                batch.update(ref, doc, option=self.db.write_option(last_update_time=snap.update_time))
            else:
                batch.create(ref, doc)
            batch.set(self._col("runs").document(run_id), {"run_id": run_id, **doc, "attempt": attempt})
            try:
                faults.maybe_fail("firestore_aborted", processor, _iso(day))
                self.ops += 1
                batch.commit(timeout=FIRESTORE_TIMEOUT)
            except (gexc.AlreadyExists, gexc.FailedPrecondition, gexc.Aborted, gexc.NotFound):
                continue  # someone else changed it between our read and write: look again
            read = {(p, d): Partition.from_doc(p, d, snaps[f"{p}__{d}"].to_dict()
                                               if f"{p}__{d}" in snaps and snaps[f"{p}__{d}"].exists else None)
                    for p, d in keys}
            return Begin(Status.RUN, Partition.from_doc(processor, _iso(day), doc), attempt, fence, current, read)
        raise TransientError(f"could not take the lease on {processor} {_iso(day)}: too much contention",
                             processor=processor, date=_iso(day))

    def heartbeat(self, processor: str, day: date, run_id: str) -> bool:
        """Extend the lease while the run is alive; False when the lease was lost to another run."""
        def change(cur: dict[str, Any], now: datetime) -> dict[str, Any]:
            return {"lease_expires_at": now + self.lease, "updated_at": now}
        try:
            self._update_own(processor, day, run_id, change)
            return True
        except LeaseLostError:
            return False

    def finish(self, processor: str, day: date, run_id: str, status: str, *, record_count: int | None = None,
               error: str = "", blocked: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Partition:
        """Record the run's outcome, only if this run still owns the partition (else LeaseLostError).

        The partition and its run-history record are written in one atomic batch."""
        def change(cur: dict[str, Any], now: datetime) -> dict[str, Any]:
            started = cur.get("started_at") or now
            return {"status": str(status), "record_count": record_count, "error": error, "blocked": blocked,
                    "finished_at": now, "duration_s": round((now - started).total_seconds(), 3),
                    "lease_expires_at": None, "updated_at": now, **(extra or {})}

        def history(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
            return run_id, {k: doc.get(k) for k in ("status", "record_count", "error", "blocked", "finished_at",
                                                    "duration_s")} | (extra or {})
        doc = self._update_own(processor, day, run_id, change, history)
        return Partition.from_doc(processor, _iso(day), doc)

    def record_outcome(self, processor: str, phase: int, day: date, generation: int, status: str,
                       reason: str, blocked: dict[str, Any] | None = None, context: dict[str, Any] | None = None,
                       extra: dict[str, Any] | None = None) -> bool:
        """Record a partition that did not run (blocked, skipped, failed on its inputs) without taking
        over a live run or a success.

        Returns False when the partition is running under a live lease or already succeeded for this
        generation (nothing is overwritten).
        """
        run_id = new_run_id(processor, day)
        begin = self.begin(processor, phase, day, generation, run_id, context)
        if begin.outcome != Status.RUN:
            return False
        self.finish(processor, day, run_id, status, error=reason, blocked=blocked, extra=extra)
        return True

    # ------------------------------------------------------------------ generations
    def generation_ref(self, day: date | str):
        return self._col("generations").document(_iso(day))

    def new_generation(self, day: date | str) -> int:
        """Allocate the next generation of ``day`` for the whole cascade: higher than every generation
        ever allocated for the date and than every partition of the date (any phase), atomically
        (create() or compare-and-set on one document per date), so two reruns never share one and a
        (phase, date, generation) claim is never reused."""
        ref = self.generation_ref(day)
        names = [p.name for p in self.pipeline.processors]
        for _ in range(_CAS_ATTEMPTS):
            self.ops += 1
            snap = ref.get(timeout=FIRESTORE_TIMEOUT)
            seen = [p.generation for p in self.partitions(names, [day]).values()]
            top = max([int((snap.to_dict() or {}).get("generation", 0)) if snap.exists else 0, *seen])
            doc = {"data_date": _iso(day), "generation": top + 1, "updated_at": self.clock()}
            try:
                self.ops += 1
                if snap.exists:
                    ref.update(doc, option=self.db.write_option(last_update_time=snap.update_time),
                               timeout=FIRESTORE_TIMEOUT)
                else:
                    ref.create(doc, timeout=FIRESTORE_TIMEOUT)
                return top + 1
            except (gexc.AlreadyExists, gexc.FailedPrecondition, gexc.Aborted):
                continue
        raise TransientError(f"could not allocate a generation for {_iso(day)}: too much contention", date=_iso(day))

    def _update_own(self, processor: str, day: date, run_id: str,
                    change: Callable[[dict[str, Any], datetime], dict[str, Any]],
                    history: Callable[[dict[str, Any]], tuple[str, dict[str, Any]]] | None = None) -> dict[str, Any]:
        """Compare-and-set ``change`` on a partition this run owns; ``history`` (optional) gives the
        run-history record written in the same atomic batch."""
        ref = self.partition_ref(processor, day)
        for _ in range(_CAS_ATTEMPTS):
            self.ops += 1
            snap = ref.get(timeout=FIRESTORE_TIMEOUT)
            cur = snap.to_dict() if snap.exists else None
            if not cur or cur.get("run_id") != run_id:
                raise LeaseLostError(
                    f"run {run_id} of {processor} {_iso(day)} lost its lease to run {cur.get('run_id') if cur else None}",
                    processor=processor, date=_iso(day), run_id=run_id)
            fields = change(cur, self.clock())
            batch = self.db.batch()
            batch.update(ref, fields, option=self.db.write_option(last_update_time=snap.update_time))
            if history is not None:
                rid, data = history({**cur, **fields})
                batch.set(self._col("runs").document(rid), {"run_id": rid, **data}, merge=True)
            try:
                self.ops += 1
                batch.commit(timeout=FIRESTORE_TIMEOUT)
                return {**cur, **fields}
            except (gexc.FailedPrecondition, gexc.Aborted):
                continue
        raise TransientError(f"could not update {processor} {_iso(day)}: too much contention")

    def record_answer(self, phase: int, day: date | str, processors: Iterable[str], status: str, answer: str,
                      context: dict[str, Any] | None = None) -> None:
        """Record in run history that a trigger had nothing to do (e.g. "already complete and
        fresh"), one entry per processor it named, without touching the partitions."""
        now = self.clock()
        batch = self.db.batch()
        for name in processors:
            run_id = new_run_id(name, day)
            batch.set(self._col("runs").document(run_id), {
                "run_id": run_id, "pipeline": self.pipeline.name, "phase": phase, "processor": name,
                "data_date": _iso(day), "status": str(status), "error": answer[:1000], "started_at": now,
                "finished_at": now, "duration_s": 0.0, "record_count": None, **(context or {})})
        self.ops += 1
        batch.commit(timeout=FIRESTORE_TIMEOUT)

    def mark_run(self, run_id: str, status: str, error: str) -> None:
        """Close a run's history entry that could not record its result (e.g. its lease was lost)."""
        self._write_run(run_id, {"status": status, "error": error, "finished_at": self.clock()}, merge=True)

    def _write_run(self, run_id: str, data: dict[str, Any], merge: bool = False) -> None:
        self.ops += 1
        self._col("runs").document(run_id).set({"run_id": run_id, **data}, merge=merge, timeout=FIRESTORE_TIMEOUT)

    def expire(self, processor: str, day: date | str, run_id: str, reason: str) -> bool:
        """Mark a run whose lease expired as failed (transient: to be re-run); False if it moved on.
        The crash counts as a failed attempt (``expired``), so a partition that kills its process
        every time is given up on after ``max_attempts`` instead of being re-triggered forever."""
        def change(cur: dict[str, Any], now: datetime) -> dict[str, Any]:
            return {"status": FAILED.value, "error": reason, "transient": True, "expired": True,
                    "lease_expires_at": None, "finished_at": now, "updated_at": now}
        try:
            self._update_own(processor, day if isinstance(day, date) else date.fromisoformat(day), run_id, change,
                             lambda doc: (run_id, {"status": FAILED.value, "error": reason,
                                                   "finished_at": doc["finished_at"]}))
        except LeaseLostError:
            return False
        return True

    def watch_partitions(self, field_name: str, value: Any, on_change: Callable[[list[Partition]], None]) -> Any:
        """A Firestore listener on the partitions whose ``field_name`` equals ``value`` (e.g. a
        backfill's correlation id): ``on_change`` gets the changed partitions. Returns the watch
        (``.unsubscribe()``). Listeners can drop on the emulator: callers re-read on a bounded wait."""
        q = self._col("partitions").where(filter=firestore.FieldFilter(field_name, "==", value))

        def changed(_docs: Any, changes: Any, _read_time: Any) -> None:
            parts = []
            for ch in changes:
                d = ch.document.to_dict() or {}
                parts.append(Partition.from_doc(d.get("processor", ""), d.get("data_date", ""), d))
            if parts:
                on_change(parts)
        self.ops += 1
        return q.on_snapshot(changed)

    def partitions_where(self, field_name: str, op: str, value: Any) -> list[Partition]:
        """Partitions matching one filter (e.g. status == running), from a single query."""
        self.ops += 1
        q = self._col("partitions").where(filter=firestore.FieldFilter(field_name, op, value))
        return [Partition.from_doc(d.get("processor", ""), d.get("data_date", ""), d)
                for d in (s.to_dict() for s in q.stream(timeout=FIRESTORE_TIMEOUT))]

    def create_once(self, kind: str, doc_id: str, data: dict[str, Any]) -> bool:
        """Create ``kind/doc_id`` unless it exists (alert-once markers); True for the creator."""
        try:
            self.ops += 1
            self._col(kind).document(doc_id).create({**data, "created_at": self.clock()}, timeout=FIRESTORE_TIMEOUT)
            return True
        except gexc.AlreadyExists:
            return False

    # ------------------------------------------------------------------ backfill leases
    # One document per processor (``backfill_leases/{processor}``), written only by its holder;
    # ``version`` is the document's update time, for compare-and-set (see ``backfill.lease``).
    def _lease_ref(self, processor: str):
        return self._col("backfill_leases").document(processor)

    def lease_create(self, processor: str, doc: dict[str, Any]) -> bool:
        """Create the lease document: True for the one creator, False when it exists."""
        try:
            self.ops += 1
            self._lease_ref(processor).create(doc, timeout=FIRESTORE_TIMEOUT)
            return True
        except gexc.AlreadyExists:
            return False

    def lease_read(self, processor: str) -> tuple[dict[str, Any] | None, Any]:
        """(document or None, version)."""
        self.ops += 1
        snap = self._lease_ref(processor).get(timeout=FIRESTORE_TIMEOUT)
        return (snap.to_dict() or {}, snap.update_time) if snap.exists else (None, None)

    def lease_update(self, processor: str, fields: dict[str, Any], version: Any) -> bool:
        """Compare-and-set ``fields`` on the lease document at ``version``; False if it changed."""
        try:
            self.ops += 1
            self._lease_ref(processor).update(fields, option=self.db.write_option(last_update_time=version),
                                              timeout=FIRESTORE_TIMEOUT)
            return True
        except (gexc.FailedPrecondition, gexc.Aborted, gexc.NotFound):
            return False

    def lease_delete(self, processor: str, version: Any) -> bool:
        """Delete the lease document if still at ``version``."""
        try:
            self.ops += 1
            self._lease_ref(processor).delete(option=self.db.write_option(last_update_time=version),
                                              timeout=FIRESTORE_TIMEOUT)
            return True
        except (gexc.FailedPrecondition, gexc.Aborted, gexc.NotFound):
            return False

    def lease_docs(self, processors: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Lease documents of ``processors`` that exist, in one batched read."""
        refs = [self._lease_ref(p) for p in processors]
        if not refs:
            return {}
        self.ops += 1
        return {snap.reference.id: snap.to_dict() or {} for snap in self.db.get_all(refs, timeout=FIRESTORE_TIMEOUT)
                if snap.exists}

    # ------------------------------------------------------------------ downstream trigger claims
    def claim_trigger(self, phase: int, day: date, generation: int, topic: str, payload: bytes,
                      claimed_by: str) -> bool:
        """Atomically claim the downstream trigger of (phase, date, generation): True for the one winner."""
        now = self.clock()
        try:
            self.ops += 1
            self.claim_ref(phase, day, generation).create({
                "pipeline": self.pipeline.name, "phase": phase, "data_date": _iso(day), "generation": generation,
                "status": "claimed", "topic": topic, "payload": payload.decode(), "claimed_by": claimed_by,
                "claimed_at": now, "published_at": None, "message_id": None, "publish_attempts": 0,
            }, timeout=FIRESTORE_TIMEOUT)
            return True
        except gexc.AlreadyExists:
            return False

    def mark_published(self, phase: int, day: date, generation: int, message_id: str) -> None:
        self.ops += 1
        self.claim_ref(phase, day, generation).update({
            "status": "published", "message_id": message_id, "published_at": self.clock(),
            "publish_attempts": firestore.Increment(1)}, timeout=FIRESTORE_TIMEOUT)

    def unpublished_claims(self, older_than: timedelta) -> list[dict[str, Any]]:
        """Claims still ``claimed`` (never marked published) for longer than ``older_than``."""
        self.ops += 1
        cutoff = self.clock() - older_than
        q = self._col("triggers").where(filter=firestore.FieldFilter("status", "==", "claimed"))
        return [s.to_dict() for s in q.stream(timeout=FIRESTORE_TIMEOUT) if (s.to_dict().get("claimed_at") or cutoff) <= cutoff]

    def published_claims(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """Claims marked published between ``since`` and ``until`` (one query, one field: only a
        published claim has a ``published_at``). A republish moves ``published_at`` on."""
        self.ops += 1
        q = self._col("triggers").where(filter=firestore.FieldFilter("published_at", ">=", since)).where(
            filter=firestore.FieldFilter("published_at", "<=", until))
        return [s.to_dict() for s in q.stream(timeout=FIRESTORE_TIMEOUT)]

    def claims_between(self, start: date | str, end: date | str) -> list[dict[str, Any]]:
        """Every trigger claim of the dates ``start..end`` (inclusive), in one query (the status page)."""
        self.ops += 1
        q = self._col("triggers").where(filter=firestore.FieldFilter("data_date", ">=", _iso(start))).where(
            filter=firestore.FieldFilter("data_date", "<=", _iso(end)))
        return [s.to_dict() for s in q.stream(timeout=FIRESTORE_TIMEOUT)]

    # ------------------------------------------------------------------ rejected messages
    def record_rejected(self, phase: int, reason: str, error: str, data: bytes | None,
                        attributes: dict[str, str] | None, message_id: str | None) -> str:
        """Keep a refused message (its raw payload and the reason) so nothing is lost.

        Whatever its size, the record fits one Firestore document: the payload is kept up to
        ``MAX_RECORDED_BYTES`` (16 KiB) with its original size in ``data_bytes``; attributes up to
        Pub/Sub's limits (100 of them, keys 256 bytes, values 1024 bytes) with their count.
        """
        from cascade.runtime.messages import (MAX_ATTRIBUTE_KEY_BYTES, MAX_ATTRIBUTE_VALUE_BYTES, MAX_ATTRIBUTES,
                               MAX_RECORDED_BYTES, truncate_utf8)

        raw = data or b""
        attrs = dict(attributes or {})
        doc_id = hashlib.sha256(f"{phase}|{message_id}|".encode("utf-8", "replace") + raw).hexdigest()[:32]
        # Attribute names become map keys: Firestore refuses empty ones and reserves __names__.
        kept = {f"[{truncate_utf8(str(k), MAX_ATTRIBUTE_KEY_BYTES)}]" if not str(k) or str(k).startswith("__")
                else truncate_utf8(str(k), MAX_ATTRIBUTE_KEY_BYTES): truncate_utf8(str(v), MAX_ATTRIBUTE_VALUE_BYTES)
                for k, v in list(attrs.items())[:MAX_ATTRIBUTES]}
        self.ops += 1
        self._col("rejected").document(doc_id).set({
            "pipeline": self.pipeline.name, "phase": phase, "reason": truncate_utf8(reason, MAX_RECORDED_BYTES),
            "error": truncate_utf8(error, 256),
            "data": truncate_utf8(raw[:MAX_RECORDED_BYTES].decode("utf-8", "replace"), MAX_RECORDED_BYTES),
            "data_bytes": len(raw), "data_truncated": len(raw) > MAX_RECORDED_BYTES,
            "attributes": kept, "attribute_count": len(attrs),
            "message_id": None if message_id is None else truncate_utf8(str(message_id), 256),
            "rejected_at": self.clock()}, timeout=FIRESTORE_TIMEOUT)
        return doc_id

    def rejected(self, limit: int = 100) -> list[dict[str, Any]]:
        self.ops += 1
        return [s.to_dict() for s in self._col("rejected").limit(limit).stream(timeout=FIRESTORE_TIMEOUT)]

    # ------------------------------------------------------------------ read-only views (cascade ui)
    def rejected_counts(self) -> dict[int, int]:
        """Rejected messages per phase (e.g. ``{2: 3}``), from one query that reads only ``phase``."""
        self.ops += 1
        counts: dict[int, int] = {}
        for snap in self._col("rejected").select(["phase"]).stream(timeout=FIRESTORE_TIMEOUT):
            phase = (snap.to_dict() or {}).get("phase")
            if isinstance(phase, int):
                counts[phase] = counts.get(phase, 0) + 1
        return counts

    # ------------------------------------------------------------------ waiting expiry
    # A ``waiting`` partition is re-checked by every redelivery of its trigger, and each re-check
    # records it again (``finished_at``). Like a lease it is alive while re-checked: it expires when
    # nothing re-checked it for the lease length plus Pub/Sub's longest retry backoff (600 s, the
    # most a push subscription waits between two deliveries) - its messages were dead-lettered or lost.
    WAITING_REDELIVERY_GAP = timedelta(seconds=600)

    def waiting_until(self, part: Partition) -> datetime | None:
        """Until when a ``waiting`` partition is alive (None for any other status): its last
        re-check (or the sweeper's last re-trigger of it) plus the lease and the longest redelivery gap."""
        if part.status != WAITING:
            return None
        marks = [t for t in (part.finished_at, part.raw.get("waiting_rearmed_at"), part.started_at) if t is not None]
        if not marks:
            return None
        return max(marks) + self.lease + self.WAITING_REDELIVERY_GAP

    def waiting_expired(self, part: Partition, now: datetime | None = None) -> bool:
        """True when ``part`` is ``waiting`` and nothing re-checked it before its waiting expired."""
        if part.status != WAITING:
            return False
        until = self.waiting_until(part)
        return until is None or until <= (now or self.clock())

    def waiting_since(self, processor: str, day: date | str) -> datetime | None:
        """When the partition began waiting: the start of the oldest run of its latest unbroken
        streak of ``waiting`` runs in run history (None when its latest run is not waiting)."""
        since = None
        for run in self.runs(processor, day, limit=1000):
            if run.get("status") != WAITING:
                break
            since = run.get("started_at") or since
        return since

    def repair_waiting(self, processor: str, day: date | str, run_id: str, key: str, limit: int,
                       give_up_reason: str) -> tuple[str, int]:
        """The sweeper's compare-and-set on an expired ``waiting`` partition (still recorded by run
        ``run_id``): ``("retrigger", n)`` counts the n-th repair of this trigger lineage ``key`` and
        re-arms the waiting for one more expiry period (the caller then re-triggers it);
        ``("gave-up", n)`` after ``limit`` repairs records it ``failed`` (permanent) with
        ``give_up_reason``; ``("moved", 0)`` when it is no longer that expired waiting (someone
        else moved it on, or another sweeper repaired it first)."""
        ref = self.partition_ref(processor, day)
        for _ in range(_CAS_ATTEMPTS):
            self.ops += 1
            snap = ref.get(timeout=FIRESTORE_TIMEOUT)
            cur = snap.to_dict() if snap.exists else None
            part = Partition.from_doc(processor, _iso(day), cur)
            now = self.clock()
            if not cur or part.run_id != run_id or not self.waiting_expired(part, now):
                return ("moved", 0)
            previous = cur.get("waiting_repairs") or {}
            count = int(previous.get("count", 0)) + 1 if previous.get("key") == key else 1
            batch = self.db.batch()
            option = self.db.write_option(last_update_time=snap.update_time)
            if count > limit:
                outcome = ("gave-up", count - 1)
                batch.update(ref, {"status": FAILED.value, "transient": False, "error": give_up_reason,
                                   "lease_expires_at": None, "finished_at": now, "updated_at": now,
                                   "waiting_repairs": {"key": key, "count": count - 1}}, option=option)
                batch.set(self._col("runs").document(run_id), {"run_id": run_id, "status": FAILED.value,
                                                               "error": give_up_reason, "finished_at": now}, merge=True)
            else:
                outcome = ("retrigger", count)
                batch.update(ref, {"waiting_repairs": {"key": key, "count": count}, "waiting_rearmed_at": now},
                             option=option)
            try:
                self.ops += 1
                batch.commit(timeout=FIRESTORE_TIMEOUT)
                return outcome
            except (gexc.FailedPrecondition, gexc.Aborted, gexc.NotFound):
                continue
        raise TransientError(f"could not repair the waiting {processor} {_iso(day)}: too much contention")


def _status(value: Any) -> str:
    """A stored status as the vocabulary's member (an unknown value is kept as it is, never dropped)."""
    try:
        return Status(value or Status.MISSING)
    except ValueError:
        return str(value)


def new_run_id(processor: str, day: date | str) -> str:
    return f"{processor}-{_iso(day)}-{uuid.uuid4().hex[:10]}"


def _iso(day: date | str) -> str:
    return day if isinstance(day, str) else day.isoformat()
