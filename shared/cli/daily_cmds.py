"""``cascade daily`` and ``cascade simulate``: the schedulers' mornings on the local stack."""

from __future__ import annotations

import argparse
from datetime import datetime

from cascade.cli._common import app, date_arg, fail, now
from cascade.definition.calendar import parse_date
from cascade.state.status import Status


def _fail_arg(text: str) -> tuple[str, object]:
    proc, sep, day = text.partition("@")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: use PROCESSOR@YYYY-MM-DD, e.g. nbac_player_boxscore@2025-01-10")
    try:
        return proc, parse_date(day)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from exc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("daily", help="do what the schedulers do each morning, locally",
                       description="Write the raw files (the loaders' stand-in) for yesterday and today, then publish "
                                   "the trigger of each phase the definition schedules daily, in schedule order, "
                                   "for its declared day (yesterday or today), and wait for each cascade. Exit 0 "
                                   "when every cascade completed, 1 otherwise.")
    p.add_argument("--now", help="ISO timestamp of the morning (default: now); e.g. 2025-01-16T10:00-05:00")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait per cascade")
    p.set_defaults(func=_daily)

    p = sub.add_parser("simulate", help="replay N mornings of the daily schedule with an injected clock",
                       description="Replay --days mornings starting --start (10:00 in the pipeline's time zone): each "
                                   "morning triggers the definition's daily schedules (each for its declared day) "
                                   "through Pub/Sub and the phase functions. --fail P@D makes the raw file of raw "
                                   "processor P missing on date D; the next morning the recovery restores it, "
                                   "re-runs the failed phase and re-triggers what strict mode blocked. Prints a "
                                   "day x phase table.")
    p.add_argument("--start", type=date_arg, required=True, help="first simulated morning (YYYY-MM-DD)")
    p.add_argument("--days", type=int, required=True)
    p.add_argument("--fail", type=_fail_arg, action="append", default=[], metavar="PROCESSOR@DATE")
    p.add_argument("--timeout", type=float, default=120.0)
    p.set_defaults(func=_simulate)


def _daily(args: argparse.Namespace) -> int:
    from cascade.ops.daily import render_table, run_morning

    a = app()
    when = datetime.fromisoformat(args.now) if args.now else now()
    if when.tzinfo is None:
        fail("--now needs a UTC offset, e.g. 2025-01-16T10:00-05:00")
    morning = run_morning(a, when, args.timeout)
    print(render_table(a, [morning]))
    ok = all(s in (Status.COMPLETE, Status.SKIPPED) for s in morning.runs.values())
    print("daily cascade complete" if ok else "daily cascade did NOT complete: see the notes above")
    return 0 if ok else 1


def _simulate(args: argparse.Namespace) -> int:
    from cascade.ops.daily import morning_at, render_table, simulate

    a = app()
    if not 1 <= args.days <= 400:
        fail("--days must be between 1 and 400")
    for proc, _ in args.fail:
        try:
            kind = a.pipeline.processor(proc).kind
        except Exception as exc:  # noqa: BLE001
            fail(str(exc))
        if kind != "gcs_json_load":
            fail(f"--fail {proc}: only raw loads (scraped files) can be made to fail in a simulation")
    start = morning_at(args.start, a.pipeline.calendar.timezone)
    mornings = simulate(a, start, args.days, args.fail, args.timeout,
                        progress=lambda m: print(m, flush=True))
    print()
    print(render_table(a, mornings))
    return 0
