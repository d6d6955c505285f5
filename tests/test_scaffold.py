"""`cascade init`: a new project lints clean, its own test passes, and its README's commands run a
date end to end on local emulators with no edits."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cascade.cli import main as cascade
from cascade.cli import use_project_definition
from cascade.lint import lint

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _clean_env(project: Path) -> dict[str, str]:
    """The environment of a person in a fresh shell: no emulator addresses or Cascade settings of the
    test session (those would point the commands at the session's emulators)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CASCADE_") and "EMULATOR_HOST" not in k and k != "PYTHONPATH"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["CASCADE_STATE_DIR"] = str(project / ".cascade")  # `make test` exports the repository's
    return env


def _readme_commands(readme: Path) -> list[str]:
    """The `cascade ...` lines of the README's first bash block, comments stripped."""
    block = re.search(r"```bash\n(.*?)```", readme.read_text(), re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.startswith("cascade ")]


@pytest.fixture()
def project(tmp_path: Path, capsys) -> Path:
    root = tmp_path / "corner_shop"
    assert cascade(["init", str(root)]) == 0
    out = capsys.readouterr().out
    assert "cascade up --start 2025-01-01 --end 2025-01-07" in out and "cascade wait --date 2025-01-01 --phase 2" in out
    return root


def test_init_writes_a_project_that_lints_clean_with_sql_and_python_processors_and_a_gate(project):
    names = {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()}
    assert {"pipeline.yaml", "corner_shop_processors.py", "README.md", "test_corner_shop.py", "pytest.ini",
            "sample_data/orders/2025-01-01.json"} <= names
    text = (project / "pipeline.yaml").read_text()
    assert text.startswith(f"# yaml-language-server: $schema={REPO / 'docs' / 'definition-schema.json'}")
    assert "python: corner_shop_processors:store_trends" in text and "gates:" in text and "sql: |" in text
    report = lint(project / "pipeline.yaml")
    assert report.ok, report.render()
    assert report.statements > 10


def test_init_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert cascade(["init", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_inside_a_project_folder_cascade_uses_its_pipeline_yaml(project, monkeypatch):
    monkeypatch.setenv("CASCADE_PIPELINE_FILE", "")  # unset for the call, restored afterwards
    monkeypatch.setattr(sys, "path", list(sys.path))
    use_project_definition(project)
    assert os.environ["CASCADE_PIPELINE_FILE"] == str((project / "pipeline.yaml").resolve())
    assert str(project.resolve()) in sys.path


def test_the_projects_own_test_passes(project):
    run = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=project, env=_clean_env(project),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout


def test_the_readme_commands_run_a_date_end_to_end_on_local_emulators(project):
    commands = _readme_commands(project / "README.md")
    assert [c.split()[1] for c in commands] == ["lint", "up", "trigger", "wait", "status", "backfill", "down"]
    env = _clean_env(project)
    outputs = {}
    try:
        for command in commands:
            run = subprocess.run(command, shell=True, cwd=project, env=env, capture_output=True, text=True,
                                 timeout=300)
            outputs[command] = run.stdout + run.stderr
            assert run.returncode == 0, f"{command}\n{outputs[command]}"
    finally:
        subprocess.run(["cascade", "down"], cwd=project, env=env, capture_output=True, timeout=120)
    status = next(v for k, v in outputs.items() if k.startswith("cascade status"))
    assert re.search(r"phase 2 analytics\s+COMPLETE", status), status
    for processor in ("orders", "daily_store_sales", "store_trends"):
        assert re.search(rf"{processor}\s+success\s+rows\s+[1-9]", status), status
    backfill = next(v for k, v in outputs.items() if k.startswith("cascade backfill"))
    assert "validation: ok" in backfill, backfill


def test_the_repository_readme_start_your_own_pipeline_commands_are_the_tested_ones(project):
    doc = (REPO / "docs" / "your-own-pipeline.md").read_text()
    section = doc.split("## Start your own pipeline", 1)[1].split("\n## ", 1)[0]
    tested = set(_readme_commands(project / "README.md"))
    shown = [line.split("#", 1)[0].strip() for line in section.splitlines() if line.startswith("cascade ")]
    assert shown and all(c in tested or c.startswith(("cascade init", "cascade lint")) for c in shown), shown
