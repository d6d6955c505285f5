"""Start bqemulator without network access, optionally with the production latency model.

bqemulator 1.4.0 runs ``INSTALL spatial`` (a download) at startup and treats a failure as fatal.
This launcher replaces ``DuckDBEngine._load_spatial`` with a no-op (GEOGRAPHY / ST_* functions are
then unavailable) and hands the command line to the normal CLI, e.g.::

    BQEMU_ENABLE_FORMAT_EXTENSIONS=false python emulators/bqemulator_offline.py \
        start --project P --rest-port 9050 --grpc-port 9060

``BQEMU_ENABLE_FORMAT_EXTENSIONS=false`` skips a second download (the Avro extension); it is set
here as a default if the caller did not set it.

``--job-latency-s S`` (before the bqemulator arguments; or ``CASCADE_BQ_JOB_LATENCY_S=S``) switches
on the production latency model of ``emulators/latency_model.py``: every job costs S seconds end to
end (at least 0.5; the emulator's own execution happens inside them, one job at a time), concurrently
with the others, and mutating DML runs at most 2 at a time per table, queued in FIFO order. Benchmarks only: ``LocalStack(..., bq_latency_s=S)`` passes the flag, nothing
passes it by default. See docs/latency-model.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

LATENCY_FLAG = "--job-latency-s"


def split_latency(argv: list[str]) -> tuple[float | None, list[str]]:
    """(latency from ``--job-latency-s S`` / ``--job-latency-s=S`` or the env var, the remaining argv)."""
    latency: str | None = os.environ.get("CASCADE_BQ_JOB_LATENCY_S") or None
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == LATENCY_FLAG:
            latency = next(it, None)
            if latency is None:
                raise SystemExit(f"{LATENCY_FLAG} needs a value in seconds")
        elif arg.startswith(LATENCY_FLAG + "="):
            latency = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return (float(latency) if latency is not None else None), rest


def main(argv: list[str] | None = None) -> None:
    """Patch out the spatial extension and run ``bqemulator`` with *argv* (default: sys.argv[1:])."""
    latency, args = split_latency(sys.argv[1:] if argv is None else list(argv))
    os.environ.setdefault("BQEMU_ENABLE_FORMAT_EXTENSIONS", "false")
    from bqemulator import cli
    from bqemulator.storage.engine import DuckDBEngine

    def _no_spatial(self: DuckDBEngine) -> None:  # noqa: ARG001 - signature must match
        return None

    DuckDBEngine._load_spatial = _no_spatial  # type: ignore[method-assign]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    if os.environ.get("CASCADE_BQ_PARSE_MEMO", "1") != "0":
        from emulators.parse_memo import install as memoize_parses  # each SQL text parsed once

        memoize_parses()
    if latency is not None:
        from emulators.latency_model import install

        try:
            install(latency)
        except ValueError as exc:
            raise SystemExit(f"bqemulator_offline: {exc}") from None
        print(f"bqemulator_offline: production latency model on: {latency:g} s per job (execution "
              f"{os.environ.get('CASCADE_BQ_MODEL_EXECUTION') or 'inside'} the latency), "
              "2 mutating DML per table (FIFO), 25 DML per table per 10 s", file=sys.stderr, flush=True)
    cli.main(args=args, prog_name="bqemulator")


if __name__ == "__main__":
    main()
