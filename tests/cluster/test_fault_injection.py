"""Fault injection on the real control plane (issue 8, part 4): a rollout 1 -> 2 of the real DivBase API and worker
is disturbed while its expand Job runs, and must still end Ready at release 2 with the users written at release 1
all there and every revision applied exactly once (one row per revision in `divbase_migration_log`).

To keep the expand step running long enough to be disturbed, the test holds an ACCESS EXCLUSIVE lock on "user":
the runner's drift check of the adopted baseline (it reads every table's definitions), then its ALTER TABLE, waits,
times out (lock_timeout) and retries with backoff until the lock goes.

The cases: the migration pod deleted; the Job deleted (three propagation modes, and after it succeeded);
PostgreSQL restarted; the database Secret removed and restored; the operator killed while a Manual contract awaits
approval and right after it; the operator's watches gone silent (re-opened after --watch-timeout, with a control
run showing nothing moves before); every connection of the operator gone silent, its pooled API connections too;
kube-apiserver restarted (on a cluster of its own).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from divbase_app.rollout import SECRET, database_spec
from divbase_localcluster.cluster import ClusterInfo, LocalCluster
from divbase_localcluster.testing import FreezableProxy, apiserver_tls
from divbase_migrations.testing.postgres import PostgresServer
from divbase_operator import names
from divbase_operator.testing import VENV_BIN, Kube, OperatorProcess, install_crd
from divbase_testsupport import wait_for
from sqlalchemy import Connection, Engine, create_engine, pool, text

DB = "divbase"
TARGET = "2"
# every revision a database installed at release 1 and rolled out to release 2 has applied
REVISIONS = {"9885301b9073", "e0002_user_display_name", "c0002_user_display_name"}  # the baseline, then release 2
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
                conn.execute(
                    text(
                        'INSERT INTO "user" (email, name, hashed_password, is_admin, is_active, is_deleted, '
                        "email_verified, organisation, organisation_role) "
                        "VALUES (:e, :n, '!', false, true, false, true, 'SciLifeLab', 'tester')"
                    ),
                    {"e": email, "n": name},
                )
    finally:
        eng.dispose()


def blocked_runners(database_url: str) -> int:
    """divbase-migrate sessions of this database waiting for a lock: the expand step is mid-run."""
    rows = query(
        database_url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'divbase-migrate' AND wait_event_type = 'Lock'",
    )
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
    return subprocess.run(
        [str(VENV_BIN / "divbase-migrate"), "check", "--release", version],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


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
    jobs = wait_for("the expand Job of release 2", lambda: kube.jobs_by_step(DB).get(("expand", TARGET)), 120)
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
    wait_for("the expand runner waiting for the lock on user", lambda: blocked_runners(database_url) >= 1, 120, 0.5)
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
        wait_for("the first pod gone", lambda: not any(p.metadata.name in first for p in job_pods(kube, job)), 60)
        wait_for("a replacement pod", lambda: [p for p in job_pods(kube, job) if p.metadata.name not in first], 120)
        wait_for("the replacement runner waiting for the lock", lambda: blocked_runners(db_secret) >= 1, 120, 0.5)
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
        wait_for(
            "the operator recreating the Job",
            lambda: kube.batch.read_namespaced_job(job, kube.namespace).metadata.uid != uid,
            120,
        )
        wait_for("a pod of the new Job", lambda: [p for p in job_pods(kube, job) if controller_uid(p) != uid], 120)
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
    wait_for(
        "the expand Job succeeded",
        lambda: (kube.batch.read_namespaced_job(job, kube.namespace).status.succeeded or 0) >= 1,
        180,
    )
    kube.batch.delete_namespaced_job(job, kube.namespace, propagation_policy="Background")
    assert_converged(kube, db_secret)
    for name in [n for names_ in kube.jobs_by_step(DB).values() for n in names_]:
        kube.batch.delete_namespaced_job(name, kube.namespace, propagation_policy="Background")
    wait_for("every Job gone", lambda: not kube.jobs(DB), 60)
    # a spec change that moves no Job: once the operator has reconciled it, it had every chance to (wrongly)
    # recreate a Job
    kube.patch_db_seen(DB, {"spec": {"contract": {"policy": "Delayed", "delaySeconds": 1}}})
    assert kube.jobs(DB) == []
    assert_converged(kube, db_secret)


def test_postgres_restart_during_expand(
    kube: Kube, operator: OperatorProcess, db_secret: str, postgres_server: PostgresServer
) -> None:
    """A restart cuts the runner's connections: it exits 3 (retryable), the Job's next pod applies the revision
    (one transaction, or re-runnable) once. Only this test restarts the shared server, and waits for it."""
    install(kube, db_secret, migrationJob=spec("1", backoffLimit=3)["migrationJob"])
    lock, job = start_blocked_expand(kube, db_secret)
    try:
        postgres_server.restart()
    finally:
        lock.release()
    wait_for("PostgreSQL accepting connections again", lambda: accepts_connections(db_secret), 60, 0.5)

    def settled() -> dict[str, Any] | None:
        db = kube.get_db(DB)
        conds = {c["type"]: c for c in (db.get("status") or {}).get("conditions") or []}
        done = conds.get(names.COND_READY, {}).get("status") == "True" and db["status"].get("currentVersion") == TARGET
        return db if done or conds.get(names.COND_STALLED, {}).get("status") == "True" else None

    db = wait_for("Ready at release 2 or Stalled", settled, 300)
    retried = db["status"].get("currentVersion") != TARGET
    if retried:  # the Job used up its retries while the server was down: the documented way on is a retry
        kube.annotate_db(DB, names.ANNOTATION_RETRY, "after-postgres-restart")
    assert_converged(kube, db_secret)
    assert not retried, "the retry annotation was needed: " + json.dumps(db["status"].get("lastFailure"))
    pods = job_pods(kube, job)
    assert any(p.status.phase == "Failed" for p in pods), [(p.metadata.name, p.status.phase) for p in pods]


def test_secret_removed_and_restored_during_expand(
    kube: Kube, operator: OperatorProcess, db_secret: str, pod_database_url: str
) -> None:
    """With the Secret gone the Job's next pod cannot start (JobPodBlocked, said in status); once it is back the
    pod starts and the rollout completes."""
    install(kube, db_secret)
    lock, job = start_blocked_expand(kube, db_secret)
    try:
        kube.core.delete_namespaced_secret(SECRET, kube.namespace)
        first = [p.metadata.name for p in job_pods(kube, job)]
        kube.core.delete_namespaced_pod(first[0], kube.namespace)
        db = kube.wait_condition(DB, names.COND_READY, status="False", reason=names.REASON_JOB_POD_BLOCKED, timeout=120)
        ready = next(c for c in db["status"]["conditions"] if c["type"] == names.COND_READY)
        assert SECRET in ready["message"], ready
        kube.create_secret(SECRET, {"url": pod_database_url})
        wait_for("the new runner waiting for the lock", lambda: blocked_runners(db_secret) >= 1, 120, 0.5)
    finally:
        lock.release()
        kube.create_secret(SECRET, {"url": pod_database_url})
    assert_converged(kube, db_secret)
    assert step_job_counts(kube) == ONE_JOB_EACH


def test_operator_killed_while_awaiting_contract_approval(
    kube: Kube, operator: OperatorProcess, db_secret: str
) -> None:
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
    wait_for(
        "the approval seen",
        lambda: (
            kube.get_db(DB)["status"].get("phase") != names.PHASE_AWAITING_CONTRACT
            or kube.jobs_by_step(DB).get(("contract", TARGET))
        ),
        60,
        0.05,
    )
    operator.kill()
    operator.start()
    assert_converged(kube, db_secret)
    assert step_job_counts(kube) == ONE_JOB_EACH


# -- the control plane itself ------------------------------------------------------------------------------------
def expanded(kube: Kube) -> bool:
    """The operator has recorded release 2's expand: it saw the Job succeed."""
    return ((kube.get_db(DB).get("status") or {}).get("schema") or {}).get("expandedTo") == TARGET


