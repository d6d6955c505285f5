"""A production latency model for the local BigQuery (bqemulator): opt-in, for benchmarks only.

bqemulator answers a small MERGE in ~0.1 s but executes ONE job at a time: every SQL statement runs
synchronously on the server's single asyncio event loop (DDL/DML additionally take
``DuckDBEngine._write_lock``, an ``asyncio.Lock``), so the event loop is what serializes execution.
Production BigQuery is the opposite: each job costs a fixed ~1-3 s end to end, many jobs run at
once, and at most 2 mutating DML statements (MERGE / UPDATE / DELETE) run per table - further ones
queue in order. This module wraps bqemulator's ASGI app so that the local emulator behaves like the
latter, as far as a scheduler can tell:

* a mutating DML statement first takes one of ``dml_per_table`` (2) slots of its target table, in
  strict FIFO order, and holds it for the job's whole latency; a multi-statement script takes the
  slots of every table it mutates (in sorted order, so two scripts cannot deadlock);
* at most ``dml_rate`` (25) DML statements start per table in any ``dml_window_s`` (10 s) window;
* every job (``jobs.insert`` / ``jobs.query``, not dry runs) then costs ``job_latency_s`` end to end,
  spent concurrently with every other job: the emulator executes it at the start of that window -
  one job at a time, in arrival order (``execution="inside"``, the default) - and its answer is held
  until the latency has elapsed (``await asyncio.sleep``, holding nothing that serializes). A job
  whose wait for the engine plus execution exceeds the latency answers as soon as it is done (and
  is counted in ``over_latency``).

Why execution inside the latency and one job at a time: bqemulator's handler runs a statement in
several synchronous steps between awaits, and asyncio runs the ready steps of all executing jobs
round-robin. Jobs released together (a wavefront's jobs arrive in bursts, and their latencies end
together) were therefore processor-shared: each of N jobs that woke together finished only when all N
had, N x ~0.05 s later, and every job's table slot was held that much longer; the next jobs of those
partitions then arrived together again, so the bursts persisted while the engine idled during the
common latency (measured: execution median 0.42 s, the emulator ~40 % busy, see
docs/latency-model.md). The first model ("after": latency, then execution) is kept for comparison
(``CASCADE_BQ_MODEL_EXECUTION=after``).

What it measures is served at ``GET /_cascade/latency-model`` (JSON: the parameters, counters,
per-table maximum of DML in flight and queued, engine-busy seconds; ``?jobs=1`` adds the per-job
log) and reset with ``POST /_cascade/latency-model/reset``. The assumptions and what the model leaves
out are in docs/latency-model.md.

The launcher (``emulators/bqemulator_offline.py --job-latency-s S``) installs it; nothing else does,
so the default local stack and the tests' stack run the emulator as shipped.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

ENV_VAR = "CASCADE_BQ_JOB_LATENCY_S"
MIN_LATENCY_S = 0.5
DEFAULT_LATENCY_S = 1.0
DML_PER_TABLE = 2          # BigQuery: mutating DML running concurrently per table
DML_RATE = 25              # BigQuery: DML statements per table ...
DML_WINDOW_S = 10.0        # ... every 10 seconds
STATS_PATH = "/_cascade/latency-model"
EXECUTION_ENV = "CASCADE_BQ_MODEL_EXECUTION"
EXECUTION_MODES = ("inside", "after")
JOB_LOG_LIMIT = 200_000

_JOB_PATH = re.compile(r"^(?:/upload)?/bigquery/v2/projects/[^/]+/(jobs|queries)/?$")
# A mutating DML statement's target: at the start of the text or after a ';' (so the UPDATE / DELETE
# branches inside a MERGE, which follow THEN, never match), after optional comments.
_DML = re.compile(
    r"(?:^|;)(?:\s|--[^\n]*(?:\n|$)|#[^\n]*(?:\n|$)|/\*.*?\*/)*"
    r"(MERGE|UPDATE|DELETE)\s+(?:(?:INTO|FROM)\s+)?(`[^`]+`(?:\.`[^`]+`)*|[A-Za-z_][\w.-]*)",
    re.IGNORECASE | re.DOTALL)


def check_latency(value: float | str) -> float:
    """The job latency in seconds as a float; ValueError below MIN_LATENCY_S (a model, not a no-op)."""
    latency = float(value)
    if not latency >= MIN_LATENCY_S:
        raise ValueError(f"job latency must be at least {MIN_LATENCY_S} s (production small jobs take ~1-3 s); "
                         f"got {value!r}")
    return latency


def _strip_strings(sql: str) -> str:
    """``sql`` with the contents of string literals blanked, so a ';' in a value cannot start a statement."""
    return re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "''", sql)


def dml_targets(sql: str) -> list[str]:
    """Tables that the mutating DML statements of ``sql`` write, normalized to ``dataset.table``.

    ``INSERT`` is not counted: BigQuery does not apply the 2-per-table limit to it (see the doc).
    """
    tables = set()
    for m in _DML.finditer(_strip_strings(sql)):
        ident = m.group(2).replace("`", "").lower()
        parts = [p for p in ident.split(".") if p]
        tables.add(".".join(parts[-2:]))
    return sorted(tables)


def job_sql(path_kind: str, body: dict[str, Any]) -> tuple[bool, str]:
    """(is a job the model delays, its SQL or "") for a jobs.insert / jobs.query request body."""
    if path_kind == "queries":
        return (not body.get("dryRun", False)), str(body.get("query") or "")
    config = body.get("configuration") or {}
    if config.get("dryRun", False):
        return False, ""
    query = config.get("query") or {}
    return True, str(query.get("query") or "")


class FifoSlots:
    """A counting semaphore per key with strict first-come first-served hand-over (asyncio)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running: Counter[str] = Counter()
        self.waiters: dict[str, deque[asyncio.Future[None]]] = {}

    def queued(self, key: str) -> int:
        return len(self.waiters.get(key, ()))

    async def acquire(self, key: str) -> None:
        queue = self.waiters.setdefault(key, deque())
        if self.running[key] < self.limit and not queue:
            self.running[key] += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(key)  # the slot was handed to us as we were cancelled: pass it on
            else:
                queue.remove(fut)
            raise

    def release(self, key: str) -> None:
        queue = self.waiters.get(key)
        while queue:
            fut = queue.popleft()
            if not fut.done():
                fut.set_result(None)  # hand the slot over: running[key] stays the same
                return
        self.running[key] -= 1


