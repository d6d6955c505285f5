"""The checks of one definition file, in the order ``cascade lint`` reports them (see the package's
docstring): yaml, schema, upstreams, cycles, lookbacks, placeholders, callables, the loader's own
checks, live tables and the SQL analysis - setting aside only what a problem makes uncheckable."""

from __future__ import annotations

import difflib
import os
import re
from datetime import date, timedelta
from typing import Any

from cascade.definition import schema as definition_schema
from cascade.errors import DefinitionError
from cascade.lint.locate import Lines
from cascade.lint.report import Problem

# `{anything.anything}` in SQL: broader than the loader's placeholder pattern, so a misspelt
# placeholder (upper case, a typo) is reported instead of reaching BigQuery as text.
_ANY_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)\}")
_REPRESENTATIVE_DAY = date(2025, 1, 15)


class _Checker:
    """Runs the checks on one parsed file and collects their problems (``lint`` reports them)."""

    def __init__(self, file: str, raw: Any, lines: Lines, cache: bool = True) -> None:
        self.file, self.raw, self.lines = file, raw, lines
        self.problems: list[Problem] = []
        self.statements = 0
        self.reused = 0
        self.cache = cache
        self.sql_ran = False
        self.tables_checked: str | None = None
        self.set_aside: set[str] = set()  # processors left out of the later checks (problems above)
        # processor name -> its index in the file (paths point into the file, whatever was set aside)
        self.index = {p["name"]: i for i, p in self._processors()}

    def add(self, check: str, message: str, fix: str, path: tuple[Any, ...] = (), key: bool = False,
            processor: str | None = None, line: int | None = None, statement: str | None = None) -> None:
        self.problems.append(Problem(check, message, fix, self.file,
                                     line if line is not None else self.lines.line(path, key=key),
                                     processor, statement))

    # ------------------------------------------------------------------ the checks, in order
    def run(self, sql: bool) -> None:
        for issue in definition_schema.issues(self.raw):
            unknown = issue.message.startswith("unknown key")
            proc = _proc_name(self.raw, issue.path)
            where = definition_schema.describe_path(issue.path[2:] if proc else issue.path, self.raw)
            self.add("schema", f"{where}: {issue.message}" if where else issue.message, _schema_fix(issue),
                     issue.path, key=unknown, processor=proc)
        n_schema = len(self.problems)
        procs = self._processors()
        self._upstreams(procs)
        self._cycles(procs)
        self._placeholders(procs)
        if len(self.problems) == n_schema == 0:
            pipeline = self._load(False, graph_problems=False)
            if pipeline is None:  # the loader's own check failed: set that processor aside, go on
                pipeline = self._load_rest()
        else:
            pipeline = self._load_rest()
        if pipeline is None:
            return
        self._lookbacks(pipeline)
        self._callables(pipeline)
        if not self.set_aside:
            self._tables(pipeline)  # compared for a whole definition only
        if sql:
            self._sql(pipeline)

    # ------------------------------------------------------------------ one pass despite problems
    def _load_rest(self) -> Any:
        """The definition without the processors that have problems (and those reading them), or None
        when a problem outside the processors leaves nothing to load. Loader errors found on the way
        are reported (once per processor) and set that processor aside too."""
        from cascade.definition.loading import from_dict

        if not isinstance(self.raw, dict) or not isinstance(self.raw.get("processors"), list):
            return None
        # Schema problems are found again on the definition without its unknown keys (``_keep``): a
        # processor whose only problem is a misspelt optional key is still checked.
        with_problems = {p.processor for p in self.problems if p.processor and p.check != "schema"}
        reported = {p.processor for p in self.problems if p.processor}
        raw = _without_unknown_keys(self.raw, definition_schema.SCHEMA)
        for _ in range(len(self.index) + 1):
            kept = self._keep(raw, with_problems | self.set_aside)
            if kept is None:
                return None
            try:
                return from_dict(kept, source_path=os.path.abspath(self.file))
            except DefinitionError as exc:
                text = getattr(exc, "message", None) or str(exc)
                names = [n for n in self.index if f"'{n}'" in text and n not in self.set_aside]
                if not names:
                    return None
                if names[0] not in reported:
                    reported.add(names[0])
                    self.add("definition", text, "make the definition consistent as the message says "
                                                 "(see docs/definition-reference.md)",
                             ("processors", self.index[names[0]]), processor=names[0])
                with_problems.add(names[0])
        return None

    def _keep(self, raw: dict[str, Any], bad: set[str]) -> dict[str, Any] | None:
        """``raw`` without ``bad`` processors and every processor reading one of them; None when what
        is left still has schema issues outside the processors (or no processor at all)."""
        procs = [p for p in raw["processors"] if isinstance(p, dict)]
        bad = set(bad) | {str(p.get("name")) for p in procs
                          if any(i.path[:1] == ("processors",) for i in definition_schema.issues(
                              {**raw, "processors": [p]}))}
        changed = True
        while changed:
            tables = {str((p.get("output") or {}).get("table")) for p in procs if str(p.get("name")) in bad
                      and isinstance(p.get("output"), dict)}
            changed = False
            for p in procs:
                name = str(p.get("name"))
                if name in bad:
                    continue
                reads = {self._upstream_name(u) for u in _list(p.get("upstreams"))}
                texts = [p.get("sql"), (p.get("export") or {}).get("sql") if isinstance(p.get("export"), dict) else None,
                         *[g.get("sql") for g in _list(p.get("gates")) if isinstance(g, dict)]]
                named = {f"{a}.{b}" for t in texts if isinstance(t, str) for a, b in _ANY_PLACEHOLDER.findall(t)}
                if reads & bad or named & tables:
                    bad.add(name)
                    changed = True
        self.set_aside = {n for n in bad if n in self.index}
        rest = [p for p in procs if str(p.get("name")) not in bad]
        kept = {**raw, "processors": rest}
        if not rest or definition_schema.issues(kept):
            return None
        return kept

    def _processors(self) -> list[tuple[int, dict[str, Any]]]:
        items = self.raw.get("processors") if isinstance(self.raw, dict) else None
        return [(i, p) for i, p in enumerate(items or []) if isinstance(p, dict) and isinstance(p.get("name"), str)]

    @staticmethod
    def _upstream_name(u: Any) -> str | None:
        return u if isinstance(u, str) else u.get("processor") if isinstance(u, dict) else None

    def _upstreams(self, procs: list[tuple[int, dict[str, Any]]]) -> None:
        names = [p["name"] for _, p in procs]
        for i, p in procs:
            for j, u in enumerate(_list(p.get("upstreams"))):
                name = self._upstream_name(u)
                if isinstance(name, str) and name not in names:
                    close = difflib.get_close_matches(name, names, n=1)
                    self.add("upstream", f"upstream {name!r} is not a declared processor",
                             (f"did you mean {close[0]!r}? " if close else "")
                             + f"declare a processor named {name!r} or remove it; processors are {sorted(names)}",
                             ("processors", i, "upstreams", j), processor=p["name"])

    def _cycles(self, procs: list[tuple[int, dict[str, Any]]]) -> None:
        graph = {p["name"]: [self._upstream_name(u) for u in _list(p.get("upstreams"))] for _, p in procs}
        index = {p["name"]: i for i, p in procs}
        reported: set[frozenset[str]] = set()
        state: dict[str, int] = {}
        stack: list[str] = []

        def visit(n: str) -> None:
            state[n] = 1
            stack.append(n)
            for m in graph.get(n, []):
                if m not in graph:
                    continue
                if state.get(m) == 1:
                    cycle = stack[stack.index(m):]
                    if frozenset(cycle) not in reported:
                        reported.add(frozenset(cycle))
                        first = min(cycle, key=lambda x: index[x])
                        path = " -> ".join(reversed([*cycle, cycle[0]]))
                        self.add("cycle", f"processors read each other in a cycle: {path} (each reads the next's "
                                          f"output; none can run first)",
                                 "remove one of these upstreams: a processor runs after every processor it reads",
                                 ("processors", index[first], "upstreams"), processor=first)
                elif state.get(m) is None:
                    visit(m)
            stack.pop()
            state[n] = 2

        for name in graph:
            if name not in state:
                visit(name)

    def _placeholders(self, procs: list[tuple[int, dict[str, Any]]]) -> None:
        tables = sorted({str((p.get("output") or {}).get("table")) for _, p in procs if isinstance(p.get("output"), dict)})
        for i, p in procs:
            texts = [(("processors", i, "sql"), p.get("sql"))]
            if isinstance(p.get("export"), dict):
                texts.append((("processors", i, "export", "sql"), p["export"].get("sql")))
            for g, gate in enumerate(_list(p.get("gates"))):
                if isinstance(gate, dict):
                    texts.append((("processors", i, "gates", g, "sql"), gate.get("sql")))
            for path, sql in texts:
                if not isinstance(sql, str):
                    continue
                for m in _ANY_PLACEHOLDER.finditer(sql):
                    name = f"{m.group(1)}.{m.group(2)}"
                    if name in tables:
                        continue
                    close = difflib.get_close_matches(name, tables, n=1)
                    self.add("placeholder", f"SQL placeholder {{{name}}} names no declared table",
                             (f"did you mean {{{close[0]}}}? " if close else "")
                             + f"placeholders name the output tables of declared processors: {tables}",
                             processor=p["name"], line=self.lines.text_line(path, sql[:m.start()].count("\n") + 1))

    def _load(self, schema_problems: bool, graph_problems: bool) -> Any:
        """The ``Pipeline``, or None when it does not load (its error reported unless already covered)."""
        from cascade.definition.loading import from_dict

        if schema_problems:
            return None  # the loader would stop at the first of the problems already reported
        try:
            return from_dict(self.raw, source_path=os.path.abspath(self.file))
        except DefinitionError as exc:
            if graph_problems:
                return None  # the loader's first error is one of the upstream/cycle/placeholder problems
            text = getattr(exc, "message", None) or str(exc)
            proc = next((p["name"] for _, p in self._processors() if f"'{p['name']}'" in text), None)
            index = next((i for i, p in self._processors() if p["name"] == proc), None)
            self.add("definition", text, "make the definition consistent as the message says "
                                         "(see docs/definition-reference.md)",
                     ("processors", index) if index is not None else (), processor=proc)
            return None

    def _lookbacks(self, pipeline: Any) -> None:
        cal = pipeline.calendar
        if not cal.seasons:
            return
        longest = max(cal.seasons, key=lambda s: (s.end - s.start).days)
        longest_days = (longest.end - longest.start).days + 1
        first = min(s.start for s in cal.seasons)
        total = len(cal.expected_dates(first, max(s.end for s in cal.seasons)))
        for i, proc in enumerate(pipeline.processors):
            i = self.index.get(proc.name, i)
            for j, u in enumerate(proc.upstreams):
                path = ("processors", i, "upstreams", j)
                if u.lookback_days >= longest_days:
                    self.add("lookback", f"upstream {u.processor}: lookback_days {u.lookback_days} is longer than "
                                         f"any season (the longest, {longest.name}, has {longest_days} days): every "
                                         f"run reads across a whole off-season",
                             f"shorten it below {longest_days}, or use `lookback_dates: N` for the last N expected "
                             f"(expected) dates", path, processor=proc.name)
                if u.lookback_dates > total:
                    self.add("lookback", f"upstream {u.processor}: lookback_dates {u.lookback_dates} exceeds the "
                                         f"{total} expected dates of the whole calendar: for every date the window "
                                         f"stops at the first season's start ({first}) with fewer dates",
                             f"use at most {total}, or declare the earlier seasons in `calendar.seasons`",
                             path, processor=proc.name)

    def _callables(self, pipeline: Any) -> None:
        from cascade.definition.imports import import_callable

        specs = [(("processors", self.index.get(p.name, i), "python"), p.name, p.python)
                 for i, p in enumerate(pipeline.processors) if getattr(p, "python", None)]
        if getattr(pipeline, "synthetic", None):
            specs.append((("synthetic",), None, pipeline.synthetic))
        for path, proc, spec in specs:
            try:
                obj = import_callable(pipeline, spec)
            except Exception as exc:  # ImportError, AttributeError, or an error raised while importing
                self.add("callable", f"`{path[-1]}: {spec}` cannot be imported: {type(exc).__name__}: {exc}",
                         f"create {spec.partition(':')[0].replace('.', '/')}.py beside {os.path.basename(self.file)} "
                         f"(or on PYTHONPATH) defining {spec.partition(':')[2]}, or fix the name", path,
                         processor=proc)
                continue
            if not callable(obj):
                self.add("callable", f"`{spec}` is a {type(obj).__name__}, not a callable",
                         "point it at a function", path, processor=proc)

    def _tables(self, pipeline: Any) -> None:
        from cascade.lint.live import live_warehouse

        with live_warehouse(pipeline) as found:
            if found is None:
                return
            wh, where = found
            refused = [c for c in wh.schema_changes() if c.kind != "added"]
            self.tables_checked = where
            if not refused:
                return
            from cascade.runtime.warehouse import rebuild_commands

            index = {p.name: i for i, p in enumerate(pipeline.processors)}
            for name in dict.fromkeys(c.processor for c in refused):
                mine = [c for c in refused if c.processor == name]
                retyped = next((c.column for c in mine if c.kind == "retyped"), None)
                path = ("processors", index[name], "output", "columns", *([retyped] if retyped else []))
                self.add("table", f"table {mine[0].table} exists with " + "; ".join(
                             f"column {c.column} {c.old_type}" for c in mine) + ", the definition has "
                         + "; ".join(f"{c.column} {c.new_type}" if c.new_type else f"no column {c.column}"
                                     for c in mine)
                         + ": BigQuery cannot change that in place",
                         "rebuild the table (dropping it deletes its rows, the backfill writes them again): "
                         + " then ".join(f"`{cmd}`" for cmd in rebuild_commands(wh, pipeline.processor(name))),
                         path, key=bool(retyped), processor=name)

    def _sql(self, pipeline: Any) -> None:
        from cascade.lint import sql as sqlcheck

        self.sql_ran = True
        day = _representative_day(pipeline)
        stmts = sqlcheck.statements(pipeline, day)
        analyzer = sqlcheck.Analyzer(pipeline)
        cache = sqlcheck.AnalysisCache(pipeline) if self.cache else None
        try:
            self._analyze(pipeline, stmts, analyzer, cache)
        finally:
            if cache is not None:
                cache.save()

    def _analyze(self, pipeline: Any, stmts: list[Any], analyzer: Any, cache: Any) -> None:
        procs = {p.name: p for p in pipeline.processors}
        failed_transforms: set[str] = set()
        for stmt in stmts:
            if stmt.processor in failed_transforms:
                continue  # its derived statements fail the same way; the transform's line says where
            self.statements += 1
            found, err = cache.get(stmt) if cache is not None else (False, None)
            if found:
                self.reused += 1
            else:
                err = analyzer.check(stmt)
                if cache is not None:
                    cache.put(stmt, err)
            if err is None:
                continue
            i = self.index.get(stmt.processor, 0)
            proc = procs[stmt.processor]
            position = f" (at {err.line}:{err.column} of the statement)" if err.line else ""
            if stmt.yaml_path is not None:  # text the definition wrote: point at its line
                if stmt.role == "transform":
                    failed_transforms.add(stmt.processor)
                path = ("processors", i, *stmt.yaml_path)
                line = (self.lines.text_line(path, err.line + stmt.line_offset) if err.line
                        else self.lines.line(path))
                self.add("sql", f"GoogleSQL rejects the {'SELECT' if stmt.role == 'transform' else stmt.role}: "
                                f"{err.message}", err.fix, processor=proc.name, line=line, statement=stmt.role)
            else:
                fix = err.fix
                if stmt.role.startswith("merge") and ("not found inside" in err.message or "Unrecognized" in err.message):
                    fix = ("the SELECT must return every declared output column by name "
                           f"({', '.join(proc.output.column_names)})")
                self.add("sql", f"GoogleSQL rejects the {stmt.role} Cascade sends{position}: {err.message}", fix,
                         ("processors", i, "output"), key=True, processor=proc.name, statement=stmt.role)


