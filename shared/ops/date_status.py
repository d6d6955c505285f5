"""What happened to a date: per phase and processor status, and waiting on it without sleeping.

``date_status`` reads every partition of the date in one batched Firestore read plus the trigger
claims. ``wait_for_phase`` watches the date's partitions with a Firestore real-time listener and
returns as soon as the phase (or a phase before it) reaches a final state.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Container

from cascade.runtime import recovery
from cascade.runtime.app import App
from cascade.runtime.handoff import declared_skips
from cascade.state.freshness import Freshness
from cascade.state.status import Status
from cascade.state.tracker import Partition

COMPLETE, PARTIAL, MISSING = Status.COMPLETE, Status.PARTIAL, Status.MISSING
# A Firestore listener can drop (the emulator's watch stream occasionally fails to decode under
# load); waits then re-read state this often instead of sleeping until their timeout.
_RECHECK_SECONDS = 2.0


def phase_state(states: list[Partition], generation: int, now, stale: int = 0,
                declared: Container[str] = frozenset()) -> str:
    """Roll partition states up to a phase state (complete, stale, failed, blocked, waiting, running,
    skipped, partial, missing). Partitions of one phase may be at different generations (an intent
    reruns only what needed it): the phase is complete when every one succeeded - a processor in
    ``declared`` (skipped by declaration: ``handoff.declared_skips``) counts as done, as the hand-off
    counts it; ``stale`` counts the succeeded ones that are stale."""
    if states and all(s.status == Status.SUCCESS or s.processor in declared for s in states):
        return Status.STALE if stale else COMPLETE
    if any(s.status == Status.BLOCKED for s in states):
        return Status.BLOCKED
    if any(s.status == Status.FAILED and not s.raw.get("transient") for s in states):
        return Status.FAILED
    if any(s.status == Status.WAITING for s in states):
        return Status.WAITING
    if any(s.status == Status.RUNNING or (s.status == Status.FAILED and s.raw.get("transient")) for s in states):
        return Status.RUNNING
    if states and all(s.status == Status.SKIPPED for s in states):
        return Status.SKIPPED
    if all(s.status == MISSING for s in states):
        return MISSING
    return PARTIAL


def begun_at(states: list[Partition], generation: int) -> bool:
    """True when some partition of a phase has begun at ``generation`` or a newer one (it was
    picked up: run, waited, blocked, skipped or superseded - anything recorded counts)."""
    return any(s.status != MISSING and s.generation >= generation for s in states)


def triggered_not_started(rollup: str, states: list[Partition], claim: dict[str, Any] | None) -> bool:
    """True when the phase before this one published its trigger (``claim``, at its generation) and
    nothing of this phase has begun at that generation since: shown as "triggered, not started"
    while the phase has nothing else to show (missing, or partly done at an older generation)."""
    return (bool(claim) and claim.get("status") == Status.PUBLISHED and rollup in (MISSING, PARTIAL)
            and not begun_at(states, int(claim.get("generation", 0))))


def date_status(app: App, day: date, steps: bool = True, cover: recovery.Cover | None = None) -> dict[str, Any]:
    """``{"date", "phases": {"2": {"status", "generation", "triggered_next", "processors": {...}}}}``;
    ``next_ran`` ("backfill" or "other") when the next phase was not triggered by this one but is
    complete at its generation or a newer one. ``steps``: each failed, blocked or stale partition
    carries its ``next_step`` (a progress line does without); ``cover`` (``backfill.reach.cover_for``,
    given by the CLI and the status page) widens its backfill until it reaches every input it needs."""
    pipeline, tracker = app.pipeline, app.tracker
    names = [p.name for p in pipeline.processors]
    states = tracker.partitions(names, [day])
    fresh = Freshness(pipeline, dict(states), load=tracker.partitions_by_keys, versions=app.versions)
    stale = fresh.evaluate([k for k, st in states.items() if st.status == Status.SUCCESS])
    now = app.clock()
    out: dict[str, Any] = {"date": day.isoformat(), "expected": pipeline.calendar.is_expected(day), "phases": {}}
    if pipeline.calendar.note(day):  # no data expected (and why), or expected only because the schedule does not cover it
        out["note"] = pipeline.calendar.note(day)
    published: dict[int, dict[str, Any]] = {}  # next phase -> the claim that triggered it
    for ph in pipeline.phases:
        procs = pipeline.processors_of(ph.number)
        ps = [states[(p.name, day.isoformat())] for p in procs]
        gen = max((s.generation for s in ps if s.status != MISSING), default=0)
        declared = declared_skips(pipeline, day, [p.name for p in procs])
        claim = tracker.claim(ph.number, day, gen) if ph.next is not None else None
        if claim and claim.get("status") == Status.PUBLISHED:
            published[ph.next] = claim
        out["phases"][str(ph.number)] = {
            "name": ph.name,
            "status": phase_state(ps, gen, now, sum((s.processor, s.data_date) in stale for s in ps), declared),
            "generation": gen,
            "triggered_next": bool(claim and claim.get("status") == Status.PUBLISHED),
            "next_phase": ph.next,
            "trigger_claim": (claim or {}).get("status"),
            "processors": {
                s.processor: {
                    # Skipped by declaration and never recorded (a backfill leaves it out): shown skipped.
                    "status": (Status.STALE if (s.processor, s.data_date) in stale
                               else Status.SKIPPED if s.processor in declared and s.status == MISSING else s.status),
                    **({"stale": stale[(s.processor, s.data_date)].reason} if (s.processor, s.data_date) in stale
                       else {}),
                    "record_count": s.record_count, "run_id": s.run_id or None,
                    "duration_s": s.duration_s, "generation": s.generation, "attempts": s.attempts,
                    "error": s.error or (f"no data expected ({pipeline.calendar.reason_not_expected(day, s.processor)})"
                                         if s.processor in declared else None), "updated_at": s.raw.get("updated_at"),
                    **({"resolution": (s.blocked or {}).get("resolution")} if s.blocked else {}),
                    # failed, blocked or stale: the root cause first, then the command to paste
                    **({"next_step": step} if steps and (step := _next_step(app, s, stale, cover)) else {}),
                    **({"short_window": w} if (w := pipeline.processor(s.processor).short_window(
                        day, pipeline.calendar)) else {}),
                } for s in ps
            },
        }
    for ph in out["phases"].values():
        # Not triggered by this phase, yet the next one is complete at its generation or a newer
        # one: it ran by other means (a backfill runs the phases it covers itself), not "pending".
        nxt = out["phases"].get(str(ph["next_phase"])) if ph["next_phase"] is not None else None
        if nxt and not ph["triggered_next"] and nxt["status"] in (COMPLETE, Status.STALE) \
                and nxt["generation"] >= ph["generation"]:
            modes = {states[(p.name, day.isoformat())].raw.get("mode")
                     for p in pipeline.processors_of(ph["next_phase"])}
            ph["next_ran"] = "backfill" if modes == {"backfill"} else "other"
    for number, claim in published.items():
        ph = out["phases"].get(str(number))
        ps = [states[(p.name, day.isoformat())] for p in pipeline.processors_of(number)] if ph else []
        if ph and triggered_not_started(ph["status"], ps, claim):
            ph["status"] = Status.TRIGGERED
            ph["triggered_at"] = claim.get("published_at")
            ph["triggered_generation"] = claim.get("generation")
    return out


def _next_step(app: App, part: Partition, stale: dict, cover: recovery.Cover | None = None) -> str:
    """``recovery.partition_next_step`` of a failed, blocked or stale partition (``""`` for another);
    with ``cover``, its backfill widened until it reaches every input it needs."""
    reason = stale[(part.processor, part.data_date)].reason if (part.processor, part.data_date) in stale else None
    if part.status not in (Status.FAILED, Status.BLOCKED) and reason is None:
        return ""
    return recovery.partition_next_step(app.pipeline, app.tracker, app.project, part, reason, cover)



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


def recorded_after(part: Partition, since: datetime | None) -> bool:
    """True when ``part``'s latest outcome was recorded at or after ``since`` (always without one).
    An outcome recorded before the trigger a wait follows is not that trigger's."""
    if since is None:
        return True
    at = part.finished_at or part.raw.get("updated_at")
    return at is not None and at >= since


