"""pytest-alembic's own built-in tests on our Alembic environment (the checks DivBase's CI would run), against a
real PostgreSQL: every revision upgrades from empty, models match the DDL at the heads, every revision downgrades
and upgrades again, one head (Alembic's `heads` resolve a contract head's `depends_on`, so the two branches count as
one), and a downgrade leaves no trace. Plus the branch rule its single-head test cannot express."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from divbase_migrations import revisions, schema_snapshot
from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import Engine, create_engine, pool

# pytest-alembic's experimental test_downgrade_leaves_no_trace is left out, and not for SQLAlchemy 2 (env.py now
# connects through the engine-like wrapper it hands in, and the test starts): it runs every upgrade/downgrade cycle
# inside one transaction of its own, in savepoints it rolls back, while revisions that must run outside any
# transaction use Alembic's autocommit_block() (e0002's batched backfill, the CREATE INDEX CONCURRENTLY and ALTER
# TYPE ... ADD VALUE revisions), which cannot leave a transaction Alembic did not begin (AssertionError in
# MigrationContext.autocommit_block at e0002). test_every_downgrade_leaves_no_trace below checks the same, object by
# object with our snapshot, committing each step as the runner does.
__all__ = ["test_model_definitions_match_ddl", "test_single_head_revision", "test_up_down_consistency", "test_upgrade"]


@pytest.fixture
def alembic_config() -> Config:
    return revisions.alembic_config()


@pytest.fixture
def alembic_engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url, poolclass=pool.NullPool)
    yield engine
    engine.dispose()


def test_one_head_per_branch() -> None:
    """pytest-alembic's test_single_head_revision counts Alembic's `heads`, where the contract head's `depends_on`
    absorbs the expand head; the rule here is one linear branch each, by label, both heads in the graph."""
    script = revisions.script_directory()
    chains = revisions.chains_from(script)
    assert sorted(script.get_heads()) == sorted([chains.expand[-1], chains.contract[-1]])
    assert script.get_revision("expand@head").revision == chains.expand[-1]
    assert script.get_revision("contract@head").revision == chains.contract[-1]


def _walk() -> list[str]:
    """Every revision in an order Alembic can apply one at a time: the baseline, then each step of each release."""
    chains = revisions.load().chains
    order = [chains.expand[0]]
    for expand, contract in zip(chains.expand[1:], chains.contract[1:] + ("",) * len(chains.expand), strict=False):
        order.append(expand)
        if contract and all(d in order for d in _deps(contract)):
            order.append(contract)
    return order + [c for c in chains.contract[1:] if c not in order]


def _deps(revision: str) -> tuple[str, ...]:
    deps = revisions.script_directory().get_revision(revision).dependencies
    return (deps,) if isinstance(deps, str) else tuple(deps or ())


def test_every_downgrade_leaves_no_trace(alembic_engine: Engine) -> None:
    """Upgrade one revision, downgrade it, and the schema (every table, index, constraint, enum label, trigger,
    function) is exactly what it was: checked for each revision in turn, from empty to the heads."""
    chains = revisions.load().chains

    def alembic(step: Any, target: str) -> None:  # a connection per command, as the runner does
        with alembic_engine.connect() as conn:
            step(revisions.alembic_config(connection=conn), target)
            conn.commit()

    def schema() -> dict[str, Any]:
        with alembic_engine.connect() as conn:
            return schema_snapshot.take(conn, exclude_tables={"alembic_version"})

    for revision in _walk():
        before = schema()
        alembic(command.upgrade, revision)
        branch = chains.branch_of(revision)
        alembic(command.downgrade, "base" if branch == "trunk" else f"{branch}@-1")
        assert schema_snapshot.diff(before, schema()) == [], f"downgrade of {revision}"
        alembic(command.upgrade, revision)
