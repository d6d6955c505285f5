"""Test hooks the runtime calls at named steps: a no-op in production.

The runtime (what ships in a Cloud Function) calls ``maybe_fail(step, processor, date)`` where a
fault can be injected (after the MERGE, around a publish, ...). Unless ``CASCADE_ENABLE_FAULTS=1``
it does nothing and imports nothing; when tests enable it, the local tooling module
``cascade.dev.faults`` (not shipped in the function zips) is loaded and decides. ``InjectedCrash`` lives
here so the runtime can let a simulated crash through without importing the tooling.
"""

from __future__ import annotations

import importlib
import os
from typing import Any


class InjectedCrash(RuntimeError):
    """Simulates a process crash at a chosen step (not classified transient on purpose)."""


_faults: Any = None


def maybe_fail(step: str, processor: str = "", day: str = "") -> None:
    if os.environ.get("CASCADE_ENABLE_FAULTS") != "1":
        return
    global _faults
    if _faults is None:
        try:  # tooling, present on developer machines and in CI, absent from the function zips
            _faults = importlib.import_module("cascade.dev.faults")
        except ImportError:
            return
    _faults.maybe_fail(step, processor, day)
