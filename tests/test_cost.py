"""BigQuery jobs of a run: timeout, cancellation, re-attachment; and what they cost (recorded, capped,
estimated).

The local engine (bqemulator) runs every job inside its insert call - a job is DONE before the client
sees it - and reports no bytes billed or slot time. ``BigQueryJobs`` below wraps the session's real
client to give the tests what production BigQuery has: a write job inserted under a given id stays
RUNNING until the test releases it (then it runs on the emulator), a second insert of the same id is
refused with 409 Conflict, ``cancel()`` stops it, and jobs may report statistics. Cascade's own code
path is the one it runs in production; only the client's answers are shaped.
"""

from __future__ import annotations

import json
import threading
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from google.api_core import exceptions as gexc

from cascade.state.status import Status

from .harness import FakeClock, wait_until

D = date(2025, 3, 4)


def jobs_pipeline(tmp_path: Path, **options: Any) -> str:
    """One SQL processor (two rows a date, a row-count gate) in a one-phase pipeline; ``options`` are
    extra keys of the processor."""
    raw = {"pipeline": "jobs", "description": "BigQuery jobs and their cost", "raw_bucket": "jobs",
           "calendar": {"timezone": "UTC", "seasons": [{"name": "all", "start": "2020-01-01", "end": "2030-12-31"}]},
           "phases": [{"number": 2, "name": "only"}],
           "processors": [{
               "name": "daily", "phase": 2, "description": "two rows a date",
               "output": {"table": "jobs.daily", "date_column": "d", "keys": ["k"],
                          "columns": {"d": "DATE", "k": "INT64", "v": "INT64"}},
               "sql": "SELECT @data_date AS d, 1 AS k, 10 AS v UNION ALL SELECT @data_date AS d, 2 AS k, 20 AS v",
               "gates": [{"row_count": {"min": 1}}],
               **options}]}
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


# ---------------------------------------------------------------------- BigQuery's job model over the emulator
class _Job:
    """A job as the client sees it: the emulator's (already DONE) job, or a held write job."""

    def __init__(self, owner: "BigQueryJobs", sql: str, config: Any, job_id: str, real: Any = None) -> None:
        self.owner, self.query, self.job_id, self._config = owner, sql, job_id, config
        self.query_parameters = list(getattr(config, "query_parameters", None) or [])
        self.maximum_bytes_billed = getattr(config, "maximum_bytes_billed", None)
        self.real = real
        self.state = "DONE" if real is not None else "RUNNING"
        self.released = threading.Event()
        self.cancelled = False
        self.error: Exception | None = None

    # what BigQuery reports
    @property
    def total_bytes_processed(self) -> int | None:
        return self.owner.stats[0] if self.owner.stats else getattr(self.real, "total_bytes_processed", None)

    @property
    def total_bytes_billed(self) -> int | None:
        return self.owner.stats[1] if self.owner.stats else getattr(self.real, "total_bytes_billed", None)

    @property
    def slot_millis(self) -> int | None:
        return self.owner.stats[2] if self.owner.stats else getattr(self.real, "slot_millis", None)

    @property
    def num_dml_affected_rows(self) -> int | None:
        return getattr(self.real, "num_dml_affected_rows", None)

    def done(self, retry: Any = None, timeout: Any = None, reload: bool = True) -> bool:
        if self.state != "DONE" and self.released.is_set():
            with self.owner.lock:
                if self.state != "DONE":
                    self.real = self.owner.client.query(self.query, job_config=self._config)
                    self.real.result()
                    self.state = "DONE"
        return self.state == "DONE"

    def cancel(self, retry: Any = None, timeout: Any = None) -> bool:
        if self.state != "DONE":
            self.cancelled, self.state = True, "DONE"
            self.error = gexc.BadRequest(f"Job {self.job_id} was cancelled")
        return True

    def result(self, retry: Any = None, timeout: Any = None, **kw: Any) -> Any:
        if self.error is not None:
            raise self.error
        return self.real.result(timeout=timeout)


class BigQueryJobs:
    """The session's BigQuery client with production's job model (see the module docstring)."""

    def __init__(self, client: Any, hold_writes: bool = False, stats: tuple[int, int, int] | None = None,
                 endpoint: str | None = None) -> None:
        self.client, self.hold_writes, self.stats = client, hold_writes, stats
        self.lock = threading.Lock()
        self.held: dict[str, _Job] = {}
        self.sent: list[_Job] = []  # every job inserted, in order (dry runs included)
        self.gets: list[str] = []
        if endpoint:
            self._connection = type("Connection", (), {"API_BASE_URL": endpoint})()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def query(self, sql: str, job_config: Any = None, job_id: str | None = None, **kw: Any) -> Any:
        if job_id is not None and self.hold_writes:
            with self.lock:
                if job_id in self.held:
                    raise gexc.Conflict(f"Already Exists: Job {job_id}")
                job = self.held[job_id] = _Job(self, sql, job_config, job_id)
                self.sent.append(job)
            return job
        real = self.client.query(sql, job_config=job_config, job_id=job_id, **kw)
        job = _Job(self, sql, job_config, real.job_id, real)
        with self.lock:
            self.sent.append(job)
        return job

    def get_job(self, job_id: str, **kw: Any) -> Any:
        self.gets.append(job_id)
        if job_id in self.held:
            return self.held[job_id]
        return self.client.get_job(job_id, **kw)

    def writes(self) -> list[_Job]:
        return [j for j in self.sent if j.query.lstrip().upper().startswith("MERGE")]


