"""The BigQuery jobs of a run: its scope (byte cap, timeout, deterministic write-job ids), the
statistics jobs add up to, and which statements only read.

A run's jobs are sent inside ``Warehouse.run_scope``; ``JobScope`` is what that scope carries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable

from cascade.errors import PermanentError, ProcessorError
from cascade.runtime.cost import JobCost


@dataclass
class JobStats:
    """BigQuery jobs sent by this process and the seconds spent waiting on them (for benchmarks), and
    what they cost: bytes processed and billed, slot milliseconds (zeros on the local engine)."""

    jobs: int = 0
    seconds: float = 0.0
    bytes_processed: int = 0
    bytes_billed: int = 0
    slot_ms: int = 0

    def cost(self) -> JobCost:
        return JobCost(self.jobs, self.bytes_processed, self.bytes_billed, self.slot_ms)


WarehouseStats = JobStats

# The phase functions' timeout (infra/terraform variables.tf ``function_timeout_seconds``: default and
# maximum 540 s). A run's BigQuery job may take what is left of it after the run's other steps (lease,
# checks, gates, record): a job still running then is cancelled instead of outliving its function.
FUNCTION_TIMEOUT_S = 540
DEFAULT_JOB_TIMEOUT_S = FUNCTION_TIMEOUT_S - 60


class JobTimeoutError(ProcessorError, PermanentError):
    """A run's BigQuery job ran past its processor's timeout: it was cancelled and nothing was recorded
    as written. Retrying runs into the same timeout, so the partition fails with the reason and the fix."""


@dataclass
class JobScope:
    """The BigQuery jobs of one run (one partition at one fence), on the thread running it.

    Inside ``Warehouse.run_scope`` every job the run sends (its write, the quality gates' reads) carries
    the processor's ``maximum_bytes_billed``, is waited on at most ``timeout_s`` and is cancelled when
    ``should_stop()`` says the lease was lost; its statistics add up in ``cost``. The run's write jobs
    get deterministic ids (``job_base`` + ``_f<fence>``), so a redelivery that takes over a crashed run
    finds the job that run started and re-attaches to it while it still runs, instead of starting a
    second one beside it."""

    job_base: str  # cascade_<pipeline>_<namespace>_<processor>_<yyyymmdd>_g<generation>
    fence: int
    timeout_s: float
    maximum_bytes_billed: int | None = None
    should_stop: Callable[[], bool] = lambda: False
    processor: str = ""
    phase: int = 0
    day: date = date.min
    cost: JobCost = field(default_factory=JobCost)
    writes: int = 0
    attached: list[str] = field(default_factory=list)  # ids of earlier runs' jobs this run re-attached to

    def write_job_id(self, fence: int, n: int) -> str:
        return f"{self.job_base}_f{fence}" + (f"_w{n}" if n > 1 else "")



# A statement that only reads (the gates', the checks'): any job id, never re-attached.
_READ = re.compile(r"^\s*(?:(?:--|#)[^\n]*\n\s*|/\*.*?\*/\s*)*(?:SELECT|WITH|\()", re.IGNORECASE | re.DOTALL)
# Query parameters that differ between two runs doing the same work.
_RUN_PARAMS = frozenset({"run_id", "fence"})


def _params(job_or_config: Any, skip: frozenset[str] = frozenset()) -> list[Any]:
    """A job's (or a job config's) query parameters as API data, for comparing two jobs' work."""
    return [p.to_api_repr() for p in (getattr(job_or_config, "query_parameters", None) or [])
            if getattr(p, "name", None) not in skip]

