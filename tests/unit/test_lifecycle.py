"""Deletion and uninstall: phase Terminating while the finalizer runs, a running migration Job is waited for (bounded
by its activeDeadlineSeconds) instead of killed, and the leader's Lease is owned by its pod so it does not outlive
an uninstall."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from divbase_operator import names
from divbase_operator.kube import KubeApi
from divbase_operator.leader import pod_owner_references
from divbase_operator.observed import JOB_ACTIVE, JOB_SUCCEEDED, JobObs, job_from_body
from divbase_operator.planner import EmitEvent, plan_deletion, terminating_status
from divbase_operator.reconciler import Reconciler, Snapshot, Sources
from test_kstatus import PHASES, TERMINATING, as_object, kstatus

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def job(
    name: str = "db-expand-1",
    state: str = JOB_ACTIVE,
    started: str | None = "2026-11-25T11:58:00Z",
    deadline: int | None = 900,
    deleting: bool = False,
) -> JobObs:
    return JobObs(
        name=name,
        step="expand",
        version="2",
        state=state,
        created_at="2026-11-25T11:57:59Z",
        started_at=started,
        active_deadline_seconds=deadline,
        deleting=deleting,
    )


def test_a_running_job_is_waited_for_until_its_deadline() -> None:
    deletion = plan_deletion((job(),), NOW)
    assert deletion.waiting_for == ("db-expand-1",)
    assert deletion.message == (
        "deleted: waiting for expand Job db-expand-1 (release 2; its activeDeadlineSeconds "
        "ends it by 2026-11-25T12:13:00Z) to finish before removing the Jobs and workloads"
    )
    # its completion wakes the operator; the timer only bounds a Job controller that never ends it
    assert deletion.requeue_after == 13 * 60 + names.DELETION_JOB_GRACE_SECONDS


def test_past_its_deadline_and_grace_a_job_no_longer_holds_the_deletion() -> None:
    late = NOW + timedelta(minutes=13, seconds=names.DELETION_JOB_GRACE_SECONDS)
    deletion = plan_deletion((job(),), late)
    assert deletion.waiting_for == () and "db-expand-1 still running past its deadline" in deletion.message


def test_nothing_running_deletes_at_once() -> None:
    jobs = (job(state=JOB_SUCCEEDED), job(name="db-contract-1", deleting=True))
    deletion = plan_deletion(jobs, NOW)
    assert deletion.waiting_for == () and deletion.requeue_after is None
    assert deletion.message == "deleting the migration Jobs and workloads; the database is left as it is"


def test_a_job_without_a_deadline_is_waited_for_without_a_timer() -> None:
    deletion = plan_deletion((job(deadline=None),), NOW)
    assert deletion.waiting_for == ("db-expand-1",) and deletion.requeue_after is None


def test_job_deadline_and_start_come_from_the_job() -> None:
    observed = job_from_body(
        {
            "metadata": {"name": "j"},
            "spec": {"activeDeadlineSeconds": 60},
            "status": {"startTime": "2026-11-25T11:59:30Z", "active": 1},
        }
    )
    assert (observed.active_deadline_seconds, observed.started_at) == (60, "2026-11-25T11:59:30Z")


def test_terminating_status_is_what_kstatus_and_the_plugin_expect() -> None:
    world = PHASES["expanding"][0]()
    status = terminating_status(world.status, "deleted: waiting for ...", world.generation + 1, NOW)
    assert status["phase"] == names.PHASE_TERMINATING and names.PHASE_TERMINATING in names.PHASES
    assert status["observedGeneration"] == world.generation + 1, "the deletion bumped the generation"
    conds = {c["type"]: c for c in status["conditions"]}
    assert (conds[names.COND_READY]["status"], conds[names.COND_READY]["reason"]) == ("False", "Terminating")
    assert conds[names.COND_RECONCILING]["status"] == "True" and conds[names.COND_STALLED]["status"] == "False"
    obj = as_object(world)
    obj["status"] = status
    obj["metadata"]["deletionTimestamp"] = "2026-11-25T12:00:00Z"
    assert kstatus(obj)[0] == TERMINATING
    assert world.status["phase"] == names.PHASE_EXPANDING, "pure: the input is not changed"


# --- the reconciler's finalizer --------------------------------------------------------------------------------------
class FinalizerApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.version = 1

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args))
            self.version += 1
            body = {
                "metadata": {
                    "namespace": "prod",
                    "name": "db",
                    "uid": "u",
                    "resourceVersion": str(self.version),
                    "generation": 2,
                    "finalizers": [names.FINALIZER],
                    "deletionTimestamp": "2026-11-25T12:00:00Z",
                }
            }
            if name == "patch_status":
                body["status"] = args[3]
            return body

        return call


def test_deleting_mid_expand_waits_for_the_job_then_removes_children() -> None:
    world = PHASES["expanding"][0]()
    status = dict(world.status)
    running = dataclasses.replace(
        world.active_job("expand"), started_at="2026-11-25T12:00:00Z", active_deadline_seconds=900, owner_uid="u"
    )  # the resource below is uid u
    jobs = [running]
    snap = Snapshot.from_body(
        {
            "metadata": {
                "namespace": "prod",
                "name": "db",
                "uid": "u",
                "resourceVersion": "1",
                "generation": 2,
                "finalizers": [names.FINALIZER],
                "deletionTimestamp": "2026-11-25T12:00:00Z",
            },
            "spec": world.spec,
            "status": status,
        }
    )
    api = FinalizerApi()
    events: list[EmitEvent] = []
    reconciler = Reconciler(
        api=api,
        sources=Sources(
            databases=lambda key: snap,
            jobs=lambda key: list(jobs),  # type: ignore[arg-type]
            deployments=lambda key: (),
            pods=lambda key: (),
        ),
        clock=lambda: NOW + timedelta(seconds=30),
        post_event=lambda ref, e: events.append(e),
    )

    async def scenario() -> None:
        await reconciler.reconcile_once(("prod", "db"))
        assert [name for name, _ in api.calls] == ["patch_status"], "no Job or Deployment deleted, finalizer kept"
        patched = api.calls[0][1][3]
        assert patched["phase"] == names.PHASE_TERMINATING
        assert (
            f"waiting for expand Job {running.name} (release 2; its activeDeadlineSeconds ends it by "
            "2026-11-25T12:15:00Z) to finish" in events[0].message
        )
        assert events[0].reason == names.EVENT_DELETING
        jobs[0] = dataclasses.replace(running, state=JOB_SUCCEEDED)  # its completion wakes the operator
        await reconciler.reconcile_once(("prod", "db"))
        assert [name for name, _ in api.calls][1:] == ["patch_status", "delete_children", "patch_finalizers"]
        assert api.calls[2][1][1] == [(running.name, running.uid)], "its Job, by name and uid"
        assert api.calls[-1][1][3] == [], "the finalizer released"
        for state in reconciler._states.values():
            if state.timer:
                state.timer.cancel()

    asyncio.run(scenario())


# --- the Lease does not outlive the operator ------------------------------------------------------------------------
def test_the_lease_is_owned_by_the_pod_that_writes_it() -> None:
    env = {"POD_NAME": "divbase-operator-7d9c-x2x", "POD_UID": "pod-uid", "POD_NAMESPACE": "ops"}
    assert pod_owner_references("ops", env) == [
        {"apiVersion": "v1", "kind": "Pod", "name": "divbase-operator-7d9c-x2x", "uid": "pod-uid"}
    ]
    assert pod_owner_references("elsewhere", env) is None, "an owner in another namespace would delete it at once"
    assert pod_owner_references("ops", {"POD_NAMESPACE": "ops"}) is None, "not in a pod"

    api = KubeApi(api_client=object(), lease_owner=pod_owner_references("ops", env))  # type: ignore[arg-type]
    sent: list[tuple[str, str, Any]] = []

    async def request(method: str, path: str, query: Any = None, body: Any = None, content_type: str = "") -> Any:
        sent.append((method, path, body))
        return body

    api._request = request  # type: ignore[method-assign]
    asyncio.run(api.create_lease("ops", "lease", {"holderIdentity": "a"}))
    asyncio.run(api.replace_lease("ops", "lease", "7", {"holderIdentity": ""}))
    for _, _, body in sent:
        assert body["metadata"]["ownerReferences"][0]["uid"] == "pod-uid"
    assert sent[1][2]["metadata"]["resourceVersion"] == "7"
    bare = KubeApi(api_client=object())  # type: ignore[arg-type]
    bare._request = request  # type: ignore[method-assign]
    asyncio.run(bare.create_lease("ops", "lease", {"holderIdentity": "a"}))
    assert "ownerReferences" not in sent[-1][2]["metadata"]
