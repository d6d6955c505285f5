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

**Jobs** (sent by ``jobs.JobRunner``). A run's jobs go through ``run_scope``: each carries the processor's
``maximum_bytes_billed`` and is waited on in short polls for at most its ``job_timeout_seconds``
(default: the function timeout less a margin), while the runner's heartbeat thread renews the lease;
on timeout or a lost lease the job is cancelled (``JobTimeoutError`` / ``LeaseLostError``). The write
job's id is deterministic per partition, generation and fence, so a run that took over a crashed one
re-attaches to that run's write job while it still runs instead of starting a second one. Each job's
bytes processed, bytes billed and slot-ms add up in ``stats`` and in the run's scope (``cost``).

Tables follow their definition: ``ensure_tables`` creates missing tables and adds a column the
definition added to an existing table (NULLABLE, in place: the schema through the API, then
``ALTER TABLE ADD COLUMN IF NOT EXISTS`` - the emulator only changes a table's stored data through
DDL, and on BigQuery that DDL is a no-op once the schema has the column). A removed or retyped column
cannot be changed in place: ``schema_changes`` reports it and ``ensure_tables`` refuses with
``SchemaChangeError``, naming the rebuild it needs.
"""


from __future__ import annotations

import itertools
import json
import re
import tempfile
import time
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable, ContextManager, Iterable, Sequence

from google.api_core import exceptions as gexc
from google.cloud import bigquery

from cascade.definition.columns import FRAMEWORK_COLUMNS, all_columns
from cascade.definition.model import Gate, Pipeline, Processor, Table
from cascade.errors import EmptySourceError, LeaseLostError
from cascade.runtime.warehouse import sql as statements
from cascade.runtime.warehouse.jobs import (
    JobRunner,
    JobScope,
)
from cascade.runtime.warehouse.refusal import _refusal, refused_source
from cascade.runtime.warehouse.schema import _LEGACY_TYPE, ColumnChange, SchemaChangeError, rebuild_message, schema_of
from cascade.runtime.warehouse.sql import confinement_check

# Definition column type -> BigQuery query-parameter type (the same names, spelled once here).
_PARAM_TYPE = {"DATE": "DATE", "STRING": "STRING", "INT64": "INT64", "FLOAT64": "FLOAT64",
               "BOOL": "BOOL", "TIMESTAMP": "TIMESTAMP", "NUMERIC": "NUMERIC"}
# Above this many rows a write goes through a staging table (an NDJSON load job, then the one MERGE)
# instead of one ``@rows`` query parameter: BigQuery bounds a request's size and its parameters.
STAGE_ABOVE_ROWS = 1000


class Warehouse:
    """The pipeline's BigQuery side, for one project."""

    def __init__(self, client: bigquery.Client, pipeline: Pipeline, project: str, timeout: float = 300.0) -> None:
        self.pipeline = pipeline
        self.project = project
        self.timeout = timeout
        self.jobs = JobRunner(client, pipeline, timeout)
        self.stats = self.jobs.stats  # every job this process sent, and what it cost
        self._lock = self.jobs.lock
        self._retry = self.jobs.retry

    @property
    def client(self) -> bigquery.Client:
        """The BigQuery client every job goes through (one, shared with ``jobs``)."""
        return self.jobs.client

    @client.setter
    def client(self, client: bigquery.Client) -> None:
        self.jobs.client = client

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

    def drop_datasets(self, processors: Iterable[Processor]) -> None:
        """Delete the datasets holding ``processors``' output tables, with every table in them. Only
        ``cascade test`` does this, to its throw-away namespace once its cases ran."""
        for ds in {self.pipeline.dataset_id(p.output.dataset) for p in processors}:
            self.client.delete_dataset(f"{self.project}.{ds}", delete_contents=True, not_found_ok=True)

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

    def write_rows(self, proc: Processor, day: date, rows: Iterable[dict[str, Any]], run_id: str, fence: int = 0,
                   stage_above: int | None = None) -> int:
        """MERGE ``rows`` (an iterable, consumed once) into ``day``'s partition: up to ``stage_above``
        rows (default ``STAGE_ABOVE_ROWS``) as one ``@rows`` query parameter (``merge_rows``), more
        through a staging table (``merge_rows_staged``). At most ``stage_above + 1`` rows are held in
        memory to decide; the rest stream through. Every processor kind that produces rows writes here."""
        bound = STAGE_ABOVE_ROWS if stage_above is None else stage_above
        it = iter(rows)
        head = list(itertools.islice(it, bound + 1))
        if len(head) <= bound:
            return self.merge_rows(proc, day, head, run_id, fence)
        return self.merge_rows_staged(proc, day, itertools.chain(head, it), run_id, fence)

    def merge_rows_staged(self, proc: Processor, day: date, rows: Iterable[dict[str, Any]], run_id: str,
                          fence: int = 0) -> int:
        """MERGE a large row set: stream it as NDJSON into a temporary file (never one string in memory),
        load that into a staging table (one load job, no query-parameter bound), then the same fenced
        MERGE with the staging table as its source; the staging table is dropped afterwards. ``rows``
        are already validated against the declared columns; an error raised while iterating them
        (a refused record) comes before any job is sent."""
        table = proc.output
        with tempfile.TemporaryFile() as body:
            count = 0
            for r in rows:
                body.write(json.dumps({c: _json_value(r.get(c)) for c in table.column_names}).encode() + b"\n")
                count += 1
            if not count:
                return self.merge_rows(proc, day, [], run_id, fence)
            body.seek(0)
            safe = re.sub(r"[^A-Za-z0-9_]", "_", run_id)[-80:]
            staging = f"{self.project}.{self.pipeline.dataset_id(table.dataset)}._staging_{table.name}_{safe}"
            config = bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON, write_disposition="WRITE_TRUNCATE",
                schema=[bigquery.SchemaField(c, t) for c, t in table.columns])
            started = time.perf_counter()
            try:
                try:
                    job = self.client.load_table_from_file(body, staging, job_config=config, rewind=True,
                                                           timeout=self.timeout)
                    job.result(timeout=self.timeout)
                finally:
                    with self._lock:
                        self.stats.jobs += 1
                        self.stats.seconds += time.perf_counter() - started
                source = ("SELECT " + ", ".join(f"s.{c} AS {c}" for c in table.column_names)
                          + f" FROM `{staging}` AS s")
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
            # The source is named once (a WITH inside USING): the row check reads the same rows.
            f"USING (\nWITH src AS (\n{source_sql}\n)\nSELECT src.* FROM src\n"
            f"WHERE NOT EXISTS (SELECT 1 FROM {target} AS F WHERE F.{dc} = @data_date AND F._fence > @fence)\n"
            f"AND {confinement_check(table, 'SELECT * FROM src')}\n) AS S\n"
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
        try:
            job = self._run(self.merge_sql(proc, source_sql), params)
        except Exception as exc:  # noqa: BLE001 - only the MERGE's own refusal is translated
            refusal = _refusal(exc)
            if refusal is None:
                raise
            raise refused_source(proc, day, refusal) from None
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
        from cascade.runtime.recovery import rerun_command

        iso = day.isoformat()
        raise EmptySourceError(
            f"{proc.name} produced no rows for {iso}, a date the calendar expects data on; refused: "
            + (f"the partition's {kept} existing rows were kept. " if kept else "nothing was written. ")
            + f"Check its inputs for {iso} (cascade status --date {iso}), fix them, then re-run: "
            f"{rerun_command(proc, iso)} "
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

    def sample_rows(self, table: Table, day: date, limit: int) -> list[dict[str, Any]]:
        """The declared columns of up to ``limit`` rows of ``table`` on ``day``, ordered by its keys."""
        return self._send(statements.sample_rows(self.table_id(table), table, day, limit))

    def export_rows(self, proc: Processor, day: date) -> list[dict[str, Any]]:
        """The rows of an export processor's SELECT for ``day`` (``@window_start``: ``day`` less its lookback)."""
        start, _ = proc.window(day, self.pipeline.calendar)
        return self._send(statements.processor_select(self.pipeline.render_sql(proc, self.project), day, start))

    def delete_all_rows(self, table: Table) -> None:
        """Empty ``table`` (one DELETE). Only ``cascade test`` does this, between the cases it runs in a
        throw-away namespace; a run never deletes except through its MERGE."""
        self._send(statements.delete_all(self.table_id(table)))

    # ------------------------------------------------------------------ quality gates
    def gate_counts(self, proc: Processor, gates: Sequence[Gate], day: date, history_start: date) -> list[dict[str, Any]]:
        """One row per date from ``history_start`` to ``day`` (inclusive) holding rows of ``proc``'s
        table: the date ``d``, its rows ``n`` and what the built-in ``gates`` count (``sql.gate_counts``)."""
        return self._send(statements.gate_counts(self.table_id(proc.output), proc.output, gates, day, history_start))

    def null_sample(self, proc: Processor, day: date, columns: Sequence[str], limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` rows of ``day`` with a NULL in any of ``columns`` (their keys and those columns)."""
        return self._send(statements.null_sample(self.table_id(proc.output), proc.output, day, columns, limit))

    def outside_sample(self, proc: Processor, day: date, gate: Gate, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` rows of ``day`` whose ``range`` ``gate`` column is outside its bounds."""
        return self._send(statements.outside_sample(self.table_id(proc.output), proc.output, day, gate, limit))

    def offending_rows(self, proc: Processor, gate: Gate, day: date, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` rows of a ``sql`` ``gate``'s SELECT for ``day`` (its offending rows)."""
        assert gate.sql is not None
        start, _ = proc.window(day, self.pipeline.calendar)
        return self._send(statements.offending_rows(self.pipeline.render_text(gate.sql, self.project), day, start,
                                                    limit))

    # ------------------------------------------------------------------ backfill validation
    def duplicate_keys(self, table: Table, start: date, end: date, limit: int = 20) -> list[dict[str, Any]]:
        """The keys of ``table`` held by more than one row dated ``start``..``end`` (inclusive), with
        their row count ``n``: the most repeated first, at most ``limit``."""
        return self._send(statements.duplicate_keys(self.table_id(table), table, start, end, limit))

    def null_counts(self, table: Table, columns: Sequence[str], start: date, end: date) -> dict[str, int]:
        """Per column of ``columns``, its NULLs among ``table``'s rows dated ``start``..``end`` (inclusive)."""
        row = self._send(statements.null_counts(self.table_id(table), table, columns, start, end))[0]
        return {c: int(row.get(c) or 0) for c in columns}

    def _send(self, query: statements.Query) -> list[dict[str, Any]]:
        return self.query(query.sql, query.params)

    # ------------------------------------------------------------------ jobs
    def job_base(self, proc: Processor, day: date, generation: int) -> str:
        """The deterministic id stem of ``proc``'s jobs for ``day`` at ``generation`` (``JobRunner.job_base``)."""
        return self.jobs.job_base(proc, day, generation)

    def run_scope(self, proc: Processor, day: date, generation: int, fence: int,
                  should_stop: Callable[[], bool] = lambda: False) -> ContextManager[JobScope]:
        """Every job sent on this thread inside the block belongs to one run (see ``JobScope``)."""
        return self.jobs.scope(proc, day, generation, fence, should_stop)

    def _run(self, sql: str, params: list) -> bigquery.QueryJob:
        """Send one query job and wait for it (``JobRunner.run``: inside a run's scope, under its rules)."""
        return self.jobs.run(sql, params)

    def dry_run_bytes(self, proc: Processor, day: date) -> int:
        """Bytes the SQL processor's MERGE for ``day`` would process, from a BigQuery dry run (free;
        nothing runs). The local engine answers 0 (see ``cost.engine_estimates_bytes``)."""
        start, _ = proc.window(day, self.pipeline.calendar)
        params = [bigquery.ScalarQueryParameter("window_start", "DATE", start),
                  bigquery.ScalarQueryParameter("data_date", "DATE", day),
                  bigquery.ScalarQueryParameter("run_id", "STRING", "dry-run"),
                  bigquery.ScalarQueryParameter("fence", "INT64", 0)]
        config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False, query_parameters=params)
        job = self.client.query(self.merge_sql(proc, self.pipeline.render_sql(proc, self.project)),
                                job_config=config, retry=self._retry, timeout=self.timeout)
        return int(job.total_bytes_processed or 0)

    def insert_rows(self, table: Table, rows: Sequence[dict[str, Any]], run_id: str) -> int:
        """INSERT ``rows`` (shaped like ``table``'s declared columns, of any dates) as they are, in one
        job: no MERGE, no fence (``_fence`` 0). Seeds the input tables of a throw-away namespace with
        given rows (``cascade test``); a run never writes this way."""
        if not rows:
            return 0
        cols = table.column_names
        struct_rows = [bigquery.StructQueryParameter(None, *[
            bigquery.ScalarQueryParameter(c, _PARAM_TYPE[t], row.get(c)) for c, t in table.columns]) for row in rows]
        job = self._run(
            f"INSERT INTO `{self.table_id(table)}` ({', '.join(cols)}, _run_id, _processed_at, _fence) "
            f"SELECT {', '.join('r.' + c for c in cols)}, @run_id, CURRENT_TIMESTAMP(), 0 FROM UNNEST(@rows) AS r",
            [bigquery.ArrayQueryParameter("rows", "STRUCT", struct_rows),
             bigquery.ScalarQueryParameter("run_id", "STRING", run_id)])
        return int(job.num_dml_affected_rows or 0)

    # ------------------------------------------------------------------ calendar from data
    def calendar_dates(self, source: Any, start: date, end: date) -> Any:
        """What the calendar's ``expected_from`` processor says about ``start..end`` (one query): the
        dates with a row matching its ``where`` filter, and its last loaded date (newest row of any
        kind). Columns come from the definition; filter values are query parameters."""
        from cascade.definition.calendar import ScheduleDates

        proc = self.pipeline.processor(source.processor)
        table, cols = proc.output, dict(proc.output.columns)
        dc = table.date_column
        params: list[Any] = [bigquery.ScalarQueryParameter("start", "DATE", start),
                             bigquery.ScalarQueryParameter("end", "DATE", end)]
        conditions = []
        for i, (col, values) in enumerate(source.where):
            kind = _PARAM_TYPE[cols[col]]
            values = [date.fromisoformat(v) if kind == "DATE" and isinstance(v, str) else v for v in values]
            params.append(bigquery.ArrayQueryParameter(f"where_{i}", kind, values))
            conditions.append(f"{col} IN UNNEST(@where_{i})")
        match = " AND ".join(conditions) or "TRUE"
        rows = self.query(
            f"SELECT {dc} AS d, COUNTIF({match}) AS matching FROM `{self.table_id(table)}` "
            f"WHERE {dc} BETWEEN @start AND @end GROUP BY {dc}", params)
        dates = frozenset(r["d"] for r in rows if int(r["matching"] or 0) > 0)
        return ScheduleDates(dates, max((r["d"] for r in rows), default=None),
                             listed=frozenset(r["d"] for r in rows))



def _json_value(value: Any) -> Any:
    """A validated row value as NDJSON for a load job (dates and timestamps as ISO text)."""
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value
