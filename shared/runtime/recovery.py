"""Recovery: the next steps of a failed, blocked or stale partition, derived from state in one place.

A block names what it lacks (an upstream processor and dates). The cause may lie further back: a
phase-3 input that is missing because its phase-2 run was blocked, or never ran because a raw file
never arrived. ``root_causes`` walks the recorded states back - through recorded blocks, and
through the inputs of partitions that never ran - to the partitions that are themselves the
problem (failed, or missing with every input present), across phases; ``next_steps`` turns
them into steps an operator pastes verbatim:

1. what to fix first, per root cause (restore the raw file ``gs://...`` it names, or fix the
   processor's error);
2. one ``cascade backfill`` over the first root date .. the blocked date, for the phases from the
   root's to the blocked processor's. A backfill runs synchronously, only what is missing, failed,
   blocked or stale in that range, in dependency order - so the command works whatever state the
   cascade is in when it is pasted (a trigger would race the cascade it starts).

``partition_next_step`` is the step ``cascade status`` ends each failed, blocked or stale partition
with (a failure: its root cause, then the trigger that re-runs it alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Callable, Iterable

from cascade.definition.model import Pipeline, Processor
from cascade.runtime.processors.gcs_load import raw_path
from cascade.state.freshness import input_keys
from cascade.state.status import Status

MAX_DEPTH = 12
RESTORE_DOC = 'docs/operations.md, "Recovering a date"'  # how to restore or re-create a raw file


def trigger_command(day: date | str, phase: int | None = None, processors: Iterable[str] = ()) -> str:
    """The command that re-runs ``processors`` of ``phase`` (every one of them when none is named; the
    first phase when no phase is) for ``day``, written once for every message that suggests it:
    ``trigger_command(date(2025, 1, 15), 3, ["summary"])`` is
    ``cascade trigger --date 2025-01-15 --phase 3 --processor summary``."""
    day = day.isoformat() if isinstance(day, date) else day
    return " ".join([f"cascade trigger --date {day}", *([f"--phase {phase}"] if phase is not None else []),
                     *(f"--processor {name}" for name in processors)])


def wait_command(day: date | str, phase: int, since: datetime, end: date | str | None = None) -> str:
    """The wait that follows a trigger (or rerun) published at ``since``: only outcomes recorded at or
    after it answer it (without ``--since`` the previous generation's completion would answer at
    once). Milliseconds, so an outcome of the same second before it is not taken for its answer:
    ``cascade wait --date 2025-01-15 --phase 3 --since 2025-01-16T10:00:00.250Z``; with ``end``
    (a rerun of several dates) it waits for every expected date of ``day``..``end``."""
    day = day.isoformat() if isinstance(day, date) else day
    end = end.isoformat() if isinstance(end, date) else end
    at = since.astimezone(timezone.utc) if since.tzinfo else since
    return (f"cascade wait --date {day}" + (f" --end {end}" if end and end != day else "")
            + f" --phase {phase} --since {at:%Y-%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z")


def rerun_command(proc: Processor, day: date | str) -> str:
    """The command that re-runs ``proc`` alone for ``day`` (``trigger_command`` of its phase)."""
    return trigger_command(day, proc.phase, [proc.name])


def gate_failed_step(pipeline: Pipeline, proc: Processor, day: date | str) -> str:
    """The next step of a quality gate ``proc`` failed on ``day``: re-run it once its code or gate is
    fixed - or, when the data it read was wrong and is corrected at the source since (a raw file
    delivered again), reload from the first phase it reads from: a corrected file is not a change
    Cascade sees, so a trigger would answer "already complete" for those loads."""
    day = day.isoformat() if isinstance(day, date) else day
    step = rerun_command(proc, day)
    if not proc.upstreams:
        return step
    first, seen, todo = proc.phase, set(), [u.processor for u in proc.upstreams]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            up = pipeline.processor(name)
            first = min(first, up.phase)
            todo += [u.processor for u in up.upstreams]
    return (f"{step} (its code or gate fixed); or, when the data it read was corrected at the source, reload "
            f"from there: cascade rerun --date {day} --phase {first}")


@dataclass(frozen=True)
class RootCause:
    processor: str
    day: str
    status: str
    detail: str = ""  # e.g. "restore gs://bucket/path (or re-run what writes it: ...)"


def _by_table(pipeline: Pipeline, name: str) -> Processor | None:
    """A processor named by its name or by its (namespaced) table id ``dataset.table``."""
    for p in pipeline.processors:
        if name == p.name or name == f"{pipeline.dataset_id(p.output.dataset)}.{p.output.name}" \
                or name == p.output.logical:
            return p
    return None


def root_causes(pipeline: Pipeline, tracker: Any, project: str, upstream: str,
                dates: Iterable[str]) -> list[RootCause]:
    """The partitions at the root of ``upstream`` lacking ``dates`` (walking recorded blocks)."""
    proc = _by_table(pipeline, upstream)
    if proc is None:
        return []
    roots: dict[tuple[str, str], RootCause] = {}
    frontier = [(proc.name, d) for d in dates]
    seen: set[tuple[str, str]] = set()
    for _ in range(MAX_DEPTH):
        frontier = [k for k in frontier if k not in seen]
        if not frontier:
            break
        seen |= set(frontier)
        states = tracker.partitions_by_keys(frontier)
        nxt: list[tuple[str, str]] = []
        for key in frontier:
            st = states[key]
            block = st.blocked or {}
            cause = _by_table(pipeline, str(block.get("upstream") or "")) if st.status == Status.BLOCKED else None
            if cause is not None and block.get("dates"):
                nxt += [(cause.name, d) for d in block["dates"]]
                continue
            if st.status in (Status.MISSING, Status.BLOCKED):
                # Never ran (or blocked without a recorded cause): its own inputs may be why.
                ins = input_keys(pipeline, pipeline.processor(key[0]), date.fromisoformat(key[1]))
                got = tracker.partitions_by_keys(ins) if ins else {}
                bad = [k for k in ins if got[k].status != Status.SUCCESS]
                if bad:
                    nxt += bad
                    continue
            roots[key] = RootCause(key[0], key[1], str(st.status), _fix(pipeline, project, key, st))
        frontier = nxt
    return sorted(roots.values(), key=lambda r: (r.day, pipeline.processor(r.processor).phase, r.processor))


def _fix(pipeline: Pipeline, project: str, key: tuple[str, str], st: Any) -> str:
    proc = pipeline.processor(key[0])
    if proc.source is not None and st.status in (Status.FAILED, Status.MISSING) and (
            st.status == Status.MISSING or "not found" in (st.error or "")):
        path = f"gs://{pipeline.bucket(project)}/{raw_path(proc, date.fromisoformat(key[1]))}"
        if st.status == Status.MISSING:  # never loaded: its file may be there, waiting for the run below
            return f"restore {path} if it is missing (or re-run what writes it: {RESTORE_DOC})"
        return f"restore {path} (or re-run what writes it: {RESTORE_DOC})"
    if st.status == Status.FAILED:
        return f"fix {proc.name} for {key[1]} ({_clip(st.error or 'failed', 160)})"
    return ""


def _clip(error: str, limit: int) -> str:
    """A recorded error shortened for a next step: never a command cut in the middle (a command it
    quotes is left out - the step ends with its own), at most ``limit`` characters."""
    if "cascade " in error:
        error = error[:error.index("cascade ")].rstrip(" :;,") or "failed"
    return error if len(error) <= limit else error[:limit - 3].rstrip() + "..."


def backfill_command(pipeline: Pipeline, first_phase: int, last_phase: int, start: str, end: str) -> str:
    """The backfill that rebuilds what is not fresh from ``start`` to ``end`` in the phases between."""
    phases = [ph.number for ph in sorted(pipeline.phases, key=lambda p: p.number)
              if first_phase <= ph.number <= last_phase]
    return f"cascade backfill --start {start} --end {end} " + " ".join(f"--phase {n}" for n in phases)


# ``cover(first_phase, last_phase, start, end)``: a backfill of that range widened until it reaches every
# input it needs (``backfill.reach``), or None when the range itself does. Given by callers that may
# read the warehouse (``cascade status``); a phase function's resolution goes without it and prints
# ``cascade backfill ... --widen`` instead (the backfill widens itself when it runs).
Cover = Callable[[int, int, str, str], "str | None"]


def next_steps(pipeline: Pipeline, tracker: Any, project: str, proc: Processor, day: date, upstream: str,
               dates: Iterable[str], cover: Cover | None = None) -> str:
    """The resolution of ``proc`` on ``day`` lacking ``upstream`` on ``dates``: fixes, then one command."""
    dates = sorted(dates)
    roots = root_causes(pipeline, tracker, project, upstream, dates)
    up = _by_table(pipeline, upstream)
    first_day = min([r.day for r in roots] + dates) if (roots or dates) else day.isoformat()
    first_phase = min([pipeline.processor(r.processor).phase for r in roots]
                      + ([up.phase] if up is not None else [proc.phase]))
    fixes = list(dict.fromkeys(r.detail for r in roots if r.detail))
    start = min(first_day, day.isoformat())
    if cover is not None:  # the widened range, computed now
        command = cover(first_phase, proc.phase, start, day.isoformat()) \
            or backfill_command(pipeline, first_phase, proc.phase, start, day.isoformat())
    else:  # computed when it runs: what the range reads outside it may need rebuilding too
        command = backfill_command(pipeline, first_phase, proc.phase, start, day.isoformat()) + " --widen"
    steps = "; ".join(fixes[:3]) + ("; ..." if len(fixes) > 3 else "")
    return (f"{steps}, then: {command}" if steps else f"rebuild what is missing or stale: {command}")


def partition_next_step(pipeline: Pipeline, tracker: Any, project: str, part: Any, stale: str | None = None,
                        cover: Cover | None = None) -> str:
    """The next step of one failed, blocked or stale partition (``""`` for any other): the root cause
    first, then the command to paste. A block is resolved from the state as it is now (its recorded
    resolution was written when it blocked); a failure or a stale partition is re-run alone
    (``rerun_command``: a trigger without a generation makes it complete and fresh, and re-triggers
    what follows) - unless what it reads must be rebuilt first: then, with ``cover``, the one
    backfill that rebuilds its inputs and it."""
    proc = pipeline.processor(part.processor)
    day = date.fromisoformat(part.data_date)
    iso = day.isoformat()

    def wider() -> str | None:  # the one backfill, when its inputs must be rebuilt first
        return cover(proc.phase, proc.phase, iso, iso) if cover is not None else None

    if part.status == Status.BLOCKED:
        block = part.blocked or {}
        if block.get("upstream") and block.get("dates") and _by_table(pipeline, str(block["upstream"])) is not None:
            return next_steps(pipeline, tracker, project, proc, day, str(block["upstream"]), block["dates"], cover)
        return block.get("resolution") or f"rebuild it: {wider() or rerun_command(proc, day)}"
    if part.status == Status.FAILED:
        if part.raw.get("transient"):
            return f"it is retried on its own; to re-run it now: {rerun_command(proc, day)}"
        if part.raw.get("input_gap"):  # a backfill could not read its inputs: rebuild them, then it
            return (f"rebuild what it reads, then it: "
                    f"{wider() or backfill_command(pipeline, proc.phase, proc.phase, iso, iso)}")
        fix = _fix(pipeline, project, (part.processor, part.data_date), part)
        if (part.raw.get("gates") or {}).get("passed") is False:
            return f"{fix}, then: {gate_failed_step(pipeline, proc, day)}"
        return f"{fix}, then: {wider() or rerun_command(proc, day)}"
    if stale:
        command = wider()
        if command:
            return f"rebuild it ({_clip(stale, 160)}) with what it reads, in one backfill: {command}"
        return f"rebuild it ({_clip(stale, 160)}): {rerun_command(proc, day)}"
    return ""


def fill_coverage(pipeline: Pipeline, gaps: Iterable[Any], then: str) -> str:
    """The steps that fill a preflight's coverage gaps (``validate.Coverage`` items), then ``then``:
    restore the raw files a loader lacks; backfill the upstream table's missing dates."""
    steps = []
    for cov in gaps:
        dates = sorted(cov.missing)
        if not dates:
            continue
        shown = ", ".join(dates[:5]) + (f" and {len(dates) - 5} more" if len(dates) > 5 else "")
        if str(cov.source).startswith("gs://"):
            steps.append(f"restore the raw files {cov.source} of {shown}")
        else:
            steps.append(f"cascade backfill --start {dates[0]} --end {dates[-1]} --processor {cov.processor}")
    return "; ".join(steps + [f"then: {then}"])
