"""Delivery semantics through the real emulator pushes: retries with backoff, permanent errors
acknowledged, poison messages dead-lettered and replayed, and a 50-date load."""

from __future__ import annotations

import json
from datetime import date

import pytest

from cascade.ops.date_status import date_status, wait_for_phase
from cascade.ops.deadletters import list_dead_letters, replay

from .harness import Harness, new_namespace

TRANSIENT_DAY = date(2025, 1, 6)
POISON_DAY = date(2025, 1, 7)
NO_FILES_DAY = date(2025, 1, 8)
FAULTS = f"serialize:nbac_schedule@{TRANSIENT_DAY}*2,before_merge:nbac_schedule@{POISON_DAY}"


@pytest.fixture(scope="module")
def live(stack, endpoints):
    h = Harness(endpoints, new_namespace(), settings_overrides={"lease_seconds": 1})
    env = {"CASCADE_ENABLE_FAULTS": "1", "CASCADE_FAULTS": FAULTS}
    h.deploy(stack, extra_env=env)
    h.write_raw(date(2025, 1, 2), date(2025, 1, 7))
    yield h
    stack.stop([n for n in stack.running() if n.startswith(f"function-{h.namespace}-")])


def publish(h: Harness, day: date, **fields) -> None:
    trig = h.trigger(day, strict_mode=False, **fields)
    h.publisher.publish(h.publisher.topic_path(h.project, h.pipeline.topic(trig.phase)), trig.to_json(),
                        **trig.attributes()).result(timeout=30)


def test_transient_error_is_retried_with_backoff_then_succeeds(live):
    h = live
    publish(h, TRANSIENT_DAY, skip_downstream_trigger=True)
    assert wait_for_phase(h.app, TRANSIENT_DAY, 2, 60).code == 0
    runs = sorted(h.app.tracker.runs(processor="nbac_schedule", day=TRANSIENT_DAY), key=lambda r: r["started_at"])
    assert [r["status"] for r in runs] == ["failed", "failed", "success"]
    assert all("could not serialize access" in r["error"] for r in runs[:2])
    gaps = [(b["started_at"] - a["started_at"]).total_seconds() for a, b in zip(runs, runs[1:])]
    assert max(gaps) >= 0.9, gaps  # the subscription's retry policy spaced the redeliveries
    assert h.app.tracker.partition("nbac_schedule", TRANSIENT_DAY).attempts == 3


def test_permanent_error_is_recorded_and_acknowledged_not_redelivered(live):
    h = live
    publish(h, NO_FILES_DAY, skip_downstream_trigger=True)
    assert wait_for_phase(h.app, NO_FILES_DAY, 2, 60).code == 1
    # Another message through the same subscription completes; the failed one was never retried.
    publish(h, date(2025, 1, 3), skip_downstream_trigger=True)
    assert wait_for_phase(h.app, date(2025, 1, 3), 2, 60).code == 0
    part = h.app.tracker.partition("nbac_schedule", NO_FILES_DAY)
    assert part.status == "failed" and part.attempts == 1 and "not found" in part.error
    assert len(h.app.tracker.runs(processor="nbac_schedule", day=NO_FILES_DAY)) == 1


def test_message_failing_every_time_is_dead_lettered_after_n_attempts_and_can_be_replayed(live, stack):
    h = live
    publish(h, POISON_DAY, skip_downstream_trigger=True)
    letters: list = []
    # Wait on state: the dead-letter subscription receives it after 5 deliveries (each crashed).
    import time
    end = time.monotonic() + 90
    while not letters and time.monotonic() < end:
        letters = list_dead_letters(h.app, 2, wait_seconds=10)
    assert len(letters) == 1, "the poison message never reached the dead-letter topic"
    assert letters[0].delivery_attempts == 5
    assert json.loads(letters[0].data)["data_date"] == POISON_DAY.isoformat()
    deadline_runs = len(h.app.tracker.runs(processor="nbac_schedule", day=POISON_DAY))
    assert deadline_runs == 5  # five deliveries, then Pub/Sub stopped: nothing retries forever
    # The fix is deployed (the function restarts without the fault), then the dead letter is replayed.
    h.deploy(stack, extra_env={"CASCADE_ENABLE_FAULTS": "0"}, phases=[2])
    assert len(replay(h.app, 2)) == 1
    assert wait_for_phase(h.app, POISON_DAY, 2, 60).code == 0
    assert list_dead_letters(h.app, 2) == []


def test_fifty_dates_triggered_at_once_complete_without_duplicates_and_trigger_once(stack, endpoints):
    h = Harness(endpoints, new_namespace(), settings_overrides={"lease_seconds": 20})
    h.deploy(stack)
    try:
        days = h.pipeline.calendar.expected_dates(date(2025, 2, 20), date(2025, 4, 13))[:50]
        assert len(days) == 50
        h.write_raw(days[0], days[-1])
        for day in days:
            publish(h, day)
        for day in days:
            assert wait_for_phase(h.app, day, 4, 240).code == 0, date_status(h.app, day)
        for phase in (2, 3):
            for day in days:
                claims = h.app.tracker.claims_for(phase, day)
                assert len(claims) == 1 and claims[0]["status"] == "published"
        assert len(h.pull(3)) == 50 and len(h.pull(4)) == 50
        from google.cloud import bigquery
        for proc in h.pipeline.processors:
            if proc.phase > 4:
                continue
            t = proc.output
            keys = ", ".join(t.merge_keys)
            dup = h.app.warehouse.query(
                f"SELECT COUNT(*) AS n FROM (SELECT {keys} FROM `{h.app.warehouse.table_id(t)}` "
                f"WHERE {t.date_column} BETWEEN @s AND @e GROUP BY {keys} HAVING COUNT(*) > 1)",
                [bigquery.ScalarQueryParameter("s", "DATE", days[0]), bigquery.ScalarQueryParameter("e", "DATE", days[-1])])
            assert dup[0]["n"] == 0, proc.name
    finally:
        stack.stop([n for n in stack.running() if n.startswith(f"function-{h.namespace}-")])
