"""Trust after change: reruns, fixes, partial and forced backfills and code changes, on the emulators.

A small weather-station pipeline (another domain than the reference ones), written as a team would:

* phase 1 ``readings``: raw JSON files per date in GCS (``readings/{date}.json``), gated on the
  temperature's range;
* phase 2 ``station_daily`` (SQL, same date) and ``station_trend`` (SQL, a same-phase dependent
  with a 3-day lookback on ``station_daily``);
* phase 3 ``report`` (SQL over ``station_trend``).

Every printed recovery command is run verbatim (``Harness.run_printed``), never matched as text only.
"""

from __future__ import annotations

import copy
import json
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from cascade.backfill.engine import BackfillRequest, run_backfill
from cascade.backfill.reach import cover_for
from cascade.ops.date_status import date_status
from cascade.state.status import Status

from .harness import Harness, printed_commands

D0 = date(2025, 1, 6)
DAYS = [D0 + timedelta(days=i) for i in range(5)]  # 01-06 .. 01-10

STATIONS = {
    "pipeline": "stations", "description": "weather stations", "raw_bucket": "station-landing",
    "calendar": {"timezone": "Europe/Paris", "seasons": [{"name": "2025", "start": "2025-01-06", "end": "2025-12-31"}]},
    "phases": [{"number": 1, "name": "ingest", "next": 2}, {"number": 2, "name": "daily", "next": 3},
               {"number": 3, "name": "report"}],
    "processors": [
        {"name": "readings", "phase": 1, "description": "raw readings",
         "source": {"gcs_json": "readings/{date}.json", "records": "readings"},
         "output": {"table": "st_raw.readings", "date_column": "reading_date", "keys": ["station"],
                    "columns": {"reading_date": "DATE", "station": "STRING", "temp": "FLOAT64"}},
         "gates": [{"range": {"column": "temp", "min": -60, "max": 60}}]},
        {"name": "station_daily", "phase": 2, "description": "one row per station", "upstreams": ["readings"],
         "output": {"table": "st.station_daily", "date_column": "day", "keys": ["station"],
                    "columns": {"day": "DATE", "station": "STRING", "temp": "FLOAT64"}},
         "sql": "SELECT reading_date AS day, station, temp FROM {st_raw.readings} WHERE reading_date = @data_date"},
        {"name": "station_trend", "phase": 2, "description": "3-day mean per station",
         "upstreams": [{"processor": "station_daily", "lookback_days": 3}],
         "output": {"table": "st.station_trend", "date_column": "day", "keys": ["station"],
                    "columns": {"day": "DATE", "station": "STRING", "mean_temp": "FLOAT64", "n": "INT64"}},
         "sql": ("SELECT @data_date AS day, station, AVG(temp) AS mean_temp, COUNT(*) AS n FROM {st.station_daily} "
                 "WHERE day BETWEEN DATE_SUB(@data_date, INTERVAL 3 DAY) AND @data_date GROUP BY station")},
        {"name": "report", "phase": 3, "description": "the day's report", "upstreams": ["station_trend"],
         "output": {"table": "st.report", "date_column": "day", "keys": ["station"],
                    "columns": {"day": "DATE", "station": "STRING", "mean_temp": "FLOAT64"}},
         "sql": "SELECT day, station, mean_temp FROM {st.station_trend} WHERE day = @data_date"},
    ],
}


def write_definition(tmp_path: Path, edit=None, name: str = "stations.yaml") -> str:
    raw = copy.deepcopy(STATIONS)
    if edit:
        edit(raw)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def write_readings(h: Harness, day: date, temps: dict[str, float] | None = None) -> None:
    temps = temps if temps is not None else {"paris": 5.0 + day.day, "lyon": 3.0 + day.day}
    body = {"readings": [{"station": s, "temp": t} for s, t in temps.items()]}
    blob = h.app.storage.bucket(h.pipeline.bucket(h.project)).blob(f"readings/{day.isoformat()}.json")
    blob.upload_from_string(json.dumps(body), content_type="application/json")


def delete_readings(h: Harness, day: date) -> None:
    h.app.storage.bucket(h.pipeline.bucket(h.project)).blob(f"readings/{day.isoformat()}.json").delete()


