"""The warehouse's named reads, rendered without an engine: a recording client keeps each statement
with its query parameters.

Each read is one statement; its identifiers are the definition's (the namespaced table id, declared
columns); every value - a date, a gate's bound - is a query parameter, and a date never appears in
the text; the user's own SQL (a ``sql`` gate, an export's SELECT) is wrapped as the definition
renders it.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import pytest

from cascade.definition.loading import from_dict
from cascade.lint.sql import RecordingClient
from cascade.runtime.warehouse import Warehouse
from cascade.runtime.warehouse import sql as statements

DAY = date(2025, 3, 10)
START, END = date(2025, 3, 1), date(2025, 3, 10)
PROJECT = "proj"

SHOP = {
    "pipeline": "shop", "description": "warehouse SQL tests", "raw_bucket": "shop",
    "calendar": {"timezone": "UTC", "seasons": [{"name": "all", "start": "2025-01-01", "end": "2025-12-31"}]},
    "phases": [{"number": 1, "name": "orders", "next": 2}, {"number": 2, "name": "publish"}],
    "processors": [
        {"name": "orders", "phase": 1, "description": "rows of a callable", "python": "tests.test_warehouse_sql:rows",
         "output": {"table": "shop.orders", "date_column": "order_date", "keys": ["order_date", "order_id"],
                    "critical": ["amount", "note"],
                    "columns": {"order_date": "DATE", "order_id": "INT64", "amount": "FLOAT64", "note": "STRING"}},
         "gates": [{"row_count": {"within_pct_of_trailing_median": 50, "days": 3}},
                   {"not_null": ["amount", "note"]},
                   {"range": {"column": "amount", "min": 0.5, "max": 987.25}},
                   {"sql": "SELECT order_id FROM {shop.orders} WHERE order_date = @data_date AND note = 'bad'",
                    "name": "no_bad_notes"}]},
        {"name": "daily_file", "phase": 2, "description": "the day's orders as a file",
         "upstreams": [{"processor": "orders", "lookback_days": 2}],
         "export": {"gcs_json": "exports/{date}.json",
                    "sql": "SELECT order_id, amount FROM {shop.orders} "
                           "WHERE order_date BETWEEN @window_start AND @data_date"},
         "output": {"table": "shop.daily_files", "date_column": "file_date", "keys": ["path"],
                    "columns": {"file_date": "DATE", "path": "STRING", "row_count": "INT64"}}},
    ],
}


def rows(ctx):  # the orders processor's callable; never run here
    return []


@pytest.fixture()
def shop():
    pipeline = from_dict(SHOP).with_namespace("t1")
    client = RecordingClient()
    return pipeline, client, Warehouse(client, pipeline, PROJECT)  # type: ignore[arg-type]


def _gate(pipeline, kind):
    return next(g for g in pipeline.processor("orders").gates if g.kind == kind)


# Each named read of the warehouse, as called by the gates, the backfill validation, `cascade sample`
# and an export.
READS = {
    "gate_counts": lambda p, wh: wh.gate_counts(p.processor("orders"), list(p.processor("orders").gates[:3]), DAY,
                                                date(2025, 3, 7)),
    "null_sample": lambda p, wh: wh.null_sample(p.processor("orders"), DAY, ["amount", "note"], 5),
    "outside_sample": lambda p, wh: wh.outside_sample(p.processor("orders"), DAY, _gate(p, "range"), 5),
    "offending_rows": lambda p, wh: wh.offending_rows(p.processor("orders"), _gate(p, "sql"), DAY, 6),
    "duplicate_keys": lambda p, wh: wh.duplicate_keys(p.processor("orders").output, START, END),
    "null_counts": lambda p, wh: wh.null_counts(p.processor("orders").output, ["amount", "note"], START, END),
    "sample_rows": lambda p, wh: wh.sample_rows(p.processor("orders").output, DAY, 20),
    "export_rows": lambda p, wh: wh.export_rows(p.processor("daily_file"), DAY),
}


# The reads that wrap the user's own SQL (given both @data_date and @window_start).
USER_SQL = {"offending_rows", "export_rows"}


def _names(params: list[Any]) -> set[str]:
    return {p.name for p in params}


@pytest.mark.parametrize("read", sorted(READS))
def test_a_named_read_is_one_statement_whose_values_are_all_parameters(shop, read):
    pipeline, client, wh = shop
    READS[read](pipeline, wh)
    assert len(client.recorded) == 1
    sql, params = client.recorded[0]
    used = set(re.findall(r"@(\w+)", sql))
    assert used <= _names(params)  # none missing
    if read not in USER_SQL:  # the user's SQL may leave @window_start unused; the warehouse's uses all
        assert used == _names(params)
    for p in params:
        if p.type_ == "DATE":
            assert isinstance(p.value, date)
    assert not re.search(r"\d{4}-\d{2}-\d{2}", sql)  # no date inline, in any form
    assert "2025" not in sql


@pytest.mark.parametrize("read", sorted(READS))
def test_a_named_read_names_only_the_definition_s_tables(shop, read):
    pipeline, client, wh = shop
    READS[read](pipeline, wh)
    sql, _ = client.recorded[0]
    assert set(re.findall(r"`([^`]+)`", sql)) == {"proj.t1_shop.orders"}


def test_the_built_in_gates_are_one_grouped_count_with_the_range_bounds_as_parameters(shop):
    pipeline, client, wh = shop
    READS["gate_counts"](pipeline, wh)
    sql, params = client.recorded[0]
    assert sql == ("SELECT order_date AS d, COUNT(*) AS n, COUNTIF(amount IS NULL) AS g1_0, COUNTIF(note IS NULL) AS g1_1, "
                   "COUNTIF(amount IS NOT NULL AND (amount < @g2_min OR amount > @g2_max)) AS g2 "
                   "FROM `proj.t1_shop.orders` WHERE order_date BETWEEN @history_start AND @data_date GROUP BY order_date")
    assert {p.name: (p.type_, p.value) for p in params} == {
        "data_date": ("DATE", DAY), "history_start": ("DATE", date(2025, 3, 7)),
        "g2_min": ("FLOAT64", 0.5), "g2_max": ("FLOAT64", 987.25)}
    assert "987" not in sql


def test_a_failed_gate_s_sample_orders_by_the_keys_and_names_the_columns_it_judged(shop):
    pipeline, client, wh = shop
    READS["null_sample"](pipeline, wh)
    READS["outside_sample"](pipeline, wh)
    assert [sql for sql, _ in client.recorded] == [
        "SELECT order_id, amount, note FROM `proj.t1_shop.orders` WHERE order_date = @data_date "
        "AND (amount IS NULL OR note IS NULL) ORDER BY order_id LIMIT 5",
        "SELECT order_id, amount FROM `proj.t1_shop.orders` WHERE order_date = @data_date "
        "AND (amount IS NOT NULL AND (amount < @g0_min OR amount > @g0_max)) ORDER BY order_id LIMIT 5"]


def test_a_sql_gate_is_wrapped_as_the_definition_renders_it(shop):
    pipeline, client, wh = shop
    READS["offending_rows"](pipeline, wh)
    sql, params = client.recorded[0]
    assert sql == ("SELECT * FROM (\nSELECT order_id FROM `proj.t1_shop.orders` WHERE order_date = @data_date "
                   "AND note = 'bad'\n) AS offending LIMIT 6")
    assert {p.name: p.value for p in params} == {"data_date": DAY, "window_start": DAY}


def test_an_export_sends_its_select_as_rendered_with_its_window(shop):
    pipeline, client, wh = shop
    READS["export_rows"](pipeline, wh)
    sql, params = client.recorded[0]
    assert sql == pipeline.render_sql(pipeline.processor("daily_file"), PROJECT)
    assert {p.name: p.value for p in params} == {"data_date": DAY, "window_start": date(2025, 3, 8)}


def test_validation_counts_duplicate_keys_and_nulls_of_the_critical_columns_over_the_range(shop):
    pipeline, client, wh = shop
    READS["duplicate_keys"](pipeline, wh)
    assert READS["null_counts"](pipeline, wh) == {"amount": 0, "note": 0}
    assert [sql for sql, _ in client.recorded] == [
        "SELECT order_date, order_id, COUNT(*) AS n FROM `proj.t1_shop.orders` WHERE order_date BETWEEN @start "
        "AND @end GROUP BY order_date, order_id HAVING COUNT(*) > 1 ORDER BY n DESC LIMIT 20",
        "SELECT SUM(CASE WHEN amount IS NULL THEN 1 ELSE 0 END) AS amount, SUM(CASE WHEN note IS NULL THEN 1 ELSE 0 "
        "END) AS note FROM `proj.t1_shop.orders` WHERE order_date BETWEEN @start AND @end"]
    assert [{p.name: p.value for p in params} for _, params in client.recorded] == [{"start": START, "end": END}] * 2


def test_a_partition_sample_reads_the_declared_columns_in_key_order(shop):
    pipeline, client, wh = shop
    READS["sample_rows"](pipeline, wh)
    assert client.recorded[0][0] == ("SELECT order_date, order_id, amount, note FROM `proj.t1_shop.orders` "
                                 "WHERE order_date = @d ORDER BY order_date, order_id LIMIT 20")


def test_a_limit_is_an_integer_never_text(shop):
    pipeline, _, _ = shop
    table = pipeline.processor("orders").output
    assert statements.sample_rows("x.y.z", table, DAY, 7).sql.endswith(" LIMIT 7")
    with pytest.raises(ValueError):
        statements.sample_rows("x.y.z", table, DAY, "5; DROP TABLE x")  # type: ignore[arg-type]


def test_emptying_a_table_of_cascade_test_is_one_delete_of_that_table(shop):
    pipeline, client, wh = shop
    wh.delete_all_rows(pipeline.processor("orders").output)
    assert client.recorded == [("DELETE FROM `proj.t1_shop.orders` WHERE TRUE", [])]
