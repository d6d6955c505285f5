"""Export processors (publishing): write one date's query result as a JSON file to GCS.

``export: {gcs_json: "exports/predictions/{date}.json", sql: "SELECT ...", bucket: exports,
format: json_lines}`` runs the SELECT for the date and MERGEs a manifest row into the processor's
output table, so exports have run history and coverage like every other partition. The manifest row
is derived from the declared output columns: the date column plus any of ``path`` (the ``gs://``
URI), ``row_count``, ``bytes`` and ``sha256`` of the file (``pipeline.MANIFEST_FIELDS``; the
definition refuses other columns).

Where and how (both optional):

* ``bucket``: a bucket name stem, named like the raw bucket (``<project>-<namespace->stem``) and
  created with it by ``cascade up``; default: the raw bucket.
* ``format`` (``EXPORT_FORMATS``): ``envelope`` (default) ``{"date": "2025-01-15", "rows": [...]}``;
  ``json_array`` ``[{...}, {...}]``; ``json_lines`` one object per line, each line ending in ``\n``
  (an empty date is an empty file). Values are JSON: DATE / TIMESTAMP as ISO 8601 text, NUMERIC
  as numbers, NULL as ``null``; each row's keys are the SELECT's columns, in its order.

**Fenced like rows.** Only then is the file published, as
``gs://<bucket>/exports/predictions/2025-01-15.json``, so the file a reader sees is always the one
whose manifest row the current fence wrote (its sha256 matches):

* A run that lost its lease never gets there: its manifest MERGE is fenced out (``LeaseLostError``)
  and it uploads nothing.
* A run whose MERGE committed before it lost its lease, and that uploads late, is refused by the
  object itself: every published object carries the fence of the run that wrote it in its metadata
  (``cascade-fence``), and ``publish`` replaces it only from the same or a newer fence. The check and
  the write are one compare-and-set on real GCS: the upload carries ``if_generation_match`` with the
  generation that was checked (0: the object must not exist yet), and a concurrent publish makes it
  fail with 412 and look again. The local gcp-storage-emulator ignores generation preconditions (it
  keeps and returns custom metadata), so locally the fence check holds against a late run but not
  against two uploads racing between check and write.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from google.api_core import exceptions as gexc

from cascade.definition.model import Processor
from cascade.errors import LeaseLostError, TransientError
from cascade.runtime.processors.base import RunContext

CONTENT_TYPES = {"envelope": "application/json", "json_array": "application/json",
                 "json_lines": "application/x-ndjson"}
FENCE_METADATA = "cascade-fence"  # custom metadata of a published export: the fence of the run that wrote it
PUBLISH_TRIES = 5  # compare-and-set rounds before a run gives the publish up as contended (transient)


def _plain(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def render(rows: list[dict[str, Any]], day: date, fmt: str = "envelope") -> bytes:
    """The export file's bytes for ``rows`` of ``day`` in ``fmt`` (one of ``EXPORT_FORMATS``)."""
    plain = [{k: _plain(v) for k, v in r.items()} for r in rows]
    if fmt == "json_lines":
        return "".join(json.dumps(r) + "\n" for r in plain).encode()
    if fmt == "json_array":
        return json.dumps(plain).encode()
    return json.dumps({"date": day.isoformat(), "rows": plain}).encode()


def publish(bucket: Any, path: str, body: bytes, fence: int, *, processor: str, day: date,
            content_type: str = "application/json") -> None:
    """Publish ``body`` as ``path`` in ``bucket`` (a ``google.cloud.storage`` Bucket) for a run holding
    ``fence``, unless a run with a newer fence already published it (``LeaseLostError``, nothing
    changed). An object without the fence metadata (written before exports were fenced) counts as older."""
    for _ in range(PUBLISH_TRIES):
        current = bucket.get_blob(path)
        generation = 0  # the object must not exist yet
        if current is not None:
            theirs = _fence_of(current)
            if theirs > fence:
                raise LeaseLostError(
                    f"{processor} {day.isoformat()}: gs://{bucket.name}/{path} was already published by a newer run "
                    f"(fence {theirs}); this run (fence {fence}) lost its lease and must not replace it",
                    processor=processor, date=day.isoformat(), published_fence=theirs, fence=fence)
            generation = int(current.generation)
        blob = bucket.blob(path)
        blob.metadata = {FENCE_METADATA: str(fence)}
        try:
            blob.upload_from_string(body, content_type=content_type, if_generation_match=generation)
            return
        except gexc.PreconditionFailed:
            continue  # another run published between the check and the write: check again
    raise TransientError(f"{processor} {day.isoformat()}: gs://{bucket.name}/{path} changed under every one of "
                         f"{PUBLISH_TRIES} publish attempts; will retry", processor=processor, date=day.isoformat())


def _fence_of(blob: Any) -> int:
    try:
        return int((blob.metadata or {}).get(FENCE_METADATA, -1))
    except (TypeError, ValueError):
        return -1


class GcsJsonExport:
    def run(self, ctx: RunContext, proc: Processor, day: date) -> int:
        assert proc.export is not None
        rows = ctx.warehouse.export_rows(proc, day)
        bucket = ctx.pipeline.export_bucket(proc, ctx.project)
        path = str(proc.export["gcs_json"]).format(date=day.isoformat())
        fmt = str(proc.export.get("format") or "envelope")
        data = render([dict(r.items()) for r in rows], day, fmt)
        facts = {"path": f"gs://{bucket}/{path}", "row_count": len(rows), "bytes": len(data),
                 "sha256": hashlib.sha256(data).hexdigest(), proc.output.date_column: day}
        manifest = {c: facts[c] for c in proc.output.column_names}
        # The manifest first, fenced: a run that lost its lease stops here (LeaseLostError).
        ctx.warehouse.merge_rows(proc, day, [manifest], ctx.run_id, ctx.fence)
        publish(ctx.storage.bucket(bucket), path, data, ctx.fence, processor=proc.name, day=day,
                content_type=CONTENT_TYPES[fmt])
        return len(rows)
