"""Column types of output tables: the BigQuery types a definition may declare, the columns the framework
adds to every output table, and the manifest row of an export.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cascade.definition.model import Table

# BigQuery column types a definition may use, in the order the definition reference lists them.
COLUMN_TYPES = ("DATE", "STRING", "INT64", "FLOAT64", "BOOL", "TIMESTAMP", "NUMERIC")
# The column types a `range` gate can compare.
NUMERIC_TYPES = {"INT64", "FLOAT64", "NUMERIC"}
# Columns every output table gets, written by the framework on each MERGE: lineage (which run wrote
# the row, when) and the write fence of that run (a run with an older fence cannot change the row).
FRAMEWORK_COLUMNS = {"_run_id": "STRING", "_processed_at": "TIMESTAMP", "_fence": "INT64"}
# Fields of the manifest row an export processor writes (its output columns are a subset of these
# plus its date column): the file's gs:// path, its row count, its size and its SHA-256.
MANIFEST_FIELDS = {"path": "STRING", "row_count": "INT64", "bytes": "INT64", "sha256": "STRING"}


# A column type -> its legacy name, where the two differ: the BigQuery tables API reports (and
# Terraform's table schemas take) INTEGER for INT64. The inverse is derived below.
_TO_LEGACY = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}
_FROM_LEGACY = {legacy: t for t, legacy in _TO_LEGACY.items()}


def type_to_legacy(column_type: str) -> str:
    """``INT64`` -> ``INTEGER``; a type whose names agree (``DATE``) is returned as it is."""
    return _TO_LEGACY.get(column_type, column_type)


def legacy_to_type(name: str) -> str:
    """``INTEGER`` -> ``INT64``: the type as a definition spells it, whichever name the API reported."""
    return _FROM_LEGACY.get(name, name)


def all_columns(table: "Table") -> list[tuple[str, str]]:
    """The declared columns plus the framework's lineage columns."""
    return [*table.columns, *FRAMEWORK_COLUMNS.items()]
