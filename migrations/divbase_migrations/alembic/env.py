"""Alembic environment for DivBase: one connection, one transaction per revision, our tables only.

`divbase-migrate` hands in its connection through `config.attributes["connection"]`; anything else there (an
Engine, or pytest-alembic's engine-like wrapper) is connected through, as plain Alembic would, and a developer
running plain `alembic` gets a connection from DIVBASE_DATABASE_URL (or the DIVBASE_DB_* parts). A transaction per
revision is what lets a revision leave the transaction (`op.get_context().autocommit_block()`) for `CREATE INDEX
CONCURRENTLY` and `ALTER TYPE ... ADD VALUE`, and what lets the runner retry one revision after a lock timeout.
Autogenerate compares with the schema at the head of both branches (`example_models.head_metadata()`: DivBase's
models plus the example releases)."""

from __future__ import annotations

from typing import Any

from alembic import context
from divbase_migrations.database import database_url_from_env
from divbase_migrations.example_models import head_metadata
from divbase_migrations.models import FOREIGN_TABLES
from sqlalchemy import Connection, create_engine, pool

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


def run_with(connection: Connection) -> None:
    recorder = config.attributes.get("on_version_apply")
    extra = {"on_version_apply": recorder} if recorder else {}
    context.configure(connection=connection, **OPTIONS, **extra)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    given = config.attributes.get("connection")
    if isinstance(given, Connection):  # divbase-migrate's own: the runner ends the transaction
        run_with(given)
        return
    # An Engine (pytest-alembic's `alembic_engine`), anything engine-like (pytest-alembic's experimental tests hand
    # a wrapper whose connect() yields their open connection), or nothing (plain `alembic`): connect through it.
    connectable = (
        given if given is not None else create_engine(database_url_from_env(required=True), poolclass=pool.NullPool)
    )
    with connectable.connect() as conn:
        outer = conn.in_transaction()  # a caller's transaction (a test's savepoint) is the caller's to end
        run_with(conn)
        if not outer:
            conn.commit()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
