"""Raw load processors (phase 2): read one date's scraped JSON file from GCS and MERGE its records.

The definition's ``source`` says where: ``{gcs_json: "nbacom/schedule/{date}.json", records: games}``
means ``gs://<raw bucket>/nbacom/schedule/2025-01-15.json``, list under key ``games``. Each record
is shaped to the declared columns (unknown fields dropped, the date column set to the partition
date, values coerced to the declared types); a record that cannot be coerced fails the partition
with a message naming the file, the record and the field.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from google.api_core import exceptions as gexc

from ..errors import ProcessorError
from ..pipeline import Processor
from .base import RunContext

# Declared column type -> coercion of one JSON value.
_COERCE = {
    "STRING": str,
    "INT64": int,
    "FLOAT64": float,
    "NUMERIC": float,
    "BOOL": bool,
    "DATE": lambda v: date.fromisoformat(str(v)),
    "TIMESTAMP": str,
}


def raw_path(proc: Processor, day: date) -> str:
    assert proc.source is not None
    return str(proc.source["gcs_json"]).format(date=day.isoformat())


class GcsJsonLoad:
    def run(self, ctx: RunContext, proc: Processor, day: date) -> int:
        bucket = ctx.pipeline.bucket(ctx.project)
        path = raw_path(proc, day)
        uri = f"gs://{bucket}/{path}"
        try:
            payload = ctx.storage.bucket(bucket).blob(path).download_as_bytes()
        except gexc.NotFound as exc:
            raise ProcessorError(
                f"raw file {uri} not found; re-run the scraper for {day.isoformat()} and re-trigger phase {proc.phase}",
                processor=proc.name, date=day.isoformat(), uri=uri) from exc
        try:
            records = json.loads(payload)[proc.source.get("records", "records")]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProcessorError(f"raw file {uri} is not a JSON object with a {proc.source.get('records')!r} list: {exc}",
                                 processor=proc.name, date=day.isoformat(), uri=uri) from exc
        rows = [self._shape(proc, day, rec, uri, i) for i, rec in enumerate(records)]
        return ctx.warehouse.merge_rows(proc, day, rows, ctx.run_id)

    @staticmethod
    def _shape(proc: Processor, day: date, rec: Any, uri: str, index: int) -> dict[str, Any]:
        if not isinstance(rec, dict):
            raise ProcessorError(f"{uri}: record {index} is not an object", processor=proc.name, date=day.isoformat())
        row: dict[str, Any] = {}
        for col, typ in proc.output.columns:
            if col == proc.output.date_column:
                row[col] = day
                continue
            value = rec.get(col)
            try:
                row[col] = None if value is None else _COERCE[typ](value)
            except (TypeError, ValueError) as exc:
                raise ProcessorError(f"{uri}: record {index} field {col!r}={value!r} is not {typ}",
                                     processor=proc.name, date=day.isoformat()) from exc
        missing = [k for k in proc.output.keys if row.get(k) is None]
        if missing:
            raise ProcessorError(f"{uri}: record {index} lacks key fields {missing}", processor=proc.name,
                                 date=day.isoformat())
        return row
