"""Alerts visible locally: ``cascade alerts`` lists the records production would have routed to a
notification channel - from the phase functions' logs and the CLI's own log, with the production
filter's terms."""

from __future__ import annotations

import json
from datetime import date

from cascade.cli import main as cascade
from cascade.definition.loading import DEFAULT_DEFINITION
from cascade.runtime.alerts import Alert, LogAlertSink, local_alert_files, read_alerts
from cascade.state.status import Status

from .harness import Harness, new_namespace, wait_until

WEATHER = str(DEFAULT_DEFINITION.parent / "weather.yaml")
DAY = date(2025, 3, 4)  # an expected date of the worked example


def test_cascade_alerts_lists_what_would_have_been_sent(stack, endpoints, monkeypatch, capsys):
    h = Harness(endpoints, new_namespace(), pipeline_file=WEATHER)
    try:
        h.deploy(stack, phases=[1, 2])
        # Phase 2 triggered for a date without raw files: its raw load fails, station_daily is blocked,
        # and the function alerts - records on its stdout, kept in <state>/logs by the local stack.
        trig = h.trigger(DAY, phase=2)
        h.publisher.publish(h.publisher.topic_path(h.project, h.pipeline.topic(2)), trig.to_json(),
                            **trig.attributes()).result(timeout=30)
        assert wait_until(lambda: h.app.tracker.partition("station_daily", DAY).status == Status.BLOCKED, timeout=90)

        def function_alerts() -> list[dict]:
            return [a for a in read_alerts(local_alert_files(stack.state_dir), "weather")
                    if a["logging.googleapis.com/labels"].get("date") == DAY.isoformat()
                    and f"function-{h.namespace}-" in a["file"]]
        assert wait_until(lambda: len(function_alerts()) >= 1, timeout=30)

        # A CLI process's alert (a backfill's digest of its failures) goes to <state>/logs/cli.log.
        env = {"CASCADE_NAMESPACE": h.namespace, "CASCADE_PROJECT": h.project, "CASCADE_PIPELINE_FILE": WEATHER,
               "CASCADE_STATE_DIR": str(stack.state_dir), **h.endpoints.as_env(), **h.settings_env()}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("CASCADE_ALERT_LOG", raising=False)
        monkeypatch.delenv("CASCADE_PRODUCTION", raising=False)
        assert cascade(["backfill", "--start", "2025-03-05", "--end", "2025-03-05", "--phase", "1",
                        "--processor", "station_readings", "--skip-downstream-trigger", "--skip-preflight",
                        "--skip-validation"]) == 1  # its raw file was never written
        capsys.readouterr()

        assert cascade(["alerts", "--json"]) == 0
        listed = [a for a in json.loads(capsys.readouterr().out)
                  if a["file"].endswith("cli.log") or f"function-{h.namespace}-" in a["file"]]
        from_functions = [a for a in listed if "function-" in a["file"]]
        # The raw load of phase 2 found no file: failed for good, alerted once (not once per redelivery),
        # with the command that re-runs it.
        failed = [a for a in from_functions if a["message"].startswith(f"station_catalog FAILED for {DAY}")]
        assert len(failed) == 1, from_functions
        assert failed[0]["severity"] == "ERROR" and failed[0]["alert"] is True
        assert failed[0]["logging.googleapis.com/labels"]["phase"] == "2"
        assert f"cascade trigger --date {DAY} --phase 2 --processor station_catalog" in failed[0]["message"]
        digest = [a for a in listed if a["file"].endswith("cli.log") and "2025-03-05" in a["message"]]
        assert len(digest) == 1, listed
        assert all(a.get("logging.googleapis.com/labels", {}).get("pipeline", "weather") == "weather" for a in listed)

        assert cascade(["alerts"]) == 0
        text = capsys.readouterr().out
        assert f"date {DAY.isoformat()}" in text and "gcloud logging read" in text and "jsonPayload.alert=true" in text
    finally:
        stack.stop([n for n in stack.running() if n.startswith(f"function-{h.namespace}-")])


def test_only_alert_records_of_the_pipeline_are_listed(tmp_path, monkeypatch):
    log = tmp_path / "logs" / "cli.log"
    monkeypatch.setenv("CASCADE_ALERT_LOG", str(log))
    monkeypatch.delenv("CASCADE_PHASE", raising=False)
    LogAlertSink().send(Alert("station_daily FAILED for 2025-03-04", "boom",
                              labels={"pipeline": "weather", "phase": 2, "processor": "station_daily",
                                      "date": "2025-03-04"}))
    LogAlertSink().send(Alert("x FAILED", "other pipeline", labels={"pipeline": "retail", "phase": 2}))
    with log.open("a") as fh:  # an ordinary ERROR line and a line that is not JSON are not alerts
        fh.write(json.dumps({"severity": "ERROR", "message": "not an alert",
                             "logging.googleapis.com/labels": {"pipeline": "weather"}}) + "\nTraceback ...\n")
    found = read_alerts(local_alert_files(tmp_path), "weather")
    assert [a["message"] for a in found] == ["station_daily FAILED for 2025-03-04: boom"]
    assert found[0]["logging.googleapis.com/labels"] == {"pipeline": "weather", "phase": "2",
                                                        "processor": "station_daily", "date": "2025-03-04"}
    # A phase function keeps no copy: its stdout is its log (Cloud Logging in production).
    monkeypatch.setenv("CASCADE_PHASE", "2")
    LogAlertSink().send(Alert("y FAILED", "from a function", labels={"pipeline": "weather"}))
    assert len(read_alerts(local_alert_files(tmp_path), "weather")) == 1
