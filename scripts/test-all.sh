#!/usr/bin/env bash
# `make test`: the cluster tests in one session, and beside it (they mostly wait on the control plane) the unit
# tests, the PostgreSQL 15 tests, then the server-dependent ones again on PostgreSQL 18. The side run's output
# follows the cluster session's; any failure fails the whole.
#   scripts/test-all.sh PYTEST [PYTEST_ARGS...]     (the Makefile passes .venv/bin/pytest and $(PYTEST_ARGS))
set -uo pipefail
cd "$(dirname "$0")/.."
pytest_bin="$1"; shift
side_log="$(mktemp)"
trap 'rm -f "$side_log"' EXIT
started=$SECONDS
(
  scripts/run-pytest.sh "$pytest_bin" -ra tests/unit tests/integration "$@"; first=$?
  make --no-print-directory integration-pg18 PYTEST_ARGS="$*"; second=$?
  [ "$first" -eq 0 ] && [ "$second" -eq 0 ]
) > "$side_log" 2>&1 &
side=$!
scripts/run-pytest.sh "$pytest_bin" -ra tests/cluster "$@"; cluster=$?
echo "--- cluster tests: exit $cluster after $((SECONDS - started)) s; waiting for the unit and PostgreSQL run ---"
wait "$side"; rest=$?
cat "$side_log"
echo "--- unit and PostgreSQL 15/18 tests: exit $rest; everything took $((SECONDS - started)) s ---"
[ "$cluster" -eq 0 ] && [ "$rest" -eq 0 ]
