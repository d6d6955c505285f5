"""Generations, intents and the hand-off to the next phase: the rules, in one place.

The runner (a phase function), the backfill scheduler and ``cascade trigger`` all follow these rules
through this module; the state they read and write goes through the ``Tracker``.

1. **Generations are per date across the cascade.** ``Tracker.new_generation`` allocates one higher
   than any partition of the date, atomically; a rerun, a forced backfill or a rebuild of anything
   that already succeeded takes a new one, so a (phase, date, generation) claim is never reused.
2. **A trigger with a generation** (a completion, a rerun, a backfill) is that generation's work:
   each selected partition runs unless it already succeeded at that generation or a newer one
   (redeliveries dedupe on it); a trigger older than the partition is superseded.
3. **A trigger without a generation is an intent**: "make this phase (or these processors) complete
   and fresh for the date". ``resolve_intent`` picks what is missing, failed, blocked, waiting or
   stale, plus every same-phase dependent of those (their input is rebuilt). It runs them at the
   phase's current generation while nothing of it has been handed off yet, else at a new one, so
   the next phase is triggered again. Nothing to do is answered visibly ("already complete"), in
   run history - except to a redelivery of the very message that did the work (the log says it). A
   processor skipped by declaration is only recorded skipped (never run, rebuilds nothing).
4. **A phase is complete for a date** when every processor of it succeeded - or is skipped by
   declaration (its own ``history_start`` is after the date: ``declared_skips``; a run records it
   skipped, a backfill leaves it out, either way it is done and empty). Its completion is claimed
   at the highest generation among them (the newest work) - exactly one claimer
   (``create()``) - then published, then marked published; a claim left unpublished is republished
   after ``republish_after_seconds`` (receivers dedupe).
5. **Backfill mode never leaks**: a completion is published in daily mode with strict checks on,
   whatever mode produced it (a backfill runs its own phases itself; what it hands to the phases
   after it runs under strict mode). A daily trigger with ``strict_mode=false`` hands that on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Container, Iterable, Mapping

from cascade.definition.model import Pipeline
from cascade.runtime.logs import get_logger, log
from cascade.runtime.messages import Completion, Trigger
from cascade.state.freshness import Freshness, Key
from cascade.state.status import Status

logger = get_logger("handoff")


# ---------------------------------------------------------------------- intents
@dataclass(frozen=True)
class Intent:
    """What an intent trigger resolves to: the processors to run (in dependency order) with why,
    and the generation to run them at (``None``: allocate a new one for the date)."""

    processors: tuple[str, ...]
    generation: int | None
    reasons: Mapping[str, str] = field(default_factory=dict)
    done_by: frozenset[str] = frozenset()  # the triggers whose runs hold the selected partitions

    @property
    def nothing_to_do(self) -> bool:
        return not self.processors

    def redelivery_of(self, trigger_id: str | None) -> bool:
        """Nothing to do because this very message did the work: Pub/Sub delivered it again (at least
        once). It is answered in the log only; a new message asking again is answered in run history."""
        return self.nothing_to_do and bool(trigger_id) and self.done_by == {trigger_id[:200]}

    def answer(self, phase: int, day: date) -> str:
        """The visible answer when there is nothing to do."""
        return f"phase {phase} for {day} is already complete and fresh: nothing to run"


def declared_skips(pipeline: Pipeline, day: date, names: Iterable[str]) -> frozenset[str]:
    """The processors among ``names`` skipped by declaration on ``day``: the pipeline expects the date,
    their own history starts after it (``Calendar.skipped_by_declaration``, the rule backfill plans
    follow too). Their partitions are done and empty whatever their state (skipped, or never recorded)."""
    return frozenset(n for n in names if pipeline.calendar.skipped_by_declaration(day, n))


def phase_generation(states: Iterable[Any]) -> int:
    """The current generation of a phase on a date: the highest among its partitions that exist."""
    return max((s.generation for s in states if s.status != Status.MISSING), default=0)


def same_phase_dependents(pipeline: Pipeline, phase: int, names: Iterable[str]) -> list[str]:
    """``names`` and every processor of ``phase`` that reads one of them (transitively), in
    dependency order."""
    chosen = set(names)
    for proc in pipeline.processors_of(phase):  # dependency order: upstreams come first
        if any(u.processor in chosen for u in proc.upstreams):
            chosen.add(proc.name)
    return [p.name for p in pipeline.processors_of(phase) if p.name in chosen]


def resolve_intent(pipeline: Pipeline, phase: int, selected: Iterable[str], day: date,
                   states: Mapping[Key, Any], freshness: Freshness, now: datetime,
                   handed_off: bool) -> Intent:
    """What "make ``selected`` of ``phase`` complete and fresh for ``day``" means now (pure).

    ``states`` holds every partition of the phase on the date; ``handed_off`` says whether the
    phase's completion at its current generation was already claimed (downstream already read it)."""
    iso = day.isoformat()
    members = [p.name for p in pipeline.processors_of(phase)]
    declared = declared_skips(pipeline, day, members)
    reasons: dict[str, str] = {}
    recorded: dict[str, str] = {}  # skipped by declaration, not recorded yet: recorded, never run
    rebuild_success = False
    chosen = set(selected) or set(members)  # none named: the whole phase
    for name in members:
        if name not in chosen:
            continue
        st = states[(name, iso)]
        if name in declared:
            if st.status != Status.SKIPPED and not st.lease_alive(now):
                recorded[name] = f"{pipeline.calendar.reason_not_expected(day, name)}: recorded skipped, not run"
            continue
        if st.lease_alive(now):
            reasons[name] = f"running (run {st.run_id}): waited for"  # the runner waits, then dedupes
        elif st.status != Status.SUCCESS:
            reasons[name] = str(st.status)
        else:
            stale = freshness.stale((name, iso))
            if stale is not None:
                reasons[name] = f"stale: {stale.reason}"
                rebuild_success = True
    for name in same_phase_dependents(pipeline, phase, reasons):
        if name not in reasons:
            reasons[name] = "a same-phase input is rebuilt"
            rebuild_success = rebuild_success or states[(name, iso)].status == Status.SUCCESS
    order = [n for n in members if n in reasons or n in recorded]
    current = phase_generation(states[(n, iso)] for n in members)
    # Recording a skip by declaration changes no data: alone, it keeps the current generation.
    generation = None if (rebuild_success or (handed_off and bool(reasons))) else current
    reasons.update(recorded)
    done_by = frozenset(str(states[(n, iso)].raw.get("trigger_id", "")) for n in members
                        if n in chosen and n not in declared)
    return Intent(tuple(order), generation, reasons, done_by)


