"""The backfill's wavefront on threads: runs a plan's partitions as soon as their inputs are complete.

A partition (processor, date) is ready when every upstream partition it reads that is *inside the
backfill's target set* has succeeded: same-date upstreams, and every expected date of its lookback
window (window dates outside the target are not waited for; the backfill runs in backfill mode, so
strict checks are skipped and the preflight covers history). Ready partitions start by critical
path (the longest remaining chain through their dependents and their table's queue first, then the
earliest date; ``order="earliest"`` for date first). Every decision - readiness, the order
of ready partitions, per-table slots (at most ``max_merges_per_table`` MERGEs against one output
table at a time), the worker count, the optional rate limit, attempts and delayed retries, the quota
slowdown, the blocked closure - is the pure ``wavefront.Wavefront``'s. This module owns the rest: the
graph of a plan, the pool of ``workers`` threads running partitions through an executor
(``executors``: ``PhaseRunner.run_partition`` in this process - lease, dedupe, MERGE, record - or a
dispatch to the deployed phase function followed in Firestore), the translation of what a partition
returned into a result kind, Ctrl-C, the progress line, the report, and recording in Firestore.

Result kinds: a success (or "done meanwhile by another run"); a transient failure
(``Outcome.retry``, a transient exception, a superseded or lost run) retried with backoff a bounded
number of times; a partition busy elsewhere, retried until ``busy_wait_s``; a quota or rate limit
(``errors.classify``: BigQuery's quotaExceeded, rateLimitExceeded, ...), which spends no attempt
and slows the whole wavefront down (the progress line and the report say so); a permanent failure,
recorded with its error, and every partition depending on it (transitively) reported - and recorded
in Firestore - as "blocked by <upstream>@<date>" without running; the rest continue. A partition
returns its table's slot when its write job ends (the executor's ``on_written``), before its quality
gates' read queries. When all of a phase's partitions of a date have succeeded, the phase's
completion is published through ``handoff.hand_off`` (in daily mode with strict checks: backfill
mode never leaks) for the phases in ``cascade_phases`` (those whose next phase is not part of the
backfill, unless the user asked to skip downstream triggers).

Ctrl-C (or ``stop()``) stops submitting, waits for the running partitions (they record their own
state), and returns a report marked interrupted. The main loop never sleeps blindly: it waits on an
event that workers set, with a timeout bounded by the wavefront's next wake-up and the progress tick.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Iterable

from cascade.backfill.executors import partition_executor
from cascade.backfill.plan import Node, Plan
from cascade.backfill.wavefront import (
    BUSY,
    CRITICAL_PATH,
    FAILED,
    OK,
    PERMANENT,
    QUOTA,
    SUCCEEDED,
    TRANSIENT,
    Finish,
    Policy,
    Step,
    Unit,
    Wavefront,
)
from cascade.definition.model import Pipeline
from cascade.errors import is_quota, is_transient
from cascade.runtime import handoff
from cascade.runtime.app import App
from cascade.runtime.durations import duration
from cascade.runtime.logs import get_logger
from cascade.runtime.messages import Trigger, new_correlation_id
from cascade.runtime.runner import Outcome
from cascade.state.status import Status

logger = get_logger("backfill")
OK_STATUSES = (Status.SUCCESS, Status.DONE, Status.SKIPPED)


@dataclass
class Result:
    """What one execution of a partition returned (an Outcome, or the exception it raised)."""

    node: Node
    outcome: Outcome | None
    error: BaseException | None
    started: float
    finished: float
    generation: int


@dataclass
class RunReport:
    total: int
    succeeded: list[str] = field(default_factory=list)      # ran and succeeded now
    already_done: list[str] = field(default_factory=list)   # the runner said done (someone else did it)
    failed: dict[str, str] = field(default_factory=dict)    # label -> error
    blocked: dict[str, str] = field(default_factory=dict)   # label -> "blocked by <upstream>@<date>"
    not_run: list[str] = field(default_factory=list)        # left when interrupted
    retries: int = 0
    quota_hits: int = 0                                     # results that hit a quota or rate limit
    quota_lowest_concurrency: int = 0                       # the lowest concurrency it slowed down to
    quota_waited_s: float = 0.0                             # time submissions were paused on quota
    interrupted: bool = False
    elapsed_s: float = 0.0
    timings: dict[str, tuple[float, float]] = field(default_factory=dict)  # label -> (start, end) monotonic
    downstream: dict[str, str] = field(default_factory=dict)  # "phase@date" -> published/already-claimed/...
    warnings: list[str] = field(default_factory=list)

    @property
    def finished(self) -> int:
        return len(self.succeeded) + len(self.already_done) + len(self.failed) + len(self.blocked)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked and not self.interrupted and not self.not_run

    def to_dict(self) -> dict[str, Any]:
        return {"partitions": self.total, "succeeded": len(self.succeeded), "already_done": len(self.already_done),
                "failed": self.failed, "blocked": self.blocked, "not_run": len(self.not_run),
                "retries": self.retries, "interrupted": self.interrupted,
                "quota": {"hits": self.quota_hits, "lowest_concurrency": self.quota_lowest_concurrency,
                          "paused_s": round(self.quota_waited_s, 1)}, "elapsed_s": round(self.elapsed_s, 3),
                "downstream": dict(Counter(self.downstream.values())), "warnings": self.warnings}


def partition_deps(pipeline: Pipeline, nodes: Iterable[Node]) -> dict[tuple[str, str], set[tuple[str, str]]]:
    """For each node, the nodes it waits for: its upstreams' partitions of the same date and of every
    expected date of its lookback window, among ``nodes``."""
    nodes = list(nodes)
    keys = {n.key for n in nodes}
    deps: dict[tuple[str, str], set[tuple[str, str]]] = {n.key: set() for n in nodes}
    cal = pipeline.calendar
    for node in nodes:
        for up in pipeline.processor(node.processor).upstreams:
            day, last = up.window(node.day, cal)
            while day <= last:
                k = (up.processor, day.isoformat())
                if k in keys and cal.is_expected(day):
                    deps[node.key].add(k)
                day += timedelta(days=1)
    return deps


def units_of(nodes: Iterable[Node]) -> list[Unit]:
    """Nodes as wavefront units: slot group = output table, rank = (date, phase, position in the
    pipeline)."""
    return [Unit(n.key, n.table, (n.day, n.phase, n.order)) for n in nodes]


@dataclass(frozen=True)
class SchedulerOptions:
    """How a backfill's wavefront runs: limits, retries, quota slowdown, order, executor, hand-offs."""

    workers: int = 4
    max_merges_per_table: int = 2
    max_rate: float | None = None          # partition starts per second, None for no limit
    max_attempts: int = 3
    backoff_base: float = 0.5
    busy_wait_s: float | None = None       # None: twice the partition lease
    quota_backoff_base: float = 5.0
    quota_backoff_max: float = 300.0
    quota_wait_s: float = 3600.0
    order: str = CRITICAL_PATH             # of ready partitions: wavefront.ORDERS
    cascade_phases: frozenset[int] = frozenset()
    correlation_id: str = ""
    executor: str = "in-process"
    partition_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_merges_per_table < 1:
            raise ValueError("workers and max_merges_per_table must be at least 1")
        object.__setattr__(self, "cascade_phases", frozenset(self.cascade_phases))

    def policy(self, lease_seconds: float) -> Policy:
        return Policy(workers=self.workers, max_per_group=self.max_merges_per_table, max_rate=self.max_rate,
                      max_attempts=self.max_attempts, backoff_base=self.backoff_base,
                      busy_wait_s=self.busy_wait_s if self.busy_wait_s is not None else 2 * lease_seconds,
                      quota_backoff_base=self.quota_backoff_base, quota_backoff_max=self.quota_backoff_max,
                      quota_wait_s=self.quota_wait_s, order=self.order)


