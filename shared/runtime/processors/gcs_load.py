"""Raw load processors (phase 2): read one date's scraped JSON file from GCS and MERGE its records.

The definition's ``source`` says where: ``{gcs_json: "nbacom/schedule/{date}.json", records: games}``
means ``gs://<raw bucket>/nbacom/schedule/2025-01-15.json``, list under key ``games``. Each record
is shaped to the declared columns (unknown fields dropped, the date column set to the partition
date, values coerced strictly to the declared types); a value that does not fit its type, or two
records with the same MERGE keys, fail the partition permanently (``InvalidSourceError``) with a
message naming the file, the record, the field, the value and what the type accepts - before
anything is written.

The file is read as a stream: it is downloaded to a temporary file, its records are parsed one at a
time (``iter_records``) and shaped on the way to ``Warehouse.write_rows``, which sends up to
``STAGE_ABOVE_ROWS`` rows as one ``@rows`` query parameter and streams a larger file through an NDJSON
staging table and the one MERGE (the same path as Python processors). Neither the file nor its rows
are ever held whole in memory.

Coercion of one JSON value (``null`` is NULL for every type):

=========  ===============================================================================
type       accepts
=========  ===============================================================================
STRING     strings; numbers and booleans as their JSON text (``12`` -> ``"12"``); not objects/lists
INT64      integers, integral floats and strings (``12``, ``12.0``, ``"12"``); not ``3.7``, ``"3.7"``,
           booleans or values outside int64
FLOAT64    finite numbers and numeric strings (``"3.5"``); not booleans, other strings, NaN or
           Infinity (JSON's ``NaN``/``Infinity`` literals, ``1e999``): no column allows them
NUMERIC    as FLOAT64
BOOL       ``true``/``false``, the strings ``"true"``/``"false"`` (any case), ``0``/``1``
DATE       ``YYYY-MM-DD`` strings of a real date
TIMESTAMP  ISO 8601 strings with a time and an offset (``2025-01-15T19:30:00Z``, ``...+01:00``); not
           naive ones (``2025-01-15T19:30:00``): which zone they meant is unknowable, never assumed UTC
=========  ===============================================================================
"""

from __future__ import annotations

import io
import json
import math
import re
import tempfile
from datetime import date, datetime
from typing import IO, Any, Callable, Iterator

from google.api_core import exceptions as gexc

from cascade.definition.model import Processor
from cascade.errors import InvalidSourceError, ProcessorError
from cascade.runtime.processors.base import RunContext

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
    if datetime.fromisoformat(v).utcoffset() is None:
        raise _Reject  # naive: the instant it names depends on a zone the file does not say
    return v


