"""The pipeline calendar: which dates are expected to have data (game days) in which time zone.

A date outside every season, on a declared no-game date (All-Star break, Thanksgiving ...), or on a
weekday the pipeline is closed (``closed_weekdays: [sunday]``, e.g. a shop) is *not expected*: gap detection never reports it and a backfill skips it. Ranges are inclusive on
both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Iterable, Iterator
from zoneinfo import ZoneInfo


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
class Calendar:
    """Seasons and no-game dates of a pipeline, plus its time zone (for "yesterday")."""

    timezone: str
    seasons: tuple[Season, ...]
    no_game_dates: frozenset[date] = field(default_factory=frozenset)
    no_game_reasons: tuple[tuple[date, str], ...] = ()
    closed_weekdays: frozenset[int] = field(default_factory=frozenset)  # 0 = Monday ... 6 = Sunday

    def is_expected(self, day: date) -> bool:
        """True when ``day`` is a game day: inside a season and not a declared no-game date."""
        if day in self.no_game_dates or day.weekday() in self.closed_weekdays:
            return False
        return any(s.start <= day <= s.end for s in self.seasons)

    def expected_dates(self, start: date, end: date) -> list[date]:
        """Game days from ``start`` to ``end`` inclusive, e.g. 2025-02-12..2025-02-21 skips the All-Star break."""
        return [d for d in date_range(start, end) if self.is_expected(d)]

    def nth_expected_on_or_before(self, end: date, n: int) -> date:
        """The ``n``-th expected date counting back from ``end`` (inclusive): the start of a window of
        "the last n game dates". Stops at the first season's start when fewer exist."""
        earliest = min((s.start for s in self.seasons), default=end)
        day, found = end, 0
        while day >= earliest:
            if self.is_expected(day):
                found += 1
                if found == n:
                    return day
            day -= timedelta(days=1)
        return min(earliest, end)

    def reason_not_expected(self, day: date) -> str:
        """Why ``day`` has no games ("All-Star break", "outside the season"), or "" for a game day."""
        if self.is_expected(day):
            return ""
        if day in self.no_game_dates:
            return dict(self.no_game_reasons).get(day, "no games")
        if day.weekday() in self.closed_weekdays:
            return f"closed on {WEEKDAYS[day.weekday()].capitalize()}s"
        return "outside the season"

    def window(self, day: date, lookback_days: int) -> tuple[date, date]:
        """The lookback window of ``day``: lookback 30 on 2025-01-31 is 2025-01-01..2025-01-31."""
        return day - timedelta(days=lookback_days), day

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
            reasons.extend((d, str(item.get("reason", "no games"))) for d in date_range(start, end))
        ZoneInfo(raw["timezone"])  # validates the zone name
        closed = frozenset(WEEKDAYS.index(str(w).lower()) for w in raw.get("closed_weekdays", []))
        return Calendar(timezone=raw["timezone"], seasons=seasons,
                        no_game_dates=frozenset(d for d, _ in reasons), no_game_reasons=tuple(reasons),
                        closed_weekdays=closed)

    def to_dict(self) -> dict:
        return {
            "timezone": self.timezone,
            "seasons": [{"name": s.name, "start": s.start.isoformat(), "end": s.end.isoformat()} for s in self.seasons],
            "no_game": [{"date": d.isoformat(), "reason": r} for d, r in self.no_game_reasons],
            "closed_weekdays": [WEEKDAYS[w] for w in sorted(self.closed_weekdays)],
        }


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _d(value: object) -> date:
    return value if isinstance(value, date) else parse_date(str(value))


def iso(dates: Iterable[date]) -> list[str]:
    return [d.isoformat() for d in dates]