class Scheduler:
    def __init__(self, app: App, plan: Plan, options: SchedulerOptions = SchedulerOptions(), *,
                 input_gaps: dict[tuple[str, str], str] | None = None, progress: Any = None,
                 on_result: Callable[[Result, "Scheduler"], None] | None = None) -> None:
        """``input_gaps``: partitions whose inputs outside the backfill are missing (label -> reason):
        failed up front, never run. ``on_result(result, scheduler)`` is called after each result."""
        self.app, self.plan, self.pipeline = app, plan, app.pipeline
        self.options = options
        self.correlation_id = options.correlation_id or new_correlation_id()
        self.executor: Any = None  # created when the run starts (a listener for the functions executor)
        self.wavefront: Wavefront | None = None  # created when the run starts, from the options then
        # A partition returns its table's MERGE slot when its write job ends (before its quality
        # gates' read queries, which are not DML): workers report it, the main loop applies it.
        self._slot_lock = threading.Lock()
        self._slot_returned: set[tuple[str, str]] = set()
        self.progress, self.on_result = progress, on_result
        self.nodes = {n.key: n for n in plan.nodes}
        self.input_gaps = {k: v for k, v in (input_gaps or {}).items() if k in self.nodes}
        self.generation = {k: n.generation for k, n in self.nodes.items()}
        self.report = RunReport(total=len(self.nodes))
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._done: deque[Result] = deque()
        self._build_graph()

    # ------------------------------------------------------------------ graph
    def _build_graph(self) -> None:
        self.deps = partition_deps(self.pipeline, self.nodes.values())
        # Partitions per (phase, date) still to succeed, for completions.
        self.open_per_phase_date: Counter = Counter((n.phase, n.day) for n in self.nodes.values())

    def upstreams_of(self, key: tuple[str, str]) -> set[tuple[str, str]]:
        """In-target partitions ``key`` waits for (for tests and the benchmark's critical path)."""
        return set(self.deps[key])

    def units(self) -> list[Unit]:
        return units_of(self.nodes.values())

    @property
    def workers(self) -> int:
        return self.options.workers

    @property
    def concurrency(self) -> int:
        """Partitions allowed to run at once now (lowered on a quota wall, raised again by successes)."""
        return self.wavefront.concurrency if self.wavefront is not None else self.options.workers

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Stop submitting; running partitions finish and record their state (Ctrl-C does the same)."""
        self._stop.set()
        self._wake.set()

    # ------------------------------------------------------------------ main loop
    def run(self) -> RunReport:
        self.executor = partition_executor(self.options.executor, self.app, self.correlation_id,
                                     self.options.partition_timeout_s)
        try:
            return self._run()
        finally:
            self.executor.close()

    def _run(self) -> RunReport:
        started = time.monotonic()
        wf = self.wavefront = Wavefront(self.units(), self.deps, self.options.policy(self.app.settings.lease_seconds))
        submitted: dict[tuple[str, str], Any] = {}
        interrupts = 0
        pool = ThreadPoolExecutor(max_workers=self.options.workers, thread_name_prefix="backfill")
        aux = ThreadPoolExecutor(max_workers=2, thread_name_prefix="backfill-aux")
        aux_futures: list[Any] = []
        for key, reason in self.input_gaps.items():
            self.report.failed[self.nodes[key].label] = reason
            aux_futures.append(aux.submit(self._record_input_gap, self.nodes[key], reason))
            self._block_dependents(wf.fail(key, reason), aux, aux_futures)
        for ph in self.options.cascade_phases:
            for day in self.plan.expected_dates:
                if self.open_per_phase_date[(ph, day)] == 0:
                    aux_futures.append(aux.submit(self._complete, ph, day))
        self._draw()
        try:
            while True:
                try:
                    if self._stop.is_set():
                        wf.stop()
                    now = time.monotonic()
                    self._return_slots()
                    for key in wf.take_ready(now):
                        submitted[key] = pool.submit(self._execute, self.nodes[key], self.generation[key])
                    if wf.finished:
                        # Every running partition has returned and its result was handled.
                        break
                    timeout = 0.25
                    wake = wf.next_wakeup(now)
                    if wake is not None:
                        timeout = min(timeout, max(0.0, wake - time.monotonic()))
                    self._wake.wait(timeout)
                    self._wake.clear()
                    while self._done:
                        res = self._done.popleft()
                        submitted.pop(res.node.key, None)
                        self._handle(res, aux, aux_futures)
                        if self.on_result:
                            self.on_result(res, self)
                    self._draw()
                except KeyboardInterrupt:
                    interrupts += 1
                    self.stop()
                    wf.stop()
                    self.report.interrupted = True
                    for key in [k for k in wf.running if k not in submitted]:
                        wf.unstart(key)  # taken but never submitted: it did not start
                    if interrupts > 1:
                        break  # a second Ctrl-C: stop waiting for the running partitions
        finally:
            pool.shutdown(wait=interrupts < 2, cancel_futures=True)
            for f in aux_futures:
                try:
                    f.result(timeout=60)
                except Exception as exc:  # noqa: BLE001 - reported, never fatal
                    self.report.warnings.append(f"{type(exc).__name__}: {exc}")
            aux.shutdown(wait=True)
        if self._stop.is_set():
            self.report.interrupted = True
        self._sync_counters()
        if self.report.quota_hits:
            r = self.report
            r.warnings.append(
                f"BigQuery quota or rate limit hit {r.quota_hits} time(s): the backfill slowed down (concurrency "
                f"lowered to {r.quota_lowest_concurrency} of {self.workers}, submissions paused "
                f"{duration(r.quota_waited_s)} in all) and resumed; no attempt was spent on it")
        self.report.not_run = sorted(self.nodes[k].label for k in wf.not_run())
        self.report.elapsed_s = time.monotonic() - started
        self._draw(final=True)
        return self.report

    def _handle(self, res: Result, aux: ThreadPoolExecutor, futures: list) -> None:
        """Apply one result: the wavefront decides, this records and reports."""
        wf, node = self.wavefront, res.node
        self._return_slots()
        finish, category = self._finish(res)
        step = wf.on_result(node.key, time.monotonic(), finish)
        self._sync_counters()
        if step.changed:
            self._draw_now = True
        if step.state == SUCCEEDED:
            (self.report.succeeded if category == SUCCEEDED else self.report.already_done).append(node.label)
            self.report.timings[node.label] = (res.started, res.finished)
            self._phase_progress(node, aux, futures)
        elif step.state == FAILED:
            (self.report.blocked if category == Status.BLOCKED else self.report.failed)[node.label] = step.error
            self.report.timings[node.label] = (res.started, res.finished)
            self._block_dependents(step, aux, futures)

    def _sync_counters(self) -> None:
        wf, r = self.wavefront, self.report
        r.retries, r.quota_hits = wf.retries, wf.quota_hits
        r.quota_lowest_concurrency, r.quota_waited_s = wf.quota_lowest_concurrency, wf.quota_paused_s

    # ------------------------------------------------------------------ workers
    def _execute(self, node: Node, generation: int) -> None:
        trig = Trigger(pipeline=self.pipeline.name, phase=node.phase, data_date=node.day, processors=(node.processor,),
                       mode="backfill", skip_downstream_trigger=True, correlation_id=self.correlation_id,
                       generation=generation)
        started = time.monotonic()
        outcome, error = None, None
        try:
            outcome = self.executor.run(node, trig, on_written=lambda: self._write_ended(node.key))
        except Exception as exc:  # noqa: BLE001 - classified by the main loop
            error = exc
        self._done.append(Result(node, outcome, error, started, time.monotonic(), generation))
        self._wake.set()

    def _write_ended(self, key: tuple[str, str]) -> None:
        with self._slot_lock:
            self._slot_returned.add(key)
        self._wake.set()

    def _return_slots(self) -> None:
        """Apply the slots workers returned since the last look (main loop only)."""
        with self._slot_lock:
            keys, self._slot_returned = self._slot_returned, set()
        for key in keys:
            self.wavefront.release_slot(key)

    def _finish(self, res: Result) -> tuple[Finish, str]:
        """What a partition's attempt came to, as a wavefront result kind, and how a final state is
        reported: succeeded / already_done (ok), or failed / blocked (the runner said Status.BLOCKED)."""
        o, started = res.outcome, res.started
        if o is not None and o.status in OK_STATUSES:
            return Finish(OK, started), SUCCEEDED if o.status == Status.SUCCESS else "already_done"
        error = o.error if o is not None else f"{type(res.error).__name__}: {res.error}"
        if (o.quota and o.retry) if o is not None else (res.error is not None and is_quota(res.error)):
            return Finish(QUOTA, started, error), FAILED
        if o is not None and o.status == Status.BUSY:
            return Finish(BUSY, started, error), FAILED
        if o is not None and o.status == Status.SUPERSEDED:
            part = self.app.tracker.partition(res.node.processor, res.node.day)
            if part.status == Status.SUCCESS:
                return Finish(OK, started), "already_done"
            self.generation[res.node.key] = part.generation  # someone moved it to a newer generation: follow
        transient = (o.retry or o.status in (Status.SUPERSEDED, Status.LOST)) if o is not None else is_transient(res.error)
        category = Status.BLOCKED if o is not None and o.status == Status.BLOCKED else FAILED
        return Finish(TRANSIENT if transient else PERMANENT, started, error), category

    def quota_note(self) -> str:
        """What the progress line says while the wavefront is slowed down by a quota ("" otherwise)."""
        return self.wavefront.quota_note(time.monotonic()) if self.wavefront is not None else ""

    def _block_dependents(self, step: Step, aux: ThreadPoolExecutor, futures: list) -> None:
        root_label = self.nodes[step.key].label
        for key in step.blocked:
            node = self.nodes[key]
            self.report.blocked[node.label] = f"blocked by {root_label}"
            futures.append(aux.submit(self._record_blocked, node, root_label))

    def _record_input_gap(self, node: Node, reason: str) -> None:
        self.app.tracker.record_outcome(
            node.processor, node.phase, node.day, self.generation[node.key], Status.FAILED, reason,
            context={"mode": "backfill", "correlation_id": self.correlation_id, "strict_mode": False},
            extra={"transient": False, "input_gap": True})

    def _record_blocked(self, node: Node, root_label: str) -> None:
        proc, day = root_label.split("@")
        ph = self.pipeline.phase(node.phase)
        detail = f"{ph.title} BLOCKED: backfill upstream {root_label} failed; {node.label} was not run"
        resolution = (f"fix {proc} for {day}, then re-run the same backfill command (it runs only what is "
                      f"missing, failed or blocked)")
        self.app.tracker.record_outcome(
            node.processor, node.phase, node.day, self.generation[node.key], Status.BLOCKED, f"{detail}; resolution: {resolution}",
            blocked={"check": "Backfill dependency", "upstream": proc, "dates": [day], "detail": detail,
                     "resolution": resolution},
            context={"mode": "backfill", "correlation_id": self.correlation_id, "strict_mode": False})

    # ------------------------------------------------------------------ completions
    def _phase_progress(self, node: Node, aux: ThreadPoolExecutor, futures: list) -> None:
        slot = (node.phase, node.day)
        self.open_per_phase_date[slot] -= 1
        if self.open_per_phase_date[slot] == 0 and node.phase in self.options.cascade_phases:
            futures.append(aux.submit(self._complete, node.phase, node.day))

    def _complete(self, phase: int, day) -> None:
        """Hand a phase whose partitions of ``day`` all settled on to the next phase (``handoff``:
        claimed at the phase's newest generation, published in daily mode with strict checks)."""
        done = handoff.hand_off(self.app, phase, day, mode="backfill", strict_mode=True,
                                correlation_id=self.correlation_id, claimer=f"backfill-{self.correlation_id}")
        self.report.downstream[f"{phase}@{day.isoformat()}"] = done.downstream

    # ------------------------------------------------------------------ progress
    _draw_now = False  # the quota state changed: draw the progress line now (also in a log)

    def _draw(self, final: bool = False) -> None:
        if self.progress is None:
            return
        r = self.report
        force, self._draw_now = self._draw_now, False
        self.progress.update(done=len(r.succeeded) + len(r.already_done), failed=len(r.failed) + len(r.blocked),
                             running=len(self.wavefront.running) if self.wavefront and not final else 0, total=r.total, final=final, note=self.quota_note(),
                             force=force)
