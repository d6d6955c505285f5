#!/usr/bin/env bash
# Offline checks of the Terraform deployment (the registry is unreachable, so no `terraform init`):
#   1. terraform fmt -check -recursive infra/terraform
#   2. structural tests (tests/test_terraform.py) with python-hcl2, in .venv-hcl
#   3. checkov static analysis, in .venv-checkov (its pinned hcl2 conflicts with python-hcl2)
# Creates the two venvs from infra/requirements-{hcl,checkov}.txt when missing or outdated.
# Usage: bash infra/check.sh      (from anywhere; exit 0 iff every check passed)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"

make_venv() { # <dir> <requirements file>
  local dir="$1" req="$2"
  if [[ -x "$dir/bin/python" && -f "$dir/.installed" && "$dir/.installed" -nt "$req" ]]; then
    return 0
  fi
  echo "==> creating $dir from $req (a minute or two on a fresh machine) ..."
  [[ -x "$dir/bin/python" ]] || "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" 2>&1 \
    | { grep -v "^WARNING: Location 'file:" || true; }
  [[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "pip install into $dir failed" >&2; return 1; }
  touch "$dir/.installed"
}

command -v terraform >/dev/null || { echo "error: terraform is not on PATH (needed for fmt -check)" >&2; exit 2; }
make_venv .venv-hcl infra/requirements-hcl.txt
make_venv .venv-checkov infra/requirements-checkov.txt

echo "==> terraform fmt -check -recursive infra/terraform"
terraform fmt -check -recursive -diff infra/terraform

echo "==> structural tests (tests/test_terraform.py)"
# --noconftest: tests/conftest.py starts the emulators and imports the runtime stack, which the
# hcl venv does not have; the structural tests need neither.
.venv-hcl/bin/python -m pytest -q tests/test_terraform.py -p no:cacheprovider --noconftest

echo "==> checkov"
.venv-checkov/bin/checkov -d infra/terraform --framework terraform --skip-download \
  --config-file infra/checkov.yaml --quiet --compact

echo "infra checks passed"
