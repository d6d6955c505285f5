"""The runner's steps on the in-memory store (no emulators): the calendar, the same-phase gate, the
lease (dedupe, superseded, busy), giving up on a crash loop, and the hand-off of a complete phase.
None of these steps reaches the warehouse: an App whose warehouse refuses every use proves it.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from cascade.runtime.messages import Trigger
from cascade.runtime.runner import PhaseRunner
from cascade.state.status import Status

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
def test_a_date_with_no_data_expected_is_recorded_skipped_and_hands_nothing_on(app):
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


# ---------------------------------------------------------------------- a processor's own history start
SENSOR_START = date(2025, 1, 10)  # where the readings table starts; the pipeline's dates start earlier
BEFORE = date(2025, 1, 8)


def _late_sensor():
    """Phase 1: ``readings`` (its own history starts 2025-01-10), ``stations``, and ``calibrated``,
    which reads both on the same date; phase 2: ``weekly`` reads ``calibrated``."""
    from cascade.definition.loading import from_dict

    def out(table: str) -> dict:
        return {"table": table, "date_column": "day", "keys": ["k"], "columns": {"day": "DATE", "k": "STRING"}}

    return from_dict({
        "pipeline": "sensor", "raw_bucket": "sensor",
        "calendar": {"timezone": "Europe/Paris",
                     "seasons": [{"name": "all", "start": "2025-01-01", "end": "2025-12-31"}]},
        "phases": [{"number": 1, "name": "raw", "next": 2}, {"number": 2, "name": "weekly"}],
        "processors": [
            {"name": "readings", "phase": 1, "history_start": SENSOR_START.isoformat(),
             "source": {"gcs_json": "readings/{date}.json", "records": "rows"}, "output": out("raw.readings")},
            {"name": "stations", "phase": 1, "source": {"gcs_json": "stations/{date}.json", "records": "rows"},
             "output": out("raw.stations")},
            {"name": "calibrated", "phase": 1, "upstreams": [{"processor": "readings"}, {"processor": "stations"}],
             "sql": "SELECT s.day, s.k FROM {raw.stations} s LEFT JOIN {raw.readings} r USING (day, k) "
                    "WHERE s.day = @data_date",
             "output": out("sensor.calibrated")},
            {"name": "weekly", "phase": 2, "upstreams": [{"processor": "calibrated", "lookback_days": 6}],
             "sql": "SELECT @data_date AS day, 'all' AS k FROM {sensor.calibrated} "
                    "WHERE day BETWEEN @window_start AND @data_date LIMIT 1",
             "output": out("sensor.weekly")}]})


class WriteOnlyWarehouse(NoWarehouse):
    """A run's scope and nothing else: the processors themselves are replaced by ``ran``."""

    project = "unit"

    def run_scope(self, proc, day, generation, fence, should_stop=None):
        from contextlib import nullcontext
        from types import SimpleNamespace

        return nullcontext(SimpleNamespace(cost=SimpleNamespace(to_dict=dict)))


@pytest.fixture()
def sensor(clock, monkeypatch):
    """An in-memory app of the late-sensor pipeline whose processors only note that they ran."""
    from types import SimpleNamespace

    import cascade.runtime.runner as runner_module

    app = memory_app(_late_sensor(), clock, lease_seconds=LEASE, max_attempts=3, busy_wait_seconds=0)
    app.warehouse = WriteOnlyWarehouse()  # type: ignore[assignment]
    app.storage = None  # type: ignore[assignment]
    app.ran = []  # type: ignore[attr-defined]

    def run(ctx, proc, day):
        app.ran.append(f"{proc.name}@{day}")
        return 1
    monkeypatch.setattr(runner_module, "executor_for", lambda proc: SimpleNamespace(run=run))
    return app


def test_a_processor_before_its_own_history_start_is_skipped_its_readers_run_and_the_phase_hands_on_once(sensor):
    from cascade.ops.date_status import date_status

    app = sensor
    # `cascade trigger --date 2025-01-08` (an intent): readings has no data before 2025-01-10.
    result = PhaseRunner(app).run(trigger(app, 1, BEFORE, generation=None))
    assert {o.processor: o.status for o in result.outcomes} == {
        "readings": Status.SKIPPED, "stations": Status.SUCCESS, "calibrated": Status.SUCCESS}
    assert app.ran == ["stations@2025-01-08", "calibrated@2025-01-08"]  # readings never ran
    part = app.tracker.partition("readings", BEFORE)
    assert (part.status, part.error) == (
        Status.SKIPPED, "no data expected for readings on 2025-01-08 (before the history start 2025-01-10 of readings)")
    assert result.complete and result.downstream == "published"
    [msg] = app.publisher.to(app.pipeline.topic(2))
    assert (msg["phase"], msg["generation"]) == (1, 0)
    # A redelivery, a trigger at the generation and another intent: nothing runs, nothing is handed on again.
    for again in (trigger(app, 1, BEFORE), trigger(app, 1, BEFORE, generation=None)):
        res = PhaseRunner(app).run(again)
        assert res.complete and res.downstream == "already-claimed", res.summary()
    assert app.ran == ["stations@2025-01-08", "calibrated@2025-01-08"]
    assert len(app.publisher.to(app.pipeline.topic(2))) == 1
    # `cascade status`: the phase is complete; readings says why it was skipped.
    st = date_status(app, BEFORE)["phases"]["1"]
    assert st["status"] == Status.COMPLETE and st["triggered_next"]
    assert st["processors"]["readings"]["status"] == Status.SKIPPED
    assert "before the history start 2025-01-10 of readings" in st["processors"]["readings"]["error"]
    # From its history start on it runs like any other.
    PhaseRunner(app).run(trigger(app, 1, SENSOR_START))
    assert "readings@2025-01-10" in app.ran


