"""Phases 2 -> 3 -> 4 on the real emulators, run in-process through the function entry point.

Every message a phase publishes is observed on a pull subscription, so the tests count completion
messages exactly.
"""

from __future__ import annotations

import json
import threading
from datetime import date

import pytest

from cascade.errors import TransientError
from cascade.ops.date_status import date_status

D = date(2025, 1, 15)
WINDOW_START = date(2024, 12, 14)  # 30-day lookback of phase 3/4 processors


@pytest.fixture()
def loaded(harness):
    """Raw files for the lookback window and the date (phases 3/4 read 30 days back)."""
    harness.write_raw(WINDOW_START, D)
    return harness


def test_trigger_cascades_through_phases_2_3_4(loaded):
    h = loaded
    seen = h.pump(h.trigger(D, strict_mode=False))
    status = date_status(h.app, D)
    for n in ("2", "3", "4"):
        assert status["phases"][n]["status"] == "complete", status
    assert status["phases"]["2"]["triggered_next"] and status["phases"]["3"]["triggered_next"]
    assert len(seen[3]) == 1 and len(seen[4]) == 1
    assert seen[3][0]["kind"] == "completion" and seen[3][0]["phase"] == 2
    box = h.rows("nbac_player_boxscore", D)
    games = h.rows("nbac_schedule", D)
    assert len(box) == 16 * len(games)  # 8 players per team, 2 teams per game
    pgs = h.rows("player_game_summary", D)
    assert len(pgs) == len(box)
    teams = h.rows("team_game_summary", D)
    assert len(teams) == 2 * len(games)
    assert all(t["points"] == sum(b["points"] for b in box if b["team"] == t["team"]) for t in teams)
    assert all((t["win"]) != (t["opp_points"] > t["points"]) or t["points"] == t["opp_points"] for t in teams)
    pcf = h.rows("player_composite_factors", D)
    assert len(pcf) == len(box) and all(r["composite_score"] is not None for r in pcf)
    counts = status["phases"]["3"]["processors"]
    assert counts["player_game_summary"]["record_count"] == len(box)


def test_same_trigger_delivered_three_times_writes_identical_rows_and_one_completion_per_phase(loaded):
    h = loaded
    trig = h.trigger(D, strict_mode=False)
    h.deliver(trig, message_id="m1")
    before = {p: h.rows(p, D) for p in ("nbac_player_boxscore", "nbac_schedule")}
    # Redelivery with the same id, and a publisher retry (new message id): nothing changes.
    h.deliver(trig, message_id="m1")
    h.deliver(trig, message_id="m2")
    seen = h.pump()
    assert len(seen[3]) == 1, seen[3]
    assert len(seen[4]) == 1
    after = {p: h.rows(p, D) for p in before}
    assert after == before
    # Redelivering a completion downstream changes nothing either.
    h.deliver(json.dumps(seen[3][0]).encode(), phase=3)
    h.deliver(json.dumps(seen[4][0]).encode(), phase=4)
    again = h.pump()
    assert again[4] == [] and again[3] == []
    assert len(h.rows("player_daily_cache", D)) == len(h.rows("player_game_summary", D))
    runs = h.app.tracker.runs(processor="nbac_schedule", day=D)
    # Ran once; the publisher's retry (a new message) is answered visibly in run history ("already
    # complete"); the redelivery of the message that did the work only in the log.
    assert sorted(r["status"] for r in runs) == ["done", "success"]
    assert all("already complete" in r["error"] for r in runs if r["status"] == "done")


