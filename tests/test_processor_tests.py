"""`cascade test`: processor test cases (given input rows, expected output rows) on the local BigQuery
engine, through the executor a run uses, with a diff on failure and ZetaSQL analysis of the SQL."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from cascade.cli import main as cascade
from cascade.definition.loading import load
from cascade.dev.processor_tests import CaseFileError, Runner, case_files, collect, load_cases, run_suite
from cascade.runtime import clients

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NBA = REPO / "pipelines" / "nba.yaml"
RETAIL = REPO / "pipelines" / "retail.yaml"


# ---------------------------------------------------------------------- callables of the small definition below
def windowed(ctx):
    """Each key's sum over what ``ctx.read`` returns, with the window the context declared."""
    totals: dict[str, float] = {}
    for row in ctx.read("mini_raw.events"):
        totals[row["k"]] = totals.get(row["k"], 0.0) + row["v"]
    return [{"k": k, "total": t, "window_start": ctx.window_start, "window_end": ctx.window_end,
             "rows_read": sum(1 for _ in ctx.reads)} for k, t in totals.items()]


def early_reader(ctx):
    ctx.read("mini_raw.events", start=ctx.data_date - timedelta(days=30))
    return []


MINI = {
    "pipeline": "mini",
    "calendar": {"timezone": "UTC", "seasons": [{"name": "s", "start": "2025-01-01", "end": "2025-12-31"}]},
    "phases": [{"number": 1, "name": "raw", "next": 2}, {"number": 2, "name": "features"}],
    "processors": [
        {"name": "events", "phase": 1, "source": {"gcs_json": "events/{date}.json", "records": "events"},
         "output": {"table": "mini_raw.events", "date_column": "d", "keys": ["k", "n"],
                    "columns": {"d": "DATE", "k": "STRING", "n": "INT64", "v": "FLOAT64"}}},
        {"name": "rolled", "phase": 2, "python": f"{__name__}:windowed",
         "upstreams": [{"processor": "events", "lookback_days": 3}],
         "output": {"table": "mini_features.rolled", "date_column": "d", "keys": ["k"],
                    "columns": {"d": "DATE", "k": "STRING", "total": "FLOAT64", "window_start": "DATE",
                                "window_end": "DATE", "rows_read": "INT64"}}},
        {"name": "greedy", "phase": 2, "python": f"{__name__}:early_reader",
         "upstreams": [{"processor": "events", "lookback_days": 3}],
         "output": {"table": "mini_features.greedy", "date_column": "d", "keys": ["k"],
                    "columns": {"d": "DATE", "k": "STRING"}}},
        {"name": "matched", "phase": 2, "upstreams": ["events"],
         "output": {"table": "mini_features.matched", "date_column": "d", "keys": ["k"],
                    "columns": {"d": "DATE", "k": "STRING", "total": "FLOAT64"}},
         # The emulator runs ILIKE; BigQuery (and so ZetaSQL) rejects it.
         "sql": "SELECT @data_date AS d, k, SUM(v) AS total FROM {mini_raw.events}\n"
                "WHERE d = @data_date AND k ILIKE 'a%'\nGROUP BY k"},
    ],
}


@pytest.fixture()
def mini(tmp_path: Path) -> Path:
    """A small definition (a Python processor with a 3-day lookback, one reading outside it, a SQL one)
    and its case folder ``mini.tests/``."""
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(MINI, sort_keys=False))
    (tmp_path / "mini.tests").mkdir()
    return path


def _write(definition: Path, processor: str, body: dict | str) -> Path:
    path = definition.parent / f"{definition.stem}.tests" / f"{processor}.yaml"
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body, sort_keys=False))
    return path


def _client(endpoints):
    return clients.bigquery(endpoints.project)


def _run(endpoints, definition: Path, files: list[Path] | None = None, sql: bool = False):
    pipeline, cases = collect(definition, files)
    return run_suite([(pipeline, cases)], _client(endpoints), endpoints.project, engine="session", sql=sql)


