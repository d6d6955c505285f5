"""BigQuery, behind one gateway: the ``Warehouse`` (``base``), the jobs of a run (``jobs``), the
tables against their definition (``schema``), the SQL text (``sql``) and the MERGE's refusal of a
source (``refusal``). Nothing else in Cascade talks to BigQuery.
"""

from cascade.runtime.warehouse.base import STAGE_ABOVE_ROWS, Warehouse, gexc
from cascade.runtime.warehouse.jobs import (
                                            DEFAULT_JOB_TIMEOUT_S,
                                            FUNCTION_TIMEOUT_S,
                                            JobScope,
                                            JobStats,
                                            JobTimeoutError,
                                            WarehouseStats,
)
from cascade.runtime.warehouse.refusal import refused_source
from cascade.runtime.warehouse.schema import (
                                            ColumnChange,
                                            SchemaChangeError,
                                            rebuild_commands,
                                            rebuild_message,
                                            schema_of,
)
from cascade.runtime.warehouse.sql import confinement_check

__all__ = ["Warehouse", "JobStats", "WarehouseStats", "JobScope", "JobTimeoutError", "ColumnChange", "SchemaChangeError", "schema_of", "gexc", "STAGE_ABOVE_ROWS", "FUNCTION_TIMEOUT_S",
           "DEFAULT_JOB_TIMEOUT_S", "rebuild_commands", "rebuild_message", "refused_source", "confinement_check"]
