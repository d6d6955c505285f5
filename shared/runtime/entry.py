"""The adapter between a Pub/Sub push (as a CloudEvent) and the library: what every ``main.py`` calls.

``handle_cloud_event(event, phase)`` decodes the Pub/Sub message, parses it with the message
contract and runs the phase. A permanently invalid message - of any shape: not a Pub/Sub push,
data that is not base64, not JSON or beyond the contract's bounds - is logged, recorded (raw
payload, truncated to a bound, and reason) and acknowledged (the function returns normally, HTTP
2xx). A transient failure raises, so the push gets HTTP 500 and Pub/Sub redelivers with backoff,
then dead-letters.

A date-less trigger runs "yesterday" (or "today") of the message's **publish time**, not of its
delivery: a scheduler message redelivered or replayed days later still runs the date it meant.
A replayed dead letter carries its original publish time in the ``cascade_published_at``
attribute, which wins over the replay's own publish time.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cascade.errors import InvalidMessageError, PermanentError
from cascade.runtime import logs
from cascade.runtime.app import App, default_app
from cascade.runtime.logs import get_logger, log
from cascade.runtime.messages import parse
from cascade.runtime.runner import PhaseResult, PhaseRunner

logger = get_logger("entry")

# Attribute naming the original publish time of a republished message (set by ``cascade dlq replay``).
PUBLISHED_AT_ATTRIBUTE = "cascade_published_at"


@dataclass(frozen=True)
class PubSubMessage:
    """The Pub/Sub message inside a CloudEvent. ``problem`` says why the envelope itself is malformed
    (``""`` when it is well formed); ``data`` then holds whatever was delivered, for the record."""

    data: bytes = b""
    attributes: dict[str, str] = field(default_factory=dict)
    message_id: str | None = None
    publish_time: datetime | None = None
    problem: str = ""


def cloudevent_to_message(event: Any) -> PubSubMessage:
    """The Pub/Sub message inside a CloudEvent (object or dict form). Never raises: a malformed
    envelope is returned with its ``problem`` and the raw content in ``data``."""
    payload = event.data if hasattr(event, "data") else event.get("data") if isinstance(event, dict) else event
    event_id = _event_id(event)
    if isinstance(payload, (bytes, str)):
        raw = payload.encode("utf-8", "replace") if isinstance(payload, str) else payload
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError):
            return PubSubMessage(raw, message_id=event_id, problem="CloudEvent data is not JSON; expected a Pub/Sub "
                                 "push body {\"message\": {\"data\": <base64>, ...}}")
    message = payload.get("message") if isinstance(payload, dict) else None
    if not isinstance(message, dict):
        return PubSubMessage(_dump(payload), message_id=event_id,
                             problem="CloudEvent data is not a Pub/Sub push body {\"message\": {\"data\": <base64>, "
                                     "\"attributes\": {...}}}; publish to the phase's topic with a Pub/Sub client")
    raw_attributes = message.get("attributes") or {}
    attributes = ({str(k): str(v) for k, v in raw_attributes.items()} if isinstance(raw_attributes, dict)
                  else {"(attributes)": _dump(raw_attributes).decode("utf-8", "replace")})
    mid = message.get("messageId") or message.get("message_id") or event_id
    message_id = None if mid is None else str(mid)
    published = (_rfc3339(attributes.get(PUBLISHED_AT_ATTRIBUTE))
                 or _rfc3339(message.get("publishTime") or message.get("publish_time")))
    encoded = message.get("data") or ""
    problem = "" if isinstance(raw_attributes, dict) else "message attributes are not an object of strings"
    if not isinstance(encoded, str):
        return PubSubMessage(_dump(encoded), attributes, message_id, published,
                             "message data is not a base64 string")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        return PubSubMessage(encoded.encode("utf-8", "replace"), attributes, message_id, published,
                             f"message data is not base64 ({exc}); publish the JSON with a Pub/Sub client, which "
                             f"encodes it")
    return PubSubMessage(data, attributes, message_id, published, problem)


def handle_cloud_event(event: Any, phase: int, app: App | None = None) -> PhaseResult | None:
    logs.configure()
    app = app or default_app()
    msg = cloudevent_to_message(event)
    try:
        if msg.problem:
            raise InvalidMessageError(msg.problem)
        trigger = parse(msg.data, app.pipeline, phase, now=_publish_time(app, msg, phase))
    except PermanentError as exc:
        reason = exc.message
        doc = app.tracker.record_rejected(phase, reason, type(exc).__name__, msg.data, msg.attributes, msg.message_id)
        log(logger, logging.ERROR, f"message rejected by phase {phase}: {reason[:1000]} (recorded as {doc}; "
            f"acknowledged, not retried; see `cascade rejected`)", pipeline=app.pipeline.name, phase=phase,
            message_id=(msg.message_id or "")[:256], rejected_id=doc)
        return None
    return PhaseRunner(app).run(trigger, msg.message_id)


def _publish_time(app: App, msg: PubSubMessage, phase: int) -> datetime:
    """When the message was published (it decides a date-less trigger's date); now if unknown."""
    if msg.publish_time is not None:
        return msg.publish_time
    now = app.clock()
    log(logger, logging.WARNING, f"message to phase {phase} has no usable publishTime; a date-less trigger takes its "
        f"date from the delivery time {now.isoformat()} instead", pipeline=app.pipeline.name, phase=phase,
        message_id=(msg.message_id or "")[:256])
    return now


def _rfc3339(value: Any) -> datetime | None:
    """``2025-01-16T11:00:00.123456789Z`` -> an aware datetime; None if absent or not an aware timestamp."""
    if not isinstance(value, str) or not 20 <= len(value) <= 40:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _event_id(event: Any) -> str | None:
    try:
        value = event["id"]
    except (KeyError, TypeError, IndexError, AttributeError):
        return None
    return None if value is None else str(value)


def _dump(value: Any) -> bytes:
    return json.dumps(value, default=str).encode("utf-8", "replace")
