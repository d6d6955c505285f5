"""Run history: ``runs/{run_id}``, one document per attempt, never overwritten by later runs.

A run's record is created with its lease and completed with its outcome, in the same atomic commit
as the partition change (``partitions``); this module reads the history and writes the records that
change no partition (a trigger that had nothing to do, a run that lost its lease). Alert-once
markers (``alerts/{id}``) are here too: a record of something that happened once.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any, Iterable

from cascade.errors import TransientError
from cascade.state.scope import Scope, iso, new_run_id
from cascade.state.status import Status
from cascade.state.store import Write


class History:
    """The run history (and alert-once markers) of one pipeline."""

    def __init__(self, scope: Scope) -> None:
        self.s = scope

    def runs(self, processor: str | None = None, day: date | str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Run history, newest first."""
        where = [("processor", "==", processor)] if processor else []
        if day:
            where.append(("data_date", "==", iso(day)))
        rows = self.s.store.query(self.s.col("runs"), where)
        rows.sort(key=lambda r: r.get("started_at") or datetime.min.replace(tzinfo=timezone.utc), reverse=True)
        return rows[:limit]

    def waiting_since(self, processor: str, day: date | str) -> datetime | None:
        """When the partition began waiting: the start of the oldest run of its latest unbroken
        streak of ``waiting`` runs in run history (None when its latest run is not waiting)."""
        since = None
        for run in self.runs(processor, day, limit=1000):
            if run.get("status") != Status.WAITING:
                break
            since = run.get("started_at") or since
        return since

    def record_answer(self, phase: int, day: date | str, processors: Iterable[str], status: str, answer: str,
                      context: dict[str, Any] | None = None) -> None:
        """Record in run history that a trigger had nothing to do (e.g. "already complete and
        fresh"), one entry per processor it named, without touching the partitions."""
        now = self.s.clock()
        writes = []
        for name in processors:
            run_id = new_run_id(name, day)
            writes.append(Write("set", self.s.col("runs"), run_id, {
                "run_id": run_id, "pipeline": self.s.pipeline.name, "phase": phase, "processor": name,
                "data_date": iso(day), "status": str(status), "error": answer[:1000], "started_at": now,
                "finished_at": now, "duration_s": 0.0, "record_count": None, **(context or {})}))
        if writes and not self.s.store.commit(writes):
            raise TransientError(f"could not record the answer for phase {phase} {iso(day)}: aborted")

    def mark_run(self, run_id: str, status: str, error: str) -> None:
        """Close a run's history entry that could not record its result (e.g. its lease was lost)."""
        self.s.store.set(self.s.col("runs"), run_id,
                         {"run_id": run_id, "status": status, "error": error, "finished_at": self.s.clock()}, merge=True)

    def create_once(self, kind: str, doc_id: str, data: dict[str, Any]) -> bool:
        """Create ``kind/doc_id`` unless it exists (alert-once markers); True for the creator."""
        return self.s.store.create(self.s.col(kind), doc_id, {**data, "created_at": self.s.clock()})
