"""Alerting: the alert metric's filter matches what the runtime logs, freshness, policies,
channels and the dashboard.

Run with the dedicated venv and the checks as a plugin (see infra/check.sh):
``.venv-hcl/bin/python -m pytest -q -p tests.terraform_rules tests/test_terraform_alerting.py``."""

from __future__ import annotations

import copy

from .terraform_rules import (
    TF_ROOT,
    _alert_log_line,
    _as_log_entry,
    _mutated,
    _runner_entry,
    _runner_log_lines,
    input_problems,
    log_filter_matches,
    monitoring_problems,
    parse_dir,
    problems,
)


def test_the_alert_metric_counts_exactly_cascade_alert_entries(inputs) -> None:
    flt = inputs["monitoring"]["alert_log_filter"]
    entry = _as_log_entry(_alert_log_line(), inputs["phases"]["3"]["deployed_name"])
    assert log_filter_matches(flt, entry), (flt, entry)
    # Not an ordinary error line, not another pipeline's alert, not another service's.
    plain = copy.deepcopy(entry)
    del plain["jsonPayload"]["alert"]
    other = copy.deepcopy(entry)
    other["labels"]["pipeline"] = "mlb"
    elsewhere = copy.deepcopy(entry)
    elsewhere["resource"]["labels"]["service_name"] = "someone-else"
    warning = copy.deepcopy(entry)
    warning["severity"] = "WARNING"
    for e in (plain, other, elsewhere, warning):
        assert not log_filter_matches(flt, e), e



def test_an_alert_filter_that_misses_the_alert_entry_fails(inputs) -> None:
    entry = _as_log_entry(_alert_log_line(), inputs["phases"]["3"]["deployed_name"])
    flt = inputs["monitoring"]["alert_log_filter"]
    for wrong in (flt.replace("severity=ERROR", "severity=CRITICAL"), flt.replace("jsonPayload.alert=true", "jsonPayload.alerted=true"),
                  flt.replace('labels.pipeline="nba"', 'jsonPayload.pipeline="nba"')):
        assert not log_filter_matches(wrong, entry), wrong
    bad = copy.deepcopy(inputs)
    bad["monitoring"]["alert_log_filter"] = flt.replace("severity=ERROR\n", "")
    assert any("lacks severity=ERROR" in p for p in monitoring_problems(parse_dir(TF_ROOT), bad))



def test_freshness_counts_daily_completions_and_no_game_days_of_the_chain(inputs) -> None:
    fr = inputs["phases"]["4"]["freshness"]
    assert (fr["complete_by"], fr["starts"], fr["chain"], fr["window_seconds"]) == ("08:00", "06:00", [2, 3, 4], 9000)
    assert inputs["phases"]["6"]["freshness"]["complete_by"] == "11:00"
    flt = fr["log_filter"]
    lines4, lines2 = _runner_log_lines(4), _runner_log_lines(2)
    assert log_filter_matches(flt, _runner_entry(inputs, 4, lines4["complete"]))
    assert log_filter_matches(flt, _runner_entry(inputs, 2, lines2["skipped"]))  # no games: nothing cascades
    for e in (_runner_entry(inputs, 4, lines4["incomplete"]),
              _runner_entry(inputs, 4, lines4["complete"], mode="backfill"),  # a backfill is not today's run
              _runner_entry(inputs, 3, _runner_log_lines(3)["complete"]),   # phase 3 done is not phase 4 done
              _runner_entry(inputs, 5, _runner_log_lines(5)["skipped"])):   # another chain's no-game day
        assert not log_filter_matches(flt, e), e



def test_missing_or_wrong_freshness_is_reported(parsed, inputs) -> None:
    bad = copy.deepcopy(inputs)
    bad["phases"]["4"]["freshness"] = None
    assert any("phase 4: reached by the daily schedule of phase 2 but has no freshness" in p for p in input_problems(bad))
    bad = copy.deepcopy(inputs)
    bad["phases"]["3"]["freshness"]["window_seconds"] = 24 * 3600
    bad["phases"]["4"]["freshness"]["deadline_schedule"] = "0 9 * * *"
    bad["phases"]["6"]["freshness"]["log_filter"] = bad["phases"]["6"]["freshness"]["log_filter"].replace(
        'labels.mode="daily"\n', "")
    found = input_problems(bad)
    assert any("phase 3: freshness window 86400" in p for p in found), found
    assert any("phase 4: deadline_schedule 0 9" in p for p in found), found
    assert any('phase 6: freshness log filter lacks labels.mode="daily"' in p for p in found), found
    mutated = _mutated(parsed)
    mutated["root"]["resource"]["google_monitoring_alert_policy"]["freshness"]["combiner"] = "OR"
    assert any("no freshness alert policy" in p for p in problems(mutated, inputs))
    mutated = _mutated(parsed)
    cond = mutated["root"]["resource"]["google_monitoring_alert_policy"]["freshness"]["conditions"][1]
    del cond["condition_threshold"][0]["evaluation_missing_data"]
    assert any("no freshness alert policy" in p for p in problems(mutated, inputs))
    mutated = _mutated(parsed)
    mutated["root"]["resource"]["google_cloud_scheduler_job"]["deadline"]["time_zone"] = "UTC"
    assert any("no deadline Cloud Scheduler job" in p for p in problems(mutated, inputs))



def test_missing_alert_policies_channels_and_dashboard_are_reported(parsed, inputs) -> None:
    for policy, needle in (("alerts", "no alert policy on the alert-entry metric"),
                           ("dead_letters", "dead-letter subscription backlog"),
                           ("oldest_unacked", "oldest unacked message age"),
                           ("error_ratio", "5xx ratio")):
        bad = _mutated(parsed)
        bad["root"]["resource"]["google_monitoring_alert_policy"].pop(policy)
        assert any(needle in p for p in problems(bad, inputs)), policy
    bad = _mutated(parsed)
    bad["root"]["resource"]["google_monitoring_alert_policy"]["oldest_unacked"]["for_each"] = '${{for k, p in local.phases : k => p if k == "2"}}'
    assert any("oldest unacked message age" in p for p in problems(bad, inputs))
    bad = _mutated(parsed)
    bad["root"]["resource"]["google_monitoring_alert_policy"]["error_ratio"]["notification_channels"] = []
    bad["root"]["variable"].pop("notification_channels")
    found = problems(bad, inputs)
    assert any("error_ratio does not notify" in p for p in found), found
    assert any("variable notification_channels" in p for p in found), found
    bad = _mutated(parsed)
    bad["root"]["resource"].pop("google_monitoring_dashboard")
    bad["root"]["locals"]["dashboard_series"] = "${[]}"
    found = problems(bad, inputs)
    assert any("no google_monitoring_dashboard" in p for p in found), found
    assert any("the dashboard lacks per-phase series" in p for p in found), found
