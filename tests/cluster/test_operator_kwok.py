"""The real operator against the real control plane (apiserver, Job, Deployment and garbage-collector
controllers), with pods simulated by kwok nodes: Job pods succeed and workload pods run without processes.
This proves the gating, the ordering, restarts and deletion through the real API; the migrations themselves
run in the PostgreSQL integration tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from divbase_localcluster.cluster import ClusterInfo, LocalCluster
from divbase_operator import names
from divbase_operator.testing import Kube, OperatorProcess, Timeline, install_crd
from divbase_testsupport import wait_for
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from bench.common import KWOK_PLACEMENT, kwok_spec, make_namespace

DB = "divbase"


@pytest.fixture(scope="module")
def kwok(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterInfo, client.ApiClient]]:
    cluster = LocalCluster(tmp_path_factory.mktemp("kwok-cluster"))
    info = cluster.up(node=False, kwok_nodes=2)
    api = info.api_client()
    install_crd(api)
    try:
        yield info, api
    finally:
        api.close()
        cluster.down()


@pytest.fixture
def kube(kwok: tuple[ClusterInfo, client.ApiClient], request: pytest.FixtureRequest) -> Kube:
    base = request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40].strip("-")
    ns = f"k-{base}-{uuid.uuid4().hex[:6]}"
    make_namespace(kwok[1], ns)
    return Kube(kwok[1], ns)


@pytest.fixture
def operator(kwok: tuple[ClusterInfo, client.ApiClient], kube: Kube, tmp_path: Path) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(str(kwok[0].kubeconfig), kube.namespace, tmp_path / "operator.log")
    proc.start()
    yield proc
    proc.stop()
    print(proc.logs()[-20000:])  # shown when the test failed


def steps(kube: Kube) -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    for job in kube.jobs(DB):
        key = (job.metadata.labels[names.LABEL_STEP], job.metadata.labels[names.LABEL_VERSION])
        found[key] = found.get(key, 0) + 1
    return found


def test_install_then_upgrade_in_gated_order(kube: Kube, operator: OperatorProcess, kwok: Any) -> None:
    kube.create_db(DB, kwok_spec("1", replicas=2))
    db = kube.wait_condition(DB, names.COND_READY, timeout=120)
    assert db["status"]["currentVersion"] == "1" and names.FINALIZER in db["metadata"]["finalizers"]
    assert steps(kube) == {("expand", "1"): 1, ("contract", "1"): 1}
    timeline = Timeline(kwok[1], kube.namespace, kinds=("Pod", "Job", "Deployment")).start()
    try:
        kube.patch_db(DB, {"spec": {"version": "2"}})
        db = kube.wait_condition(DB, names.COND_READY, timeout=120)
    finally:
        timeline.stop()

    def job(step: str, complete: bool):
        return lambda n, labels, status: (
            labels.get(names.LABEL_STEP) == step
            and labels.get(names.LABEL_VERSION) == "2"
            and (
                not complete
                or any(
                    c.get("type") == "Complete" and c.get("status") == "True" for c in status.get("conditions") or []
                )
            )
        )

    def pod(version: str):
        return lambda n, labels, s: (
            bool(labels.get(names.LABEL_WORKLOAD)) and labels.get(names.LABEL_VERSION) == version
        )

    # each lookup fails the test when its event was never seen: no ordering below can hold on a missing event
    expand_done = timeline.first("Job", "MODIFIED", job("expand", True))
    first_new_pod = timeline.first("Pod", "ADDED", pod("2"))
    last_old_gone = timeline.last("Pod", "DELETED", pod("1"))
    contract_created = timeline.first("Job", "ADDED", job("contract", False))
    assert expand_done < first_new_pod < contract_created, timeline.dump()
    assert last_old_gone < contract_created, timeline.dump()
    assert steps(kube) == {("expand", "1"): 1, ("contract", "1"): 1, ("expand", "2"): 1, ("contract", "2"): 1}
    entry = db["status"]["history"][0]
    assert (entry["fromVersion"], entry["toVersion"], entry["result"]) == ("1", "2", "Succeeded")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(operator.metrics())
        for s in family.samples
    }
    labels = (("database", DB), ("namespace", kube.namespace))
    assert samples[("divbase_rollouts_succeeded_total", labels)] == 2
    assert samples[("divbase_phase", (*labels, ("phase", "Ready")))] == 1


def test_manual_contract_without_a_reviewable_plan_stalls(kube: Kube, operator: OperatorProcess) -> None:
    """kwok's pods "succeed" without running anything, so the plan Job leaves no plan: the operator must not
    treat that as approvable. (The reviewed-plan path itself runs on the local node: test_operator_node.py.)"""
    kube.create_db(DB, kwok_spec("1", contract={"policy": "Manual"}))
    kube.wait_condition(DB, names.COND_READY, timeout=120)
    kube.patch_db(DB, {"spec": {"version": "2"}})
    db = kube.wait_condition(DB, names.COND_STALLED, reason=names.REASON_JOB_FAILED, timeout=120)
    stalled = next(c for c in db["status"]["conditions"] if c["type"] == names.COND_STALLED)
    assert "contract plan Job" in stalled["message"] and "left no plan in its termination message" in stalled["message"]
    assert db["status"]["currentVersion"] == "2"  # the new release serves; only the contract waits
    kube.annotate_db(DB, names.ANNOTATION_APPROVE_CONTRACT, "2")  # approving an unseen plan does nothing
    db = kube.decided_again(DB)
    assert (
        next(c for c in db["status"]["conditions"] if c["type"] == names.COND_STALLED)["message"] == stalled["message"]
    )
    assert ("contract", "2") not in steps(kube) and ("plan", "2") in steps(kube)


@pytest.mark.parametrize("kill_after", ["expand Job created", "workloads moved"])
def test_killed_operator_resumes_without_repeating_a_step(
    kube: Kube, operator: OperatorProcess, kill_after: str
) -> None:
    """SIGKILL right after the operator acted (waiting on objects that persist, not on a transient phase), then
    restart: the rollout completes and every step ran exactly once."""
    kube.create_db(DB, kwok_spec("1"))
    kube.wait_condition(DB, names.COND_READY, timeout=120)
    kube.patch_db(DB, {"spec": {"version": "2"}})
    if kill_after == "expand Job created":
        wait_for("expand Job of release 2", lambda: ("expand", "2") in steps(kube), 60)
    else:
        wait_for(
            "a Deployment at release 2",
            lambda: any(d.metadata.labels.get(names.LABEL_VERSION) == "2" for d in kube.deployments(DB)),
            60,
        )
    operator.kill()
    operator.start()
    kube.wait_condition(DB, names.COND_READY, timeout=120)
    assert kube.get_db(DB)["status"]["currentVersion"] == "2"
    assert steps(kube) == {("expand", "1"): 1, ("contract", "1"): 1, ("expand", "2"): 1, ("contract", "2"): 1}


def test_schema_rejects_bad_resource_with_apiserver_message(kube: Kube) -> None:
    with pytest.raises(ApiException) as caught:
        kube.create_db("bad", kwok_spec("two", contract={"policy": "Delayed"}))
    body = caught.value.body if isinstance(caught.value.body, str) else caught.value.body.decode()
    assert caught.value.status == 422
    assert "spec.version" in body and "delaySeconds is required when policy is Delayed" in body


def test_deleting_the_resource_removes_its_children(kube: Kube, operator: OperatorProcess) -> None:
    kube.create_db(DB, kwok_spec("1"))
    kube.wait_condition(DB, names.COND_READY, timeout=120)
    assert kube.deployments(DB) and kube.jobs(DB)
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


def test_a_foreign_deployment_is_reported_before_anything_runs(kube: Kube, operator: OperatorProcess) -> None:
    """DivBase's own `divbase-api` Deployment (another chart's) is already there: no expand, no contract, a
    Stalled condition naming it; once its owner deletes it, the install goes ahead by itself."""
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{DB}-api",
            "labels": {"app": "divbase-api"},
            "annotations": {"meta.helm.sh/release-name": "divbase"},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "divbase-api"}},
            "template": {
                "metadata": {"labels": {"app": "divbase-api"}},
                "spec": {**KWOK_PLACEMENT, "containers": [{"name": "api", "image": "divbase:0"}]},
            },
        },
    }
    kube.apps.create_namespaced_deployment(kube.namespace, foreign)
    kube.create_db(DB, kwok_spec("1"))
    db = kube.wait_condition(DB, names.COND_STALLED, reason=names.REASON_FOREIGN_DEPLOYMENT, timeout=60)
    stalled = next(c for c in db["status"]["conditions"] if c["type"] == names.COND_STALLED)
    assert stalled["message"].startswith(
        f"Deployment {DB}-api is managed by Helm release divbase: not managed by this DivBaseDatabase, so no step runs"
    ), stalled["message"]
    assert db["status"]["phase"] == names.PHASE_FAILED and not kube.jobs(DB) and "rollout" not in db["status"]
    [event] = [e for e in kube.events(DB) if e.reason == names.EVENT_FOREIGN_DEPLOYMENT]
    assert event.type == "Warning" and event.source.component == names.EVENT_REPORTING_COMPONENT
    untouched = kube.apps.read_namespaced_deployment(f"{DB}-api", kube.namespace)
    assert untouched.metadata.owner_references is None
    assert untouched.spec.selector.match_labels == {"app": "divbase-api"}
    kube.apps.delete_namespaced_deployment(f"{DB}-api", kube.namespace)
    db = kube.wait_condition(DB, names.COND_READY, timeout=120)  # within the 30 s re-check, then the install
    assert steps(kube) == {("expand", "1"): 1, ("contract", "1"): 1}
    assert {d.metadata.owner_references[0].uid for d in kube.deployments(DB)} == {db["metadata"]["uid"]}


def test_deleting_mid_expand_waits_for_the_running_job(kube: Kube, operator: OperatorProcess) -> None:
    """The expand Job's pod cannot be scheduled, so the Job runs until its activeDeadlineSeconds (8 s): the
    deleted resource shows phase Terminating and keeps the Job until the Job controller ended it, then goes."""
    spec = kwok_spec("1", migrationJob={"nodeSelector": {"type": "nowhere"}, "activeDeadlineSeconds": 8})
    kube.create_db(DB, spec)
    wait_for("the expand Job running", lambda: kube.get_db(DB).get("status", {}).get("activeJob"), 60)
    [job] = kube.jobs(DB)
    kube.custom.delete_namespaced_custom_object(names.GROUP, names.VERSION, kube.namespace, names.PLURAL, DB)
    db = kube.wait_condition(DB, names.COND_READY, status="False", reason=names.REASON_TERMINATING, timeout=30)
    assert db["status"]["phase"] == names.PHASE_TERMINATING
    ready = next(c for c in db["status"]["conditions"] if c["type"] == names.COND_READY)
    assert (
        f"waiting for expand Job {job.metadata.name} (release 1; its activeDeadlineSeconds ends it by"
        in ready["message"]
    )
    assert [j.metadata.name for j in kube.jobs(DB) if not j.metadata.deletion_timestamp] == [job.metadata.name]

    def gone() -> bool:
        try:
            kube.get_db(DB)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for("the resource deleted once its Job ended", gone, 60)
    ended = kube.batch.read_namespaced_job(job.metadata.name, kube.namespace) if kube.jobs(DB) else None
    if ended is not None:  # deleted in the background: if still there, it ended by its deadline first
        assert any(c.reason == "DeadlineExceeded" for c in ended.status.conditions or [])
    deleting = [e for e in kube.events(DB) if e.reason == names.EVENT_DELETING]
    assert deleting and deleting[0].source.component == names.EVENT_REPORTING_COMPONENT
