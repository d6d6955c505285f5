"""What ships in a Cloud Function is runtime only: the function zips carry the library's import
closure of the entry points, which excludes the local tooling, and that closure is enough to run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from cascade.deploy.bundle import SHIPPED_PACKAGES, runtime_files

from .harness import ROOT


def test_function_zips_carry_no_local_tooling():
    files = runtime_files()
    assert "shared/runtime/runner.py" in files and "shared/runtime/entry.py" in files and "shared/runtime/hooks.py" in files
    shipped = {"shared/__init__.py", "shared/errors.py"}
    assert [f for f in files if f not in shipped and f.split("/")[1] not in SHIPPED_PACKAGES] == []
    committed = json.loads((ROOT / "infra/terraform/pipeline.auto.tfvars.json").read_text())["pipeline"]
    assert committed["runtime_files"] == files  # Terraform packages exactly this list


def test_the_runtime_files_alone_import_every_function_and_run_a_fault_hook_as_a_no_op(tmp_path: Path):
    for f in runtime_files():
        dst = tmp_path / ("cascade" + f[len("shared"):])  # the zip layout: shared/ is the package `cascade`
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / f, dst)
    shutil.copytree(ROOT / "pipelines", tmp_path / "pipelines")
    mains = sorted((ROOT / "functions").glob("*/main.py"))
    code = "\n".join([
        "import importlib.util, os, sys",
        # only the copied files: drop the editable install's finder that maps `cascade` to the checkout
        "sys.meta_path = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]",
        "os.environ['CASCADE_ENABLE_FAULTS'] = '1'; os.environ['CASCADE_FAULTS'] = 'publish'",
        *[f"spec = importlib.util.spec_from_file_location('m{i}', {str(m)!r}); "
          f"importlib.util.module_from_spec(spec).__loader__.exec_module(importlib.util.module_from_spec(spec))"
          for i, m in enumerate(mains)],
        "from cascade.runtime import hooks; hooks.maybe_fail('publish')  # faults.py is absent: a no-op",
        "from cascade.definition.loading import load; load()",
        "bad = [m for m in sys.modules if m == 'cascade.cli' or m.startswith(('cascade.cli.', 'cascade.ui', 'cascade.backfill', "
        "'cascade.dev.localstack', 'cascade.dev.faults', 'cascade.dev.synthetic'))]",
        "assert not bad, bad",
        "print('ok')"])
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path),
                              "CASCADE_PIPELINE_FILE": str(tmp_path / "pipelines/nba.yaml")})
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_a_pipelines_own_python_modules_ship_beside_its_definition():
    from cascade.definition.loading import load
    from cascade.deploy.tfvars import terraform_inputs

    inputs = terraform_inputs(load(ROOT / "pipelines/retail.yaml", namespace=""))
    assert inputs["definition_file"] == "pipelines/retail.yaml"
    assert inputs["definition_modules"] == ["pipelines/retail_processors.py"]
    assert terraform_inputs(load(ROOT / "pipelines/nba.yaml", namespace=""))["definition_modules"] == []
