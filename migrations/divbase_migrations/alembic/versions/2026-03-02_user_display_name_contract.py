"""Release 2, contract: drop `user.name`, make `display_name` NOT NULL (validated without a write-blocking scan).

Revision ID: c0002_user_display_name
Revises: c0001_contract_base
Create Date: 2026-03-02 09:00:00+00:00

Runs once no release 1 pod remains. VALIDATE CONSTRAINT takes SHARE UPDATE EXCLUSIVE (writes go on); SET NOT NULL
then uses the valid CHECK instead of scanning the table (PostgreSQL 12+).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0002_user_display_name"
down_revision: str | Sequence[str] | None = "c0001_contract_base"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "e0002_user_display_name"


def upgrade() -> None:
    op.execute('ALTER TABLE "user" VALIDATE CONSTRAINT ck_user_display_name_not_null')
    op.alter_column("user", "display_name", existing_type=sa.String(length=255), nullable=False)
    op.drop_constraint(op.f("ck_user_display_name_not_null"), "user", type_="check")
    op.execute('DROP TRIGGER IF EXISTS divbase_user_name_sync ON "user"')
    op.execute("DROP FUNCTION IF EXISTS divbase_user_name_sync()")
    op.drop_column("user", "name")


def downgrade() -> None:
    op.add_column("user", sa.Column("name", sa.String(length=255), nullable=True))
    op.execute('UPDATE "user" SET name = display_name')
    op.alter_column("user", "name", existing_type=sa.String(length=255), nullable=False)
    op.alter_column("user", "display_name", existing_type=sa.String(length=255), nullable=True)
