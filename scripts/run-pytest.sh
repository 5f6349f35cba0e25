#!/usr/bin/env bash
# Runs pytest and fails loudly when it collected nothing (exit 5): an empty selection (a moved folder, a typo in a
# path) must not pass CI as if everything had been verified.
set -uo pipefail
pytest_bin="$1"; shift
"$pytest_bin" "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "ERROR: pytest collected no tests (exit 5): nothing was verified" >&2
fi
exit "$rc"