# Declared column type -> (strict coercion of one JSON value, what it accepts, for the error).
_COERCE: dict[str, tuple[Callable[[Any], Any], str]] = {
    "STRING": (_string, "a string (or a number/boolean), not an object or list"),
    "INT64": (_int64, "an integer such as 12, 12.0 or \"12\" (no fraction, within int64)"),
    "FLOAT64": (_numeric, "a finite number or numeric string such as 3.5 or \"3.5\" (not a boolean, NaN or Infinity)"),
    "NUMERIC": (_numeric, "a finite number or numeric string such as 3.5 (not a boolean)"),
    "BOOL": (_bool, "true/false, \"true\"/\"false\" (any case) or 0/1"),
    "DATE": (_date, "a date string YYYY-MM-DD"),
    "TIMESTAMP": (_timestamp, "an ISO 8601 timestamp string with an offset such as 2025-01-15T19:30:00Z or "
                              "2025-01-15T20:30:00+01:00 (a time without an offset is not assumed to be UTC)"),
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
        with tempfile.TemporaryFile() as raw:
            try:
                ctx.storage.bucket(bucket).blob(path).download_to_file(raw)
            except gexc.NotFound as exc:
                raise ProcessorError(
                    f"raw file {uri} not found: restore it (or re-run what writes it), then re-run {proc.name} "
                    f"for {day.isoformat()} (phase {proc.phase})", processor=proc.name, date=day.isoformat(),
                    uri=uri) from exc
            raw.seek(0)
            rows = self._rows(proc, day, raw, uri)
            return ctx.warehouse.write_rows(proc, day, rows, ctx.run_id, ctx.fence)

    def _rows(self, proc: Processor, day: date, raw: IO[bytes], uri: str) -> Iterator[dict[str, Any]]:
        """The file's records shaped to the declared columns, one at a time; a bad record, or (at the end)
        duplicate keys, raise ``InvalidSourceError`` before the consumer has written anything."""
        key = proc.source.get("records", "records")
        where = dict(processor=proc.name, date=day.isoformat(), uri=uri)
        keys = [k for k in proc.output.merge_keys if k != proc.output.date_column]
        seen: dict[tuple, list[int]] = {}
        try:
            for i, rec in enumerate(iter_records(raw, key)):
                row = self._shape(proc, day, rec, uri, i)
                seen.setdefault(tuple(row[k] for k in keys), []).append(i)
                yield row
        except _NotAList as exc:
            raise InvalidSourceError(f"raw file {uri}: {key!r} is not a list of records", **where) from exc
        except (ValueError, KeyError) as exc:
            raise ProcessorError(f"raw file {uri} is not a JSON object with a {key!r} list: {exc}", **where) from exc
        _refuse_duplicate_keys(proc, day, keys, seen, uri)

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


def _refuse_duplicate_keys(proc: Processor, day: date, keys: list[str], seen: dict[tuple, list[int]],
                           uri: str) -> None:
    """Two records of one file with the same MERGE keys: which one is the truth is unknowable, so the
    partition fails (a MERGE would insert both on a first load and fail on a later one)."""
    dupes = [(key, idx) for key, idx in seen.items() if len(idx) > 1]
    if not dupes:
        return
    shown = "; ".join(", ".join(f"{k}={v!r}" for k, v in zip(keys, key)) + f" (records {idx})"
                      for key, idx in dupes[:MAX_DUPLICATES_SHOWN])
    more = f"; and {len(dupes) - MAX_DUPLICATES_SHOWN} more" if len(dupes) > MAX_DUPLICATES_SHOWN else ""
    raise InvalidSourceError(f"{uri}: {len(dupes)} duplicate key(s) {keys}: {shown}{more}; each key must appear "
                             f"once per file - fix the file and re-trigger phase {proc.phase} for {day.isoformat()}",
                             processor=proc.name, date=day.isoformat(), uri=uri)


# ---------------------------------------------------------------------- streaming JSON
class _NotAList(ValueError):
    """The records key holds something other than a list."""


def iter_records(raw: IO[bytes], key: str, chunk: int = 1 << 16) -> Iterator[Any]:
    """The items of the list under ``key`` of the JSON object in the binary file ``raw``, parsed one
    at a time (memory: one item and a read buffer, never the whole file). ``ValueError`` for text that
    is not such an object (``KeyError`` when ``key`` is missing, ``_NotAList`` when it is not a list).
    Other keys' values are parsed and dropped; JSON's ``NaN``/``Infinity`` literals parse as floats
    (the column types refuse them)."""
    reader = _JsonReader(io.TextIOWrapper(raw, encoding="utf-8"), chunk)
    reader.expect("{")
    found = False
    if reader.peek() == "}":
        reader.expect("}")
    else:
        while True:
            name = reader.value()
            if not isinstance(name, str):
                raise ValueError(f"an object key must be a string, not {name!r}")
            reader.expect(":")
            if name == key and not found:
                found = True
                if reader.peek() != "[":
                    raise _NotAList(f"{key!r} holds {type(reader.value()).__name__}")
                reader.expect("[")
                if reader.peek() == "]":
                    reader.expect("]")
                else:
                    while True:
                        yield reader.value()
                        if reader.expect(",]") == "]":
                            break
            else:
                reader.value()
            if reader.expect(",}") == "}":
                break
    if reader.peek() != "":
        raise ValueError("extra data after the JSON object")
    if not found:
        raise KeyError(key)


class _JsonReader:
    """JSON values read one at a time from a text stream through a growing buffer."""

    def __init__(self, text: IO[str], chunk: int) -> None:
        self._text, self._chunk = text, chunk
        self._buf, self._pos, self._eof = "", 0, False
        self._decoder = json.JSONDecoder()

    def _more(self, at_least: int) -> bool:
        if self._eof:
            return False
        data = self._text.read(max(self._chunk, at_least))
        self._buf = self._buf[self._pos:] + data
        self._pos = 0
        self._eof = not data
        return bool(data)

    def peek(self) -> str:
        """The next non-space character ("" at the end), not consumed."""
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in " \t\r\n":
                self._pos += 1
            if self._pos < len(self._buf) or not self._more(0):
                return self._buf[self._pos:self._pos + 1]

    def expect(self, allowed: str) -> str:
        c = self.peek()
        if not c or c not in allowed:
            raise ValueError(f"expected one of {allowed!r}, found {c or 'the end of the file'!r}")
        self._pos += 1
        return c

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = self._decoder.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError:
                if self._more(len(self._buf)):  # an incomplete value: read more (doubling) and retry
                    continue
                raise
            if end == len(self._buf) and self._more(len(self._buf)):
                continue  # a number at the buffer's end may go on in the next chunk
            self._pos = end
            return value


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
