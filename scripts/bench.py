#!/usr/bin/env python3
"""Backfill benchmark (``make bench``): the wavefront vs a naive date-by-date loop, in two BigQuery profiles.

Each profile starts its own emulators (in a temporary directory), provisions two namespaces of the
reference pipeline with the synthetic raw files, then:

1. backfills phases 2 -> 4 over its range with the dependency-aware wavefront;
2. in the second namespace, does the same work the naive way - date by date, phase
   after phase, one partition at a time (in-process ``PhaseRunner.run_partition``);
3. the daily path: the phase functions (functions-framework, one per phase, Pub/Sub push) are started
   for the first namespace, the next game day after the range is scraped and phase 2 is triggered in
   daily mode with strict mode on; timed until phase 4 is complete for that date. The strict-mode
   BigQuery queries per processor run come from the check reports recorded in the run history;
4. (emulator profile) the functions executor: the same backfill with ``--executor functions`` (each
   partition dispatched to the local phase function through Pub/Sub push, followed in Firestore) and
   with the in-process executor, on fresh namespaces over a shorter range (``--functions-start/-end``,
   default the season's first two weeks, 2024-10-22..2024-11-04), same workers.

Profiles:

* **emulator** - the local BigQuery as shipped: it executes one job at a time (~0.1 s per MERGE),
  so its serial job time bounds everything (``--workers``, default 4). Range ``--start/--end``,
  default 2024-10-22..2024-12-31 (the season's first ten weeks; the full season, 2025-04-13, fits
  the bench alone but not both profiles in ~15 minutes on 2 cores);
* **latency_model** - the same emulator started with the production latency model
  (emulators/latency_model.py, docs/latency-model.md): a fixed latency per job (``--job-latency-s``,
  default 1.0) spent concurrently, the emulator's execution inside it (one job at a time), at most 2
  mutating DML per table (FIFO queue), 25 DML per table per 10 s. Range ``--latency-start/--latency-end`` (default the season's first month,
  2024-10-22..2024-11-21: 30 game days x 9 processors = 270 partitions, the 30-day lookbacks inside
  the range - a range must start at the season opening or have its lookback history already
  backfilled, which the backfill now checks); ``--latency-workers``
  (default 18 = 9 output tables x 2 concurrent MERGEs per table; fewer would leave per-table slots
  idle while the job latency dominates, and 27 saturated the emulator's serial execution on 2 cores).

Prints ONE JSON line: the emulator profile at the top level (partitions, wall_s, naive_wall_s,
speedup, ideal_lower_bound_s, bound_terms_s, achieved_fraction, overhead_per_partition_s,
bq_jobs_per_partition, firestore_ops_per_partition, peak_rss_mb, daily_path, functions_executor) and
``latency_model`` (job_latency_s, partitions, wall_s, naive_wall_s, speedup, ideal_lower_bound_s,
bound_terms_s, achieved_fraction, scheduler_floor_s, model counters, daily_path), plus the goals it
is judged against. Ideal lower
bounds are the largest of: the critical path (longest dependency chain over partition durations
measured in the uncontended naive run), work / workers, the serial engine time (BigQuery-job
seconds of the naive run where no job waits behind another; in the latency profile the emulator's
own busy time as recorded by the model) and, in the latency profile, the per-table DML time / 2
(slot seconds of the busiest table / 2 concurrent DML). ``scheduler_floor_s`` is a diagnostic, not a
bound term: the busiest table's partition-seconds / ``--latency-max-merges-per-table``. The latency
profile runs with the CLI's default of 2 MERGEs per table (``--latency-max-merges-per-table``): a
partition holds its table's slot for its write job only - it returns it when the MERGE ends, before
its quality gates' read queries - so the slots follow BigQuery's 2 concurrent DML per table. ``--timeline`` (default
docs/bench-timeline.svg) gets a picture of the latency-profile runs. Progress goes to stderr.

    python scripts/bench.py                                   # both profiles (~12 min on 2 cores)
    python scripts/bench.py --profiles latency --latency-end 2024-11-04 --skip-daily   # a quick look
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
from datetime import date, timedelta
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cascade.backfill import BackfillRequest, run_backfill  # noqa: E402
from cascade.definition.calendar import parse_date  # noqa: E402
from cascade.definition.loading import load  # noqa: E402
from cascade.dev.local import start_functions  # noqa: E402
from cascade.dev.localstack import LocalStack  # noqa: E402
from cascade.dev.provision import ensure_bucket, ensure_pubsub, push_endpoint  # noqa: E402
from cascade.dev.synthetic import write_raw_files  # noqa: E402
from cascade.ops.date_status import wait_for_phase  # noqa: E402
from cascade.runtime import clients  # noqa: E402
from cascade.runtime.alerts import MemoryAlertSink  # noqa: E402
from cascade.runtime.app import App  # noqa: E402
from cascade.runtime.messages import Trigger, new_correlation_id  # noqa: E402
from cascade.runtime.runner import PhaseRunner  # noqa: E402
from cascade.runtime.settings import Settings  # noqa: E402
from emulators.latency_model import STATS_PATH  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PHASES = [2, 3, 4]
GOALS = {"latency_model.speedup": ">= 10", "latency_model.achieved_fraction": ">= 0.85",
         "achieved_fraction": ">= 0.95"}
ORDER = "critical-path"  # of ready partitions (--order)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class JobIntervals:
    """Records (start, end) of every BigQuery job a warehouse sends, to measure busy time."""

    def __init__(self, warehouse) -> None:
        self.intervals: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        inner = warehouse._run

        def timed(*args, **kwargs):
            t0 = time.monotonic()
            try:
                return inner(*args, **kwargs)
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


class Model:
    """The latency model's counters in the BigQuery emulator (GET/POST /_cascade/latency-model)."""

    def __init__(self, base_url: str) -> None:
        self.url = base_url.rstrip("/") + STATS_PATH
        self.session = requests.Session()
        self.session.trust_env = False

    def reset(self) -> None:
        self.session.post(self.url + "/reset", timeout=30).raise_for_status()

    def stats(self) -> dict:
        resp = self.session.get(self.url, timeout=30)
        resp.raise_for_status()
        return resp.json()


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
    return longest_chain(sched.nodes.values(), sched.deps, durations)


