"""Quality gates: declared assertions on a partition, evaluated right after its write.

A tiny two-phase pipeline whose phase-1 processor is a Python callable returning the rows a test
sets (``ROWS``), gated by every gate kind; phase 2 runs only when phase 1 completes.
"""

from __future__ import annotations

import copy
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from cascade.definition.loading import from_dict, load
from cascade.errors import DefinitionError
from cascade.runtime.gates import Gates
from cascade.state.status import Status

D = date(2025, 3, 10)
ROWS: dict[date, list[dict]] = {}  # what `produce` returns for a date


def produce(ctx):
    return ROWS[ctx.data_date]


def good_rows(n: int = 10) -> list[dict]:
    return [{"k": i, "score": 1.5 + i, "label": f"item {i}"} for i in range(1, n + 1)]


GATED = {
    "pipeline": "gated", "description": "quality gate tests", "raw_bucket": "gated",
    "calendar": {"timezone": "UTC", "seasons": [{"name": "all", "start": "2025-01-01", "end": "2025-12-31"}]},
    "phases": [{"number": 1, "name": "measure", "next": 2}, {"number": 2, "name": "report"}],
    "processors": [
        {"name": "metrics", "phase": 1, "description": "rows set by the test", "python": "tests.test_gates:produce",
         "output": {"table": "gated.metrics", "date_column": "d", "keys": ["k"],
                    "columns": {"d": "DATE", "k": "INT64", "score": "FLOAT64", "label": "STRING"}},
         "gates": [{"row_count": {"min": 2}},
                   {"row_count": {"within_pct_of_trailing_median": 50, "days": 3}},
                   {"not_null": ["score"]},
                   {"range": {"column": "score", "min": 0.01, "max": 100}},
                   {"sql": "SELECT k, label FROM {gated.metrics} WHERE d = @data_date AND label = 'bad'",
                    "name": "no_bad_labels"}]},
        {"name": "summary", "phase": 2, "description": "after metrics", "upstreams": ["metrics"],
         "output": {"table": "gated.summary", "date_column": "d", "keys": ["n"],
                    "columns": {"d": "DATE", "n": "INT64"}},
         "sql": "SELECT @data_date AS d, COUNT(*) AS n FROM {gated.metrics} WHERE d = @data_date"},
    ],
}


@pytest.fixture()
def gated(make_harness, tmp_path: Path):
    path = tmp_path / "gated.yaml"
    path.write_text(yaml.safe_dump(GATED))
    ROWS.clear()
    return make_harness(pipeline_file=str(path))


def run_history(h, processor: str, day: date) -> list[dict]:
    return h.app.tracker.runs(processor, day)


def test_passing_gates_are_recorded_with_the_run_in_one_query_for_the_builtin_kinds(gated):
    ROWS[D] = good_rows()
    result = gated.deliver(gated.trigger(D, phase=1))
    assert result.complete and result.downstream == "published"
    part = gated.app.tracker.partition("metrics", D)
    assert part.status == Status.SUCCESS
    gates = part.raw["gates"]
    assert gates["passed"] is True
    assert [r["name"] for r in gates["results"]] == [
        "row_count", "row_count_vs_trailing_median", "not_null_score", "range_score", "no_bad_labels"]
    assert all(r["passed"] for r in gates["results"])
    assert "no trailing history" in gates["results"][1]["detail"]
    assert gates["queries"] == 2  # one for row_count/not_null/range, one for the sql gate
    assert run_history(gated, "metrics", D)[0]["gates"]["passed"] is True
    assert len(gated.pull(2)) == 1


def test_a_failed_gate_fails_the_partition_with_reason_sample_and_rerun_command_alerts_once_and_triggers_nothing(gated):
    ROWS[D] = good_rows() + [{"k": 11, "score": 0.0, "label": "bad"}, {"k": 12, "score": None, "label": "x"}]
    result = gated.deliver(gated.trigger(D, phase=1))
    assert not result.complete and not result.retry
    part = gated.app.tracker.partition("metrics", D)
    assert part.status == Status.FAILED and part.raw["transient"] is False
    assert "cascade trigger --date 2025-03-10 --phase 1 --processor metrics" in part.error
    for name in ("not_null_score", "range_score", "no_bad_labels"):
        assert name in part.error
    failed = {r["name"]: r for r in part.raw["gates"]["results"] if not r["passed"]}
    assert set(failed) == {"not_null_score", "range_score", "no_bad_labels"}
    assert failed["range_score"]["sample"] == [{"k": 11, "score": 0.0}]
    assert failed["not_null_score"]["sample"] == [{"k": 12, "score": None}]
    assert failed["no_bad_labels"]["sample"] == [{"k": 11, "label": "bad"}]
    assert len(gated.alerts.alerts) == 1 and "metrics FAILED for 2025-03-10" in gated.alerts.alerts[0].title
    assert gated.pull(2) == []  # the phase cannot complete: nothing downstream
    assert gated.app.tracker.partition("summary", D).status == Status.MISSING
    # Fixed at the source, the one command in the reason re-runs it and the cascade goes on.
    ROWS[D] = good_rows()
    result = gated.deliver(gated.trigger(D, phase=1, processors=["metrics"]))
    assert result.complete and result.downstream == "published"
    assert len(gated.pull(2)) == 1


