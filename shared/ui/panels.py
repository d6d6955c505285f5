"""The side panels of the status page: active backfills, dead letters and rejected messages, coverage.

* ``active_backfills``: the live backfill leases (one batched read of ``backfill_leases``), grouped
  by holder, each with its progress computed from partition state (one batched read of its
  processors x expected dates): done / failed (failed + blocked) / remaining, the rate of
  partitions finished since the lease was taken, and the ETA.
* ``message_counts``: per phase, dead letters waiting on ``<topic>-dlq`` (peeked and released at
  once, as ``cascade dlq list`` does; at most ``DLQ_PEEK`` counted) and rejected messages.
* ``table_coverage``: per output table, expected dates present over the page's range (one query
  per table, ``cascade.backfill.validate.coverage``).

Each panel reports its own error instead of failing the page (``Panel.error``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from cascade.runtime.app import App
from cascade.runtime.durations import duration
from cascade.state.status import Status

# Dead letters counted per phase at most (each look pulls and releases them).
DLQ_PEEK = 100


@dataclass(frozen=True)
class Backfill:
    holder: str  # host pid
    command: str
    start: str
    end: str
    processors: tuple[str, ...]
    started_at: datetime | None
    expires_at: datetime | None
    total: int
    done: int
    failed: int
    remaining: int
    rate: float  # partitions finished per second since the lease was taken
    eta: str

    @property
    def pct(self) -> float:
        return 100.0 * (self.done + self.failed) / self.total if self.total else 100.0


@dataclass(frozen=True)
class PhaseMessages:
    phase: int
    title: str
    dead_letters: int | None  # None when the subscription could not be read
    dead_letters_capped: bool
    rejected: int
    error: str = ""


@dataclass
class Panel:
    """A panel's rows, or the error that kept it from being read."""

    rows: list[Any] = field(default_factory=list)
    error: str = ""


def active_backfills(app: App) -> Panel:
    from cascade.backfill.lease import holders

    try:
        leases = holders(app, [p.name for p in app.pipeline.processors])
        by_holder: dict[str, list[dict[str, Any]]] = {}
        for doc in leases.values():
            by_holder.setdefault(str(doc.get("holder_id")), []).append(doc)
        rows = [_backfill(app, docs) for docs in by_holder.values()]
    except Exception as exc:  # noqa: BLE001 - shown in the panel, the page keeps working
        return Panel(error=f"could not read backfill leases: {exc}")
    rows.sort(key=lambda b: (b.started_at is None, b.started_at))
    return Panel(rows)


def _backfill(app: App, docs: list[dict[str, Any]]) -> Backfill:
    first = docs[0]
    procs = tuple(sorted({name for d in docs for name in (d.get("processors") or [d.get("processor")])}))
    start, end = date.fromisoformat(first["start"]), date.fromisoformat(first["end"])
    days = app.pipeline.calendar.expected_dates(start, end)
    states = app.tracker.partitions(procs, days)
    done = sum(1 for s in states.values() if s.status == Status.SUCCESS)
    failed = sum(1 for s in states.values() if s.status in (Status.FAILED, Status.BLOCKED))
    total = len(states)
    remaining = total - done - failed
    started = first.get("started_at")
    now = app.clock()
    finished_since = sum(1 for s in states.values() if s.status in (Status.SUCCESS, Status.FAILED, Status.BLOCKED)
                         and s.finished_at is not None and started is not None and s.finished_at >= started)
    elapsed = (now - started).total_seconds() if started is not None else 0.0
    rate = finished_since / elapsed if elapsed > 0 else 0.0
    eta = "0s" if not remaining else duration(remaining / rate) if rate > 0 else "?"
    return Backfill(holder=f"{first.get('host')} pid {first.get('pid')}", command=str(first.get("command") or ""),
                    start=first["start"], end=first["end"], processors=procs, started_at=started,
                    expires_at=max((d.get("expires_at") for d in docs if d.get("expires_at")), default=None),
                    total=total, done=done, failed=failed, remaining=remaining, rate=rate, eta=eta)


def message_counts(app: App) -> Panel:
    from cascade.ops.deadletters import list_dead_letters

    try:
        rejected = app.tracker.rejected_counts()
    except Exception as exc:  # noqa: BLE001
        return Panel(error=f"could not read rejected messages: {exc}")
    rows = []
    for ph in app.pipeline.phases:
        try:
            n: int | None = len(list_dead_letters(app, ph.number, max_messages=DLQ_PEEK))
            err = ""
        except Exception as exc:  # noqa: BLE001 - e.g. the dead-letter subscription does not exist
            n, err = None, f"{type(exc).__name__}: {str(exc)[:160]}"
        rows.append(PhaseMessages(ph.number, ph.title, n, n is not None and n >= DLQ_PEEK, rejected.get(ph.number, 0), err))
    return Panel(rows)


def table_coverage(app: App, start: date, end: date) -> Panel:
    from cascade.backfill.validate import coverage

    try:
        return Panel(coverage(app, start, end))
    except Exception as exc:  # noqa: BLE001
        return Panel(error=f"could not read coverage: {exc}")
