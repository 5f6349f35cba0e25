"""Example release 3, expand: `skipped_vcf_files.skip_reason` gets a default, a backfill and a NOT VALID NOT NULL check.

Revision ID: e0003_skip_reason
Revises: e0002_user_display_name
Create Date: 2026-08-03 09:00:00+00:00

DivBase v0.1.0a9 allows a skipped VCF file without a reason; release 3 says every skip has one. Pods of release 2
still insert without `skip_reason`: the default (metadata only, no rewrite) keeps their rows valid under the new
check. Each statement commits on its own (bench/lock_impact.py measured why: in one transaction, SET DEFAULT's
ACCESS EXCLUSIVE lock lasts through the whole backfill, seconds of blocked writes on a million rows). NOT VALID
skips the scan; the contract validates.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "e0003_skip_reason"
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
    SELECT min(id), max(id) INTO lo, hi FROM skipped_vcf_files WHERE skip_reason IS NULL;
    WHILE lo IS NOT NULL AND lo <= hi LOOP
        UPDATE skipped_vcf_files SET skip_reason = 'unspecified'
         WHERE skip_reason IS NULL AND id >= lo AND id < lo + batch;
        COMMIT;
        lo := lo + batch;
    END LOOP;
END $$
"""
ADD_CHECK = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ck_skipped_vcf_files_skip_reason_not_null') THEN
        ALTER TABLE skipped_vcf_files ADD CONSTRAINT ck_skipped_vcf_files_skip_reason_not_null
            CHECK (skip_reason IS NOT NULL) NOT VALID;
    END IF;
END $$
"""


def upgrade() -> None:
    # Outside Alembic's transaction, so that no lock outlives its own statement: SET DEFAULT takes ACCESS
    # EXCLUSIVE for an instant and commits (from then on old pods' inserts get 'unspecified', not NULL), the
    # backfill commits batch by batch, and the check is added NOT VALID (no scan) in its own short transaction.
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE skipped_vcf_files ALTER COLUMN skip_reason SET DEFAULT 'unspecified'")
        op.execute(BACKFILL)
        op.execute(ADD_CHECK)


def downgrade() -> None:
    # the backfilled 'unspecified' stays: it is a valid reason for release 2 as well
    op.execute("ALTER TABLE skipped_vcf_files DROP CONSTRAINT IF EXISTS ck_skipped_vcf_files_skip_reason_not_null")
    op.execute("ALTER TABLE skipped_vcf_files ALTER COLUMN skip_reason DROP DEFAULT")
