"""Processor kinds: how one partition (processor x date) produces its output rows.

``executor_for(processor)`` picks the kind from the definition: a ``source`` (raw files in GCS),
``sql`` (a SELECT over upstream tables), ``python`` (a callable returning rows) or ``export`` (a
JSON file in GCS plus its manifest row). Every kind ends in one fenced MERGE of the date partition.
"""

from cascade.runtime.processors.base import Executor, RunContext, executor_for

__all__ = ["Executor", "RunContext", "executor_for"]
