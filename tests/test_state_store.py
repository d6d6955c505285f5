"""The state store without emulators: the in-memory document store's semantics (checked against
Firestore's on the emulator), and the Tracker's rules on it - leases, fencing, claims, generations,
backfill leases, rejected messages and run history. Time moves with an injected clock.
"""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta, timezone

import pytest

from cascade.errors import LeaseLostError, TransientError
from cascade.state.memory import MemoryStore
from cascade.state.status import Status
from cascade.state.store import DocumentStore, Increment, Write
from cascade.state.tracker import Tracker

from .harness import new_namespace

D = date(2025, 1, 15)
T0 = datetime(2025, 1, 16, 10, tzinfo=timezone.utc)
LEASE = 60


@pytest.fixture()
def tracker(pipeline, clock) -> Tracker:
    return Tracker(MemoryStore(), pipeline, clock=clock, lease_seconds=LEASE)


# ---------------------------------------------------------------------- the store's semantics, on both stores
@pytest.fixture(params=["memory", "firestore"])
def store(request) -> DocumentStore:
    if request.param == "memory":
        return MemoryStore()
    request.getfixturevalue("endpoints")  # the emulators, started once per session
    from cascade.runtime import clients
    from cascade.state.firestore_store import FirestoreStore
    return FirestoreStore(clients.firestore(request.getfixturevalue("endpoints").project))


@pytest.fixture()
def col() -> str:
    return f"{new_namespace()}_docs"


def test_create_succeeds_once_and_reads_return_what_was_written(store, col):
    assert store.create(col, "a", {"n": 1, "at": T0, "tags": ("x", "y"), "m": {"k": 1}})
    assert not store.create(col, "a", {"n": 2})
    doc = store.get(col, "a")
    assert doc.exists and doc.data == {"n": 1, "at": T0, "tags": ["x", "y"], "m": {"k": 1}}
    assert doc.version is not None
    assert not store.get(col, "missing").exists
    found = store.get_all(col, ["a", "missing"])
    assert found["a"].data["n"] == 1 and not found["missing"].exists


def test_a_write_at_an_old_version_fails_and_changes_nothing(store, col):
    store.create(col, "a", {"n": 1})
    v1 = store.get(col, "a").version
    assert store.update(col, "a", {"n": 2}, v1)
    assert not store.update(col, "a", {"n": 3}, v1)  # someone wrote since v1
    assert store.get(col, "a").data == {"n": 2}
    assert not store.update(col, "missing", {"n": 1})  # update needs the document
    assert not store.delete(col, "a", v1)
    assert store.delete(col, "a", store.get(col, "a").version)
    assert not store.get(col, "a").exists


def test_a_commit_is_all_or_nothing(store, col):
    store.create(col, "taken", {"n": 1})
    assert not store.commit([Write("set", col, "other", {"n": 1}), Write("create", col, "taken", {"n": 2})])
    assert not store.get(col, "other").exists and store.get(col, "taken").data == {"n": 1}
    assert store.commit([Write("set", col, "other", {"n": 1}), Write("create", col, "new", {"n": 2})])
    assert store.get(col, "other").exists and store.get(col, "new").exists


def test_set_with_merge_merges_maps_and_increment_adds(store, col):
    store.set(col, "a", {"m": {"x": 1, "y": 1}, "n": 0, "keep": True})
    store.set(col, "a", {"m": {"y": 2}, "extra": "e"}, merge=True)
    store.update(col, "a", {"n": Increment(2)})
    assert store.get(col, "a").data == {"m": {"x": 1, "y": 2}, "n": 2, "keep": True, "extra": "e"}
    store.set(col, "a", {"only": 1})
    assert store.get(col, "a").data == {"only": 1}