@dataclass
class TableStats:
    dml: int = 0
    max_running: int = 0
    max_queued: int = 0
    queue_wait_s: float = 0.0
    slot_s: float = 0.0          # seconds DML of this table held a slot (latency + execution)
    rate_wait_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"dml": self.dml, "max_running": self.max_running, "max_queued": self.max_queued,
                "queue_wait_s": round(self.queue_wait_s, 3), "slot_s": round(self.slot_s, 3),
                "rate_wait_s": round(self.rate_wait_s, 3)}


@dataclass
class Stats:
    jobs: int = 0
    dml_jobs: int = 0
    latency_s: float = 0.0
    exec_s: float = 0.0                 # summed time inside the emulator, per job
    engine_busy_s: float = 0.0          # union of those intervals: the serial engine's busy time
    max_in_flight: int = 0              # jobs between arrival and response, all tables
    in_flight: int = 0
    tables: dict[str, TableStats] = field(default_factory=dict)
    log: deque = field(default_factory=lambda: deque(maxlen=JOB_LOG_LIMIT))
    request_log: deque = field(default_factory=lambda: deque(maxlen=JOB_LOG_LIMIT))
    engine_wait_s: float = 0.0          # jobs waiting for the engine (execution = "inside")
    over_latency: int = 0               # jobs whose wait + execution exceeded the latency
    requests: int = 0                   # other requests (getQueryResults, jobs.get ...)
    request_s: float = 0.0
    request_max_s: float = 0.0
    loop_stalls: int = 0                # event loop unavailable > 20 ms (see _watch_loop)
    loop_stall_s: float = 0.0
    loop_stall_max_s: float = 0.0
    busy_until: float = 0.0
    started: float = field(default_factory=time.monotonic)
    cpu_started: float = field(default_factory=time.process_time)


