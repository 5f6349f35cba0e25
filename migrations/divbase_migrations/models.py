"""DivBase's schema at its Alembic revision `9885301b9073` (release v0.1.0a6 to v0.1.0a9): the baseline.

Written from the facts of DivBase's own revisions (ScilifelabDataCentre/divbase, commit 4438d792): every table,
column type and length, nullability, server default, enum label order, index and constraint name. DivBase sets no
naming convention, so constraints carry PostgreSQL's default names (`<table>_pkey`, `<table>_<column>_fkey`) and
indexes SQLAlchemy's `ix_<table>_<column>`. `tests/integration/test_real_schema.py` proves, object by object, that
these models, the committed snapshot of a database built by DivBase's own revisions, and our baseline revision
agree. The example releases on top of it live in `example_models.py`.

Celery's result tables (`celery_taskmeta`, `celery_groupmeta`) are created by Celery in DivBase's database and are
not modelled here, nor are our bookkeeping tables."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ENUM, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

BASELINE_REVISION = "9885301b9073"


class Base(DeclarativeBase):
    metadata = MetaData()  # SQLAlchemy's default convention (`ix_%(column_0_label)s`), as DivBase's


class Timestamped:
    """DivBase's common columns: an indexed serial id and creation/update times set by the database."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


# Enums are stored by member name, as SQLAlchemy does for `Enum(PyEnum)`; the labels below are those names.
class ProjectRoles(enum.Enum):
    READ = "read"
    QUERY = "query"
    EDIT = "edit"
    MANAGE = "manage"


class TokenType(enum.Enum):
    ACCESS = "access"
    REFRESH = "refresh"
    EMAIL_VERIFICATION = "email_verification"
    PASSWORD_RESET = "password_reset"


class TokenRevokeReason(enum.Enum):
    LOGOUT = "logout"
    TOKEN_USED = "token_used"
    MANUAL_REVOKE = "manual_revoke"


class AnnouncementTarget(enum.Enum):
    BOTH = "both"
    CLI = "cli"
    WEB = "web"


class AnnouncementLevel(enum.Enum):
    INFO = "info"
    SUCCESS = "success"
    WARNING = "warning"
    DANGER = "danger"


# Left behind by revision 86ef3d9ea91b, which dropped task_history.status but not its type: a real database has it.
TASK_STATUS = ENUM(
    "PENDING", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED", name="taskstatus", metadata=Base.metadata
)


class Project(Timestamped, Base):
    __tablename__ = "project"

    name: Mapped[str] = mapped_column(String(100), index=True, unique=True)
    description: Mapped[str | None] = mapped_column(String(1000))
    bucket_name: Mapped[str] = mapped_column(String(63), index=True, unique=True)
    is_active: Mapped[bool] = mapped_column(Boolean)
    is_deleted: Mapped[bool] = mapped_column(Boolean)
    storage_quota_bytes: Mapped[int] = mapped_column(BigInteger)
    storage_used_bytes: Mapped[int] = mapped_column(BigInteger)


class User(Timestamped, Base):
    __tablename__ = "user"

    name: Mapped[str] = mapped_column(String(100), index=True)
    email: Mapped[str] = mapped_column(String(50), index=True, unique=True)
    hashed_password: Mapped[str] = mapped_column(String(128))
    is_admin: Mapped[bool] = mapped_column(Boolean)
    is_active: Mapped[bool] = mapped_column(Boolean)
    is_deleted: Mapped[bool] = mapped_column(Boolean)
    email_verified: Mapped[bool] = mapped_column(Boolean)
    date_deleted: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_password_change: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    organisation: Mapped[str] = mapped_column(String(200))
    organisation_role: Mapped[str] = mapped_column(String(100))


class ProjectMembership(Timestamped, Base):
    __tablename__ = "project_membership"
    __table_args__ = (UniqueConstraint("user_id", "project_id", name="unique_user_project"),)

    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    role: Mapped[ProjectRoles] = mapped_column(Enum(ProjectRoles, name="projectroles"), index=True)


