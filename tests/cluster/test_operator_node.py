"""The operator on the real control plane: real apiserver, Job and Deployment controllers, the local node
running migration pods (`divbase-migrate` against a real PostgreSQL) and workload pods that answer HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from divbase_migrations.runner import ADVISORY_LOCK_KEY
from divbase_operator import names
from divbase_operator.testing import VENV_BIN, Kube, OperatorProcess, Timeline
from divbase_testsupport import free_port, wait_for
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import NullPool, create_engine, text
from sqlalchemy.engine import make_url

DB = "divbase"


def api_workload(replicas: int = 1, deadline: int = 60, broken_release: str | None = None) -> dict[str, Any]:
    """An HTTP server pod per replica; `broken_release` makes that release crash at start (a bad deploy)."""
    script = 'exec python -m http.server --bind "$POD_IP" 8080'
    if broken_release:
        script = f'if [ "$DIVBASE_RELEASE" = "{broken_release}" ]; then echo "release broken" >&2; exit 1; fi; {script}'
    return {
        "name": "api",
        "template": {
            "replicas": replicas,
            "progressDeadlineSeconds": deadline,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "api",
                            "command": ["sh", "-c", script],
                            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                        }
                    ],
                }
            },
        },
    }


def worker_workload() -> dict[str, Any]:
    return {
        "name": "worker",
        "template": {
            "replicas": 1,
            "template": {
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{"name": "worker", "command": ["sh", "-c", "exec sleep 3600"]}],
                }
            },
        },
    }


def db_spec(version: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "version": version,
        "image": "divbase",
        "database": {"secretRef": {"name": "divbase-db"}},
        "workloads": [api_workload(), worker_workload()],
        "migrationJob": {"backoffLimit": 0, "activeDeadlineSeconds": 300},
    }
    spec.update(extra)
    return spec


def _migrate(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DIVBASE_DATABASE_URL": database_url, "DIVBASE_TERMINATION_LOG": os.devnull}
    return subprocess.run(
        [str(VENV_BIN / "divbase-migrate"), *args], capture_output=True, text=True, timeout=60, env=env
    )


def migrate_status(database_url: str) -> dict[str, Any]:
    out = _migrate(database_url, "status")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def migrate_check(database_url: str, version: str) -> subprocess.CompletedProcess[str]:
    return _migrate(database_url, "check", "--version", version)


def install(kube: Kube, version: str = "1", timeout: float = 180, **extra: Any) -> dict[str, Any]:
    kube.create_db(DB, db_spec(version, **extra))
    return kube.wait_condition(DB, names.COND_READY, timeout=timeout)


def plugin(cluster: Any, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl divbase ...` as a user runs it; bounded, so a wait that does not end promptly fails the test."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "divbase_operator.kubectl_plugin",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "-n",
            namespace,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_install_from_empty_database(kube: Kube, operator: OperatorProcess, db_secret: str) -> None:
    db = install(kube)
    status = db["status"]
    assert status["phase"] == names.PHASE_READY and status["currentVersion"] == "1"
    assert {c["type"]: c["status"] for c in status["conditions"]}[names.COND_STALLED] == "False"
    assert sorted(kube.jobs_by_step(DB)) == [("contract", "1"), ("expand", "1")]
    deployments = {d.metadata.name: d for d in kube.deployments(DB)}
    assert set(deployments) == {"divbase-api", "divbase-worker"}
    assert all(d.metadata.owner_references[0].uid == db["metadata"]["uid"] for d in deployments.values())
    assert deployments["divbase-api"].spec.template.spec.containers[0].image == "divbase:1"
    assert migrate_check(db_secret, "1").returncode == 0
    assert names.FINALIZER in db["metadata"]["finalizers"]
    reasons = {e.reason for e in kube.events(DB)}
    assert {
        names.EVENT_ROLLOUT_STARTED,
        names.EVENT_JOB_CREATED,
        names.EVENT_JOB_SUCCEEDED,
        names.EVENT_ROLLOUT_SUCCEEDED,
    } <= reasons
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(operator.metrics())
        for s in family.samples
    }
    labels = (("database", DB), ("namespace", kube.namespace))
    assert samples[("divbase_rollouts_succeeded_total", labels)] == 1
    assert samples[("divbase_phase", (*labels, ("phase", "Ready")))] == 1


def test_upgrade_runs_expand_deploy_contract_in_order(
    kube: Kube, operator: OperatorProcess, db_secret: str, api_client: Any
) -> None:
    install(kube, workloads=[api_workload(replicas=2), worker_workload()])
    timeline = Timeline(api_client, kube.namespace).start()
    try:
        kube.patch_db(DB, {"spec": {"version": "2"}})
        db = kube.wait_condition(DB, names.COND_READY, timeout=240)
    finally:
        timeline.stop()
    jobs = kube.jobs_by_step(DB)
    assert set(jobs) >= {("expand", "2"), ("contract", "2")} and len(jobs[("expand", "2")]) == 1
    expand = kube.batch.read_namespaced_job(jobs[("expand", "2")][0], kube.namespace)
    contract = kube.batch.read_namespaced_job(jobs[("contract", "2")][0], kube.namespace)

    def is_workload_pod(version: str):
        return lambda name, labels, status: (
            labels.get(names.LABEL_WORKLOAD) and labels.get(names.LABEL_VERSION) == version
        )

    def job_done(job_name: str):
        return lambda name, labels, status: name == job_name and (status.get("succeeded") or 0) >= 1

    # each lookup fails the test when its event was never seen: no ordering below can hold on a missing event
    expand_done = timeline.first("Job", "MODIFIED", job_done(expand.metadata.name))
    first_new_pod = timeline.first("Pod", "ADDED", is_workload_pod("2"))
    last_old_pod_gone = timeline.last("Pod", "DELETED", is_workload_pod("1"))
    contract_created = timeline.first("Job", "ADDED", lambda n, labels, s: n == contract.metadata.name)
    assert expand_done < first_new_pod, timeline.dump()
    assert last_old_pod_gone < contract_created, timeline.dump()
    # and the server's own timestamps (one-second resolution) agree
    new_pods = [p for p in kube.workload_pods(DB) if p.metadata.labels[names.LABEL_VERSION] == "2"]
    assert all(p.metadata.creation_timestamp >= expand.status.completion_time for p in new_pods)
    assert not [p for p in kube.workload_pods(DB) if p.metadata.labels[names.LABEL_VERSION] != "2"]
    history = db["status"]["history"][0]
    assert (history["fromVersion"], history["toVersion"], history["result"]) == ("1", "2", "Succeeded")
    assert all(history["steps"][s]["seconds"] is not None for s in ("expand", "deploy", "contract"))
    assert migrate_check(db_secret, "2").returncode == 0
    assert migrate_check(db_secret, "1").returncode != 0, "release 2's contract removed what release 1 used"


def test_failing_expand_leaves_deployments_exactly_as_they_were(
    kube: Kube, operator: OperatorProcess, db_secret: str, pod_database_url: str, cluster: Any
) -> None:
    install(kube)
    before = {d.metadata.name: (d.metadata.resource_version, d.metadata.generation) for d in kube.deployments(DB)}
    unreachable = make_url(db_secret).set(port=free_port()).render_as_string(hide_password=False)
    kube.create_secret("divbase-db", {"url": unreachable})
    # two attempts: the first pod's failure is reported while the Job runs its second
    kube.patch_db(DB, {"spec": {"version": "2", "migrationJob": {"backoffLimit": 1, "activeDeadlineSeconds": 300}}})
    db = kube.wait_condition(DB, names.COND_STALLED, timeout=120)
    failure = db["status"]["lastFailure"]
    assert failure["step"] == "expand" and failure["exitCode"] == 3 and failure["attempts"] == 2, failure
    assert failure["message"].startswith("database unavailable: "), failure
    assert db["status"]["phase"] == names.PHASE_FAILED
    after = {d.metadata.name: (d.metadata.resource_version, d.metadata.generation) for d in kube.deployments(DB)}
    assert after == before
    warnings = [e for e in kube.events(DB) if e.type == "Warning" and e.reason == names.EVENT_JOB_FAILED]
    assert warnings and "expand" in warnings[0].message
    # attempt 1 while the Job goes on; attempt 2 too when its pod's status arrives before the Job's Failed condition
    attempts = sorted((e for e in kube.events(DB) if e.reason == names.EVENT_ATTEMPT_FAILED), key=lambda e: e.message)
    assert 1 <= len(attempts) <= 2, [e.message for e in attempts]
    attempt = attempts[0]
    assert attempt.type == "Warning" and "attempt 1 of 2 failed" in attempt.message, attempt.message
    assert "exit code 3): database unavailable: " in attempt.message and attempt.message.endswith("1 attempt left")
    assert db["status"]["rollout"]["steps"]["expand"]["attempts"][0]["exitCode"] == 3
    assert {(e.source.component, e.reporting_component) for e in kube.events(DB)} == {("divbase-operator",) * 2}
    # the plugin on the real failure: CI's wait fails at once with the runner's words, history and -o json say Failed
    waited = plugin(cluster, kube.namespace, "wait", DB, "--timeout", "10m")  # bounded by the 60 s of plugin()
    assert waited.returncode == 3, (waited.stdout, waited.stderr)
    assert (
        f"divbasedatabase/{DB} failed ({names.REASON_JOB_FAILED}): expand for release 2 failed: database "
        "unavailable: " in waited.stderr
    ), waited.stderr
    history = plugin(cluster, kube.namespace, "history", DB)
    assert history.returncode == 0 and history.stdout.splitlines()[1].split()[:3] == ["1", "2", "Failed"], (
        history.stdout
    )
    shown = plugin(cluster, kube.namespace, "status", DB, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert (document["phase"], document["stalled"], document["ready"]) == (names.PHASE_FAILED, True, False)
    assert document["lastFailure"]["exitCode"] == 3 and document["lastFailure"]["attempts"] == 2
    assert document["rollout"]["toVersion"] == "2" and document["rollout"]["steps"][0]["phase"] == "Failed"
    assert "retry" in document["next"], document["next"]
    # fix the Secret and retry: the rollout completes
    kube.create_secret("divbase-db", {"url": pod_database_url})
    kube.annotate_db(DB, names.ANNOTATION_RETRY, "1")
    kube.wait_condition(DB, names.COND_READY, timeout=180)
    assert len(kube.jobs_by_step(DB)[("expand", "2")]) == 2


def test_a_lock_wait_shows_its_holder_then_the_rollout_completes(
    kube: Kube, operator: OperatorProcess, db_secret: str
) -> None:
    """Another session holds divbase-migrate's advisory lock (a manual run, an orphaned pod): the expand Job's
    runner waits, and the status and one Event name the holder (pid, application, since when), read from the
    runner's log line through the API; once the lock is released the rollout completes."""
    install(kube)
    holder_engine = create_engine(
        db_secret, poolclass=NullPool, connect_args={"application_name": "hand-run-migration"}
    )
    with holder_engine.connect() as holder:
        holder = holder.execution_options(isolation_level="AUTOCOMMIT")
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
        pid = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()
        try:
            kube.patch_db(DB, {"spec": {"version": "2"}})
            db = kube.wait_condition(DB, names.COND_READY, status="False", reason=names.REASON_LOCK_WAIT, timeout=120)
            ready = next(c for c in db["status"]["conditions"] if c["type"] == names.COND_READY)
            job = db["status"]["activeJob"]
            assert ready["message"].startswith(
                f"expand Job {job} is waiting for the migration lock held by pid "
                f"{pid} (application hand-run-migration, connected since "
            ), ready
            waiting = db["status"]["rollout"]["steps"]["expand"]["lockWait"]
            assert (waiting["holderPid"], waiting["holderApplication"]) == (pid, "hand-run-migration"), waiting
            assert waiting["since"] in ready["message"] and waiting["holderSince"] in ready["message"]
            [event] = wait_for(
                "a MigrationLockWait Event",
                lambda: [e for e in kube.events(DB) if e.reason == names.EVENT_LOCK_WAIT],
                30,
            )
            assert event.type == "Normal" and f"held by pid {pid} (application hand-run-migration" in event.message
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
    db = kube.wait_condition(DB, names.COND_READY, timeout=180)
    assert db["status"]["currentVersion"] == "2" and migrate_check(db_secret, "2").returncode == 0
    assert "lockWait" not in db["status"]["history"][0]["steps"]["expand"]
    assert len([e for e in kube.events(DB) if e.reason == names.EVENT_LOCK_WAIT]) == 1, "one Event per wait"
    assert len(kube.jobs_by_step(DB)[("expand", "2")]) == 1, "the Job waited; it did not fail and retry"


