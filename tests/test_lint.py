"""`cascade lint` and the definition schema: every problem with its line, SQL checked by BigQuery's analyzer.

The SQL checks run ZetaSQL (PyPI ``zetasql``, offline WASM): its first analysis in a process takes
~15 s, later ones milliseconds.
"""

from __future__ import annotations

import copy
import json
import textwrap
from datetime import date
from pathlib import Path

import pytest
import yaml

from cascade.cli import main as cascade
from cascade.definition import imports as definition_imports
from cascade.definition import loading as definition_loading
from cascade.definition import model as definition_model
from cascade.definition import schema as definition_schema
from cascade.definition import validation as definition_validation
from cascade.definition.columns import COLUMN_TYPES
from cascade.definition.loading import from_dict, load
from cascade.errors import DefinitionError
from cascade.lint import lint

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted(REPO.glob("pipelines/*.yaml"))

CALENDAR_AND_PHASES = """\
pipeline: shop
calendar:
  timezone: UTC
  seasons:
    - {name: "2025", start: 2025-01-01, end: 2025-03-31}
phases:
  - {number: 2, name: raw, next: 3}
  - {number: 3, name: analytics}
processors:
  - name: sales
    phase: 2
    source: {gcs_json: "sales/{date}.json", records: lines}
    output:
      table: shop_raw.sales
      date_column: sale_date
      keys: [store_id]
      columns: {sale_date: DATE, store_id: STRING, units: INT64}
"""


def _sql_processor(name: str, sql: str, upstreams: str = "[sales]") -> str:
    return (f"  - name: {name}\n    phase: 3\n    upstreams: {upstreams}\n    output:\n"
            f"      table: shop_an.{name}\n      date_column: sale_date\n      keys: [store_id]\n"
            f"      columns: {{sale_date: DATE, store_id: STRING, units: INT64}}\n    sql: |\n"
            + textwrap.indent(textwrap.dedent(sql).strip() + "\n", " " * 6))


def _write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _line_of(path: Path, fragment: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if fragment in line)


# ---------------------------------------------------------------------- shipped definitions
@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_pipeline_lints_clean_including_all_its_sql(path):
    report = lint(path)
    assert report.ok, report.render()
    assert report.statements >= 5 * len(load(path, namespace="").processors)


# ---------------------------------------------------------------------- SQL: BigQuery's analyzer
EMULATOR_ONLY = {  # processor -> SQL the local emulator (DuckDB + SQLGlot) runs, GoogleSQL rejects
    "qualify_without_where": """
        SELECT sale_date, store_id, units FROM {shop_raw.sales}
        QUALIFY ROW_NUMBER() OVER (PARTITION BY store_id ORDER BY units DESC) = 1""",
    "ilike": """
        SELECT sale_date, store_id, units FROM {shop_raw.sales}
        WHERE sale_date = @data_date AND store_id ILIKE 's%'""",
    "string_compared_to_int": """
        SELECT sale_date, store_id, units FROM {shop_raw.sales}
        WHERE sale_date = @data_date AND units > '0'""",
}


def test_sql_the_local_emulator_runs_but_bigquery_rejects_is_reported_at_its_line(tmp_path, make_harness):
    text = CALENDAR_AND_PHASES + "".join(_sql_processor(n, s) for n, s in EMULATOR_ONLY.items())
    path = _write(tmp_path, text)
    day = date(2025, 1, 15)
    h = make_harness(pipeline_file=str(path))
    wh = h.app.warehouse
    sales = h.pipeline.processor("sales")
    wh.merge_rows(sales, day, [{"sale_date": day, "store_id": "s1", "units": 3},
                               {"sale_date": day, "store_id": "S2", "units": 5}], "seed", 1)
    for name in EMULATOR_ONLY:  # the exact fenced MERGE Cascade sends runs on the emulator
        assert wh.merge_select(h.pipeline.processor(name), day, "run", 1) > 0, name

    report = lint(path)
    by_proc = {p.processor: p for p in report.problems}
    assert set(by_proc) == set(EMULATOR_ONLY), report.render()
    assert all(p.check == "sql" and p.statement == "transform" for p in report.problems)
    assert "QUALIFY clause must be used in conjunction with WHERE" in by_proc["qualify_without_where"].message
    assert by_proc["qualify_without_where"].line == _line_of(path, "QUALIFY ROW_NUMBER()")
    assert "WHERE TRUE" in by_proc["qualify_without_where"].fix
    assert by_proc["ilike"].line == _line_of(path, "ILIKE")
    assert "LOWER(x) LIKE LOWER(pattern)" in by_proc["ilike"].fix
    assert "INT64, STRING" in by_proc["string_compared_to_int"].message


