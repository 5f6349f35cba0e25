"""DivBase's schema at its revision 9885301b9073 (releases v0.1.0a6 to v0.1.0a9): the trunk both branches fork from.

Revision ID: 9885301b9073
Revises:
Create Date: 2026-06-09 14:10:27+00:00

This revision has DivBase's own id on purpose: a production DivBase database, migrated by DivBase's eleven revisions
(c5a18386f0b6 ... 9885301b9073), holds exactly this id in `alembic_version` and is recognised as it is, with no
`alembic stamp`. On an empty database it builds the same schema in one step (proved against the committed snapshot
of a database built by DivBase's own revisions, tests/integration/test_real_schema.py). Before the first expand on
an adopted database, `divbase-migrate` compares the live schema with that snapshot and refuses on any drift.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "9885301b9073"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Types a real database holds; `taskstatus` is unused there (revision 86ef3d9ea91b dropped its column, not the type).
ENUM_TYPES = ("announcementlevel", "announcementtarget", "projectroles", "taskstatus", "tokenrevokereason",
              "tokentype")
TABLES = ("announcement", "personal_access_token", "project", "project_membership", "project_version",
          "queue_status", "revoked_token", "skipped_vcf_files", "task_history", "task_started_at", "user",
          "vcf_metadata", "vcf_metadata_samples", "vcf_metadata_scaffolds")
QUEUE_STATUS_ROW = ("INSERT INTO queue_status (id, is_closed, reason_for_users) VALUES (1, false, "
                    "'The queuing system is currently closed for new tasks due to planned upcoming maintenance. "
                    "Please try again later.')")


def upgrade() -> None:
    postgresql.ENUM("PENDING", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED",
                    name="taskstatus").create(op.get_bind())
    op.create_table("announcement",
        sa.Column("heading", sa.String(length=200), nullable=False),
        sa.Column("message", sa.String(length=1000), nullable=True),
        sa.Column("target", sa.Enum("BOTH", "CLI", "WEB", name="announcementtarget"), nullable=False),
        sa.Column("level", sa.Enum("INFO", "SUCCESS", "WARNING", "DANGER", name="announcementlevel"), nullable=False),
        sa.Column("auto_expire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index(op.f("ix_announcement_heading"), "announcement", ["heading"], unique=False)
    op.create_index(op.f("ix_announcement_id"), "announcement", ["id"], unique=False)
    op.create_index(op.f("ix_announcement_level"), "announcement", ["level"], unique=False)
    op.create_index(op.f("ix_announcement_target"), "announcement", ["target"], unique=False)
    op.create_table("project",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=True),
        sa.Column("bucket_name", sa.String(length=63), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("is_deleted", sa.Boolean(), nullable=False),
        sa.Column("storage_quota_bytes", sa.BigInteger(), nullable=False),
        sa.Column("storage_used_bytes", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index(op.f("ix_project_bucket_name"), "project", ["bucket_name"], unique=True)
    op.create_index(op.f("ix_project_id"), "project", ["id"], unique=False)
    op.create_index(op.f("ix_project_name"), "project", ["name"], unique=True)
    op.create_table("queue_status",
        sa.Column("is_closed", sa.Boolean(), nullable=False),
        sa.Column("scheduled_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason_for_users", sa.String(length=500), nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("id = 1", name="queue_status_singleton_row"),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index(op.f("ix_queue_status_id"), "queue_status", ["id"], unique=False)
    op.create_table("task_started_at",
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index(op.f("ix_task_started_at_id"), "task_started_at", ["id"], unique=False)
    op.create_index(op.f("ix_task_started_at_task_id"), "task_started_at", ["task_id"], unique=True)
    op.create_table("user",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("email", sa.String(length=50), nullable=False),
        sa.Column("hashed_password", sa.String(length=128), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("is_deleted", sa.Boolean(), nullable=False),
        sa.Column("email_verified", sa.Boolean(), nullable=False),
        sa.Column("date_deleted", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_password_change", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("organisation", sa.String(length=200), nullable=False),
        sa.Column("organisation_role", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index(op.f("ix_user_email"), "user", ["email"], unique=True)
    op.create_index(op.f("ix_user_id"), "user", ["id"], unique=False)
    op.create_index(op.f("ix_user_name"), "user", ["name"], unique=False)
    op.create_table("personal_access_token",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("hashed_token", sa.String(length=64), nullable=False),
        sa.Column("permissions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_deleted", sa.Boolean(), nullable=False),
        sa.Column("date_deleted", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index(op.f("ix_personal_access_token_hashed_token"), "personal_access_token", ["hashed_token"], unique=True)
    op.create_index(op.f("ix_personal_access_token_id"), "personal_access_token", ["id"], unique=False)
    op.create_index(op.f("ix_personal_access_token_user_id"), "personal_access_token", ["user_id"], unique=False)
    op.create_table("project_membership",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.Enum("READ", "QUERY", "EDIT", "MANAGE", name="projectroles"), nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "project_id", name="unique_user_project")
    )
    op.create_index(op.f("ix_project_membership_id"), "project_membership", ["id"], unique=False)
    op.create_index(op.f("ix_project_membership_project_id"), "project_membership", ["project_id"], unique=False)
    op.create_index(op.f("ix_project_membership_role"), "project_membership", ["role"], unique=False)
    op.create_index(op.f("ix_project_membership_user_id"), "project_membership", ["user_id"], unique=False)
    op.create_table("project_version",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("files", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("is_deleted", sa.Boolean(), nullable=False),
        sa.Column("date_deleted", sa.DateTime(timezone=True), nullable=True),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "project_id", name="unique_name_project")
    )
    op.create_index(op.f("ix_project_version_id"), "project_version", ["id"], unique=False)
    op.create_index(op.f("ix_project_version_name"), "project_version", ["name"], unique=False)
    op.create_index(op.f("ix_project_version_project_id"), "project_version", ["project_id"], unique=False)
    op.create_table("revoked_token",
        sa.Column("token_jti", sa.String(length=36), nullable=False),
        sa.Column("token_type", sa.Enum("ACCESS", "REFRESH", "EMAIL_VERIFICATION", "PASSWORD_RESET", name="tokentype"), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("revoked_reason", sa.Enum("LOGOUT", "TOKEN_USED", "MANUAL_REVOKE", name="tokenrevokereason"), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index(op.f("ix_revoked_token_id"), "revoked_token", ["id"], unique=False)
    op.create_index(op.f("ix_revoked_token_token_jti"), "revoked_token", ["token_jti"], unique=True)
    op.create_index(op.f("ix_revoked_token_token_type"), "revoked_token", ["token_type"], unique=False)
    op.create_index(op.f("ix_revoked_token_user_id"), "revoked_token", ["user_id"], unique=False)
    op.create_table("skipped_vcf_files",
        sa.Column("vcf_file_s3_key", sa.String(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("s3_version_id", sa.String(), nullable=False),
        sa.Column("skip_reason", sa.String(), nullable=True),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("vcf_file_s3_key", "project_id", name="unique_skipped_vcf_per_project")
    )
    op.create_index(op.f("ix_skipped_vcf_files_id"), "skipped_vcf_files", ["id"], unique=False)
    op.create_index(op.f("ix_skipped_vcf_files_project_id"), "skipped_vcf_files", ["project_id"], unique=False)
    op.create_index(op.f("ix_skipped_vcf_files_s3_version_id"), "skipped_vcf_files", ["s3_version_id"], unique=False)
    op.create_index(op.f("ix_skipped_vcf_files_vcf_file_s3_key"), "skipped_vcf_files", ["vcf_file_s3_key"], unique=False)
    op.create_table("task_history",
        sa.Column("task_id", sa.String(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("project_id", sa.Integer(), nullable=True),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index(op.f("ix_task_history_id"), "task_history", ["id"], unique=False)
    op.create_index(op.f("ix_task_history_project_id"), "task_history", ["project_id"], unique=False)
    op.create_index(op.f("ix_task_history_task_id"), "task_history", ["task_id"], unique=True)
    op.create_index(op.f("ix_task_history_user_id"), "task_history", ["user_id"], unique=False)
    op.create_table("vcf_metadata",
        sa.Column("vcf_file_s3_key", sa.String(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("s3_version_id", sa.String(), nullable=False),
        sa.Column("file_size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("variant_count", sa.BigInteger(), nullable=False),
        sa.Column("sample_count", sa.Integer(), nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("vcf_file_s3_key", "project_id", name="unique_vcf_per_project")
    )
    op.create_index(op.f("ix_vcf_metadata_id"), "vcf_metadata", ["id"], unique=False)
    op.create_index(op.f("ix_vcf_metadata_project_id"), "vcf_metadata", ["project_id"], unique=False)
    op.create_index(op.f("ix_vcf_metadata_s3_version_id"), "vcf_metadata", ["s3_version_id"], unique=False)
    op.create_index(op.f("ix_vcf_metadata_vcf_file_s3_key"), "vcf_metadata", ["vcf_file_s3_key"], unique=False)
    op.create_table("vcf_metadata_samples",
        sa.Column("vcf_metadata_id", sa.Integer(), nullable=False),
        sa.Column("sample_name", sa.String(), nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["vcf_metadata_id"], ["vcf_metadata.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index(op.f("ix_vcf_metadata_samples_id"), "vcf_metadata_samples", ["id"], unique=False)
    op.create_index(op.f("ix_vcf_metadata_samples_sample_name"), "vcf_metadata_samples", ["sample_name"], unique=False)
    op.create_index(op.f("ix_vcf_metadata_samples_vcf_metadata_id"), "vcf_metadata_samples", ["vcf_metadata_id"], unique=False)
    op.create_table("vcf_metadata_scaffolds",
        sa.Column("vcf_metadata_id", sa.Integer(), nullable=False),
        sa.Column("scaffold_name", sa.String(), nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["vcf_metadata_id"], ["vcf_metadata.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index(op.f("ix_vcf_metadata_scaffolds_id"), "vcf_metadata_scaffolds", ["id"], unique=False)
    op.create_index(op.f("ix_vcf_metadata_scaffolds_scaffold_name"), "vcf_metadata_scaffolds", ["scaffold_name"], unique=False)
    op.create_index(op.f("ix_vcf_metadata_scaffolds_vcf_metadata_id"), "vcf_metadata_scaffolds", ["vcf_metadata_id"], unique=False)

    op.execute(QUEUE_STATUS_ROW)  # DivBase's revision 755a240de0ab seeds the singleton row


def downgrade() -> None:
    # Leaves nothing behind: tables (their indexes and sequences go with them), then every enum type.
    for table in reversed(TABLES):
        op.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
    for type_name in ENUM_TYPES:
        op.execute(f"DROP TYPE IF EXISTS {type_name}")
