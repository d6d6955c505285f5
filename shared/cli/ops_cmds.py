"""Day-to-day commands: describe, trigger, status, wait, history, rejected."""

from __future__ import annotations

import argparse
import json
import sys

from cascade.cli._common import app, bool_arg, date_arg, fail, now, print_json, state_dir
from cascade.errors import CascadeError
from cascade.runtime import recovery
from cascade.runtime.messages import Trigger, new_correlation_id
from cascade.state.status import Status


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("describe", help="print the pipeline definition (phases, processors, tables, topics)",
                       description="Print the pipeline definition: phases, processors, fully qualified output "
                                   "tables and MERGE keys, upstreams, lookbacks, topics and the calendar.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_describe)

    p = sub.add_parser("trigger", help="publish a trigger message for a date",
                       description="Publish a trigger for --date to a phase's topic (the same JSON message any "
                                   "Pub/Sub client can publish to $CASCADE_TRIGGER_TOPIC).")
    p.add_argument("--date", type=date_arg, help="YYYY-MM-DD (default: yesterday in the pipeline's time zone)")
    p.add_argument("--phase", type=int,
                   help="phase to trigger (default: the phase of the --processor named, else the first phase)")
    p.add_argument("--processor", action="append", default=[], help="only this processor (repeatable)")
    p.add_argument("--skip-downstream-trigger", action="store_true", help="run the phase but do not cascade")
    p.add_argument("--mode", choices=["daily", "backfill"], default="daily")
    p.add_argument("--strict-mode", type=bool_arg, default=True, metavar="true|false",
                   help="run the defensive checks (default true; backfill mode skips them)")
    p.add_argument("--generation", type=int, default=None,
                   help="run that generation's work only (as a completion would); without it the trigger means "
                        "'make this complete and fresh': it runs what is missing, failed, blocked or stale, "
                        "whatever generation the date is at")
    p.add_argument("--json", action="store_true", help="print the published message as JSON")
    p.set_defaults(func=_trigger)

    p = sub.add_parser("status", help="show each phase and processor for a date",
                       description="Show each phase and processor for --date: status, record count, duration, "
                                   "run id, and whether the next phase was triggered; each failed, blocked or "
                                   "stale partition ends with its next step.")
    p.add_argument("--date", type=date_arg,
                   help="YYYY-MM-DD (default: the latest date with recorded activity, named in the output)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_status)

    p = sub.add_parser("wait", help="wait until a phase completes for a date (exit 0/1/2)",
                       description="Wait on Firestore state until --phase is complete for --date. Exit 0 when "
                                   "complete (or no data is expected on the date), 1 when it or an earlier phase failed or "
                                   "was blocked, 2 on timeout. With --since (the time the trigger it follows was "
                                   "published) only outcomes recorded at or after that time count: a failure or "
                                   "success recorded before it is still pending.")
    p.add_argument("--date", type=date_arg, required=True)
    p.add_argument("--end", type=date_arg,
                   help="last date, inclusive: wait for every expected date of --date..--end (as a rerun of "
                        "several dates prints it); exit 0 when all are complete, 1 when any failed or was "
                        "blocked, 2 on timeout (one budget for the whole range)")
    p.add_argument("--phase", type=int, required=True)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    p.add_argument("--since", type=_since_arg, metavar="TIMESTAMP",
                   help="ISO 8601 time the trigger was published, e.g. 2025-01-16T10:00:00Z (no offset: UTC); "
                        "outcomes recorded before it are not the verdict")
    p.set_defaults(func=_wait)

    p = sub.add_parser("check", help="run the strict-mode checks of a phase for a date, without processing",
                       description="Run the defensive checks (upstream status, lookback gaps) of every processor "
                                   "of --phase for --date and print what they found. Nothing is processed or "
                                   "recorded. Exit 0 when all pass, 1 when a check would block.")
    p.add_argument("--phase", type=int, required=True)
    p.add_argument("--date", type=date_arg, required=True)
    p.add_argument("--processor", action="append", default=[], help="only this processor (repeatable)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_check)

    p = sub.add_parser("history", help="run history of a processor and/or date",
                       description="List recorded runs (newest first), with status, timings, counts and errors.")
    p.add_argument("--date", type=date_arg)
    p.add_argument("--processor")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_history)

    p = sub.add_parser("rejected", help="messages refused as invalid, with their reason and payload")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_rejected)


def _describe(args: argparse.Namespace) -> int:
    import os

    from cascade.definition.loading import load

    project = os.environ.get("CASCADE_PROJECT", "cascade-local")
    d = load().describe(project)
    if args.json:
        print_json(d)
        return 0
    print(f"pipeline {d['pipeline']}: {d['description']}  (definition: {d['definition']})")
    cal = d["calendar"]
    print(f"calendar: time zone {cal['timezone']}; seasons "
          + ", ".join(f"{s['name']} {s['start']}..{s['end']}" for s in cal["seasons"])
          + f"; {len(cal['no_game'])} dates with no data expected"
          + (f"; closed on {', '.join(w.capitalize() + 's' for w in cal['closed_weekdays'])}"
             if cal.get("closed_weekdays") else "")
          + (f"; history starts {cal['history_start']}" if cal.get("history_start") else ""))
    print(f"raw bucket: gs://{d['raw_bucket']}")
    for ph in d["phases"]:
        nxt = f" -> phase {ph['next']}" if ph["next"] else ""
        print(f"\nphase {ph['number']} {ph['title']}{nxt}\n  topic {ph['topic']}  (dead letters {ph['dead_letter_topic']})")
        for p in ph["processors"]:
            ups = ", ".join(u["processor"] + _window_text(u) for u in p["upstreams"]) or "-"
            print(f"  {p['name']:<28} -> {p['output_table']}  keys ({p['date_column']}, {', '.join(p['keys'])})")
            print(f"  {'':<28}    upstreams: {ups}")
            if p.get("history_start"):  # later than the pipeline's: earlier partitions are not expected
                print(f"  {'':<28}    history starts {p['history_start']}")
    return 0


def _window_text(u: dict) -> str:
    """`` (lookback 30 d)``, `` (last 10 expected dates, until the day before)``, or ``""``."""
    bits = []
    if u.get("lookback_days"):
        bits.append(f"lookback {u['lookback_days']} d")
    if u.get("lookback_dates"):
        bits.append(f"last {u['lookback_dates']} expected dates")
    if u.get("until_previous_day"):
        bits.append("until the day before")
    return f" ({', '.join(bits)})" if bits else ""


def _trigger(args: argparse.Namespace) -> int:
    a = app()
    named = {a.pipeline.processor(n).phase for n in args.processor}
    if args.phase is None and len(named) == 1:  # --processor alone: its phase
        args.phase = next(iter(named))
    phase = args.phase or a.pipeline.phases[0].number
    a.pipeline.phase(phase)
    for name in args.processor:
        if a.pipeline.processor(name).phase != phase:
            raise CascadeError(f"processor {name} is in phase {a.pipeline.processor(name).phase}, not {phase}")
    day = args.date or a.pipeline.calendar.yesterday(now())
    trig = Trigger(pipeline=a.pipeline.name, phase=phase, data_date=day, processors=tuple(args.processor),
                   mode=args.mode, strict_mode=args.strict_mode, skip_downstream_trigger=args.skip_downstream_trigger,
                   correlation_id=new_correlation_id(), generation=args.generation)
    from cascade.runtime.messages import parse
    parse(trig.to_json(), a.pipeline, phase, now())  # the phase would reject it: refuse here, same reason
    answer = ""
    cal = a.pipeline.calendar
    if not cal.is_expected(day):
        runs = [p.name for p in a.pipeline.processors_of(phase) if cal.is_expected(day, p.name)
                and (not trig.processors or p.name in trig.processors)]
        answer = (f"no data expected ({cal.reason_not_expected(day)}): phase {phase} records its processors "
                  f"skipped and hands nothing on" + (f"; {', '.join(runs)} still runs (the calendar reads it)"
                                                    if runs else ""))
    elif trig.is_intent:
        from cascade.runtime.handoff import intent_for

        intent = intent_for(a, phase, day, trig.processors)
        answer = intent.answer(phase, day) if intent.nothing_to_do else (
            "will run " + ", ".join(f"{n} ({r})" for n, r in intent.reasons.items())
            + (f" once strict mode's checks pass (what they find now: cascade check --phase {phase} --date {day})"
               if trig.checks_enabled else ""))
    topic = a.pipeline.topic(phase)
    published_at = now()
    message_id = a.publisher.publish(topic, trig.to_json(), trig.attributes())
    if args.json:
        print_json({"topic": topic, "message_id": message_id, "message": trig.to_dict(), "answer": answer or None,
                    "published_at": published_at.isoformat()})
    else:
        print(f"published trigger for {day} to {topic} (message {message_id})")
        if answer:
            print(f"{day}: {answer}")
        last = phase if args.skip_downstream_trigger else _last_phase(a.pipeline, phase)
        print(f"follow it with: {recovery.wait_command(day, last, published_at)}")
    return 0


def _last_phase(pipeline, phase: int) -> int:
    """The last phase a trigger of ``phase`` cascades to (what "the date completes" means)."""
    return pipeline.downstream_phases(phase)[-1]


def _status(args: argparse.Namespace) -> int:
    from cascade.dev.deployed import local_drift
    from cascade.ops.date_status import date_status

    a = app()
    day = args.date
    if day is None:
        day = a.tracker.latest_data_date()
        if day is None:
            fail("nothing is recorded yet for this pipeline: give --date YYYY-MM-DD")
        chose = f"no --date: showing {day}, the latest date with recorded activity"
        print(chose, file=sys.stderr if args.json else sys.stdout)  # stdout stays JSON with --json
    from cascade.backfill.reach import cover_for

    st = date_status(a, day, cover=cover_for(a))  # next steps whose backfill reaches every input it needs
    drift = local_drift(a.pipeline, state_dir())  # the local functions run another definition?
    if args.json:
        print(json.dumps({**st, "deployed": drift.to_dict() if drift else None}, default=str))
        return 0
    print_status(st)
    if drift:
        print(f"note: {drift.message}")
    return 0


def print_status(st: dict) -> None:
    print(f"date {st['date']}" + (f"  ({st['note']})" if st.get("note") else ""))
    for n, ph in st["phases"].items():
        nxt = ""
        if ph["next_phase"]:
            done = {"backfill": "ran in a backfill", "other": "ran (triggered on its own)"}.get(ph.get("next_ran", ""))
            nxt = f"  -> phase {ph['next_phase']} {'triggered' if ph['triggered_next'] else done or 'not triggered'}"
        if ph["status"] == Status.TRIGGERED:  # the phase before it triggered it; nothing began since
            at = ph.get("triggered_at")
            print(f"phase {n} {ph['name']:<11} TRIGGERED, NOT STARTED (generation {ph.get('triggered_generation')} "
                  f"triggered{f' at {at:%Y-%m-%d %H:%M:%S} UTC' if at else ''}; no run began since - "
                  f"`cascade sweep` re-publishes a trigger nobody picked up)")
        else:
            # A date without data: nothing recorded is not "missing" (the top line says why).
            state = "NO DATA" if not st.get("expected", True) and ph["status"] == Status.MISSING else ph["status"].upper()
            print(f"phase {n} {ph['name']:<11} {state:<9} generation {ph['generation']}{nxt}")
        for name, p in ph["processors"].items():
            rc = "-" if p["record_count"] is None else p["record_count"]
            dur = "-" if p["duration_s"] is None else f"{p['duration_s']:.2f}s"
            print(f"   {name:<28} {p['status']:<8} rows {rc!s:>5}  {dur:>7}  {p['run_id'] or ''}")
            if p.get("short_window"):
                print(f"   {'':<28} {p['short_window']}")
            if p.get("stale"):
                print(f"   {'':<28} stale: {p['stale']}")
            elif p.get("error") and p["status"] != Status.SUCCESS:
                # Whole (it may end in the command to run), but a block's resolution recorded when it
                # blocked gives way to its next step, derived from the state as it is now.
                error = p["error"].split("; resolution: ")[0] if p.get("next_step") else p["error"]
                print(f"   {'':<28} {error}")
            if p.get("next_step"):  # failed, blocked or stale: the root cause first, then the command
                print(f"   {'':<28} next: {p['next_step']}")


def _since_arg(text: str):
    from datetime import datetime, timezone

    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time (e.g. 2025-01-16T10:00:00Z)") from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _wait(args: argparse.Namespace) -> int:
    import time

    from cascade.backfill.reach import cover_for
    from cascade.ops.date_status import wait_for_phase

    a = app()
    cover = cover_for(a)
    a.pipeline.phase(args.phase)
    if args.end is not None and args.end < args.date:
        return fail(f"--end {args.end} is before --date {args.date}: give the range's first date to --date")
    days = [args.date] if args.end is None else a.pipeline.calendar.expected_dates(args.date, args.end)
    if not days:
        print(f"{args.date}..{args.end}: no data expected on any date: nothing to wait for")
        return 0
    deadline = time.monotonic() + args.timeout
    codes: list[int] = []
    for i, day in enumerate(days):
        last: list[str] = []

        def show(line: str, day=day, last=last, i=i) -> None:  # progress on stderr, only when something changed
            if not last or last[-1] != line:
                last.append(line)
                prefix = f"[{i + 1}/{len(days)}] " if len(days) > 1 else ""
                print(f"{prefix}{day}: {line}", file=sys.stderr, flush=True)

        result = wait_for_phase(a, day, args.phase, max(deadline - time.monotonic(), 0.0), since=args.since,
                                on_change=show, cover=cover)
        print(f"{day}: {result.reason}")
        if result.code:
            print_status(result.status)
        codes.append(result.code)
    if len(days) > 1:
        done = codes.count(0)
        print(f"{args.date}..{args.end}: {done}/{len(days)} expected date(s) complete"
              + (f", {codes.count(1)} failed or blocked" if 1 in codes else "")
              + (f", {codes.count(2)} still pending at the timeout" if 2 in codes else ""))
    return 2 if 2 in codes else max(codes)


def _check(args: argparse.Namespace) -> int:
    from cascade.runtime.checks import Checks

    a = app()
    procs = [p for p in a.pipeline.processors_of(args.phase) if not args.processor or p.name in args.processor]
    for name in args.processor:
        a.pipeline.processor(name)
    checks = Checks(a.pipeline, a.tracker, a.warehouse)
    report = {p.name: checks.run(p, args.date) for p in procs}
    blocked = any(r.blocked for r in report.values())
    if args.json:
        print_json({"phase": args.phase, "date": args.date.isoformat(), "blocked": blocked,
                    "processors": {n: {**r.to_dict(), "blocked": r.blocked.to_dict() if r.blocked else None}
                                   for n, r in report.items()}})
        return 1 if blocked else 0
    print(f"strict-mode checks for phase {args.phase} on {args.date}:")
    for name, r in report.items():
        print(f"  {name}: {'BLOCKED' if r.blocked else 'ok'}  ({r.queries} queries, "
              f"{sum(x.seconds for x in r.results):.3f}s)")
        for res in r.results:
            print(f"    [{'pass' if res.passed else 'FAIL'}] {res.name} on {res.upstream}: {res.detail}")
        if r.blocked:
            print(f"    resolution: {r.blocked.resolution}")
    return 1 if blocked else 0


def _history(args: argparse.Namespace) -> int:
    runs = app().tracker.runs(processor=args.processor, day=args.date, limit=args.limit)
    if args.json:
        print(json.dumps(runs, default=str))
        return 0
    from cascade.runtime.cost import JobCost

    for r in runs:
        # BigQuery cost of the run's jobs (recorded by runs that sent any; "-" for older records)
        cost = "bq " + JobCost.from_dict(r["cost"]).render() if r.get("cost") else "bq -"
        rows = "-" if r.get("record_count") is None else r["record_count"]
        took = "-" if r.get("duration_s") is None else f"{r['duration_s']:.2f}s"
        gen = "-" if r.get("generation") is None else r["generation"]
        print(f"{str(r.get('started_at'))[:19]}  {r.get('processor'):<28} {r.get('data_date')} g{gen} "
              f"{r.get('status'):<8} rows {rows!s:>5}  {took:>7}  {cost}  {r.get('run_id')}"
              + (f"\n      {r['error']}" if r.get("error") else ""))
    total = JobCost()
    for r in runs:
        total.add(JobCost.from_dict(r.get("cost")))
    if runs:
        print(f"BigQuery, these {len(runs)} runs: {total.render()}")
    return 0


def _rejected(args: argparse.Namespace) -> int:
    rows = app().tracker.rejected()
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    for r in rows:
        print(f"{str(r.get('rejected_at'))[:19]} phase {r.get('phase')}: {r.get('reason')}\n      data: {r.get('data')[:200]}")
    return 0
