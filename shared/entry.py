"""The adapter between a Pub/Sub push (as a CloudEvent) and the library: what every ``main.py`` calls.

``handle_cloud_event(event, phase)`` decodes the Pub/Sub message, parses it with the message
contract and runs the phase. A permanently invalid message is logged, recorded (raw payload and
reason) and acknowledged (the function returns normally, HTTP 2xx). A transient failure raises,
so the push gets HTTP 500 and Pub/Sub redelivers with backoff, then dead-letters.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from . import logs
from .app import App, default_app
from .errors import InvalidMessageError, PermanentError
from .logs import get_logger, log
from .messages import parse
from .runner import PhaseResult, PhaseRunner

logger = get_logger("entry")


def cloudevent_to_message(event: Any) -> tuple[bytes, dict[str, str], str | None]:
    """(data bytes, attributes, message id) of the Pub/Sub message inside a CloudEvent."""
    payload = event.data if hasattr(event, "data") else event.get("data")
    if isinstance(payload, (bytes, str)):
        import json
        try:
            payload = json.loads(payload)
        except ValueError:
            payload = {}
    message = (payload or {}).get("message") or {}
    try:
        data = base64.b64decode(message.get("data") or "", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidMessageError(f"message data is not base64: {exc}") from exc
    attributes = message.get("attributes") or {}
    message_id = message.get("messageId") or message.get("message_id")
    if message_id is None:
        try:
            message_id = event["id"]
        except (KeyError, TypeError):
            message_id = None
    return data, attributes, message_id


def handle_cloud_event(event: Any, phase: int, app: App | None = None) -> PhaseResult | None:
    logs.configure()
    app = app or default_app()
    data, attributes, message_id = b"", {}, None
    try:
        data, attributes, message_id = cloudevent_to_message(event)
        trigger = parse(data, app.pipeline, phase, now=app.clock())
    except PermanentError as exc:
        reason = exc.message
        doc = app.tracker.record_rejected(phase, reason, type(exc).__name__, data, attributes, message_id)
        log(logger, logging.ERROR, f"message rejected by phase {phase}: {reason} (recorded as {doc}; acknowledged, "
            f"not retried)", pipeline=app.pipeline.name, phase=phase, message_id=message_id, rejected_id=doc)
        return None
    return PhaseRunner(app).run(trigger, message_id)