# DuckDB-isms: each construct ran in a plain SELECT on bqemulator 1.4.0 (DuckDB + SQLGlot), checked by hand;
# GoogleSQL rejects each.
DUCKDB_ISMS = {
    "list_agg": ("SELECT @data_date AS sale_date, store_id, ARRAY_LENGTH(LIST(units)) AS units "
                 "FROM {shop_raw.sales} WHERE sale_date = @data_date GROUP BY store_id", "ARRAY_AGG"),
    "median": ("SELECT @data_date AS sale_date, store_id, CAST(MEDIAN(units) AS INT64) AS units "
               "FROM {shop_raw.sales} WHERE sale_date = @data_date GROUP BY store_id", "PERCENTILE_CONT"),
    "strftime": ("SELECT sale_date, STRFTIME(sale_date, '%Y') AS store_id, units FROM {shop_raw.sales} "
                 "WHERE sale_date = @data_date", "FORMAT_DATE"),
    "plural_interval": ("SELECT sale_date, store_id, units FROM {shop_raw.sales} "
                        "WHERE sale_date > DATE_SUB(@data_date, INTERVAL 1 DAYS)", "INTERVAL 1 DAY"),
    "aggregate_filter": ("SELECT @data_date AS sale_date, store_id, COUNT(*) FILTER (WHERE units > 1) AS units "
                         "FROM {shop_raw.sales} WHERE sale_date = @data_date GROUP BY store_id", "COUNTIF"),
    "select_exclude": ("SELECT * EXCLUDE (units), 0 AS units FROM {shop_raw.sales} WHERE sale_date = @data_date",
                       "EXCEPT"),
}


def test_duckdb_isms_are_rejected_each_with_the_bigquery_spelling_as_the_fix(tmp_path):
    path = _write(tmp_path, CALENDAR_AND_PHASES + "".join(_sql_processor(n, s) for n, (s, _) in DUCKDB_ISMS.items()))
    got = {p.processor: p for p in lint(path).problems}
    assert set(got) == set(DUCKDB_ISMS)
    for name, (_, fix) in DUCKDB_ISMS.items():
        assert got[name].statement == "transform" and fix in got[name].fix, got[name]


def test_type_error_against_the_declared_schema_names_the_types_and_the_line(tmp_path):
    path = _write(tmp_path, CALENDAR_AND_PHASES + _sql_processor("daily", """
        SELECT sale_date, store_id, SUM(units) AS units
        FROM {shop_raw.sales}
        WHERE sale_date = 20250115
        GROUP BY sale_date, store_id"""))
    report = lint(path)
    (problem,) = report.problems
    assert problem.check == "sql" and problem.processor == "daily"
    assert "DATE, INT64" in problem.message
    assert problem.line == _line_of(path, "WHERE sale_date = 20250115")
    assert f"{path}:{problem.line}: processor daily [sql: transform]" in report.render()


def test_a_select_missing_a_declared_column_fails_the_merge_cascade_wraps_it_in(tmp_path):
    path = _write(tmp_path, CALENDAR_AND_PHASES + _sql_processor(
        "daily", "SELECT sale_date, store_id FROM {shop_raw.sales} WHERE sale_date = @data_date"))
    (problem,) = lint(path).problems
    assert problem.statement == "merge" and "units" in problem.message
    assert "every declared output column" in problem.fix
    output_lines = [i for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip() == "output:"]
    assert problem.line == output_lines[-1]  # derived statements point at the processor's output


