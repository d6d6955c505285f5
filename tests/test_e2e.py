"""End to end on the local stack: real functions-framework servers receiving emulator pushes,
driven through the ``cascade`` CLI exactly as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date

import pytest
import requests

from cascade.ops.date_status import date_status

from .harness import ROOT, Harness, new_namespace, push_body

D = date(2025, 1, 15)


@pytest.fixture(scope="module")
def deployed(stack, endpoints):
    h = Harness(endpoints, new_namespace())
    urls = h.deploy(stack)
    h.write_raw(date(2024, 12, 14), date(2025, 1, 20))
    yield h, urls
    stack.stop([n for n in stack.running() if n.startswith(f"function-{h.namespace}-")])


def cli(h: Harness, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**__import__("os").environ, **h.endpoints.as_env(), "CASCADE_PROJECT": h.project,
           "CASCADE_NAMESPACE": h.namespace, "CASCADE_STATE_DIR": str(ROOT / ".cascade-test-unused")}
    return subprocess.run([sys.executable, "-m", "cascade.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_trigger_cascades_through_pushes_and_status_json_reports_it(deployed):
    h, _ = deployed
    out = cli(h, "trigger", "--date", D.isoformat(), "--strict-mode", "false", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["topic"] == h.pipeline.topic(2)
    waited = cli(h, "wait", "--date", D.isoformat(), "--phase", "4", "--timeout", "90")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    st = json.loads(cli(h, "status", "--date", D.isoformat(), "--json").stdout)
    assert st["date"] == "2025-01-15"
    for n in ("2", "3", "4"):
        assert st["phases"][n]["status"] == "complete"
        for p in st["phases"][n]["processors"].values():
            assert p["status"] == "success" and p["record_count"] > 0 and p["run_id"]
    assert st["phases"]["2"]["triggered_next"] is True and st["phases"]["3"]["triggered_next"] is True
    assert st["phases"]["4"]["triggered_next"] is False


def test_message_published_with_any_client_works_the_same(deployed):
    h, _ = deployed
    day = date(2025, 1, 16)
    data = json.dumps({"pipeline": "nba", "phase": 2, "data_date": day.isoformat(), "strict_mode": False}).encode()
    h.publisher.publish(h.publisher.topic_path(h.project, h.pipeline.topic(2)), data).result(timeout=30)
    assert cli(h, "wait", "--date", day.isoformat(), "--phase", "4", "--timeout", "90").returncode == 0
    assert date_status(h.app, day)["phases"]["4"]["status"] == "complete"


def test_malformed_push_is_acknowledged_with_2xx_and_recorded(deployed):
    h, urls = deployed
    url = f"{urls[2]}/projects/{h.project}/topics/{h.pipeline.topic(2)}"
    resp = requests.post(url, json=push_body(b"{not json"), timeout=30)
    assert resp.status_code in (200, 204), resp.text
    assert any("not JSON" in r["reason"] for r in h.app.tracker.rejected())


def test_wait_exits_1_when_the_phase_fails_and_2_on_timeout(deployed):
    h, _ = deployed
    no_files = date(2025, 1, 25)  # raw files were written up to 2025-01-20 only
    assert cli(h, "trigger", "--date", no_files.isoformat()).returncode == 0
    failed = cli(h, "wait", "--date", no_files.isoformat(), "--phase", "4", "--timeout", "60")
    assert failed.returncode == 1, failed.stdout
    assert "phase 2 is failed" in failed.stdout and "raw file" in failed.stdout
    never = cli(h, "wait", "--date", "2025-01-26", "--phase", "2", "--timeout", "1")
    assert never.returncode == 2


def test_cli_rejects_impossible_dates_with_a_clear_message(deployed):
    h, _ = deployed
    out = cli(h, "trigger", "--date", "2024-02-30")
    assert out.returncode == 2 and "not a valid date" in out.stderr
