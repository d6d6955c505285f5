"""The worked example (``pipelines/weather.yaml``, docs/worked-example.md): every definition key used,
run end to end on the emulators in strict mode, and the export options it shows (bucket, format)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from datetime import date, timedelta
from typing import Any

import pytest
import yaml

from cascade.definition import schema as definition_schema
from cascade.definition.imports import import_callable
from cascade.definition.loading import DEFAULT_DEFINITION, from_dict, load
from cascade.errors import DefinitionError
from cascade.runtime.processors.gcs_export import render
from cascade.state.status import Status

WEATHER = DEFAULT_DEFINITION.parent / "weather.yaml"
HISTORY_START = date(2025, 3, 3)  # calendar.history_start, a Monday


def _tokens(path: str) -> list[str]:
    return [t for t in re.split(r"\.|(?=\[\])|(?<=\[\])", path) if t]


def _present(value: Any, tokens: list[str]) -> bool:
    """Does ``value`` (the loaded YAML) hold something at the declared path ``tokens``?"""
    if not tokens:
        return True
    head, rest = tokens[0], tokens[1:]
    if head == "[]":
        return isinstance(value, list) and any(_present(v, rest) for v in value)
    if head == "<name>":
        return isinstance(value, dict) and any(_present(v, rest) for v in value.values())
    return isinstance(value, dict) and head in value and _present(value[head], rest)


def test_the_worked_example_runs_end_to_end_and_uses_every_definition_key(make_harness):
    raw = yaml.safe_load(WEATHER.read_text())
    unused = [p for p, _ in definition_schema.declared_paths() if not _present(raw, _tokens(p))]
    assert unused == [], f"the worked example does not use {unused}"

    h = make_harness(pipeline_file=str(WEATHER))
    days = [HISTORY_START + timedelta(days=i) for i in range(3)]
    assert h.write_raw(days[0], days[-1]) == 3 * 3  # bulletin, readings and catalog of each date
    names = [p.name for p in h.pipeline.processors]
    for day in days:
        seen = h.pump(h.trigger(day, phase=1))  # daily mode: strict mode on
        assert [len(seen[n]) for n in (1, 2, 3)] == [0, 1, 1], day
        states = h.app.tracker.partitions(names, [day])
        # heavy_rain declares its own history start, a day after the pipeline's: skipped on that date.
        expected = {n: Status.SKIPPED if n == "heavy_rain" and day < date(2025, 3, 4) else Status.SUCCESS for n in names}
        assert {n: s.status for (n, _), s in states.items()} == expected, day

    last = days[-1]
    # The raw generator's str body (the catalog) and dict body (the readings) both loaded.
    assert {r["station_name"] for r in h.rows("station_catalog", last)} >= {"Chamonix", "Brest-Guipavas"}
    # The Python processor read a window that includes the run's date and stops at the history start
    # (3 of its 7 expected dates), and matches a recomputation from the SQL processor's rows.
    daily = {d: {r["station_id"]: r["temp_mean"] for r in h.rows("station_daily", d)} for d in days}
    anomaly = {r["station_id"]: r for r in h.rows("station_anomaly", last)}
    assert sorted(anomaly) == ["BRE03", "CHX04", "LYS02", "PAR01"]
    for station, row in anomaly.items():
        values = [daily[d][station] for d in days]
        mean = sum(values) / 3
        spread = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
        assert row["window_days"] == 3 and abs(row["window_mean"] - round(mean, 2)) < 1e-9
        assert abs(row["z_score"] - round((daily[last][station] - mean) / spread, 3)) < 1e-9
    # network_week reads station_daily for the 7 days until the day before: from the history start on,
    # the rain of the two earlier dates - a short window by declaration, recorded with its checks.
    assert "short window by declaration" in json.dumps(h.app.tracker.partition("network_week", last).raw, default=str)
    [week] = h.rows("network_week", last)
    earlier = sum(r["rain_mm"] for d in days[:2] for r in h.rows("station_daily", d))
    assert week["stations"] == 4 and abs(week["rain_7d_mm"] - round(earlier, 1)) < 0.05
    # The export went to its own bucket as JSON lines, and its manifest row describes that file.
    [manifest] = h.rows("daily_export", last)
    bucket = f"{h.project}-{h.namespace}-weather-public"
    assert manifest["path"] == f"gs://{bucket}/daily/{last.isoformat()}.jsonl"
    body = h.app.storage.bucket(bucket).blob(f"daily/{last.isoformat()}.jsonl").download_as_bytes()
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert [r["station_id"] for r in lines] == ["BRE03", "CHX04", "LYS02", "PAR01"]
    assert manifest["row_count"] == 4 and manifest["bytes"] == len(body)
    assert manifest["sha256"] == hashlib.sha256(body).hexdigest()
    assert h.app.storage.bucket(h.pipeline.bucket(h.project)).get_blob(f"daily/{last.isoformat()}.jsonl") is None


def test_an_export_writes_json_lines_to_its_declared_bucket(make_harness):
    h = make_harness(pipeline_file=str(WEATHER))
    day = HISTORY_START
    h.write_raw(day, day)
    h.pump(h.trigger(day, phase=1))
    proc = h.pipeline.processor("daily_export")
    assert proc.export["format"] == "json_lines"
    bucket = h.pipeline.export_bucket(proc, h.project)
    assert bucket != h.pipeline.bucket(h.project) and bucket.endswith("-weather-public")
    blob = h.app.storage.bucket(bucket).get_blob(f"daily/{day.isoformat()}.jsonl")
    assert blob is not None and blob.content_type == "application/x-ndjson"
    text = blob.download_as_bytes().decode()
    assert text.endswith("\n") and len(text.splitlines()) == 4
    assert all(set(json.loads(line)) == {"station_id", "station_name", "temp_min", "temp_max", "rain_mm", "z_score"}
               for line in text.splitlines())


def test_export_formats_lay_out_the_same_rows_as_an_envelope_an_array_or_json_lines():
    rows = [{"station_id": "PAR01", "obs_date": date(2025, 3, 5), "rain_mm": 1.5},
            {"station_id": "LYS02", "obs_date": date(2025, 3, 5), "rain_mm": None}]
    plain = [{"station_id": "PAR01", "obs_date": "2025-03-05", "rain_mm": 1.5},
             {"station_id": "LYS02", "obs_date": "2025-03-05", "rain_mm": None}]
    day = date(2025, 3, 5)
    assert json.loads(render(rows, day)) == {"date": "2025-03-05", "rows": plain}
    assert json.loads(render(rows, day, "json_array")) == plain
    assert [json.loads(x) for x in render(rows, day, "json_lines").decode().splitlines()] == plain
    assert render([], day, "json_lines") == b""


def test_an_export_format_or_path_the_loader_cannot_write_is_refused():
    raw = yaml.safe_load(WEATHER.read_text())
    export = next(p for p in raw["processors"] if p["name"] == "daily_export")["export"]
    export["format"] = "csv"
    with pytest.raises(DefinitionError, match="format"):
        from_dict(raw)
    export["format"] = "json_array"
    export["gcs_json"] = "daily/latest.json"
    with pytest.raises(DefinitionError, match=r"\{date\}"):
        from_dict(raw)


def test_the_worked_example_raw_generator_keeps_its_contract():
    p = load(WEATHER, namespace="")
    day_files = import_callable(p, p.synthetic)  # weather_stations:day_files, beside the definition
    files = day_files(HISTORY_START)
    declared = {str(x.source["gcs_json"]) for x in p.processors if x.source}
    assert set(files) <= declared  # keys are declared path patterns, {date} unrendered
    assert isinstance(files["stations/catalog/{date}.json"], str)  # a str body is the JSON text itself
    assert json.loads(files["stations/catalog/{date}.json"])["stations"]
    by_station: dict[str, int] = defaultdict(int)
    for r in files["stations/readings/{date}.json"]["readings"]:
        by_station[r["station_id"]] += 1
        assert r["observed_at"].endswith("+01:00")
    assert dict(by_station) == {s: 8 for s in ("PAR01", "LYS02", "BRE03", "CHX04")}
