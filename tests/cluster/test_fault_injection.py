"""Fault injection on the real control plane (issue 8, part 4): a rollout 1 -> 2 of the real DivBase API and worker
is disturbed while its expand Job runs, and must still end Ready at release 2 with the users written at release 1
all there and every revision applied exactly once (one row per revision in `divbase_migration_log`).

To keep the expand step running long enough to be disturbed, the test holds an ACCESS EXCLUSIVE lock on "user":
the runner's ALTER TABLE waits, times out (lock_timeout), rolls back and retries with backoff until the lock goes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from typing import Any

import pytest
from divbase_app.rollout import SECRET, database_spec
from divbase_migrations.testing.postgres import PostgresServer
from divbase_operator import names
from divbase_operator.testing import VENV_BIN, Kube, OperatorProcess, wait_for
from sqlalchemy import Connection, Engine, create_engine, pool, text

DB = "divbase"
TARGET = "2"
# every revision a database installed at release 1 and rolled out to release 2 has applied
REVISIONS = {"e0001_initial_schema", "c0001_contract_base", "e0002_user_display_name", "c0002_user_display_name"}
USERS = {f"user{i}@example.org": f"User {i}" for i in range(5)}


# -- database helpers --------------------------------------------------------------------------------------------
def engine(database_url: str) -> Engine:
    """No pool: a server restart must not leave dead connections behind for the next query."""
    return create_engine(database_url, poolclass=pool.NullPool, connect_args={"connect_timeout": 5})


def query(database_url: str, sql: str) -> list[Any]:
    eng = engine(database_url)
    try:
        with eng.connect() as conn:
            return list(conn.execute(text(sql)).all())
    finally:
        eng.dispose()


def seed_users(database_url: str) -> None:
    """Rows written by release 1 (column `name`): the rollout must carry each to release 2's `display_name`."""
    eng = engine(database_url)
    try:
        with eng.begin() as conn:
            for email, name in USERS.items():
                conn.execute(text("""INSERT INTO "user" (email, name, hashed_password) VALUES (:e, :n, '!')"""),
                             {"e": email, "n": name})
    finally:
        eng.dispose()


