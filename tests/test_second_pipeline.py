"""The second reference pipeline (``pipelines/retail.yaml``): another domain, another calendar, a
Python processor, quality gates and a lookback, end to end on the emulators - and side by side with
the NBA pipeline in one emulator session."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from datetime import date, timedelta

from cascade.definition.loading import DEFAULT_DEFINITION, load
from cascade.dev.synthetic import day_files
from cascade.state.status import Status

from .harness import Harness, new_namespace, wait_until

RETAIL = str(DEFAULT_DEFINITION.parent / "retail.yaml")
OPENING = date(2025, 3, 1)  # the chain's first trading day (the calendar's start)


def test_the_retail_pipeline_runs_from_raw_files_through_python_features_to_its_export_in_strict_mode(make_harness):
    h = make_harness(pipeline_file=RETAIL)
    days = [OPENING + timedelta(days=i) for i in range(3)]
    h.write_raw(days[0], days[-1])
    for day in days:
        seen = h.pump(h.trigger(day, phase=1))  # strict mode on (daily)
        assert [len(seen[n]) for n in (1, 2, 3)] == [0, 1, 1], day  # one completion of phase 1, one of phase 2
        states = h.app.tracker.partitions([p.name for p in h.pipeline.processors], [day])
        assert {n: s.status for (n, _), s in states.items()} == {p.name: Status.SUCCESS for p in h.pipeline.processors}
    last = days[-1]
    # The Python processor's features equal a recomputation from the raw files over its 7-day lookback.
    revenue: dict[str, dict[date, float]] = defaultdict(dict)
    for day in days:
        for line in day_files(day, h.pipeline)["pos/sales/{date}.json"]["lines"]:
            revenue[line["store_id"]][day] = revenue[line["store_id"]].get(day, 0.0) + line["revenue"]
    features = {r["store_id"]: r for r in h.rows("store_demand_features", last)}
    assert sorted(features) == ["S01", "S02", "S03", "S04"]
    for store, by_day in revenue.items():
        avg = sum(round(v, 2) for v in by_day.values()) / 3
        assert abs(features[store]["avg_revenue_7d"] - avg) < 0.02, store
        assert features[store]["days_in_window"] == 3
        assert abs(features[store]["revenue"] - round(by_day[last], 2)) < 0.01
    # Gates ran after each gated write and were recorded with the run.
    part = h.app.tracker.partition("store_demand_features", last)
    assert part.raw["gates"]["passed"] and part.raw["checks"]["results"]  # strict-mode checks ran and passed
    assert [r["name"] for r in h.app.tracker.partition("store_daily_sales", last).raw["gates"]["results"]] == [
        "row_count", "no_negative_sales"]
    # The export's manifest row is derived from its declared columns and matches the file.
    [manifest] = h.rows("store_report_export", last)
    blob_path = manifest["path"].split("/", 3)[3]
    body = h.app.storage.bucket(h.pipeline.bucket(h.project)).blob(blob_path).download_as_bytes()
    assert manifest["bytes"] == len(body) and manifest["sha256"] == hashlib.sha256(body).hexdigest()
    assert manifest["row_count"] == 4 == len(json.loads(body)["rows"])
    [report] = h.rows("chain_daily_report", last)
    assert report["stores"] == 4 and abs(report["total_revenue"] - sum(f["revenue"] for f in features.values())) < 0.05


def test_a_retail_closure_day_is_skipped_and_triggers_nothing(make_harness):
    h = make_harness(pipeline_file=RETAIL)
    good_friday = date(2025, 4, 18)
    assert h.write_raw(good_friday, good_friday) == 0
    result = h.deliver(h.trigger(good_friday, phase=1))
    assert {o.status for o in result.outcomes} == {Status.SKIPPED}
    assert "Good Friday closure" in result.outcomes[0].error
    assert h.pull(2) == []


def test_the_nba_and_retail_pipelines_run_side_by_side_in_one_namespace_without_sharing_a_resource(endpoints):
    ns = new_namespace()
    nba = Harness(endpoints, ns).provision()
    retail = Harness(endpoints, ns, pipeline_file=RETAIL).provision()
    names = {}
    for h in (nba, retail):
        p = h.pipeline
        names[p.name] = ({p.collection(k) for k in ("partitions", "runs", "triggers", "leases")}
                         | {p.topic(ph.number) for ph in p.phases} | set(p.datasets()) | {p.bucket(h.project)})
    assert not names["nba"] & names["retail"]
    day = date(2025, 3, 3)  # a game day and a trading day
    nba.write_raw(day, day)
    retail.write_raw(day, day)
    nba_result = nba.deliver(nba.trigger(day, phase=2, skip_downstream_trigger=True))
    retail_result = retail.deliver(retail.trigger(day, phase=1, skip_downstream_trigger=True))
    assert {o.status for o in nba_result.outcomes + retail_result.outcomes} == {Status.SUCCESS}
    # Each sees only its own partitions and rows.
    assert {r["processor"] for r in nba.app.tracker.runs(day=day)} == {"nbac_schedule", "nbac_player_boxscore"}
    assert {r["processor"] for r in retail.app.tracker.runs(day=day)} == {"pos_sales", "store_traffic"}
    assert len(retail.rows("pos_sales", day)) == 20 and len(nba.rows("nbac_schedule", day)) >= 6


def test_the_retail_pipeline_cascades_through_real_function_servers_of_the_one_generic_entry_point(stack, endpoints):
    h = Harness(endpoints, new_namespace(), pipeline_file=RETAIL)
    try:
        urls = h.deploy(stack)
        assert sorted(urls) == [1, 2, 3]  # no per-phase code exists for this pipeline: functions/phase/main.py
        h.write_raw(OPENING, OPENING)
        trig = h.trigger(OPENING, phase=1)
        h.publisher.publish(h.publisher.topic_path(h.project, h.pipeline.topic(1)), trig.to_json(),
                            **trig.attributes()).result(timeout=30)
        names = [p.name for p in h.pipeline.processors]

        def all_done() -> bool:
            return all(s.status == Status.SUCCESS for s in h.app.tracker.partitions(names, [OPENING]).values())
        assert wait_until(all_done, timeout=90), {
            n: s.status for (n, _), s in h.app.tracker.partitions(names, [OPENING]).items()}
        assert h.rows("chain_daily_report", OPENING)[0]["stores"] == 4
    finally:
        stack.stop([n for n in stack.running() if n.startswith(f"function-{h.namespace}-")])


def test_synthetic_raw_files_are_derived_from_the_definition_deterministically():
    p = load(RETAIL, namespace="")
    day = date(2025, 3, 5)
    files = day_files(day, p)
    assert set(files) == {"pos/sales/{date}.json", "sensors/traffic/{date}.json"}
    assert files == day_files(day, p) and files != day_files(day + timedelta(days=1), p)
    lines = files["pos/sales/{date}.json"]["lines"]
    assert sorted((r["store_id"], r["sku"]) for r in lines) == sorted(
        (s, k) for s in ["S01", "S02", "S03", "S04"] for k in ["A100", "B200", "C300", "D400", "E500"])
    assert all(1 <= r["units"] <= 40 and 5 <= r["revenue"] <= 800 for r in lines)
    stores = files["sensors/traffic/{date}.json"]["stores"]
    assert sorted(r["store_id"] for r in stores) == ["S01", "S02", "S03", "S04"]  # joins with the sales lines
    assert all(isinstance(r["visitors"], int) and set(r) == {"traffic_date", "store_id", "visitors", "open_hours"}
               for r in stores)
