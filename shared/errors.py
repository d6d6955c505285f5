"""The one errors module: a root ``CascadeError`` and flat subclasses named by what failed.

Each error carries context (date, phase, processor, next step) so that whoever catches it can log,
record and alert with an actionable message. Two families decide delivery semantics:

* ``PermanentError`` subclasses: retrying cannot help (malformed message, unknown processor,
  impossible date). The message is recorded and acknowledged.
* ``TransientError``: retrying may help (5xx, deadline, Firestore ABORTED, BigQuery "could not
  serialize access", a check whose query errored). The function raises so Pub/Sub redelivers.
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
    ``allow_empty``): refused, existing rows kept (invariant 9: never replace data with nothing)."""


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
    """A strict-mode check blocked the run (invariant 3: blocked is not success)."""


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


# Text fragments of errors that are transient although their type does not say so: BigQuery's
# concurrent-DML conflict and Firestore contention surface as generic 400/409 errors.
_TRANSIENT_FRAGMENTS = (
    "could not serialize access",
    "concurrent update",
    "too many dml statements outstanding",
    "aborted",
    "deadline exceeded",
    "rate limit",
    "temporarily unavailable",
    "connection reset",
    "connection refused",
)


def is_transient(exc: BaseException) -> bool:
    """True when retrying ``exc`` later may succeed (5xx, deadline, ABORTED, DML conflict, network)."""
    from google.api_core import exceptions as gexc  # local import keeps this module light

    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, PermanentError):
        return False
    if isinstance(exc, (gexc.ServerError, gexc.Aborted, gexc.DeadlineExceeded, gexc.TooManyRequests,
                        gexc.ServiceUnavailable, gexc.RetryError, ConnectionError, TimeoutError)):
        return True
    try:
        import requests

        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return True
    except ImportError:  # pragma: no cover
        pass
    text = str(exc).lower()
    if any(fragment in text for fragment in _TRANSIENT_FRAGMENTS):
        return True
    cause = exc.__cause__
    return cause is not None and cause is not exc and is_transient(cause)