class LatencyModel:
    """ASGI wrapper around bqemulator's app; see the module docstring."""

    def __init__(self, app: Callable[..., Awaitable[None]], job_latency_s: float = DEFAULT_LATENCY_S,
                 dml_per_table: int = DML_PER_TABLE, dml_rate: int = DML_RATE, dml_window_s: float = DML_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic, execution: str = "inside") -> None:
        if execution not in EXECUTION_MODES:
            raise ValueError(f"execution must be one of {EXECUTION_MODES}, got {execution!r}")
        self.app = app
        self.execution = execution
        self.engine = asyncio.Lock()  # FIFO: asyncio.Lock wakes its waiters in arrival order
        self._watcher: asyncio.Task | None = None
        self.job_latency_s = check_latency(job_latency_s)
        self.dml_per_table, self.dml_rate, self.dml_window_s = dml_per_table, dml_rate, dml_window_s
        self.clock = clock
        self.slots = FifoSlots(dml_per_table)
        self.recent: dict[str, deque[float]] = {}
        self.stats = Stats(started=clock())

    # ------------------------------------------------------------------ ASGI
    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http":
            return await self.app(scope, receive, send)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if path.rstrip("/") == STATS_PATH and method == "GET":
            query = parse_qs((scope.get("query_string") or b"").decode())
            return await _json(send, self.snapshot(with_jobs=query.get("jobs", ["0"])[0] not in ("0", "")))
        if path.rstrip("/") == STATS_PATH + "/reset" and method == "POST":
            self.stats = Stats(started=self.clock())
            return await _json(send, {"reset": True})
        m = _JOB_PATH.match(path)
        if method != "POST" or m is None:
            return await self._passthrough(method, path, scope, receive, send)
        body, replay = await _buffer(receive)
        if path.startswith("/upload"):
            delayed, sql = True, ""  # a load job with its data (multipart): latency, no DML slot
        else:
            try:
                payload = json.loads(_decoded(scope, body) or b"{}")
                delayed, sql = job_sql(m.group(1), payload if isinstance(payload, dict) else {})
            except (ValueError, UnicodeDecodeError):
                delayed, sql = False, ""  # let the emulator answer the malformed request as it does
        if not delayed:
            return await self.app(scope, replay, send)
        await self._run_job(dml_targets(sql), lambda _entry, out: self.app(scope, replay, out), send)

    async def _passthrough(self, method: str, path: str, scope: dict, receive: Callable, send: Callable) -> None:
        """Any other request (getQueryResults, jobs.get, tables.get ...): unchanged, timed."""
        st = self.stats
        t0 = self.clock()
        try:
            await self.app(scope, receive, send)
        finally:
            t1 = self.clock()
            st.requests += 1
            st.request_s += t1 - t0
            st.request_max_s = max(st.request_max_s, t1 - t0)
            st.request_log.append({"method": method, "path": path, "arrived": round(t0 - st.started, 4),
                                   "done": round(t1 - st.started, 4)})

    # ------------------------------------------------------------------ the model
    async def _watch_loop(self) -> None:
        """Record how long the event loop was unavailable: a 10 ms sleep that wakes late was blocked."""
        tick = 0.01
        while True:
            t0 = self.clock()
            await asyncio.sleep(tick)
            late = self.clock() - t0 - tick
            if late > 0.02:
                st = self.stats
                st.loop_stalls += 1
                st.loop_stall_s += late
                st.loop_stall_max_s = max(st.loop_stall_max_s, late)

    async def _run_job(self, tables: list[str], execute: Callable[[dict, Callable], Awaitable[None]],
                       send: Callable) -> None:
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_loop())
        st = self.stats
        arrived = self.clock()
        st.jobs += 1
        st.in_flight += 1
        st.max_in_flight = max(st.max_in_flight, st.in_flight)
        held: list[tuple[str, float]] = []
        entry: dict[str, Any] = {"tables": tables, "arrived": round(arrived - st.started, 4)}
        try:
            if tables:
                st.dml_jobs += 1
            for table in tables:
                ts = st.tables.setdefault(table, TableStats())
                ts.dml += 1
                ts.max_queued = max(ts.max_queued, self.slots.queued(table) + (
                    1 if self.slots.running[table] >= self.dml_per_table else 0))
                t0 = self.clock()
                await self.slots.acquire(table)
                got = self.clock()
                held.append((table, got))
                ts.queue_wait_s += got - t0
                ts.max_running = max(ts.max_running, self.slots.running[table])
                ts.rate_wait_s += await self._respect_rate(table)
            started = self.clock()
            entry["started"] = round(started - st.started, 4)
            st.latency_s += self.job_latency_s
            if self.execution == "after":  # the first model: latency, then the emulator's execution
                await asyncio.sleep(self.job_latency_s)
                await self._execute(entry, execute, send)
            else:
                # The emulator's (serial) execution happens inside the job's latency, one job at a
                # time in arrival order; the answer is held until the latency has elapsed.
                held_messages: list[dict] = []

                async def hold(message: dict) -> None:
                    held_messages.append(message)
                try:
                    await self._execute(entry, execute, hold)
                finally:
                    remaining = started + self.job_latency_s - self.clock()
                    if remaining > 0:
                        await asyncio.sleep(remaining)
                    else:
                        st.over_latency += 1
                    for message in held_messages:
                        await send(message)
        finally:
            now = self.clock()
            entry["done"] = round(now - st.started, 4)
            for table, got in held:
                if table in st.tables:  # absent if the stats were reset meanwhile
                    st.tables[table].slot_s += now - got
                self.slots.release(table)
            st.in_flight = max(0, st.in_flight - 1)
            st.log.append(entry)

    async def _execute(self, entry: dict, execute: Callable[[dict, Callable], Awaitable[None]],
                       send: Callable) -> None:
        """Run the job in bqemulator. ``inside``: under the engine lock (FIFO, one job at a time), so
        a job runs to completion instead of being interleaved step by step with every other job
        that is executing (which makes each of N simultaneous jobs finish only when all N have)."""
        st = self.stats
        w0 = self.clock()
        lock = self.engine if self.execution == "inside" else _NoLock()
        async with lock:
            e0 = self.clock()
            st.engine_wait_s += e0 - w0
            entry["executing"] = round(e0 - st.started, 4)
            try:
                await execute(entry, send)
            finally:
                e1 = self.clock()
                st.exec_s += e1 - e0
                st.engine_busy_s += max(0.0, e1 - max(e0, st.busy_until))
                st.busy_until = max(st.busy_until, e1)
                entry["executed"] = round(e1 - st.started, 4)

    async def _respect_rate(self, table: str) -> float:
        """Wait until fewer than dml_rate DML of ``table`` started in the last window; seconds waited."""
        recent = self.recent.setdefault(table, deque())
        waited = 0.0
        while True:
            now = self.clock()
            while recent and now - recent[0] >= self.dml_window_s:
                recent.popleft()
            if len(recent) < self.dml_rate:
                recent.append(now)
                return waited
            pause = self.dml_window_s - (now - recent[0])
            await asyncio.sleep(pause)
            waited += pause

    def snapshot(self, with_jobs: bool = False) -> dict[str, Any]:
        st = self.stats
        out = {
            "job_latency_s": self.job_latency_s, "execution": self.execution, "dml_per_table": self.dml_per_table,
            "dml_rate": f"{self.dml_rate}/{self.dml_window_s:g}s",
            "jobs": st.jobs, "dml_jobs": st.dml_jobs, "in_flight": st.in_flight, "max_in_flight": st.max_in_flight,
            "latency_s": round(st.latency_s, 3), "exec_s": round(st.exec_s, 3),
            "engine_busy_s": round(st.engine_busy_s, 3), "engine_wait_s": round(st.engine_wait_s, 3),
            "over_latency": st.over_latency,
            "requests": st.requests, "request_s": round(st.request_s, 3), "request_max_s": round(st.request_max_s, 3),
            "loop_stalls": st.loop_stalls, "loop_stall_s": round(st.loop_stall_s, 3),
            "loop_stall_max_s": round(st.loop_stall_max_s, 3),
            "process_cpu_s": round(time.process_time() - st.cpu_started, 3),
            "max_running_per_table": max((t.max_running for t in st.tables.values()), default=0),
            "tables": {name: t.to_dict() for name, t in sorted(st.tables.items())},
            "since_s": round(self.clock() - st.started, 3),
        }
        if with_jobs:
            out["clock_origin"] = st.started  # time.monotonic() of the reset: log times are relative to it
            out["log"] = list(st.log)
            out["request_log"] = list(st.request_log)
        return out


