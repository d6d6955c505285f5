"""The wavefront as a value: which units run next, when a retry is due, what a failure blocks.

A ``Wavefront`` holds a dependency graph of units (a unit is one partition for the backfill; here
it is only a key, a slot group, a rank and a weight) and every decision about them: readiness (a unit
is ready when all of its dependencies succeeded), the order of ready units, per-group slots (at most
``max_per_group`` running units of one group - the output table's concurrent MERGEs), the worker
limit, an optional rate limit spacing starts, attempts and delayed retries with exponential backoff,
the slowdown on a quota wall, and the blocked closure (every unit depending, transitively, on a unit
that failed for good is settled as blocked without running).

It is pure: no clients, no threads, no clock reads. The caller passes ``now`` (any monotonic time
in seconds) and drives it with three calls:

* ``take_ready(now)`` - the units to start now; they hold their slots until reported;
* ``on_result(key, now, Finish(kind, started, error))`` - what the attempt came to; returns a
  ``Step`` (succeeded, retry due at ..., or failed with the units it blocks and the units it made
  ready);
* ``next_wakeup(now)`` - the earliest time at which ``take_ready`` could start something without a
  result arriving (a retry's due time, the rate limit's next slot, the end of a quota pause), or None.

``release_slot(key)`` returns a running unit's group slot early (its write ended before the rest of
its work), ``unstart(key)`` puts back a unit that was taken but never started, ``fail(key, reason)`` settles a unit as failed before it runs (and blocks what depends on
it), ``stop()`` stops starting units; ``finished`` says when nothing is running and nothing is left
to start. ``simulate`` drives a wavefront in simulated time (tests, what-if figures).

Order of ready units (``Policy.order``): ``critical-path`` (the default) starts the unit with the
longest remaining chain first - the sum of weights along the longest path from the unit through its
dependents and through its group's queue (the units of its group ranked after it) - then the
smallest rank (the caller's earliest date, phase, position); ``earliest`` uses the rank alone.

Result kinds: ``ok``; ``transient`` (retried with backoff ``backoff_base * 2**(attempt-1)`` while
attempts remain: ``max_attempts`` in all); ``busy`` (held by another run: retried with a short capped
backoff until ``busy_wait_s`` after the first busy answer); ``quota`` (a quota or rate limit: spends
no attempt; starts pause for a backoff that grows with each new quota wall, ``quota_backoff_base``
doubling up to ``quota_backoff_max``, and the concurrency halves, down to one; each run of as many
successes as the concurrency raises it by one until it is back to ``workers``; the unit fails only
after ``quota_wait_s`` of quota answers); ``permanent``.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Mapping

from cascade.runtime.durations import duration

# Result kinds (``Finish.kind``).
OK, TRANSIENT, BUSY, QUOTA, PERMANENT = "ok", "transient", "busy", "quota", "permanent"
KINDS = (OK, TRANSIENT, BUSY, QUOTA, PERMANENT)
# Orders of ready units (``Policy.order``).
CRITICAL_PATH, EARLIEST = "critical-path", "earliest"
ORDERS = (CRITICAL_PATH, EARLIEST)
# Step states and settled outcomes.
SUCCEEDED, RETRY, FAILED, BLOCKED = "succeeded", "retry", "failed", "blocked"


@dataclass(frozen=True)
class Policy:
    """The limits and the backoff of a wavefront (times in seconds)."""

    workers: int = 4
    max_per_group: int = 2
    max_rate: float | None = None      # starts per second, None for no limit
    max_attempts: int = 3
    backoff_base: float = 0.5
    busy_wait_s: float = 600.0
    quota_backoff_base: float = 5.0
    quota_backoff_max: float = 300.0
    quota_wait_s: float = 3600.0
    order: str = CRITICAL_PATH

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_per_group < 1:
            raise ValueError("workers and max_per_group must be at least 1")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, not {self.order!r}")


@dataclass(frozen=True)
class Unit:
    """One thing to run: ``group`` shares a slot limit (None: no limit); ``rank`` orders ready units
    (smaller first, after the critical path); ``weight`` is its length on a chain."""

    key: Hashable
    group: str | None = None
    rank: tuple = ()
    weight: float = 1.0


@dataclass(frozen=True)
class Finish:
    """What one attempt came to: a kind (``KINDS``), when it started, the error text."""

    kind: str
    started: float
    error: str = ""


@dataclass(frozen=True)
class Step:
    """What the wavefront made of a result: ``succeeded`` (``ready``: units it made ready),
    ``retry`` (due at ``due``), or ``failed`` (``error``; ``blocked``: units it blocked, never to run).
    ``changed``: the quota slowdown changed (concurrency or pause)."""

    key: Hashable
    state: str
    error: str = ""
    due: float | None = None
    ready: tuple = ()
    blocked: tuple = ()
    changed: bool = False


class Wavefront:
    def __init__(self, units: Iterable[Unit], deps: Mapping[Hashable, Iterable[Hashable]],
                 policy: Policy = Policy()) -> None:
        """``deps[key]``: the keys ``key`` waits for; keys that are not units are ignored."""
        self.policy = policy
        self.units: dict[Hashable, Unit] = {}
        for u in units:
            if u.key in self.units:
                raise ValueError(f"duplicate unit {u.key!r}")
            self.units[u.key] = u
        self.deps = {k: frozenset(d for d in deps.get(k, ()) if d in self.units and d != k) for k in self.units}
        self.dependents: dict[Hashable, list[Hashable]] = {k: [] for k in self.units}
        for k, ds in self.deps.items():
            for d in ds:
                self.dependents[d].append(k)
        self._seq = {k: i for i, k in enumerate(self.units)}
        for k in self.dependents:
            self.dependents[k].sort(key=self._seq.__getitem__)
        self.chain = self._chains()
        self._interval = 1.0 / policy.max_rate if policy.max_rate else 0.0
        self._waiting = {k: len(d) for k, d in self.deps.items()}
        self._ready: list[tuple] = []
        self._delayed: list[tuple[float, int, Hashable]] = []
        self._tick = itertools.count()
        self._attempts: Counter = Counter()
        self._busy_since: dict[Hashable, float] = {}
        self._quota_since: dict[Hashable, float] = {}
        self._group_running: Counter = Counter()
        self._holding: set[Hashable] = set()       # running units holding their group's slot
        self.running: set[Hashable] = set()
        self.outcome: dict[Hashable, str] = {}     # settled: succeeded | failed | blocked
        self.reason: dict[Hashable, str] = {}      # failed: the error; blocked: ""
        self.blocked_by: dict[Hashable, Hashable] = {}
        self.stopped = False
        self._next_slot = 0.0
        # Quota slowdown.
        self.concurrency = policy.workers
        self.quota_until = 0.0        # no start before this
        self._quota_streak = 0        # quota walls since the concurrency was last fully restored
        self._quota_cut_at = float("-inf")  # when the concurrency was last lowered
        self._quota_successes = 0     # successes since the last change of the concurrency
        # Counters for the report.
        self.retries = 0
        self.quota_hits = 0
        self.quota_lowest_concurrency = 0
        self.quota_paused_s = 0.0
        for k in self.units:
            if self._waiting[k] == 0:
                self._push_ready(k)

    # ------------------------------------------------------------------ graph
    def _chains(self) -> dict[Hashable, float]:
        """Longest remaining chain of every unit: its weight plus the longest chain after it, through
        its dependents and through its group's queue (the units of its group ranked after it: with
        ``max_per_group`` slots, the one ``max_per_group`` places later cannot start before it ends).
        Without the queue edges, a unit upstream of everything would always come first and a
        downstream table would be left with all of its work at the end."""
        after: dict[Hashable, list[Hashable]] = {k: list(d) for k, d in self.dependents.items()}
        by_group: dict[str, list[Hashable]] = {}
        for k, u in self.units.items():
            if u.group is not None:
                by_group.setdefault(u.group, []).append(k)
        slots = self.policy.max_per_group
        for keys in by_group.values():
            keys.sort(key=lambda k: (self.units[k].rank, self._seq[k]))
            for a, b in zip(keys, keys[slots:]):
                after[a].append(b)
        order = self._topological(after)
        if order is None:  # a group's ranks run against its dependencies: chains over dependencies only
            after = {k: list(d) for k, d in self.dependents.items()}
            order = self._topological(after)
        if order is None:
            waiting = Counter(d for ds in self.dependents.values() for d in ds)
            cycle = sorted((k for k in self.units if waiting[k]), key=self._seq.__getitem__)
            raise ValueError(f"dependency cycle among {cycle[:5]!r}")
        chain: dict[Hashable, float] = {}
        for k in reversed(order):
            chain[k] = self.units[k].weight + max((chain[d] for d in after[k]), default=0.0)
        return chain

    def _topological(self, after: Mapping[Hashable, list[Hashable]]) -> list[Hashable] | None:
        waiting: Counter = Counter(d for ds in after.values() for d in ds)
        todo = [k for k in self.units if waiting[k] == 0]
        order: list[Hashable] = []
        while todo:
            k = todo.pop()
            order.append(k)
            for d in after[k]:
                waiting[d] -= 1
                if waiting[d] == 0:
                    todo.append(d)
        return order if len(order) == len(self.units) else None

    def _priority(self, key: Hashable) -> tuple:
        unit = self.units[key]
        if self.policy.order == CRITICAL_PATH:
            return (-self.chain[key], unit.rank, self._seq[key], key)
        return (unit.rank, self._seq[key], key)

    def _push_ready(self, key: Hashable) -> None:
        heapq.heappush(self._ready, self._priority(key))

    # ------------------------------------------------------------------ driving
    def take_ready(self, now: float) -> list[Hashable]:
        """The units to start now, best first; each holds its group's slot until reported."""
        if self.stopped:
            return []
        while self._delayed and self._delayed[0][0] <= now:
            self._push_ready(heapq.heappop(self._delayed)[2])
        started: list[Hashable] = []
        held: list[tuple] = []
        while self._ready and len(self.running) < self.concurrency and now >= self.quota_until:
            if self._interval and now < self._next_slot:
                break
            item = heapq.heappop(self._ready)
            key = item[-1]
            if key in self.outcome or key in self.running:
                continue
            group = self.units[key].group
            if group is not None and self._group_running[group] >= self.policy.max_per_group:
                held.append(item)
                continue
            if group is not None:
                self._group_running[group] += 1
                self._holding.add(key)
            self.running.add(key)
            started.append(key)
            self._next_slot = max(now, self._next_slot) + self._interval
        for item in held:
            heapq.heappush(self._ready, item)
        return started

    def next_wakeup(self, now: float) -> float | None:
        """When ``take_ready`` could next start something with no result arriving (None: only a
        result can change anything)."""
        if self.stopped:
            return None
        times = [self._delayed[0][0]] if self._delayed else []
        if self._ready:
            if self._interval:
                times.append(self._next_slot)
            if self.quota_until > now:
                times.append(self.quota_until)
        return min(times) if times else None

    def release_slot(self, key: Hashable) -> None:
        """A running unit no longer needs its group's slot (its write ended); idempotent."""
        if key in self._holding:
            self._holding.discard(key)
            self._group_running[self.units[key].group] -= 1

    def on_result(self, key: Hashable, now: float, finish: Finish) -> Step:
        """Settle or reschedule a running unit from what its attempt came to."""
        if key not in self.running:
            raise ValueError(f"{key!r} is not running")
        if finish.kind not in KINDS:
            raise ValueError(f"unknown result kind {finish.kind!r}")
        self.running.discard(key)
        self.release_slot(key)
        p = self.policy
        if finish.kind == OK:
            changed = self._speed_up()
            self.outcome[key] = SUCCEEDED
            ready = []
            for dep in self.dependents[key]:
                self._waiting[dep] -= 1
                if self._waiting[dep] == 0 and dep not in self.outcome:
                    self._push_ready(dep)
                    ready.append(dep)
            return Step(key, SUCCEEDED, ready=tuple(ready), changed=changed)
        if finish.kind == QUOTA:
            self.quota_hits += 1
            first = self._quota_since.setdefault(key, finish.started)
            if now - first < p.quota_wait_s:  # no attempt spent: the wavefront slows down
                self.retries += 1
                due = self._slow_down(finish.started, now)
                return self._retry(key, due, changed=True)
            return self._fail(key, f"still over a quota or rate limit after waiting {duration(p.quota_wait_s)}: "
                                   f"{finish.error}")
        if finish.kind == BUSY:
            first = self._busy_since.setdefault(key, finish.started)
            if now - first < p.busy_wait_s:
                self._attempts[key] += 1
                self.retries += 1
                return self._retry(key, now + min(5.0, p.backoff_base * 2 ** min(self._attempts[key], 4)))
            return self._fail(key, f"still held by another run after {p.busy_wait_s:.0f} s: {finish.error}")
        if finish.kind == TRANSIENT:
            if self._attempts[key] + 1 < p.max_attempts:
                self._attempts[key] += 1
                self.retries += 1
                return self._retry(key, now + p.backoff_base * 2 ** (self._attempts[key] - 1))
            return self._fail(key, f"gave up after {self._attempts[key] + 1} attempts: {finish.error}")
        return self._fail(key, finish.error)

    def fail(self, key: Hashable, reason: str) -> Step:
        """Settle a unit that has not started as failed (e.g. its inputs are missing); blocks its
        dependents."""
        if key in self.running or key in self.outcome:
            raise ValueError(f"{key!r} is running or settled")
        step = self._fail(key, reason)
        self._ready = [i for i in self._ready if i[-1] not in self.outcome]
        heapq.heapify(self._ready)
        self._delayed = [i for i in self._delayed if i[2] not in self.outcome]
        heapq.heapify(self._delayed)
        return step

    def unstart(self, key: Hashable) -> None:
        """A unit ``take_ready`` returned was never started after all: it is ready again, no attempt
        spent."""
        if key not in self.running:
            raise ValueError(f"{key!r} is not running")
        self.running.discard(key)
        self.release_slot(key)
        self._push_ready(key)

    def stop(self) -> None:
        """Start nothing more; running units are still reported."""
        self.stopped = True

    @property
    def finished(self) -> bool:
        """Nothing running and nothing left to start (or stopped)."""
        if self.running:
            return False
        return self.stopped or (not self._ready and not self._delayed)

    def not_run(self) -> list[Hashable]:
        """Units never settled (left when stopped)."""
        return [k for k in self.units if k not in self.outcome]

    def attempts(self, key: Hashable) -> int:
        """Attempts spent on ``key`` so far that ended in a retry (quota answers spend none)."""
        return self._attempts[key]

    # ------------------------------------------------------------------ internals
    def _retry(self, key: Hashable, due: float, changed: bool = False) -> Step:
        heapq.heappush(self._delayed, (due, next(self._tick), key))
        return Step(key, RETRY, due=due, changed=changed)

    def _fail(self, key: Hashable, error: str) -> Step:
        self.outcome[key] = FAILED
        self.reason[key] = error
        blocked: list[Hashable] = []
        stack = list(self.dependents[key])
        while stack:
            k = stack.pop()
            if k in self.outcome:
                continue
            self.outcome[k] = BLOCKED
            self.reason[k] = ""
            self.blocked_by[k] = key
            blocked.append(k)
            stack.extend(self.dependents[k])
        return Step(key, FAILED, error=error, blocked=tuple(blocked))

    def _slow_down(self, started: float, now: float) -> float:
        """A quota answer: once per wall (an attempt started before the last cut changes nothing
        more), halve the concurrency and pause starts for a growing backoff. Returns the retry's due
        time."""
        p = self.policy
        if started >= self._quota_cut_at:  # a new wall, not the rest of the last one
            self._quota_streak += 1
            self.concurrency = max(1, self.concurrency // 2)
            self._quota_cut_at = now
            self._quota_successes = 0
            pause = min(p.quota_backoff_max, p.quota_backoff_base * 2 ** (self._quota_streak - 1))
            until = max(self.quota_until, now + pause)
            self.quota_paused_s += until - max(self.quota_until, now)
            self.quota_until = until
        low = self.quota_lowest_concurrency
        self.quota_lowest_concurrency = min(low, self.concurrency) if low else self.concurrency
        return max(self.quota_until, now)

    def _speed_up(self) -> bool:
        """A success: after as many successes as the concurrency, raise it by one; back at
        ``workers``, the quota backoff starts from its base again. Returns whether it changed."""
        if self.concurrency >= self.policy.workers:
            return False
        self._quota_successes += 1
        if self._quota_successes < self.concurrency:
            return False
        self.concurrency += 1
        self._quota_successes = 0
        if self.concurrency >= self.policy.workers:
            self._quota_streak = 0
        return True

    def quota_note(self, now: float) -> str:
        """The slowdown in words ("" when running at full concurrency with no pause)."""
        if self.concurrency >= self.policy.workers and now >= self.quota_until:
            return ""
        note = f"quota exceeded ({self.quota_hits}x): concurrency {self.concurrency}/{self.policy.workers}"
        if now < self.quota_until:
            note += f", resuming in {duration(self.quota_until - now)}"
        return note


# ---------------------------------------------------------------------- simulated time
@dataclass
class Trace:
    """A simulated run: when each attempt of a unit started and ended, the steps, the makespan."""

    makespan: float = 0.0
    starts: dict = field(default_factory=dict)     # key -> [start of each attempt]
    ends: dict = field(default_factory=dict)       # key -> [end of each attempt]
    steps: list = field(default_factory=list)      # (time, Step)
    max_running: int = 0
    max_group_running: dict = field(default_factory=dict)  # group -> most slots held at once

    def first_start(self, key: Hashable) -> float:
        return self.starts[key][0]

    def last_end(self, key: Hashable) -> float:
        return self.ends[key][-1]


def simulate(wf: Wavefront, duration: Callable[[Hashable], float] = lambda key: 1.0,
             result: Callable[[Hashable, int], str] = lambda key, attempt: OK,
             write_s: Callable[[Hashable], float | None] = lambda key: None,
             stop_at: float | None = None, start: float = 0.0) -> Trace:
    """Drive ``wf`` to the end in simulated time: an attempt of ``key`` takes ``duration(key)``,
    returns its slot ``write_s(key)`` after it starts (None: when it ends) and comes to
    ``result(key, attempt)`` (a result kind; attempt counts from 0); ``stop_at``: ``stop()`` then."""
    now, tick = start, itertools.count()
    events: list[tuple[float, int, str, Hashable, float]] = []  # (time, seq, "write" | "end", key, started)
    attempt: Counter = Counter()
    trace = Trace()
    while True:
        if stop_at is not None and now >= stop_at and not wf.stopped:
            wf.stop()
        for key in wf.take_ready(now):
            trace.starts.setdefault(key, []).append(now)
            w = write_s(key)
            if w is not None:
                heapq.heappush(events, (now + w, next(tick), "write", key, now))
            heapq.heappush(events, (now + duration(key), next(tick), "end", key, now))
        trace.max_running = max(trace.max_running, len(wf.running))
        for group, n in wf._group_running.items():
            trace.max_group_running[group] = max(trace.max_group_running.get(group, 0), n)
        if wf.finished:
            break
        due = [events[0][0]] if events else []
        wake = wf.next_wakeup(now)
        if wake is not None:
            due.append(wake)
        if stop_at is not None and not wf.stopped:
            due.append(stop_at)
        if not due:
            raise RuntimeError("the wavefront waits for nothing: units left, none running, none due")
        now = max(now, min(due))
        while events and events[0][0] <= now:
            _, _, what, key, began = heapq.heappop(events)
            if what == "write":
                if key in wf.running and trace.starts[key][-1] == began:  # this attempt's write
                    wf.release_slot(key)
                continue
            kind = result(key, attempt[key])
            attempt[key] += 1
            trace.ends.setdefault(key, []).append(now)
            trace.steps.append((now, wf.on_result(key, now, Finish(kind, began, f"{kind} error"))))
    trace.makespan = max((e[-1] for e in trace.ends.values()), default=start) - start
    return trace
