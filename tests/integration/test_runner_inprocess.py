"""The runner's gates called in process against a real PostgreSQL: the advisory lock, lock_timeout retries with
capped backoff, and the preconditions. Its `sleep` is the test's hook: the runner calls it exactly where it waits,
so the test releases a lock at a chosen wait instead of racing a timer (and mutation testing sees these calls;
the subprocess tests of divbase-migrate in test_runner_safety.py cannot show it a mutant)."""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from divbase_data import assert_unchanged, state
from divbase_migrations import revisions, runner
from divbase_migrations.compat import read_applied
from divbase_migrations.contract import EXIT_TIMEOUT, plan_digest
from divbase_migrations.plan import plan_sql
from divbase_migrations.releases import Applied, BehindBaseline
from divbase_migrations.runner import (
    ADVISORY_LOCK_KEY,
    Deadlock,
    LockTimeout,
    MigrationFailed,
    PlanMismatch,
    PreconditionFailed,
    Runner,
    SchemaDrift,
    Settings,
    StatementTimeout,
)
from divbase_testsupport import wait_for
from migrate_helpers import engine
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url

MANIFEST = revisions.load()
REVISION_3 = "e0003_skip_reason"  # the first of release 3's expand revisions: a backfill of skipped_vcf_files
FAST = Settings(lock_timeout_ms=100, lock_retries=3, backoff_base_s=1.0, backoff_cap_s=3.0, wait_timeout_ms=60_000)
PATIENT = dataclasses.replace(FAST, lock_timeout_ms=30_000)  # lock waits outlast PostgreSQL's deadlock check (1 s)


class Waits:
    """The runner's sleep: records each requested delay and runs `on_wait[n]` at the n-th wait (1-based)."""

    def __init__(self, on_wait: dict[int, Callable[[], None]] | None = None) -> None:
        self.delays: list[float] = []
        self.on_wait = on_wait or {}

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        action = self.on_wait.get(len(self.delays))
        if action is not None:
            action()


def make_runner(url: str, settings: Settings = FAST, waits: Waits | None = None) -> Runner:
    return Runner(make_url(url), MANIFEST, settings, sleep=waits or Waits())


@pytest.fixture
def holder(database_url: str) -> Iterator[Connection]:
    """Another session of the same database, for holding locks the runner has to wait for."""
    with engine(database_url).connect() as conn:
        yield conn
        conn.rollback()


def backend_pid(conn: Connection) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def lock_is_free(url: str) -> bool:
    with engine(url).connect() as conn:
        free = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY}).scalar())
        if free:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
        return free


def applied_now(url: str) -> Applied:
    with engine(url).connect() as conn:
        return read_applied(conn, MANIFEST)


def approved_digest(url: str, step: str, version: str) -> str:
    """The digest `divbase-migrate plan <step> --release <version> --sql` prints from where the database is now
    (the plan a person reviews and approves)."""
    return plan_digest(plan_sql(MANIFEST, step, MANIFEST.release(version), applied_now(url))[1])


def log_rows(url: str) -> list[tuple[str, str, str, int]]:
    with engine(url).connect() as conn:
        if not inspect(conn).has_table("divbase_migration_log"):
            return []
        return [
            tuple(r)
            for r in conn.execute(
                text("SELECT revision, release, step, attempts FROM divbase_migration_log ORDER BY id")
            )
        ]


