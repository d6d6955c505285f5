"""Tests of the __PIPELINE__ pipeline: the definition lints clean, the Python processor computes trends."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from types import SimpleNamespace

import __MODULE__ as processors

from cascade.lint import lint

HERE = Path(__file__).resolve().parent


def test_the_definition_lints_clean_including_its_sql():
    report = lint(HERE / "pipeline.yaml")
    assert report.ok, report.render()


def test_store_trends_compares_each_store_with_its_window():
    day = date(2025, 1, 3)
    rows = [{"sale_date": date(2025, 1, 1), "store_id": "S01", "revenue": 100.0},
            {"sale_date": date(2025, 1, 2), "store_id": "S01", "revenue": 50.0},
            {"sale_date": day, "store_id": "S01", "revenue": 150.0},
            {"sale_date": day, "store_id": "S02", "revenue": 80.0}]
    ctx = SimpleNamespace(data_date=day, read=lambda table: rows,
                          log=SimpleNamespace(info=lambda *a, **k: None))
    out = {r["store_id"]: r for r in processors.store_trends(ctx)}
    assert out["S01"] == {"store_id": "S01", "revenue": 150.0, "avg_revenue_7d": 100.0, "days_in_window": 3,
                          "trend": 1.5}
    assert out["S02"]["trend"] == 1.0


def test_sample_files_are_served_and_other_dates_generated_deterministically():
    sample = processors.day_files(date(2025, 1, 1))["orders/{date}.json"]
    assert sample["orders"] and sample["date"] == "2025-01-01"
    assert processors.day_files(date(2025, 2, 1)) == processors.day_files(date(2025, 2, 1))
