#!/usr/bin/env bash
# Stop every process recorded under ${CASCADE_STATE_DIR:-.cascade}/pids (emulators and phase functions).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec .venv/bin/python -m cascade.dev.localstack stop --state-dir "${CASCADE_STATE_DIR:-.cascade}" "$@"
