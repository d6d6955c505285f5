"""BigQuery: datasets and tables from the definition, idempotent MERGEs, parameterized reads.

Owns every SQL statement Cascade sends. Identifiers (project, dataset, table, column names) come
only from the pipeline definition; every value (dates, rows) is a query parameter. Writes are one
MERGE per (table, date partition) on the declared keys: a re-run replaces the partition's rows
atomically (matched rows updated, new rows inserted, rows gone from the source deleted), so
redelivery never duplicates a row. There is no DELETE+INSERT and no streaming insert.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import date
from typing import Any, Iterable, Sequence

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import bigquery

from .pipeline import FRAMEWORK_COLUMNS, Pipeline, Processor, Table, all_columns

# Definition column type -> BigQuery query-parameter type (the same names, spelled once here).
_PARAM_TYPE = {"DATE": "DATE", "STRING": "STRING", "INT64": "INT64", "FLOAT64": "FLOAT64",
               "BOOL": "BOOL", "TIMESTAMP": "TIMESTAMP", "NUMERIC": "NUMERIC"}


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
        """Create every dataset and output table of the definition if missing (idempotent)."""
        created = []
        for ds in self.pipeline.datasets():
            self.client.create_dataset(bigquery.Dataset(f"{self.project}.{ds}"), exists_ok=True)
        for proc in self.pipeline.processors:
            table = bigquery.Table(self.table_id(proc.output), schema=schema_of(proc.output))
            table.time_partitioning = bigquery.TimePartitioning(field=proc.output.date_column)
            table.clustering_fields = [k for k in proc.output.keys if k != proc.output.date_column][:4] or None
            self.client.create_table(table, exists_ok=True)
            created.append(table.table_id)
        return created

    def table_id(self, table: Table) -> str:
        return self.pipeline.table_id(self.project, table)

    # ------------------------------------------------------------------ writes
    def merge_rows(self, proc: Processor, day: date, rows: Sequence[dict[str, Any]], run_id: str) -> int:
        """MERGE ``rows`` (already shaped like the output table) into ``day``'s partition."""
        table = proc.output
        cols = table.column_names
        struct_rows = [
            bigquery.StructQueryParameter(None, *[
                bigquery.ScalarQueryParameter(c, _PARAM_TYPE[t], row.get(c)) for c, t in table.columns])
            for row in rows
        ]
        if not struct_rows:
            return self._merge(proc, day, run_id, "SELECT " + ", ".join(
                f"CAST(NULL AS {t}) AS {c}" for c, t in table.columns) + " FROM UNNEST([1]) WHERE FALSE", [])
        source = "SELECT " + ", ".join(f"r.{c} AS {c}" for c in cols) + " FROM UNNEST(@rows) AS r"
        params = [bigquery.ArrayQueryParameter("rows", "STRUCT", struct_rows)]
        return self._merge(proc, day, run_id, source, params)

    def merge_select(self, proc: Processor, day: date, run_id: str) -> int:
        """MERGE the result of the processor's SELECT for ``day`` into its partition."""
        start, end = proc.window(day, self.pipeline.calendar)
        params = [bigquery.ScalarQueryParameter("window_start", "DATE", start)]
        return self._merge(proc, day, run_id, self.pipeline.render_sql(proc, self.project), params)

    def _merge(self, proc: Processor, day: date, run_id: str, source_sql: str, params: list) -> int:
        table = proc.output
        cols = table.column_names
        keys = table.merge_keys
        non_keys = [c for c in cols if c not in keys]
        on = " AND ".join([f"T.{table.date_column} = @data_date"] + [f"T.{k} = S.{k}" for k in keys])
        lineage = list(FRAMEWORK_COLUMNS)
        sql = (
            f"MERGE `{self.table_id(table)}` AS T\n"
            f"USING (\n{source_sql}\n) AS S\n"
            f"ON {on}\n"
            f"WHEN MATCHED THEN UPDATE SET "
            + ", ".join([f"{c} = S.{c}" for c in non_keys] + ["_run_id = @run_id", "_processed_at = CURRENT_TIMESTAMP()"])
            + "\nWHEN NOT MATCHED THEN INSERT (" + ", ".join(cols + lineage) + ") VALUES ("
            + ", ".join([f"S.{c}" for c in cols] + ["@run_id", "CURRENT_TIMESTAMP()"]) + ")\n"
            f"WHEN NOT MATCHED BY SOURCE AND T.{table.date_column} = @data_date THEN DELETE"
        )
        params = [*params, bigquery.ScalarQueryParameter("data_date", "DATE", day),
                  bigquery.ScalarQueryParameter("run_id", "STRING", run_id)]
        job = self._run(sql, params)
        return int(job.num_dml_affected_rows or 0)

    # ------------------------------------------------------------------ reads
    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        job = self._run(sql, list(params))
        return [dict(row.items()) for row in job.result(timeout=self.timeout)]

    def count_rows(self, table: Table, day: date) -> int:
        rows = self.query(f"SELECT COUNT(*) AS n FROM `{self.table_id(table)}` WHERE {table.date_column} = @d",
                          [bigquery.ScalarQueryParameter("d", "DATE", day)])
        return int(rows[0]["n"])

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


def schema_of(table: Table) -> list[bigquery.SchemaField]:
    keys = set(table.merge_keys)
    return [bigquery.SchemaField(c, t, mode="REQUIRED" if c in keys else "NULLABLE") for c, t in all_columns(table)]


__all__ = ["Warehouse", "JobStats", "schema_of", "gexc"]
