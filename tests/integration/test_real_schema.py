"""DivBase's real schema: our models, our baseline revision and the committed snapshot of a database built by
DivBase's own eleven revisions agree object by object; a database shaped like a production one is adopted as it
is (no stamp), keeps every row through every example release, and is refused, unchanged, when it drifted or when
it is at an older or unknown revision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from divbase_data import CELERY, ROWS, assert_unchanged, fingerprint, state
from divbase_migrations import revisions, schema_snapshot
from divbase_migrations.models import BASELINE_REVISION, FOREIGN_TABLES, Base
from migrate_helpers import engine, run
from sqlalchemy import Connection, text

MANIFEST = revisions.load()
assert MANIFEST.baseline is not None and MANIFEST.baseline.schema is not None
SNAPSHOT = schema_snapshot.load(MANIFEST.baseline.schema)
EXAMPLES = ("1", "2", "3", "4")


def _snapshot(conn: Connection) -> dict[str, Any]:
    return schema_snapshot.take(conn, exclude_tables=FOREIGN_TABLES)


def production_like(url: str, tmp_path: Path) -> None:
    """A database as DivBase's db-migrator leaves it: at 9885301b9073, Celery's tables beside it, real rows.
    Built by our baseline revision, which the test below proves builds exactly DivBase's schema."""
    result = run(url, "expand", "--release", "0.1.0a9", term=tmp_path / "build.json")
    assert result.code == 0, result.output
    with engine(url).begin() as conn:
        conn.execute(text("DROP TABLE divbase_migration_log"))  # DivBase's own migrator leaves no such table
        conn.execute(text(CELERY))
        conn.execute(text(ROWS))


def test_models_are_divbase_s_schema_object_by_object(database_url: str) -> None:
    with engine(database_url).begin() as conn:
        Base.metadata.create_all(conn)
        assert schema_snapshot.diff(SNAPSHOT, _snapshot(conn)) == []


def test_the_baseline_revision_builds_divbase_s_schema_on_an_empty_database(database_url: str, tmp_path: Path) -> None:
    result = run(database_url, "expand", "--release", "0.1.0a9", term=tmp_path / "t.json")
    assert result.code == 0, result.output
    assert result.summary["applied"] == [BASELINE_REVISION]
    with engine(database_url).connect() as conn:
        assert schema_snapshot.diff(SNAPSHOT, _snapshot(conn)) == []
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == BASELINE_REVISION
        assert conn.execute(text("SELECT is_closed FROM queue_status WHERE id = 1")).scalar_one() is False


def test_the_snapshot_names_the_real_source_and_holds_what_divbase_has() -> None:
    source = schema_snapshot.json.loads(MANIFEST.baseline.schema.read_text())["source"]
    assert source["repository"] == "ScilifelabDataCentre/divbase" and source["alembic_head"] == BASELINE_REVISION
    assert source["commit"].startswith("4438d792")
    user = SNAPSHOT["tables"]["user"]["columns"]
    assert user["email"]["type"] == "character varying(50)" and not user["organisation"]["nullable"]
    assert SNAPSHOT["enums"]["announcementlevel"] == ["INFO", "SUCCESS", "WARNING", "DANGER"]
    assert SNAPSHOT["enums"]["projectroles"] == ["READ", "QUERY", "EDIT", "MANAGE"]
    assert "ix_user_id" in SNAPSHOT["tables"]["user"]["indexes"]
    assert "project_membership_user_id_fkey" in SNAPSHOT["tables"]["project_membership"]["constraints"]
    assert not any(t.startswith("celery_") for t in SNAPSHOT["tables"])


