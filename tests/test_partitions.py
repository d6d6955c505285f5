"""Partition state at the edges: generations, fencing, empty sources, attempts, strict-mode edges.

Each test fails on the code before the fix and runs on the real emulators. Time moves with an
injected clock; a slow run is held by the fault hook until the test releases it.
"""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path

import pytest
import yaml
from google.cloud import bigquery

from cascade.backfill.engine import BackfillRequest, run_backfill
from cascade.backfill.rerun import rerun
from cascade.definition.loading import from_dict
from cascade.dev import faults
from cascade.errors import TransientError
from cascade.runtime.checks import Checks

from .harness import FakeClock, Harness, wait_until

D = date(2025, 1, 15)
WINDOW_START = date(2024, 12, 14)  # 30-day lookbacks of phases 3-4


def lineage(h: Harness, processor: str, day: date) -> list[tuple[str, int]]:
    """(_run_id, _fence) of every row of the partition."""
    t = h.pipeline.processor(processor).output
    rows = h.app.warehouse.query(
        f"SELECT _run_id, _fence FROM `{h.app.warehouse.table_id(t)}` WHERE {t.date_column} = @d",
        [bigquery.ScalarQueryParameter("d", "DATE", day)])
    return [(r["_run_id"], r["_fence"]) for r in rows]


# ---------------------------------------------------------------------- 1. generations
def test_rerun_of_phase_2_after_a_rerun_of_phase_3_reruns_phases_2_3_and_4(harness):
    h = harness
    h.write_raw(WINDOW_START, D)
    h.pump(h.trigger(D, strict_mode=False))
    rerun(h.app, 3, D, D, strict_mode=False)
    h.pump()
    after_3 = {p: h.app.tracker.partition(p, D) for p in ("player_game_summary", "player_composite_factors")}
    assert {p.generation for p in after_3.values()} == {1}
    published, _ = rerun(h.app, 2, D, D, strict_mode=False)
    assert published[0].generation == 2  # never the phase's own 1 + max (which would be 1 again)
    seen = h.pump()
    for name in ("nbac_schedule", "player_game_summary", "player_composite_factors"):
        part = h.app.tracker.partition(name, D)
        assert part.status == "success" and part.generation == 2, (name, part)
    assert h.app.tracker.partition("player_composite_factors", D).run_id != after_3["player_composite_factors"].run_id
    assert [m["generation"] for m in seen[4]] == [2] and [m["generation"] for m in seen[3]] == [2]


def test_force_backfill_takes_a_new_generation_of_the_date_for_every_selected_phase(harness):
    h = harness
    h.write_raw(WINDOW_START, D)
    h.pump(h.trigger(D, strict_mode=False))
    rerun(h.app, 3, D, D, strict_mode=False)  # phases 3-4 at generation 1, phase 2 at 0
    h.pump()
    res = run_backfill(h.app, BackfillRequest(D, D, phases=[2], force=True, skip_preflight=True,
                                              skip_downstream_trigger=True))
    assert res.exit_code == 0, res.render()
    assert {n.generation for n in res.plan.nodes} == {2}


