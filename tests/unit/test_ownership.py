"""Children are trusted by ownership, not by label (issue 14, item 6, Deployments): a Deployment is managed,
counted and deleted only when this resource is its controller owner; a name taken by someone else's Deployment
is a clear condition, never a takeover."""

from __future__ import annotations

import dataclasses

from divbase_operator import names
from divbase_operator.observed import DeploymentObs, deployment_from_body
from divbase_operator.planner import ApplyDeployment, DeleteDeployment, EmitEvent
from planner_world import World, base_spec


def _ready() -> World:
    world = World(spec=base_spec("1"))
    world.install("1")
    return world


def _foreign(name: str, version: str = "1", workload: str = "other", owner_uid: str | None = None) -> DeploymentObs:
    """Another team's Deployment that someone labelled as one of ours."""
    return DeploymentObs(name=name, workload=workload, version=version, spec_hash=None, images=("x:1",), generation=1,
                         observed_generation=1, replicas=1, status_replicas=1, updated_replicas=1,
                         available_replicas=1, owner_uid=owner_uid)


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
    assert "db-api" in stalled["message"] and "does not take them over" in stalled["message"]
    assert [a.reason for a in decision.actions if isinstance(a, EmitEvent) and a.type == "Warning"] == \
        [names.REASON_NAME_CONFLICT]
    world.deployments.pop("db-api")  # its owner removes it: the operator creates ours
    decision = world.reconcile()
    assert "db-api" in [a.body["metadata"]["name"] for a in decision.actions if isinstance(a, ApplyDeployment)]
    world.complete_rollouts()
    world.reconcile()
    assert world.status["phase"] == names.PHASE_READY


def test_the_observation_reads_the_controller_reference() -> None:
    meta = {"name": "d", "ownerReferences": [
        {"kind": "ReplicaSet", "uid": "rs", "controller": False},
        {"kind": names.KIND, "uid": "uid-1", "controller": True}]}
    assert deployment_from_body({"metadata": meta}).owner_uid == "uid-1"
    not_controller = {"name": "d", "ownerReferences": [{"kind": names.KIND, "uid": "uid-1"}]}
    assert deployment_from_body({"metadata": not_controller}).owner_uid is None
    other_kind = {"name": "d", "ownerReferences": [{"kind": "Deployment", "uid": "uid-1", "controller": True}]}
    assert deployment_from_body({"metadata": other_kind}).owner_uid is None
    assert dataclasses.replace(_foreign("x"), owner_uid="uid-1").owner_uid == "uid-1"


async def test_deletion_removes_only_the_deployments_the_resource_controls() -> None:
    """The finalizer deletes Jobs by label and Deployments by name, only those this resource is controller of."""
    from divbase_operator.reconciler import Reconciler, Snapshot, Sources

    calls: list[tuple[str, tuple]] = []

    class Api:
        async def delete_children(self, namespace: str, database: str, deployments: list[str]) -> None:
            calls.append(("delete_children", (namespace, database, tuple(deployments))))

        async def patch_finalizers(self, *args: object) -> dict:
            calls.append(("patch_finalizers", args))
            return {"metadata": {"resourceVersion": "3"}}

        async def patch_status(self, *args: object) -> dict:  # phase Terminating, before anything is deleted
            return {**body, "metadata": {**body["metadata"], "resourceVersion": "3"}}

    body = {"metadata": {"namespace": "prod", "name": "db", "uid": "uid-1", "resourceVersion": "2", "generation": 1,
                         "finalizers": [names.FINALIZER], "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {}, "status": {}}
    snap = Snapshot.from_body(body)
    ours = dataclasses.replace(_foreign("db-api", workload="api"), owner_uid="uid-1")
    theirs = _foreign("payments-api", owner_uid="uid-2")
    unowned = _foreign("db-worker")
    sources = Sources(databases=lambda key: snap, jobs=lambda key: (), pods=lambda key: (),
                      deployments=lambda key: (ours, theirs, unowned))
    await Reconciler(api=Api(), sources=sources, post_event=lambda ref, e: None).reconcile_once(("prod", "db"))  # type: ignore[arg-type]
    assert calls[0] == ("delete_children", ("prod", "db", ("db-api",)))
    assert calls[1][0] == "patch_finalizers"
