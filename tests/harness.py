"""Test harness: a namespaced Cascade instance on the session's emulators.

``Harness`` provisions one namespace (topics, tables, bucket, raw files) and can run phases
in-process exactly as the function entry point does (``deliver``), then "pump" completion
messages from observer subscriptions to the next phase, so tests can count every message a phase
published. ``Harness.deploy()`` additionally starts real functions-framework servers with push
subscriptions, for end-to-end tests.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable

from google.api_core import exceptions as gexc

from cascade.definition.loading import load
from cascade.dev.local import start_functions
from cascade.dev.localstack import Endpoints, LocalStack
from cascade.dev.provision import DeliveryPolicy, ensure_bucket, ensure_pubsub, push_endpoint
from cascade.dev.synthetic import write_raw_files
from cascade.errors import TransientError
from cascade.runtime import clients
from cascade.runtime.alerts import MemoryAlertSink
from cascade.runtime.app import App
from cascade.runtime.entry import handle_cloud_event
from cascade.runtime.messages import Trigger, new_correlation_id
from cascade.runtime.settings import Settings
from cascade.state.tracker import utcnow

ROOT = Path(__file__).resolve().parent.parent


def push_body(data: bytes, attributes: dict[str, str] | None = None, message_id: str | None = None) -> dict[str, Any]:
    """A raw Pub/Sub push body, as the emulator (and production) POSTs it."""
    mid = message_id or uuid.uuid4().hex[:12]
    return {"subscription": "projects/p/subscriptions/s",
            "message": {"data": base64.b64encode(data).decode(), "attributes": attributes or {},
                        "messageId": mid, "message_id": mid, "publishTime": "2025-01-16T11:00:00Z"}}


def cloud_event(data: bytes, attributes: dict[str, str] | None = None, message_id: str | None = None) -> dict:
    """The CloudEvent functions-framework builds from a push body (dict form)."""
    body = push_body(data, attributes, message_id)
    return {"id": body["message"]["messageId"], "data": {"message": body["message"]}}


@dataclass
class Harness:
    endpoints: Endpoints
    namespace: str
    pipeline_file: str | None = None
    settings_overrides: dict[str, Any] = field(default_factory=dict)
    clock: Callable[[], datetime] = utcnow

    def __post_init__(self) -> None:
        self.pipeline = load(self.pipeline_file, namespace=self.namespace)
        settings = Settings(project=self.endpoints.project, namespace=self.namespace, **self.settings_overrides)
        self.alerts = MemoryAlertSink()
        self.app = App(settings=settings, pipeline=self.pipeline, clock=self.clock, alerts=self.alerts)
        self.project = self.endpoints.project
        self.publisher = clients.publisher()
        self.subscriber = clients.subscriber()

    # ------------------------------------------------------------------ provisioning
    def provision(self, push: dict[int, str] | None = None, policy: DeliveryPolicy | None = None) -> "Harness":
        ensure_pubsub(self.pipeline, self.project, self.publisher, self.subscriber, push or {},
                      policy or DeliveryPolicy(min_backoff_seconds=1, max_backoff_seconds=2))
        for ph in self.pipeline.phases:
            self._ensure_observer(ph.number)
        self.app.warehouse.ensure_tables()
        ensure_bucket(self.pipeline, self.project, self.app.storage)
        return self

    def _observer(self, phase: int) -> str:
        return self.subscriber.subscription_path(self.project, f"{self.pipeline.topic(phase)}-observer")

    def _ensure_observer(self, phase: int) -> None:
        try:
            self.subscriber.create_subscription(request={
                "name": self._observer(phase), "topic": self.publisher.topic_path(self.project, self.pipeline.topic(phase)),
                "ack_deadline_seconds": 60})
        except gexc.AlreadyExists:
            pass

    def write_raw(self, start: date, end: date) -> int:
        return write_raw_files(self.pipeline, self.app.storage, self.project, start, end)

    # ------------------------------------------------------------------ in-process delivery
    def trigger(self, day: date, phase: int = 2, **fields: Any) -> Trigger:
        return Trigger(pipeline=self.pipeline.name, phase=phase, data_date=day,
                       correlation_id=fields.pop("correlation_id", new_correlation_id()), **fields)

    def deliver(self, trig: Trigger | bytes, phase: int | None = None, message_id: str | None = None):
        """Run a phase in-process for one message, as the function would (exceptions propagate)."""
        data = trig if isinstance(trig, bytes) else trig.to_json()
        attrs = {} if isinstance(trig, bytes) else trig.attributes()
        ph = phase if phase is not None else trig.phase  # type: ignore[union-attr]
        return handle_cloud_event(cloud_event(data, attrs, message_id), ph, self.app)

    def deliver_until_done(self, trig: Trigger, attempts: int = 5):
        """Deliver, redelivering on TransientError like Pub/Sub would (bounded)."""
        for _ in range(attempts):
            try:
                return self.deliver(trig)
            except TransientError:
                continue
        raise AssertionError(f"{trig} still failing after {attempts} deliveries")

    def pull(self, phase: int, max_messages: int = 100) -> list[dict[str, Any]]:
        """Messages published to ``phase``'s topic since the last pull (acknowledged)."""
        out: list[dict[str, Any]] = []
        while True:
            resp = self.subscriber.pull(request={"subscription": self._observer(phase), "max_messages": max_messages,
                                                 "return_immediately": True}, timeout=10)
            if not resp.received_messages:
                return out
            self.subscriber.acknowledge(request={"subscription": self._observer(phase),
                                                 "ack_ids": [m.ack_id for m in resp.received_messages]})
            out.extend(json.loads(m.message.data) for m in resp.received_messages)

    def pump(self, first: Trigger | None = None, max_rounds: int = 20) -> dict[int, list[dict[str, Any]]]:
        """Deliver ``first`` then every completion published downstream, phase by phase, in-process.

        Returns the messages seen on each phase's topic (completions of the phase before it).
        """
        seen: dict[int, list[dict[str, Any]]] = {ph.number: [] for ph in self.pipeline.phases}
        if first is not None:
            self.deliver_until_done(first)
            self.pull(first.phase)  # the observer also saw nothing but our own in-process delivery
        for _ in range(max_rounds):
            moved = False
            for ph in self.pipeline.phases:
                for msg in self.pull(ph.number):
                    seen[ph.number].append(msg)
                    moved = True
                    data = json.dumps(msg).encode()
                    for _ in range(5):
                        try:
                            self.deliver(data, phase=ph.number)
                            break
                        except TransientError:
                            continue
            if not moved:
                return seen
        return seen

    # ------------------------------------------------------------------ rows
    def rows(self, processor: str, day: date) -> list[dict[str, Any]]:
        proc = self.pipeline.processor(processor)
        table = proc.output
        cols = ", ".join(table.column_names)
        from google.cloud import bigquery
        return self.app.warehouse.query(
            f"SELECT {cols} FROM `{self.app.warehouse.table_id(table)}` WHERE {table.date_column} = @d "
            f"ORDER BY {', '.join(table.merge_keys)}", [bigquery.ScalarQueryParameter("d", "DATE", day)])

    # ------------------------------------------------------------------ real functions
    def deploy(self, stack: LocalStack, extra_env: dict[str, str] | None = None,
               policy: DeliveryPolicy | None = None, phases: list[int] | None = None) -> dict[int, str]:
        """Start functions-framework servers for this namespace and push subscriptions to them."""
        env = {"CASCADE_NAMESPACE": self.namespace, **self.settings_env(), **(extra_env or {})}
        if self.pipeline_file:
            env["CASCADE_PIPELINE_FILE"] = str(self.pipeline_file)
        urls = start_functions(stack, self.endpoints, self.pipeline, env, phases)
        self.provision({n: push_endpoint(u, self.project, self.pipeline.topic(n)) for n, u in urls.items()}, policy)
        return urls

    def run_printed(self, command: str) -> int:
        """Run a command Cascade printed for a person (``cascade ...``), verbatim, in-process against
        this namespace (as the person's shell would after ``cascade up``). Returns its exit code."""
        import shlex

        from cascade.cli import main as cascade_main

        argv = shlex.split(command)
        assert argv[0] == "cascade", command
        saved = dict(os.environ)
        os.environ.update({"CASCADE_NAMESPACE": self.namespace, "CASCADE_PROJECT": self.project,
                           "CASCADE_STATE_DIR": str(ROOT / ".cascade-test-unused"), **self.endpoints.as_env(),
                           **self.settings_env()})
        if self.pipeline_file:
            os.environ["CASCADE_PIPELINE_FILE"] = str(self.pipeline_file)
        try:
            return cascade_main(argv[1:])
        except SystemExit as exc:
            return int(exc.code or 0)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def settings_env(self) -> dict[str, str]:
        names = {"lease_seconds": "CASCADE_LEASE_SECONDS", "max_attempts": "CASCADE_MAX_ATTEMPTS",
                 "republish_after_seconds": "CASCADE_REPUBLISH_AFTER_SECONDS",
                 "busy_wait_seconds": "CASCADE_BUSY_WAIT_SECONDS"}
        return {names[k]: str(v) for k, v in self.settings_overrides.items() if k in names}


