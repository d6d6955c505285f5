"""Strict mode: four daily scenarios on the real emulators (A: the normal flow; B: a same-day failure
retried; C: yesterday's failed upstream blocks today's phase until fixed; D: a gap in the middle of
a lookback window blocks, naming that date).

The pipeline is the reference one with a 10-day lookback, so that a window around the All-Star
break (2025-02-14..19, no games) is short to load: 2025-02-22 looks back to 2025-02-12, whose
expected dates are 02-12, 02-13, 02-20, 02-21 and 02-22.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date

import pytest

from cascade.errors import TransientError
from cascade.ops.date_status import date_status

from .harness import ROOT, Harness, printed_commands

D = date(2025, 2, 22)
HISTORY = [date(2025, 2, 12), date(2025, 2, 13), date(2025, 2, 20), date(2025, 2, 21)]


@pytest.fixture()
def h(make_harness, short_lookback) -> Harness:
    return make_harness(pipeline_file=str(short_lookback))


def load_history(h: Harness, days: list[date], phases=(2, 3)) -> None:
    """What a backfill leaves behind: phases 2-3 done for ``days`` in backfill mode, nothing cascaded."""
    for day in days:
        h.write_raw(day, day)
        for phase in phases:
            h.deliver_until_done(h.trigger(day, phase=phase, mode="backfill", skip_downstream_trigger=True))


def load_earlier_raw(h: Harness) -> None:
    """Phase 2 for the game dates before HISTORY (02-03..02-11): what a recovery backfill starting
    inside HISTORY reads in its windows (a real pipeline has this history)."""
    days = h.pipeline.calendar.expected_dates(date(2025, 2, 3), date(2025, 2, 11))
    load_history(h, days, phases=(2,))


def blocked_of(h: Harness, processor: str, day: date) -> dict:
    return h.app.tracker.partition(processor, day).blocked or {}


def test_scenario_a_normal_daily_flow_runs_checks_and_cascades(h):
    load_history(h, HISTORY)
    h.write_raw(D, D)
    seen = h.pump(h.trigger(D))
    st = date_status(h.app, D)
    assert [st["phases"][n]["status"] for n in ("2", "3", "4")] == ["complete"] * 3
    assert len(seen[3]) == 1 and len(seen[4]) == 1
    checks = h.app.tracker.partition("player_rolling_form", D).raw["checks"]
    names = [r["name"] for r in checks["results"]]
    assert names == ["Upstream Failure", "Data Gaps"] and all(r["passed"] for r in checks["results"])
    assert checks["queries"] == 1 and checks["seconds"] > 0
    gap = checks["results"][1]["detail"]
    assert "5 expected date(s)" in gap  # the All-Star break is not expected
    assert h.alerts.alerts == []


def test_scenario_b_same_day_failure_is_retried_and_the_cascade_recovers(h):
    load_history(h, HISTORY)
    result = h.deliver(h.trigger(D))  # raw files for D are not there yet: phase 2 fails
    assert {o.status for o in result.outcomes} == {"failed"} and h.pull(3) == []
    h.write_raw(D, D)
    seen = h.pump(h.trigger(D))  # "simply re-run the failed Phase 2 processor"
    assert date_status(h.app, D)["phases"]["4"]["status"] == "complete"
    assert len(seen[3]) == 1 and len(seen[4]) == 1


def test_scenario_c_yesterdays_phase2_failed_blocks_todays_phase3_until_fixed(h):
    load_history(h, HISTORY[:3])
    yesterday = date(2025, 2, 21)
    assert h.deliver(h.trigger(yesterday, skip_downstream_trigger=True)).outcomes[0].status == "failed"  # no files
    h.write_raw(D, D)
    h.deliver(h.trigger(D, skip_downstream_trigger=True))
    result = h.deliver(h.trigger(D, phase=3))  # acknowledged (no exception): blocked is final for this message
    by = {o.processor: o for o in result.outcomes}
    # Only the processor whose lookback window needs yesterday is blocked.
    assert {n: o.status for n, o in by.items()} == {
        "player_game_summary": "success", "player_rolling_form": "blocked", "team_game_summary": "success"}
    assert "Analytics BLOCKED: Upstream Failure" in by["player_rolling_form"].error
    reason = blocked_of(h, "player_rolling_form", D)
    assert reason["check"] == "Upstream Failure" and reason["dates"] == ["2025-02-21"]
    assert reason["upstream"] == "nbac_player_boxscore"
    box = h.pipeline.processor("nbac_player_boxscore").source["gcs_json"].format(date="2025-02-21")
    assert reason["resolution"].startswith(f"restore gs://{h.pipeline.bucket(h.project)}/{box} ")
    assert h.pull(4) == []  # nothing downstream
    alerts = [a for a in h.alerts.alerts if "Upstream Failure" in a.title]
    assert len(alerts) == 1 and alerts[0].labels["processor"] == "player_rolling_form"
    st = date_status(h.app, D)
    assert st["phases"]["3"]["status"] == "blocked"
    assert st["phases"]["3"]["processors"]["player_rolling_form"]["resolution"] == reason["resolution"]
    # Recovery: do what the resolution says - restore the file, then paste its command verbatim.
    h.write_raw(yesterday, yesterday)
    load_earlier_raw(h)
    (command,) = printed_commands(reason["resolution"])
    assert h.run_printed(command) == 0, command
    seen = h.pump()
    assert date_status(h.app, D)["phases"]["4"]["status"] == "complete"
    assert date_status(h.app, yesterday)["phases"]["3"]["status"] == "complete"
    assert len(seen[4]) == 2  # both dates' phase 3 handed on to phase 4


def test_scenario_d_gap_in_the_middle_of_the_window_blocks_naming_exactly_that_date(h):
    load_history(h, [d for d in HISTORY if d != date(2025, 2, 13)])  # 02-13 never loaded
    h.write_raw(D, D)
    h.deliver(h.trigger(D, skip_downstream_trigger=True))
    result = h.deliver(h.trigger(D, phase=3))
    by = {o.processor: o.status for o in result.outcomes}
    assert by["player_rolling_form"] == "blocked"
    assert by["player_game_summary"] == "success"  # no lookback: its own inputs are complete
    reason = blocked_of(h, "player_rolling_form", D)
    table = f"{h.namespace}_nba_raw.nbac_player_boxscore"
    assert reason["check"] == "Data Gaps" and reason["dates"] == ["2025-02-13"]  # not the All-Star break
    err = h.app.tracker.partition("player_rolling_form", D).error
    # (With the calendar from the schedule, the detail also says why 02-13 is expected: its schedule
    # is not loaded either - "expected (unknown): ...".)
    assert err.startswith(f"Analytics BLOCKED: Data Gaps — missing dates ['2025-02-13'] in {table}") and \
        "; resolution: " in err and "expected (unknown): nbac_schedule" in err
    assert "restore gs://" in err and "2025-02-13.json" in err
    assert h.pull(4) == []
    # Restore the raw files, paste the printed command: the gap and the blocked date are filled.
    h.write_raw(date(2025, 2, 13), date(2025, 2, 13))
    load_earlier_raw(h)
    (command,) = printed_commands(reason["resolution"])
    assert command.startswith("cascade backfill --start 2025-02-13 --end 2025-02-22")
    assert h.run_printed(command) == 0, command
    seen = h.pump()
    assert date_status(h.app, D)["phases"]["3"]["status"] == "complete" and len(seen[4]) >= 1
    assert date_status(h.app, D)["phases"]["4"]["status"] == "complete"


def test_a_check_whose_query_errors_does_not_pass_it_is_retried(h):
    load_history(h, HISTORY)
    h.write_raw(D, D)
    h.deliver(h.trigger(D, skip_downstream_trigger=True))
    box = h.pipeline.processor("nbac_player_boxscore").output
    h.app.warehouse.client.delete_table(h.app.warehouse.table_id(box))  # the gap query now errors
    with pytest.raises(TransientError):
        h.deliver(h.trigger(D, phase=3, processors=("player_rolling_form",)))
    part = h.app.tracker.partition("player_rolling_form", D)
    assert part.status == "failed" and part.raw["transient"] is True and "could not run" in part.error
    assert h.pull(4) == []
    # The table comes back and is reloaded (a rerun: new generation); the redelivered message passes.
    h.app.warehouse.ensure_tables()
    for day in HISTORY + [D]:
        h.deliver(h.trigger(day, generation=1, mode="backfill", skip_downstream_trigger=True))
    h.deliver(h.trigger(D, phase=3, processors=("player_rolling_form",)))
    assert h.app.tracker.partition("player_rolling_form", D).status == "success"


@pytest.mark.parametrize("fields, reason", [({"mode": "backfill"}, "backfill mode"),
                                            ({"strict_mode": False}, "strict_mode=false")],
                         ids=["backfill-mode", "strict-off"])
def test_backfill_mode_and_strict_off_skip_the_checks_and_say_so(h, fields, reason):
    h.write_raw(D, D)  # no history at all: strict mode would block
    h.deliver(h.trigger(D, skip_downstream_trigger=True, **fields))
    h.deliver(h.trigger(D, phase=3, skip_downstream_trigger=True, **fields))
    part = h.app.tracker.partition("player_rolling_form", D)
    assert part.status == "success" and part.raw["checks"]["skipped"] == reason


def test_cascade_check_prints_findings_without_processing(h):
    load_history(h, [d for d in HISTORY if d != date(2025, 2, 13)] + [D], phases=(2,))
    env = {**__import__("os").environ, **h.endpoints.as_env(), "CASCADE_PROJECT": h.project,
           "CASCADE_NAMESPACE": h.namespace, "CASCADE_PIPELINE_FILE": h.pipeline.source_path}
    out = subprocess.run([sys.executable, "-m", "cascade.cli", "check", "--phase", "3", "--date", D.isoformat()],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "missing dates ['2025-02-13']" in out.stdout and "[pass] Upstream Failure" in out.stdout
    js = subprocess.run([sys.executable, "-m", "cascade.cli", "check", "--phase", "3", "--date", D.isoformat(), "--json"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    data = json.loads(js.stdout)
    assert data["blocked"] is True
    assert h.app.tracker.partition("player_rolling_form", D).status == "missing"  # nothing was processed


def test_a_duplicate_delivery_of_a_blocked_trigger_does_not_alert_again(h):
    load_history(h, [d for d in HISTORY if d != date(2025, 2, 13)] + [D], phases=(2,))
    trig = h.trigger(D, phase=3, processors=("player_rolling_form",))
    h.deliver(trig)
    h.deliver(trig)  # at-least-once delivery: the same trigger again
    assert h.app.tracker.partition("player_rolling_form", D).status == "blocked"
    assert len([a for a in h.alerts.alerts if "Data Gaps" in a.title]) == 1
