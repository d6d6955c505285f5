"""The state rules as pure logic, without emulators: code versions, freshness, intents, hand-off
generations and the backfill plan's choice of what to rebuild."""

from __future__ import annotations

import copy
from datetime import date, datetime, timedelta, timezone

import pytest

from cascade.backfill.plan import build_plan, select_processors
from cascade.definition.loading import from_dict
from cascade.definition.versions import Versions, normalize_sql, processor_version
from cascade.runtime import handoff
from cascade.state.freshness import Freshness, input_keys, input_record
from cascade.state.status import Status
from cascade.state.tracker import Partition

NOW = datetime(2025, 2, 1, 12, tzinfo=timezone.utc)
D = date(2025, 1, 8)

DEF = {
    "pipeline": "wx", "description": "weather", "raw_bucket": "wx",
    "calendar": {"timezone": "UTC", "seasons": [{"name": "y", "start": "2025-01-06", "end": "2025-12-31"}]},
    "phases": [{"number": 1, "name": "ingest", "next": 2}, {"number": 2, "name": "daily"}],
    "processors": [
        {"name": "readings", "phase": 1, "source": {"gcs_json": "r/{date}.json", "records": "readings",
                                                      "synthetic": {"rows": 3}},
         "output": {"table": "raw.readings", "date_column": "d", "keys": ["s"],
                    "columns": {"d": "DATE", "s": "STRING", "t": "FLOAT64"}}},
        {"name": "daily", "phase": 2, "upstreams": ["readings"],
         "output": {"table": "a.daily", "date_column": "d", "keys": ["s"],
                    "columns": {"d": "DATE", "s": "STRING", "t": "FLOAT64"}},
         "sql": "SELECT d, s, t FROM {raw.readings} WHERE d = @data_date"},
        {"name": "trend", "phase": 2, "upstreams": [{"processor": "daily", "lookback_days": 2}],
         "output": {"table": "a.trend", "date_column": "d", "keys": ["s"],
                    "columns": {"d": "DATE", "s": "STRING", "m": "FLOAT64"}},
         "sql": "SELECT @data_date AS d, s, AVG(t) AS m FROM {a.daily} GROUP BY s"},
    ],
}


def pipeline(edit=None):
    raw = copy.deepcopy(DEF)
    if edit:
        edit(raw)
    return from_dict(raw)


def success(pl, name: str, day: date, run_id: str, gen: int = 0, inputs: dict | None = None, version=True) -> Partition:
    raw = {"status": "success", "generation": gen, "run_id": run_id, "finished_at": NOW}
    if version:
        raw.update(Versions(pl).of(name).to_dict())
    if inputs is not None:
        raw["inputs"] = inputs
    return Partition.from_doc(name, day.isoformat(), raw)


def built(pl, day_range) -> dict:
    """Every partition of ``pl`` built in dependency order, each recording what it read."""
    states: dict = {}
    for day in day_range:
        for proc in [p for ph in (1, 2) for p in pl.processors_of(ph)]:
            keys = input_keys(pl, proc, day)
            states[(proc.name, day.isoformat())] = success(pl, proc.name, day, f"{proc.name}-{day}-r1", 0,
                                                           input_record(keys, states))
    return states


DAYS = [date(2025, 1, 6) + timedelta(days=i) for i in range(5)]


# ---------------------------------------------------------------------- versions
def test_formatting_only_sql_changes_normalize_equal_and_literals_do_not():
    a = "SELECT a, b FROM {x.y} WHERE s = 'A  b'  -- note\n"
    assert normalize_sql(a) == normalize_sql("select a,\n   b\nfrom {x.y}\n/* c */ where s = 'A  b'")
    assert normalize_sql(a) != normalize_sql("SELECT a, b FROM {x.y} WHERE s = 'a  b'")
    assert normalize_sql(a) != normalize_sql("SELECT a, b FROM {x.y} WHERE s = 'A b'")
    assert normalize_sql("SELECT Temp FROM t") != normalize_sql("SELECT temp FROM t")  # identifiers keep case