# ---------------------------------------------------------------------- 2. fencing
def test_run_that_lost_its_lease_cannot_overwrite_rows_of_the_run_that_took_over(make_harness, inject):
    clock = FakeClock()
    h = make_harness(clock=clock, settings_overrides={"lease_seconds": 60, "busy_wait_seconds": 0})
    h.write_raw(D, D)
    inject("slow:nbac_schedule*1,heartbeat:nbac_schedule")  # the first run stalls and stops renewing
    slow_errors: list[BaseException] = []

    def slow_run() -> None:
        try:
            h.deliver(h.trigger(D, processors=("nbac_schedule",), strict_mode=False, skip_downstream_trigger=True))
        except BaseException as exc:  # noqa: BLE001 - inspected below
            slow_errors.append(exc)

    t = threading.Thread(target=slow_run)
    t.start()
    assert wait_until(lambda: h.app.tracker.partition("nbac_schedule", D).status == "running")
    slow = h.app.tracker.partition("nbac_schedule", D)
    clock.advance(61)  # the slow run's lease expires; a redelivery takes over
    h.deliver(h.trigger(D, processors=("nbac_schedule",), strict_mode=False, skip_downstream_trigger=True))
    winner = h.app.tracker.partition("nbac_schedule", D)
    assert winner.status == "success" and winner.run_id != slow.run_id and winner.fence > slow.fence
    faults.release_slow.set()  # the slow run's MERGE now commits, after the takeover
    t.join(timeout=60)
    assert not t.is_alive() and not slow_errors
    rows = lineage(h, "nbac_schedule", D)
    assert rows and {r for r, _ in rows} == {winner.run_id} and {f for _, f in rows} == {winner.fence}
    assert h.app.tracker.partition("nbac_schedule", D).run_id == winner.run_id
    lost = [r for r in h.app.tracker.runs("nbac_schedule", D) if r["run_id"] == slow.run_id]
    assert lost and lost[0]["status"] == "lost"


def test_newer_generation_waits_for_a_live_run_of_an_older_one(harness):
    h = harness
    begin = h.app.tracker.begin("nbac_schedule", 2, D, 0, "old-run")
    assert begin.outcome == "run"
    newer = h.app.tracker.begin("nbac_schedule", 2, D, 1, "new-run")
    assert newer.outcome == "busy" and h.app.tracker.partition("nbac_schedule", D).run_id == "old-run"


# ---------------------------------------------------------------------- 3. never replace data with nothing
def test_empty_source_never_replaces_existing_rows_and_is_not_success(harness):
    h = harness
    h.write_raw(WINDOW_START, D)
    h.pump(h.trigger(D, strict_mode=False, skip_downstream_trigger=False))
    before = h.rows("player_game_summary", D)
    assert before
    # A row set is lost upstream (raw box scores of D deleted), then phase 3 is re-run.
    box = h.pipeline.processor("nbac_player_boxscore").output
    h.app.warehouse.query(f"DELETE FROM `{h.app.warehouse.table_id(box)}` WHERE game_date = @d",
                          [bigquery.ScalarQueryParameter("d", "DATE", D)])
    gen = h.app.tracker.new_generation(D)
    h.deliver(h.trigger(D, phase=3, processors=("player_game_summary",), strict_mode=False,
                        skip_downstream_trigger=True, generation=gen))
    part = h.app.tracker.partition("player_game_summary", D)
    assert part.status == "failed" and not part.raw.get("transient"), part
    assert "produced no rows" in part.error and f"{len(before)} existing rows were kept" in part.error
    assert "cascade trigger --date 2025-01-15 --phase 3 --processor player_game_summary" in part.error
    assert h.rows("player_game_summary", D) == before


def test_empty_raw_file_on_an_expected_date_is_refused(harness):
    h = harness
    bucket = h.app.storage.bucket(h.pipeline.bucket(h.project))
    bucket.blob(f"nbacom/schedule/{D.isoformat()}.json").upload_from_string('{"games": []}')
    h.deliver(h.trigger(D, processors=("nbac_schedule",), strict_mode=False, skip_downstream_trigger=True))
    part = h.app.tracker.partition("nbac_schedule", D)
    assert part.status == "failed" and "produced no rows" in part.error and "nothing was written" in part.error


def test_missing_same_date_upstream_fails_a_backfill_mode_run(harness):
    h = harness
    h.write_raw(D, D)
    h.deliver(h.trigger(D, processors=("nbac_schedule",), mode="backfill", skip_downstream_trigger=True))
    h.deliver(h.trigger(D, phase=3, processors=("team_game_summary",), mode="backfill", skip_downstream_trigger=True))
    part = h.app.tracker.partition("team_game_summary", D)
    assert part.status == "failed" and "nbac_player_boxscore (missing)" in part.error
    assert "cascade backfill --start 2025-01-15 --end 2025-01-15 --phase 2" in part.error