def test_a_same_phase_reader_does_not_wait_for_an_upstream_before_its_history_start(sensor):
    # A backfill runs one partition at a time and never records the upstream's skipped partition.
    out = PhaseRunner(sensor).run_partition(proc(sensor, "stations"),
                                            trigger(sensor, 1, BEFORE, processors=("stations",)))
    assert out.status == Status.SUCCESS
    out = PhaseRunner(sensor).run_partition(proc(sensor, "calibrated"),
                                            trigger(sensor, 1, BEFORE, processors=("calibrated",), mode="backfill"))
    assert out.status == Status.SUCCESS, out.error
    assert sensor.tracker.partition("readings", BEFORE).status == Status.MISSING
    from cascade.runtime import handoff
    done = handoff.hand_off(sensor, 1, BEFORE, mode="backfill", strict_mode=True, correlation_id="c2")
    assert (done.complete, done.downstream) == (True, "published")
    from cascade.ops.date_status import date_status
    st = date_status(sensor, BEFORE)["phases"]["1"]
    assert st["status"] == Status.COMPLETE and st["processors"]["readings"]["status"] == Status.SKIPPED


# ---------------------------------------------------------------------- intents
def test_a_redelivered_intent_whose_work_is_done_is_not_answered_again_but_a_new_message_is(app):
    names = [p.name for p in app.pipeline.processors_of(2)]
    for name in names:  # the work message "m1" started is done
        assert app.tracker.begin(name, 2, D, 0, f"{name}-m1", trigger_id="m1").outcome == Status.RUN
        app.tracker.finish(name, D, f"{name}-m1", Status.SUCCESS, record_count=1)
    runner = PhaseRunner(app)
    redelivered = runner.run(trigger(app, 2, generation=None), "m1")  # Pub/Sub redelivers "m1"
    assert {o.status for o in redelivered.outcomes} == {Status.DONE} and redelivered.complete
    assert [r["status"] for r in app.tracker.runs(processor=names[0], day=D)] == [Status.SUCCESS]
    retriggered = runner.run(trigger(app, 2, generation=None), "m2")  # a person asks again
    assert {o.status for o in retriggered.outcomes} == {Status.DONE}
    runs = app.tracker.runs(processor=names[0], day=D)
    assert sorted(r["status"] for r in runs) == [Status.DONE, Status.SUCCESS]
    assert "already complete and fresh" in next(r["error"] for r in runs if r["status"] == Status.DONE)
    assert len(app.publisher.to(app.pipeline.topic(3))) == 1


def test_on_a_date_the_schedule_lists_without_data_its_loader_keeps_its_load_and_the_rest_is_skipped(pipeline, clock):
    from dataclasses import replace

    # The schedule (a from-data calendar's source) was loaded for D and lists only postponed games:
    # D is not expected, but the schedule's own partition is (as the backfill plan says): a trigger
    # of the date keeps that load (it is never turned into "skipped") and skips the readers.
    from cascade.definition.calendar import ScheduleDates

    cal = pipeline.calendar.detached()
    app = memory_app(replace(pipeline, calendar=cal), clock, lease_seconds=LEASE, busy_wait_seconds=0)
    app.warehouse = NoWarehouse()  # type: ignore[assignment]
    schedule = ScheduleDates(frozenset(), D + (D - D.replace(day=1)), listed=frozenset([D]))
    cal.attach(lambda _source, _start, _end: schedule)  # what the schedule's table says
    source = cal.expected_from.processor
    assert not cal.is_expected(D) and cal.is_expected(D, source)
    assert app.tracker.begin(source, 2, D, 0, "load", trigger_id="m0").outcome == Status.RUN
    app.tracker.finish(source, D, "load", Status.SUCCESS, record_count=3)
    result = PhaseRunner(app).run(trigger(app, 2, generation=None), "m1")
    outcomes = {o.processor: o.status for o in result.outcomes}
    assert outcomes.pop(source) == Status.DONE and set(outcomes.values()) == {Status.SKIPPED}
    assert app.tracker.partition(source, D).status == Status.SUCCESS
    assert result.downstream == "none" and app.publisher.published == []
