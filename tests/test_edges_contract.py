"""Correct at the edges of the message contract: malformed messages of any shape and size are recorded and
acknowledged, a date-less trigger runs the date of its publish time, raw values are coerced strictly,
and the sweeper repairs what it can when one item cannot be repaired.

Integration tests run on the real emulators through ``handle_cloud_event`` (as the function does);
the coercion table is tested as a unit.
"""

from __future__ import annotations

import base64
import json
from datetime import date

import pytest
from cloudevents.http import CloudEvent

from cascade.ops.sweeper import sweep
from cascade.runtime.entry import handle_cloud_event
from cascade.runtime.messages import MAX_RECORDED_BYTES, Completion, Trigger
from cascade.runtime.processors.gcs_load import coerce

from .harness import FakeClock, cloud_event, utc

D = date(2025, 1, 15)


def event(message: dict) -> dict:
    return {"id": "ev-1", "data": {"message": message, "subscription": "projects/p/subscriptions/s"}}


def body(**fields) -> bytes:
    return json.dumps({"pipeline": "nba", "phase": 2, "data_date": D.isoformat(), **fields}).encode()


# ---------------------------------------------------------------------- malformed messages
def test_oversized_and_out_of_range_fields_are_rejected_and_acknowledged(harness):
    h = harness
    two_mib = body(padding="x" * (2 * 1024 * 1024))
    cases = {
        "generation": (body(generation=2**70), "generation"),
        "correlation_id": (body(correlation_id="c" * 5000), "correlation_id"),
        "payload": (two_mib, "at most 65536 bytes"),
        "processors": (body(processors=["nbac_schedule"] * 10_000), "bytes; at most"),
        "many_processors": (body(processors=["nbac_schedule"] * 1000), "at most 100"),
        "completion": (json.dumps({"pipeline": "nba", "phase": 2, "kind": "completion", "status": "success",
                                   "data_date": D.isoformat(), "run_ids": ["r"] * 1000,
                                   "processors": {"nbac_schedule": {}}}).encode(), "run_ids"),
        "nesting": (b"[" * 50_000, "nested too deeply"),
    }
    for name, (data, _) in cases.items():
        phase = 3 if name == "completion" else 2
        assert handle_cloud_event(cloud_event(data, {}, f"m-{name}"), phase, h.app) is None, name  # acknowledged
    rejected = {r["message_id"]: r for r in h.app.tracker.rejected()}
    assert set(rejected) == {f"m-{n}" for n in cases}
    for name, (data, fragment) in cases.items():
        rec = rejected[f"m-{name}"]
        assert fragment in rec["reason"], (name, rec["reason"])
        assert rec["data_bytes"] == len(data) and rec["data_truncated"] == (len(data) > MAX_RECORDED_BYTES)
        assert rec["data"].encode() == data[:MAX_RECORDED_BYTES]
    assert h.pull(3) == []  # nothing ran, nothing cascaded


def test_malformed_envelopes_of_any_shape_are_recorded_and_acknowledged(harness):
    h = harness
    huge = {"": "empty key", "__name__": "reserved", "k" * 5000: "long key"} | {f"a{i}": "v" * 5000 for i in range(300)}
    cases = {
        "bad-base64": (event({"data": "%%% not base64 %%%", "messageId": "bad-base64"}), "not base64"),
        "data-not-string": (event({"data": {"x": 1}, "messageId": "data-not-string"}), "not a base64 string"),
        "non-object-event": ({"id": "non-object-event", "data": [1, 2, 3]}, "not a Pub/Sub push body"),
        "event-not-json": ({"id": "event-not-json", "data": b"\x00garbage"}, "CloudEvent data is not JSON"),
        "message-not-object": ({"id": "message-not-object", "data": {"message": "hi"}}, "not a Pub/Sub push body"),
        "attributes-not-object": (event({"data": base64.b64encode(body()).decode(), "attributes": ["a"],
                                         "messageId": "attributes-not-object"}), "attributes are not an object"),
        "huge-attributes": (event({"data": base64.b64encode(b"{not json").decode(), "attributes": huge,
                                   "messageId": "huge-attributes"}), "not JSON"),
        "cloudevent-object": (CloudEvent({"id": "cloudevent-object", "type": "google.cloud.pubsub.topic.v1."
                                          "messagePublished", "source": "//pubsub"}, ["not", "a", "push"]),
                              "not a Pub/Sub push body"),
    }
    for name, (ev, _) in cases.items():
        assert handle_cloud_event(ev, 2, h.app) is None, name
    rejected = {r["message_id"]: r for r in h.app.tracker.rejected()}
    assert set(rejected) == set(cases)
    for name, (_, fragment) in cases.items():
        assert fragment in rejected[name]["reason"], (name, rejected[name]["reason"])
    assert rejected["bad-base64"]["data"] == "%%% not base64 %%%"  # what was delivered is kept
    attrs = rejected["huge-attributes"]["attributes"]
    assert rejected["huge-attributes"]["attribute_count"] == 303 and len(attrs) == 100
    assert all(len(v.encode()) <= 1024 for v in attrs.values())


