"""The runner's steps on the in-memory store (no emulators): the calendar, the same-phase gate, the
lease (dedupe, superseded, busy), giving up on a crash loop, and the hand-off of a complete phase.
None of these steps reaches the warehouse: an App whose warehouse refuses every use proves it.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from cascade.definition.loading import load
from cascade.runtime.messages import Trigger
from cascade.runtime.runner import PhaseRunner
from cascade.state.status import Status

from .harness import FakeClock
from .memory_app import memory_app

D = date(2025, 1, 15)
NO_GAMES = date(2025, 2, 16)  # the All-Star break
T0 = datetime(2025, 1, 16, 10, tzinfo=timezone.utc)
LEASE = 60
GATED = "player_daily_cache"  # phase 4, reads two processors of the same phase
UPSTREAM, OTHER_UPSTREAM = "team_defense_zone_analysis", "player_shot_zone_analysis"


class NoWarehouse:
    def __getattr__(self, name: str):
        raise AssertionError(f"this step must not use the warehouse (warehouse.{name})")


@pytest.fixture(scope="module")
def pipeline():
    return load(namespace="unit")


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture()
def app(pipeline, clock):
    app = memory_app(pipeline, clock, lease_seconds=LEASE, max_attempts=3, busy_wait_seconds=0)
    app.warehouse = NoWarehouse()  # type: ignore[assignment]
    return app


def trigger(app, phase: int, day: date = D, generation: int | None = 0, **kw) -> Trigger:
    return Trigger(pipeline=app.pipeline.name, phase=phase, data_date=day, correlation_id="c1",
                   generation=generation, **kw)


def proc(app, name: str):
    return next(p for p in app.pipeline.processors if p.name == name)


def succeed(app, name: str, gen: int = 0) -> None:
    run_id = f"{name}-ok"
    assert app.tracker.begin(name, proc(app, name).phase, D, gen, run_id).outcome == Status.RUN
    app.tracker.finish(name, D, run_id, Status.SUCCESS, record_count=1)


# ---------------------------------------------------------------------- calendar
def test_a_date_without_games_is_recorded_skipped_and_hands_nothing_on(app):
    result = PhaseRunner(app).run(trigger(app, 2, NO_GAMES))
    names = [p.name for p in app.pipeline.processors_of(2)]
    assert {o.processor: o.status for o in result.outcomes} == {n: Status.SKIPPED for n in names}
    assert result.downstream == "none" and app.publisher.published == []
    assert {p.status for p in app.tracker.partitions(names, [NO_GAMES]).values()} == {Status.SKIPPED}


# ---------------------------------------------------------------------- lease
def test_a_partition_already_done_at_the_generation_is_deduped(app):
    for name in (UPSTREAM, OTHER_UPSTREAM, GATED):
        succeed(app, name)
    out = PhaseRunner(app).run_partition(proc(app, GATED), trigger(app, 4))
    assert (out.status, out.run_id, out.retry) == (Status.DONE, f"{GATED}-ok", False)


def test_a_trigger_older_than_the_partition_is_superseded(app):
    succeed(app, UPSTREAM, gen=2)
    succeed(app, OTHER_UPSTREAM, gen=2)
    app.tracker.begin(GATED, 4, D, 2, "newer")
    app.tracker.finish(GATED, D, "newer", Status.FAILED, error="x")
    out = PhaseRunner(app).run_partition(proc(app, GATED), trigger(app, 4, generation=1))
    assert out.status == Status.SUPERSEDED and not out.retry
    assert app.tracker.partition(GATED, D).run_id == "newer"


def test_a_partition_held_by_a_live_run_is_busy_and_names_it(app):
    succeed(app, UPSTREAM)
    succeed(app, OTHER_UPSTREAM)
    app.tracker.begin(GATED, 4, D, 0, "live")
    out = PhaseRunner(app).run_partition(proc(app, GATED), trigger(app, 4))
    assert (out.status, out.held_by, out.retry) == (Status.BUSY, "live", True)


# ---------------------------------------------------------------------- same-phase gate
def test_a_same_phase_upstream_that_failed_for_good_blocks_with_its_resolution(app):
    app.tracker.begin(UPSTREAM, 4, D, 0, "up")
    app.tracker.finish(UPSTREAM, D, "up", Status.FAILED, error="bad", extra={"transient": False})
    out = PhaseRunner(app).run_partition(proc(app, GATED), trigger(app, 4, processors=(GATED,)))
    assert out.status == Status.BLOCKED and "cascade trigger --date 2025-01-15 --phase 4" in out.error
    part = app.tracker.partition(GATED, D)
    assert part.status == Status.BLOCKED and part.blocked["upstream"] == sorted([UPSTREAM, OTHER_UPSTREAM])


def test_a_live_same_phase_upstream_is_waited_for(app):
    app.tracker.begin(UPSTREAM, 4, D, 0, "up-live")
    out = PhaseRunner(app).run_partition(proc(app, GATED), trigger(app, 4))
    assert (out.status, out.held_by, out.retry) == (Status.BUSY, "up-live", True)
    assert app.tracker.partition(GATED, D).status == Status.MISSING  # nothing recorded


def test_a_same_phase_upstream_failed_transiently_leaves_it_to_a_redelivery(app):
    app.tracker.begin(UPSTREAM, 4, D, 0, "up")
    app.tracker.finish(UPSTREAM, D, "up", Status.FAILED, error="timeout", extra={"transient": True})
    out = PhaseRunner(app).run_partition(proc(app, GATED), trigger(app, 4))
    assert out.status == Status.WAITING and out.retry and "only a redelivery" in out.error


# ---------------------------------------------------------------------- crash loop
def test_a_partition_whose_runs_keep_crashing_is_given_up_after_max_attempts(app, clock):
    name = "nbac_schedule"
    for i in range(3):  # three runs of one trigger, each crashed (lease expired, nothing recorded)
        assert app.tracker.begin(name, 2, D, 0, f"crash{i}", trigger_id="m1").attempt == i + 1
        clock.advance(LEASE + 1)
    out = PhaseRunner(app).run_partition(proc(app, name), trigger(app, 2), trigger_id="m1")
    assert out.status == Status.FAILED and not out.retry and "gave up after 3 attempts" in out.error
    part = app.tracker.partition(name, D)
    assert part.status == Status.FAILED and part.raw["transient"] is False
    assert [a.title for a in app.alerts.alerts] == [f"{name} FAILED for {D}"]


# ---------------------------------------------------------------------- hand-off
def test_a_complete_phase_is_handed_on_exactly_once(app):
    for p in app.pipeline.processors_of(2):
        succeed(app, p.name)
    runner = PhaseRunner(app)
    first = runner.run(trigger(app, 2))
    assert first.complete and first.downstream == "published"
    assert {o.status for o in first.outcomes} == {Status.DONE}
    [msg] = app.publisher.to(app.pipeline.topic(3))
    assert (msg["phase"], msg["generation"]) == (2, 0)  # the completion of phase 2, at its generation
    assert app.tracker.claim(2, D, 0)["status"] == Status.PUBLISHED
    again = runner.run(trigger(app, 2))  # a redelivery
    assert again.complete and again.downstream != "published"
    assert len(app.publisher.to(app.pipeline.topic(3))) == 1