def backfill(h: Harness, start: date = DAYS[0], end: date = DAYS[-1], **kw):
    import io

    return run_backfill(h.app, BackfillRequest(start=start, end=end, **kw), progress_stream=io.StringIO())


def run_ids(h: Harness, processor: str, days=DAYS) -> dict[str, str]:
    return {d.isoformat(): h.app.tracker.partition(processor, d).run_id for d in days}


def with_station_daily_changed(h: Harness, tmp_path: Path) -> Harness:
    """``h``'s namespace seen through a definition whose ``station_daily`` SQL changed (a real change
    of its rows): every partition of it, and what reads them, is stale."""
    def change(raw):
        daily = next(p for p in raw["processors"] if p["name"] == "station_daily")
        daily["sql"] = daily["sql"].replace("temp FROM", "temp + 0.5 AS temp FROM")
    return Harness(h.endpoints, h.namespace, write_definition(tmp_path, change, "changed.yaml"))


@pytest.fixture()
def stations(make_harness, tmp_path) -> Harness:
    h = make_harness(pipeline_file=write_definition(tmp_path))
    for d in DAYS:
        write_readings(h, d)
    return h


def loaded(h: Harness) -> Harness:
    """Every phase done for DAYS, by a backfill (nothing pending downstream)."""
    result = backfill(h)
    assert result.exit_code == 0, result.render()
    assert h.pull(2) == [] and h.pull(3) == []
    return h


def complete(h: Harness, day: date) -> bool:
    return all(ph["status"] == Status.COMPLETE for ph in date_status(h.app, day)["phases"].values())


# ---------------------------------------------------------------------- intents and printed commands
def test_printed_recovery_command_after_a_rerun_completes_the_date(stations):
    h = loaded(stations)
    day = DAYS[2]
    delete_readings(h, day)  # the rerun will fail: the file is gone
    assert h.run_printed(f"cascade rerun --date {day} --phase 1") == 0
    h.pump()
    part = h.app.tracker.partition("readings", day)
    assert part.status == Status.FAILED and part.generation >= 1
    alert = next(a for a in h.alerts.alerts if f"readings FAILED for {day}" in a.title)
    (command,) = printed_commands(alert.message)
    assert command == f"cascade trigger --date {day} --phase 1 --processor readings"
    write_readings(h, day)  # fixed at the source
    assert h.run_printed(command) == 0
    h.pump()
    assert complete(h, day), date_status(h.app, day)
    assert h.app.tracker.partition("report", day).generation == h.app.tracker.partition("readings", day).generation


def test_rerun_prints_the_wait_of_its_own_outcome_like_trigger_and_it_works_verbatim(stations, capsys):
    from cascade.ops.date_status import wait_for_phase

    h = loaded(stations)
    day = DAYS[2]
    capsys.readouterr()
    assert h.run_printed(f"cascade rerun --date {day} --phase 2") == 0
    follow = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("follow it with: "))
    wait = follow.removeprefix("follow it with: ")
    assert wait.startswith(f"cascade wait --date {day} --phase 3 --since "), follow  # as cascade trigger prints it
    since = wait.split("--since ", 1)[1]
    # Before the rerun ran, the previous generation's completion is not its answer: still pending.
    from datetime import datetime
    assert wait_for_phase(h.app, day, 3, 0, since=datetime.fromisoformat(since)).code == 2
    h.pump()
    assert h.run_printed(wait) == 0, wait
    assert h.app.tracker.partition("report", day).generation == 1
    # Without the cascade, the wait is on the phase rerun itself.
    assert h.run_printed(f"cascade rerun --date {day} --phase 2 --skip-downstream-trigger") == 0
    follow = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("follow it with: "))
    assert follow.startswith(f"follow it with: cascade wait --date {day} --phase 2 --since "), follow
    # A rerun of several dates prints one wait that covers all of them, and it works verbatim.
    first, last = DAYS[1], DAYS[3]
    before = {d: h.app.tracker.partition("report", d).generation for d in (first, last)}
    assert h.run_printed(f"cascade rerun --date {first} --end {last} --phase 2") == 0
    printed = capsys.readouterr().out
    follow = next(line for line in printed.splitlines() if line.startswith("follow it with: "))
    wait = follow.removeprefix("follow it with: ")
    assert wait.startswith(f"cascade wait --date {first} --end {last} --phase 3 --since "), follow
    assert h.run_printed(wait + " --timeout 0") == 2  # nothing of the rerun has run yet
    h.pump()
    assert h.run_printed(wait) == 0, wait
    out = capsys.readouterr().out
    assert all(f"{d}: phase 3 complete" in out for d in DAYS[1:4]), out
    assert all(h.app.tracker.partition("report", d).generation > before[d] for d in (first, last))
    # The trend of the next date reads the rerun dates (3-day window): the rerun said how to rebuild it.
    (then,) = [line.split(": ", 1)[1] for line in printed.splitlines() if line.startswith("then rebuild")]
    assert then == f"cascade backfill --start {DAYS[4]} --end {DAYS[4]} --phase 2 --phase 3", then
    assert date_status(h.app, DAYS[4])["phases"]["2"]["status"] == Status.STALE
    assert h.run_printed(then) == 0, then
    assert date_status(h.app, DAYS[4])["phases"]["2"]["status"] == Status.COMPLETE


