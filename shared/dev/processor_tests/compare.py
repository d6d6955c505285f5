"""Comparing a processor's rows with a case's expected rows: order-insensitive, typed, with float
tolerances, and a diff that names the columns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from cascade.dev.processor_tests.cases import DEFAULT_REL_TOL, Case


@dataclass
class Diff:
    """How the output differs from the expectation (empty: it matches)."""

    missing: list[dict[str, Any]] = field(default_factory=list)  # expected, not produced
    extra: list[dict[str, Any]] = field(default_factory=list)  # produced, not expected
    changed: list[dict[str, Any]] = field(default_factory=list)  # {key: {...}, columns: {col: {expected, actual}}}

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.changed)

    def render(self, indent: str = "    ") -> list[str]:
        lines = []
        for c in self.changed:
            lines.append(f"{indent}changed row {_show_row(c['key'])}:")
            for col, d in c["columns"].items():
                tol = f" (tolerance {d['tolerance']:g})" if d.get("tolerance") else ""
                lines.append(f"{indent}    {col}: expected {_show(d['expected'])}, got {_show(d['actual'])}{tol}")
        lines += [f"{indent}missing row (expected, not produced): {_show_row(r)}" for r in self.missing]
        lines += [f"{indent}extra row (produced, not expected): {_show_row(r)}" for r in self.extra]
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"missing": [_plain_row(r) for r in self.missing], "extra": [_plain_row(r) for r in self.extra],
                "changed": [{"key": _plain_row(c["key"]),
                             "columns": {k: {**v, "expected": _plain(v["expected"]), "actual": _plain(v["actual"])}
                                         for k, v in c["columns"].items()}} for c in self.changed]}


def _plain(v: Any) -> Any:
    if isinstance(v, (date, datetime)):
        return v.isoformat()
    if isinstance(v, Decimal):
        return str(v)
    return v


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in row.items()}


def _show(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, (date, datetime)):
        return v.isoformat()
    if isinstance(v, Decimal):
        return str(v)
    return repr(v) if isinstance(v, str) else str(v)


def _show_row(row: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in row.items()) + "}"


def _equal(typ: str, expected: Any, actual: Any, tolerance: float | None) -> bool:
    if expected is None or actual is None:
        return expected is None and actual is None
    if typ in ("FLOAT64", "NUMERIC"):
        e, a = float(expected), float(actual)
        if tolerance is not None:
            return abs(e - a) <= tolerance + 1e-12
        return math.isclose(e, a, rel_tol=DEFAULT_REL_TOL, abs_tol=1e-12)
    return expected == actual


def compare(case: Case, actual: list[dict[str, Any]]) -> Diff:
    """The expected rows against the output partition's rows, order-insensitive. Rows are matched on
    the output's keys when the compared columns include them (a mismatch is a changed row naming its
    columns); otherwise as a multiset (a mismatch is a missing and an extra row)."""
    assert case.expected is not None
    table = case.processor.output
    types = dict(table.columns)
    cols = case.columns
    keys = [k for k in table.keys if k != table.date_column]
    diff = Diff()

    def same(e: dict[str, Any], a: dict[str, Any], col: str) -> bool:
        return _equal(types[col], e[col], a.get(col), case.tolerance.get(col))

    shown = list(dict.fromkeys([*keys, *cols])) if keys else cols
    if keys and set(keys) <= set(cols):
        by_key = {tuple(a.get(k) for k in keys): a for a in actual}
        for e in case.expected:
            key = tuple(e[k] for k in keys)
            a = by_key.pop(key, None)
            if a is None:
                diff.missing.append({c: e[c] for c in cols})
                continue
            wrong = {c: {"expected": e[c], "actual": a.get(c), "tolerance": case.tolerance.get(c)}
                     for c in cols if c not in keys and not same(e, a, c)}
            if wrong:
                diff.changed.append({"key": dict(zip(keys, key)), "columns": wrong})
        diff.extra = [{c: a.get(c) for c in shown} for a in by_key.values()]
        return diff
    left = list(actual)
    for e in case.expected:
        match = next((a for a in left if all(same(e, a, c) for c in cols)), None)
        if match is None:
            diff.missing.append({c: e[c] for c in cols})
        else:
            left.remove(match)
    diff.extra = [{c: a.get(c) for c in shown} for a in left]
    return diff
