"""How far a backfill must reach: the range (and phases) whose partitions' inputs outside it are all
there and usable.

A backfill verifies what each partition reads outside its range (``validate.outside_needs``): lookback
history before ``--start``, upstream phases not selected. When something there is missing, failed,
blocked or stale, the command that fixes it is not "the same range again" nor "the missing inputs
alone" - those inputs' own rebuild may need history further back (a lookback reading a lookback), so
a person would be sent back one step at a time. ``covering_backfill`` widens the range instead -
earlier start, earlier phases - until the plan of the widened range lacks nothing outside it, the
way the backfill itself will judge it. The printed command then runs in one go.

It reads what a backfill's plan reads (one batched state read per plan, one presence query per
upstream table) and writes nothing; a widening stops at the calendar's first date (windows stop
there) or when it would not change the range.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping

from cascade.backfill.plan import build_plan, select_processors
from cascade.definition.model import Pipeline, Processor
from cascade.runtime.recovery import backfill_command

MAX_WIDENINGS = 24  # each step moves the start back by at least one window: far more than any history needs


@dataclass(frozen=True)
class Reach:
    """A backfill range: ``start..end`` over the phases ``first_phase..last_phase``."""

    start: date
    end: date
    first_phase: int
    last_phase: int

    def command(self, pipeline: Pipeline) -> str:
        return backfill_command(pipeline, self.first_phase, self.last_phase, self.start.isoformat(),
                                self.end.isoformat())


def covering_backfill(app: Any, processors: Iterable[Processor], start: date, end: date,
                      needs: Mapping[Any, Any] | None = None) -> Reach:
    """The smallest widening of a backfill of ``processors`` over ``start..end`` (whole phases, an
    earlier start, earlier phases) after which no planned partition lacks an input outside it.
    ``needs``: ``validate.outside_needs`` of the plan of exactly that backfill, when already known."""
    from cascade.backfill.validate import outside_needs

    pipeline = app.pipeline
    phases = sorted({p.phase for p in processors})
    reach = Reach(start, end, phases[0], phases[-1])
    whole = {p.name for p in processors} == {p.name for p in pipeline.processors
                                             if reach.first_phase <= p.phase <= reach.last_phase}
    if needs is None or not whole:  # the command names whole phases: judge the plan of whole phases
        needs = outside_needs(app, _plan(app, reach))
    for _ in range(MAX_WIDENINGS):
        if not needs:
            break
        wider = _widen(pipeline, reach, needs.values())
        if wider == reach:
            break  # what is lacking is not something a wider backfill produces (e.g. a raw file)
        reach = wider
        needs = outside_needs(app, _plan(app, reach))
    return reach


def _widen(pipeline: Pipeline, reach: Reach, needs: Iterable[Any]) -> Reach:
    dates = [date.fromisoformat(d) for need in needs for d in need.dates()]
    first_phase = min([reach.first_phase] + [pipeline.processor(n).phase for need in needs for n in need.processors()])
    first = pipeline.calendar.first_date()
    start = min([reach.start] + dates)
    if first is not None:
        start = max(start, min(first, reach.start))
    return Reach(start, reach.end, first_phase, reach.last_phase)


def _plan(app: Any, reach: Reach) -> Any:
    phases = [ph.number for ph in app.pipeline.phases if reach.first_phase <= ph.number <= reach.last_phase]
    procs = select_processors(app.pipeline, phases=phases)
    return build_plan(app.pipeline, app.tracker, procs, reach.start, reach.end, versions=app.versions)


def cover_for(app: Any) -> Callable[[int, int, str, str], str | None]:
    """``recovery.Cover`` on this app's state and warehouse, for the next steps ``cascade status``,
    ``cascade wait`` and the status page print: the backfill of phases ``first..last`` over
    ``start..end`` widened until it reaches every input it needs, or None when that range already
    does (answers cached per range)."""

    @lru_cache(maxsize=64)
    def cover(first_phase: int, last_phase: int, start: str, end: str) -> str | None:
        phases = [ph.number for ph in app.pipeline.phases if first_phase <= ph.number <= last_phase]
        lo, hi = date.fromisoformat(start), date.fromisoformat(end)
        reach = covering_backfill(app, select_processors(app.pipeline, phases=phases), lo, hi)
        if (reach.start, reach.first_phase) == (lo, first_phase):
            return None
        return reach.command(app.pipeline)

    return cover


def readers_after(pipeline: Pipeline, phases: Iterable[int], end: date) -> tuple[date, date] | None:
    """The dates after ``end`` whose lookback windows read a date up to ``end`` of ``phases`` (or of the
    phases after them, transitively): where a rebuild of ``..end`` leaves readers stale. None when no
    window reaches across ``end`` (pure: the definition and the calendar)."""
    cal = pipeline.calendar
    first = min(phases)
    hi = end
    for proc in pipeline.processors:
        if proc.phase < first:
            continue
        for u in proc.upstreams:
            if u.lookback_days > 0:
                hi = max(hi, end + timedelta(days=u.lookback_days))
            if u.lookback_dates > 0:
                day, seen = end, 0
                while seen < u.lookback_dates and day < end + timedelta(days=400):
                    day += timedelta(days=1)
                    seen += cal.is_expected(day)
                hi = max(hi, day)
    return (end + timedelta(days=1), hi) if hi > end else None


def stale_after(app: Any, plan: Any) -> tuple[int, str] | None:
    """After a backfill of ``plan``: how many partitions after its end read what it rebuilt (their
    windows reach into the range) and are stale now, with the one backfill that rebuilds them; None
    when there are none."""
    span = readers_after(app.pipeline, plan.phases, plan.end)
    latest = app.tracker.latest_data_date() if span is not None else None
    if span is None or latest is None or latest < span[0]:
        return None  # no window reaches across the end, or nothing after it was ever recorded
    phases = [ph.number for ph in app.pipeline.phases if ph.number >= min(plan.phases)]
    procs = select_processors(app.pipeline, phases=phases)
    after = build_plan(app.pipeline, app.tracker, procs, span[0], min(span[1], latest), versions=app.versions)
    stale = [k for k, c in after.cells.items() if c == "stale"]
    if not stale:
        return None
    last = max(date.fromisoformat(d) for _, d in stale)
    first_phase = min(app.pipeline.processor(n).phase for n, _ in stale)
    reach = covering_backfill(app, select_processors(app.pipeline, phases=[
        ph.number for ph in app.pipeline.phases if ph.number >= first_phase]), span[0], last)
    return len(stale), reach.command(app.pipeline)