def test_queries_filter_order_limit_and_select(store, col):
    store.set(col, "a", {"day": "2025-01-01", "at": T0, "phase": 2})
    store.set(col, "b", {"day": "2025-01-03", "at": None, "phase": 3})
    store.set(col, "c", {"day": "2025-01-02", "phase": 2})
    assert {d["day"] for d in store.query(col, [("phase", "==", 2)])} == {"2025-01-01", "2025-01-02"}
    # a range filter matches values of its type only: None and a missing field never do
    assert [d["day"] for d in store.query(col, [("at", ">=", T0 - timedelta(days=1))])] == ["2025-01-01"]
    assert [d["day"] for d in store.query(col, [("day", ">=", "2025-01-02"), ("day", "<=", "2025-01-03")])] \
        in (["2025-01-02", "2025-01-03"], ["2025-01-03", "2025-01-02"])
    assert store.query(col, order_by="day", descending=True, limit=1)[0]["day"] == "2025-01-03"
    assert store.query(col, [("phase", "==", 3)], fields=["phase"]) == [{"phase": 3}]


def test_a_watch_sees_matching_changes(store, col):
    seen: list[dict] = []
    got = threading.Event()

    def on_change(docs):
        seen.extend(docs)
        got.set()
    watch = store.watch(col, [("k", "==", "x")], on_change)
    try:
        store.set(col, "a", {"k": "y"})
        store.set(col, "b", {"k": "x", "n": 1})
        assert got.wait(10)
        deadline = datetime.now() + timedelta(seconds=10)
        while not any(d.get("n") == 1 for d in seen) and datetime.now() < deadline:
            got.clear()
            got.wait(0.5)
        assert any(d.get("n") == 1 for d in seen) and all(d["k"] == "x" for d in seen)
    finally:
        watch.unsubscribe()


# ---------------------------------------------------------------------- partition leases and fencing
def test_a_lease_is_taken_once_then_expires_and_is_taken_over_with_a_new_fence(tracker, clock, pipeline):
    proc = pipeline.processors[0].name
    first = tracker.begin(proc, 2, D, 0, "r1", trigger_id="t1")
    assert (first.outcome, first.attempt, first.fence) == (Status.RUN, 1, 1)
    assert tracker.begin(proc, 2, D, 0, "r2", trigger_id="t1").outcome == Status.BUSY
    assert tracker.heartbeat(proc, D, "r1")
    clock.advance(LEASE - 1)
    assert tracker.begin(proc, 2, D, 0, "r2", trigger_id="t1").outcome == Status.BUSY  # renewed
    clock.advance(2)
    second = tracker.begin(proc, 2, D, 0, "r2", trigger_id="t1")  # the lease expired: a crash
    assert (second.outcome, second.attempt, second.fence) == (Status.RUN, 2, 2) and second.took_over_crash
    # the crashed run lost its lease: it can neither renew it nor record over the new run
    assert not tracker.heartbeat(proc, D, "r1")
    with pytest.raises(LeaseLostError):
        tracker.finish(proc, D, "r1", Status.SUCCESS, record_count=1)
    done = tracker.finish(proc, D, "r2", Status.SUCCESS, record_count=7)
    assert (done.status, done.record_count, done.fence) == (Status.SUCCESS, 7, 2)
    assert tracker.begin(proc, 2, D, 0, "r3").outcome == Status.DONE  # dedupe on the business key
    assert tracker.begin(proc, 2, D, 1, "r4").outcome == Status.RUN  # a newer generation runs
    assert tracker.begin(proc, 2, D, 0, "r5").outcome == Status.SUPERSEDED


def test_only_one_of_many_concurrent_deliveries_takes_the_lease(tracker, pipeline):
    proc = pipeline.processors[0].name
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def deliver(i: int) -> None:
        barrier.wait()
        outcomes.append(tracker.begin(proc, 2, D, 0, f"r{i}").outcome)
    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == sorted([Status.RUN] + [Status.BUSY] * 7)


def test_a_conflicting_write_is_retried_and_endless_contention_is_transient(tracker, pipeline):
    proc = pipeline.processors[0].name
    tracker.store.fail_next_commits = 3
    assert tracker.begin(proc, 2, D, 0, "r1").outcome == Status.RUN
    tracker.store.fail_next_commits = 10_000
    with pytest.raises(TransientError):
        tracker.finish(proc, D, "r1", Status.SUCCESS)
    tracker.store.fail_next_commits = 0
    assert tracker.finish(proc, D, "r1", Status.SUCCESS).status == Status.SUCCESS


