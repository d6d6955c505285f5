"""Re-processing a phase (and everything downstream) after a fix: ``cascade rerun``.

For each expected date of the range, the new generation is 1 + the highest generation among the
phase's partitions for that date (one batched Firestore read for the whole range). A trigger with
that generation is published to the phase's topic, so the normal cascade re-runs the phase - every
partition is "not done for this generation" - and its completion (carrying the generation) re-runs
the phases after it, each exactly once (claims are per phase, date and generation). Earlier runs
stay in the ``runs`` collection. Strict mode and ``skip_downstream_trigger`` apply as for any
trigger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from ..app import App
from ..calendar import date_range
from ..messages import Trigger, new_correlation_id
from .plan import UsageError, check_range


@dataclass(frozen=True)
class Rerun:
    data_date: str
    generation: int
    topic: str
    message_id: str


def rerun(app: App, phase: int, start: date, end: date, strict_mode: bool = True,
          skip_downstream_trigger: bool = False) -> tuple[list[Rerun], list[str]]:
    """Publish a new-generation trigger per expected date; returns (published, skipped no-game dates)."""
    check_range(start, end)
    pipeline = app.pipeline
    try:
        pipeline.phase(phase)
    except Exception as exc:  # UnknownProcessorError
        raise UsageError(str(exc)) from exc
    cal = pipeline.calendar
    days = [d for d in date_range(start, end) if cal.is_expected(d)]
    skipped = [f"{d} ({cal.reason_not_expected(d)})" for d in date_range(start, end) if not cal.is_expected(d)]
    names = [p.name for p in pipeline.processors_of(phase)]
    states = app.tracker.partitions(names, days) if days else {}
    topic = pipeline.topic(phase)
    cid = new_correlation_id()
    out = []
    for d in days:
        gen = 1 + max((states[(n, d.isoformat())].generation for n in names), default=0)
        trig = Trigger(pipeline=pipeline.name, phase=phase, data_date=d, mode="daily", strict_mode=strict_mode,
                       skip_downstream_trigger=skip_downstream_trigger, correlation_id=cid, generation=gen)
        message_id = app.publisher.publish(topic, trig.to_json(), trig.attributes())
        out.append(Rerun(d.isoformat(), gen, topic, message_id))
    return out, skipped