def test_a_gate_query_bigquery_rejects_is_reported_at_the_gates_line(tmp_path):
    path = _write(tmp_path, CALENDAR_AND_PHASES + _sql_processor(
        "daily", "SELECT sale_date, store_id, units FROM {shop_raw.sales} WHERE sale_date = @data_date")
        + """    gates:
      - {not_null: [units]}
      - name: no_negative_units
        sql: |
          SELECT store_id FROM {shop_an.daily}
          WHERE sale_date = @data_date AND units < '0'
""")
    (problem,) = lint(path).problems
    assert (problem.processor, problem.statement) == ("daily", "gate no_negative_units")
    assert problem.line == _line_of(path, "units < '0'") and "INT64, STRING" in problem.message


# ---------------------------------------------------------------------- definition problems, all at once
BROKEN = CALENDAR_AND_PHASES + """\
  - name: daily
    phase: 3
    upstreams: [sales, {processor: salez, lookback_days: 3}]
    output: {table: shop_an.daily, date_column: sale_date, keys: [store_id], columns: {sale_date: DATE, store_id: STRING}}
    sql: SELECT @data_date AS sale_date, store_id FROM {shop_raw.sale}
  - name: left
    phase: 3
    upstreams: [right]
    output: {table: shop_an.left, date_column: d, keys: [d], columns: {d: DATE}}
    sql: SELECT @data_date AS d
  - name: right
    phase: 3
    upstreams: [left]
    output: {table: shop_an.right, date_column: d, keys: [d], colums: {d: DATE}}
    sql: SELECT @data_date AS d
"""


def test_every_problem_is_reported_in_one_run_with_its_line_and_fix(tmp_path):
    path = _write(tmp_path, BROKEN)
    report = lint(path, sql=False)
    got = {(p.check, p.processor): p for p in report.problems}
    assert set(got) == {("schema", "right"), ("upstream", "daily"), ("cycle", "left"), ("placeholder", "daily")}, \
        report.render()
    schema = got[("schema", "right")]
    assert schema.line == _line_of(path, "colums:") and "unknown key 'colums'" in schema.message
    assert "did you mean 'columns'" in schema.message
    assert got[("upstream", "daily")].line == _line_of(path, "salez")
    assert "did you mean 'sales'" in got[("upstream", "daily")].fix
    assert "left -> right -> left" in got[("cycle", "left")].message
    assert got[("placeholder", "daily")].line == _line_of(path, "{shop_raw.sale}")
    assert "{shop_raw.sales}" in got[("placeholder", "daily")].fix
    assert not report.ok


def test_the_loaders_consistency_checks_are_reported_with_the_processor(tmp_path):
    path = _write(tmp_path, CALENDAR_AND_PHASES.replace("keys: [store_id]", "keys: [shop_id]"))
    (problem,) = lint(path, sql=False).problems
    assert (problem.check, problem.processor) == ("definition", "sales")
    assert "key/critical column 'shop_id' is not a declared column" in problem.message
    assert problem.line == _line_of(path, "- name: sales")


def test_schema_error_deep_in_the_file_has_the_line_of_the_offending_value(tmp_path):
    text = (REPO / "pipelines" / "nba.yaml").read_text().replace(
        "      keys: [game_id, team]\n", "      keys: game_id\n", 1)
    path = _write(tmp_path, text, "nba.yaml")
    (problem,) = lint(path, sql=False).problems
    assert (problem.check, problem.processor) == ("schema", "team_game_summary")
    assert problem.line == _line_of(path, "keys: game_id") and "expected a list" in problem.message


