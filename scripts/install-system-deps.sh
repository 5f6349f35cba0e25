#!/usr/bin/env bash
# Installs the system packages the suite needs when they are missing, so `make test` works on a fresh machine.
# PostgreSQL, iproute2, nftables and redis-server come from Debian's packages; Go must already be on PATH (it builds the local control plane).
set -euo pipefail

need=()
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ] || [ ! -x "$pg_bin/pg_ctl" ]; then
  need+=(postgresql postgresql-contrib)
fi
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# the local cluster's pod network (`up --pod-network`): namespaces and veth pairs, kube-proxy's nftables mode
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
# Argo CD's application controller needs a Redis (tests/cluster/test_argocd_e2e.py runs one on loopback)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

if [ "${#need[@]}" -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if ! command -v go >/dev/null 2>&1; then
  echo "error: 'go' is not on PATH; the local control plane is built from Go modules (Go >= 1.24)" >&2
  exit 1
fi
echo "system dependencies ok (postgres: $(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1), $(go version))"
