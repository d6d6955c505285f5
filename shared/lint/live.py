"""The local stack's BigQuery, when one is running: what ``cascade lint`` compares existing tables with.

Found from the environment (``BIGQUERY_EMULATOR_HOST``, ``CASCADE_PROJECT``, ``CASCADE_NAMESPACE``)
or else from ``<state>/env`` (``$CASCADE_STATE_DIR``, default ``.cascade``), the file ``cascade up``
writes. Only an emulator that accepts a connection within a second counts as running, so a linter
without a stack stays instant. Production tables are never read by lint.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

_KEYS = ("BIGQUERY_EMULATOR_HOST", "CASCADE_PROJECT", "CASCADE_NAMESPACE")


def _settings() -> dict[str, str]:
    if os.environ.get("BIGQUERY_EMULATOR_HOST"):
        return {k: os.environ[k] for k in _KEYS if k in os.environ}
    env_file = Path(os.environ.get("CASCADE_STATE_DIR", ".cascade")) / "env"
    out: dict[str, str] = {}
    try:
        lines = env_file.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        key, _, value = line.removeprefix("export ").partition("=")
        if key.strip() in _KEYS:
            out[key.strip()] = value.strip()
    return out


def answers(host: str) -> bool:
    """True when something accepts a TCP connection at ``host`` (``127.0.0.1:9050`` or a URL) within 1 s."""
    url = urlparse(host if host.startswith("http") else f"http://{host}")
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=1.0):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def live_warehouse(pipeline: Any) -> Iterator[tuple[Any, str] | None]:
    """``(Warehouse, "where")`` over the running local stack's BigQuery for ``pipeline`` (with the
    stack's namespace), or None when no local stack is running."""
    settings = _settings()
    host = settings.get("BIGQUERY_EMULATOR_HOST")
    if not host or not answers(host):
        yield None
        return
    from cascade.runtime import clients
    from cascade.runtime.warehouse import Warehouse

    project = settings.get("CASCADE_PROJECT") or "cascade-local"
    namespace = settings.get("CASCADE_NAMESPACE", "")
    saved = os.environ.get("BIGQUERY_EMULATOR_HOST")
    os.environ["BIGQUERY_EMULATOR_HOST"] = host
    try:
        client = clients.bigquery(project)
    finally:
        if saved is None:
            os.environ.pop("BIGQUERY_EMULATOR_HOST", None)
        else:
            os.environ["BIGQUERY_EMULATOR_HOST"] = saved
    where = f"the local stack's BigQuery at {host}, project {project}" + (f", namespace {namespace}" if namespace else "")
    yield Warehouse(client, pipeline.with_namespace(namespace), project, timeout=30.0), where
