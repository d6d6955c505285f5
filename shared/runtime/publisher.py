"""Publishing messages to Pub/Sub topics of the pipeline (triggers and completions)."""

from __future__ import annotations

from typing import Any

from google.api_core.retry import Retry

from cascade.errors import TransientError
from cascade.runtime import hooks


class Publisher:
    """Publishes to topics of one project and waits for the server's message id."""

    def __init__(self, client: Any, project: str, timeout: float = 60.0) -> None:
        self.client = client
        self.project = project
        self.timeout = timeout

    def topic_path(self, topic: str) -> str:
        return self.client.topic_path(self.project, topic)

    def publish(self, topic: str, data: bytes, attributes: dict[str, str] | None = None) -> str:
        """Publish and return the message id; a failure is a TransientError (the caller retries)."""
        try:
            hooks.maybe_fail("publish")
            # Bound the client's own retries by our timeout, so a publish we report as failed is not
            # delivered late behind our back (a later republish is deduped downstream anyway).
            future = self.client.publish(self.topic_path(topic), data, retry=Retry(deadline=self.timeout),
                                         timeout=self.timeout, **(attributes or {}))
            return str(future.result(timeout=self.timeout))
        except Exception as exc:  # noqa: BLE001 - any publish failure is retried by redelivery
            raise TransientError(f"publishing to {topic} failed: {exc}", topic=topic) from exc
