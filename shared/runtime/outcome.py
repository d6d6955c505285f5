"""What a phase invocation did: one ``Outcome`` per processor, and the ``PhaseResult`` of the phase
(complete? what happened downstream? retry?)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cascade.runtime.messages import Trigger


@dataclass
class Outcome:
    """What happened to one processor in this invocation."""

    processor: str
    status: str  # success, failed, blocked, skipped, done (already), busy, waiting, superseded, lost
    run_id: str = ""
    record_count: int | None = None
    error: str = ""
    retry: bool = False
    checks: dict[str, Any] | None = None
    quota: bool = False  # failed on a quota or rate limit: retry slowly, attempts not spent
    held_by: str = ""  # busy: the live run (another delivery) this one may wait for


@dataclass
class PhaseResult:
    trigger: Trigger
    outcomes: list[Outcome] = field(default_factory=list)
    complete: bool = False
    downstream: str = ""  # published, already-claimed, skipped-by-request, none (last phase), ""

    @property
    def retry(self) -> bool:
        return any(o.retry for o in self.outcomes)

    def summary(self) -> dict[str, Any]:
        return {"phase": self.trigger.phase, "date": self.trigger.data_date.isoformat(),
                "generation": self.trigger.generation, "complete": self.complete, "downstream": self.downstream,
                "processors": {o.processor: o.status for o in self.outcomes}}
