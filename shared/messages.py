"""The message contract: trigger and completion messages, parsed and validated at the boundary.

Data is a JSON object; attributes mirror the routing fields so subscriptions and people can see
them without decoding. A trigger asks a phase to run for a date::

    {"schema_version": 1, "pipeline": "nba", "phase": 2, "data_date": "2025-01-15",
     "processors": ["nbac_schedule"], "mode": "daily", "strict_mode": true,
     "skip_downstream_trigger": false, "correlation_id": "...", "generation": 0}

Only ``pipeline`` and ``phase`` are required; ``data_date`` defaults to yesterday in the pipeline's
time zone (``today`` for a phase declared ``default_date: today``, e.g. predictions). A completion (published by a phase when all its processors succeeded for a date) adds
``status``, ``processors`` (name -> {status, record_count, run_id}), ``run_ids`` and
``completed_at``; the next phase reads it as its own trigger. Unknown fields are ignored; a missing
or invalid required field is an ``InvalidMessageError`` (permanent: recorded and acknowledged).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from typing import Any, Mapping

from .calendar import parse_date
from .errors import InvalidMessageError
from .pipeline import Pipeline

SCHEMA_VERSION = 1
MODES = ("daily", "backfill")
EXAMPLE = '{"pipeline": "nba", "phase": 2, "data_date": "2025-01-15"}'


@dataclass(frozen=True)
class Trigger:
    """A request that ``phase`` of ``pipeline`` runs for ``data_date`` (optionally some processors)."""

    pipeline: str
    phase: int
    data_date: date
    processors: tuple[str, ...] = ()
    mode: str = "daily"
    strict_mode: bool = True
    skip_downstream_trigger: bool = False
    correlation_id: str = ""
    generation: int = 0

    @property
    def checks_enabled(self) -> bool:
        """Strict mode runs in daily mode unless switched off; backfill mode skips it."""
        return self.strict_mode and self.mode != "backfill"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data_date"] = self.data_date.isoformat()
        d["processors"] = list(self.processors)
        return {"schema_version": SCHEMA_VERSION, "kind": "trigger", **d}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode()

    def attributes(self) -> dict[str, str]:
        return _attributes(self.to_dict())

    def with_phase(self, phase: int, processors: tuple[str, ...] = ()) -> "Trigger":
        return replace(self, phase=phase, processors=processors)


@dataclass(frozen=True)
class Completion:
    """``phase`` finished every processor for ``data_date`` (published on the next phase's topic)."""

    trigger: Trigger
    status: str
    processors: dict[str, dict[str, Any]] = field(default_factory=dict)
    completed_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = self.trigger.to_dict()
        d.update(kind="completion", status=self.status, processors=self.processors,
                 run_ids=[v.get("run_id") for v in self.processors.values() if v.get("run_id")],
                 completed_at=self.completed_at)
        return d

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode()

    def attributes(self) -> dict[str, str]:
        return _attributes(self.to_dict())


def _attributes(d: Mapping[str, Any]) -> dict[str, str]:
    keys = ("kind", "pipeline", "phase", "data_date", "mode", "generation", "correlation_id")
    return {k: str(d[k]) for k in keys if d.get(k) not in (None, "")}


def new_correlation_id() -> str:
    return uuid.uuid4().hex[:16]


def parse(data: bytes | str | None, pipeline: Pipeline, phase: int, now: datetime) -> Trigger:
    """Parse a message delivered to ``phase``'s topic into the trigger that phase must run.

    A trigger for ``phase`` is returned as is; a completion of the phase that cascades into
    ``phase`` becomes a trigger for ``phase`` (all processors). ``now`` (timezone-aware) decides
    the default date: yesterday in the pipeline's time zone.

    Raises:
        InvalidMessageError: not JSON, not an object, a missing/invalid field, a date like
            2024-02-30, a message for another pipeline or phase.
        UnknownProcessorError: a processor this phase does not declare, or an unknown phase.
    """
    body = _json_object(data)
    version = body.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise InvalidMessageError(f"schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
    name = body.get("pipeline")
    if name != pipeline.name:
        raise InvalidMessageError(
            f"message is for pipeline {name!r} but this is pipeline {pipeline.name!r}; "
            f"set \"pipeline\": \"{pipeline.name}\"" if name is not None else
            f"missing required field \"pipeline\"; publish e.g. {EXAMPLE}")
    msg_phase = _int(body, "phase", required=True)
    pipeline.phase(msg_phase)  # UnknownProcessorError for a phase the pipeline does not declare
    is_completion = body.get("kind") == "completion" or "status" in body and isinstance(body.get("processors"), dict)
    raw_date = body.get("data_date")
    if raw_date is None and is_completion:
        raise InvalidMessageError("completion message without data_date")
    if raw_date is None:
        day = pipeline.calendar.default_date(pipeline.phase(phase).default_date, now)
    else:
        try:
            day = parse_date(raw_date)
        except (TypeError, ValueError) as exc:
            raise InvalidMessageError(f"data_date {raw_date!r} is not a valid date (YYYY-MM-DD): {exc}",
                                      field="data_date") from exc
    mode = body.get("mode", "daily")
    if mode not in MODES:
        raise InvalidMessageError(f"mode {mode!r} must be one of {list(MODES)}", field="mode")
    generation = _int(body, "generation", required=False, default=0)
    if generation < 0:
        raise InvalidMessageError("generation must be >= 0", field="generation")
    common = dict(pipeline=pipeline.name, data_date=day, mode=mode,
                  strict_mode=_bool(body, "strict_mode", True),
                  skip_downstream_trigger=_bool(body, "skip_downstream_trigger", False),
                  correlation_id=str(body.get("correlation_id") or new_correlation_id()),
                  generation=generation)
    if is_completion:
        if body.get("status") != "success":
            raise InvalidMessageError(f"completion of phase {msg_phase} has status {body.get('status')!r}, not 'success'")
        if pipeline.phase(msg_phase).next != phase:
            raise InvalidMessageError(
                f"completion of phase {msg_phase} was delivered to phase {phase}, which it does not cascade to")
        return Trigger(phase=phase, processors=(), **common)
    if msg_phase != phase:
        raise InvalidMessageError(
            f"trigger for phase {msg_phase} was published to phase {phase}'s topic; "
            f"publish it to {pipeline.topic(msg_phase)}", field="phase")
    procs = body.get("processors") or []
    if not isinstance(procs, list) or not all(isinstance(p, str) for p in procs):
        raise InvalidMessageError("processors must be a list of processor names", field="processors")
    for p in procs:
        if pipeline.processor(p).phase != phase:
            raise InvalidMessageError(f"processor {p!r} belongs to phase {pipeline.processor(p).phase}, not {phase}",
                                      processor=p)
    return Trigger(phase=phase, processors=tuple(dict.fromkeys(procs)), **common)


def _json_object(data: bytes | str | None) -> dict[str, Any]:
    if data is None or data == b"" or data == "":
        raise InvalidMessageError(f"message has no data; publish a JSON object such as {EXAMPLE}")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        preview = (data[:80] if isinstance(data, str) else data[:80].decode("utf-8", "replace"))
        raise InvalidMessageError(f"message data is not JSON ({exc.__class__.__name__}: {exc}); got {preview!r}; "
                                  f"publish a JSON object such as {EXAMPLE}") from exc
    if not isinstance(body, dict):
        raise InvalidMessageError(f"message data must be a JSON object such as {EXAMPLE}, got {type(body).__name__}")
    return body


def _int(body: Mapping[str, Any], key: str, required: bool, default: int = 0) -> int:
    if key not in body or body[key] is None:
        if required:
            raise InvalidMessageError(f"missing required field {key!r}; publish e.g. {EXAMPLE}", field=key)
        return default
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidMessageError(f"{key} must be an integer, got {value!r}", field=key)
    try:
        return int(value)
    except ValueError as exc:
        raise InvalidMessageError(f"{key} must be an integer, got {value!r}", field=key) from exc


def _bool(body: Mapping[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidMessageError(f"{key} must be true or false, got {value!r}", field=key)
