"""BigQuery: datasets and tables from the definition, idempotent MERGEs, parameterized reads.

Owns every SQL statement Cascade sends. Identifiers (project, dataset, table, column names) come
only from the pipeline definition; every value (dates, rows) is a query parameter. Writes are one
MERGE per (table, date partition) on the declared keys: a re-run replaces the partition's rows
atomically (matched rows updated, new rows inserted, rows gone from the source deleted), so
redelivery never duplicates a row. There is no DELETE+INSERT and no streaming insert.

Two guards live inside that one MERGE (still one BigQuery job per partition):

* **Fencing.** Every row carries the ``_fence`` of the run that wrote it (the partition's lease
  counter in Firestore, incremented by every run that takes the lease). A MERGE with fence ``f``
  updates and deletes only rows with ``_fence <= f``, and its source is empty when the partition
  already holds a row with a newer fence - so a run that lost its lease (a slow job, a takeover)
  can never change rows written by the run that took over. Residual window, documented: if the
  newer run legitimately wrote *zero* rows (``allow_empty``), a stale run committing afterwards
  could insert into the empty partition; its own Firestore record then fails (lease lost).
* **Never replace data with nothing.** Unless the processor declares ``allow_empty``, the delete
  branch runs only when the source has rows, and a source with zero rows is refused
  (``EmptySourceError``: failed with the reason, existing rows kept).

Tables follow their definition: ``ensure_tables`` creates missing tables and adds a column the
definition added to an existing table (NULLABLE, in place: the schema through the API, then
``ALTER TABLE ADD COLUMN IF NOT EXISTS`` - the emulator only changes a table's stored data through
DDL, and on BigQuery that DDL is a no-op once the schema has the column). A removed or retyped column
cannot be changed in place: ``schema_changes`` reports it and ``ensure_tables`` refuses with
``SchemaChangeError``, naming the rebuild it needs.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Iterable, Sequence

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import bigquery

from .errors import CascadeError, EmptySourceError, LeaseLostError
from .pipeline import FRAMEWORK_COLUMNS, Pipeline, Processor, Table, all_columns

# Definition column type -> BigQuery query-parameter type (the same names, spelled once here).
_PARAM_TYPE = {"DATE": "DATE", "STRING": "STRING", "INT64": "INT64", "FLOAT64": "FLOAT64",
               "BOOL": "BOOL", "TIMESTAMP": "TIMESTAMP", "NUMERIC": "NUMERIC"}
# The API's legacy type names (what ``get_table`` may return) -> the definition's.
_LEGACY_TYPE = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}


@dataclass(frozen=True)
class ColumnChange:
    """One difference between an existing output table and its definition."""

    processor: str
    table: str  # full table id
    column: str
    old_type: str | None  # None: the column is new
    new_type: str | None  # None: the column was removed

    @property
    def kind(self) -> str:
        return "added" if self.old_type is None else "removed" if self.new_type is None else "retyped"

    def describe(self) -> str:
        if self.kind == "added":
            return f"column {self.column} {self.new_type} added"
        if self.kind == "removed":
            return f"column {self.column} ({self.old_type}) removed"
        return f"column {self.column} retyped from {self.old_type} to {self.new_type}"


class SchemaChangeError(CascadeError):
    """Existing tables whose columns the definition removed or retyped: only a rebuild can apply that."""

    def __init__(self, message: str, changes: Sequence[ColumnChange]) -> None:
        super().__init__(message, changes=[c.describe() for c in changes])
        self.changes = list(changes)


@dataclass
class JobStats:
    """BigQuery jobs sent by this process and the seconds spent waiting on them (for benchmarks)."""

    jobs: int = 0
    seconds: float = 0.0


class Warehouse:
    """The pipeline's BigQuery side, for one project."""

    def __init__(self, client: bigquery.Client, pipeline: Pipeline, project: str, timeout: float = 300.0) -> None:
        self.client = client
        self.pipeline = pipeline
        self.project = project
        self.timeout = timeout
        self.stats = JobStats()
        self._lock = threading.Lock()
        self._retry = Retry(deadline=timeout)

    # ------------------------------------------------------------------ provisioning
    def ensure_tables(self) -> list[str]:
        """Create every dataset and output table of the definition if missing, and add the columns the
        definition added to existing tables (idempotent). Raises ``SchemaChangeError`` (nothing changed)
        when an existing table has a column the definition removed or retyped."""
        changes = self.schema_changes()
        refused = [c for c in changes if c.kind != "added"]
        if refused:
            raise SchemaChangeError(rebuild_message(self, refused), refused)
        created = []
        for ds in self.pipeline.datasets():
            self.client.create_dataset(bigquery.Dataset(f"{self.project}.{ds}"), exists_ok=True)
        for proc in self.pipeline.processors:
            table = bigquery.Table(self.table_id(proc.output), schema=schema_of(proc.output))
            table.time_partitioning = bigquery.TimePartitioning(field=proc.output.date_column)
            table.clustering_fields = [k for k in proc.output.keys if k != proc.output.date_column][:4] or None
            self.client.create_table(table, exists_ok=True)
            created.append(table.table_id)
        self._add_columns([c for c in changes if c.kind == "added"])
        return created

    def schema_changes(self) -> list[ColumnChange]:
        """Every column of an existing output table that differs from the definition (missing tables
        are not compared: they are created as declared). One metadata read per table."""
        out: list[ColumnChange] = []
        for proc in self.pipeline.processors:
            table_id = self.table_id(proc.output)
            try:
                live = self.client.get_table(table_id)
            except gexc.NotFound:
                continue
            have = {f.name: _LEGACY_TYPE.get(f.field_type.upper(), f.field_type.upper()) for f in live.schema}
            want = dict(all_columns(proc.output))
            for col, typ in want.items():
                if col not in have:
                    out.append(ColumnChange(proc.name, table_id, col, None, typ))
                elif have[col] != typ:
                    out.append(ColumnChange(proc.name, table_id, col, have[col], typ))
            out.extend(ColumnChange(proc.name, table_id, col, typ, None) for col, typ in have.items() if col not in want)
        return out

    def _add_columns(self, added: Sequence[ColumnChange]) -> None:
        by_table: dict[str, list[ColumnChange]] = {}
        for change in added:
            by_table.setdefault(change.table, []).append(change)
        for table_id, cols in by_table.items():
            table = self.client.get_table(table_id)
            table.schema = [*table.schema, *(bigquery.SchemaField(c.column, c.new_type, mode="NULLABLE") for c in cols)]
            self.client.update_table(table, ["schema"])
            for c in cols:
                self._run(f"ALTER TABLE `{table_id}` ADD COLUMN IF NOT EXISTS {c.column} {c.new_type}", [])

    def drop_table(self, proc: Processor) -> bool:
        """Drop ``proc``'s output table (all its rows); True if it existed. Used only by an explicit
        rebuild (``cascade up --rebuild-table``)."""
        try:
            self.client.get_table(self.table_id(proc.output))
        except gexc.NotFound:
            return False
        self.client.delete_table(self.table_id(proc.output), not_found_ok=True)
        return True

    def date_range(self, table: Table) -> tuple[date, date] | None:
        """The first and last date holding rows in ``table`` (None when it is empty)."""
        row = self.query(f"SELECT MIN({table.date_column}) AS lo, MAX({table.date_column}) AS hi "
                         f"FROM `{self.table_id(table)}`")[0]
        return (row["lo"], row["hi"]) if row["lo"] is not None else None

    def table_id(self, table: Table) -> str:
        return self.pipeline.table_id(self.project, table)

    # ------------------------------------------------------------------ writes
    def merge_rows(self, proc: Processor, day: date, rows: Sequence[dict[str, Any]], run_id: str, fence: int = 0) -> int:
        """MERGE ``rows`` (already shaped like the output table) into ``day``'s partition."""
        table = proc.output
        cols = table.column_names
        if not rows:
            if not proc.allow_empty:
                self._refuse_empty(proc, day)
            return self._merge(proc, day, run_id, fence, "SELECT " + ", ".join(
                f"CAST(NULL AS {t}) AS {c}" for c, t in table.columns) + " FROM UNNEST([1]) WHERE FALSE", [])
        struct_rows = [
            bigquery.StructQueryParameter(None, *[
                bigquery.ScalarQueryParameter(c, _PARAM_TYPE[t], row.get(c)) for c, t in table.columns])
            for row in rows
        ]
        source = "SELECT " + ", ".join(f"r.{c} AS {c}" for c in cols) + " FROM UNNEST(@rows) AS r"
        params = [bigquery.ArrayQueryParameter("rows", "STRUCT", struct_rows)]
        return self._merge(proc, day, run_id, fence, source, params)

    def merge_rows_staged(self, proc: Processor, day: date, rows: Sequence[dict[str, Any]], run_id: str,
                          fence: int = 0) -> int:
        """MERGE a large row set: load it as NDJSON into a staging table (one load job, no query-parameter
        bound), then the same fenced MERGE with the staging table as its source; the staging table is
        dropped afterwards. ``rows`` are already validated against the declared columns."""
        if not rows:
            return self.merge_rows(proc, day, rows, run_id, fence)
        table = proc.output
        safe = re.sub(r"[^A-Za-z0-9_]", "_", run_id)[-80:]
        staging = f"{self.project}.{self.pipeline.dataset_id(table.dataset)}._staging_{table.name}_{safe}"
        body = "".join(json.dumps({c: _json_value(r.get(c)) for c in table.column_names}) + "\n" for r in rows)
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON, write_disposition="WRITE_TRUNCATE",
            schema=[bigquery.SchemaField(c, t) for c, t in table.columns])
        started = time.perf_counter()
        try:
            try:
                job = self.client.load_table_from_file(io.BytesIO(body.encode()), staging, job_config=config,
                                                       timeout=self.timeout)
                job.result(timeout=self.timeout)
            finally:
                with self._lock:
                    self.stats.jobs += 1
                    self.stats.seconds += time.perf_counter() - started
            source = "SELECT " + ", ".join(f"s.{c} AS {c}" for c in table.column_names) + f" FROM `{staging}` AS s"
            return self._merge(proc, day, run_id, fence, source, [])
        finally:
            self.client.delete_table(staging, not_found_ok=True, timeout=self.timeout)

    def merge_select(self, proc: Processor, day: date, run_id: str, fence: int = 0) -> int:
        """MERGE the result of the processor's SELECT for ``day`` into its partition."""
        start, end = proc.window(day, self.pipeline.calendar)
        params = [bigquery.ScalarQueryParameter("window_start", "DATE", start)]
        return self._merge(proc, day, run_id, fence, self.pipeline.render_sql(proc, self.project), params)

    def merge_sql(self, proc: Processor, source_sql: str) -> str:
        """The fenced MERGE statement Cascade sends for ``proc`` around ``source_sql`` (parameters:
        ``@data_date`` DATE, ``@run_id`` STRING, ``@fence`` INT64, plus the source's own)."""
        table = proc.output
        target = f"`{self.table_id(table)}`"
        cols = table.column_names
        keys = table.merge_keys
        non_keys = [c for c in cols if c not in keys]
        dc = table.date_column
        on = " AND ".join([f"T.{dc} = @data_date"] + [f"T.{k} = S.{k}" for k in keys])
        lineage = list(FRAMEWORK_COLUMNS)
        has_rows = "" if proc.allow_empty else f" AND EXISTS (SELECT 1 FROM (\n{source_sql}\n))"
        return (
            f"MERGE {target} AS T\n"
            f"USING (\nSELECT src.* FROM (\n{source_sql}\n) AS src\n"
            f"WHERE NOT EXISTS (SELECT 1 FROM {target} AS F WHERE F.{dc} = @data_date AND F._fence > @fence)\n) AS S\n"
            f"ON {on}\n"
            f"WHEN MATCHED AND COALESCE(T._fence, 0) <= @fence THEN UPDATE SET "
            + ", ".join([f"{c} = S.{c}" for c in non_keys]
                        + ["_run_id = @run_id", "_processed_at = CURRENT_TIMESTAMP()", "_fence = @fence"])
            + "\nWHEN NOT MATCHED THEN INSERT (" + ", ".join(cols + lineage) + ") VALUES ("
            + ", ".join([f"S.{c}" for c in cols] + ["@run_id", "CURRENT_TIMESTAMP()", "@fence"]) + ")\n"
            f"WHEN NOT MATCHED BY SOURCE AND T.{dc} = @data_date AND COALESCE(T._fence, 0) <= @fence{has_rows} THEN DELETE"
        )

    def _merge(self, proc: Processor, day: date, run_id: str, fence: int, source_sql: str, params: list) -> int:
        params = [*params, bigquery.ScalarQueryParameter("data_date", "DATE", day),
                  bigquery.ScalarQueryParameter("run_id", "STRING", run_id),
                  bigquery.ScalarQueryParameter("fence", "INT64", fence)]
        job = self._run(self.merge_sql(proc, source_sql), params)
        affected = int(job.num_dml_affected_rows or 0)
        if affected == 0:
            # Nothing changed: the source was empty, or a newer run fenced this one out. One small
            # query (only on this rare path) tells which.
            table = proc.output
            row = self.query(
                f"SELECT COUNT(*) AS n, COUNTIF(_fence > @fence) AS newer FROM `{self.table_id(table)}` "
                f"WHERE {table.date_column} = @d",
                [bigquery.ScalarQueryParameter("d", "DATE", day), bigquery.ScalarQueryParameter("fence", "INT64", fence)])[0]
            if int(row["newer"] or 0):
                raise LeaseLostError(f"{proc.name} {day}: a newer run (fence > {fence}) already wrote this partition; "
                                     f"this run's MERGE changed nothing", processor=proc.name, date=day.isoformat())
            if not proc.allow_empty:
                self._refuse_empty(proc, day, int(row["n"] or 0))
        return affected

    def _refuse_empty(self, proc: Processor, day: date, kept: int | None = None) -> None:
        if kept is None:
            kept = self.count_rows(proc.output, day)
        iso = day.isoformat()
        raise EmptySourceError(
            f"{proc.name} produced no rows for {iso}, a date the calendar expects data on; refused: "
            + (f"the partition's {kept} existing rows were kept. " if kept else "nothing was written. ")
            + f"Check its inputs for {iso} (cascade status --date {iso}), fix them, then re-run: "
            f"cascade trigger --date {iso} --phase {proc.phase} --processor {proc.name} "
            f"(or declare `allow_empty: true` on {proc.name} if no rows is a valid result)",
            processor=proc.name, date=iso, rows_kept=kept)

    # ------------------------------------------------------------------ reads
    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        job = self._run(sql, list(params))
        return [dict(row.items()) for row in job.result(timeout=self.timeout)]

    def count_rows(self, table: Table, day: date) -> int:
        rows = self.query(f"SELECT COUNT(*) AS n FROM `{self.table_id(table)}` WHERE {table.date_column} = @d",
                          [bigquery.ScalarQueryParameter("d", "DATE", day)])
        return int(rows[0]["n"])

    def read_rows(self, table: Table, start: date, end: date, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The declared ``columns`` (default: all declared) of ``table``'s rows dated ``start``..``end``
        (inclusive), ordered by date and keys: one parameterized query. Column names must be declared."""
        declared = table.column_names
        cols = list(columns) if columns else declared
        unknown = [c for c in cols if c not in declared]
        if unknown:
            raise ValueError(f"{table.logical} has no columns {unknown}; its columns are {declared}")
        return self.query(
            f"SELECT {', '.join(cols)} FROM `{self.table_id(table)}` "
            f"WHERE {table.date_column} BETWEEN @start AND @end ORDER BY {', '.join(table.merge_keys)}",
            [bigquery.ScalarQueryParameter("start", "DATE", start), bigquery.ScalarQueryParameter("end", "DATE", end)])

    def present_dates(self, table: Table, start: date, end: date) -> set[date]:
        """Dates from ``start`` to ``end`` (inclusive) that have at least one row: one query."""
        rows = self.query(
            f"SELECT DISTINCT {table.date_column} AS d FROM `{self.table_id(table)}` "
            f"WHERE {table.date_column} BETWEEN @start AND @end",
            [bigquery.ScalarQueryParameter("start", "DATE", start), bigquery.ScalarQueryParameter("end", "DATE", end)])
        return {r["d"] for r in rows}

    def _run(self, sql: str, params: list) -> bigquery.QueryJob:
        started = time.perf_counter()
        try:
            job = self.client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=params),
                                    retry=self._retry, timeout=self.timeout)
            job.result(timeout=self.timeout)
            return job
        finally:
            with self._lock:
                self.stats.jobs += 1
                self.stats.seconds += time.perf_counter() - started


def _json_value(value: Any) -> Any:
    """A validated row value as NDJSON for a load job (dates and timestamps as ISO text)."""
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def rebuild_commands(warehouse: "Warehouse", proc: Processor) -> list[str]:
    """The commands that rebuild ``proc``'s table from its definition (locally): drop and recreate it,
    then re-run the dates it held. Each runs as printed."""
    commands = [f"cascade up --rebuild-table {proc.name}"]
    span = warehouse.date_range(proc.output)
    if span:
        commands.append(f"cascade backfill --start {span[0]} --end {span[1]} --phase {proc.phase} "
                        f"--processor {proc.name} --force")
    return commands


def rebuild_message(warehouse: "Warehouse", refused: Sequence[ColumnChange]) -> str:
    """What a removed or retyped column needs, per processor: the change, then the commands that drop
    and recreate the table and rebuild its rows."""
    lines = []
    for name in dict.fromkeys(c.processor for c in refused):
        mine = [c for c in refused if c.processor == name]
        lines.append(f"processor {name}: table {mine[0].table}: " + "; ".join(c.describe() for c in mine)
                     + " - BigQuery cannot change that in place; rebuild the table (dropping it deletes its "
                       "rows, the backfill writes them again):")
        lines.extend(f"    {cmd}" for cmd in rebuild_commands(warehouse, warehouse.pipeline.processor(name)))
    return "\n".join(lines)


def schema_of(table: Table) -> list[bigquery.SchemaField]:
    keys = set(table.merge_keys)
    return [bigquery.SchemaField(c, t, mode="REQUIRED" if c in keys else "NULLABLE") for c, t in all_columns(table)]


__all__ = ["Warehouse", "JobStats", "ColumnChange", "SchemaChangeError", "schema_of", "gexc"]
