"""One backfill per processor at a time: a Firestore lease per processor, with expiry and heartbeat.

Documents ``backfill_leases/{processor}`` (``Pipeline.collection("backfill_leases")``) name the
holder: host, pid, started_at, range, processors, command and ``expires_at``. A lease is taken with
``create()`` (exactly one creator wins), or - when the existing one has expired (its holder crashed)
- by compare-and-set on the document's update time. A live lease held by someone else refuses the
whole backfill with a message naming the holder; whatever was taken is released. A heartbeat
thread renews every held lease every third of its time to live; the leases are deleted at the end
(only if still ours). One document per processor, written only by its holder, so there is never
contention on a shared document. Daily runs do not look at these leases: they keep
working during a backfill (partition leases keep the two from running one partition at once).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from datetime import date, datetime, timedelta
from typing import Any

from cascade.errors import LeaseHeldError
from cascade.runtime.app import App
from cascade.runtime.logs import get_logger

logger = get_logger("backfill.lease")


def describe_holder(doc: dict[str, Any]) -> str:
    started = doc.get("started_at")
    started_txt = started.isoformat(timespec="seconds") if isinstance(started, datetime) else str(started)
    return (f"host {doc.get('host')} pid {doc.get('pid')} started_at {started_txt} "
            f"range {doc.get('start')}..{doc.get('end')} ({len(doc.get('processors') or [])} processors)")


class BackfillLease:
    def __init__(self, app: App, processors: list[str], start: date, end: date, ttl_seconds: float | None = None,
                 command: str = "") -> None:
        self.app = app
        self.processors = sorted(set(processors))
        self.start, self.end = start, end
        self.ttl = timedelta(seconds=ttl_seconds if ttl_seconds is not None else max(app.settings.lease_seconds, 3.0))
        self.holder_id = uuid.uuid4().hex
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.command = command
        self.started_at = app.clock()
        self.held: list[str] = []
        self.lost: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ documents (through the tracker)
    def _doc(self, processor: str) -> dict[str, Any]:
        now = self.app.clock()
        return {"processor": processor, "holder_id": self.holder_id, "host": self.host, "pid": self.pid,
                "started_at": self.started_at, "renewed_at": now, "expires_at": now + self.ttl,
                "start": self.start.isoformat(), "end": self.end.isoformat(), "processors": self.processors,
                "command": self.command}

    # ------------------------------------------------------------------ acquire / release
    def acquire(self) -> "BackfillLease":
        """Take every processor's lease or none: LeaseHeldError names the live holder."""
        try:
            for name in self.processors:
                self._take(name)
                self.held.append(name)
        except BaseException:
            self.release()
            raise
        self._thread = threading.Thread(target=self._heartbeat, daemon=True, name="backfill-lease-heartbeat")
        self._thread.start()
        return self

    def _take(self, name: str) -> None:
        tracker = self.app.tracker
        for _ in range(5):
            if tracker.lease_create(name, self._doc(name)):
                return
            cur, version = tracker.lease_read(name)
            if cur is None:
                continue  # released between our create and our read: try again
            expires = cur.get("expires_at")
            if cur.get("holder_id") != self.holder_id and expires is not None and expires > self.app.clock():
                raise LeaseHeldError(
                    f"refused: another backfill is running for processor {name}: {describe_holder(cur)}"
                    + (f"; command: {cur['command']}" if cur.get("command") else "")
                    + f". Wait for it to finish (its lease expires at {expires.isoformat(timespec='seconds')} "
                      f"unless renewed), or narrow this backfill to other processors.",
                    processor=name, holder=describe_holder(cur))
            if tracker.lease_update(name, self._doc(name), version):
                logger.warning(f"took over the expired backfill lease on {name} from {describe_holder(cur)}")
                return
            # someone else changed it: look again
        raise LeaseHeldError(f"refused: could not take the backfill lease on {name} (contention); retry", processor=name)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        with self._lock:
            for name in self.held:
                try:
                    cur, version = self.app.tracker.lease_read(name)
                    if cur is not None and cur.get("holder_id") == self.holder_id:
                        self.app.tracker.lease_delete(name, version)
                except Exception as exc:  # noqa: BLE001 - an unreleased lease just expires
                    logger.warning(f"could not release the backfill lease on {name}: {exc}")
            self.held = []

    def __enter__(self) -> "BackfillLease":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # ------------------------------------------------------------------ heartbeat
    def renew(self) -> None:
        """Extend every held lease (compare-and-set); a lease taken over by someone else is recorded lost."""
        with self._lock:
            for name in list(self.held):
                cur, version = self.app.tracker.lease_read(name)
                if not cur or cur.get("holder_id") != self.holder_id:
                    self.held.remove(name)
                    self.lost.append(name)
                    logger.error(f"backfill lease on {name} was lost (expired and taken over)")
                    continue
                now = self.app.clock()
                # a conflict means it changed under us: the next tick looks again
                self.app.tracker.lease_update(name, {"renewed_at": now, "expires_at": now + self.ttl}, version)

    def _heartbeat(self) -> None:
        interval = max(self.ttl.total_seconds() / 3.0, 0.2)
        while not self._stop.wait(interval):
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 - retried on the next tick
                logger.warning(f"backfill lease heartbeat failed: {exc}")


def holders(app: App, processors: list[str]) -> dict[str, dict[str, Any]]:
    """Live backfill leases on ``processors`` (processor -> holder document), one batched read."""
    now = app.clock()
    return {name: d for name, d in app.tracker.lease_docs(processors).items()
            if d.get("expires_at") and d["expires_at"] > now}
