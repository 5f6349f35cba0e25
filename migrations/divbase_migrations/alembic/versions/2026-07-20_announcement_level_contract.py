"""Release 4, contract: rewrite WARNING announcements as CAUTION and drop WARNING from the enum type.

Revision ID: c0004_announcement_caution
Revises: c0003_vcf_sample_count
Create Date: 2026-07-20 09:00:00+00:00

PostgreSQL cannot drop an enum value, so the type is swapped: the column's ALTER TYPE rewrites `announcement`
under an ACCESS EXCLUSIVE lock. That table holds a handful of rows; the runner's lock_timeout bounds the wait.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "c0004_announcement_caution"
down_revision: str | Sequence[str] | None = "c0003_vcf_sample_count"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "e0005_announcement_caution"


def _swap(values: tuple[str, ...], rewrite: tuple[str, str]) -> None:
    old, new = rewrite
    labels = ", ".join(f"'{v}'" for v in values)
    op.execute("LOCK TABLE announcement IN ACCESS EXCLUSIVE MODE")
    op.execute(f"UPDATE announcement SET level = '{new}' WHERE level = '{old}'")
    op.execute("ALTER TYPE announcementlevel RENAME TO announcementlevel_old")
    op.execute(f"CREATE TYPE announcementlevel AS ENUM ({labels})")
    op.execute("ALTER TABLE announcement ALTER COLUMN level TYPE announcementlevel "
               "USING level::text::announcementlevel")
    op.execute("DROP TYPE announcementlevel_old")


def upgrade() -> None:
    _swap(("INFO", "CAUTION", "CRITICAL"), ("WARNING", "CAUTION"))


def downgrade() -> None:
    _swap(("INFO", "WARNING", "CAUTION", "CRITICAL"), ("CAUTION", "WARNING"))
