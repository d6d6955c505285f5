"""The message contract: trigger and completion messages, parsed and validated at the boundary.

Data is a JSON object; attributes mirror the routing fields so subscriptions and people can see
them without decoding. A trigger asks a phase to run for a date::

    {"schema_version": 1, "pipeline": "nba", "phase": 2, "data_date": "2025-01-15",
     "processors": ["nbac_schedule"], "mode": "daily", "strict_mode": true,
     "skip_downstream_trigger": false, "correlation_id": "..."}

Only ``pipeline`` and ``phase`` are required; ``data_date`` defaults to yesterday in the pipeline's
time zone (``today`` for a phase declared ``default_date: today``, e.g. predictions). A completion (published by a phase when all its processors succeeded for a date) adds
``status``, ``processors`` (name -> {status, record_count, run_id}), ``run_ids`` and
``completed_at``; the next phase reads it as its own trigger. Unknown fields are ignored; a missing
or invalid required field is an ``InvalidMessageError`` (permanent: recorded and acknowledged).

Every field is bounded at the boundary, so whatever is derived from a message (Firestore fields,
Pub/Sub attributes of at most 1024 bytes each, the completion of the next phase) always fits:

=========================  ==================================================================
field                      accepted
=========================  ==================================================================
(whole payload)            at most ``MAX_PAYLOAD_BYTES`` (64 KiB) of UTF-8 JSON, an object
``schema_version``         ``1``
``kind``                   ``"trigger"`` or ``"completion"`` (optional)
``pipeline``               this pipeline's name (at most ``MAX_NAME_LENGTH`` = 64 characters)
``phase``                  an integer naming a declared phase
``data_date``              a ``YYYY-MM-DD`` string (10 characters), a real date
``processors`` (trigger)   a list of at most ``MAX_PROCESSORS`` (100) names of this phase
``processors`` (completion) an object of at most ``MAX_PROCESSORS`` entries, name -> object
``run_ids``                a list of at most ``MAX_PROCESSORS`` strings of at most
                           ``MAX_RUN_ID_LENGTH`` (128) characters
``mode``                   ``"daily"`` or ``"backfill"``
``strict_mode``,           ``true``/``false`` (or the strings ``"true"``/``"false"``)
``skip_downstream_trigger``
``correlation_id``         at most ``MAX_CORRELATION_ID_LENGTH`` (128) characters of
                           ``A-Z a-z 0-9 . _ : @ / + -`` (empty or absent: a new one is made)
``generation``             an integer in ``0..MAX_GENERATION`` (2**53 - 1: exact in JSON
                           numbers and in Firestore's int64). Absent (or null) in a trigger:
                           "make it complete and fresh" at whatever generation the date is at
                           (completions always carry the generation they completed)
``status``                 ``"success"`` (completion)
``completed_at``           a string of at most ``MAX_TIMESTAMP_LENGTH`` (64) characters
=========================  ==================================================================

A date-less trigger takes its date from the message's publish time (``published``), so a replay
days later still runs the date its publisher meant.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from typing import Any, Mapping

from cascade.definition.calendar import parse_date
from cascade.definition.model import Pipeline
from cascade.errors import InvalidMessageError
from cascade.state.status import Status

SCHEMA_VERSION = 1
MODES = ("daily", "backfill")
KINDS = ("trigger", "completion")
EXAMPLE = '{"pipeline": "nba", "phase": 2, "data_date": "2025-01-15"}'

# Bounds of the message contract (see the table in the module docstring).
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_NAME_LENGTH = 64
MAX_PROCESSORS = 100
MAX_RUN_ID_LENGTH = 128
MAX_CORRELATION_ID_LENGTH = 128
MAX_GENERATION = 2**53 - 1
MAX_TIMESTAMP_LENGTH = 64
CORRELATION_ID_PATTERN = re.compile(r"[A-Za-z0-9._:@/+-]+")
# Pub/Sub's limits on message attributes (what ``_attributes`` derives always fits them).
MAX_ATTRIBUTE_KEY_BYTES = 256
MAX_ATTRIBUTE_VALUE_BYTES = 1024
MAX_ATTRIBUTES = 100
# A rejected message is recorded with its payload cut to this many bytes (and its original size),
# its attributes cut to Pub/Sub's limits: a record always fits Firestore's 1 MiB document.
MAX_RECORDED_BYTES = 16 * 1024


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
    # None: an intent ("make this phase/processor/date complete and fresh", whatever generation the
    # date is at), resolved by the phase (``handoff.resolve_intent``); an int: that generation's work
    # (completions, reruns, backfills), deduped on it.
    generation: int | None = None

    @property
    def is_intent(self) -> bool:
        return self.generation is None

    @property
    def checks_enabled(self) -> bool:
        """Strict mode runs in daily mode unless switched off; backfill mode skips it."""
        return self.strict_mode and self.mode != "backfill"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data_date"] = self.data_date.isoformat()
        d["processors"] = list(self.processors)
        if self.generation is None:
            del d["generation"]
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


# Message fields mirrored as Pub/Sub attributes.
_ATTRIBUTE_KEYS = ("kind", "pipeline", "phase", "data_date", "mode", "generation", "correlation_id")


def _attributes(d: Mapping[str, Any]) -> dict[str, str]:
    """The routing fields as Pub/Sub attributes, each value cut to Pub/Sub's 1024-byte limit (a
    parsed message is within the contract's bounds already; this guards triggers built in code)."""
    return {k: truncate_utf8(str(d[k]), MAX_ATTRIBUTE_VALUE_BYTES) for k in _ATTRIBUTE_KEYS
            if d.get(k) not in (None, "")}