def test_attempts_count_redeliveries_of_one_trigger_and_restart_for_a_new_one(tracker, pipeline):
    proc = pipeline.processors[0].name
    tracker.begin(proc, 2, D, 0, "r1", trigger_id="t1")
    tracker.finish(proc, D, "r1", Status.FAILED, error="boom", extra={"transient": True})
    assert tracker.begin(proc, 2, D, 0, "r2", trigger_id="t1").attempt == 2
    tracker.finish(proc, D, "r2", Status.FAILED, error="quota", extra={"transient": True, "quota": True})
    assert tracker.begin(proc, 2, D, 0, "r3", trigger_id="t1").attempt == 2  # a quota spends no attempt
    tracker.finish(proc, D, "r3", Status.FAILED, error="boom", extra={"transient": True})
    assert tracker.begin(proc, 2, D, 0, "r4", trigger_id="t2").attempt == 1  # a new trigger


def test_record_outcome_never_overwrites_a_live_run_or_a_success(tracker, clock, pipeline):
    proc = pipeline.processors[0].name
    tracker.begin(proc, 2, D, 0, "r1")
    assert not tracker.record_outcome(proc, 2, D, 0, Status.BLOCKED, "upstream missing")
    tracker.finish(proc, D, "r1", Status.SUCCESS)
    assert not tracker.record_outcome(proc, 2, D, 0, Status.BLOCKED, "upstream missing")
    other = pipeline.processors[1].name
    assert tracker.record_outcome(other, 2, D, 0, Status.BLOCKED, "upstream missing", blocked={"check": "x"})
    part = tracker.partition(other, D)
    assert (part.status, part.error, part.blocked, part.lease_expires_at) == \
        (Status.BLOCKED, "upstream missing", {"check": "x"}, None)


def test_expire_marks_a_crashed_run_failed_once(tracker, clock, pipeline):
    proc = pipeline.processors[0].name
    tracker.begin(proc, 2, D, 0, "r1", trigger_id="t1")
    clock.advance(LEASE + 1)
    assert tracker.expire(proc, D.isoformat(), "r1", "stopped heartbeating")
    part = tracker.partition(proc, D)
    assert (part.status, part.raw["transient"], part.raw["expired"]) == (Status.FAILED, True, True)
    assert not tracker.expire(proc, D.isoformat(), "r1", "again")  # moved on: no longer its run
    assert tracker.begin(proc, 2, D, 0, "r2", trigger_id="t9").attempt == 2  # the crash counted
    [run] = [r for r in tracker.runs(proc, D) if r["run_id"] == "r1"]
    assert run["status"] == Status.FAILED and run["error"] == "stopped heartbeating"


def test_partition_reads_batch_and_query(tracker, pipeline):
    a, b = pipeline.processors[0].name, pipeline.processors[1].name
    tracker.begin(a, 2, D, 0, "r1")
    tracker.finish(a, D, "r1", Status.SUCCESS)
    tracker.begin(b, 2, D + timedelta(days=1), 0, "r2")
    ops = tracker.ops
    states = tracker.partitions([a, b], [D])
    assert tracker.ops - ops == 1  # one batched read
    assert states[(a, D.isoformat())].status == Status.SUCCESS and states[(b, D.isoformat())].status == Status.MISSING
    assert [p.processor for p in tracker.partitions_where("status", "==", Status.RUNNING)] == [b]
    assert tracker.latest_data_date() == D + timedelta(days=1)
    got: list = []
    watch = tracker.watch_partitions("data_date", D.isoformat(), got.extend)
    tracker.begin(b, 2, D, 0, "r3")
    watch.unsubscribe()
    assert {p.processor for p in got} == {a, b}


