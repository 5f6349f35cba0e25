"""Apply one step (expand or contract) of a release, safely: one runner at a time, bounded lock waits, retries.

- A session-level advisory lock per database serialises runners (polled, so a waiting runner holds no snapshot);
  the one that waited re-reads the schema and usually finds nothing left to do.
- Every revision runs in its own transaction, on its own connection, with `lock_timeout` set: a revision blocked
  by a long lock is rolled back and retried with backoff, up to a bound, instead of queueing every other query
  behind its ACCESS EXCLUSIVE request. A revision PostgreSQL picks as a deadlock's victim (the application took
  the same locks in the other order) was rolled back whole too, and is retried the same way.
- Alembic records each applied revision in `alembic_version`; we also append it, in the same transaction, to
  `divbase_migration_log` (which release and step applied it, attempts, duration), so "applied exactly once" can
  be checked afterwards."""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg.errors
from alembic import command
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy import Connection, Engine, create_engine, pool, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from . import schema_snapshot
from .compat import read_applied
from .contract import (
    EVENT_LOCK_ACQUIRED,
    EXIT_FAILED,
    EXIT_PRECONDITION,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
    LOCK_WAIT_SINCE,
    LOG_EVENT,
    lock_wait_fields,
    plan_digest,
)
from .plan import plan_sql as render_plan
from .releases import CONTRACT, EXPAND, TRUNK, Applied, Manifest, Release, compatibility, pending
from .revisions import alembic_config

log = logging.getLogger("divbase_migrations.runner")

BOOKKEEPING_TABLES = frozenset({"alembic_version", "divbase_migration_log"})  # never part of a schema to compare
# pg_advisory_lock key: the first 8 bytes of sha256("divbase-migrate"), as a signed bigint
ADVISORY_LOCK_KEY = 0x3D1F5C1B6E2A9071
LOG_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS divbase_migration_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    revision varchar(64) NOT NULL,
    branch varchar(16) NOT NULL,
    release varchar(64) NOT NULL,
    step varchar(16) NOT NULL,
    attempts integer NOT NULL,
    duration_ms integer NOT NULL,
    runner text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


class StepError(Exception):
    """A failure with the exit code that tells the operator whether retrying can help."""

    exit_code = EXIT_FAILED


class PreconditionFailed(StepError):
    """The database is not where this step can start from (e.g. contract before expand, or a downgrade)."""

    exit_code = EXIT_PRECONDITION


class PlanMismatch(PreconditionFailed):
    """The SQL this contract would run is not the approved plan's (`--expect-digest`): nothing was applied."""


class SchemaDrift(PreconditionFailed):
    """An adopted database at the baseline does not have the baseline's schema: no revision is applied to it."""

    SHOWN = 25

    def __init__(self, baseline: str, differences: list[str]) -> None:
        shown = differences[: self.SHOWN]
        more = f"; and {len(differences) - len(shown)} more" if len(differences) > len(shown) else ""
        super().__init__(
            f"the database is at the baseline {baseline} but its schema differs from it in "
            f"{len(differences)} place(s), so nothing was applied: {'; '.join(shown)}{more}. Make the "
            f"schema match (or regenerate the baseline snapshot if the baseline itself changed)"
        )
        self.differences = differences


class LockTimeout(StepError):
    """Locks (or the advisory lock of another runner) were not granted within the bound, after every retry."""

    exit_code = EXIT_TIMEOUT


class Deadlock(LockTimeout):
    """PostgreSQL chose this revision's transaction as a deadlock's victim (its locks and the application's,
    taken in opposite orders): it was rolled back whole, so it is retried like a lock timeout."""


class StatementTimeout(StepError):
    exit_code = EXIT_TIMEOUT


class DatabaseUnavailable(StepError):
    """Cannot connect or authenticate, or the connection dropped (server restart): retry later."""

    exit_code = EXIT_UNAVAILABLE


class MigrationFailed(StepError):
    """A revision's SQL failed; its transaction was rolled back."""

    exit_code = EXIT_FAILED


@dataclass(frozen=True)
class Settings:
    lock_timeout_ms: int = 5_000
    statement_timeout_ms: int = 0  # 0: no limit
    lock_retries: int = 8
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    wait_timeout_ms: int = 600_000  # how long to wait for another runner's advisory lock
    connect_timeout_s: int = 10


@dataclass
class Outcome:
    step: str
    release: str
    before: Applied
    after: Applied
    applied: list[str] = field(default_factory=list)
    retries: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.applied)


