# Cascade - the two commands that matter: `make demo` (the local cascade) and `make test`.
# Everything installs from the project's own files: a venv from requirements.txt (pinned).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
export CASCADE_STATE_DIR ?= $(CURDIR)/.cascade

.PHONY: help prereqs venv demo test test-python test-infra test-py312 lint bench up down ui tfvars clean provider-schema

help:
	@echo "make demo    run the local cascade demo (emulators, phases 2->3->4), exit 0 iff it completed"
	@echo "make test    run the whole test suite (Python on the emulators + Terraform offline checks)"
	@echo "make lint    cascade lint every shipped pipeline and a fresh cascade init scaffold (SQL by ZetaSQL)"
	@echo "make bench   backfill benchmark on the emulators (prints one JSON line)"
	@echo "make up / make down   start / stop the local stack (same as cascade up / cascade down)"
	@echo "make ui      serve the status page of the local stack on http://127.0.0.1:8765/ (cascade ui)"

prereqs:
	@bash emulators/check-prereqs.sh

$(VENV)/.installed: requirements.txt pyproject.toml
	@echo "creating $(VENV) from requirements.txt (about a minute on a fresh machine) ..."
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@set -o pipefail; $(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 \
		| { grep -v "^WARNING: Location 'file:" || true; }
	@set -o pipefail; { $(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . \
		|| $(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -e . ; } 2>&1 \
		| { grep -v "^WARNING: Location 'file:" || true; }
	@touch $@

venv: prereqs $(VENV)/.installed

demo: venv
	@bash scripts/demo.sh

test: venv lint test-cases test-python test-infra test-py312

test-python: venv
	$(VENV)/bin/python -m pytest -q -p no:bqemulator --durations=15 tests --ignore-glob="tests/test_terraform_*.py"

# Every shipped definition and a freshly scaffolded project, all their SQL analyzed by BigQuery's analyzer,
# in one `cascade lint` process (ZetaSQL starts once).
lint: venv
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; $(VENV)/bin/cascade init $$tmp/lint_scaffold >/dev/null; \
		echo "cascade lint pipelines/*.yaml <fresh scaffold>/pipeline.yaml"; \
		$(VENV)/bin/cascade lint pipelines/*.yaml $$tmp/lint_scaffold/pipeline.yaml

# The processor test cases beside every shipped definition and in a fresh scaffold (cascade test:
# given input rows, expected output rows, on the local BigQuery engine; SQL analyzed by ZetaSQL).
test-cases: venv
	@set -e; tmp=$$(mktemp -d); $(VENV)/bin/cascade init $$tmp/case_scaffold >/dev/null; \
		$(VENV)/bin/cascade test pipelines/*.yaml $$tmp/case_scaffold; rm -rf $$tmp

test-infra:
	@bash infra/check.sh

# Cloud Functions also runs Python 3.12: the function runtime (its requirements only) on 3.12.
# PY312 may name the interpreter; otherwise a working python3.12 on PATH or in pyenv is used.
test-py312: venv
	@py=$${PY312:-}; \
	if [ -z "$$py" ]; then for c in python3.12 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3.12 2>/dev/null); do \
		if $$c -c "import sys" >/dev/null 2>&1; then py=$$c; break; fi; done; fi; \
	if [ -z "$$py" ]; then echo "SKIPPED test-py312: no Python 3.12 found; install it (e.g. pyenv install 3.12) to check the function runtime on 3.12"; exit 0; fi; \
	set -eo pipefail; test -x .venv312/bin/python || $$py -m venv .venv312; \
	$(VENV)/bin/python -c "from cascade.deploy.bundle import runtime_requirements as r; print('\n'.join(r()))" > .venv312/requirements.txt; \
	.venv312/bin/pip install --quiet --disable-pip-version-check -r .venv312/requirements.txt 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }; \
	.venv312/bin/python scripts/runtime_smoke.py

bench: venv
	$(VENV)/bin/python scripts/bench.py

up: venv
	$(VENV)/bin/cascade up --start 2024-12-16 --end 2025-01-20

down:
	$(VENV)/bin/cascade down

ui: venv
	$(VENV)/bin/cascade ui --start 2024-12-16 --end 2025-01-20

tfvars: venv
	$(VENV)/bin/python -m cascade.deploy.tfvars --write

# The Google provider's schema of the types infra/terraform uses, from the pinned version's
# cdktn-provider-google(-beta) wheels (downloaded, ~70 MB each) -> infra/provider-schema/.
provider-schema:
	@bash infra/check.sh --venv
	.venv-hcl/bin/python infra/provider_schema.py

clean:
	-$(VENV)/bin/cascade down
	rm -rf $(VENV) .venv-hcl .venv-checkov .venv312 .cascade
