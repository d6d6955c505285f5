"""The backfill's progress line on stderr: done / failed / remaining / running / rate / ETA.

On a terminal the line is redrawn in place at most ~4 times a second; otherwise (a log file, CI) a
plain line is printed every ~5 s or every 10 % of the partitions, whichever comes first, plus a
final line - so a long backfill neither floods its log nor goes silent. A note (the wavefront slowed
down by a quota: its concurrency and when it resumes) ends the line; a change of it is drawn at once.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from cascade.runtime.durations import duration


class Progress:
    def __init__(self, stream: TextIO | None = None, tty: bool | None = None, min_interval: float = 0.25,
                 log_interval: float = 5.0, log_fraction: float = 0.10, label: str = "backfill") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.min_interval = min_interval if self.tty else log_interval
        self.log_fraction = log_fraction
        self.label = label
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_fraction = 0.0
        self._width = 0
        self._lock = threading.Lock()
        self.lines = 0  # lines written (for tests)

    def line(self, done: int, failed: int, running: int, total: int, note: str = "") -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        finished = done + failed
        remaining = max(total - finished, 0)
        # A rate over less than a second says nothing (partitions refused up front finish at once).
        rate = finished / elapsed if elapsed >= 1.0 else 0.0
        eta = duration(remaining / rate) if rate > 0 and remaining else ("0s" if not remaining else "?")
        pct = 100.0 * finished / total if total else 100.0
        width = 24
        filled = int(width * finished / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        return (f"{self.label} [{bar}] {pct:5.1f}%  done {done}  failed {failed}  remaining {remaining}  "
                f"running {running}  {f'{rate:.1f}/s' if elapsed >= 1.0 else '-/s'}  ETA {eta}  elapsed {duration(elapsed)}"
                + (f"  | {note}" if note else ""))

    def update(self, done: int, failed: int, running: int, total: int, final: bool = False, note: str = "",
               force: bool = False) -> None:
        now = time.monotonic()
        fraction = (done + failed) / total if total else 1.0
        with self._lock:
            due = now - self._last_draw >= self.min_interval
            if not self.tty and fraction - self._last_fraction >= self.log_fraction:
                due = True
            if not (due or final or force):
                return
            self._last_draw, self._last_fraction = now, fraction
            text = self.line(done, failed, running, total, note)
            if self.tty:
                pad = " " * max(self._width - len(text), 0)
                self.stream.write("\r" + text + pad + ("\n" if final else ""))
                self._width = len(text)
            else:
                self.stream.write(text + "\n")
            self.lines += 1
            self.stream.flush()
