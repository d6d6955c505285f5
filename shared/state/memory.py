"""The document store in memory: the semantics of ``FirestoreStore`` without a backend, for unit
tests of the state, the runner's steps and the sweeper.

Same rules as Firestore's: ``create`` fails when the document exists; a write that names a version
happens only at that version; a commit is atomic; every write moves the document's version on; a
``set`` with ``merge`` merges maps field by field; queries match only documents that have the
filtered field, with range filters on values of the same type; reads return copies. Watches are
called synchronously after the write that changed a matching document. Thread-safe.
"""

from __future__ import annotations

import copy
import itertools
import threading
from datetime import date, datetime
from typing import Any, Callable, Sequence

from cascade.state.store import Doc, DocumentStore, Filter, Increment, Watch, Write

_MISSING = object()


class MemoryStore(DocumentStore):
    def __init__(self) -> None:
        self.ops = 0
        self.docs: dict[str, dict[str, tuple[dict[str, Any], int]]] = {}  # collection -> id -> (data, version)
        self._versions = itertools.count(1)
        self._lock = threading.RLock()
        self._watches: list[_MemoryWatch] = []
        self.fail_next_commits = 0  # tests: the next n commits abort (as a concurrent change would)

    # ------------------------------------------------------------------ reads
    def get(self, collection: str, doc_id: str) -> Doc:
        with self._lock:
            self.ops += 1
            return self._doc(collection, doc_id)

    def get_all(self, collection: str, ids: Sequence[str]) -> dict[str, Doc]:
        ids = list(dict.fromkeys(ids))
        if not ids:
            return {}
        with self._lock:
            self.ops += 1
            return {i: self._doc(collection, i) for i in ids}

    def _doc(self, collection: str, doc_id: str) -> Doc:
        found = self.docs.get(collection, {}).get(doc_id)
        if found is None:
            return Doc(doc_id, None)
        return Doc(doc_id, copy.deepcopy(found[0]), found[1])

    def query(self, collection: str, where: Sequence[Filter] = (), order_by: str | None = None,
              descending: bool = False, limit: int | None = None,
              fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            self.ops += 1
            rows = [(i, data) for i, (data, _v) in sorted(self.docs.get(collection, {}).items())
                    if _matches(data, where)]
        if order_by is not None:
            rows = [(i, d) for i, d in rows if order_by in d]
            rows.sort(key=lambda r: _order_key(r[1][order_by]), reverse=descending)
        if limit is not None:
            rows = rows[:limit]
        if fields is not None:
            rows = [(i, {k: d[k] for k in fields if k in d}) for i, d in rows]
        return [copy.deepcopy(d) for _i, d in rows]

    # ------------------------------------------------------------------ writes
    def commit(self, writes: Sequence[Write], before: Callable[[], None] | None = None) -> bool:
        if before is not None:
            before()
        with self._lock:
            self.ops += 1
            if self.fail_next_commits > 0:
                self.fail_next_commits -= 1
                return False
            staged: dict[tuple[str, str], Any] = {}  # (collection, id) -> data, or _MISSING when deleted

            def current(col: str, doc_id: str) -> tuple[Any, int | None]:
                if (col, doc_id) in staged:
                    return staged[(col, doc_id)], None
                found = self.docs.get(col, {}).get(doc_id)
                return (found[0], found[1]) if found is not None else (_MISSING, None)

            for w in writes:
                data, version = current(w.collection, w.id)
                exists = data is not _MISSING
                if w.kind == "create":
                    if exists:
                        return False
                    staged[(w.collection, w.id)] = _apply({}, w.data, merge=False)
                elif w.kind == "update":
                    if not exists or (w.version is not None and w.version != version):
                        return False
                    staged[(w.collection, w.id)] = _apply(data, w.data, merge=False, keep=True)
                elif w.kind == "set":
                    staged[(w.collection, w.id)] = _apply(data if exists and w.merge else {}, w.data, merge=w.merge)
                elif w.kind == "delete":
                    if w.version is not None and (not exists or w.version != version):
                        return False
                    staged[(w.collection, w.id)] = _MISSING
                else:
                    raise ValueError(f"unknown write {w.kind!r}")
            changed = []
            for (col, doc_id), data in staged.items():
                if data is _MISSING:
                    old = self.docs.get(col, {}).pop(doc_id, None)
                    if old is not None:
                        changed.append((col, old[0]))
                else:
                    self.docs.setdefault(col, {})[doc_id] = (data, next(self._versions))
                    changed.append((col, data))
            watches = list(self._watches)
        for watch in watches:
            watch.notify(changed)
        return True

    def watch(self, collection: str, where: Sequence[Filter],
              on_change: Callable[[list[dict[str, Any]]], None]) -> Watch:
        watch = _MemoryWatch(self, collection, list(where), on_change)
        with self._lock:
            self.ops += 1
            self._watches.append(watch)
            now = [copy.deepcopy(d) for _i, (d, _v) in sorted(self.docs.get(collection, {}).items())
                   if _matches(d, where)]
        if now:
            on_change(now)
        return watch


class _MemoryWatch(Watch):
    def __init__(self, store: MemoryStore, collection: str, where: list[Filter],
                 on_change: Callable[[list[dict[str, Any]]], None]) -> None:
        self.store, self.collection, self.where, self.on_change = store, collection, where, on_change

    def notify(self, changed: list[tuple[str, dict[str, Any]]]) -> None:
        docs = [copy.deepcopy(d) for col, d in changed if col == self.collection and _matches(d, self.where)]
        if docs:
            self.on_change(docs)

    def unsubscribe(self) -> None:
        with self.store._lock:
            if self in self.store._watches:
                self.store._watches.remove(self)


# ---------------------------------------------------------------------- semantics shared with Firestore
def _apply(base: Any, fields: dict[str, Any], merge: bool, keep: bool = False) -> dict[str, Any]:
    """``fields`` written over ``base`` (a copy): top-level fields replaced (``keep``: the others kept),
    maps merged field by field with ``merge``; ``Increment`` adds to the stored number."""
    out = copy.deepcopy(base) if (merge or keep) and isinstance(base, dict) else {}
    for key, value in fields.items():
        if isinstance(value, Increment):
            prior = out.get(key)
            out[key] = (prior if isinstance(prior, (int, float)) and not isinstance(prior, bool) else 0) + value.by
        elif merge and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _apply(out[key], value, merge=True)
        else:
            out[key] = _stored(value)
    return out


def _stored(value: Any) -> Any:
    """A value as Firestore gives it back: tuples become lists, maps and lists are copied."""
    if isinstance(value, dict):
        return {k: _stored(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stored(v) for v in value]
    if isinstance(value, Increment):
        return value.by
    return copy.deepcopy(value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (datetime, date)):
        return "time"
    if isinstance(value, str):
        return "str"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _order_key(value: Any) -> tuple[str, Any]:
    return (_kind(value), value if _kind(value) in ("number", "time", "str", "bytes", "bool") else str(value))


def _matches(data: dict[str, Any], where: Sequence[Filter]) -> bool:
    for name, op, value in where:
        if name not in data:
            return False
        have = data[name]
        if op == "==":
            ok = have == value and _kind(have) == _kind(value)
        elif op == "!=":
            ok = not (have == value and _kind(have) == _kind(value)) and have is not None
        elif op == "in":
            ok = any(have == v and _kind(have) == _kind(v) for v in value)
        elif op in ("<", "<=", ">", ">="):
            if _kind(have) != _kind(value) or _kind(have) == "null":
                return False
            ok = {"<": have < value, "<=": have <= value, ">": have > value, ">=": have >= value}[op]
        else:
            raise ValueError(f"unsupported query operator {op!r}")
        if not ok:
            return False
    return True
