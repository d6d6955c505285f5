"""Alert batching for backfills: every alert raised while a backfill runs goes into ONE digest.

During a backfill the app's alert sink is swapped for a ``MemoryAlertSink``; the runner's per-
partition alerts (a failed partition alerts once in daily operation) are kept instead of sent. At
the end a single digest alert - counts, the failures with their errors, the blocked partitions and
the command that resumes - goes to the real sink. No email floods (seed 004).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from cascade.runtime.alerts import Alert, MemoryAlertSink
from cascade.runtime.app import App


@contextmanager
def collecting_alerts(app: App) -> Iterator[MemoryAlertSink]:
    """Swap the app's alert sink for a collector for the duration of a backfill."""
    original, sink = app.alerts, MemoryAlertSink()
    app.alerts = sink
    try:
        yield sink
    finally:
        app.alerts = original


def digest_alert(range_txt: str, failed: dict[str, str], blocked: dict[str, str], collected: list[Alert],
                 command: str, interrupted: bool = False) -> Alert | None:
    """One alert summarising the run's failures, or None when there is nothing to report."""
    if not failed and not blocked and not collected:
        return None
    roots: dict[str, int] = {}
    for reason in blocked.values():
        roots[reason] = roots.get(reason, 0) + 1
    lines = [f"{len(failed)} partition(s) failed, {len(blocked)} blocked"
             + (" (interrupted)" if interrupted else "") + "."]
    lines += [f"FAILED {label}: {err[:300]}" for label, err in sorted(failed.items())[:50]]
    if len(failed) > 50:
        lines.append(f"... and {len(failed) - 50} more failures")
    lines += [f"{n} partition(s) {reason}" for reason, n in sorted(roots.items())]
    if command:
        lines.append(f"after fixing, re-run: {command} (it runs only what is missing, failed or blocked)")
    details: dict[str, Any] = {"failed": failed, "blocked": blocked,
                               "collected_alerts": [a.title for a in collected][:200]}
    return Alert(title=f"backfill {range_txt}: {len(failed)} failed, {len(blocked)} blocked",
                 message="\n".join(lines), labels={"kind": "backfill-digest"}, details=details)
