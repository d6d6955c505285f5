"""Reliability under faults, each test asserting nothing is lost or doubled.

Faults are injected with the environment-guarded hook in ``cascade.dev.faults``; time moves with an
injected clock, never with sleeps.
"""

from __future__ import annotations

import json
import threading
from datetime import date

import pytest

from cascade.dev import faults
from cascade.dev.faults import InjectedCrash
from cascade.errors import TransientError
from cascade.ops.date_status import date_status
from cascade.ops.sweeper import sweep

from .harness import FakeClock, Harness, wait_until, wide_pipeline

D = date(2025, 1, 15)


def duplicates(h: Harness, processor: str, day: date) -> int:
    rows = h.rows(processor, day)
    keys = [tuple(r[k] for k in h.pipeline.processor(processor).output.merge_keys) for r in rows]
    return len(keys) - len(set(keys))


def test_crash_between_merge_and_success_then_redelivery_completes_without_duplicates(make_harness, inject):
    clock = FakeClock()
    h = make_harness(clock=clock, settings_overrides={"lease_seconds": 60, "busy_wait_seconds": 0})
    h.write_raw(D, D)
    inject(f"after_merge:nbac_player_boxscore@{D}*1")
    trig = h.trigger(D, strict_mode=False)
    with pytest.raises(InjectedCrash):
        h.deliver(trig, message_id="m-1")
    part = h.app.tracker.partition("nbac_player_boxscore", D)
    assert part.status == "running"  # the crash left it running: nothing half-written is marked done
    merged = len(h.rows("nbac_player_boxscore", D))
    with pytest.raises(TransientError):  # a redelivery while the lease is live waits (is redelivered)
        h.deliver(trig, message_id="m-1")
    clock.advance(61)  # the crashed run's lease expires
    result = h.deliver(trig, message_id="m-1")  # Pub/Sub redelivers the message
    assert result.complete and result.downstream == "published"
    assert len(h.rows("nbac_player_boxscore", D)) == merged and duplicates(h, "nbac_player_boxscore", D) == 0
    # The redelivery taking over the crashed run's expired lease is the next attempt: a partition that
    # crashes every time is given up on after max_attempts (test_errors.py).
    assert h.app.tracker.partition("nbac_player_boxscore", D).attempts == 2
    assert len(h.pull(3)) == 1


def test_publish_failure_after_commit_is_republished_by_the_sweeper_and_runs_downstream_once(make_harness, inject):
    clock = FakeClock()
    h = make_harness(clock=clock)
    h.write_raw(D, D)
    inject("publish*1")
    with pytest.raises(TransientError, match="publish"):
        h.deliver(h.trigger(D, strict_mode=False))
    claim = h.app.tracker.claim(2, D, 0)
    assert claim["status"] == "claimed"  # never marked published when nothing was published
    assert h.pull(3) == []
    assert sweep(h.app).republished == []  # too recent: the publisher may still be at it
    clock.advance(h.app.settings.republish_after_seconds + 1)
    report = sweep(h.app)
    assert len(report.republished) == 1
    assert h.app.tracker.claim(2, D, 0)["status"] == "published"
    assert sweep(h.app).republished == []  # idempotent
    seen = h.pump()
    assert len(seen[3]) == 1 and len(seen[4]) == 1
    # The original message's redelivery finds everything done and publishes nothing more.
    h.deliver(h.trigger(D, strict_mode=False))
    assert h.pull(3) == []
    assert date_status(h.app, D)["phases"]["4"]["status"] == "complete"


def test_same_message_delivered_five_times_concurrently_runs_once_and_triggers_once(harness):
    h = harness
    h.write_raw(D, D)
    trig = h.trigger(D, strict_mode=False)
    redeliver: list[int] = []

    def deliver(i: int) -> None:
        try:
            h.deliver(trig, message_id="same-id")
        except TransientError:
            redeliver.append(i)  # Pub/Sub would redeliver it

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in redeliver:
        h.deliver(trig, message_id="same-id")
    for proc in ("nbac_player_boxscore", "nbac_schedule"):
        runs = h.app.tracker.runs(processor=proc, day=D)
        assert [r["status"] for r in runs] == ["success"], runs
        assert duplicates(h, proc, D) == 0
    assert len(h.pull(3)) == 1


