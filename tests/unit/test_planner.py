"""The rollout state machine, scenario by scenario, on the pure planner (no cluster)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest
from divbase_operator import names
from divbase_operator.observed import JOB_ACTIVE, JOB_FAILED, ForeignChild, PodObs
from divbase_operator.planner import ApplyConfigMap, ApplyDeployment, CreateJob, DeleteDeployment, EmitEvent
from planner_world import World, base_spec, workload


def actions_of(decision, kind):
    return [a for a in decision.actions if isinstance(a, kind)]


def events(decision, reason=None):
    return [a for a in actions_of(decision, EmitEvent) if reason is None or a.reason == reason]


def ready_world(version: str = "1", **spec) -> World:
    world = World(spec=base_spec(version, **spec))
    world.install(version)
    return world


def test_first_install_migrates_fully_before_creating_workloads():
    world = World(spec=base_spec("1"))
    first = world.reconcile()
    [create] = actions_of(first, CreateJob)
    assert create.body["metadata"]["labels"][names.LABEL_STEP] == "expand"
    assert create.body["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/divbase:1"
    assert not actions_of(first, ApplyDeployment)
    assert world.status["phase"] == names.PHASE_EXPANDING
    assert world.condition(names.COND_RECONCILING)["status"] == "True"
    assert world.condition(names.COND_READY)["status"] == "False"

    world.finish_job("expand")
    second = world.reconcile()
    assert [a.body["metadata"]["labels"][names.LABEL_STEP] for a in actions_of(second, CreateJob)] == ["contract"]
    assert not actions_of(second, ApplyDeployment)

    world.finish_job("contract")
    third = world.reconcile()
    applied = actions_of(third, ApplyDeployment)
    assert sorted(a.body["metadata"]["name"] for a in applied) == ["db-api", "db-worker"]
    assert world.status["phase"] == names.PHASE_DEPLOYING

    world.complete_rollouts()
    world.reconcile()
    assert world.status["phase"] == names.PHASE_READY
    assert world.status["currentVersion"] == "1"
    assert world.condition(names.COND_READY)["status"] == "True"
    assert world.condition(names.COND_RECONCILING)["status"] == "False"
    assert world.condition(names.COND_STALLED)["status"] == "False"
    assert world.status["schema"] == {"expandedTo": "1", "contractedTo": "1"}
    [entry] = world.status["history"]
    assert entry["toVersion"] == "1" and entry["fromVersion"] is None and entry["result"] == "Succeeded"


def test_upgrade_expand_then_deploy_then_contract_in_order():
    world = ready_world("1")
    world.set_spec(version="2")
    decision = world.reconcile()
    [job] = actions_of(decision, CreateJob)
    assert job.body["metadata"]["labels"][names.LABEL_STEP] == "expand"
    assert job.body["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/divbase:2"
    assert not actions_of(decision, ApplyDeployment), "workloads must not move before expand succeeded"
    assert world.status["rollout"]["fromVersion"] == "1"

    # while expand runs, any number of reconciles keeps workloads on release 1
    for _ in range(3):
        assert not actions_of(world.reconcile(), ApplyDeployment)
    assert {d.version for d in world.deployments.values()} == {"1"}

    assert world.status["activeJob"] == job.body["metadata"]["name"]
    world.finish_job("expand", message='{"outcome":"ok","to":{"expand":"e4"}}')
    decision = world.reconcile()
    assert "activeJob" not in world.status, "a finished Job is no longer reported as active"
    moved = actions_of(decision, ApplyDeployment)
    assert {a.body["metadata"]["labels"][names.LABEL_VERSION] for a in moved} == {"2"}
    assert all(
        c["image"] == "registry.example/divbase:2"
        for a in moved
        for c in a.body["spec"]["template"]["spec"]["containers"]
    )
    assert world.status["schema"]["revisions"] == {"expand": "e4"}
    assert not actions_of(decision, CreateJob)

    world.start_rollouts()  # pods of release 1 still running
    decision = world.reconcile()
    assert not actions_of(decision, CreateJob), "contract must wait until no pod of the old release is left"
    assert "pod(s) of other releases left" in world.condition(names.COND_RECONCILING)["message"]

    world.complete_rollouts()
    decision = world.reconcile()
    [contract] = actions_of(decision, CreateJob)
    assert contract.body["metadata"]["labels"][names.LABEL_STEP] == "contract"
    assert world.status["currentVersion"] == "2"
    assert world.status["phase"] == names.PHASE_CONTRACTING

    world.finish_job("contract")
    world.reconcile()
    assert world.status["phase"] == names.PHASE_READY
    assert world.status["history"][0]["fromVersion"] == "1"
    assert world.status["history"][0]["toVersion"] == "2"
    assert set(world.status["history"][0]["steps"]) == {"expand", "deploy", "contract"}


def test_failed_expand_stalls_and_leaves_workloads_untouched():
    world = ready_world("1")
    before = dict(world.deployments)
    world.set_spec(version="2")
    world.reconcile()
    world.finish_job(
        "expand", ok=False, exit_code=4, message='{"outcome":"failed","error":"lock_timeout: table user is locked"}'
    )
    decision = world.reconcile()
    assert world.deployments == before
    assert not actions_of(decision, ApplyDeployment)
    assert world.status["phase"] == names.PHASE_FAILED
    stalled = world.condition(names.COND_STALLED)
    assert stalled["status"] == "True" and "lock_timeout" in stalled["message"]
    failure = world.status["lastFailure"]
    assert failure["step"] == "expand" and failure["exitCode"] == 4
    assert failure["message"] == "lock_timeout: table user is locked"
    assert [e.type for e in events(decision, names.EVENT_JOB_FAILED)] == ["Warning"]
    assert world.condition(names.COND_SCHEMA_EXPANDED)["reason"] == names.REASON_JOB_FAILED

    # no retry without a new annotation value: nothing is created, however often we reconcile
    for _ in range(3):
        assert not actions_of(world.reconcile(), CreateJob)


def test_retry_annotation_creates_a_new_job_once():
    world = ready_world("1")
    world.set_spec(version="2")
    world.reconcile()
    failed = world.finish_job("expand", ok=False, exit_code=1)
    world.reconcile()
    world.annotations[names.ANNOTATION_RETRY] = "attempt-2"
    decision = world.reconcile()
    [job] = actions_of(decision, CreateJob)
    assert job.body["metadata"]["name"] != failed.name
    assert job.body["metadata"]["annotations"][names.ANNOTATION_RETRY_TOKEN] == "attempt-2"
    assert events(decision, names.EVENT_RETRY)
    assert world.condition(names.COND_STALLED)["status"] == "False"
    # the same annotation value does not retry twice
    world.finish_job("expand", ok=False, exit_code=1)
    world.reconcile()
    assert not actions_of(world.reconcile(), CreateJob)


def test_failed_deploy_rolls_back_to_previous_release():
    world = ready_world("1")
    world.set_spec(version="2")
    world.reconcile()
    world.finish_job("expand")
    world.reconcile()
    world.expire_deadline()
    decision = world.reconcile()
    back = actions_of(decision, ApplyDeployment)
    assert back and {a.body["metadata"]["labels"][names.LABEL_VERSION] for a in back} == {"1"}
    assert world.status["phase"] == names.PHASE_ROLLING_BACK
    assert events(decision, names.EVENT_ROLLBACK)[0].type == "Warning"
    world.complete_rollouts()
    world.reconcile()
    assert world.status["phase"] == names.PHASE_FAILED
    assert world.condition(names.COND_STALLED)["reason"] == names.REASON_ROLLED_BACK
    assert world.status["lastFailure"]["step"] == "deploy"
    assert not any(j.step == "contract" and j.version == "2" for j in world.jobs.values()), "no contract after failure"
    assert {d.version for d in world.deployments.values()} == {"1"}


def test_failed_deploy_without_rollback_stalls_in_place():
    world = ready_world("1", rollback={"onDeployFailure": False})
    world.set_spec(version="2")
    world.reconcile()
    world.finish_job("expand")
    world.reconcile()
    world.expire_deadline()
    decision = world.reconcile()
    assert not actions_of(decision, ApplyDeployment)
    assert world.condition(names.COND_STALLED)["reason"] == names.REASON_PROGRESS_DEADLINE


def _to_contract(world: World, version: str = "2") -> None:
    world.set_spec(version=version)
    world.reconcile()
    world.finish_job("expand")
    world.reconcile()
    world.complete_rollouts()


def test_manual_contract_waits_for_approval_of_that_exact_version():
    world = ready_world("1", contract={"policy": "Manual"})
    _to_contract(world)
    [plan_job] = actions_of(world.reconcile(), CreateJob)  # first the plan, for the person approving
    assert plan_job.body["metadata"]["labels"][names.LABEL_STEP] == names.STEP_PLAN
    args = plan_job.body["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["plan", "contract", "--release", "2", "--sql"]
    assert world.condition(names.COND_READY)["reason"] == names.REASON_PLANNING_CONTRACT
    # nothing to review yet: `kubectl wait --for=jsonpath={.status.phase}=AwaitingContract` must not return before
    # the plan's ConfigMap exists (docs/install.md's quick start then reads it)
    assert world.status["phase"] == names.PHASE_CONTRACTING and "contractPlan" not in world.status
    decision = world.reconcile()
    assert not actions_of(decision, CreateJob)
    [configmap] = actions_of(decision, ApplyConfigMap)
    assert configmap.body["data"]["plan.sql"] == world.plan_sql and configmap.body["data"]["version"] == "2"
    assert world.status["contractPlan"]["configMap"] == configmap.body["metadata"]["name"]
    assert world.status["phase"] == names.PHASE_AWAITING_CONTRACT
    assert world.condition(names.COND_READY)["reason"] == names.REASON_AWAITING_APPROVAL
    assert configmap.body["metadata"]["name"] in world.condition(names.COND_READY)["message"]
    assert world.condition(names.COND_STALLED)["status"] == "False"
    assert len(events(decision, names.EVENT_CONTRACT_PLANNED)) == 1
    assert not events(world.reconcile(), names.EVENT_CONTRACT_PLANNED), "the event is sent once"
    world.annotations[names.ANNOTATION_APPROVE_CONTRACT] = "1"  # approving another version does nothing
    assert not actions_of(world.reconcile(), CreateJob)
    world.annotations[names.ANNOTATION_APPROVE_CONTRACT] = "2"
    [job] = actions_of(world.reconcile(), CreateJob)
    assert job.body["metadata"]["labels"][names.LABEL_STEP] == "contract"


def test_delayed_contract_requeues_then_runs():
    world = ready_world("1", contract={"policy": "Delayed", "delaySeconds": 60})
    _to_contract(world)
    decision = world.reconcile()
    assert not actions_of(decision, CreateJob)
    assert decision.requeue_after is not None and 0 < decision.requeue_after <= 60
    assert world.condition(names.COND_SCHEMA_CONTRACTED)["reason"] == names.REASON_CONTRACT_DELAYED
    world.now += timedelta(seconds=61)
    [job] = actions_of(world.reconcile(), CreateJob)
    assert job.body["metadata"]["labels"][names.LABEL_STEP] == "contract"


def test_spec_change_during_expand_finishes_running_job_then_converges():
    world = ready_world("1")
    world.set_spec(version="2")
    world.reconcile()
    running = world.active_job("expand")
    world.set_spec(version="3")
    decision = world.reconcile()
    assert not actions_of(decision, CreateJob) and not actions_of(decision, ApplyDeployment)
    assert world.condition(names.COND_RECONCILING)["reason"] == names.REASON_WAITING_FOR_JOB
    assert world.status["activeJob"] == running.name
    world.finish_job("expand")
    decision = world.reconcile()
    [job] = actions_of(decision, CreateJob)
    assert job.body["metadata"]["labels"][names.LABEL_VERSION] == "3"
    assert world.status["rollout"]["toVersion"] == "3" and world.status["rollout"]["fromVersion"] == "1"
    assert world.status["history"][0]["result"] == "Superseded"
    assert world.status["schema"]["expandedTo"] == "2", "the finished expand of 2 is still recorded"


def test_skipping_versions_runs_one_rollout():
    world = ready_world("1")
    _to_contract(world, "4")
    world.reconcile()
    world.finish_job("contract")
    world.reconcile()
    assert world.status["currentVersion"] == "4"
    assert {j.version for j in world.jobs.values()} == {"1", "4"}


def test_paused_takes_no_action():
    world = World(spec=base_spec("1", paused=True))
    decision = world.reconcile()
    assert decision.actions == []
    assert world.status["phase"] == names.PHASE_PAUSED
    assert world.condition(names.COND_RECONCILING)["reason"] == names.REASON_PAUSED
    world.set_spec(paused=False)
    assert actions_of(world.reconcile(), CreateJob)


def test_invalid_spec_is_stalled_with_field_names():
    world = World(spec=base_spec("one", contract={"policy": "Sometimes"}))
    decision = world.reconcile()
    assert not actions_of(decision, CreateJob)
    stalled = world.condition(names.COND_STALLED)
    assert stalled["status"] == "True" and stalled["reason"] == names.REASON_INVALID_SPEC
    assert "spec.version" in stalled["message"] and "spec.contract.policy" in stalled["message"]
    assert world.status["observedGeneration"] == 1
    assert len(events(decision, names.EVENT_INVALID_SPEC)) == 1
    assert not events(world.reconcile(), names.EVENT_INVALID_SPEC), "an unchanged problem is not re-announced"


def test_downgrade_after_contract_is_refused():
    world = ready_world("1")
    _to_contract(world, "2")
    world.reconcile()
    world.finish_job("contract")
    world.reconcile()
    world.set_spec(version="1")
    decision = world.reconcile()
    assert not decision.actions or all(isinstance(a, EmitEvent) for a in decision.actions)
    assert world.condition(names.COND_STALLED)["reason"] == names.REASON_DOWNGRADE_REFUSED


def test_divbase_prereleases_are_ordered_as_pep_440():
    """v0.1.0a9 -> v0.1.0a10 is an upgrade (string order says otherwise); back to v0.1.0a9 after the contract is a
    downgrade past it, refused; the image tags are the versions as written."""
    world = ready_world("v0.1.0a9")
    _to_contract(world, "v0.1.0a10")
    [contract] = actions_of(world.reconcile(), CreateJob)
    assert contract.body["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/divbase:v0.1.0a10"
    world.finish_job("contract")
    world.reconcile()
    assert world.status["phase"] == names.PHASE_READY
    assert world.status["schema"] == {"expandedTo": "v0.1.0a10", "contractedTo": "v0.1.0a10"}
    world.set_spec(version="0.1.0a9")
    decision = world.reconcile()
    assert not actions_of(decision, CreateJob) and not actions_of(decision, ApplyDeployment)
    stalled = world.condition(names.COND_STALLED)
    assert stalled["reason"] == names.REASON_DOWNGRADE_REFUSED
    assert "spec.version 0.1.0a9 is older than the running release v0.1.0a10" in stalled["message"]


def test_respelling_the_running_release_moves_the_images_without_migrations():
    """0.1.0a9 -> v0.1.0a9 is the same release (no Job), but another image tag: the workloads move to it."""
    world = ready_world("0.1.0a9")
    world.set_spec(version="v0.1.0a9")
    decision = world.reconcile()
    assert not actions_of(decision, CreateJob)
    images = {
        c["image"]
        for a in actions_of(decision, ApplyDeployment)
        for c in a.body["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"registry.example/divbase:v0.1.0a9"}
    world.complete_rollouts()
    world.reconcile()
    assert world.status["phase"] == names.PHASE_READY and world.status["currentVersion"] == "v0.1.0a9"


def test_a_worker_with_its_own_image_moves_with_the_release_after_expand():
    worker = {**base_spec()["workloads"][1], "image": "registry.example/divbase-worker"}
    world = ready_world("1", workloads=[base_spec()["workloads"][0], worker])
    assert world.deployments["db-worker"].images == ("registry.example/divbase-worker:1",)
    world.set_spec(version="2")
    [expand] = actions_of(world.reconcile(), CreateJob)
    assert expand.body["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/divbase:2"
    assert world.deployments["db-worker"].images == ("registry.example/divbase-worker:1",)
    world.finish_job("expand")
    applied = {a.body["metadata"]["name"]: a.body for a in actions_of(world.reconcile(), ApplyDeployment)}
    images = {
        name: [c["image"] for c in body["spec"]["template"]["spec"]["containers"]] for name, body in applied.items()
    }
    assert images == {"db-api": ["registry.example/divbase:2"], "db-worker": ["registry.example/divbase-worker:2"]}


def test_changing_only_a_workload_image_updates_that_deployment():
    world = ready_world("1")
    worker = {**base_spec()["workloads"][1], "image": "registry.example/divbase-worker"}
    world.set_spec(workloads=[base_spec()["workloads"][0], worker])
    decision = world.reconcile()
    assert not actions_of(decision, CreateJob)
    assert [a.body["metadata"]["name"] for a in actions_of(decision, ApplyDeployment)] == ["db-worker"]


def test_downgrade_before_contract_redeploys_without_migrations():
    world = ready_world("1", contract={"policy": "Manual"})
    _to_contract(world, "2")
    world.reconcile()  # waiting for approval
    world.set_spec(version="1")
    decision = world.reconcile()
    assert not actions_of(decision, CreateJob)
    assert {a.body["metadata"]["labels"][names.LABEL_VERSION] for a in actions_of(decision, ApplyDeployment)} == {"1"}
    world.complete_rollouts()
    world.reconcile()
    assert world.status["phase"] == names.PHASE_READY and world.status["currentVersion"] == "1"


def test_restart_after_job_creation_finds_the_same_job():
    """Status lost after creating the Job (operator killed before the status write): no second Job."""
    world = ready_world("1")
    world.set_spec(version="2")
    saved = dict(world.status)
    world.reconcile(persist=False)
    world.status = saved
    assert len([j for j in world.jobs.values() if j.version == "2"]) == 1
    decision = world.reconcile()
    creates = actions_of(decision, CreateJob)
    assert len([j for j in world.jobs.values() if j.version == "2"]) == 1
    assert all(c.body["metadata"]["name"] in world.jobs for c in creates)


def test_blocked_job_pod_is_reported():
    world = World(spec=base_spec("1"))
    world.reconcile()
    job = world.active_job("expand")
    from divbase_operator.observed import PodObs

    world.pods.append(
        PodObs(
            name=f"{job.name}-abc",
            job_name=job.name,
            workload=None,
            version="1",
            owner_uid=job.uid,
            phase="Pending",
            waiting_reason="CreateContainerConfigError",
            waiting_message='secret "divbase-db" not found',
        )
    )
    world.reconcile()
    cond = world.condition(names.COND_READY)
    assert cond["reason"] == names.REASON_JOB_POD_BLOCKED and 'secret "divbase-db" not found' in cond["message"]


def test_workload_removed_from_spec_is_deleted_and_template_change_applied():
    world = ready_world("1")
    spec = base_spec("1")
    spec["workloads"] = [spec["workloads"][0] | {"template": {**spec["workloads"][0]["template"], "replicas": 3}}]
    world.spec = spec
    world.generation += 1
    decision = world.reconcile()
    assert [a.name for a in actions_of(decision, DeleteDeployment)] == ["db-worker"]
    [apply] = actions_of(decision, ApplyDeployment)
    assert apply.body["spec"]["replicas"] == 3
    assert world.condition(names.COND_READY)["status"] == "False"
    world.complete_rollouts()
    world.reconcile()
    assert world.condition(names.COND_READY)["status"] == "True"


@pytest.mark.parametrize("version", ["1", "2.0.1", "10"])
def test_every_decision_carries_kstatus_conditions(version):
    world = World(spec=base_spec(version))
    world.reconcile()
    types = {c["type"] for c in world.status["conditions"]}
    assert set(names.CONDITION_TYPES) <= types
    assert all(c["observedGeneration"] == world.generation for c in world.status["conditions"])


def _awaiting_manual() -> World:
    world = ready_world("1", contract={"policy": "Manual"})
    _to_contract(world)
    world.reconcile()
    world.reconcile()
    assert world.status["phase"] == names.PHASE_AWAITING_CONTRACT
    return world


@pytest.mark.parametrize(
    ("approval", "verdict"),
    [
        ("v0.1.0a9", True),
        ("0.1.0a9", True),
        ("0.1.0-a9", True),
        ("0.1.0a10", None),
        ("latest", None),
        ("0.1.0a9@abcdef12", True),
        ("v0.1.0a9@00000000", "the approval was for plan 00000000, but the contract's plan is now abcdef123456"),
    ],
)
def test_an_approval_names_the_release_in_any_spelling(approval, verdict):
    from divbase_operator.planner import approval_verdict

    assert approval_verdict(approval, "v0.1.0a9", "sha256:abcdef1234567890") == verdict


def test_an_approval_naming_the_plan_runs_the_contract():
    world = _awaiting_manual()
    digest = world.status["contractPlan"]["digest"].split(":")[1]
    world.annotations[names.ANNOTATION_APPROVE_CONTRACT] = f"2@{digest[:12]}"
    [job] = actions_of(world.reconcile(), CreateJob)
    assert job.body["metadata"]["labels"][names.LABEL_STEP] == names.STEP_CONTRACT


def test_an_approval_of_another_plan_is_refused_with_a_clear_condition():
    world = _awaiting_manual()
    world.annotations[names.ANNOTATION_APPROVE_CONTRACT] = "2@0123456789ab"
    assert not actions_of(world.reconcile(), CreateJob)
    ready = world.condition(names.COND_READY)
    assert ready["reason"] == names.REASON_PLAN_CHANGED
    assert "the approval was for plan 0123456789ab" in ready["message"]
    world.annotations[names.ANNOTATION_APPROVE_CONTRACT] = "2@0123"  # too short to name a plan
    world.reconcile()
    assert "at least 8 hex digits" in world.condition(names.COND_READY)["message"]


def test_a_changed_plan_invalidates_an_approval_of_the_old_one():
    world = _awaiting_manual()
    old = world.status["contractPlan"]
    world.annotations[names.ANNOTATION_APPROVE_CONTRACT] = f"2@{old['digest'].split(':')[1][:12]}"
    world.plan_sql = 'ALTER TABLE "user" DROP COLUMN name;\nDROP TABLE skipped_vcf_files;\n'
    world.set_spec(image="registry.example/divbase-rebuilt")  # same release, another image: planned again
    world.reconcile()
    world.reconcile()
    world.reconcile()
    assert world.status["contractPlan"]["digest"] != old["digest"]
    assert world.condition(names.COND_READY)["reason"] == names.REASON_PLAN_CHANGED
    assert not [j for j in world.jobs.values() if j.step == names.STEP_CONTRACT and j.version == "2"]
    assert "DROP TABLE skipped_vcf_files" in world.configmaps[old["configMap"]]["data"]["plan.sql"]


def test_a_failed_plan_stalls_and_the_retry_annotation_plans_again():
    world = ready_world("1", contract={"policy": "Manual"})
    world.plan_sql = None  # the plan Job fails (database unreachable)
    _to_contract(world)
    world.reconcile()
    world.reconcile()
    assert world.condition(names.COND_STALLED)["reason"] == names.REASON_JOB_FAILED
    assert "contract plan Job" in world.condition(names.COND_STALLED)["message"]
    world.plan_sql = "DROP TABLE x;\n"
    world.annotations[names.ANNOTATION_RETRY] = "again"
    world.reconcile()
    world.reconcile()
    assert world.status["phase"] == names.PHASE_AWAITING_CONTRACT
    assert world.status["contractPlan"]["digest"].startswith("sha256:")


# --- the failure message is the runner's own -----------------------------------------------------------------------
FAIL_JOB_TEXT = "Container migrate for pod prod/db-expand-x failed with exit code 2 matching FailJob rule at index 0"
RUNNER_ERROR = "release '9' is not in the manifest (known: 1, 2, 3, 4)"
SUMMARY = json.dumps({"command": "expand", "release": "9", "outcome": "failed", "error": RUNNER_ERROR, "exit_code": 2})


def _fail_by_policy(
    world: World, pod_phase: str = "Failed", exit_code: int | None = 2, message: str | None = SUMMARY, pod: bool = True
) -> None:
    """The expand Job failed through its podFailurePolicy; its pod as the operator sees it (maybe not yet)."""
    job = world.active_job("expand")
    ts = world.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    world.jobs[job.name] = dataclasses.replace(
        job, state=JOB_FAILED, finished_at=ts, reason="PodFailurePolicy", message=FAIL_JOB_TEXT
    )
    if pod:
        world.pods.append(
            PodObs(
                name=f"{job.name}-x",
                job_name=job.name,
                workload=None,
                version=job.version,
                owner_uid=job.uid,
                phase=pod_phase,
                exit_code=exit_code,
                termination_message=message,
                finished_at=ts if exit_code is not None else None,
            )
        )


def _pod_reports(world: World, message: str | None = SUMMARY, exit_code: int = 2) -> None:
    [pod] = [p for p in world.pods if p.job_name and p.exit_code is None]
    world.pods = [p for p in world.pods if p is not pod] + [
        dataclasses.replace(
            pod,
            phase="Failed",
            exit_code=exit_code,
            termination_message=message,
            finished_at=world.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
    ]


def _failed_world() -> World:
    world = ready_world("1")
    world.set_spec(version="2")
    world.reconcile()
    return world


def test_last_failure_is_the_runners_error_not_the_pod_failure_policy_text():
    world = _failed_world()
    _fail_by_policy(world)
    decision = world.reconcile()
    failure = world.status["lastFailure"]
    assert failure["message"] == RUNNER_ERROR and failure["exitCode"] == 2 and failure["reason"] == "PodFailurePolicy"
    [event] = events(decision, names.EVENT_JOB_FAILED)
    assert event.type == "Warning" and RUNNER_ERROR in event.message and "FailJob" not in event.message
    assert RUNNER_ERROR in world.condition(names.COND_STALLED)["message"]


def test_a_failed_job_whose_pod_has_not_reported_yet_waits_for_the_runners_message():
    """The Job's Failed condition can arrive before its pod's terminated status (two watches)."""
    world = _failed_world()
    _fail_by_policy(world, pod_phase="Running", exit_code=None, message=None)
    decision = world.reconcile()
    assert "lastFailure" not in world.status and not events(decision, names.EVENT_JOB_FAILED)
    assert world.status["phase"] == names.PHASE_EXPANDING
    assert 0 < decision.requeue_after <= names.FAILED_POD_GRACE_SECONDS
    assert not actions_of(decision, ApplyDeployment) and not actions_of(decision, CreateJob)
    _pod_reports(world)
    decision = world.reconcile()
    assert world.status["lastFailure"]["message"] == RUNNER_ERROR
    [event] = events(decision, names.EVENT_JOB_FAILED)
    assert RUNNER_ERROR in event.message
    assert world.status["phase"] == names.PHASE_FAILED


def test_a_pod_that_never_reports_falls_back_to_the_jobs_message_then_the_summary_replaces_it():
    world = _failed_world()
    _fail_by_policy(world, pod_phase="Running", exit_code=None, message=None)
    world.reconcile()
    world.now += timedelta(seconds=names.FAILED_POD_GRACE_SECONDS)
    decision = world.reconcile()
    assert world.status["lastFailure"]["message"] == FAIL_JOB_TEXT
    assert [e.message for e in events(decision, names.EVENT_JOB_FAILED) if FAIL_JOB_TEXT in e.message]
    _pod_reports(world)
    decision = world.reconcile()
    assert world.status["lastFailure"]["message"] == RUNNER_ERROR and world.status["lastFailure"]["exitCode"] == 2
    [event] = events(decision, names.EVENT_JOB_FAILED)
    assert event.type == "Warning" and RUNNER_ERROR in event.message
    assert RUNNER_ERROR in world.condition(names.COND_STALLED)["message"]
    assert not events(world.reconcile(), names.EVENT_JOB_FAILED), "announced once"


def test_without_any_pod_the_jobs_condition_message_is_the_failure():
    world = _failed_world()
    _fail_by_policy(world, pod=False)
    decision = world.reconcile()
    assert world.status["lastFailure"]["message"] == FAIL_JOB_TEXT
    assert world.status["lastFailure"]["exitCode"] is None
    assert events(decision, names.EVENT_JOB_FAILED)


def test_a_runner_that_died_before_its_summary_is_reported_by_its_exit_code_never_its_log():
    """Jobs read the termination message from the file only (no log tail: it could carry anything the image
    printed); should a runtime put log lines there anyway, they are not quoted. divbase-migrate writes a summary
    even when its argument parser refuses the command line (tests/unit/test_runner_contract.py)."""
    usage = "usage: divbase-migrate plan [-h] ...\ndivbase-migrate: error: unrecognized arguments: --lock-timeout 5s"
    world = _failed_world()
    _fail_by_policy(world, message=usage)
    world.reconcile()
    assert world.status["lastFailure"]["message"] == "exit code 2, no summary (its last line is not JSON)"


def test_a_failed_plan_job_reports_the_runners_error():
    world = ready_world("1", contract={"policy": "Manual"})
    world.plan_sql = None  # the plan Job fails with a summary saying why
    _to_contract(world)
    world.reconcile()  # the plan Job is created (and fails at once in this world)
    decision = world.reconcile()
    stalled = world.condition(names.COND_STALLED)
    assert stalled["status"] == "True" and "database unavailable: refused" in stalled["message"]
    [event] = events(decision, names.EVENT_JOB_FAILED)
    assert "database unavailable: refused" in event.message


# --- states the real cluster reaches that the happy paths do not -----------------------------------------------------
def test_contract_waits_for_old_pods_still_terminating_behind_complete_deployments():
    """Deployment status stops counting a pod once it is terminating, so both Deployments report their rollout
    complete while pods of release 1 may still serve: the contract must wait for them to be gone."""
    world = ready_world("1")
    world.set_spec(version="2")
    world.reconcile()
    world.finish_job("expand")
    world.reconcile()
    world.complete_rollouts(terminating=True)
    assert all(d.rollout_complete for d in world.deployments.values())
    leaving = [p for p in world.pods if p.workload and p.version == "1"]
    assert leaving and all(p.deleting for p in leaving)
    decision = world.reconcile()
    assert not actions_of(decision, CreateJob), "contract started while pods of release 1 were terminating"
    assert world.status["rollout"]["steps"]["deploy"]["phase"] == "Running"
    assert f"{len(leaving)} pod(s) of other releases left" in world.condition(names.COND_RECONCILING)["message"]
    world.finish_terminating()
    [contract] = actions_of(world.reconcile(), CreateJob)
    assert contract.body["metadata"]["labels"][names.LABEL_STEP] == names.STEP_CONTRACT


def test_switching_manual_to_auto_while_the_plan_job_runs_waits_for_it():
    """The plan Job of a Manual contract still runs when the policy becomes Auto: the contract Job waits for it."""
    world = ready_world("1", contract={"policy": "Manual"})
    world.auto_plan = False
    _to_contract(world)
    [plan] = actions_of(world.reconcile(), CreateJob)
    assert plan.body["metadata"]["labels"][names.LABEL_STEP] == names.STEP_PLAN
    world.set_spec(contract={"policy": "Auto"})
    decision = world.reconcile()
    assert not actions_of(decision, CreateJob), "contract Job started beside the running plan Job"
    assert world.status["activeJob"] == plan.body["metadata"]["name"]
    assert world.condition(names.COND_READY)["reason"] == names.REASON_WAITING_FOR_JOB
    world.finish_plan()
    [contract] = actions_of(world.reconcile(), CreateJob)
    assert contract.body["metadata"]["labels"][names.LABEL_STEP] == names.STEP_CONTRACT


def test_a_failed_job_deleted_by_ttl_is_not_rerun_without_a_new_retry_token():
    """Once the failed Job is gone, its deterministic name no longer holds a retry back: only a new token may."""
    world = ready_world("1")
    world.set_spec(version="2")
    world.reconcile()
    world.finish_job("expand", ok=False, exit_code=1)
    world.reconcile()
    world.annotations[names.ANNOTATION_RETRY] = "attempt-2"
    [retry] = actions_of(world.reconcile(), CreateJob)
    world.finish_job("expand", ok=False, exit_code=1)
    world.reconcile()
    assert world.condition(names.COND_STALLED)["status"] == "True"
    world.ttl_expire()
    world.reconcile()
    world.ttl_gone()
    assert not world.jobs
    for _ in range(2):
        assert not actions_of(world.reconcile(), CreateJob), "retried with the token already used"
    assert world.condition(names.COND_STALLED)["status"] == "True"
    world.annotations[names.ANNOTATION_RETRY] = "attempt-3"
    [again] = actions_of(world.reconcile(), CreateJob)
    assert again.body["metadata"]["name"] != retry.body["metadata"]["name"]


@pytest.mark.parametrize("ok", [True, False], ids=["succeeded", "failed"])
def test_a_job_seen_only_while_ttl_deletes_it_is_recorded_not_created_again(ok: bool):
    """With a short ttlSecondsAfterFinished the first sight of a finished Job can carry its deletionTimestamp: its
    result still counts, and a Job of that name is not created again (that would run the step twice)."""
    world = ready_world("1")
    world.set_spec(version="2")
    world.reconcile()
    job = world.finish_job(
        "expand", ok=ok, exit_code=4, message='{"outcome":"failed","error":"lock_timeout: table user is locked"}'
    )
    world.ttl_expire()
    decision = world.reconcile()
    assert not actions_of(decision, CreateJob)
    assert world.status["rollout"]["steps"]["expand"]["phase"] == ("Succeeded" if ok else "Failed")
    if ok:
        assert {a.body["metadata"]["labels"][names.LABEL_VERSION] for a in actions_of(decision, ApplyDeployment)} == {
            "2"
        }
    else:
        assert world.status["lastFailure"]["job"] == job.name
        assert world.status["lastFailure"]["message"] == "lock_timeout: table user is locked"
        assert world.condition(names.COND_STALLED)["status"] == "True"
    world.ttl_gone()
    assert not actions_of(world.reconcile(), CreateJob)


@pytest.mark.parametrize("propagation", ["Foreground", "Background", "Orphan"])
def test_a_running_job_deleted_by_hand_is_created_again_under_its_name(propagation: str):
    """docs/operator.md, "Job deleted": a migration Job deleted while it runs is created again under the same name,
    however it was deleted. Deleted in the foreground it stays visible, still active, with a deletionTimestamp, until
    its pods are gone: it counts as gone all the same (its pods are being killed), so it is asked for again at once
    (AlreadyExists until it is gone) and created as soon as it is."""
    world = ready_world("1")
    world.set_spec(version="2")
    [first] = actions_of(world.reconcile(), CreateJob)
    name = first.body["metadata"]["name"]
    world.delete_job(name, propagation)
    [again] = actions_of(world.reconcile(), CreateJob)
    assert again.body["metadata"]["name"] == name
    assert world.status["rollout"]["steps"]["expand"]["phase"] == "Running"
    assert world.status["activeJob"] == name
    assert world.condition(names.COND_READY)["reason"] == names.REASON_JOB_RUNNING
    world.ttl_gone()
    if propagation == "Foreground":  # refused as AlreadyExists while the old one was there: now it is created
        assert name not in world.jobs
        [created] = actions_of(world.reconcile(), CreateJob)
        assert created.body["metadata"]["name"] == name
    assert world.jobs[name].state == JOB_ACTIVE and not world.jobs[name].deleting
    world.finish_job("expand")
    world.reconcile()
    assert world.status["rollout"]["steps"]["expand"]["phase"] == "Succeeded"


@pytest.mark.parametrize("propagation", ["Foreground", "Background", "Orphan"])
def test_a_job_deleted_while_it_runs_holds_no_new_release_back(propagation: str):
    """One Job at a time counts the Jobs that run, not one being deleted: a new spec.version starts its rollout at
    once, however the old Job was deleted (an old pod still running serialises with the new Job on the runner's
    advisory lock), where a running Job makes it wait
    (test_spec_change_during_expand_finishes_running_job_then_converges)."""
    world = ready_world("1")
    world.set_spec(version="2")
    [first] = actions_of(world.reconcile(), CreateJob)
    world.delete_job(first.body["metadata"]["name"], propagation)
    world.set_spec(version="3")
    [expand] = actions_of(world.reconcile(), CreateJob)
    assert expand.body["metadata"]["labels"][names.LABEL_STEP] == names.STEP_EXPAND
    assert expand.body["metadata"]["labels"][names.LABEL_VERSION] == "3"
    assert world.status["rollout"]["toVersion"] == "3"
    assert world.status["history"][0]["toVersion"] == "2" and world.status["history"][0]["result"] == "Superseded"
    assert world.condition(names.COND_READY)["reason"] == names.REASON_JOB_RUNNING


def test_a_retry_annotation_set_while_the_job_runs_retries_as_soon_as_it_fails():
    """The token is new when the failure is first seen: the same reconcile records the failure and starts the
    retry Job (no Stalled in between), once."""
    world = ready_world("1")
    world.set_spec(version="2")
    world.reconcile()
    world.annotations[names.ANNOTATION_RETRY] = "early"
    failed = world.finish_job("expand", ok=False, exit_code=1)
    decision = world.reconcile()
    [retry] = actions_of(decision, CreateJob)
    assert retry.body["metadata"]["name"] != failed.name
    assert retry.body["metadata"]["annotations"][names.ANNOTATION_RETRY_TOKEN] == "early"
    assert [e.reason for e in events(decision) if e.reason in (names.EVENT_JOB_FAILED, names.EVENT_RETRY)] == [
        names.EVENT_JOB_FAILED,
        names.EVENT_RETRY,
    ]
    assert world.condition(names.COND_STALLED)["status"] == "False"
    assert world.status["rollout"]["steps"]["expand"]["phase"] == "Running"
    world.finish_job("expand", ok=False, exit_code=1)
    assert not actions_of(world.reconcile(), CreateJob), "the token was used"
    assert world.condition(names.COND_STALLED)["status"] == "True"


def test_a_downgrade_after_a_first_install_contracted_is_refused_before_any_workload_runs():
    """A first install runs its contract before the workloads exist: once it has, no older release can run on the
    schema, though none runs yet (no current release to compare with)."""
    world = World(spec=base_spec("2"))
    world.reconcile()
    world.finish_job("expand")
    world.reconcile()
    world.finish_job("contract")
    world.set_spec(version="1")
    decision = world.reconcile()
    assert not actions_of(decision, ApplyDeployment) and not actions_of(decision, CreateJob)
    stalled = world.condition(names.COND_STALLED)
    assert stalled["status"] == "True" and stalled["reason"] == names.REASON_DOWNGRADE_REFUSED
    assert "older than release 2, whose contract already ran on the schema" in stalled["message"]
    assert [e.type for e in events(decision, names.REASON_DOWNGRADE_REFUSED)] == ["Warning"]
    world.set_spec(version="2")
    world.reconcile()
    world.complete_rollouts()
    world.reconcile()
    assert world.status["phase"] == names.PHASE_READY and world.status["currentVersion"] == "2"


# --- what the mutation run found unjudged (bench/results/mutation.md) ---------------------------------------------
def test_a_finished_rollout_is_finished_once():
    """Reconciles after Ready neither re-finish the rollout (no second history entry, no second event) nor move
    anything."""
    world = ready_world("1")
    [entry] = world.status["history"]
    rollout = dict(world.status["rollout"])
    for _ in range(3):
        decision = world.reconcile()
        assert decision.actions == []
    assert world.status["history"] == [entry] and world.status["rollout"] == rollout
    assert world.status["phase"] == names.PHASE_READY


def test_the_first_expand_job_carries_an_empty_retry_token():
    world = World(spec=base_spec("1"))
    [create] = actions_of(world.reconcile(), CreateJob)
    annotations = create.body["metadata"]["annotations"]
    assert annotations[names.ANNOTATION_RETRY_TOKEN] == ""
    assert all(isinstance(v, str) for v in annotations.values()), "the API server accepts string annotations only"
    assert world.status["rollout"]["retryToken"] == ""


def test_a_retry_token_of_an_earlier_rollout_does_not_retry_the_next_one():
    world = ready_world("1")
    world.set_spec(version="2")
    world.reconcile()
    world.finish_job("expand", ok=False, exit_code=1)
    world.reconcile()
    world.annotations[names.ANNOTATION_RETRY] = "r1"
    world.reconcile()
    world.finish_upgrade()
    assert world.status["phase"] == names.PHASE_READY
    world.set_spec(version="3")  # the annotation still says r1
    world.reconcile()
    assert world.status["rollout"]["retryToken"] == "r1"
    world.finish_job("expand", ok=False, exit_code=1)
    decision = world.reconcile()
    assert not actions_of(decision, CreateJob), "r1 was spent on release 2"
    assert world.condition(names.COND_STALLED)["status"] == "True"


def test_a_new_rollout_forgets_the_last_failure_and_records_the_replaced_one_as_failed():
    world = ready_world("1")
    world.set_spec(version="2")
    world.reconcile()
    started = world.status["rollout"]["startedAt"]
    world.finish_job("expand", ok=False, exit_code=1)
    world.reconcile()
    assert world.status["lastFailure"]["version"] == "2"
    world.set_spec(version="3")
    world.reconcile()
    assert "lastFailure" not in world.status
    replaced = world.status["history"][0]  # one of its steps had failed: Failed, not Superseded (issue 13)
    assert (replaced["toVersion"], replaced["result"]) == ("2", "Failed")
    assert replaced["startedAt"] == started and replaced["finishedAt"] == world.status["rollout"]["startedAt"]


def test_the_recorded_current_release_is_the_origin_even_with_no_workload_in_sight():
    """Deployments and pods deleted by hand (or not yet in the cache): the next rollout still starts from the
    release the status records, so it deploys before it contracts."""
    world = ready_world("1")
    world.deployments.clear()
    world.pods = [p for p in world.pods if not p.workload]
    world.set_spec(version="2")
    world.reconcile()
    assert world.status["rollout"]["fromVersion"] == "1"
    world.finish_job("expand")
    decision = world.reconcile()
    assert not actions_of(decision, CreateJob), "contract before the deploy"
    assert {a.body["metadata"]["labels"][names.LABEL_VERSION] for a in actions_of(decision, ApplyDeployment)} == {"2"}


def test_a_deployment_deleted_while_expand_runs_comes_back_at_the_running_release():
    world = ready_world("1")
    world.set_spec(version="2")
    world.reconcile()
    del world.deployments["db-worker"]
    decision = world.reconcile()
    [apply] = actions_of(decision, ApplyDeployment)
    assert apply.body["metadata"]["name"] == "db-worker"
    assert apply.body["metadata"]["labels"][names.LABEL_VERSION] == "1"


def test_a_deployment_deleted_while_expand_runs_is_not_applied_over_a_namesake():
    """The deleted Deployment's name is held by an object of someone else's by then (outside the watch: the
    reconciler finds it by name, name_conflicts): nothing is applied over it, and the conflict is named."""
    world = ready_world("1")
    world.set_spec(version="2")
    world.reconcile()
    del world.deployments["db-worker"]
    world.name_conflicts.append(ForeignChild("Deployment", "db-worker", "has no owner"))
    decision = world.reconcile()
    assert not actions_of(decision, ApplyDeployment)
    assert world.condition(names.COND_STALLED)["reason"] == names.REASON_NAME_CONFLICT
    assert "Deployment db-worker has no owner" in world.condition(names.COND_STALLED)["message"]


def test_the_rollout_succeeded_event_names_where_it_came_from():
    """`release V rolled out (from <origin>)`: the release it replaced, or `empty` for a first install (a database
    that was migrated already says which release it found there: test_adoption.py)."""
    world = World(spec=base_spec("1"))
    world.install("1")
    succeeded = [e.message for d in world.log for e in events(d, names.EVENT_ROLLOUT_SUCCEEDED)]
    assert succeeded == ["release 1 rolled out (from empty)"]
    world.set_spec(version="2")
    world.reconcile()
    [event] = events(world.finish_upgrade(), names.EVENT_ROLLOUT_SUCCEEDED)
    assert event.message == "release 2 rolled out (from 1)"


def test_the_phase_stays_while_a_new_version_waits_for_the_running_job():
    world = ready_world("1")
    world.set_spec(version="2")
    world.reconcile()
    assert world.status["phase"] == names.PHASE_EXPANDING
    world.set_spec(version="3")
    world.reconcile()
    assert world.status["phase"] == names.PHASE_EXPANDING
    assert world.condition(names.COND_READY)["reason"] == names.REASON_WAITING_FOR_JOB


def test_a_running_contract_is_followed_to_its_end_when_the_policy_becomes_manual():
    world = ready_world("1")
    _to_contract(world)
    [contract] = actions_of(world.reconcile(), CreateJob)
    world.set_spec(contract={"policy": "Manual"})
    decision = world.reconcile()
    assert not actions_of(decision, CreateJob), "no plan Job for a contract already running"
    assert world.status["activeJob"] == contract.body["metadata"]["name"]
    assert world.status["phase"] == names.PHASE_CONTRACTING
    world.finish_job("contract")
    world.reconcile()
    assert world.status["phase"] == names.PHASE_READY and world.status["schema"]["contractedTo"] == "2"


def test_a_manual_contract_waits_in_its_own_step_and_names_the_plan_to_approve():
    world = _awaiting_manual()
    assert world.status["rollout"]["steps"]["contract"]["phase"] == "Waiting"
    assert world.condition(names.COND_SCHEMA_CONTRACTED)["reason"] == names.REASON_AWAITING_APPROVAL
    digest = world.status["contractPlan"]["digest"].split(":")[1]
    assert world.condition(names.COND_READY)["message"].endswith(f"{names.ANNOTATION_APPROVE_CONTRACT}=2@{digest[:12]}")


@pytest.mark.parametrize(("after", "starts"), [(59.5, False), (60, True)])
def test_a_delayed_contract_starts_when_its_delay_is_over_not_before(after: float, starts: bool):
    world = ready_world("1", contract={"policy": "Delayed", "delaySeconds": 60})
    _to_contract(world)
    world.reconcile()  # deploy done: the delay starts
    deployed = datetime.strptime(world.status["rollout"]["steps"]["deploy"]["finishedAt"], "%Y-%m-%dT%H:%M:%SZ")
    world.now = deployed.replace(tzinfo=UTC) + timedelta(seconds=after) - timedelta(seconds=5)  # reconcile adds 5 s
    creates = actions_of(world.reconcile(), CreateJob)
    assert bool(creates) is starts


def test_removing_a_stuck_workload_from_the_spec_lets_the_deploy_go_on():
    """The worker's rollout of release 2 exceeded its deadline; taking the worker out of the spec deletes it instead
    of failing (or rolling back) the deploy over a workload nobody wants any more."""
    world = ready_world("1")
    world.set_spec(version="2")
    world.reconcile()
    world.finish_job("expand")
    world.reconcile()
    worker = world.deployments["db-worker"]
    world.deployments["db-worker"] = dataclasses.replace(
        worker, observed_generation=worker.generation, progress_deadline_exceeded=True
    )
    world.set_spec(workloads=[workload("api")])
    decision = world.reconcile()
    assert [a.name for a in actions_of(decision, DeleteDeployment)] == ["db-worker"]
    assert world.status["rollout"]["steps"]["deploy"]["phase"] == "Running"
    assert world.condition(names.COND_STALLED)["status"] == "False"


@pytest.mark.parametrize("named", ["sha256:{hex}", "SHA256:{HEX}", "{hex}"])
def test_an_approval_may_name_the_digest_with_its_algorithm(named: str):
    from divbase_operator.planner import approval_verdict

    digest = "sha256:" + "0123456789abcdef" * 4
    hex_ = digest.split(":")[1][:12]
    assert approval_verdict("2@" + named.format(hex=hex_, HEX=hex_.upper()), "2", digest) is True
    assert approval_verdict("2@sha256:" + "f" * 12, "2", digest) != True  # noqa: E712
    assert approval_verdict("2@" + hex_, "2", "0123456789abcdef" * 4) is True, "a digest written without algorithm"


def test_a_refused_downgrade_names_the_newest_release_to_go_back_to():
    """Release 0.1.0a10 runs, its contract waits for approval (the schema is contracted for 0.1.0a9 only): back to
    0.1.0a8 is refused, and the way out names 0.1.0a10 (PEP 440 order; string order would say 0.1.0a9)."""
    world = ready_world("0.1.0a9", contract={"policy": "Manual"})
    _to_contract(world, "0.1.0a10")
    world.reconcile()
    world.reconcile()
    assert world.status["currentVersion"] == "0.1.0a10" and world.status["schema"]["contractedTo"] == "0.1.0a9"
    world.set_spec(version="0.1.0a8")
    world.reconcile()
    stalled = world.condition(names.COND_STALLED)
    assert stalled["reason"] == names.REASON_DOWNGRADE_REFUSED
    assert stalled["message"].endswith("Set spec.version back to 0.1.0a10 or newer.")