def test_a_version_names_the_parts_that_changed():
    base = pipeline()

    def gate(raw):
        raw["processors"][1]["gates"] = [{"not_null": ["t"]}]

    def sql(raw):
        raw["processors"][1]["sql"] += " AND t > 0"

    def hint(raw):  # synthetic-data hints do not determine the rows
        raw["processors"][0]["source"]["synthetic"] = {"rows": 9}
    v0 = processor_version(base, base.processor("daily"))
    for edit, parts in ((gate, ["gates"]), (sql, ["sql"])):
        p = pipeline(edit)
        assert processor_version(p, p.processor("daily")).changed_parts(v0.parts) == parts
    p = pipeline(hint)
    assert processor_version(p, p.processor("readings")) == processor_version(base, base.processor("readings"))


# ---------------------------------------------------------------------- freshness
def test_fresh_partitions_have_no_reason_and_a_changed_code_part_is_named():
    pl = pipeline()
    states = built(pl, DAYS)
    assert Freshness(pl, states).evaluate(states) == {}

    def sql(raw):
        raw["processors"][1]["sql"] += " AND t > 0"
    changed = Freshness(pipeline(sql), states).evaluate(states)
    assert changed[("daily", D.isoformat())].reason == "code changed: sql"
    # What read a stale partition is stale too, naming it; the loads are untouched.
    assert f"input daily@{D} is stale (code changed: sql)" in changed[("trend", D.isoformat())].reasons
    assert not any(k[0] == "readings" for k in changed)


def test_a_rebuilt_input_makes_every_reader_of_its_window_stale():
    pl = pipeline()
    states = built(pl, DAYS)
    states[("daily", D.isoformat())] = success(pl, "daily", D, "daily-rebuilt", 1,
                                               states[("daily", D.isoformat())].raw["inputs"])
    stale = Freshness(pl, states).evaluate(states)
    readers = {("trend", (D + timedelta(days=i)).isoformat()) for i in range(3)}  # 2-day lookback + the day
    assert set(stale) == readers
    assert "input daily@2025-01-08 rebuilt at 2025-02-01 12:00:00 (run daily-rebuilt)" in stale[("trend", "2025-01-09")].reason


def test_an_input_that_failed_after_it_was_read_is_named_and_unversioned_partitions_count_as_fresh():
    pl = pipeline()
    states = built(pl, DAYS)
    states[("readings", D.isoformat())] = Partition.from_doc("readings", D.isoformat(),
                                                             {"status": "failed", "run_id": "r2", "error": "gate"})
    assert Freshness(pl, states).stale(("daily", D.isoformat())).reason == f"input readings@{D} is failed"
    legacy = {k: success(pl, k[0], date.fromisoformat(k[1]), "old", version=False) for k in states}
    assert Freshness(pipeline(lambda r: r["processors"][1].update(sql="SELECT 1")), legacy).evaluate(legacy) == {}


def test_freshness_reads_inputs_outside_what_it_was_given_in_batches():
    pl = pipeline()
    states = built(pl, DAYS)
    asked: list[list] = []

    def load(keys):
        asked.append(list(keys))
        return {k: states[k] for k in keys}
    target = ("trend", DAYS[-1].isoformat())
    fresh = Freshness(pl, {target: states[target]}, load=load)
    assert fresh.stale(target) is None
    assert len(asked) == 2  # the daily inputs, then their readings inputs: one read per level


# ---------------------------------------------------------------------- intents and hand-off
def phase2(states, day=D):
    return {k: v for k, v in states.items() if k[1] == day.isoformat() and k[0] in ("daily", "trend")}


def test_an_intent_with_nothing_to_do_answers_already_complete():
    pl = pipeline()
    states = built(pl, DAYS)
    intent = handoff.resolve_intent(pl, 2, ["daily", "trend"], D, phase2(states), Freshness(pl, states), NOW, True)
    assert intent.nothing_to_do and "already complete and fresh" in intent.answer(2, D)


