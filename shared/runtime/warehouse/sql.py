"""SQL text the warehouse sends for the reads other modules ask for by name - the quality gates'
counts, samples and offending rows, the backfill validation's duplicate keys and NULL counts, a
partition's sample, an export's rows - and the fenced MERGE's row check.

Each statement is a ``Query``: its text and its query parameters. Identifiers (table ids, column
names) come only from the definition; every value - a date, a gate's bound - is a query parameter,
never inline; the only literal numbers are row limits chosen by the code (``LIMIT 5``). The user's
own SQL (a ``sql`` gate, an export's SELECT) is rendered by the definition and wrapped as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Sequence

from google.cloud import bigquery

from cascade.definition.model import Gate, Table


@dataclass(frozen=True)
class Query:
    """One statement and the query parameters it is sent with."""

    sql: str
    params: list[Any]


def _date(name: str, value: date) -> Any:
    return bigquery.ScalarQueryParameter(name, "DATE", value)


def _date_range(start: date, end: date) -> list[Any]:
    return [_date("start", start), _date("end", end)]


# ---------------------------------------------------------------------- quality gates
def gate_counts(table_id: str, table: Table, gates: Sequence[Gate], day: date, history_start: date) -> Query:
    """The one query of a partition's ``row_count``, ``not_null`` and ``range`` gates: per date from
    ``history_start`` to ``day`` (inclusive; the trailing dates feed ``within_pct``), its rows ``n``,
    and for gate ``i`` of ``gates`` the NULLs of its ``j``-th column (``g<i>_<j>``, ``not_null``) or
    the rows outside its bounds (``g<i>``, ``range``). The date column is returned as ``d``."""
    dc = table.date_column
    params = [_date("data_date", day), _date("history_start", history_start)]
    exprs = ["COUNT(*) AS n"]
    for i, g in enumerate(gates):
        if g.kind == "not_null":
            exprs += [f"COUNTIF({c} IS NULL) AS g{i}_{j}" for j, c in enumerate(g.columns)]
        elif g.kind == "range":
            exprs.append(f"COUNTIF({_outside(g, i, params)}) AS g{i}")
    return Query(f"SELECT {dc} AS d, {', '.join(exprs)} FROM `{table_id}` "
                 f"WHERE {dc} BETWEEN @history_start AND @data_date GROUP BY {dc}", params)


def _outside(g: Gate, i: int, params: list[Any]) -> str:
    """The condition "``g``'s column is outside its bounds" (NULL is not outside); the bounds are added
    to ``params`` as ``@g<i>_min`` / ``@g<i>_max`` (FLOAT64)."""
    col, conds = g.columns[0], []
    for bound, op in (("min", "<"), ("max", ">")):
        value = getattr(g, bound)
        if value is not None:
            params.append(bigquery.ScalarQueryParameter(f"g{i}_{bound}", "FLOAT64", float(value)))
            conds.append(f"{col} {op} @g{i}_{bound}")
    return f"{col} IS NOT NULL AND ({' OR '.join(conds)})"


def _partition_sample(table_id: str, table: Table, day: date, condition: str, columns: Sequence[str],
                      params: list[Any], limit: int) -> Query:
    keys = [k for k in table.merge_keys if k != table.date_column]
    cols = ", ".join(dict.fromkeys([*keys, *columns]))
    return Query(f"SELECT {cols} FROM `{table_id}` WHERE {table.date_column} = @data_date "
                 f"AND ({condition}) ORDER BY {', '.join(keys or columns)} LIMIT {int(limit)}",
                 [*params, _date("data_date", day)])


def null_sample(table_id: str, table: Table, day: date, columns: Sequence[str], limit: int) -> Query:
    """Up to ``limit`` rows of ``day`` with a NULL in any of ``columns``: their keys and those columns."""
    return _partition_sample(table_id, table, day, " OR ".join(f"{c} IS NULL" for c in columns), columns, [],
                             limit)


def outside_sample(table_id: str, table: Table, day: date, gate: Gate, limit: int) -> Query:
    """Up to ``limit`` rows of ``day`` whose ``range`` gate column is outside the gate's bounds."""
    params: list[Any] = []
    return _partition_sample(table_id, table, day, _outside(gate, 0, params), [gate.columns[0]], params, limit)


def offending_rows(gate_sql: str, day: date, window_start: date, limit: int) -> Query:
    """Up to ``limit`` rows of a ``sql`` gate's SELECT (rendered from the definition) for ``day``."""
    return Query(f"SELECT * FROM (\n{gate_sql}\n) AS offending LIMIT {int(limit)}",
                 [_date("data_date", day), _date("window_start", window_start)])


