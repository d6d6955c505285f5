"""Start bqemulator without network access.

bqemulator 1.4.0 runs ``INSTALL spatial`` (a download) at startup and treats a failure as fatal.
This launcher replaces ``DuckDBEngine._load_spatial`` with a no-op (GEOGRAPHY / ST_* functions are
then unavailable) and hands the command line to the normal CLI, e.g.::

    BQEMU_ENABLE_FORMAT_EXTENSIONS=false python emulators/bqemulator_offline.py \
        start --project P --rest-port 9050 --grpc-port 9060

``BQEMU_ENABLE_FORMAT_EXTENSIONS=false`` skips a second download (the Avro extension); it is set
here as a default if the caller did not set it.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    """Patch out the spatial extension and run ``bqemulator`` with *argv* (default: sys.argv[1:])."""
    os.environ.setdefault("BQEMU_ENABLE_FORMAT_EXTENSIONS", "false")
    from bqemulator import cli
    from bqemulator.storage.engine import DuckDBEngine

    def _no_spatial(self: DuckDBEngine) -> None:  # noqa: ARG001 - signature must match
        return None

    DuckDBEngine._load_spatial = _no_spatial  # type: ignore[method-assign]
    cli.main(args=sys.argv[1:] if argv is None else argv, prog_name="bqemulator")


if __name__ == "__main__":
    main()
