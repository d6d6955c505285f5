"""The building blocks of a declared structure: value shapes that validate, describe and document themselves.

A ``Node`` is one value's declared shape (``Str``, ``Int``, ``Num``, ``Bool``, ``Date``, ``List``,
``Map`` of free keys, ``Obj`` of declared keys, ``Either`` by the value's type, ``OneKey`` for
one-key mappings). Each can ``check`` a value (appending ``Issue``s with their paths), render its
JSON Schema (``json``) and its reference-table type (``label``). ``cascade.definition.schema``
declares the pipeline definition with them.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import date
from typing import Any, Iterator

Path_ = tuple[Any, ...]  # keys and list indexes from the document root, e.g. ("processors", 2, "sql")


@dataclass(frozen=True)
class Issue:
    """One structural problem: where (path from the root) and what."""

    path: Path_
    message: str

    def where(self, raw: Any = None) -> str:
        """``processor 'x': output.keys`` style location (the processor/phase named when known)."""
        from cascade.definition.schema import describe_path

        return describe_path(self.path, raw)

    def render(self, raw: Any = None) -> str:
        where = self.where(raw)
        return f"{where}: {self.message}" if where else self.message


# ---------------------------------------------------------------------- nodes
class Node:
    """A value's declared shape. ``message`` replaces the generic text of a failure at this node."""

    kind = "value"

    def __init__(self, description: str = "", *, required: bool = False, default: Any = None,
                 message: str | None = None, examples: list[Any] | None = None) -> None:
        self.description = description
        self.required = required
        self.default = default
        self.message = message
        self.examples = examples or []

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        raise NotImplementedError

    def _json(self) -> dict[str, Any]:
        raise NotImplementedError

    def json(self) -> dict[str, Any]:
        out = self._json()
        if self.description:
            out["description"] = self.description
        if self.default is not None:
            out["default"] = self.default
        if self.examples:
            out["examples"] = self.examples
        return out

    def label(self) -> str:
        return self.kind

    def _fail(self, out: list[Issue], path: Path_, text: str, custom: bool = True) -> None:
        out.append(Issue(path, (self.message if custom else None) or text))

    def children(self) -> Iterator[tuple[str, "Node"]]:
        return iter(())


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Str(Node):
    kind = "string"

    def __init__(self, description: str = "", *, pattern: str | None = None, enum: list[str] | None = None,
                 max_length: int | None = None, **kw: Any) -> None:
        super().__init__(description, **kw)
        self.pattern, self.enum, self.max_length = pattern, enum, max_length

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        if not isinstance(value, str):
            return self._fail(out, path, f"expected a string, got {_got(value)}")
        if self.enum is not None and value not in self.enum:
            return self._fail(out, path, f"expected one of {self.enum}, got {_got(value)}")
        if self.pattern and not re.search(self.pattern, value):
            return self._fail(out, path, f"{_got(value)} does not match {self.pattern}")
        if self.max_length is not None and len(value) > self.max_length:
            return self._fail(out, path, f"at most {self.max_length} characters, got {len(value)}")

    def _json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string"}
        if self.enum is not None:
            out["enum"] = self.enum
        if self.pattern:
            out["pattern"] = self.pattern
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        return out

    def label(self) -> str:
        return " \\| ".join(f"`{e}`" for e in self.enum) if self.enum else "string"


class Int(Node):
    kind = "integer"

    def __init__(self, description: str = "", *, minimum: int | None = None, maximum: int | None = None,
                 nullable: bool = False, **kw: Any) -> None:
        super().__init__(description, **kw)
        self.minimum, self.maximum, self.nullable = minimum, maximum, nullable

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        if value is None and self.nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            return self._fail(out, path, f"expected an integer, got {_got(value)}", custom=False)
        if self.minimum is not None and value < self.minimum or self.maximum is not None and value > self.maximum:
            return self._fail(out, path, f"expected {self.minimum if self.minimum is not None else ''}.."
                                         f"{self.maximum if self.maximum is not None else ''}, got {value}")

    def _json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": ["integer", "null"] if self.nullable else "integer"}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out

    def label(self) -> str:
        bounds = (f" ({self.minimum if self.minimum is not None else ''}..{self.maximum if self.maximum is not None else ''})"
                  if self.minimum is not None or self.maximum is not None else "")
        return "integer" + bounds + (" or null" if self.nullable else "")


