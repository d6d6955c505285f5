"""``cascade sweep`` and ``cascade dlq list|replay``: repairing stuck state and dead letters."""

from __future__ import annotations

import argparse
import json

from cascade.cli._common import app, handle_cascade_error, print_json
from cascade.errors import CascadeError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="repair stuck state: unpublished triggers, expired leases, stuck phases",
                       description="Republish downstream triggers that were claimed but never published, mark "
                                   "partitions whose lease expired as failed and re-trigger them, and alert once "
                                   "about phases waiting on processors too long. Idempotent; safe to run "
                                   "concurrently (production runs it every 10 minutes). Exits 1 if some item could "
                                   "not be repaired (listed under `errors` with its next step).")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_sweep)

    p = sub.add_parser("dlq", help="list or replay a phase's dead-lettered messages",
                       description="Messages Pub/Sub gave up on after the maximum delivery attempts. `list` shows "
                                   "them without consuming them; `replay` republishes them to the phase's topic "
                                   "(after the fix is deployed) and acknowledges each only once republished.")
    p.add_argument("action", choices=["list", "replay"])
    p.add_argument("--phase", type=int, required=True)
    p.add_argument("--max", type=int, default=100, help="at most this many messages")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_dlq)


def _sweep(args: argparse.Namespace) -> int:
    from cascade.ops.sweeper import sweep

    report = sweep(app())
    if args.json:
        print_json(report.to_dict())
        return 0 if report.ok else 1
    for kind, items in report.to_dict().items():
        print(f"{kind}: {len(items)}")
        for item in items:
            print(f"  - {item}")
    return 0 if report.ok else 1  # exit 1: some items could not be repaired (listed under errors)


def _dlq(args: argparse.Namespace) -> int:
    from cascade.ops.deadletters import list_dead_letters, replay

    a = app()
    try:
        a.pipeline.phase(args.phase)
    except CascadeError as exc:
        return handle_cascade_error(exc)
    if args.action == "list":
        letters = list_dead_letters(a, args.phase, args.max)
        if args.json:
            print(json.dumps([d.to_dict() for d in letters], default=str))
            return 0
        print(f"{len(letters)} dead letter(s) on {a.pipeline.dead_letter_topic(args.phase)}")
        for d in letters:
            print(f"  {d.message_id}  attempts={d.delivery_attempts}  {d.data[:200].decode('utf-8', 'replace')}")
        return 0
    ids = replay(a, args.phase, args.max)
    print(f"replayed {len(ids)} message(s) to {a.pipeline.topic(args.phase)}")
    return 0
