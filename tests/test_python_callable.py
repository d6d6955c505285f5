"""Python processors: a callable named in the definition, typed context, validated rows, fenced MERGE."""

from __future__ import annotations

import copy
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

import cascade
from cascade.definition.loading import from_dict
from cascade.errors import DefinitionError, is_transient
from cascade.runtime.processors.python_callable import STAGE_ABOVE_ROWS, InvalidRowsError, validate_rows
from cascade.state.status import Status

D = date(2025, 3, 12)


# ---------------------------------------------------------------------- the callables under test
def rolling(ctx):
    """Sum of each key's value over the declared 2-day lookback (3 dates), via ctx.read."""
    totals: dict[int, int] = {}
    for row in ctx.read("py.base"):
        totals[row["k"]] = totals.get(row["k"], 0) + row["v"]
    ctx.log.info("rolled", keys=len(totals))
    return ({"k": k, "total": t, "window_start": ctx.window_start, "run_id": ctx.run_id} for k, t in totals.items())


def raiser(ctx):
    return [{"k": 1, "total": 1 // 0}]


def unavailable(ctx):
    raise cascade.TransientError("the feature store answered 503")


def unusable(ctx):
    raise cascade.PermanentError(f"the feature file of {ctx.data_date} is truncated")


FAIL_NEXT = {"on": False}


def sometimes(ctx):
    """Three rows - or, when the test says so, an exception (a feature store that is down)."""
    if FAIL_NEXT["on"]:
        raise RuntimeError("the feature store is down")
    return [{"k": k, "total": k * 7} for k in range(1, 4)]


def undeclared_reader(ctx):
    return ctx.read("py.big")


def early_reader(ctx):
    return ctx.read("py.base", start=ctx.data_date - timedelta(days=30))


def big(ctx):
    return [{"k": i, "total": i * 3} for i in range(STAGE_ABOVE_ROWS + 500)]


def _out(table: str, extra: dict | None = None) -> dict:
    return {"table": f"py.{table}", "date_column": "d", "keys": ["k"],
            "columns": {"d": "DATE", "k": "INT64", "total": "INT64", **(extra or {})}}


PY = {
    "pipeline": "py", "description": "python processor tests", "raw_bucket": "py",
    "calendar": {"timezone": "UTC", "seasons": [{"name": "all", "start": "2025-01-01", "end": "2025-12-31"}]},
    "phases": [{"number": 1, "name": "base", "next": 2}, {"number": 2, "name": "python"}],
    "processors": [
        {"name": "base", "phase": 1, "description": "five keys a day",
         "output": {"table": "py.base", "date_column": "d", "keys": ["k"],
                    "columns": {"d": "DATE", "k": "INT64", "v": "INT64"}},
         "sql": "SELECT @data_date AS d, k, k * EXTRACT(DAY FROM @data_date) AS v FROM UNNEST([1, 2, 3, 4, 5]) AS k"},
        {"name": "rolling", "phase": 2, "description": "3-date totals", "python": "tests.test_python_callable:rolling",
         "upstreams": [{"processor": "base", "lookback_days": 2}],
         "output": _out("rolling", {"window_start": "DATE", "run_id": "STRING"})},
        {"name": "raiser", "phase": 2, "description": "raises", "python": "tests.test_python_callable:raiser",
         "output": _out("raiser")},
        {"name": "undeclared_reader", "phase": 2, "description": "reads what it did not declare",
         "python": "tests.test_python_callable:undeclared_reader", "upstreams": ["base"],
         "output": _out("undeclared_reader")},
        {"name": "early_reader", "phase": 2, "description": "reads before its window",
         "python": "tests.test_python_callable:early_reader", "upstreams": ["base"], "output": _out("early_reader")},
        {"name": "no_module", "phase": 2, "description": "cannot be imported",
         "python": "tests.no_such_module:build", "output": _out("no_module")},
        {"name": "no_attribute", "phase": 2, "description": "names a missing attribute",
         "python": "tests.test_python_callable:no_such_function", "output": _out("no_attribute")},
        {"name": "sometimes", "phase": 2, "description": "rows, or an exception when told",
         "python": "tests.test_python_callable:sometimes", "output": _out("sometimes")},
        {"name": "unavailable", "phase": 2, "description": "raises TransientError",
         "python": "tests.test_python_callable:unavailable", "output": _out("unavailable")},
        {"name": "unusable", "phase": 2, "description": "raises PermanentError",
         "python": "tests.test_python_callable:unusable", "output": _out("unusable")},
        {"name": "big", "phase": 2, "description": "more rows than the parameter bound",
         "python": "tests.test_python_callable:big", "output": _out("big")},
    ],
}


@pytest.fixture()
def py(make_harness, tmp_path: Path):
    path = tmp_path / "py.yaml"
    path.write_text(yaml.safe_dump(PY))
    return make_harness(pipeline_file=str(path))


def load_base(h, days):
    for day in days:
        h.deliver(h.trigger(day, phase=1, skip_downstream_trigger=True))


def run(h, processor: str, day: date = D):
    return h.deliver(h.trigger(day, phase=2, processors=[processor]))


# ---------------------------------------------------------------------- end to end on the emulators
def test_python_rows_redelivered_three_times_are_identical_from_one_dml_job_and_survive_a_later_raise(py):
    trig = py.trigger(D, phase=2, processors=["sometimes"])
    jobs = py.app.warehouse.stats.jobs
    py.deliver(trig, message_id="m-1")
    assert py.app.warehouse.stats.jobs - jobs == 1  # one MERGE for the partition, nothing else
    rows = py.rows("sometimes", D)
    assert [(r["k"], r["total"]) for r in rows] == [(1, 7), (2, 14), (3, 21)]
    jobs = py.app.warehouse.stats.jobs  # (the read above is the test's own job)
    for _ in range(3):  # Pub/Sub redelivers the same message
        py.deliver(trig, message_id="m-1")
    assert py.app.warehouse.stats.jobs == jobs and py.rows("sometimes", D) == rows  # deduped: no job at all
    # A rerun (new generation) whose callable raises: failed, and the previous rows stay as they were.
    FAIL_NEXT["on"] = True
    try:
        gen = py.app.tracker.new_generation(D)
        out = py.deliver(py.trigger(D, phase=2, processors=["sometimes"], generation=gen)).outcomes[0]
    finally:
        FAIL_NEXT["on"] = False
    assert out.status == Status.FAILED and "the feature store is down" in out.error
    assert py.rows("sometimes", D) == rows


def test_a_python_processor_reads_its_declared_lookback_and_its_rows_are_merged_once_per_partition(py):
    load_base(py, [D - timedelta(days=2), D - timedelta(days=1), D])
    outcome = run(py, "rolling").outcomes[0]
    assert outcome.status == Status.SUCCESS and outcome.record_count == 5
    rows = py.rows("rolling", D)
    # v = k * day-of-month, summed over the 10th, 11th and 12th.
    assert [(r["k"], r["total"]) for r in rows] == [(k, k * (10 + 11 + 12)) for k in range(1, 6)]
    assert {r["window_start"] for r in rows} == {D - timedelta(days=2)}
    assert {r["run_id"] for r in rows} == {outcome.run_id}
    # A second trigger of the same generation is deduplicated; the rows are unchanged.
    again = run(py, "rolling").outcomes[0]
    assert again.status == Status.DONE and py.rows("rolling", D) == rows


def test_a_python_processor_that_raises_fails_with_its_traceback_in_run_history_and_alerts_once(py):
    outcome = run(py, "raiser").outcomes[0]
    assert outcome.status == Status.FAILED and not outcome.retry
    history = py.app.tracker.runs("raiser", D)[0]
    assert history["status"] == Status.FAILED
    error = history["error"]
    assert "raiser (tests.test_python_callable:raiser) raised ZeroDivisionError" in error
    assert "cascade trigger --date 2025-03-12 --phase 2 --processor raiser" in error
    assert "Traceback" in error and "in raiser" in error and len(error) <= 2000
    assert len(py.alerts.alerts) == 1


def test_a_callable_raising_the_public_transient_error_is_retried_and_a_permanent_error_is_not(py):
    with pytest.raises(cascade.TransientError, match="must be retried; Pub/Sub will redeliver"):
        run(py, "unavailable")
    history = py.app.tracker.runs("unavailable", D)[0]
    assert history["status"] == Status.FAILED and "the feature store answered 503" in history["error"]
    permanent = run(py, "unusable").outcomes[0]
    assert permanent.status == Status.FAILED and not permanent.retry
    assert "the feature file of 2025-03-12 is truncated" in permanent.error


def test_a_python_processor_that_cannot_be_imported_is_a_permanent_error_naming_module_and_attribute(py):
    missing = run(py, "no_module").outcomes[0]
    assert missing.status == Status.FAILED and not missing.retry
    assert "cannot import module 'tests.no_such_module' (python: tests.no_such_module:build)" in missing.error
    no_attr = run(py, "no_attribute").outcomes[0]
    assert no_attr.status == Status.FAILED and not no_attr.retry
    assert "module 'tests.test_python_callable' has no attribute 'no_such_function'" in no_attr.error


def test_a_python_processor_may_read_only_declared_upstreams_within_their_declared_window(py):
    load_base(py, [D])
    undeclared = run(py, "undeclared_reader").outcomes[0]
    assert undeclared.status == Status.FAILED and not undeclared.retry
    assert "'py.big' is not a declared upstream; it may read ['py.base']" in undeclared.error
    early = run(py, "early_reader").outcomes[0]
    assert early.status == Status.FAILED
    assert "read of py.base for 2025-02-10..2025-03-12 is outside its declared window 2025-03-12..2025-03-12" \
        in early.error


def test_more_rows_than_the_parameter_bound_are_loaded_through_a_staging_table_and_one_merge(py):
    jobs = py.app.warehouse.stats.jobs
    outcome = run(py, "big").outcomes[0]
    assert outcome.status == Status.SUCCESS and outcome.record_count == STAGE_ABOVE_ROWS + 500
    assert py.app.warehouse.stats.jobs - jobs == 2  # the NDJSON load and the one MERGE
    assert len(py.rows("big", D)) == STAGE_ABOVE_ROWS + 500
    dataset = py.pipeline.dataset_id("py")
    assert not [t.table_id for t in py.app.warehouse.client.list_tables(f"{py.project}.{dataset}")
                if t.table_id.startswith("_staging")]
    # Re-running a new generation replaces the partition in place (no duplicates).
    gen = py.app.tracker.new_generation(D)
    py.deliver(py.trigger(D, phase=2, processors=["big"], generation=gen))
    assert len(py.rows("big", D)) == STAGE_ABOVE_ROWS + 500


# ---------------------------------------------------------------------- validation (no emulator)
PROC = from_dict(PY).processor("rolling")


@pytest.mark.parametrize("rows, fragment", [
    ([{"k": 1, "total": 2, "colour": "red"}], "row 0 has unknown column(s) ['colour']; the declared columns of "
                                                "py.rolling are ['d', 'k', 'total', 'window_start', 'run_id']"),
    ([{"k": 1, "total": "7"}], "row 0 column 'total' = '7' is not a valid INT64 (expected an int within int64"),
    ([{"k": 1, "total": 2.5}], "column 'total' = 2.5 is not a valid INT64"),
    ([{"k": True, "total": 1}], "column 'k' = True is not a valid INT64"),
    ([{"k": None, "total": 1}], "row 0 has NULL key column(s) ['k']"),
    ([{"k": 1}, {"k": 1}], "rows 0 and 1 have the same key {'k': 1}"),
    ([{"k": 1, "d": date(2025, 3, 11)}], "column 'd' = 2025-03-11 is not the partition's date 2025-03-12"),
    ([{"k": 1, "window_start": datetime(2025, 3, 1)}], "column 'window_start' = datetime.datetime(2025, 3, 1, 0, 0) "
                                                        "is not a valid DATE"),
    ([[1, 2]], "row 0 is a list, not a dict"),
    (None, "the callable returned NoneType; it must return an iterable of dicts"),
], ids=["unknown-column", "string-for-int", "float-for-int", "bool-for-int", "null-key", "duplicate-key",
        "other-date", "datetime-for-date", "not-a-dict", "none"])
def test_rows_that_do_not_fit_the_declared_table_are_refused_naming_processor_date_column_and_value(rows, fragment):
    with pytest.raises(InvalidRowsError) as err:
        validate_rows(PROC, D, rows)
    text = str(err.value)
    assert text.startswith("rolling 2025-03-12: ") and fragment in text
    assert "cascade trigger --date 2025-03-12 --phase 2 --processor rolling" in text
    assert not is_transient(err.value)


def test_rows_of_the_declared_types_are_shaped_to_the_table_with_the_partition_date():
    typed = from_dict({**PY, "processors": [PY["processors"][0], {
        "name": "typed", "phase": 2, "description": "every type", "python": "m:f",
        "output": {"table": "py.typed", "date_column": "d", "keys": ["k"],
                   "columns": {"d": "DATE", "k": "STRING", "i": "INT64", "f": "FLOAT64", "n": "NUMERIC", "b": "BOOL",
                               "day": "DATE", "ts": "TIMESTAMP"}}}]}).processor("typed")
    ts = datetime(2025, 3, 12, 8, 30, tzinfo=timezone.utc)
    [row] = validate_rows(typed, D, [{"k": "a", "i": 3, "f": 2, "n": Decimal("1.25"), "b": False, "day": "2025-01-02",
                                      "ts": "2025-03-12T08:30:00Z"}])
    assert row == {"d": D, "k": "a", "i": 3, "f": 2.0, "n": Decimal("1.25"), "b": False, "day": date(2025, 1, 2),
                   "ts": ts}
    for bad, fragment in [({"k": "a", "f": float("nan")}, "'f' = nan is not a valid FLOAT64"),
                          ({"k": "a", "ts": datetime(2025, 3, 12)}, "is not a valid TIMESTAMP (expected a timezone-aware"),
                          ({"k": "a", "b": 1}, "'b' = 1 is not a valid BOOL")]:
        with pytest.raises(InvalidRowsError, match=None) as err:
            validate_rows(typed, D, [bad])
        assert fragment in str(err.value)


@pytest.mark.parametrize("spec", ["features", "my.module", ":build", "my module:build", "a:b:c"])
def test_a_python_processor_must_name_its_callable_as_module_colon_attribute(spec):
    raw = copy.deepcopy(PY)
    raw["processors"][1]["python"] = spec
    with pytest.raises(DefinitionError) as err:
        from_dict(raw)
    # Refused at load time (by the structural schema or the relation checks), naming processor and value.
    assert "processor 'rolling'" in str(err.value) and f"python: {spec}" in str(err.value).replace("'", "")


def test_a_processor_declaring_both_python_and_sql_is_refused():
    raw = copy.deepcopy(PY)
    raw["processors"][1]["sql"] = "SELECT 1"
    with pytest.raises(DefinitionError, match="declare exactly one of `sql`, `source`, `export` or `python`"):
        from_dict(raw)
