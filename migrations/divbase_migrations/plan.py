"""`plan`: the SQL a step would run, rendered by Alembic's offline mode (no statement reaches the database).

Each revision's `upgrade()` runs against an offline migration context of its own, so a contract revision's
dependency on expand revisions (already applied when the contract runs) does not pull their SQL in."""

from __future__ import annotations

import io

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext

from .releases import EXPAND, Applied, Manifest, Release, pending
from .revisions import script_directory


def plan_sql(manifest: Manifest, step: str, release: Release, applied: Applied) -> tuple[tuple[str, ...], str]:
    """(revisions, SQL) for `step` of `release` from `applied`; empty when there is nothing to do."""
    branch_head = applied.of(step)
    target = release.expand if step == EXPAND else release.contract
    todo = pending(manifest.chains, step, branch_head, target)
    out = io.StringIO()
    script = script_directory()
    for revision in todo:
        module = script.get_revision(revision).module
        out.write(f"-- {step} revision {revision} (release {release.version})\nBEGIN;\n")
        ctx = MigrationContext.configure(
            dialect_name="postgresql",
            opts={"as_sql": True, "output_buffer": out, "literal_binds": True, "transaction_per_migration": True},
        )
        with Operations.context(ctx):
            module.upgrade()
        out.write("COMMIT;\n\n")
    return todo, out.getvalue()
