"""Daily operations on the local stack: what the schedulers do each morning, and a season replay.

``run_morning(app, now)`` plays one morning exactly like production: the Phase 1 stand-in writes
the scraped files, then every phase with a ``schedule`` in the definition gets its date-less
trigger's date (``yesterday`` or ``today`` in the pipeline's time zone, from the injected ``now``)
published to its topic, in schedule order, and each cascade is awaited on Firestore state.

``simulate`` replays N mornings with an injected clock, optionally making raw loads fail
(``nbac_player_boxscore@2025-01-10``: that scraped file is missing that morning). On the next
morning the ops team recovers: restore the file, re-run the failed phase for the
failed date, then re-trigger what strict mode blocked. Only the clock is injected: messages go
through Pub/Sub to the phase functions, as in production.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from typing import Callable, Iterable
from zoneinfo import ZoneInfo

from cascade.dev.synthetic import write_day
from cascade.ops.date_status import date_status, wait_for_phase
from cascade.runtime.app import App
from cascade.runtime.messages import Trigger, new_correlation_id
from cascade.state.status import Status


@dataclass
class Morning:
    """What one simulated morning ran: (date, phase) -> status, with notes on blocks and recoveries."""

    now: datetime
    runs: dict[tuple[str, int], str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def scheduled_phases(app: App) -> list[tuple[int, str]]:
    """(phase, default_date) of every scheduled phase, in order of their cron time of day."""
    def minutes(cron: str) -> int:
        minute, hour = cron.split()[:2]
        return int(hour) * 60 + int(minute)
    items = [(minutes(p.schedule), p.number, p.default_date) for p in app.pipeline.phases if p.schedule]
    return [(n, d) for _, n, d in sorted(items)]


def scrape(app: App, day: date, missing: Iterable[str] = ()) -> list[str]:
    """The Phase 1 stand-in: write ``day``'s scraped files, except those of the ``missing`` processors."""
    failed = {str(app.pipeline.processor(p).source["gcs_json"]) for p in missing}
    return write_day(app.pipeline, app.storage.bucket(app.pipeline.bucket(app.project)), day, failed)


def kick(app: App, phase: int, day: date, **fields) -> str:
    trig = Trigger(pipeline=app.pipeline.name, phase=phase, data_date=day, correlation_id=new_correlation_id(), **fields)
    return app.publisher.publish(app.pipeline.topic(phase), trig.to_json(), trig.attributes())


def run_chain(app: App, phase: int, day: date, timeout: float, **fields) -> dict[int, str]:
    """Trigger ``phase`` for ``day`` and wait for the end of its cascade; phase -> status."""
    since = app.clock()
    kick(app, phase, day, **fields)
    last = app.pipeline.downstream_phases(phase)[-1]
    if app.pipeline.calendar.is_expected(day):
        wait_for_phase(app, day, last, timeout, since=since)
    st = date_status(app, day)
    return {n: st["phases"][str(n)]["status"] for n in app.pipeline.downstream_phases(phase)}


def run_morning(app: App, now: datetime, timeout: float = 120.0, missing: dict[date, set[str]] | None = None,
                before_predictions: Callable[[Morning], None] | None = None) -> Morning:
    """One morning of the schedulers at ``now`` (timezone-aware)."""
    cal = app.pipeline.calendar
    morning = Morning(now)
    yesterday, today = cal.yesterday(now), cal.today(now)
    missing = missing or {}
    scrape(app, yesterday, missing.get(yesterday, ()))
    scrape(app, today, missing.get(today, ()))
    for i, (phase, which) in enumerate(scheduled_phases(app)):
        if i > 0 and before_predictions:
            before_predictions(morning)
        day = cal.default_date(which, now)
        for n, status in run_chain(app, phase, day, timeout).items():
            morning.runs[(day.isoformat(), n)] = status
        _explain(app, day, phase, morning)
    return morning


def _explain(app: App, day: date, phase: int, morning: Morning) -> None:
    st = date_status(app, day)
    if not st["expected"]:
        morning.notes.append(f"{day}: {st.get('note')}")
        return
    for n in app.pipeline.downstream_phases(phase):
        for name, p in st["phases"][str(n)]["processors"].items():
            if p["status"] in (Status.BLOCKED, Status.FAILED) and p.get("error"):
                morning.notes.append(f"{day} {name} {p['status'].upper()}: {p['error'].split('; resolution')[0][:160]}")


def simulate(app: App, start: datetime, days: int, fails: list[tuple[str, date]], timeout: float = 120.0,
             progress: Callable[[str], None] = print) -> list[Morning]:
    """Replay ``days`` mornings from ``start``; returns what each morning ran."""
    missing: dict[date, set[str]] = {}
    for proc, day in fails:
        missing.setdefault(day, set()).add(proc)
    mornings: list[Morning] = []
    to_recover: list[date] = []
    for k in range(days):
        now = start + timedelta(days=k)
        pending = list(to_recover)
        to_recover.clear()

        def recover(morning: Morning) -> None:
            # The runbook: restore yesterday's failed scrapes and re-run the failed phase, then
            # re-trigger what strict mode blocked this morning because of them.
            blocked_now = sorted({date.fromisoformat(d) for (d, n), st in morning.runs.items() if st == Status.BLOCKED})
            for day in sorted(pending) + [d for d in blocked_now if d not in pending]:
                scrape(app, day)
                st = date_status(app, day)
                first_bad = next((int(n) for n, ph in st["phases"].items()
                                  if int(n) in app.pipeline.downstream_phases(app.pipeline.phases[0].number)
                                  and ph["status"] in (Status.FAILED, Status.BLOCKED, Status.MISSING, Status.PARTIAL,
                                                       Status.TRIGGERED)), None)
                if first_bad is None:
                    continue
                result = run_chain(app, first_bad, day, timeout)
                for n, status in result.items():
                    morning.runs[(day.isoformat(), n)] = status
                ok = all(s == Status.COMPLETE for s in result.values())
                morning.notes.append(f"{day}: ops re-ran phase {first_bad} -> " + ("RECOVERED" if ok else "still " + str(result)))

        morning = run_morning(app, now, timeout, missing, before_predictions=recover)
        for (iso, n), status in morning.runs.items():
            day = date.fromisoformat(iso)
            if status in (Status.FAILED, Status.BLOCKED) and n < 5 and day not in to_recover:
                to_recover.append(day)
                missing.pop(day, None)  # the scraper is fixed by the next morning
        mornings.append(morning)
        progress(f"morning {k + 1}/{days} ({now.date()}): " + ", ".join(f"{d} p{n}={s}" for (d, n), s in sorted(morning.runs.items())))
    return mornings


def morning_at(day: date, tz: str, hour: int = 10) -> datetime:
    return datetime.combine(day, dtime(hour, 0), tzinfo=ZoneInfo(tz))


def render_table(app: App, mornings: list[Morning]) -> str:
    phases = [p.number for p in app.pipeline.phases]
    lines = [f"{'morning':<11} {'date':<11} " + " ".join(f"{'p' + str(n):<9}" for n in phases)]
    for m in mornings:
        days = sorted({d for d, _ in m.runs})
        for i, d in enumerate(days):
            cells = " ".join(f"{m.runs.get((d, n), ''):<9}" for n in phases)
            lines.append(f"{(str(m.now.date()) if i == 0 else ''):<11} {d:<11} {cells}")
        for note in m.notes:
            lines.append(f"{'':<11}   - {note}")
    return "\n".join(lines)
