"""Calendars from data and where history starts.

Expected dates may come from a declared processor's table (a league's schedule): inside the declared
seasons and rules, a date is expected when the schedule lists it; a date the schedule does not cover
(after its last loaded date, or while it cannot be read) is expected and said so; the schedule's own
partitions are expected on every declared date. A pipeline may declare where its history starts: a
lookback reaching before it is a short window by declaration - computed on what exists, said so in
the run's checks and in ``cascade status`` - never a gap, and a backfill from it needs nothing before it.

The first tests are pure (no emulators); the others run small pipelines on the emulators.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
import yaml

from cascade.backfill.engine import BackfillRequest, run_backfill
from cascade.backfill.plan import build_plan, select_processors
from cascade.backfill.validate import preflight
from cascade.runtime.checks import Checks
from cascade.errors import DefinitionError
from cascade.definition.loading import from_dict
from cascade.ops.date_status import date_status
from cascade.state.tracker import Partition

# ---------------------------------------------------------------------- a league with a schedule
# Season 2025-01-06..19. The schedule lists a game every day except Wednesdays (01-08, 01-15); the
# game of 01-10 is postponed (status 1, not final). 01-12 is a declared day off.
SEASON = ("2025-01-06", "2025-01-19")
GAME_DAYS = [date(2025, 1, d) for d in (6, 7, 9, 11, 13, 14, 16, 17, 18, 19)]
SCHEDULE_SQL = ("SELECT @data_date AS game_date, 'g1' AS game_id, "
                "IF(@data_date = DATE '2025-01-10', 1, 3) AS game_status "
                "FROM UNNEST([1]) AS x WHERE EXTRACT(DAYOFWEEK FROM @data_date) != 4")


def _league(tmp_path: Path | None = None, **calendar: object) -> dict | str:
    cal = {"timezone": "UTC", "seasons": [{"name": "s", "start": SEASON[0], "end": SEASON[1]}],
           "no_game": [{"date": "2025-01-12", "reason": "league day off"}],
           "expected_from": {"processor": "schedule", "where": {"game_status": 3}}, **calendar}
    raw = {"pipeline": "league", "raw_bucket": "league", "calendar": cal,
           "phases": [{"number": 1, "name": "schedule", "next": 2}, {"number": 2, "name": "games"}],
           "processors": [
               {"name": "schedule", "phase": 1, "allow_empty": True, "sql": SCHEDULE_SQL,
                "output": {"table": "league.schedule", "date_column": "game_date", "keys": ["game_id"],
                           "columns": {"game_date": "DATE", "game_id": "STRING", "game_status": "INT64"}}},
               {"name": "scores", "phase": 2, "upstreams": ["schedule"],
                "sql": "SELECT game_date, game_id, 10 AS points FROM {league.schedule} WHERE game_date = @data_date",
                "output": {"table": "league.scores", "date_column": "game_date", "keys": ["game_id"],
                           "columns": {"game_date": "DATE", "game_id": "STRING", "points": "INT64"}}},
               {"name": "form", "phase": 2, "upstreams": [{"processor": "scores", "lookback_days": 6}],
                "sql": "SELECT @data_date AS game_date, COUNT(*) AS games FROM {league.scores} "
                       "WHERE game_date BETWEEN @window_start AND @data_date",
                "output": {"table": "league.form", "date_column": "game_date", "keys": ["games"],
                           "columns": {"game_date": "DATE", "games": "INT64"}}}]}
    if tmp_path is None:
        return raw
    path = tmp_path / "league.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


# ---------------------------------------------------------------------- a weather station whose history starts late
HISTORY_START = date(2025, 1, 10)


def _station(tmp_path: Path | None = None, history_start: str | None = "2025-01-10") -> dict | str:
    cal: dict = {"timezone": "Europe/Paris", "seasons": [{"name": "all", "start": "2025-01-01", "end": "2025-12-31"}]}
    if history_start:
        cal["history_start"] = history_start
    raw = {"pipeline": "station", "raw_bucket": "station", "calendar": cal,
           "phases": [{"number": 1, "name": "raw", "next": 2}, {"number": 2, "name": "weekly"}],
           "processors": [
               {"name": "readings", "phase": 1, "source": {"gcs_json": "readings/{date}.json", "records": "rows",
                                                          "synthetic": {"rows": 3}},
                "output": {"table": "station_raw.readings", "date_column": "day", "keys": ["sensor"],
                           "columns": {"day": "DATE", "sensor": "STRING", "temp": "FLOAT64"}}},
               {"name": "weekly", "phase": 2, "upstreams": [{"processor": "readings", "lookback_days": 6}],
                "sql": "SELECT @data_date AS day, COUNT(DISTINCT day) AS days_read, MIN(day) AS first_day "
                       "FROM {station_raw.readings} WHERE day BETWEEN @window_start AND @data_date",
                "output": {"table": "station.weekly", "date_column": "day", "keys": ["days_read"],
                           "columns": {"day": "DATE", "days_read": "INT64", "first_day": "DATE"}}}]}
    if tmp_path is None:
        return raw
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _days(start: str, end: str) -> list[date]:
    from cascade.definition.calendar import date_range

    return list(date_range(date.fromisoformat(start), date.fromisoformat(end)))


# ====================================================================== pure: the calendar object
def test_expected_dates_from_data_stay_inside_the_seasons_and_the_declared_rules():
    cal = from_dict(_league()).calendar
    # The schedule lists games on 01-05 (before the season), 01-12 (a declared day off) and 01-20
    # (after the season) too: the declared seasons and dates still bound it.
    listed = [date(2025, 1, 5), date(2025, 1, 12), date(2025, 1, 20), *GAME_DAYS]
    data = cal.with_dates(listed, through=date(2025, 1, 20))
    assert data.expected_dates(date(2025, 1, 1), date(2025, 1, 31)) == GAME_DAYS
    assert data.reason_not_expected(date(2025, 1, 8)) == "no matching row in schedule"
    assert data.reason_not_expected(date(2025, 1, 12)) == "league day off"
    assert data.reason_not_expected(date(2025, 1, 20)) == "outside the season"
    # lookback_dates counts the schedule's dates: the last 3 game dates of 01-13 are 01-09, 01-11, 01-13.
    assert data.nth_expected_on_or_before(date(2025, 1, 13), 3) == date(2025, 1, 9)


def test_a_date_after_the_schedules_last_loaded_date_is_expected_and_the_note_says_why():
    cal = from_dict(_league()).calendar.with_dates(GAME_DAYS[:5], through=date(2025, 1, 13))
    assert not cal.is_expected(date(2025, 1, 8))  # covered, no game listed
    assert cal.is_expected(date(2025, 1, 15)) and cal.is_unknown(date(2025, 1, 15))  # after 01-13: unknown
    assert cal.note(date(2025, 1, 15)) == ("expected (unknown): schedule is loaded through 2025-01-13; "
                                           "a date the schedule does not cover counts as expected")
    assert cal.note(date(2025, 1, 8)) == "no data expected: no matching row in schedule"
    assert cal.note(date(2025, 1, 9)) == ""  # a plain game day
    # The schedule's own partitions are expected on every declared date: it defines the calendar.
    assert cal.expected_dates(date(2025, 1, 6), date(2025, 1, 19), processor="schedule") == \
        [d for d in _days(*SEASON) if d != date(2025, 1, 12)]


def test_a_schedule_that_cannot_be_read_leaves_every_declared_date_expected_until_it_can():
    from cascade.definition.calendar import ScheduleDates

    cal = from_dict(_league()).calendar
    calls: list[tuple[date, date]] = []

    def broken(source, start, end):
        calls.append((start, end))
        raise RuntimeError("Not found: Table league.schedule")

    cal.attach(broken)
    assert cal.expected_dates(*map(date.fromisoformat, SEASON)) == \
        [d for d in _days(*SEASON) if d != date(2025, 1, 12)]
    assert "schedule could not be read (RuntimeError: Not found: Table league.schedule)" in cal.note(date(2025, 1, 8))
    assert calls == [(date(2025, 1, 6), date(2025, 1, 19))]  # one read over the seasons' span, then cached
    cal.attach(lambda source, start, end: ScheduleDates(frozenset(GAME_DAYS), date(2025, 1, 19)))
    assert cal.expected_dates(*map(date.fromisoformat, SEASON)) == GAME_DAYS


def test_a_window_never_reaches_before_the_history_start_and_says_it_is_short():
    p = from_dict(_station())
    weekly, cal = p.processor("weekly"), p.calendar
    up = weekly.upstreams[0]
    assert up.window(date(2025, 1, 12), cal) == (HISTORY_START, date(2025, 1, 12))
    assert up.declared_window(date(2025, 1, 12), cal) == (date(2025, 1, 6), date(2025, 1, 12))
    assert weekly.short_window(date(2025, 1, 12), cal) == (
        "short window by declaration: readings: 2025-01-10..2025-01-12 of 2025-01-06..2025-01-12 "
        "(history starts 2025-01-10)")
    assert weekly.short_window(date(2025, 1, 16), cal) == ""  # the whole window exists from here on
    assert not cal.is_expected(date(2025, 1, 9))
    assert cal.reason_not_expected(date(2025, 1, 9)) == "before the history start 2025-01-10"
    assert cal.note(date(2025, 1, 9)) == "no data expected: before the history start 2025-01-10"  # generic words


def test_the_definition_refuses_a_calendar_source_it_cannot_query_safely():
    raw = _league()
    raw["calendar"]["expected_from"] = {"processor": "nope"}
    with pytest.raises(DefinitionError, match="'nope' is not a declared processor"):
        from_dict(raw)
    raw["calendar"]["expected_from"] = {"processor": "schedule", "where": {"status; DROP TABLE x": 3}}
    with pytest.raises(DefinitionError, match="expected_from.where"):
        from_dict(raw)
    raw["calendar"]["expected_from"] = {"processor": "schedule", "where": {"game_status": "3"}}
    with pytest.raises(DefinitionError, match="game_status is INT64, '3' is not a value of that type"):
        from_dict(raw)


class _NoState:
    """A tracker with nothing recorded (a plan over a fresh namespace)."""

    def partitions(self, names, days):
        return {(n, d.isoformat()): Partition(n, d.isoformat()) for n in names for d in days}

    def partitions_by_keys(self, keys):
        return {k: Partition(*k) for k in keys}

    def clock(self):
        from datetime import datetime, timezone

        return datetime(2025, 2, 1, tzinfo=timezone.utc)


def test_a_backfill_plan_runs_the_schedule_on_every_declared_date_and_its_readers_on_game_days():
    p = from_dict(_league())
    p = replace(p, calendar=p.calendar.with_dates(GAME_DAYS, through=date(2025, 1, 19)))
    plan = build_plan(p, _NoState(), select_processors(p, phases=[1, 2]), *map(date.fromisoformat, SEASON))
    runs = {(n.processor, n.day) for n in plan.nodes}
    declared = [d for d in _days(*SEASON) if d != date(2025, 1, 12)]
    assert sorted(d for n, d in runs if n == "schedule") == declared
    assert sorted(d for n, d in runs if n == "scores") == GAME_DAYS
    assert plan.cells[("scores", "2025-01-08")] == "no-game" and plan.cells[("schedule", "2025-01-08")] == "missing"


# ====================================================================== on the emulators
def test_expected_dates_come_from_the_schedule_table_within_the_seasons(make_harness, tmp_path):
    h = make_harness(pipeline_file=_league(tmp_path))
    res = run_backfill(h.app, BackfillRequest(*map(date.fromisoformat, SEASON), phases=[1],
                                              skip_downstream_trigger=True, skip_preflight=True))
    assert res.exit_code == 0, res.refused
    # Rows outside the season are listed too; the season bounds them.
    h.app.warehouse.merge_rows(h.pipeline.processor("schedule"), date(2025, 1, 20),
                               [{"game_date": date(2025, 1, 20), "game_id": "g9", "game_status": 3}], "seed")
    cal = h.pipeline.calendar
    assert cal.refresh().through == date(2025, 1, 19)  # one query over the seasons' span only
    assert cal.expected_dates(date(2025, 1, 1), date(2025, 1, 31)) == GAME_DAYS
    # Every consumer asks the same calendar: the backfill plan, strict mode and the status page.
    plan = build_plan(h.pipeline, h.app.tracker, select_processors(h.pipeline, processors=["scores"]),
                      *map(date.fromisoformat, SEASON))
    assert sorted(n.day for n in plan.nodes if n.processor == "scores") == GAME_DAYS
    assert plan.cells[("scores", "2025-01-10")] == "no-game"  # the postponed game is not final
    res = run_backfill(h.app, BackfillRequest(date(2025, 1, 6), date(2025, 1, 11), processors=["scores"],
                                              skip_downstream_trigger=True))
    assert res.exit_code == 0
    assert h.app.tracker.partition("scores", date(2025, 1, 8)).status == "missing"  # never run: no game
    report = Checks(h.pipeline, h.app.tracker, h.app.warehouse).run(h.pipeline.processor("form"), date(2025, 1, 11))
    assert report.blocked is None, report.to_dict()  # 01-08 and 01-10 are not gaps: the schedule says so
    st = date_status(h.app, date(2025, 1, 8))
    assert st["expected"] is False and st["note"] == "no data expected: no matching row in schedule"


def test_a_date_the_schedule_does_not_cover_is_treated_as_expected_and_said_so(make_harness, tmp_path):
    h = make_harness(pipeline_file=_league(tmp_path))
    # The schedule is loaded through 01-14 only (its loader has not run for later dates yet); then
    # the games of those dates.
    res = run_backfill(h.app, BackfillRequest(date(2025, 1, 6), date(2025, 1, 14), phases=[1],
                                              skip_downstream_trigger=True, skip_preflight=True))
    assert res.exit_code == 0
    cal = h.pipeline.calendar
    assert cal.refresh().through == date(2025, 1, 14)
    res = run_backfill(h.app, BackfillRequest(date(2025, 1, 6), date(2025, 1, 14), phases=[2],
                                              skip_downstream_trigger=True))
    assert res.exit_code == 0, res.refused
    wednesday = date(2025, 1, 15)  # no game in truth, but nothing says so yet
    assert cal.is_expected(wednesday)
    st = date_status(h.app, wednesday)
    assert st["expected"] is True
    assert st["note"] == ("expected (unknown): schedule is loaded through 2025-01-14; "
                          "a date the schedule does not cover counts as expected")
    # Strict mode's gap check counts it as a gap, and says why it is expected.
    report = Checks(h.pipeline, h.app.tracker, h.app.warehouse).run(h.pipeline.processor("form"), date(2025, 1, 16))
    assert report.blocked is not None and report.blocked.dates == ["2025-01-15", "2025-01-16"], report.to_dict()
    assert "schedule is loaded through 2025-01-14" in report.blocked.detail
    # The schedule's own partitions are always expected: the plan runs them; then 01-15 is no game.
    plan = build_plan(h.pipeline, h.app.tracker, select_processors(h.pipeline, phases=[1, 2]),
                      date(2025, 1, 6), date(2025, 1, 19))
    assert plan.cells[("schedule", "2025-01-15")] == "missing" and plan.cells[("scores", "2025-01-15")] == "missing"
    res = run_backfill(h.app, BackfillRequest(date(2025, 1, 15), date(2025, 1, 19), phases=[1],
                                              skip_downstream_trigger=True, skip_preflight=True))
    assert res.exit_code == 0
    cal.refresh()
    assert not cal.is_expected(wednesday) and date_status(h.app, wednesday)["note"] == "no data expected: no matching row in schedule"


def test_a_lookback_reaching_before_the_history_start_is_a_short_window_not_a_gap(make_harness, tmp_path):
    h = make_harness(pipeline_file=_station(tmp_path))
    day = date(2025, 1, 12)
    h.write_raw(date(2025, 1, 1), day)  # files exist only from the history start: earlier dates are not expected
    for d in _days("2025-01-10", "2025-01-12"):
        h.deliver(h.trigger(d, phase=1, mode="backfill", skip_downstream_trigger=True))
    h.deliver(h.trigger(day, phase=2, skip_downstream_trigger=True))  # daily mode: strict checks on
    part = h.app.tracker.partition("weekly", day)
    assert part.status == "success", (part.status, part.error, part.blocked)
    row = h.rows("weekly", day)[0]
    assert (row["days_read"], row["first_day"]) == (3, HISTORY_START)  # computed on what exists
    short = ("short window by declaration: readings: 2025-01-10..2025-01-12 of 2025-01-06..2025-01-12 "
             "(history starts 2025-01-10)")
    run = h.app.tracker.runs(processor="weekly", day=day)[-1]
    assert any(short in r["detail"] for r in (run.get("checks") or {}).get("results", [])), run.get("checks")
    st = date_status(h.app, day)
    assert st["phases"]["2"]["processors"]["weekly"]["short_window"] == short


def test_a_backfill_from_the_history_start_is_not_refused_by_preflight_and_completes(make_harness, tmp_path):
    h = make_harness(pipeline_file=_station(tmp_path))
    start, end = HISTORY_START, date(2025, 1, 14)
    h.write_raw(start, end)
    report = preflight(h.app, select_processors(h.pipeline, phases=[1, 2]), start, end)
    assert report.ok and [c.start for c in report.checks] == [start.isoformat()], report.render()
    res = run_backfill(h.app, BackfillRequest(start, end, phases=[1, 2], skip_downstream_trigger=True))
    assert not res.refused, res.refused
    assert res.exit_code == 0
    for d in _days("2025-01-10", "2025-01-14"):
        assert h.app.tracker.partition("weekly", d).status == "success"
    assert h.rows("weekly", start)[0]["days_read"] == 1 and h.rows("weekly", end)[0]["days_read"] == 5
    # Only phase 2 now: its upstream's coverage is checked from the history start, not 6 days before it.
    report = preflight(h.app, select_processors(h.pipeline, phases=[2]), start, end)
    assert report.ok and [(c.start, c.expected) for c in report.checks] == [(start.isoformat(), 5)], report.render()
    res = run_backfill(h.app, BackfillRequest(start, end, phases=[2], force=True, skip_downstream_trigger=True))
    assert not res.refused and res.exit_code == 0


# ====================================================================== a processor's own history start
def _late_sensor(tmp_path: Path | None = None) -> dict | str:
    """The station with no pipeline-wide history start; its readings table starts on 2025-01-10."""
    raw = _station(history_start=None)
    raw["processors"][0]["history_start"] = HISTORY_START.isoformat()
    if tmp_path is None:
        return raw
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_a_processors_own_history_start_is_the_same_rule_for_its_table():
    p = from_dict(_late_sensor())
    cal, weekly = p.calendar, p.processor("weekly")
    assert cal.history_start is None and cal.history_start_of("readings") == HISTORY_START
    # Its partitions before it are not expected; the pipeline's other dates still are.
    assert not cal.is_expected(date(2025, 1, 9), "readings") and cal.is_expected(date(2025, 1, 9))
    assert cal.reason_not_expected(date(2025, 1, 9), "readings") == "before the history start 2025-01-10 of readings"
    # A reader's lookback stops there: a short window by declaration, said the same way.
    assert weekly.upstreams[0].window(date(2025, 1, 12), cal) == (HISTORY_START, date(2025, 1, 12))
    assert weekly.short_window(date(2025, 1, 12), cal) == (
        "short window by declaration: readings: 2025-01-10..2025-01-12 of 2025-01-06..2025-01-12 "
        "(history starts 2025-01-10)")
    # A backfill plan does not run it before its history start.
    plan = build_plan(p, _NoState(), select_processors(p, phases=[1, 2]), date(2025, 1, 8), date(2025, 1, 11))
    assert sorted(n.day for n in plan.nodes if n.processor == "readings") == [HISTORY_START, date(2025, 1, 11)]


def test_a_backfill_from_a_processors_history_start_needs_nothing_before_it_and_status_shows_the_short_window(
        make_harness, tmp_path):
    h = make_harness(pipeline_file=_late_sensor(tmp_path))
    start, end = HISTORY_START, date(2025, 1, 13)
    h.write_raw(start, end)  # the sensor's files exist from its history start only
    report = preflight(h.app, select_processors(h.pipeline, phases=[1, 2]), start, end)
    assert report.ok and [c.start for c in report.checks] == [start.isoformat()], report.render()
    res = run_backfill(h.app, BackfillRequest(start, end, phases=[1, 2], skip_downstream_trigger=True))
    assert not res.refused and res.exit_code == 0, (res.refused, res.exit_code)
    assert [h.rows("weekly", d)[0]["days_read"] for d in _days("2025-01-10", "2025-01-13")] == [1, 2, 3, 4]
    # Phase 2 alone: its upstream is checked from the sensor's history start, not 6 days before it.
    report = preflight(h.app, select_processors(h.pipeline, phases=[2]), start, end)
    assert report.ok and [(c.start, c.expected) for c in report.checks] == [(start.isoformat(), 4)], report.render()
    res = run_backfill(h.app, BackfillRequest(start, end, phases=[2], force=True, skip_downstream_trigger=True))
    assert not res.refused and res.exit_code == 0
    # A daily (strict) run of a date whose window reaches before it: computed on what exists, recorded
    # with the run, shown by the status.
    day = date(2025, 1, 13)
    h.deliver(h.trigger(day, phase=2, processors=("weekly",), skip_downstream_trigger=True,
                        generation=h.app.tracker.new_generation(day)))
    assert h.app.tracker.partition("weekly", day).status == "success"
    short = ("short window by declaration: readings: 2025-01-10..2025-01-13 of 2025-01-07..2025-01-13 "
             "(history starts 2025-01-10)")
    checked = [r["detail"] for run in h.app.tracker.runs(processor="weekly", day=day)
               for r in (run.get("checks") or {}).get("results", [])]
    assert any(short in detail for detail in checked), checked
    assert date_status(h.app, day)["phases"]["2"]["processors"]["weekly"]["short_window"] == short


def test_a_trigger_before_a_processors_own_history_start_skips_it_its_readers_run_and_the_phase_hands_on_once(
        make_harness, tmp_path):
    raw = _late_sensor()
    # A same-phase reader of the late table, with a lookback (strict mode checks its window for gaps).
    raw["processors"].insert(1, {
        "name": "daily", "phase": 1, "upstreams": [{"processor": "readings", "lookback_days": 1}],
        "sql": "SELECT @data_date AS day, COUNT(*) AS n FROM {station_raw.readings} "
               "WHERE day BETWEEN @window_start AND @data_date",
        "output": {"table": "station.daily", "date_column": "day", "keys": ["n"],
                   "columns": {"day": "DATE", "n": "INT64"}}})
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(raw))
    h = make_harness(pipeline_file=str(path))
    day = date(2025, 1, 8)  # before readings' history start (2025-01-10); the pipeline expects it
    seen = h.pump(h.trigger(day, phase=1))  # `cascade trigger --date 2025-01-08`, daily mode, strict checks
    part = h.app.tracker.partition("readings", day)
    assert part.status == "skipped" and "before the history start 2025-01-10 of readings" in part.error, part
    assert h.app.tracker.runs(processor="readings", day=day)[-1]["status"] == "skipped"  # never ran
    for name in ("daily", "weekly"):
        st = h.app.tracker.partition(name, day)
        assert st.status == "success", (name, st.status, st.error, st.blocked)
    assert h.rows("daily", day)[0]["n"] == 0 and h.rows("weekly", day)[0]["days_read"] == 0  # empty by declaration
    assert len(seen[2]) == 1  # phase 1 handed on exactly once
    st = date_status(h.app, day)
    assert [st["phases"][n]["status"] for n in ("1", "2")] == ["complete", "complete"], st
    assert st["phases"]["1"]["processors"]["readings"]["status"] == "skipped"
    # A second trigger of the date finds nothing to do and hands nothing on again.
    again = h.pump(h.trigger(day, phase=1))
    assert again[2] == [] and h.app.tracker.partition("readings", day).status == "skipped"


# ====================================================================== the NBA reference: game days from its schedule
def test_the_nba_reference_takes_its_game_days_from_the_schedule_loaded_date_by_date():
    import importlib.util

    from cascade.definition.loading import load

    folder = Path(__file__).resolve().parent.parent / "pipelines"
    spec = importlib.util.spec_from_file_location("nba_synthetic_for_test", folder / "nba_synthetic.py")
    synthetic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synthetic)
    day_files = synthetic.day_files
    p = load(folder / "nba.yaml", namespace="")
    cal = p.calendar
    src = cal.expected_from
    assert (src.processor, dict(src.where), src.unlisted) == ("nbac_schedule", {"game_status": (3,)}, "expected")
    # The synthetic schedule files are the files as scraped after the games: every game final, on
    # every date the declared rules expect - the calendar from data agrees with the declared one.
    days = [d for d in _days("2025-01-06", "2025-02-23") if cal.declared_expected(d)]
    assert all(g["game_status"] == 3 for d in days for g in day_files(d)["nbacom/schedule/{date}.json"]["games"])
    # Loaded date by date: a date without any schedule row is not loaded yet (expected, unknown);
    # a date whose games are all postponed (status 1) has no games; the All-Star break stays declared.
    loaded = cal.with_dates([date(2025, 1, 13), date(2025, 1, 15)], through=date(2025, 1, 15),
                            listed=[date(2025, 1, 13), date(2025, 1, 14), date(2025, 1, 15)])
    assert loaded.is_expected(date(2025, 1, 12)) and loaded.is_unknown(date(2025, 1, 12))
    assert loaded.note(date(2025, 1, 12)).startswith("expected (unknown): nbac_schedule has no row for 2025-01-12")
    assert not loaded.is_expected(date(2025, 1, 14))
    assert loaded.note(date(2025, 1, 14)) == "no data expected: no matching row in nbac_schedule"
    assert loaded.is_expected(date(2025, 1, 14), "nbac_schedule")  # the schedule's own partition
    assert loaded.reason_not_expected(date(2025, 2, 16)) == "All-Star break"


def test_a_lookback_of_expected_dates_cut_by_the_history_start_is_a_short_window_too():
    raw = _station()
    raw["processors"][1]["upstreams"] = [{"processor": "readings", "lookback_dates": 5}]
    p = from_dict(raw)
    weekly, cal = p.processor("weekly"), p.calendar
    assert weekly.upstreams[0].window(date(2025, 1, 12), cal) == (HISTORY_START, date(2025, 1, 12))
    assert weekly.short_window(date(2025, 1, 12), cal) == (
        "short window by declaration: readings: 2025-01-10..2025-01-12 holds 3 of the last 5 expected dates "
        "(history starts 2025-01-10)")
    assert weekly.short_window(date(2025, 1, 14), cal) == ""  # five expected dates exist from here on


def test_a_plan_estimates_the_quality_gates_queries_of_the_partitions_it_runs():
    from cascade.backfill.plan import build_plan, gate_queries, select_processors

    raw = _station()
    raw["processors"][0]["gates"] = [
        {"not_null": ["temp"]}, {"range": {"column": "temp", "min": -60, "max": 60}},
        {"name": "no_null_temp", "sql": "SELECT * FROM {station_raw.readings} WHERE day = @data_date AND temp IS NULL"}]
    p = from_dict(raw)
    assert gate_queries(p.processor("readings")) == 2 and gate_queries(p.processor("weekly")) == 0
    plan = build_plan(p, _NoState(), select_processors(p, phases=[1, 2]), date(2025, 1, 10), date(2025, 1, 12))
    est = plan.estimate()
    assert (est["merge_jobs"], est["gate_queries"]) == (6, 6)  # 3 dates x 2 processors; readings' 2 per date
    assert est["bigquery_jobs"] == 12 and "6 quality-gate queries" in plan.render()