def _final_bad(part: Partition) -> bool:
    return part.status == Status.BLOCKED or (part.status == Status.FAILED and not part.raw.get("transient"))


def _verdict(phases: dict[int, list[Partition]], chain: list[int], phase: int, since: datetime | None = None,
             note: str = "no data expected", declared: Container[str] = frozenset()) -> tuple[int, str] | None:
    """The verdict of a wait on ``phase`` from the partitions of every phase of ``chain`` (the phases
    before it that cascade into it): 1 when one of them failed or was blocked, 0 when one was skipped
    or ``phase`` is complete, None while pending. With ``since`` (when the trigger the wait follows
    was published) only outcomes recorded at or after it decide: an earlier failure may be re-run by
    that trigger, an earlier success may be replaced by it, so both count as still pending. A
    processor in ``declared`` is skipped by declaration (``handoff.declared_skips``): done, its phase
    goes on (not "phase skipped")."""
    for n in chain:
        states = phases[n]
        bad = [s for s in states if _final_bad(s) and recorded_after(s, since)]
        if bad:
            status = Status.BLOCKED if any(s.status == Status.BLOCKED for s in bad) else Status.FAILED
            return 1, f"phase {n} is {status} ({', '.join(s.processor for s in bad if s.status == status)})"
        if (states and all(s.status == Status.SKIPPED and s.processor not in declared for s in states)
                and any(recorded_after(s, since) for s in states)):
            return 0, f"phase {n} skipped ({note})"
    states = phases[phase]
    gen = max((s.generation for s in states if s.status != MISSING), default=0)
    if phase_state(states, gen, None, declared=declared) == COMPLETE and any(recorded_after(s, since) for s in states):
        return 0, f"phase {phase} complete"
    return None


