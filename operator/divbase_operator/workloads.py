"""The workloads: the deploy step (every workload to the new release, until no pod of another is left; rolled
back when a Deployment exceeds its progress deadline and the spec asks for it), holding them while a migration
runs, and keeping them as the finished rollout wants them."""

from __future__ import annotations

from typing import Any

from . import names
from .builders import build_deployment
from .decision import ApplyDeployment, DeleteDeployment, Result
from .observed import DeploymentObs, ForeignDeployment, PodObs
from .plan_state import PlanState
from .spec import DatabaseSpec
from .status import Failure, Rollout, StepRecord, StepState

ROLLBACK_STATES = (StepState.ROLLING_BACK, StepState.ROLLED_BACK)


def desired_deployments(st: PlanState, spec: DatabaseSpec, version: str) -> list[dict[str, Any]]:
    restricted = not st.policy.allow_privileged_workloads
    return [build_deployment(st.owner, spec, w, version, restricted) for w in spec.workloads]


def apply_workloads(st: PlanState, spec: DatabaseSpec, version: str) -> None:
    """Create or update each workload whose observed state differs from what `version` wants."""
    observed = {d.name: d for d in st.deployments}
    wanted = desired_deployments(st, spec, version)
    for body in wanted:
        if st.taken_name("Deployment", body["metadata"]["name"]):
            continue
        seen = observed.get(body["metadata"]["name"])
        images = tuple(
            c.get("image", "") if isinstance(c, dict) else ""  # the apiserver refuses the rest
            for c in body["spec"]["template"]["spec"]["containers"]
        )
        desired_hash = body["metadata"]["annotations"][names.ANNOTATION_SPEC_HASH]
        if seen is None or seen.spec_hash != desired_hash or seen.images != images or seen.version != version:
            st.actions.append(ApplyDeployment(body, force=seen is not None))
    wanted_names = {b["metadata"]["name"] for b in wanted}
    for name in sorted(set(observed) - wanted_names):
        st.actions.append(DeleteDeployment(name, observed[name].uid))


def workloads_at(st: PlanState, spec: DatabaseSpec, version: str) -> list[DeploymentObs]:
    wanted = {names.deployment_name(st.obs.name, w.name) for w in spec.workloads}
    return [d for d in st.deployments if d.name in wanted and d.version == version]


def workloads_complete(st: PlanState, spec: DatabaseSpec, version: str) -> bool:
    at_version = workloads_at(st, spec, version)
    if len(at_version) != len(spec.workloads) or not all(d.rollout_complete for d in at_version):
        return False
    return not _old_pods(st, version)


def _old_pods(st: PlanState, version: str) -> list[PodObs]:
    return [p for p in st.pods if p.workload and p.version != version]


def _stuck(st: PlanState, spec: DatabaseSpec, version: str) -> list[DeploymentObs]:
    """The workloads at `version` whose Deployment exceeded its progress deadline (for the generation seen)."""
    return [
        d
        for d in workloads_at(st, spec, version)
        if d.progress_deadline_exceeded and d.observed_generation >= d.generation
    ]


def workload_progress(st: PlanState, spec: DatabaseSpec, version: str) -> str:
    parts = [
        f"{d.workload} {d.updated_replicas}/{d.replicas} updated, {d.available_replicas} available"
        for d in workloads_at(st, spec, version)
    ]
    missing = len(spec.workloads) - len(parts)
    if missing:
        parts.append(f"{missing} workload(s) not yet at release {version}")
    old = _old_pods(st, version)
    if old:
        parts.append(f"{len(old)} pod(s) of other releases left")
    return "; ".join(parts) or "no workloads"


def foreign_deployments(st: PlanState, spec: DatabaseSpec) -> list[ForeignDeployment]:
    """Deployments with our workloads' names that another owner has (or nobody, without our labels)."""
    wanted = {names.deployment_name(st.obs.name, w.name) for w in spec.workloads}
    found = {f.name: f for f in st.obs.foreign if f.name in wanted}
    for d in st.obs.deployments:
        if d.name in wanted and d.controller_uid and d.controller_uid != st.obs.uid:
            found.setdefault(d.name, ForeignDeployment(d.name, f"is controlled by {d.controller}"))
    return [found[name] for name in sorted(found)]


def hold_workloads(st: PlanState, spec: DatabaseSpec, rollout: Rollout) -> None:
    """While a migration step runs, workloads stay exactly as they are; only a deleted one is recreated."""
    deploy = rollout.steps[names.STEP_DEPLOY]
    if deploy.state in (StepState.RUNNING, StepState.SUCCEEDED):
        apply_workloads(st, spec, rollout.to_version)
    elif rollout.from_version:
        present = {d.name for d in st.deployments}
        for body in desired_deployments(st, spec, rollout.from_version):
            name = body["metadata"]["name"]
            if name not in present and not st.taken_name("Deployment", name):
                st.actions.append(ApplyDeployment(body))


