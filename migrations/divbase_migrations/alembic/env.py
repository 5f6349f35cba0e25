"""Alembic environment for DivBase: one connection, one transaction per revision, our tables only.

`divbase-migrate` hands in its connection through `config.attributes["connection"]` (a Connection or an Engine:
pytest-alembic hands an Engine); a developer running plain `alembic` gets one from DIVBASE_DATABASE_URL (or the
DIVBASE_DB_* parts). A transaction per revision is what lets a revision leave the transaction
(`op.get_context().autocommit_block()`) for `CREATE INDEX CONCURRENTLY` and `ALTER TYPE ... ADD VALUE`, and what
lets the runner retry one revision after a lock timeout. Autogenerate compares with the schema at the head of both
branches (`example_models.head_metadata()`: DivBase's models plus the example releases)."""

from __future__ import annotations

from typing import Any

from alembic import context
from divbase_migrations.database import database_url_from_env
from divbase_migrations.example_models import head_metadata
from divbase_migrations.models import FOREIGN_TABLES
from sqlalchemy import Connection, Engine, create_engine, pool

config = context.config
target_metadata = head_metadata()


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Celery's result tables and the bookkeeping tables are not ours to diff."""
    if type_ == "table":
        return name not in FOREIGN_TABLES
    table = getattr(obj, "table", None)
    return table is None or table.name not in FOREIGN_TABLES


OPTIONS: dict[str, Any] = {
    "target_metadata": target_metadata,
    "include_object": include_object,
    "transaction_per_migration": True,
    "compare_type": True,
    "compare_server_default": True,
}


def run_offline() -> None:
    url = config.attributes.get("url") or database_url_from_env(required=False) or "postgresql+psycopg://"
    context.configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"}, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_with(connection: Connection | Any) -> None:
    recorder = config.attributes.get("on_version_apply")
    extra = {"on_version_apply": recorder} if recorder else {}
    context.configure(connection=connection, **OPTIONS, **extra)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    given = config.attributes.get("connection")
    if given is not None and not isinstance(given, Engine):  # a Connection, or a wrapper of one (pytest-alembic)
        run_with(given)
        return
    engine = given if isinstance(given, Engine) else create_engine(database_url_from_env(required=True),
                                                                   poolclass=pool.NullPool)
    with engine.connect() as conn:
        run_with(conn)
        conn.commit()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
