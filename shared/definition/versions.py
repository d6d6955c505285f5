"""Code versions: the fingerprint of what determines a processor's rows.

A partition records, when it succeeds, the version of the processor that built it. The version is a
digest of named parts, so a changed partition can say *what* changed ("code changed: sql, gates"):

* ``sql``       the processor's SELECT (or its export's), normalized: comments, whitespace and the
                case of SQL keywords do not count; string literals and identifiers do.
* ``python``    the source of the module that defines the Python callable, and the callable's name.
* ``source``    a raw load's spec (path pattern, records key); synthetic-data hints do not count.
* ``export``    an export's spec other than its SQL (path, options).
* ``output``    the output table, its date column, keys and declared columns with their types.
* ``gates``     the quality gates.
* ``upstreams`` the declared inputs and their windows.
* ``options``   ``allow_empty``.

``processor_version`` is pure apart from reading a Python processor's module source;
``definition_version`` digests every processor of a definition plus its phases and calendar (what a
running function must be restarted for when it changes).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from cascade.definition.model import Pipeline, Processor

DIGEST_CHARS = 16

# Keywords whose case is formatting (identifiers keep theirs: they may be case-sensitive).
_KEYWORDS = frozenset("""
select from where group by order having limit offset as and or not in is null join left right inner
outer full cross on using with union all distinct except intersect case when then else end over
partition rows range between preceding following unbounded current row qualify window asc desc nulls
first last cast safe_cast struct array true false if exists like interval date timestamp
""".split())
# Tokens of GoogleSQL text: string / bytes literals (single, double, triple quoted, raw), quoted
# identifiers, comments, words, numbers, whitespace, and any other single character.
_TOKEN = re.compile(r"""
    (?P<comment>--[^\n]*|\#[^\n]*|/\*.*?\*/)
  | (?P<string>[rRbB]{0,2}(?:'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"))
  | (?P<quoted>`(?:\\.|[^`\\])*`)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<space>\s+)
  | (?P<other>.)
""", re.S | re.X)


def normalize_sql(sql: str) -> str:
    """``sql`` with formatting removed: comments dropped, whitespace collapsed to what separates two
    words, keywords lower-cased. Two statements that differ only in layout normalize equal."""
    out: list[str] = []
    pending_space = False
    for m in _TOKEN.finditer(sql or ""):
        kind, text = m.lastgroup, m.group()
        if kind in ("comment", "space"):
            pending_space = True
            continue
        if kind == "word" and text.lower() in _KEYWORDS:
            text = text.lower()
        if pending_space and out and _wordish(out[-1][-1]) and _wordish(text[0]):
            out.append(" ")
        pending_space = False
        out.append(text)
    return "".join(out).strip()


def _wordish(ch: str) -> bool:
    return ch.isalnum() or ch in "_`'\"@{}"


def _digest(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


@dataclass(frozen=True)
class Version:
    """A processor's code version: one digest over named part digests."""

    digest: str
    parts: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.digest, "version_parts": dict(self.parts)}

    def changed_parts(self, recorded_parts: Mapping[str, str] | None) -> list[str]:
        """The parts that differ from a recorded version's (all of them when none were recorded)."""
        recorded = recorded_parts or {}
        return sorted(k for k in set(self.parts) | set(recorded) if self.parts.get(k) != recorded.get(k))


def python_source(pipeline: Pipeline, spec: str) -> str:
    """The source of the module defining ``spec`` (``module:attribute``), or a marker when it cannot
    be imported (the run itself will fail with the import error)."""
    import inspect

    from cascade.definition.imports import import_callable

    module = spec.partition(":")[0]
    try:
        import_callable(pipeline, spec)
        import sys

        return inspect.getsource(sys.modules[module])
    except Exception as exc:  # noqa: BLE001 - an unimportable module still has a (distinct) version
        return f"<unimportable {spec}: {type(exc).__name__}>"


def processor_version(pipeline: Pipeline, proc: Processor) -> Version:
    """The version of ``proc`` under ``pipeline`` (the namespace does not count)."""
    parts: dict[str, str] = {}
    sql = proc.sql if proc.sql is not None else (proc.export or {}).get("sql")
    if sql is not None:
        parts["sql"] = _digest(normalize_sql(sql))
    if proc.python is not None:
        parts["python"] = _digest(proc.python + "\n" + python_source(pipeline, proc.python))
    if proc.source is not None:
        parts["source"] = _digest({k: v for k, v in proc.source.items() if k != "synthetic"})
    if proc.export is not None:
        parts["export"] = _digest({k: v for k, v in proc.export.items() if k != "sql"})
    out = proc.output
    parts["output"] = _digest({"table": out.logical, "date_column": out.date_column, "keys": list(out.keys),
                               "columns": [list(c) for c in out.columns]})
    parts["gates"] = _digest([{**g.describe(), **({"sql": normalize_sql(g.sql)} if g.sql else {})}
                              for g in proc.gates])
    parts["upstreams"] = _digest([[u.processor, u.lookback_days, u.lookback_dates, u.until_previous_day]
                                  for u in proc.upstreams])
    parts["options"] = _digest({"allow_empty": proc.allow_empty})
    return Version(_digest(parts), parts)


class Versions:
    """The versions of every processor of a definition, computed once (Python sources read once)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._cache: dict[str, Version] = {}

    def of(self, name: str) -> Version:
        if name not in self._cache:
            self._cache[name] = processor_version(self.pipeline, self.pipeline.processor(name))
        return self._cache[name]


def definition_version(pipeline: Pipeline, versions: Versions | None = None) -> str:
    """One digest of a whole definition: every processor's version, the phases and the calendar."""
    vs = versions or Versions(pipeline)
    return _digest({
        "pipeline": pipeline.name,
        "processors": {p.name: [p.phase, vs.of(p.name).digest] for p in pipeline.processors},
        "phases": [[ph.number, ph.name, ph.next, ph.schedule, ph.default_date] for ph in pipeline.phases],
        "calendar": pipeline.calendar.to_dict(),
    })
