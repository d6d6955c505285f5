"""Partition state: one document per partition (``partitions/{processor}__{date}``) and the lease
a run takes on it.

A partition's status is one of running, waiting, success, failed, blocked, skipped (``missing``
when there is no document), with its generation, current run id, lease expiry, write fence,
attempts, record count and error or blocked reason. One document per partition, so processors that
finish concurrently never contend on a shared document (Firestore sustains about one write per
second per document).

Every change is compare-and-set on the document's version (its update time), so two deliveries of one trigger can
never both take a live lease, and a run whose lease was taken over cannot record its result over
the new run's. A run's history record (``runs/{run_id}``) is written in the same atomic batch as the
partition change it describes.

A ``waiting`` partition expires like a lease: alive while redeliveries re-check it, repaired by the
sweeper (re-triggered, bounded) when nothing did for the lease plus Pub/Sub's longest retry backoff.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Callable, Iterable

from cascade.errors import LeaseLostError, TransientError
from cascade.runtime import hooks as faults
from cascade.state.scope import CAS_ATTEMPTS, Scope, iso, new_run_id
from cascade.state.status import Status
from cascade.state.store import Doc, Write


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
        return self.status == Status.RUNNING and self.lease_expires_at is not None and self.lease_expires_at > now

    @property
    def fence(self) -> int:
        return int(self.raw.get("fence") or 0)

    def done_for(self, generation: int) -> bool:
        return self.status == Status.SUCCESS and self.generation >= generation

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
    """Outcome of asking to run a partition: ``run`` (lease taken), ``done``, ``superseded`` or ``busy``."""

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
        return prev is not None and prev.status == Status.RUNNING and self.attempt > 1


def next_attempt(current: Partition, generation: int, trigger_id: str) -> int:
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
    if current.status == Status.MISSING or current.generation != generation:
        return 1
    if current.status == Status.RUNNING:
        return max(current.attempts, 0) + 1 if current.raw.get("trigger_id") == trigger_id[:200] else 1
    if current.status == Status.FAILED and current.raw.get("transient"):
        if current.raw.get("expired"):
            return current.attempts + 1
        if current.raw.get("trigger_id") == trigger_id:
            return max(current.attempts, 1) if current.raw.get("quota") else current.attempts + 1
    return 1


def _status(value: Any) -> str:
    """A stored status as the vocabulary's member (an unknown value is kept as it is, never dropped)."""
    try:
        return Status(value or Status.MISSING)
    except ValueError:
        return str(value)


