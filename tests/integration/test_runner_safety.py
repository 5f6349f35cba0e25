"""divbase-migrate under contention and bad input, against a real PostgreSQL: one runner at a time, bounded lock
waits with retries, clean failures with the right exit code, no password anywhere, nothing half-applied."""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from datetime import datetime
from pathlib import Path

import pytest
from divbase_data import assert_unchanged, state
from divbase_migrations import cli, contract, revisions
from divbase_migrations.runner import ADVISORY_LOCK_KEY
from divbase_migrations.testing.postgres import PostgresServer
from divbase_testsupport import free_port, wait_for
from migrate_helpers import engine, finish, run, start
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

MANIFEST = revisions.load()


def heads(url: str) -> list[str]:
    with engine(url).connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return []
        return sorted(r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version")))


def waiting_runners(url: str) -> int:
    """Runners that have connected and found the migration lock taken (they poll for it, and read who holds it)."""
    with engine(url).connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(DISTINCT pid) FROM pg_stat_activity WHERE application_name = 'divbase-migrate' "
                    "AND (query LIKE '%pg_try_advisory_lock%' OR query LIKE '%FROM pg_locks%')"
                )
            ).scalar_one()
        )


def test_two_concurrent_expands_apply_once(database_url: str, tmp_path: Path) -> None:
    holder = engine(database_url).connect()
    holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})  # both runners must queue
    procs = [start(database_url, "expand", "--release", "4", term=tmp_path / f"t{i}") for i in range(2)]
    try:
        wait_for("both runners waiting for the lock", lambda: waiting_runners(database_url) == 2, 30, interval=0.05)
    finally:
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
        holder.close()
    results = [finish(p, tmp_path / f"t{i}") for i, p in enumerate(procs)]
    assert [r.code for r in results] == [0, 0], [r.output for r in results]
    assert sorted(r.summary["outcome"] for r in results) == ["applied", "noop"]
    with engine(database_url).connect() as conn:
        counts = conn.execute(text("SELECT revision, count(*) FROM divbase_migration_log GROUP BY revision")).all()
    assert sorted(r for r, _ in counts) == list(MANIFEST.chains.expand) and all(n == 1 for _, n in counts)


def test_the_second_runner_gives_up_waiting_within_its_bound(database_url: str, tmp_path: Path) -> None:
    holder = engine(database_url).connect()
    holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
    try:
        result = run(database_url, "expand", "--release", "1", "--wait-timeout", "1s", term=tmp_path / "t")
    finally:
        holder.close()
    assert result.code == cli.EXIT_TIMEOUT
    assert "another divbase-migrate held the migration lock" in result.summary["error"]
    assert heads(database_url) == []


def test_a_lock_wait_names_the_holder(database_url: str, tmp_path: Path) -> None:
    """Who holds the migration lock and since when: in `status` while it is held, in the log of a runner that
    waits, and in the error of one that gave up (the operator shows that error for the failed attempt)."""
    holder = engine(database_url).connect()
    holder.execute(text("SET application_name = 'someone-else'"))
    holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
    pid = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()
    try:
        status = run(database_url, "status", term=tmp_path / "s")
        result = run(database_url, "expand", "--release", "1", "--wait-timeout", "1s", term=tmp_path / "t")
    finally:
        holder.close()
    held = json.loads(status.stdout)["lock_holder"]
    assert (held["pid"], held["application_name"]) == (pid, "someone-else")
    assert datetime.strptime(held["since"], "%Y-%m-%dT%H:%M:%SZ")
    assert result.code == cli.EXIT_TIMEOUT
    assert f"(pid {pid}, application_name 'someone-else', " in result.summary["error"]
    assert f"connected since {held['since']})" in result.summary["error"]
    assert "holds the lock; waiting" in result.output and '"someone-else"' in result.output
    # the wait is the contract's structured line: what the operator reads of a waiting pod's log
    wait = contract.read_lock_wait(result.output)
    assert wait is not None and (wait.holder_pid, wait.holder_application, wait.holder_since) == (
        pid,
        "someone-else",
        held["since"],
    )
    assert wait.since and datetime.strptime(wait.since, "%Y-%m-%dT%H:%M:%SZ")
    assert json.loads(run(database_url, "status", term=tmp_path / "s2").stdout)["lock_holder"] is None


