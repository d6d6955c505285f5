"""Scaling and bursts: the definition's scaling, concurrency with a full CPU, and a retry policy
that outlasts the documented burst.

Run with the dedicated venv and the checks as a plugin (see infra/check.sh):
``.venv-hcl/bin/python -m pytest -q -p tests.terraform_rules tests/test_terraform_scaling.py``."""

from __future__ import annotations

import copy

from .terraform_rules import (
    PUBSUB_MAX_DELIVERY_ATTEMPTS,
    _described,
    _mutated,
    _number,
    backoff_schedule,
    burst_problems,
    definition_problems,
    input_problems,
    problems,
)


def test_scaling_is_the_definitions_and_concurrent_with_a_full_cpu(inputs) -> None:
    described = _described()
    assert definition_problems(inputs, described) == []
    for ph in inputs["phases"].values():
        assert ph["concurrency"] > 1 and float(ph["cpu"]) >= 1, ph["name"]



def test_scaling_other_than_the_definitions_is_reported(inputs) -> None:
    described = _described()
    bad = copy.deepcopy(inputs)
    bad["phases"]["3"]["max_instances"] += 1
    bad["phases"]["4"]["concurrency"] = 1
    found = definition_problems(bad, described)
    assert any("phase 3 max_instances" in p for p in found), found
    assert any("phase 4 concurrency" in p for p in found), found



def test_backoff_schedule_is_exponential_and_capped() -> None:
    assert backoff_schedule(9, 10, 600) == [10, 20, 40, 80, 160, 320, 600, 600]
    assert sum(backoff_schedule(100, 10, 600)) == 630 + 93 * 600  # 56 430 s, about 15.7 h
    assert sum(backoff_schedule(5, 10, 600)) == 150



def test_the_retry_policy_outlasts_the_documented_burst(parsed, inputs) -> None:
    """502 messages (every expected date) at 10 instances x 8 requests: 7 waves of <= 540 s = 3780 s,
    against 56 430 s of backoff over 100 deliveries (docs/deploy.md, "Bursts")."""
    assert inputs["burst_messages"] >= 100
    assert burst_problems(parsed["root"], inputs) == []
    assert _number(parsed["root"], "${var.max_delivery_attempts}") == PUBSUB_MAX_DELIVERY_ATTEMPTS



def test_five_delivery_attempts_or_a_single_request_instance_are_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    bad["root"]["variable"]["max_delivery_attempts"]["default"] = 5
    found = burst_problems(bad["root"], inputs)
    assert any("phase 2: 5 deliveries survive 150 s" in p for p in found), found
    assert any("less than one wave" in p for p in found), found
    # 100 deliveries are not enough when a phase serves one request on one instance.
    small = copy.deepcopy(inputs)
    small["phases"]["4"].update(max_instances=1, concurrency=1)
    found = burst_problems(parsed["root"], small)
    assert [p for p in found if "phase 4" in p and "would be dead-lettered" in p], found
    assert not [p for p in found if "phase 3" in p], found
    assert any("concurrency is 1" in p for p in input_problems(small))



def test_single_request_functions_and_a_fractional_cpu_are_reported(parsed, inputs) -> None:
    bad = _mutated(parsed)
    sc = next(iter(bad["phase"]["resource"]["google_cloudfunctions2_function"].values()))["service_config"][0]
    sc["max_instance_request_concurrency"] = 1
    sc["max_instance_count"] = 10
    del sc["available_cpu"]
    sc["environment_variables"] = "${var.environment}"
    bad["phase"]["variable"]["phase"]["validation"] = []
    found = problems(bad, inputs)
    for needle in ("max_instance_request_concurrency is not the definition's", "max_instance_count is not the definition's",
                   "available_cpu is not var.phase.cpu", "THREADS", "concurrency > 1 comes with >= 1 vCPU",
                   "CASCADE_PHASE"):
        assert any(needle in p for p in found), (needle, found)
    small = copy.deepcopy(inputs)
    small["phases"]["3"]["cpu"] = "0.5"
    assert any("concurrency 8 with cpu 0.5" in p for p in input_problems(small))



def test_run_attempts_are_not_tied_to_delivery_attempts(parsed, inputs) -> None:
    bad = _mutated(parsed)
    env = bad["root"]["locals"]["function_environment"]
    bad["root"]["locals"]["function_environment"] = env.replace("var.max_run_attempts", "var.max_delivery_attempts")
    assert any("CASCADE_MAX_ATTEMPTS" in p for p in problems(bad, inputs))
