"""Running one phase for one date: the heart of a phase function.

``PhaseRunner.run(trigger)``, in order:

1. Pick the processors (the trigger's list, or all of the phase) in dependency order.
2. A date the calendar expects no data on is recorded ``skipped`` and nothing cascades (only the
   processor a from-data calendar reads still runs: it is expected on every declared date). A processor
   whose own history starts after the date is recorded ``skipped`` alone (done and empty by
   declaration, as a backfill plan leaves it out): its readers run, the phase completes without it.
3. For each processor: take the partition's lease (``done`` for this generation -> skip: dedupe on
   the business key; ``busy`` -> another delivery runs it); in strict mode run the defensive checks
   (a failure records ``blocked`` with reason + resolution, alerts once, and is acknowledged); run
   the processor (one MERGE) while a heartbeat renews the lease; record success / failure.
4. When every processor of the phase succeeded (or is skipped by declaration): claim the downstream trigger
   (exactly one claimer), publish the completion to the next phase's topic, mark it published -
   unless ``skip_downstream_trigger``.
5. If anything failed transiently (or is still running elsewhere, or a claim is unpublished) raise
   ``TransientError`` after recording, so Pub/Sub redelivers with backoff. Permanent failures are
   recorded, alerted and acknowledged.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from cascade.definition.model import Processor
from cascade.errors import PERMANENT, QUOTA, CrashLoopError, InputMissingError, LeaseLostError, TransientError, classify
from cascade.runtime import handoff, hooks, recovery
from cascade.runtime.alerts import Alert
from cascade.runtime.app import App
from cascade.runtime.checks import Checks
from cascade.runtime.gates import Gates, QualityGateError
from cascade.runtime.heartbeat import Heartbeat
from cascade.runtime.hooks import InjectedCrash
from cascade.runtime.logs import get_logger, log
from cascade.runtime.messages import Trigger
from cascade.runtime.outcome import Outcome, PhaseResult
from cascade.runtime.processors import RunContext, executor_for
from cascade.state.freshness import input_keys, input_record
from cascade.state.status import Status
from cascade.state.tracker import Begin, new_run_id

logger = get_logger("runner")


@dataclass
class _Run:
    """One attempt that holds the partition's lease: what its steps share."""

    proc: Processor
    trigger: Trigger
    run_id: str
    attempt: int
    fence: int
    labels: dict[str, Any]
    checks: dict[str, Any] | None = None
    gates: dict[str, Any] | None = None  # quality-gate results of the written partition
    on_written: Callable[[], None] | None = None  # called once the write job ended (backfill slots)
    cost: dict[str, int] | None = None  # the run's BigQuery jobs: count, bytes processed / billed, slot-ms
    inputs: dict[str, str] = field(default_factory=dict)  # what it reads: "processor@date" -> run id