def test_expand_then_contract_apply_each_release_once_and_free_the_lock(database_url: str) -> None:
    first = make_runner(database_url).run("expand", "1")
    assert first.step == "expand" and first.release == "1" and first.retries == 0
    release = MANIFEST.release("1")
    assert first.before == Applied(None, None) and first.applied and first.after.expand == release.expand
    again = make_runner(database_url).run("expand", "1")
    assert again.applied == [] and not again.changed and again.before == again.after == first.after
    contract = make_runner(database_url).run("contract", "1")
    assert contract.after == Applied(release.expand, release.contract) and contract.before == first.after
    assert contract.applied == []  # release 1 contracts nothing past the baseline
    expand2 = make_runner(database_url).run("expand", "2")
    assert expand2.applied == ["e0002_user_display_name"] and expand2.changed
    assert expand2.after.expand == MANIFEST.release("2").expand
    contract2 = make_runner(database_url).run("contract", "2")
    assert contract2.applied == [MANIFEST.release("2").contract]  # only what lies past the applied contract
    assert ("e0002_user_display_name", "2", "expand", 1) in log_rows(database_url)
    assert lock_is_free(database_url)


def test_a_runner_waits_for_the_migration_lock_with_doubling_polls(
    database_url: str, holder: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
    release = lambda: holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})  # noqa: E731
    waits = Waits({6: release})
    with caplog.at_level(logging.INFO, logger="divbase_migrations.runner"):
        outcome = make_runner(database_url, waits=waits).run("expand", "2")
    assert waits.delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]  # doubling from 0.1 s, capped at 1 s
    said = [r for r in caplog.records if r.getMessage() == "another divbase-migrate holds the lock; waiting"]
    assert len(said) == 1, "said once, not at every poll"
    assert said[0].holder["pid"] == backend_pid(holder)  # type: ignore[attr-defined]  # who holds it, by pid
    assert outcome.after.expand == MANIFEST.release("2").expand
    assert lock_is_free(database_url)


WAITING, ACQUIRED = "another divbase-migrate holds the lock; waiting", "got the migration lock"


def lock_log(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int | None, str]]:
    """The runner's lock-wait lines (the contract's `lock_wait` / `lock_acquired`): message, holder pid, since."""
    return [
        (r.getMessage(), (getattr(r, "holder", None) or {}).get("pid"), getattr(r, "waiting_since", None))
        for r in caplog.records
        if r.getMessage() in (WAITING, ACQUIRED)
    ]


def test_a_lock_wait_is_logged_once_per_holder_and_ended_by_lock_acquired(
    database_url: str, holder: Connection, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the operator reads of a waiting runner's log: one line per holder (the next holder again, with the same
    `since`), `since` in UTC whatever the machine's zone, and `lock_acquired` only after a wait."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        with caplog.at_level(logging.INFO, logger="divbase_migrations.runner"):
            make_runner(database_url).run("expand", "1")  # the lock is free: nothing said of it
        assert lock_log(caplog) == []
        with engine(database_url).connect() as second:
            holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})

            def hand_over() -> None:  # while the runner sleeps, the holder lets go and another session takes it
                holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
                second.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})

            release = lambda: second.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})  # noqa: E731
            waits = Waits({2: hand_over, 4: release})
            started = datetime.now(UTC).replace(microsecond=0)
            with caplog.at_level(logging.INFO, logger="divbase_migrations.runner"):
                make_runner(database_url, waits=waits).run("expand", "2")
            said = lock_log(caplog)
            since = said[0][2]
            assert said == [
                (WAITING, backend_pid(holder), since),
                (WAITING, backend_pid(second), since),
                (ACQUIRED, None, since),
            ]
            when = datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            assert started <= when <= datetime.now(UTC)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert lock_is_free(database_url)