def deploy_step(st: PlanState, spec: DatabaseSpec, rollout: Rollout, rec: StepRecord) -> bool:
    """Move every workload to the new release; True once each serves it and no pod of another is left."""
    version, previous = rollout.to_version, rollout.from_version
    st.phase = names.PHASE_DEPLOYING
    if rec.state in (StepState.FAILED, *ROLLBACK_STATES) and st.retry_requested(rollout):
        st.event("Normal", names.EVENT_RETRY, f"retrying the deploy of release {version}")
        st.outcome(names.STEP_DEPLOY, Result.RETRIED)
        rec.reset()
    if rec.state in ROLLBACK_STATES:
        return _rolling_back(st, spec, rec, previous or version)
    if rec.state == StepState.FAILED:
        st.phase = names.PHASE_FAILED
        st.stall(names.REASON_PROGRESS_DEADLINE, rec.message if rec.message is not None else "deploy failed")
        return False
    if rec.state == StepState.PENDING:
        rec.state, rec.started_at = StepState.RUNNING, st.ts
        st.event("Normal", names.EVENT_WORKLOADS_UPDATING, f"moving workloads to release {version}")
    apply_workloads(st, spec, version)
    stuck = _stuck(st, spec, version)
    if stuck:
        return _deploy_failed(st, spec, rollout, rec, stuck)
    if not workloads_complete(st, spec, version):
        st.progress = (names.REASON_ROLLING_OUT, workload_progress(st, spec, version))
        return False
    rec.state, rec.finished_at = StepState.SUCCEEDED, st.ts
    st.status.current_version = version
    st.event("Normal", names.EVENT_WORKLOADS_UPDATED, f"every workload runs release {version}")
    return True


def _deploy_failed(
    st: PlanState, spec: DatabaseSpec, rollout: Rollout, rec: StepRecord, stuck: list[DeploymentObs]
) -> bool:
    """A Deployment exceeded its progress deadline: roll back when the spec asks for it and there is a release
    to go back to, else fail the step (Stalled until a retry)."""
    version, previous = rollout.to_version, rollout.from_version
    message = (
        f"deploy of release {version} failed: Deployment(s) {', '.join(d.name for d in stuck)} "
        f"exceeded their progress deadline"
    )
    st.status.last_failure = Failure(
        step=names.STEP_DEPLOY,
        version=version,
        job=None,
        reason=names.REASON_PROGRESS_DEADLINE,
        exit_code=None,
        message=message,
        time=st.ts,
    )
    if spec.rollback_on_failure and previous:
        rec.state, rec.message = StepState.ROLLING_BACK, message
        st.event("Warning", names.EVENT_ROLLBACK, f"{message}; rolling back to release {previous}")
        st.outcome(names.STEP_DEPLOY, Result.FAILED)
        st.actions = [a for a in st.actions if not isinstance(a, ApplyDeployment)]
        return _rolling_back(st, spec, rec, previous)
    rec.state, rec.message, rec.finished_at = StepState.FAILED, message, st.ts
    st.phase = names.PHASE_FAILED
    st.stall(
        names.REASON_PROGRESS_DEADLINE, message, event_reason=names.REASON_PROGRESS_DEADLINE, failed=names.STEP_DEPLOY
    )
    return False


def _rolling_back(st: PlanState, spec: DatabaseSpec, rec: StepRecord, previous: str) -> bool:
    apply_workloads(st, spec, previous)
    if not workloads_complete(st, spec, previous):
        st.phase = names.PHASE_ROLLING_BACK
        st.progress = (
            names.REASON_ROLLING_BACK,
            f"rolling back to release {previous}: {workload_progress(st, spec, previous)}",
        )
        return False
    if rec.state != StepState.ROLLED_BACK:
        rec.state, rec.finished_at = StepState.ROLLED_BACK, st.ts
    st.phase = names.PHASE_FAILED
    failure = st.status.last_failure.message if st.status.last_failure is not None else "deploy failed"
    st.stall(
        names.REASON_ROLLED_BACK,
        f"{failure}; workloads rolled back to release {previous}. Set annotation "
        f"{names.ANNOTATION_RETRY} to a new value to retry, or change spec.version",
        event_reason=names.REASON_ROLLED_BACK,
    )
    return False


def steady(st: PlanState, spec: DatabaseSpec, rollout: Rollout) -> None:
    """The rollout succeeded: keep the workloads as it left them; Ready while each serves the release."""
    version = rollout.to_version
    apply_workloads(st, spec, version)
    stuck = _stuck(st, spec, version)
    if stuck:
        st.phase = names.PHASE_FAILED
        st.stall(
            names.REASON_PROGRESS_DEADLINE,
            f"Deployment(s) {', '.join(d.name for d in stuck)} exceeded their progress deadline",
            event_reason=names.REASON_PROGRESS_DEADLINE,
            failed=names.STEP_DEPLOY,
        )
        return
    if any(isinstance(a, ApplyDeployment | DeleteDeployment) for a in st.actions) or not workloads_complete(
        st, spec, version
    ):
        st.phase = names.PHASE_DEPLOYING
        st.progress = (names.REASON_ROLLING_OUT, workload_progress(st, spec, version))
        return
    st.phase = names.PHASE_READY
    st.ready = True


def converged(st: PlanState, spec: DatabaseSpec) -> bool:
    """The last rollout succeeded for spec.version and every workload serves it."""
    rollout = st.rollout
    return bool(
        rollout
        and rollout.succeeded
        and rollout.to_version == spec.version
        and workloads_complete(st, spec, spec.version)
    )