def printed_commands(text: str) -> list[str]:
    """The ``cascade ...`` commands in a text Cascade printed (a resolution, a next step), in order."""
    import re

    return [m.strip().rstrip(".") for m in re.findall(r"(cascade (?:trigger|backfill|rerun|sweep)\b[^;,()]*)", text)]


def new_namespace() -> str:
    return "t" + uuid.uuid4().hex[:10]


def utc(y: int, m: int, d: int, h: int = 12) -> datetime:
    return datetime(y, m, d, h, tzinfo=timezone.utc)


def env_for(endpoints: Endpoints) -> dict[str, str]:
    env = dict(os.environ)
    env.update(endpoints.as_env())
    return env


class FakeClock:
    """An injected clock that only moves when a test says so (leases, republish delays)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        from datetime import timedelta
        self.now = self.now + timedelta(seconds=seconds)


def wide_pipeline(path: Path, width: int = 20) -> str:
    """A pipeline with ``width`` processors in phase 2 (trivial SQL) cascading to one in phase 3."""
    import yaml
    procs = [{"name": f"p{i:02d}", "phase": 2, "description": f"processor {i}",
              "output": {"table": f"wide.t{i:02d}", "date_column": "d", "keys": ["k"],
                         "columns": {"d": "DATE", "k": "INT64", "v": "INT64"}},
              "sql": f"SELECT @data_date AS d, {i} AS k, {i * 10} AS v"} for i in range(width)]
    procs.append({"name": "summary", "phase": 3, "description": "after all of phase 2",
                  "upstreams": [p["name"] for p in procs],
                  "output": {"table": "wide.summary", "date_column": "d", "keys": ["k"],
                             "columns": {"d": "DATE", "k": "INT64", "v": "INT64"}},
                  "sql": "SELECT @data_date AS d, 0 AS k, " + str(width) + " AS v"})
    raw = {"pipeline": "wide", "description": "concurrency test", "raw_bucket": "wide",
           "calendar": {"timezone": "UTC", "seasons": [{"name": "all", "start": "2020-01-01", "end": "2030-12-31"}]},
           "phases": [{"number": 2, "name": "fanout", "next": 3}, {"number": 3, "name": "fanin"}],
           "processors": procs}
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, every: float = 0.1) -> bool:
    """Wait on state: re-read it until ``predicate()`` holds (True) or ``timeout`` passes (False)."""
    import time
    deadline = time.monotonic() + timeout
    tick = __import__("threading").Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        tick.wait(every)
    return True
