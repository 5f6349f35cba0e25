"""Release 3, expand: `vcf_metadata.sample_count` gets a default, a backfill and a NOT VALID NOT NULL check.

Revision ID: e0003_vcf_sample_count
Revises: e0002_user_display_name
Create Date: 2026-05-11 09:00:00+00:00

Release 2 pods insert without `sample_count`: the default (metadata only, no rewrite) keeps their rows valid under
the new check. Each statement commits on its own (bench/lock_impact.py measured why: in one transaction, SET
DEFAULT's ACCESS EXCLUSIVE lock lasted through the whole backfill, 10 s of blocked writes on a million rows).
NOT VALID skips the scan; the contract validates.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "e0003_vcf_sample_count"
down_revision: str | Sequence[str] | None = "e0002_user_display_name"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Batches of ids, each committed: writers wait on one batch's row locks at most, never on the whole table.
BACKFILL = """
DO $$
DECLARE
    lo bigint;
    hi bigint;
    batch constant integer := 10000;
BEGIN
    SELECT min(id), max(id) INTO lo, hi FROM vcf_metadata WHERE sample_count IS NULL;
    WHILE lo IS NOT NULL AND lo <= hi LOOP
        UPDATE vcf_metadata AS v
           SET sample_count = (SELECT count(*) FROM vcf_metadata_samples AS s WHERE s.vcf_metadata_id = v.id)
         WHERE v.sample_count IS NULL AND v.id >= lo AND v.id < lo + batch;
        COMMIT;
        lo := lo + batch;
    END LOOP;
END $$
"""
ADD_CHECK = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ck_vcf_metadata_sample_count_not_null') THEN
        ALTER TABLE vcf_metadata ADD CONSTRAINT ck_vcf_metadata_sample_count_not_null
            CHECK (sample_count IS NOT NULL) NOT VALID;
    END IF;
END $$
"""


def upgrade() -> None:
    # Outside Alembic's transaction, so that no lock outlives its own statement: SET DEFAULT takes ACCESS
    # EXCLUSIVE for an instant and commits (from then on old pods' inserts get 0, not NULL), the backfill commits
    # batch by batch, and the check is added NOT VALID (no scan) in its own short transaction.
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE vcf_metadata ALTER COLUMN sample_count SET DEFAULT 0")
        op.execute(BACKFILL)
        op.execute(ADD_CHECK)


def downgrade() -> None:
    op.execute("ALTER TABLE vcf_metadata DROP CONSTRAINT IF EXISTS ck_vcf_metadata_sample_count_not_null")
    op.execute("ALTER TABLE vcf_metadata ALTER COLUMN sample_count DROP DEFAULT")
