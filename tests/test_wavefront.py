"""The pure wavefront as a scenario matrix, in simulated time: no emulators, no threads, no clock.

Each scenario is a dependency graph of units (processor, day), a policy, and what each attempt comes
to; ``simulate`` drives the wavefront to the end and the assertions read the trace (starts, ends,
steps) and the settled outcomes. Then single behaviours: backoff due times, quota slowdown, busy
waits, slots returned early, the rate limit, interruption, failures before the start, cycles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pytest

from cascade.backfill.wavefront import (
    BLOCKED,
    BUSY,
    CRITICAL_PATH,
    EARLIEST,
    FAILED,
    OK,
    PERMANENT,
    QUOTA,
    RETRY,
    SUCCEEDED,
    TRANSIENT,
    Finish,
    Policy,
    Unit,
    Wavefront,
    simulate,
)


def units(*procs: tuple[str, str | None, range]) -> list[Unit]:
    """(processor, group, days): one unit per day, ranked (day, position of the processor)."""
    return [Unit((p, d), group, (d, i)) for i, (p, group, days) in enumerate(procs) for d in days]


def same_day(edges: list[tuple[str, str]], days: range) -> dict:
    """``down`` reads ``up`` of the same day, for each (up, down) in edges."""
    deps: dict = {}
    for up, down in edges:
        for d in days:
            deps.setdefault((down, d), set()).add((up, d))
    return deps


def lookback(up: str, down: str, days: range, window: int) -> dict:
    """``down`` on day d reads ``up`` on days d-window+1..d that are in the range."""
    return {(down, d): {(up, x) for x in range(d - window + 1, d + 1) if x in days} for d in days}


def fails(kind: str, *keys, times: int = 10**6) -> Callable[[tuple, int], str]:
    """Attempts of ``keys`` come to ``kind`` (the first ``times`` of them), every other one is ok."""
    return lambda key, attempt: kind if key in keys and attempt < times else OK


@dataclass
class Scenario:
    units: list[Unit]
    deps: dict
    policy: Policy = field(default_factory=Policy)
    result: Callable[[tuple, int], str] = lambda key, attempt: OK
    duration: Callable[[tuple], float] = lambda key: 1.0
    makespan: float | None = None
    failed: set = field(default_factory=set)
    blocked: set = field(default_factory=set)
    retries: int = 0
    check: Callable | None = None  # (trace, wavefront) -> None


DAYS = range(1, 6)
CHAIN = Scenario(units(("a", "A", range(1, 2)), ("b", "B", range(1, 2)), ("c", "C", range(1, 2))),
                 same_day([("a", "b"), ("b", "c")], range(1, 2)), makespan=3.0,
                 check=lambda t, wf: t.first_start(("c", 1)) == t.last_end(("b", 1)) == 2.0)
DIAMOND = Scenario(units(("a", None, range(1, 2)), ("b", None, range(1, 2)), ("c", None, range(1, 2)),
                         ("d", None, range(1, 2))),
                   same_day([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")], range(1, 2)),
                   Policy(workers=2), makespan=3.0,
                   check=lambda t, wf: t.first_start(("b", 1)) == t.first_start(("c", 1)) == 1.0
                   and t.first_start(("d", 1)) == 2.0)


def _lookback_check(t, wf) -> None:
    for d in DAYS:  # r on day d starts only after s of days d-2..d ended
        assert t.first_start(("r", d)) >= max(t.last_end(("s", x)) for x in range(max(1, d - 2), d + 1))
    assert t.max_group_running["S"] <= 2 and t.max_group_running["R"] <= 2


SCENARIOS = {
    "linear chain": CHAIN,
    "linear chains over days run side by side": Scenario(
        units(("a", "A", DAYS), ("b", "B", DAYS)), same_day([("a", "b")], DAYS), Policy(workers=10, max_per_group=5),
        makespan=2.0),
    "lookback window": Scenario(
        units(("s", "S", DAYS), ("r", "R", DAYS)), lookback("s", "r", DAYS, 3), Policy(workers=4),
        check=_lookback_check),
    "diamond": DIAMOND,
    "transient retry": Scenario(
        CHAIN.units, CHAIN.deps, Policy(backoff_base=0.5), fails(TRANSIENT, ("a", 1), times=2), retries=2,
        # a: 0-1, retry due 1.5 (0.5 x 2^0), 1.5-2.5, due 3.5 (0.5 x 2^1), 3.5-4.5 ok; then b, c.
        makespan=6.5, check=lambda t, wf: t.starts[("a", 1)] == [0.0, 1.5, 3.5]),
    "attempts exhausted": Scenario(
        CHAIN.units, CHAIN.deps, Policy(max_attempts=3, backoff_base=0.5), fails(TRANSIENT, ("a", 1)),
        failed={("a", 1)}, blocked={("b", 1), ("c", 1)}, retries=2,
        check=lambda t, wf: len(t.starts[("a", 1)]) == 3 and wf.reason[("a", 1)].startswith("gave up after 3 attempts")),
    "permanent failure blocks its closure, the rest completes": Scenario(
        units(("a", "A", DAYS), ("b", "B", DAYS), ("c", "C", DAYS), ("x", "X", DAYS)),
        {**same_day([("a", "b"), ("b", "c")], DAYS), **lookback("c", "x", DAYS, 2)}, Policy(workers=8),
        fails(PERMANENT, ("a", 3)), failed={("a", 3)},
        blocked={("b", 3), ("c", 3), ("x", 3), ("x", 4)},
        check=lambda t, wf: ("b", 3) not in t.starts and wf.blocked_by[("x", 4)] == ("a", 3)
        and all(wf.outcome[("x", d)] == SUCCEEDED for d in (1, 2, 5))),
    "quota slowdown spends no attempt": Scenario(
        units(("q", "Q", range(1, 9))), {}, Policy(workers=4, max_per_group=4, quota_backoff_base=2.0),
        fails(QUOTA, ("q", 1), ("q", 2), times=1), retries=2,
        check=lambda t, wf: wf.quota_hits == 2 and wf.quota_lowest_concurrency == 2 and wf.attempts(("q", 1)) == 0
        and t.starts[("q", 1)][1] == 3.0 and wf.concurrency == 4),
    "busy elsewhere, then free": Scenario(
        CHAIN.units, CHAIN.deps, Policy(backoff_base=0.5, busy_wait_s=60), fails(BUSY, ("b", 1), times=2),
        retries=2, check=lambda t, wf: t.starts[("b", 1)] == [1.0, 3.0, 6.0]),  # ends + min(5, 0.5 x 2^n), n = 1, 2
    "busy past the wait fails": Scenario(
        CHAIN.units, CHAIN.deps, Policy(backoff_base=0.5, busy_wait_s=4), fails(BUSY, ("b", 1)),
        failed={("b", 1)}, blocked={("c", 1)}, retries=2,  # busy from 1: retried at 3 and 6, failed at 7
        check=lambda t, wf: wf.reason[("b", 1)].startswith("still held by another run after 4 s")),
    "per-table slot limit": Scenario(
        units(("a", "T", range(1, 7)), ("z", "Z", range(1, 3))), {}, Policy(workers=8, max_per_group=2),
        makespan=3.0, check=lambda t, wf: t.max_group_running == {"T": 2, "Z": 2} and t.max_running == 4),
    "critical path first": Scenario(
        units(("y", None, range(1, 5)), ("x1", None, range(9, 10)), ("x2", None, range(9, 10)),
              ("x3", None, range(9, 10))),
        same_day([("x1", "x2"), ("x2", "x3")], range(9, 10)), Policy(workers=2, order=CRITICAL_PATH), makespan=4.0,
        check=lambda t, wf: t.first_start(("x1", 9)) == 0.0),
    "earliest date first": Scenario(
        units(("y", None, range(1, 5)), ("x1", None, range(9, 10)), ("x2", None, range(9, 10)),
              ("x3", None, range(9, 10))),
        same_day([("x1", "x2"), ("x2", "x3")], range(9, 10)), Policy(workers=2, order=EARLIEST), makespan=5.0,
        check=lambda t, wf: t.first_start(("x1", 9)) == 2.0),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(name: str) -> None:
    sc = SCENARIOS[name]
    wf = Wavefront(sc.units, sc.deps, sc.policy)
    trace = simulate(wf, duration=sc.duration, result=sc.result)
    assert wf.finished and not wf.running and wf.not_run() == []
    assert {k for k, v in wf.outcome.items() if v == FAILED} == sc.failed
    assert {k for k, v in wf.outcome.items() if v == BLOCKED} == sc.blocked
    assert {k for k, v in wf.outcome.items() if v == SUCCEEDED} == {u.key for u in sc.units} - sc.failed - sc.blocked
    assert wf.retries == sc.retries
    for key in sc.blocked:
        assert key not in trace.starts  # blocked units never run
    for key, starts in trace.starts.items():  # a unit starts after all of its dependencies ended
        assert all(starts[0] >= trace.last_end(d) for d in wf.deps[key])
    assert trace.max_running <= sc.policy.workers
    if sc.makespan is not None:
        assert trace.makespan == pytest.approx(sc.makespan)
    if sc.check is not None:
        assert sc.check(trace, wf) is not False


# ---------------------------------------------------------------------- single behaviours
def test_retry_steps_carry_their_due_times_and_next_wakeup_names_them() -> None:
    wf = Wavefront([Unit("a")], {}, Policy(backoff_base=0.5, max_attempts=4))
    assert wf.take_ready(0.0) == ["a"]
    step = wf.on_result("a", 1.0, Finish(TRANSIENT, 0.0, "reset"))
    assert step.state == RETRY and step.due == 1.5
    assert wf.next_wakeup(1.0) == 1.5 and wf.take_ready(1.4) == []
    assert wf.take_ready(1.5) == ["a"]
    assert wf.on_result("a", 2.0, Finish(TRANSIENT, 1.5, "reset")).due == 3.0  # 0.5 x 2^1
    assert wf.take_ready(3.0) == ["a"]
    assert wf.on_result("a", 3.5, Finish(OK, 3.0)).state == SUCCEEDED
    assert wf.finished and wf.next_wakeup(3.5) is None


def test_a_quota_wall_halves_concurrency_pauses_starts_and_successes_restore_it() -> None:
    wf = Wavefront([Unit(i) for i in range(12)], {}, Policy(workers=4, quota_backoff_base=5.0, quota_backoff_max=8.0))
    assert wf.take_ready(0.0) == [0, 1, 2, 3]
    step = wf.on_result(0, 1.0, Finish(QUOTA, 0.0, "quotaExceeded"))
    assert step.state == RETRY and step.changed and step.due == 6.0
    assert wf.concurrency == 2 and wf.quota_until == 6.0
    assert "quota exceeded (1x): concurrency 2/4, resuming in" in wf.quota_note(1.0)
    # Attempts that started before the cut are the same wall: no second halving, no longer pause.
    assert wf.on_result(1, 1.1, Finish(QUOTA, 0.0, "quotaExceeded")).due == 6.0
    assert wf.concurrency == 2 and wf.quota_paused_s == 5.0
    assert wf.take_ready(2.0) == [] and wf.next_wakeup(2.0) == 6.0
    assert wf.on_result(2, 2.0, Finish(OK, 0.0)).state == SUCCEEDED
    assert wf.on_result(3, 2.0, Finish(OK, 0.0)).changed
    assert wf.concurrency == 3  # two successes at concurrency 2 raised it by one
    # A new wall (an attempt started after the cut): halved again, pause doubled up to the max.
    assert wf.take_ready(6.0) == [0, 1, 4]
    assert wf.on_result(0, 7.0, Finish(QUOTA, 6.0, "quotaExceeded")).due == 15.0  # min(8, 5 x 2)
    assert wf.concurrency == 1 and wf.quota_lowest_concurrency == 1
    assert wf.attempts(0) == 0  # no attempt spent
    # Successes raise the concurrency one step per run of `concurrency` successes.
    assert wf.on_result(1, 7.0, Finish(OK, 6.0)).changed and wf.concurrency == 2
    assert not wf.on_result(4, 7.0, Finish(OK, 6.0)).changed
    assert wf.take_ready(14.9) == [] and wf.take_ready(15.0) == [0, 5]
    assert wf.on_result(0, 16.0, Finish(OK, 15.0)).changed and wf.concurrency == 3  # 4 and 0 at concurrency 2
    assert not wf.on_result(5, 16.0, Finish(OK, 15.0)).changed
    trace = simulate(wf, start=16.0)
    assert wf.concurrency == 4 and wf.quota_note(trace.makespan + 16.0) == ""
    assert wf.quota_hits == 3 and wf.not_run() == []


def test_a_quota_answer_fails_only_after_the_quota_wait() -> None:
    wf = Wavefront([Unit("a"), Unit("b")], {"b": {"a"}}, Policy(quota_backoff_base=1.0, quota_wait_s=10.0))
    trace = simulate(wf, result=lambda key, attempt: QUOTA)
    assert wf.outcome == {"a": FAILED, "b": BLOCKED}
    assert wf.reason["a"].startswith("still over a quota or rate limit after waiting")
    assert trace.starts["a"][-2] < 10.0 <= trace.last_end("a")


def test_a_slot_returned_when_the_write_ends_lets_the_next_unit_of_its_group_start() -> None:
    keys = [("m", d) for d in range(1, 5)]
    wf = Wavefront([Unit(k, "T", (k[1],)) for k in keys], {}, Policy(workers=4, max_per_group=1))
    trace = simulate(wf, duration=lambda k: 3.0, write_s=lambda k: 1.0)  # a 1 s MERGE, then 2 s of gate reads
    assert [trace.first_start(k) for k in keys] == [0.0, 1.0, 2.0, 3.0]
    assert trace.max_group_running == {"T": 1} and trace.max_running == 3
    whole = simulate(Wavefront([Unit(k, "T") for k in keys], {}, Policy(workers=4, max_per_group=1)),
                     duration=lambda k: 3.0)
    assert whole.makespan == 12.0 and trace.makespan == 6.0


def test_the_rate_limit_spaces_starts_and_next_wakeup_is_the_next_slot() -> None:
    wf = Wavefront([Unit(i) for i in range(4)], {}, Policy(workers=4, max_rate=2.0))
    assert wf.take_ready(0.0) == [0]
    assert wf.next_wakeup(0.1) == 0.5 and wf.take_ready(0.4) == []
    assert wf.take_ready(0.5) == [1]
    trace = simulate(Wavefront([Unit(i) for i in range(4)], {}, Policy(workers=4, max_rate=2.0)))
    assert [trace.first_start(i) for i in range(4)] == [0.0, 0.5, 1.0, 1.5]


def test_interruption_starts_nothing_more_and_reports_what_did_not_run() -> None:
    sc = SCENARIOS["linear chains over days run side by side"]
    wf = Wavefront(sc.units, sc.deps, Policy(workers=2, max_per_group=5))
    trace = simulate(wf, stop_at=1.5)
    # Started by 1.5: a@1, a@2 at 0, then a@3, a@4 at 1 (their chains are longer than b's); running at the
    # stop, they report.
    assert set(trace.starts) == {("a", 1), ("a", 2), ("a", 3), ("a", 4)}
    assert all(wf.outcome[k] == SUCCEEDED for k in trace.starts)
    assert wf.stopped and wf.finished and wf.take_ready(10.0) == [] and wf.next_wakeup(10.0) is None
    assert set(wf.not_run()) == {u.key for u in sc.units} - set(trace.starts)


def test_a_unit_taken_but_never_started_goes_back_to_ready() -> None:
    wf = Wavefront([Unit("a", "T"), Unit("b", "T")], {}, Policy(max_per_group=1))
    assert wf.take_ready(0.0) == ["a"]
    wf.unstart("a")  # e.g. Ctrl-C between taking and submitting
    assert not wf.running and wf.take_ready(0.0) == ["a"] and wf.attempts("a") == 0


def test_a_failure_before_the_start_blocks_the_closure_and_leaves_the_rest() -> None:
    sc = SCENARIOS["permanent failure blocks its closure, the rest completes"]
    wf = Wavefront(sc.units, sc.deps, Policy(workers=8))
    step = wf.fail(("a", 2), "input missing")
    assert step.state == FAILED and set(step.blocked) == {("b", 2), ("c", 2), ("x", 2), ("x", 3)}
    trace = simulate(wf)
    assert ("a", 2) not in trace.starts and wf.reason[("a", 2)] == "input missing"
    assert sum(v == SUCCEEDED for v in wf.outcome.values()) == 20 - 5


def test_critical_path_ranks_by_remaining_chain_then_rank() -> None:
    sc = SCENARIOS["critical path first"]
    wf = Wavefront(sc.units, sc.deps, sc.policy)
    assert wf.chain[("x1", 9)] == 3.0 and wf.chain[("x3", 9)] == 1.0 and wf.chain[("y", 1)] == 1.0
    weighted = Wavefront([Unit("a", weight=2.0), Unit("b", weight=5.0), Unit("c")], {"c": {"a"}})
    assert weighted.chain == {"a": 3.0, "b": 5.0, "c": 1.0}
    # A group's queue is part of the chain: 6 units of T through 2 slots are chains of 3, 3, 2, 2, 1, 1.
    queued = Wavefront([Unit(("t", d), "T", (d,)) for d in range(6)], {}, Policy(max_per_group=2))
    assert [queued.chain[("t", d)] for d in range(6)] == [3.0, 3.0, 2.0, 2.0, 1.0, 1.0]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="cycle"):
        Wavefront([Unit("a"), Unit("b")], {"a": {"b"}, "b": {"a"}})
    with pytest.raises(ValueError, match="duplicate"):
        Wavefront([Unit("a"), Unit("a")], {})
    with pytest.raises(ValueError):
        Policy(workers=0)
    with pytest.raises(ValueError):
        Policy(order="random")
    wf = Wavefront([Unit("a")], {"a": {"not a unit"}})  # dependencies outside the units are not waited for
    assert wf.take_ready(0.0) == ["a"]
    with pytest.raises(ValueError):
        wf.on_result("b", 0.0, Finish(OK, 0.0))