def test_a_runner_that_got_the_lock_after_waiting_says_so(database_url: str, tmp_path: Path) -> None:
    """`lock_acquired` ends the wait in the log, so a log tail read later shows no wait."""
    holder = engine(database_url).connect()
    holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
    proc = start(database_url, "expand", "--release", "1", term=tmp_path / "t")
    try:
        wait_for("the runner waiting for the lock", lambda: waiting_runners(database_url) == 1, 30, interval=0.05)
    finally:
        holder.close()
    result = finish(proc, tmp_path / "t")
    assert result.code == 0, result.output
    waits = [line for line in result.output.splitlines() if '"event":"lock_wait"' in line]
    assert len(waits) == 1, result.output  # one line per holder, not one per poll
    assert contract.read_lock_wait(waits[0]) is not None
    assert '"event":"lock_acquired"' in result.output and contract.read_lock_wait(result.output) is None


def blocked_runners(url: str) -> int:
    """Runners waiting for a heavyweight lock right now."""
    with engine(url).connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'divbase-migrate' "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def blocked_waits(url: str) -> set[tuple[int, datetime]]:
    """(backend, statement start) of each runner statement waiting for a heavyweight lock: a new pair for the same
    lock means the runner timed out and tried again."""
    with engine(url).connect() as conn:
        return {
            (int(pid), started)
            for pid, started in conn.execute(
                text(
                    "SELECT pid, query_start FROM pg_stat_activity WHERE application_name = 'divbase-migrate' "
                    "AND wait_event_type = 'Lock'"
                )
            )
        }


def test_a_blocked_revision_is_retried_and_then_succeeds(database_url: str, tmp_path: Path) -> None:
    assert run(database_url, "expand", "--release", "1", term=tmp_path / "a").code == 0
    holder = engine(database_url).connect()
    holder.execute(text('LOCK TABLE "user" IN ACCESS EXCLUSIVE MODE'))
    proc = start(
        database_url, "expand", "--release", "2", "--lock-timeout", "200ms", "--lock-retries", "10", term=tmp_path / "b"
    )
    try:
        wait_for("the runner queued behind our lock", lambda: bool(blocked_waits(database_url)), 30, interval=0.05)
        first = blocked_waits(database_url)
        wait_for(
            "the runner timed out and waiting again",
            lambda: bool(blocked_waits(database_url) - first),
            30,
            interval=0.05,
        )
    finally:
        holder.rollback()
        holder.close()
    result = finish(proc, tmp_path / "b")
    assert result.code == 0, result.output
    assert result.summary["retries"] >= 1 and result.summary["to"]["expand"] == "e0002_user_display_name"
    assert "lock timeout; rolled back, will retry" in result.stderr


