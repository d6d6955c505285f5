"""Python of the worked example (``pipelines/weather.yaml``): its raw-file generator and a Python processor.

``day_files`` is named by ``synthetic: weather_stations:day_files``: ``cascade up`` and the tests
write what it returns as the raw files of each expected date. ``station_anomaly`` is the
``python: weather_stations:station_anomaly`` processor. docs/worked-example.md spells out both
contracts.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterator

from cascade import PythonContext

# Four stations: id -> (name, altitude in metres, typical March temperature in degrees C).
STATIONS = {
    "PAR01": ("Paris-Montsouris", 75, 9.0),
    "LYS02": ("Lyon-Bron", 200, 10.0),
    "BRE03": ("Brest-Guipavas", 94, 10.5),
    "CHX04": ("Chamonix", 1042, 2.0),
}
HOURS = range(0, 24, 3)  # a reading every three hours
PARIS_WINTER = timezone(timedelta(hours=1))  # the readings' offset (the example's dates are in CET)


def day_files(day: date) -> dict[str, Any]:
    """The raw files of one expected date, deterministic in ``day``.

    ``day`` is a ``datetime.date``. Each key is a ``source.gcs_json`` pattern exactly as the
    definition declares it (``{date}`` unrendered). A body is a dict (written as JSON) or a str
    (written as it is). ``bulletins/{date}.json`` is not returned: Cascade derives it from the
    declared columns and ``source.synthetic``.
    """
    rng = random.Random(f"weather|{day.isoformat()}")
    readings = []
    for station, (_name, _alt, typical) in STATIONS.items():
        for hour in HOURS:
            diurnal = 4.0 * math.sin((hour - 9) / 24 * 2 * math.pi)
            observed = datetime(day.year, day.month, day.day, hour, tzinfo=PARIS_WINTER)
            readings.append({
                "station_id": station, "hour": hour,
                "temp_c": round(typical + diurnal + rng.gauss(0, 1.5), 1),
                "rain_mm": round(max(0.0, rng.gauss(0.5, 1.5)), 1),
                "observed_at": observed.isoformat(),  # an ISO 8601 TIMESTAMP with its offset
                "sensor": "v2",                       # not a declared column: dropped by the load
            })
    catalog = {"catalog_date": day.isoformat(),
               "stations": [{"station_id": s, "station_name": n, "altitude_m": a}
                            for s, (n, a, _t) in STATIONS.items()]}
    return {
        "stations/readings/{date}.json": {"reading_date": day.isoformat(), "readings": readings},
        "stations/catalog/{date}.json": json.dumps(catalog),  # a str body: already the JSON text
    }


def station_anomaly(ctx: PythonContext) -> Iterator[dict[str, Any]]:
    """Each station's mean temperature on ``ctx.data_date`` against the mean of its declared window.

    ``ctx.read`` returns a list of dicts, one per row of the upstream's table in its declared window
    (here the last 7 expected dates, the run's date included; fewer from the history start on), with
    the table's declared columns: ``obs_date`` is a ``datetime.date``, FLOAT64 a float, NULL None.
    The rows returned omit ``obs_date``: Cascade sets the date column to the run's date.
    """
    history: dict[str, list[float]] = defaultdict(list)
    today: dict[str, float] = {}
    for row in ctx.read("weather_stats.station_daily", columns=["obs_date", "station_id", "temp_mean"]):
        history[row["station_id"]].append(row["temp_mean"])
        if row["obs_date"] == ctx.data_date:  # a date, compared with the run's date
            today[row["station_id"]] = row["temp_mean"]
    ctx.log.info(f"{len(today)} stations on {ctx.data_date}", window_start=ctx.window_start.isoformat(),
                 window_end=ctx.window_end.isoformat())
    for station, temp in sorted(today.items()):
        values = history[station]
        mean = sum(values) / len(values)
        spread = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        yield {"station_id": station, "temp_mean": temp, "window_mean": round(mean, 2),
               "window_days": len(values), "z_score": round((temp - mean) / spread, 3) if spread else 0.0}
