"""The document store on Firestore (production and the emulator): the only module of the state
that imports the Firestore client.

Versions are documents' update times; compare-and-set writes carry them as a ``last_update_time``
precondition. Every call has a deadline (``FIRESTORE_TIMEOUT``): a call the backend never answers
fails (transient, retried by redelivery) instead of hanging an invocation that holds a lease.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from google.api_core import exceptions as gexc
from google.cloud import firestore

from cascade.state.store import Doc, DocumentStore, Filter, Increment, Watch, Write

FIRESTORE_TIMEOUT = 30.0
# What Firestore answers when a precondition failed or a concurrent change aborted the commit.
_CONFLICTS = (gexc.AlreadyExists, gexc.FailedPrecondition, gexc.Aborted, gexc.NotFound)


class FirestoreStore(DocumentStore):
    def __init__(self, client: Any) -> None:
        self.db = client
        self.ops = 0

    def _ref(self, collection: str, doc_id: str):
        return self.db.collection(collection).document(doc_id)

    def get(self, collection: str, doc_id: str) -> Doc:
        self.ops += 1
        snap = self._ref(collection, doc_id).get(timeout=FIRESTORE_TIMEOUT)
        return Doc(doc_id, snap.to_dict() if snap.exists else None, snap.update_time if snap.exists else None)

    def get_all(self, collection: str, ids: Sequence[str]) -> dict[str, Doc]:
        ids = list(dict.fromkeys(ids))
        if not ids:
            return {}
        self.ops += 1
        found = {snap.reference.id: Doc(snap.reference.id, snap.to_dict() or {}, snap.update_time)
                 for snap in self.db.get_all([self._ref(collection, i) for i in ids], timeout=FIRESTORE_TIMEOUT)
                 if snap.exists}
        return {i: found.get(i) or Doc(i, None) for i in ids}

    def _query(self, collection: str, where: Sequence[Filter]):
        q = self.db.collection(collection)
        for name, op, value in where:
            q = q.where(filter=firestore.FieldFilter(name, op, value))
        return q

    def query(self, collection: str, where: Sequence[Filter] = (), order_by: str | None = None,
              descending: bool = False, limit: int | None = None,
              fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
        q = self._query(collection, where)
        if fields is not None:
            q = q.select(list(fields))
        if order_by is not None:
            q = q.order_by(order_by, direction=firestore.Query.DESCENDING if descending else firestore.Query.ASCENDING)
        if limit is not None:
            q = q.limit(limit)
        self.ops += 1
        return [snap.to_dict() or {} for snap in q.stream(timeout=FIRESTORE_TIMEOUT)]

    def commit(self, writes: Sequence[Write], before: Callable[[], None] | None = None) -> bool:
        batch = self.db.batch()
        for w in writes:
            ref = self._ref(w.collection, w.id)
            data = {k: firestore.Increment(v.by) if isinstance(v, Increment) else v for k, v in w.data.items()}
            option = self.db.write_option(last_update_time=w.version) if w.version is not None else None
            if w.kind == "create":
                batch.create(ref, data)
            elif w.kind == "update":
                batch.update(ref, data, option=option)
            elif w.kind == "set":
                batch.set(ref, data, merge=w.merge)
            elif w.kind == "delete":
                batch.delete(ref, option=option)
            else:
                raise ValueError(f"unknown write {w.kind!r}")
        try:
            if before is not None:
                before()
            self.ops += 1
            batch.commit(timeout=FIRESTORE_TIMEOUT)
            return True
        except _CONFLICTS:
            return False

    def watch(self, collection: str, where: Sequence[Filter],
              on_change: Callable[[list[dict[str, Any]]], None]) -> Watch:
        def changed(_docs: Any, changes: Any, _read_time: Any) -> None:
            docs = [ch.document.to_dict() or {} for ch in changes]
            if docs:
                on_change(docs)
        self.ops += 1
        return _FirestoreWatch(self._query(collection, where).on_snapshot(changed))


class _FirestoreWatch(Watch):
    def __init__(self, watch: Any) -> None:
        self._watch = watch

    def unsubscribe(self) -> None:
        self._watch.unsubscribe()