class RevokedToken(Timestamped, Base):
    __tablename__ = "revoked_token"

    token_jti: Mapped[str] = mapped_column(String(36), index=True, unique=True)
    token_type: Mapped[TokenType] = mapped_column(Enum(TokenType, name="tokentype"), index=True)
    revoked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_reason: Mapped[TokenRevokeReason] = mapped_column(Enum(TokenRevokeReason, name="tokenrevokereason"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)


class SkippedVcfFile(Timestamped, Base):
    __tablename__ = "skipped_vcf_files"
    __table_args__ = (UniqueConstraint("vcf_file_s3_key", "project_id", name="unique_skipped_vcf_per_project"),)

    vcf_file_s3_key: Mapped[str] = mapped_column(String, index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    s3_version_id: Mapped[str] = mapped_column(String, index=True)
    skip_reason: Mapped[str | None] = mapped_column(String)


class TaskHistory(Timestamped, Base):
    __tablename__ = "task_history"

    task_id: Mapped[str | None] = mapped_column(String, index=True, unique=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)


class TaskStartedAt(Timestamped, Base):
    __tablename__ = "task_started_at"

    task_id: Mapped[str] = mapped_column(String, index=True, unique=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))


class VcfMetadata(Timestamped, Base):
    __tablename__ = "vcf_metadata"
    __table_args__ = (UniqueConstraint("vcf_file_s3_key", "project_id", name="unique_vcf_per_project"),)

    vcf_file_s3_key: Mapped[str] = mapped_column(String, index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    s3_version_id: Mapped[str] = mapped_column(String, index=True)
    file_size_bytes: Mapped[int] = mapped_column(BigInteger)
    variant_count: Mapped[int] = mapped_column(BigInteger)
    sample_count: Mapped[int] = mapped_column(Integer)


class VcfMetadataSample(Timestamped, Base):
    __tablename__ = "vcf_metadata_samples"

    vcf_metadata_id: Mapped[int] = mapped_column(ForeignKey("vcf_metadata.id", ondelete="CASCADE"), index=True)
    sample_name: Mapped[str] = mapped_column(String, index=True)


class VcfMetadataScaffold(Timestamped, Base):
    __tablename__ = "vcf_metadata_scaffolds"

    vcf_metadata_id: Mapped[int] = mapped_column(ForeignKey("vcf_metadata.id", ondelete="CASCADE"), index=True)
    scaffold_name: Mapped[str] = mapped_column(String, index=True)


class ProjectVersion(Timestamped, Base):
    __tablename__ = "project_version"
    __table_args__ = (UniqueConstraint("name", "project_id", name="unique_name_project"),)

    name: Mapped[str] = mapped_column(String(100), index=True)
    description: Mapped[str | None] = mapped_column(String(500))
    files: Mapped[dict[str, Any]] = mapped_column(JSONB)
    is_deleted: Mapped[bool] = mapped_column(Boolean)
    date_deleted: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))


class Announcement(Timestamped, Base):
    __tablename__ = "announcement"

    heading: Mapped[str] = mapped_column(String(200), index=True)
    message: Mapped[str | None] = mapped_column(String(1000))
    target: Mapped[AnnouncementTarget] = mapped_column(Enum(AnnouncementTarget, name="announcementtarget"), index=True)
    level: Mapped[AnnouncementLevel] = mapped_column(Enum(AnnouncementLevel, name="announcementlevel"), index=True)
    auto_expire_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class QueueStatus(Timestamped, Base):
    __tablename__ = "queue_status"
    __table_args__ = (CheckConstraint("id = 1", name="queue_status_singleton_row"),)

    is_closed: Mapped[bool] = mapped_column(Boolean)
    scheduled_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reason_for_users: Mapped[str] = mapped_column(String(500))


class PersonalAccessToken(Timestamped, Base):
    __tablename__ = "personal_access_token"

    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(500))
    hashed_token: Mapped[str] = mapped_column(String(64), index=True, unique=True)
    permissions: Mapped[dict[str, Any]] = mapped_column(JSONB)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    is_deleted: Mapped[bool] = mapped_column(Boolean)
    date_deleted: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# Tables in DivBase's database that are not the schema's to diff: Celery's result backend (it creates them itself)
# and the bookkeeping of Alembic and divbase-migrate.
CELERY_TABLES = frozenset({"celery_taskmeta", "celery_groupmeta", "celery_tasksetmeta"})
FOREIGN_TABLES = CELERY_TABLES | {"alembic_version", "divbase_migration_log"}
