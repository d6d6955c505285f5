"""Processor kinds: how one partition (processor x date) produces its output rows.

``executor_for(processor)`` picks the kind from the definition: a ``source`` (raw files in GCS)
or ``sql`` (a SELECT over upstream tables). Every kind ends in one MERGE of the date partition.
"""

from .base import Executor, RunContext, executor_for

__all__ = ["Executor", "RunContext", "executor_for"]
