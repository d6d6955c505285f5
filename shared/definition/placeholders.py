"""``{dataset.table}`` placeholders in processor and gate SQL: finding the tables a statement names and
replacing each with a table id. A placeholder resolves only against a declared output table.
"""

from __future__ import annotations

import re
from typing import Callable

# `{dataset.table}` placeholders in processor SQL; resolved only against declared tables.
PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\}")


def tables_in(sql: str | None) -> list[str]:
    """The logical tables (``dataset.table``) ``sql`` names, in order, e.g. ``["nba_raw.schedule"]``."""
    return [f"{ds}.{tb}" for ds, tb in PLACEHOLDER.findall(sql or "")]


def substitute(sql: str, table_id: Callable[[str], str]) -> str:
    """``sql`` with each placeholder replaced by ``table_id(logical)`` in backquotes."""
    return PLACEHOLDER.sub(lambda m: f"`{table_id(m.group(1) + '.' + m.group(2))}`", sql)
