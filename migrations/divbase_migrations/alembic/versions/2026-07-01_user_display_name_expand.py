"""Example release 2, expand: `user.name` becomes `user.display_name` (add, keep in sync, backfill, NOT NULL as NOT VALID).

Revision ID: e0002_user_display_name
Revises: 9885301b9073
Create Date: 2026-07-01 09:00:00+00:00

Pods of the release before write `name`, release 2 pods write `display_name`; both run during the deploy step. A trigger copies
whichever side is missing, so each release reads what it expects. The NOT NULL promise of the new column is a
CHECK ... NOT VALID here (instant, no scan); the contract validates it and drops `name`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e0002_user_display_name"
down_revision: str | Sequence[str] | None = "9885301b9073"  # DivBase v0.1.0a9, the trunk
branch_labels: str | Sequence[str] | None = ("expand",)
depends_on: str | Sequence[str] | None = None

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

# re-runnable: a retried revision finds the constraint already there
ADD_CHECK = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ck_user_display_name_not_null') THEN
        ALTER TABLE "user" ADD CONSTRAINT ck_user_display_name_not_null CHECK (display_name IS NOT NULL) NOT VALID;
    END IF;
END $$
"""


# Batches of ids, each committed (see e0003): no lock on "user" outlives one batch.
BACKFILL = """
DO $$
DECLARE
    lo bigint;
    hi bigint;
    batch constant integer := 10000;
BEGIN
    SELECT min(id), max(id) INTO lo, hi FROM "user" WHERE display_name IS NULL;
    WHILE lo IS NOT NULL AND lo <= hi LOOP
        UPDATE "user" SET display_name = name WHERE display_name IS NULL AND id >= lo AND id < lo + batch;
        COMMIT;
        lo := lo + batch;
    END LOOP;
END $$
"""


def upgrade() -> None:
    # column, function and trigger commit together (metadata only: the ACCESS EXCLUSIVE lock is held for an instant)
    op.add_column("user", sa.Column("display_name", sa.String(length=100), nullable=True), if_not_exists=True)
    op.execute(SYNC_FUNCTION)
    op.execute('CREATE OR REPLACE TRIGGER divbase_user_name_sync BEFORE INSERT OR UPDATE ON "user" '
               "FOR EACH ROW EXECUTE FUNCTION divbase_user_name_sync()")
    with op.get_context().autocommit_block():  # then the backfill, batch by batch, and the check (no scan)
        op.execute(BACKFILL)
        op.execute(ADD_CHECK)


def downgrade() -> None:
    op.execute('ALTER TABLE "user" DROP CONSTRAINT IF EXISTS ck_user_display_name_not_null')
    op.execute('DROP TRIGGER IF EXISTS divbase_user_name_sync ON "user"')
    op.execute("DROP FUNCTION IF EXISTS divbase_user_name_sync()")
    op.drop_column("user", "display_name")
