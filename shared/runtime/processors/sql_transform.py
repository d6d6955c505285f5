"""SQL transform processors (phases 3+): MERGE the result of a declared SELECT for one date.

The SELECT gets ``@data_date`` and ``@window_start`` (``data_date`` minus the processor's lookback)
as parameters; its ``{dataset.table}`` placeholders were resolved from the definition.
"""

from __future__ import annotations

from datetime import date

from cascade.definition.model import Processor
from cascade.runtime.processors.base import RunContext


class SqlTransform:
    def run(self, ctx: RunContext, proc: Processor, day: date) -> int:
        return ctx.warehouse.merge_select(proc, day, ctx.run_id, ctx.fence)
