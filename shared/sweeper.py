"""The sweeper: finds and repairs stuck state. Idempotent and safe to run concurrently.

Three repairs, each a query plus per-item compare-and-set, so two sweepers never both "win":

1. **Unpublished trigger claims** - a phase completed and claimed its downstream trigger, but the
   publish failed or the function died before marking it published. Republish the stored payload
   and mark it published. Receivers dedupe on the business key, so a double publish is harmless;
   a claim is never marked published without a publish.
2. **Expired leases** - a partition ``running`` whose lease expired (the run crashed or timed out):
   mark it failed (transient) and re-trigger its phase for that date and processor.
3. **Stuck phases** - a phase with some processors done and others missing or failed for longer
   than ``stuck_phase_seconds``: one alert (ever) naming the missing processors and the command
   that re-runs them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .alerts import Alert
from .app import App
from .logs import get_logger, log
from .messages import Trigger, new_correlation_id
from .tracking import RUNNING, SUCCESS

logger = get_logger("sweeper")


@dataclass
class SweepReport:
    republished: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"republished": self.republished, "expired": self.expired, "stuck": self.stuck}


def sweep(app: App, recent_days: int = 3) -> SweepReport:
    report = SweepReport()
    _republish(app, report)
    _expire(app, report)
    _stuck(app, report, recent_days)
    log(logger, logging.INFO, f"sweep: {len(report.republished)} republished, {len(report.expired)} expired leases, "
        f"{len(report.stuck)} stuck phases", pipeline=app.pipeline.name, **report.to_dict())
    return report


def _republish(app: App, report: SweepReport) -> None:
    limit = timedelta(seconds=app.settings.republish_after_seconds)
    for claim in app.tracker.unpublished_claims(limit):
        phase, day, gen = claim["phase"], claim["data_date"], claim["generation"]
        message_id = app.publisher.publish(claim["topic"], claim["payload"].encode(),
                                           {"kind": "completion", "pipeline": app.pipeline.name, "phase": str(phase),
                                            "data_date": day, "generation": str(gen), "republished": "sweeper"})
        app.tracker.mark_published(phase, day, gen, message_id)
        report.republished.append(f"phase {phase} {day} g{gen} -> {claim['topic']}")


def _expire(app: App, report: SweepReport) -> None:
    now = app.clock()
    for part in app.tracker.partitions_where("status", "==", RUNNING):
        if part.lease_alive(now):
            continue
        reason = (f"run {part.run_id} stopped heartbeating (lease expired at {part.lease_expires_at}); "
                  f"re-triggered by the sweeper")
        if not app.tracker.expire(part.processor, part.data_date, part.run_id, reason):
            continue  # someone else moved it on
        raw = part.raw
        trig = Trigger(pipeline=app.pipeline.name, phase=int(raw["phase"]), data_date=_d(part.data_date),
                       processors=(part.processor,), mode=raw.get("mode", "daily"),
                       strict_mode=bool(raw.get("strict_mode", True)),
                       skip_downstream_trigger=bool(raw.get("skip_downstream_trigger", False)),
                       correlation_id=raw.get("correlation_id") or new_correlation_id(), generation=part.generation)
        app.publisher.publish(app.pipeline.topic(trig.phase), trig.to_json(), trig.attributes())
        report.expired.append(f"{part.processor} {part.data_date} (run {part.run_id})")


def _stuck(app: App, report: SweepReport, recent_days: int) -> None:
    now = app.clock()
    deadline = now - timedelta(seconds=app.settings.stuck_phase_seconds)
    recent = [p for p in app.tracker.partitions_where("updated_at", ">=", now - timedelta(days=recent_days))
              if p.raw.get("updated_at") and p.raw["updated_at"] <= deadline]
    groups = {(int(p.raw["phase"]), p.data_date, p.generation) for p in recent if p.status == SUCCESS}
    for phase, day, gen in sorted(groups):
        names = [p.name for p in app.pipeline.processors_of(phase)]
        states = app.tracker.partitions(names, [day])
        missing = sorted(n for (n, _), s in states.items() if not s.done_for(gen))
        if not missing:
            continue
        if not app.tracker.create_once("alerts", f"stuck__p{phase}__{day}__g{gen}", {"missing": missing}):
            continue
        msg = (f"phase {phase} for {day} has waited more than {app.settings.stuck_phase_seconds:.0f} s on {missing} "
               f"({', '.join(states[(n, day)].status for n in missing)}); re-run them: "
               f"cascade trigger --date {day} --phase {phase} " + " ".join(f"--processor {n}" for n in missing))
        app.alerts.send(Alert(f"Phase {phase} STUCK for {day}", msg,
                              labels={"pipeline": app.pipeline.name, "phase": phase, "date": day}))
        report.stuck.append(msg)


def _d(text: str):
    from datetime import date
    return date.fromisoformat(text)
