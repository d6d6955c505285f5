"""The backfill engine: plan, dependency-aware parallel wavefront, resume from state, progress, validation.

Modules: ``plan`` (what exists, what will run, the estimate), ``wavefront`` (the pure
decisions: readiness, order, slots, retries, blocked closure), ``scheduler`` (the wavefront on a
thread pool), ``executors`` (where a partition runs: in this process or on the phase functions), ``lease`` (one backfill per processor), ``progress`` (the progress line),
``validate`` (coverage, duplicate keys, NULL critical columns, preflight), ``digest`` (one alert
per backfill), ``rerun`` (new-generation re-processing), ``engine`` (the whole command).
"""

from cascade.backfill.engine import BackfillRequest, BackfillResult, print_result, run_backfill
from cascade.backfill.plan import Plan, UsageError, build_plan, select_processors
from cascade.backfill.scheduler import RunReport, Scheduler, SchedulerOptions

__all__ = ["BackfillRequest", "BackfillResult", "Plan", "RunReport", "Scheduler", "SchedulerOptions", "UsageError",
           "build_plan", "print_result", "run_backfill", "select_processors"]
