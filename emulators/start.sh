#!/usr/bin/env bash
# Start (or reuse) the four local emulators and print `export KEY=VALUE` lines for their endpoints.
# Usage: eval "$(emulators/start.sh)"      State: ${CASCADE_STATE_DIR:-.cascade} (relative to the repo root)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec .venv/bin/python -m cascade.dev.localstack start --state-dir "${CASCADE_STATE_DIR:-.cascade}" "$@"
