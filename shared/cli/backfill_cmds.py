"""Backfill and data commands: backfill, preflight, coverage, validate, rerun, sample.

Exit codes: 0 success; 1 failures (failed/blocked partitions, a preflight or validation problem);
2 bad usage (end before start, unknown phase/processor, a range over 3 years) or a refused backfill
(another backfill holds a processor, the preflight failed); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

from cascade.cli._common import app, bool_arg, date_arg, now, print_json
from cascade.runtime import recovery


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backfill", help="backfill a date range: plan, dependency-aware parallel wavefront, resumable",
        description="Run every missing, failed or blocked partition (processor x date) of --start..--end as "
                    "soon as its inputs are complete (same-date upstreams and lookback windows): a sliding "
                    "wavefront across dates and phases, bounded by --workers and a per-table MERGE limit. "
                    "Dates the calendar expects no data on are skipped. Re-running the same command does only what is still missing or "
                    "failed. One backfill per processor at a time. Exit 0 all done, 1 failures, 2 refused/usage, "
                    "130 interrupted.")
    _range(p)
    p.add_argument("--phase", type=int, action="append", default=[],
                   help="phase to backfill (repeatable; default: the first phase and every phase it cascades to)")
    p.add_argument("--processor", action="append", default=[],
                   help="only this processor and what reads it in its own phase (rebuilt with it, as the phase "
                        "is handed on whole) (repeatable)")
    p.add_argument("--workers", type=int, default=4, help="partitions run at once (default 4)")
    p.add_argument("--max-merges-per-table", type=int, default=2,
                   help="concurrent MERGEs into one table (default 2, BigQuery's concurrent-DML limit)")
    p.add_argument("--max-rate", type=float, default=None, help="at most this many partitions started per second")
    p.add_argument("--skip-downstream-trigger", action="store_true",
                   help="do not publish completions to phases outside the backfill")
    p.add_argument("--dry-run", action="store_true", help="print the plan (dates x processors matrix) and the "
                                                          "estimated BigQuery jobs; run nothing")
    p.add_argument("--force", action="store_true", help="also re-run done partitions, with a new generation")
    p.add_argument("--skip-preflight", action="store_true", help="do not check upstream coverage first")
    p.add_argument("--preflight-threshold", type=float, default=0.95,
                   help="minimum upstream coverage (fraction of expected dates, default 0.95)")
    p.add_argument("--skip-validation", action="store_true", help="do not validate the range at the end")
    p.add_argument("--executor", choices=["in-process", "functions"], default="in-process",
                   help="where partitions run: in this process (default), or dispatched to the deployed phase "
                        "functions as backfill-mode triggers and followed in Firestore (stopping the CLI loses "
                        "nothing: dispatched partitions finish, re-running resumes)")
    p.add_argument("--widen", action="store_true",
                   help="first widen the range (an earlier start, earlier phases) until every input it reads "
                        "outside it - lookback history, phases not selected - is present and fresh, then run "
                        "that (the plan says what it became); a range that reaches everything is unchanged")
    p.add_argument("--partition-timeout", type=float, default=1800.0,
                   help="functions executor: seconds a dispatched partition may take to reach a final state "
                        "(default 1800)")
    p.add_argument("--json", action="store_true", help="print the plan / summary as JSON")
    p.set_defaults(func=_backfill)

    p = sub.add_parser("preflight", help="check the upstream coverage a phase's backfill needs (exit 0/1)",
                       description="Check that what --phase reads (upstream tables over the range widened by the "
                                   "lookback, raw files for loaders) covers at least --threshold of the expected "
                                   "dates; list the missing dates. Exit 1 below the threshold.")
    p.add_argument("--phase", type=int, required=True)
    _range(p)
    p.add_argument("--threshold", type=float, default=0.95)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_preflight)

    p = sub.add_parser("coverage", help="per table: expected dates, present, missing list, %%",
                       description="Per output table over --start..--end: expected dates (calendar-aware), dates "
                                   "present, the missing dates and the percentage, plus the partition states.")
    _range(p)
    p.add_argument("--phase", type=int, action="append", default=[])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_coverage)

    p = sub.add_parser("validate", help="duplicate keys and NULL critical columns (exit 1 on a problem)")
    _range(p)
    p.add_argument("--phase", type=int, action="append", default=[])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_validate)

    p = sub.add_parser("rerun", help="re-process a phase and everything downstream with a new generation",
                       description="For each expected date of --date..--end publish a trigger to --phase's topic with a "
                                   "new generation (1 + the highest of the phase's partitions for the date): the "
                                   "phase and every phase after it re-run once; earlier runs stay in the history.")
    p.add_argument("--date", type=date_arg, required=True)
    p.add_argument("--end", type=date_arg, help="last date, inclusive (default: --date)")
    p.add_argument("--phase", type=int, required=True)
    p.add_argument("--skip-downstream-trigger", action="store_true")
    p.add_argument("--strict-mode", type=bool_arg, default=True, metavar="true|false")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_rerun)

    p = sub.add_parser("sample", help="print a few output rows of a processor for a date")
    p.add_argument("--date", type=date_arg, required=True)
    p.add_argument("--processor", required=True)
    p.add_argument("--limit", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_sample)


def _range(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", type=date_arg, required=True, help="first date (YYYY-MM-DD)")
    p.add_argument("--end", type=date_arg, required=True, help="last date, inclusive")


def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _check_phases(a, phases: list[int]) -> None:
    for n in phases:
        a.pipeline.phase(n)


def _backfill(args: argparse.Namespace) -> int:
    from cascade.backfill import BackfillRequest, print_result, run_backfill

    req = BackfillRequest(start=args.start, end=args.end, phases=args.phase, processors=args.processor,
                          workers=args.workers, max_merges_per_table=args.max_merges_per_table,
                          max_rate=args.max_rate, skip_downstream_trigger=args.skip_downstream_trigger,
                          dry_run=args.dry_run, force=args.force, skip_preflight=args.skip_preflight,
                          preflight_threshold=args.preflight_threshold, validate=not args.skip_validation,
                          executor=args.executor, partition_timeout_s=args.partition_timeout, widen=args.widen)
    result = run_backfill(app(), req)
    print_result(result, args.json)
    if result.refused:
        print(f"error: {result.refused.splitlines()[0]}", file=sys.stderr)
    return result.exit_code


def _preflight(args: argparse.Namespace) -> int:
    from cascade.backfill.plan import check_range
    from cascade.backfill.validate import preflight

    a = app()
    check_range(args.start, args.end)
    _check_phases(a, [args.phase])
    if not 0 < args.threshold <= 1:
        return _usage("--threshold must be in (0, 1], e.g. 0.95")
    report = preflight(a, a.pipeline.processors_of(args.phase), args.start, args.end, args.threshold)
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.render())
    return 0 if report.ok else 1


def _coverage(args: argparse.Namespace) -> int:
    from collections import Counter

    from cascade.backfill.plan import build_plan, check_range, ordered_processors
    from cascade.backfill.validate import coverage

    a = app()
    check_range(args.start, args.end)
    _check_phases(a, args.phase)
    cov = coverage(a, args.start, args.end, phases=args.phase or None)
    procs = [p for p in ordered_processors(a.pipeline) if not args.phase or p.phase in args.phase]
    plan = build_plan(a.pipeline, a.tracker, procs, args.start, args.end)
    states = {p.name: dict(Counter(plan.cells[(p.name, d.isoformat())] for d in plan.expected_dates)) for p in procs}
    if args.json:
        print_json({"start": args.start.isoformat(), "end": args.end.isoformat(),
                    "tables": [{**c.to_dict(), "partition_states": states[c.processor]} for c in cov]})
        return 0
    print(f"coverage {args.start}..{args.end} ({len(plan.expected_dates)} expected dates)")
    for c in cov:
        st = ", ".join(f"{n} {k}" for k, n in sorted(states[c.processor].items()))
        print(f"  phase {c.phase} {c.render()}\n  {'':<8}partitions: {st}")
    short = [c for c in cov if c.missing or c.stale]
    if short:  # what fills the gaps and rebuilds the stale dates, reaching every input it needs
        from cascade.backfill.reach import covering_backfill

        days = [date.fromisoformat(d) for c in short for d in (*c.missing, *c.stale)]
        first = min(a.pipeline.processor(c.processor).phase for c in short)
        last = max(a.pipeline.processor(c.processor).phase for c in short)
        chosen = [p for p in a.pipeline.processors if first <= p.phase <= last]
        reach = covering_backfill(a, chosen, min(days), max(days))
        print(f"next: {reach.command(a.pipeline)}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from cascade.backfill.plan import check_range
    from cascade.backfill.validate import validate

    a = app()
    check_range(args.start, args.end)
    _check_phases(a, args.phase)
    results = validate(a, args.start, args.end, phases=args.phase or None)
    problems = [p for r in results for p in r.problems()]
    if args.json:
        print_json({"ok": not problems, "problems": problems,
                    "tables": [{"table": r.table, "duplicate_keys": r.duplicate_keys,
                                "duplicate_examples": r.duplicate_examples, "null_critical": r.null_critical}
                               for r in results]})
    else:
        for r in results:
            print(f"  {'ok  ' if r.ok else 'FAIL'} {r.table}: {r.duplicate_keys} duplicate key(s), NULL critical "
                  + (", ".join(f"{c}={n}" for c, n in r.null_critical.items()) or "(none declared)"))
        print(f"validation {args.start}..{args.end}: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
        for p in problems:
            print(f"  {p}")
    return 1 if problems else 0


def _rerun(args: argparse.Namespace) -> int:
    from cascade.backfill.rerun import rerun

    a = app()
    published_at = now()  # before the first trigger: what the wait that follows it counts from
    published, skipped = rerun(a, args.phase, args.date, args.end or args.date, strict_mode=args.strict_mode,
                               skip_downstream_trigger=args.skip_downstream_trigger)
    if args.json:
        print_json({"published": [r.__dict__ for r in published], "skipped_no_game": skipped})
        return 0
    for r in published:
        print(f"{r.data_date}: published phase {args.phase} trigger generation {r.generation} to {r.topic} "
              f"(message {r.message_id})")
    for s in skipped:
        print(f"{s}: no data expected, skipped")
    if published:
        last = args.phase if args.skip_downstream_trigger else a.pipeline.downstream_phases(args.phase)[-1]
        wait = recovery.wait_command(published[0].data_date, last, published_at, end=published[-1].data_date)
        print(f"follow it with: {wait}")
        from cascade.backfill.reach import readers_after

        end = date.fromisoformat(str(published[-1].data_date))
        span = readers_after(a.pipeline, [args.phase], end)
        latest = a.tracker.latest_data_date()  # nothing after the latest recorded date can be stale
        if span is not None and latest is not None and latest >= span[0]:
            # Later windows read the rerun dates: their partitions are stale once it has run.
            command = recovery.backfill_command(a.pipeline, args.phase, max(ph.number for ph in a.pipeline.phases),
                                                span[0].isoformat(), min(span[1], latest).isoformat())
            print(f"then rebuild the later dates whose lookback windows read them: {command}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    a = app()
    proc = a.pipeline.processor(args.processor)
    if not 1 <= args.limit <= 1000:
        return _usage("--limit must be between 1 and 1000")
    t = proc.output
    cols = t.column_names
    rows = a.warehouse.sample_rows(t, args.date, int(args.limit))
    total = a.warehouse.count_rows(t, args.date)
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    print(f"{a.warehouse.table_id(t)} on {args.date}: {total} row(s) in the partition, {len(rows)} shown "
          f"(limit {args.limit})")
    cells = [[("" if r[c] is None else str(r[c])) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    return 0 if rows else 1