class Num(Node):
    kind = "number"

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self._fail(out, path, f"expected a number, got {_got(value)}")

    def _json(self) -> dict[str, Any]:
        return {"type": "number"}


class Bool(Node):
    kind = "boolean"

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        if not isinstance(value, bool):
            self._fail(out, path, f"expected true or false, got {_got(value)}")

    def _json(self) -> dict[str, Any]:
        return {"type": "boolean"}


class Date(Node):
    """A date ``YYYY-MM-DD`` (YAML may hand it over already parsed)."""

    kind = "date"

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        if isinstance(value, date):
            return None
        try:
            if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                date.fromisoformat(value)
                return None
        except ValueError:
            pass
        self._fail(out, path, f"expected a date YYYY-MM-DD, got {_got(value)}")

    def _json(self) -> dict[str, Any]:
        return {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}

    def label(self) -> str:
        return "date (YYYY-MM-DD)"


class List(Node):
    kind = "list"

    def __init__(self, items: Node, description: str = "", *, min_items: int = 0, **kw: Any) -> None:
        super().__init__(description, **kw)
        self.items, self.min_items = items, min_items

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        if not isinstance(value, list):
            return self._fail(out, path, f"expected a list, got {_got(value)}")
        if len(value) < self.min_items:
            return self._fail(out, path, f"expected at least {self.min_items} item(s)")
        for i, item in enumerate(value):
            self.items.check(item, (*path, i), out)

    def _json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "array", "items": self.items.json()}
        if self.min_items:
            out["minItems"] = self.min_items
        return out

    def label(self) -> str:
        return f"list of {self.items.label()}"

    def children(self) -> Iterator[tuple[str, Node]]:
        yield "[]", self.items


class Map(Node):
    """A mapping with free keys (matching ``key_pattern``) and uniform values, e.g. columns."""

    kind = "mapping"

    def __init__(self, values: Node, description: str = "", *, key_pattern: str, min_items: int = 0,
                 **kw: Any) -> None:
        super().__init__(description, **kw)
        self.values, self.key_pattern, self.min_items = values, key_pattern, min_items

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        if not isinstance(value, dict):
            return self._fail(out, path, f"expected a mapping, got {_got(value)}")
        if len(value) < self.min_items:
            return self._fail(out, path, f"expected at least {self.min_items} entr{'y' if self.min_items == 1 else 'ies'}")
        for k, v in value.items():
            if not isinstance(k, str) or not re.search(self.key_pattern, k):
                out.append(Issue((*path, k), f"key {_got(k)} does not match {self.key_pattern}"))
                continue
            self.values.check(v, (*path, k), out)

    def _json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object", "propertyNames": {"pattern": self.key_pattern},
                               "additionalProperties": self.values.json()}
        if self.min_items:
            out["minProperties"] = self.min_items
        return out

    def label(self) -> str:
        return f"mapping of name to {self.values.label()}"

    def children(self) -> Iterator[tuple[str, Node]]:
        yield "<name>", self.values


