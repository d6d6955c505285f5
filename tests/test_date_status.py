"""`waiting` expires like a lease, and `cascade wait` takes only outcomes of the trigger it follows.

A partition strict mode recorded ``waiting`` (an upstream was still running) is alive while
redeliveries of its trigger keep re-checking it. When nothing has re-checked it for the lease plus
Pub/Sub's longest retry backoff, its messages are gone: a dependent blocks on it with a reason
instead of waiting, and the sweeper re-triggers it (counted, bounded). Time moves with an injected
clock, never with sleeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone

import pytest

from cascade.errors import TransientError
from cascade.ops.date_status import date_status, wait_for_phase
from cascade.ops.sweeper import sweep
from cascade.state.tracker import Partition, Tracker

from .harness import ROOT, FakeClock, Harness

D = date(2025, 1, 15)
LEASE = 60
EXPIRES_AFTER = LEASE + 600  # the lease plus Pub/Sub's longest retry backoff


# ---------------------------------------------------------------------- the expiry rule (no emulators)
def test_a_waiting_partition_expires_when_nothing_rechecks_it_for_the_lease_and_the_longest_redelivery_gap():
    tracker = Tracker(None, None, lease_seconds=LEASE)  # type: ignore[arg-type] - the rule reads no state
    t0 = datetime(2025, 1, 16, 10, tzinfo=timezone.utc)
    waiting = Partition("p", D.isoformat(), status="waiting", started_at=t0, finished_at=t0 + timedelta(seconds=2),
                        raw={"status": "waiting"})
    assert tracker.waiting_until(waiting) == t0 + timedelta(seconds=2 + EXPIRES_AFTER)
    assert not tracker.waiting_expired(waiting, t0 + timedelta(seconds=EXPIRES_AFTER))
    assert tracker.waiting_expired(waiting, t0 + timedelta(seconds=2 + EXPIRES_AFTER))
    # A re-trigger by the sweeper re-arms it for one more period.
    rearmed = Partition("p", D.isoformat(), status="waiting", started_at=t0, finished_at=t0,
                        raw={"waiting_rearmed_at": t0 + timedelta(seconds=EXPIRES_AFTER)})
    assert not tracker.waiting_expired(rearmed, t0 + timedelta(seconds=EXPIRES_AFTER + 1))
    # Only ``waiting`` expires this way (a running partition has its lease).
    running = Partition("p", D.isoformat(), status="running", started_at=t0, lease_expires_at=t0)
    assert not tracker.waiting_expired(running, t0 + timedelta(days=1)) and tracker.waiting_until(running) is None


# ---------------------------------------------------------------------- state on the emulators
def _waiting_team_summary(h: Harness) -> None:
    """team_game_summary (phase 3) for D recorded ``waiting``: a re-load of D's box scores (phase 2,
    generation 1) holds a live lease when it is checked."""
    h.write_raw(D, D)
    h.deliver(h.trigger(D, skip_downstream_trigger=True))
    assert h.app.tracker.begin("nbac_player_boxscore", 2, D, 1, "reload-run").outcome == "run"
    with pytest.raises(TransientError):
        h.deliver(h.trigger(D, phase=3, processors=("team_game_summary",), skip_downstream_trigger=True))
    assert h.app.tracker.partition("team_game_summary", D).status == "waiting"


def _phase4_defense(h: Harness):
    return h.trigger(D, phase=4, processors=("team_defense_zone_analysis",), skip_downstream_trigger=True)


def test_an_expired_waiting_upstream_blocks_its_dependent_with_a_reason(make_harness):
    clock = FakeClock(datetime(2025, 1, 16, 10, tzinfo=timezone.utc))
    h = make_harness(clock=clock, settings_overrides={"lease_seconds": LEASE, "busy_wait_seconds": 0})
    _waiting_team_summary(h)
    # While its waiting is alive, the dependent waits too (retried, not blocked).
    with pytest.raises(TransientError):
        h.deliver(_phase4_defense(h))
    assert h.app.tracker.partition("team_defense_zone_analysis", D).status == "waiting"
    # Nothing re-checks team_game_summary any more (its messages dead-lettered): once its waiting
    # expired, the dependent blocks, naming the upstream, the date and how long it has waited.
    clock.advance(EXPIRES_AFTER + 60)
    h.deliver(_phase4_defense(h))
    part = h.app.tracker.partition("team_defense_zone_analysis", D)
    assert part.status == "blocked", part.error
    detail, resolution = part.blocked["detail"], part.blocked["resolution"]
    assert "team_game_summary" in detail and D.isoformat() in detail
    assert "waiting since 2025-01-16 10:00:00 UTC (12m00s)" in detail, detail
    # The resolution re-runs the upstream's phase for that date (computed by the recovery module).
    assert "cascade " in resolution and D.isoformat() in resolution and "--phase 3" in resolution, resolution
    assert any("BLOCKED" in a.title for a in h.alerts.alerts)


def test_the_sweeper_repairs_an_expired_waiting_partition(make_harness):
    clock = FakeClock()
    h = make_harness(clock=clock, settings_overrides={"lease_seconds": LEASE, "busy_wait_seconds": 0})
    _waiting_team_summary(h)
    h.pull(3)
    assert sweep(h.app).waiting == []  # still alive: its redeliveries may re-check it any moment
    h.app.tracker.finish("nbac_player_boxscore", D, "reload-run", "success", record_count=1)
    clock.advance(EXPIRES_AFTER + 1)  # nobody re-checked it (its messages are gone)
    report = sweep(h.app)
    assert len(report.waiting) == 1 and "team_game_summary" in report.waiting[0] and report.ok, report.to_dict()
    assert sweep(h.app).waiting == []  # re-armed: a second sweep does not re-trigger it again
    retrigger = h.pull(3)
    assert len(retrigger) == 1 and retrigger[0]["processors"] == ["team_game_summary"]
    h.deliver(json.dumps(retrigger[0]).encode(), phase=3)  # re-checked: its upstream is done now
    assert h.app.tracker.partition("team_game_summary", D).status == "success"


def test_the_sweeper_gives_up_on_a_partition_still_waiting_after_max_attempts_retriggers(make_harness):
    clock = FakeClock()
    h = make_harness(clock=clock, settings_overrides={"lease_seconds": LEASE, "busy_wait_seconds": 0,
                                                      "max_attempts": 2})
    _waiting_team_summary(h)
    h.pull(3)
    for n in (1, 2):  # the upstream it waits on stays alive (heartbeating); each re-check waits again
        clock.advance(EXPIRES_AFTER + 1)
        assert h.app.tracker.heartbeat("nbac_player_boxscore", D, "reload-run")
        report = sweep(h.app)
        assert len(report.waiting) == 1 and f"re-trigger {n} of 2" in report.waiting[0], report.to_dict()
        [message] = h.pull(3)
        with pytest.raises(TransientError):
            h.deliver(json.dumps(message).encode(), phase=3)
        assert h.app.tracker.partition("team_game_summary", D).status == "waiting"
    clock.advance(EXPIRES_AFTER + 1)
    report = sweep(h.app)
    assert report.waiting == [] and len(report.errors) == 1 and "--processor team_game_summary" in report.errors[0]
    assert h.pull(3) == []  # not re-triggered a third time
    part = h.app.tracker.partition("team_game_summary", D)
    assert part.status == "failed" and not part.raw.get("transient") and "gave up waiting" in part.error
    assert "cascade trigger --date 2025-01-15 --phase 3 --processor team_game_summary" in part.error
    assert len([a for a in h.alerts.alerts if "still waiting" in a.title]) == 1
    assert sweep(h.app).errors == []  # given up once, not again


# ---------------------------------------------------------------------- cascade wait --since
def _cli(h: Harness, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **h.endpoints.as_env(), "CASCADE_PROJECT": h.project, "CASCADE_NAMESPACE": h.namespace}
    return subprocess.run([sys.executable, "-m", "cascade.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cascade_wait_ignores_an_outcome_recorded_before_the_trigger(harness):
    h = harness
    h.deliver(h.trigger(D, skip_downstream_trigger=True))  # no raw files yet: phase 2 fails for good
    assert wait_for_phase(h.app, D, 2, 0).code == 1  # without --since that failure is the verdict
    since = h.app.clock()  # an operator restores the files and re-triggers the phase
    # Before the re-trigger is processed, the old failure is not its verdict: still pending.
    pending = wait_for_phase(h.app, D, 2, 0, since=since)
    assert pending.code == 2 and "nothing recorded since" in pending.reason, pending.reason
    stamp = since.isoformat()
    waited = _cli(h, "wait", "--date", D.isoformat(), "--phase", "2", "--since", stamp, "--timeout", "0")
    assert waited.returncode == 2 and "nothing recorded since" in waited.stdout, waited.stdout + waited.stderr
    h.write_raw(D, D)
    h.deliver(h.trigger(D, skip_downstream_trigger=True))
    waited = _cli(h, "wait", "--date", D.isoformat(), "--phase", "2", "--since", stamp, "--timeout", "30")
    assert waited.returncode == 0 and "phase 2 complete" in waited.stdout, waited.stdout + waited.stderr
    # A success recorded before a later trigger is not that trigger's verdict either.
    rerun_at = h.app.clock()
    assert wait_for_phase(h.app, D, 2, 0, since=rerun_at).code == 2
    h.deliver(h.trigger(D, generation=1, skip_downstream_trigger=True))  # the re-run it follows
    assert wait_for_phase(h.app, D, 2, 30, since=rerun_at).code == 0


def test_cascade_wait_after_a_trigger_that_found_nothing_to_do_returns_the_state_as_it_is(harness):
    h = harness
    h.write_raw(D, D)
    h.deliver(h.trigger(D, skip_downstream_trigger=True))
    since = h.app.clock()
    h.deliver(h.trigger(D, skip_downstream_trigger=True))  # already complete and fresh: nothing runs
    result = wait_for_phase(h.app, D, 2, 30, since=since)
    assert result.code == 0 and "nothing to do" in result.reason, result.reason


def test_cascade_wait_refuses_a_since_that_is_not_a_time():
    out = subprocess.run([sys.executable, "-m", "cascade.cli", "wait", "--date", D.isoformat(), "--phase", "2",
                          "--since", "yesterday"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "not an ISO 8601 time" in out.stderr, out.stderr


# ---------------------------------------------------------------------- cascade status: every problem ends in its next step
def _next_step(out: str, processor: str) -> str:
    """The ``next:`` line printed under ``processor`` in a ``cascade status`` output."""
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split() and line.split()[0] == processor)
    step = next((line.strip() for line in lines[at + 1:at + 4] if line.strip().startswith("next: ")), None)
    assert step, f"no next step under {processor}:\n{out}"
    return step


def test_status_ends_each_failed_blocked_or_stale_partition_with_its_next_step_run_verbatim(
        make_harness, tmp_path, capsys):
    from .harness import printed_commands
    from .test_trust_after_change import DAYS, delete_readings, write_definition, write_readings

    h = make_harness(pipeline_file=write_definition(tmp_path))
    for d in DAYS[:4]:
        write_readings(h, d)
    lost, today = DAYS[2], DAYS[3]
    for d in DAYS[:2]:
        h.pump(h.trigger(d, phase=1))
    delete_readings(h, lost)
    h.pump(h.trigger(lost, phase=1))  # no raw file: readings fails
    h.pump(h.trigger(today, phase=1))  # station_trend's lookback lacks the lost date: blocked
    capsys.readouterr()
    # Failed: the root cause first (the file to restore), then the command, in text and JSON.
    assert h.run_printed(f"cascade status --date {lost}") == 0
    out = capsys.readouterr().out
    step = _next_step(out, "readings")
    uri = f"gs://{h.pipeline.bucket(h.project)}/readings/{lost}.json"
    assert step.startswith(f"next: restore {uri}"), step
    assert printed_commands(step) == [f"cascade trigger --date {lost} --phase 1 --processor readings"], step
    assert h.run_printed(f"cascade status --date {lost} --json") == 0
    st = json.loads(capsys.readouterr().out)
    assert st["phases"]["1"]["processors"]["readings"]["next_step"] == step.removeprefix("next: ")
    # The error itself says what to restore (no "loader").
    error = st["phases"]["1"]["processors"]["readings"]["error"]
    assert uri in error and "loader" not in error, error
    # Blocked: the root cause (the lost date's file), then one command that rebuilds both dates.
    assert h.run_printed(f"cascade status --date {today}") == 0
    blocked = _next_step(capsys.readouterr().out, "station_trend")
    assert blocked.startswith(f"next: restore {uri}"), blocked
    write_readings(h, lost)  # restored
    for command in printed_commands(blocked):
        assert h.run_printed(command) == 0, command
    h.pump()
    for d in (lost, today):
        assert all(ph["status"] == "complete" for ph in date_status(h.app, d)["phases"].values()), date_status(h.app, d)
    # Stale: a rerun of the lost date's phase 2 makes today's station_trend stale; its next step rebuilds it.
    assert h.run_printed(f"cascade rerun --date {lost} --phase 2 --skip-downstream-trigger") == 0
    h.pump()
    capsys.readouterr()
    assert h.run_printed(f"cascade status --date {today}") == 0
    stale = _next_step(capsys.readouterr().out, "station_trend")
    (command,) = printed_commands(stale)
    assert h.run_printed(command) == 0, command
    h.pump()
    assert date_status(h.app, today)["phases"]["2"]["status"] == "complete", date_status(h.app, today)


def test_status_says_the_next_phase_ran_in_a_backfill_instead_of_not_triggered(make_harness, tmp_path, capsys):
    from .test_trust_after_change import DAYS, delete_readings, write_definition, write_readings

    h = make_harness(pipeline_file=write_definition(tmp_path))
    day = DAYS[0]
    write_readings(h, day)
    delete_readings(h, day)
    h.pump(h.trigger(day, phase=1))  # no raw file: readings fails
    write_readings(h, day)  # restored; the recovery is a backfill of phases 1 and 2
    assert h.run_printed(f"cascade backfill --start {day} --end {day} --phase 1 --phase 2") == 0
    st = date_status(h.app, day)
    assert st["phases"]["2"]["status"] == "complete", st
    assert st["phases"]["1"]["next_ran"] == "backfill", st["phases"]["1"]
    capsys.readouterr()
    assert h.run_printed(f"cascade status --date {day}") == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("phase 1 "))
    assert line.endswith("-> phase 2 ran in a backfill"), line


def test_status_without_a_date_shows_the_latest_date_with_recorded_activity_and_says_so(make_harness, tmp_path,
                                                                                        capsys):
    from .test_trust_after_change import DAYS, write_definition, write_readings

    h = make_harness(pipeline_file=write_definition(tmp_path))
    assert h.run_printed("cascade status") == 2  # nothing recorded yet: it says to give --date
    assert "--date" in capsys.readouterr().err
    for d in DAYS[:2]:
        write_readings(h, d)
        h.pump(h.trigger(d, phase=1, skip_downstream_trigger=True))
    capsys.readouterr()
    assert h.run_printed("cascade status") == 0
    out = capsys.readouterr()
    assert f"no --date: showing {DAYS[1]}, the latest date with recorded activity" in out.out, out
    assert f"date {DAYS[1]}" in out.out
    assert h.run_printed("cascade status --json") == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["date"] == DAYS[1].isoformat() and "latest date" in out.err


def test_a_trigger_of_a_date_without_data_says_so_and_its_wait_returns_at_once(make_harness, tmp_path, capsys):
    from .test_trust_after_change import write_definition

    def closed_sundays(raw):
        raw["calendar"]["closed_weekdays"] = ["sunday"]
    h = make_harness(pipeline_file=write_definition(tmp_path, closed_sundays))
    sunday = date(2025, 1, 12)
    assert h.run_printed(f"cascade trigger --date {sunday} --phase 1") == 0
    out = capsys.readouterr().out
    assert f"{sunday}: no data expected (closed on Sundays): phase 1 records its processors skipped and hands " \
           f"nothing on" in out, out
    (wait,) = [line.removeprefix("follow it with: ") for line in out.splitlines() if line.startswith("follow it")]
    h.pump()
    assert h.run_printed(wait) == 0
    assert h.app.tracker.partition("readings", sunday).status == "skipped"
    assert h.run_printed(f"cascade status --date {sunday}") == 0
    shown = capsys.readouterr().out
    assert "(no data expected: closed on Sundays)" in shown and "phase 3 report      NO DATA" in shown, shown
    # --processor alone triggers its phase; describe names the closed weekdays.
    assert h.run_printed(f"cascade trigger --date {sunday} --processor station_daily") == 0
    assert "phase 2 records its processors skipped" in capsys.readouterr().out
    assert h.run_printed("cascade describe") == 0
    assert "closed on Sundays" in capsys.readouterr().out
