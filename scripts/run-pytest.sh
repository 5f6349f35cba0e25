#!/usr/bin/env bash
# Runs pytest and turns "no tests collected" (exit 5) into a loud, non-failing outcome: CI must neither pass
# silently on an empty suite nor fail a run that simply has nothing to collect yet.
set -uo pipefail
pytest_bin="$1"; shift
"$pytest_bin" "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "WARNING: pytest collected no tests (exit 5); treating as success but nothing was verified" >&2
  echo "0 passed, 0 failed"
  exit 0
fi
exit "$rc"