def test_a_lock_wait_whose_holder_is_not_known_yet_is_logged_then_named(
    database_url: str, holder: Connection, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder can let go between the runner's try and its look at pg_locks (the next one not in yet): the wait
    is logged at once without a holder, and again when one is seen."""
    looked: list[int] = []
    real = runner.lock_holder

    def lock_holder(conn: Connection) -> dict | None:
        looked.append(1)
        return None if len(looked) == 1 else real(conn)

    monkeypatch.setattr(runner, "lock_holder", lock_holder)
    holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
    release = lambda: holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})  # noqa: E731
    with caplog.at_level(logging.INFO, logger="divbase_migrations.runner"):
        make_runner(database_url, waits=Waits({3: release})).run("expand", "2")
    said = lock_log(caplog)
    assert [(message, pid) for message, pid, _ in said] == [
        (WAITING, None),
        (WAITING, backend_pid(holder)),
        (ACQUIRED, None),
    ]
    assert lock_is_free(database_url)


def test_a_runner_gives_up_on_the_migration_lock_at_its_bound(database_url: str, holder: Connection) -> None:
    holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
    waits = Waits()
    settings = Settings(wait_timeout_ms=0)
    with pytest.raises(
        LockTimeout,
        match=f"another divbase-migrate held the migration lock for more than 0 ms \\(pid {backend_pid(holder)}, ",
    ):  # and who: its holder's pid first
        make_runner(database_url, settings, waits).run("expand", "1")
    assert waits.delays == []
    assert log_rows(database_url) == []


def test_a_blocked_revision_is_retried_with_capped_backoff(
    database_url: str, holder: Connection, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    make_runner(database_url).run("expand", "2")  # past the baseline: the revision itself meets the lock
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # the jitter's upper bound
    holder.execute(text('LOCK TABLE "skipped_vcf_files" IN ACCESS EXCLUSIVE MODE'))
    waits = Waits({2: holder.rollback})  # our lock goes away during the runner's second backoff
    with caplog.at_level(logging.INFO, logger="divbase_migrations.runner"):
        outcome = make_runner(database_url, waits=waits).run("expand", "3")
    assert waits.delays == [1.0, 2.0]  # doubling from 1 s
    said = [(r.getMessage(), r.attempt) for r in caplog.records if "will retry" in r.getMessage()]
    assert said == [("lock timeout; rolled back, will retry", 1), ("lock timeout; rolled back, will retry", 2)]
    assert outcome.retries == 2 and outcome.applied == [REVISION_3, "e0004_task_history_user_index"]
    assert (REVISION_3, "3", "expand", 3) in log_rows(database_url)
    assert lock_is_free(database_url)


def test_a_blocked_revision_fails_after_its_retries_and_applies_nothing(
    database_url: str, holder: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_runner(database_url).run("expand", "2")
    monkeypatch.setattr(random, "uniform", lambda low, high: low)  # the jitter's lower bound
    holder.execute(text('LOCK TABLE "skipped_vcf_files" IN ACCESS EXCLUSIVE MODE'))
    waits = Waits()
    with pytest.raises(LockTimeout) as failure:
        make_runner(database_url, waits=waits).run("expand", "3")
    assert str(failure.value) == f"revision {REVISION_3}: a lock was not granted within 100 ms, 4 attempts"
    assert waits.delays == [0.5, 1.0, 1.5]  # half of 1 s, 2 s, then of 4 s capped at 3 s
    holder.rollback()
    assert REVISION_3 not in [r[0] for r in log_rows(database_url)]
    assert make_runner(database_url).run("expand", "1").after.expand == MANIFEST.release("2").expand
    assert lock_is_free(database_url)


class DeadlockOnce:
    """Another session that deadlocks with the runner's first attempt at release 3's contract (c0003_skip_reason,
    one transaction: ALTER TABLE skipped_vcf_files, then alembic_version's row): it holds alembic_version, waits
    until the runner, holding skipped_vcf_files, queues behind it, then asks for skipped_vcf_files itself. Its
    deadlock_timeout is long, so the runner's own check (1 s) finds the cycle: the runner is the victim."""

    def __init__(self, url: str, holder: Connection) -> None:
        self.url, self.holder = url, holder
        holder.execute(text("SET deadlock_timeout = '60s'"))
        holder.execute(text("LOCK TABLE alembic_version IN EXCLUSIVE MODE"))
        self.thread = threading.Thread(target=self._close_the_cycle)
        self.thread.start()

    def _close_the_cycle(self) -> None:
        with engine(self.url).connect() as watcher:

            def queued() -> int:
                waiting = watcher.execute(
                    text("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'alembic_version'::regclass")
                ).scalar_one()
                watcher.rollback()
                return int(waiting)

            wait_for("the runner queued behind alembic_version", queued, 60, interval=0.05)
        self.holder.execute(text("LOCK TABLE skipped_vcf_files IN ACCESS EXCLUSIVE MODE"))  # the cycle

    def release(self) -> None:
        """Called once the runner was rolled back: our second lock was granted then; give both back."""
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()
        self.holder.rollback()


def test_a_revision_chosen_as_a_deadlock_victim_is_retried(
    database_url: str, holder: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    make_runner(database_url).run("expand", "3")
    make_runner(database_url).run("contract", "2")  # release 3's contract is then c0003_skip_reason alone
    other = DeadlockOnce(database_url, holder)
    waits = Waits({1: other.release})
    with caplog.at_level(logging.INFO, logger="divbase_migrations.runner"):
        outcome = make_runner(database_url, PATIENT, waits).run("contract", "3")
    assert outcome.retries == 1 and outcome.applied == ["c0003_skip_reason"]
    assert ("c0003_skip_reason", "3", "contract", 2) in log_rows(database_url)
    [said] = [r for r in caplog.records if r.getMessage() == "deadlock; rolled back, will retry"]
    assert said.revision == "c0003_skip_reason" and said.attempt == 1
    assert lock_is_free(database_url)


def test_a_deadlock_on_the_last_attempt_fails_the_step_naming_it(database_url: str, holder: Connection) -> None:
    make_runner(database_url).run("expand", "3")
    make_runner(database_url).run("contract", "2")  # release 3's contract is then c0003_skip_reason alone
    other = DeadlockOnce(database_url, holder)
    with pytest.raises(Deadlock) as failure:
        make_runner(database_url, dataclasses.replace(PATIENT, lock_retries=0)).run("contract", "3")
    other.release()
    assert str(failure.value) == "revision c0003_skip_reason: deadlocked with another session, 1 attempts"
    assert failure.value.exit_code == EXIT_TIMEOUT
    assert "c0003_skip_reason" not in [r[0] for r in log_rows(database_url)]
    assert lock_is_free(database_url)


def test_other_failures_are_not_retried(database_url: str) -> None:
    make_runner(database_url).run("expand", "3")
    waits = Waits()
    settings = Settings(statement_timeout_ms=1, lock_retries=3)
    with pytest.raises(StatementTimeout, match="a statement ran longer than statement_timeout"):
        make_runner(database_url, settings, waits).run("expand", "4")
    assert waits.delays == []
    assert lock_is_free(database_url)


def test_contract_before_its_expand_is_refused_and_changes_nothing(database_url: str) -> None:
    make_runner(database_url).run("expand", "1")
    make_runner(database_url).run("contract", "1")
    with engine(database_url).begin() as conn:
        conn.execute(text("DROP TABLE divbase_migration_log"))
    before = state(database_url)
    with pytest.raises(PreconditionFailed, match=r"^contract of release 2 must follow its expand: release 2 needs"):
        make_runner(database_url).run("contract", "2")
    assert_unchanged(database_url, before)
    assert lock_is_free(database_url)


def test_an_expand_of_an_older_release_after_a_newer_contract_is_refused(database_url: str) -> None:
    make_runner(database_url).run("expand", "2")
    make_runner(database_url).run("contract", "2")
    before = state(database_url)
    with pytest.raises(PreconditionFailed, match="removed what release 1 uses"):
        make_runner(database_url).run("expand", "1")
    with pytest.raises(PreconditionFailed, match="must follow its expand: contract revision"):
        make_runner(database_url).run("contract", "1")
    assert_unchanged(database_url, before)


def test_an_expand_of_an_older_release_before_any_contract_changes_nothing(database_url: str) -> None:
    make_runner(database_url).run("expand", "3")
    outcome = make_runner(database_url).run("expand", "2")
    assert outcome.applied == [] and outcome.after.expand == MANIFEST.release("3").expand


def test_a_refused_step_leaves_no_trace(database_url: str) -> None:
    """Only a step that will apply something creates the log table: a refused contract on an empty database
    changes nothing at all."""
    before = state(database_url)
    with pytest.raises(PreconditionFailed):
        make_runner(database_url).run("contract", "1")
    assert_unchanged(database_url, before)
    assert before[0]["tables"] == {}


def test_an_unknown_step_is_a_programming_error(database_url: str) -> None:
    with pytest.raises(ValueError, match="unknown step 'sideways'"):
        make_runner(database_url).run("sideways", "1")
    assert lock_is_free(database_url)


def test_runner_settings_reach_the_session(database_url: str) -> None:
    settings = Settings(lock_timeout_ms=1234, statement_timeout_ms=5678)
    with runner.make_engine(make_url(database_url), settings).connect() as conn:
        assert conn.execute(text("SHOW lock_timeout")).scalar() == "1234ms"
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "5678ms"
        assert conn.execute(text("SHOW application_name")).scalar() == "divbase-migrate"


def test_a_lock_wait_never_sleeps_past_its_bound(database_url: str, holder: Connection) -> None:
    holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
    waits = Waits()  # returns at once: the runner polls until its own deadline passes
    with pytest.raises(LockTimeout, match="held the migration lock for more than 300 ms"):
        make_runner(database_url, Settings(wait_timeout_ms=300), waits).run("expand", "1")
    assert waits.delays[:2] == [0.1, 0.2]
    assert all(0 <= delay <= 0.3 for delay in waits.delays), waits.delays


def test_a_failing_revision_is_not_retried(database_url: str) -> None:
    make_runner(database_url).run("expand", "2")
    with engine(database_url).begin() as conn:
        conn.execute(text("DROP TABLE skipped_vcf_files CASCADE"))
    waits = Waits()
    with pytest.raises(MigrationFailed) as failure:
        make_runner(database_url, FAST, waits).run("expand", "3")
    assert str(failure.value).startswith(
        f'revision {REVISION_3}: UndefinedTable: relation "skipped_vcf_files" does not exist'
    )
    assert waits.delays == []
    assert lock_is_free(database_url)


def test_a_step_with_nothing_to_do_leaves_no_trace(database_url: str) -> None:
    """Only a step that applies something creates the log table (and compares an adopted schema first)."""
    make_runner(database_url).run("expand", "1")
    with engine(database_url).begin() as conn:
        conn.execute(text("DROP TABLE divbase_migration_log"))
    outcome = make_runner(database_url).run("expand", "1")
    assert outcome.applied == [] and outcome.retries == 0
    with engine(database_url).connect() as conn:
        assert not inspect(conn).has_table("divbase_migration_log")


def test_a_drifted_database_at_the_baseline_is_refused_in_process(database_url: str) -> None:
    make_runner(database_url).run("expand", "1")
    with engine(database_url).begin() as conn:
        conn.execute(text('CREATE INDEX ix_hand_made ON "user" (id)'))
        conn.execute(text("DROP TABLE divbase_migration_log"))  # as DivBase's own migrator leaves it
    before = state(database_url)
    with pytest.raises(SchemaDrift, match="ix_hand_made"):
        make_runner(database_url).run("expand", "2")
    assert_unchanged(database_url, before)
    assert lock_is_free(database_url)


def test_lock_waits_of_the_baseline_check_count_as_retries(
    database_url: str, holder: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_runner(database_url).run("expand", "1")  # at the baseline: the next expand compares the schema first
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    holder.execute(text('LOCK TABLE "user" IN ACCESS EXCLUSIVE MODE'))  # the catalog read waits on it
    waits = Waits({2: holder.rollback})
    outcome = make_runner(database_url, waits=waits).run("expand", "2")
    assert outcome.retries == 2 and outcome.applied == ["e0002_user_display_name"]


def test_the_runner_reads_the_database_with_its_own_manifest(database_url: str) -> None:
    """A database at an older revision of the trunk is named with the history of the manifest the runner holds."""
    assert MANIFEST.baseline is not None
    older = next(iter(MANIFEST.baseline.history))
    manifest = dataclasses.replace(
        MANIFEST,
        baseline=dataclasses.replace(
            MANIFEST.baseline, history={older: "an older trunk revision"}, upgrade_hint="finish that history first"
        ),
    )
    with engine(database_url).begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)"))
        conn.execute(text("INSERT INTO alembic_version VALUES (:r)"), {"r": older})
    with pytest.raises(
        BehindBaseline, match=f"at revision {older} \\(an older trunk revision\\).*finish that history first"
    ):
        Runner(make_url(database_url), manifest, FAST, sleep=Waits()).run("expand", "1")


# --- the approval digest (`--expect-digest`): the SQL about to run must be the approved plan's, or nothing runs -------
# (test_expect_digest.py runs the same through divbase-migrate; these call the runner, where a mutant is seen)
OTHER_DIGEST = "sha256:" + "ab" * 32


def test_the_approved_plan_runs_and_says_so(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    make_runner(database_url).run("expand", "2")
    digest = approved_digest(database_url, "contract", "2")
    with caplog.at_level(logging.INFO, logger="divbase_migrations.runner"):
        outcome = make_runner(database_url).run("contract", "2", expect_digest=digest)
    assert outcome.applied == ["c0002_user_display_name"]
    [checked] = [r for r in caplog.records if r.getMessage() == "the SQL is the approved plan"]
    assert checked.digest == digest  # type: ignore[attr-defined]


def test_another_digest_is_refused_before_anything_is_applied(database_url: str) -> None:
    make_runner(database_url).run("expand", "2")
    digest = approved_digest(database_url, "contract", "2")
    before = applied_now(database_url)
    rows = log_rows(database_url)
    with pytest.raises(PlanMismatch) as refused:
        make_runner(database_url).run("contract", "2", expect_digest=OTHER_DIGEST)
    assert str(refused.value) == (
        f"the contract of release 2 would run SQL {digest[:19]}, not the approved plan {OTHER_DIGEST[:19]}: the "
        "image or the database changed since the plan was reviewed. Nothing was applied; make a new plan and approve "
        "that one"
    )
    assert refused.value.exit_code == runner.EXIT_PRECONDITION
    assert applied_now(database_url) == before and log_rows(database_url) == rows
    assert lock_is_free(database_url)


def test_a_plan_made_before_the_database_moved_is_refused(database_url: str) -> None:
    """Approved with release 3's contract planned from release 3's expand; someone then contracts release 2 by hand:
    release 3's contract would run less SQL than approved. The plan from where the database is now runs."""
    make_runner(database_url).run("expand", "3")
    stale = approved_digest(database_url, "contract", "3")
    make_runner(database_url).run("contract", "2")
    before = applied_now(database_url)
    with pytest.raises(PlanMismatch, match="not the approved plan"):
        make_runner(database_url).run("contract", "3", expect_digest=stale)
    assert applied_now(database_url) == before
    fresh = approved_digest(database_url, "contract", "3")
    assert fresh != stale
    assert (
        make_runner(database_url).run("contract", "3", expect_digest=fresh).after.contract
        == MANIFEST.release("3").contract
    )


def test_a_digest_is_checked_only_when_the_step_would_apply_something(database_url: str) -> None:
    """Nothing left to run runs no SQL, approved or not: a repeated contract Job with any digest is a no-op; and a
    step run without a digest is not checked at all."""
    make_runner(database_url).run("expand", "2")
    assert make_runner(database_url).run("contract", "2").applied == ["c0002_user_display_name"]
    again = make_runner(database_url).run("contract", "2", expect_digest=OTHER_DIGEST)
    assert again.applied == [] and again.before == again.after