# ---------------------------------------------------------------------- the tests
def test_a_sql_processor_case_passes_and_a_wrong_expectation_fails_with_a_diff(endpoints, tmp_path):
    passing = _run(endpoints, NBA, [NBA.parent / "nba.tests" / "player_rolling_form.yaml"])
    assert passing.ok and len(passing.results) == 2, passing.render()
    assert passing.results[0].rows == 2

    raw = yaml.safe_load((NBA.parent / "nba.tests" / "player_rolling_form.yaml").read_text())
    case = raw["cases"][0]
    case["expect"]["rows"][0]["avg_points_l10"] = 16.0  # the SQL says 15.5
    case["expect"]["rows"][1]["player_id"] = 9  # player 2 is produced, player 9 is not
    raw["cases"] = [case]
    wrong = tmp_path / "nba.tests" / "player_rolling_form.yaml"
    wrong.parent.mkdir()
    wrong.write_text(yaml.safe_dump(raw, sort_keys=False))
    pipeline = load(NBA, namespace="")
    [result] = Runner(pipeline, _client(endpoints), endpoints.project).run_all(load_cases(pipeline, wrong))
    assert not result.passed
    text = result.render()
    assert text.startswith("FAIL player_rolling_form 2025-01-31"), text
    assert f"{wrong}:" in text
    assert "changed row {player_id: 1}:" in text and "avg_points_l10: expected 16.0, got 15.5 (tolerance 0.005)" in text
    assert re.search(r"missing row \(expected, not produced\): \{player_id: 9, player_name: 'Bravo'", text), text
    assert re.search(r"extra row \(produced, not expected\): \{player_id: 2, player_name: 'Bravo'", text), text
    diff = result.to_dict()["diff"]
    assert diff["changed"] == [{"key": {"player_id": 1}, "columns": {
        "avg_points_l10": {"expected": 16.0, "actual": 15.5, "tolerance": 0.005}}}]
    assert [r["player_id"] for r in diff["missing"]] == [9] and [r["player_id"] for r in diff["extra"]] == [2]


def test_a_python_processor_case_runs_its_callable_with_the_declared_window(endpoints, mini):
    _write(mini, "rolled", {"cases": [{
        "name": "sums the window",
        "date": "2025-03-10",
        "given": {"events": [
            {"d": "2025-03-07", "k": "a", "n": 1, "v": 1.5},
            {"d": "2025-03-10", "k": "a", "n": 2, "v": "2.25"},  # coerced like a raw file's value
            {"d": "2025-03-10", "k": "b", "n": 1, "v": 4},
        ]},
        "expect": {"rows": [
            {"k": "a", "total": 3.75, "window_start": "2025-03-07", "window_end": "2025-03-10", "rows_read": 1},
            {"k": "b", "total": 4.0, "window_start": "2025-03-07", "window_end": "2025-03-10", "rows_read": 1},
        ]},
    }]})
    suite = _run(endpoints, mini)
    assert suite.ok, suite.render()
    [result] = suite.results
    assert result.rows == 2 and result.outside_window == 0
    # The same callable against a wrong expectation: the case fails naming the column.
    _write(mini, "rolled", {"cases": [{"name": "bad rows", "date": "2025-03-10",
                                       "given": {"events": [{"d": "2025-03-10", "k": "a", "n": 1, "v": 1}]},
                                       "expect": {"rows": [{"k": "a", "total": 1.0, "rows_read": 2}]}}]})
    failing = _run(endpoints, mini)
    assert not failing.ok
    assert "rows_read: expected 2, got 1" in failing.render()


def test_a_case_with_rows_outside_the_declared_window_does_not_see_them(endpoints, mini):
    # Python: the rows of 2025-03-06 (before the 3-day window) and 2025-03-11 (after the date) are in
    # the table, as they would be in production, and ctx.read does not return them.
    _write(mini, "rolled", {"cases": [{
        "name": "rows outside the window",
        "date": "2025-03-10",
        "given": {"events": [
            {"d": "2025-03-06", "k": "a", "n": 1, "v": 100},
            {"d": "2025-03-08", "k": "a", "n": 1, "v": 1},
            {"d": "2025-03-10", "k": "a", "n": 1, "v": 2},
            {"d": "2025-03-11", "k": "a", "n": 1, "v": 1000},
        ]},
        "expect": {"rows": [{"k": "a", "total": 3.0}]},
    }]})
    suite = _run(endpoints, mini)
    assert suite.ok, suite.render()
    assert suite.results[0].outside_window == 2
    # A callable that reads before its declared window is refused, as in a run.
    _write(mini, "greedy", {"cases": [{
        "name": "reads a month back", "date": "2025-03-10",
        "given": {"events": [{"d": "2025-03-10", "k": "a", "n": 1, "v": 1}]},
        "expect": {"error": "outside its declared window 2025-03-07..2025-03-10"}}]})
    refused = _run(endpoints, mini, [mini.parent / "mini.tests" / "greedy.yaml"])
    assert refused.ok, refused.render()
    # SQL: player 2's game on 2024-12-30 is before player_rolling_form's 30-day window: with it the
    # average would be 27.0 over 3 games; the case expects 15.5 over 2 and passes.
    case = yaml.safe_load((NBA.parent / "nba.tests" / "player_rolling_form.yaml").read_text())["cases"][0]
    assert {"game_date": date(2024, 12, 30), "player_id": 2}.items() <= next(
        r for r in case["given"]["nbac_player_boxscore"] if r["player_id"] == 2).items()
    nba = _run(endpoints, NBA, [NBA.parent / "nba.tests" / "player_rolling_form.yaml"])
    first = nba.results[0]
    assert first.passed and first.outside_window == 1, first.render()