def test_a_database_migrated_by_hand_is_labelled_with_the_release_found(
    kube: Kube, operator: OperatorProcess, db_secret: str, cluster: Any
) -> None:
    """Adopting a database that divbase-migrate already took to release 1 (no resource, no workloads): the first
    rollout, to release 2, is labelled with the release its expand found there, not "(empty database)"."""
    for step in ("expand", "contract"):
        done = _migrate(db_secret, step, "--release", "1")
        assert done.returncode == 0, done.stderr
    db = install(kube, version="2")
    [entry] = db["status"]["history"]
    assert (entry.get("fromVersion"), entry["foundVersion"], entry["toVersion"], entry["result"]) == (
        None,
        "1",
        "2",
        names.RESULT_SUCCEEDED,
    ), entry
    assert entry["steps"]["deploy"]["phase"] == "Succeeded" and entry["steps"]["contract"]["phase"] == "Succeeded"
    history = plugin(cluster, kube.namespace, "history", DB)
    assert history.stdout.splitlines()[1].split()[:4] == ["1", "(found)", "2", "Succeeded"], history.stdout
    assert "(empty" not in history.stdout
    succeeded = [e.message for e in kube.events(DB) if e.reason == names.EVENT_ROLLOUT_SUCCEEDED]
    assert succeeded == ["release 2 rolled out (from 1, found in the database)"], succeeded
    assert migrate_check(db_secret, "2").returncode == 0


