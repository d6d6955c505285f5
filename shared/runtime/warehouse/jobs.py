"""The BigQuery jobs Cascade sends: a run's scope (byte cap, timeout, deterministic write-job ids),
how a job is sent and waited on (``JobRunner``), the statistics jobs add up to, and which statements
only read.

A run's jobs are sent inside ``Warehouse.run_scope`` (``JobRunner.scope``); ``JobScope`` is what that
scope carries. Only the ``Warehouse`` uses a ``JobRunner``: the SQL it sends is the warehouse's.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable, Iterator

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import bigquery

from cascade.definition.model import Pipeline, Processor
from cascade.errors import LeaseLostError, PermanentError, ProcessorError
from cascade.runtime.cost import JobCost, of_job


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


class JobRunner:
    """Sends the query jobs of one pipeline's warehouse and waits for them. Outside a run: bounded by
    the API deadline. Inside a run's ``scope``: with the processor's byte cap, waited on in short polls
    up to its job timeout (the run's heartbeat thread renews the lease meanwhile), cancelled on timeout
    or a lost lease, a write job under its deterministic id - re-attached by the run that takes over a
    crashed one. Every job's time and cost add up in ``stats`` (and in the run's scope)."""

    def __init__(self, client: bigquery.Client, pipeline: Pipeline, timeout: float) -> None:
        self.client = client
        self.pipeline = pipeline
        self.timeout = timeout
        self.stats = JobStats()
        self.lock = threading.Lock()
        self.retry = Retry(deadline=timeout)
        self._local = threading.local()  # the run scope of the thread (``scope``)
        self._tick = threading.Event()  # never set: paces the polls of a running job

    def job_base(self, proc: Processor, day: date, generation: int) -> str:
        """The deterministic id stem of ``proc``'s jobs for ``day`` at ``generation`` (a run's write job
        adds ``_f<fence>``): ``cascade_<pipeline>_<namespace>_<processor>_<yyyymmdd>_g<generation>``."""
        parts = ["cascade", self.pipeline.name, self.pipeline.namespace, proc.name, day.strftime("%Y%m%d"),
                 f"g{generation}"]
        return re.sub(r"[^A-Za-z0-9_-]", "_", "_".join(p for p in parts if p))[:900]

    @contextmanager
    def scope(self, proc: Processor, day: date, generation: int, fence: int,
                  should_stop: Callable[[], bool] = lambda: False) -> Iterator[JobScope]:
        """Every job sent on this thread inside the block belongs to one run (see ``JobScope``)."""
        scope = JobScope(self.job_base(proc, day, generation), fence,
                         float(proc.job_timeout_seconds or DEFAULT_JOB_TIMEOUT_S), proc.maximum_bytes_billed,
                         should_stop, processor=proc.name, phase=proc.phase, day=day)
        outer = getattr(self._local, "scope", None)
        self._local.scope = scope
        try:
            yield scope
        finally:
            self._local.scope = outer

    def run(self, sql: str, params: list) -> bigquery.QueryJob:
        """Send one query job and wait for it. Outside a run: as long as the API deadline allows.
        Inside a run's scope: with the processor's byte cap, waited on in short polls up to its job
        timeout, cancelled on timeout or lost lease; a write job under its deterministic id."""
        scope: JobScope | None = getattr(self._local, "scope", None)
        config = bigquery.QueryJobConfig(query_parameters=params)
        if scope is not None and scope.maximum_bytes_billed:
            config.maximum_bytes_billed = scope.maximum_bytes_billed
        started = time.perf_counter()
        job = None
        try:
            if scope is None:
                job = self.client.query(sql, job_config=config, retry=self.retry, timeout=self.timeout)
                job.result(timeout=self.timeout)
                return job
            job = self._start(scope, sql, config)
            self._wait(job, scope)
            return job
        finally:
            cost = of_job(job) if job is not None else JobCost(jobs=1)
            with self.lock:
                self.stats.jobs += 1
                self.stats.seconds += time.perf_counter() - started
                self.stats.bytes_processed += cost.bytes_processed
                self.stats.bytes_billed += cost.bytes_billed
                self.stats.slot_ms += cost.slot_ms
            if scope is not None:
                scope.cost.add(cost)

    def _start(self, scope: JobScope, sql: str, config: bigquery.QueryJobConfig) -> Any:
        """Insert the job (a read: any id; a write: the run's deterministic id, or the still-running
        write job of the run this one took over, when it does the same work)."""
        if _READ.match(sql):
            return self.client.query(sql, job_config=config, retry=self.retry, timeout=self.timeout)
        scope.writes += 1
        job_id = scope.write_job_id(scope.fence, scope.writes)
        if scope.fence > 1:
            running = self._previous_write(scope, sql, config)
            if running is not None:
                return running
        try:
            return self.client.query(sql, job_config=config, job_id=job_id, job_retry=None, retry=self.retry,
                                     timeout=self.timeout)
        except gexc.Conflict:
            # The id exists: our own insert went through before its answer was lost (the API retry
            # re-sent it) - wait on that job; or the id belongs to a partition state that was reset
            # (fences restart): that job is not ours, send ours under a fresh suffix.
            existing = self.client.get_job(job_id, retry=self.retry, timeout=self.timeout)
            if _params(existing) == _params(config):
                return existing
            return self.client.query(sql, job_config=config, job_id=f"{job_id}_{uuid.uuid4().hex[:8]}",
                                     job_retry=None, retry=self.retry, timeout=self.timeout)

    def _previous_write(self, scope: JobScope, sql: str, config: bigquery.QueryJobConfig) -> Any | None:
        """The write job of the run this one took over (fence - 1), if it is still running: re-attached
        when it does this run's work (same statement, same parameters but run id and fence), else
        cancelled and waited out - never two write jobs of one partition at once."""
        prev_id = scope.write_job_id(scope.fence - 1, scope.writes)
        try:
            prev = self.client.get_job(prev_id, retry=self.retry, timeout=self.timeout)
        except gexc.NotFound:
            return None
        if prev.state == "DONE":
            return None
        if getattr(prev, "query", None) == sql and _params(prev, _RUN_PARAMS) == _params(config, _RUN_PARAMS):
            scope.attached.append(prev_id)
            return prev
        self._cancel(prev)
        try:
            self._wait(prev, scope)
        except (JobTimeoutError, LeaseLostError):
            raise
        except Exception:  # noqa: BLE001 - the cancelled job ends with its cancellation error
            pass
        return None

    def _wait(self, job: Any, scope: JobScope) -> None:
        """Wait for ``job`` in short polls (the run's heartbeat thread renews the lease meanwhile);
        cancel it when the lease is lost or its timeout passes; raise the job's own error if it failed."""
        deadline = time.monotonic() + scope.timeout_s
        pause = 0.05
        while not job.done(retry=self.retry, timeout=self.timeout):
            if scope.should_stop():
                self._cancel(job)
                raise LeaseLostError(f"{scope.processor} {scope.day}: the lease was lost while BigQuery job "
                                     f"{job.job_id} ran; the job was cancelled",
                                     processor=scope.processor, date=scope.day.isoformat(), job_id=job.job_id)
            left = deadline - time.monotonic()
            if left <= 0:
                self._cancel(job)
                from cascade.runtime.recovery import trigger_command

                iso = scope.day.isoformat()
                raise JobTimeoutError(
                    f"{scope.processor} {iso}: BigQuery job {job.job_id} still running after {scope.timeout_s:g} s "
                    f"(the processor's job timeout); it was cancelled and this run wrote nothing. Make its query "
                    f"cheaper or declare a larger `job_timeout_seconds` on {scope.processor} (at most the function "
                    f"timeout, {FUNCTION_TIMEOUT_S} s), then re-run: "
                    + trigger_command(iso, scope.phase, [scope.processor]),
                    processor=scope.processor, date=iso, job_id=job.job_id, timeout_s=scope.timeout_s)
            self._tick.wait(min(pause, left))
            pause = min(pause * 2, 1.0)
        job.result(retry=self.retry, timeout=self.timeout)

    def _cancel(self, job: Any) -> None:
        try:
            job.cancel(retry=self.retry, timeout=self.timeout)
        except gexc.GoogleAPICallError:
            pass  # already finished or gone: nothing left to stop
