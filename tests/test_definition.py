"""The pipeline definition: validation, dependency order, derived names, calendar."""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path

import pytest
import yaml

from cascade.definition.loading import DEFAULT_DEFINITION, from_dict, load
from cascade.errors import DefinitionError

RAW = yaml.safe_load(DEFAULT_DEFINITION.read_text())


def test_reference_pipeline_loads_with_phase4_chain_in_dependency_order():
    p = load(namespace="")
    order = [x.name for x in p.processors_of(4)]
    assert order.index("team_defense_zone_analysis") < order.index("player_daily_cache")
    assert order.index("player_shot_zone_analysis") < order.index("player_daily_cache")
    assert order.index("player_daily_cache") < order.index("player_composite_factors")
    assert p.downstream_phases(3)[:2] == [3, 4]


def test_namespace_prefixes_every_resource_name():
    p = load(namespace="abc1")
    assert p.topic(2) == "abc1-nba-phase2-raw"
    assert p.dataset_id("nba_raw") == "abc1_nba_raw"
    assert "abc1" in p.collection("partitions")
    with pytest.raises(DefinitionError):
        p.with_namespace("Bad-Name")


def test_sql_placeholders_resolve_only_to_declared_tables():
    p = load(namespace="x1")
    sql = p.render_sql(p.processor("player_game_summary"), "proj")
    assert "`proj.x1_nba_raw.nbac_player_boxscore`" in sql
    raw = copy.deepcopy(RAW)
    raw["processors"][2]["sql"] += " JOIN {nba_raw.secret_table} t ON TRUE"
    with pytest.raises(DefinitionError, match="undeclared table nba_raw.secret_table"):
        from_dict(raw)


@pytest.mark.parametrize("mutate, fragment", [
    (lambda r: r["processors"][0]["output"].update(keys=["nope"]), "not a declared column"),
    (lambda r: r["processors"][2].update(upstreams=["ghost"]), "not a declared processor"),
    (lambda r: r["processors"][0].update(upstreams=["player_game_summary"]), "later phase"),
    (lambda r: r["phases"][0].update(next=9), "undeclared phase 9"),
    (lambda r: r["processors"][1].update(name=r["processors"][0]["name"]), "duplicate processor"),
], ids=["bad-key", "ghost-upstream", "upstream-in-later-phase", "bad-next", "duplicate-name"])
def test_inconsistent_definitions_are_refused(mutate, fragment):
    raw = copy.deepcopy(RAW)
    mutate(raw)
    with pytest.raises(DefinitionError, match=fragment):
        from_dict(raw)


def test_intra_phase_cycle_is_refused():
    raw = copy.deepcopy(RAW)
    by_name = {p["name"]: p for p in raw["processors"]}
    by_name["team_defense_zone_analysis"]["upstreams"] = ["player_composite_factors"]
    with pytest.raises(DefinitionError, match="cycle"):
        from_dict(raw)


def test_calendar_skips_all_star_break_and_knows_its_reason():
    cal = load(namespace="").calendar
    days = cal.expected_dates(date(2025, 2, 12), date(2025, 2, 21))
    assert [d.day for d in days] == [12, 13, 20, 21]
    assert cal.reason_not_expected(date(2025, 2, 16)) == "All-Star break"
    assert cal.reason_not_expected(date(2025, 7, 1)) == "outside the season"


def test_a_weekday_the_pipeline_is_closed_is_not_expected_and_says_why():
    raw = yaml.safe_load((DEFAULT_DEFINITION.parent / "retail.yaml").read_text())
    raw["calendar"]["closed_weekdays"] = ["sunday"]
    cal = from_dict(raw).calendar
    sunday, monday = date(2025, 3, 16), date(2025, 3, 17)
    assert not cal.is_expected(sunday) and cal.reason_not_expected(sunday) == "closed on Sundays"
    assert cal.is_expected(monday)
    assert sunday not in cal.expected_dates(date(2025, 3, 10), date(2025, 3, 23))
    assert cal.nth_expected_on_or_before(monday, 2) == date(2025, 3, 15)  # the Sunday does not count
    assert cal.to_dict()["closed_weekdays"] == ["sunday"]
    raw["calendar"]["closed_weekdays"] = ["sundy"]
    with pytest.raises(DefinitionError, match="sundy"):
        from_dict(raw)


def test_an_export_with_its_own_bucket_is_a_terraform_bucket_written_by_its_phase_only():
    from cascade.deploy.tfvars import terraform_inputs

    weather = load(str(Path(__file__).resolve().parent.parent / "pipelines" / "weather.yaml"))
    inputs = terraform_inputs(weather)
    exports = {p.name: p for p in weather.processors if p.export and p.export.get("bucket")}
    assert exports, "the worked example declares an export with its own bucket"
    for name, proc in exports.items():
        bucket = inputs["export_buckets"][name]
        assert bucket["name"] == weather.export_bucket(proc, "${project}") and bucket["phase"] == str(proc.phase)
        assert proc.export["gcs_json"].startswith(bucket["prefix"])
        # Its folder is not granted on the raw bucket.
        assert bucket["prefix"] not in inputs["phases"][str(proc.phase)]["export_prefixes"]
    assert terraform_inputs(load())["export_buckets"] == {}  # NBA exports to its raw bucket


def test_a_declared_phase_title_is_kept_as_written_and_only_a_missing_one_is_derived():
    from .test_trust_after_change import STATIONS

    raw = copy.deepcopy(STATIONS)
    raw["phases"][0]["title"] = "Ingest trips"
    raw["phases"][1]["title"] = "zone demand (v2)"
    titles = {ph.number: ph.title for ph in from_dict(raw).phases}
    assert titles == {1: "Ingest trips", 2: "zone demand (v2)", 3: "Report"}  # phase 3 declares none: from its name