class Partitions:
    """Reads and compare-and-set changes of the partitions of one pipeline."""

    # A ``waiting`` partition is re-checked by every redelivery of its trigger, and each re-check
    # records it again (``finished_at``). Like a lease it is alive while re-checked: it expires when
    # nothing re-checked it for the lease length plus Pub/Sub's longest retry backoff (600 s, the
    # most a push subscription waits between two deliveries) - its messages were dead-lettered or lost.
    WAITING_REDELIVERY_GAP = timedelta(seconds=600)

    def __init__(self, scope: Scope) -> None:
        self.s = scope

    @property
    def _col(self) -> str:
        return self.s.col("partitions")

    @staticmethod
    def doc_id(processor: str, day: date | str) -> str:
        return f"{processor}__{iso(day)}"

    def _run_write(self, run_id: str, data: dict[str, Any], merge: bool) -> Write:
        return Write("set", self.s.col("runs"), run_id, {"run_id": run_id, **data}, merge=merge)

    # ------------------------------------------------------------------ reads
    def partitions(self, processors: Iterable[str], days: Iterable[date | str]) -> dict[tuple[str, str], Partition]:
        """States of every (processor, date) asked for, in one batched read."""
        days = [iso(d) for d in days]
        return self.by_keys([(p, d) for p in processors for d in days])

    def by_keys(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Partition]:
        """States of exactly the (processor, ISO date) keys asked for, in one batched read."""
        keys = list(dict.fromkeys((p, iso(d)) for p, d in keys))
        found = self.s.store.get_all(self._col, [self.doc_id(p, d) for p, d in keys])
        return {(p, d): Partition.from_doc(p, d, found[self.doc_id(p, d)].data) for p, d in keys}

    def latest_data_date(self) -> date | None:
        """The newest date any partition of the pipeline has (None when nothing ran), from one query."""
        for doc in self.s.store.query(self._col, order_by="data_date", descending=True, limit=1):
            if doc.get("data_date"):
                return date.fromisoformat(doc["data_date"])
        return None

    def where(self, field_name: str, op: str, value: Any) -> list[Partition]:
        """Partitions matching one filter (e.g. status == running), from a single query."""
        return [Partition.from_doc(d.get("processor", ""), d.get("data_date", ""), d)
                for d in self.s.store.query(self._col, [(field_name, op, value)])]

    def watch(self, field_name: str, value: Any, on_change: Callable[[list[Partition]], None]) -> Any:
        """A listener on the partitions whose ``field_name`` equals ``value`` (e.g. a backfill's
        correlation id): ``on_change`` gets the changed partitions. Returns the watch
        (``.unsubscribe()``). Listeners can drop on the emulator: callers re-read on a bounded wait."""
        def changed(docs: list[dict[str, Any]]) -> None:
            on_change([Partition.from_doc(d.get("processor", ""), d.get("data_date", ""), d) for d in docs])
        return self.s.store.watch(self._col, [(field_name, "==", value)], changed)

    # ------------------------------------------------------------------ lifecycle
    def begin(self, processor: str, phase: int, day: date, generation: int, run_id: str,
              context: dict[str, Any] | None = None, trigger_id: str = "",
              inputs: Iterable[tuple[str, str]] = ()) -> Begin:
        """Take the partition's lease for ``run_id`` unless it is done, superseded or held by a live run.

        ``done``: already succeeded for this generation (or a newer one) - dedupe on the business key.
        ``superseded``: the partition moved to a newer generation than this trigger's.
        ``busy``: another run holds a live lease - of any generation: a newer generation waits for a
        live older run instead of running beside it.

        Taking the lease increments the partition's ``fence``: every write of this run carries it,
        and a run whose fence is older than the partition's current one cannot change its rows.
        The partition update and the run-history record are one atomic commit. ``inputs`` (keys of
        the partitions the run will read) are read in the same batched read as the partition: the
        run records what it read (``Begin.inputs``) without a second round trip.
        """
        own = self.doc_id(processor, day)
        keys = [k for k in dict.fromkeys((p, iso(d)) for p, d in inputs) if k != (processor, iso(day))]
        for _ in range(CAS_ATTEMPTS):
            now = self.s.clock()
            docs = self.s.store.get_all(self._col, [own, *(self.doc_id(p, d) for p, d in keys)])
            snap = docs[own]
            current = Partition.from_doc(processor, iso(day), snap.data)
            if snap.exists:
                if generation < current.generation:
                    return Begin(Status.SUPERSEDED, current)
                if current.done_for(generation):
                    return Begin(Status.DONE, current)
                if current.lease_alive(now):
                    return Begin(Status.BUSY, current)
            attempt = next_attempt(current, generation, trigger_id)
            fence = current.fence + 1
            doc = {
                "pipeline": self.s.pipeline.name, "phase": phase, "processor": processor,
                "data_date": iso(day), "generation": generation, "status": Status.RUNNING.value, "run_id": run_id,
                "attempts": attempt, "fence": fence, "trigger_id": trigger_id[:200],
                "started_at": now, "finished_at": None, "duration_s": None,
                "lease_expires_at": now + self.s.lease, "record_count": None, "error": "", "blocked": None,
                "checks": None, "transient": False, "expired": False, "quota": False,
                "updated_at": now, **(context or {}),
            }
            lease = (Write("update", self._col, own, doc, snap.version) if snap.exists
                     else Write("create", self._col, own, doc))
            if not self.s.store.commit([lease, self._run_write(run_id, {**doc, "attempt": attempt}, merge=False)],
                                       before=lambda: faults.maybe_fail("firestore_aborted", processor, iso(day))):
                continue  # someone else changed it between our read and write: look again
            read = {(p, d): Partition.from_doc(p, d, docs[self.doc_id(p, d)].data) for p, d in keys}
            return Begin(Status.RUN, Partition.from_doc(processor, iso(day), doc), attempt, fence, current, read)
        raise TransientError(f"could not take the lease on {processor} {iso(day)}: too much contention",
                             processor=processor, date=iso(day))

    def heartbeat(self, processor: str, day: date, run_id: str) -> bool:
        """Extend the lease while the run is alive; False when the lease was lost to another run."""
        def change(cur: dict[str, Any], now: datetime) -> dict[str, Any]:
            return {"lease_expires_at": now + self.s.lease, "updated_at": now}
        try:
            self._update_own(processor, day, run_id, change)
            return True
        except LeaseLostError:
            return False

    def finish(self, processor: str, day: date, run_id: str, status: str, *, record_count: int | None = None,
               error: str = "", blocked: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Partition:
        """Record the run's outcome, only if this run still owns the partition (else LeaseLostError).

        The partition and its run-history record are written in one atomic commit."""
        def change(cur: dict[str, Any], now: datetime) -> dict[str, Any]:
            started = cur.get("started_at") or now
            return {"status": str(status), "record_count": record_count, "error": error, "blocked": blocked,
                    "finished_at": now, "duration_s": round((now - started).total_seconds(), 3),
                    "lease_expires_at": None, "updated_at": now, **(extra or {})}

        def history(doc: dict[str, Any]) -> dict[str, Any]:
            return {k: doc.get(k) for k in ("status", "record_count", "error", "blocked", "finished_at",
                                            "duration_s")} | (extra or {})
        doc = self._update_own(processor, day, run_id, change, history)
        return Partition.from_doc(processor, iso(day), doc)

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

    def expire(self, processor: str, day: date | str, run_id: str, reason: str) -> bool:
        """Mark a run whose lease expired as failed (transient: to be re-run); False if it moved on.
        The crash counts as a failed attempt (``expired``), so a partition that kills its process
        every time is given up on after ``max_attempts`` instead of being re-triggered forever.
        Only a run still ``running`` is expired: a second sweeper finds it moved on."""
        def change(cur: dict[str, Any], now: datetime) -> dict[str, Any]:
            if cur.get("status") != Status.RUNNING:
                raise LeaseLostError(f"run {run_id} of {processor} {iso(day)} is no longer running")
            return {"status": Status.FAILED.value, "error": reason, "transient": True, "expired": True,
                    "lease_expires_at": None, "finished_at": now, "updated_at": now}
        try:
            self._update_own(processor, day, run_id, change,
                             lambda doc: {"status": Status.FAILED.value, "error": reason,
                                          "finished_at": doc["finished_at"]})
        except LeaseLostError:
            return False
        return True

    def _update_own(self, processor: str, day: date | str, run_id: str,
                    change: Callable[[dict[str, Any], datetime], dict[str, Any]],
                    history: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
        """Compare-and-set ``change`` on a partition this run owns; ``history`` (optional) gives the
        fields of the run's history record, written in the same atomic commit."""
        own = self.doc_id(processor, day)
        for _ in range(CAS_ATTEMPTS):
            snap: Doc = self.s.store.get(self._col, own)
            cur = snap.data
            if not cur or cur.get("run_id") != run_id:
                raise LeaseLostError(
                    f"run {run_id} of {processor} {iso(day)} lost its lease to run {cur.get('run_id') if cur else None}",
                    processor=processor, date=iso(day), run_id=run_id)
            fields = change(cur, self.s.clock())
            writes = [Write("update", self._col, own, fields, snap.version)]
            if history is not None:
                writes.append(self._run_write(run_id, history({**cur, **fields}), merge=True))
            if self.s.store.commit(writes):
                return {**cur, **fields}
        raise TransientError(f"could not update {processor} {iso(day)}: too much contention")

    # ------------------------------------------------------------------ waiting expiry
    def waiting_until(self, part: Partition) -> datetime | None:
        """Until when a ``waiting`` partition is alive (None for any other status): its last
        re-check (or the sweeper's last re-trigger of it) plus the lease and the longest redelivery gap."""
        if part.status != Status.WAITING:
            return None
        marks = [t for t in (part.finished_at, part.raw.get("waiting_rearmed_at"), part.started_at) if t is not None]
        if not marks:
            return None
        return max(marks) + self.s.lease + self.WAITING_REDELIVERY_GAP

    def waiting_expired(self, part: Partition, now: datetime | None = None) -> bool:
        """True when ``part`` is ``waiting`` and nothing re-checked it before its waiting expired."""
        if part.status != Status.WAITING:
            return False
        until = self.waiting_until(part)
        return until is None or until <= (now or self.s.clock())

    def repair_waiting(self, processor: str, day: date | str, run_id: str, key: str, limit: int,
                       give_up_reason: str) -> tuple[str, int]:
        """The sweeper's compare-and-set on an expired ``waiting`` partition (still recorded by run
        ``run_id``): ``("retrigger", n)`` counts the n-th repair of this trigger lineage ``key`` and
        re-arms the waiting for one more expiry period (the caller then re-triggers it);
        ``("gave-up", n)`` after ``limit`` repairs records it ``failed`` (permanent) with
        ``give_up_reason``; ``("moved", 0)`` when it is no longer that expired waiting (someone
        else moved it on, or another sweeper repaired it first)."""
        own = self.doc_id(processor, day)
        for _ in range(CAS_ATTEMPTS):
            snap = self.s.store.get(self._col, own)
            cur = snap.data
            part = Partition.from_doc(processor, iso(day), cur)
            now = self.s.clock()
            if not cur or part.run_id != run_id or not self.waiting_expired(part, now):
                return ("moved", 0)
            previous = cur.get("waiting_repairs") or {}
            count = int(previous.get("count", 0)) + 1 if previous.get("key") == key else 1
            if count > limit:
                outcome = ("gave-up", count - 1)
                writes = [Write("update", self._col, own, {
                    "status": Status.FAILED.value, "transient": False, "error": give_up_reason,
                    "lease_expires_at": None, "finished_at": now, "updated_at": now,
                    "waiting_repairs": {"key": key, "count": count - 1}}, snap.version),
                    self._run_write(run_id, {"status": Status.FAILED.value, "error": give_up_reason,
                                             "finished_at": now}, merge=True)]
            else:
                outcome = ("retrigger", count)
                writes = [Write("update", self._col, own, {"waiting_repairs": {"key": key, "count": count},
                                                           "waiting_rearmed_at": now}, snap.version)]
            if self.s.store.commit(writes):
                return outcome
        raise TransientError(f"could not repair the waiting {processor} {iso(day)}: too much contention")
