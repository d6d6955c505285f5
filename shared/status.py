"""What happened to a date: per phase and processor status, and waiting on it without sleeping.

``date_status`` reads every partition of the date in one batched Firestore read plus the trigger
claims. ``wait_for_phase`` watches the date's partitions with a Firestore real-time listener and
returns as soon as the phase (or a phase before it) reaches a final state.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import date
from typing import Any


from .app import App
from .state import Status
from .tracking import BLOCKED, FAILED, RUNNING, SKIPPED, WAITING, Partition

COMPLETE, PARTIAL, MISSING = Status.COMPLETE, Status.PARTIAL, Status.MISSING
# A Firestore listener can drop (the emulator's watch stream occasionally fails to decode under
# load); waits then re-read state this often instead of sleeping until their timeout.
_RECHECK_SECONDS = 2.0


def phase_state(states: list[Partition], generation: int, now) -> str:
    """Roll partition states up to a phase state (complete, failed, blocked, waiting, running, skipped,
    partial, missing)."""
    if states and all(s.done_for(generation) for s in states):
        return COMPLETE
    if any(s.status == BLOCKED for s in states):
        return BLOCKED
    if any(s.status == FAILED and not s.raw.get("transient") for s in states):
        return FAILED
    if any(s.status == WAITING for s in states):
        return WAITING
    if any(s.status == RUNNING or (s.status == FAILED and s.raw.get("transient")) for s in states):
        return RUNNING
    if states and all(s.status == SKIPPED for s in states):
        return SKIPPED
    if all(s.status == MISSING for s in states):
        return MISSING
    return PARTIAL


def date_status(app: App, day: date) -> dict[str, Any]:
    """``{"date", "phases": {"2": {"status", "generation", "triggered_next", "processors": {...}}}}``."""
    pipeline, tracker = app.pipeline, app.tracker
    names = [p.name for p in pipeline.processors]
    states = tracker.partitions(names, [day])
    now = app.clock()
    out: dict[str, Any] = {"date": day.isoformat(), "expected": pipeline.calendar.is_expected(day), "phases": {}}
    if not out["expected"]:
        out["note"] = f"no games: {pipeline.calendar.reason_not_expected(day)}"
    for ph in pipeline.phases:
        procs = pipeline.processors_of(ph.number)
        ps = [states[(p.name, day.isoformat())] for p in procs]
        gen = max((s.generation for s in ps if s.status != MISSING), default=0)
        claim = tracker.claim(ph.number, day, gen) if ph.next is not None else None
        out["phases"][str(ph.number)] = {
            "name": ph.name,
            "status": phase_state(ps, gen, now),
            "generation": gen,
            "triggered_next": bool(claim and claim.get("status") == "published"),
            "next_phase": ph.next,
            "trigger_claim": (claim or {}).get("status"),
            "processors": {
                s.processor: {
                    "status": s.status, "record_count": s.record_count, "run_id": s.run_id or None,
                    "duration_s": s.duration_s, "generation": s.generation, "attempts": s.attempts,
                    "error": s.error or None, "updated_at": s.raw.get("updated_at"),
                    **({"resolution": (s.blocked or {}).get("resolution")} if s.blocked else {}),
                } for s in ps
            },
        }
    return out


def progress_line(status: dict[str, Any], chain: list[int]) -> str:
    """``phase 2 complete (2/2) | phase 3 running (1/3) | phase 4 missing (0/4)``."""
    parts = []
    for n in chain:
        ph = status["phases"][str(n)]
        done = sum(1 for p in ph["processors"].values() if p["status"] == Status.SUCCESS)
        parts.append(f"phase {n} {ph['status']} ({done}/{len(ph['processors'])})")
    return " | ".join(parts)


@dataclass(frozen=True)
class WaitResult:
    code: int  # 0 complete/skipped, 1 failed/blocked, 2 timeout
    status: dict[str, Any]
    reason: str


def _verdict(status: dict[str, Any], chain: list[int], phase: int, since: Any = None) -> tuple[int, str] | None:
    for n in chain:
        ph = status["phases"][str(n)]
        st = ph["status"]
        if since is not None and st in (BLOCKED, FAILED) and any(
                p["status"] in (BLOCKED, FAILED) and (p.get("updated_at") is None or p["updated_at"] < since)
                for p in ph["processors"].values()):
            return None  # an outcome from before the trigger we wait for: not its verdict yet
        if st in (BLOCKED, FAILED):
            return 1, f"phase {n} is {st}"
        if st == SKIPPED:
            return 0, f"phase {n} skipped ({status.get('note', 'no games')})"
    final = status["phases"][str(phase)]["status"]
    if final == COMPLETE:
        return 0, f"phase {phase} complete"
    return None


def wait_for_phase(app: App, day: date, phase: int, timeout: float, since: Any = None,
                   on_change: Any = None) -> WaitResult:
    """Wait until ``phase`` is complete for ``day`` (0), it or an earlier phase failed/blocked (1), or timeout (2).

    Woken by a Firestore listener on the date's partitions: no polling sleeps. With ``since`` (the
    time a re-trigger was published), failures recorded before it are not taken as the verdict.
    """
    pipeline = app.pipeline
    chain = [n for n in [p.number for p in pipeline.phases] if n <= phase and phase in pipeline.downstream_phases(n)]
    changed = threading.Event()
    watch = app.tracker.watch_partitions("data_date", day.isoformat(), lambda _parts: changed.set())
    deadline = time.monotonic() + timeout
    try:
        while True:
            changed.clear()
            status = date_status(app, day)
            if on_change is not None:
                on_change(progress_line(status, chain))
            verdict = _verdict(status, chain, phase, since)
            if verdict:
                return WaitResult(verdict[0], status, verdict[1])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return WaitResult(2, status, f"timed out after {timeout:.0f} s waiting for phase {phase}")
            # Woken by the listener; the bounded re-check only matters if the listener stream broke.
            changed.wait(min(remaining, _RECHECK_SECONDS))
    finally:
        watch.unsubscribe()
