"""A database shaped like DivBase's production one (Celery's tables beside it, realistic rows in every table), and
what "nothing changed" means for a refused command: one helper for every refusal test."""

from __future__ import annotations

import hashlib
from typing import Any

from divbase_migrations import schema_snapshot
from migrate_helpers import engine
from sqlalchemy import Connection, text

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
    "project_membership": "id, user_id, project_id, role",
    "revoked_token": "id, token_jti, token_type, user_id",
    "vcf_metadata": "id, vcf_file_s3_key, variant_count, sample_count",
    "vcf_metadata_samples": "id, sample_name",
    "vcf_metadata_scaffolds": "id, scaffold_name",
    "skipped_vcf_files": "id, vcf_file_s3_key, s3_version_id",
    "task_history": "id, task_id, user_id, project_id",
    "task_started_at": "id, task_id, started_at",
    "project_version": "id, name, files, user_id",
    "announcement": "id, heading, message, target",
    "personal_access_token": "id, hashed_token, permissions",
    "queue_status": "id, is_closed, reason_for_users",
    "celery_taskmeta": "id, task_id, status",
}


def fingerprint(conn: Connection) -> dict[str, str]:
    """Per table: row count and a digest of the kept columns of every row."""
    out = {}
    for table, columns in KEPT.items():
        rows = conn.execute(text(f'SELECT {columns} FROM "{table}" ORDER BY id')).all()
        out[table] = f"{len(rows)}:{hashlib.sha256(repr(rows).encode()).hexdigest()[:16]}"
    return out


def everything(conn: Connection) -> tuple[Any, ...]:
    """What 'nothing changed' means: the schema (bookkeeping tables included), alembic_version and every row."""
    schema = schema_snapshot.take(conn)
    versions = (
        conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        if "alembic_version" in schema["tables"]
        else None
    )
    rows = {
        table: conn.execute(
            text(
                f"SELECT count(*), md5(string_agg(to_jsonb(t)::text, ',' ORDER BY "
                f'to_jsonb(t)::text)) FROM "{table}" t'
            )
        ).one()
        for table in schema["tables"]
    }
    return schema, sorted(versions) if versions is not None else None, rows


def state(url: str) -> tuple[Any, ...]:
    """`everything` of the database at `url`, read on a connection of its own."""
    with engine(url).connect() as conn:
        return everything(conn)


def assert_unchanged(url: str, before: tuple[Any, ...]) -> None:
    """A refused command left the database byte-identical: schema, alembic_version, every row; and it did not
    create divbase_migration_log where there was none (said apart, as the likeliest trace)."""
    after = state(url)
    if "divbase_migration_log" not in before[0]["tables"]:
        assert "divbase_migration_log" not in after[0]["tables"], "the refused command created divbase_migration_log"
    assert after == before
