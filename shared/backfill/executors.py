"""Where a backfill's partitions run: in this process, or on the deployed phase functions.

The scheduler (the wavefront: plan, readiness, per-table caps, retries, progress) is the same for
both; it hands each ready partition to an executor and gets an ``Outcome`` back.

* ``InProcessExecutor`` (default): ``PhaseRunner.run_partition`` on the scheduler's worker thread
  (lease, fence, MERGE, record) - BigQuery does the work, this machine waits.
* ``FunctionsExecutor`` (``cascade backfill --executor functions``): publishes a single-processor,
  backfill-mode trigger to the partition's phase topic - the phase function (Cloud Run autoscaling
  in production, the local functions-framework servers on the emulators) runs it exactly like any
  trigger - and follows the partition's state in Firestore through a listener on the backfill's
  partitions (its correlation id), no polling loop. Stopping the CLI loses nothing: dispatched
  partitions finish in the functions, and re-running the command plans from state and dispatches
  only what is still missing or failed (a duplicate dispatch of a running partition is deduped by
  the runner's lease).

A functions-executed partition is settled when its state for this backfill (its correlation id) is
final: success (at this generation or newer), a permanent failure, blocked or skipped. Transient
failures stay with Pub/Sub (redelivery with backoff, the runner's ``max_attempts``). A partition
with no final state after ``timeout_s`` (e.g. its message was dead-lettered without running) fails
with the command that shows the phase's dead letters.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from cascade.backfill.plan import Node
from cascade.runtime.app import App
from cascade.runtime.messages import Trigger
from cascade.runtime.runner import Outcome, PhaseRunner
from cascade.state.status import Status
from cascade.state.tracker import Partition

EXECUTORS = ("in-process", "functions")
# The listener is the wake-up; this bounded re-read only matters if the listener stream broke.
_RECHECK_SECONDS = 5.0


class Executor(Protocol):
    def run(self, node: Node, trigger: Trigger, on_written: Any = None) -> Outcome:
        """Run ``node`` for ``trigger`` (single processor, backfill mode) and return its outcome;
        ``on_written()`` (if the executor can tell) once the partition's write job has ended."""

    def close(self) -> None:
        """Release what the executor holds (listeners)."""


class InProcessExecutor:
    def __init__(self, app: App) -> None:
        self.runner = PhaseRunner(app)
        self.pipeline = app.pipeline

    def run(self, node: Node, trigger: Trigger, on_written: Any = None) -> Outcome:
        # Inputs inside the range are the wavefront's own dependencies; those outside it were
        # verified by the engine before the run (``validate.outside_inputs``).
        return self.runner.run_partition(self.pipeline.processor(node.processor), trigger,
                                         trigger_id=trigger.correlation_id, inputs_verified=True,
                                         on_written=on_written)

    def close(self) -> None:
        pass


class FunctionsExecutor:
    def __init__(self, app: App, correlation_id: str, timeout_s: float = 1800.0) -> None:
        self.app, self.correlation_id, self.timeout_s = app, correlation_id, timeout_s
        self._cond = threading.Condition()
        self._seen: dict[tuple[str, str], Partition] = {}
        self._version = 0
        self.dispatched = 0
        self._watch = app.tracker.watch_partitions("correlation_id", correlation_id, self._on_change)

    def _on_change(self, parts: list[Partition]) -> None:
        with self._cond:
            for p in parts:
                self._seen[(p.processor, p.data_date)] = p
            self._version += 1
            self._cond.notify_all()

    def run(self, node: Node, trigger: Trigger, on_written: Any = None) -> Outcome:
        # The write happens in the function: the table's slot is held until the partition is final.
        topic = self.app.pipeline.topic(node.phase)
        self.app.publisher.publish(topic, trigger.to_json(), trigger.attributes())
        with self._cond:
            self.dispatched += 1
        deadline = time.monotonic() + self.timeout_s
        key, read_direct = node.key, True
        while True:
            with self._cond:
                version, part = self._version, self._seen.get(key)
            outcome = self._settled(part, trigger) if part is not None else None
            if outcome is None and read_direct:  # first look, or the listener was quiet: read once
                part = self.app.tracker.partition(node.processor, node.day)
                outcome = self._settled(part, trigger)
            if outcome is not None:
                return outcome
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                state = part.status if part is not None else Status.MISSING
                return Outcome(node.processor, Status.FAILED, part.run_id if part else "", retry=False,
                               error=(f"no result from the phase {node.phase} function after {self.timeout_s:.0f} s "
                                      f"(state: {state}); see cascade dlq list --phase {node.phase}, then "
                                      f"re-run this backfill"))
            with self._cond:
                woken = self._version != version or self._cond.wait(min(remaining, _RECHECK_SECONDS))
            read_direct = not woken

    def _settled(self, part: Partition, trigger: Trigger) -> Outcome | None:
        """The outcome once ``part`` is final for this backfill, else None (still to come)."""
        if part.status == Status.SUCCESS and part.generation >= trigger.generation:
            ours = part.raw.get("correlation_id") == self.correlation_id
            return Outcome(part.processor, Status.SUCCESS if ours else Status.DONE, part.run_id, part.record_count)
        if part.raw.get("correlation_id") != self.correlation_id or part.generation < trigger.generation:
            return None  # not (yet) a state of this backfill's run: an older state of the partition
        if part.status == Status.FAILED and not part.raw.get("transient"):
            return Outcome(part.processor, Status.FAILED, part.run_id, error=part.error)
        if part.status == Status.BLOCKED:
            return Outcome(part.processor, Status.BLOCKED, part.run_id, error=part.error)
        if part.status == Status.SKIPPED:
            return Outcome(part.processor, Status.SKIPPED, part.run_id, error=part.error)
        return None

    def close(self) -> None:
        self._watch.unsubscribe()


def partition_executor(name: str, app: App, correlation_id: str, timeout_s: float = 1800.0) -> Any:
    if name == "functions":
        return FunctionsExecutor(app, correlation_id, timeout_s)
    return InProcessExecutor(app)
