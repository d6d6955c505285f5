"""Python processors: a callable named in the definition computes one partition's rows.

``python: retail_processors:store_demand_features`` names ``store_demand_features`` in the module
``retail_processors`` (importable from ``PYTHONPATH`` or from the folder of the definition file).
Cascade calls it with a ``PythonContext`` - the data date, the lookback window, the run id, a
structured logger, and ``ctx.read(table, start=, end=)``: a parameterized read of a *declared
upstream's* table, limited to the window the definition declares for it (what strict mode checked).
It returns the partition's rows: an iterable of dicts (or anything with ``to_pylist()`` such as a
pyarrow Table, or a pandas DataFrame via ``to_dict("records")``).

Cascade then validates every row against the declared output columns and types (unknown columns,
NULL keys, duplicate keys and values of the wrong type are refused, naming processor, date, row,
column and value) and writes them with the same fenced, idempotent MERGE as every other kind: one
MERGE of the date partition (``Warehouse.write_rows``: up to ``STAGE_ABOVE_ROWS`` rows as one query
parameter, above it an NDJSON load into a staging table plus that one MERGE - the path raw loads take).

Typed values (``None`` is NULL for every type):

=========  =====================================================================================
type       accepts
=========  =====================================================================================
STRING     ``str``
INT64      ``int`` within int64 (not ``bool``, not ``float``)
FLOAT64    ``int`` or finite ``float`` (not ``bool``, not NaN/inf: return ``None`` for NULL)
NUMERIC    ``int``, finite ``float`` or ``Decimal``
BOOL       ``bool``
DATE       ``datetime.date`` (not a ``datetime``) or ``"YYYY-MM-DD"``
TIMESTAMP  a timezone-aware ``datetime`` or an ISO 8601 string with a time and offset
=========  =====================================================================================

A callable that raises fails the partition with its traceback (the last ``TRACEBACK_CHARS``
characters) in run history; it is retried only when its cause is transient (e.g. a BigQuery 5xx
inside ``ctx.read``). To say what its failure is, it raises ``cascade.TransientError`` (retried
later) or ``cascade.PermanentError`` (recorded failed, not retried). A callable that cannot be imported is a permanent error naming the module
and attribute. Lookbacks, strict mode, backfills, generations, leases and heartbeats are the
runner's, exactly as for SQL processors.
"""

from __future__ import annotations

import logging
import math
import traceback
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping

from cascade.definition import imports
from cascade.definition.model import Pipeline, Processor, Upstream
from cascade.errors import CascadeError, InvalidRowsError, PythonImportError, PythonProcessorError, UndeclaredReadError
from cascade.runtime import recovery
from cascade.runtime.logs import get_logger, log
from cascade.runtime.processors.base import RunContext
from cascade.runtime.warehouse import STAGE_ABOVE_ROWS  # above it: NDJSON load into a staging table + one MERGE

TRACEBACK_CHARS = 1400  # the run record's error keeps the message and the traceback's last frames
_INT64 = (-2**63, 2**63 - 1)

logger = get_logger("python_processor")


def load_callable(pipeline: Pipeline, proc: Processor) -> Callable[["PythonContext"], Any]:
    """Import ``proc.python`` (``module:attribute``); the definition's folder is importable too."""
    assert proc.python is not None
    module_name, _, attr = proc.python.partition(":")
    where = dict(processor=proc.name, module=module_name, attribute=attr)
    try:
        module = imports.import_module(pipeline, proc.python)
    except Exception as exc:  # noqa: BLE001 - ImportError, or the module's own import-time error
        raise PythonImportError(
            f"processor {proc.name}: cannot import module {module_name!r} (python: {proc.python}): "
            f"{type(exc).__name__}: {exc}. It must be importable by the phase function: on PYTHONPATH or in "
            f"the definition's folder, and in the deployed function source", **where) from exc
    try:
        obj = imports.attribute(module, proc.python)
    except AttributeError as exc:
        raise PythonImportError(
            f"processor {proc.name}: module {module_name!r} has no attribute {attr!r} (python: {proc.python}); "
            f"define it or fix the definition", **where) from exc
    if not callable(obj):
        raise PythonImportError(f"processor {proc.name}: {proc.python} is a {type(obj).__name__}, not a callable "
                                f"taking the context", **where)
    return obj


class ProcessorLogger:
    """Structured JSON logs labelled with the run (pipeline, processor, date, run id)."""

    def __init__(self, labels: dict[str, Any]) -> None:
        self._labels = labels

    def _log(self, level: int, message: str, fields: dict[str, Any]) -> None:
        log(logger, level, message, **{**fields, **self._labels})

    def debug(self, message: str, **fields: Any) -> None:
        self._log(logging.DEBUG, message, fields)

    def info(self, message: str, **fields: Any) -> None:
        self._log(logging.INFO, message, fields)

    def warning(self, message: str, **fields: Any) -> None:
        self._log(logging.WARNING, message, fields)

    def error(self, message: str, **fields: Any) -> None:
        self._log(logging.ERROR, message, fields)