def truncate_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` bytes of UTF-8, never inside a character."""
    return text.encode("utf-8", "replace")[:max_bytes].decode("utf-8", "ignore")


def new_correlation_id() -> str:
    return uuid.uuid4().hex[:16]


def parse(data: bytes | str | None, pipeline: Pipeline, phase: int, now: datetime) -> Trigger:
    """Parse a message delivered to ``phase``'s topic into the trigger that phase must run.

    A trigger for ``phase`` is returned as is; a completion of the phase that cascades into
    ``phase`` becomes a trigger for ``phase`` (all processors). ``now`` (timezone-aware; the entry
    point passes the message's publish time) decides the default date: yesterday in the pipeline's
    time zone, e.g. a date-less trigger published at 2025-01-16T11:00Z runs 2025-01-15 in New York.

    Raises:
        InvalidMessageError: not JSON, not an object, a missing/invalid field, a field beyond its
            bound (see the module docstring), a date like 2024-02-30, a message for another
            pipeline or phase.
        UnknownProcessorError: a processor this phase does not declare, or an unknown phase.
    """
    body = _json_object(data)
    version = body.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise InvalidMessageError(f"schema_version {_show(version)} is not supported (expected {SCHEMA_VERSION})",
                                  field="schema_version")
    kind = body.get("kind")
    if kind is not None and kind not in KINDS:
        raise InvalidMessageError(f"kind {_show(kind)} must be one of {list(KINDS)} (or absent)", field="kind")
    name = body.get("pipeline")
    if name != pipeline.name:
        raise InvalidMessageError(
            f"message is for pipeline {_show(name)} but this is pipeline {pipeline.name!r}; "
            f"set \"pipeline\": \"{pipeline.name}\"" if name is not None else
            f"missing required field \"pipeline\"; publish e.g. {EXAMPLE}", field="pipeline")
    msg_phase = _int(body, "phase", required=True)
    pipeline.phase(msg_phase)  # UnknownProcessorError for a phase the pipeline does not declare
    is_completion = kind == "completion" or kind is None and "status" in body and isinstance(body.get("processors"), dict)
    raw_date = body.get("data_date")
    if raw_date is None and is_completion:
        raise InvalidMessageError("completion message without data_date", field="data_date")
    if raw_date is None:
        day = pipeline.calendar.default_date(pipeline.phase(phase).default_date, now)
    else:
        try:
            day = parse_date(raw_date)
        except (TypeError, ValueError) as exc:
            raise InvalidMessageError(f"data_date {_show(raw_date)} is not a valid date (YYYY-MM-DD)",
                                      field="data_date") from exc
    mode = body.get("mode", "daily")
    if mode not in MODES:
        raise InvalidMessageError(f"mode {_show(mode)} must be one of {list(MODES)}", field="mode")
    generation = None if body.get("generation") is None else _int(body, "generation", required=False)
    if generation is not None and not 0 <= generation <= MAX_GENERATION:
        raise InvalidMessageError(f"generation {_show(generation)} must be an integer from 0 to {MAX_GENERATION} "
                                  f"(2**53 - 1)", field="generation")
    common = dict(pipeline=pipeline.name, data_date=day, mode=mode,
                  strict_mode=_bool(body, "strict_mode", True),
                  skip_downstream_trigger=_bool(body, "skip_downstream_trigger", False),
                  correlation_id=_correlation_id(body.get("correlation_id")),
                  generation=generation)
    if is_completion:
        _check_completion(body, msg_phase)
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
    _check_names(procs, "processors")
    for p in procs:
        if pipeline.processor(p).phase != phase:
            raise InvalidMessageError(f"processor {p!r} belongs to phase {pipeline.processor(p).phase}, not {phase}",
                                      processor=p)
    return Trigger(phase=phase, processors=tuple(dict.fromkeys(procs)), **common)


def _json_object(data: bytes | str | None) -> dict[str, Any]:
    if data is None or data == b"" or data == "":
        raise InvalidMessageError(f"message has no data; publish a JSON object such as {EXAMPLE}")
    size = len(data.encode("utf-8", "replace") if isinstance(data, str) else data)
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidMessageError(f"message data is {size} bytes; at most {MAX_PAYLOAD_BYTES} bytes are accepted "
                                  f"(a trigger is a small JSON object such as {EXAMPLE})", size=size)
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        preview = (data[:80] if isinstance(data, str) else data[:80].decode("utf-8", "replace"))
        detail = "nested too deeply" if isinstance(exc, RecursionError) else f"{exc.__class__.__name__}: {exc}"
        raise InvalidMessageError(f"message data is not JSON ({detail}); got {preview!r}; "
                                  f"publish a JSON object such as {EXAMPLE}") from exc
    if not isinstance(body, dict):
        raise InvalidMessageError(f"message data must be a JSON object such as {EXAMPLE}, got {type(body).__name__}")
    return body


def _check_completion(body: Mapping[str, Any], msg_phase: int) -> None:
    """The completion-only fields: ``status``, ``processors`` (name -> object), ``run_ids``, ``completed_at``."""
    if body.get("status") != Status.SUCCESS:
        raise InvalidMessageError(f"completion of phase {msg_phase} has status {_show(body.get('status'))}, "
                                  f"not 'success'", field="status")
    procs = body.get("processors") or {}
    if not isinstance(procs, dict) or not all(isinstance(v, dict) for v in procs.values()):
        raise InvalidMessageError("completion processors must be an object of processor name -> "
                                  "{status, record_count, run_id}", field="processors")
    _check_names(list(procs), "processors")
    run_ids = body.get("run_ids") or []
    if (not isinstance(run_ids, list) or len(run_ids) > MAX_PROCESSORS
            or not all(isinstance(r, str) and len(r) <= MAX_RUN_ID_LENGTH for r in run_ids)):
        raise InvalidMessageError(f"run_ids must be a list of at most {MAX_PROCESSORS} strings of at most "
                                  f"{MAX_RUN_ID_LENGTH} characters", field="run_ids")
    completed_at = body.get("completed_at") or ""
    if not isinstance(completed_at, str) or len(completed_at) > MAX_TIMESTAMP_LENGTH:
        raise InvalidMessageError(f"completed_at must be a timestamp string of at most {MAX_TIMESTAMP_LENGTH} "
                                  f"characters, got {_show(completed_at)}", field="completed_at")


def _check_names(names: list[str], key: str) -> None:
    if len(names) > MAX_PROCESSORS:
        raise InvalidMessageError(f"{key} names {len(names)} processors; at most {MAX_PROCESSORS} are accepted "
                                  f"(omit {key} to run every processor of the phase)", field=key)
    long = next((n for n in names if len(n) > MAX_NAME_LENGTH), None)
    if long is not None:
        raise InvalidMessageError(f"processor name {_show(long)} is longer than {MAX_NAME_LENGTH} characters; "
                                  f"name a processor the pipeline declares", field=key)


def _correlation_id(value: Any) -> str:
    if value is None or value == "":
        return new_correlation_id()
    if (not isinstance(value, str) or len(value) > MAX_CORRELATION_ID_LENGTH
            or not CORRELATION_ID_PATTERN.fullmatch(value)):
        raise InvalidMessageError(
            f"correlation_id {_show(value)} must be a string of 1 to {MAX_CORRELATION_ID_LENGTH} characters from "
            f"A-Z a-z 0-9 . _ : @ / + - (or absent: a new one is made)", field="correlation_id")
    return value


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about unbounded input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _int(body: Mapping[str, Any], key: str, required: bool, default: int = 0) -> int:
    if key not in body or body[key] is None:
        if required:
            raise InvalidMessageError(f"missing required field {key!r}; publish e.g. {EXAMPLE}", field=key)
        return default
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, (int, str)) or isinstance(value, str) and len(value) > 20:
        raise InvalidMessageError(f"{key} must be an integer, got {_show(value)}", field=key)
    try:
        number = int(value)
    except ValueError as exc:
        raise InvalidMessageError(f"{key} must be an integer, got {_show(value)}", field=key) from exc
    if not -2**63 <= number < 2**63:
        raise InvalidMessageError(f"{key} {_show(number)} is out of range (a 64-bit integer)", field=key)
    return number


def _bool(body: Mapping[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidMessageError(f"{key} must be true or false, got {_show(value)}", field=key)
