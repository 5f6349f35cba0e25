"""No value of the database settings ever reaches what `divbase-migrate` writes (issue 14, item 3).

The resource may map any key of its Secret to any database variable (`port` mapped to an API token is a token),
and the runner's summary becomes the resource's status and an Event: so every variable is set to a marker, and
for each way the runner can fail (and succeed) no marker may appear in its summary, stdout or stderr. The real
CLI runs as a Job runs it, against a real PostgreSQL where the marker names a real role and database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from divbase_migrations import contract
from divbase_migrations.testing.postgres import PostgresServer
from divbase_testsupport import free_port
from migrate_helpers import run

MARK = "zq7marker"
ROLE, PASSWORD, DATABASE = f"{MARK}_user", f"{MARK}-pw", f"{MARK}_db"


@pytest.fixture(scope="module")
def marked(postgres_server: PostgresServer) -> Iterator[dict[str, str]]:
    """A role and a database whose names are the marker: the success and precondition paths connect with them."""
    postgres_server.psql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    postgres_server.psql(f'DROP ROLE IF EXISTS "{ROLE}"')
    postgres_server.psql(f"CREATE ROLE \"{ROLE}\" LOGIN PASSWORD '{PASSWORD}'")
    postgres_server.psql(f'CREATE DATABASE "{DATABASE}" OWNER "{ROLE}"')
    try:
        yield {
            "DIVBASE_DB_HOST": "127.0.0.1",
            "DIVBASE_DB_PORT": str(postgres_server.port),
            "DIVBASE_DB_NAME": DATABASE,
            "DIVBASE_DB_USER": ROLE,
            "DIVBASE_DB_PASSWORD": PASSWORD,
        }
    finally:
        postgres_server.psql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        postgres_server.psql(f'DROP ROLE IF EXISTS "{ROLE}"')


def _markers_only() -> dict[str, str]:
    return {
        "DIVBASE_DB_HOST": f"{MARK}-host",
        "DIVBASE_DB_PORT": MARK,
        "DIVBASE_DB_NAME": DATABASE,
        "DIVBASE_DB_USER": ROLE,
        "DIVBASE_DB_PASSWORD": PASSWORD,
    }


# (name, environment from the real settings, exit code of `expand --release 1`)
SCENARIOS = [
    ("every variable a marker (the port is not a number)", lambda real: _markers_only(), contract.EXIT_USAGE),
    (
        "host does not resolve",
        lambda real: {**real, "DIVBASE_DB_HOST": f"{MARK}-host.invalid"},
        contract.EXIT_UNAVAILABLE,
    ),
    ("connection refused", lambda real: {**real, "DIVBASE_DB_PORT": str(free_port())}, contract.EXIT_UNAVAILABLE),
    ("wrong password", lambda real: {**real, "DIVBASE_DB_PASSWORD": f"{MARK}-wrong"}, contract.EXIT_UNAVAILABLE),
    ("no such user", lambda real: {**real, "DIVBASE_DB_USER": f"{MARK}_nobody"}, contract.EXIT_UNAVAILABLE),
    ("no such database", lambda real: {**real, "DIVBASE_DB_NAME": f"{MARK}_nodb"}, contract.EXIT_UNAVAILABLE),
    ("URL is not a URL", lambda real: {"DIVBASE_DATABASE_URL": MARK}, contract.EXIT_USAGE),
    (
        "URL of another scheme",
        lambda real: {"DIVBASE_DATABASE_URL": f"{MARK}://{MARK}:{MARK}@{MARK}/{MARK}"},
        contract.EXIT_USAGE,
    ),
    (
        "URL without a database",
        lambda real: {"DIVBASE_DATABASE_URL": f"postgresql://{MARK}:{MARK}@{MARK}"},
        contract.EXIT_USAGE,
    ),
    (
        "URL host does not resolve",
        lambda real: {"DIVBASE_DATABASE_URL": f"postgresql://{ROLE}:{PASSWORD}@{MARK}.invalid:5432/{DATABASE}"},
        contract.EXIT_UNAVAILABLE,
    ),
    (
        "URL with a wrong password",
        lambda real: {
            "DIVBASE_DATABASE_URL": f"postgresql://{ROLE}:{MARK}-wrong@127.0.0.1:{real['DIVBASE_DB_PORT']}/{DATABASE}"
        },
        contract.EXIT_UNAVAILABLE,
    ),
]
COMMANDS = [("expand", "--release", "1"), ("check", "--release", "1"), ("plan", "contract", "--release", "2", "--sql")]


def _assert_no_marker(text: str, what: str) -> None:
    assert MARK not in text.lower(), f"{what} repeats a database setting:\n{text}"


@pytest.mark.parametrize(("name", "env", "code"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_no_failure_repeats_a_setting(marked: dict[str, str], tmp_path: Path, name: str, env, code: int) -> None:
    for i, args in enumerate(COMMANDS):
        result = run(None, *args, term=tmp_path / f"term{i}", **env(marked))
        _assert_no_marker(result.output, f"{name}: divbase-migrate {' '.join(args)}")
        if args[0] == "expand":
            assert result.code == code, result.output
            assert result.summary[contract.SUMMARY_ERROR], "the failure is still explained"
            if code == contract.EXIT_UNAVAILABLE:
                assert result.summary[contract.SUMMARY_ERROR].startswith("database unavailable: ")


def test_the_messages_still_say_what_is_wrong(marked: dict[str, str], tmp_path: Path) -> None:
    expected = {
        "port": (_markers_only(), "DIVBASE_DB_PORT: must be a port number"),
        "dns": ({**marked, "DIVBASE_DB_HOST": f"{MARK}.invalid"}, "the host name does not resolve"),
        "password": ({**marked, "DIVBASE_DB_PASSWORD": "wrong"}, "password authentication failed"),
        "database": ({**marked, "DIVBASE_DB_NAME": f"{MARK}_nodb"}, "the database named in the settings does not"),
        "scheme": ({"DIVBASE_DATABASE_URL": f"{MARK}://h/d"}, "DIVBASE_DATABASE_URL: the URL's scheme is not"),
    }
    for key, (env, says) in expected.items():
        result = run(None, "expand", "--release", "1", term=tmp_path / key, **env)
        assert says in result.summary[contract.SUMMARY_ERROR], result.summary


def test_success_and_precondition_paths_never_name_the_settings(marked: dict[str, str], tmp_path: Path) -> None:
    """Connected as a role and to a database named with the marker: neither the logs of a successful run nor a
    refused step (contract before expand, exit 5) name them."""
    refused = run(None, "contract", "--release", "2", term=tmp_path / "c", **marked)
    assert refused.code == contract.EXIT_PRECONDITION, refused.output
    _assert_no_marker(refused.output, "a refused contract")
    for i, args in enumerate(
        [
            ("expand", "--release", "1"),
            ("status",),
            ("check", "--release", "1"),
            ("plan", "contract", "--release", "1", "--sql"),
            ("contract", "--release", "1"),
        ]
    ):
        result = run(None, *args, term=tmp_path / f"ok{i}", **marked)
        assert result.code == contract.EXIT_OK, result.output
        _assert_no_marker(result.output, f"divbase-migrate {' '.join(args)}")
    assert (
        '"settings":["DIVBASE_DB_HOST","DIVBASE_DB_NAME","DIVBASE_DB_PASSWORD","DIVBASE_DB_PORT",'
        '"DIVBASE_DB_USER"]' in result.stderr
    ), "the log says which variables were read, not their values"
