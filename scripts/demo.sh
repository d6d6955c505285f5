#!/usr/bin/env bash
# The local cascade demo (`make demo`): a date kicked by one trigger runs phases 2 -> 3 -> 4 on the
# emulators in strict mode, after the lookback history before it has been backfilled.
# Exits 0 only if the demo date completed through phase 4.
set -euo pipefail
cd "$(dirname "$0")/.."
export CASCADE_STATE_DIR="${CASCADE_STATE_DIR:-$PWD/.cascade}"
CASCADE=".venv/bin/cascade"
DEMO_DATE="${DEMO_DATE:-2024-11-20}"
HISTORY_START="${HISTORY_START:-2024-10-22}"
HISTORY_END="${HISTORY_END:-2024-11-19}"

cleanup() { "$CASCADE" down || true; }
trap cleanup EXIT

echo "== 1/5 cascade up: emulators, phase functions, topics, tables, synthetic raw files"
"$CASCADE" up --start "$HISTORY_START" --end "$DEMO_DATE"

echo "== 2/5 backfill the history phases 3-4 read (30-day lookbacks), from the season start: $HISTORY_START..$HISTORY_END"
"$CASCADE" backfill --start "$HISTORY_START" --end "$HISTORY_END" --workers 4

echo "== 3/5 kick the demo date with one trigger message (strict mode on, as in daily operations)"
"$CASCADE" trigger --date "$DEMO_DATE"

echo "== 4/5 wait for phases 2 -> 3 -> 4 (Firestore completion tracking, no sleeps)"
rc=0
"$CASCADE" wait --date "$DEMO_DATE" --phase 4 --timeout 180 || rc=$?

echo "== 5/5 status and a few output rows"
"$CASCADE" status --date "$DEMO_DATE"
"$CASCADE" sample --date "$DEMO_DATE" --processor player_composite_factors --limit 5 || true
if [ "$rc" -ne 0 ]; then
  echo "DEMO FAILED: $DEMO_DATE did not complete through phase 4 (exit $rc); logs are in $CASCADE_STATE_DIR/logs" >&2
  exit 1
fi
echo "DEMO OK: $DEMO_DATE completed phases 2 -> 3 -> 4"