def make_engine(url: URL, settings: Settings) -> Engine:
    options = f"-c lock_timeout={settings.lock_timeout_ms} -c statement_timeout={settings.statement_timeout_ms}"
    return create_engine(
        url,
        poolclass=pool.NullPool,
        connect_args={
            "connect_timeout": settings.connect_timeout_s,
            "options": options,
            "application_name": "divbase-migrate",
        },
    )


def classify(exc: BaseException) -> StepError:
    """Map a database exception to a StepError whose exit code says whether a retry can help."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, psycopg.errors.LockNotAvailable):
        return LockTimeout("a lock was not granted within lock_timeout")
    if isinstance(orig, psycopg.errors.DeadlockDetected):
        return Deadlock("deadlocked with another session and was rolled back")
    if isinstance(orig, psycopg.errors.QueryCanceled):
        return StatementTimeout("a statement ran longer than statement_timeout and was cancelled")
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(orig, psycopg.OperationalError) and (sqlstate is None or sqlstate[:2] in ("08", "28", "3D", "57")):
        return DatabaseUnavailable(f"database unavailable: {unavailable_reason(orig)}")
    detail = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return MigrationFailed(f"{type(orig).__name__}: {detail}")


LOCK_HOLDER_SQL = """
SELECT a.pid, a.application_name, host(a.client_addr) AS client, a.backend_start
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid::bigint = :hi AND l.objid::bigint = :lo
"""


def lock_holder(conn: Connection) -> dict[str, Any] | None:
    """Who holds the migration lock: backend pid, application_name, client address and since when its session is
    connected (a runner takes the lock right after it connects); None when nobody does or it cannot be read. Other
    roles' sessions show only their pid unless ours may read them (pg_read_all_stats)."""
    key = ADVISORY_LOCK_KEY & 0xFFFFFFFFFFFFFFFF
    try:
        row = conn.execute(text(LOCK_HOLDER_SQL), {"hi": key >> 32, "lo": key & 0xFFFFFFFF}).first()
    except DBAPIError:
        return None
    if row is None:
        return None
    since = row.backend_start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if row.backend_start else None
    return {"pid": row.pid, "application_name": row.application_name, "client": row.client, "since": since}


def describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "holder unknown"
    parts = [f"pid {holder['pid']}"]
    if holder.get("application_name"):
        parts.append(f"application_name {holder['application_name']!r}")
    if holder.get("client"):
        parts.append(f"client {holder['client']}")
    if holder.get("since"):
        parts.append(f"connected since {holder['since']}")
    return ", ".join(parts)


# libpq's and psycopg's connection failures, told apart without repeating them: they quote the host, the port, the
# user and the database, any of which the resource may have mapped to a Secret key that is not meant to be shown.
_CONNECT_FAILURES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("password authentication failed",), "the server refused the credentials (password authentication failed)"),
    (("no pg_hba.conf entry",), "the server's pg_hba.conf admits no such connection"),
    (('role "', "does not exist"), "the user named in the settings does not exist"),
    (('database "', "does not exist"), "the database named in the settings does not exist"),
    (("failed to resolve host",), "the host name does not resolve"),
    (("could not translate host name",), "the host name does not resolve"),
    (("connection refused",), "the server refused the connection (is it running, is the port right?)"),
    (("timeout expired",), "the connection timed out"),
    (("timed out",), "the connection timed out"),
    (("no route to host",), "the host is unreachable"),
    (("network is unreachable",), "the host is unreachable"),
    (("starting up",), "the server is starting up"),
    (("shutting down",), "the server is shutting down"),
    (("recovery mode",), "the server is in recovery"),
    (("terminating connection",), "the server terminated the connection"),
    (("server closed the connection",), "the server closed the connection"),
    (("consuming input failed",), "the connection was lost"),
    (("too many connections",), "the server has no free connection slots"),
    (("connection slots are reserved",), "the server has no free connection slots"),
    (("ssl",), "the TLS (SSL) connection failed"),
    (("certificate",), "the TLS (SSL) connection failed"),
)


def unavailable_reason(exc: BaseException) -> str:
    """Why a connection failed, in words that never repeat the settings (see _CONNECT_FAILURES)."""
    text = str(exc).lower()
    for needles, reason in _CONNECT_FAILURES:
        if all(needle in text for needle in needles):
            return reason
    sqlstate = getattr(exc, "sqlstate", None)
    return f"could not connect or the connection failed ({type(exc).__name__}, SQLSTATE {sqlstate or 'none'})"


