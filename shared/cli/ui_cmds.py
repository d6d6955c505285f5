"""The status page command: ``cascade ui``."""

from __future__ import annotations

import argparse
import json
import sys

from cascade.cli._common import app, date_arg, state_dir

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ui", help="serve a read-only status page (dates x processors matrix, live)",
        description="Serve a read-only web page of the pipeline's state, on the emulators or in production "
                    "(the same clients as every command): a dates x processors matrix grouped by phase, coloured "
                    "by status, dates with no data expected greyed, refreshed live from one batched Firestore read per poll; "
                    "a cell opens the partition (run history, rows, duration, error or blocked reason and the "
                    "exact recovery command); active backfills, dead letters and rejected messages per phase, "
                    "coverage per table. Bound to 127.0.0.1 unless --host says otherwise.")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--start", type=date_arg, help="first date shown (default: 29 days before --end)")
    p.add_argument("--end", type=date_arg, help="last date shown, inclusive (default: today in the pipeline's time zone)")
    p.add_argument("--refresh", type=float, default=5.0, help="seconds between live refreshes (default 5)")
    p.add_argument("--json", action="store_true", help="print the page's address as one JSON line, then serve")
    p.set_defaults(func=_ui)


def _ui(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from cascade.ui.matrix import DEFAULT_DAYS, check_range
    from cascade.ui.server import StatusPage, serve

    if not 0 <= args.port <= 65535:
        print(f"error: --port {args.port} is not a port (0-65535)", file=sys.stderr)
        return 2
    if args.refresh < 0.5:
        print("error: --refresh must be at least 0.5 seconds", file=sys.stderr)
        return 2
    a = app()
    start, end = args.start, args.end
    if start and not end:
        end = start + timedelta(days=DEFAULT_DAYS - 1)
    if end and not start:
        start = end - timedelta(days=DEFAULT_DAYS - 1)
    if start and end:
        try:
            check_range(start, end)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.host not in _LOOPBACK:
        print(f"warning: serving on {args.host}: anyone who can reach it sees the pipeline's state", file=sys.stderr)
    page = StatusPage(a, start=start, end=end, refresh_s=args.refresh, state_dir=state_dir())
    _ = a.tracker  # build the Firestore client before the server's threads share it

    def ready(url: str) -> None:
        if args.json:
            print(json.dumps({"url": url, "start": start.isoformat() if start else None,
                              "end": end.isoformat() if end else None, "refresh_s": args.refresh}), flush=True)
        else:
            rng = f"{start}..{end}" if start else "the last 30 days"
            print(f"cascade ui: {url}  ({rng}; refreshed every {args.refresh:g} s; Ctrl-C to stop)", flush=True)

    try:
        serve(page, args.host, args.port, on_ready=ready)
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