def test_failing_deploy_rolls_back(kube: Kube, operator: OperatorProcess, db_secret: str) -> None:
    install(kube, workloads=[api_workload(deadline=8, broken_release="2"), worker_workload()])
    kube.patch_db(DB, {"spec": {"version": "2"}})
    db = kube.wait_condition(DB, names.COND_STALLED, timeout=180, reason=names.REASON_ROLLED_BACK)
    assert db["status"]["lastFailure"]["step"] == "deploy"
    assert {d.spec.template.metadata.labels[names.LABEL_VERSION] for d in kube.deployments(DB)} == {"1"}
    wait_for(
        "only release 1 pods",
        lambda: {p.metadata.labels[names.LABEL_VERSION] for p in kube.workload_pods(DB)} == {"1"},
        60,
    )
    assert ("contract", "2") not in kube.jobs_by_step(DB)
    assert migrate_check(db_secret, "1").returncode == 0, "the expanded schema still serves release 1"


def test_manual_contract_waits_for_approval(kube: Kube, operator: OperatorProcess, db_secret: str) -> None:
    install(kube, contract={"policy": "Manual"})
    kube.patch_db(DB, {"spec": {"version": "2"}})
    db = kube.wait_condition(DB, names.COND_READY, status="False", reason=names.REASON_AWAITING_APPROVAL, timeout=180)
    assert db["status"]["phase"] == names.PHASE_AWAITING_CONTRACT
    assert db["status"]["currentVersion"] == "2"
    assert ("contract", "2") not in kube.jobs_by_step(DB)
    # the person approving sees exactly what will run: the plan Job's SQL, published in a ConfigMap
    plan = db["status"]["contractPlan"]
    configmap = kube.core.read_namespaced_config_map(plan["configMap"], kube.namespace)
    assert 'ALTER TABLE "user" DROP COLUMN name' in configmap.data["plan.sql"]
    assert configmap.data["digest"] == plan["digest"] and configmap.data["version"] == "2"
    assert configmap.metadata.owner_references[0].uid == db["metadata"]["uid"]
    assert ("plan", "2") in kube.jobs_by_step(DB)
    kube.annotate_db(DB, names.ANNOTATION_APPROVE_CONTRACT, "1")  # the wrong version approves nothing
    waiting = kube.decided_again(DB)
    assert (
        next(c for c in waiting["status"]["conditions"] if c["type"] == names.COND_READY)["reason"]
        == names.REASON_AWAITING_APPROVAL
    )
    assert ("contract", "2") not in kube.jobs_by_step(DB)
    kube.annotate_db(DB, names.ANNOTATION_APPROVE_CONTRACT, "2@0123456789ab")  # another plan: refused, said so
    refused = kube.wait_condition(DB, names.COND_READY, status="False", reason=names.REASON_PLAN_CHANGED, timeout=60)
    assert "the approval was for plan 0123456789ab" in next(
        c["message"] for c in refused["status"]["conditions"] if c["type"] == names.COND_READY
    )
    assert ("contract", "2") not in kube.jobs_by_step(DB)
    digest = plan["digest"].split(":")[1][:12]
    kube.annotate_db(DB, names.ANNOTATION_APPROVE_CONTRACT, f"2@{digest}")
    kube.wait_condition(DB, names.COND_READY, timeout=120)
    assert ("contract", "2") in kube.jobs_by_step(DB)


