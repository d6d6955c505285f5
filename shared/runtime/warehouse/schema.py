"""Output tables against their definition: the declared schema, the differences of an existing
table (``ColumnChange``), and the refusal and rebuild commands a removed or retyped column needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from google.cloud import bigquery

from cascade.definition.columns import all_columns
from cascade.definition.model import Processor, Table
from cascade.errors import CascadeError

if TYPE_CHECKING:
    from cascade.runtime.warehouse.base import Warehouse

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