def longest_chain(nodes, deps: dict, durations: dict[tuple[str, str], float]) -> float:
    longest: dict[tuple[str, str], float] = {}
    for node in sorted(nodes, key=lambda n: (n.day, n.phase, n.order)):  # a topological order
        k = node.key
        longest[k] = durations.get(k, 0.0) + max((longest[u] for u in deps[k]), default=0.0)
    return max(longest.values(), default=0.0)


def table_chain(nodes, deps: dict, durations: dict, slot_s: dict, slots: int) -> float:
    """A lower bound no schedule beats, per output table, the largest: its partitions cannot start
    before the shortest chain of inputs in front of one of them, pass through ``slots`` DML slots
    (their slot-seconds / slots), and the last one's own rest and dependents follow (the shortest
    such tail)."""
    nodes = sorted(nodes, key=lambda n: (n.day, n.phase, n.order))  # a topological order
    head: dict = {}
    for n in nodes:
        head[n.key] = max((head[u] + durations[u] for u in deps[n.key]), default=0.0)
    below: dict = {n.key: [] for n in nodes}
    for k, ups in deps.items():
        for u in ups:
            below[u].append(k)
    tail: dict = {}
    for n in reversed(nodes):
        tail[n.key] = max((durations[d] + tail[d] for d in below[n.key]), default=0.0)
    best = 0.0
    for table in {n.table for n in nodes}:
        keys = [n.key for n in nodes if n.table == table]
        best = max(best, min(head[k] for k in keys) + sum(slot_s[k] for k in keys) / slots
                   + min(durations[k] - slot_s[k] + tail[k] for k in keys))
    return best