def test_backfill_verifies_lookback_history_before_its_start_and_exits_non_zero(harness):
    h = harness
    start = date(2025, 1, 13)
    h.write_raw(start, D)  # nothing before --start: the 30-day lookback of player_rolling_form is short
    res = run_backfill(h.app, BackfillRequest(start, D, phases=[2, 3], skip_preflight=True,
                                              skip_downstream_trigger=True))
    assert res.exit_code == 1
    failed = res.report.failed
    assert set(failed) == {f"player_rolling_form@{d}" for d in ("2025-01-13", "2025-01-14", "2025-01-15")}
    assert "lacks 2024-12-14" in failed["player_rolling_form@2025-01-13"]
    assert "cascade backfill --start 2024-12-14" in failed["player_rolling_form@2025-01-13"]
    assert h.app.tracker.partition("player_rolling_form", D).status == "failed"
    assert h.app.tracker.partition("player_game_summary", D).status == "success"  # the rest ran


# ---------------------------------------------------------------------- 4. attempts
def test_blocks_and_retriggers_do_not_consume_the_attempts_of_a_later_transient_failure(make_harness, inject):
    h = make_harness(settings_overrides={"max_attempts": 2})
    h.write_raw(WINDOW_START, D)
    for _ in range(3):  # phase 2 never ran for D: strict mode blocks phase 3 three times
        h.deliver(h.trigger(D, phase=3, processors=("team_game_summary",)))
    assert h.app.tracker.partition("team_game_summary", D).status == "blocked"
    for day in sorted({WINDOW_START, D}):
        h.deliver(h.trigger(day, mode="backfill", skip_downstream_trigger=True))
    inject("serialize:team_game_summary*1")
    trig = h.trigger(D, phase=3, processors=("team_game_summary",), skip_downstream_trigger=True)
    with pytest.raises(TransientError):
        h.deliver(trig, message_id="m-1")  # first attempt of this trigger: transient, retried
    assert h.app.tracker.partition("team_game_summary", D).attempts == 1
    h.deliver(trig, message_id="m-1")  # Pub/Sub redelivers the same message
    part = h.app.tracker.partition("team_game_summary", D)
    assert part.status == "success" and part.attempts == 2


# ---------------------------------------------------------------------- 6. strict-mode edges
def test_live_running_upstream_is_retried_not_blocked(harness):
    h = harness
    h.write_raw(WINDOW_START, D)
    h.pump(h.trigger(D, mode="backfill", skip_downstream_trigger=True))
    # Phase 2's box scores of D are being re-loaded right now (a live lease, generation 1).
    assert h.app.tracker.begin("nbac_player_boxscore", 2, D, 1, "reload-run").outcome == "run"
    with pytest.raises(TransientError):
        h.deliver(h.trigger(D, phase=3, processors=("team_game_summary",), skip_downstream_trigger=True))
    part = h.app.tracker.partition("team_game_summary", D)
    assert part.status == "waiting" and part.blocked is None and "nbac_player_boxscore" in part.error
    assert h.alerts.alerts == []
    h.app.tracker.finish("nbac_player_boxscore", D, "reload-run", "success", record_count=1)
    h.deliver(h.trigger(D, phase=3, processors=("team_game_summary",), skip_downstream_trigger=True))
    assert h.app.tracker.partition("team_game_summary", D).status == "success"


def test_season_opening_day_is_not_blocked(harness):
    h = harness
    opening = date(2024, 10, 22)
    h.write_raw(opening, opening)
    h.deliver(h.trigger(opening, phase=5, processors=("upcoming_games",), mode="backfill",
                        skip_downstream_trigger=True))
    proc = h.pipeline.processor("player_prop_predictions")
    report = Checks(h.pipeline, h.app.tracker, h.app.warehouse).run(proc, opening)
    assert report.blocked is None and not report.waiting, report.to_dict()