def _deliver_in_thread(h: Any, trig: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = h.deliver(trig)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out["error"] = exc
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


# ---------------------------------------------------------------------- timeouts, cancellation, re-attachment
def test_a_job_past_its_timeout_is_cancelled_and_the_partition_fails_with_the_reason(make_harness, tmp_path):
    h = make_harness(pipeline_file=jobs_pipeline(tmp_path, job_timeout_seconds=1))
    bq = h.app.warehouse.client = BigQueryJobs(h.app.warehouse.client, hold_writes=True)
    result = h.deliver(h.trigger(D))  # the write job never finishes by itself
    [merge] = bq.writes()
    assert merge.cancelled, "the job still running at its timeout was not cancelled"
    part = h.app.tracker.partition("daily", D)
    assert part.status == Status.FAILED and not part.raw.get("transient")
    assert "still running after 1 s" in part.error and "cancelled" in part.error and "job_timeout_seconds" in part.error
    assert "cascade trigger --date 2025-03-04 --phase 2 --processor daily" in part.error
    assert result.outcomes[0].status == Status.FAILED and not result.outcomes[0].retry
    assert h.rows("daily", D) == []  # nothing written
    assert any("daily FAILED" in a.title for a in h.alerts.alerts)


def test_a_redelivery_reattaches_to_the_running_job_instead_of_starting_a_second_one(make_harness, tmp_path):
    clock = FakeClock()
    h = make_harness(pipeline_file=jobs_pipeline(tmp_path), clock=clock)
    bq = h.app.warehouse.client = BigQueryJobs(h.app.warehouse.client, hold_writes=True)
    trig = h.trigger(D)
    # The first delivery starts the MERGE and stops renewing its lease (its function was killed: the
    # heartbeat ticks every 40 s, the clock jumps past the lease instead).
    first, first_out = _deliver_in_thread(h, trig)
    assert wait_until(lambda: len(bq.writes()) == 1, timeout=30), "no write job was started"
    job = bq.writes()[0]
    assert job.job_id.endswith("_f1") and "daily_20250304_g" in job.job_id, job.job_id
    clock.advance(h.app.settings.lease_seconds + 1)
    # The redelivery takes the partition over (fence 2) while that job still runs.
    second, second_out = _deliver_in_thread(h, trig)
    assert wait_until(lambda: job.job_id in bq.gets, timeout=30), "the redelivery did not look for the running job"
    assert wait_until(lambda: h.app.tracker.partition("daily", D).fence == 2, timeout=30)
    job.released.set()  # BigQuery finishes the one MERGE
    first.join(60)
    second.join(60)
    assert not second.is_alive() and "error" not in second_out, second_out
    assert len(bq.writes()) == 1, f"a second MERGE was started: {[j.job_id for j in bq.writes()]}"
    part = h.app.tracker.partition("daily", D)
    assert part.status == Status.SUCCESS and part.fence == 2 and part.record_count == 2
    assert part.run_id == second_out["result"].outcomes[0].run_id
    assert [r["k"] for r in h.rows("daily", D)] == [1, 2]
    # the first run's late finish is not recorded over the second's
    assert first_out.get("result") is None or first_out["result"].outcomes[0].status != Status.SUCCESS


def test_a_run_that_loses_its_lease_while_its_job_runs_cancels_the_job(make_harness, tmp_path):
    clock = FakeClock()
    h = make_harness(pipeline_file=jobs_pipeline(tmp_path), clock=clock, settings_overrides={"lease_seconds": 1.5})
    bq = h.app.warehouse.client = BigQueryJobs(h.app.warehouse.client, hold_writes=True)
    first, first_out = _deliver_in_thread(h, h.trigger(D))
    assert wait_until(lambda: len(bq.writes()) == 1, timeout=30)
    job = bq.writes()[0]
    # Another run takes the partition over once the lease expired (by the injected clock).
    clock.advance(5)
    taken = h.app.tracker.begin("daily", 2, D, 1, "daily_other_run", trigger_id="other")
    assert taken.outcome == "run"
    first.join(30)  # the heartbeat (every 0.5 s) notices, the wait cancels the job
    assert not first.is_alive()
    assert job.cancelled, "the job of a run that lost its lease kept running"
    assert first_out["result"].outcomes[0].status == "lost"
    assert h.app.tracker.partition("daily", D).run_id == "daily_other_run"


# ---------------------------------------------------------------------- cost
def test_each_run_records_its_jobs_bytes_and_slot_time_and_history_shows_them(make_harness, tmp_path, capsys):
    h = make_harness(pipeline_file=jobs_pipeline(tmp_path))
    # BigQuery reports 10 MB billed for each job (its minimum), 1234 bytes processed, 56 slot-ms.
    h.app.warehouse.client = BigQueryJobs(h.app.warehouse.client, stats=(1234, 10_485_760, 56))
    before = h.app.warehouse.stats.bytes_billed
    h.deliver(h.trigger(D))
    part = h.app.tracker.partition("daily", D)
    assert part.status == Status.SUCCESS
    # the run's jobs: its MERGE and its gate's query
    assert part.raw["cost"] == {"jobs": 2, "bytes_processed": 2468, "bytes_billed": 20_971_520, "slot_ms": 112}
    [run] = h.app.tracker.runs("daily", D)
    assert run["cost"] == part.raw["cost"]
    assert h.app.warehouse.stats.bytes_billed - before == 20_971_520
    capsys.readouterr()
    assert h.run_printed(f"cascade history --processor daily --date {D}") == 0
    out = capsys.readouterr().out
    assert "2 jobs, 2.5 KB processed, 21.0 MB billed, 112 slot-ms" in out, out
    # the status page's partition detail shows the same
    from cascade.ui.server import StatusPage
    page = StatusPage(h.app)
    from werkzeug.test import Client
    html = Client(page).get(f"/partition?processor=daily&date={D}").get_data(as_text=True)
    assert "21.0 MB billed" in html and 'id="detail-cost"' in html


def test_the_backfill_summary_shows_the_cost_of_its_runs(make_harness, tmp_path):
    from cascade.backfill.engine import BackfillRequest, run_backfill

    h = make_harness(pipeline_file=jobs_pipeline(tmp_path))
    h.app.warehouse.client = BigQueryJobs(h.app.warehouse.client, stats=(1000, 10_000_000, 7))
    result = run_backfill(h.app, BackfillRequest(start=D, end=date(2025, 3, 6), validate=False, workers=2))
    assert result.exit_code == 0, result.render()
    assert result.runs_cost.to_dict() == {"jobs": 6, "bytes_processed": 6000, "bytes_billed": 60_000_000,
                                          "slot_ms": 42}
    assert "BigQuery cost of the partitions' runs: 6 jobs, 6.0 KB processed, 60.0 MB billed, 42 slot-ms" \
        in result.render()


def test_maximum_bytes_billed_is_applied_to_every_job_of_the_processor(make_harness, tmp_path):
    h = make_harness(pipeline_file=jobs_pipeline(tmp_path, maximum_bytes_billed=50_000_000))
    bq = h.app.warehouse.client = BigQueryJobs(h.app.warehouse.client)
    h.deliver(h.trigger(D))
    assert h.app.tracker.partition("daily", D).status == Status.SUCCESS
    assert len(bq.sent) >= 2  # the MERGE and the gate's query
    assert [j.maximum_bytes_billed for j in bq.sent] == [50_000_000] * len(bq.sent), \
        [(j.query[:30], j.maximum_bytes_billed) for j in bq.sent]


def test_dry_run_says_when_the_engine_cannot_estimate_bytes(make_harness, tmp_path, capsys):
    h = make_harness(pipeline_file=jobs_pipeline(tmp_path))
    capsys.readouterr()
    assert h.run_printed(f"cascade backfill --start {D} --end 2025-03-10 --dry-run") == 0
    out = capsys.readouterr().out
    assert "estimated bytes processed: not estimated - the local BigQuery engine (bqemulator) answers every " \
           "dry run with 0 bytes" in out, out
    assert h.run_printed(f"cascade backfill --start {D} --end 2025-03-10 --dry-run --json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["bytes_estimate"]["supported"] is False and data["bytes_estimate"]["total_bytes"] is None


def test_dry_run_estimates_the_range_from_one_dry_run_per_sql_processor(make_harness, tmp_path):
    from cascade.backfill.engine import BackfillRequest, run_backfill

    h = make_harness(pipeline_file=jobs_pipeline(tmp_path))
    # BigQuery itself (its endpoint), answering the dry run with 3 MB for the processor's MERGE.
    bq = h.app.warehouse.client = BigQueryJobs(h.app.warehouse.client, stats=(3_000_000, 0, 0),
                                               endpoint="https://bigquery.googleapis.com")
    result = run_backfill(h.app, BackfillRequest(start=D, end=date(2025, 3, 10), dry_run=True))
    est = result.bytes_estimate
    assert est is not None and est.supported and est.total == 7 * 3_000_000
    [sent] = bq.sent  # one dry run, of the exact MERGE, for one date
    assert sent._config.dry_run and sent.query.lstrip().startswith("MERGE")
    assert "estimated bytes processed: 21.0 MB" in result.render()
    assert not h.app.tracker.runs("daily")  # nothing ran