def simulated_latency(start: date, end: date, workers: int, max_merges: int, latency: float,
                      overhead_s: float) -> dict:
    """The latency profile in simulated time, no emulators: the pure wavefront (``wavefront.simulate``)
    over the plan of phases 2-4 with every job costing ``latency`` (a MERGE holding its table's slot,
    then one gate query on gated tables) after ``overhead_s`` of framework time, in each order of
    ready partitions; the fraction is the bench's bound (critical path, work / workers, per-table
    DML time / 2) over the simulated wall time."""
    from cascade.backfill.plan import Node, ordered_processors
    from cascade.backfill.scheduler import partition_deps, units_of
    from cascade.backfill.wavefront import ORDERS, Policy, Wavefront, simulate

    pipeline = load(namespace="simulated")
    procs = [p for p in ordered_processors(pipeline) if p.phase in PHASES]
    nodes = [Node(p.name, p.phase, d, 0, p.output.logical, i, "missing")
             for d in pipeline.calendar.expected_dates(start, end) for i, p in enumerate(procs)]
    deps = partition_deps(pipeline, nodes)
    gated = {p.name for p in procs if p.gates}
    durations = {n.key: overhead_s + latency * (2 if n.processor in gated else 1) for n in nodes}
    per_table: dict[str, int] = {}
    for n in nodes:
        per_table[n.table] = per_table.get(n.table, 0) + 1
    cp, work = longest_chain(nodes, deps, durations), sum(durations.values())
    dml = max(per_table.values(), default=0) * latency / 2
    bound = max(cp, work / workers, dml)
    chain = table_chain(nodes, deps, durations, {n.key: latency for n in nodes}, max_merges)
    out: dict = {"job_latency_s": latency, "overhead_s": overhead_s, "range": f"{start}..{end}", "workers": workers,
                 "max_merges_per_table": max_merges, "partitions": len(nodes), "ideal_lower_bound_s": round(bound, 2),
                 "bound_terms_s": {"critical_path": round(cp, 2), "work_over_workers": round(work / workers, 2),
                                   "per_table_dml_over_2": round(dml, 2)},
                 "table_chain_s": round(chain, 2)}
    for order in ORDERS:
        wf = Wavefront(units_of(nodes), deps, Policy(workers=workers, max_per_group=max_merges, order=order))
        trace = simulate(wf, duration=durations.__getitem__, write_s=lambda key: overhead_s + latency)
        out[order] = {"wall_s": round(trace.makespan, 2), "achieved_fraction": round(bound / trace.makespan, 3),
                      "fraction_of_table_chain_bound": round(max(bound, chain) / trace.makespan, 3)}
    return out