def test_begin_reads_the_inputs_with_the_lease(tracker, pipeline):
    a, b = pipeline.processors[0].name, pipeline.processors[1].name
    tracker.begin(a, 2, D, 0, "r1")
    tracker.finish(a, D, "r1", Status.SUCCESS)
    ops = tracker.ops
    begin = tracker.begin(b, 2, D, 0, "r2", inputs=[(a, D.isoformat()), (a, (D - timedelta(days=1)).isoformat())])
    assert tracker.ops - ops == 2  # one read, one commit
    assert begin.inputs[(a, D.isoformat())].run_id == "r1"
    assert begin.inputs[(a, (D - timedelta(days=1)).isoformat())].status == Status.MISSING


# ---------------------------------------------------------------------- waiting expiry and its repair
def test_an_expired_waiting_is_repaired_a_bounded_number_of_times(tracker, clock, pipeline):
    proc = pipeline.processors[0].name
    tracker.begin(proc, 2, D, 0, "r1")
    tracker.finish(proc, D, "r1", Status.WAITING, error="upstream running", extra={"transient": True})
    part = tracker.partition(proc, D)
    assert not tracker.waiting_expired(part)
    assert tracker.repair_waiting(proc, D, "r1", "k", 2, "gave up") == ("moved", 0)  # still alive
    for n in (1, 2):
        clock.advance(LEASE + 601)
        assert tracker.repair_waiting(proc, D, "r1", "k", 2, "gave up") == ("retrigger", n)
        assert tracker.repair_waiting(proc, D, "r1", "k", 2, "gave up") == ("moved", 0)  # re-armed
    clock.advance(LEASE + 601)
    assert tracker.repair_waiting(proc, D, "r1", "k", 2, "gave up") == ("gave-up", 2)
    part = tracker.partition(proc, D)
    assert (part.status, part.error, part.raw["transient"]) == (Status.FAILED, "gave up", False)
    assert tracker.waiting_since(proc, D) is None  # its latest run is no longer waiting


def test_waiting_since_is_the_start_of_the_latest_streak_of_waiting_runs(tracker, clock, pipeline):
    proc = pipeline.processors[0].name
    starts = []
    for i, status in enumerate([Status.FAILED, Status.WAITING, Status.WAITING]):
        clock.advance(10)
        starts.append(clock.now)
        tracker.begin(proc, 2, D, 0, f"r{i}")
        tracker.finish(proc, D, f"r{i}", status, extra={"transient": True})
    assert tracker.waiting_since(proc, D) == starts[1]


# ---------------------------------------------------------------------- downstream-trigger claims
def test_a_trigger_is_claimed_exactly_once_and_marked_published(tracker, clock):
    wins: list[bool] = []
    barrier = threading.Barrier(6)

    def claim(i: int) -> None:
        barrier.wait()
        wins.append(tracker.claim_trigger(2, D, 1, "topic-3", b'{"phase": 3}', f"run{i}"))
    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 5 + [True]
    assert tracker.claim(2, D, 1)["status"] == Status.CLAIMED
    clock.advance(31)
    assert [c["generation"] for c in tracker.unpublished_claims(timedelta(seconds=30))] == [1]
    tracker.mark_published(2, D, 1, "m1")
    tracker.mark_published(2, D, 1, "m2")  # a republish
    claim = tracker.claim(2, D, 1)
    assert (claim["status"], claim["message_id"], claim["publish_attempts"]) == (Status.PUBLISHED, "m2", 2)
    assert tracker.unpublished_claims(timedelta(seconds=0)) == []
    assert len(tracker.published_claims(T0, clock.now)) == 1
    assert tracker.published_claims(clock.now + timedelta(seconds=1), clock.now + timedelta(days=1)) == []
    assert [c["generation"] for c in tracker.claims_for(2, D)] == [1]
    assert len(tracker.claims_between(D - timedelta(days=1), D)) == 1 and tracker.claims_between(D + timedelta(1), D + timedelta(2)) == []
    assert tracker.claim(2, D, 2) is None


