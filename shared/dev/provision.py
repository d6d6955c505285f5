"""Creating the pipeline's resources from its definition (idempotent): topics, subscriptions, tables, bucket.

Per phase: the trigger topic, a dead-letter topic with a pull subscription on it, and a push
subscription to the phase function with an ack deadline, a retry policy (exponential backoff) and
a dead-letter policy - as in production, so that local delivery semantics match (without them the
emulator redelivers every second forever).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from google.api_core import exceptions as gexc
from google.protobuf import duration_pb2

from cascade.definition.model import Pipeline
from cascade.runtime import clients
from cascade.runtime.warehouse import Warehouse

if TYPE_CHECKING:
    from cascade.dev.localstack import Endpoints


@dataclass(frozen=True)
class DeliveryPolicy:
    """Push delivery settings (production: ack 600 s, backoff 10-600 s, dead-letter after 5)."""

    ack_deadline_seconds: int = 600
    min_backoff_seconds: float = 10.0
    max_backoff_seconds: float = 600.0
    max_delivery_attempts: int = 5


LOCAL_POLICY = DeliveryPolicy(ack_deadline_seconds=600, min_backoff_seconds=1.0, max_backoff_seconds=10.0,
                              max_delivery_attempts=5)


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def ensure_pubsub(pipeline: Pipeline, project: str, publisher: Any, subscriber: Any,
                  push_endpoints: dict[int, str], policy: DeliveryPolicy = LOCAL_POLICY,
                  progress: Callable[[str], None] = lambda _m: None) -> None:
    """Create topics and subscriptions of every phase; point push subscriptions at ``push_endpoints``."""
    for phase in pipeline.phases:
        n = phase.number
        topic = publisher.topic_path(project, pipeline.topic(n))
        dlq = publisher.topic_path(project, pipeline.dead_letter_topic(n))
        for path in (topic, dlq):
            try:
                publisher.create_topic(request={"name": path})
            except gexc.AlreadyExists:
                pass
        dlq_sub = subscriber.subscription_path(project, pipeline.dead_letter_subscription(n))
        try:
            subscriber.create_subscription(request={"name": dlq_sub, "topic": dlq, "ack_deadline_seconds": 60})
        except gexc.AlreadyExists:
            pass
        if n not in push_endpoints:
            continue
        sub = subscriber.subscription_path(project, pipeline.push_subscription(n))
        request = {
            "name": sub, "topic": topic,
            "push_config": {"push_endpoint": push_endpoints[n]},
            "ack_deadline_seconds": policy.ack_deadline_seconds,
            "retry_policy": {"minimum_backoff": _duration(policy.min_backoff_seconds),
                             "maximum_backoff": _duration(policy.max_backoff_seconds)},
            "dead_letter_policy": {"dead_letter_topic": dlq, "max_delivery_attempts": policy.max_delivery_attempts},
        }
        try:
            subscriber.create_subscription(request=request)
        except gexc.AlreadyExists:
            subscriber.modify_push_config(request={"subscription": sub,
                                                   "push_config": {"push_endpoint": push_endpoints[n]}})
        progress(f"phase {n}: topic {pipeline.topic(n)} -> {push_endpoints[n]} (dead letters: {pipeline.dead_letter_topic(n)})")


def ensure_bucket(pipeline: Pipeline, project: str, storage_client: Any) -> list[str]:
    """Create the raw bucket and every export's own bucket (``export.bucket``); returns them all,
    the raw one first."""
    names = pipeline.buckets(project)
    for name in names:
        try:
            storage_client.create_bucket(name)
        except gexc.Conflict:
            pass
    return names


def buckets_line(pipeline: Pipeline, project: str, names: list[str]) -> str:
    """``gcs: buckets gs://<raw> (raw files), gs://<public> (exports of daily_bulletin)``: every
    bucket ``cascade up`` ensured, with what it holds."""
    roles = {name: [] for name in names}
    roles.setdefault(pipeline.bucket(project), []).append("raw files")
    exports: dict[str, list[str]] = {}
    for p in pipeline.processors:
        if p.export is not None:
            exports.setdefault(pipeline.export_bucket(p, project), []).append(p.name)
    for name, procs in exports.items():
        roles.setdefault(name, []).append(f"exports of {', '.join(procs)}")
    return f"gcs: bucket{'s' if len(roles) > 1 else ''} " + ", ".join(
        f"gs://{name} ({'; '.join(what)})" for name, what in roles.items())


def push_endpoint(base_url: str, project: str, topic: str) -> str:
    """Push URL whose path makes functions-framework set the CloudEvent source to the topic."""
    return f"{base_url.rstrip('/')}/projects/{project}/topics/{topic}"


def provision_emulators(pipeline: Pipeline, endpoints: "Endpoints", functions: dict[int, str],
              policy: DeliveryPolicy = LOCAL_POLICY, progress: Callable[[str], None] = print) -> None:
    """Everything on the local emulators at ``endpoints``: topics, subscriptions (pushing to
    ``functions``), datasets, tables and the bucket (idempotent)."""
    saved = dict(os.environ)
    os.environ.update(endpoints.as_env())
    try:
        project = endpoints.project
        pub, sub = clients.publisher(), clients.subscriber()
        urls = {n: push_endpoint(u, project, pipeline.topic(n)) for n, u in functions.items()}
        ensure_pubsub(pipeline, project, pub, sub, urls, policy, progress)
        tables = Warehouse(clients.bigquery(project), pipeline, project).ensure_tables()
        progress(f"bigquery: {len(tables)} tables in datasets {', '.join(pipeline.datasets())}")
        progress(buckets_line(pipeline, project, ensure_bucket(pipeline, project, clients.storage(project))))
    finally:
        os.environ.clear()
        os.environ.update(saved)