def test_processors_completing_concurrently_in_separate_invocations_trigger_once(loaded):
    h = loaded
    # Phase 2 done (no cascade), then phase 3's three processors in three concurrent invocations.
    h.deliver(h.trigger(D, skip_downstream_trigger=True))
    assert h.pull(3) == []
    errors: list[BaseException] = []

    def one(name: str) -> None:
        try:
            h.deliver_until_done(h.trigger(D, phase=3, processors=(name,), strict_mode=False))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(p.name,)) for p in h.pipeline.processors_of(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    published = h.pull(4)
    assert len(published) == 1, published
    assert date_status(h.app, D)["phases"]["3"]["triggered_next"] is True


def test_skip_downstream_trigger_runs_the_phase_and_triggers_nothing(loaded):
    h = loaded
    result = h.deliver(h.trigger(D, skip_downstream_trigger=True))
    assert result.complete and result.downstream == "skipped-by-request"
    assert h.pull(3) == []
    st = date_status(h.app, D)
    assert st["phases"]["2"]["status"] == "complete" and st["phases"]["2"]["triggered_next"] is False
    assert st["phases"]["3"]["status"] == "missing"
    # Later, a deliberate trigger without the flag cascades exactly once.
    h.deliver(h.trigger(D))
    assert len(h.pull(3)) == 1


@pytest.mark.parametrize("data, reason", [
    (b"this is not json", "not JSON"),
    (json.dumps({"pipeline": "nba", "phase": 2, "data_date": "2024-02-30"}).encode(), "not a valid date"),
    (json.dumps({"pipeline": "nba", "phase": 2, "processors": ["x"]}).encode(), "no processor 'x'"),
    (json.dumps({"pipeline": "nba"}).encode(), "missing required field 'phase'"),
    (json.dumps({"pipeline": "nba", "phase": 7}).encode(), "no phase 7"),
    (json.dumps({"pipeline": "nba", "phase": 2, "data_date": ""}).encode(), "not a valid date"),
    (json.dumps({"pipeline": "nba", "phase": 1, "kind": "completion", "status": "success",
                 "processors": {}}).encode(), "no phase 1"),
], ids=["not-json", "feb-30", "unknown-processor", "missing-phase", "unknown-phase", "empty-date",
        "completion-of-unknown-phase"])
def test_malformed_message_is_acknowledged_and_recorded_with_reason(harness, data, reason):
    assert harness.deliver(data, phase=2) is None  # returned normally: HTTP 2xx, no redelivery
    rejected = harness.app.tracker.rejected()
    assert len(rejected) == 1 and reason in rejected[0]["reason"]
    assert rejected[0]["data"] == data.decode()


def test_no_game_date_is_skipped_and_does_not_cascade(harness):
    result = harness.deliver(harness.trigger(date(2025, 2, 16)))
    assert {o.status for o in result.outcomes} == {"skipped"}
    assert harness.pull(3) == []
    st = date_status(harness.app, date(2025, 2, 16))
    assert st["phases"]["2"]["status"] == "skipped" and "All-Star" in st["note"]


def test_missing_raw_file_fails_permanently_with_next_step_and_alerts_once(harness):
    result = harness.deliver(harness.trigger(D))
    by = {o.processor: o for o in result.outcomes}
    assert by["nbac_schedule"].status == "failed" and not by["nbac_schedule"].retry
    assert "not found: restore it (or re-run what writes it), then re-run nbac_schedule for 2025-01-15" \
        in by["nbac_schedule"].error
    assert harness.pull(3) == []
    assert len([a for a in harness.alerts.alerts if "nbac_schedule" in a.title]) == 1
    # Scenario B: the file arrives, phase 2 is re-run, and the cascade recovers by itself.
    harness.write_raw(D, D)
    result = harness.deliver(harness.trigger(D))
    assert result.complete and result.downstream == "published"


def test_run_history_keeps_every_attempt(harness):
    harness.deliver(harness.trigger(D))  # fails: no raw files
    harness.write_raw(D, D)
    harness.deliver(harness.trigger(D))
    runs = harness.app.tracker.runs(processor="nbac_player_boxscore", day=D)
    assert [r["status"] for r in runs] == ["success", "failed"]
    assert runs[0]["record_count"] > 0 and runs[0]["duration_s"] is not None


def test_concurrent_duplicate_deliveries_of_a_chained_phase_never_record_a_spurious_block(loaded):
    """Phase 4's chain (TDZA+PSZA -> PDC -> PCF) delivered twice at once: the second delivery waits
    (retry) for what the first is running; nothing is recorded as blocked."""
    h = loaded
    for phase in (2, 3):
        h.deliver(h.trigger(D, phase=phase, strict_mode=False, skip_downstream_trigger=True))
    trig = h.trigger(D, phase=4, strict_mode=False)
    statuses: list[str] = []

    def deliver() -> None:
        try:
            result = h.deliver(trig)
            statuses.extend(o.status for o in result.outcomes)
        except TransientError:
            statuses.append("retry")

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "blocked" not in statuses
    for proc in h.pipeline.processors_of(4):
        part = h.app.tracker.partition(proc.name, D)
        assert part.status in ("success", "running", "missing"), (proc.name, part.status, part.error)
    h.deliver_until_done(trig)  # the redelivery finishes whatever is left
    assert date_status(h.app, D)["phases"]["4"]["status"] == "complete"


def test_trigger_for_a_processor_whose_same_phase_upstream_never_ran_is_blocked_with_next_step(loaded):
    h = loaded
    for phase in (2, 3):
        h.deliver(h.trigger(D, phase=phase, strict_mode=False, skip_downstream_trigger=True))
    result = h.deliver(h.trigger(D, phase=4, strict_mode=False, processors=("player_composite_factors",)))
    out = {o.processor: o for o in result.outcomes}["player_composite_factors"]
    assert out.status == "blocked" and "player_daily_cache" in out.error
    assert "cascade trigger --date 2025-01-15 --phase 4" in out.error