# ---------------------------------------------------------------------- backfill validation
def duplicate_keys(table_id: str, table: Table, start: date, end: date, limit: int = 20) -> Query:
    """The MERGE keys held by more than one row dated ``start``..``end`` (inclusive), with their row
    count ``n``: most repeated first, at most ``limit``."""
    keys = ", ".join(table.merge_keys)
    return Query(f"SELECT {keys}, COUNT(*) AS n FROM `{table_id}` WHERE {table.date_column} BETWEEN @start AND @end "
                 f"GROUP BY {keys} HAVING COUNT(*) > 1 ORDER BY n DESC LIMIT {int(limit)}", _date_range(start, end))


def null_counts(table_id: str, table: Table, columns: Sequence[str], start: date, end: date) -> Query:
    """One row: per column of ``columns``, its NULLs among the rows dated ``start``..``end`` (inclusive)."""
    sums = ", ".join(f"SUM(CASE WHEN {c} IS NULL THEN 1 ELSE 0 END) AS {c}" for c in columns)
    return Query(f"SELECT {sums} FROM `{table_id}` WHERE {table.date_column} BETWEEN @start AND @end",
                 _date_range(start, end))


# ---------------------------------------------------------------------- partitions
def sample_rows(table_id: str, table: Table, day: date, limit: int) -> Query:
    """The declared columns of up to ``limit`` rows of ``day``'s partition, ordered by the keys."""
    return Query(f"SELECT {', '.join(table.column_names)} FROM `{table_id}` WHERE {table.date_column} = @d "
                 f"ORDER BY {', '.join(table.merge_keys)} LIMIT {int(limit)}", [_date("d", day)])


def processor_select(select_sql: str, day: date, window_start: date) -> Query:
    """A processor's own SELECT (rendered from the definition) for ``day``: ``@data_date`` and
    ``@window_start`` (``day`` less its lookback) as parameters."""
    return Query(select_sql, [_date("data_date", day), _date("window_start", window_start)])


def delete_all(table_id: str) -> Query:
    """Every row of a table (only the throw-away tables of ``cascade test`` are emptied this way)."""
    return Query(f"DELETE FROM `{table_id}` WHERE TRUE", [])

# Marks the refusal the fenced MERGE raises (``ERROR()``) when its source leaves its date or repeats a key.
_REFUSED = "cascade-refused-source"


def confinement_check(table: Table, source_sql: str) -> str:
    """A condition inside the fenced MERGE's source that is TRUE when every source row is dated
    ``@data_date``, has its keys set and no key repeats - and otherwise stops the MERGE (the whole job,
    so nothing is written) with ``ERROR()``: the refusal (marked ``_REFUSED``) counts the rows of other
    dates (and names the first), the rows with a NULL key and the repeated keys (the first 10 named,
    with their row counts). Same job, same statement on BigQuery and on the local engine."""
    dc = table.date_column
    keys = [k for k in table.merge_keys if k != dc] or [dc]
    key_text = "CONCAT(" + ", ', ', ".join(f"'{k}=', IFNULL(CAST({k} AS STRING), 'NULL')" for k in keys) + ")"
    null_key = " OR ".join(f"{k} IS NULL" for k in keys)
    off = f"{dc} IS NULL OR {dc} != @data_date"
    per_key = (f"SELECT {key_text} AS key_text, COUNT(*) AS n, COUNTIF({off}) AS n_off, "
               f"MIN(IF({off}, {dc}, NULL)) AS first_off, COUNTIF({null_key}) AS n_null "
               f"FROM (\n{source_sql}\n) AS c GROUP BY {', '.join(keys)}")
    summary = (f"SELECT SUM(n_off) AS off_rows, MIN(first_off) AS first_off, SUM(n_null) AS null_rows, "
               f"COUNTIF(n > 1) AS dup_keys, STRING_AGG(IF(n > 1, CONCAT(key_text, ' (', CAST(n AS STRING), "
               f"' rows)'), NULL), '; ' ORDER BY key_text LIMIT 10) AS dup_sample FROM ({per_key})")
    message = (f"CONCAT('{_REFUSED}[', 'off_rows=', CAST(IFNULL(off_rows, 0) AS STRING), "
               f"'|first_off=', IFNULL(CAST(first_off AS STRING), ''), "
               f"'|null_rows=', CAST(IFNULL(null_rows, 0) AS STRING), "
               f"'|dup_keys=', CAST(IFNULL(dup_keys, 0) AS STRING), "
               f"'|dup_sample=', IFNULL(dup_sample, ''), ']{_REFUSED}')")
    return (f"(SELECT IF(IFNULL(off_rows, 0) > 0 OR IFNULL(null_rows, 0) > 0 OR IFNULL(dup_keys, 0) > 0, "
            f"ERROR({message}), TRUE) FROM ({summary}))")