def test_a_trigger_with_nothing_to_do_answers_already_complete_visibly(stations, capsys):
    h = loaded(stations)
    day = DAYS[1]
    before = run_ids(h, "station_daily", [day])
    assert h.run_printed(f"cascade trigger --date {day} --phase 2") == 0
    out = capsys.readouterr().out
    assert f"phase 2 for {day} is already complete and fresh: nothing to run" in out
    assert f"cascade wait --date {day} --phase 3 --since " in out
    h.pump()
    assert run_ids(h, "station_daily", [day]) == before  # nothing ran again
    answers = [r for r in h.app.tracker.runs("station_daily", day) if r["status"] == Status.DONE]
    assert answers and "already complete" in answers[0]["error"]


# ---------------------------------------------------------------------- rebuilds re-trigger what read them
def test_forced_backfill_of_a_processor_retriggers_every_later_phase(stations):
    h = loaded(stations)
    reports = run_ids(h, "report")
    trends = run_ids(h, "station_trend")
    result = backfill(h, processors=["station_daily"], force=True)
    assert result.exit_code == 0, result.render()
    assert "; 0 were already done and fresh (not run)" in result.render()  # --force ran every one of them
    # The same-phase dependent reads the rebuilt partitions: rebuilt in the same wavefront, not blocked.
    assert not result.report.blocked
    assert all(trends[d] != rid for d, rid in run_ids(h, "station_trend").items())
    assert set(result.report.downstream.values()) == {"published"}, result.report.downstream
    seen = h.pump()
    assert len(seen[3]) == len(DAYS)
    assert all(reports[d] != rid for d, rid in run_ids(h, "report").items())
    assert all(complete(h, d) for d in DAYS)
    plan = backfill(h, dry_run=True).plan
    assert not plan.nodes, plan.render()  # everything is done and fresh


