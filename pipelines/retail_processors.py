"""Python processors of the retail reference pipeline (``pipelines/retail.yaml``).

Each callable receives Cascade's ``PythonContext`` and returns the partition's rows as dicts of the
declared output columns; Cascade validates and MERGEs them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterator

from cascade import PythonContext

ANOMALY_LOW, ANOMALY_HIGH = 0.5, 1.5


def store_demand_features(ctx: PythonContext) -> Iterator[dict[str, Any]]:
    """Each store's revenue on the date against its average over the declared 7-day window
    (the date and the 6 before it; fewer on the chain's first days)."""
    history: dict[str, list[float]] = defaultdict(list)
    today: dict[str, float] = {}
    for row in ctx.read("retail_features.store_daily_sales"):
        history[row["store_id"]].append(row["revenue"] or 0.0)
        if row["sale_date"] == ctx.data_date:
            today[row["store_id"]] = row["revenue"] or 0.0
    ctx.log.info(f"{len(today)} stores traded on {ctx.data_date}", window_start=ctx.window_start.isoformat())
    for store, revenue in sorted(today.items()):
        days = history[store]
        avg = round(sum(days) / len(days), 2)
        trend = round(revenue / avg, 4) if avg else None
        yield {"store_id": store, "revenue": revenue, "avg_revenue_7d": avg, "days_in_window": len(days),
               "revenue_trend": trend,
               "is_anomaly": trend is not None and not ANOMALY_LOW <= trend <= ANOMALY_HIGH}
