"""The pipeline calendar: which dates are expected to have data (expected dates) in which time zone.

A date outside every season, on a declared date without data (``no_game``: a holiday, a break ...), on a
weekday the pipeline is closed (``closed_weekdays: [sunday]``, e.g. a shop), or before the declared
``history_start`` (the pipeline has no data before it) is *not expected*: gap detection never
reports it and a backfill skips it. Ranges are inclusive on both sides.

**Expected dates from data** (``expected_from: {processor: schedule, where: {...}}``): inside
the declared seasons (and the rules above), a date is expected when the declared processor's table
has a row for it matching ``where`` - e.g. the days a schedule lists. The calendar stays a
pure object: those dates are *materialized* once per process (one parameterized query through the
warehouse over the seasons' span, ``attach``), kept for ``refresh_seconds`` and then read again, so
every consumer (strict mode, backfills, ``lookback_dates``, the status page, lint) calls the same
methods on the same answer. What the schedule does not answer is expected, never hidden:

* a date after the schedule's last loaded date (its newest row), or any date while the schedule
  could not be read, is **expected, unknown** (``note`` says so): a missing schedule never turns
  a gap into a date with no data expected;
* a date before the schedule's last loaded date without a matching row has no data expected - unless the
  source says ``unlisted: expected`` (a schedule loaded date by date, with its readers): then a
  date without any row is expected, unknown (its schedule is not loaded yet), and only a date whose
  rows all fail ``where`` (every event on it cancelled) has no data expected;
* the schedule processor's own partitions are expected on every date the declared rules expect
  (``is_expected(day, processor)``): it defines the calendar, so a schedule date that failed or
  never loaded shows as a gap of the schedule itself, and its readers become expected again as
  soon as it loads.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Callable, Iterable, Iterator
from zoneinfo import ZoneInfo

log = logging.getLogger("cascade.definition.calendar")

# A from-data calendar is read again after this many seconds unless the definition says otherwise.
DEFAULT_REFRESH_SECONDS = 300
# What a date without any row of the source (inside its loaded span) means: the first is the default.
UNLISTED = ("not_expected", "expected")
# After a failed read (the schedule's table missing, BigQuery down) the next try waits this long.
RETRY_AFTER_FAILURE_SECONDS = 30


def parse_date(text: str) -> date:
    """Parse ``YYYY-MM-DD`` strictly (``2024-02-30`` raises ValueError naming the problem)."""
    if not isinstance(text, str) or len(text) != 10:
        raise ValueError(f"{text!r} is not a date in YYYY-MM-DD form")
    return date.fromisoformat(text)


def date_range(start: date, end: date) -> Iterator[date]:
    """Every date from ``start`` to ``end``, inclusive on both sides."""
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)


@dataclass(frozen=True)
class Season:
    name: str
    start: date
    end: date


@dataclass(frozen=True)
class DataSource:
    """Where expected dates come from: a declared processor's output table, its rows filtered by
    ``where`` (column -> accepted values, e.g. ``{status: [final]}``; values are query parameters,
    columns are declared columns). ``unlisted``: what a date without any row means before the last
    loaded date - ``not_expected`` (a schedule loaded ahead) or ``expected`` (loaded date by date: not
    loaded yet)."""

    processor: str
    where: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    refresh_seconds: int = DEFAULT_REFRESH_SECONDS
    unlisted: str = UNLISTED[0]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"processor": self.processor}
        if self.where:
            out["where"] = {c: list(v) for c, v in self.where}
        if self.refresh_seconds != DEFAULT_REFRESH_SECONDS:
            out["refresh_seconds"] = self.refresh_seconds
        if self.unlisted != UNLISTED[0]:
            out["unlisted"] = self.unlisted
        return out


@dataclass(frozen=True)
class ScheduleDates:
    """What the schedule answered over the seasons' span: the dates with a matching row, and its last
    loaded date (its newest row of any kind; None when it has none), the dates with a row of any kind
    (``listed``; None when the loader does not say). ``error`` when it could not be read."""

    dates: frozenset[date] = frozenset()
    through: date | None = None
    error: str = ""
    listed: frozenset[date] | None = None


# ``loader(source, start, end) -> ScheduleDates`` (``Warehouse.calendar_dates``).
Loader = Callable[[DataSource, date, date], ScheduleDates]


class _Materialized:
    """The process's copy of a from-data calendar's dates: one read, kept ``refresh_seconds``."""

    def __init__(self, loader: Loader | None = None, data: ScheduleDates | None = None) -> None:
        self.lock = threading.Lock()
        self.loader = loader
        self.data = data
        self.until = float("inf") if data is not None and loader is None else float("-inf")


@dataclass(frozen=True)
class Calendar:
    """Seasons and dates without data of a pipeline, plus its time zone (for "yesterday"); optionally
    the processor whose data says which dates are expected, and where the pipeline's history starts."""

    timezone: str
    seasons: tuple[Season, ...]
    no_game_dates: frozenset[date] = field(default_factory=frozenset)
    no_game_reasons: tuple[tuple[date, str], ...] = ()
    closed_weekdays: frozenset[int] = field(default_factory=frozenset)  # 0 = Monday ... 6 = Sunday
    history_start: date | None = None  # no data before it: earlier dates are not expected, windows stop here
    expected_from: DataSource | None = None
    # Processors whose own history starts later (``history_start:`` on the processor): the same rule
    # for one table - its partitions before it are not expected, its readers' windows stop there.
    processor_starts: tuple[tuple[str, date], ...] = ()
    _dates: _Materialized = field(default_factory=_Materialized, compare=False, hash=False, repr=False)

    # ------------------------------------------------------------------ the declared rules
    def history_start_of(self, processor: str | None = None) -> date | None:
        """Where history starts for ``processor``'s table: the later of the pipeline's history start
        and the processor's own (None: neither is declared). Without ``processor``: the pipeline's."""
        own = dict(self.processor_starts).get(processor) if processor is not None else None
        if own is None or self.history_start is None:
            return own or self.history_start
        return max(own, self.history_start)

    def declared_expected(self, day: date, processor: str | None = None) -> bool:
        """True when the declared rules expect ``day``: inside a season, from the history start (of
        ``processor``, when given) on, not a declared date without data or a closed weekday (the data, if any,
        is not asked)."""
        if day in self.no_game_dates or day.weekday() in self.closed_weekdays:
            return False
        start = self.history_start_of(processor)
        if start is not None and day < start:
            return False
        return any(s.start <= day <= s.end for s in self.seasons)

    def is_expected(self, day: date, processor: str | None = None) -> bool:
        """True when ``day`` is expected: the declared rules expect it and, for a from-data calendar,
        the schedule lists it or does not cover it (unknown is expected). The schedule processor's own
        partitions (``processor`` = its name) are expected on every declared date. With ``processor``,
        its own history start counts too (nothing of it is expected before)."""
        if not self.declared_expected(day, processor):
            return False
        if self.expected_from is None or processor == self.expected_from.processor:
            return True
        data = self.schedule()
        return day in data.dates or self._uncovered(day, data)

    def skipped_by_declaration(self, day: date, processor: str) -> bool:
        """True when the pipeline expects ``day`` but ``processor``'s table does not (its own history
        starts later): that partition is done and empty by declaration. A run of its phase records it
        skipped without running it, a backfill plan leaves it out, its same-phase readers do not wait
        for it, and its phase completes (and hands on) without it."""
        return self.is_expected(day) and not self.is_expected(day, processor)

    def _uncovered(self, day: date, data: ScheduleDates) -> bool:
        """True when the schedule does not answer for ``day``: nothing read, after its last loaded date,
        or (``unlisted: expected``) no row of any kind for it."""
        if data.through is None or day > data.through:
            return True
        src = self.expected_from
        if src is not None and src.unlisted == "expected":
            listed = data.listed if data.listed is not None else data.dates
            return day not in listed
        return False

    def is_unknown(self, day: date) -> bool:
        """True when ``day`` is expected only because the schedule does not answer for it (after its
        last loaded date, no row for it under ``unlisted: expected``, or the schedule could not be read)."""
        if self.expected_from is None or not self.declared_expected(day):
            return False
        data = self.schedule()
        return day not in data.dates and self._uncovered(day, data)

    def expected_dates(self, start: date, end: date, processor: str | None = None) -> list[date]:
        """Expected dates from ``start`` to ``end`` inclusive (a declared break inside is skipped)."""
        return [d for d in date_range(start, end) if self.is_expected(d, processor)]

    def dates_with_rows(self, start: date, end: date, processor: str) -> list[date]:
        """The dates from ``start`` to ``end`` on which ``processor``'s table should hold rows (a
        presence check: gaps, coverage): its expected dates, except that the schedule of a from-data
        calendar holds rows only on the dates it lists (its partition of another declared date
        may be empty)."""
        if self.expected_from is not None and processor == self.expected_from.processor:
            return [d for d in date_range(start, end) if self.declared_expected(d, processor) and self.is_expected(d)]
        return self.expected_dates(start, end, processor)

    def first_date(self) -> date | None:
        """The first date anything can be expected: the first season's start, or the history start."""
        first = min((s.start for s in self.seasons), default=None)
        if first is None or self.history_start is None:
            return first or self.history_start
        return max(first, self.history_start)

    def nth_expected_on_or_before(self, end: date, n: int) -> date:
        """The ``n``-th expected date counting back from ``end`` (inclusive): the start of a window of
        "the last n expected dates". Stops at the first season's start (or the history start) when fewer exist."""
        earliest = self.first_date() or end
        day, found = end, 0
        while day >= earliest:
            if self.is_expected(day):
                found += 1
                if found == n:
                    return day
            day -= timedelta(days=1)
        return min(earliest, end)

    def clip(self, start: date, processor: str | None = None) -> date:
        """``start`` moved up to the history start (of ``processor``'s table, when given): a window
        never reaches before it."""
        first = self.history_start_of(processor)
        return max(start, first) if first is not None else start

    def reason_not_expected(self, day: date, processor: str | None = None) -> str:
        """Why no data is expected on ``day`` (a declared reason, "outside the season"), or "" for an expected date
        (of ``processor``, when given: before its own history start it has no data either)."""
        if self.is_expected(day, processor):
            return ""
        if day in self.no_game_dates:
            return dict(self.no_game_reasons).get(day, "declared in calendar.no_game")
        if day.weekday() in self.closed_weekdays:
            return f"closed on {WEEKDAYS[day.weekday()].capitalize()}s"
        start = self.history_start_of(processor)
        if start is not None and day < start:
            own = processor is not None and start != self.history_start
            return f"before the history start {start}" + (f" of {processor}" if own else "")
        if self.declared_expected(day) and self.expected_from is not None:
            return f"no matching row in {self.expected_from.processor}"
        return "outside the season"

    def note(self, day: date) -> str:
        """What a person should know about ``day``: why no data is expected, or that it is expected only
        because the schedule does not cover it yet; "" for a plain expected date."""
        if not self.is_expected(day):
            return f"no data expected: {self.reason_not_expected(day)}"
        if self.is_unknown(day):
            data, src = self.schedule(), self.expected_from
            assert src is not None
            why = (f"{src.processor} could not be read ({data.error[:160]})" if data.error
                   else f"{src.processor} has no rows yet" if data.through is None
                   else f"{src.processor} is loaded through {data.through}" if day > data.through
                   else f"{src.processor} has no row for {day} (loaded through {data.through})")
            return f"expected (unknown): {why}; a date the schedule does not cover counts as expected"
        return ""

    # ------------------------------------------------------------------ the materialized dates
    def schedule(self) -> ScheduleDates:
        """The from-data dates this process holds, read (again) when older than ``refresh_seconds``.
        Never raises: a failed read is an ``error`` with no dates, i.e. every declared date expected."""
        box, src = self._dates, self.expected_from
        if src is None:
            return ScheduleDates()
        with box.lock:
            now = time.monotonic()
            if box.loader is not None and now >= box.until:
                lo = self.first_date()
                hi = max((s.end for s in self.seasons), default=None)
                try:
                    box.data = box.loader(src, lo, hi) if lo and hi and lo <= hi else ScheduleDates()
                    box.until = now + src.refresh_seconds
                except Exception as exc:  # noqa: BLE001 - unknown is expected, never a hidden gap
                    log.warning("calendar: expected dates from %s could not be read: %s", src.processor, exc)
                    box.data = ScheduleDates(error=f"{type(exc).__name__}: {exc}")
                    box.until = now + min(src.refresh_seconds, RETRY_AFTER_FAILURE_SECONDS)
            return box.data or ScheduleDates()

    def attach(self, loader: Loader) -> None:
        """Read this calendar's expected dates with ``loader`` from now on (no-op without ``expected_from``).
        The first read happens on first use."""
        if self.expected_from is None:
            return
        with self._dates.lock:
            self._dates.loader, self._dates.until = loader, float("-inf")

    def refresh(self) -> ScheduleDates:
        """Read the dates again now (e.g. right after the schedule was loaded)."""
        with self._dates.lock:
            self._dates.until = float("-inf")
        return self.schedule()

    def with_history_starts(self, starts: dict[str, date]) -> "Calendar":
        """A copy knowing where each of these processors' own history starts (``history_start:`` on a
        processor); the materialized dates are shared."""
        return replace(self, processor_starts=tuple(sorted(starts.items())))

    def with_dates(self, dates: Iterable[date], through: date | None = None,
                   listed: Iterable[date] | None = None) -> "Calendar":
        """A copy holding these materialized dates (never read again): ``through`` defaults to the last;
        ``listed`` (dates with a row of any kind) to None (not said)."""
        days = frozenset(dates)
        last = through if through is not None else max(days, default=None)
        rows = frozenset(listed) if listed is not None else None
        return replace(self, _dates=_Materialized(data=ScheduleDates(days, last, listed=rows)))

    def detached(self) -> "Calendar":
        """A copy with its own materialized dates (not shared with this one), attached to nothing."""
        return replace(self, _dates=_Materialized())

    def yesterday(self, now: datetime) -> date:
        """The date before ``now`` in the pipeline's time zone (``now`` must be timezone-aware)."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return (now.astimezone(ZoneInfo(self.timezone)) - timedelta(days=1)).date()

    def today(self, now: datetime) -> date:
        """The date of ``now`` in the pipeline's time zone."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return now.astimezone(ZoneInfo(self.timezone)).date()

    def default_date(self, kind: str, now: datetime) -> date:
        """The date a date-less trigger means: ``yesterday`` or ``today`` in the pipeline's time zone."""
        return self.today(now) if kind == "today" else self.yesterday(now)

    @staticmethod
    def from_dict(raw: dict) -> "Calendar":
        seasons = tuple(Season(str(s["name"]), _d(s["start"]), _d(s["end"])) for s in raw.get("seasons", []))
        reasons: list[tuple[date, str]] = []
        for item in raw.get("no_game", []):
            start = _d(item.get("date", item.get("start")))
            end = _d(item.get("end", start))
            reasons.extend((d, str(item.get("reason", "declared in calendar.no_game"))) for d in date_range(start, end))
        ZoneInfo(raw["timezone"])  # validates the zone name
        closed = frozenset(WEEKDAYS.index(str(w).lower()) for w in raw.get("closed_weekdays", []))
        source = None
        if raw.get("expected_from") is not None:
            spec = raw["expected_from"]
            where = tuple((str(c), tuple(v if isinstance(v, list) else [v]))
                          for c, v in (spec.get("where") or {}).items())
            unlisted = str(spec.get("unlisted", UNLISTED[0]))
            if unlisted not in UNLISTED:
                raise ValueError(f"calendar.expected_from.unlisted is {unlisted!r}; it is one of {list(UNLISTED)}")
            source = DataSource(str(spec["processor"]), where,
                                int(spec.get("refresh_seconds", DEFAULT_REFRESH_SECONDS)), unlisted)
        start = raw.get("history_start")
        return Calendar(timezone=raw["timezone"], seasons=seasons,
                        no_game_dates=frozenset(d for d, _ in reasons), no_game_reasons=tuple(reasons),
                        closed_weekdays=closed, history_start=_d(start) if start is not None else None,
                        expected_from=source)

    def to_dict(self) -> dict:
        out = {
            "timezone": self.timezone,
            "seasons": [{"name": s.name, "start": s.start.isoformat(), "end": s.end.isoformat()} for s in self.seasons],
            "no_game": [{"date": d.isoformat(), "reason": r} for d, r in self.no_game_reasons],
            "closed_weekdays": [WEEKDAYS[w] for w in sorted(self.closed_weekdays)],
        }
        if self.history_start is not None:
            out["history_start"] = self.history_start.isoformat()
        if self.expected_from is not None:
            out["expected_from"] = self.expected_from.to_dict()
        return out


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _d(value: object) -> date:
    return value if isinstance(value, date) else parse_date(str(value))


def iso(dates: Iterable[date]) -> list[str]:
    return [d.isoformat() for d in dates]