def blocked_runners(database_url: str) -> int:
    """divbase-migrate sessions of this database waiting for a lock: the expand step is mid-run."""
    rows = query(database_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND application_name = 'divbase-migrate' AND wait_event_type = 'Lock'")
    return int(rows[0][0])


def accepts_connections(database_url: str) -> bool:
    try:
        return query(database_url, "SELECT 1") == [(1,)]
    except Exception:  # the server is still starting
        return False


class TableLock:
    """Holds ACCESS EXCLUSIVE on "user" in its own transaction, so the expand's ALTER TABLE keeps retrying."""

    def __init__(self, database_url: str) -> None:
        self.engine = engine(database_url)
        self.conn: Connection | None = self.engine.connect()
        self.conn.begin()
        self.conn.execute(text('LOCK TABLE "user" IN ACCESS EXCLUSIVE MODE'))

    def release(self) -> None:
        """Idempotent, and quiet when a server restart already cut the connection (and the lock with it)."""
        if self.conn is not None:
            with contextlib.suppress(Exception):  # closing rolls back; a dead connection has nothing to roll back
                self.conn.close()
            self.conn = None
        self.engine.dispose()


def migrate_check(database_url: str, version: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DIVBASE_DATABASE_URL": database_url, "DIVBASE_TERMINATION_LOG": os.devnull}
    return subprocess.run([str(VENV_BIN / "divbase-migrate"), "check", "--release", version], capture_output=True,
                          text=True, timeout=60, env=env)


# -- cluster helpers ---------------------------------------------------------------------------------------------
def spec(version: str, **migration_job: Any) -> dict[str, Any]:
    body = database_spec(version, replicas=1)
    body["migrationJob"].update(migration_job)
    return body


def install(kube: Kube, database_url: str, **extra: Any) -> None:
    """Release 1 Ready, then the users it wrote."""
    body = spec("1")
    body.update(extra)
    kube.create_db(DB, body)
    kube.wait_condition(DB, names.COND_READY, timeout=240)
    seed_users(database_url)



def expand_job(kube: Kube) -> str:
    jobs = wait_for(lambda: kube.jobs_by_step(DB).get(("expand", TARGET)), 120, "the expand Job of release 2")
    assert len(jobs) == 1, jobs
    return jobs[0]


def job_pods(kube: Kube, job: str) -> list[Any]:
    return kube.core.list_namespaced_pod(kube.namespace, label_selector=f"job-name={job}").items


def controller_uid(pod: Any) -> str | None:
    labels = pod.metadata.labels or {}
    return labels.get("batch.kubernetes.io/controller-uid") or labels.get("controller-uid")


def start_blocked_expand(kube: Kube, database_url: str) -> tuple[TableLock, str]:
    """Lock "user", move to release 2 and wait until the expand Job's runner waits for that lock."""
    lock = TableLock(database_url)
    kube.patch_db(DB, {"spec": {"version": TARGET}})
    job = expand_job(kube)
    wait_for(lambda: blocked_runners(database_url) >= 1, 120, "the expand runner waiting for the lock on user",
             interval=0.5)
    return lock, job


def assert_converged(kube: Kube, database_url: str, timeout: float = 300) -> dict[str, Any]:
    """Ready at release 2, schema serves it, each revision logged once, every user of release 1 intact."""
    db = kube.wait_condition(DB, names.COND_READY, timeout=timeout)
    assert db["status"]["currentVersion"] == TARGET
    check = migrate_check(database_url, TARGET)
    assert check.returncode == 0, check.stdout + check.stderr
    counts = dict(query(database_url, "SELECT revision, count(*) FROM divbase_migration_log GROUP BY revision"))
    assert counts == dict.fromkeys(REVISIONS, 1), counts
    users = dict(query(database_url, 'SELECT email, display_name FROM "user"'))
    assert users == USERS
    return db


def step_job_counts(kube: Kube) -> dict[tuple[str, str], int]:
    """Migration Jobs only: a Manual contract also runs a read-only plan Job, which applies nothing."""
    return {k: len(v) for k, v in kube.jobs_by_step(DB).items() if k[0] in ("expand", "contract")}


ONE_JOB_EACH = {("expand", "1"): 1, ("contract", "1"): 1, ("expand", TARGET): 1, ("contract", TARGET): 1}


# -- the cases ---------------------------------------------------------------------------------------------------
def test_migration_pod_deleted_mid_run(kube: Kube, operator: OperatorProcess, db_secret: str) -> None:
    """The Job controller replaces a deleted pod (backoffLimit 1); the new runner finishes what the first began."""
    install(kube, db_secret)
    lock, job = start_blocked_expand(kube, db_secret)
    try:
        first = [p.metadata.name for p in job_pods(kube, job)]
        assert len(first) == 1, first
        kube.core.delete_namespaced_pod(first[0], kube.namespace)
        wait_for(lambda: not any(p.metadata.name in first for p in job_pods(kube, job)), 60, "the first pod gone")
        wait_for(lambda: [p for p in job_pods(kube, job) if p.metadata.name not in first], 120,
                 "a replacement pod")
        wait_for(lambda: blocked_runners(db_secret) >= 1, 120, "the replacement runner waiting for the lock",
                 interval=0.5)
    finally:
        lock.release()
    assert_converged(kube, db_secret)
    assert step_job_counts(kube) == ONE_JOB_EACH
    status = kube.batch.read_namespaced_job(job, kube.namespace).status
    assert status.succeeded == 1, status


@pytest.mark.parametrize("propagation", ["Background", "Foreground", "Orphan"])
def test_job_deleted_while_running(kube: Kube, operator: OperatorProcess, db_secret: str, propagation: str) -> None:
    """The operator recreates the Job under the same name; an orphaned pod and the new one serialise on the
    advisory lock, so the second finds nothing left to do."""
    install(kube, db_secret)
    lock, job = start_blocked_expand(kube, db_secret)
    try:
        uid = kube.batch.read_namespaced_job(job, kube.namespace).metadata.uid
        kube.batch.delete_namespaced_job(job, kube.namespace, propagation_policy=propagation)
        wait_for(lambda: kube.batch.read_namespaced_job(job, kube.namespace).metadata.uid != uid, 120,
                 "the operator recreating the Job")
        wait_for(lambda: [p for p in job_pods(kube, job) if controller_uid(p) != uid], 120, "a pod of the new Job")
    finally:
        lock.release()
    assert_converged(kube, db_secret)
    assert step_job_counts(kube) == ONE_JOB_EACH


def test_job_deleted_after_success_is_not_rerun(kube: Kube, operator: OperatorProcess, db_secret: str) -> None:
    """A succeeded expand Job removed at once (possibly before the operator recorded it) changes nothing, and
    removing every Job of a Ready resource recreates none."""
    install(kube, db_secret)
    kube.patch_db(DB, {"spec": {"version": TARGET}})
    job = expand_job(kube)
    wait_for(lambda: (kube.batch.read_namespaced_job(job, kube.namespace).status.succeeded or 0) >= 1, 180,
             "the expand Job succeeded")
    kube.batch.delete_namespaced_job(job, kube.namespace, propagation_policy="Background")
    assert_converged(kube, db_secret)
    for name in [n for names_ in kube.jobs_by_step(DB).values() for n in names_]:
        kube.batch.delete_namespaced_job(name, kube.namespace, propagation_policy="Background")
    wait_for(lambda: not kube.jobs(DB), 60, "every Job gone")
    kube.annotate_db(DB, "test/nudge", "after-job-deletion")
    time.sleep(5)  # a negative check: give the operator time to (wrongly) recreate a Job
    assert kube.jobs(DB) == []
    assert_converged(kube, db_secret)


def test_postgres_restart_during_expand(kube: Kube, operator: OperatorProcess, db_secret: str,
                                        postgres_server: PostgresServer) -> None:
    """A restart cuts the runner's connections: it exits 3 (retryable), the Job's next pod applies the revision
    (one transaction, or re-runnable) once. Only this test restarts the shared server, and waits for it."""
    install(kube, db_secret, migrationJob=spec("1", backoffLimit=3)["migrationJob"])
    lock, job = start_blocked_expand(kube, db_secret)
    try:
        postgres_server.restart()
    finally:
        lock.release()
    wait_for(lambda: accepts_connections(db_secret), 60, "PostgreSQL accepting connections again", interval=0.5)

    def settled() -> dict[str, Any] | None:
        db = kube.get_db(DB)
        conds = {c["type"]: c for c in (db.get("status") or {}).get("conditions") or []}
        done = conds.get(names.COND_READY, {}).get("status") == "True" and \
            db["status"].get("currentVersion") == TARGET
        return db if done or conds.get(names.COND_STALLED, {}).get("status") == "True" else None

    db = wait_for(settled, 300, "Ready at release 2 or Stalled")
    retried = db["status"].get("currentVersion") != TARGET
    if retried:  # the Job used up its retries while the server was down: the documented way on is a retry
        kube.annotate_db(DB, names.ANNOTATION_RETRY, "after-postgres-restart")
    assert_converged(kube, db_secret)
    assert not retried, "the retry annotation was needed: " + json.dumps(db["status"].get("lastFailure"))
    pods = job_pods(kube, job)
    assert any(p.status.phase == "Failed" for p in pods), [(p.metadata.name, p.status.phase) for p in pods]


def test_secret_removed_and_restored_during_expand(kube: Kube, operator: OperatorProcess, db_secret: str) -> None:
    """With the Secret gone the Job's next pod cannot start (JobPodBlocked, said in status); once it is back the
    pod starts and the rollout completes."""
    install(kube, db_secret)
    lock, job = start_blocked_expand(kube, db_secret)
    try:
        kube.core.delete_namespaced_secret(SECRET, kube.namespace)
        first = [p.metadata.name for p in job_pods(kube, job)]
        kube.core.delete_namespaced_pod(first[0], kube.namespace)
        db = kube.wait_condition(DB, names.COND_READY, status="False", reason=names.REASON_JOB_POD_BLOCKED,
                                 timeout=120)
        ready = next(c for c in db["status"]["conditions"] if c["type"] == names.COND_READY)
        assert SECRET in ready["message"], ready
        kube.create_secret(SECRET, {"url": db_secret})
        wait_for(lambda: blocked_runners(db_secret) >= 1, 120, "the new runner waiting for the lock", interval=0.5)
    finally:
        lock.release()
        kube.create_secret(SECRET, {"url": db_secret})
    assert_converged(kube, db_secret)
    assert step_job_counts(kube) == ONE_JOB_EACH


def test_operator_killed_while_awaiting_contract_approval(kube: Kube, operator: OperatorProcess,
                                                          db_secret: str) -> None:
    """Approval given while no operator runs: the restarted one sees it and runs the contract once."""
    install(kube, db_secret, contract={"policy": "Manual"})
    kube.patch_db(DB, {"spec": {"version": TARGET}})
    kube.wait_phase(DB, names.PHASE_AWAITING_CONTRACT, timeout=240)
    operator.kill()
    kube.annotate_db(DB, names.ANNOTATION_APPROVE_CONTRACT, TARGET)
    operator.start()
    assert_converged(kube, db_secret)
    assert step_job_counts(kube) == ONE_JOB_EACH


def test_operator_killed_right_after_approval(kube: Kube, operator: OperatorProcess, db_secret: str) -> None:
    """Killed in the instant after the approval (the contract Job may or may not exist yet): still one Job."""
    install(kube, db_secret, contract={"policy": "Manual"})
    kube.patch_db(DB, {"spec": {"version": TARGET}})
    kube.wait_phase(DB, names.PHASE_AWAITING_CONTRACT, timeout=240)
    kube.annotate_db(DB, names.ANNOTATION_APPROVE_CONTRACT, TARGET)
    wait_for(lambda: kube.get_db(DB)["status"].get("phase") != names.PHASE_AWAITING_CONTRACT
             or kube.jobs_by_step(DB).get(("contract", TARGET)), 60, "the approval seen", interval=0.05)
    operator.kill()
    operator.start()
    assert_converged(kube, db_secret)
    assert step_job_counts(kube) == ONE_JOB_EACH
