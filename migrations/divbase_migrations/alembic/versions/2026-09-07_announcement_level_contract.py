"""Example release 4, contract: rewrite WARNING announcements as CAUTION and drop WARNING from the enum type.

Revision ID: c0004_announcement_caution
Revises: c0003_skip_reason
Create Date: 2026-09-07 09:00:00+00:00

PostgreSQL cannot drop an enum value, so the type is swapped, the rows mapped in the same ALTER (USING): the column's
ALTER TYPE rewrites `announcement` under an ACCESS EXCLUSIVE lock. That table holds a handful of rows; the runner's
lock_timeout bounds the wait. No value is written before the type that accepts it exists, so the downgrade works.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "c0004_announcement_caution"
down_revision: str | Sequence[str] | None = "c0003_skip_reason"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "e0005_announcement_caution"


def _swap(labels: tuple[str, ...], old: str, new: str) -> None:
    values = ", ".join(f"'{v}'" for v in labels)
    op.execute("LOCK TABLE announcement IN ACCESS EXCLUSIVE MODE")
    op.execute("ALTER TYPE announcementlevel RENAME TO announcementlevel_old")
    op.execute(f"CREATE TYPE announcementlevel AS ENUM ({values})")
    op.execute("ALTER TABLE announcement ALTER COLUMN level TYPE announcementlevel USING "
               f"(CASE level::text WHEN '{old}' THEN '{new}' ELSE level::text END)::announcementlevel")
    op.execute("DROP TYPE announcementlevel_old")


def upgrade() -> None:
    _swap(("INFO", "SUCCESS", "CAUTION", "DANGER"), "WARNING", "CAUTION")


def downgrade() -> None:  # back to the expanded type; CAUTION rows stay CAUTION (release 4's expand reads both)
    _swap(("INFO", "SUCCESS", "WARNING", "CAUTION", "DANGER"), "-", "-")
