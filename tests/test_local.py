"""``cascade up`` / ``down`` / ``describe`` as a user runs them (subprocesses, own state dir)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cascade.dev.localstack import _proc_stat

from .harness import ROOT


def run(state, *args, timeout=180):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST") and not k.startswith("CASCADE_")}
    env["CASCADE_STATE_DIR"] = str(state)
    return subprocess.run([sys.executable, "-m", "cascade.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def env_file(state) -> dict[str, str]:
    out = {}
    for line in (state / "env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        out[key] = value
    return out


def test_up_is_idempotent_writes_env_and_down_stops_exactly_what_it_started(tmp_path):
    state = tmp_path / "state"
    first = run(state, "up", "--start", "2025-01-14", "--end", "2025-01-15")
    try:
        assert first.returncode == 0, first.stdout + first.stderr
        env = env_file(state)
        for key in ("CASCADE_PROJECT", "PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST",
                    "STORAGE_EMULATOR_HOST", "CASCADE_TRIGGER_TOPIC"):
            assert env.get(key), key
        assert env["BIGQUERY_EMULATOR_HOST"].startswith("http://")
        assert env["CASCADE_TRIGGER_TOPIC"] == "nba-phase2-raw"
        assert "wrote 4 raw files for 2 expected dates" in first.stdout
        pids = {p.stem: json.loads(p.read_text())["pid"] for p in (state / "pids").glob("*.json")}
        assert {"pubsub", "firestore", "bigquery", "storage"} <= set(pids)
        assert len([n for n in pids if n.startswith("function-")]) == 5  # one per phase (2-6)
        second = run(state, "up")
        assert second.returncode == 0, second.stderr
        assert env_file(state) == env  # same emulators, same ports
        assert {p.stem: json.loads(p.read_text())["pid"] for p in (state / "pids").glob("*.json")} == pids
        unrelated = subprocess.Popen(["sleep", "60"])
    finally:
        down = run(state, "down")
    assert down.returncode == 0
    assert not (state / "env").exists()
    for pid in pids.values():
        stat = _proc_stat(pid)
        assert stat is None or stat[0] in ("Z", "X"), pid
    assert unrelated.poll() is None  # not ours: left alone
    unrelated.kill()


def test_describe_json_derives_everything_from_the_definition():
    out = subprocess.run([sys.executable, "-m", "cascade.cli", "describe", "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "CASCADE_PROJECT": "proj", "CASCADE_NAMESPACE": ""})
    d = json.loads(out.stdout)
    assert [p["number"] for p in d["phases"]] == [2, 3, 4, 5, 6]
    p3 = d["phases"][1]
    assert p3["topic"] == "nba-phase3-analytics" and p3["dead_letter_topic"] == "nba-phase3-analytics-dlq"
    form = next(p for p in p3["processors"] if p["name"] == "player_rolling_form")
    assert form["output_table"] == "proj.nba_analytics.player_rolling_form"
    assert form["keys"] == ["player_id"] and form["lookback_days"] == 30
    assert d["calendar"]["timezone"] == "America/New_York"


def test_every_command_has_help_text():
    from cascade.cli import build_parser
    parser = build_parser()
    assert subprocess.run([sys.executable, "-m", "cascade.cli", "--help"], cwd=ROOT, capture_output=True,
                          timeout=60).returncode == 0
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert {"up", "down", "describe", "trigger", "status", "wait", "check", "backfill", "preflight", "coverage",
            "validate", "rerun", "daily", "simulate", "sweep", "dlq"} <= set(sub.choices)
    for name, command in sub.choices.items():
        text = command.format_help()
        assert command.description or name in ("sample", "rejected", "validate"), name
        assert "usage:" in text, name
    for action in sub._choices_actions:
        assert action.help, f"{action.dest} has no one-line help"


def test_help_and_describe_speak_of_expected_dates_not_games():
    from cascade.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    worded = {name: text for name, command in sub.choices.items() if "game" in (text := command.format_help()).lower()}
    assert worded == {}  # generic words: a pipeline need not be about games
    out = subprocess.run([sys.executable, "-m", "cascade.cli", "describe"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "CASCADE_PROJECT": "proj", "CASCADE_NAMESPACE": ""})
    calendar = next(line for line in out.stdout.splitlines() if line.startswith("calendar:"))
    assert "dates with no data expected" in calendar and "game" not in calendar, calendar


def _describe(tmp_path, edit, *args):
    """``cascade describe`` of the weather-station test pipeline changed by ``edit``."""
    from .test_trust_after_change import write_definition
    path = write_definition(tmp_path, edit)
    return subprocess.run([sys.executable, "-m", "cascade.cli", "describe", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "CASCADE_PROJECT": "proj", "CASCADE_NAMESPACE": "",
                                                      "CASCADE_PIPELINE_FILE": path})


def test_describe_shows_the_history_start_of_the_pipeline_and_of_each_processor_that_declares_one(tmp_path):
    def edit(raw):
        raw["calendar"]["history_start"] = "2025-01-07"
        raw["processors"][0]["history_start"] = "2025-01-09"

    out = _describe(tmp_path, edit)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    calendar = next(line for line in lines if line.startswith("calendar:"))
    assert "history starts 2025-01-07" in calendar, calendar
    at = next(i for i, line in enumerate(lines) if line.split()[:1] == ["readings"])
    assert "history starts 2025-01-09" in "\n".join(lines[at:at + 3]), out.stdout
    assert "history starts" not in "\n".join(lines[at + 3:]), out.stdout  # only where one is declared
    d = json.loads(_describe(tmp_path, edit, "--json").stdout)
    assert d["calendar"]["history_start"] == "2025-01-07"
    procs = {p["name"]: p for ph in d["phases"] for p in ph["processors"]}
    assert procs["readings"]["history_start"] == "2025-01-09" and procs["report"]["history_start"] is None


def test_up_lists_every_bucket_it_ensures_the_raw_one_and_each_exports_own(endpoints):
    from cascade.definition.loading import load
    from cascade.dev.provision import provision_emulators
    from cascade.runtime import clients

    from .harness import new_namespace

    pipeline = load(str(ROOT / "pipelines" / "weather.yaml"), namespace=new_namespace())
    raw, *exports = pipeline.buckets(endpoints.project)
    assert exports, "the weather pipeline exports to its own bucket"
    lines: list[str] = []
    provision_emulators(pipeline, endpoints, {}, progress=lines.append)
    gcs = [line for line in lines if line.startswith("gcs:")]
    assert len(gcs) == 1 and all(f"gs://{b}" in gcs[0] for b in [raw, *exports]), lines
    storage = clients.storage(endpoints.project)
    assert all(storage.bucket(b).exists() for b in [raw, *exports])


def test_output_into_a_closed_pipe_stops_quietly_not_as_a_backend_error():
    proc = subprocess.Popen([sys.executable, "-m", "cascade.cli", "describe"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # like `cascade describe | head -0`: the reader is gone before anything is written
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141, err
    assert "cannot reach a backend" not in err and "Traceback" not in err, err