@pytest.mark.parametrize("kill_in", [names.PHASE_EXPANDING, names.PHASE_DEPLOYING, names.PHASE_CONTRACTING])
def test_operator_killed_mid_step_converges_with_each_migration_once(
    kube: Kube, operator: OperatorProcess, db_secret: str, kill_in: str
) -> None:
    install(kube)
    kube.patch_db(DB, {"spec": {"version": "2"}})
    kube.wait_phase(DB, kill_in, timeout=180)
    operator.kill()
    operator.start()
    kube.wait_condition(DB, names.COND_READY, timeout=240)
    jobs = kube.jobs_by_step(DB)
    assert {k: len(v) for k, v in jobs.items()} == {
        ("expand", "1"): 1,
        ("contract", "1"): 1,
        ("expand", "2"): 1,
        ("contract", "2"): 1,
    }
    status = migrate_status(db_secret)
    assert migrate_check(db_secret, "2").returncode == 0, status


def test_schema_rejects_bad_resource_with_apiserver_message(kube: Kube) -> None:
    bad = db_spec("two", contract={"policy": "Delayed"})
    with pytest.raises(ApiException) as caught:
        kube.create_db("bad", bad)
    assert caught.value.status == 422
    body = caught.value.body if isinstance(caught.value.body, str) else caught.value.body.decode()
    assert "spec.version" in body and "delaySeconds is required when policy is Delayed" in body


def test_missing_secret_is_a_clear_condition_not_a_crash(kube: Kube, operator: OperatorProcess) -> None:
    kube.create_db(DB, db_spec("1"))
    db = kube.wait_condition(DB, names.COND_READY, status="False", reason=names.REASON_JOB_POD_BLOCKED, timeout=120)
    ready = next(c for c in db["status"]["conditions"] if c["type"] == names.COND_READY)
    assert "divbase-db" in ready["message"], ready
    assert operator.proc is not None and operator.proc.poll() is None, "the operator is still running"


def test_deleting_the_resource_removes_children_not_the_database(
    kube: Kube, operator: OperatorProcess, db_secret: str
) -> None:
    install(kube)
    kube.custom.delete_namespaced_custom_object(names.GROUP, names.VERSION, kube.namespace, names.PLURAL, DB)
    wait_for(
        "resource gone",
        lambda: (
            not kube.custom.list_namespaced_custom_object(names.GROUP, names.VERSION, kube.namespace, names.PLURAL)[
                "items"
            ]
        ),
        60,
    )
    wait_for("children gone", lambda: not kube.deployments(DB) and not kube.jobs(DB), 60)
    assert migrate_check(db_secret, "1").returncode == 0, "the database is untouched"