def test_unimportable_python_callable_is_reported_at_its_line(tmp_path):
    text = CALENDAR_AND_PHASES + """\
  - name: scores
    phase: 3
    upstreams: [sales]
    python: shop_features:build_scores
    output: {table: shop_an.scores, date_column: sale_date, keys: [store_id], columns: {sale_date: DATE, store_id: STRING}}
"""
    path = _write(tmp_path, text)
    (problem,) = lint(path, sql=False).problems
    assert (problem.check, problem.processor) == ("callable", "scores")
    assert problem.line == _line_of(path, "python: shop_features:build_scores")
    assert "shop_features" in problem.message and "shop_features.py" in problem.fix
    (tmp_path / "shop_features.py").write_text("def build_scores(ctx, day):\n    return []\n")
    assert lint(path, sql=False).ok  # beside the definition is importable, as for the functions


def test_lookbacks_that_reach_past_the_calendar_are_reported(tmp_path):
    path = _write(tmp_path, CALENDAR_AND_PHASES + _sql_processor(
        "long", "SELECT sale_date, store_id, units FROM {shop_raw.sales} WHERE sale_date BETWEEN @window_start AND @data_date",
        upstreams="[{processor: sales, lookback_days: 120}]") + _sql_processor(
        "many", "SELECT sale_date, store_id, units FROM {shop_raw.sales} WHERE sale_date = @data_date",
        upstreams="[{processor: sales, lookback_dates: 200}]"))
    got = {p.processor: p for p in lint(path, sql=False).problems}
    assert set(got) == {"long", "many"}
    assert "longer than any season" in got["long"].message and "lookback_dates" in got["long"].fix
    assert "90 expected dates" in got["many"].message


