"""Cascade: event-driven, date-partitioned, multi-phase data pipelines on Google Cloud.

The public API - what a pipeline's own code and a team's scripts use:

* ``PythonContext``  what a Python processor's callable receives (``def build(ctx: PythonContext)``):
                     the date, its window, ``ctx.read(table)`` of declared upstreams, ``ctx.log``
* ``load``           read and validate a definition (``load("pipeline.yaml")``) into a ``Pipeline``
* ``Pipeline``, ``Processor``, ``Upstream``, ``Calendar``  the definition's parts
* ``Trigger``        the message that asks a phase to run for a date
* ``Status``         the one status vocabulary (success, failed, blocked, stale, ...)
* ``TransientError``, ``PermanentError``  what a processor's callable raises to say how it failed:
                     retry later (``TransientError("source answered 503")``; ``quota=True`` for a
                     rate limit) or do not retry (``PermanentError("file of 2025-01-15 is truncated")``);
                     ``CascadeError`` is the root of every error Cascade raises

Everything else is the framework's inside, in folders by role (``runtime/`` - what the phase
functions run, ``definition/``, ``state/`` - the only code that talks to Firestore, ``ops/``,
``backfill/``, ``cli/``, ...); each module's docstring says what it owns. Names are imported on
first use, so ``import cascade`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "PythonContext": "cascade.runtime.processors.python_callable",
    "load": "cascade.definition.loading",
    "Pipeline": "cascade.definition.model",
    "Processor": "cascade.definition.model",
    "Upstream": "cascade.definition.model",
    "Calendar": "cascade.definition.calendar",
    "Trigger": "cascade.runtime.messages",
    "Status": "cascade.state.status",
    "CascadeError": "cascade.errors",
    "TransientError": "cascade.errors",
    "PermanentError": "cascade.errors",
}
__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from cascade.definition.calendar import Calendar
    from cascade.definition.loading import load
    from cascade.definition.model import Pipeline, Processor, Upstream
    from cascade.errors import CascadeError, PermanentError, TransientError
    from cascade.runtime.messages import Trigger
    from cascade.runtime.processors.python_callable import PythonContext
    from cascade.state.status import Status


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cascade' has no attribute {name!r}; the public API is {__all__}")