def test_rerun_of_a_date_makes_the_dependents_whose_windows_read_it_stale(stations, capsys):
    h = loaded(stations)
    day = DAYS[1]
    assert h.run_printed(f"cascade rerun --date {day} --phase 2 --skip-downstream-trigger") == 0
    h.pump()
    rebuilt = h.app.tracker.partition("station_daily", day)
    assert rebuilt.generation >= 1
    # station_trend of the following dates reads station_daily@day in its 3-day window.
    plan = backfill(h, dry_run=True).plan
    stale = {k for k, c in plan.cells.items() if c == Status.STALE}
    readers = {("station_trend", (day + timedelta(days=i)).isoformat()) for i in (1, 2, 3)}
    assert readers <= stale, plan.render()
    reason = plan.reasons[("station_trend", DAYS[3].isoformat())]
    assert f"input station_daily@{day} rebuilt" in reason
    assert ("station_trend", DAYS[0].isoformat()) not in stale  # its window ends before the rerun date
    st = date_status(h.app, DAYS[3])
    assert st["phases"]["2"]["processors"]["station_trend"]["status"] == Status.STALE
    assert h.run_printed(f"cascade status --date {DAYS[3]}") == 0
    assert f"stale: input station_daily@{day} rebuilt" in capsys.readouterr().out
    assert h.run_printed(f"cascade coverage --start {DAYS[0]} --end {DAYS[-1]} --phase 2") == 0
    cov = capsys.readouterr().out
    assert f"stale: {DAYS[2]}, {DAYS[3]}, {DAYS[4]}" in cov, cov
    # Waiting on a stale phase answers "stale" (exit 1) with the rebuild, which works when pasted.
    assert h.run_printed(f"cascade wait --date {DAYS[3]} --phase 2 --timeout 30") == 1
    waited = capsys.readouterr().out
    assert "phase 2 is stale" in waited, waited
    (rebuild,) = printed_commands(waited.split("phase 2 is stale", 1)[1].splitlines()[0])
    assert h.run_printed(rebuild) == 0, rebuild
    assert date_status(h.app, DAYS[3])["phases"]["2"]["status"] == Status.COMPLETE
    capsys.readouterr()
    # Coverage ends with the backfill that rebuilds what is still stale in phase 2; pasted, it does.
    assert h.run_printed(f"cascade coverage --start {DAYS[0]} --end {DAYS[-1]} --phase 2") == 0
    (rebuild,) = [line.removeprefix("next: ") for line in capsys.readouterr().out.splitlines()
                  if line.startswith("next: ")]
    assert rebuild == f"cascade backfill --start {DAYS[2]} --end {DAYS[4]} --phase 2", rebuild
    assert h.run_printed(rebuild) == 0, rebuild
    plan = backfill(h, phases=[2], dry_run=True).plan
    assert not [k for k, c in plan.cells.items() if c == Status.STALE], plan.render()
    capsys.readouterr()
    # The stale readers (and what reads them) are rebuilt by a plain backfill; then nothing is stale.
    result = backfill(h)
    assert result.exit_code == 0, result.render()
    assert not [k for k, c in backfill(h, dry_run=True).plan.cells.items() if c == Status.STALE]


def test_changed_sql_makes_its_partitions_and_their_downstream_stale_and_backfill_rebuilds_only_those(
        stations, make_harness, tmp_path):
    h = loaded(stations)
    before = {p: run_ids(h, p) for p in ("readings", "station_daily", "station_trend", "report")}

    def reformat(raw):  # layout and keyword case only: not a change of the rows
        trend = next(p for p in raw["processors"] if p["name"] == "station_trend")
        trend["sql"] = "select @data_date as day, station,\n  AVG(temp) as mean_temp, COUNT(*) as n\n" \
                       "from {st.station_daily}  -- last 3 days\nwhere day between DATE_SUB(@data_date, INTERVAL 3 DAY) " \
                       "and @data_date group by station"
    same = Harness(h.endpoints, h.namespace, write_definition(tmp_path, reformat, "reformatted.yaml"))
    assert not backfill(same, dry_run=True).plan.nodes

    def change(raw):  # a real change: a 2-day mean
        trend = next(p for p in raw["processors"] if p["name"] == "station_trend")
        trend["sql"] = trend["sql"].replace("INTERVAL 3 DAY", "INTERVAL 2 DAY")
    changed = Harness(h.endpoints, h.namespace, write_definition(tmp_path, change, "changed.yaml"))
    plan = backfill(changed, dry_run=True).plan
    to_run = {(n.processor, n.day.isoformat()) for n in plan.nodes}
    assert to_run == {(p, d.isoformat()) for p in ("station_trend", "report") for d in DAYS}, plan.render()
    assert plan.reasons[("station_trend", DAYS[0].isoformat())] == "code changed: sql"
    assert plan.reasons[("report", DAYS[0].isoformat())].startswith(f"input station_trend@{DAYS[0]} is stale")
    result = backfill(changed)
    assert result.exit_code == 0, result.render()
    after = {p: run_ids(h, p) for p in before}
    assert after["readings"] == before["readings"] and after["station_daily"] == before["station_daily"]
    assert all(after["station_trend"][d] != before["station_trend"][d] for d in after["station_trend"])
    assert not backfill(changed, dry_run=True).plan.nodes


