"""``cascade backfill --executor functions`` end to end: the wavefront dispatches each partition to the
real phase functions (functions-framework servers fed by emulator push subscriptions) and follows
the results in Firestore; a failing partition blocks its dependents, an interrupted CLI loses
nothing and the same command resumes from state.
"""

from __future__ import annotations

import io
from datetime import date

from cascade.backfill import BackfillRequest, run_backfill

from .harness import Harness, new_namespace, wait_until

START, END = date(2025, 1, 6), date(2025, 1, 8)
BAD = date(2025, 1, 7)
BOX = "nbac_player_boxscore"


def test_functions_executor_runs_partitions_on_the_phase_functions_survives_an_interrupt_and_resumes(
        stack, endpoints, season_from_start):
    h = Harness(endpoints, new_namespace(), pipeline_file=season_from_start).provision()
    h.deploy(stack)
    try:
        h.write_raw(START, END)
        path = str(h.pipeline.processor(BOX).source["gcs_json"]).format(date=BAD.isoformat())
        h.app.storage.bucket(h.pipeline.bucket(h.project)).blob(path).delete()  # a scrape that never came

        # 1. Interrupted after a few results: the dispatched partitions finish in the functions.
        results: list[str] = []

        def stop_early(res, sched) -> None:
            results.append(res.node.label)
            if len(results) == 4:
                sched.stop()
        first = run_backfill(h.app, BackfillRequest(start=START, end=END, phases=[2, 3, 4], executor="functions",
                                                    partition_timeout_s=120, workers=2, skip_preflight=True),
                             progress_stream=io.StringIO(), on_result=stop_early)
        assert first.exit_code == 130 and first.report.not_run, first.render()
        names = [p.name for p in h.pipeline.processors if p.phase in (2, 3, 4)]
        days = h.pipeline.calendar.expected_dates(START, END)
        assert wait_until(lambda: not any(s.lease_alive(h.app.clock()) for s in
                                          h.app.tracker.partitions(names, days).values()), timeout=60)

        # 2. The same command resumes from state: only what is missing runs; the bad date fails and
        #    blocks its dependents; nothing ran in this process (the functions sent the MERGEs).
        second = run_backfill(h.app, BackfillRequest(start=START, end=END, phases=[2, 3, 4], executor="functions",
                                                     partition_timeout_s=120, workers=6, skip_preflight=True),
                              progress_stream=io.StringIO())
        r = second.report
        assert second.exit_code == 1, second.render()
        assert list(r.failed) == [f"{BOX}@{BAD}"] and "raw file" in r.failed[f"{BOX}@{BAD}"]
        assert f"player_game_summary@{BAD}" in r.blocked and f"player_rolling_form@{END}" in r.blocked
        assert not set(first.report.succeeded) & set(r.succeeded)  # nothing done twice
        assert len(second.plan.nodes) < len(names) * len(days)
        merges_here = second.bigquery_jobs - sum(second.plan.extra_queries.values())
        assert merges_here <= 0, second.render()  # every MERGE was sent by a phase function
        runs = h.app.tracker.runs(processor="player_game_summary", day=START)
        assert runs and runs[0]["mode"] == "backfill"

        # 3. The scrape arrives; the same command completes the range.
        h.write_raw(BAD, BAD)
        third = run_backfill(h.app, BackfillRequest(start=START, end=END, phases=[2, 3, 4], executor="functions",
                                                    partition_timeout_s=120, workers=6),
                             progress_stream=io.StringIO())
        assert third.exit_code == 0, third.render()
        states = h.app.tracker.partitions(names, days)
        assert all(s.status == "success" for s in states.values()), {k: s.status for k, s in states.items()}
        assert not third.problems
    finally:
        stack.stop([n for n in stack.running() if n.startswith(f"function-{h.namespace}-")])
