"""Example release 2, contract: drop `user.name`, make `display_name` NOT NULL (validated without a write-blocking scan).

Revision ID: c0002_user_display_name
Revises: 9885301b9073
Create Date: 2026-07-01 09:00:00+00:00

Runs once no pod of the release before remains; dropping `name` drops its index `ix_user_name` too. VALIDATE
CONSTRAINT takes SHARE UPDATE EXCLUSIVE (writes go on); SET NOT NULL then uses the valid CHECK instead of scanning the
table (PostgreSQL 12+).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0002_user_display_name"
down_revision: str | Sequence[str] | None = "9885301b9073"  # DivBase v0.1.0a9, the trunk
branch_labels: str | Sequence[str] | None = ("contract",)
depends_on: str | Sequence[str] | None = "e0002_user_display_name"


# for the downgrade: the expand's trigger function, copied (a shipped revision imports nothing that can change)
SYNC_FUNCTION = """
CREATE OR REPLACE FUNCTION divbase_user_name_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.display_name IS DISTINCT FROM OLD.display_name AND NEW.name IS NOT DISTINCT FROM OLD.name THEN
            NEW.name := NEW.display_name;
        ELSIF NEW.name IS DISTINCT FROM OLD.name AND NEW.display_name IS NOT DISTINCT FROM OLD.display_name THEN
            NEW.display_name := NEW.name;
        END IF;
    END IF;
    NEW.display_name := COALESCE(NEW.display_name, NEW.name);
    NEW.name := COALESCE(NEW.name, NEW.display_name);
    RETURN NEW;
END $$
"""


def upgrade() -> None:
    op.execute('ALTER TABLE "user" VALIDATE CONSTRAINT ck_user_display_name_not_null')
    op.alter_column("user", "display_name", existing_type=sa.String(length=100), nullable=False)
    op.drop_constraint(op.f("ck_user_display_name_not_null"), "user", type_="check")
    op.execute('DROP TRIGGER IF EXISTS divbase_user_name_sync ON "user"')
    op.execute("DROP FUNCTION IF EXISTS divbase_user_name_sync()")
    op.drop_column("user", "name")


def downgrade() -> None:
    # back to where the expand left it: both columns, kept in sync, display_name's NOT NULL as a NOT VALID check
    op.add_column("user", sa.Column("name", sa.String(length=100), nullable=True))
    op.execute('UPDATE "user" SET name = display_name')
    op.alter_column("user", "name", existing_type=sa.String(length=100), nullable=False)
    op.create_index("ix_user_name", "user", ["name"], unique=False)
    op.alter_column("user", "display_name", existing_type=sa.String(length=100), nullable=True)
    op.execute('ALTER TABLE "user" ADD CONSTRAINT ck_user_display_name_not_null CHECK (display_name IS NOT NULL) '
               "NOT VALID")
    op.execute(SYNC_FUNCTION)
    op.execute('CREATE OR REPLACE TRIGGER divbase_user_name_sync BEFORE INSERT OR UPDATE ON "user" '
               "FOR EACH ROW EXECUTE FUNCTION divbase_user_name_sync()")