def _short(digest: str) -> str:
    """`sha256:` and the first 12 hex digits, as approvals name a plan."""
    return digest[: len("sha256:") + 12]


def _runner_name() -> str:
    return os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()


class Runner:
    def __init__(
        self,
        url: URL,
        manifest: Manifest,
        settings: Settings | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.manifest = manifest
        self.settings = settings or Settings()
        self.sleep = sleep
        self.engine = make_engine(url, self.settings)

    def run(self, step: str, version: str, expect_digest: str | None = None) -> Outcome:
        """Apply `step` of release `version`. With `expect_digest`, only if the SQL about to run (rendered under
        the lock, from where the database is) has that digest: the plan a person approved, not merely a plan of
        the same release (PlanMismatch, exit 5, otherwise)."""
        release = self.manifest.release(version)
        try:
            with self.engine.connect() as lock_conn:
                lock_conn = lock_conn.execution_options(isolation_level="AUTOCOMMIT")
                self._acquire(lock_conn)
                try:
                    return self._run_locked(lock_conn, step, release, expect_digest)
                finally:
                    lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
        except DBAPIError as exc:
            raise classify(exc) from None

    def _acquire(self, conn: Connection) -> None:
        """Poll for the lock instead of blocking in pg_advisory_lock: a waiting statement would hold a snapshot,
        and the holder's CREATE INDEX CONCURRENTLY waits for every running snapshot to end (a silent deadlock).
        The wait is one structured log line (the runner contract's `lock_wait`: the operator shows it in the
        resource's status), again when the holder changes, and `lock_acquired` when it ends."""
        deadline = time.monotonic() + self.settings.wait_timeout_ms / 1000
        delay = 0.1
        waiting_since: str | None = None
        shown: Any = ()  # the holder's pid last logged (nothing logged yet)
        while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY}).scalar():
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"another divbase-migrate held the migration lock for more than "
                    f"{self.settings.wait_timeout_ms} ms ({describe_holder(lock_holder(conn))})"
                )
            holder = lock_holder(conn)
            pid = holder.get("pid") if holder else None
            if pid != shown and (pid is not None or waiting_since is None):  # not again for a moment between holders
                waiting_since = waiting_since or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                log.info(
                    "another divbase-migrate holds the lock; waiting",
                    extra={"wait_ms": self.settings.wait_timeout_ms, **lock_wait_fields(holder, waiting_since)},
                )
                shown = pid
            self.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)
        if waiting_since is not None:
            log.info("got the migration lock", extra={LOG_EVENT: EVENT_LOCK_ACQUIRED, LOCK_WAIT_SINCE: waiting_since})

    def _run_locked(
        self, lock_conn: Connection, step: str, release: Release, expect_digest: str | None = None
    ) -> Outcome:
        before = read_applied(lock_conn, self.manifest)
        todo = self._plan(step, release, before)
        if expect_digest is not None and todo:
            self._check_plan(step, release, before, expect_digest)
        outcome = Outcome(step, release.version, before, before)
        if todo:  # only a step that will apply something leaves a trace: a refused one changes nothing
            outcome.retries += self._refuse_drift(before)
            lock_conn.execute(text(LOG_TABLE_DDL))
        log.info(
            "starting",
            extra={"step": step, "release": release.version, "from": before.as_dict(), "pending": list(todo)},
        )
        for revision in todo:
            outcome.retries += self._apply(revision, step, release)
            outcome.applied.append(revision)
        outcome.after = read_applied(lock_conn, self.manifest)
        return outcome

    def _check_plan(self, step: str, release: Release, applied: Applied, expected: str) -> None:
        """The SQL `plan <step> --release V --sql` renders from here must be the approved plan, byte for byte."""
        _, sql = render_plan(self.manifest, step, release, applied)
        actual = plan_digest(sql)
        if actual != expected:
            raise PlanMismatch(
                f"the {step} of release {release.version} would run SQL {_short(actual)}, not the approved plan "
                f"{_short(expected)}: the image or the database changed since the plan was reviewed. Nothing was "
                f"applied; make a new plan and approve that one"
            )
        log.info("the SQL is the approved plan", extra={"digest": actual})

    def _plan(self, step: str, release: Release, applied: Applied) -> tuple[str, ...]:
        verdict = compatibility(self.manifest, release, applied)
        if step == EXPAND:
            if not verdict.ok and not verdict.missing:
                raise PreconditionFailed(verdict.reason)
            return pending(self.manifest.chains, EXPAND, applied.expand, release.expand)
        if step == CONTRACT:
            if not verdict.ok:
                raise PreconditionFailed(
                    f"contract of release {release.version} must follow its expand: {verdict.reason}"
                )
            return pending(self.manifest.chains, CONTRACT, applied.contract, release.contract)
        raise ValueError(f"unknown step {step!r}")

    def _refuse_drift(self, applied: Applied) -> int:
        """Before the first revision on top of the baseline, the live schema must be the baseline's, object by
        object: an adopted production database that drifted (a hand-made index, a column changed outside Alembic)
        is refused with every difference listed, rather than migrated blindly as `alembic stamp` would."""
        baseline = self.manifest.baseline
        at_baseline = baseline is not None and applied == Applied(baseline.revision, baseline.revision)
        if not at_baseline or baseline is None or baseline.schema is None:
            return 0
        expected = schema_snapshot.load(baseline.schema)
        actual: dict[str, Any] = {}

        def read(attempt: int, started: float) -> None:  # the catalog functions wait on locks of busy tables too
            with self.engine.connect() as read_conn:
                actual.update(
                    schema_snapshot.take(read_conn, exclude_tables=BOOKKEEPING_TABLES | set(baseline.ignore_tables))
                )

        retries = self._retrying("reading the schema to compare with the baseline", read, {"check": "baseline schema"})
        differences = schema_snapshot.diff(expected, actual)
        if differences:
            raise SchemaDrift(baseline.revision, differences)
        log.info("adopting: the schema matches the baseline", extra={"baseline": baseline.revision})
        return retries

    def _apply(self, revision: str, step: str, release: Release) -> int:
        """Apply one revision, retrying lock timeouts and deadlocks with capped exponential backoff; returns the
        retries used."""

        def upgrade(attempt: int, started: float) -> None:
            with self.engine.connect() as conn:
                cfg = alembic_config(connection=conn, on_version_apply=self._recorder(step, release, attempt, started))
                command.upgrade(cfg, revision)
                conn.commit()

        return self._retrying(f"revision {revision}", upgrade, {"revision": revision})

    def _retrying(self, what: str, attempt_once: Callable[[int, float], None], context: dict[str, Any]) -> int:
        """Run `attempt_once(attempt, started)`, retrying a lock timeout or a deadlock with capped, jittered
        exponential backoff up to the bound; any other failure, or the last timeout, is raised naming `what`.
        Returns retries used."""
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                attempt_once(attempt, started)
                log.info(
                    "applied" if "revision" in context else "done",
                    extra={**context, "attempt": attempt, "duration_ms": int((time.monotonic() - started) * 1000)},
                )
                return attempt - 1
            except DBAPIError as exc:
                error = classify(exc)
                if not isinstance(error, LockTimeout) or attempt > self.settings.lock_retries:
                    if isinstance(error, Deadlock):
                        error = Deadlock(f"{what}: deadlocked with another session, {attempt} attempts")
                    elif isinstance(error, LockTimeout):
                        error = LockTimeout(
                            f"{what}: a lock was not granted within "
                            f"{self.settings.lock_timeout_ms} ms, {attempt} attempts"
                        )
                    else:
                        error.args = (f"{what}: {error.args[0]}",)
                    raise error from None
                delay = min(self.settings.backoff_cap_s, self.settings.backoff_base_s * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)
                log.warning(
                    "deadlock; rolled back, will retry"
                    if isinstance(error, Deadlock)
                    else "lock timeout; rolled back, will retry",
                    extra={
                        **context,
                        "attempt": attempt,
                        "retry_in_s": round(delay, 2),
                        "lock_timeout_ms": self.settings.lock_timeout_ms,
                    },
                )
                self.sleep(delay)

    def _recorder(self, step_name: str, release: Release, attempt: int, started: float) -> Callable[..., None]:
        def record(*, ctx: MigrationContext, step: MigrationInfo, heads: Any, run_args: Any) -> None:
            revision = step.up_revision_id
            ctx.connection.execute(
                text(
                    "INSERT INTO divbase_migration_log "
                    "(revision, branch, release, step, attempts, duration_ms, runner) "
                    "VALUES (:rev, :branch, :release, :step, :attempts, :ms, :runner)"
                ),
                {
                    "rev": revision,
                    "branch": self.manifest.chains.branch_of(revision) or TRUNK,
                    "release": release.version,
                    "step": step_name,
                    "attempts": attempt,
                    "ms": int((time.monotonic() - started) * 1000),
                    "runner": _runner_name(),
                },
            )

        return record