def test_an_intent_reruns_a_failed_partition_at_the_current_generation_until_the_phase_was_handed_on():
    pl = pipeline()
    states = built(pl, DAYS)
    states[("trend", D.isoformat())] = Partition.from_doc("trend", D.isoformat(),
                                                          {"status": "failed", "generation": 3, "run_id": "x"})
    intent = handoff.resolve_intent(pl, 2, [], D, phase2(states), Freshness(pl, states), NOW, False)
    assert intent.processors == ("trend",) and intent.generation == 3
    # Once downstream may have read the phase, a rerun takes a new generation (None: allocate one).
    assert handoff.resolve_intent(pl, 2, [], D, phase2(states), Freshness(pl, states), NOW, True).generation is None


def test_an_intent_rebuilds_a_stale_partition_and_its_same_phase_dependents_at_a_new_generation():
    pl = pipeline()
    states = built(pl, DAYS)
    states[("readings", D.isoformat())] = success(pl, "readings", D, "readings-rebuilt", 1, {})
    intent = handoff.resolve_intent(pl, 2, ["daily"], D, phase2(states), Freshness(pl, states), NOW, False)
    assert intent.processors == ("daily", "trend") and intent.generation is None
    assert intent.reasons["daily"].startswith("stale: input readings@2025-01-08 rebuilt")
    assert intent.reasons["trend"] == "a same-phase input is rebuilt"


def test_a_running_partition_is_waited_for_not_rerun_at_a_new_generation():
    pl = pipeline()
    states = built(pl, DAYS)
    states[("daily", D.isoformat())] = Partition.from_doc("daily", D.isoformat(), {
        "status": "running", "generation": 0, "run_id": "live", "lease_expires_at": NOW + timedelta(minutes=1)})
    del states[("trend", D.isoformat())]  # a first run still going: a duplicate delivery arrives
    states[("trend", D.isoformat())] = Partition("trend", D.isoformat())
    intent = handoff.resolve_intent(pl, 2, [], D, phase2(states), Freshness(pl, states), NOW, False)
    assert intent.processors[0] == "daily" and intent.generation == 0


def test_a_phase_completes_at_its_newest_generation_only_when_every_partition_succeeded():
    pl = pipeline()
    states = built(pl, DAYS)
    ps = list(phase2(states).values())
    assert handoff.completion_generation(ps) == 0
    ps[0] = success(pl, ps[0].processor, D, "again", 4)
    assert handoff.completion_generation(ps) == 4
    ps[1] = Partition.from_doc(ps[1].processor, D.isoformat(), {"status": "failed", "generation": 4})
    assert handoff.completion_generation(ps) is None


# ---------------------------------------------------------------------- the plan
class FakeTracker:
    def __init__(self, states):
        self.states = states

    def clock(self):
        return NOW

    def partitions(self, names, days):
        return {(n, d.isoformat()): self.states.get((n, d.isoformat()), Partition(n, d.isoformat()))
                for n in names for d in days}

    def partitions_by_keys(self, keys):
        return {k: self.states.get(k, Partition(*k)) for k in keys}


def test_a_plan_runs_stale_partitions_and_every_selected_reader_of_a_rebuilt_one_at_new_generations():
    pl = pipeline()
    states = built(pl, DAYS)
    states[("readings", D.isoformat())] = success(pl, "readings", D, "readings-rebuilt", 1, {})
    allocated = []

    def allocate(day):
        allocated.append(day)
        return 7
    plan = build_plan(pl, FakeTracker(states), select_processors(pl, phases=[2]), DAYS[0], DAYS[-1], allocate=allocate)
    runs = {(n.processor, n.day) for n in plan.nodes}
    # daily@D is stale (its input was rebuilt); trend reads daily@D on D, D+1, D+2.
    assert runs == {("daily", D)} | {("trend", D + timedelta(days=i)) for i in range(3)}
    assert plan.cells[("daily", D.isoformat())] == Status.STALE
    assert f"daily@{D}" in plan.reasons[("trend", "2025-01-10")]
    assert {n.generation for n in plan.nodes} == {7} and sorted(set(allocated)) == [D + timedelta(days=i) for i in range(3)]


def test_a_named_processor_brings_its_same_phase_dependents():
    pl = pipeline()
    assert [p.name for p in select_processors(pl, processors=["daily"])] == ["daily", "trend"]
    with pytest.raises(Exception):
        select_processors(pl, processors=["nope"])