def test_a_completion_of_a_cascade_with_a_long_correlation_id_cannot_fail_to_publish(harness):
    """A trigger built in code with an over-long correlation id still publishes its completion (the
    attributes are cut to Pub/Sub's limit); the next phase refuses it as out of contract, recorded."""
    h = harness
    h.write_raw(D, D)
    trig = Trigger("nba", 2, D, strict_mode=False, correlation_id="c" * 5000)
    from cascade.runtime.runner import PhaseRunner
    result = PhaseRunner(h.app).run(trig, "in-code")
    assert result.complete and result.downstream == "published"
    [completion] = h.pull(3)
    assert handle_cloud_event(cloud_event(json.dumps(completion).encode(), {}, "m-long"), 3, h.app) is None
    [rec] = h.app.tracker.rejected()
    assert "correlation_id" in rec["reason"]


# ---------------------------------------------------------------------- the date of a date-less trigger
def published_at(data: bytes, publish_time: str | None, attributes: dict | None = None) -> dict:
    message = {"data": base64.b64encode(data).decode(), "attributes": attributes or {}, "messageId": "m1"}
    if publish_time is not None:
        message["publishTime"] = publish_time
    return event(message)


def test_a_date_less_trigger_delivered_days_later_runs_the_day_before_its_publish_time_not_its_delivery(make_harness):
    h = make_harness(clock=FakeClock(utc(2025, 1, 20)))  # delivered (or replayed) four days later
    h.write_raw(D, D)
    data = json.dumps({"pipeline": "nba", "phase": 2, "skip_downstream_trigger": True}).encode()
    result = handle_cloud_event(published_at(data, "2025-01-16T11:00:00.123456789Z"), 2, h.app)
    assert result.trigger.data_date == D  # yesterday of 2025-01-16 06:00 in New York
    assert result.complete and h.app.tracker.partition("nbac_schedule", D).status == "success"
    # Without a usable publish time (absent, garbage, no time zone) the delivery time decides (logged).
    for publish_time in (None, "yesterday-ish", "2025-01-16T11:00:00"):
        assert handle_cloud_event(published_at(data, publish_time), 2, h.app).trigger.data_date == date(2025, 1, 19)


def test_a_replayed_dead_letter_keeps_the_date_of_its_original_publish_time(make_harness):
    h = make_harness(clock=FakeClock(utc(2025, 1, 20)))
    data = json.dumps({"pipeline": "nba", "phase": 2, "skip_downstream_trigger": True}).encode()
    replayed = published_at(data, "2025-01-20T09:00:00Z", {"cascade_published_at": "2025-01-16T11:00:00+00:00"})
    assert handle_cloud_event(replayed, 2, h.app).trigger.data_date == D



# ---------------------------------------------------------------------- raw-load coercion
# (declared type, JSON value, coerced value) for every form a raw file may use.
ACCEPTED = [
    ("BOOL", True, True), ("BOOL", "false", False), ("BOOL", "TRUE", True), ("BOOL", 0, False), ("BOOL", 1, True),
    ("INT64", 12, 12), ("INT64", 12.0, 12), ("INT64", "12", 12), ("INT64", "-7", -7), ("INT64", "12.0", 12),
    ("FLOAT64", 3.5, 3.5), ("FLOAT64", 3, 3.0), ("FLOAT64", "3.5", 3.5), ("NUMERIC", "1e3", 1000.0),
    ("DATE", "2025-01-15", D), ("STRING", "x", "x"), ("STRING", 12, "12"), ("STRING", True, "true"),
    ("TIMESTAMP", "2025-01-15T19:30:00Z", "2025-01-15T19:30:00Z"), ("INT64", None, None),
]


def test_raw_values_of_the_accepted_forms_are_coerced_to_their_declared_type():
    wrong = [(typ, value, expected, got) for typ, value, expected in ACCEPTED
             if (got := coerce(typ, value)) != expected or type(got) is not type(expected)]
    assert wrong == []


