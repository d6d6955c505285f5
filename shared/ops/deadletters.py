"""Dead letters: messages Pub/Sub gave up on after N deliveries, listed and replayed on demand.

Every phase's push subscription dead-letters to ``<topic>-dlq``, which has a pull subscription.
``list_dead_letters`` shows them without consuming them (they are released right away);
``replay`` republishes each to the phase's topic (after the fix was deployed) and only then
acknowledges it, so a failed replay loses nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cascade.runtime import clients
from cascade.runtime.app import App


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    data: bytes
    attributes: dict[str, str]
    delivery_attempts: int | None
    ack_id: str

    def to_dict(self) -> dict[str, Any]:
        try:
            data: Any = json.loads(self.data)
        except ValueError:
            data = self.data.decode("utf-8", "replace")
        return {"message_id": self.message_id, "data": data, "attributes": self.attributes,
                "delivery_attempts": self.delivery_attempts}


def _pull(app: App, phase: int, max_messages: int, wait_seconds: float = 0) -> tuple[Any, str, list[DeadLetter]]:
    sub = clients.subscriber()
    path = sub.subscription_path(app.project, app.pipeline.dead_letter_subscription(phase))
    out: list[DeadLetter] = []
    while len(out) < max_messages:
        # A snapshot returns at once when nothing is there; with wait_seconds it long-polls for arrivals.
        resp = sub.pull(request={"subscription": path, "max_messages": min(100, max_messages - len(out)),
                                 "return_immediately": not (wait_seconds and not out)},
                        timeout=max(wait_seconds, 10))
        if not resp.received_messages:
            break
        for m in resp.received_messages:
            attrs = dict(m.message.attributes)
            # When it was dead-lettered (minutes after its publish) rides along a replay, so a date-less
            # trigger replayed days later keeps its date (entry.py reads this attribute).
            attrs.setdefault("cascade_published_at", m.message.publish_time.isoformat())
            count = attrs.get("CloudPubSubDeadLetterSourceDeliveryCount")
            out.append(DeadLetter(m.message.message_id, bytes(m.message.data), attrs,
                                  int(count) if count else None, m.ack_id))
    return sub, path, out


def list_dead_letters(app: App, phase: int, max_messages: int = 100, wait_seconds: float = 0) -> list[DeadLetter]:
    """Dead letters of ``phase`` (left on the subscription); ``wait_seconds`` long-polls for the first."""
    sub, path, letters = _pull(app, phase, max_messages, wait_seconds)
    if letters:  # release them: listing consumes nothing
        sub.modify_ack_deadline(request={"subscription": path, "ack_ids": [d.ack_id for d in letters],
                                         "ack_deadline_seconds": 0})
    return letters


def replay(app: App, phase: int, max_messages: int = 100) -> list[str]:
    """Republish dead letters of ``phase`` to its topic; returns the new message ids."""
    sub, path, letters = _pull(app, phase, max_messages)
    ids = []
    for d in letters:
        attrs = {k: v for k, v in d.attributes.items() if not k.startswith("CloudPubSubDeadLetter")}
        attrs["replayed_from"] = d.message_id
        ids.append(app.publisher.publish(app.pipeline.topic(phase), d.data, attrs))
        sub.acknowledge(request={"subscription": path, "ack_ids": [d.ack_id]})
    return ids