# ---------------------------------------------------------------------- nothing reads what cannot be believed
def test_a_partition_that_failed_its_gate_is_never_read_by_a_dependent(stations):
    h = loaded(stations)
    day = DAYS[1]
    write_readings(h, day, {"paris": 999.0, "lyon": 4.0})  # a sensor fault: out of the gate's range
    assert h.run_printed(f"cascade rerun --date {day} --phase 1 --skip-downstream-trigger") == 0
    h.pump()
    gated = h.app.tracker.partition("readings", day)
    assert gated.status == Status.FAILED and "range_temp" in gated.error
    # Its rows are still in the table (a failed gate keeps them), but no dependent may read them:
    # a backfill of phase 2 alone (phase 1 outside it) refuses the date instead of computing on it.
    result = backfill(h, start=day, end=day, phases=[2], force=True)
    assert result.exit_code == 1
    failed = result.report.failed[f"station_daily@{day}"]
    assert f"readings@{day} is failed" in failed
    assert 999.0 not in {r["temp"] for r in h.rows("station_daily", day)}
    # Strict mode (a daily trigger) blocks it too.
    h.deliver(h.trigger(day, phase=2))
    part = h.app.tracker.partition("station_daily", day)
    assert part.status == Status.BLOCKED and "readings" in part.error


def test_partial_backfill_completions_do_not_disable_lookback_checks_downstream(make_harness, tmp_path):
    def report_looks_back(raw):
        report = next(p for p in raw["processors"] if p["name"] == "report")
        report["upstreams"] = [{"processor": "station_trend", "lookback_days": 3}]
    h = make_harness(pipeline_file=write_definition(tmp_path, report_looks_back))
    for d in DAYS:
        write_readings(h, d)
    assert backfill(h, phases=[1], skip_downstream_trigger=True).exit_code == 0
    assert backfill(h, start=DAYS[0], end=DAYS[3], phases=[2], skip_downstream_trigger=True).exit_code == 0
    # Two of the dates the report of DAYS[4] looks back on lose their trend rows.
    from google.cloud import bigquery
    trend = h.app.warehouse.table_id(h.pipeline.processor("station_trend").output)
    h.app.warehouse.query(f"DELETE FROM `{trend}` WHERE day IN (@a, @b)",
                          [bigquery.ScalarQueryParameter("a", "DATE", DAYS[1]),
                           bigquery.ScalarQueryParameter("b", "DATE", DAYS[2])])
    # A partial backfill of phase 2 alone hands DAYS[4] on to phase 3 ...
    result = backfill(h, start=DAYS[4], end=DAYS[4], phases=[2])
    assert result.exit_code == 0, result.render()
    msgs = h.pull(3)
    assert len(msgs) == 1 and msgs[0]["mode"] == "daily" and msgs[0]["strict_mode"] is True
    # ... and phase 3 runs its lookback checks: it blocks on the gap instead of reporting success.
    h.deliver(json.dumps(msgs[0]).encode(), phase=3)
    part = h.app.tracker.partition("report", DAYS[4])
    assert part.status == Status.BLOCKED, part
    assert part.blocked["check"] == "Data Gaps" and part.blocked["dates"] == [DAYS[1].isoformat(), DAYS[2].isoformat()]


def test_missing_raw_file_block_resolution_run_verbatim_recovers_both_dates(stations):
    h = stations
    assert backfill(h, start=DAYS[0], end=DAYS[1]).exit_code == 0
    lost = DAYS[2]
    delete_readings(h, lost)
    h.pump(h.trigger(lost, phase=1))  # the daily trigger for the lost date: phase 1 fails (no file)
    assert h.app.tracker.partition("readings", lost).status == Status.FAILED
    today = DAYS[3]
    h.pump(h.trigger(today, phase=1))  # today's file is there, but station_trend's window needs the lost date
    part = h.app.tracker.partition("station_trend", today)
    assert part.status == Status.BLOCKED, part
    resolution = part.blocked["resolution"]
    assert resolution.startswith(f"restore gs://{h.pipeline.bucket(h.project)}/readings/{lost}.json")
    write_readings(h, lost)  # restored
    for command in printed_commands(resolution):
        assert h.run_printed(command) == 0, command
    h.pump()
    assert complete(h, lost) and complete(h, today), (date_status(h.app, lost), date_status(h.app, today))


def test_a_preflight_refusal_prints_the_commands_that_fill_the_gap_and_they_work_verbatim(stations, capsys):
    h = stations
    assert backfill(h, start=DAYS[0], end=DAYS[1], phases=[1], skip_downstream_trigger=True).exit_code == 0
    # Phase 2 over all DAYS reads readings on dates phase 1 never loaded: refused, with the fix.
    assert h.run_printed(f"cascade backfill --start {DAYS[0]} --end {DAYS[-1]} --phase 2") == 2
    out = capsys.readouterr().out
    refused = next(line for line in out.splitlines() if line.startswith("refused: preflight failed"))
    commands = printed_commands(refused)
    assert commands[0] == f"cascade backfill --start {DAYS[2]} --end {DAYS[-1]} --processor readings", refused
    for command in commands:
        assert h.run_printed(command) == 0, command
    assert all(h.app.tracker.partition("station_trend", d).status == Status.SUCCESS for d in DAYS)


