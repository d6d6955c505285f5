"""Fault injection for tests only: make a chosen step fail, guarded by the environment.

Local tooling, not shipped in the function zips: the runtime calls ``cascade.runtime.hooks.maybe_fail``,
which loads this module only when faults are enabled.

Active only when ``CASCADE_ENABLE_FAULTS=1`` (tests set it; production never does). A fault is
named in ``CASCADE_FAULTS`` as a comma-separated list of ``step[:processor][@date][*count]``, e.g.
``publish*1`` (the next publish fails once) or ``after_merge:player_game_summary@2025-01-15``.
Steps: ``publish`` (publish fails after the Firestore commit), ``after_merge`` / ``before_merge``
(crash), ``serialize`` (BigQuery "could not serialize access"), ``firestore_aborted`` (Firestore
ABORTED when taking a lease), ``slow`` (the processor blocks until ``release_slow`` is set, or
``CASCADE_FAULT_SLOW_SECONDS``) and ``heartbeat`` (the lease is not renewed: with ``slow``, a run
that outlives its lease). Counts are per process (each function process keeps its own).
"""

from __future__ import annotations

import os
import threading

from cascade.errors import TransientError

_lock = threading.Lock()
_used: dict[str, int] = {}


release_slow = threading.Event()  # tests set it to let a "slow" processor finish


from cascade.runtime.hooks import InjectedCrash  # noqa: E402 - the runtime's class, raised here


def maybe_fail(step: str, processor: str = "", day: str = "") -> None:
    if os.environ.get("CASCADE_ENABLE_FAULTS") != "1":
        return
    for spec in filter(None, (s.strip() for s in os.environ.get("CASCADE_FAULTS", "").split(","))):
        body, _, count = spec.partition("*")
        body, _, at = body.partition("@")
        name, _, proc = body.partition(":")
        if name != step or (proc and proc != processor) or (at and at != day):
            continue
        with _lock:
            used = _used.get(spec, 0)
            if count and used >= int(count):
                continue
            _used[spec] = used + 1
        if step == "serialize":
            raise TransientError("injected: could not serialize access to table due to concurrent update")
        if step == "firestore_aborted":
            from google.api_core import exceptions as gexc
            raise gexc.Aborted("injected: Firestore ABORTED")
        if step == "publish":
            raise ConnectionError("injected: publish failed")
        if step == "slow":
            release_slow.wait(float(os.environ.get("CASCADE_FAULT_SLOW_SECONDS", 30)))
            return
        if step == "heartbeat":
            raise InjectedCrash("injected: heartbeat skipped")
        raise InjectedCrash(f"injected crash at {step} ({processor} {day})")
