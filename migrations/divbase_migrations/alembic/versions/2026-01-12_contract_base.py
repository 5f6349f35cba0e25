"""Release 1: root of the contract branch (release 1 removes nothing).

Revision ID: c0001_contract_base
Revises:
Create Date: 2026-01-12 09:00:00+00:00

Contract revisions remove or tighten what the previous release stopped using; each depends on the expand revision
that made its removal safe, so Alembic itself never orders a contract before its expand.
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "c0001_contract_base"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("contract",)
depends_on: str | Sequence[str] | None = "e0001_initial_schema"


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
