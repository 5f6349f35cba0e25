"""Release 3, contract: validate the sample_count check, then make the column NOT NULL and drop the check.

Revision ID: c0003_vcf_sample_count
Revises: c0002_user_display_name
Create Date: 2026-05-11 09:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0003_vcf_sample_count"
down_revision: str | Sequence[str] | None = "c0002_user_display_name"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "e0003_vcf_sample_count"


def upgrade() -> None:
    op.execute("ALTER TABLE vcf_metadata VALIDATE CONSTRAINT ck_vcf_metadata_sample_count_not_null")
    op.alter_column("vcf_metadata", "sample_count", existing_type=sa.Integer(), nullable=False)
    op.drop_constraint(op.f("ck_vcf_metadata_sample_count_not_null"), "vcf_metadata", type_="check")


def downgrade() -> None:
    op.alter_column("vcf_metadata", "sample_count", existing_type=sa.Integer(), nullable=True)
