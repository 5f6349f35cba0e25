"""Example release 4, expand: add the announcement level CAUTION, which replaces WARNING.

Revision ID: e0005_announcement_caution
Revises: e0004_task_history_user_index
Create Date: 2026-09-07 09:00:00+00:00

DivBase's `announcementlevel` is INFO, SUCCESS, WARNING, DANGER. A new enum value cannot be used in the transaction
that adds it, so it is added outside one. Release 4 writes CAUTION and reads WARNING as CAUTION; the contract
rewrites the old rows and removes WARNING from the type.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "e0005_announcement_caution"
down_revision: str | Sequence[str] | None = "e0004_task_history_user_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("ALTER TYPE announcementlevel ADD VALUE IF NOT EXISTS 'CAUTION' AFTER 'WARNING'")


def downgrade() -> None:
    # PostgreSQL cannot remove an enum value in place: swap the type, reading CAUTION rows back as WARNING
    op.execute("LOCK TABLE announcement IN ACCESS EXCLUSIVE MODE")
    op.execute("ALTER TYPE announcementlevel RENAME TO announcementlevel_old")
    op.execute("CREATE TYPE announcementlevel AS ENUM ('INFO', 'SUCCESS', 'WARNING', 'DANGER')")
    op.execute("ALTER TABLE announcement ALTER COLUMN level TYPE announcementlevel USING "
               "(CASE level::text WHEN 'CAUTION' THEN 'WARNING' ELSE level::text END)::announcementlevel")
    op.execute("DROP TYPE announcementlevel_old")
