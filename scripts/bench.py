#!/usr/bin/env python3
"""Backfill benchmark (``make bench``): the wavefront vs the seeds' naive loop, on fresh local emulators.

Starts its own emulators (in a temporary directory), provisions two namespaces of the reference
pipeline with the synthetic raw files, then:

1. backfills phases 2 -> 4 over the range with the dependency-aware wavefront (``--workers``, default 4);
2. in the second namespace, does the same work the naive way the seeds did - date by date, phase
   after phase, one partition at a time (in-process ``PhaseRunner.run_partition``).

Prints ONE JSON line: partitions, wall_s, partitions_per_s, naive_wall_s, speedup,
ideal_lower_bound_s (the largest of: the critical path - the longest dependency chain summed over
measured partition durations -, total work / workers, and total BigQuery-job seconds / 1 since the
BigQuery emulator executes one job at a time; job seconds measured in the serial naive run, where
no job waits behind another), achieved_fraction (bound / wall), overhead_per_partition_s (wall time
during which no BigQuery job was in flight, per partition), bq_jobs_per_partition,
firestore_ops_per_partition, peak_rss_mb. Progress goes to stderr.

    python scripts/bench.py                              # the full 2024-25 season
    python scripts/bench.py --start 2025-01-06 --end 2025-01-26   # a quick 3-week run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
import uuid
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared import clients  # noqa: E402
from shared.alerts import MemoryAlertSink  # noqa: E402
from shared.app import App  # noqa: E402
from shared.backfill import BackfillRequest, run_backfill  # noqa: E402
from shared.calendar import parse_date  # noqa: E402
from shared.localstack import LocalStack  # noqa: E402
from shared.messages import Trigger  # noqa: E402
from shared.pipeline import load  # noqa: E402
from shared.provision import ensure_bucket, ensure_pubsub  # noqa: E402
from shared.runner import PhaseRunner  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.synthetic import write_raw_files  # noqa: E402

PHASES = [2, 3, 4]


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class JobIntervals:
    """Records (start, end) of every BigQuery job a warehouse sends, to measure busy time."""

    def __init__(self, warehouse) -> None:
        self.intervals: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        inner = warehouse._run

        def timed(sql, params):
            t0 = time.monotonic()
            try:
                return inner(sql, params)
            finally:
                with self._lock:
                    self.intervals.append((t0, time.monotonic()))
        warehouse._run = timed

    def busy(self, start: float, end: float) -> float:
        """Seconds within start..end during which at least one job was in flight."""
        total, cur_s, cur_e = 0.0, None, None
        for s, e in sorted((max(s, start), min(e, end)) for s, e in self.intervals if e > start and s < end):
            if cur_e is None or s > cur_e:
                if cur_e is not None:
                    total += cur_e - cur_s
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        if cur_e is not None:
            total += cur_e - cur_s
        return total


def provision(project: str, start: date, end: date) -> App:
    namespace = "b" + uuid.uuid4().hex[:8]
    pipeline = load(namespace=namespace)
    app = App(settings=Settings(project=project, namespace=namespace), pipeline=pipeline, alerts=MemoryAlertSink())
    ensure_pubsub(pipeline, project, clients.publisher(), clients.subscriber(), {})
    app.warehouse.ensure_tables()
    ensure_bucket(pipeline, project, app.storage)
    n = write_raw_files(pipeline, app.storage, project, start, end)
    log(f"namespace {namespace}: tables, bucket and {n} raw files for {start}..{end}")
    return app


def critical_path(sched, durations: dict[tuple[str, str], float]) -> float:
    longest: dict[tuple[str, str], float] = {}
    for node in sorted(sched.nodes.values(), key=lambda n: (n.day, n.phase, n.order)):  # a topological order
        k = node.key
        longest[k] = durations.get(k, 0.0) + max((longest[u] for u in sched.upstreams_of(k)), default=0.0)
    return max(longest.values(), default=0.0)


def wavefront(app: App, start: date, end: date, workers: int) -> dict:
    jobs = JobIntervals(app.warehouse)
    holder: dict = {}
    jobs0, ops0 = app.warehouse.stats.jobs, app.tracker.ops
    req = BackfillRequest(start=start, end=end, phases=PHASES, workers=workers, validate=False)
    t0 = time.monotonic()
    result = run_backfill(app, req, on_scheduler=lambda s: holder.setdefault("s", s))
    t1 = time.monotonic()
    report, sched = result.report, holder["s"]
    if result.exit_code != 0:
        raise SystemExit(f"wavefront backfill failed (exit {result.exit_code}):\n{result.render()}")
    n = len(report.succeeded)
    wall = report.elapsed_s
    by_label = {node.label: node.key for node in sched.nodes.values()}
    durations = {by_label[lbl]: e - s for lbl, (s, e) in report.timings.items()}
    return {"partitions": n, "wall_s": wall, "command_wall_s": t1 - t0, "jobs": app.warehouse.stats.jobs - jobs0,
            "ops": app.tracker.ops - ops0, "busy_s": jobs.busy(t1 - (result.report.elapsed_s + 0.5), t1),
            "durations": durations, "sched": sched}


def naive(app: App, start: date, end: date) -> dict:
    jobs = JobIntervals(app.warehouse)
    runner = PhaseRunner(app)
    pipeline = app.pipeline
    days = pipeline.calendar.expected_dates(start, end)
    jobs0 = app.warehouse.stats.jobs
    t0 = time.monotonic()
    n = 0
    durations: dict[tuple[str, str], float] = {}
    for i, day in enumerate(days):
        for phase in PHASES:
            for proc in pipeline.processors_of(phase):
                trig = Trigger(pipeline=pipeline.name, phase=phase, data_date=day, processors=(proc.name,),
                               mode="backfill", skip_downstream_trigger=True, correlation_id="naive")
                p0 = time.monotonic()
                out = runner.run_partition(proc, trig)
                durations[(proc.name, day.isoformat())] = time.monotonic() - p0
                if out.status != "success":
                    raise SystemExit(f"naive run failed: {proc.name} {day}: {out.status} {out.error}")
                n += 1
        if (i + 1) % 20 == 0:
            log(f"naive: {i + 1}/{len(days)} dates, {time.monotonic() - t0:.0f} s")
    wall = time.monotonic() - t0
    return {"partitions": n, "wall_s": wall, "jobs": app.warehouse.stats.jobs - jobs0,
            "job_seconds": sum(e - s for s, e in jobs.intervals), "durations": durations}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", type=parse_date, default=date(2024, 10, 22))
    ap.add_argument("--end", type=parse_date, default=date(2025, 4, 13))
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--skip-naive", action="store_true", help="only the wavefront (no speedup figure)")
    args = ap.parse_args(argv)
    project = "cascade-bench"
    with tempfile.TemporaryDirectory(prefix="cascade-bench-") as tmp:
        stack = LocalStack(Path(tmp), project=project, log=log)
        try:
            eps = stack.start_emulators()
            os.environ.update(eps.as_env())
            os.environ["CASCADE_PROJECT"] = project
            log(f"emulators up: {eps.as_env()}")
            app = provision(project, args.start, args.end)
            log(f"wavefront backfill of phases {PHASES} with {args.workers} workers ...")
            w = wavefront(app, args.start, args.end, args.workers)
            log(f"wavefront: {w['partitions']} partitions in {w['wall_s']:.1f} s")
            nv = None
            if not args.skip_naive:
                app2 = provision(project, args.start, args.end)
                log("naive: date by date, phase after phase, one partition at a time ...")
                nv = naive(app2, args.start, args.end)
                log(f"naive: {nv['partitions']} partitions in {nv['wall_s']:.1f} s")
        finally:
            stack.stop()
    n, wall = w["partitions"], w["wall_s"]
    # Partition durations and job seconds from the serial naive run: uncontended, nothing queued
    # behind another job (the wavefront's own durations include waiting for the emulator).
    durations = nv["durations"] if nv else w["durations"]
    bq_serial = nv["job_seconds"] * (w["jobs"] / nv["jobs"]) if nv else w["busy_s"]
    cp, work = critical_path(w["sched"], durations), sum(durations.values())
    bound = max(cp, work / args.workers, bq_serial)
    out = {
        "range": f"{args.start}..{args.end}", "workers": args.workers,
        "partitions": n, "wall_s": round(wall, 2), "partitions_per_s": round(n / wall, 2),
        "naive_wall_s": round(nv["wall_s"], 2) if nv else None,
        "speedup": round(nv["wall_s"] / wall, 2) if nv else None,
        "ideal_lower_bound_s": round(bound, 2),
        "bound_terms_s": {"critical_path": round(cp, 2), "work_over_workers": round(work / args.workers, 2),
                          "bigquery_job_seconds_serial": round(bq_serial, 2)},
        "achieved_fraction": round(bound / wall, 3),
        "overhead_per_partition_s": round(max(wall - w["busy_s"], 0.0) / n, 4),
        "bq_jobs_per_partition": round(w["jobs"] / n, 3),
        "firestore_ops_per_partition": round(w["ops"] / n, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
