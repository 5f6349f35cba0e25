"""Fixtures shared by every kind of test: a private PostgreSQL server (session) and a fresh database per test.

The server comes from Debian's `postgresql` package (`make test` installs it when missing); it is started in a
temporary directory on a free port of 127.0.0.1 and stopped at the end of the session. Nothing is skipped: a
missing server fails the tests that need it, with the reason."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from divbase_migrations.testing.postgres import PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    # its own directory under /tmp, not pytest's (root-only) tmp tree: under root the server runs as `postgres`
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL (with password) of an empty database made for this test and dropped after it."""
    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:50].strip("_")
    postgres_server.drop_database(name)
    url = postgres_server.create_database(name)
    yield url.render_as_string(hide_password=False)
    postgres_server.drop_database(name)
