"""Parse each SQL text once in bqemulator: sqlglot parse trees memoized, a copy handed out per call.

bqemulator 1.4.0 parses the statement of one query job about fifteen times (its DDL detectors, the
DML classifier, the row-access and table rewriters, the translator's rules each call
``sqlglot.parse_one`` on the same text). For a fenced MERGE that is ~13 ms a parse, two thirds of
the job's time on the local engine; a copy of the tree costs ~2 ms. ``install()`` wraps
``Dialect.parse`` (every ``parse_one`` / ``parse`` / ``transpile`` goes through it): the first call
for a (dialect, text, options) parses, later calls get a deep copy of that tree, so a caller that
changes its tree never changes another's. A parse error is not remembered (it is raised each time).
Nothing else changes: the same trees, the same SQL sent to DuckDB, the same results.

Installed by ``emulators/bqemulator_offline.py`` unless ``CASCADE_BQ_PARSE_MEMO=0``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

MAX_ENTRIES = 512  # distinct statements kept (least recently used dropped first)

_installed = False


def install(max_entries: int = MAX_ENTRIES) -> None:
    """Memoize ``sqlglot.dialects.dialect.Dialect.parse`` in this process (idempotent)."""
    global _installed
    if _installed:
        return
    from sqlglot.dialects.dialect import Dialect

    original = Dialect.parse
    memo: OrderedDict[tuple, list[Any]] = OrderedDict()
    lock = threading.Lock()

    def parse(self: Any, sql: str, **opts: Any) -> list[Any]:
        try:
            key = (type(self), repr(sorted(getattr(self, "settings", {}).items())), sql,
                   repr(sorted(opts.items())))
            hash(key)
        except Exception:  # noqa: BLE001 - options that cannot be keyed: parse as usual
            return original(self, sql, **opts)
        with lock:
            trees = memo.get(key)
            if trees is not None:
                memo.move_to_end(key)
        if trees is None:
            trees = original(self, sql, **opts)
            with lock:
                memo[key] = trees
                while len(memo) > max_entries:
                    memo.popitem(last=False)
            # The caller gets copies too: the kept trees are never handed out.
        return [t.copy() if t is not None else None for t in trees]

    Dialect.parse = parse  # type: ignore[method-assign]
    _installed = True