def watch_reopens(log: str) -> set[str]:
    """Resources whose watch Kopf abandoned for silence (its client timeout or its own inactivity timeout, both
    logged the same way at debug level) and opened again."""
    return set(re.findall(r"Watch-stream for (\S+) in '[^']*' is inactive, reconnecting", log))


WATCHED = {
    f"{names.PLURAL}.{names.VERSION}.{names.GROUP}",
    "jobs.v1.batch",
    "deployments.v1.apps",
    "pods.v1",
    "configmaps.v1",  # the contract plan it republishes when changed (docs/security.md)
    "replicasets.v1.apps",
}  # a workload pod counts only through its ReplicaSet's Deployment (ownership)


def kubeconfig_via(kubeconfig: Path, port: int, path: Path) -> Path:
    """`kubeconfig` with its server moved to 127.0.0.1:`port` (same CA and credentials)."""
    doc = yaml.safe_load(kubeconfig.read_text())
    for entry in doc["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


ProxiedOperator = Callable[[int], tuple[OperatorProcess, FreezableProxy]]


@pytest.fixture
def proxied_operator(cluster: ClusterInfo, namespace: str, tmp_path: Path) -> Iterator[ProxiedOperator]:
    """`start(watch_timeout)`: the operator, at debug level (Kopf logs watch re-opens there), reaching the
    apiserver only through a FreezableProxy that terminates TLS (so it can tell watches apart). Both stop at
    teardown and the operator's log is printed (shown on failure)."""
    started: list[tuple[OperatorProcess, FreezableProxy]] = []
    server = urlsplit(cluster.server)

    def start(watch_timeout: int) -> tuple[OperatorProcess, FreezableProxy]:
        proxy = FreezableProxy(
            (server.hostname or "127.0.0.1", server.port or 443), tls=apiserver_tls(cluster.state_dir / "pki")
        ).start()
        kubeconfig = kubeconfig_via(cluster.kubeconfig, proxy.port, tmp_path / "operator-via-proxy.kubeconfig")
        operator = OperatorProcess(
            str(kubeconfig),
            namespace,
            tmp_path / "operator.log",
            extra_args=("--watch-timeout", str(watch_timeout), "--verbose"),
        )
        started.append((operator, proxy))
        operator.start()
        return operator, proxy

    yield start
    for operator, proxy in started:
        operator.stop()
        proxy.close()
        print(operator.logs()[-20000:])


def silence_watches_mid_expand(kube: Kube, database_url: str, proxy: FreezableProxy) -> float:
    """Expand held by the lock, the operator's watches frozen, then the lock let go: the Job now succeeds unseen.
    Returns the monotonic time of the freeze."""
    lock, _ = start_blocked_expand(kube, database_url)
    try:
        frozen = proxy.freeze(watches_only=True)
        frozen_at = time.monotonic()
    finally:
        lock.release()
    assert frozen >= len(WATCHED), frozen  # one stream per watched resource, maybe idle ones left by earlier watches
    return frozen_at


def test_silent_watch_is_reopened(kube: Kube, proxied_operator: ProxiedOperator, db_secret: str) -> None:
    """The operator's watch streams go silent mid-expand (open, but nothing arrives, as behind a dead NAT), its
    other requests still pass. With --watch-timeout 10 the client abandons a silent watch 15 s after it began,
    Kopf opens a new one, gets the events it missed, and the rollout completes."""
    operator, proxy = proxied_operator(10)
    install(kube, db_secret)
    log_offset = len(operator.logs())
    frozen_at = silence_watches_mid_expand(kube, db_secret, proxy)
    # the log is read once the expand is seen recorded: a re-open that made it possible is in it by then
    seen = wait_for("the operator recording the expand", lambda: expanded(kube) and operator.logs()[log_offset:], 120)
    noticed = time.monotonic() - frozen_at
    # order, not speed: the Job's and pods' watches were re-opened before the expand was recorded
    assert {"jobs.v1.batch", "pods.v1"} <= watch_reopens(seen)
    assert_converged(kube, db_secret)
    assert step_job_counts(kube) == ONE_JOB_EACH
    assert watch_reopens(operator.logs()[log_offset:]) == WATCHED
    # how soon is a figure, not a verdict (2 x 15 s client timeouts at most, vs Kopf's 70 s in the control below)
    print(f"expand noticed {noticed:.1f} s after the freeze")


def test_silent_watch_control_long_watch_timeout(kube: Kube, proxied_operator: ProxiedOperator, db_secret: str) -> None:
    """The control for the case above: with --watch-timeout 3600 nothing re-opens the silent watches soon. The
    expand Job succeeds unseen (the operator acts on watch events only): the expand is recorded only after the
    Job's and pods' watches were re-opened, by Kopf's own inactivity timeout (no event, not even a bookmark, for
    70 s), and the rollout completes: with this Kopf a silent watch ends, whatever --watch-timeout says. How long
    it took is printed (a figure, not a verdict)."""
    operator, proxy = proxied_operator(3600)
    install(kube, db_secret)
    log_offset = len(operator.logs())
    frozen_at = silence_watches_mid_expand(kube, db_secret, proxy)
    job = expand_job(kube)
    wait_for(
        "the expand Job succeeded", lambda: kube.batch.read_namespaced_job(job, kube.namespace).status.succeeded, 60
    )
    # the streams that bring the Job's success had events just before the freeze: not re-opened yet when it
    # succeeded (the Deployments' stream, quiet since the install, may have been: it carries nothing new)
    at_success = operator.logs()[log_offset:]
    assert not watch_reopens(at_success) & {"jobs.v1.batch", "pods.v1"}
    seen = wait_for("the operator recording the expand", lambda: expanded(kube) and operator.logs()[log_offset:], 180)
    noticed = time.monotonic() - frozen_at
    # order, not speed: Job succeeded -> the Job's and pods' watches re-opened -> expand recorded
    assert {"jobs.v1.batch", "pods.v1"} <= watch_reopens(seen)
    assert_converged(kube, db_secret)
    assert step_job_counts(kube) == ONE_JOB_EACH
    print(f"expand noticed {noticed:.1f} s after the freeze (Kopf's inactivity timeout)")


def test_every_connection_silent(kube: Kube, proxied_operator: ProxiedOperator, db_secret: str) -> None:
    """As behind a dead NAT: every connection the operator has goes silent mid-expand, its idle pooled API
    connections too. The watches come back as above; a reconcile that reuses a frozen pooled connection waits for
    KubeApi's read timeout, fails, and is retried on a new connection. (Without that timeout it waited forever,
    stuck in the Deployment's server-side apply, and the rollout never completed.)"""
    _, proxy = proxied_operator(10)
    install(kube, db_secret)
    lock, _ = start_blocked_expand(kube, db_secret)
    try:
        proxy.freeze()
        frozen_at = time.monotonic()
    finally:
        lock.release()
    # two watch client timeouts (15 s each), then a read timeout per frozen pooled connection the reconciler meets
    wait_for("the operator recording the expand", lambda: expanded(kube), 240)
    noticed = time.monotonic() - frozen_at
    assert_converged(kube, db_secret)
    assert step_job_counts(kube) == ONE_JOB_EACH
    print(f"expand noticed {noticed:.1f} s after the freeze")


@pytest.fixture
def own_cluster(cluster_factory: Callable[..., LocalCluster]) -> LocalCluster:
    """A cluster of its own (control plane and node agent, pod IPs apart from the session cluster's) for a test
    that restarts the apiserver, which the session cluster's other users must not see."""
    return cluster_factory(node=True)


def test_apiserver_restarted_during_expand(own_cluster: LocalCluster, database_url: str, tmp_path: Path) -> None:
    """kube-apiserver stopped (SIGTERM, SIGKILL after 10 s: it waits for open watches) and started again while
    the expand Job runs. The operator's watches and requests fail, are retried, and resume: the same operator
    process finishes the rollout."""
    info = own_cluster.info()
    api_client = info.api_client()
    operator = None
    try:
        install_crd(api_client)
        kube = Kube(api_client, "divbase")
        kube.core.create_namespace({"metadata": {"name": kube.namespace}})
        kube.create_secret(SECRET, {"url": info.for_pods(database_url)})
        operator = OperatorProcess(str(info.kubeconfig), kube.namespace, tmp_path / "operator.log")
        operator.start()
        assert operator.proc is not None
        pid = operator.proc.pid
        install(kube, database_url)
        lock, _ = start_blocked_expand(kube, database_url)
        try:
            seconds = own_cluster.restart_component("kube-apiserver")
        finally:
            lock.release()
        assert_converged(kube, database_url)
        assert step_job_counts(kube) == ONE_JOB_EACH
        # the same process throughout (`operator.starts` would only count this test's own start() calls)
        assert operator.proc.poll() is None and operator.proc.pid == pid, "the operator exited"
        # Kopf's watches met the outage (refused connections, then 503/429 while the apiserver started) and retried
        assert re.search(r"Request attempt #1/\d+ failed; will retry: GET \S+\?watch=true", operator.logs())
        print(f"apiserver back after {seconds:.1f} s")
    finally:
        if operator is not None:
            operator.stop()
            print(operator.logs()[-20000:])
        api_client.close()
