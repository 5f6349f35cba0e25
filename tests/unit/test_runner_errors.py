"""How the runner turns a database error into its exit code (`classify`): whether the operator may retry depends on
it (docs/runner-contract.md). No database: psycopg's own exception classes, and a few with a chosen SQLSTATE."""

from __future__ import annotations

import psycopg
import psycopg.errors
import pytest
from divbase_migrations.contract import EXIT_FAILED, EXIT_TIMEOUT, EXIT_UNAVAILABLE
from divbase_migrations.runner import (
    DatabaseUnavailable,
    Deadlock,
    LockTimeout,
    MigrationFailed,
    StatementTimeout,
    StepError,
    classify,
)
from sqlalchemy.exc import OperationalError as SqlAlchemyOperationalError

# Unavailability is said in the runner's own words, never quoting the driver's message (it repeats host, port, user
# and database, which may come from Secret keys: docs/security.md).


def with_sqlstate(base: type[psycopg.Error], sqlstate: str | None) -> type[psycopg.Error]:
    return type(f"{base.__name__}_{sqlstate}", (base,), {"sqlstate": sqlstate})


@pytest.mark.parametrize(
    ("error", "kind", "code", "message"),
    [
        (
            psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"),
            LockTimeout,
            EXIT_TIMEOUT,
            "a lock was not granted within lock_timeout",
        ),
        (
            psycopg.errors.DeadlockDetected(
                "deadlock detected\nDETAIL:  Process 7 waits for ShareLock on transaction 9; "
                'blocked by process 8.\nProcess 8: INSERT INTO "user" ...'
            ),
            Deadlock,
            EXIT_TIMEOUT,
            "deadlocked with another session and was rolled back",
        ),
        (
            psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
            StatementTimeout,
            EXIT_TIMEOUT,
            "a statement ran longer than statement_timeout and was cancelled",
        ),
        (
            psycopg.OperationalError("connection refused\n\tIs the server running?"),
            DatabaseUnavailable,
            EXIT_UNAVAILABLE,
            "database unavailable: the server refused the connection (is it running, is the port right?)",
        ),
        (
            psycopg.errors.ConnectionFailure("server closed the connection"),
            DatabaseUnavailable,
            EXIT_UNAVAILABLE,
            "database unavailable: the server closed the connection",
        ),
        (
            psycopg.errors.InvalidPassword("password authentication failed"),
            DatabaseUnavailable,
            EXIT_UNAVAILABLE,
            "database unavailable: the server refused the credentials (password authentication failed)",
        ),
        (
            with_sqlstate(psycopg.OperationalError, "3D000")('database "x" does not exist'),
            DatabaseUnavailable,
            EXIT_UNAVAILABLE,
            "database unavailable: the database named in the settings does not exist",
        ),
        (
            psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
            DatabaseUnavailable,
            EXIT_UNAVAILABLE,
            "database unavailable: the server terminated the connection",
        ),
        (
            psycopg.OperationalError(""),
            DatabaseUnavailable,
            EXIT_UNAVAILABLE,
            "database unavailable: could not connect or the connection failed (OperationalError, SQLSTATE none)",
        ),
        (
            psycopg.errors.TooManyConnections("sorry, too many clients already"),
            MigrationFailed,
            EXIT_FAILED,
            "TooManyConnections: sorry, too many clients already",
        ),
        (
            psycopg.errors.DuplicateColumn('column "x" already exists\nLINE 1: ...'),
            MigrationFailed,
            EXIT_FAILED,
            'DuplicateColumn: column "x" already exists',
        ),
        (psycopg.errors.DuplicateColumn(""), MigrationFailed, EXIT_FAILED, "DuplicateColumn: DuplicateColumn"),
    ],
    ids=lambda v: getattr(v, "sqlstate", None) or (v.__name__ if isinstance(v, type) else None),
)
def test_each_database_error_gets_the_exit_code_that_says_whether_to_retry(
    error: psycopg.Error, kind: type[StepError], code: int, message: str
) -> None:
    for raised in (error, SqlAlchemyOperationalError("SELECT 1", {}, error)):  # as psycopg or SQLAlchemy raise it
        step_error = classify(raised)
        assert type(step_error) is kind and step_error.exit_code == code
        assert str(step_error) == message


def test_an_error_from_outside_the_driver_is_a_failed_migration() -> None:
    """Not every error under a DBAPIError is psycopg's (no SQLSTATE at all): it fails the step, retried by no one."""
    for raised in (RuntimeError("boom\nmore"), SqlAlchemyOperationalError("SELECT 1", {}, RuntimeError("boom"))):
        step_error = classify(raised)
        assert type(step_error) is MigrationFailed and str(step_error) == "RuntimeError: boom"