class Obj(Node):
    """A mapping with declared keys only (an unknown key is an error: usually a typo)."""

    kind = "mapping"

    def __init__(self, fields: dict[str, Node], description: str = "", *, title: str | None = None,
                 non_empty: bool = False, **kw: Any) -> None:
        super().__init__(description, **kw)
        self.fields, self.title, self.non_empty = fields, title, non_empty

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        if not isinstance(value, dict):
            return self._fail(out, path, f"expected a mapping with keys {list(self.fields)}, got {_got(value)}")
        if self.non_empty and not value:
            return self._fail(out, path, f"expected at least one of {list(self.fields)}")
        suggested = set()
        for k in value:
            if k not in self.fields:
                close = _closest(str(k), self.fields)
                suggested.add(close)
                out.append(Issue((*path, k), f"unknown key {k!r}"
                                 + (f" (did you mean {close!r}?)" if close else f"; allowed: {list(self.fields)}")))
        for k, node in self.fields.items():
            if k in value:
                node.check(value[k], (*path, k), out)
            elif node.required and k not in suggested:  # a misspelt key is reported once, as unknown
                out.append(Issue(path, f"missing required key {k!r}"))

    def _json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object", "properties": {k: n.json() for k, n in self.fields.items()},
                               "additionalProperties": False}
        req = [k for k, n in self.fields.items() if n.required]
        if req:
            out["required"] = req
        if self.non_empty:
            out["minProperties"] = 1
        if self.title:
            out["title"] = self.title
        return out

    def children(self) -> Iterator[tuple[str, Node]]:
        yield from self.fields.items()


class Either(Node):
    """One of a few shapes, told apart by the value's type (e.g. a name, or a mapping)."""

    def __init__(self, *options: Node, description: str = "", **kw: Any) -> None:
        super().__init__(description, **kw)
        self.options = options

    _PY = {"string": str, "mapping": dict, "list": list, "integer": int, "number": (int, float), "boolean": bool}

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        for opt in self.options:
            if isinstance(value, self._PY.get(opt.kind, object)):
                return opt.check(value, path, out)
        self._fail(out, path, f"expected {' or '.join(o.label() for o in self.options)}, got {_got(value)}")

    def _json(self) -> dict[str, Any]:
        return {"anyOf": [o.json() for o in self.options]}

    def label(self) -> str:
        return " or ".join(o.label() for o in self.options)

    def children(self) -> Iterator[tuple[str, Node]]:
        for o in self.options:
            yield from o.children()


class OneKey(Node):
    """A mapping with exactly one of ``variants`` as its key (its kind), plus optional ``extra`` keys."""

    kind = "mapping"

    def __init__(self, variants: dict[str, Node], extra: dict[str, Node], description: str = "", *,
                 needs: dict[str, tuple[list[str], str]] | None = None, **kw: Any) -> None:
        super().__init__(description, **kw)
        self.variants, self.extra, self.needs = variants, extra, needs or {}

    def check(self, value: Any, path: Path_, out: list[Issue]) -> None:
        kinds = [k for k in (value if isinstance(value, dict) else {}) if k not in self.extra]
        if not isinstance(value, dict) or len(kinds) != 1 or kinds[0] not in self.variants:
            return self._fail(out, path, f"expected one of {list(self.variants)} (e.g. {{not_null: [col]}}), "
                                         f"got {_got(value)}")
        kind = kinds[0]
        self.variants[kind].check(value[kind], (*path, kind), out)
        for k, node in self.extra.items():
            if k in value:
                node.check(value[k], (*path, k), out)
        keys, text = self.needs.get(kind, ([], ""))
        if any(k not in value for k in keys):
            out.append(Issue(path, text))

    def _json(self) -> dict[str, Any]:
        alts = []
        for kind, node in self.variants.items():
            alts.append({"type": "object", "properties": {kind: node.json(), **{k: n.json() for k, n in self.extra.items()}},
                         "required": [kind, *self.needs.get(kind, ([], ""))[0]], "additionalProperties": False})
        return {"oneOf": alts}

    def children(self) -> Iterator[tuple[str, Node]]:
        yield from self.variants.items()
        yield from self.extra.items()


def _closest(key: str, known: dict[str, Any]) -> str | None:
    found = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    return found[0] if found else None