def test_a_malformed_case_file_is_a_clear_error(mini, capsys):
    pipeline = load(mini, namespace="")
    good = {"d": "2025-03-10", "k": "a", "n": 1, "v": 1}

    def problem(body: dict | str, processor: str = "rolled") -> CaseFileError:
        path = _write(mini, processor, body)
        with pytest.raises(CaseFileError) as info:
            load_cases(pipeline, path)
        assert info.value.file == str(path)
        return info.value

    def case(**kw):
        return {"cases": [{"name": "c", "date": "2025-03-10", "given": {"events": [good]},
                           "expect": {"rows": [{"k": "a"}]}, **kw}]}

    err = problem(case(given={"events": [{**good, "vv": 2}]}))
    assert "mini_raw.events has no column 'vv'" in err.problem and "did you mean 'v'?" in err.fix
    line = next(i for i, text in enumerate(Path(err.file).read_text().splitlines(), 1) if "vv:" in text)
    assert err.line == line and f"{err.file}:{line}:" in err.message
    err = problem(case(given={"events": [{**good, "n": "three"}]}))
    assert "n = 'three' is not a valid INT64" in err.problem and "expected an integer" in err.problem
    err = problem(case(given={"event": [good]}))
    assert "'event' is not a table rolled reads; it reads ['events']" in err.problem and "'events'" in err.fix
    err = problem(case(given={"events": [{"k": "a", "n": 1, "v": 1}]}))
    assert "has no d (the table's date column)" in err.problem
    err = problem({"cases": [{"name": "c", "date": "2025-03-10", "expected": {"rows": []}}]})
    assert "has no `expect`" in err.problem or "unknown key 'expected'" in err.problem
    err = problem(case(expect={"rows": [{"k": "a", "total": 1.0}], "tolerance": {"k": 0.1}}))
    assert "not a compared FLOAT64/NUMERIC column" in err.problem
    err = problem(case(date="2025-13-01"))
    assert "is not a date" in err.problem
    err = problem("cases: [\n  {name: c, date: 2025-03-10\n")
    assert "not valid YAML" in err.problem
    err = problem({"processor": "events", "cases": [{"name": "c", "date": "2025-03-10", "expect": {"rows": []}}]},
                  processor="events")
    assert "events is a gcs_json_load processor" in err.problem
    # The command: exit 2, the file and line, what to fix - before any engine starts.
    (mini.parent / "mini.tests" / "events.yaml").unlink()
    _write(mini, "rolled", case(given={"events": [{**good, "vv": 2}]}))
    assert cascade(["test", str(mini), "--no-sql"]) == 2
    out = capsys.readouterr().err
    assert f"mini.tests/rolled.yaml:{line}: case 'c': given events row 1: mini_raw.events has no column 'vv'" in out, out
    assert "fix: did you mean 'v'?" in out


