"""A backfill from request to summary: plan, preflight, lease, wavefront, digest, validation, exit code.

``run_backfill(app, BackfillRequest(...))`` is what ``cascade backfill`` (and the tests and the
benchmark) call. In order: select the processors and plan from state (``--dry-run`` stops here and
prints the matrix); the preflight checks upstream coverage (refused below the threshold unless
``skip_preflight``); the per-processor backfill lease is taken (refused, naming the holder, when
another backfill holds one); the scheduler runs the wavefront with alerts collected; the lease is
released; ONE digest alert reports the failures; the range is validated (coverage, duplicate keys,
NULL critical columns). Exit codes: 0 all done, 1 failures or a validation problem, 2 refused or
bad usage, 130 interrupted.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Callable, TextIO

from cascade.backfill.digest import collecting_alerts, digest_alert
from cascade.backfill.executors import EXECUTORS
from cascade.backfill.lease import BackfillLease, describe_holder, holders
from cascade.backfill.plan import Plan, UsageError, build_plan, check_range, select_processors
from cascade.backfill.progress import Progress
from cascade.backfill.scheduler import RunReport, Scheduler, SchedulerOptions
from cascade.backfill.validate import (
    DEFAULT_THRESHOLD,
    FILL_FIRST,
    Coverage,
    Preflight,
    TableValidation,
    coverage,
    outside_inputs,
    preflight,
    validate,
)
from cascade.backfill.wavefront import ORDERS
from cascade.errors import LeaseHeldError
from cascade.runtime.app import App
from cascade.runtime.cost import BytesEstimate, JobCost, estimate_range
from cascade.runtime.recovery import fill_coverage


@dataclass
class BackfillRequest:
    start: date
    end: date
    phases: list[int] = field(default_factory=list)
    processors: list[str] = field(default_factory=list)
    workers: int = 4
    max_merges_per_table: int = 2
    max_rate: float | None = None
    skip_downstream_trigger: bool = False
    dry_run: bool = False
    force: bool = False
    skip_preflight: bool = False
    preflight_threshold: float = DEFAULT_THRESHOLD
    validate: bool = True
    max_attempts: int = 3
    backoff_base: float = 0.5
    lease_ttl_seconds: float | None = None
    executor: str = "in-process"  # or "functions": each partition dispatched to its phase function
    partition_timeout_s: float = 1800.0  # functions executor: a partition with no final state by then fails
    order: str = "critical-path"  # of ready partitions (wavefront.ORDERS): "earliest" for date first
    widen: bool = False  # reach every input first: an earlier start / earlier phases (``reach.covering_backfill``)

    def check(self) -> None:
        check_range(self.start, self.end)
        if not 1 <= self.workers <= 64:
            raise UsageError("--workers must be between 1 and 64")
        if not 1 <= self.max_merges_per_table <= 20:
            raise UsageError("--max-merges-per-table must be between 1 and 20 (BigQuery queues at most 20 DML per table)")
        if not 0.0 < self.preflight_threshold <= 1.0:
            raise UsageError("--preflight-threshold must be in (0, 1], e.g. 0.95")
        if self.max_rate is not None and self.max_rate <= 0:
            raise UsageError("--max-rate must be positive")
        if self.executor not in EXECUTORS:
            raise UsageError(f"--executor must be one of {list(EXECUTORS)}")
        if self.order not in ORDERS:
            raise UsageError(f"order must be one of {list(ORDERS)}")
        if self.partition_timeout_s <= 0:
            raise UsageError("--partition-timeout must be positive (seconds)")

    def scheduler_options(self, cascade_phases: set[int] | frozenset[int] = frozenset()) -> SchedulerOptions:
        return SchedulerOptions(workers=self.workers, max_merges_per_table=self.max_merges_per_table,
                                max_rate=self.max_rate, max_attempts=self.max_attempts, backoff_base=self.backoff_base,
                                cascade_phases=frozenset(cascade_phases), executor=self.executor,
                                partition_timeout_s=self.partition_timeout_s, order=self.order)

    def command(self) -> str:
        parts = ["cascade backfill", f"--start {self.start}", f"--end {self.end}"]
        parts += [f"--processor {p}" for p in self.processors] or [f"--phase {p}" for p in self.phases]
        if self.workers != 4:
            parts.append(f"--workers {self.workers}")
        if self.executor != "in-process":
            parts.append(f"--executor {self.executor}")
        if self.skip_downstream_trigger:
            parts.append("--skip-downstream-trigger")
        if self.widen:
            parts.append("--widen")
        return " ".join(parts)


@dataclass
class BackfillResult:
    request: BackfillRequest
    plan: Plan
    preflight: Preflight | None = None
    report: RunReport | None = None
    coverage: list[Coverage] = field(default_factory=list)
    validation: list[TableValidation] = field(default_factory=list)
    refused: str = ""
    holders: dict[str, str] = field(default_factory=dict)
    digest_sent: bool = False
    bigquery_jobs: int = 0
    bigquery_seconds: float = 0.0
    firestore_ops: int = 0
    bigquery_cost: JobCost = field(default_factory=JobCost)  # this process's jobs (validation included)
    runs_cost: JobCost = field(default_factory=JobCost)  # recorded by the partitions' runs (any executor)
    bytes_estimate: BytesEstimate | None = None  # --dry-run: from dry runs of one date per processor
    stale_after: tuple[int, str] | None = None  # partitions after --end left stale by this rebuild, the fix
    widened: str = ""  # --widen: what the range became and why ("" when it was not widened)

    @property
    def problems(self) -> list[str]:
        return [p for v in self.validation for p in v.problems()]

    @property
    def exit_code(self) -> int:
        if self.refused:
            return 2
        if self.request.dry_run or self.report is None:
            return 0
        if self.report.interrupted:
            return 130
        if self.report.failed or self.report.blocked or self.report.not_run or self.problems:
            return 1
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "refused": self.refused or None,
                "plan": self.plan.to_dict(matrix=self.request.dry_run),
                "running_backfills": self.holders,
                "preflight": self.preflight.to_dict() if self.preflight else None,
                "run": self.report.to_dict() if self.report else None,
                "coverage": [c.to_dict() for c in self.coverage],
                "validation": {"ok": not self.problems, "problems": self.problems},
                "bigquery_jobs": self.bigquery_jobs, "bigquery_seconds": round(self.bigquery_seconds, 3),
                "firestore_ops": self.firestore_ops, "digest_alert_sent": self.digest_sent,
                "bigquery_cost": {"runs": self.runs_cost.to_dict(), "this_process": self.bigquery_cost.to_dict()},
                "bytes_estimate": self.bytes_estimate.to_dict() if self.bytes_estimate else None,
                "resume_command": self.request.command(), "widened": self.widened or None,
                "stale_after": ({"partitions": self.stale_after[0], "command": self.stale_after[1]}
                                if self.stale_after else None)}

    def render(self) -> str:
        req, lines = self.request, []
        if self.widened:
            lines.append(self.widened)
        if req.dry_run:
            lines.append(self.plan.render())
            if self.bytes_estimate is not None:
                lines.append(self.bytes_estimate.render())
            for name, who in self.holders.items():
                lines.append(f"note: a backfill holds {name}: {who} (a real run would be refused)")
            lines.append("dry run: nothing was run")
            return "\n".join(lines)
        if self.preflight is not None and (self.refused or not self.preflight.ok or self.preflight.checks):
            lines.append(self.preflight.render())
        if self.refused:
            lines.append(self.refused)
            return "\n".join(lines)
        r = self.report
        assert r is not None
        rate = r.finished / r.elapsed_s if r.elapsed_s else 0.0
        planned = {n.key for n in self.plan.nodes}  # --force runs done partitions too: those are not "not run"
        done_before = sum(1 for k, c in self.plan.cells.items() if c == "done" and k not in planned)
        lines.append(f"backfill {req.start}..{req.end} phases {self.plan.phases}: ran {r.total} partitions in "
                     f"{r.elapsed_s:.1f} s ({rate:.1f}/s): {len(r.succeeded)} succeeded, {len(r.failed)} failed, "
                     f"{len(r.blocked)} blocked, {len(r.not_run)} not run"
                     + (f", {len(r.already_done)} done meanwhile by another run" if r.already_done else "")
                     + f"; {done_before} were already done and fresh (not run); {r.retries} retries"
                     + ("; INTERRUPTED" if r.interrupted else ""))
        gaps = False
        for label, err in sorted(r.failed.items()):
            reason, sep, _ = err.partition(FILL_FIRST)
            gaps = gaps or bool(sep)  # short of inputs outside the range: one command for all, below
            lines.append(f"  FAILED  {label}: {reason[:400]}")
        by_reason: dict[str, list[str]] = {}
        for label, reason in r.blocked.items():
            by_reason.setdefault(reason, []).append(label)
        for reason, labels in sorted(by_reason.items()):
            lines.append(f"  BLOCKED {len(labels)} partition(s) {reason}: " + ", ".join(sorted(labels)[:8])
                         + (" ..." if len(labels) > 8 else ""))
        if r.downstream:
            counts: dict[str, int] = {}
            for v in r.downstream.values():
                counts[v] = counts.get(v, 0) + 1
            lines.append("downstream triggers: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
        for w in r.warnings[:10]:
            lines.append(f"  warning: {w}")
        if self.coverage:
            lines.append("coverage:")
            lines += ["  " + c.render() for c in self.coverage]
        if self.validation:
            lines.append("validation: " + ("ok (no duplicate keys, no NULL critical columns)" if not self.problems
                                           else f"{len(self.problems)} problem(s)"))
            lines += [f"  {p}" for p in self.problems]
        lines.append(f"BigQuery jobs {self.bigquery_jobs} ({self.bigquery_seconds:.1f} job-seconds, summed over "
                     f"concurrent jobs), Firestore ops "
                     f"{self.firestore_ops}" + ("; one digest alert sent" if self.digest_sent else ""))
        lines.append(f"BigQuery cost of the partitions' runs: {self.runs_cost.render()} (all jobs of this "
                     f"process, validation included: {self.bigquery_cost.render()})")
        if self.stale_after:
            n, command = self.stale_after
            lines.append(f"note: {n} partition(s) after {req.end} read what this backfill rebuilt (their lookback "
                         f"windows reach into it) and are stale now; rebuild them: {command}")
        if gaps:
            lines.append(f"to resume, rebuilding first what the failed partitions read outside the range "
                         f"(--widen: an earlier start, earlier phases): {replace(req, widen=True).command()}")
        elif r.interrupted or r.failed or r.blocked or r.not_run:
            lines.append(f"to resume (runs only what is missing, failed or blocked): {req.command()}")
        return "\n".join(lines)


def run_backfill(app: App, req: BackfillRequest, progress_stream: TextIO | None = None,
                 on_result: Callable | None = None, on_scheduler: Callable[[Scheduler], None] | None = None,
                 progress: Progress | None = None) -> BackfillResult:
    """Plan and (unless dry-run) run a backfill. Raises UsageError for bad input."""
    req.check()
    procs = select_processors(app.pipeline, req.phases, req.processors)
    widened = ""
    if req.widen:  # reach every input the range reads outside it first (its own check, judged the same way)
        from cascade.backfill.reach import covering_backfill
        from cascade.backfill.validate import outside_needs

        phases = sorted({p.phase for p in procs})
        as_asked = build_plan(app.pipeline, app.tracker, procs, req.start, req.end, force=req.force,
                              versions=app.versions)
        # Widened only when the backfill as asked would lack inputs outside it; then to whole phases.
        reach = covering_backfill(app, procs, req.start, req.end) if outside_needs(app, as_asked) else None
        if reach is not None:
            widened = (f"--widen: {req.start}..{req.end} phases {phases} reads inputs outside it that must be "
                       f"rebuilt too: running {reach.start}..{reach.end} phases "
                       f"{list(range(reach.first_phase, reach.last_phase + 1))} ({reach.command(app.pipeline)})")
            req = replace(req, start=reach.start, processors=[],
                          phases=[ph.number for ph in app.pipeline.phases
                                  if reach.first_phase <= ph.number <= reach.last_phase])
            procs = select_processors(app.pipeline, req.phases, req.processors)
    plan = build_plan(app.pipeline, app.tracker, procs, req.start, req.end, force=req.force,
                      allocate=None if req.dry_run else app.tracker.new_generation, versions=app.versions)
    selected = {p.name for p in procs}
    upstream_tables = {u.processor for p in procs for u in p.upstreams if u.processor not in selected}
    plan.extra_queries = {"preflight_queries": 0 if req.skip_preflight else len(upstream_tables),
                          "input_queries": len({u.processor for n in plan.nodes
                                                for u in app.pipeline.processor(n.processor).upstreams}),
                          "validation_queries": (3 * len(procs) - sum(1 for p in procs if not p.output.critical))
                          if req.validate else 0}
    result = BackfillResult(req, plan, widened=widened)
    if req.dry_run:
        result.holders = {n: describe_holder(d) for n, d in holders(app, sorted(selected)).items()}
        result.bytes_estimate = estimate_range(app.warehouse, plan)
        return result
    if not req.skip_preflight:
        result.preflight = preflight(app, procs, req.start, req.end, req.preflight_threshold)
        if not result.preflight.ok:
            failing = result.preflight.failing
            result.refused = (f"refused: preflight failed for {', '.join(c.source for c in failing)}; fill the "
                              f"gaps first: " + fill_coverage(app.pipeline, failing, req.command())
                              + "; to run anyway instead, add --skip-preflight")
            return result
    jobs0, secs0, ops0 = app.warehouse.stats.jobs, app.warehouse.stats.seconds, app.tracker.ops
    cost0 = app.warehouse.stats.cost()
    # Every partition's inputs outside the backfill (history before --start, unselected upstreams)
    # are verified before anything runs; those short of input fail with the dates and the fix.
    gaps = outside_inputs(app, plan)
    lease = BackfillLease(app, sorted(selected), req.start, req.end, req.lease_ttl_seconds, command=req.command())
    try:
        lease.acquire()
    except LeaseHeldError as exc:
        result.refused = exc.message
        return result
    cascade = set() if req.skip_downstream_trigger else {
        ph for ph in plan.phases if app.pipeline.phase(ph).next is not None and app.pipeline.phase(ph).next not in plan.phases}
    try:
        with collecting_alerts(app) as sink:
            sched = Scheduler(app, plan, req.scheduler_options(cascade), input_gaps=gaps, on_result=on_result,
                              progress=progress if progress is not None else Progress(progress_stream))
            if on_scheduler:
                on_scheduler(sched)
            result.report = sched.run()
    finally:
        lease.release()
    report = result.report
    if lease.lost:
        report.warnings.append(f"backfill lease lost on {lease.lost} (another backfill may have taken over)")
    alert = digest_alert(f"{req.start}..{req.end}", report.failed, report.blocked, sink.alerts, req.command(),
                         report.interrupted)
    if alert is not None:
        app.alerts.send(alert)
        result.digest_sent = True
    if req.validate and not report.interrupted:
        result.coverage = coverage(app, req.start, req.end, processors=selected)
        result.validation = validate(app, req.start, req.end, processors=selected)
    result.bigquery_jobs = app.warehouse.stats.jobs - jobs0
    result.bigquery_seconds = app.warehouse.stats.seconds - secs0
    result.firestore_ops = app.tracker.ops - ops0
    result.bigquery_cost = _delta(app.warehouse.stats.cost(), cost0)
    result.runs_cost = _runs_cost(app, plan)
    if report.succeeded and not report.interrupted:
        from cascade.backfill.reach import stale_after

        result.stale_after = stale_after(app, plan)
    return result


def _delta(now: JobCost, before: JobCost) -> JobCost:
    return JobCost(*(a - b for a, b in zip(now.to_dict().values(), before.to_dict().values())))


def _runs_cost(app: App, plan: Plan) -> JobCost:
    """The BigQuery cost recorded by the runs of this backfill (the plan's partitions at their planned
    generation): one batched read."""
    want = {n.key: n.generation for n in plan.nodes}
    total = JobCost()
    for key, part in app.tracker.partitions_by_keys(want).items():
        if part.generation == want.get(key) and part.raw.get("cost"):
            total.add(JobCost.from_dict(part.raw["cost"]))
    return total


def print_result(result: BackfillResult, as_json: bool, out: TextIO | None = None) -> None:
    import json

    out = out or sys.stdout
    if as_json:
        out.write(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    else:
        out.write(result.render() + "\n")