@pytest.mark.parametrize("typ, value", [
    ("BOOL", "yes"), ("BOOL", "0"), ("BOOL", 2), ("BOOL", 1.0), ("INT64", 3.7), ("INT64", "3.7"), ("INT64", True),
    ("INT64", "12 apples"), ("INT64", 2**64), ("INT64", float("inf")), ("FLOAT64", True), ("FLOAT64", "abc"),
    ("FLOAT64", "nan"), ("NUMERIC", float("nan")), ("NUMERIC", False), ("DATE", "2025-1-5"), ("DATE", "2025-02-30"),
    ("DATE", "2025-01-15T00:00:00"), ("DATE", 20250115), ("STRING", {"a": 1}), ("STRING", [1]),
    ("TIMESTAMP", "2025-01-15"), ("TIMESTAMP", 1736971800),
])
def test_raw_values_not_of_their_declared_type_are_refused_naming_what_the_type_accepts(typ, value):
    with pytest.raises(ValueError, match="expected "):
        coerce(typ, value)


def write_boxscores(h, players: list[dict]) -> None:
    bucket = h.app.storage.bucket(h.pipeline.bucket(h.project))
    bucket.blob(f"nbacom/player_boxscores/{D.isoformat()}.json").upload_from_string(
        json.dumps({"game_date": D.isoformat(), "players": players}), content_type="application/json")


def boxscore(h) -> list[dict]:
    from cascade.dev.synthetic import day_files
    return day_files(D)["nbacom/player_boxscores/{date}.json"]["players"]


def test_a_raw_file_with_duplicate_keys_fails_the_partition_permanently_naming_the_keys(harness):
    h = harness
    h.write_raw(D, D)
    players = boxscore(h)
    dup = dict(players[3], points=players[3]["points"] + 10)  # same game and player, another line
    write_boxscores(h, [*players, dup])
    result = h.deliver(h.trigger(D, strict_mode=False))
    out = {o.processor: o for o in result.outcomes}["nbac_player_boxscore"]
    assert out.status == "failed" and not out.retry  # permanent: acknowledged, not redelivered
    part = h.app.tracker.partition("nbac_player_boxscore", D)
    key = f"game_id={players[3]['game_id']!r}, player_id={players[3]['player_id']!r}"
    assert key in part.error and f"records [3, {len(players)}]" in part.error and "InvalidSourceError" in part.error
    assert h.rows("nbac_player_boxscore", D) == [] and part.attempts == 1
    assert h.pull(3) == [] and not result.complete


def test_a_raw_value_that_is_not_its_declared_type_fails_the_partition_permanently(harness):
    h = harness
    h.write_raw(D, D)
    players = boxscore(h)
    players[5] = dict(players[5], points="game aborted")  # text that reads as transient must not be retried
    write_boxscores(h, players)
    result = h.deliver(h.trigger(D, strict_mode=False))
    out = {o.processor: o for o in result.outcomes}["nbac_player_boxscore"]
    assert out.status == "failed" and not out.retry
    for fragment in (f"player_boxscores/{D.isoformat()}.json", "record 5", "'points'", "'game aborted'", "INT64"):
        assert fragment in out.error, (fragment, out.error)


# ---------------------------------------------------------------------- the sweeper
def test_sweeper_republishes_the_good_claim_and_reports_the_one_whose_topic_was_deleted(make_harness):
    clock = FakeClock()
    h = make_harness(clock=clock, settings_overrides={"publish_timeout_seconds": 5})
    gone = h.publisher.topic_path(h.project, f"{h.namespace}-gone")
    h.publisher.create_topic(request={"name": gone})
    h.publisher.delete_topic(request={"topic": gone})
    good, bad = (Completion(Trigger("nba", phase, D, correlation_id="c1"), "success") for phase in (2, 3))
    assert h.app.tracker.claim_trigger(2, D, 0, h.pipeline.topic(3), good.to_json(), "test")
    assert h.app.tracker.claim_trigger(3, D, 0, f"{h.namespace}-gone", bad.to_json(), "test")
    clock.advance(h.app.settings.republish_after_seconds + 1)
    report = sweep(h.app)  # returns normally
    assert report.republished == [f"phase 2 {D} g0 -> {h.pipeline.topic(3)}"]
    assert h.app.tracker.claim(2, D, 0)["status"] == "published" and len(h.pull(3)) == 1
    assert h.app.tracker.claim(3, D, 0)["status"] == "claimed"  # never marked published without a publish
    [error] = report.errors
    assert f"phase 3 for {D} g0" in error and f"{h.namespace}-gone" in error and "cascade sweep" in error
    assert not report.ok and report.to_dict()["errors"] == [error]
    again = sweep(h.app)  # still reported until the topic is back; the good one is not republished twice
    assert again.republished == [] and len(again.errors) == 1
