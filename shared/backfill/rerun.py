"""Re-processing a phase (and everything downstream) after a fix: ``cascade rerun``.

For each expected date of the range, a new generation is allocated for the date across the whole
cascade (``Tracker.new_generation``: higher than any generation ever allocated for the date and
than every partition of the date, in any phase - atomically). A trigger with that generation is
published to the phase's topic, so the normal cascade re-runs the phase - every partition is "not
done for this generation" - and its completion (carrying the generation) re-runs the phases after
it, each exactly once (claims are per phase, date and generation, and a generation is never reused:
a rerun of phase 2 after a rerun of phase 3 re-runs 2, 3 and 4). Earlier runs
stay in the ``runs`` collection. Strict mode and ``skip_downstream_trigger`` apply as for any
trigger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from cascade.backfill.plan import UsageError, check_range
from cascade.definition.calendar import date_range
from cascade.runtime.app import App
from cascade.runtime.messages import Trigger, new_correlation_id


@dataclass(frozen=True)
class Rerun:
    data_date: str
    generation: int
    topic: str
    message_id: str


def rerun(app: App, phase: int, start: date, end: date, strict_mode: bool = True,
          skip_downstream_trigger: bool = False) -> tuple[list[Rerun], list[str]]:
    """Publish a new-generation trigger per expected date; returns (published, skipped dates with no data expected)."""
    check_range(start, end)
    pipeline = app.pipeline
    try:
        pipeline.phase(phase)
    except Exception as exc:  # UnknownProcessorError
        raise UsageError(str(exc)) from exc
    cal = pipeline.calendar
    days = [d for d in date_range(start, end) if cal.is_expected(d)]
    skipped = [f"{d} ({cal.reason_not_expected(d)})" for d in date_range(start, end) if not cal.is_expected(d)]
    topic = pipeline.topic(phase)
    cid = new_correlation_id()
    out = []
    for d in days:
        gen = app.tracker.new_generation(d)
        trig = Trigger(pipeline=pipeline.name, phase=phase, data_date=d, mode="daily", strict_mode=strict_mode,
                       skip_downstream_trigger=skip_downstream_trigger, correlation_id=cid, generation=gen)
        message_id = app.publisher.publish(topic, trig.to_json(), trig.attributes())
        out.append(Rerun(d.isoformat(), gen, topic, message_id))
    return out, skipped
