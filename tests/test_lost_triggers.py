"""Lost triggers are found and delivered again: a re-trigger the sweeper could not publish, a
published trigger no function ever picked up, and the messages pushed while a local phase function
was down (restarted by ``cascade up`` on the port its push subscription points at).

Time moves with an injected clock where the sweeper decides by age; everything else waits on state
with deadlines (``wait_until``), never on fixed sleeps.
"""

from __future__ import annotations

import json
from datetime import date

import pytest

from cascade.errors import TransientError
from cascade.faults import InjectedCrash
from cascade.sweeper import sweep

from .harness import FakeClock

D = date(2025, 1, 15)


def test_sweeper_retries_a_republish_that_failed(make_harness, inject):
    clock = FakeClock()
    h = make_harness(clock=clock, settings_overrides={"lease_seconds": 60})
    h.write_raw(D, D)
    inject(f"before_merge:nbac_schedule@{D}*1")
    with pytest.raises(InjectedCrash):
        h.deliver(h.trigger(D, strict_mode=False, processors=("nbac_schedule",)))
    clock.advance(61)  # the crashed run's lease expires
    inject("publish*1")  # the sweeper's re-trigger of it cannot be published (once)
    first = sweep(h.app)
    assert first.expired == []
    assert len(first.errors) == 1 and "nbac_schedule" in first.errors[0] and "next step" in first.errors[0]
    assert h.pull(2) == []
    # Nothing was re-triggered, so nothing may look repaired: the next sweep still finds it.
    second = sweep(h.app)
    assert second.ok and len(second.expired) == 1 and "nbac_schedule" in second.expired[0]
    part = h.app.tracker.partition("nbac_schedule", D)
    assert part.status == "failed" and "lease expired" in part.error
    retrigger = h.pull(2)
    assert len(retrigger) == 1 and retrigger[0]["processors"] == ["nbac_schedule"]
    assert sweep(h.app).expired == []  # repaired once
    h.deliver(json.dumps(retrigger[0]).encode(), phase=2)
    assert h.app.tracker.partition("nbac_schedule", D).status == "success"
