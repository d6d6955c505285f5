"""Export processors (publishing): write one date's query result as a JSON file to GCS.

``export: {gcs_json: "exports/predictions/{date}.json", sql: "SELECT ..."}`` runs the SELECT for
the date, writes ``gs://<bucket>/exports/predictions/2025-01-15.json`` as
``{"date": ..., "rows": [...]}`` (overwritten on a re-run: the file is a pure function of the
data), then MERGEs a manifest row into the processor's output table, so exports have run history
and coverage like every other partition. The manifest row is derived from the declared output
columns: the date column plus any of ``path`` (the ``gs://`` URI), ``row_count``, ``bytes`` and
``sha256`` of the file (``pipeline.MANIFEST_FIELDS``; the definition refuses other columns).
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from google.cloud import bigquery

from ..pipeline import Processor
from .base import RunContext


def _plain(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


class GcsJsonExport:
    def run(self, ctx: RunContext, proc: Processor, day: date) -> int:
        assert proc.export is not None
        start, _ = proc.window(day, ctx.pipeline.calendar)
        rows = ctx.warehouse.query(ctx.pipeline.render_sql(proc, ctx.project), [
            bigquery.ScalarQueryParameter("data_date", "DATE", day),
            bigquery.ScalarQueryParameter("window_start", "DATE", start)])
        bucket = ctx.pipeline.bucket(ctx.project)
        path = str(proc.export["gcs_json"]).format(date=day.isoformat())
        body = json.dumps({"date": day.isoformat(), "rows": [{k: _plain(v) for k, v in r.items()} for r in rows]})
        ctx.storage.bucket(bucket).blob(path).upload_from_string(body, content_type="application/json")
        facts = {"path": f"gs://{bucket}/{path}", "row_count": len(rows), "bytes": len(body.encode()),
                 "sha256": hashlib.sha256(body.encode()).hexdigest(), proc.output.date_column: day}
        manifest = {c: facts[c] for c in proc.output.column_names}
        ctx.warehouse.merge_rows(proc, day, [manifest], ctx.run_id, ctx.fence)
        return len(rows)
