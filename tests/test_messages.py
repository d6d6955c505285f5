"""The message contract: parsing and validation at the boundary (no emulators needed)."""

from __future__ import annotations

import json
from datetime import date

import pytest

from cascade.definition.loading import load
from cascade.errors import InvalidMessageError, UnknownProcessorError
from cascade.runtime.messages import (
    MAX_CORRELATION_ID_LENGTH,
    MAX_GENERATION,
    MAX_NAME_LENGTH,
    MAX_PAYLOAD_BYTES,
    MAX_PROCESSORS,
    Completion,
    Trigger,
    parse,
)

from .harness import utc

P = load(namespace="")
NOW = utc(2025, 1, 16, 15)  # 10:00 in New York


def msg(**fields) -> bytes:
    return json.dumps({"pipeline": "nba", "phase": 2, **fields}).encode()


def test_minimal_trigger_defaults_to_yesterday_in_pipeline_time_zone():
    t = parse(msg(), P, 2, now=utc(2025, 1, 16, 3))  # 22:00 on the 15th in New York
    assert t.data_date == date(2025, 1, 14)
    # No generation: an intent ("make it complete and fresh"), resolved by the phase.
    assert (t.mode, t.strict_mode, t.skip_downstream_trigger, t.generation) == ("daily", True, False, None)
    assert t.is_intent and "generation" not in t.to_dict()
    assert t.correlation_id


def test_full_trigger_round_trips():
    t = Trigger("nba", 3, date(2025, 1, 15), ("player_game_summary",), "backfill", False, True, "abc", 2)
    assert parse(t.to_json(), P, 3, now=NOW) == t
    assert t.attributes()["data_date"] == "2025-01-15"


def test_completion_of_previous_phase_becomes_trigger_of_this_phase():
    t = Trigger("nba", 2, date(2025, 1, 15), correlation_id="c1", generation=1)
    c = Completion(t, "success", {"nbac_schedule": {"status": "success", "record_count": 11, "run_id": "r"}})
    got = parse(c.to_json(), P, 3, now=NOW)
    assert (got.phase, got.data_date, got.generation, got.correlation_id, got.processors) == (3, date(2025, 1, 15), 1, "c1", ())


def test_unknown_fields_are_ignored():
    assert parse(msg(data_date="2025-01-15", shiny=True), P, 2, now=NOW).data_date == date(2025, 1, 15)


@pytest.mark.parametrize("data, fragment", [
    (b"not json at all", "not JSON"),
    (b"", "no data"),
    (b"[1, 2]", "JSON object"),
    (json.dumps({"phase": 2}).encode(), "missing required field \"pipeline\""),
    (json.dumps({"pipeline": "nba"}).encode(), "missing required field 'phase'"),
    (msg(data_date="2024-02-30"), "not a valid date"),
    (msg(data_date="15/01/2025"), "not a valid date"),
    (msg(mode="turbo"), "mode"),
    (msg(strict_mode="maybe"), "strict_mode must be true or false"),
    (msg(generation=-1), "generation"),
    (json.dumps({"pipeline": "mlb", "phase": 2}).encode(), "pipeline 'mlb'"),
    (msg(phase=3), "publish it to nba-phase3-analytics"),
    (msg(processors=["player_game_summary"]), "belongs to phase 3"),
], ids=["not-json", "empty", "array", "no-pipeline", "no-phase", "feb-30", "bad-format", "bad-mode",
        "bad-bool", "negative-generation", "other-pipeline", "wrong-topic", "processor-of-other-phase"])
def test_invalid_messages_are_permanent_errors_with_a_clear_reason(data, fragment):
    with pytest.raises(InvalidMessageError) as err:
        parse(data, P, 2, now=NOW)
    assert fragment in str(err.value)


def test_unknown_phase_and_processor_are_permanent_errors():
    with pytest.raises(UnknownProcessorError, match="no phase 9"):
        parse(msg(phase=9), P, 2, now=NOW)
    with pytest.raises(UnknownProcessorError, match="no processor 'nope'"):
        parse(msg(processors=["nope"]), P, 2, now=NOW)


def test_date_less_trigger_means_today_for_a_forward_looking_phase():
    p5 = json.dumps({"pipeline": "nba", "phase": 5}).encode()
    assert parse(p5, P, 5, now=utc(2025, 1, 16, 15)).data_date == date(2025, 1, 16)


def test_a_completion_without_its_date_is_refused():
    body = json.dumps({"pipeline": "nba", "phase": 2, "kind": "completion", "status": "success", "processors": {}})
    with pytest.raises(InvalidMessageError, match="completion message without data_date"):
        parse(body.encode(), P, 3, now=NOW)


def _completion_body(**over) -> dict:
    body = {"pipeline": "nba", "phase": 2, "kind": "completion", "status": "success", "data_date": "2025-01-15",
            "processors": {"nbac_schedule": {"status": "success", "record_count": 1, "run_id": "r"}}}
    return {**body, **over}


