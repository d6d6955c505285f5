"""Smoke test of the function runtime on another Python (e.g. 3.12, which Cloud Functions also runs).

Run with an interpreter that has ONLY the function runtime requirements installed (``make
test-py312`` builds one): imports every runtime module Terraform packages, loads every shipped
pipeline definition, parses a trigger, renders each processor's fenced MERGE and runs a phase's
no-game path in memory. Exits non-zero naming what failed.
"""

from __future__ import annotations

import importlib
import json
import sys
from datetime import date, datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    # The folder shared/ is the package `cascade` (the zip carries it as cascade/): without an
    # installed package, make it importable under that name.
    import tempfile
    link_dir = Path(tempfile.mkdtemp(prefix="cascade-runtime-"))
    (link_dir / "cascade").symlink_to(ROOT / "shared", target_is_directory=True)
    sys.path.insert(0, str(link_dir))
    runtime = json.loads((ROOT / "infra/terraform/pipeline.auto.tfvars.json").read_text())["pipeline"]["runtime_files"]
    for f in runtime:
        mod = ("cascade" + f[len("shared"):-3].replace("/", ".")).removesuffix(".__init__")  # shared/ is `cascade`
        importlib.import_module(mod)
    from cascade.definition.loading import load
    from cascade.runtime.messages import parse
    from cascade.runtime.warehouse import Warehouse

    for definition in sorted((ROOT / "pipelines").glob("*.yaml")):
        p = load(definition, namespace="")
        first = p.phases[0].number
        trig = parse(json.dumps({"pipeline": p.name, "phase": first}).encode(), p, first,
                     now=datetime(2025, 1, 16, 12, tzinfo=timezone.utc))
        assert trig.data_date == date(2025, 1, 15) or trig.data_date == date(2025, 1, 16), trig
        wh = Warehouse(None, p, "smoke")  # type: ignore[arg-type]  # SQL text only, no client
        for proc in p.processors:
            sql = wh.merge_sql(proc, "SELECT 1")
            assert "_fence" in sql, proc.name
    print(f"runtime smoke ok on Python {sys.version.split()[0]}: {len(runtime)} runtime modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
