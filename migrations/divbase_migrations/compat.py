"""The schema-compatibility check, for `divbase-migrate check` and for an application's startup.

DivBase's API used to refuse to start unless the database was exactly at head, which stops the old release's pods
from (re)starting while a rollout has expanded the schema for the new one. Call `require_compatible` in the
FastAPI lifespan instead::

    from divbase_migrations.compat import require_compatible

    @asynccontextmanager
    async def lifespan(app):
        require_compatible(settings.database_url, release=settings.release)  # raises IncompatibleSchema
        yield
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, create_engine, inspect, pool, text
from sqlalchemy.engine import URL

from .releases import Applied, Manifest, RevisionError, Verdict, compatibility
from .revisions import applied_from_heads, load


class IncompatibleSchema(RuntimeError):
    """The database cannot serve this release; the message says why and what to run."""


def read_heads(connection: Connection) -> list[str]:
    if not inspect(connection).has_table("alembic_version"):
        return []
    return sorted(row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version")))


def read_logged_branches(connection: Connection, revisions: list[str]) -> dict[str, str]:
    """The branch divbase-migrate recorded for each of `revisions` when it applied them (a newer release's)."""
    if not revisions or not inspect(connection).has_table("divbase_migration_log"):
        return {}
    rows = connection.execute(
        text("SELECT DISTINCT revision, branch FROM divbase_migration_log WHERE revision = ANY(:revisions)"),
        {"revisions": revisions},
    )
    return {revision: branch for revision, branch in rows}


def read_applied(connection: Connection, manifest: Manifest | None = None) -> Applied:
    heads = read_heads(connection)
    if not heads:
        return Applied(None, None)
    manifest = manifest or load()
    known = set(manifest.chains.expand) | set(manifest.chains.contract)
    logged = read_logged_branches(connection, [h for h in heads if h not in known])
    return applied_from_heads(heads, manifest.chains, logged=logged, baseline=manifest.baseline)


def check(connection: Connection, release: str, manifest: Manifest | None = None) -> Verdict:
    manifest = manifest or load()
    return compatibility(manifest, manifest.release(release), read_applied(connection, manifest))


def require_compatible(
    database: str | URL | Engine | Connection, release: str, manifest: Manifest | None = None
) -> Verdict:
    """Raise IncompatibleSchema unless code of `release` can run against `database` now."""
    if isinstance(database, Connection):
        verdict = _read_verdict(database, release, manifest)
    else:
        engine = database if isinstance(database, Engine) else create_engine(database, poolclass=pool.NullPool)
        with engine.connect() as connection:
            verdict = _read_verdict(connection, release, manifest)
    if not verdict.ok:
        raise IncompatibleSchema(verdict.reason)
    return verdict


def _read_verdict(connection: Connection, release: str, manifest: Manifest | None) -> Verdict:
    try:
        return check(connection, release, manifest)
    except RevisionError as exc:  # a database this code cannot place cannot serve the release either
        raise IncompatibleSchema(str(exc)) from None