# ---------------------------------------------------------------------- completion and hand-off
@dataclass(frozen=True)
class HandOff:
    """The result of handing a phase's date on: complete? at which generation? what happened
    downstream (published, republished, already-claimed, claimed-unpublished, skipped-by-request,
    none (last phase), incomplete)."""

    complete: bool
    generation: int | None
    downstream: str

    @property
    def retry(self) -> bool:
        """The claim is held by someone who has not published yet: keep the message until it is."""
        return self.downstream == "claimed-unpublished"


def completion_generation(states: Iterable[Any], declared: Container[str] = frozenset()) -> int | None:
    """The generation a phase completes at (the highest among its succeeded or skipped partitions),
    or None while any partition has not succeeded. A partition of a processor in ``declared`` (skipped
    by declaration: ``declared_skips``) counts as done whatever its state."""
    states = list(states)
    if not states or any(s.status != Status.SUCCESS for s in states if s.processor not in declared):
        return None
    return max((s.generation for s in states if s.status in (Status.SUCCESS, Status.SKIPPED)), default=0)


def hand_off(app: Any, phase: int, day: date, *, mode: str, strict_mode: bool, correlation_id: str,
             skip_downstream_trigger: bool = False, claimer: str = "") -> HandOff:
    """If every processor of ``phase`` succeeded for ``day`` (or is skipped by declaration): claim the
    completion at its generation (one claimer), publish it to the next phase's topic and mark it
    published - or republish a claim left unpublished for too long. Never marks a claim published when nothing was
    published."""
    pipeline, tracker = app.pipeline, app.tracker
    names = [p.name for p in pipeline.processors_of(phase)]
    states = tracker.partitions(names, [day])
    gen = completion_generation(states.values(), declared_skips(pipeline, day, names))
    if gen is None:
        return HandOff(False, None, "incomplete")
    nxt = pipeline.phase(phase).next
    if nxt is None:
        return HandOff(True, gen, "none")
    if skip_downstream_trigger:
        log(logger, logging.INFO, f"phase {phase} complete for {day}; downstream trigger skipped by request",
            pipeline=pipeline.name, phase=phase, date=day.isoformat())
        return HandOff(True, gen, "skipped-by-request")
    completion = Completion(
        trigger=Trigger(pipeline=pipeline.name, phase=phase, data_date=day, mode="daily",
                        strict_mode=strict_mode if mode == "daily" else True,
                        correlation_id=correlation_id, generation=gen),
        status=Status.SUCCESS.value,
        processors={n: {"status": s.status, "record_count": s.record_count, "run_id": s.run_id}
                    for (n, _), s in states.items()},
        completed_at=app.clock().isoformat())
    topic = pipeline.topic(nxt)
    payload = completion.to_json()
    if tracker.claim_trigger(phase, day, gen, topic, payload, claimer or "redelivery"):
        message_id = app.publisher.publish(topic, payload, completion.attributes())
        tracker.mark_published(phase, day, gen, message_id)
        log(logger, logging.INFO, f"phase {phase} complete for {day} (generation {gen}); triggered phase {nxt}",
            pipeline=pipeline.name, phase=phase, date=day.isoformat(), generation=gen, message_id=message_id)
        return HandOff(True, gen, "published")
    claim = tracker.claim(phase, day, gen) or {}
    if claim.get("status") == Status.PUBLISHED:
        return HandOff(True, gen, "already-claimed")
    claimed_at = claim.get("claimed_at")
    if claimed_at is not None and app.clock() - claimed_at >= timedelta(seconds=app.settings.republish_after_seconds):
        republish(app, claim, by="redelivery")
        return HandOff(True, gen, "republished")
    return HandOff(True, gen, "claimed-unpublished")