def _tiny(tmp_path: Path, lookback: dict) -> str:
    """Two processors in one phase: ``b`` reads ``a`` with ``lookback``; a calendar with no-game days."""
    cols = {"d": "DATE", "k": "INT64"}
    raw = {"pipeline": "tiny", "raw_bucket": "tiny",
           "calendar": {"timezone": "UTC", "seasons": [{"name": "s", "start": "2025-01-01", "end": "2025-12-31"}],
                        "no_game": [{"date": "2025-01-08", "reason": "rest day"},
                                    {"date": "2025-01-09", "reason": "rest day"}]},
           "phases": [{"number": 1, "name": "only"}],
           "processors": [
               {"name": "a", "phase": 1, "output": {"table": "tiny.a", "date_column": "d", "keys": ["k"], "columns": cols},
                "sql": "SELECT @data_date AS d, 1 AS k"},
               {"name": "b", "phase": 1, "upstreams": ["a" if not lookback else {"processor": "a", **lookback}],
                "output": {"table": "tiny.b", "date_column": "d", "keys": ["k"], "columns": cols},
                "sql": "SELECT @data_date AS d, COUNT(*) AS k FROM {tiny.a} WHERE d BETWEEN @window_start AND @data_date"}]}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_same_phase_lookback_gaps_are_checked(make_harness, tmp_path):
    h = make_harness(pipeline_file=_tiny(tmp_path, {"lookback_days": 3}))
    day = date(2025, 1, 12)
    h.deliver(h.trigger(day, phase=1, processors=("a",), skip_downstream_trigger=True))  # a only for the 12th
    h.deliver(h.trigger(day, phase=1, processors=("b",), skip_downstream_trigger=True))
    part = h.app.tracker.partition("b", day)
    assert part.status == "blocked" and part.blocked["check"] == "Data Gaps"
    assert part.blocked["dates"] == ["2025-01-10", "2025-01-11"]  # 01-09 is a rest day, not a gap


def test_lookback_in_expected_dates_covers_the_last_n_game_dates(make_harness, tmp_path):
    h = make_harness(pipeline_file=_tiny(tmp_path, {"lookback_dates": 3}))
    day = date(2025, 1, 11)  # the last 3 expected dates: 01-07, 01-10, 01-11 (01-08/09 are rest days)
    up = h.pipeline.processor("b").upstreams[0]
    assert up.window(day, h.pipeline.calendar) == (date(2025, 1, 7), day)
    h.deliver(h.trigger(day, phase=1, processors=("a",), skip_downstream_trigger=True))
    h.deliver(h.trigger(day, phase=1, processors=("b",), skip_downstream_trigger=True))
    assert h.app.tracker.partition("b", day).blocked["dates"] == ["2025-01-07", "2025-01-10"]
    for d in (date(2025, 1, 7), date(2025, 1, 10)):
        h.deliver(h.trigger(d, phase=1, processors=("a",), skip_downstream_trigger=True))
    h.deliver(h.trigger(day, phase=1, processors=("b",), skip_downstream_trigger=True))
    assert h.app.tracker.partition("b", day).status == "success"
    assert h.rows("b", day)[0]["k"] == 3  # the window handed to the SQL is the same 3 game dates


def test_definition_rejects_a_negative_lookback():
    with pytest.raises(Exception, match="lookbacks must be >= 0"):
        from_dict({"pipeline": "x", "calendar": {"timezone": "UTC", "seasons": []},
                   "phases": [{"number": 1, "name": "one"}],
                   "processors": [
                       {"name": "a", "phase": 1, "sql": "SELECT 1",
                        "output": {"table": "x.a", "date_column": "d", "keys": ["d"], "columns": {"d": "DATE"}}},
                       {"name": "b", "phase": 1, "sql": "SELECT 1", "upstreams": [{"processor": "a", "lookback_dates": -1}],
                        "output": {"table": "x.b", "date_column": "d", "keys": ["d"], "columns": {"d": "DATE"}}}]})
