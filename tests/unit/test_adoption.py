"""Adopting existing workloads: a Deployment of a workload's name that is not ours stops everything before any step
runs (no expand, no contract, no apply), with the way to hand it over; a first rollout on an already migrated
database is labelled with the release its expand found there and runs expand, deploy, contract."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from datetime import timedelta
from typing import Any

import pytest
from divbase_operator import kubectl_plugin as plugin
from divbase_operator import names
from divbase_operator.observed import ForeignDeployment, deployment_from_body, foreign_deployment
from divbase_operator.planner import ApplyDeployment, CreateJob, Decision, EmitEvent, decide, foreign_lookup_needed
from divbase_operator.reconciler import Reconciler, Snapshot, Sources
from planner_world import World, base_spec
from test_kstatus import PHASES, as_object

UID = "uid-1"


def deployment(
    name: str = "db-api",
    labels: dict[str, str] | None = None,
    owner: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "prod", "labels": labels or {}, "annotations": annotations or {}}
    if owner:
        meta["ownerReferences"] = [{"controller": True, **owner}]
    return {"metadata": meta, "spec": {"replicas": 1, "template": {"spec": {"containers": []}}}, "status": {}}


def reconcile_with(world: World, foreign: tuple[ForeignDeployment, ...]) -> Decision:
    """World.reconcile, with Deployments the reconciler found by name that are not ours."""
    world.now += timedelta(seconds=5)
    decision = decide(dataclasses.replace(world.observe(), foreign=foreign), world.now)
    world.log.append(decision)
    world.status = copy.deepcopy(decision.status)
    for action in decision.actions:
        world._apply(action)
    return decision


OURS = {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_DATABASE: "db"}


@pytest.mark.parametrize(
    ("body", "owner"),
    [
        (deployment(owner={"kind": names.KIND, "name": "db", "uid": UID}), None),
        (
            deployment(labels=OURS),
            "carries divbase-operator's labels but no controller ownerReference",
        ),  # not a hand-over
        (deployment(), "has no owner"),
        (
            deployment(labels={names.LABEL_MANAGED_BY: "Helm"}, annotations={"meta.helm.sh/release-name": "divbase"}),
            "is managed by Helm release divbase",
        ),
        (deployment(labels={names.LABEL_MANAGED_BY: "argocd"}), "is managed by argocd"),
        (
            deployment(labels=OURS, owner={"kind": names.KIND, "name": "db", "uid": "old"}),
            "is controlled by DivBaseDatabase db (an earlier resource of this name, uid old)",
        ),
        (
            deployment(labels=OURS, owner={"kind": names.KIND, "name": "other", "uid": "x"}),
            "is controlled by DivBaseDatabase other",
        ),
    ],
)
def test_who_owns_a_deployment(body: dict[str, Any], owner: str | None) -> None:
    verdict = foreign_deployment(body, "db", UID)
    assert (verdict.owner if verdict else None) == owner


def test_a_foreign_deployment_stops_a_first_install_before_anything_runs() -> None:
    world = World(spec=base_spec("4"))
    foreign = (ForeignDeployment("db-api", "is managed by Helm release divbase"),)
    decision = reconcile_with(world, foreign)
    assert not [a for a in decision.actions if isinstance(a, CreateJob | ApplyDeployment)]
    assert world.status["phase"] == names.PHASE_FAILED
    stalled = world.condition(names.COND_STALLED)
    assert (stalled["status"], stalled["reason"]) == ("True", names.REASON_FOREIGN_DEPLOYMENT)
    assert stalled["message"].startswith(
        "Deployment db-api is managed by Helm release divbase: not managed by this "
        "DivBaseDatabase, so no step runs. Hand it over: delete it (kubectl -n prod "
        "delete deployment db-api --cascade=orphan keeps its pods serving until the "
        "operator's own are ready"
    )
    [event] = [a for a in decision.actions if isinstance(a, EmitEvent)]
    assert (event.type, event.reason) == ("Warning", names.EVENT_FOREIGN_DEPLOYMENT)
    assert decision.requeue_after == names.FOREIGN_RECHECK_SECONDS, "its removal sends no event: look again"
    assert "rollout" not in world.status and not world.jobs
    again = reconcile_with(world, foreign)
    assert not [a for a in again.actions if isinstance(a, EmitEvent)], "one Event per distinct message"
    verdict = plugin.wait_verdict(as_object(world))
    assert verdict is not None and verdict.code == plugin.EXIT_FAILED and "ForeignDeployment" in verdict.message

    started = world.reconcile()  # deleted by its owner: the install starts
    assert [a.body["metadata"]["labels"][names.LABEL_STEP] for a in started.actions if isinstance(a, CreateJob)] == [
        "expand"
    ]
    assert world.condition(names.COND_STALLED)["status"] == "False"


def test_a_deployment_controlled_by_someone_else_in_the_watch_stops_the_rollout_too() -> None:
    world = PHASES["ready"][0]()
    name = "db-api"
    body = deployment(
        name,
        labels={**OURS, names.LABEL_WORKLOAD: "api", names.LABEL_VERSION: "1"},
        owner={"kind": names.KIND, "name": "db", "uid": "old"},
    )
    world.deployments[name] = deployment_from_body(body)
    world.set_spec(version="2")
    decision = world.reconcile()
    assert not [a for a in decision.actions if isinstance(a, CreateJob | ApplyDeployment)]
    assert world.condition(names.COND_STALLED)["reason"] == names.REASON_FOREIGN_DEPLOYMENT
    assert (
        "is controlled by DivBaseDatabase db (an earlier resource of this name, uid old)"
        in world.condition(names.COND_STALLED)["message"]
    )


def test_a_running_job_is_not_stopped_by_a_foreign_deployment() -> None:
    world = PHASES["first-install"][0]()
    job = world.active_job("expand")
    decision = reconcile_with(world, (ForeignDeployment("db-api", "has no owner"),))
    assert not [a for a in decision.actions if isinstance(a, CreateJob | ApplyDeployment)]
    world.finish_job("expand")
    reconcile_with(world, (ForeignDeployment("db-api", "has no owner"),))
    assert world.status["rollout"]["steps"]["expand"]["phase"] == "Succeeded", "its result is still recorded"
    assert job.name in world.jobs


def test_when_deployments_are_looked_up() -> None:
    assert foreign_lookup_needed({}, "1"), "before the first rollout"
    world = PHASES["first-install"][0]()
    assert not foreign_lookup_needed(world.status, "1"), "not on every reconcile of the migration steps"
    assert foreign_lookup_needed(world.status, "2"), "before a new rollout starts"
    world.finish_job("expand")
    world.reconcile()
    assert not foreign_lookup_needed(world.status, "1")
    world.finish_job("contract")
    world.reconcile()
    assert foreign_lookup_needed(world.status, "1"), "before a first install creates its workloads"
    assert foreign_lookup_needed(PHASES["ready"][0]().status, "1"), "a deleted workload is looked up before re-creation"
    assert not foreign_lookup_needed(PHASES["expanding"][0]().status, "2")


def test_the_first_rollout_on_a_migrated_database_is_labelled_with_what_it_found() -> None:
    world = World(spec=base_spec("4", contract={"policy": "Manual"}))
    world.reconcile()
    world.finish_job(
        "expand",
        message=json.dumps(
            {"command": "expand", "outcome": "applied", "found": "3", "to": {"expand": "e0005", "contract": "c0003"}}
        ),
    )
    decision = world.reconcile()
    rollout = world.status["rollout"]
    assert rollout["fromVersion"] is None and rollout["foundVersion"] == "3"
    # the database served release 3: deploy before contract, and the contract policy applies
    assert [a for a in decision.actions if isinstance(a, ApplyDeployment)]
    assert not [a for a in decision.actions if isinstance(a, CreateJob)]
    assert rollout["currentStep"] == "deploy"
    world.complete_rollouts()
    world.reconcile()
    world.reconcile()
    assert world.status["phase"] == names.PHASE_AWAITING_CONTRACT
    text = plugin.format_status(as_object(world))
    assert "Rollout:     3 (found in the database) -> 4" in text
    world.annotations[names.ANNOTATION_APPROVE_CONTRACT] = "4"
    world.reconcile()
    world.finish_job("contract")
    world.reconcile()
    assert world.status["phase"] == names.PHASE_READY
    entry = world.status["history"][0]
    assert (entry["fromVersion"], entry["foundVersion"], entry["toVersion"]) == (None, "3", "4")
    assert plugin.format_history(as_object(world)).splitlines()[1].split()[:4] == ["3", "(found)", "4", "Succeeded"]
    succeeded = [
        a
        for d in world.log
        for a in d.actions
        if isinstance(a, EmitEvent) and a.reason == names.EVENT_ROLLOUT_SUCCEEDED
    ]
    assert succeeded[-1].message == "release 4 rolled out (from 3, found in the database)"


def test_an_empty_database_is_still_a_first_install() -> None:
    world = World(spec=base_spec("1"))
    world.reconcile()
    world.finish_job("expand", message=json.dumps({"outcome": "applied", "found": None}))
    decision = world.reconcile()
    assert [a.body["metadata"]["labels"][names.LABEL_STEP] for a in decision.actions if isinstance(a, CreateJob)] == [
        "contract"
    ]
    assert "foundVersion" not in world.status["rollout"]
    assert "(empty database) -> 1" in plugin.format_status(as_object(world))


# --- the reconciler's lookups ----------------------------------------------------------------------------------------
class LookupApi:
    def __init__(self, existing: dict[str, dict[str, Any]]) -> None:
        self.existing, self.gets, self.writes = existing, [], []

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets.append(name)
        return copy.deepcopy(self.existing.get(name))

    def __getattr__(self, name: str) -> Any:
        async def write(*args: Any, **kwargs: Any) -> Any:
            self.writes.append((name, args))
            return {"metadata": {"resourceVersion": str(len(self.writes) + 1)}}

        return write


def test_the_reconciler_reads_missing_deployments_by_name_before_a_rollout() -> None:
    snap = Snapshot.from_body(
        {
            "metadata": {
                "namespace": "prod",
                "name": "db",
                "uid": UID,
                "resourceVersion": "1",
                "generation": 1,
                "finalizers": [names.FINALIZER],
            },
            "spec": base_spec("4"),
            "status": {},
        }
    )
    api = LookupApi({"db-api": deployment(annotations={"meta.helm.sh/release-name": "divbase"})})
    sources = Sources(databases=lambda key: snap, jobs=lambda key: (), deployments=lambda key: (), pods=lambda key: ())
    events: list[EmitEvent] = []
    reconciler = Reconciler(
        api=api,
        sources=sources,  # type: ignore[arg-type]
        post_event=lambda ref, event: events.append(event),
    )
    asyncio.run(reconciler.reconcile_once(("prod", "db")))
    assert [e.reason for e in events] == [names.EVENT_FOREIGN_DEPLOYMENT]
    assert sorted(api.gets) == ["db-api", "db-worker"]
    assert not [w for w, _ in api.writes if w in ("create_job", "apply_deployment")]
    [(_, args)] = [(w, a) for w, a in api.writes if w == "patch_status"]
    stalled = next(c for c in args[3]["conditions"] if c["type"] == names.COND_STALLED)
    assert stalled["reason"] == names.REASON_FOREIGN_DEPLOYMENT and "Helm release divbase" in stalled["message"]