def test_a_row_count_far_from_the_trailing_median_fails_its_gate(gated):
    for i in range(3):
        ROWS[D + timedelta(days=i)] = good_rows(10)
        assert gated.deliver(gated.trigger(D + timedelta(days=i), phase=1)).complete
    day = D + timedelta(days=3)
    ROWS[day] = good_rows(3)
    gated.deliver(gated.trigger(day, phase=1))
    part = gated.app.tracker.partition("metrics", day)
    assert part.status == Status.FAILED
    assert "row_count_vs_trailing_median: 3 rows, not within 50% of the trailing median 10" in part.error
    median = next(r for r in part.raw["gates"]["results"] if r["name"] == "row_count_vs_trailing_median")
    assert median["observed"] == {"rows": 3, "trailing_median": 10, "trailing_dates": 3}


def test_the_nba_defense_table_is_gated_against_cascade_contamination(harness):
    proc = harness.pipeline.processor("team_defense_zone_analysis")
    assert {g.name for g in proc.gates} >= {"range_defense_rank", "range_points_allowed_avg"}
    rows = [{"analysis_date": D, "team": t, "games_in_window": 3, "points_allowed_avg": avg, "wins": 1, "losses": 2,
             "defense_rank": rank} for t, avg, rank in [("BOS", 101.5, 1), ("NYK", 0.0, 2), ("LAL", 110.0, 0)]]
    harness.app.warehouse.merge_rows(proc, D, rows, "test-run", 1)
    report = Gates(harness.pipeline, harness.app.warehouse).evaluate(proc, D)
    failed = {r.name: r for r in report.failed}
    assert set(failed) == {"range_defense_rank", "range_points_allowed_avg"}
    assert failed["range_defense_rank"].sample == [{"team": "LAL", "defense_rank": 0}]
    assert failed["range_points_allowed_avg"].sample == [{"team": "NYK", "points_allowed_avg": 0.0}]
    assert report.queries == 3  # one for every built-in gate, one sample per failed gate


@pytest.mark.parametrize("gate, fragment", [
    ({"not_null": ["nope"]}, "gate 'not_null_nope' names undeclared column 'nope'"),
    ({"range": {"column": "label", "min": 0}}, "range needs a numeric column, label is STRING"),
    ({"range": {"column": "score"}}, "range needs `column` and at least one of `min`, `max`"),
    ({"sql": "SELECT 1 FROM {gated.summary}", "name": "peek"}, "gate 'peek' reads gated.summary"),
    ({"sql": "SELECT 1"}, "a sql gate needs the SELECT of its offending rows and a `name`"),
    ({"unique": ["k"]}, "expected one of ['row_count', 'not_null', 'range', 'sql']"),
    ({"row_count": {"min": 5, "max": 1}}, "min 5 is greater than max 1"),
], ids=["unknown-column", "range-on-string", "range-without-bounds", "sql-reads-undeclared", "sql-without-name",
        "unknown-kind", "min-above-max"])
def test_gate_declarations_are_validated_naming_processor_gate_and_problem(gate, fragment):
    raw = copy.deepcopy(GATED)
    raw["processors"][0]["gates"] = [gate]
    with pytest.raises(DefinitionError, match="metrics") as err:
        from_dict(raw)
    assert fragment in str(err.value)


def test_describe_lists_each_processors_gates():
    described = load(namespace="").describe("p")
    procs = {p["name"]: p for ph in described["phases"] for p in ph["processors"]}
    assert {"kind": "range", "name": "range_defense_rank", "columns": ["defense_rank"], "min": 1, "max": 30} in \
        procs["team_defense_zone_analysis"]["gates"]
