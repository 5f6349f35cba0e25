"""Release 3, expand: `vcf_metadata.sample_count` gets a default, a backfill and a NOT VALID NOT NULL check.

Revision ID: e0003_vcf_sample_count
Revises: e0002_user_display_name
Create Date: 2026-05-11 09:00:00+00:00

Release 2 pods insert without `sample_count`: the default (metadata only, no rewrite) keeps their rows valid under
the new check. NOT VALID skips the scan, so the ALTER holds its lock for an instant; the contract validates.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "e0003_vcf_sample_count"
down_revision: str | Sequence[str] | None = "e0002_user_display_name"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADD_CHECK = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ck_vcf_metadata_sample_count_not_null') THEN
        ALTER TABLE vcf_metadata ADD CONSTRAINT ck_vcf_metadata_sample_count_not_null
            CHECK (sample_count IS NOT NULL) NOT VALID;
    END IF;
END $$
"""


def upgrade() -> None:
    op.execute("ALTER TABLE vcf_metadata ALTER COLUMN sample_count SET DEFAULT 0")
    op.execute(
        "UPDATE vcf_metadata AS v SET sample_count = "
        "(SELECT count(*) FROM vcf_metadata_samples AS s WHERE s.vcf_metadata_id = v.id) "
        "WHERE v.sample_count IS NULL"
    )
    op.execute(ADD_CHECK)


def downgrade() -> None:
    op.execute("ALTER TABLE vcf_metadata DROP CONSTRAINT IF EXISTS ck_vcf_metadata_sample_count_not_null")
    op.execute("ALTER TABLE vcf_metadata ALTER COLUMN sample_count DROP DEFAULT")
