"""Cascade: event-driven, date-partitioned, multi-phase data pipelines on Google Cloud.

The public API - what a pipeline's own code and a team's scripts use:

* ``PythonContext``  what a Python processor's callable receives (``def build(ctx: PythonContext)``):
                     the date, its window, ``ctx.read(table)`` of declared upstreams, ``ctx.log``
* ``load``           read and validate a definition (``load("pipeline.yaml")``) into a ``Pipeline``
* ``Pipeline``, ``Processor``, ``Upstream``, ``Calendar``  the definition's parts
* ``Trigger``        the message that asks a phase to run for a date
* ``Status``         the one status vocabulary (success, failed, blocked, stale, ...)

Everything else is the framework's inside: the modules say what each owns (``pipeline``,
``messages``, ``tracking`` - the only module that talks to Firestore, ``warehouse`` - the only one
that talks to BigQuery, ``runner``, ``handoff``, ``freshness``, ``recovery``, ``cli``, ...).
Names are imported on first use, so ``import cascade`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "PythonContext": "cascade.runtime.processors.python_callable",
    "load": "cascade.definition.model",
    "Pipeline": "cascade.definition.model",
    "Processor": "cascade.definition.model",
    "Upstream": "cascade.definition.model",
    "Calendar": "cascade.definition.calendar",
    "Trigger": "cascade.runtime.messages",
    "Status": "cascade.state.status",
}
__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from cascade.definition.calendar import Calendar
    from cascade.runtime.messages import Trigger
    from cascade.definition.model import Pipeline, Processor, Upstream, load
    from cascade.runtime.processors.python_callable import PythonContext
    from cascade.state.status import Status


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cascade' has no attribute {name!r}; the public API is {__all__}")
