"""The lease heartbeat of a run: renews the partition's lease while the run works, and notices when
it was lost (another run took over) so the run stops instead of writing."""

from __future__ import annotations

import logging
import threading
from typing import Any

from cascade.runtime import hooks
from cascade.runtime.app import App
from cascade.runtime.hooks import InjectedCrash
from cascade.runtime.logs import get_logger, log

logger = get_logger("runner")


class Heartbeat:
    """Renews a partition's lease every third of the lease until stopped; notices a lost lease."""

    def __init__(self, app: App, proc: str, day, run_id: str) -> None:
        self.app, self.proc, self.day, self.run_id = app, proc, day, run_id
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"heartbeat-{proc}")

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.app.settings.heartbeat_seconds):
            try:
                try:
                    hooks.maybe_fail("heartbeat", self.proc, self.day.isoformat())
                except InjectedCrash:
                    continue  # injected: this tick's renewal is lost
                if not self.app.tracker.heartbeat(self.proc, self.day, self.run_id):
                    self.lost = True
                    return
            except Exception as exc:  # noqa: BLE001 - a missed heartbeat is retried on the next tick
                log(logger, logging.WARNING, f"heartbeat failed: {exc}", processor=self.proc, run_id=self.run_id)