@dataclass
class PythonContext:
    """What a Python processor's callable receives for one partition."""

    data_date: date
    window_start: date  # the processor's lookback window (union of its upstreams' windows), inclusive
    window_end: date
    run_id: str
    processor: str
    pipeline: str
    log: ProcessorLogger
    _proc: Processor = field(repr=False, default=None)  # type: ignore[assignment]
    _run: RunContext = field(repr=False, default=None)  # type: ignore[assignment]
    reads: list[dict[str, Any]] = field(default_factory=list)

    def upstream_window(self, table: str) -> tuple[date, date]:
        """The declared window (inclusive) of the upstream whose output is ``table`` (or named ``table``)."""
        return self._upstream(table)[0].window(self.data_date, self._run.pipeline.calendar)

    def read(self, table: str, start: date | None = None, end: date | None = None,
             columns: list[str] | None = None) -> list[dict[str, Any]]:
        """Rows (dicts of the declared columns) of a declared upstream's output ``table``
        (``dataset.table`` or the upstream processor's name) dated ``start``..``end`` inclusive;
        by default that upstream's whole declared window. Reading another table, or outside the
        window its lookback declares (what strict mode verified), is refused."""
        upstream, producer = self._upstream(table)
        w_start, w_end = upstream.window(self.data_date, self._run.pipeline.calendar)
        start, end = start or w_start, end or w_end
        if start < w_start or end > w_end or start > end:
            raise UndeclaredReadError(
                f"{self.processor} {self.data_date.isoformat()}: read of {producer.output.logical} for "
                f"{start.isoformat()}..{end.isoformat()} is outside its declared window "
                f"{w_start.isoformat()}..{w_end.isoformat()}; declare the lookback it needs on the upstream "
                f"{producer.name!r} (lookback_days / lookback_dates) in the definition",
                processor=self.processor, date=self.data_date.isoformat(), table=producer.output.logical)
        try:
            rows = self._run.warehouse.read_rows(producer.output, start, end, columns)
        except ValueError as exc:
            raise UndeclaredReadError(f"{self.processor} {self.data_date.isoformat()}: {exc}",
                                      processor=self.processor, date=self.data_date.isoformat()) from exc
        self.reads.append({"table": producer.output.logical, "start": start.isoformat(), "end": end.isoformat(),
                           "rows": len(rows)})
        return rows

    def read_arrow(self, table: str, start: date | None = None, end: date | None = None,
                   columns: list[str] | None = None) -> Any:
        """``read`` as a pyarrow Table (only when pyarrow is installed)."""
        import pyarrow  # noqa: PLC0415 - optional dependency

        return pyarrow.Table.from_pylist(self.read(table, start, end, columns))

    def _upstream(self, table: str) -> tuple[Upstream, Processor]:
        pipeline = self._run.pipeline
        for u in self._proc.upstreams:
            producer = pipeline.processor(u.processor)
            if table in (producer.output.logical, producer.name):
                return u, producer
        declared = [pipeline.processor(u.processor).output.logical for u in self._proc.upstreams]
        raise UndeclaredReadError(
            f"{self.processor} {self.data_date.isoformat()}: {table!r} is not a declared upstream; it may read "
            f"{declared}. Declare the processor that writes it under `upstreams:` (so strict mode checks it)",
            processor=self.processor, date=self.data_date.isoformat(), table=table)


class PythonProcessor:
    def run(self, ctx: RunContext, proc: Processor, day: date) -> int:
        fn = load_callable(ctx.pipeline, proc)
        start, end = proc.window(day, ctx.pipeline.calendar)
        labels = dict(pipeline=ctx.pipeline.name, phase=proc.phase, processor=proc.name, date=day.isoformat(),
                      run_id=ctx.run_id)
        pctx = PythonContext(day, start, end, ctx.run_id, proc.name, ctx.pipeline.name, ProcessorLogger(labels),
                             proc, ctx)
        try:
            produced = _materialize(fn(pctx))
        except CascadeError:
            raise  # Cascade's own refusals (an undeclared read ...) already name processor and date
        except Exception as exc:  # noqa: BLE001 - any error of the user's code fails the partition
            raise PythonProcessorError(_raised(proc, day, exc), processor=proc.name, date=day.isoformat()) from exc
        rows = validate_rows(proc, day, produced)
        log(logger, logging.INFO, f"{proc.name} {day.isoformat()}: callable returned {len(rows)} rows",
            reads=pctx.reads, **labels)
        return ctx.warehouse.write_rows(proc, day, rows, ctx.run_id, ctx.fence)


def _materialize(result: Any) -> Any:
    if hasattr(result, "to_pylist"):  # pyarrow Table / RecordBatch
        return result.to_pylist()
    if hasattr(result, "to_dict") and hasattr(result, "columns"):  # pandas DataFrame
        return result.to_dict("records")
    if result is None or isinstance(result, (str, bytes, Mapping)) or not isinstance(result, Iterable):
        return result  # refused with a clear message by validate_rows
    return list(result)  # a generator runs here, so its errors are the callable's


