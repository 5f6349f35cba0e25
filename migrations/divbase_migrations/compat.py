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

from .releases import Applied, Manifest, Verdict, compatibility
from .revisions import applied_from_heads, load


class IncompatibleSchema(RuntimeError):
    """The database cannot serve this release; the message says why and what to run."""


def read_heads(connection: Connection) -> list[str]:
    if not inspect(connection).has_table("alembic_version"):
        return []
    return sorted(row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version")))


def read_applied(connection: Connection, manifest: Manifest | None = None) -> Applied:
    heads = read_heads(connection)
    if not heads:
        return Applied(None, None)
    return applied_from_heads(heads, (manifest or load()).chains)


def check(connection: Connection, release: str, manifest: Manifest | None = None) -> Verdict:
    manifest = manifest or load()
    return compatibility(manifest, manifest.release(release), read_applied(connection, manifest))


def require_compatible(database: str | URL | Engine | Connection, release: str,
                       manifest: Manifest | None = None) -> Verdict:
    """Raise IncompatibleSchema unless code of `release` can run against `database` now."""
    if isinstance(database, Connection):
        verdict = check(database, release, manifest)
    else:
        engine = database if isinstance(database, Engine) else create_engine(database, poolclass=pool.NullPool)
        with engine.connect() as connection:
            verdict = check(connection, release, manifest)
    if not verdict.ok:
        raise IncompatibleSchema(verdict.reason)
    return verdict