@pytest.mark.parametrize(
    ("start_at", "locked", "blocked"),
    [
        # past the baseline: the revision itself waits for the lock
        ("2", "skipped_vcf_files", "revision e0003_skip_reason"),
        # at the baseline: the adoption check reads the catalog first, which waits on the same lock
        ("1", "user", "reading the schema to compare with the baseline"),
    ],
)
def test_a_blocked_revision_fails_cleanly_after_its_bound(
    database_url: str, tmp_path: Path, start_at: str, locked: str, blocked: str
) -> None:
    assert run(database_url, "expand", "--release", start_at, term=tmp_path / "a").code == 0
    before = heads(database_url)
    holder = engine(database_url).connect()
    holder.execute(text(f'LOCK TABLE "{locked}" IN ACCESS EXCLUSIVE MODE'))  # held until the runner gives up
    try:
        result = run(
            database_url,
            "expand",
            "--release",
            str(int(start_at) + 1),
            "--lock-timeout",
            "100ms",
            "--lock-retries",
            "2",
            term=tmp_path / "b",
            timeout=60,
        )
    finally:
        holder.rollback()
        holder.close()
    assert result.code == cli.EXIT_TIMEOUT, result.output
    assert f"{blocked}: a lock was not granted within 100 ms, 3 attempts" in result.summary["error"]
    assert heads(database_url) == before  # nothing half-applied
    with engine(database_url).connect() as conn:
        assert "display_name" not in {c["name"] for c in inspect(conn).get_columns("user")} or start_at == "2"
        assert not any(
            c["name"] == "skip_reason" and c["default"] for c in inspect(conn).get_columns("skipped_vcf_files")
        )


def test_statement_timeout_is_enforced(database_url: str, tmp_path: Path) -> None:
    result = run(database_url, "expand", "--release", "4", "--statement-timeout", "1ms", term=tmp_path / "t")
    assert result.code == cli.EXIT_TIMEOUT, result.output
    assert "statement_timeout" in result.summary["error"]


def test_contract_before_expand_is_refused_and_changes_nothing(database_url: str, tmp_path: Path) -> None:
    assert run(database_url, "expand", "--release", "1", term=tmp_path / "a").code == 0
    assert run(database_url, "contract", "--release", "1", term=tmp_path / "b").code == 0
    with engine(database_url).begin() as conn:
        conn.execute(text("DROP TABLE divbase_migration_log"))  # a refusal must not create it again
    before = state(database_url)
    result = run(database_url, "contract", "--release", "2", term=tmp_path / "c")
    assert result.code == cli.EXIT_PRECONDITION
    assert "contract of release 2 must follow its expand" in result.summary["error"]
    assert_unchanged(database_url, before)


def test_status_and_check(database_url: str, tmp_path: Path) -> None:
    assert run(database_url, "expand", "--release", "2", term=tmp_path / "a").code == 0
    status = run(database_url, "status", term=tmp_path / "s")
    data = json.loads(status.stdout)
    assert data["applied"] == {"expand": "e0002_user_display_name", "contract": "9885301b9073"}  # at the baseline
    # expand only added: DivBase's releases at the baseline and example release 1 still run
    assert data["servable_releases"] == ["0.1.0a6", "0.1.0a7", "0.1.0a8", "0.1.0a9", "1", "2"]
    check = run(database_url, "check", "--version", "3", term=tmp_path / "c")
    assert check.code == cli.EXIT_PRECONDITION
    assert check.stdout.strip().startswith("release 3 needs expand revision e0004")
    assert run(database_url, "check", "--release", "2", term=tmp_path / "d").code == 0


def test_the_summary_says_which_release_the_database_served_before(database_url: str, tmp_path: Path) -> None:
    """`found`: what the operator labels a first rollout with (null on an empty database)."""
    first = run(database_url, "expand", "--release", "1", term=tmp_path / "a")
    assert first.code == 0 and first.summary["found"] is None
    assert run(database_url, "contract", "--release", "1", term=tmp_path / "b").summary["found"] == "1"
    upgrade = run(database_url, "expand", "--release", "3", term=tmp_path / "c")
    assert upgrade.code == 0 and upgrade.summary["found"] == "1"
    again = run(database_url, "expand", "--release", "3", term=tmp_path / "d")
    assert again.summary["outcome"] == "noop" and again.summary["found"] == "3"


