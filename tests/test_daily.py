"""The automatic daily cascade through phase 6, and a replay of mornings with injected failures,
on real functions receiving pushes (only the clock is injected)."""

from __future__ import annotations

import json
from datetime import date

import pytest
import yaml

from cascade.definition.loading import DEFAULT_DEFINITION
from cascade.ops.daily import morning_at, render_table, run_morning, simulate
from cascade.ops.date_status import date_status

from .harness import Harness, new_namespace

LOOKBACK = 6


@pytest.fixture(scope="module")
def short_def(tmp_path_factory):
    raw = yaml.safe_load(DEFAULT_DEFINITION.read_text())
    for proc in raw["processors"]:
        for up in proc.get("upstreams", []):
            if isinstance(up, dict) and up.get("lookback_days"):
                up["lookback_days"] = LOOKBACK
    path = tmp_path_factory.mktemp("daily") / "nba_daily.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture()
def live(stack, endpoints, short_def):
    h = Harness(endpoints, new_namespace(), pipeline_file=short_def)
    h.deploy(stack)
    yield h
    stack.stop([n for n in stack.running() if n.startswith(f"function-{h.namespace}-")])


def backfill_history(h: Harness, start: date, end: date) -> None:
    h.write_raw(start, end)
    for day in h.pipeline.calendar.expected_dates(start, end):
        for phase in (2, 3, 4):
            h.deliver_until_done(h.trigger(day, phase=phase, mode="backfill", skip_downstream_trigger=True))


def test_daily_morning_runs_yesterday_through_phase4_and_today_through_phase6(live):
    h = live
    backfill_history(h, date(2025, 1, 8), date(2025, 1, 14))
    now = morning_at(date(2025, 1, 16), h.pipeline.calendar.timezone)
    morning = run_morning(h.app, now, timeout=90)
    assert morning.runs == {("2025-01-15", 2): "complete", ("2025-01-15", 3): "complete",
                            ("2025-01-15", 4): "complete", ("2025-01-16", 5): "complete",
                            ("2025-01-16", 6): "complete"}, morning.notes
    preds = h.rows("player_prop_predictions", date(2025, 1, 16))
    games = h.rows("upcoming_games", date(2025, 1, 16))
    assert preds and {p["game_id"] for p in preds} == {g["game_id"] for g in games}
    assert all(p["predicted_points"] > 0 for p in preds)
    export = h.app.storage.bucket(h.pipeline.bucket(h.project)).blob("exports/predictions/2025-01-16.json")
    body = json.loads(export.download_as_bytes())
    assert body["date"] == "2025-01-16" and len(body["rows"]) == len(preds)
    assert body["rows"][0]["predicted_points"] >= body["rows"][-1]["predicted_points"]
    manifest = h.rows("prediction_exports", date(2025, 1, 16))
    assert manifest[0]["row_count"] == len(preds) and manifest[0]["path"].endswith("2025-01-16.json")


def test_simulated_mornings_show_what_strict_mode_blocked_and_how_it_recovered(live):
    h = live
    backfill_history(h, date(2025, 1, 8), date(2025, 1, 15))
    start = morning_at(date(2025, 1, 17), h.pipeline.calendar.timezone)
    failed_day = date(2025, 1, 17)  # the box-score scrape for the 17th fails (seen on the morning of the 18th)
    mornings = simulate(h.app, start, 3, [("nbac_player_boxscore", failed_day)], timeout=90,
                        progress=lambda _m: None)
    table = render_table(h.app, mornings)
    m1, m2, m3 = mornings
    assert m1.runs[("2025-01-16", 4)] == "complete" and m1.runs[("2025-01-17", 6)] == "complete"
    assert m2.runs[("2025-01-17", 2)] == "failed", table
    assert m2.runs[("2025-01-18", 5)] == "blocked", table  # predictions need the 17th's form
    assert any("Upstream Failure" in n for n in m2.notes), table
    # Next morning: the 18th's analytics were blocked by the 17th (Scenario C), then the runbook
    # re-ran the 17th and re-triggered the 18th; today's predictions run on complete data.
    assert any("2025-01-17: ops re-ran phase 2 -> RECOVERED" in n for n in m3.notes), table
    assert any("2025-01-18: ops re-ran phase 3 -> RECOVERED" in n for n in m3.notes), table
    assert m3.runs[("2025-01-19", 5)] == "complete" and m3.runs[("2025-01-19", 6)] == "complete", table
    for day in (failed_day, date(2025, 1, 18)):
        st = date_status(h.app, day)
        assert [st["phases"][n]["status"] for n in ("2", "3", "4")] == ["complete"] * 3
    claims = h.app.tracker.claims_for(2, failed_day)
    assert len(claims) == 1 and claims[0]["status"] == "published"  # recovered once, triggered once
