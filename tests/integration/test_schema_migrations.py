"""DivBase's migrations against a real PostgreSQL: every release from empty, models in step with the revisions,
and the zero-downtime promise (each release's queries survive the next release's expand)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from divbase_migrations import revisions
from divbase_migrations.compat import IncompatibleSchema, read_applied, require_compatible
from divbase_migrations.example_models import head_metadata
from divbase_migrations.models import FOREIGN_TABLES
from divbase_migrations.releases import Applied
from divbase_migrations.testing.release_queries import QUERIES
from migrate_helpers import engine, run
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

MANIFEST = revisions.load()
# What the next release's contract removes from under each release's queries. Release 2's inserts survive
# release 3's contract (the column default covers them), yet the manifest still refuses release 2 there: the
# rule is per release, not per query, and errs on the safe side.
BROKEN_BY_NEXT_CONTRACT = {"1": 'column "name"', "3": "invalid input value for enum announcementlevel"}
EXAMPLES = ("1", "2", "3", "4")


def step(url: str, name: str, version: str, tmp_path: Path) -> dict[str, Any]:
    result = run(url, name, "--release", version, term=tmp_path / f"{name}-{version}.json")
    assert result.code == 0, result.output
    return result.summary


@pytest.mark.parametrize("version", MANIFEST.versions)
def test_empty_database_to_each_release(database_url: str, version: str, tmp_path: Path) -> None:
    release = MANIFEST.release(version)
    expand = step(database_url, "expand", version, tmp_path)
    assert expand["outcome"] == "applied" and expand["to"]["expand"] == release.expand
    contract = step(database_url, "contract", version, tmp_path)
    assert contract["to"] == {"expand": release.expand, "contract": release.contract}
    require_compatible(database_url, version)
    again = step(database_url, "expand", version, tmp_path)
    assert again["outcome"] == "noop" and again["applied"] == []  # a re-run is a no-op


def test_models_match_the_migrated_schema(database_url: str, tmp_path: Path) -> None:
    latest = MANIFEST.latest().version
    step(database_url, "expand", latest, tmp_path)
    step(database_url, "contract", latest, tmp_path)

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table not in FOREIGN_TABLES

    with engine(database_url).connect() as conn:
        for table in ("celery_taskmeta", "celery_groupmeta"):  # Celery's, in the same database, not ours
            conn.execute(text(f"CREATE TABLE {table} (id serial primary key, task_id text)"))
        ctx = MigrationContext.configure(
            conn, opts={"include_object": include, "compare_type": True, "compare_server_default": True}
        )
        diff = compare_metadata(ctx, head_metadata())
    assert diff == [], diff


def test_index_is_built_concurrently_and_valid(database_url: str, tmp_path: Path) -> None:
    step(database_url, "expand", "3", tmp_path)
    with engine(database_url).connect() as conn:
        valid = conn.execute(
            text(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = 'ix_task_history_user_id_created_at'"
            )
        ).scalar_one()
    assert valid is True


@pytest.mark.parametrize("version", EXAMPLES[:-1])
def test_each_release_keeps_working_after_the_next_expand(database_url: str, version: str, tmp_path: Path) -> None:
    nxt = EXAMPLES[EXAMPLES.index(version) + 1]
    step(database_url, "expand", version, tmp_path)
    step(database_url, "contract", version, tmp_path)
    db = engine(database_url)
    with db.begin() as conn:
        before = QUERIES[version](conn)
    step(database_url, "expand", nxt, tmp_path)
    with db.begin() as conn:  # old pods keep serving while the new release's schema is prepared ...
        QUERIES[version](conn)
    with db.begin() as conn:  # ... and new pods serve alongside them, each seeing the other's writes
        new = QUERIES[nxt](conn)
    with db.begin() as conn:
        old = QUERIES[version](conn)
    require_compatible(database_url, version)
    require_compatible(database_url, nxt)
    if "names" in before:
        assert len(new["names"]) == len(before["names"]) + 2 and None not in new["names"]
        assert len(old["names"]) == len(new["names"]) + 1 and None not in old["names"]
    step(database_url, "contract", nxt, tmp_path)
    with db.begin() as conn:
        QUERIES[nxt](conn)
    with pytest.raises(IncompatibleSchema, match=f"removed what release {version} uses"):
        require_compatible(database_url, version)
    if version in BROKEN_BY_NEXT_CONTRACT:  # the contract really removed what the old release used
        with pytest.raises(DBAPIError, match=BROKEN_BY_NEXT_CONTRACT[version]), db.begin() as conn:
            QUERIES[version](conn)


def test_contract_backfills_and_tightens(database_url: str, tmp_path: Path) -> None:
    step(database_url, "expand", "1", tmp_path)
    db = engine(database_url)
    with db.begin() as conn:
        QUERIES["1"](conn)  # a skipped file without a reason, a WARNING announcement, user.name
    step(database_url, "expand", "4", tmp_path)
    step(database_url, "contract", "4", tmp_path)
    with db.connect() as conn:
        assert conn.execute(text("SELECT skip_reason FROM skipped_vcf_files")).scalar_one() == "unspecified"
        assert conn.execute(text('SELECT display_name FROM "user"')).scalar_one() == "Ada r1"
        assert [r[0] for r in conn.execute(text("SELECT level::text FROM announcement"))] == ["CAUTION"]
        labels = [
            r[0]
            for r in conn.execute(
                text(
                    "SELECT enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
                    "WHERE t.typname = 'announcementlevel' ORDER BY enumsortorder"
                )
            )
        ]
        assert labels == ["INFO", "SUCCESS", "CAUTION", "DANGER"]
        columns = {c["name"]: c for c in inspect(conn).get_columns("user")}
        assert "name" not in columns and columns["display_name"]["nullable"] is False
        skipped = {c["name"]: c for c in inspect(conn).get_columns("skipped_vcf_files")}
        assert skipped["skip_reason"]["nullable"] is False
        assert read_applied(conn) == Applied(MANIFEST.latest().expand, MANIFEST.latest().contract)
        log = conn.execute(text("SELECT revision, count(*) FROM divbase_migration_log GROUP BY revision")).all()
    assert sorted(r for r, _ in log) == sorted(set(MANIFEST.chains.expand + MANIFEST.chains.contract))
    assert all(n == 1 for _, n in log)  # every revision applied exactly once
