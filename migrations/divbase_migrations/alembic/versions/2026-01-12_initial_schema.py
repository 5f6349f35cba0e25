"""Release 1: DivBase's initial schema (every table, created on an empty database).

Revision ID: e0001_initial_schema
Revises:
Create Date: 2026-01-12 09:00:00+00:00

Branch: expand revisions only add or backfill; contract revisions remove or tighten (see docs/migrations.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "e0001_initial_schema"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("expand",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("announcement",
    sa.Column("title", sa.String(length=255), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("level", sa.Enum("INFO", "WARNING", "CRITICAL", name="announcementlevel"), nullable=False),
    sa.Column("target", sa.Enum("ALL", "WEB", "CLI", name="announcementtarget"), nullable=False),
    sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("is_active", sa.Boolean(), server_default="true", nullable=False),
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_announcement"))
    )
    op.create_table("project",
    sa.Column("name", sa.String(length=255), nullable=False),
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("bucket_name", sa.String(length=63), nullable=False),
    sa.Column("is_active", sa.Boolean(), server_default="true", nullable=False),
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_project")),
    sa.UniqueConstraint("bucket_name", name=op.f("uq_project_bucket_name")),
    sa.UniqueConstraint("name", name=op.f("uq_project_name"))
    )
    op.create_table("task_started_at",
    sa.Column("task_id", sa.String(length=255), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_task_started_at")),
    sa.UniqueConstraint("task_id", name=op.f("uq_task_started_at_task_id"))
    )
    op.create_table("user",
    sa.Column("email", sa.String(length=320), nullable=False),
    sa.Column("name", sa.String(length=255), nullable=False),
    sa.Column("hashed_password", sa.String(length=255), nullable=False),
    sa.Column("is_admin", sa.Boolean(), server_default="false", nullable=False),
    sa.Column("is_active", sa.Boolean(), server_default="true", nullable=False),
    sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_user")),
    sa.UniqueConstraint("email", name=op.f("uq_user_email"))
    )
    op.create_table("personal_access_token",
    sa.Column("user_id", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=255), nullable=False),
    sa.Column("token_hash", sa.String(length=255), nullable=False),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.ForeignKeyConstraint(["user_id"], ["user.id"], name=op.f("fk_personal_access_token_user_id_user"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_personal_access_token")),
    sa.UniqueConstraint("token_hash", name=op.f("uq_personal_access_token_token_hash"))
    )
    op.create_index(op.f("ix_personal_access_token_user_id"), "personal_access_token", ["user_id"], unique=False)
    op.create_table("project_membership",
    sa.Column("project_id", sa.Integer(), nullable=False),
    sa.Column("user_id", sa.Integer(), nullable=False),
    sa.Column("role", sa.Enum("READ", "QUERY", "EDIT", "MANAGE", name="projectrole"), nullable=False),
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_project_membership_project_id_project"), ondelete="CASCADE"),
    sa.ForeignKeyConstraint(["user_id"], ["user.id"], name=op.f("fk_project_membership_user_id_user"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_project_membership")),
    sa.UniqueConstraint("project_id", "user_id", name="uq_project_membership_project_user")
    )
    op.create_index(op.f("ix_project_membership_project_id"), "project_membership", ["project_id"], unique=False)
    op.create_index(op.f("ix_project_membership_user_id"), "project_membership", ["user_id"], unique=False)
    op.create_table("project_version",
    sa.Column("project_id", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=255), nullable=False),
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("files", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
    sa.Column("created_by_id", sa.Integer(), nullable=True),
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.ForeignKeyConstraint(["created_by_id"], ["user.id"], name=op.f("fk_project_version_created_by_id_user"), ondelete="SET NULL"),
    sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_project_version_project_id_project"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_project_version")),
    sa.UniqueConstraint("project_id", "name", name="uq_project_version_project_name")
    )
    op.create_index(op.f("ix_project_version_project_id"), "project_version", ["project_id"], unique=False)
    op.create_table("queue_status",
    sa.Column("is_paused", sa.Boolean(), server_default="false", nullable=False),
    sa.Column("message", sa.Text(), nullable=True),
    sa.Column("paused_by_id", sa.Integer(), nullable=True),
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.CheckConstraint("id = 1", name=op.f("ck_queue_status_single_row")),
    sa.ForeignKeyConstraint(["paused_by_id"], ["user.id"], name=op.f("fk_queue_status_paused_by_id_user"), ondelete="SET NULL"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_status"))
    )
    op.create_table("revoked_token",
    sa.Column("token_jti", sa.String(length=255), nullable=False),
    sa.Column("user_id", sa.Integer(), nullable=False),
    sa.Column("token_type", sa.Enum("ACCESS", "REFRESH", name="tokentype"), nullable=False),
    sa.Column("revoke_reason", sa.Enum("LOGOUT", "PASSWORD_CHANGED", "ADMIN_REVOKED", "ROTATED", name="tokenrevokereason"), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.ForeignKeyConstraint(["user_id"], ["user.id"], name=op.f("fk_revoked_token_user_id_user"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_revoked_token")),
    sa.UniqueConstraint("token_jti", name=op.f("uq_revoked_token_token_jti"))
    )
    op.create_index(op.f("ix_revoked_token_user_id"), "revoked_token", ["user_id"], unique=False)
    op.create_table("skipped_vcf_files",
    sa.Column("project_id", sa.Integer(), nullable=False),
    sa.Column("vcf_file_s3_key", sa.String(length=1024), nullable=False),
    sa.Column("s3_version_id", sa.String(length=1024), nullable=True),
    sa.Column("skip_reason", sa.Text(), nullable=False),
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_skipped_vcf_files_project_id_project"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_skipped_vcf_files"))
    )
    op.create_index(op.f("ix_skipped_vcf_files_project_id"), "skipped_vcf_files", ["project_id"], unique=False)
    op.create_table("task_history",
    sa.Column("task_id", sa.String(length=255), nullable=False),
    sa.Column("task_name", sa.String(length=255), nullable=False),
    sa.Column("status", sa.String(length=32), nullable=False),
    sa.Column("user_id", sa.Integer(), nullable=True),
    sa.Column("project_id", sa.Integer(), nullable=True),
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_task_history_project_id_project"), ondelete="SET NULL"),
    sa.ForeignKeyConstraint(["user_id"], ["user.id"], name=op.f("fk_task_history_user_id_user"), ondelete="SET NULL"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_task_history")),
    sa.UniqueConstraint("task_id", name=op.f("uq_task_history_task_id"))
    )
    op.create_table("vcf_metadata",
    sa.Column("project_id", sa.Integer(), nullable=False),
    sa.Column("vcf_file_s3_key", sa.String(length=1024), nullable=False),
    sa.Column("s3_version_id", sa.String(length=1024), nullable=True),
    sa.Column("file_size_bytes", sa.BigInteger(), nullable=False),
    sa.Column("sample_count", sa.Integer(), nullable=True),
    sa.Column("variant_count", sa.BigInteger(), nullable=True),
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_vcf_metadata_project_id_project"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_vcf_metadata")),
    sa.UniqueConstraint("project_id", "vcf_file_s3_key", name="uq_vcf_metadata_project_key")
    )
    op.create_index(op.f("ix_vcf_metadata_project_id"), "vcf_metadata", ["project_id"], unique=False)
    op.create_table("vcf_metadata_samples",
    sa.Column("vcf_metadata_id", sa.Integer(), nullable=False),
    sa.Column("sample_name", sa.String(length=255), nullable=False),
    sa.Column("sample_index", sa.Integer(), nullable=False),
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.ForeignKeyConstraint(["vcf_metadata_id"], ["vcf_metadata.id"], name=op.f("fk_vcf_metadata_samples_vcf_metadata_id_vcf_metadata"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_vcf_metadata_samples"))
    )
    op.create_index(op.f("ix_vcf_metadata_samples_vcf_metadata_id"), "vcf_metadata_samples", ["vcf_metadata_id"], unique=False)
    op.create_table("vcf_metadata_scaffolds",
    sa.Column("vcf_metadata_id", sa.Integer(), nullable=False),
    sa.Column("scaffold_name", sa.String(length=255), nullable=False),
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.ForeignKeyConstraint(["vcf_metadata_id"], ["vcf_metadata.id"], name=op.f("fk_vcf_metadata_scaffolds_vcf_metadata_id_vcf_metadata"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_vcf_metadata_scaffolds"))
    )
    op.create_index(op.f("ix_vcf_metadata_scaffolds_vcf_metadata_id"), "vcf_metadata_scaffolds", ["vcf_metadata_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_vcf_metadata_scaffolds_vcf_metadata_id"), table_name="vcf_metadata_scaffolds")
    op.drop_table("vcf_metadata_scaffolds")
    op.drop_index(op.f("ix_vcf_metadata_samples_vcf_metadata_id"), table_name="vcf_metadata_samples")
    op.drop_table("vcf_metadata_samples")
    op.drop_index(op.f("ix_vcf_metadata_project_id"), table_name="vcf_metadata")
    op.drop_table("vcf_metadata")
    op.drop_table("task_history")
    op.drop_index(op.f("ix_skipped_vcf_files_project_id"), table_name="skipped_vcf_files")
    op.drop_table("skipped_vcf_files")
    op.drop_index(op.f("ix_revoked_token_user_id"), table_name="revoked_token")
    op.drop_table("revoked_token")
    op.drop_table("queue_status")
    op.drop_index(op.f("ix_project_version_project_id"), table_name="project_version")
    op.drop_table("project_version")
    op.drop_index(op.f("ix_project_membership_user_id"), table_name="project_membership")
    op.drop_index(op.f("ix_project_membership_project_id"), table_name="project_membership")
    op.drop_table("project_membership")
    op.drop_index(op.f("ix_personal_access_token_user_id"), table_name="personal_access_token")
    op.drop_table("personal_access_token")
    op.drop_table("user")
    op.drop_table("task_started_at")
    op.drop_table("project")
    op.drop_table("announcement")
