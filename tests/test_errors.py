"""Retries and errors: what a failure is decides what happens next, and nothing retries forever.

* Errors are classified by exception type and a Google API error's structured ``reason`` - never by
  the text of user code (a unit table, no emulators, then a Python processor on the emulators).
* A partition whose runs keep crashing (each lease expires unrenewed) is given up on after
  ``max_attempts`` with a reason and one alert.
* A dependent whose same-phase upstream only a redelivery can run returns at once instead of
  busy-waiting on work only its own invocation could have done.
* A quota wall in a backfill slows the wavefront down (growing backoff, lowered concurrency) and
  the range completes.

Time moves with an injected clock where leases matter; nothing sleeps.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import threading
import time
from datetime import date
from pathlib import Path

import pytest
import requests
import yaml
from google.api_core import exceptions as gexc

from cascade.errors import InvalidSourceError, ProcessorError, TransientError, is_transient
from cascade.runtime.hooks import InjectedCrash
from cascade.runtime.processors.python_callable import PythonProcessorError
from cascade.state.status import Status

from .harness import FakeClock, printed_commands

D = date(2025, 3, 12)


# ---------------------------------------------------------------------- the pipeline under test
def user_code_raising_aborted(ctx):
    """User code whose own exception text happens to say "aborted"."""
    lookup: dict[str, int] = {}
    return [{"k": 1, "v": lookup["aborted"]}]


def _table(name: str) -> dict:
    return {"table": f"retries.{name}", "date_column": "d", "keys": ["k"],
            "columns": {"d": "DATE", "k": "INT64", "v": "INT64"}}


DEFINITION = {
    "pipeline": "retries", "description": "retries and error classification", "raw_bucket": "retries",
    "calendar": {"timezone": "UTC", "seasons": [{"name": "all", "start": "2025-01-01", "end": "2025-12-31"}]},
    "phases": [{"number": 2, "name": "chain", "next": 3}, {"number": 3, "name": "python"}],
    "processors": [
        {"name": "chain_a", "phase": 2, "description": "first of a same-phase chain", "output": _table("chain_a"),
         "sql": "SELECT @data_date AS d, k, k * 10 AS v FROM UNNEST([1, 2, 3]) AS k"},
        {"name": "chain_b", "phase": 2, "description": "reads chain_a", "upstreams": ["chain_a"],
         "output": _table("chain_b"), "sql": "SELECT d, k, v + 1 AS v FROM {retries.chain_a} WHERE d = @data_date"},
        {"name": "chain_c", "phase": 2, "description": "reads chain_b", "upstreams": ["chain_b"],
         "output": _table("chain_c"), "sql": "SELECT d, k, v + 1 AS v FROM {retries.chain_b} WHERE d = @data_date"},
        {"name": "aborted_key", "phase": 3, "description": "user code raising KeyError('aborted')",
         "python": "tests.test_errors:user_code_raising_aborted", "output": _table("aborted_key")},
    ],
}
CHAIN = ("chain_a", "chain_b", "chain_c")


@pytest.fixture()
def definition(tmp_path: Path) -> str:
    path = tmp_path / "retries.yaml"
    path.write_text(yaml.safe_dump(DEFINITION))
    return str(path)


# ---------------------------------------------------------------------- classification (no emulators)
def _bigquery_job_error(reason: str, message: str) -> Exception:
    """The exception google-cloud-bigquery raises for a failed job with this ``errorResult``."""
    from google.cloud.bigquery.job.base import _error_result_to_exception

    return _error_result_to_exception({"reason": reason, "message": message})


def _wrapped_user_error(exc: Exception) -> PythonProcessorError:
    """How the Python processor wraps an exception raised by user code (chained with ``from``)."""
    try:
        raise PythonProcessorError(f"p 2025-03-12: the callable raised {type(exc).__name__}: {exc}") from exc
    except PythonProcessorError as wrapped:
        return wrapped


CLASSIFICATION = [
    # user code: its text never decides
    (KeyError("aborted"), "permanent"),
    (_wrapped_user_error(KeyError("aborted")), "permanent"),
    (_wrapped_user_error(ValueError("deadline exceeded while parsing")), "permanent"),
    (_wrapped_user_error(RuntimeError("rate limit of my own API")), "permanent"),
    (RuntimeError("could not serialize access to the cache"), "permanent"),
    (ProcessorError("wrapper", processor="p"), "permanent"),
    # a 400 without BigQuery's structured reason is permanent, whatever its text says
    (gexc.BadRequest("Could not serialize access to table t due to concurrent update"), "permanent"),
    # BigQuery job errors, by reason (as the client raises them)
    (_bigquery_job_error("quotaExceeded", "Quota exceeded: Your table exceeded quota for DML jobs"), "quota"),
    (_bigquery_job_error("rateLimitExceeded", "Exceeded rate limits: too many table update operations"), "quota"),
    (_bigquery_job_error("jobRateLimitExceeded", "Exceeded rate limits: too many concurrent DML jobs"), "quota"),
    (_bigquery_job_error("backendError", "Backend error. Job aborted."), "transient"),
    (_bigquery_job_error("internalError", "An internal error occurred"), "transient"),
    (_bigquery_job_error("invalidQuery", "Could not serialize access to table p:d.t due to concurrent update"),
     "transient"),
    (_bigquery_job_error("invalidQuery", "Transaction is aborted due to concurrent update against table p:d.t"),
     "transient"),
    # the local emulator's form of the same conflict (DuckDB's TransactionException, mapped to invalidQuery)
    (_bigquery_job_error("invalidQuery", "Query execution failed: TransactionContext Error: Conflict on update!"),
     "transient"),
    (_bigquery_job_error("invalidQuery", "Syntax error: Unexpected keyword ABORTED at [1:8]"), "permanent"),
    (_bigquery_job_error("notFound", "Not found: Table p:d.t was not found in location US"), "permanent"),
    (_bigquery_job_error("duplicate", "Already Exists: Job p:US.j"), "permanent"),
    (_bigquery_job_error("resourcesExceeded", "Resources exceeded during query execution"), "permanent"),
    # API errors, by type (Firestore, Pub/Sub, GCS, BigQuery's REST calls)
    (gexc.ServiceUnavailable("unavailable"), "transient"),
    (gexc.InternalServerError("internal"), "transient"),
    (gexc.BadGateway("bad gateway"), "transient"),
    (gexc.DeadlineExceeded("deadline"), "transient"),
    (gexc.Aborted("Firestore ABORTED: too much contention"), "transient"),
    (gexc.TooManyRequests("429"), "quota"),
    (gexc.ResourceExhausted("RESOURCE_EXHAUSTED"), "quota"),
    (gexc.Forbidden("Quota exceeded", errors=[{"reason": "quotaExceeded", "message": "Quota exceeded"}]), "quota"),
    (gexc.Forbidden("Access Denied: Table p:d.t"), "permanent"),
    (gexc.AlreadyExists("exists"), "permanent"),
    (gexc.MethodNotImplemented("not implemented"), "permanent"),
    # the network
    (ConnectionResetError("reset by peer"), "transient"),
    (TimeoutError("timed out"), "transient"),
    (requests.ConnectionError("connection refused"), "transient"),
    # Cascade's own
    (TransientError("a check's query errored"), "transient"),
    (TransientError("over quota", quota=True), "quota"),
    (InvalidSourceError("bad file"), "permanent"),
    (_wrapped_user_error(gexc.ServiceUnavailable("the read of an upstream failed")), "transient"),
]


@pytest.mark.parametrize("exc,kind", CLASSIFICATION,
                         ids=[f"{i:02d}-{type(e).__name__}-{k}" for i, (e, k) in enumerate(CLASSIFICATION)])
def test_errors_are_classified_by_type_and_api_reason_never_by_the_text_of_user_code(exc, kind):
    assert is_transient(exc) == (kind != "permanent")  # retried at all (quota included)
    from cascade.errors import classify, is_quota

    assert classify(exc) == kind
    assert is_quota(exc) == (kind == "quota")


def test_user_errors_whose_text_looks_transient_are_not_retried():
    """The substrings the old classification looked for, in errors of user code: all permanent."""
    for text in ("aborted", "deadline exceeded", "rate limit", "concurrent update", "temporarily unavailable",
                 "connection reset", "could not serialize access", "too many dml statements outstanding"):
        assert not is_transient(_wrapped_user_error(KeyError(text))), text
        assert not is_transient(ValueError(text)), text


# ---------------------------------------------------------------------- on the emulators
def test_a_user_error_whose_text_says_aborted_is_permanent(make_harness, definition):
    h = make_harness(pipeline_file=definition)
    result = h.deliver(h.trigger(D, phase=3, processors=("aborted_key",)))  # no TransientError: acknowledged
    outcome = result.outcomes[0]
    assert outcome.status == Status.FAILED and not outcome.retry
    part = h.app.tracker.partition("aborted_key", D)
    assert part.status == Status.FAILED and part.raw.get("transient") is False
    assert "KeyError" in part.error and "'aborted'" in part.error
    assert len(h.alerts.alerts) == 1


def test_a_partition_that_crashes_every_time_gives_up_after_max_attempts(make_harness, definition, inject):
    clock = FakeClock()
    h = make_harness(pipeline_file=definition, clock=clock,
                     settings_overrides={"lease_seconds": 60, "max_attempts": 3, "busy_wait_seconds": 0})
    inject(f"before_merge:chain_a@{D}")  # the process dies before the MERGE, every time
    trig = h.trigger(D, phase=2, processors=("chain_a",), skip_downstream_trigger=True)
    for attempt in (1, 2, 3):  # each redelivery takes over the crashed run's expired lease and crashes
        with pytest.raises(InjectedCrash):
            h.deliver(trig, message_id="m-1")
        part = h.app.tracker.partition("chain_a", D)
        assert part.status == Status.RUNNING and part.attempts == attempt
        clock.advance(61)
    result = h.deliver(trig, message_id="m-1")  # the fourth: given up on, recorded and acknowledged
    outcome = result.outcomes[0]
    assert outcome.status == Status.FAILED and not outcome.retry
    part = h.app.tracker.partition("chain_a", D)
    assert part.status == Status.FAILED and part.raw.get("transient") is False and part.attempts == 3
    assert "gave up after 3 attempts" in part.error and "crashed" in part.error
    assert f"cascade trigger --date {D} --phase 2 --processor chain_a" in printed_commands(part.error)
    assert len(h.alerts.alerts) == 1 and "chain_a FAILED" in h.alerts.alerts[0].title
    # The command it names runs it again from attempt 1 once the cause is fixed.
    inject("")
    assert h.run_printed(f"cascade trigger --date {D} --phase 2 --processor chain_a") == 0
    published = h.pull(2)
    assert len(published) == 1
    h.deliver(json.dumps(published[0]).encode(), phase=2)
    fixed = h.app.tracker.partition("chain_a", D)
    assert fixed.status == Status.SUCCESS and fixed.attempts == 1
    assert len(h.alerts.alerts) == 1  # alerted once


def test_a_dependent_does_not_wait_on_an_upstream_only_a_redelivery_can_run(make_harness, definition, inject):
    busy_wait = 15.0
    h = make_harness(pipeline_file=definition, settings_overrides={"busy_wait_seconds": busy_wait})
    inject("serialize:chain_a*1")  # chain_a fails transiently in this very invocation
    trig = h.trigger(D, phase=2, skip_downstream_trigger=True)
    started = time.monotonic()
    with pytest.raises(TransientError, match="chain_a"):
        h.deliver(trig, message_id="m-1")
    elapsed = time.monotonic() - started
    # Neither dependent waited for what only the redelivery can run (before: busy_wait each).
    assert elapsed < busy_wait / 2, f"the invocation took {elapsed:.1f} s"
    states = h.app.tracker.partitions(CHAIN, [D])
    assert states[("chain_a", D.isoformat())].status == Status.FAILED
    assert states[("chain_a", D.isoformat())].raw.get("transient") is True
    assert [states[(n, D.isoformat())].status for n in ("chain_b", "chain_c")] == [Status.MISSING] * 2
    # The redelivery runs the chain in order.
    result = h.deliver(trig, message_id="m-1")
    assert result.complete and [o.status for o in result.outcomes] == [Status.SUCCESS] * 3
    assert [r["v"] for r in h.rows("chain_c", D)] == [12, 22, 32]
    assert h.alerts.alerts == []


class QuotaWall:
    """A BigQuery client whose first ``failures`` MERGE jobs are refused with BigQuery's quota error
    (403, reason quotaExceeded, as ``jobs.insert`` answers it); everything else goes through."""

    def __init__(self, client, failures: int) -> None:
        self._client, self.left, self.refused = client, failures, 0
        self._lock = threading.Lock()

    def query(self, sql, *args, **kwargs):
        if re.search(r"\bMERGE\b", sql, re.IGNORECASE):
            with self._lock:
                refuse = self.left > 0
                if refuse:
                    self.left -= 1
                    self.refused += 1
            if refuse:
                message = ("Quota exceeded: Your table exceeded quota for the number of DML jobs writing to it. "
                           "For more information, see https://cloud.google.com/bigquery/docs/troubleshoot-quotas")
                raise gexc.from_http_status(403, message, errors=[{"reason": "quotaExceeded", "domain": "global",
                                                                   "message": message}])
        return self._client.query(sql, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_a_quota_error_slows_the_backfill_down_and_it_completes(make_harness, definition, monkeypatch):
    from cascade.backfill import BackfillRequest, run_backfill

    h = make_harness(pipeline_file=definition)
    start, end = date(2025, 3, 10), date(2025, 3, 12)
    wall = QuotaWall(h.app.warehouse.client, failures=6)  # more than the backfill's 3 attempts per partition
    monkeypatch.setattr(h.app.warehouse, "client", wall)
    stream = io.StringIO()
    seen: dict = {}

    def fast(sched) -> None:  # the same growth, from a small base, so the test takes seconds
        sched.options = dataclasses.replace(sched.options, quota_backoff_base=0.2)
        seen["scheduler"] = sched

    result = run_backfill(h.app, BackfillRequest(start=start, end=end, phases=[2], workers=4,
                                                 skip_downstream_trigger=True),
                          progress_stream=stream, on_scheduler=fast)
    report = result.report
    assert wall.refused == 6
    assert report.ok and len(report.succeeded) == 9 and not report.failed, report.to_dict()
    assert report.quota_hits >= 3 and report.quota_lowest_concurrency < 4
    assert seen["scheduler"].concurrency == 4  # slowed down, then resumed
    assert "quota exceeded" in stream.getvalue()  # the progress line said so
    assert any("quota" in w and "slowed down" in w for w in report.warnings)
    assert "slowed down" in result.render()
    # The quota spent none of the partitions' attempts.
    parts = h.app.tracker.partitions(CHAIN, [start, date(2025, 3, 11), end])
    assert {p.status for p in parts.values()} == {Status.SUCCESS}
    assert {p.attempts for p in parts.values()} == {1}