def test_cli_lint_exit_codes_and_json(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a folder with no pipeline.yaml: nothing picked up from the cwd
    bad = _write(tmp_path, BROKEN, "broken.yaml")
    assert cascade(["lint", "--no-sql", "--json", str(bad)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and {p["check"] for p in out["problems"]} >= {"schema", "upstream", "cycle"}
    assert all(p["line"] for p in out["problems"])
    assert cascade(["lint", "--no-sql", str(SHIPPED[0])]) == 0
    assert cascade(["lint", str(tmp_path / "nope.yaml")]) == 2


# ---------------------------------------------------------------------- the schema, derived once
def test_committed_schema_and_reference_are_generated_from_the_code():
    assert definition_schema.main(["--check"]) == 0, "run: python -m cascade.definition.schema --write"


def test_schema_patterns_and_types_are_the_loaders():
    assert definition_schema.NAME == definition_validation.NAME.pattern
    assert definition_schema.COLUMN_TYPES is COLUMN_TYPES
    assert definition_schema.CALLABLE == definition_imports.CALLABLE.pattern
    assert list(definition_schema.GATE.variants) == list(definition_model.GATE_KINDS)


class _Recording(dict):
    """A dict that records every key read by name (``d[k]``, ``d.get(k)``, ``k in d``) at its path."""

    def __init__(self, data: dict, path: str, seen: set[str]) -> None:
        super().__init__({k: _wrap(v, f"{path}.{k}" if path else str(k), seen) for k, v in data.items()})
        self._path, self._seen = path, seen

    def _note(self, key: object) -> None:
        if isinstance(key, str):
            self._seen.add(f"{self._path}.{key}" if self._path else key)

    def __getitem__(self, key):
        self._note(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self._note(key)
        return super().get(key, default)

    def __contains__(self, key):
        self._note(key)
        return super().__contains__(key)


def _wrap(value, path: str, seen: set[str]):
    if isinstance(value, dict):
        return _Recording(value, path, seen)
    if isinstance(value, list):
        return [_wrap(v, f"{path}[]", seen) for v in value]
    return value


def _kitchen_sink() -> dict:
    """The reference definition plus every optional key: a Python processor, gates of each kind, hooks."""
    raw = yaml.safe_load((REPO / "pipelines" / "nba.yaml").read_text())
    raw["synthetic"] = "nba_synthetic:day_files"
    raw["phases"][0].update(max_instances=5, concurrency=2, title="Raw", schedule="0 6 * * *")
    procs = {p["name"]: p for p in raw["processors"]}
    procs["nbac_schedule"]["source"]["synthetic"] = {"rows": 5, "values": {"arena": ["A"], "tipoff_et": ["19:00"]}}
    procs["team_defense_zone_analysis"].update(allow_empty=True, gates=[
        {"row_count": {"min": 1, "max": 30, "within_pct_of_trailing_median": 50, "days": 7}},
        {"not_null": ["team"], "name": "team_present"},
        {"range": {"column": "defense_rank", "min": 1, "max": 30}},
        {"sql": "SELECT team FROM {nba_precompute.team_defense_zone_analysis} WHERE analysis_date = @data_date "
                "AND wins < 0", "name": "no_negative_wins"}])
    procs["player_rolling_form"]["upstreams"] = [{"processor": "nbac_player_boxscore", "lookback_days": 30,
                                                  "lookback_dates": 10, "until": "same_day"}]
    raw["processors"].append({
        "name": "player_python_scores", "phase": 4, "description": "Python processor",
        "upstreams": ["player_game_summary"], "python": "retail_processors:store_demand_features",
        "output": {"table": "nba_precompute.player_python_scores", "date_column": "game_date", "keys": ["player_id"],
                   "critical": ["score"], "columns": {"game_date": "DATE", "player_id": "INT64", "score": "FLOAT64"}}})
    return raw


def test_every_key_the_loader_reads_is_declared_in_the_schema(monkeypatch):
    raw = _kitchen_sink()
    assert definition_schema.issues(raw) == []  # the kitchen sink itself is valid
    seen: set[str] = set()
    monkeypatch.setattr(definition_loading, "validate_structure", lambda *_a, **_k: None)
    pipeline = from_dict(_Recording(raw, "", seen), source_path=str(REPO / "pipelines" / "nba.yaml"))
    from cascade.deploy import tfvars

    tfvars.terraform_inputs(pipeline)  # reads source/export keys of the processors too
    declared = {p for p, _ in definition_schema.declared_paths()}
    free = [p.rsplit(".<name>", 1)[0] for p in declared if p.endswith(".<name>")]  # mappings of free keys
    undeclared = sorted(k for k in seen if k not in declared and not any(k.startswith(f + ".") for f in free))
    assert not undeclared, f"the loader reads keys the schema does not declare: {undeclared}"


def test_from_dict_refuses_an_unknown_key_naming_the_processor_and_the_path():
    raw = copy.deepcopy(yaml.safe_load((REPO / "pipelines" / "nba.yaml").read_text()))
    raw["processors"][2]["upstreams"][0] = {"processor": "nbac_player_boxscore", "lookback_day": 3}
    with pytest.raises(DefinitionError, match=r"processor 'player_game_summary': upstreams\[1\]\.lookback_day: "
                                              r"unknown key 'lookback_day' \(did you mean 'lookback_days'\?\)"):
        from_dict(raw)


def test_json_schema_accepts_the_shipped_pipelines_and_refuses_a_typo():
    jsonschema = pytest.importorskip("jsonschema")
    schema = definition_schema.json_schema()
    for path in SHIPPED:
        raw = json.loads(json.dumps(yaml.safe_load(path.read_text()), default=str))
        jsonschema.validate(raw, schema)
    raw["processors"][0]["outptu"] = {}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, schema)


# ---------------------------------------------------------------------- one pass, warm
ONE_PASS = CALENDAR_AND_PHASES + """\
  - name: typo
    phase: 3
    upstreams: [sales]
    output: {table: shop_an.typo, date_column: sale_date, keys: [store_id], colums: {sale_date: DATE}}
    sql: SELECT @data_date AS sale_date
  - name: reads_typo
    phase: 3
    upstreams: [typo]
    output: {table: shop_an.reads_typo, date_column: sale_date, keys: [store_id],
             columns: {sale_date: DATE, store_id: STRING}}
    sql: SELECT sale_date, store_id FROM {shop_an.typo} WHERE sale_date = @data_date
  - name: features
    phase: 3
    python: no_such_module_anywhere:build
    upstreams: [{processor: sales, lookback_dayz: 3}]
    output: {table: shop_an.features, date_column: sale_date, keys: [store_id],
             columns: {sale_date: DATE, store_id: STRING, units: INT64}}
""" + _sql_processor("ranked", """
        SELECT sale_date, store_id, units FROM {shop_raw.sales}
        QUALIFY ROW_NUMBER() OVER (PARTITION BY store_id ORDER BY units DESC) = 1""")


def test_lint_reports_schema_sql_and_callable_problems_in_one_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_LINT_CACHE", str(tmp_path / "cache.json"))
    path = _write(tmp_path, ONE_PASS)
    report = lint(path)
    got = {(p.check, p.processor): p for p in report.problems}
    # the schema errors (a misspelt required key; a misspelt optional key) ...
    assert got[("schema", "typo")].line == _line_of(path, "colums:")
    assert "lookback_dayz" in got[("schema", "features")].message
    # ... and, in the same run, the callable of a processor with a schema error and the SQL of the others
    assert "no_such_module_anywhere" in got[("callable", "features")].message
    assert got[("callable", "features")].line == _line_of(path, "python: no_such_module_anywhere")
    assert got[("sql", "ranked")].line == _line_of(path, "QUALIFY")
    assert set(got) == {("schema", "typo"), ("schema", "features"), ("callable", "features"), ("sql", "ranked")}, \
        report.render()
    # the processor that cannot load and the one reading it are set aside, said in the summary
    assert report.sql_checked and report.sql_not_checked == ["reads_typo", "typo"]
    assert "not the SQL of reads_typo, typo" in report.render()


def test_a_second_lint_reuses_the_analysis_of_unchanged_statements(tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_LINT_CACHE", str(tmp_path / "cache.json"))
    text = CALENDAR_AND_PHASES + _sql_processor("daily", """
        SELECT sale_date, store_id, SUM(units) AS units FROM {shop_raw.sales}
        WHERE sale_date = @data_date GROUP BY sale_date, store_id""") + _sql_processor("ranked", """
        SELECT sale_date, store_id, units FROM {shop_raw.sales}
        QUALIFY ROW_NUMBER() OVER (PARTITION BY store_id ORDER BY units DESC) = 1""")
    path = _write(tmp_path, text)
    first = lint(path)
    assert first.statements > 10 and first.statements_reused == 0
    # Unchanged: every verdict is reused, ZetaSQL is not asked again, and the report is the same.
    from cascade.lint import sql as sqlcheck
    started = []
    real_start = sqlcheck.Analyzer._start
    monkeypatch.setattr(sqlcheck.Analyzer, "_start", lambda self: started.append(1) or real_start(self))
    second = lint(path)
    assert second.statements_reused == second.statements == first.statements and started == []
    assert [p.render() for p in second.problems] == [p.render() for p in first.problems]
    assert len(second.problems) == 1 and "QUALIFY" in second.problems[0].message
    # One processor's SQL changed: only its statements are analyzed again.
    path.write_text(text.replace("SUM(units) AS units", "MAX(units) AS units"))
    third = lint(path)
    changed = third.statements - third.statements_reused
    assert 0 < changed <= 3 and started == [1], (changed, third.statements)  # its SELECT and the MERGE around it
    assert [p.render() for p in third.problems] == [p.render() for p in first.problems]
    # Without the cache everything is analyzed.
    assert lint(path, cache=False).statements_reused == 0


def test_make_lint_checks_every_shipped_pipeline_and_a_scaffold_in_one_cascade_lint_process():
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\nlint: venv\n", 1)[1].split("\n\n", 1)[0]
    assert recipe.count("$(VENV)/bin/cascade lint") == 1, recipe  # one process (the echo only says what runs)
    assert "pipelines/*.yaml" in recipe and "lint_scaffold" in recipe and "cascade init" in recipe
