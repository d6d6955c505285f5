"""Session fixtures: the emulators are started once per test session on free ports.

Tests isolate themselves with a namespace each (every topic, dataset, bucket and Firestore
collection carries it), so they never see each other's state and never need a reset.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from cascade.definition.loading import DEFAULT_DEFINITION, load
from cascade.dev import faults
from cascade.dev.localstack import Endpoints, LocalStack

from .harness import FakeClock, Harness, new_namespace

PROJECT = "cascade-test"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    ls = LocalStack(tmp_path_factory.mktemp("cascade-stack"), project=PROJECT, log=lambda _m: None)
    try:
        yield ls
    finally:
        ls.stop()


@pytest.fixture(scope="session")
def endpoints(stack: LocalStack) -> Iterator[Endpoints]:
    eps = stack.start_emulators()
    saved = dict(os.environ)
    os.environ.update(eps.as_env())
    os.environ["CASCADE_PROJECT"] = eps.project
    try:
        yield eps
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture()
def harness(endpoints: Endpoints) -> Harness:
    """A freshly provisioned namespace of the reference pipeline (no raw files yet)."""
    return Harness(endpoints, new_namespace()).provision()


@pytest.fixture()
def make_harness(endpoints: Endpoints):
    """Factory: ``make_harness(pipeline_file=..., settings_overrides=..., clock=...)``."""
    def make(**kw) -> Harness:
        return Harness(endpoints, new_namespace(), **kw).provision()
    return make


@pytest.fixture()
def state_dir(tmp_path: Path) -> Path:
    return tmp_path


# ---------------------------------------------------------------------- variants of the reference definition
def _nba_variant(tmp_path_factory: pytest.TempPathFactory, name: str, edit) -> str:
    raw = yaml.safe_load(DEFAULT_DEFINITION.read_text())
    edit(raw)
    path = tmp_path_factory.mktemp("defs") / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture(scope="session")
def short_lookback(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference pipeline with 10-day lookbacks (short windows to load around the All-Star break)."""
    def edit(raw: dict) -> None:
        for proc in raw["processors"]:
            for up in proc.get("upstreams", []):
                if isinstance(up, dict) and up.get("lookback_days"):
                    up["lookback_days"] = 10
    return Path(_nba_variant(tmp_path_factory, "nba_short", edit))


SEASON_START = "2025-01-06"


@pytest.fixture(scope="session")
def season_from_start(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The reference pipeline with its 2024-25 season starting on 2025-01-06: lookbacks before it reach
    outside the season (not expected), so a backfill from that date has all its inputs - a backfill
    elsewhere must find its history present (``test_edges_state``)."""
    def edit(raw: dict) -> None:
        for season in raw["calendar"]["seasons"]:
            if season["name"] == "2024-25":
                season["start"] = SEASON_START
    return _nba_variant(tmp_path_factory, "nba_from_start", edit)


@pytest.fixture()
def inject(monkeypatch):
    """``inject("after_merge:p@2025-01-15*1")``: enable the fault hook with that spec for this test."""
    def set_faults(spec: str) -> None:
        faults._used.clear()
        monkeypatch.setenv("CASCADE_ENABLE_FAULTS", "1")
        monkeypatch.setenv("CASCADE_FAULTS", spec)
    yield set_faults
    faults._used.clear()
    faults.release_slow.clear()


# ---------------------------------------------------------------------- unit tests on the in-memory store
UNIT_T0 = datetime(2025, 1, 16, 10, tzinfo=timezone.utc)  # the unit tests' "now" (T0 in those modules)


@pytest.fixture(scope="module")
def pipeline():
    """The reference definition in the namespace "unit", for unit tests without emulators."""
    return load(namespace="unit")


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock(UNIT_T0)
