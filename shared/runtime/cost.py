"""What BigQuery work costs: bytes processed, bytes billed and slot time, per job, per run, per range.

Every job Cascade sends reports its statistics (``totalBytesProcessed``, ``totalBytesBilled``,
``totalSlotMs``); ``Warehouse`` adds them up per process (``Warehouse.stats``) and per run (the run's
job scope), and the runner records a run's sum with the run (``cost`` in the partition and run-history
documents). ``cascade history``, the status page and the backfill summary show them. The local engine
(bqemulator) reports 0 bytes processed and no billed bytes or slot time: the numbers are zeros there,
read through the same code.

``estimate_range`` is the dry-run estimate of ``cascade backfill --dry-run``: one BigQuery dry run
(``QueryJobConfig(dry_run=True)``, free) of the exact MERGE of one date per SQL processor, times the
dates the plan would run. The local engine answers every dry run with 0 bytes, so there the estimate
says it cannot be made instead of printing a misleading 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

_FIELDS = ("jobs", "bytes_processed", "bytes_billed", "slot_ms")


@dataclass
class JobCost:
    """The summed statistics of some BigQuery jobs."""

    jobs: int = 0
    bytes_processed: int = 0
    bytes_billed: int = 0
    slot_ms: int = 0

    def add(self, other: "JobCost") -> "JobCost":
        for name in _FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def to_dict(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in _FIELDS}

    @staticmethod
    def from_dict(data: dict[str, Any] | None) -> "JobCost":
        data = data or {}
        return JobCost(**{name: int(data.get(name) or 0) for name in _FIELDS})

    def render(self) -> str:
        """``2 jobs, 1.5 MB processed, 10.0 MB billed, 340 slot-ms``."""
        return (f"{self.jobs} job{'' if self.jobs == 1 else 's'}, {human_bytes(self.bytes_processed)} processed, "
                f"{human_bytes(self.bytes_billed)} billed, {self.slot_ms} slot-ms")


def of_job(job: Any) -> JobCost:
    """A finished (or cancelled) job's statistics; a statistic the engine does not report counts 0."""
    def number(name: str) -> int:
        try:
            return int(getattr(job, name, None) or 0)
        except (TypeError, ValueError):
            return 0
    return JobCost(1, number("total_bytes_processed"), number("total_bytes_billed"), number("slot_millis"))


def human_bytes(n: int | float | None) -> str:
    n = float(n or 0)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover


def engine_estimates_bytes(client: Any) -> bool:
    """True when the BigQuery endpoint is BigQuery itself: its dry runs report the bytes a query would
    process. The local engine (any other endpoint) reports 0 for every dry run."""
    base = str(getattr(getattr(client, "_connection", None), "API_BASE_URL", "") or "")
    return base.startswith("https://") and base.rstrip("/").endswith("googleapis.com")


@dataclass
class ProcessorEstimate:
    processor: str
    dates: int  # partitions of this processor the plan would run
    sample_date: str = ""
    bytes_per_date: int | None = None  # from the dry run; None: not estimated
    note: str = ""  # why it was not estimated

    @property
    def total(self) -> int | None:
        return None if self.bytes_per_date is None else self.bytes_per_date * self.dates


@dataclass
class BytesEstimate:
    """``backfill --dry-run``'s bytes estimate of a range: per processor, one dry-run date."""

    supported: bool
    engine_note: str = ""
    processors: list[ProcessorEstimate] = field(default_factory=list)

    @property
    def total(self) -> int | None:
        known = [p.total for p in self.processors if p.total is not None]
        return sum(known) if known else None

    def to_dict(self) -> dict[str, Any]:
        return {"supported": self.supported, "note": self.engine_note or None, "total_bytes": self.total,
                "processors": [{"processor": p.processor, "dates": p.dates, "sample_date": p.sample_date or None,
                                "bytes_per_date": p.bytes_per_date, "total_bytes": p.total, "note": p.note or None}
                               for p in self.processors]}

    def render(self) -> str:
        if not self.supported:
            return f"estimated bytes processed: not estimated - {self.engine_note}"
        lines = [f"estimated bytes processed: {human_bytes(self.total) if self.total is not None else 'unknown'} "
                 f"(one dry run per processor, times its dates; bytes billed are at least this, 10 MB minimum "
                 f"per job)"]
        for p in self.processors:
            lines.append(f"  {p.processor}: " + (f"{human_bytes(p.bytes_per_date)} per date (dry run of "
                                                  f"{p.sample_date}) x {p.dates} = {human_bytes(p.total)}"
                                                  if p.total is not None else f"not estimated ({p.note})"))
        return "\n".join(lines)


LOCAL_ENGINE_NOTE = ("the local BigQuery engine (bqemulator) answers every dry run with 0 bytes, so it cannot "
                     "estimate; run the dry run against BigQuery for an estimate")


def estimate_range(warehouse: Any, plan: Any) -> BytesEstimate:
    """Dry-run one date of each processor the plan would run (its exact MERGE; SQL processors only:
    the rows of loads, exports and Python processors are computed outside BigQuery) and multiply."""
    if not engine_estimates_bytes(warehouse.client):
        return BytesEstimate(False, LOCAL_ENGINE_NOTE)
    dates: dict[str, list[date]] = {}
    for node in plan.nodes:
        dates.setdefault(node.processor, []).append(node.day if isinstance(node.day, date)
                                                    else date.fromisoformat(str(node.day)))
    out = BytesEstimate(True)
    for proc in plan.processors:
        days = sorted(dates.get(proc.name, []))
        if not days:
            continue
        est = ProcessorEstimate(proc.name, len(days), days[-1].isoformat())
        if proc.kind != "sql":
            est.note = f"a {proc.kind} processor's rows come from outside BigQuery; a dry run cannot size them"
        else:
            try:
                est.bytes_per_date = warehouse.dry_run_bytes(proc, days[-1])
            except Exception as exc:  # noqa: BLE001 - an estimate never fails the dry run
                est.note = f"dry run failed: {type(exc).__name__}: {str(exc)[:200]}"
        out.processors.append(est)
    return out