def test_after_a_code_change_the_next_steps_status_prints_rebuild_the_inputs_first_in_one_backfill(
        stations, tmp_path, capsys):
    h = loaded(stations)

    changed = with_station_daily_changed(h, tmp_path)  # every later window reads what it rebuilds
    day = DAYS[4]
    st = date_status(changed.app, day, cover=cover_for(changed.app))  # as `cascade status` prints it
    steps = {n: p["next_step"] for ph in st["phases"].values() for n, p in ph["processors"].items()
             if p.get("next_step")}
    # The trend reads 3 days of station_daily, all stale: rebuilding the trend alone would read them.
    # One backfill reaches back to where nothing it reads is stale (the first date: windows stop there).
    (trend,) = printed_commands(steps["station_trend"])
    assert trend == f"cascade backfill --start {DAYS[0]} --end {day} --phase 2", steps
    # The report (phase 3) starts at the same root: phases 2 and 3 in one command.
    (report,) = printed_commands(steps["report"])
    assert report == f"cascade backfill --start {DAYS[0]} --end {day} --phase 2 --phase 3", steps
    assert changed.run_printed(report) == 0, report
    st = date_status(changed.app, day)
    assert all(ph["status"] == Status.COMPLETE for ph in st["phases"].values()), st
    assert not [k for k, c in backfill(changed, dry_run=True).plan.cells.items() if c == Status.STALE]


def test_a_backfill_short_of_stale_history_prints_the_fill_and_the_resume_that_reach_it_and_they_run(
        stations, tmp_path):
    h = loaded(stations)

    changed = with_station_daily_changed(h, tmp_path)  # every later window reads what it rebuilds
    day = DAYS[4]
    result = backfill(changed, start=day, end=day, phases=[2])  # the trend's window reads stale dates
    assert result.exit_code == 1
    reason = result.report.failed[f"station_trend@{day}"]
    # The fill rebuilds station_daily over the window - and, with --widen, what that rebuild needs in
    # turn (its same-phase reader over earlier windows) - in one command; then this backfill again.
    (fill,) = printed_commands(reason)
    assert fill == f"cascade backfill --start {DAYS[1]} --end {DAYS[3]} --processor station_daily --widen", reason
    shown = result.render()  # one command resumes it all, printed once
    resume = (f"cascade backfill --start {day} --end {day} --phase 2 --widen")
    assert f"to resume, rebuilding first what the failed partitions read outside the range (--widen: an " \
           f"earlier start, earlier phases): {resume}" in shown, shown
    assert shown.count("fill them first") == 0, shown
    step = date_status(changed.app, day, cover=cover_for(changed.app))["phases"]["2"]["processors"][
        "station_trend"]["next_step"]
    assert printed_commands(step) == [f"cascade backfill --start {DAYS[0]} --end {day} --phase 2"], step
    assert changed.run_printed(fill) == 0, fill
    assert changed.run_printed(resume) == 0, resume
    assert date_status(changed.app, day)["phases"]["2"]["status"] == Status.COMPLETE
    assert not [k for k, c in backfill(changed, phases=[2], dry_run=True).plan.cells.items() if c == Status.STALE]

def test_a_rebuild_says_which_later_partitions_it_left_stale_and_the_backfill_it_prints_rebuilds_them(stations):
    h = loaded(stations)
    result = backfill(h, start=DAYS[0], end=DAYS[2], phases=[2], force=True, skip_downstream_trigger=True)
    assert result.exit_code == 0, result.render()
    # The trend of DAYS[3] and DAYS[4] reads station_daily of DAYS[1..2] (3-day windows); the report reads it.
    n, command = result.stale_after
    assert n == 4 and command == f"cascade backfill --start {DAYS[3]} --end {DAYS[4]} --phase 2 --phase 3", result.stale_after
    assert f"read what this backfill rebuilt (their lookback windows reach into it) and are stale now; " \
           f"rebuild them: {command}" in result.render()
    assert h.run_printed(command) == 0, command
    assert backfill(h, start=DAYS[3], end=DAYS[4], phases=[2, 3], dry_run=True).plan.nodes == []


