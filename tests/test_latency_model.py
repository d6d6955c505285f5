"""The production latency model of the local BigQuery (emulators/latency_model.py), opt-in for benchmarks.

Pure parts (DML target parsing, FIFO slots, launch options) run without an emulator; the model itself
is checked on a real bqemulator started with it (0.5 s per job), on the concurrency the model
records - max DML running per table, FIFO order, overlapping latencies - and on wall time.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
import requests

from cascade.dev.emulators import BQ_LATENCY_ENV, LocalStackError, emulator_spec
from cascade.dev.localstack import LocalStack, free_port
from emulators.latency_model import STATS_PATH, FifoSlots, check_latency, dml_targets

LATENCY = 0.5
PROJECT = "cascade-latency"


# ---------------------------------------------------------------------------------------------- pure parts

def test_dml_targets_finds_the_mutated_tables_only() -> None:
    merge = ("MERGE `p.ds.player_game_summary` AS T USING (SELECT 1 AS k) AS S ON T.k = S.k\n"
             "WHEN MATCHED THEN UPDATE SET v = S.v\nWHEN NOT MATCHED BY SOURCE AND T.d = @d THEN DELETE")
    assert dml_targets(merge) == ["ds.player_game_summary"]
    assert dml_targets("  -- a comment\n update ds.t SET a = 1 WHERE TRUE") == ["ds.t"]
    assert dml_targets("DELETE FROM `ds`.`t2` WHERE d = @d") == ["ds.t2"]
    assert dml_targets("merge into ds.t3 T using ds.s S on T.k = S.k when matched then delete") == ["ds.t3"]
    script = ("BEGIN TRANSACTION;\nDELETE FROM ds.a WHERE x = 'it''s; DELETE FROM ds.z';\n"
              "MERGE `p.ds.b` T USING ds.a S ON FALSE WHEN NOT MATCHED THEN INSERT ROW;\nCOMMIT TRANSACTION;")
    assert dml_targets(script) == ["ds.a", "ds.b"]
    assert dml_targets("SELECT * FROM ds.t WHERE note = 'x; DELETE FROM ds.t'") == []
    assert dml_targets("INSERT INTO ds.t (a) VALUES (1)") == []  # INSERT is not under the 2-per-table limit


def test_latency_below_the_floor_is_refused() -> None:
    assert check_latency("1.5") == 1.5
    with pytest.raises(ValueError, match="at least 0.5"):
        check_latency(0.1)


def test_fifo_slots_hand_over_in_arrival_order() -> None:
    async def scenario() -> list[int]:
        slots, order, running, peak = FifoSlots(2), [], [0], [0]

        async def job(i: int) -> None:
            await slots.acquire("t")
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            order.append(i)
            await asyncio.sleep(0.01 * (7 - i))  # later jobs finish sooner: order must still be FIFO
            running[0] -= 1
            slots.release("t")

        tasks = []
        for i in range(7):
            tasks.append(asyncio.create_task(job(i)))
            await asyncio.sleep(0)  # arrive in order 0..6
        await asyncio.gather(*tasks)
        assert peak[0] == 2 and slots.running["t"] == 0 and not slots.waiters["t"]
        return order

    assert asyncio.run(scenario()) == list(range(7))


def test_the_model_is_launched_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BQ_LATENCY_ENV, "2.0")  # a stray variable must not switch the model on
    argv, env, _, extra = emulator_spec("bigquery", 1, "p", tmp_path, lambda: 2)
    assert "--job-latency-s" not in argv and BQ_LATENCY_ENV not in env and extra["bq_latency_s"] is None
    argv, _, _, extra = emulator_spec("bigquery", 1, "p", tmp_path, lambda: 2, bq_latency_s=1.0)
    assert argv[2:4] == ["--job-latency-s", "1.0"] and extra["bq_latency_s"] == 1.0
    with pytest.raises(LocalStackError, match="at least 0.5"):
        emulator_spec("bigquery", 1, "p", tmp_path, lambda: 2, bq_latency_s=0.2)
    stack = LocalStack(tmp_path, log=lambda _m: None)
    assert "--job-latency-s" not in stack._emulator_spec("bigquery", 1, set())[0]
    stack = LocalStack(tmp_path, log=lambda _m: None, bq_latency_s=0.75)
    assert "--job-latency-s" in stack._emulator_spec("bigquery", 1, set())[0]


# ---------------------------------------------------------------------------------------------- on bqemulator

@pytest.fixture(scope="module")
def bq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    stack = LocalStack(tmp_path_factory.mktemp("latency-stack"), project=PROJECT, log=lambda _m: None)
    port = free_port()
    argv, env, ready, _ = emulator_spec("bigquery", port, PROJECT, stack.gcloud_config, free_port,
                                        bq_latency_s=LATENCY)
    changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
    try:
        stack.start_process("bigquery-latency", argv, changed, ready_url=str(ready["url"]))
        base = f"http://127.0.0.1:{port}"
        client = bigquery.Client(project=PROJECT, credentials=AnonymousCredentials(),
                                 client_options=ClientOptions(api_endpoint=base))
        client.create_dataset("lat", exists_ok=True)
        for i in range(6):
            client.create_table(bigquery.Table(f"{PROJECT}.lat.t{i}", schema=[
                bigquery.SchemaField("k", "INT64"), bigquery.SchemaField("v", "STRING")]), exists_ok=True)
        yield base, client
    finally:
        stack.stop()


def _stats(base: str, reset: bool = False) -> dict:
    with requests.Session() as s:
        s.trust_env = False
        if reset:
            s.post(base + STATS_PATH + "/reset", timeout=10).raise_for_status()
            return {}
        resp = s.get(base + STATS_PATH, params={"jobs": 1}, timeout=10)
        resp.raise_for_status()
        return resp.json()


def _merge(client, table: str, k: int) -> None:
    from google.cloud import bigquery

    sql = (f"MERGE `{PROJECT}.lat.{table}` AS T USING (SELECT @k AS k, 'x' AS v) AS S ON T.k = S.k "
           "WHEN MATCHED THEN UPDATE SET v = S.v WHEN NOT MATCHED THEN INSERT (k, v) VALUES (S.k, S.v)")
    cfg = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("k", "INT64", k)])
    client.query(sql, job_config=cfg).result(timeout=60)


def _concurrently(client, tables: list[str]) -> float:
    with ThreadPoolExecutor(max_workers=len(tables)) as pool:
        t0 = time.monotonic()
        for f in [pool.submit(_merge, client, t, i) for i, t in enumerate(tables)]:
            f.result()
        return time.monotonic() - t0


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    cur = peak = 0
    for _, delta in events:
        cur += delta
        peak = max(peak, cur)
    return peak


def test_two_merges_per_table_run_at_once_the_rest_queue_in_order(bq) -> None:
    base, client = bq
    _stats(base, reset=True)
    wall = _concurrently(client, ["t0"] * 6)
    st = _stats(base)
    t0 = st["tables"]["lat.t0"]
    assert st["dml_jobs"] == 6 and t0["dml"] == 6
    assert t0["max_running"] == 2, st          # measured by the model: never more than 2 at once
    assert t0["max_queued"] >= 3, st           # and the others did wait
    log = [e for e in st["log"] if e["tables"] == ["lat.t0"]]
    assert _max_overlap([(e["started"], e["done"]) for e in log]) == 2
    by_arrival = sorted(log, key=lambda e: e["arrived"])
    assert [e["started"] for e in by_arrival] == sorted(e["started"] for e in log)  # FIFO
    assert wall >= 3 * LATENCY, wall           # 6 jobs, 2 at a time: 3 rounds of the latency


def test_merges_on_different_tables_overlap(bq) -> None:
    base, client = bq
    _stats(base, reset=True)
    wall = _concurrently(client, [f"t{i}" for i in range(6)])
    st = _stats(base)
    assert st["dml_jobs"] == 6 and all(t["max_running"] == 1 and t["queue_wait_s"] < 0.05
                                       for t in st["tables"].values()), st
    # All six latencies were spent at the same time (nothing serialized them) ...
    assert _max_overlap([(e["started"], e["done"]) for e in st["log"]]) == 6, st["log"]
    assert st["max_in_flight"] == 6
    # ... so the batch took one latency plus the emulator's serial execution, not six latencies.
    assert wall < 2 * LATENCY + 1.0, wall


def test_jobs_released_together_each_cost_one_latency(bq) -> None:
    """The stretch the first model had: 6 jobs arriving together were executed interleaved (each
    finished when all had) after their common latency. Now the emulator executes them one at a time
    inside the latency, and each answers when its own latency has elapsed - not later, not sooner."""
    base, client = bq
    _stats(base, reset=True)
    _concurrently(client, [f"t{i}" for i in range(6)])
    st = _stats(base)
    assert st["execution"] == "inside" and st["over_latency"] == 0, st
    log = st["log"]
    runs = sorted((e["executing"], e["executed"]) for e in log)
    assert all(a[1] <= b[0] for a, b in zip(runs, runs[1:])), runs  # one at a time, never interleaved
    for e in log:
        assert LATENCY - 0.01 <= e["done"] - e["started"] <= LATENCY + 0.15, e  # the latency, end to end
        assert e["started"] <= e["executing"] < e["executed"] <= e["done"], e
