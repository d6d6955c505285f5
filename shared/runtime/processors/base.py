"""The processor base: the interface every processor kind implements, and the kind registry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

from cascade.definition.model import Pipeline, Processor
from cascade.runtime.warehouse import Warehouse


@dataclass(frozen=True)
class RunContext:
    """What a processor may use while it runs one partition."""

    pipeline: Pipeline
    project: str
    warehouse: Warehouse
    storage: Any  # google.cloud.storage.Client, created lazily by the caller
    run_id: str
    fence: int = 0  # the run's write fence: every MERGE of this run carries it


class Executor(Protocol):
    def run(self, ctx: RunContext, proc: Processor, day: date) -> int:
        """Produce and MERGE ``proc``'s rows for ``day``; return the number of rows affected."""


def executor_for(proc: Processor) -> Executor:
    from cascade.runtime.processors.gcs_export import GcsJsonExport
    from cascade.runtime.processors.gcs_load import GcsJsonLoad
    from cascade.runtime.processors.python_callable import PythonProcessor
    from cascade.runtime.processors.sql_transform import SqlTransform

    # Processor kind (from the definition) -> executor.
    return {"gcs_json_load": GcsJsonLoad, "gcs_json_export": GcsJsonExport, "sql": SqlTransform,
            "python": PythonProcessor}[proc.kind]()
