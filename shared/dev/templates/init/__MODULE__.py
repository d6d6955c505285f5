"""Python of the __PIPELINE__ pipeline (named in pipeline.yaml as ``__MODULE__:<function>``).

``store_trends(ctx)`` is a Python processor: Cascade calls it once per date with a context -
``ctx.data_date``, ``ctx.window_start``, ``ctx.read(table)`` (a declared upstream's rows within the
declared window) and ``ctx.log`` - and validates and MERGEs the rows it returns. To say how it
failed, it raises ``cascade.TransientError`` (retried later) or ``cascade.PermanentError`` (not).

``day_files(day)`` makes the raw files `cascade up --start S --end E` writes for local runs: the
samples in ``sample_data/`` when there is one for the date, otherwise deterministic orders.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any, Iterator

from cascade import PythonContext

SAMPLES = Path(__file__).resolve().parent / "sample_data"
STORES = ["S01", "S02", "S03"]
PRODUCTS = {"coffee": 4.5, "tea": 3.0, "cake": 5.5, "sandwich": 7.0}


def store_trends(ctx: PythonContext) -> Iterator[dict[str, Any]]:
    """Each store's revenue on the date, its average over the window (the date and the 6 days
    before; fewer at the start of the season) and the ratio of the two."""
    history: dict[str, list[float]] = defaultdict(list)
    today: dict[str, float] = {}
    for row in ctx.read("__PIPELINE___analytics.daily_store_sales"):
        history[row["store_id"]].append(row["revenue"] or 0.0)
        if row["sale_date"] == ctx.data_date:
            today[row["store_id"]] = row["revenue"] or 0.0
    ctx.log.info(f"{len(today)} stores sold on {ctx.data_date}")
    for store, revenue in sorted(today.items()):
        days = history[store]
        avg = round(sum(days) / len(days), 2)
        yield {"store_id": store, "revenue": revenue, "avg_revenue_7d": avg, "days_in_window": len(days),
               "trend": round(revenue / avg, 4) if avg else None}


def day_files(day: date) -> dict[str, dict[str, Any]]:
    """The raw files of ``day``: ``{"orders/{date}.json": {"date": ..., "orders": [...]}}``."""
    sample = SAMPLES / "orders" / f"{day.isoformat()}.json"
    if sample.is_file():
        return {"orders/{date}.json": json.loads(sample.read_text())}
    rng = random.Random(day.toordinal())
    orders = []
    for i in range(rng.randint(12, 30)):
        product = rng.choice(sorted(PRODUCTS))
        quantity = rng.randint(1, 4)
        orders.append({"order_id": f"{day.strftime('%Y%m%d')}-{i + 1:04d}", "store_id": rng.choice(STORES),
                       "product": product, "quantity": quantity, "amount": round(quantity * PRODUCTS[product], 2)})
    return {"orders/{date}.json": {"date": day.isoformat(), "orders": orders}}