def republish(app: Any, claim: Mapping[str, Any], by: str) -> str:
    """Publish a claim's stored completion again (its claimer never marked it published), then mark
    it published; receivers dedupe on the generation, so a second copy changes nothing. Returns the
    message id."""
    phase, day, gen = claim["phase"], claim["data_date"], claim["generation"]
    message_id = app.publisher.publish(claim["topic"], claim["payload"].encode(), {
        "kind": "completion", "pipeline": app.pipeline.name, "phase": str(phase), "data_date": str(day),
        "generation": str(gen), "mode": "daily", "republished": by})
    app.tracker.mark_published(phase, day, gen, message_id)
    return message_id


def intent_for(app: Any, phase: int, day: date, selected: Iterable[str], freshness: Freshness | None = None) -> Intent:
    """Resolve an intent against the current state (reads the phase's partitions, their inputs as
    needed, and the claim at the phase's current generation)."""
    pipeline, tracker = app.pipeline, app.tracker
    members = [p.name for p in pipeline.processors_of(phase)]
    states = tracker.partitions(members, [day])
    fresh = freshness or Freshness(pipeline, dict(states), load=tracker.partitions_by_keys,
                                   versions=getattr(app, "versions", None))
    current = phase_generation(states.values())
    handed_off = pipeline.phase(phase).next is not None and tracker.claim(phase, day, current) is not None
    return resolve_intent(pipeline, phase, selected, day, states, fresh, app.clock(), handed_off)