def test_plan_reads_the_database_but_changes_nothing(database_url: str, tmp_path: Path) -> None:
    assert run(database_url, "expand", "--release", "2", term=tmp_path / "a").code == 0
    before = state(database_url)
    result = run(database_url, "plan", "contract", "--release", "2", "--sql", term=tmp_path / "p")
    assert result.code == 0
    assert 'ALTER TABLE "user" DROP COLUMN name' in result.stdout
    assert_unchanged(database_url, before)
    # the summary carries the plan (compressed) and its digest: what the operator publishes for review
    sql = zlib.decompress(base64.b64decode(result.summary["sql_z"])).decode()
    assert 'ALTER TABLE "user" DROP COLUMN name' in sql and sql in result.stdout
    assert result.summary["digest"] == "sha256:" + hashlib.sha256(sql.encode()).hexdigest()
    assert result.summary["revisions"] == ["c0002_user_display_name"]


def test_unreachable_database(tmp_path: Path) -> None:
    url = f"postgresql://divbase:pw-unreachable@127.0.0.1:{free_port()}/divbase"
    result = run(url, "expand", "--release", "1", term=tmp_path / "t")
    assert result.code == cli.EXIT_UNAVAILABLE
    assert result.summary["error"].startswith("database unavailable:")
    assert "pw-unreachable" not in result.output


def test_wrong_password_and_no_password_leaks(
    postgres_server: PostgresServer, database_url: str, tmp_path: Path
) -> None:
    wrong = make_url(database_url).set(password="Wr0ng-Passw0rd-xyz").render_as_string(hide_password=False)
    result = run(wrong, "expand", "--release", "1", term=tmp_path / "t")
    assert result.code == cli.EXIT_UNAVAILABLE
    assert "password authentication failed" in result.summary["error"]
    assert "Wr0ng-Passw0rd-xyz" not in result.output
    assert heads(database_url) == []
    # and a successful run, status, check and plan never print the real one either
    outputs = [
        run(database_url, *args, term=tmp_path / f"r{i}").output
        for i, args in enumerate(
            [
                ("expand", "--release", "4"),
                ("contract", "--release", "4"),
                ("status",),
                ("check", "--release", "4"),
                ("plan", "expand", "--release", "4", "--sql"),
            ]
        )
    ]
    assert all(postgres_server.password not in out for out in outputs)
    assert '"settings":["DIVBASE_DATABASE_URL"]' in outputs[0]  # which variable was read, never its value


def test_parts_from_the_environment(postgres_server: PostgresServer, database_url: str, tmp_path: Path) -> None:
    url = make_url(database_url)
    result = run(
        None,
        "expand",
        "--release",
        "1",
        term=tmp_path / "t",
        DIVBASE_DB_HOST=str(url.host),
        DIVBASE_DB_PORT=str(url.port),
        DIVBASE_DB_NAME=str(url.database),
        DIVBASE_DB_USER=str(url.username),
        DIVBASE_DB_PASSWORD=str(url.password),
        DIVBASE_RELEASE="1",
    )
    assert result.code == 0, result.output
    assert postgres_server.password not in result.output


def test_corrupt_manifest_and_unknown_version_change_nothing(database_url: str, tmp_path: Path) -> None:
    before = state(database_url)  # empty: a refusal creates neither alembic_version nor divbase_migration_log
    bad = tmp_path / "releases.toml"
    bad.write_text("[[release]]\nversion = '1'\nexpand = 'e0404'\ncontract = 'c0002_user_display_name'\n")
    result = run(database_url, "--manifest", str(bad), "expand", "--release", "1", term=tmp_path / "t")
    assert result.code == cli.EXIT_USAGE
    assert "`expand` = 'e0404' is not a revision of the expand branch" in result.summary["error"]
    result = run(database_url, "expand", "--release", "7", term=tmp_path / "u")
    assert result.code == cli.EXIT_USAGE and "release '7' is not in the manifest" in result.summary["error"]
    result = run(database_url, "expand", term=tmp_path / "v")
    assert result.code == cli.EXIT_USAGE and "--release (or DIVBASE_RELEASE) is required" in result.summary["error"]
    assert_unchanged(database_url, before)