class PhaseRunner:
    def __init__(self, app: App) -> None:
        self.app = app
        self.pipeline = app.pipeline
        self.tracker = app.tracker

    # ------------------------------------------------------------------ entry
    def run(self, trigger: Trigger, message_id: str | None = None) -> PhaseResult:
        day = trigger.data_date
        if trigger.is_intent:
            trigger, answer = self._resolve_intent(trigger, message_id)
            if answer is not None:
                return answer
        result = PhaseResult(trigger)
        labels = dict(pipeline=self.pipeline.name, phase=trigger.phase, date=day.isoformat(),
                      generation=trigger.generation, correlation_id=trigger.correlation_id, mode=trigger.mode)
        ordered = self.pipeline.processors_of(trigger.phase)
        procs = [p for p in ordered if not trigger.processors or p.name in trigger.processors]
        log(logger, logging.INFO, f"phase {trigger.phase} triggered for {day} ({len(procs)} processors)",
            message_id=message_id, strict_mode=trigger.checks_enabled,
            skip_downstream_trigger=trigger.skip_downstream_trigger, **labels)
        calendar = self.pipeline.calendar
        expected = calendar.is_expected(day)
        reason = ""
        if not expected:  # the log line below ("phase N skipped: ...") is what the freshness alerts count
            reason = f"no data expected on {day} ({calendar.reason_not_expected(day)})"
        for proc in procs:
            if not expected and not calendar.is_expected(day, proc.name):
                self.tracker.record_outcome(proc.name, trigger.phase, day, trigger.generation, Status.SKIPPED, reason,
                                            context=self._context(trigger))
                result.outcomes.append(Outcome(proc.name, Status.SKIPPED, error=reason))
                continue
            # Runs on an expected date - and, on a date without data, the processor a from-data calendar
            # reads (its own partitions are expected on every declared date, as a backfill plan says).
            outcome = self.run_partition(proc, trigger, trigger_id=message_id or "")
            if outcome.status == Status.BUSY and outcome.held_by:
                outcome = self._wait_while_busy(proc, trigger, outcome, message_id or "")
            result.outcomes.append(outcome)
        if not expected:
            log(logger, logging.INFO, f"phase {trigger.phase} skipped: {reason}", **labels)
            result.downstream = "none"
        else:
            self.complete(trigger, result)
        log(logger, logging.INFO, f"phase {trigger.phase} for {day}: "
            + ", ".join(f"{o.processor}={o.status}" for o in result.outcomes)
            + f"; complete={result.complete} downstream={result.downstream or '-'}", **labels)
        if result.retry:
            waiting = [o.processor for o in result.outcomes if o.retry]
            raise TransientError(f"phase {trigger.phase} {day}: {waiting} must be retried; Pub/Sub will redeliver",
                                 date=day.isoformat(), phase=trigger.phase)
        return result

    def _resolve_intent(self, trigger: Trigger, message_id: str | None) -> tuple[Trigger, PhaseResult | None]:
        """A trigger without a generation: run what is missing, failed, blocked, waiting or stale
        (and its same-phase dependents) at the generation ``handoff.resolve_intent`` picks, or
        answer visibly that there is nothing to do (WARNING log, run history) and hand the complete
        phase on if that never happened."""
        day, phase = trigger.data_date, trigger.phase
        if not self.pipeline.calendar.is_expected(day):
            states = self.tracker.partitions([p.name for p in self.pipeline.processors_of(phase)], [day])
            return replace(trigger, generation=handoff.phase_generation(states.values())), None
        intent = handoff.intent_for(self.app, phase, day, trigger.processors)
        if intent.nothing_to_do:
            answer = intent.answer(phase, day)
            names = list(trigger.processors) or [p.name for p in self.pipeline.processors_of(phase)]
            if intent.redelivery_of(message_id):  # at-least-once delivery: no second answer in history
                log(logger, logging.INFO, f"{answer} (message {message_id} delivered again after its work was done)",
                    pipeline=self.pipeline.name, phase=phase, date=day.isoformat(),
                    message_id=message_id, correlation_id=trigger.correlation_id)
            else:
                self.tracker.record_answer(phase, day, names, Status.DONE, answer, self._context(trigger))
                log(logger, logging.WARNING, answer, pipeline=self.pipeline.name, phase=phase, date=day.isoformat(),
                    message_id=message_id, correlation_id=trigger.correlation_id)
            result = PhaseResult(trigger)
            result.outcomes = [Outcome(n, Status.DONE, error=answer) for n in names]
            self.complete(trigger, result)
            return trigger, result
        generation = intent.generation
        if generation is None:
            generation = self.tracker.new_generation(day)
        log(logger, logging.INFO, f"phase {phase} for {day}: running {list(intent.processors)} at generation "
            f"{generation} (" + "; ".join(f"{n}: {r}" for n, r in intent.reasons.items()) + ")",
            pipeline=self.pipeline.name, phase=phase, date=day.isoformat(), generation=generation)
        return replace(trigger, generation=generation, processors=intent.processors), None

    def _wait_while_busy(self, proc: Processor, trigger: Trigger, outcome: Outcome, trigger_id: str) -> Outcome:
        """Another live run holds this partition or a same-phase upstream of it (a duplicate delivery,
        a concurrent invocation): wait for it to finish - or for its lease to expire, then take over -
        re-reading the state, instead of spending Pub/Sub delivery attempts on it.

        Only ever for another live run (``held_by``): as soon as what blocks the partition is
        something only a redelivery can change (the upstream failed transiently or is waiting), the
        wait ends and the outcome says retry - no invocation waits on work only it could do."""
        deadline = time.monotonic() + self.app.settings.busy_wait
        tick = threading.Event()
        while outcome.status == Status.BUSY and outcome.held_by and time.monotonic() < deadline:
            tick.wait(min(0.5, max(deadline - time.monotonic(), 0)))
            outcome = self.run_partition(proc, trigger, trigger_id=trigger_id)
        return outcome

    def _context(self, trigger: Trigger) -> dict[str, Any]:
        return {"mode": trigger.mode, "correlation_id": trigger.correlation_id,
                "strict_mode": trigger.strict_mode, "skip_downstream_trigger": trigger.skip_downstream_trigger}

    # ------------------------------------------------------------------ one partition
    def run_partition(self, proc: Processor, trigger: Trigger, trigger_id: str = "",
                      inputs_verified: bool = False, on_written: Callable[[], None] | None = None) -> Outcome:
        """Run one partition (``proc`` for ``trigger.data_date``) and record it; never raises for a
        processor failure (the Outcome says failed and whether to retry). Used by phases and backfills.

        The runbook, step by step: gate (same-phase upstreams done?), lease (dedupe, fence), checks
        (strict mode, or the inputs of a backfill-mode run), execute (one fenced MERGE) and record.
        ``trigger_id`` names the delivery (a redelivery keeps it: attempts count per trigger);
        ``inputs_verified`` says the caller (an in-process backfill) already verified the inputs;
        ``on_written`` is called once the write job has ended (the backfill returns the table's MERGE
        slot then, before the quality gates' read queries).
        """
        day, gen = trigger.data_date, trigger.generation
        if gen is None:  # an intent ("make it complete and fresh") is resolved by run(), never here
            raise ValueError(f"run_partition({proc.name}, {day}) needs a trigger with a generation; "
                             f"a trigger without one is an intent: pass it to PhaseRunner.run")
        if self.pipeline.calendar.skipped_by_declaration(day, proc.name):
            return self._skip_by_declaration(proc, trigger)
        gated = self._gate(proc, trigger)
        if gated is not None:
            return gated
        run_id = new_run_id(proc.name, day)
        keys = input_keys(self.pipeline, proc, day)  # what the run reads: read with the lease
        begin = self.tracker.begin(proc.name, proc.phase, day, gen, run_id, self._context(trigger),
                                   trigger_id=trigger_id or trigger.correlation_id, inputs=keys)
        if begin.outcome != Status.RUN:
            return self._not_taken(proc, day, begin)
        run = _Run(proc, trigger, run_id, begin.attempt, begin.fence,
                   dict(pipeline=self.pipeline.name, phase=proc.phase, processor=proc.name, date=day.isoformat(),
                        generation=gen, run_id=run_id, fence=begin.fence), on_written=on_written,
                   inputs=input_record(keys, begin.inputs))
        limit = self.app.settings.max_attempts
        if begin.took_over_crash and begin.attempt > limit:
            # Every one of the last ``limit`` runs stopped without recording anything (the process
            # crashed, was killed or ran out of memory): running it again would crash again.
            return self._give_up_crash_loop(run, begin, limit)
        # The lease is heartbeated from the moment it is taken: checks included.
        with Heartbeat(self.app, proc.name, day, run_id) as hb:
            outcome = self._check(run, inputs_verified)
            if outcome is None:
                outcome = self._execute(run, hb)
        return outcome

    def _skip_by_declaration(self, proc: Processor, trigger: Trigger) -> Outcome:
        """``proc``'s own history starts after the date (the pipeline's does not): its partition is
        done and empty by declaration, as a backfill plan leaves it out. Recorded skipped with the
        reason (never over a success or a live run), never run; its readers and the phase go on."""
        day = trigger.data_date
        part = self.tracker.partition(proc.name, day)
        if part.status == Status.SKIPPED and part.generation >= trigger.generation:
            return Outcome(proc.name, Status.SKIPPED, part.run_id, error=part.error)  # a redelivery
        why = self.pipeline.calendar.reason_not_expected(day, proc.name)
        reason = f"no data expected for {proc.name} on {day} ({why})"
        self.tracker.record_outcome(proc.name, proc.phase, day, trigger.generation, Status.SKIPPED, reason,
                                    context=self._context(trigger))
        log(logger, logging.INFO, f"{proc.name} {day} skipped: {reason}", pipeline=self.pipeline.name,
            processor=proc.name, date=day.isoformat(), generation=trigger.generation)
        return Outcome(proc.name, Status.SKIPPED, error=reason)

    # step 1: gate ---------------------------------------------------------------------------------
    def _gate(self, proc: Processor, trigger: Trigger) -> Outcome | None:
        """Same-phase upstreams ran earlier in this invocation (dependency order) or elsewhere; a
        partition waits for them (busy) or is blocked when they ended badly. None: go on."""
        day, gen = trigger.data_date, trigger.generation
        intra = self.pipeline.intra_phase_upstreams(proc)
        if not intra:
            return None
        # An upstream whose own history starts after the date is done and empty by declaration.
        intra = [n for n in intra if not self.pipeline.calendar.skipped_by_declaration(day, n)]
        if not intra:
            return None
        states = self.tracker.partitions(intra, [day])
        # An upstream this trigger runs must have succeeded at its generation (it runs first); one it
        # does not run must have succeeded (at any generation: an intent leaves fresh ones alone).
        pending = {n: s for (n, _), s in states.items()
                   if not (s.done_for(gen) if (not trigger.processors or n in trigger.processors)
                           else s.status == Status.SUCCESS)}
        if not pending:
            return None
        now = self.app.clock()
        in_this_run = {n for n in pending if not trigger.processors or n in trigger.processors}
        # Held by another live run (a duplicate delivery, a concurrent invocation): worth waiting
        # for here (``_wait_while_busy``), it may succeed any moment.
        live = {n: s for n, s in pending.items() if s.lease_alive(now)}
        if live:
            name, part = sorted(live.items())[0]
            return Outcome(proc.name, Status.BUSY, retry=True, held_by=part.run_id,
                           error=f"waiting on {sorted(pending)}: run {part.run_id} of {name} is live")
        # Still coming, but not within this invocation: failed transiently (here or elsewhere), waiting
        # on its own upstream, or part of this very trigger and not run (it is waiting on one of
        # those). Only a redelivery can run them: return at once and let it (or, for a run elsewhere,
        # its redelivery and this trigger's) run this partition - never wait on ourselves.
        coming = {n: s for n, s in pending.items()
                  if (s.status == Status.FAILED and s.raw.get("transient"))
                  or (s.status == Status.WAITING and s.raw.get("transient") and not self.tracker.waiting_expired(s, now))
                  or (n in in_this_run and s.status in (Status.MISSING, Status.RUNNING))}
        if coming:
            why = ", ".join(f"{n} {s.status}" + (" (transient)" if s.status == Status.FAILED else "")
                            for n, s in sorted(coming.items()))
            return Outcome(proc.name, Status.WAITING, retry=True,
                           error=f"waiting on same-phase upstream {sorted(pending)} ({why}): only a redelivery "
                                 f"can run it, this one is retried with it")
        iso = day.isoformat()
        reason = (f"{self.pipeline.phase(proc.phase).title} BLOCKED: same-phase upstream "
                  f"{sorted(pending)} not successful for {iso} ({', '.join(s.status for s in pending.values())})")
        resolution = f"run them first: {recovery.trigger_command(iso, proc.phase)}"
        self.tracker.record_outcome(proc.name, proc.phase, day, gen, Status.BLOCKED, f"{reason}; resolution: {resolution}",
                                    blocked={"check": "Intra-phase dependency", "upstream": sorted(pending),
                                             "dates": [iso], "detail": reason, "resolution": resolution},
                                    context=self._context(trigger))
        return Outcome(proc.name, Status.BLOCKED, error=f"{reason}; resolution: {resolution}")

    # step 2: lease --------------------------------------------------------------------------------
    def _not_taken(self, proc: Processor, day, begin: Begin) -> Outcome:
        part = begin.partition
        if begin.outcome == Status.DONE:
            log(logger, logging.INFO, f"{proc.name} {day} already succeeded (generation {part.generation}); skipped",
                pipeline=self.pipeline.name, processor=proc.name, date=day.isoformat())
            return Outcome(proc.name, Status.DONE, part.run_id, part.record_count)
        if begin.outcome == Status.SUPERSEDED:
            answer = (f"{proc.name} {day}: this trigger's generation is older than the partition's "
                      f"({part.generation}): a newer run superseded it; nothing to do")
            log(logger, logging.WARNING, answer, pipeline=self.pipeline.name, processor=proc.name,
                date=day.isoformat())
            return Outcome(proc.name, Status.SUPERSEDED, error=answer)
        return Outcome(proc.name, Status.BUSY, part.run_id, retry=True, held_by=part.run_id,
                       error=f"run {part.run_id} (generation {part.generation}) holds the lease")

    # step 3: checks -------------------------------------------------------------------------------
    def _check(self, run: "_Run", inputs_verified: bool) -> Outcome | None:
        """Strict mode in daily mode; in backfill mode the same-date inputs must exist (unless the
        caller verified them). Records and returns the outcome when the run must not go on."""
        proc, trigger, day = run.proc, run.trigger, run.trigger.data_date
        if not trigger.checks_enabled:
            reason = "backfill mode" if trigger.mode == "backfill" else "strict_mode=false"
            run.checks = {"skipped": reason, "queries": 0, "seconds": 0, "results": []}
            if trigger.mode == "backfill" and not inputs_verified:
                missing = Checks(self.pipeline, self.tracker, self.app.warehouse).missing_inputs(proc, day)
                if missing:
                    return self._fail(run, InputMissingError(missing, processor=proc.name, date=day.isoformat()))
            return None
        try:
            report = Checks(self.pipeline, self.tracker, self.app.warehouse, self.app.versions).run(proc, day)
        except TransientError as exc:
            self._record(run, Status.FAILED, error=str(exc), extra={"transient": True})
            log(logger, logging.WARNING, f"strict-mode check errored; will retry: {exc}", **run.labels)
            return Outcome(proc.name, Status.FAILED, run.run_id, error=str(exc), retry=True)
        run.checks = report.to_dict()
        if report.waiting:
            # A live upstream run is a transient condition: recorded as waiting, retried with backoff.
            self._record(run, Status.WAITING, error=report.waiting, extra={"transient": True, "checks": run.checks})
            log(logger, logging.INFO, f"{proc.name} {day} waits: {report.waiting}; Pub/Sub will redeliver", **run.labels)
            return Outcome(proc.name, Status.WAITING, run.run_id, error=report.waiting, retry=True, checks=run.checks)
        blocked = report.blocked
        if blocked is None:
            return None
        self._record(run, Status.BLOCKED, error=f"{blocked.detail}; resolution: {blocked.resolution}",
                     blocked=blocked.to_dict(), extra={"checks": run.checks})
        marker = hashlib.sha256(f"{proc.name}|{day}|{trigger.generation}|{blocked.detail}".encode()).hexdigest()[:24]
        if self.tracker.create_once("alerts", f"blocked__{marker}", {"detail": blocked.detail}):
            self.app.alerts.send(Alert(blocked.detail, f"resolution: {blocked.resolution}", labels=run.labels,
                                       details=blocked.to_dict()))  # once per distinct reason
        log(logger, logging.ERROR, f"{blocked.detail}; resolution: {blocked.resolution}", **run.labels)
        return Outcome(proc.name, Status.BLOCKED, run.run_id, error=blocked.detail, checks=run.checks)

    # step 4: execute ------------------------------------------------------------------------------
    def _execute(self, run: "_Run", hb: "Heartbeat") -> Outcome:
        proc, day, iso = run.proc, run.trigger.data_date, run.trigger.data_date.isoformat()
        if hb.lost:
            return self._lost(run, "lease lost before the write")
        ctx = RunContext(self.pipeline, self.app.project, self.app.warehouse, self.app.storage, run.run_id, run.fence)
        # What this run reads (read with its lease) is recorded with the result, so a later rebuild
        # of any of these inputs makes this partition stale (``freshness``).
        inputs = run.inputs
        started = time.perf_counter()
        try:
            hooks.maybe_fail("before_merge", proc.name, iso)
            hooks.maybe_fail("slow", proc.name, iso)
            hooks.maybe_fail("serialize", proc.name, iso)
            # Every BigQuery job of the run (write, gates) is capped, timed out and cancelled when the
            # heartbeat (its own thread, renewing the lease meanwhile) finds the lease lost; their cost
            # is recorded with the run.
            with self.app.warehouse.run_scope(proc, day, run.trigger.generation, run.fence,
                                              should_stop=lambda: hb.lost) as jobs:
                try:
                    try:
                        count = executor_for(proc).run(ctx, proc, day)
                    finally:
                        if run.on_written is not None:
                            run.on_written()
                    hooks.maybe_fail("after_merge", proc.name, iso)
                    self._enforce_gates(run)
                finally:
                    run.cost = jobs.cost.to_dict()
        except InjectedCrash:
            raise  # a simulated crash leaves the partition running, as a real one would
        except LeaseLostError as exc:  # the fenced MERGE changed nothing: a newer run owns the partition
            return self._lost(run, str(exc))
        except Exception as exc:  # noqa: BLE001 - classified, recorded and re-raised as needed below
            return self._fail(run, exc)
        if hb.lost:
            return self._lost(run, "lease lost during the run; another run took over (its rows are fenced)")
        # step 5: record
        try:
            self._record(run, Status.SUCCESS, record_count=count,
                         extra={"checks": run.checks, "gates": run.gates,
                                "seconds": round(time.perf_counter() - started, 3), "transient": False,
                                **self.app.versions.of(proc.name).to_dict(), "inputs": inputs})
        except LeaseLostError as exc:
            return self._lost(run, str(exc))
        log(logger, logging.INFO, f"{proc.name} {iso} succeeded: {count} rows merged", record_count=count, **run.labels)
        return Outcome(proc.name, Status.SUCCESS, run.run_id, count, checks=run.checks)

    def _enforce_gates(self, run: "_Run") -> None:
        """The processor's quality gates on what it just wrote; a failed one raises QualityGateError."""
        try:
            report = Gates(self.pipeline, self.app.warehouse).enforce(run.proc, run.trigger.data_date)
        except QualityGateError as exc:
            report = exc.report  # type: ignore[attr-defined]
            run.gates = report.to_dict()
            raise
        run.gates = report.to_dict() if report is not None else None

    def _fail(self, run: "_Run", exc: BaseException, extra: dict[str, Any] | None = None) -> Outcome:
        """Record a failure, classified by ``errors.classify``: transient ones are retried until
        ``max_attempts`` for this trigger; quota ones are retried without spending attempts (Pub/Sub's
        backoff and dead-letter policy, or the backfill's slow-down, bound them); permanent ones are
        recorded, alerted once and acknowledged."""
        proc, iso = run.proc, run.trigger.data_date.isoformat()
        kind = classify(exc)
        quota = kind == QUOTA
        transient = kind != PERMANENT
        gave_up = transient and not quota and run.attempt >= self.app.settings.max_attempts
        error = f"{type(exc).__name__}: {exc}"
        if gave_up:
            error = f"gave up after {run.attempt} attempts: {error}"
        elif quota:
            error = f"quota exceeded (retried more slowly; attempts not spent): {error}"
        retry = transient and not gave_up
        try:
            self._record(run, Status.FAILED, error=error[:2000], extra={"transient": retry, "quota": quota and retry,
                                                                 "checks": run.checks, "gates": run.gates,
                                                                 **(extra or {})})
        except LeaseLostError:
            return self._lost(run, "lease lost while failing")
        next_step = (f"cascade backfill --start {iso} --end {iso} --processor {proc.name}"
                     if run.trigger.mode == "backfill" else
                     recovery.gate_failed_step(self.pipeline, proc, iso) if isinstance(exc, QualityGateError)
                     else recovery.rerun_command(proc, iso))
        log(logger, logging.WARNING if retry else logging.ERROR,
            f"{proc.name} failed for {iso} (attempt {run.attempt}): {error}"
            + ("; will retry" if retry else f"; fix it, then: {next_step}"), **run.labels)
        if not retry:
            self.app.alerts.send(Alert(f"{proc.name} FAILED for {iso}", f"{error[:500]}; next step: {next_step}",
                                       labels=run.labels))
        return Outcome(proc.name, Status.FAILED, run.run_id, error=error, retry=retry, quota=quota and retry)

    def _give_up_crash_loop(self, run: "_Run", begin: Begin, limit: int) -> Outcome:
        """Record a partition whose last ``limit`` runs all crashed as failed for good (permanent),
        naming the attempts and the command that re-runs it once fixed; alerted once."""
        proc, iso = run.proc, run.trigger.data_date.isoformat()
        prev = begin.previous
        last = f"; the last was run {prev.run_id}" if prev is not None and prev.run_id else ""
        exc = CrashLoopError(
            f"gave up after {limit} attempts: each run of {proc.name} for {iso} stopped without recording "
            f"an outcome (its lease expired unrenewed: the process crashed, was killed or ran out of memory)"
            f"{last}. See its logs (cascade history --processor {proc.name} --date {iso}), fix the cause, "
            f"then re-run it: {recovery.rerun_command(proc, iso)}",
            processor=proc.name, date=iso, attempts=limit)
        return self._fail(run, exc, extra={"attempts": limit})

    def _lost(self, run: "_Run", why: str) -> Outcome:
        log(logger, logging.ERROR, f"{run.proc.name} {run.trigger.data_date}: {why}; result not recorded", **run.labels)
        self.tracker.mark_run(run.run_id, Status.LOST.value, why)
        return Outcome(run.proc.name, Status.LOST, run.run_id, error=why)

    def _record(self, run: "_Run", status: str, **kw: Any) -> None:
        if run.cost is not None:  # what the run's BigQuery jobs cost, recorded with any outcome
            kw["extra"] = {**(kw.get("extra") or {}), "cost": run.cost}
        self.tracker.finish(run.proc.name, run.trigger.data_date, run.run_id, status, **kw)

    # ------------------------------------------------------------------ completion
    def complete(self, trigger: Trigger, result: PhaseResult) -> None:
        """Hand the phase on when every processor of it succeeded for the date (``handoff``): claim the
        completion once at the phase's generation, publish it, mark it published; updates ``result``."""
        claimer = next((o.run_id for o in result.outcomes if o.run_id), "") or "redelivery"
        done = handoff.hand_off(self.app, trigger.phase, trigger.data_date, mode=trigger.mode,
                                strict_mode=trigger.strict_mode, correlation_id=trigger.correlation_id,
                                skip_downstream_trigger=trigger.skip_downstream_trigger, claimer=claimer)
        result.complete = done.complete
        result.downstream = "" if done.downstream == "incomplete" else done.downstream
        if done.retry:
            result.outcomes.append(Outcome(f"phase{trigger.phase}-trigger", Status.BUSY, retry=True,
                                           error="downstream trigger claimed but not yet published"))
