"""The local deployment: ``cascade up`` / ``cascade down`` on the emulators.

``up`` starts the four emulators and one functions-framework server per phase (exactly how Cloud
Functions 2nd gen runs them; every phase runs the generic ``functions/phase/main.py`` with
``CASCADE_PHASE`` set, so any definition runs locally without per-phase code), creates topics and
push subscriptions (retry + dead-letter policies), datasets, tables and the raw bucket from the
definition, writes the synthetic Phase 1 files, and writes ``<state>/env`` with the ``export``
lines a shell or the CLI needs. Every step is idempotent. ``down`` stops exactly the processes ``up`` recorded, nothing else.

A definition change is applied by the next ``up``: a function whose definition or code changed
(``deployed.local_versions``, recorded with each function) is restarted, an added output column is
added to its existing table, and a removed or retyped column is refused before anything restarts
(``warehouse.SchemaChangeError``, naming the rebuild) unless ``up`` is told to rebuild that table.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable

from cascade.definition.model import Pipeline
from cascade.dev.deployed import local_versions
from cascade.dev.localstack import Endpoints, LocalStack, free_port
from cascade.dev.provision import provision_emulators
from cascade.dev.synthetic import write_raw_files
from cascade.runtime import clients
from cascade.runtime.warehouse import Warehouse

REPO = Path(__file__).resolve().parents[2]
GENERIC_FUNCTION = REPO / "functions" / "phase" / "main.py"


@dataclass(frozen=True)
class LocalDeployment:
    endpoints: Endpoints
    functions: dict[int, str]  # phase -> base URL
    env_file: Path


def env_exports(endpoints: Endpoints, pipeline: Pipeline, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = endpoints.as_env()
    env["CASCADE_PROJECT"] = endpoints.project
    env["CASCADE_NAMESPACE"] = pipeline.namespace
    env["CASCADE_TRIGGER_TOPIC"] = pipeline.topic(pipeline.phases[0].number)
    env["CASCADE_PIPELINE_FILE"] = pipeline.source_path
    env.update(extra or {})
    return env


def function_env(endpoints: Endpoints, pipeline: Pipeline, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = env_exports(endpoints, pipeline)
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    env["THREADS"] = os.environ.get("CASCADE_FUNCTION_THREADS", "8")
    env.update(extra or {})
    return env


def start_functions(stack: LocalStack, endpoints: Endpoints, pipeline: Pipeline,
                    extra_env: dict[str, str] | None = None, phases: list[int] | None = None) -> dict[int, str]:
    """Start one functions-framework server per phase; phase -> URL. A running one is reused unless its
    command, environment, definition or code (``deployed.local_versions``) changed: then it is restarted.

    A function keeps the port it was recorded with, also after it crashed: its push subscription
    keeps pointing at it, so the messages Pub/Sub failed to push while it was down are redelivered
    to the restarted function (repointing the subscription while messages are in flight loses
    them). What is left of a crashed function's process group is stopped first
    (``LocalStack.start_process``)."""
    ff = str(Path(sys.executable).parent / "functions-framework")
    urls: dict[int, str] = {}
    versions = local_versions(pipeline)
    known = {int(n.rsplit("-", 1)[-1]): r for n, r in stack.running().items() if n.startswith(_fn_prefix(pipeline))}
    for ph in pipeline.phases:
        if phases is not None and ph.number not in phases:
            continue
        rec = known.get(ph.number)
        port = rec["port"] if rec else free_port()  # the recorded port, alive or crashed
        # One generic entry point serves every phase of any definition; CASCADE_PHASE says which.
        argv = [ff, "--target=handle", "--signature-type=cloudevent", f"--source={GENERIC_FUNCTION}",
                "--host=127.0.0.1", f"--port={port}"]
        url = f"http://127.0.0.1:{port}"
        env = function_env(endpoints, pipeline, extra_env)
        env["CASCADE_PHASE"] = str(ph.number)
        # Requests one instance serves at once: the phase's declared concurrency, as deployed.
        env["THREADS"] = os.environ.get("CASCADE_FUNCTION_THREADS") or str(ph.concurrency)
        stack.start_process(f"{_fn_prefix(pipeline)}{ph.number}", argv, env, ready_url=url + "/", cwd=REPO,
                            meta=versions)
        urls[ph.number] = url
    return urls


def _fn_prefix(pipeline: Pipeline) -> str:
    # The pipeline's name too: two pipelines can run side by side in one namespace.
    return f"function-{pipeline.namespace or 'default'}-{pipeline.name}-phase-"


def running_functions(pipeline: Pipeline, state_dir: Path) -> dict[int, dict]:
    """phase -> the versions recorded with its running function (only live ones) under ``state_dir``."""
    prefix = _fn_prefix(pipeline)
    stack = LocalStack(state_dir, log=lambda _msg: None)
    return {int(name.rsplit("-", 1)[-1]): rec["meta"] for name, rec in stack.running().items()
            if name.startswith(prefix) and rec["alive"]}


@contextlib.contextmanager
def _emulator_env(endpoints: Endpoints) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(endpoints.as_env())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def check_tables(pipeline: Pipeline, endpoints: Endpoints, rebuild: Sequence[str] = (),
                 progress: Callable[[str], None] = print) -> None:
    """Drop the tables of the processors in ``rebuild``, then bring the tables to the definition before
    any function restarts: refuse (``SchemaChangeError``) when an existing table has a column the
    definition removed or retyped, else create missing tables and add added columns."""
    with _emulator_env(endpoints):
        wh = Warehouse(clients.bigquery(endpoints.project), pipeline, endpoints.project)
        for name in rebuild:
            proc = pipeline.processor(name)
            if wh.drop_table(proc):
                progress(f"bigquery: dropped {wh.table_id(proc.output)} (rebuilt from the definition below)")
        for change in wh.schema_changes():
            if change.kind == "added":
                progress(f"bigquery: {change.table}: {change.describe()} to the table")
        wh.ensure_tables()


def up(pipeline: Pipeline, state_dir: Path, project: str, start: date | None, end: date | None,
       progress: Callable[[str], None] = print, extra_env: dict[str, str] | None = None,
       rebuild: Sequence[str] = ()) -> LocalDeployment:
    """Bring the local stack to the definition; ``rebuild``: processors whose tables are dropped and
    recreated first (their rows are lost). Raises ``SchemaChangeError`` before any function restarts
    when an existing table has a removed or retyped column."""
    for name in rebuild:
        pipeline.processor(name)  # an unknown name is refused before anything starts
    stack = LocalStack(state_dir, project=project, log=progress)
    progress("starting emulators (pubsub, firestore, bigquery, storage) ...")
    endpoints = stack.start_emulators()
    progress(f"emulators ready: {endpoints}")
    check_tables(pipeline, endpoints, rebuild, progress)
    functions = start_functions(stack, endpoints, pipeline, extra_env)
    progress("functions ready: " + ", ".join(f"phase {n} at {u}" for n, u in functions.items()))
    provision_emulators(pipeline, endpoints, functions, progress=progress)
    if start and end:
        saved = dict(os.environ)
        os.environ.update(endpoints.as_env())
        try:
            write_raw_files(pipeline, clients.storage(project), project, start, end, progress)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    env_file = state_dir / "env"
    exports = env_exports(endpoints, pipeline)
    env_file.write_text("".join(f"export {k}={v}\n" for k, v in sorted(exports.items())))
    progress(f"wrote {env_file} (source it to use gcloud or the clients against the emulators)")
    return LocalDeployment(endpoints, functions, env_file)


def down(state_dir: Path, progress: Callable[[str], None] = print) -> list[str]:
    stack = LocalStack(state_dir, log=progress)
    stopped = stack.stop()
    env_file = state_dir / "env"
    if env_file.exists():
        env_file.unlink()
    progress(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    return stopped
