#!/usr/bin/env bash
# `make test`: the cluster tests on the session's cluster in one session, and beside it (they mostly wait on the
# control plane) a side run: first the cluster tests that start clusters of their own (the docs' scenarios, the pod
# network) and Flux's and Argo CD's end to end (their own session cluster: ~3 min and ~1.5-2 min, which the side run
# has to spare and the cluster session has not), then the unit tests, the PostgreSQL 15 tests, then the server-dependent ones again on PostgreSQL 18. The
# side run's output follows the cluster session's; any failure fails the whole.
#   scripts/test-all.sh PYTEST [PYTEST_ARGS...]     (the Makefile passes .venv/bin/pytest and $(PYTEST_ARGS))
set -uo pipefail
cd "$(dirname "$0")/.."
pytest_bin="$1"; shift
own_clusters=(tests/cluster/test_docs_run.py tests/cluster/test_pod_network.py tests/cluster/test_flux_e2e.py
              tests/cluster/test_argocd_e2e.py)
side_log="$(mktemp)"
trap 'rm -f "$side_log"' EXIT
started=$SECONDS
(
  scripts/run-pytest.sh "$pytest_bin" -ra "${own_clusters[@]}" "$@"; zeroth=$?
  # Debian's server, asserted (the Makefile exports PG_MAJOR, default 15, and its bin directory)
  PG_BINDIR="${PG_MAJOR_BINDIR:-/usr/lib/postgresql/${PG_MAJOR:-15}/bin}" DIVBASE_EXPECT_PG_MAJOR="${PG_MAJOR:-15}" \
    scripts/run-pytest.sh "$pytest_bin" -ra tests/unit tests/integration "$@"; first=$?
  make --no-print-directory integration-pg18 PYTEST_ARGS="$*"; second=$?
  [ "$zeroth" -eq 0 ] && [ "$first" -eq 0 ] && [ "$second" -eq 0 ]
) > "$side_log" 2>&1 &
side=$!
scripts/run-pytest.sh "$pytest_bin" -ra tests/cluster "${own_clusters[@]/#/--ignore=}" "$@"; cluster=$?
echo "--- cluster tests: exit $cluster after $((SECONDS - started)) s; waiting for the side run ---"
wait "$side"; rest=$?
cat "$side_log"
echo "--- own-cluster, unit and PostgreSQL 15/18 tests: exit $rest; everything took $((SECONDS - started)) s ---"
[ "$cluster" -eq 0 ] && [ "$rest" -eq 0 ]
