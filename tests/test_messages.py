"""The message contract: parsing and validation at the boundary (no emulators needed)."""

from __future__ import annotations

import json
from datetime import date

import pytest

from shared.errors import InvalidMessageError, UnknownProcessorError
from shared.messages import Completion, Trigger, parse
from shared.pipeline import load

from .harness import utc

P = load(namespace="")
NOW = utc(2025, 1, 16, 15)  # 10:00 in New York


def msg(**fields) -> bytes:
    return json.dumps({"pipeline": "nba", "phase": 2, **fields}).encode()


def test_minimal_trigger_defaults_to_yesterday_in_pipeline_time_zone():
    t = parse(msg(), P, 2, now=utc(2025, 1, 16, 3))  # 22:00 on the 15th in New York
    assert t.data_date == date(2025, 1, 14)
    assert (t.mode, t.strict_mode, t.skip_downstream_trigger, t.generation) == ("daily", True, False, 0)
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
