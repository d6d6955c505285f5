"""The one errors module: a root ``CascadeError`` and flat subclasses named by what failed.

Each error carries context (date, phase, processor, next step) so that whoever catches it can log,
record and alert with an actionable message. Two families decide delivery semantics:

* ``PermanentError`` subclasses: retrying cannot help (malformed message, unknown processor,
  impossible date). The message is recorded and acknowledged.
* ``TransientError``: retrying may help (5xx, deadline, Firestore ABORTED, BigQuery's concurrent-DML
  conflict, a check whose query errored). The function raises so Pub/Sub redelivers.

A Python processor's callable may raise either to say what its failure is: ``TransientError`` ("the
API I read answered 503: try again later"; ``quota=True`` for a rate limit) or ``PermanentError``
("this date's input is unusable: do not retry"). Both are part of the public API (``from cascade
import TransientError``); anything else it raises fails the partition, classified by what it chains.

``classify`` decides for any exception (transient, quota or permanent) by its type and a Google API
error's ``reason``, never by the text of user code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class CascadeError(Exception):
    """Root of every error Cascade raises on purpose."""

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = {k: v for k, v in context.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": self.message, **{k: _plain(v) for k, v in self.context.items()}}


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class PermanentError(CascadeError):
    """Retrying cannot help: record, log, acknowledge."""


class InvalidMessageError(PermanentError):
    """A Pub/Sub message that does not follow the message contract."""


class UnknownProcessorError(PermanentError):
    """A message named a processor or phase the pipeline definition does not declare."""


class DefinitionError(CascadeError):
    """The pipeline definition itself is inconsistent (raised at load time, never at run time)."""


class TransientError(CascadeError):
    """Retrying may help: the function raises so that Pub/Sub redelivers with backoff."""


class ProcessorError(CascadeError):
    """A processor failed for a date (its cause is chained with ``raise ... from``)."""


class EmptySourceError(ProcessorError, PermanentError):
    """A processor produced no rows for a date the calendar expects data on (and does not declare
    ``allow_empty``): refused, existing rows kept (data is never replaced with nothing)."""


class InputMissingError(ProcessorError, PermanentError):
    """A backfill-mode run found an input it needs missing (a same-date upstream, lookback history
    outside the backfill's range): the partition fails with the reason instead of running on less."""


class InvalidSourceError(ProcessorError, PermanentError):
    """A source file the processor cannot load as declared (a value not of its column's type, duplicate
    keys): retrying cannot help; the file must be fixed and the phase re-triggered."""


class LeaseHeldError(CascadeError):
    """Another run holds the lease on this partition (or on this backfill)."""


class LeaseLostError(CascadeError):
    """This run's lease was taken over after it expired: the run must not record its result."""


class DependencyError(CascadeError):
    """A strict-mode check blocked the run (blocked is never success)."""


@dataclass(frozen=True)
class Blocked:
    """Structured reason a partition was blocked, as recorded and alerted."""

    check: str
    upstream: str
    dates: list[str] = field(default_factory=list)
    detail: str = ""
    resolution: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "upstream": self.upstream, "dates": list(self.dates),
                "detail": self.detail, "resolution": self.resolution}


class PythonImportError(ProcessorError, PermanentError):
    """The callable named by ``python: module:attribute`` cannot be imported (or is not callable)."""


class InvalidRowsError(ProcessorError, PermanentError):
    """A Python processor returned rows that do not fit its declared output table."""


class UndeclaredReadError(ProcessorError, PermanentError):
    """A Python processor read a table that is not a declared upstream, or outside its declared window."""


class PythonProcessorError(ProcessorError):
    """A Python processor's callable raised: the message carries its traceback; transient only if its
    cause is."""


class CrashLoopError(PermanentError):
    """A partition whose runs keep stopping without recording an outcome (each lease expired: the
    process crashed, was killed or ran out of memory) was given up on after ``max_attempts``."""


# ---------------------------------------------------------------------- classification
# What a failure is decides what happens next: ``transient`` is retried with backoff (Pub/Sub
# redelivery, the backfill's bounded retries), ``quota`` is retried more slowly and never spends
# attempts (a backfill also lowers its concurrency), ``permanent`` is recorded, alerted and
# acknowledged. The decision reads exception *types* (ours, google.api_core's, the network's) and
# the structured ``reason`` of a Google API error (BigQuery's ``errors[0]["reason"]``) - never the
# text of an exception raised by user code: a Python processor raising ``KeyError('aborted')`` is
# permanent.
TRANSIENT, QUOTA, PERMANENT = "transient", "quota", "permanent"

