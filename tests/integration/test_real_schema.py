"""DivBase's real schema: our models, our baseline revision and the committed snapshot of a database built by
DivBase's own eleven revisions agree object by object; a database shaped like a production one is adopted as it
is (no stamp), keeps every row through every example release, and is refused, unchanged, when it drifted or when
it is at an older or unknown revision."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from divbase_migrations import revisions, schema_snapshot
from divbase_migrations.models import BASELINE_REVISION, FOREIGN_TABLES, Base
from migrate_helpers import engine, run
from sqlalchemy import Connection, text

MANIFEST = revisions.load()
assert MANIFEST.baseline is not None and MANIFEST.baseline.schema is not None
SNAPSHOT = schema_snapshot.load(MANIFEST.baseline.schema)
EXAMPLES = ("1", "2", "3", "4")

# Rows a production DivBase database holds, in every table (hand-written here; values as DivBase's code writes).
ROWS = """
INSERT INTO project (name, description, bucket_name, is_active, is_deleted, storage_quota_bytes, storage_used_bytes)
VALUES ('mouse', 'Mus musculus', 'divbase-mouse', true, false, 107374182400, 5368709120),
       ('wolf', NULL, 'divbase-wolf', true, true, 10737418240, 0);
INSERT INTO "user" (name, email, hashed_password, is_admin, is_active, is_deleted, email_verified, date_deleted,
                    organisation, organisation_role)
VALUES ('Ada Admin', 'ada@scilifelab.se', 'pbkdf2$1', true, true, false, true, NULL, 'SciLifeLab', 'Data steward'),
       ('Bo Researcher', 'bo@uu.se', 'pbkdf2$2', false, true, false, true, NULL, 'Uppsala University', 'PhD'),
       ('Gone User', 'gone@ki.se', 'pbkdf2$3', false, false, true, false, now(), 'Not specified', 'Not specified');
INSERT INTO project_membership (user_id, project_id, role) VALUES (1, 1, 'MANAGE'), (2, 1, 'QUERY'), (2, 2, 'READ');
INSERT INTO revoked_token (token_jti, token_type, revoked_reason, user_id)
VALUES ('0f8fad5b-d9cb-469f-a165-70867728950e', 'REFRESH', 'LOGOUT', 2),
       ('7c9e6679-7425-40de-944b-e07fc1f90ae7', 'PASSWORD_RESET', 'TOKEN_USED', NULL);
INSERT INTO vcf_metadata (vcf_file_s3_key, project_id, s3_version_id, file_size_bytes, variant_count, sample_count)
VALUES ('mouse/chr1.vcf.gz', 1, 'v1', 734003200, 1200000, 3), ('mouse/chr2.vcf.gz', 1, 'v4', 52428800, 90000, 2);
INSERT INTO vcf_metadata_samples (vcf_metadata_id, sample_name)
VALUES (1, 'S1'), (1, 'S2'), (1, 'S3'), (2, 'S1'), (2, 'S2');
INSERT INTO vcf_metadata_scaffolds (vcf_metadata_id, scaffold_name) VALUES (1, 'chr1'), (2, 'chr2');
INSERT INTO skipped_vcf_files (vcf_file_s3_key, project_id, s3_version_id, skip_reason)
VALUES ('mouse/broken.vcf.gz', 1, 'v2', 'not bgzipped'), ('mouse/empty.vcf.gz', 1, 'v1', NULL);
INSERT INTO task_history (task_id, user_id, project_id) VALUES ('9f1c', 2, 1), (NULL, 2, 1), ('77aa', NULL, NULL);
INSERT INTO task_started_at (task_id, started_at) VALUES ('9f1c', '2026-06-30 10:00:00');
INSERT INTO project_version (name, description, files, is_deleted, project_id, user_id)
VALUES ('v1', 'first freeze', '{"mouse/chr1.vcf.gz": "v1"}', false, 1, 1);
INSERT INTO announcement (heading, message, target, level, auto_expire_at)
VALUES ('Maintenance', 'Queue closes Friday', 'BOTH', 'WARNING', now() + interval '7 days'),
       ('Welcome', NULL, 'WEB', 'SUCCESS', NULL), ('Outage', 'S3 down', 'CLI', 'DANGER', NULL);