def _without_unknown_keys(value: Any, node: Any) -> Any:
    """``value`` without the keys ``node`` (a schema node) does not declare, recursively: a misspelt
    key is reported as unknown, and the rest of its mapping is still checked."""
    from cascade.definition.schema.nodes import Either, List, Map, Obj, OneKey

    if isinstance(node, Obj) and isinstance(value, dict):
        return {k: _without_unknown_keys(v, node.fields[k]) for k, v in value.items() if k in node.fields}
    if isinstance(node, List) and isinstance(value, list):
        return [_without_unknown_keys(v, node.items) for v in value]
    if isinstance(node, Map) and isinstance(value, dict):
        return {k: _without_unknown_keys(v, node.values) for k, v in value.items()}
    if isinstance(node, Either):
        for opt in node.options:
            if isinstance(value, Either._PY.get(opt.kind, object)):
                return _without_unknown_keys(value, opt)
    if isinstance(node, OneKey) and isinstance(value, dict):
        return {k: _without_unknown_keys(v, node.variants.get(k) or node.extra.get(k)) for k, v in value.items()
                if k in node.variants or k in node.extra}
    return value


def _representative_day(pipeline: Any) -> date:
    """A date with a full lookback history when the calendar has one: 60 days into the longest season."""
    cal = pipeline.calendar
    if not cal.seasons:
        return _REPRESENTATIVE_DAY
    longest = max(cal.seasons, key=lambda s: (s.end - s.start).days)
    return min(longest.start + timedelta(days=60), longest.end)


def _list(value: Any) -> list[Any]:
    """``value`` if it is a list, else empty (a wrong type is already a schema problem)."""
    return value if isinstance(value, list) else []


def _proc_name(raw: Any, path: tuple[Any, ...]) -> str | None:
    if len(path) >= 2 and path[0] == "processors" and isinstance(path[1], int):
        try:
            name = raw["processors"][path[1]].get("name")
            return name if isinstance(name, str) else None
        except (KeyError, IndexError, TypeError, AttributeError):
            return None
    return None


def _schema_fix(issue: definition_schema.Issue) -> str:
    if issue.message.startswith("unknown key"):
        return "remove the key or correct its spelling (keys: docs/definition-reference.md)"
    if issue.message.startswith("missing required key"):
        return "add the key (docs/definition-reference.md says what it takes)"
    return "give it a value of the declared type (docs/definition-reference.md)"