@pytest.mark.parametrize("body, fragment", [
    ({"generation": 2**70}, "generation"),
    ({"generation": 2**53}, "0 to 9007199254740991"),
    ({"generation": "9" * 40}, "generation must be an integer"),
    ({"phase": 2**70}, "phase"),
    ({"correlation_id": "c" * 5000}, "correlation_id"),
    ({"correlation_id": "two words"}, "A-Z a-z 0-9"),
    ({"correlation_id": 12}, "correlation_id"),
    ({"processors": ["nbac_schedule"] * 1000}, "at most 100"),
    ({"processors": ["x" * 5000]}, "longer than 64"),
    ({"data_date": "2025-01-15" * 1000}, "not a valid date"),
    ({"mode": "m" * 5000}, "mode"),
    ({"kind": "k" * 5000}, "kind"),
    ({"schema_version": "1" * 5000}, "schema_version"),
    ({"pipeline": "p" * 5000}, "but this is pipeline 'nba'"),
], ids=["generation-2**70", "generation-2**53", "generation-40-digits", "phase-2**70", "correlation-5000",
        "correlation-charset", "correlation-not-string", "1000-processors", "long-processor-name", "long-date",
        "long-mode", "long-kind", "long-schema-version", "long-pipeline"])
def test_fields_beyond_their_bound_are_invalid_with_a_short_reason_saying_what_is_allowed(body, fragment):
    with pytest.raises(InvalidMessageError) as err:
        parse(msg(**body), P, 2, now=NOW)
    assert fragment in err.value.message and len(err.value.message) < 400


@pytest.mark.parametrize("over, fragment", [
    ({"processors": {f"p{i}": {} for i in range(1000)}}, "at most 100"),
    ({"processors": {"nbac_schedule": "done"}}, "name -> {status, record_count, run_id}"),
    ({"run_ids": ["r"] * 1000}, "run_ids"),
    ({"run_ids": ["r" * 5000]}, "run_ids"),
    ({"completed_at": "t" * 5000}, "completed_at"),
], ids=["1000-processors", "processor-not-object", "1000-run-ids", "long-run-id", "long-completed-at"])
def test_completion_fields_beyond_their_bound_are_invalid(over, fragment):
    with pytest.raises(InvalidMessageError, match=fragment):
        parse(json.dumps(_completion_body(**over)).encode(), P, 3, now=NOW)


def test_payload_over_64_kib_is_invalid_before_it_is_decoded():
    big = msg(padding="x" * (MAX_PAYLOAD_BYTES + 1))
    with pytest.raises(InvalidMessageError, match=f"at most {MAX_PAYLOAD_BYTES} bytes"):
        parse(big, P, 2, now=NOW)


def test_json_nested_too_deeply_is_invalid_not_a_crash():
    with pytest.raises(InvalidMessageError, match="nested too deeply"):
        parse(b"[" * 50_000, P, 2, now=NOW)


def test_the_largest_valid_trigger_and_completion_are_accepted_and_their_attributes_fit_pubsub_limits():
    cid = "c" * MAX_CORRELATION_ID_LENGTH
    trig = Trigger("nba", 2, date(2025, 1, 15), ("nbac_schedule",), "backfill", False, True, cid, MAX_GENERATION)
    assert parse(trig.to_json(), P, 2, now=NOW) == trig
    names = [f"{'p' * (MAX_NAME_LENGTH - 3)}{i:03d}" for i in range(MAX_PROCESSORS)]
    comp = Completion(trig, "success", {n: {"status": "success", "record_count": 10**12,
                                            "run_id": f"{n}-2025-01-15-0123456789"} for n in names},
                      completed_at="2025-01-16T11:00:00.123456+00:00")
    data = comp.to_json()
    assert len(data) <= MAX_PAYLOAD_BYTES  # what a phase of 100 processors publishes is within the contract
    assert parse(data, P, 3, now=NOW).generation == MAX_GENERATION
    for attrs in (trig.attributes(), comp.attributes()):
        assert len(attrs) <= 100
        assert all(len(k.encode()) <= 256 and len(v.encode()) <= 1024 for k, v in attrs.items())
    for beyond in ({"correlation_id": cid + "c"}, {"generation": MAX_GENERATION + 1}):  # one past: not valid
        with pytest.raises(InvalidMessageError):
            parse(msg(**beyond), P, 2, now=NOW)


def test_attributes_of_a_trigger_built_in_code_with_oversized_fields_still_fit_1024_bytes_per_value():
    trig = Trigger("nba", 2, date(2025, 1, 15), correlation_id="é" * 5000, generation=2**70)
    comp = Completion(trig, "success", {})
    for attrs in (trig.attributes(), comp.attributes()):
        assert all(len(v.encode()) <= 1024 for v in attrs.values()), {k: len(v.encode()) for k, v in attrs.items()}
        assert attrs["correlation_id"] == "é" * 512  # cut on a character boundary, never inside one