def wavefront(app: App, start: date, end: date, workers: int, max_merges: int = 2) -> dict:
    jobs = JobIntervals(app.warehouse)
    holder: dict = {}
    jobs0, ops0 = app.warehouse.stats.jobs, app.tracker.ops
    req = BackfillRequest(start=start, end=end, phases=PHASES, workers=workers, validate=False,
                          skip_downstream_trigger=True, max_merges_per_table=max_merges, order=ORDER)
    t0, cpu0 = time.monotonic(), os.times()
    result = run_backfill(app, req, on_scheduler=lambda s: holder.setdefault("s", s))
    t1, cpu1 = time.monotonic(), os.times()
    report, sched = result.report, holder["s"]
    if result.exit_code != 0:
        raise SystemExit(f"wavefront backfill failed (exit {result.exit_code}):\n{result.render()}")
    n = len(report.succeeded)
    wall = report.elapsed_s
    nodes = {node.label: node for node in sched.nodes.values()}
    durations = {nodes[lbl].key: e - s for lbl, (s, e) in report.timings.items()}
    origin = min((s for s, _ in report.timings.values()), default=t0)
    timeline = [(nodes[lbl].table.split(".")[-1], s - origin, e - origin) for lbl, (s, e) in report.timings.items()]
    return {"partitions": n, "wall_s": wall, "command_wall_s": t1 - t0, "jobs": app.warehouse.stats.jobs - jobs0,
            "ops": app.tracker.ops - ops0, "busy_s": jobs.busy(t1 - (report.elapsed_s + 0.5), t1),
            "durations": durations, "sched": sched, "timeline": timeline,
            "cli_cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)}


def naive(app: App, start: date, end: date) -> dict:
    jobs = JobIntervals(app.warehouse)
    runner = PhaseRunner(app)
    pipeline = app.pipeline
    days = pipeline.calendar.expected_dates(start, end)
    jobs0 = app.warehouse.stats.jobs
    t0 = time.monotonic()
    n = 0
    durations: dict[tuple[str, str], float] = {}
    timeline: list[tuple[str, float, float]] = []
    for i, day in enumerate(days):
        for phase in PHASES:
            for proc in pipeline.processors_of(phase):
                trig = Trigger(pipeline=pipeline.name, phase=phase, data_date=day, processors=(proc.name,),
                               generation=0, mode="backfill", skip_downstream_trigger=True,
                               correlation_id="naive")  # a fresh namespace: the first generation
                p0 = time.monotonic()
                out = runner.run_partition(proc, trig)
                p1 = time.monotonic()
                durations[(proc.name, day.isoformat())] = p1 - p0
                timeline.append((proc.output.name, p0 - t0, p1 - t0))
                if out.status != "success":
                    raise SystemExit(f"naive run failed: {proc.name} {day}: {out.status} {out.error}")
                n += 1
        if (i + 1) % 10 == 0:
            log(f"naive: {i + 1}/{len(days)} dates, {time.monotonic() - t0:.0f} s")
    wall = time.monotonic() - t0
    return {"partitions": n, "wall_s": wall, "jobs": app.warehouse.stats.jobs - jobs0,
            "job_seconds": sum(e - s for s, e in jobs.intervals), "durations": durations, "timeline": timeline}


def daily_path(stack: LocalStack, eps, app: App, after: date, timeout: float = 300.0) -> dict:
    """Trigger phase 2 (daily mode, strict) for the first game day after ``after``; time it to phase 4 complete."""
    pipeline, project = app.pipeline, app.project
    cal = pipeline.calendar
    day = after + timedelta(days=1)
    while not cal.is_expected(day):
        day += timedelta(days=1)
    t_fn = time.monotonic()
    urls = start_functions(stack, eps, pipeline, phases=PHASES)
    ensure_pubsub(pipeline, project, clients.publisher(), clients.subscriber(),
                  {n: push_endpoint(u, project, pipeline.topic(n)) for n, u in urls.items()})
    write_raw_files(pipeline, app.storage, project, day, day)
    log(f"daily path: functions for phases {PHASES} up in {time.monotonic() - t_fn:.1f} s; triggering {day}")
    trig = Trigger(pipeline=pipeline.name, phase=PHASES[0], data_date=day, mode="daily", strict_mode=True,
                   correlation_id=new_correlation_id())
    since = app.clock()
    t0 = time.monotonic()
    app.publisher.publish(pipeline.topic(PHASES[0]), trig.to_json(), trig.attributes())
    waited = wait_for_phase(app, day, PHASES[-1], timeout, since=since)
    wall = time.monotonic() - t0
    if waited.code != 0:  # e.g. a range shorter than the lookbacks: strict mode blocks, as it should
        log(f"daily path for {day} did not complete: {waited.reason}")
        return {"date": day.isoformat(), "complete": False, "reason": waited.reason}
    runs = [r for r in app.tracker.runs(day=day, limit=1000) if r.get("processor") in {p.name for p in
                                                                                        pipeline.processors
                                                                                        if p.phase in PHASES}]
    per_proc: dict[str, int] = {}
    strict_runs = 0
    for r in runs:
        checks = r.get("checks") or {}
        q = int(checks.get("queries") or 0)
        per_proc[r["processor"]] = per_proc.get(r["processor"], 0) + q
        strict_runs += 1 if checks and not checks.get("skipped") else 0
    total = sum(per_proc.values())
    return {"date": day.isoformat(), "complete": True, "trigger_to_phase4_complete_s": round(wall, 2),
            "processor_runs": len(runs), "runs_with_strict_checks": strict_runs,
            "strict_queries_total": total,
            "strict_queries_per_processor_run": round(total / len(runs), 2) if runs else None,
            "strict_queries_by_processor": dict(sorted(per_proc.items()))}


def functions_executor(stack: LocalStack, eps, project: str, start: date, end: date, workers: int) -> dict:
    """The same backfill twice on fresh namespaces: ``--executor functions`` (each partition dispatched
    as a backfill-mode trigger to its phase topic, run by the local phase function behind a Pub/Sub
    push subscription, followed in Firestore) and the in-process executor; same range, same workers."""
    out: dict = {"range": f"{start}..{end}", "workers": workers}
    app = provision(project, start, end)
    pipeline = app.pipeline
    t_fn = time.monotonic()
    urls = start_functions(stack, eps, pipeline, phases=PHASES)
    ensure_pubsub(pipeline, project, clients.publisher(), clients.subscriber(),
                  {n: push_endpoint(u, project, pipeline.topic(n)) for n, u in urls.items()})
    log(f"functions executor: phase functions {PHASES} up in {time.monotonic() - t_fn:.1f} s; backfilling "
        f"{start}..{end} through them ...")
    req = BackfillRequest(start=start, end=end, phases=PHASES, workers=workers, validate=False,
                          skip_downstream_trigger=True, executor="functions", partition_timeout_s=600.0)
    result = run_backfill(app, req)
    if result.exit_code != 0:
        raise SystemExit(f"functions-executor backfill failed (exit {result.exit_code}):\n{result.render()}")
    n, wall = len(result.report.succeeded), result.report.elapsed_s
    out["functions"] = {"partitions": n, "wall_s": round(wall, 2), "partitions_per_s": round(n / wall, 2)}
    log(f"functions executor: {n} partitions in {wall:.1f} s; the in-process executor on the same range ...")
    w = wavefront(provision(project, start, end), start, end, workers)
    out["in_process"] = {"partitions": w["partitions"], "wall_s": round(w["wall_s"], 2),
                         "partitions_per_s": round(w["partitions"] / w["wall_s"], 2)}
    out["functions_over_in_process_wall"] = round(wall / w["wall_s"], 2)
    return out


def run_profile(tmp: Path, name: str, project: str, start: date, end: date, workers: int,
                latency: float | None, skip_naive: bool, skip_daily: bool,
                functions_range: tuple[date, date] | None = None, max_merges: int = 2) -> dict:
    stack = LocalStack(tmp / name, project=project, log=log, bq_latency_s=latency)
    saved = dict(os.environ)
    out: dict = {}
    try:
        eps = stack.start_emulators()
        os.environ.update(eps.as_env())
        os.environ["CASCADE_PROJECT"] = project
        model = Model(eps.bigquery) if latency is not None else None
        log(f"[{name}] emulators up: {eps.as_env()}")
        app = provision(project, start, end)
        if model:
            model.reset()
        log(f"[{name}] wavefront backfill of phases {PHASES} over {start}..{end} with {workers} workers ...")
        out["wave"] = wavefront(app, start, end, workers, max_merges)
        out["wave_model"] = model.stats() if model else None
        log(f"[{name}] wavefront: {out['wave']['partitions']} partitions in {out['wave']['wall_s']:.1f} s")
        if not skip_naive:
            app2 = provision(project, start, end)
            if model:
                model.reset()
            log(f"[{name}] naive: date by date, phase after phase, one partition at a time ...")
            out["naive"] = naive(app2, start, end)
            out["naive_model"] = model.stats() if model else None
            log(f"[{name}] naive: {out['naive']['partitions']} partitions in {out['naive']['wall_s']:.1f} s")
        if not skip_daily:
            out["daily"] = daily_path(stack, eps, app, end)
            log(f"[{name}] daily path: {out['daily']}")
        if functions_range is not None:
            out["functions"] = functions_executor(stack, eps, project, *functions_range, workers)
            log(f"[{name}] functions executor: {out['functions']}")
    finally:
        stack.stop()
        os.environ.clear()
        os.environ.update(saved)
    return out


def summarize_emulator(r: dict, start: date, end: date, workers: int) -> dict:
    w, nv = r["wave"], r.get("naive")
    n, wall = w["partitions"], w["wall_s"]
    # Partition durations and job seconds from the serial naive run: uncontended, nothing queued
    # behind another job (the wavefront's own durations include waiting for the emulator).
    durations = nv["durations"] if nv else w["durations"]
    bq_serial = nv["job_seconds"] * (w["jobs"] / nv["jobs"]) if nv else w["busy_s"]
    cp, work = critical_path(w["sched"], durations), sum(durations.values())
    bound = max(cp, work / workers, bq_serial)
    return {
        "range": f"{start}..{end}", "workers": workers,
        "partitions": n, "wall_s": round(wall, 2), "partitions_per_s": round(n / wall, 2),
        "naive_wall_s": round(nv["wall_s"], 2) if nv else None,
        "speedup": round(nv["wall_s"] / wall, 2) if nv else None,
        "ideal_lower_bound_s": round(bound, 2),
        "bound_terms_s": {"critical_path": round(cp, 2), "work_over_workers": round(work / workers, 2),
                          "bigquery_job_seconds_serial": round(bq_serial, 2)},
        "achieved_fraction": round(bound / wall, 3),
        "overhead_per_partition_s": round(max(wall - w["busy_s"], 0.0) / n, 4),
        "bq_jobs_per_partition": round(w["jobs"] / n, 3),
        "firestore_ops_per_partition": round(w["ops"] / n, 2),
    }


def summarize_latency(r: dict, start: date, end: date, workers: int, latency: float, max_merges: int) -> dict:
    w, nv, wm, nm = r["wave"], r.get("naive"), r["wave_model"], r.get("naive_model")
    n, wall = w["partitions"], w["wall_s"]
    durations = nv["durations"] if nv else w["durations"]
    cp, work = critical_path(w["sched"], durations), sum(durations.values())
    # The emulator still executes one job at a time: its busy time (recorded by the model, wavefront
    # run) is serial work no schedule can overlap.
    engine = wm["engine_busy_s"]
    # 2 mutating DML per table: the busiest table's slot-seconds / 2. Slot-seconds from the naive
    # run (uncontended: latency + execution, no waiting for the engine), scaled to the wavefront's count.
    src = nm if nm else wm
    per_table = max(((t["slot_s"] / t["dml"]) * wm["tables"].get(name, {"dml": t["dml"]})["dml"] / wm["dml_per_table"]
                     for name, t in src["tables"].items() if t["dml"]), default=0.0)
    bound = max(cp, work / workers, engine, per_table)
    # Not a term of the goal's bound, a diagnostic: the wavefront runs at most max_merges_per_table
    # (2) PARTITIONS of a table at once, and a partition holds that place for all of its BigQuery jobs
    # (e.g. a quality gate's query after the MERGE), not only for its DML - so the busiest table's
    # partition-seconds (uncontended, naive run) / 2 is a floor for this scheduler.
    per_table_parts: dict[str, float] = {}
    for (proc, _day), d in durations.items():
        per_table_parts[proc] = per_table_parts.get(proc, 0.0) + d
    cap_table, cap_s = max(per_table_parts.items(), key=lambda kv: kv[1], default=("", 0.0))
    cap_s /= max_merges
    return {
        "job_latency_s": latency, "range": f"{start}..{end}", "workers": workers,
        "max_merges_per_table": max_merges,
        "partitions": n, "wall_s": round(wall, 2), "partitions_per_s": round(n / wall, 2),
        "naive_wall_s": round(nv["wall_s"], 2) if nv else None,
        "speedup": round(nv["wall_s"] / wall, 2) if nv else None,
        "ideal_lower_bound_s": round(bound, 2),
        "bound_terms_s": {"critical_path": round(cp, 2), "work_over_workers": round(work / workers, 2),
                          "serial_engine_s": round(engine, 2), "per_table_dml_over_2": round(per_table, 2)},
        "achieved_fraction": round(bound / wall, 3),
        "scheduler_floor_s": {"busiest_table_partition_s_over_cap": round(cap_s, 2), "processor": cap_table,
                              "note": "not a bound term: busiest table's partition-seconds / max_merges_per_table"},
        "bq_jobs_per_partition": round(w["jobs"] / n, 3),
        "firestore_ops_per_partition": round(w["ops"] / n, 2),
        "model": {"execution": wm.get("execution"), "jobs": wm["jobs"], "dml_jobs": wm["dml_jobs"],
                  "max_in_flight": wm["max_in_flight"],
                  "max_dml_running_per_table": wm["max_running_per_table"],
                  "dml_queue_wait_s": round(sum(t["queue_wait_s"] for t in wm["tables"].values()), 2),
                  "rate_limit_wait_s": round(sum(t["rate_wait_s"] for t in wm["tables"].values()), 2),
                  "engine_s_per_job": round(wm["engine_busy_s"] / max(wm["jobs"], 1), 4),
                  "engine_wait_s_per_job": round(wm.get("engine_wait_s", 0.0) / max(wm["jobs"], 1), 4),
                  "jobs_over_latency": wm.get("over_latency"),
                  "other_requests_s_mean": round(wm.get("request_s", 0.0) / max(wm.get("requests", 0), 1), 4),
                  "loop_stall_s": wm.get("loop_stall_s"),
                  "emulator_cpu_s": wm.get("process_cpu_s"), "cli_cpu_s": round(w["cli_cpu_s"], 2),
                  "naive_engine_s_per_job": round(nm["engine_busy_s"] / max(nm["jobs"], 1), 4) if nm else None},
    }


# ------------------------------------------------------------------------------------------ the picture

def timeline_svg(wave: list[tuple[str, float, float]], naive_tl: list[tuple[str, float, float]] | None,
                 title: str) -> str:
    """A hand-written SVG: completed partitions over time (both runs, one time axis), then per-table
    Gantt rows of the wavefront and of the naive loop over the same window (one time axis)."""
    tables = sorted({t for t, _, _ in wave})
    width, left, right = 1100, 190, 30
    plot_w = width - left - right
    wave_end = max((e for _, _, e in wave), default=1.0)
    naive_end = max((e for _, _, e in naive_tl), default=wave_end) if naive_tl else wave_end
    parts: list[str] = []
    y = 40

    def text(x: float, yy: float, s: str, size: int = 12, anchor: str = "start", weight: str = "normal",
             fill: str = "#222") -> None:
        s = s.replace("&", "&amp;").replace("<", "&lt;")
        parts.append(f'<text x="{x:.1f}" y="{yy:.1f}" font-size="{size}" text-anchor="{anchor}" '
                     f'font-weight="{weight}" fill="{fill}">{s}</text>')

    def axis(y0: float, y1: float, t_end: float, label: str) -> None:
        step = next(s for s in (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200) if t_end / s <= 10)
        t = 0.0
        while t <= t_end + 1e-9:
            x = left + plot_w * t / t_end
            parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y1}" stroke="#ddd"/>')
            text(x, y1 + 14, f"{t:g}", 10, "middle", fill="#555")
            t += step
        text(left + plot_w / 2, y1 + 28, label, 11, "middle", fill="#555")

    text(width / 2, 22, title, 15, "middle", "bold")
    # Panel 1: cumulative completions, both runs on one axis.
    h1 = 170
    text(10, y + 12, "partitions completed", 12, weight="bold")
    total = max(len(wave), 1)
    t_end = max(naive_end, wave_end)
    axis(y, y + h1, t_end, "seconds since the run started (same axis for both runs)")
    for series, colour, name in ((wave, "#1f77b4", "wavefront"), (naive_tl or [], "#d62728", "naive loop")):
        if not series:
            continue
        ends = sorted(e for _, _, e in series)
        pts = [(left, y + h1)] + [(left + plot_w * e / t_end, y + h1 - h1 * (i + 1) / total) for i, e in enumerate(ends)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                     + " ".join(f"{px:.1f},{py:.1f}" for px, py in pts) + '"/>')
        text(pts[-1][0] - 4, pts[-1][1] - 6, f"{name}: {len(series)} in {ends[-1]:.0f} s", 11, "end", "bold", colour)
    text(left - 6, y + 10, str(total), 10, "end", fill="#555")
    text(left - 6, y + h1, "0", 10, "end", fill="#555")
    y += h1 + 50

    def gantt(series: list[tuple[str, float, float]], window: float, heading: str, colour: str) -> None:
        nonlocal y
        row = 16
        text(10, y + 12, heading, 12, weight="bold")
        y += 20
        top = y
        for i, table in enumerate(tables):
            ry = top + i * row
            text(left - 6, ry + 11, table, 10, "end")
            parts.append(f'<line x1="{left}" y1="{ry + row:.1f}" x2="{width - right}" y2="{ry + row:.1f}" stroke="#f0f0f0"/>')
            for t, s, e in series:
                if t != table or s > window:
                    continue
                x0 = left + plot_w * s / window
                x1 = left + plot_w * min(e, window) / window
                parts.append(f'<rect x="{x0:.2f}" y="{ry + 2:.1f}" width="{max(x1 - x0, 0.6):.2f}" height="{row - 4}" '
                             f'fill="{colour}" fill-opacity="0.55" stroke="{colour}" stroke-width="0.3"/>')
        y = top + len(tables) * row
        axis(top, y, window, "seconds (same axis for both Gantt charts)")
        y += 45

    done_naive = sum(1 for _, _, e in naive_tl or [] if e <= wave_end)
    gantt(wave, wave_end, f"wavefront: every partition as a bar on its output table ({len(wave)} partitions, "
                          f"{wave_end:.0f} s)", "#1f77b4")
    if naive_tl:
        gantt(naive_tl, wave_end, f"naive loop over the same {wave_end:.0f} s: {done_naive} of {len(naive_tl)} "
                                  f"partitions done", "#d62728")
    height = y + 10
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">\n'
            f'<rect width="{width}" height="{height}" fill="white"/>\n' + "\n".join(parts) + "\n</svg>\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default="emulator,latency", help="comma list of: emulator, latency")
    ap.add_argument("--start", type=parse_date, default=date(2024, 10, 22), help="emulator profile range start")
    ap.add_argument("--end", type=parse_date, default=date(2024, 12, 31), help="emulator profile range end")
    ap.add_argument("--workers", type=int, default=4, help="wavefront workers, emulator profile")
    ap.add_argument("--latency-start", type=parse_date, default=date(2024, 10, 22))
    ap.add_argument("--latency-end", type=parse_date, default=date(2024, 11, 21))
    ap.add_argument("--latency-workers", type=int, default=18,
                    help="wavefront workers, latency profile (9 tables x 2 concurrent MERGEs)")
    ap.add_argument("--job-latency-s", type=float, default=1.0)
    ap.add_argument("--latency-max-merges-per-table", type=int, default=2,
                    help="wavefront partitions per output table at once, latency profile (BigQuery runs 2 "
                         "MERGEs per table and queues the rest; a third place keeps one MERGE queued while a "
                         "partition spends time outside its MERGE, e.g. in a quality gate's query)")
    ap.add_argument("--order", default="critical-path", help="order of ready partitions: critical-path or earliest")
    ap.add_argument("--simulate", action="store_true",
                    help="no emulators: the latency profile in simulated time, in each order (seconds)")
    ap.add_argument("--simulate-overhead-s", type=float, default=0.05,
                    help="framework time per partition before its MERGE, in the simulation")
    ap.add_argument("--skip-naive", action="store_true", help="only the wavefront (no speedup figure)")
    ap.add_argument("--skip-daily", action="store_true", help="no daily-path figures")
    ap.add_argument("--functions-start", type=parse_date, default=date(2024, 10, 22),
                    help="functions-executor range (emulator profile)")
    ap.add_argument("--functions-end", type=parse_date, default=date(2024, 11, 4))
    ap.add_argument("--skip-functions", action="store_true", help="no functions-executor figures")
    ap.add_argument("--timeline", type=Path, default=REPO / "docs" / "bench-timeline.svg",
                    help="SVG picture of the latency-profile runs ('' for none)")
    args = ap.parse_args(argv)
    if args.simulate:
        print(json.dumps(simulated_latency(args.latency_start, args.latency_end, args.latency_workers,
                                           args.latency_max_merges_per_table, args.job_latency_s,
                                           args.simulate_overhead_s)))
        return 0
    global ORDER
    ORDER = args.order
    profiles = {p.strip() for p in args.profiles.split(",") if p.strip()}
    project = "cascade-bench"
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="cascade-bench-") as tmp:
        if "emulator" in profiles:
            r = run_profile(Path(tmp), "emulator", project, args.start, args.end, args.workers, None,
                            args.skip_naive, args.skip_daily,
                            None if args.skip_functions else (args.functions_start, args.functions_end))
            out.update(summarize_emulator(r, args.start, args.end, args.workers))
            out["daily_path"] = r.get("daily")
            out["functions_executor"] = r.get("functions")
        if "latency" in profiles:
            r = run_profile(Path(tmp), "latency", project, args.latency_start, args.latency_end,
                            args.latency_workers, args.job_latency_s, args.skip_naive, args.skip_daily,
                            max_merges=args.latency_max_merges_per_table)
            lat = summarize_latency(r, args.latency_start, args.latency_end, args.latency_workers,
                                    args.job_latency_s, args.latency_max_merges_per_table)
            lat["daily_path"] = r.get("daily")
            out["latency_model"] = lat
            if args.timeline and str(args.timeline) not in ("", "."):  # Path("") is "."
                title = (f"make bench, latency model ({args.job_latency_s:g} s per BigQuery job, 2 MERGEs per table): "
                         f"{args.latency_start}..{args.latency_end}, phases 2-4, {lat['partitions']} partitions")
                args.timeline.parent.mkdir(parents=True, exist_ok=True)
                args.timeline.write_text(timeline_svg(r["wave"]["timeline"], (r.get("naive") or {}).get("timeline"),
                                                      title))
                log(f"timeline written to {args.timeline}")
    out["goals"] = GOALS
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
