"""Example release 3, contract: validate the skip_reason check, then make the column NOT NULL and drop the check.

Revision ID: c0003_skip_reason
Revises: c0002_user_display_name
Create Date: 2026-08-03 09:00:00+00:00

VALIDATE CONSTRAINT scans under SHARE UPDATE EXCLUSIVE (writes go on); SET NOT NULL then relies on the valid check
and does not scan again (PostgreSQL 12+).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0003_skip_reason"
down_revision: str | Sequence[str] | None = "c0002_user_display_name"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "e0003_skip_reason"


def upgrade() -> None:
    op.execute("ALTER TABLE skipped_vcf_files VALIDATE CONSTRAINT ck_skipped_vcf_files_skip_reason_not_null")
    op.alter_column("skipped_vcf_files", "skip_reason", existing_type=sa.String(), nullable=False)
    op.drop_constraint("ck_skipped_vcf_files_skip_reason_not_null", "skipped_vcf_files", type_="check")


def downgrade() -> None:
    op.alter_column("skipped_vcf_files", "skip_reason", existing_type=sa.String(), nullable=True)
    op.execute("ALTER TABLE skipped_vcf_files ADD CONSTRAINT ck_skipped_vcf_files_skip_reason_not_null "
               "CHECK (skip_reason IS NOT NULL) NOT VALID")