def test_a_production_database_is_adopted_as_it_is_and_keeps_every_row(database_url: str, tmp_path: Path) -> None:
    production_like(database_url, tmp_path)
    db = engine(database_url)
    with db.connect() as conn:
        before = fingerprint(conn)
    status = run(database_url, "status", term=tmp_path / "status.json")
    assert status.code == 0, status.output
    assert status.summary["to"] == {"expand": BASELINE_REVISION, "contract": BASELINE_REVISION}
    for version in EXAMPLES:
        for step in ("expand", "contract"):
            result = run(database_url, step, "--release", version, term=tmp_path / f"{step}-{version}.json")
            assert result.code == 0, result.output
            with db.connect() as conn:
                assert fingerprint(conn) == before, f"rows changed by {step} {version}"
    with db.connect() as conn:
        assert conn.execute(text('SELECT display_name FROM "user" ORDER BY id')).scalars().all() == [
            "Ada Admin",
            "Bo Researcher",
            "Gone User",
        ]
        assert conn.execute(text("SELECT skip_reason FROM skipped_vcf_files ORDER BY id")).scalars().all() == [
            "not bgzipped",
            "unspecified",
        ]
        assert conn.execute(text("SELECT level::text FROM announcement ORDER BY id")).scalars().all() == [
            "CAUTION",
            "SUCCESS",
            "DANGER",
        ]


DRIFTS = {
    "a hand-made index": (
        'CREATE INDEX ix_user_organisation ON "user" (organisation)',
        'table "user": index "ix_user_organisation": unexpected',
    ),
    "a widened column": (
        'ALTER TABLE "user" ALTER COLUMN email TYPE varchar(100)',
        "table \"user\": column \"email\": type 'character varying(100)', expected 'character varying(50)'",
    ),
    "a missing enum label": (
        "ALTER TYPE announcementlevel RENAME VALUE 'DANGER' TO 'CRITICAL'",
        'enum "announcementlevel": labels',
    ),
    "a dropped column": (
        "ALTER TABLE project DROP COLUMN storage_used_bytes",
        'table "project": column "storage_used_bytes": missing',
    ),
}


@pytest.mark.parametrize("drift", sorted(DRIFTS))
def test_a_drifted_database_at_the_baseline_is_refused_unchanged(database_url: str, tmp_path: Path, drift: str) -> None:
    production_like(database_url, tmp_path)
    sql, expected = DRIFTS[drift]
    db = engine(database_url)
    with db.begin() as conn:
        conn.execute(text(sql))
    before = state(database_url)
    result = run(database_url, "expand", "--release", "2", term=tmp_path / "t.json")
    assert result.code == 5, result.output
    assert "differs from it in 1 place(s), so nothing was applied" in result.summary["error"]
    assert expected in result.summary["error"]
    assert_unchanged(database_url, before)


@pytest.mark.parametrize(
    ("head", "code", "message"),
    [
        (
            "427a022ebccf",
            5,
            "at revision 427a022ebccf (2026-04-17 add_personal_access_token_table (releases v0.1.0a1 "
            "to v0.1.0a5)), older than the baseline 9885301b9073 this image starts from: upgrade it "
            "with DivBase's own",
        ),
        ("c5a18386f0b6", 5, "2025-12-04 initial_migration"),
        ("0badc0ffee00", 2, "alembic_version holds '0badc0ffee00': not a revision of this image's migrations"),
    ],
)
@pytest.mark.parametrize("command", ["expand", "contract", "status", "check"])
def test_older_and_unknown_revisions_are_refused_unchanged(
    database_url: str, tmp_path: Path, head: str, code: int, message: str, command: str
) -> None:
    production_like(database_url, tmp_path)
    db = engine(database_url)
    with db.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :h"), {"h": head})
    before = state(database_url)
    args = [command] if command == "status" else [command, "--release", "2"]
    result = run(database_url, *args, term=tmp_path / "t.json")
    assert result.code == code, result.output
    assert message in result.summary["error"] and "nothing was changed" in result.summary["error"]
    assert_unchanged(database_url, before)


def test_a_version_string_that_is_no_release_is_refused_before_connecting(tmp_path: Path) -> None:
    result = run("postgresql://nobody@127.0.0.1:1/none", "expand", "--release", "v9.9.9", term=tmp_path / "t.json")
    assert result.code == 2
    assert "release 'v9.9.9' is not in the manifest" in result.summary["error"]