def test_stale_run_cannot_overwrite_the_result_of_the_run_that_took_over_its_lease(make_harness):
    from cascade.errors import LeaseLostError
    clock = FakeClock()
    h = make_harness(clock=clock, settings_overrides={"lease_seconds": 30})
    t = h.app.tracker
    assert t.begin("nbac_schedule", 2, D, 0, "run-old").outcome == "run"
    assert t.begin("nbac_schedule", 2, D, 0, "run-new").outcome == "busy"
    clock.advance(31)  # the old run outlived its lease without a heartbeat
    assert t.heartbeat("nbac_schedule", D, "run-old") is True  # still its lease until someone takes over
    clock.advance(31)
    assert t.begin("nbac_schedule", 2, D, 0, "run-new").outcome == "run"
    t.finish("nbac_schedule", D, "run-new", "success", record_count=11)
    with pytest.raises(LeaseLostError):
        t.finish("nbac_schedule", D, "run-old", "failed", error="late")
    assert t.heartbeat("nbac_schedule", D, "run-old") is False
    part = t.partition("nbac_schedule", D)
    assert (part.status, part.run_id, part.record_count) == ("success", "run-new", 11)


def test_twenty_processors_of_one_phase_completing_concurrently_trigger_exactly_once(make_harness, tmp_path):
    h = make_harness(pipeline_file=wide_pipeline(tmp_path / "wide.yaml", 20))
    day = date(2025, 3, 3)
    errors: list[BaseException] = []

    def one(name: str) -> None:
        try:
            h.deliver_until_done(h.trigger(day, processors=(name,)))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(p.name,)) for p in h.pipeline.processors_of(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(h.pull(3)) == 1
    assert len(h.app.tracker.claims_for(2, day)) == 1


def test_pubsub_emulator_restart_mid_cascade_is_repaired_by_the_sweeper(stack, endpoints, make_harness):
    clock = FakeClock()
    h = make_harness(clock=clock, settings_overrides={"publish_timeout_seconds": 3})
    h.write_raw(D, D)
    port = int(endpoints.pubsub.rsplit(":", 1)[1])
    stack.stop(["pubsub"])
    try:
        with pytest.raises(TransientError):
            h.deliver(h.trigger(D, strict_mode=False))  # phase 2 done, its downstream publish fails
    finally:
        stack.start_emulators({"pubsub": port})
    h.provision()  # the in-memory emulator lost its topics: cascade up re-creates them (idempotent)
    assert h.app.tracker.claim(2, D, 0)["status"] == "claimed"
    clock.advance(h.app.settings.republish_after_seconds + 1)
    assert len(sweep(h.app).republished) == 1
    seen = h.pump()
    assert seen[3] and len(seen[4]) == 1
    assert date_status(h.app, D)["phases"]["4"]["status"] == "complete"
    for proc in h.pipeline.processors_of(3):  # however many copies arrived, phase 3 ran once
        assert [r["status"] for r in h.app.tracker.runs(processor=proc.name, day=D)] == ["success"]


def test_expired_lease_of_a_crashed_run_is_failed_and_retriggered_by_the_sweeper(make_harness, inject):
    clock = FakeClock()
    h = make_harness(clock=clock, settings_overrides={"lease_seconds": 60})
    h.write_raw(D, D)
    inject(f"before_merge:nbac_schedule@{D}*1")
    with pytest.raises(InjectedCrash):
        h.deliver(h.trigger(D, strict_mode=False, processors=("nbac_schedule",)))
    assert sweep(h.app).expired == []  # lease still live
    clock.advance(61)
    report = sweep(h.app)
    assert len(report.expired) == 1 and "nbac_schedule" in report.expired[0]
    part = h.app.tracker.partition("nbac_schedule", D)
    assert part.status == "failed" and "lease expired" in part.error
    retrigger = h.pull(2)
    assert len(retrigger) == 1 and retrigger[0]["processors"] == ["nbac_schedule"]
    h.deliver(json.dumps(retrigger[0]).encode(), phase=2)
    assert h.app.tracker.partition("nbac_schedule", D).status == "success"


def test_phase_waiting_too_long_on_a_processor_is_alerted_once(make_harness):
    clock = FakeClock()
    h = make_harness(clock=clock, settings_overrides={"stuck_phase_seconds": 600})
    h.write_raw(D, D)
    h.deliver(h.trigger(D, processors=("nbac_schedule",)))  # nbac_player_boxscore never ran
    assert sweep(h.app).stuck == []
    clock.advance(601)
    stuck = sweep(h.app).stuck
    assert len(stuck) == 1 and "nbac_player_boxscore" in stuck[0] and "--processor nbac_player_boxscore" in stuck[0]
    assert sweep(h.app).stuck == []  # alerted once
    assert len([a for a in h.alerts.alerts if "STUCK" in a.title]) == 1


def test_firestore_aborted_while_taking_a_lease_is_retried_and_the_run_completes(make_harness, inject):
    h = make_harness()
    h.write_raw(D, D)
    inject(f"firestore_aborted:nbac_schedule@{D}*3")
    result = h.deliver(h.trigger(D, strict_mode=False, skip_downstream_trigger=True))
    assert result.complete
    assert faults._used[f"firestore_aborted:nbac_schedule@{D}*3"] == 3  # three ABORTED, retried
    part = h.app.tracker.partition("nbac_schedule", D)
    assert part.status == "success" and part.attempts == 1


def test_slow_processor_outliving_its_lease_is_taken_over_and_cannot_record_its_result(make_harness, inject):
    clock = FakeClock()
    h = make_harness(clock=clock, settings_overrides={"lease_seconds": 30})
    h.write_raw(D, D)
    inject(f"slow:nbac_schedule@{D}*1,heartbeat:nbac_schedule@{D}")
    faults.release_slow.clear()
    trig = h.trigger(D, strict_mode=False, processors=("nbac_schedule",))
    out: dict = {}
    slow = threading.Thread(target=lambda: out.setdefault("slow", h.deliver(trig)))
    slow.start()
    try:
        # Wait on state: the slow run holds the lease.
        assert wait_until(lambda: h.app.tracker.partition("nbac_schedule", D).status == "running")
        slow_run = h.app.tracker.partition("nbac_schedule", D).run_id
        clock.advance(31)  # no heartbeat renewed it: the lease expires
        taken = h.deliver(trig)  # a redelivery takes over
        assert {o.processor: o.status for o in taken.outcomes} == {"nbac_schedule": "success"}
    finally:
        faults.release_slow.set()
        slow.join(60)
    stale = {o.processor: o for o in out["slow"].outcomes}["nbac_schedule"]
    assert stale.status == "lost" and stale.run_id == slow_run
    part = h.app.tracker.partition("nbac_schedule", D)
    assert part.status == "success" and part.run_id != slow_run  # the stale run did not overwrite it
    history = {r["run_id"]: r["status"] for r in h.app.tracker.runs(processor="nbac_schedule", day=D)}
    assert history == {slow_run: "lost", part.run_id: "success"}
    assert duplicates(h, "nbac_schedule", D) == 0


def test_a_duplicate_delivery_waits_for_the_live_run_instead_of_spending_delivery_attempts(make_harness, inject):
    h = make_harness(settings_overrides={"busy_wait_seconds": 30})
    h.write_raw(D, D)
    inject(f"slow:nbac_schedule@{D}*1")
    faults.release_slow.clear()
    trig = h.trigger(D, strict_mode=False)
    out: dict = {}
    first = threading.Thread(target=lambda: out.setdefault("first", h.deliver(trig)))
    first.start()
    try:
        assert wait_until(lambda: h.app.tracker.partition("nbac_schedule", D).status == "running")
        second = threading.Thread(target=lambda: out.setdefault("second", h.deliver(trig)))
        second.start()  # finds nbac_schedule held by the first delivery
        assert wait_until(lambda: h.app.tracker.partition("nbac_player_boxscore", D).status == "success")
    finally:
        faults.release_slow.set()
        first.join(60)
    second.join(60)
    # Neither delivery raised (no redelivery needed), the partition ran once, one downstream trigger.
    statuses = sorted(o.status for o in out["second"].outcomes)
    assert "busy" not in statuses and "failed" not in statuses
    assert [r["status"] for r in h.app.tracker.runs(processor="nbac_schedule", day=D)] == ["success"]
    assert len(h.pull(3)) == 1
