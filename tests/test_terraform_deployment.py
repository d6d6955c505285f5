"""The Terraform deployment's contract per phase: every phase deployed without a Terraform edit,
and each check proved by a mutated copy it reports.

Run with the dedicated venv and the checks as a plugin (see infra/check.sh):
``.venv-hcl/bin/python -m pytest -q -p tests.terraform_rules tests/test_terraform_deployment.py``."""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any

from .terraform_rules import (
    REPO,
    TF_ROOT,
    TFVARS,
    _block,
    _clean_env,
    _main_python,
    _mutated,
    _push_sub,
    hcl2,
    input_problems,
    problems,
)


def test_every_tf_file_parses() -> None:
    files = sorted(TF_ROOT.rglob("*.tf"))
    assert {p.name for p in files} >= {"versions.tf", "variables.tf", "main.tf", "outputs.tf"}
    for path in files:
        if ".terraform" in path.parts:
            continue
        with path.open() as fh:
            assert isinstance(hcl2.load(fh), dict), path



def test_committed_tfvars_match_the_pipeline_definition() -> None:
    proc = subprocess.run([str(_main_python()), "-m", "cascade.deploy.tfvars"], cwd=REPO, env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads(TFVARS.read_text()), (
        "infra/terraform/pipeline.auto.tfvars.json is stale: run `python -m cascade.deploy.tfvars --write`")



def test_deployment_has_no_problems(parsed: dict[str, Any], inputs: dict[str, Any]) -> None:
    assert problems(parsed, inputs) == []



def test_every_phase_is_deployed(parsed: dict[str, Any], inputs: dict[str, Any]) -> None:
    phases = inputs["phases"]
    assert {"2", "3", "4"} <= set(phases)
    first = min(phases, key=int)
    assert phases[first]["schedule"], "the first phase must have a daily schedule"
    last = [k for k, p in phases.items() if p["next"] is None]
    assert last and all(phases[k]["next_topic"] is None for k in last)
    for key, ph in phases.items():
        assert (REPO / ph["source_dir"] / "main.py").is_file(), f"phase {key} has no function source"



def test_new_phases_need_no_terraform_edit(parsed: dict[str, Any]) -> None:
    """A further phase (own schedule, default date today) added to the YAML changes inputs only: no
    Terraform edit and no function folder (every phase deploys functions/phase with CASCADE_PHASE)."""
    script = r"""
import json, sys, yaml
from pathlib import Path
from cascade.definition.loading import from_dict
from cascade.deploy.tfvars import terraform_inputs
raw = yaml.safe_load(Path("pipelines/nba.yaml").read_text())
last = next(p for p in raw["phases"] if p.get("next") is None)
last["next"] = 97
raw["phases"] += [
    {"number": 97, "name": "scoring", "title": "Scoring", "next": 98, "schedule": "30 10 * * *",
     "default_date": "today"},
    {"number": 98, "name": "archive", "title": "Archive"},
]
src = next(p for p in raw["processors"] if p["phase"] == last["number"])
raw["processors"] += [
    {"name": "scoring_out", "phase": 97, "upstreams": [src["name"]],
     "output": {"table": "nba_scoring.scoring_out", "date_column": "game_date",
                "keys": ["item_id"], "columns": {"game_date": "DATE", "item_id": "INT64", "score": "FLOAT64"}},
     "sql": "SELECT @data_date AS game_date, 1 AS item_id, 1.0 AS score"},
    {"name": "archive_out", "phase": 98, "upstreams": ["scoring_out"],
     "output": {"table": "nba_archive.archive_out", "date_column": "game_date",
                "keys": ["item_id"], "columns": {"game_date": "DATE", "item_id": "INT64", "score": "FLOAT64"}},
     "sql": "SELECT game_date, item_id, score FROM {nba_scoring.scoring_out}"},
]
print(json.dumps({"last": str(last["number"]), "inputs": terraform_inputs(from_dict(raw, "pipelines/nba.yaml"))}))
"""
    proc = subprocess.run([str(_main_python()), "-c", script], cwd=REPO, env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    grown, last = out["inputs"], out["last"]
    assert {"97", "98"} <= set(grown["phases"])
    p97 = grown["phases"]["97"]
    assert p97["schedule"] == "30 10 * * *" and p97["default_date"] == "today" and p97["next_topic"] == "nba-phase98-archive"
    assert grown["phases"][last]["next_topic"] == "nba-phase97-scoring"
    assert grown["phases"]["98"]["reads_datasets"] == ["nba_scoring"]
    assert "nba_scoring" in grown["datasets"] and "nba_archive.archive_out" in grown["tables"]
    # The new phases deploy the one generic entry point: nothing else to add, no problem.
    assert {grown["phases"][n]["source_dir"] for n in ("97", "98")} == {"functions/phase"}
    found = problems(parsed, grown)
    assert found == [], found



def test_missing_dead_letter_policy_is_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    del _push_sub(bad["phase"])["dead_letter_policy"]
    assert any("has no dead_letter_policy" in p for p in problems(bad, inputs))



def test_missing_invoker_binding_is_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["phase"]["resource"].pop("google_cloud_run_v2_service_iam_member")
    assert any("roles/run.invoker" in p for p in problems(bad, inputs))



def test_invoker_for_the_wrong_identity_is_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    for b in bad["phase"]["resource"]["google_cloud_run_v2_service_iam_member"].values():
        b["member"] = "${google_service_account.function.member}"
    assert any("roles/run.invoker" in p for p in problems(bad, inputs))



def test_phase_without_resources_is_reported(parsed, inputs) -> None:
    """Per-phase modules written by hand (no for_each) leave a new phase of the JSON undeployed."""
    bad = _mutated(parsed)
    call = bad["root"]["module"].pop("phase")
    for key in inputs["phases"]:
        explicit = {k: v for k, v in call.items() if k != "for_each"}
        explicit["phase"] = f'${{var.pipeline.phases["{key}"]}}'
        bad["root"]["module"][f"phase{key}"] = explicit
    grown = copy.deepcopy(inputs)
    grown["phases"]["9"] = {**copy.deepcopy(inputs["phases"]["4"]), "number": 9, "topic": "nba-phase9-x",
                            "dead_letter_topic": "nba-phase9-x-dlq"}
    found = problems(bad, grown, source_root=None)
    assert any("phase 9 of the inputs has no phase module instance" in p for p in found), found
    assert not any("phase 4 of the inputs has no phase module instance" in p for p in found), found



def test_phase_module_over_a_subset_is_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["root"]["module"]["phase"]["for_each"] = '${{for k, p in var.pipeline.phases : k => p if k != "4"}}'
    assert any("phase 4 of the inputs has no phase module instance" in p for p in problems(bad, inputs))



def test_phase_without_function_source_is_reported(parsed, inputs) -> None:
    grown = copy.deepcopy(inputs)
    grown["phases"]["9"] = {**copy.deepcopy(inputs["phases"]["4"]), "number": 9, "function": "phase9_missing",
                            "source_dir": "functions/phase9_missing", "topic": "nba-phase9-missing",
                            "dead_letter_topic": "nba-phase9-missing-dlq"}
    found = problems(parsed, grown)
    assert any("phase9_missing/main.py does not exist" in p for p in found)
    assert any("is not the generic entry point functions/phase" in p for p in found)



def test_phase_missing_fields_is_reported(parsed, inputs) -> None:
    grown = copy.deepcopy(inputs)
    grown["phases"]["9"] = {"number": 9, "name": "unfinished"}
    assert any(p.startswith("inputs: phase 9 lacks") for p in problems(parsed, grown))



def test_wrong_ack_deadline_retry_and_oidc_are_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    sub = _push_sub(bad["phase"])
    sub["ack_deadline_seconds"] = 60
    sub["retry_policy"][0]["minimum_backoff"] = "1s"
    del sub["push_config"][0]["oidc_token"]
    found = problems(bad, inputs)
    assert any("ack_deadline_seconds is 60" in p for p in found)
    assert any("minimum_backoff" in p for p in found)
    assert any("has no oidc_token" in p for p in found)



def test_backoff_defaults_are_checked(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["root"]["variable"]["max_retry_backoff_seconds"]["default"] = 60
    assert any("max_retry_backoff_seconds defaults to 60" in p for p in problems(bad, inputs))



def test_missing_dead_letter_topic_or_subscription_is_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["phase"]["resource"]["google_pubsub_subscription"] = {
        n: b for n, b in bad["phase"]["resource"]["google_pubsub_subscription"].items() if _block(b, "push_config")}
    assert any("no subscription on the dead-letter topic" in p for p in problems(bad, inputs))
    bad = _mutated(parsed)
    bad["phase"]["resource"]["google_pubsub_topic"].pop("dead_letter")
    found = problems(bad, inputs)
    assert any("no dead-letter topic" in p for p in found)
    assert any("dead_letter_policy does not point at the dead-letter topic" in p for p in found)



def test_short_dead_letter_retention_is_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["phase"]["variable"]["dead_letter_retention"]["default"] = 3600
    assert any("want 7 days" in p for p in problems(bad, inputs))



def test_public_ingress_event_trigger_and_long_timeout_are_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    fn = next(iter(bad["phase"]["resource"]["google_cloudfunctions2_function"].values()))
    fn["service_config"][0]["ingress_settings"] = "ALLOW_ALL"
    fn["event_trigger"] = [{"event_type": "google.cloud.pubsub.topic.v1.messagePublished"}]
    bad["root"]["variable"]["function_timeout_seconds"]["default"] = 900
    bad["phase"]["variable"]["timeout_seconds"]["validation"] = []
    found = problems(bad, inputs)
    assert any("not ALLOW_INTERNAL_ONLY" in p for p in found)
    assert any("event_trigger" in p for p in found)
    assert any("timeout variable must default to <= 540" in p for p in found)
    assert any("is not bounded by 540" in p for p in found)



def test_publisher_beyond_the_next_topic_is_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["phase"]["resource"]["google_pubsub_topic_iam_member"]["own_topic"] = {
        "topic": "${google_pubsub_topic.trigger.name}", "role": "roles/pubsub.publisher",
        "member": "${google_service_account.function.member}"}
    bad["root"]["resource"]["google_project_iam_member"]["everything"] = {
        "role": "roles/pubsub.publisher", "member": '${module.phase["2"].service_account_member}'}
    found = problems(bad, inputs)
    assert any("other than the Pub/Sub service agent" in p for p in found)
    assert any("roles/pubsub.publisher project-wide" in p for p in found)
    bad = _mutated(parsed)
    bad["root"]["resource"]["google_pubsub_topic_iam_member"].pop("next_phase_publisher")
    assert any("next phase's topic" in p for p in problems(bad, inputs))



def test_project_level_data_editor_is_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["phase"]["resource"].pop("google_bigquery_dataset_iam_member")
    bad["phase"]["resource"]["google_project_iam_member"]["editor"] = {
        "project": "${var.project_id}", "role": "roles/bigquery.dataEditor",
        "member": "${google_service_account.function.member}"}
    found = problems(bad, inputs)
    assert any("no dataset-level roles/bigquery.dataEditor" in p for p in found)
    assert any("unexpected project-level roles" in p for p in found)



def test_missing_service_agent_grants_are_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["phase"]["resource"].pop("google_pubsub_subscription_iam_member")
    bad["phase"]["resource"]["google_pubsub_topic_iam_member"] = {}
    found = problems(bad, inputs)
    assert any("cannot publish to the dead-letter topic" in p for p in found)
    assert any("not a subscriber of the push subscription" in p for p in found)



def test_scheduler_with_a_date_or_wrong_zone_is_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    job = bad["root"]["resource"]["google_cloud_scheduler_job"]["phase"]
    job["time_zone"] = "UTC"
    job["pubsub_target"][0]["data"] = '${base64encode(jsonencode({pipeline = var.pipeline.name, phase = each.value.number, data_date = "2025-01-01"}))}'
    found = problems(bad, inputs)
    assert any("must not carry a date" in p for p in found)
    assert any("scheduled phase 2 has no Cloud Scheduler job" in p for p in found)



def test_unpinned_provider_and_unnamed_source_object_are_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["root"]["terraform"][0]["required_providers"][0]["google"]["version"] = "~> 6.0"
    for o in bad["root"]["resource"]["google_storage_bucket_object"].values():
        o["name"] = "${each.value.function}/source.zip"
    found = problems(bad, inputs)
    assert any("provider google is not pinned exactly" in p for p in found)
    assert any("hash" in p for p in found)



def test_stale_inputs_are_reported(inputs) -> None:
    bad = copy.deepcopy(inputs)
    bad["phases"]["2"]["next_topic"] = "nba-phase9-nowhere"
    bad["tables"]["nba_raw.nbac_schedule"]["clustering"] = ["game_date"]
    found = input_problems(bad)
    assert any("next_topic" in p for p in found)
    assert any("clustering" in p for p in found)
