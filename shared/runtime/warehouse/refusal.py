"""The fenced MERGE's refusal of a source (rows of another date, NULL or repeated keys), read back
from the job's error and turned into the partition's permanent error.
"""

from __future__ import annotations

import re
from datetime import date
from typing import TYPE_CHECKING

from cascade.definition.model import Processor
from cascade.runtime.warehouse.sql import _REFUSED

if TYPE_CHECKING:
    from cascade.errors import InvalidSourceError


_REFUSAL = re.compile(re.escape(_REFUSED) + r"\[(.*?)\]" + re.escape(_REFUSED), re.DOTALL)


def _refusal(exc: BaseException) -> dict[str, str] | None:
    """The fields of the confinement refusal carried by ``exc`` (or its causes), None if it is another error."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for text in (str(exc), *(str(e.get("message", "")) for e in (getattr(exc, "errors", None) or [])
                                  if isinstance(e, dict))):
            match = _REFUSAL.search(text)
            if match:
                fields = dict(part.split("=", 1) for part in match.group(1).split("|") if "=" in part)
                return fields
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


def refused_source(proc: Processor, day: date, fields: dict[str, str]) -> "InvalidSourceError":
    """The permanent error for a source the MERGE refused: processor, date, what was wrong (dates,
    keys), and the command that re-runs it once the SELECT is fixed."""
    from cascade.errors import InvalidSourceError
    from cascade.runtime.recovery import rerun_command

    iso, table = day.isoformat(), proc.output
    keys = [k for k in table.merge_keys if k != table.date_column] or [table.date_column]
    problems = []
    off, nulls, dups = (int(fields.get(k) or 0) for k in ("off_rows", "null_rows", "dup_keys"))
    if off:
        first = fields.get("first_off") or "NULL"
        problems.append(f"{off} row(s) with {table.date_column} other than {iso} (first: {first})")
    if nulls:
        problems.append(f"{nulls} row(s) with a NULL key {keys}")
    if dups:
        shown = fields.get("dup_sample", "")
        more = f"; and {dups - 10} more" if dups > 10 else ""
        problems.append(f"{dups} key(s) {keys} on more than one row: {shown}{more}")
    return InvalidSourceError(
        f"{proc.name} {iso}: its source was refused before anything was written: " + "; ".join(problems)
        + f". A run writes only its own date, each key once; fix the {proc.kind} source, then re-run: "
        + rerun_command(proc, iso),
        processor=proc.name, date=iso, off_date_rows=off, null_key_rows=nulls, duplicate_keys=dups,
        sample=fields.get("dup_sample") or None)