def _earlier(phases: dict[int, list[Partition]], since: datetime | None) -> str:
    """The outcomes a wait set aside because they were recorded before ``since`` (for its timeout)."""
    old = [f"{s.processor} {s.status}" for states in phases.values() for s in states
           if s.status != MISSING and not recorded_after(s, since)]
    if since is None or not old:
        return ""
    return (f"; nothing recorded since {since.isoformat()} settled it (outcomes recorded before it are not "
            f"this trigger's: {', '.join(old[:6])}{', ...' if len(old) > 6 else ''}; see `cascade history`)")


def _not_started_note(status: dict[str, Any], chain: list[int]) -> str:
    """For a wait's timeout: the phases of ``chain`` that were triggered and never started."""
    lost = [n for n in chain if status["phases"][str(n)]["status"] == Status.TRIGGERED]
    if not lost:
        return ""
    return (f"; phase {lost[0]} was triggered and has not started (its trigger was never picked up): "
            f"`cascade sweep` re-publishes it")


def _answered_since(app: App, day: date, chain: list[int], since: datetime) -> bool:
    """True when run history holds an answer recorded at or after ``since`` that a trigger of a
    phase of ``chain`` had nothing to do for ``day`` (it touched no partition)."""
    return any(r.get("status") == Status.DONE and r.get("phase") in chain
               and r.get("finished_at") is not None and r["finished_at"] >= since
               for r in app.tracker.runs(day=day, limit=10_000))


def wait_for_phase(app: App, day: date, phase: int, timeout: float, since: datetime | None = None,
                   on_change: Any = None, cover: recovery.Cover | None = None) -> WaitResult:
    """Wait until ``phase`` is complete for ``day`` (0), it or an earlier phase failed/blocked (1), or timeout (2).

    Woken by a Firestore listener on the date's partitions: no polling sleeps. With ``since`` (the
    time the trigger this wait follows was published; naive means UTC) only outcomes recorded at or
    after it are taken as the verdict: a failure or a success recorded before it counts as pending.
    """
    pipeline = app.pipeline
    chain = [n for n in [p.number for p in pipeline.phases] if n <= phase and phase in pipeline.downstream_phases(n)]
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    names = {n: [p.name for p in pipeline.processors_of(n)] for n in chain}
    changed = threading.Event()
    watch = app.tracker.watch_partitions("data_date", day.isoformat(), lambda _parts: changed.set())
    deadline = time.monotonic() + timeout
    try:
        while True:
            changed.clear()
            states = app.tracker.partitions([name for n in chain for name in names[n]], [day])
            phases = {n: [states[(name, day.isoformat())] for name in names[n]] for n in chain}
            note = pipeline.calendar.reason_not_expected(day) if not pipeline.calendar.is_expected(day) else "no data expected"
            if on_change is not None:
                on_change(progress_line(date_status(app, day, steps=False), chain))
            declared = declared_skips(pipeline, day, [name for n in chain for name in names[n]])
            verdict = _verdict(phases, chain, phase, since, note, declared)
            if verdict is None and since is not None:
                settled = _verdict(phases, chain, phase, None, note, declared)
                if settled and _answered_since(app, day, chain, since):
                    # The trigger was processed and found nothing to do: the state as it is answers it.
                    verdict = settled[0], f"{settled[1]} (the trigger found nothing to do)"
            if verdict:
                status = date_status(app, day, cover=cover)
                if verdict[0] == 0 and status["phases"][str(phase)]["status"] == Status.STALE:
                    # Complete, but not fresh: what it read was rebuilt or its code changed.
                    stale = {n: p["stale"] for n, p in status["phases"][str(phase)]["processors"].items()
                             if p.get("stale")}
                    return WaitResult(1, status, f"phase {phase} is stale: " + "; ".join(
                        f"{n}: {r}" for n, r in sorted(stale.items())) + f"; rebuild it: cascade backfill --start "
                        f"{day} --end {day} --phase {phase}")
                return WaitResult(verdict[0], status, verdict[1])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                status = date_status(app, day, cover=cover)
                return WaitResult(2, status, f"timed out after {timeout:.0f} s waiting for phase {phase}"
                                  + _earlier(phases, since) + _not_started_note(status, chain))
            # Woken by the listener; the bounded re-check only matters if the listener stream broke.
            changed.wait(min(remaining, _RECHECK_SECONDS))
    finally:
        watch.unsubscribe()