def test_strict_mode_refuses_a_stale_input_of_its_own_phase_in_the_lookback_window(stations, tmp_path, capsys):
    h = loaded(stations)

    changed = with_station_daily_changed(h, tmp_path)  # every later window reads what it rebuilds
    day = DAYS[4]
    before = changed.app.tracker.partition("station_trend", day).run_id
    # Re-running the reader alone would read the 3 stale dates of station_daily in its window.
    assert changed.run_printed(f"cascade trigger --date {day} --phase 2 --processor station_trend") == 0
    said = capsys.readouterr().out
    check = f"cascade check --phase 2 --date {day}"
    assert "will run station_trend (stale: " in said and f"once strict mode's checks pass (what they find " \
           f"now: {check})" in said, said
    assert changed.run_printed(check) == 1  # pasted: it finds the block before the trigger is processed
    assert "station_trend: BLOCKED" in capsys.readouterr().out
    changed.pump()
    part = changed.app.tracker.partition("station_trend", day)
    assert part.status == Status.BLOCKED, part
    assert part.blocked["upstream"] == "station_daily" and "stale" in part.error, part.error
    assert part.run_id != before and changed.rows("station_trend", day)  # its previous rows are kept
    # The block's resolution (what its alert says) works when pasted: the backfill widens itself.
    (command,) = printed_commands(part.blocked["resolution"])
    assert command.endswith(" --widen"), command
    assert changed.run_printed(command) == 0, command
    assert date_status(changed.app, day)["phases"]["2"]["status"] == Status.COMPLETE


def test_a_gate_failed_on_data_corrected_at_the_source_is_recovered_by_the_reload_it_prints(make_harness, tmp_path):
    def gated(raw):  # three stations report every day
        daily = next(p for p in raw["processors"] if p["name"] == "station_daily")
        daily["gates"] = [{"row_count": {"min": 3}}]
    h = make_harness(pipeline_file=write_definition(tmp_path, gated))
    day = DAYS[0]
    write_readings(h, day, {"paris": 5.0, "lyon": 3.0})  # one station's readings missing from the file
    h.pump(h.trigger(day, phase=1))
    part = h.app.tracker.partition("station_daily", day)
    assert part.status == Status.FAILED and "row_count" in part.error
    alert = next(a for a in h.alerts.alerts if f"station_daily FAILED for {day}" in a.title)
    step = date_status(h.app, day, cover=cover_for(h.app))["phases"]["2"]["processors"]["station_daily"]["next_step"]
    # Fixed in its code or gate: re-run it; corrected at the source: reload from the first phase it reads.
    assert printed_commands(step) == [f"cascade trigger --date {day} --phase 2 --processor station_daily",
                                      f"cascade rerun --date {day} --phase 1"], step
    assert printed_commands(alert.message)[-2:] == printed_commands(step), alert.message
    write_readings(h, day, {"paris": 5.0, "lyon": 3.0, "nice": 9.0})  # the file is delivered again, complete
    assert h.run_printed(printed_commands(step)[1]) == 0
    h.pump()
    assert date_status(h.app, day)["phases"]["3"]["status"] == Status.COMPLETE, date_status(h.app, day)
    assert len(h.rows("station_daily", day)) == 3


def test_widen_runs_the_whole_phase_when_a_selected_processor_reads_a_stale_one_of_its_phase(stations, tmp_path):
    changed = with_station_daily_changed(loaded(stations), tmp_path)
    # station_trend alone would read station_daily, stale and not selected: --widen takes the phase.
    result = backfill(changed, processors=["station_trend"], widen=True)
    assert result.exit_code == 0, result.render()
    assert result.widened.startswith(f"--widen: {DAYS[0]}..{DAYS[-1]} phases [2] reads inputs outside it"), \
        result.widened
    plan = backfill(changed, phases=[2], dry_run=True).plan
    assert not [k for k, c in plan.cells.items() if c == Status.STALE], plan.render()
    # Nothing lacking: --widen changes nothing and says nothing.
    assert backfill(changed, phases=[2], widen=True).widened == ""
