"""Realistic synthetic Phase 1 output of the reference NBA pipeline: scraped JSON files, deterministically.

Declared in ``pipelines/nba.yaml`` as ``synthetic: nba_synthetic:day_files``; ``cascade.dev.synthetic``
writes what it returns (any other pipeline gets files derived from its definition). For each game
day of the calendar:

* ``nbacom/schedule/{date}.json``: ``{"game_date", "games": [{game_id, home_team, away_team, arena, tipoff_et,
  game_status}]}`` - the file as scraped after the date's games: every game final (``game_status`` 3),
  so the calendar taken from the schedule (``expected_from``) agrees with the declared one
* ``nbacom/player_boxscores/{date}.json``: ``{"game_date", "players": [{game_id, player_id, player_name,
  team, minutes, points, rebounds, assists, fgm, fga, fg3m, fg3a, ftm, fta}]}``

Values are seeded by the date, so the same date always yields the same files, and they add up the
way a person expects: points = 2*(fgm - fg3m) + 3*fg3m + ftm, made <= attempted, 6-12 games a day,
every team at most once a day, 8 players per team line.
"""

from __future__ import annotations

import random
from datetime import date
from typing import Any

TEAMS = ["ATL", "BOS", "BKN", "CHA", "CHI", "CLE", "DAL", "DEN", "DET", "GSW", "HOU", "IND", "LAC", "LAL", "MEM",
         "MIA", "MIL", "MIN", "NOP", "NYK", "OKC", "ORL", "PHI", "PHX", "POR", "SAC", "SAS", "TOR", "UTA", "WAS"]
PLAYERS_PER_TEAM = 8
_FIRST = ["Jalen", "Marcus", "Tyrese", "Devin", "Anthony", "Luka", "Jayson", "Donovan", "Trae", "Zion", "Kevin", "Paolo"]
_LAST = ["Brooks", "Carter", "Davis", "Edwards", "Fox", "Green", "Harris", "Irving", "Jones", "King", "Lopez", "Murray"]


def player_id(team: str, slot: int) -> int:
    return 1000 + TEAMS.index(team) * 100 + slot


def player_name(team: str, slot: int) -> str:
    i = TEAMS.index(team)
    return f"{_FIRST[(i + slot) % len(_FIRST)]} {_LAST[(i * 7 + slot * 5) % len(_LAST)]}"


def day_files(day: date) -> dict[str, dict[str, Any]]:
    """The two raw files of one game day, as JSON-ready dicts (deterministic in ``day``)."""
    rng = random.Random(day.toordinal())
    teams = TEAMS[:]
    rng.shuffle(teams)
    n_games = rng.randint(6, 12)
    games, players = [], []
    for g in range(n_games):
        home, away = teams[2 * g], teams[2 * g + 1]
        game_id = f"00{day.strftime('%y%m%d')}{g + 1:02d}"
        games.append({"game_id": game_id, "home_team": home, "away_team": away, "arena": f"{home} Arena",
                      "tipoff_et": f"{19 + g % 3}:{'30' if g % 2 else '00'}", "game_status": 3})
        for team in (home, away):
            for slot in range(PLAYERS_PER_TEAM):
                star = 1.6 if slot == 0 else 1.25 if slot < 3 else 1.0
                minutes = round(max(8.0, rng.gauss(34 - slot * 2.5, 3.0)), 1)
                fga = max(1, int(rng.gauss(minutes * 0.42 * star, 2)))
                fgm = min(fga, max(0, int(fga * rng.uniform(0.38, 0.56))))
                fg3a = min(fga, max(0, int(fga * rng.uniform(0.2, 0.45))))
                fg3m = min(fgm, fg3a, max(0, int(fg3a * rng.uniform(0.28, 0.42))))
                fta = max(0, int(rng.gauss(3 * star, 1.5)))
                ftm = min(fta, int(fta * rng.uniform(0.65, 0.9) + 0.5))
                players.append({
                    "game_id": game_id, "player_id": player_id(team, slot), "player_name": player_name(team, slot),
                    "team": team, "minutes": minutes, "points": 2 * (fgm - fg3m) + 3 * fg3m + ftm,
                    "rebounds": max(0, int(rng.gauss(6 - slot * 0.4, 2.5))),
                    "assists": max(0, int(rng.gauss(4.5 * star - slot * 0.3, 2))),
                    "fgm": fgm, "fga": fga, "fg3m": fg3m, "fg3a": fg3a, "ftm": ftm, "fta": fta})
    iso = day.isoformat()
    return {"nbacom/schedule/{date}.json": {"game_date": iso, "games": games},
            "nbacom/player_boxscores/{date}.json": {"game_date": iso, "players": players}}
