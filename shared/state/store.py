"""The document store the state modules write through: the few operations the tracker needs.

Documents live in collections, by id, as plain dicts. Every document has a ``version`` (its update
time) that changes on every write; a write that names a ``version`` is compare-and-set: it happens
only if the document is still at that version. ``create`` happens only if the document does not
exist, so exactly one of several creators wins. ``commit`` applies several writes atomically: all
of them or, when any precondition fails, none.

Two implementations share these semantics: ``firestore_store.FirestoreStore`` (production and the
emulator; the only module that imports the Firestore client) and ``memory.MemoryStore`` (unit
tests, no emulator).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

from cascade.errors import TransientError

# A query filter: (field, operator, value) with the operators ==, !=, <, <=, >, >=, in.
Filter = tuple[str, str, Any]


@dataclass(frozen=True)
class Doc:
    """One document as read: ``data`` None when it does not exist; ``version`` its update time."""

    id: str
    data: dict[str, Any] | None
    version: Any = None

    @property
    def exists(self) -> bool:
        return self.data is not None


@dataclass(frozen=True)
class Increment:
    """A field value that adds ``by`` to the stored number (0 when absent) instead of replacing it."""

    by: int = 1


@dataclass(frozen=True)
class Write:
    """One write of a ``commit``.

    * ``create``: only if the document does not exist;
    * ``update``: only if it exists (and, with ``version``, is still at that version); sets the
      top-level ``data`` fields, keeping the others;
    * ``set``: replaces the document, or with ``merge`` merges ``data`` into it (maps merged
      field by field); never fails;
    * ``delete``: with ``version``, only if still at that version.
    """

    kind: Literal["create", "update", "set", "delete"]
    collection: str
    id: str
    data: dict[str, Any] = field(default_factory=dict)
    version: Any = None
    merge: bool = False


class Watch(ABC):
    @abstractmethod
    def unsubscribe(self) -> None: ...


class DocumentStore(ABC):
    """A document store with compare-and-set writes; ``ops`` counts the operations sent."""

    ops: int = 0

    @abstractmethod
    def get(self, collection: str, doc_id: str) -> Doc:
        """One document (``Doc.exists`` False when there is none)."""

    @abstractmethod
    def get_all(self, collection: str, ids: Sequence[str]) -> dict[str, Doc]:
        """Every document asked for, by id, in one read (missing ones included, not existing)."""

    @abstractmethod
    def query(self, collection: str, where: Sequence[Filter] = (), order_by: str | None = None,
              descending: bool = False, limit: int | None = None,
              fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The documents matching every filter (a document without a filtered or ordered field never
        matches; a range filter matches only values of the same type), ordered by ``order_by`` (else
        by id), at most ``limit``, only ``fields`` when given."""

    @abstractmethod
    def commit(self, writes: Sequence[Write], before: Callable[[], None] | None = None) -> bool:
        """Apply ``writes`` atomically: True, or False (nothing written) when a precondition failed
        or the store aborted the commit because of a concurrent change. ``before`` runs just before
        the writes are sent, inside the same conflict handling (a fault-injection hook)."""

    @abstractmethod
    def watch(self, collection: str, where: Sequence[Filter],
              on_change: Callable[[list[dict[str, Any]]], None]) -> Watch:
        """Call ``on_change`` with the documents matching ``where`` that changed (first with those
        that match now); ``unsubscribe()`` the returned watch to stop."""

    # ------------------------------------------------------------------ one-write shorthands
    def create(self, collection: str, doc_id: str, data: dict[str, Any]) -> bool:
        """Create the document: True for the one creator, False when it exists."""
        return self.commit([Write("create", collection, doc_id, data)])

    def update(self, collection: str, doc_id: str, fields: dict[str, Any], version: Any = None) -> bool:
        """Set ``fields`` (at ``version`` when given): False when the document is missing or changed."""
        return self.commit([Write("update", collection, doc_id, fields, version)])

    def set(self, collection: str, doc_id: str, data: dict[str, Any], merge: bool = False) -> None:
        """Write the document whatever its state (TransientError if the store aborted the write)."""
        if not self.commit([Write("set", collection, doc_id, data, merge=merge)]):
            raise TransientError(f"could not write {collection}/{doc_id}: aborted by a concurrent change")

    def delete(self, collection: str, doc_id: str, version: Any = None) -> bool:
        """Delete the document (only if still at ``version`` when given): False when it changed."""
        return self.commit([Write("delete", collection, doc_id, version=version)])