def _raised(proc: Processor, day: date, exc: BaseException) -> str:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(tb) > TRACEBACK_CHARS:
        tb = "..." + tb[-TRACEBACK_CHARS:]
    head = f"{type(exc).__name__}: {exc}"
    return (f"{proc.name} ({proc.python}) raised {head[:300]} for {day.isoformat()}; fix it, then re-run: "
            f"{recovery.rerun_command(proc, day)}\n{tb}")


# ---------------------------------------------------------------------- validation
def _string(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("a str")
    return v


def _int64(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not _INT64[0] <= v <= _INT64[1]:
        raise ValueError("an int within int64 (not a bool or float)")
    return v


def _float64(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError("an int or a finite float (None for NULL, not NaN/inf or a bool)")
    return float(v)


def _numeric(v: Any) -> Any:
    if isinstance(v, Decimal):
        if not v.is_finite():
            raise ValueError("a finite Decimal")
        return v
    return _float64(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("a bool")
    return v


def _date(v: Any) -> date:
    if isinstance(v, date) and not isinstance(v, datetime):
        return v
    if isinstance(v, str) and len(v) == 10:
        try:
            return date.fromisoformat(v)
        except ValueError:
            pass
    raise ValueError("a datetime.date or a 'YYYY-MM-DD' string")


def _timestamp(v: Any) -> datetime:
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("a timezone-aware datetime or an ISO 8601 string with time and offset") from None
    if not isinstance(v, datetime) or v.tzinfo is None or v.utcoffset() is None:
        raise ValueError("a timezone-aware datetime or an ISO 8601 string with time and offset")
    return v


_CHECK: dict[str, Callable[[Any], Any]] = {"STRING": _string, "INT64": _int64, "FLOAT64": _float64,
                                           "NUMERIC": _numeric, "BOOL": _bool, "DATE": _date,
                                           "TIMESTAMP": _timestamp}


def _plain(v: Any) -> Any:
    """numpy / pyarrow scalars as Python values (their ``item()``), anything else unchanged."""
    if type(v).__module__.startswith(("numpy", "pyarrow")) and hasattr(v, "item"):
        return v.item()
    return v


def _show(v: Any, limit: int = 80) -> str:
    text = repr(v)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def validate_rows(proc: Processor, day: date, produced: Any) -> list[dict[str, Any]]:
    """The callable's rows checked and shaped to the declared output columns (missing columns NULL,
    the date column the partition's date); ``InvalidRowsError`` names the first problem."""
    iso, table = day.isoformat(), proc.output
    where = dict(processor=proc.name, date=iso)
    fix = f"fix {proc.python} and re-run: {recovery.rerun_command(proc, day)}"
    if produced is None or isinstance(produced, (str, bytes, Mapping)) or not isinstance(produced, list):
        raise InvalidRowsError(f"{proc.name} {iso}: the callable returned {type(produced).__name__}; it must return "
                               f"an iterable of dicts (an empty list for no rows); {fix}", **where)
    types = dict(table.columns)
    rows, seen = [], {}
    keys = [k for k in table.merge_keys if k != table.date_column]
    for i, item in enumerate(produced):
        if not isinstance(item, Mapping):
            raise InvalidRowsError(f"{proc.name} {iso}: row {i} is a {type(item).__name__}, not a dict; {fix}",
                                   row=i, **where)
        unknown = sorted(str(c) for c in item if c not in types)
        if unknown:
            raise InvalidRowsError(f"{proc.name} {iso}: row {i} has unknown column(s) {unknown}; the declared columns "
                                   f"of {table.logical} are {table.column_names}; {fix}", row=i, **where)
        row: dict[str, Any] = {}
        for col, typ in table.columns:
            value = _plain(item.get(col))
            if value is None:
                row[col] = day if col == table.date_column else None
                continue
            try:
                row[col] = _CHECK[typ](value)
            except ValueError as exc:
                raise InvalidRowsError(f"{proc.name} {iso}: row {i} column {col!r} = {_show(value)} is not a valid "
                                       f"{typ} (expected {exc}); {fix}", row=i, column=col, **where) from None
        if row[table.date_column] != day:
            raise InvalidRowsError(f"{proc.name} {iso}: row {i} column {table.date_column!r} = {row[table.date_column]} "
                                   f"is not the partition's date {iso} (a run writes only its own date); {fix}",
                                   row=i, column=table.date_column, **where)
        missing = [k for k in keys if row[k] is None]
        if missing:
            raise InvalidRowsError(f"{proc.name} {iso}: row {i} has NULL key column(s) {missing} (keys "
                                   f"{list(table.keys)} must be set); {fix}", row=i, **where)
        key = tuple(row[k] for k in keys)
        if key in seen:
            raise InvalidRowsError(f"{proc.name} {iso}: rows {seen[key]} and {i} have the same key "
                                   f"{dict(zip(keys, key))}; each key once per partition; {fix}", row=i, **where)
        seen[key] = i
        rows.append(row)
    return rows


__all__ = ["PythonContext", "PythonProcessor", "load_callable", "validate_rows", "STAGE_ABOVE_ROWS",
           "PythonImportError", "InvalidRowsError", "UndeclaredReadError", "PythonProcessorError"]
