"""Bucket access limited to each phase's folders, an export's own bucket, and teardown guarded by
an explicit variable.

Run with the dedicated venv and the checks as a plugin (see infra/check.sh):
``.venv-hcl/bin/python -m pytest -q -p tests.terraform_rules tests/test_terraform_access.py``."""

from __future__ import annotations

import copy

from .terraform_rules import (
    _compact,
    _mutated,
    _resources,
    input_problems,
    problems,
)


def test_bucket_access_is_limited_to_the_phase_folders(parsed, inputs) -> None:
    assert inputs["phases"]["6"]["export_prefixes"] == ["exports/predictions/"]
    assert inputs["phases"]["2"]["read_prefixes"] == ["nbacom/player_boxscores/", "nbacom/schedule/"]
    bad = _mutated(parsed)
    iam = bad["phase"]["resource"]["google_storage_bucket_iam_member"]
    del iam["exporter"]["condition"]
    found = problems(bad, inputs)
    assert any("google_storage_bucket_iam_member.exporter is not limited to a folder" in p for p in found), found
    bad = _mutated(parsed)
    iam = bad["phase"]["resource"]["google_storage_bucket_iam_member"]
    iam["exporter"]["condition"][0]["expression"] = 'resource.name.startsWith(\\"projects/_/buckets/${var.bucket}/objects/\\")'
    iam["whole"] = {"bucket": "${var.bucket}", "role": "roles/storage.objectAdmin",
                    "member": "${google_service_account.function.member}"}
    found = problems(bad, inputs)
    assert any("exporter is not limited" in p for p in found), found
    assert any("google_storage_bucket_iam_member.whole is not limited" in p for p in found), found
    bad = _mutated(parsed)
    bad["phase"]["resource"]["google_storage_bucket_iam_member"].pop("exporter")
    assert any("no roles/storage.objectAdmin" in p for p in problems(bad, inputs))
    grown = copy.deepcopy(inputs)
    grown["phases"]["6"]["export_prefixes"] = ["{date}/"]
    assert any("is not a fixed folder" in p for p in input_problems(grown))



def test_force_destroy_is_an_explicit_variable_defaulting_to_false(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["root"]["resource"]["google_storage_bucket"]["raw"]["force_destroy"] = True
    bad["root"]["variable"]["force_destroy"]["default"] = True
    found = problems(bad, inputs)
    assert any("bucket raw force_destroy is not var.force_destroy" in p for p in found), found
    assert any("force_destroy must exist and default to false" in p for p in found), found



def test_an_export_with_a_bucket_of_its_own_gets_that_bucket_and_only_its_folder(parsed) -> None:
    buckets = _resources(parsed["root"], "google_storage_bucket")
    export = buckets["export"]
    assert "var.pipeline.export_buckets" in _compact(export["for_each"])
    for key in ("uniform_bucket_level_access", "public_access_prevention", "force_destroy", "versioning"):
        assert _compact(str(export[key])) == _compact(str(buckets["raw"][key])), key
    writer = _resources(parsed["root"], "google_storage_bucket_iam_member")["export_writer"]
    assert _compact(writer["for_each"]) == "${var.pipeline.export_buckets}"
    assert "module.phase[each.value.phase].service_account_member" in _compact(writer["member"])
    assert "each.value.prefix" in _compact(writer["condition"][0]["expression"])