INSERT INTO personal_access_token (user_id, name, description, hashed_token, permissions, is_deleted)
VALUES (2, 'laptop', NULL, repeat('a', 64), '{"projects": {"mouse": "query"}}', false);
UPDATE queue_status SET is_closed = true WHERE id = 1;
INSERT INTO celery_taskmeta (task_id, status) VALUES ('9f1c', 'SUCCESS');
"""
CELERY = """
CREATE SEQUENCE task_id_sequence;
CREATE TABLE celery_taskmeta (id integer PRIMARY KEY DEFAULT nextval('task_id_sequence'), task_id varchar(155)
    UNIQUE, status varchar(50), result bytea, date_done timestamp, traceback text, name varchar(155));
CREATE SEQUENCE taskset_id_sequence;
CREATE TABLE celery_groupmeta (id integer PRIMARY KEY DEFAULT nextval('taskset_id_sequence'),
    taskset_id varchar(155) UNIQUE, result bytea, date_done timestamp);
"""
# Columns no example release changes: every row must keep exactly these values through all of them.
KEPT = {
    "project": "id, name, description, bucket_name, is_active, is_deleted, storage_quota_bytes, storage_used_bytes",
    "user": "id, email, hashed_password, is_admin, is_active, is_deleted, email_verified, organisation, "
            "organisation_role, date_deleted",
    "project_membership": "id, user_id, project_id, role", "revoked_token": "id, token_jti, token_type, user_id",
    "vcf_metadata": "id, vcf_file_s3_key, variant_count, sample_count", "vcf_metadata_samples": "id, sample_name",
    "vcf_metadata_scaffolds": "id, scaffold_name", "skipped_vcf_files": "id, vcf_file_s3_key, s3_version_id",
    "task_history": "id, task_id, user_id, project_id", "task_started_at": "id, task_id, started_at",
    "project_version": "id, name, files, user_id", "announcement": "id, heading, message, target",
    "personal_access_token": "id, hashed_token, permissions", "queue_status": "id, is_closed, reason_for_users",
    "celery_taskmeta": "id, task_id, status",
}


def _snapshot(conn: Connection) -> dict[str, Any]:
    return schema_snapshot.take(conn, exclude_tables=FOREIGN_TABLES)


def _fingerprint(conn: Connection) -> dict[str, str]:
    """Per table: row count and a digest of the kept columns of every row."""
    out = {}
    for table, columns in KEPT.items():
        rows = conn.execute(text(f'SELECT {columns} FROM "{table}" ORDER BY id')).all()
        out[table] = f"{len(rows)}:{hashlib.sha256(repr(rows).encode()).hexdigest()[:16]}"
    return out


def _everything(conn: Connection) -> tuple[Any, ...]:
    """What 'nothing changed' means: the schema (with bookkeeping tables), alembic_version and every row."""
    schema = schema_snapshot.take(conn)
    versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    rows = {table: conn.execute(text(f'SELECT count(*), md5(string_agg(to_jsonb(t)::text, \',\' ORDER BY '
                                     f'to_jsonb(t)::text)) FROM "{table}" t')).one()
            for table in schema["tables"]}
    return schema, sorted(versions), rows


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
        before = _fingerprint(conn)
    status = run(database_url, "status", term=tmp_path / "status.json")
    assert status.code == 0, status.output
    assert status.summary["to"] == {"expand": BASELINE_REVISION, "contract": BASELINE_REVISION}
    for version in EXAMPLES:
        for step in ("expand", "contract"):
            result = run(database_url, step, "--release", version, term=tmp_path / f"{step}-{version}.json")
            assert result.code == 0, result.output
            with db.connect() as conn:
                assert _fingerprint(conn) == before, f"rows changed by {step} {version}"
    with db.connect() as conn:
        assert conn.execute(text('SELECT display_name FROM "user" ORDER BY id')).scalars().all() == [
            "Ada Admin", "Bo Researcher", "Gone User"]
        assert conn.execute(text("SELECT skip_reason FROM skipped_vcf_files ORDER BY id")).scalars().all() == [
            "not bgzipped", "unspecified"]
        assert conn.execute(text("SELECT level::text FROM announcement ORDER BY id")).scalars().all() == [
            "CAUTION", "SUCCESS", "DANGER"]


DRIFTS = {
    "a hand-made index": ("CREATE INDEX ix_user_organisation ON \"user\" (organisation)",
                          'table "user": index "ix_user_organisation": unexpected'),
    "a widened column": ('ALTER TABLE "user" ALTER COLUMN email TYPE varchar(100)',
                         'table "user": column "email": type \'character varying(100)\', expected '
                         '\'character varying(50)\''),
    "a missing enum label": ("ALTER TYPE announcementlevel RENAME VALUE 'DANGER' TO 'CRITICAL'",
                             'enum "announcementlevel": labels'),
    "a dropped column": ("ALTER TABLE project DROP COLUMN storage_used_bytes",
                         'table "project": column "storage_used_bytes": missing'),
}


@pytest.mark.parametrize("drift", sorted(DRIFTS))
def test_a_drifted_database_at_the_baseline_is_refused_unchanged(database_url: str, tmp_path: Path,
                                                                 drift: str) -> None:
    production_like(database_url, tmp_path)
    sql, expected = DRIFTS[drift]
    db = engine(database_url)
    with db.begin() as conn:
        conn.execute(text(sql))
    with db.connect() as conn:
        before = _everything(conn)
    result = run(database_url, "expand", "--release", "2", term=tmp_path / "t.json")
    assert result.code == 5, result.output
    assert "differs from it in 1 place(s), so nothing was applied" in result.summary["error"]
    assert expected in result.summary["error"]
    with db.connect() as conn:
        assert _everything(conn) == before  # not even divbase_migration_log was created


@pytest.mark.parametrize(("head", "code", "message"), [
    ("427a022ebccf", 5, "at revision 427a022ebccf (2026-04-17 add_personal_access_token_table (releases v0.1.0a1 "
                        "to v0.1.0a5)), older than the baseline 9885301b9073 this image starts from: upgrade it "
                        "with DivBase's own"),
    ("c5a18386f0b6", 5, "2025-12-04 initial_migration"),
    ("0badc0ffee00", 2, "alembic_version holds '0badc0ffee00': not a revision of this image's migrations"),
])
@pytest.mark.parametrize("command", ["expand", "contract", "status", "check"])
def test_older_and_unknown_revisions_are_refused_unchanged(database_url: str, tmp_path: Path, head: str,
                                                           code: int, message: str, command: str) -> None:
    production_like(database_url, tmp_path)
    db = engine(database_url)
    with db.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :h"), {"h": head})
    with db.connect() as conn:
        before = _everything(conn)
    args = [command] if command == "status" else [command, "--release", "2"]
    result = run(database_url, *args, term=tmp_path / "t.json")
    assert result.code == code, result.output
    assert message in result.summary["error"] and "nothing was changed" in result.summary["error"]
    with db.connect() as conn:
        assert _everything(conn) == before


def test_a_version_string_that_is_no_release_is_refused_before_connecting(tmp_path: Path) -> None:
    result = run("postgresql://nobody@127.0.0.1:1/none", "expand", "--release", "v9.9.9", term=tmp_path / "t.json")
    assert result.code == 2
    assert "release 'v9.9.9' is not in the manifest" in result.summary["error"]