def _decoded(scope: dict, body: bytes) -> bytes:
    headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers") or []}
    if "gzip" in headers.get("content-encoding", ""):
        return gzip.decompress(body)
    return body


async def _buffer(receive: Callable) -> tuple[bytes, Callable]:
    """Read the whole request body; return it and a ``receive`` that replays it to the inner app."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect as the server reports it

    return body, replay


class _NoLock:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


async def _json(send: Callable, data: dict) -> None:
    payload = json.dumps(data).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def install_parse_cache(size: int = 2048) -> None:
    """Memoize sqlglot's ``Dialect.parse`` in this process; every caller still gets its own copy of the tree.

    bqemulator parses each statement ~16 times per job (classification, DDL detection, rewriting,
    translation) - ~80 % of its time per MERGE, all of it Python on the event loop that serializes
    execution. Cascade's statements repeat (values are query parameters), so after the first job of a
    processor the parses become copies. Behaviour is unchanged (same input -> an equal, independent
    tree); only the emulator's serial Python time shrinks, which production does not have at all.
    """
    from collections import OrderedDict

    from sqlglot.dialects.dialect import Dialect

    parse = Dialect.parse
    cache: OrderedDict = OrderedDict()

    def cached_parse(self: Any, sql: str, **opts: Any) -> list:
        try:
            key = (self, sql, tuple(sorted(opts.items())))
            hash(key)
        except TypeError:
            return parse(self, sql, **opts)
        trees = cache.get(key)
        if trees is None:
            trees = parse(self, sql, **opts)  # errors are raised, never cached
            cache[key] = trees
            if len(cache) > size:
                cache.popitem(last=False)
        else:
            cache.move_to_end(key)
        return [t.copy() if t is not None else None for t in trees]

    Dialect.parse = cached_parse  # type: ignore[method-assign]


def install(job_latency_s: float, execution: str | None = None) -> None:
    """Make bqemulator's server wrap its REST app in a LatencyModel (call before the CLI starts it),
    and memoize its SQL parsing (``install_parse_cache``). ``execution`` (default: the
    ``CASCADE_BQ_MODEL_EXECUTION`` variable, else "inside"): see LatencyModel."""
    import os

    latency = check_latency(job_latency_s)
    execution = execution or os.environ.get(EXECUTION_ENV) or "inside"
    if execution not in EXECUTION_MODES:
        raise ValueError(f"{EXECUTION_ENV} must be one of {EXECUTION_MODES}, got {execution!r}")
    install_parse_cache()
    import bqemulator.server as server

    create_app = server.create_app

    def create_app_with_model(context: Any) -> Any:
        return LatencyModel(create_app(context), job_latency_s=latency, execution=execution)

    server.create_app = create_app_with_model  # type: ignore[assignment]
