"""Raw load processors (phase 2): read one date's scraped JSON file from GCS and MERGE its records.

The definition's ``source`` says where: ``{gcs_json: "nbacom/schedule/{date}.json", records: games}``
means ``gs://<raw bucket>/nbacom/schedule/2025-01-15.json``, list under key ``games``. Each record
is shaped to the declared columns (unknown fields dropped, the date column set to the partition
date, values coerced strictly to the declared types); a value that does not fit its type, or two
records with the same MERGE keys, fail the partition permanently (``InvalidSourceError``) with a
message naming the file, the record, the field, the value and what the type accepts.

Coercion of one JSON value (``null`` is NULL for every type):

=========  ===============================================================================
type       accepts
=========  ===============================================================================
STRING     strings; numbers and booleans as their JSON text (``12`` -> ``"12"``); not objects/lists
INT64      integers, integral floats and strings (``12``, ``12.0``, ``"12"``); not ``3.7``, ``"3.7"``,
           booleans or values outside int64
FLOAT64    numbers and numeric strings (``"3.5"``); not booleans or other strings
NUMERIC    as FLOAT64, finite only
BOOL       ``true``/``false``, the strings ``"true"``/``"false"`` (any case), ``0``/``1``
DATE       ``YYYY-MM-DD`` strings of a real date
TIMESTAMP  ISO 8601 strings with a time (``2025-01-15T19:30:00Z``)
=========  ===============================================================================
"""

from __future__ import annotations

import json
import math
import re
from datetime import date, datetime
from typing import Any, Callable

from google.api_core import exceptions as gexc

from ..errors import InvalidSourceError, ProcessorError
from ..pipeline import Processor
from .base import RunContext

_INTEGER_TEXT = re.compile(r"[+-]?\d{1,19}")
_NUMBER_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_DATE_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}")
_BOOL_TEXT = {"true": True, "false": False}
MAX_DUPLICATES_SHOWN = 10


class _Reject(ValueError):
    """A JSON value that its declared column type does not accept."""


def _string(v: Any) -> str:
    if isinstance(v, (dict, list)):
        raise _Reject
    return v if isinstance(v, str) else json.dumps(v)


def _int64(v: Any) -> int:
    if isinstance(v, bool):
        raise _Reject
    if isinstance(v, str):
        text = v.strip()
        v = int(text) if _INTEGER_TEXT.fullmatch(text) else _number(text)
    if isinstance(v, float):
        if not v.is_integer():
            raise _Reject
        v = int(v)
    if not isinstance(v, int) or not -2**63 <= v < 2**63:
        raise _Reject
    return v


def _number(v: Any) -> float:
    if isinstance(v, bool):
        raise _Reject
    if isinstance(v, str):
        if not _NUMBER_TEXT.fullmatch(v.strip()):
            raise _Reject
        v = float(v)
    if not isinstance(v, (int, float)):
        raise _Reject
    return float(v)


def _numeric(v: Any) -> float:
    number = _number(v)
    if not math.isfinite(number):
        raise _Reject
    return number


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in _BOOL_TEXT:
        return _BOOL_TEXT[v.lower()]
    if isinstance(v, int) and v in (0, 1):
        return v == 1
    raise _Reject


def _date(v: Any) -> date:
    if not isinstance(v, str) or not _DATE_TEXT.fullmatch(v):
        raise _Reject
    return date.fromisoformat(v)


def _timestamp(v: Any) -> str:
    if not isinstance(v, str) or "T" not in v.upper() and " " not in v:
        raise _Reject
    datetime.fromisoformat(v)
    return v


# Declared column type -> (strict coercion of one JSON value, what it accepts, for the error).
_COERCE: dict[str, tuple[Callable[[Any], Any], str]] = {
    "STRING": (_string, "a string (or a number/boolean), not an object or list"),
    "INT64": (_int64, "an integer such as 12, 12.0 or \"12\" (no fraction, within int64)"),
    "FLOAT64": (_number, "a number or numeric string such as 3.5 or \"3.5\" (not a boolean)"),
    "NUMERIC": (_numeric, "a finite number or numeric string such as 3.5 (not a boolean)"),
    "BOOL": (_bool, "true/false, \"true\"/\"false\" (any case) or 0/1"),
    "DATE": (_date, "a date string YYYY-MM-DD"),
    "TIMESTAMP": (_timestamp, "an ISO 8601 timestamp string such as 2025-01-15T19:30:00Z"),
}


def coerce(typ: str, value: Any) -> Any:
    """``value`` (from JSON) as a ``typ`` column value; ``ValueError`` naming what ``typ`` accepts."""
    convert, accepted = _COERCE[typ]
    if value is None:
        return None
    try:
        return convert(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"expected {accepted}") from exc


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
        if not isinstance(records, list):
            raise InvalidSourceError(f"raw file {uri}: {proc.source.get('records')!r} is not a list of records",
                                     processor=proc.name, date=day.isoformat(), uri=uri)
        rows = [self._shape(proc, day, rec, uri, i) for i, rec in enumerate(records)]
        _refuse_duplicate_keys(proc, day, rows, uri)
        return ctx.warehouse.merge_rows(proc, day, rows, ctx.run_id, ctx.fence)

    @staticmethod
    def _shape(proc: Processor, day: date, rec: Any, uri: str, index: int) -> dict[str, Any]:
        where = dict(processor=proc.name, date=day.isoformat(), uri=uri, record=index)
        if not isinstance(rec, dict):
            raise InvalidSourceError(f"{uri}: record {index} is not an object; fix the file and re-trigger phase "
                                     f"{proc.phase} for {day.isoformat()}", **where)
        row: dict[str, Any] = {}
        for col, typ in proc.output.columns:
            if col == proc.output.date_column:
                row[col] = day
                continue
            value = rec.get(col)
            try:
                row[col] = coerce(typ, value)
            except ValueError as exc:
                raise InvalidSourceError(
                    f"{uri}: record {index} field {col!r} = {_show(value)} is not a valid {typ} ({exc}); fix the "
                    f"file and re-trigger phase {proc.phase} for {day.isoformat()}", field=col, **where) from exc
        missing = [k for k in proc.output.keys if row.get(k) is None]
        if missing:
            raise InvalidSourceError(f"{uri}: record {index} lacks key fields {missing}; fix the file and re-trigger "
                                     f"phase {proc.phase} for {day.isoformat()}", **where)
        return row


def _refuse_duplicate_keys(proc: Processor, day: date, rows: list[dict[str, Any]], uri: str) -> None:
    """Two records of one file with the same MERGE keys: which one is the truth is unknowable, so the
    partition fails (a MERGE would insert both on a first load and fail on a later one)."""
    keys = [k for k in proc.output.merge_keys if k != proc.output.date_column]
    seen: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        seen.setdefault(tuple(row[k] for k in keys), []).append(i)
    dupes = [(key, idx) for key, idx in seen.items() if len(idx) > 1]
    if not dupes:
        return
    shown = "; ".join(", ".join(f"{k}={v!r}" for k, v in zip(keys, key)) + f" (records {idx})"
                      for key, idx in dupes[:MAX_DUPLICATES_SHOWN])
    more = f"; and {len(dupes) - MAX_DUPLICATES_SHOWN} more" if len(dupes) > MAX_DUPLICATES_SHOWN else ""
    raise InvalidSourceError(f"{uri}: {len(dupes)} duplicate key(s) {keys}: {shown}{more}; each key must appear "
                             f"once per file - fix the file and re-trigger phase {proc.phase} for {day.isoformat()}",
                             processor=proc.name, date=day.isoformat(), uri=uri)


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
