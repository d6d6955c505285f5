"""A definition that changes is applied safely: on the local functions, on existing tables, in status.

Each test writes a one-phase pipeline of one SQL processor, runs it, changes the definition and
checks what the next ``cascade up`` / ``cascade lint`` / ``cascade status`` does with the change.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from datetime import date
from pathlib import Path

import yaml
from werkzeug.test import Client

from cascade.definition.loading import load
from cascade.dev.deployed import local_versions
from cascade.dev.local import running_functions, start_functions, up
from cascade.dev.localstack import LocalStack
from cascade.lint import lint
from cascade.ui.server import StatusPage

from .conftest import PROJECT
from .harness import ROOT, Harness, env_for, new_namespace, wait_until

D1, D2 = date(2025, 1, 14), date(2025, 1, 15)


def definition(path: Path, columns: dict[str, str], select: str) -> str:
    """A pipeline with one phase and one SQL processor `calc` writing `calc.out` keyed on k."""
    raw = {"pipeline": "change", "description": "definition changes", "raw_bucket": "change",
           "calendar": {"timezone": "UTC", "seasons": [{"name": "all", "start": "2020-01-01", "end": "2030-12-31"}]},
           "phases": [{"number": 2, "name": "calc"}],
           "processors": [{"name": "calc", "phase": 2, "description": "one row per date",
                           "output": {"table": "calc.out", "date_column": "d", "keys": ["k"],
                                      "columns": {"d": "DATE", "k": "INT64", **columns}},
                           "sql": f"SELECT @data_date AS d, 1 AS k, {select}"}]}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def run_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cascade.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def status_of(h: Harness, day: date) -> str:
    return h.app.tracker.partition("calc", day).status


def test_added_output_column_is_added_to_the_existing_table(make_harness, tmp_path):
    path = definition(tmp_path / "change.yaml", {"v": "INT64"}, "10 AS v")
    h = make_harness(pipeline_file=path)
    assert h.deliver(h.trigger(D1)).outcomes[0].status == "success"

    definition(tmp_path / "change.yaml", {"v": "INT64", "note": "STRING"}, "10 AS v, 'added' AS note")
    h2 = Harness(h.endpoints, h.namespace, pipeline_file=path).provision()  # what `cascade up` runs
    outcome = h2.deliver(h2.trigger(D2)).outcomes[0]
    assert outcome.status == "success", outcome
    assert h2.rows("calc", D2) == [{"d": D2, "k": 1, "v": 10, "note": "added"}]
    assert h2.rows("calc", D1) == [{"d": D1, "k": 1, "v": 10, "note": None}]  # rows written before: NULL
    assert h2.app.warehouse.schema_changes() == []  # the table now matches its definition


def test_changed_definition_is_picked_up_by_the_local_functions_after_cascade_up(stack, endpoints, tmp_path):
    path = definition(tmp_path / "change.yaml", {"v": "INT64"}, "1 AS v")
    ns = new_namespace()
    names: list[str] = []

    def cascade_up() -> int:
        up(load(path, namespace=ns), stack.state_dir, PROJECT, None, None, progress=lambda _m: None)
        running = {n: r for n, r in stack.running().items() if n.startswith(f"function-{ns}-") and r["alive"]}
        names[:] = list(running)
        (rec,) = running.values()
        return rec["pid"]

    def run_date(day: date) -> int:
        h = Harness(endpoints, ns, pipeline_file=path)
        trig = h.trigger(day)
        h.app.publisher.publish(h.pipeline.topic(2), trig.to_json(), trig.attributes())
        assert wait_until(lambda: status_of(h, day) == "success", timeout=90), h.app.tracker.partition("calc", day)
        return h.rows("calc", day)[0]["v"]

    try:
        first = cascade_up()
        assert run_date(D1) == 1
        assert cascade_up() == first  # nothing changed: the running function is reused

        definition(tmp_path / "change.yaml", {"v": "INT64"}, "2 AS v")
        second = cascade_up()
        assert second != first  # the definition changed: the function was restarted ...
        assert run_date(D2) == 2  # ... and runs the new one
        assert running_functions(load(path, namespace=ns), stack.state_dir)[2] == local_versions(
            load(path, namespace=ns))
    finally:
        stack.stop(names)


def test_removed_or_retyped_column_is_refused_with_the_rebuild_it_needs(make_harness, stack, endpoints, tmp_path,
                                                                         monkeypatch):
    path = definition(tmp_path / "change.yaml", {"v": "INT64", "w": "STRING"}, "1 AS v, 'old' AS w")
    h = make_harness(pipeline_file=path)
    for day in (D1, D2):
        assert h.deliver(h.trigger(day)).outcomes[0].status == "success"
    table = h.app.warehouse.table_id(h.pipeline.processor("calc").output)

    definition(tmp_path / "change.yaml", {"v": "FLOAT64"}, "2.5 AS v")  # v retyped, w removed
    commands = ["cascade up --rebuild-table calc",
                f"cascade backfill --start {D1} --end {D2} --phase 2 --processor calc --force"]

    # lint compares with the running stack's table (this session's emulators, this namespace)
    monkeypatch.setenv("CASCADE_NAMESPACE", h.namespace)
    report = lint(path, sql=False)
    (problem,) = report.problems
    assert problem.check == "table" and problem.processor == "calc"
    assert f"table {table} exists with column v INT64; column w STRING" in problem.message
    assert "the definition has v FLOAT64; no column w" in problem.message
    assert problem.fix.endswith(" then ".join(f"`{c}`" for c in commands)), problem.fix

    # `cascade up` refuses before it starts or changes anything, with the same rebuild
    env = {**env_for(endpoints), "CASCADE_STATE_DIR": str(stack.state_dir), "CASCADE_PIPELINE_FILE": path,
           "CASCADE_NAMESPACE": h.namespace, "CASCADE_PROJECT": PROJECT}
    refused = run_cli(["up"], env)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert (f"processor calc: table {table}: column v retyped from INT64 to FLOAT64; column w (STRING) removed"
            in refused.stderr)
    assert [line.strip() for line in refused.stderr.splitlines() if line.startswith("    ")] == commands
    assert running_functions(h.pipeline, stack.state_dir) == {}

    # every printed command, run as printed, rebuilds the table and its rows
    try:
        for command in commands:
            done = run_cli(shlex.split(command)[1:], env)
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    finally:
        stack.stop([n for n in stack.running() if n.startswith(f"function-{h.namespace}-")])
    h2 = Harness(endpoints, h.namespace, pipeline_file=path)
    assert [h2.rows("calc", day) for day in (D1, D2)] == [[{"d": D1, "k": 1, "v": 2.5}], [{"d": D2, "k": 1, "v": 2.5}]]
    assert lint(path, sql=False).ok


def test_status_and_the_status_page_say_when_the_running_functions_run_another_definition(make_harness, endpoints,
                                                                                          tmp_path):
    path = definition(tmp_path / "change.yaml", {"v": "INT64"}, "1 AS v")
    h = make_harness(pipeline_file=path)
    state = tmp_path / "state"
    functions = LocalStack(state, project=PROJECT, log=lambda _m: None)
    env = {**env_for(endpoints), "CASCADE_STATE_DIR": str(state), "CASCADE_PIPELINE_FILE": path,
           "CASCADE_NAMESPACE": h.namespace, "CASCADE_PROJECT": PROJECT}
    try:
        start_functions(functions, endpoints, h.pipeline, {"CASCADE_NAMESPACE": h.namespace})
        same = run_cli(["status", "--date", str(D1), "--json"], env)
        assert json.loads(same.stdout)["deployed"] is None, same.stderr
        page = StatusPage(h.app, start=D1, end=D2, state_dir=state)
        assert "deployed-drift" not in Client(page).get("/").get_data(as_text=True)

        definition(tmp_path / "change.yaml", {"v": "INT64"}, "2 AS v")
        note = ("the running functions of phase(s) 2 were started with another definition than the local one: "
                "the definition changed (running ")
        text = run_cli(["status", "--date", str(D1)], env)
        assert text.returncode == 0, text.stderr
        assert f"note: {note}" in text.stdout and "run `cascade up` to restart them" in text.stdout
        deployed = json.loads(run_cli(["status", "--date", str(D1), "--json"], env).stdout)["deployed"]
        assert deployed["differs"] and deployed["phases"] == [2] and deployed["changed"] == ["definition", "files"]
        html = Client(page).get("/").get_data(as_text=True)
        assert 'id="deployed-drift"' in html and note in html
    finally:
        functions.stop()


def test_the_drift_note_names_only_the_part_that_differs_with_its_own_digests():
    from cascade.dev.deployed import drift

    local = {"definition": "d" * 16, "files": "f" * 16, "framework": "b" * 16}
    running = {n: {**local, "framework": "a" * 16} for n in (1, 2, 3)}
    note = drift(local, running).message
    assert note.startswith("the running functions of phase(s) 1, 2, 3 were started with other runtime code "), note
    assert f"Cascade's runtime code changed (running {'a' * 16}, local {'b' * 16})" in note, note
    assert "d" * 16 not in note and "definition" not in note, note  # what did not change is not named
    both = drift(local, {2: {**local, "definition": "c" * 16, "files": "e" * 16}})
    assert both.message.startswith("the running functions of phase(s) 2 were started with another definition "), \
        both.message
    assert (f"the definition changed (running {'c' * 16}, local {'d' * 16}), the definition file or its Python "
            f"modules changed (running {'e' * 16}, local {'f' * 16})") in both.message, both.message
    assert both.to_dict()["digests"] == {"definition": {"running": "c" * 16, "local": "d" * 16},
                                         "files": {"running": "e" * 16, "local": "f" * 16}}
    old = drift(local, {4: {}})  # started by an older Cascade: nothing recorded
    assert "running unknown" in old.message, old.message