# BigQuery (and other Google APIs) ``reason`` values, as documented in BigQuery's error table.
QUOTA_REASONS = frozenset({"quotaExceeded", "rateLimitExceeded", "jobRateLimitExceeded", "userRateLimitExceeded",
                           "resourceExhausted"})
TRANSIENT_REASONS = frozenset({"backendError", "internalError", "jobBackendError", "jobInternalError",
                               "tableUnavailable", "badGateway", "serviceUnavailable", "aborted"})
PERMANENT_REASONS = frozenset({"invalid", "invalidQuery", "notFound", "duplicate", "accessDenied",
                               "billingNotEnabled", "billingTierLimitExceeded", "blocked", "notImplemented",
                               "policyViolation", "resourceInUse", "resourcesExceeded", "responseTooLarge",
                               "stopped", "invalidUser"})
# A concurrent-DML conflict is reported with reason ``invalidQuery``; only its message tells it
# apart, so for an API error with that reason (never for any other exception) the service's own
# message is matched: BigQuery's two wordings, and the local emulator's (bqemulator maps DuckDB's
# ``TransactionException`` - "TransactionContext Error: Conflict on update!", "... Conflict on
# tuple deletion!", "Catalog write-write conflict ..." - to ``invalidQuery`` "Query execution
# failed: ...").
_CONFLICT_MESSAGES = ("could not serialize access", "aborted due to concurrent update",
                      "transactioncontext error: conflict", "write-write conflict")


def api_reason(exc: BaseException) -> str:
    """The first structured ``reason`` of a Google API error (``errors[0]["reason"]``), or ""."""
    errors = getattr(exc, "errors", None)
    if not errors:
        return ""
    first = errors[0]
    if isinstance(first, dict):
        return str(first.get("reason") or "")
    return str(getattr(first, "reason", "") or "")


def classify(exc: BaseException) -> str:
    """``transient``, ``quota`` or ``permanent`` for ``exc`` (by type and API reason; see above).

    Cascade's own wrappers that are neither (``ProcessorError`` and the like) are classified by
    the exception they chain (``raise ... from``); anything unknown is permanent."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        kind = _classify_one(current)
        if kind is not None:
            return kind
        current = current.__cause__
    return PERMANENT


def _classify_one(exc: BaseException) -> str | None:
    """The kind of ``exc`` itself, or None when only what it chains can tell."""
    from google.api_core import exceptions as gexc  # local import keeps this module light

    if isinstance(exc, TransientError):
        return QUOTA if exc.context.get("quota") else TRANSIENT
    if isinstance(exc, PermanentError):
        return PERMANENT
    if isinstance(exc, CascadeError):
        return None  # a wrapper: its cause decides
    if isinstance(exc, gexc.GoogleAPICallError):
        reason = api_reason(exc)
        if reason in QUOTA_REASONS:
            return QUOTA
        if reason in TRANSIENT_REASONS:
            return TRANSIENT
        if reason == "invalidQuery" and any(m in (getattr(exc, "message", "") or "").lower()
                                            for m in _CONFLICT_MESSAGES):
            return TRANSIENT  # a concurrent-DML conflict: the MERGE is idempotent, run it again
        if reason in PERMANENT_REASONS:
            return PERMANENT
        if isinstance(exc, gexc.TooManyRequests):  # 429, gRPC RESOURCE_EXHAUSTED
            return QUOTA
        if isinstance(exc, gexc.MethodNotImplemented):
            return PERMANENT
        if isinstance(exc, (gexc.ServerError, gexc.Aborted, gexc.Cancelled)):  # 5xx, DEADLINE_EXCEEDED, ABORTED
            return TRANSIENT
        return PERMANENT  # other 4xx: the request itself is wrong
    if isinstance(exc, (gexc.RetryError, ConnectionError, TimeoutError)):
        return TRANSIENT
    try:
        import requests

        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return TRANSIENT
    except ImportError:  # pragma: no cover
        pass
    try:
        from google.auth.exceptions import TransportError

        if isinstance(exc, TransportError):
            return TRANSIENT
    except ImportError:  # pragma: no cover
        pass
    return None


def is_transient(exc: BaseException) -> bool:
    """True when retrying ``exc`` later may succeed (``classify``: transient or quota)."""
    return classify(exc) != PERMANENT


def is_quota(exc: BaseException) -> bool:
    """True when ``exc`` is a quota or rate limit (retried slowly, never spending attempts)."""
    return classify(exc) == QUOTA
