"""The sweeper: finds and repairs stuck state. Idempotent and safe to run concurrently.

Five repairs, each a query plus per-item compare-and-set, so two sweepers never both "win":

1. **Unpublished trigger claims** - a phase completed and claimed its downstream trigger, but the
   publish failed or the function died before marking it published. Republish the stored payload
   and mark it published. Receivers dedupe on the business key, so a double publish is harmless;
   a claim is never marked published without a publish.
2. **Expired leases** - a partition ``running`` whose lease expired (the run crashed or timed out):
   re-trigger its phase for that date and processor, then mark it failed (transient). Every repair
   publishes before it marks anything, so a repair whose publish failed is found again by the next
   sweep instead of being recorded as done.
3. **Expired waiting** - a partition ``waiting`` (strict mode found an upstream still running) that
   nothing re-checked for longer than its waiting lasts (``Tracker.waiting_until``: the lease plus
   Pub/Sub's longest retry backoff): its trigger's messages are gone. Re-trigger its phase for that
   date and processor so it is checked again, at most ``max_attempts`` times per trigger (counted on
   the partition); after that it is recorded ``failed`` with the reason and the command, and alerted.
4. **Triggers nobody picked up** - a claim ``published`` for phase N, date D, generation G (phase
   N+1 was triggered) with no partition of phase N+1 begun at generation G or newer for D, older
   than ``not_started_after`` (the lease, plus the busy wait, plus ``republish_after_seconds``: a
   delivery that found the phase busy has begun it or given up by then): its messages were lost (a
   push to a function that was down, a deleted or misconfigured subscription, a dead letter nobody
   replayed). Re-publish it through the hand-off (receivers dedupe; the claim's ``published_at``
   moves on, so it is tried again one deadline later while still not picked up) and alert once.
   A claim older than the phase's current generation (the phase was rerun since), or one whose next
   phase still has a live run of an older generation (its delivery waits for it), is left alone.
5. **Stuck phases** - a phase with some processors done and others missing or failed for longer
   than ``stuck_phase_seconds``: one alert (ever) naming the missing processors and the command
   that re-runs them.

Each repair item (one claim, one expired lease, one expired waiting, one lost trigger, one stuck phase) is handled in isolation: an item
that cannot be repaired (its topic was deleted, Firestore refused the write ...) is logged with its
date, phase or processor and the next step, listed in ``SweepReport.errors``, and the sweep goes
on with the others - one broken item never disables the rest of the repair.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable

from cascade.ops.date_status import begun_at
from cascade.runtime import handoff, recovery
from cascade.runtime.alerts import Alert
from cascade.runtime.app import App
from cascade.runtime.durations import duration
from cascade.runtime.logs import get_logger, log
from cascade.runtime.messages import Trigger, new_correlation_id
from cascade.state.partitions import Partition
from cascade.state.status import Status

logger = get_logger("sweeper")


@dataclass
class SweepReport:
    """What one sweep repaired, and in ``errors`` what it could not (each with its next step)."""

    republished: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # expired waiting partitions re-triggered
    not_started: list[str] = field(default_factory=list)  # published triggers nobody picked up, re-published
    stuck: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"republished": self.republished, "expired": self.expired, "waiting": self.waiting,
                "not_started": self.not_started, "stuck": self.stuck, "errors": self.errors}


def sweep(app: App, recent_days: int = 3) -> SweepReport:
    report = SweepReport()
    for repair in (_republish, _expire, _waiting, lambda a, r: _not_started(a, r, recent_days),
                   lambda a, r: _stuck(a, r, recent_days)):
        repair(app, report)
    log(logger, logging.INFO if report.ok else logging.ERROR,
        f"sweep: {len(report.republished)} republished, {len(report.expired)} expired leases, "
        f"{len(report.waiting)} expired waiting re-triggered, "
        f"{len(report.not_started)} triggers nobody picked up re-published, "
        f"{len(report.stuck)} stuck phases, {len(report.errors)} could not be repaired",
        pipeline=app.pipeline.name, **report.to_dict())
    return report


def _isolated(app: App, report: SweepReport, what: str, next_step: str, repair: Callable[[], None],
              **labels: Any) -> None:
    """Run one repair item; its failure is logged and reported with ``next_step``, never propagated."""
    try:
        repair()
    except Exception as exc:  # noqa: BLE001 - one broken item must not stop the repair of the others
        error = f"{what}: {type(exc).__name__}: {str(exc)[:500]}; next step: {next_step}"
        log(logger, logging.ERROR, f"sweep could not repair {error}", pipeline=app.pipeline.name, **labels)
        report.errors.append(error)


def _listed(app: App, report: SweepReport, what: str, query: Callable[[], list[Any]]) -> list[Any]:
    """The items a repair walks; a failing query is reported (that repair is skipped), not raised."""
    found: list[Any] = []
    _isolated(app, report, f"listing {what}", "check Firestore, then run `cascade sweep` again",
              lambda: found.extend(query()))
    return found


def _republish(app: App, report: SweepReport) -> None:
    limit = timedelta(seconds=app.settings.republish_after_seconds)
    for claim in _listed(app, report, "unpublished trigger claims", lambda: app.tracker.unpublished_claims(limit)):
        phase, day, gen, topic = claim["phase"], claim["data_date"], claim["generation"], claim.get("topic")

        def republish(claim: dict[str, Any] = claim) -> None:
            handoff.republish(app, claim, by="sweeper")
            report.republished.append(f"phase {phase} {day} g{gen} -> {topic}")

        _isolated(app, report, f"trigger claim of phase {phase} for {day} g{gen} -> {topic}",
                  f"make sure topic {topic} exists (`cascade up` or `terraform apply` re-creates it), then run "
                  f"`cascade sweep` again; the claim stays unpublished until then", republish,
                  phase=phase, date=day, generation=gen)


def _expire(app: App, report: SweepReport) -> None:
    now = app.clock()
    for part in _listed(app, report, "running partitions", lambda: app.tracker.partitions_where("status", "==", Status.RUNNING)):
        if part.lease_alive(now):
            continue
        _isolated(app, report, f"expired lease of {part.processor} for {part.data_date} (run {part.run_id})",
                  f"re-run it: {_rerun_command(part)}", lambda part=part: _expire_one(app, report, part),
                  processor=part.processor, date=part.data_date)


def _expire_one(app: App, report: SweepReport, part: Partition) -> None:
    """Re-trigger a crashed run's partition, then mark it failed. Publish first: when the publish
    fails, the partition is still ``running`` with its lease expired, so the next sweep finds it and
    tries again (marked first, a failed publish would leave it failed with nothing re-running it).
    A re-trigger delivered before the mark takes the expired lease over; the mark then finds the
    partition moved on and changes nothing, and receivers dedupe a second copy."""
    reason = (f"run {part.run_id} stopped heartbeating (lease expired at {part.lease_expires_at}); "
              f"re-triggered by the sweeper")
    _retrigger(app, part)
    if not app.tracker.expire(part.processor, part.data_date, part.run_id, reason):
        return  # someone else moved it on (the re-trigger's own delivery, or another sweeper)
    report.expired.append(f"{part.processor} {part.data_date} (run {part.run_id})")


def _retrigger(app: App, part: Partition) -> None:
    """Publish a trigger of ``part``'s phase for its date and processor, with its run's settings."""
    raw = part.raw
    trig = Trigger(pipeline=app.pipeline.name, phase=int(raw["phase"]), data_date=_d(part.data_date),
                   processors=(part.processor,), mode=raw.get("mode", "daily"),
                   strict_mode=bool(raw.get("strict_mode", True)),
                   skip_downstream_trigger=bool(raw.get("skip_downstream_trigger", False)),
                   correlation_id=raw.get("correlation_id") or new_correlation_id(), generation=part.generation)
    app.publisher.publish(app.pipeline.topic(trig.phase), trig.to_json(), trig.attributes())


def _waiting(app: App, report: SweepReport) -> None:
    now = app.clock()
    for part in _listed(app, report, "waiting partitions", lambda: app.tracker.partitions_where("status", "==", Status.WAITING)):
        if not app.tracker.waiting_expired(part, now):
            continue
        _isolated(app, report, f"expired waiting of {part.processor} for {part.data_date} (run {part.run_id})",
                  f"re-run it: {_rerun_command(part)}", lambda part=part: _waiting_one(app, report, part),
                  processor=part.processor, date=part.data_date)


def _waiting_one(app: App, report: SweepReport, part: Partition) -> None:
    """Re-trigger one expired waiting partition (counted per trigger: the generation and the
    correlation id its re-triggers keep), or give up on it after ``max_attempts`` re-triggers."""
    now = app.clock()
    since = app.tracker.waiting_since(part.processor, part.data_date) or part.started_at or now
    waited = duration((now - since).total_seconds())
    limit = app.settings.max_attempts
    command = _rerun_command(part)
    reason = (f"gave up waiting after {waited} (since {since:%Y-%m-%d %H:%M:%S} UTC) and {limit} re-triggers by the "
              f"sweeper; it was waiting on: {part.error or 'an upstream run'}; once that upstream is done, re-run "
              f"it: {command}")
    key = f"g{part.generation}:{part.raw.get('correlation_id') or ''}"
    previous = part.raw.get("waiting_repairs") or {}
    if (int(previous.get("count", 0)) + 1 if previous.get("key") == key else 1) <= limit:
        # Publish before the re-trigger is counted and the waiting re-armed: when the publish fails
        # the partition is still an expired waiting one, and the next sweep tries again.
        _retrigger(app, part)
    action, count = app.tracker.repair_waiting(part.processor, part.data_date, part.run_id, key, limit, reason)
    if action == "retrigger":
        report.waiting.append(f"{part.processor} {part.data_date} (waiting {waited}; re-trigger {count} of {limit})")
    elif action == "gave-up":
        title = f"{part.processor} FAILED for {part.data_date}: still waiting after {limit} re-triggers"
        app.alerts.send(Alert(title, reason, labels={"pipeline": app.pipeline.name, "processor": part.processor,
                                                     "date": part.data_date, "phase": part.raw.get("phase")}))
        report.errors.append(f"{title}; next step: {command}")


def _rerun_command(part: Partition) -> str:
    return recovery.trigger_command(part.data_date, part.raw.get("phase"), [part.processor])


def not_started_after(settings: Any) -> float:
    """Seconds after its publish a trigger nobody picked up is re-published: the lease, plus the busy
    wait of a delivery that found the phase held by a live run, plus ``republish_after_seconds``
    (defaults: 120 + 180 + 30 = 330 s)."""
    return settings.lease_seconds + settings.busy_wait + settings.republish_after_seconds


def _not_started(app: App, report: SweepReport, recent_days: int) -> None:
    now = app.clock()
    limit = not_started_after(app.settings)
    claims = _listed(app, report, "published trigger claims",
                     lambda: app.tracker.published_claims(now - timedelta(days=recent_days),
                                                          now - timedelta(seconds=limit)))
    days = sorted({c["data_date"] for c in claims})
    states: dict[tuple[str, str], Partition] = {}
    if days:  # every partition of those dates in one batched read
        _isolated(app, report, "reading the partitions of triggered dates", "check Firestore, then run `cascade sweep` "
                  "again", lambda: states.update(app.tracker.partitions([p.name for p in app.pipeline.processors], days)))
        if not states:
            return
    for claim in sorted(claims, key=lambda c: (c["data_date"], c["phase"], c["generation"])):
        phase, day, gen = claim["phase"], claim["data_date"], claim["generation"]
        try:
            nxt = app.pipeline.phase(phase).next
        except Exception:  # noqa: BLE001 - a phase the definition no longer has: nothing to trigger
            continue
        if nxt is None:
            continue
        _isolated(app, report, f"trigger of phase {nxt} for {day} g{gen} (published by phase {phase})",
                  f"check that the push subscription {app.pipeline.push_subscription(nxt)} exists and points at a "
                  f"running phase {nxt} function, then run `cascade sweep` again (or: "
                  f"{recovery.trigger_command(day, nxt)})",
                  lambda claim=claim, nxt=nxt: _not_started_one(app, report, claim, nxt, limit, states),
                  phase=nxt, date=day, generation=gen)


def _not_started_one(app: App, report: SweepReport, claim: dict[str, Any], nxt: int, limit: float,
                     states: dict[tuple[str, str], Partition]) -> None:
    """Re-publish one published trigger whose next phase has begun nothing at its generation."""
    phase, day, gen = claim["phase"], claim["data_date"], int(claim["generation"])
    upstream = [p.name for p in app.pipeline.processors_of(phase)]
    downstream = [p.name for p in app.pipeline.processors_of(nxt)]
    if max((s.generation for n in upstream if (s := states[(n, day)]).status != Status.MISSING), default=0) > gen:
        return  # phase N was rerun since: its newer claim is the one that counts
    if begun_at([states[(n, day)] for n in downstream], gen):
        return  # picked up
    if any(states[(n, day)].lease_alive(app.clock()) for n in downstream):
        return  # an older run of it is still live: the trigger's delivery waits for it, nothing is lost yet
    published_at = claim.get("published_at")
    handoff.republish(app, claim, by="sweeper: not started")
    waited = duration((app.clock() - published_at).total_seconds()) if published_at else f"{limit:.0f} s"
    what = (f"phase {nxt} for {day} g{gen}: triggered by phase {phase} {waited} ago "
            f"({published_at:%Y-%m-%d %H:%M:%S} UTC), not started; re-published to {claim.get('topic')}"
            if published_at else f"phase {nxt} for {day} g{gen}: triggered, not started; re-published")
    report.not_started.append(what)
    if app.tracker.create_once("alerts", f"not_started__p{nxt}__{day}__g{gen}", {"claim": claim.get("topic")}):
        app.alerts.send(Alert(
            f"Phase {nxt} TRIGGERED, NOT STARTED for {day}",
            f"phase {phase} completed for {day} (generation {gen}) and triggered phase {nxt}, but no run of phase "
            f"{nxt} began within {limit:.0f} s: its messages were lost (a function that was down, a deleted or "
            f"misconfigured subscription, a dead letter nobody replayed). The sweeper re-published the trigger "
            f"(receivers dedupe) and keeps doing so while nothing picks it up. Check the push subscription "
            f"{app.pipeline.push_subscription(nxt)} and its function (`cascade up` locally), and `cascade dlq list "
            f"--phase {nxt}`; then `cascade wait --date {day} --phase {nxt}`.",
            labels={"pipeline": app.pipeline.name, "phase": nxt, "date": day, "generation": gen}))


def _stuck(app: App, report: SweepReport, recent_days: int) -> None:
    now = app.clock()
    deadline = now - timedelta(seconds=app.settings.stuck_phase_seconds)
    recent = [p for p in _listed(app, report, "recently updated partitions",
                                 lambda: app.tracker.partitions_where("updated_at", ">=", now - timedelta(days=recent_days)))
              if p.raw.get("updated_at") and p.raw["updated_at"] <= deadline]
    groups = {(int(p.raw["phase"]), p.data_date, p.generation) for p in recent if p.status == Status.SUCCESS}
    for phase, day, gen in sorted(groups):
        _isolated(app, report, f"stuck-phase check of phase {phase} for {day} g{gen}",
                  f"see `cascade status --date {day}` and re-run what is missing: "
                  f"{recovery.trigger_command(day, phase)}", lambda phase=phase, day=day, gen=gen: _stuck_one(app, report, phase, day, gen),
                  phase=phase, date=day, generation=gen)


def _stuck_one(app: App, report: SweepReport, phase: int, day: str, gen: int) -> None:
    names = [p.name for p in app.pipeline.processors_of(phase)]
    states = app.tracker.partitions(names, [day])
    declared = handoff.declared_skips(app.pipeline, _d(day), names)  # done and empty by declaration
    missing = sorted(n for (n, _), s in states.items() if not s.done_for(gen) and n not in declared)
    if not missing:
        return
    if not app.tracker.create_once("alerts", f"stuck__p{phase}__{day}__g{gen}", {"missing": missing}):
        return
    msg = (f"phase {phase} for {day} has waited more than {app.settings.stuck_phase_seconds:.0f} s on {missing} "
           f"({', '.join(states[(n, day)].status for n in missing)}); re-run them: "
           f"{recovery.trigger_command(day, phase, missing)}")
    app.alerts.send(Alert(f"Phase {phase} STUCK for {day}", msg,
                          labels={"pipeline": app.pipeline.name, "phase": phase, "date": day}))
    report.stuck.append(msg)


def _d(text: str):
    from datetime import date
    return date.fromisoformat(text)
