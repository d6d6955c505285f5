"""The sweeper's repairs on the in-memory store (no emulators): each stuck state is set up through
the Tracker, the sweep repairs it, publishes what it must, alerts once, and a second sweep finds
nothing left to do. Time moves with an injected clock.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from cascade.ops.sweeper import not_started_after, sweep
from cascade.state.status import Status

from .memory_app import memory_app

D = date(2025, 1, 15)
T0 = datetime(2025, 1, 16, 10, tzinfo=timezone.utc)
LEASE = 60


@pytest.fixture()
def app(pipeline, clock):
    return memory_app(pipeline, clock, lease_seconds=LEASE, max_attempts=2)


def _phase_procs(app, phase: int) -> list[str]:
    return [p.name for p in app.pipeline.processors_of(phase)]


def _succeed(app, name: str, gen: int = 0, day: date = D) -> None:
    phase = next(p.phase for p in app.pipeline.processors if p.name == name)
    run_id = f"{name}-{gen}-ok"
    assert app.tracker.begin(name, phase, day, gen, run_id).outcome == Status.RUN
    app.tracker.finish(name, day, run_id, Status.SUCCESS, record_count=1)


def test_an_unpublished_claim_is_republished_and_marked_published(app, clock):
    topic = app.pipeline.topic(3)
    assert app.tracker.claim_trigger(2, D, 0, topic, b'{"phase": 3}', "r1")
    assert sweep(app).republished == []  # younger than republish_after_seconds
    clock.advance(app.settings.republish_after_seconds + 1)
    report = sweep(app)
    assert report.ok and len(report.republished) == 1
    assert app.publisher.to(topic) == [{"phase": 3}]
    assert app.tracker.claim(2, D, 0)["status"] == Status.PUBLISHED
    assert sweep(app).republished == []


def test_an_expired_lease_is_retriggered_then_marked_failed_and_a_live_one_is_left_alone(app, clock):
    crashed, live = _phase_procs(app, 2)[:2]
    app.tracker.begin(crashed, 2, D, 0, "crashed", context={"mode": "daily", "correlation_id": "c1"})
    clock.advance(LEASE + 1)
    app.tracker.begin(live, 2, D, 0, "live")
    report = sweep(app)
    assert report.ok and report.expired == [f"{crashed} {D} (run crashed)"]
    [trigger] = app.publisher.to(app.pipeline.topic(2))
    assert (trigger["processors"], trigger["correlation_id"], trigger["generation"]) == ([crashed], "c1", 0)
    part = app.tracker.partition(crashed, D)
    assert (part.status, part.raw["transient"], part.raw["expired"]) == (Status.FAILED, True, True)
    assert app.tracker.partition(live, D).status == Status.RUNNING
    assert sweep(app).expired == []  # repaired once


def test_a_failed_publish_leaves_the_expired_lease_for_the_next_sweep_and_the_others_are_repaired(app, clock):
    crashed = _phase_procs(app, 2)[0]
    app.tracker.begin(crashed, 2, D, 0, "crashed")
    topic3 = app.pipeline.topic(3)
    app.tracker.claim_trigger(2, D, 0, topic3, b"{}", "r1")
    clock.advance(LEASE + 1)
    app.publisher.fail_topics = {app.pipeline.topic(2)}
    report = sweep(app)
    assert not report.ok and any(crashed in e and "next step" in e for e in report.errors)
    assert len(report.republished) == 1  # the claim was repaired all the same
    assert app.tracker.partition(crashed, D).status == Status.RUNNING  # not marked: found again
    app.publisher.fail_topics = set()
    assert sweep(app).expired == [f"{crashed} {D} (run crashed)"]


def test_an_expired_waiting_is_retriggered_at_most_max_attempts_times_then_failed_and_alerted(app, clock):
    proc = _phase_procs(app, 2)[0]
    app.tracker.begin(proc, 2, D, 0, "w1", context={"correlation_id": "c1"})
    app.tracker.finish(proc, D, "w1", Status.WAITING, error="upstream x running", extra={"transient": True})
    assert sweep(app).waiting == []  # still alive
    for n in (1, 2):
        clock.advance(LEASE + 601)
        report = sweep(app)
        assert len(report.waiting) == 1 and f"re-trigger {n} of 2" in report.waiting[0]
    assert len(app.publisher.to(app.pipeline.topic(2))) == 2
    clock.advance(LEASE + 601)
    report = sweep(app)
    assert report.waiting == [] and any("still waiting after 2 re-triggers" in e for e in report.errors)
    assert len(app.publisher.to(app.pipeline.topic(2))) == 2  # given up: no third re-trigger
    part = app.tracker.partition(proc, D)
    assert part.status == Status.FAILED and "gave up waiting" in part.error
    assert [a.title for a in app.alerts.alerts] == [f"{proc} FAILED for {D}: still waiting after 2 re-triggers"]


def test_a_published_trigger_nobody_picked_up_is_republished_and_alerted_once(app, clock):
    for name in _phase_procs(app, 2):
        _succeed(app, name)
    topic3 = app.pipeline.topic(3)
    app.tracker.claim_trigger(2, D, 0, topic3, b'{"phase": 3}', "r1")
    app.tracker.mark_published(2, D, 0, "m0")
    assert sweep(app).not_started == []  # not yet past its deadline
    clock.advance(not_started_after(app.settings) + 1)
    report = sweep(app)
    assert len(report.not_started) == 1 and "not started" in report.not_started[0]
    assert app.publisher.to(topic3) == [{"phase": 3}]
    clock.advance(not_started_after(app.settings) + 1)
    assert len(sweep(app).not_started) == 1  # still nothing: re-published again ...
    assert len([a for a in app.alerts.alerts if "TRIGGERED, NOT STARTED" in a.title]) == 1  # ... alerted once
    # picked up: phase 3 began at the claim's generation
    first3 = _phase_procs(app, 3)[0]
    app.tracker.begin(first3, 3, D, 0, "p3")
    clock.advance(not_started_after(app.settings) + 1)
    assert sweep(app).not_started == []


def test_a_trigger_older_than_a_rerun_of_its_phase_is_left_alone(app, clock):
    for name in _phase_procs(app, 2):
        _succeed(app, name, gen=1)
    app.tracker.claim_trigger(2, D, 0, app.pipeline.topic(3), b"{}", "old")
    app.tracker.mark_published(2, D, 0, "m0")
    clock.advance(not_started_after(app.settings) + 1)
    assert sweep(app).not_started == []


def test_a_stuck_phase_is_alerted_once_with_the_command_that_reruns_what_is_missing(app, clock):
    done, *missing = _phase_procs(app, 2)
    _succeed(app, done)
    clock.advance(app.settings.stuck_phase_seconds + 1)
    report = sweep(app)
    assert len(report.stuck) == 1 and f"--processor {missing[0]}" in report.stuck[0]
    assert [a.title for a in app.alerts.alerts] == [f"Phase 2 STUCK for {D}"]
    assert sweep(app).stuck == []  # alerted once


def test_two_sweeps_racing_on_one_expired_lease_record_it_once(app, clock):
    crashed = _phase_procs(app, 2)[0]
    app.tracker.begin(crashed, 2, D, 0, "crashed")
    clock.advance(LEASE + 1)
    [part] = app.tracker.partitions_where("status", "==", Status.RUNNING)
    assert app.tracker.expire(crashed, D.isoformat(), part.run_id, "first sweeper")
    assert not app.tracker.expire(crashed, D.isoformat(), part.run_id, "second sweeper")
    assert app.tracker.partition(crashed, D).error == "first sweeper"
