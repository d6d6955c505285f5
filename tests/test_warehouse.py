"""Every write checked at the boundary: exports fenced like rows, SQL sources confined to their date
and to unique keys, raw files staged above the parameter bound and refused when a value is not what
its column holds (NaN/Infinity for FLOAT64, a timestamp without an offset).

A small pipeline written here: phase 1 loads a raw file and runs two SQL processors that emit what a
careless SELECT can emit; phase 2 exports the raw rows as a JSON file with a manifest row. Each test
runs on the real emulators and fails on the code before the fix.
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import date
from pathlib import Path

import pytest
import yaml
from google.cloud import bigquery

from cascade.dev import faults
from cascade.runtime.processors.python_callable import STAGE_ABOVE_ROWS
from cascade.state.status import Status

from .harness import FakeClock, Harness, wait_until

D = date(2025, 1, 15)
RERUN = "cascade trigger --date 2025-01-15 --phase 1 --processor {}"

BOUNDARY = {
    "pipeline": "boundary", "description": "write boundary tests", "raw_bucket": "boundary",
    "calendar": {"timezone": "UTC", "seasons": [{"name": "all", "start": "2025-01-01", "end": "2025-12-31"}]},
    "phases": [{"number": 1, "name": "load", "next": 2}, {"number": 2, "name": "publish"}],
    "processors": [
        {"name": "readings", "phase": 1, "description": "raw readings from GCS",
         "source": {"gcs_json": "readings/{date}.json", "records": "readings"},
         "output": {"table": "bnd.readings", "date_column": "d", "keys": ["k"],
                    "columns": {"d": "DATE", "k": "INT64", "score": "FLOAT64", "taken_at": "TIMESTAMP"}}},
        {"name": "spills_yesterday", "phase": 1, "description": "a SELECT that also emits the day before",
         "output": {"table": "bnd.spills", "date_column": "d", "keys": ["k"],
                    "columns": {"d": "DATE", "k": "INT64", "v": "FLOAT64"}},
         "sql": "SELECT DATE_SUB(@data_date, INTERVAL 1 DAY) AS d, 1 AS k, 1.5 AS v "
                "UNION ALL SELECT @data_date AS d, 2 AS k, 2.5 AS v"},
        {"name": "repeats_keys", "phase": 1, "description": "a SELECT whose keys repeat",
         "output": {"table": "bnd.repeats", "date_column": "d", "keys": ["k", "name"],
                    "columns": {"d": "DATE", "k": "INT64", "name": "STRING", "v": "FLOAT64"}},
         "sql": "SELECT @data_date AS d, 7 AS k, 'x' AS name, 1.0 AS v "
                "UNION ALL SELECT @data_date AS d, 7 AS k, 'x' AS name, 2.0 AS v "
                "UNION ALL SELECT @data_date AS d, 8 AS k, 'x' AS name, 3.0 AS v"},
        {"name": "published", "phase": 2, "description": "the day's readings as a JSON file",
         "upstreams": ["readings"],
         "export": {"gcs_json": "exports/{date}.json",
                    "sql": "SELECT k, score FROM {bnd.readings} WHERE d = @data_date ORDER BY k"},
         "output": {"table": "bnd.published", "date_column": "export_date", "keys": ["path"],
                    "columns": {"export_date": "DATE", "path": "STRING", "row_count": "INT64",
                                "sha256": "STRING"}}},
    ],
}


def make(make_harness, tmp_path: Path, **kw) -> Harness:
    path = tmp_path / "boundary.yaml"
    path.write_text(yaml.safe_dump(BOUNDARY))
    return make_harness(pipeline_file=str(path), **kw)


@pytest.fixture()
def bnd(make_harness, tmp_path: Path) -> Harness:
    return make(make_harness, tmp_path)


def write_readings(h: Harness, text: str) -> str:
    """Upload the raw file for D as it is (``text`` is the file's exact content); its gs:// URI."""
    bucket = h.pipeline.bucket(h.project)
    h.app.storage.bucket(bucket).blob(f"readings/{D.isoformat()}.json").upload_from_string(
        text, content_type="application/json")
    return f"gs://{bucket}/readings/{D.isoformat()}.json"


def readings(n: int, start: int = 0) -> list[dict]:
    return [{"k": i, "score": i / 4, "taken_at": "2025-01-15T19:30:00Z"} for i in range(start, start + n)]


def run(h: Harness, processor: str, phase: int = 1):
    result = h.deliver(h.trigger(D, phase=phase, processors=(processor,), strict_mode=False,
                                 skip_downstream_trigger=True))
    return {o.processor: o for o in result.outcomes}[processor]


def all_rows(h: Harness, processor: str) -> list[dict]:
    t = h.pipeline.processor(processor).output
    return h.app.warehouse.query(f"SELECT * FROM `{h.app.warehouse.table_id(t)}`")


# ---------------------------------------------------------------------- exports are fenced like rows
def published_file(h: Harness) -> bytes:
    bucket = h.pipeline.bucket(h.project)
    return h.app.storage.bucket(bucket).blob(f"exports/{D.isoformat()}.json").download_as_bytes()


def manifest(h: Harness) -> dict:
    [row] = h.rows("published", D)
    return row


def test_a_run_that_lost_its_lease_cannot_replace_the_published_export(make_harness, tmp_path, inject):
    clock = FakeClock()
    h = make(make_harness, tmp_path, clock=clock, settings_overrides={"lease_seconds": 60, "busy_wait_seconds": 0})
    write_readings(h, json.dumps({"readings": readings(3)}))
    assert run(h, "readings").status == Status.SUCCESS
    inject("slow:published*1,heartbeat:published")  # the first export run stalls and stops renewing
    errors: list[BaseException] = []

    def stale_run() -> None:
        try:
            run(h, "published", phase=2)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            errors.append(exc)

    t = threading.Thread(target=stale_run)
    t.start()
    assert wait_until(lambda: h.app.tracker.partition("published", D).status == "running")
    stale = h.app.tracker.partition("published", D)
    clock.advance(61)  # its lease expires; a redelivery takes over and publishes
    assert run(h, "published", phase=2).status == Status.SUCCESS
    winner = h.app.tracker.partition("published", D)
    assert winner.run_id != stale.run_id and winner.fence > stale.fence
    published = published_file(h)
    assert hashlib.sha256(published).hexdigest() == manifest(h)["sha256"]
    # The data moves on; the stale run wakes up, reads it and tries to publish its own file.
    h.app.warehouse.query(f"UPDATE `{h.app.warehouse.table_id(h.pipeline.processor('readings').output)}` "
                          "SET score = score + 100 WHERE d = @d", [bigquery.ScalarQueryParameter("d", "DATE", D)])
    faults.release_slow.set()
    t.join(timeout=60)
    assert not t.is_alive() and not errors
    assert published_file(h) == published  # the reader still sees the run that holds the fence
    assert hashlib.sha256(published_file(h)).hexdigest() == manifest(h)["sha256"]
    assert h.app.tracker.partition("published", D).run_id == winner.run_id
    lost = [r for r in h.app.tracker.runs("published", D) if r["run_id"] == stale.run_id]
    assert lost and lost[0]["status"] == "lost"


def test_an_export_from_an_older_fence_is_refused_even_after_its_merge_committed(bnd):
    """The window the MERGE cannot close: a run whose manifest MERGE committed before it lost its lease
    uploads late. The published object carries its fence; an older one never replaces it."""
    from cascade.errors import LeaseLostError
    from cascade.runtime.processors.gcs_export import publish

    h = bnd
    write_readings(h, json.dumps({"readings": readings(3)}))
    assert run(h, "readings").status == Status.SUCCESS
    assert run(h, "published", phase=2).status == Status.SUCCESS
    fence = h.app.tracker.partition("published", D).fence
    before = published_file(h)
    bucket = h.app.storage.bucket(h.pipeline.bucket(h.project))
    with pytest.raises(LeaseLostError, match=f"fence {fence}"):
        publish(bucket, f"exports/{D.isoformat()}.json", b'{"old": true}', fence - 1,
                processor="published", day=D)
    assert published_file(h) == before
    publish(bucket, f"exports/{D.isoformat()}.json", before, fence, processor="published", day=D)  # same fence: ok


# ---------------------------------------------------------------------- SQL sources are confined
def test_sql_rows_for_another_date_are_refused_before_anything_is_written(bnd):
    h = bnd
    out = run(h, "spills_yesterday")
    assert out.status == Status.FAILED and not out.retry
    for fragment in ("spills_yesterday", "2025-01-15", "2025-01-14", RERUN.format("spills_yesterday")):
        assert fragment in out.error, (fragment, out.error)
    assert all_rows(h, "spills_yesterday") == []  # neither date was written
    part = h.app.tracker.partition("spills_yesterday", D)
    assert part.status == Status.FAILED and part.raw["transient"] is False
    # A rerun refuses it again: never a second copy of the other date's rows.
    assert run(h, "spills_yesterday").status == Status.FAILED
    assert all_rows(h, "spills_yesterday") == []


def test_duplicate_keys_in_a_sql_source_fail_on_the_first_run_naming_the_keys(bnd):
    h = bnd
    out = run(h, "repeats_keys")
    assert out.status == Status.FAILED and not out.retry
    for fragment in ("repeats_keys", "2025-01-15", "k=7", "name=x", "2 rows", RERUN.format("repeats_keys")):
        assert fragment in out.error, (fragment, out.error)
    assert "k=8" not in out.error
    assert all_rows(h, "repeats_keys") == []


# ---------------------------------------------------------------------- raw loads
def test_a_raw_file_above_the_parameter_bound_is_staged_and_merged_once(bnd, monkeypatch):
    h = bnd
    n = STAGE_ABOVE_ROWS + 300
    write_readings(h, json.dumps({"readings": readings(n)}))
    client = h.app.warehouse.client
    loads, queries = [], []
    real_load, real_query = client.load_table_from_file, client.query
    monkeypatch.setattr(client, "load_table_from_file", lambda *a, **kw: loads.append(a[1]) or real_load(*a, **kw))
    monkeypatch.setattr(client, "query", lambda sql, *a, **kw: queries.append(sql) or real_query(sql, *a, **kw))
    out = run(h, "readings")
    assert out.status == Status.SUCCESS and out.record_count == n
    assert len(loads) == 1 and "_staging" in str(loads[0])  # one NDJSON load into a staging table
    merges = [q for q in queries if q.lstrip().startswith("MERGE")]
    assert len(merges) == 1 and "@rows" not in merges[0]  # one MERGE, no row went as a query parameter
    assert len(h.rows("readings", D)) == n
    dataset = h.pipeline.dataset_id("bnd")
    assert not [t.table_id for t in client.list_tables(f"{h.project}.{dataset}") if t.table_id.startswith("_staging")]
    # The same file again (a new generation) replaces the partition in place.
    gen = h.app.tracker.new_generation(D)
    h.deliver(h.trigger(D, phase=1, processors=("readings",), strict_mode=False, skip_downstream_trigger=True,
                        generation=gen))
    assert len(h.rows("readings", D)) == n


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", '"1e999"'])
def test_a_raw_float_that_is_nan_or_infinite_is_refused_naming_file_record_and_field(bnd, literal):
    h = bnd
    text = json.dumps({"readings": readings(3)}).replace('"score": 0.5', f'"score": {literal}')
    assert literal in text
    uri = write_readings(h, text)
    out = run(h, "readings")
    assert out.status == Status.FAILED and not out.retry
    for fragment in (uri, "record 2", "'score'", "FLOAT64", "finite"):
        assert fragment in out.error, (fragment, out.error)
    assert all_rows(h, "readings") == []


def test_a_raw_timestamp_without_an_offset_is_refused_instead_of_read_as_utc(bnd):
    h = bnd
    rows = readings(3)
    rows[1]["taken_at"] = "2025-01-15T19:30:00"
    uri = write_readings(h, json.dumps({"readings": rows}))
    out = run(h, "readings")
    assert out.status == Status.FAILED and not out.retry
    for fragment in (uri, "record 1", "'taken_at'", "'2025-01-15T19:30:00'", "TIMESTAMP", "offset"):
        assert fragment in out.error, (fragment, out.error)
    assert all_rows(h, "readings") == []
    # With an offset (Z or +hh:mm) the same value loads, as that instant.
    rows[1]["taken_at"] = "2025-01-15T19:30:00+01:00"
    write_readings(h, json.dumps({"readings": rows}))
    assert run(h, "readings").status == Status.SUCCESS
    got = {r["k"]: r["taken_at"] for r in h.rows("readings", D)}
    assert got[1].isoformat() == "2025-01-15T18:30:00+00:00"
