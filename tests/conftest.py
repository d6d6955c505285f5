"""Session fixtures: the emulators are started once per test session on free ports.

Tests isolate themselves with a namespace each (every topic, dataset, bucket and Firestore
collection carries it), so they never see each other's state and never need a reset.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from shared.localstack import Endpoints, LocalStack

from .harness import Harness, new_namespace

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