# ---------------------------------------------------------------------- generations
def test_generations_only_go_up_and_are_never_shared(tracker, pipeline):
    proc = pipeline.processors[0].name
    tracker.begin(proc, 2, D, 4, "r1")  # a partition already at generation 4
    assert tracker.new_generation(D) == 5
    got: list[int] = []
    barrier = threading.Barrier(5)

    def allocate() -> None:
        barrier.wait()
        got.append(tracker.new_generation(D))
    threads = [threading.Thread(target=allocate) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [6, 7, 8, 9, 10]
    assert tracker.new_generation(D + timedelta(days=1)) == 1  # per date


# ---------------------------------------------------------------------- backfill leases
def test_backfill_lease_documents_are_compare_and_set(tracker):
    assert tracker.lease_create("p", {"holder_id": "a", "expires_at": T0})
    assert not tracker.lease_create("p", {"holder_id": "b"})
    doc, version = tracker.lease_read("p")
    assert doc["holder_id"] == "a"
    assert tracker.lease_update("p", {"holder_id": "b"}, version)
    assert not tracker.lease_update("p", {"holder_id": "c"}, version)  # changed since
    assert not tracker.lease_delete("p", version)
    _doc, version = tracker.lease_read("p")
    assert tracker.lease_docs(["p", "q"]) == {"p": {"holder_id": "b", "expires_at": T0}}
    assert tracker.lease_delete("p", version)
    assert tracker.lease_read("p") == (None, None) and tracker.lease_docs([]) == {}


def test_a_backfill_lease_is_refused_while_live_and_taken_over_once_expired(pipeline, clock):
    from cascade.backfill.lease import BackfillLease
    from cascade.errors import LeaseHeldError

    from .memory_app import memory_app

    app = memory_app(pipeline, clock)
    first = BackfillLease(app, ["p"], D, D, ttl_seconds=60)
    first._take("p")
    with pytest.raises(LeaseHeldError, match="another backfill is running for processor p"):
        BackfillLease(app, ["p"], D, D, ttl_seconds=60)._take("p")
    clock.advance(61)
    second = BackfillLease(app, ["p"], D, D, ttl_seconds=60)
    second._take("p")
    assert app.tracker.lease_read("p")[0]["holder_id"] == second.holder_id


# ---------------------------------------------------------------------- rejected messages and run history
def test_rejected_messages_are_kept_whatever_their_size(tracker):
    big = b"x" * 40_000
    doc_id = tracker.record_rejected(2, "not JSON", "ValueError", big, {"": "v", "__k": "v", "ok": "v"}, "m1")
    assert tracker.record_rejected(2, "not JSON", "ValueError", big, {}, "m1") == doc_id  # same message, same id
    tracker.record_rejected(3, "unknown phase", "ValueError", b"{}", None, None)
    [kept] = [r for r in tracker.rejected() if r["phase"] == 2]
    assert kept["data_bytes"] == 40_000 and kept["data_truncated"] and len(kept["data"]) <= 16 * 1024
    assert tracker.rejected_counts() == {2: 1, 3: 1}


def test_run_history_is_newest_first_and_answers_are_recorded(tracker, clock, pipeline):
    a, b = pipeline.processors[0].name, pipeline.processors[1].name
    tracker.begin(a, 2, D, 0, "r1")
    clock.advance(5)
    tracker.record_answer(2, D, [a, b], Status.DONE, "already complete and fresh")
    runs = tracker.runs(a, D)
    assert [r["status"] for r in runs] == [Status.DONE, Status.RUNNING]
    tracker.mark_run("r1", Status.LOST, "lease lost")
    assert tracker.runs(a, D)[-1] | {"status": Status.LOST} == tracker.runs(a, D)[-1]
    assert tracker.runs(a, D)[-1]["processor"] == a  # merged, not replaced
    assert len(tracker.runs(day=D)) == 3 and len(tracker.runs(limit=1)) == 1
    assert tracker.create_once("alerts", "x", {}) and not tracker.create_once("alerts", "x", {})