def test_the_sql_of_the_processors_under_test_is_analyzed_by_googlesql(endpoints, mini, capsys, monkeypatch, tmp_path):
    # A cache of verdicts of its own: the first analysis runs ZetaSQL, the command then reads the verdicts.
    cache = tmp_path / "verdicts.json"
    monkeypatch.setenv("CASCADE_LINT_CACHE", str(cache))
    # The local engine runs ILIKE, so the case itself passes; BigQuery's analyzer rejects the SELECT.
    _write(mini, "matched", {"cases": [{
        "name": "keys starting with a", "date": "2025-03-10",
        "given": {"events": [{"d": "2025-03-10", "k": "ab", "n": 1, "v": 2}, {"d": "2025-03-10", "k": "b", "n": 1, "v": 5}]},
        "expect": {"rows": [{"k": "ab", "total": 2.0}]}}]})
    suite = _run(endpoints, mini, [mini.parent / "mini.tests" / "matched.yaml"], sql=True)
    assert [r.passed for r in suite.results] == [True]
    assert not suite.ok and suite.sql_statements > 3
    assert {p.processor for p in suite.sql_problems} == {"matched"}
    assert any("ILIKE" in p.fix for p in suite.sql_problems), [p.render() for p in suite.sql_problems]
    assert len(json.loads(cache.read_text())) == suite.sql_statements
    assert cascade(["test", str(mini.parent / "mini.tests" / "matched.yaml"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] == 1 and report["sql_problems"] and report["engine"].startswith("the local stack's")


def test_make_test_runs_the_reference_cases(endpoints, capsys):
    make = (REPO / "Makefile").read_text()
    assert re.search(r"^test: .*\btest-cases\b", make, re.M)
    target = make.split("\ntest-cases:", 1)[1].split("\n\n", 1)[0]
    assert "cascade test pipelines/*.yaml" in target and "cascade init" in target
    # What the target runs, on the session's engine: every reference case passes.
    assert {p.name for p in case_files(NBA)} >= {"player_rolling_form.yaml"}
    assert {p.name for p in case_files(RETAIL)} >= {"store_demand_features.yaml", "store_daily_sales.yaml"}
    assert cascade(["test", str(NBA), str(RETAIL), "--json", "--no-sql"]) == 0
    report = json.loads(capsys.readouterr().out)
    ran = {(c["processor"], c["passed"]) for c in report["cases"]}
    assert {("player_rolling_form", True), ("store_demand_features", True), ("store_daily_sales", True)} <= ran
    assert report["failed"] == 0


def test_cascade_init_ships_a_case_that_its_readme_runs_on_an_engine_of_its_own(tmp_path):
    root = tmp_path / "corner_shop"
    assert cascade(["init", str(root)]) == 0
    assert (root / "tests" / "store_trends.yaml").is_file()
    readme = (root / "README.md").read_text()
    block = readme.split("## Test", 1)[1]
    [command] = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.startswith("cascade test")]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CASCADE_") and "EMULATOR_HOST" not in k and k != "PYTHONPATH"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["CASCADE_STATE_DIR"] = str(root / ".cascade")  # no local stack: the command starts its own engine
    run = subprocess.run(command, shell=True, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PASS store_trends 2025-01-10" in run.stdout
    assert re.search(r"1 of 1 case\(s\) passed; \d+ SQL statements analyzed by ZetaSQL, 0 rejected; "
                     r"engine: bqemulator started alone", run.stdout), run.stdout
    # A wrong expectation: exit 1 and the diff.
    case = root / "tests" / "store_trends.yaml"
    case.write_text(case.read_text().replace("days_in_window: 3", "days_in_window: 4"))
    run = subprocess.run(f"{command} --no-sql", shell=True, cwd=root, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "days_in_window: expected 4, got 3" in run.stdout


def test_zetasqls_compiled_module_is_kept_on_disk_and_a_damaged_file_is_compiled_again(tmp_path, monkeypatch):
    """ZetaSQL's 28 MB WebAssembly takes ~15 s to compile: once per machine, then loaded from the cache."""
    from cascade.lint import zetasql_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    wasm = tmp_path / "z.wasm"
    wasm.write_bytes(b"\0asm fake")
    calls: list[str] = []

    class Compiled:
        def serialize(self) -> bytes:
            return b"machine code"

    class FakeModule:
        @staticmethod
        def from_file(engine, path):
            calls.append("compile")
            return Compiled()

        @staticmethod
        def deserialize_file(engine, path):
            calls.append("load")
            if open(path, "rb").read() != b"machine code":
                raise ValueError("not a compiled module")
            return Compiled()

    zetasql_cache.load_compiled(FakeModule, None, str(wasm))
    [kept] = (tmp_path / "cache" / "cascade").glob("zetasql-*.cwasm")
    zetasql_cache.load_compiled(FakeModule, None, str(wasm))
    assert calls == ["compile", "load"]
    kept.write_bytes(b"damaged")
    zetasql_cache.load_compiled(FakeModule, None, str(wasm))
    assert calls == ["compile", "load", "load", "compile"] and kept.read_bytes() == b"machine code"
    wasm.write_bytes(b"\0asm another version")  # a new zetasql: a new key, the old file is dropped
    zetasql_cache.load_compiled(FakeModule, None, str(wasm))
    assert calls[-1] == "compile" and [p.name for p in (tmp_path / "cache" / "cascade").glob("*.cwasm")] != [kept.name]
    assert len(list((tmp_path / "cache" / "cascade").glob("*.cwasm"))) == 1
