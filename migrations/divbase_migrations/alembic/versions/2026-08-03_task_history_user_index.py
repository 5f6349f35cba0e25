"""Example release 3, expand: index task_history (user_id, created_at), built CONCURRENTLY.

Revision ID: e0004_task_history_user_index
Revises: e0003_skip_reason
Create Date: 2026-08-03 09:05:00+00:00

CONCURRENTLY cannot run in a transaction, so this leaves Alembic's transaction. A build that failed half-way
(lock timeout, cancel) leaves an INVALID index behind: it is dropped first, which makes a re-run safe.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "e0004_task_history_user_index"
down_revision: str | Sequence[str] | None = "e0003_skip_reason"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_task_history_user_id_created_at"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(  # divbase-lint: allow drops only an INVALID leftover of a failed build (re-run safety)
            f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            f"WHERE c.relname = '{INDEX}' AND NOT i.indisvalid) THEN EXECUTE 'DROP INDEX {INDEX}'; END IF; END $$"
        )
        op.create_index(INDEX, "task_history", ["user_id", "created_at"], unique=False,
                        postgresql_concurrently=True, if_not_exists=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(INDEX, table_name="task_history", postgresql_concurrently=True, if_exists=True)
