"""DivBase's tables as SQLAlchemy 2 models: the schema at the newest release.

Autogenerate compares these with the database after every migration has run (a test keeps them in step).
Enums are stored by name (SQLAlchemy's default for `Enum(PyEnum)`), as native PostgreSQL enum types.
Celery's result tables (`celery_taskmeta`, `celery_tasksetmeta`) belong to Celery and are not modelled here."""

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
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names: a contract revision can only drop what it can name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Timestamped:
    """Every DivBase table carries an id and creation/update times set by the database."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(),
                                                 onupdate=func.now())


class ProjectRole(enum.Enum):
    READ = "read"
    QUERY = "query"
    EDIT = "edit"
    MANAGE = "manage"


class TokenType(enum.Enum):
    ACCESS = "access"
    REFRESH = "refresh"


class TokenRevokeReason(enum.Enum):
    LOGOUT = "logout"
    PASSWORD_CHANGED = "password_changed"
    ADMIN_REVOKED = "admin_revoked"
    ROTATED = "rotated"


class AnnouncementLevel(enum.Enum):
    INFO = "info"
    CAUTION = "caution"  # replaced WARNING in release 4
    CRITICAL = "critical"


class AnnouncementTarget(enum.Enum):
    ALL = "all"
    WEB = "web"
    CLI = "cli"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(cls, name=name)


class User(Timestamped, Base):
    __tablename__ = "user"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(255))  # was `name` until release 2
    hashed_password: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, server_default="false")
    is_active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Project(Timestamped, Base):
    __tablename__ = "project"

    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    bucket_name: Mapped[str] = mapped_column(String(63), unique=True)
    is_active: Mapped[bool] = mapped_column(Boolean, server_default="true")


class ProjectMembership(Timestamped, Base):
    __tablename__ = "project_membership"
    __table_args__ = (UniqueConstraint("project_id", "user_id", name="uq_project_membership_project_user"),)

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    role: Mapped[ProjectRole] = mapped_column(_enum(ProjectRole, "projectrole"))


class ProjectVersion(Timestamped, Base):
    __tablename__ = "project_version"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_project_version_project_name"),)

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    files: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))


class VCFMetadata(Timestamped, Base):
    __tablename__ = "vcf_metadata"
    __table_args__ = (UniqueConstraint("project_id", "vcf_file_s3_key", name="uq_vcf_metadata_project_key"),)

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    vcf_file_s3_key: Mapped[str] = mapped_column(String(1024))
    s3_version_id: Mapped[str | None] = mapped_column(String(1024))
    file_size_bytes: Mapped[int] = mapped_column(BigInteger)
    sample_count: Mapped[int] = mapped_column(Integer, server_default="0")  # NOT NULL since release 3
    variant_count: Mapped[int | None] = mapped_column(BigInteger)


class VCFMetadataSample(Timestamped, Base):
    __tablename__ = "vcf_metadata_samples"

    vcf_metadata_id: Mapped[int] = mapped_column(ForeignKey("vcf_metadata.id", ondelete="CASCADE"), index=True)
    sample_name: Mapped[str] = mapped_column(String(255))
    sample_index: Mapped[int] = mapped_column(Integer)


class VCFMetadataScaffold(Timestamped, Base):
    __tablename__ = "vcf_metadata_scaffolds"

    vcf_metadata_id: Mapped[int] = mapped_column(ForeignKey("vcf_metadata.id", ondelete="CASCADE"), index=True)
    scaffold_name: Mapped[str] = mapped_column(String(255))


class SkippedVCFFile(Timestamped, Base):
    __tablename__ = "skipped_vcf_files"

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    vcf_file_s3_key: Mapped[str] = mapped_column(String(1024))
    s3_version_id: Mapped[str | None] = mapped_column(String(1024))
    skip_reason: Mapped[str] = mapped_column(Text)


class TaskHistory(Timestamped, Base):
    __tablename__ = "task_history"
    __table_args__ = (
        # built CONCURRENTLY by release 3's expand
        Index("ix_task_history_user_id_created_at", "user_id", "created_at"),
    )

    task_id: Mapped[str] = mapped_column(String(255), unique=True)
    task_name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("project.id", ondelete="SET NULL"))


class TaskStartedAt(Timestamped, Base):
    __tablename__ = "task_started_at"

    task_id: Mapped[str] = mapped_column(String(255), unique=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RevokedToken(Timestamped, Base):
    __tablename__ = "revoked_token"

    token_jti: Mapped[str] = mapped_column(String(255), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    token_type: Mapped[TokenType] = mapped_column(_enum(TokenType, "tokentype"))
    revoke_reason: Mapped[TokenRevokeReason] = mapped_column(_enum(TokenRevokeReason, "tokenrevokereason"))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Announcement(Timestamped, Base):
    __tablename__ = "announcement"

    title: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text)
    level: Mapped[AnnouncementLevel] = mapped_column(_enum(AnnouncementLevel, "announcementlevel"))
    target: Mapped[AnnouncementTarget] = mapped_column(_enum(AnnouncementTarget, "announcementtarget"))
    starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    is_active: Mapped[bool] = mapped_column(Boolean, server_default="true")


class QueueStatus(Timestamped, Base):
    """One row (id = 1): whether the task queue accepts new work."""

    __tablename__ = "queue_status"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    is_paused: Mapped[bool] = mapped_column(Boolean, server_default="false")
    message: Mapped[str | None] = mapped_column(Text)
    paused_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))


class PersonalAccessToken(Timestamped, Base):
    __tablename__ = "personal_access_token"

    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    token_hash: Mapped[str] = mapped_column(String(255), unique=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# Tables in the database that are not ours: autogenerate and the schema checks ignore them.
FOREIGN_TABLES = frozenset({"celery_taskmeta", "celery_tasksetmeta", "alembic_version", "divbase_migration_log"})
