"""The dependency-aware wavefront: runs a plan's partitions as soon as their inputs are complete.

A partition (processor, date) is ready when every upstream partition it reads that is *inside the
backfill's target set* has succeeded: same-date upstreams, and every expected date of its lookback
window (window dates outside the target are not waited for; the backfill runs in backfill mode, so
strict checks are skipped and the preflight covers history). Ready partitions run on a pool of
``workers`` threads through an executor (``executors``: ``PhaseRunner.run_partition`` in this
process - lease, dedupe, MERGE, record - or a dispatch to the deployed phase function followed in
Firestore), earliest
date first then phase, so the wavefront slides across dates and phases at once; at most
``max_merges_per_table`` run against one output table at a time; an optional rate limit spaces
submissions.

Failures: a transient one (``Outcome.retry``, a transient exception, a partition busy elsewhere) is
retried with exponential backoff, a bounded number of times. A quota or rate limit (``errors.classify``:
BigQuery's quotaExceeded, rateLimitExceeded, ...) is its own class: it spends none of those attempts;
the whole wavefront slows down instead - submissions pause for a backoff that grows with each new
quota wall (``quota_backoff_base`` doubling up to ``quota_backoff_max``) and the concurrency is halved
(down to one); each run of successes raises it again by one until it is back to ``workers``. A
partition fails on quota only after ``quota_wait_s`` of waiting on it (bounded in time, never by a
count). The progress line and the report say so. A permanent one is recorded with its
error and every partition depending on it (transitively) is reported - and recorded in Firestore -
as "blocked by <upstream>@<date>" without running; the rest continue. When all of a phase's
partitions of a date have succeeded, the phase's completion is published through
``handoff.hand_off`` (in daily mode with strict checks: backfill mode never leaks) for the phases in ``cascade_phases`` (those whose next phase is not part
of the backfill, unless the user asked to skip downstream triggers).

Ctrl-C (or ``stop()``) stops submitting, waits for the running partitions (they record their own
state), and returns a report marked interrupted. The main loop never sleeps blindly: it waits on an
event that workers set, with a timeout bounded by the next retry's due time and the progress tick.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable

from cascade.runtime import handoff
from cascade.runtime.app import App
from cascade.runtime.durations import duration
from cascade.errors import is_quota, is_transient
from cascade.runtime.logs import get_logger
from cascade.runtime.messages import Trigger, new_correlation_id
from cascade.runtime.runner import Outcome
from cascade.state.status import Status
from cascade.state.tracker import BLOCKED, SUCCESS
from cascade.backfill.executors import executor_for
from cascade.backfill.plan import Node, Plan, upstream_window

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


class Scheduler:
    def __init__(self, app: App, plan: Plan, *, workers: int = 4, max_merges_per_table: int = 2,
                 max_rate: float | None = None, max_attempts: int = 3, backoff_base: float = 0.5,
                 cascade_phases: set[int] | frozenset[int] = frozenset(), correlation_id: str = "",
                 progress: Any = None, on_result: Callable[[Result, "Scheduler"], None] | None = None,
                 busy_wait_s: float | None = None, input_gaps: dict[tuple[str, str], str] | None = None,
                 executor: str = "in-process", partition_timeout_s: float = 1800.0,
                 quota_backoff_base: float = 5.0, quota_backoff_max: float = 300.0,
                 quota_wait_s: float = 3600.0) -> None:
        if workers < 1 or max_merges_per_table < 1:
            raise ValueError("workers and max_merges_per_table must be at least 1")
        self.app, self.plan, self.pipeline = app, plan, app.pipeline
        self.workers, self.max_per_table = workers, max_merges_per_table
        self.interval = 1.0 / max_rate if max_rate else 0.0
        self.max_attempts, self.backoff_base = max_attempts, backoff_base
        self.busy_wait_s = busy_wait_s if busy_wait_s is not None else 2 * app.settings.lease_seconds
        # Quota: its own class, slowed down for rather than retried a bounded number of times.
        self.quota_backoff_base, self.quota_backoff_max = quota_backoff_base, quota_backoff_max
        self.quota_wait_s = quota_wait_s
        self.concurrency = workers       # lowered on a quota wall, raised again by successes
        self._quota_streak = 0           # quota walls since the concurrency was last fully restored
        self._quota_until = 0.0          # monotonic: no submission before this
        self._quota_cut_at = -1.0        # monotonic: when the concurrency was last lowered
        self._quota_successes = 0        # successes since the last change of the concurrency
        self.cascade_phases = set(cascade_phases)
        self.correlation_id = correlation_id or new_correlation_id()
        self.executor_name, self.partition_timeout_s = executor, partition_timeout_s
        self.executor: Any = None  # created when the run starts (a listener for the functions executor)
        # A partition returns its table's MERGE slot when its write job ends (before its quality
        # gates' read queries, which are not DML): workers report it, the main loop applies it once.
        self._slot_lock = threading.Lock()
        self._slot_returned: set[tuple[str, str]] = set()  # reported by a worker, not applied yet
        self._slot_applied: set[tuple[str, str]] = set()   # applied for the current attempt
        self.progress, self.on_result = progress, on_result
        self.nodes = {n.key: n for n in plan.nodes}
        # Partitions whose inputs outside the backfill are missing: failed up front, never run.
        self.input_gaps = {k: v for k, v in (input_gaps or {}).items() if k in self.nodes}
        self.generation = {k: n.generation for k, n in self.nodes.items()}
        self.report = RunReport(total=len(self.nodes))
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._done: deque[Result] = deque()
        self._build_graph()

    # ------------------------------------------------------------------ graph
    def _build_graph(self) -> None:
        self.deps: dict[tuple[str, str], set[tuple[str, str]]] = {k: set() for k in self.nodes}
        self.dependents: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        cal = self.pipeline.calendar
        for key, node in self.nodes.items():
            proc = self.pipeline.processor(node.processor)
            for up in proc.upstreams:
                day, last = upstream_window(up, node.day, cal)
                while day <= last:
                    k = (up.processor, day.isoformat())
                    if k in self.nodes and cal.is_expected(day):
                        self.deps[key].add(k)
                        self.dependents[k].append(key)
                    day += timedelta(days=1)
        # Partitions per (phase, date) still to succeed, for completions.
        self.open_per_phase_date: Counter = Counter((n.phase, n.day) for n in self.nodes.values())

    def upstreams_of(self, key: tuple[str, str]) -> set[tuple[str, str]]:
        """In-target partitions ``key`` waits for (for tests and the benchmark's critical path)."""
        return set(self.deps[key])

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Stop submitting; running partitions finish and record their state (Ctrl-C does the same)."""
        self._stop.set()
        self._wake.set()

    # ------------------------------------------------------------------ main loop
    def run(self) -> RunReport:
        self.executor = executor_for(self.executor_name, self.app, self.correlation_id, self.partition_timeout_s)
        try:
            return self._run()
        finally:
            self.executor.close()

    def _run(self) -> RunReport:
        started = time.monotonic()
        waiting = {k: len(d) for k, d in self.deps.items()}
        ready: list[tuple] = []
        delayed: list[tuple[float, int, tuple[str, str]]] = []
        seq = itertools.count()
        attempts: Counter = Counter()
        busy_since: dict[tuple[str, str], float] = {}
        quota_since: dict[tuple[str, str], float] = {}
        table_inflight: Counter = Counter()
        inflight: dict[tuple[str, str], Any] = {}
        settled: set[tuple[str, str]] = set()
        next_slot = 0.0
        interrupts = 0

        def push_ready(key: tuple[str, str]) -> None:
            n = self.nodes[key]
            heapq.heappush(ready, (n.day, n.phase, n.order, key))

        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="backfill")
        aux = ThreadPoolExecutor(max_workers=2, thread_name_prefix="backfill-aux")
        aux_futures: list[Any] = []
        for key, reason in self.input_gaps.items():
            settled.add(key)
            self.report.failed[self.nodes[key].label] = reason
            aux_futures.append(aux.submit(self._record_input_gap, self.nodes[key], reason))
            self._block_dependents(key, settled, aux, aux_futures)
        for key, count in waiting.items():
            if count == 0 and key not in settled:
                push_ready(key)
        if self.cascade_phases:
            for ph in self.cascade_phases:
                for day in self.plan.expected_dates:
                    if self.open_per_phase_date[(ph, day)] == 0:
                        aux_futures.append(aux.submit(self._complete, ph, day))
        self._draw(inflight)
        try:
            while True:
                try:
                    now = time.monotonic()
                    self._return_slots(table_inflight)
                    if not self._stop.is_set():
                        while delayed and delayed[0][0] <= now:
                            push_ready(heapq.heappop(delayed)[2])
                        held: list[tuple] = []
                        while ready and len(inflight) < self.concurrency and now >= self._quota_until:
                            if self.interval and now < next_slot:
                                break
                            item = heapq.heappop(ready)
                            node = self.nodes[item[3]]
                            if table_inflight[node.table] >= self.max_per_table:
                                held.append(item)
                                continue
                            table_inflight[node.table] += 1
                            inflight[node.key] = pool.submit(self._execute, node, self.generation[node.key])
                            next_slot = max(now, next_slot) + self.interval
                        for item in held:
                            heapq.heappush(ready, item)
                    if self._stop.is_set():
                        # Every running partition has returned (its future is done only after its result
                        # was queued) and every result was handled: nothing is left running.
                        if all(f.done() for f in inflight.values()) and not self._done:
                            break
                    elif not inflight and not ready and not delayed:
                        break
                    timeout = 0.25
                    if delayed:
                        timeout = min(timeout, max(0.0, delayed[0][0] - time.monotonic()))
                    if self.interval and ready:
                        timeout = min(timeout, max(0.0, next_slot - time.monotonic()))
                    if ready and self._quota_until > now:
                        timeout = min(timeout, max(0.0, self._quota_until - time.monotonic()))
                    self._wake.wait(timeout)
                    self._wake.clear()
                    while self._done:
                        res = self._done.popleft()
                        key = res.node.key
                        inflight.pop(key, None)
                        self._return_slots(table_inflight)
                        if key in self._slot_applied:
                            self._slot_applied.discard(key)  # returned when its write ended
                        else:
                            table_inflight[res.node.table] -= 1
                        verdict = self._classify(res, attempts, busy_since, quota_since)
                        if verdict == "quota":  # attempts not spent: the wavefront slows down
                            self.report.retries += 1
                            due = self._slow_down(res)
                            heapq.heappush(delayed, (due, next(seq), key))
                        elif verdict == "retry":
                            attempts[key] += 1
                            self.report.retries += 1
                            delay = self._backoff(res, attempts[key])
                            heapq.heappush(delayed, (time.monotonic() + delay, next(seq), key))
                        elif verdict == "ok":
                            self._speed_up()
                            settled.add(key)
                            self.report.timings[res.node.label] = (res.started, res.finished)
                            for dep in self.dependents.get(key, ()):
                                waiting[dep] -= 1
                                if waiting[dep] == 0 and dep not in settled:
                                    push_ready(dep)
                            self._phase_progress(res.node, aux, aux_futures)
                        else:  # failed permanently
                            settled.add(key)
                            self.report.timings[res.node.label] = (res.started, res.finished)
                            self._block_dependents(key, settled, aux, aux_futures)
                        if self.on_result:
                            self.on_result(res, self)
                    self._draw(inflight)
                except KeyboardInterrupt:
                    interrupts += 1
                    self.stop()
                    self.report.interrupted = True
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
        if self.report.quota_hits:
            r = self.report
            r.warnings.append(
                f"BigQuery quota or rate limit hit {r.quota_hits} time(s): the backfill slowed down (concurrency "
                f"lowered to {r.quota_lowest_concurrency} of {self.workers}, submissions paused "
                f"{duration(r.quota_waited_s)} in all) and resumed; no attempt was spent on it")
        self.report.not_run = sorted(self.nodes[k].label for k in self.nodes if k not in settled)
        self.report.elapsed_s = time.monotonic() - started
        self._draw({}, final=True)
        return self.report

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

    def _return_slots(self, table_inflight: Counter) -> None:
        """Apply the slots workers returned since the last look (main loop only)."""
        with self._slot_lock:
            keys, self._slot_returned = self._slot_returned, set()
        for key in keys:
            table_inflight[self.nodes[key].table] -= 1
            self._slot_applied.add(key)

    def _classify(self, res: Result, attempts: Counter, busy_since: dict, quota_since: dict | None = None) -> str:
        key, label, o = res.node.key, res.node.label, res.outcome
        if o is not None and o.status in OK_STATUSES:
            (self.report.succeeded if o.status == SUCCESS else self.report.already_done).append(label)
            return "ok"
        if (o.quota and o.retry) if o is not None else (res.error is not None and is_quota(res.error)):
            self.report.quota_hits += 1
            first = (quota_since if quota_since is not None else {}).setdefault(key, res.started)
            if time.monotonic() - first < self.quota_wait_s:
                return "quota"
            error = o.error if o is not None else f"{type(res.error).__name__}: {res.error}"
            self.report.failed[label] = (f"still over a BigQuery quota or rate limit after waiting "
                                         f"{duration(self.quota_wait_s)}: {error}")
            return "failed"
        if o is not None and o.status == Status.BUSY:
            first = busy_since.setdefault(key, res.started)
            if time.monotonic() - first < self.busy_wait_s:
                return "retry"
            self.report.failed[label] = f"still held by another run after {self.busy_wait_s:.0f} s: {o.error}"
            return "failed"
        if o is not None and o.status == Status.SUPERSEDED:
            part = self.app.tracker.partition(res.node.processor, res.node.day)
            if part.status == SUCCESS:
                self.report.already_done.append(label)
                return "ok"
            self.generation[key] = part.generation  # someone moved it to a newer generation: follow
        transient = (o.retry or o.status in (Status.SUPERSEDED, Status.LOST)) if o is not None else is_transient(res.error)
        error = o.error if o is not None else f"{type(res.error).__name__}: {res.error}"
        if transient and attempts[key] + 1 < self.max_attempts:
            return "retry"
        if transient:
            error = f"gave up after {attempts[key] + 1} attempts: {error}"
        if o is not None and o.status == BLOCKED:
            self.report.blocked[label] = error
        else:
            self.report.failed[label] = error
        return "failed"

    def _slow_down(self, res: Result) -> float:
        """A result hit a quota: pause submissions for a backoff that grows with each new quota wall
        and halve the concurrency - once per wall (a result that was already running when the
        wavefront last slowed down changes nothing more). Returns when to retry it (monotonic)."""
        now = time.monotonic()
        if res.started >= self._quota_cut_at:  # a new wall, not the rest of the last one
            self._quota_streak += 1
            self.concurrency = max(1, self.concurrency // 2)
            self._quota_cut_at = now
            self._quota_successes = 0
            pause = min(self.quota_backoff_max, self.quota_backoff_base * 2 ** (self._quota_streak - 1))
            until = max(self._quota_until, now + pause)
            self.report.quota_waited_s += until - max(self._quota_until, now)
            self._quota_until = until
        low = self.report.quota_lowest_concurrency
        self.report.quota_lowest_concurrency = min(low, self.concurrency) if low else self.concurrency
        self._draw_now = True
        return max(self._quota_until, now)

    def _speed_up(self) -> None:
        """A success: after as many successes as the current concurrency, raise it by one; once it is
        back to ``workers`` the quota backoff starts from its base again."""
        if self.concurrency >= self.workers:
            return
        self._quota_successes += 1
        if self._quota_successes >= self.concurrency:
            self.concurrency += 1
            self._quota_successes = 0
            self._draw_now = True
            if self.concurrency >= self.workers:
                self._quota_streak = 0

    def quota_note(self) -> str:
        """What the progress line says while the wavefront is slowed down by a quota ("" otherwise)."""
        now = time.monotonic()
        if self.concurrency >= self.workers and now >= self._quota_until:
            return ""
        note = f"quota exceeded ({self.report.quota_hits}x): concurrency {self.concurrency}/{self.workers}"
        if now < self._quota_until:
            note += f", resuming in {duration(self._quota_until - now)}"
        return note

    def _backoff(self, res: Result, attempt: int) -> float:
        if res.outcome is not None and res.outcome.status == "busy":
            return min(5.0, self.backoff_base * 2 ** min(attempt, 4))
        return self.backoff_base * 2 ** (attempt - 1)

    def _block_dependents(self, root: tuple[str, str], settled: set, aux: ThreadPoolExecutor, futures: list) -> None:
        root_label = self.nodes[root].label
        reason = f"blocked by {root_label}"
        stack = list(self.dependents.get(root, ()))
        while stack:
            key = stack.pop()
            if key in settled:
                continue
            settled.add(key)
            node = self.nodes[key]
            self.report.blocked[node.label] = reason
            futures.append(aux.submit(self._record_blocked, node, root_label))
            stack.extend(self.dependents.get(key, ()))

    def _record_input_gap(self, node: Node, reason: str) -> None:
        self.app.tracker.record_outcome(
            node.processor, node.phase, node.day, self.generation[node.key], Status.FAILED, reason,
            context={"mode": "backfill", "correlation_id": self.correlation_id, "strict_mode": False},
            extra={"transient": False})

    def _record_blocked(self, node: Node, root_label: str) -> None:
        proc, day = root_label.split("@")
        ph = self.pipeline.phase(node.phase)
        detail = f"{ph.title} BLOCKED: backfill upstream {root_label} failed; {node.label} was not run"
        resolution = (f"fix {proc} for {day}, then re-run the same backfill command (it runs only what is "
                      f"missing, failed or blocked)")
        self.app.tracker.record_outcome(
            node.processor, node.phase, node.day, self.generation[node.key], BLOCKED, f"{detail}; resolution: {resolution}",
            blocked={"check": "Backfill dependency", "upstream": proc, "dates": [day], "detail": detail,
                     "resolution": resolution},
            context={"mode": "backfill", "correlation_id": self.correlation_id, "strict_mode": False})

    # ------------------------------------------------------------------ completions
    def _phase_progress(self, node: Node, aux: ThreadPoolExecutor, futures: list) -> None:
        slot = (node.phase, node.day)
        self.open_per_phase_date[slot] -= 1
        if self.open_per_phase_date[slot] == 0 and node.phase in self.cascade_phases:
            futures.append(aux.submit(self._complete, node.phase, node.day))

    def _complete(self, phase: int, day) -> None:
        """Hand a phase whose partitions of ``day`` all settled on to the next phase (``handoff``:
        claimed at the phase's newest generation, published in daily mode with strict checks)."""
        done = handoff.hand_off(self.app, phase, day, mode="backfill", strict_mode=True,
                                correlation_id=self.correlation_id, claimer=f"backfill-{self.correlation_id}")
        self.report.downstream[f"{phase}@{day.isoformat()}"] = done.downstream

    # ------------------------------------------------------------------ progress
    _draw_now = False  # the quota state changed: draw the progress line now (also in a log)

    def _draw(self, inflight: dict, final: bool = False) -> None:
        if self.progress is None:
            return
        r = self.report
        force, self._draw_now = self._draw_now, False
        self.progress.update(done=len(r.succeeded) + len(r.already_done), failed=len(r.failed) + len(r.blocked),
                             running=len(inflight), total=r.total, final=final, note=self.quota_note(),
                             force=force)
