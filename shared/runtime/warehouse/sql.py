"""SQL text the warehouse sends, rendered from the definition: identifiers come from the declared
tables, every value is a query parameter.
"""

from __future__ import annotations

from cascade.definition.model import Table

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

