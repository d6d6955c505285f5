"""The backfill engine on the real emulators: plan, wavefront, resume, refusal, failures, validation, rerun.

Ranges are about two weeks of the synthetic 2024-25 season. Timing assertions use the start/finish
times every partition records in Firestore, never sleeps.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from datetime import date

import pytest
from google.cloud import bigquery

from cascade.backfill import BackfillRequest, run_backfill
from cascade.backfill.lease import BackfillLease, holders
from cascade.backfill.validate import coverage, validate
from cascade.cli import main as cascade_main
from cascade.ops.date_status import date_status

from .harness import ROOT, Harness, new_namespace, wait_until

START, END = date(2025, 1, 6), date(2025, 1, 19)
BOX = "nbac_player_boxscore"


@pytest.fixture()
def harness(make_harness, season_from_start) -> Harness:
    return make_harness(pipeline_file=season_from_start)


def backfill(h: Harness, **kw) -> "object":
    hooks = {k: kw.pop(k) for k in ("on_result", "on_scheduler") if k in kw}
    req = BackfillRequest(**{"start": START, "end": END, **kw})
    return run_backfill(h.app, req, progress_stream=io.StringIO(), **hooks)


def cli(h: Harness, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, **h.endpoints.as_env(), "CASCADE_PROJECT": h.project, "CASCADE_NAMESPACE": h.namespace,
           "CASCADE_STATE_DIR": str(ROOT / ".cascade-test-unused")}
    if h.pipeline_file:  # the CLI runs the harness's definition (another one would see other versions)
        env["CASCADE_PIPELINE_FILE"] = str(h.pipeline_file)
    return subprocess.run([sys.executable, "-m", "cascade.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def in_process(h: Harness, monkeypatch, *args: str) -> int:
    monkeypatch.setenv("CASCADE_NAMESPACE", h.namespace)
    monkeypatch.setenv("CASCADE_STATE_DIR", str(ROOT / ".cascade-test-unused"))
    if h.pipeline_file:
        monkeypatch.setenv("CASCADE_PIPELINE_FILE", str(h.pipeline_file))
    try:
        return cascade_main(list(args))
    except SystemExit as exc:  # argparse usage errors
        return int(exc.code)


def delete_raw(h: Harness, processor: str, day: date) -> None:
    proc = h.pipeline.processor(processor)
    path = str(proc.source["gcs_json"]).format(date=day.isoformat())
    h.app.storage.bucket(h.pipeline.bucket(h.project)).blob(path).delete()


def labels(h: Harness, start: date, end: date) -> set[str]:
    return {f"{p.name}@{d.isoformat()}" for p in h.pipeline.processors
            for d in h.pipeline.calendar.expected_dates(start, end) if p.phase in (2, 3, 4)}


# ---------------------------------------------------------------------- plan
def test_dry_run_plan_counts_done_missing_no_game_and_estimated_jobs(harness, monkeypatch):
    h = harness
    s, e = date(2025, 2, 10), date(2025, 2, 23)  # the All-Star break (2025-02-14..19) is inside
    h.write_raw(s, e)
    first = backfill(h, start=s, end=date(2025, 2, 11), phases=[2], skip_downstream_trigger=True, validate=False)
    assert first.exit_code == 0 and len(first.report.succeeded) == 4, first.render()
    assert h.pull(3) == []  # --skip-downstream-trigger: nothing published

    plan = backfill(h, start=s, end=e, dry_run=True)
    procs = [p for p in h.pipeline.processors if p.phase in (2, 3, 4)]
    assert plan.exit_code == 0 and plan.report is None
    counts = plan.plan.counts()
    assert counts["no-game"] == 6 * len(procs)
    assert counts["done"] == 4
    assert counts["missing"] == 14 * len(procs) - 6 * len(procs) - 4
    assert plan.plan.estimate()["merge_jobs"] == counts["missing"] == len(plan.plan.nodes)
    text = plan.render()
    assert "All-Star break" in text and f"will run {counts['missing']} partitions" in text
    assert h.app.tracker.partition("nbac_schedule", date(2025, 2, 12)).status == "missing"  # nothing ran

    out = cli(h, "backfill", "--start", s.isoformat(), "--end", e.isoformat(), "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)["plan"]
    assert d["counts"] == counts and d["estimate"]["merge_jobs"] == counts["missing"]
    assert d["matrix"]["2025-02-10"]["nbac_schedule"] == "done" and d["matrix"]["2025-02-16"][BOX] == "no-game"

    # Bad input is a clear usage error (exit 2).
    assert in_process(h, monkeypatch, "backfill", "--start", "2025-02-10", "--end", "2025-02-01") == 2
    assert in_process(h, monkeypatch, "backfill", "--start", "2021-01-01", "--end", "2025-02-01") == 2
    assert in_process(h, monkeypatch, "backfill", "--start", s.isoformat(), "--end", e.isoformat(), "--phase", "9") == 2
    assert in_process(h, monkeypatch, "backfill", "--start", s.isoformat(), "--end", e.isoformat(),
                      "--processor", "nope") == 2
    assert in_process(h, monkeypatch, "rerun", "--date", "2025-02-12", "--phase", "7") == 2


# ---------------------------------------------------------------------- wavefront + validation
def test_wavefront_respects_lookback_then_coverage_and_validate_catch_a_gap_and_a_duplicate(harness, monkeypatch):
    h = harness
    h.write_raw(START, END)
    res = backfill(h)
    every = labels(h, START, END)
    assert res.exit_code == 0, res.render()
    assert set(res.report.succeeded) == every and len(every) == 14 * 9
    assert h.alerts.alerts == [] and all(c.pct == 100.0 for c in res.coverage) and res.problems == []

    days = h.pipeline.calendar.expected_dates(START, END)
    names = [p.name for p in h.pipeline.processors if p.phase in (2, 3, 4)]
    st = h.app.tracker.partitions(names, days)
    assert all(s.status == "success" and s.started_at and s.finished_at for s in st.values())
    checked = 0
    for (name, iso), s in st.items():
        proc = h.pipeline.processor(name)
        day = date.fromisoformat(iso)
        for up in proc.upstreams:
            lo, hi = up.window(day, h.pipeline.calendar)
            for w in h.pipeline.calendar.expected_dates(max(START, lo), hi):
                u = st[(up.processor, w.isoformat())]
                assert s.started_at >= u.finished_at, f"{name}@{iso} started before {up.processor}@{w} finished"
                checked += 1
    assert checked > 400
    last_phase2 = max(s.finished_at for (n, _), s in st.items() if h.pipeline.processor(n).phase == 2)
    first_phase3 = min(s.started_at for (n, _), s in st.items() if h.pipeline.processor(n).phase == 3)
    first_phase4 = min(s.started_at for (n, _), s in st.items() if h.pipeline.processor(n).phase == 4)
    assert first_phase3 < last_phase2 and first_phase4 < last_phase2  # a wavefront, not phase-by-phase waves

    # Re-running the same command does nothing: everything is done.
    again = backfill(h, validate=False)
    assert again.exit_code == 0 and again.report.total == 0 and again.plan.counts()["done"] == len(every)

    # Inject a gap (rows of one date deleted) and a duplicate key (one row inserted twice).
    gap, dup = date(2025, 1, 10), date(2025, 1, 13)
    pgs, tgs = h.pipeline.processor("player_game_summary"), h.pipeline.processor("team_game_summary")
    wh = h.app.warehouse
    wh.query(f"DELETE FROM `{wh.table_id(pgs.output)}` WHERE game_date = @d",
             [bigquery.ScalarQueryParameter("d", "DATE", gap)])
    cols = ", ".join(tgs.output.column_names)
    wh.query(f"INSERT INTO `{wh.table_id(tgs.output)}` ({cols}) SELECT {cols} FROM `{wh.table_id(tgs.output)}` "
             f"WHERE game_date = @d ORDER BY game_id, team LIMIT 1", [bigquery.ScalarQueryParameter("d", "DATE", dup)])
    cov = {c.processor: c for c in coverage(h.app, START, END, phases=[3])}
    assert cov["player_game_summary"].missing == [gap.isoformat()] and cov["player_game_summary"].pct < 100
    assert cov["team_game_summary"].missing == []
    val = {v.processor: v for v in validate(h.app, START, END, phases=[3])}
    assert val["team_game_summary"].duplicate_keys == 1 and not val["team_game_summary"].ok
    assert val["player_game_summary"].ok
    assert in_process(h, monkeypatch, "validate", "--start", START.isoformat(), "--end", END.isoformat(),
                      "--phase", "3") == 1
    assert in_process(h, monkeypatch, "coverage", "--start", START.isoformat(), "--end", END.isoformat(),
                      "--phase", "3") == 0


# ---------------------------------------------------------------------- resume
def test_interrupted_backfill_resumes_from_state_retrying_failures_and_not_redoing_successes(harness):
    h = harness
    end = date(2025, 1, 10)
    h.write_raw(START, end)
    bad = date(2025, 1, 7)
    delete_raw(h, BOX, bad)
    seen = []

    def ctrl_c_after_15(result, sched):
        seen.append(result.node.label)
        if len(seen) == 15:
            raise KeyboardInterrupt  # Ctrl-C: stop submitting, let running partitions finish

    first = backfill(h, end=end, skip_preflight=True, on_result=ctrl_c_after_15)
    r1 = first.report
    assert first.exit_code == 130 and r1.interrupted and r1.not_run, first.render()
    assert f"{BOX}@{bad}" in r1.failed and "not found" in r1.failed[f"{BOX}@{bad}"]
    assert r1.blocked and all(v == f"blocked by {BOX}@{bad}" for v in r1.blocked.values())
    done_before = {lbl: h.app.tracker.partition(*lbl.split("@")).run_id for lbl in r1.succeeded}
    assert len(done_before) >= 10

    h.write_raw(bad, bad)  # the fix: the scraper re-delivers the file
    second = backfill(h, end=end)
    r2 = second.report
    assert second.exit_code == 0, second.render()
    assert second.plan.counts()["failed"] == 1 and second.plan.counts()["blocked"] == len(r1.blocked)
    assert set(r2.succeeded) == labels(h, START, end) - set(done_before)  # successes were not redone
    assert f"{BOX}@{bad}" in r2.succeeded
    for lbl, run_id in done_before.items():
        proc, day = lbl.split("@")
        assert h.app.tracker.partition(proc, day).run_id == run_id
        assert len(h.app.tracker.runs(processor=proc, day=day)) == 1
    assert [r["status"] for r in h.app.tracker.runs(processor=BOX, day=bad)] == ["success", "failed"]
    assert second.problems == [] and all(c.pct == 100.0 for c in second.coverage)  # no duplicates, no gaps


# ---------------------------------------------------------------------- permanent failure
def test_permanent_failure_is_reported_dependents_blocked_others_complete_one_digest_alert(harness):
    h = harness
    start, end = START, date(2025, 1, 9)
    h.write_raw(start, end)
    bad = date(2025, 1, 8)
    delete_raw(h, BOX, bad)

    refused = backfill(h, start=start, end=end)
    assert refused.exit_code == 2 and refused.report is None
    assert bad.isoformat() in refused.render() and "player_boxscores" in refused.render()

    res = backfill(h, start=start, end=end, skip_preflight=True)
    r = res.report
    assert res.exit_code == 1
    assert list(r.failed) == [f"{BOX}@{bad}"] and "raw file" in r.failed[f"{BOX}@{bad}"]
    expected_blocked = {f"{n}@{bad}" for n in ("player_game_summary", "team_game_summary")} | {
        f"{n}@{d}" for n in ("player_rolling_form", "team_defense_zone_analysis", "player_shot_zone_analysis",
                             "player_daily_cache", "player_composite_factors") for d in (bad, end)}
    assert set(r.blocked) == expected_blocked
    assert set(r.succeeded) == labels(h, start, end) - expected_blocked - {f"{BOX}@{bad}"}
    part = h.app.tracker.partition("player_daily_cache", end)
    assert part.status == "blocked" and f"{BOX}@{bad}" in part.error
    digests = h.alerts.alerts
    assert len(digests) == 1 and digests[0].labels["kind"] == "backfill-digest"
    assert f"{BOX}@{bad}" in digests[0].message
    text = res.render()
    assert f"FAILED  {BOX}@{bad}" in text and f"BLOCKED {len(expected_blocked)} partition(s)" in text


# ---------------------------------------------------------------------- one backfill per processor
def test_concurrent_second_backfill_is_refused_naming_the_first_and_expired_lease_is_taken_over(harness):
    h = harness
    s, e = START, date(2025, 1, 7)
    h.write_raw(s, e)
    go, started = threading.Event(), threading.Event()
    out: dict = {}

    def hold(result, sched):
        started.set()
        go.wait(30)

    t = threading.Thread(target=lambda: out.setdefault("first", backfill(
        h, start=s, end=e, phases=[2], skip_downstream_trigger=True, validate=False, on_result=hold)))
    t.start()
    try:
        assert started.wait(30)
        second = backfill(h, start=s, end=e, phases=[2, 3])
        assert second.exit_code == 2
        assert f"pid {os.getpid()}" in second.refused and f"range {s}..{e}" in second.refused
        assert "another backfill is running for processor nbac_" in second.refused
        assert set(holders(h.app, [p.name for p in h.pipeline.processors])) == {"nbac_player_boxscore", "nbac_schedule"}
    finally:
        go.set()
        t.join(60)
    assert out["first"].exit_code == 0
    assert holders(h.app, ["nbac_schedule", "nbac_player_boxscore"]) == {}  # released at the end

    crashed = BackfillLease(h.app, ["player_game_summary"], s, e, ttl_seconds=0.5).acquire()
    crashed._stop.set()  # the holder dies: no more heartbeats, never released
    assert wait_until(lambda: not holders(h.app, ["player_game_summary"]), timeout=10)  # its lease expires
    taker = BackfillLease(h.app, ["player_game_summary"], s, e).acquire()
    crashed.renew()
    assert crashed.lost == ["player_game_summary"]
    taker.release()


# ---------------------------------------------------------------------- rerun through real pushes
def test_rerun_of_phase_3_reruns_phases_3_and_4_once_each_with_identical_row_counts(stack, endpoints,
                                                                                     season_from_start):
    h = Harness(endpoints, new_namespace(), pipeline_file=season_from_start).provision()
    h.deploy(stack)
    try:
        s, day = date(2025, 1, 6), date(2025, 1, 8)
        h.write_raw(s, day)
        assert backfill(h, start=s, end=day).exit_code == 0
        later = [p.name for p in h.pipeline.processors if p.phase in (3, 4)]
        before = {p: len(h.rows(p, day)) for p in later}
        out = cli(h, "rerun", "--date", day.isoformat(), "--phase", "3", "--strict-mode", "false")
        assert out.returncode == 0, out.stderr
        assert "generation 1" in out.stdout
        tick = threading.Event()
        for _ in range(360):
            st = date_status(h.app, day)
            if st["phases"]["4"]["generation"] == 1 and st["phases"]["4"]["status"] == "complete":
                break
            tick.wait(0.25)
        else:
            pytest.fail(f"phase 4 did not re-run: {st}")
        assert st["phases"]["3"]["generation"] == 1 and st["phases"]["3"]["triggered_next"]
        for p in later:
            runs = h.app.tracker.runs(processor=p, day=day)
            assert sorted(r["generation"] for r in runs) == [0, 1], (p, runs)  # once each; history kept
            assert all(r["status"] == "success" for r in runs)
        for p in ("nbac_schedule", BOX):
            assert len(h.app.tracker.runs(processor=p, day=day)) == 1  # phase 2 untouched
        assert {p: len(h.rows(p, day)) for p in later} == before
    finally:
        stack.stop([n for n in stack.running() if n.startswith(f"function-{h.namespace}-")])


def test_daily_trigger_keeps_working_while_a_backfill_holds_its_processors(harness):
    h = harness
    s, e, daily = START, date(2025, 1, 7), date(2025, 1, 21)
    h.write_raw(s, e)
    h.write_raw(daily, daily)
    go, started = threading.Event(), threading.Event()
    out: dict = {}

    def hold(result, sched):
        started.set()
        go.wait(30)

    t = threading.Thread(target=lambda: out.setdefault("backfill", backfill(
        h, start=s, end=e, phases=[2], skip_downstream_trigger=True, validate=False, on_result=hold)))
    t.start()
    try:
        assert started.wait(30)
        assert set(holders(h.app, [BOX, "nbac_schedule"])) == {BOX, "nbac_schedule"}  # backfill running
        result = h.deliver(h.trigger(daily, strict_mode=False))  # the daily cascade is not starved
        assert result.complete and result.downstream == "published"
    finally:
        go.set()
        t.join(60)
    assert out["backfill"].exit_code == 0
    assert date_status(h.app, daily)["phases"]["2"]["status"] == "complete"


def test_a_partition_returns_its_tables_merge_slot_when_its_write_ends_not_after_its_gates(harness, monkeypatch):
    """With one MERGE at a time per table, the next partition of the table starts while the previous
    one still runs its quality gates (reads, not DML) - the slot is the write's, not the partition's."""
    import cascade.backfill.scheduler as scheduler_mod
    from cascade.backfill.plan import build_plan, select_processors
    from cascade.backfill.scheduler import Scheduler, SchedulerOptions
    from cascade.runtime.runner import Outcome

    h = harness
    procs = select_processors(h.pipeline, processors=["nbac_schedule"])
    plan = build_plan(h.pipeline, h.app.tracker, procs, START, date(2025, 1, 7))
    assert len(plan.nodes) == 2
    events: list[str] = []
    second_started = threading.Event()

    class GatedExecutor:
        def run(self, node, trigger, on_written=None):
            events.append(f"start {node.day}")
            on_written()  # the MERGE ended; the gates' read queries follow
            if node.day == START:
                second_started.wait(10)  # the gates of the first partition outlast the second's start
            else:
                second_started.set()
            events.append(f"end {node.day}")
            return Outcome(node.processor, "success", "r", 1)

        def close(self):
            pass

    monkeypatch.setattr(scheduler_mod, "partition_executor", lambda *a, **k: GatedExecutor())
    report = Scheduler(h.app, plan, SchedulerOptions(workers=2, max_merges_per_table=1), progress=None).run()
    assert len(report.succeeded) == 2 and second_started.is_set(), events
    assert events.index("start 2025-01-07") < events.index("end 2025-01-06"), events
