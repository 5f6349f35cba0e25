"""The operator's decisions: observed state in, next actions and the new status out. Pure and synchronous.

A rollout from A to B runs expand (Job from image B), deploy (every workload to B, until no pod of A is left)
and contract (Job, per policy). A first install runs expand, contract, then creates the workloads. Everything
the planner remembers lives in `status.rollout` and in deterministic Job names, so a restarted operator picks
up where it stopped; it never moves a workload to a release whose expand Job has not succeeded.

Rules that keep it deterministic:
- a migration Job of ours that is still running is always waited for, whatever the spec says now (one being
  deleted is gone already: `job_counts`);
- a new `spec.version` starts a new rollout only once no Job runs (the old one goes to history as
  Superseded, or Failed when one of its steps had failed);
- a failed step stays failed (Stalled) until the retry annotation changes or the spec changes the Job, also once
  the failed Job is gone (TTL): the retry token names the Job, so only a new token can run it again;
- a downgrade is accepted only while the schema has not been contracted past the requested release."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from divbase_migrations.contract import printable

# `x as x`: re-exported, the reconciler and tests import the Decision's parts, the ownership filters and
# approval_verdict from the planner
from . import names
from .conditions import Readiness, get_condition, set_condition
from .contract_gate import approval_verdict as approval_verdict
from .decision import ROLLOUT, Action, ApplyConfigMap, ApplyDeployment, CreateJob, Decision, EmitEvent, Observed, Result
from .decision import DeleteDeployment as DeleteDeployment
from .decision import Outcome as Outcome
from .job_steps import describe_lock_holder as describe_lock_holder
from .job_steps import job_step, sync_recorded_jobs
from .observed import JOB_ACTIVE, ForeignChild, ForeignDeployment, JobObs, PodObs, ReplicaSetObs
from .plan_state import PlanState, iso, parse_time
from .plan_state import job_counts as job_counts
from .plan_state import owned_jobs as owned_jobs
from .plan_state import owned_pods as owned_pods
from .policy import Policy
from .spec import DatabaseSpec, parse_spec, privileged_errors, version_key
from .status import DONE_STATES, FAILED_STATES, HistoryEntry, HistoryStep, Rollout, StepRecord, StepState
from .workloads import converged, deploy_step, foreign_deployments, hold_workloads, steady


def decide(obs: Observed, now: datetime, policy: Policy | None = None) -> Decision:
    """The next actions and status for `obs`; `policy` is what the operator's own flags allow a resource."""
    st = PlanState(obs, now, policy or Policy())
    st.status.observed_generation = obs.generation
    if st.status.conditions is None:
        st.status.conditions = []
    spec = _admitted(st)
    if spec is not None:
        _Planner(st, spec).run()
    return _finish(st, spec)


def _admitted(st: PlanState) -> DatabaseSpec | None:
    """The parsed spec when the operator may act on it; else None, Stalled with why (nothing is created, changed
    or deleted for the resource)."""
    refused = st.policy.namespace_refusal(st.obs.namespace)
    spec, errors = parse_spec(st.obs.spec)
    if refused is None and spec is not None and not st.policy.allow_privileged_workloads:
        errors = privileged_errors(spec)
        spec = None if errors else spec
    if refused is None and spec is not None:
        refused = st.policy.spec_refusal(spec)
    if refused is not None:
        st.stall(refused.reason, printable(refused.message), event_reason=refused.reason)
    elif errors or spec is None:
        message = printable("; ".join(str(e) for e in errors))
        st.stall(names.REASON_INVALID_SPEC, message, event_reason=names.EVENT_INVALID_SPEC)
    else:
        return spec
    st.phase = names.PHASE_FAILED
    return None


@dataclass(frozen=True)
class Deletion:
    """What the finalizer does now: wait for running migration Jobs, or remove the children and let go."""

    waiting_for: tuple[str, ...]  # names of our migration Jobs still running
    message: str
    requeue_after: float | None = None  # the bound on waiting, as a timer (their completion normally wakes us)


def plan_deletion(jobs: tuple[JobObs, ...], now: datetime) -> Deletion:
    """A running migration Job is never killed by a deletion: the finalizer waits until it finishes, which its own
    activeDeadlineSeconds bounds (the Job controller ends it then); DELETION_JOB_GRACE_SECONDS after that deadline
    the finalizer stops waiting. Stopping a migration midway is safe (each revision is a transaction) but leaves
    the schema between releases; letting it finish leaves it at one."""
    running = [j for j in jobs if j.state == JOB_ACTIVE and not j.deleting]
    waiting: list[tuple[JobObs, datetime | None]] = []
    for job in running:
        deadline = _deadline(job)
        if deadline is None or now < deadline + timedelta(seconds=names.DELETION_JOB_GRACE_SECONDS):
            waiting.append((job, deadline))
    if not waiting:
        overdue = f" ({', '.join(j.name for j in running)} still running past its deadline)" if running else ""
        return Deletion((), f"deleting the migration Jobs and workloads; the database is left as it is{overdue}")
    return _wait_for(waiting, now)


def _wait_for(waiting: list[tuple[JobObs, datetime | None]], now: datetime) -> Deletion:
    """Wait for each running Job, woken at the latest when the grace after the first deadline ends."""
    parts = [
        f"{job.step} Job {job.name} (release {job.version}"
        + (f"; its activeDeadlineSeconds ends it by {iso(deadline)}" if deadline else "")
        + ")"
        for job, deadline in waiting
    ]
    bounds = [
        (deadline + timedelta(seconds=names.DELETION_JOB_GRACE_SECONDS) - now).total_seconds()
        for _, deadline in waiting
        if deadline is not None
    ]
    return Deletion(
        tuple(job.name for job, _ in waiting),
        f"deleted: waiting for {', '.join(parts)} to finish before removing the Jobs and workloads",
        requeue_after=min(bounds) if bounds else None,
    )


def _deadline(job: JobObs) -> datetime | None:
    """When the Job controller ends a running Job (activeDeadlineSeconds from its start); None when unbounded."""
    start = parse_time(job.started_at) or parse_time(job.created_at)
    if start is None or not job.active_deadline_seconds:
        return None
    return start + timedelta(seconds=job.active_deadline_seconds)


def workload_chain_lookup(
    pod: PodObs, replicasets: dict[str, ReplicaSetObs], ours: set[str], seen: set[str]
) -> tuple[str, str, str] | None:
    """What the reconciler must read by name to place a workload pod the watches cannot: (kind, name, the uid it
    must have) of the pod's ReplicaSet when that is not among `replicasets` (by uid), or of the Deployment that
    ReplicaSet names when its uid is neither this resource's (`ours`) nor one the watch shows (`seen`); None when
    what is known decides. A read that finds nothing of that uid makes the ReplicaSet `orphaned`."""
    if not pod.workload or pod.owner_uid is not None or pod.job_name is not None or not pod.replicaset_uid:
        return None
    rs = replicasets.get(pod.replicaset_uid)
    if rs is None:
        return ("ReplicaSet", pod.replicaset, pod.replicaset_uid) if pod.replicaset else None
    if rs.orphaned or not rs.deployment or not rs.deployment_uid or rs.deployment_uid in ours | seen:
        return None
    return "Deployment", rs.deployment, rs.deployment_uid


def conflict_lookups(decision: Decision, obs: Observed) -> list[tuple[str, str]]:
    """(kind, name) of each object `decision` would create that the watch does not show at all: the reconciler reads
    it by name before acting, since an object of that name outside the watch is someone else's (NameConflict)."""
    seen = (
        {("Job", j.name) for j in obs.jobs}
        | {("Deployment", d.name) for d in obs.deployments}
        | {("ConfigMap", c.name) for c in obs.configmaps}
        | {(c.kind, c.name) for c in obs.name_conflicts}
    )
    wanted = []
    for action in decision.actions:
        if isinstance(action, CreateJob):
            kind = "Job"
        elif isinstance(action, ApplyDeployment | ApplyConfigMap) and not action.force:
            kind = "Deployment" if isinstance(action, ApplyDeployment) else "ConfigMap"
        else:
            continue
        key = (kind, action.body["metadata"]["name"])
        if key not in seen and key not in wanted:
            wanted.append(key)
    return wanted


def terminating_status(status: dict[str, Any], message: str, generation: int, now: datetime) -> dict[str, Any]:
    """The status of a resource whose finalizer runs: phase Terminating, not Ready, Reconciling with what it does."""
    new = copy.deepcopy(status)
    new["observedGeneration"] = generation  # setting deletionTimestamp bumps the generation: this one is seen
    new["phase"] = names.PHASE_TERMINATING
    readiness = Readiness.is_progressing(
        names.REASON_TERMINATING, message, message, stalled_reason=names.REASON_TERMINATING
    )
    new["conditions"] = readiness.apply(new.get("conditions") or [], generation, iso(now))
    return new


def foreign_lookup_needed(status: dict[str, Any], version: Any) -> bool:
    """Whether Deployments of our workloads' names missing from the watch must be looked up (a GET each): before a
    rollout starts (so a foreign one is reported before any step runs), before a first install creates its
    workloads, and while a foreign one holds the resource up. Not during the migration steps in between, nor once
    the workloads exist: every reconcile would cost a read per workload."""
    conditions = status.get("conditions") or []
    stalled = get_condition(conditions, names.COND_STALLED) or {}
    if stalled.get("status") == "True" and stalled.get("reason") == names.REASON_FOREIGN_DEPLOYMENT:
        return True
    raw = status.get("rollout")
    if not raw:
        return True
    rollout = Rollout.from_dict(raw)
    if rollout.to_version != version:
        return True
    states = {step: rec.state for step, rec in rollout.steps.items()}
    migrations_done = all(states.get(step) in DONE_STATES for step in names.JOB_STEPS)
    return migrations_done or states.get(names.STEP_DEPLOY) not in (StepState.PENDING, None)


class _Planner:
    """The rollout's flow for a spec the operator may act on: start a rollout for a new spec.version, then run its
    steps in order (expand, deploy, contract; a first install contracts before its workloads exist)."""

    def __init__(self, st: PlanState, spec: DatabaseSpec) -> None:
        self.st = st
        self.spec = spec

    def run(self) -> None:
        st, spec = self.st, self.spec
        st.status.target_version = spec.version
        st.status.active_job = None  # set again below only while a Job of ours really runs
        sync_recorded_jobs(st, spec)
        if spec.paused:
            st.phase = names.PHASE_PAUSED
            st.ready = converged(st, spec)
            st.progress = (names.REASON_PAUSED, "spec.paused is true: no step starts until it is false")
            return
        foreign = foreign_deployments(st, spec)
        if foreign:
            self._refuse_foreign(foreign)
            return
        rollout = st.rollout
        if rollout is None or rollout.to_version != spec.version:
            rollout = self._new_rollout()
        if rollout is not None:
            self._advance(rollout)

    def _refuse_foreign(self, foreign: list[ForeignDeployment]) -> None:
        """Nothing runs (no Job, no Deployment change) while a workload's Deployment belongs to someone else: server-
        side apply would take it over field by field and fail on its immutable selector halfway through a rollout.
        A Job of ours already running finishes (it is never stopped); its result is recorded."""
        st = self.st
        which = "; ".join(f"Deployment {f.name} {f.owner}" for f in foreign)
        st.phase = names.PHASE_FAILED
        st.requeue_after = names.FOREIGN_RECHECK_SECONDS
        st.stall(
            names.REASON_FOREIGN_DEPLOYMENT,
            f"{which}: not managed by this {names.KIND}, so no step runs. Hand it over: delete it "
            f"(kubectl -n {st.obs.namespace} delete deployment {foreign[0].name} --cascade=orphan keeps its "
            f"pods serving until the operator's own are ready; docs/operator.md, \"Adopting an existing "
            f'Deployment")',
            event_reason=names.EVENT_FOREIGN_DEPLOYMENT,
        )

    # -- a new rollout ----------------------------------------------------------------------------------------
    def _new_rollout(self) -> Rollout | None:
        """The rollout to spec.version, once no Job of ours runs and the schema still serves it; else None."""
        st, spec = self.st, self.spec
        running = st.active_job_other_than(None)
        if running is not None:
            st.phase = st.status.phase or names.PHASE_PENDING
            st.progress = (
                names.REASON_WAITING_FOR_JOB,
                f"waiting for {running.step} Job {running.name} (release {running.version}) to "
                f"finish before rolling out release {spec.version}",
            )
            st.status.active_job = running.name
            return None
        current = st.status.current_version or self._oldest_running_version()
        if self._refuse_downgrade(current):
            return None
        self._close_previous()
        return self._start_rollout(current)

    def _refuse_downgrade(self, current: str | None) -> bool:
        """A contract past the target refuses it, whatever runs: a first install contracts before any workload
        runs."""
        st, target = self.st, self.spec.version
        contracted = st.status.schema.contracted_to if st.status.schema else None
        if not contracted or version_key(contracted) <= version_key(target):
            return False
        st.phase = names.PHASE_FAILED
        newest = max((v for v in (current, contracted) if v), key=version_key)
        before = (
            f"the running release {current}, and the schema was contracted for release {contracted}"
            if current
            else f"release {contracted}, whose contract already ran on the schema"
        )
        st.stall(
            names.REASON_DOWNGRADE_REFUSED,
            f"spec.version {target} is older than {before}: it no longer serves {target}. Set "
            f"spec.version back to {newest} or newer.",
            event_reason=names.REASON_DOWNGRADE_REFUSED,
        )
        return True

    def _close_previous(self) -> None:
        """An unfinished rollout replaced by a new spec.version goes to history: Failed when a step had failed,
        else Superseded."""
        old = self.st.rollout
        if old is None or old.finished_at:
            return
        old.finished_at = self.st.ts
        failed = any(rec.state in FAILED_STATES for rec in old.steps.values())
        old.result = names.RESULT_FAILED if failed else names.RESULT_SUPERSEDED
        self._append_history(old)  # the history keeps what it names; the record itself is replaced

    def _start_rollout(self, current: str | None) -> Rollout:
        st, target = self.st, self.spec.version
        schema = st.status.schema
        expanded = schema.expanded_to if schema else None
        contracted = schema.contracted_to if schema else None

        def first(done_to: str | None) -> StepRecord:
            done = done_to and version_key(done_to) >= version_key(target)
            return StepRecord(StepState.SKIPPED if done else StepState.PENDING)

        rollout = Rollout(
            from_version=current,
            to_version=target,
            image=self.spec.release_image,
            started_at=st.ts,
            retry_token=st.obs.annotations.get(names.ANNOTATION_RETRY, ""),
            steps={
                names.STEP_EXPAND: first(expanded),
                names.STEP_DEPLOY: StepRecord(),
                names.STEP_CONTRACT: first(contracted),
            },
        )
        st.status.rollout = rollout
        st.status.last_failure = None
        st.event(
            "Normal",
            names.EVENT_ROLLOUT_STARTED,
            f"rolling out release {target} (from {current or 'an empty database'})",
        )
        st.outcome(ROLLOUT, Result.STARTED)
        return rollout

    def _oldest_running_version(self) -> str | None:
        """Workloads may run a release that never finished rolling out (an install superseded mid-deploy)."""
        versions = {d.version for d in self.st.deployments if d.version}
        versions |= {p.version for p in self.st.pods if p.workload and p.version}
        return min(versions, key=version_key) if versions else None

    # -- its steps --------------------------------------------------------------------------------------------
    def _advance(self, rollout: Rollout) -> None:
        st, spec = self.st, self.spec
        if rollout.succeeded:
            steady(st, spec, rollout)
            return
        for step in step_order(rollout):
            rec = rollout.steps[step]
            if rec.done:
                continue
            if step == names.STEP_DEPLOY:
                if not deploy_step(st, spec, rollout, rec):
                    return
            elif not job_step(st, spec, rollout, step, rec):
                hold_workloads(st, spec, rollout)
                return
        self._succeeded(rollout)
        steady(st, spec, rollout)

    def _succeeded(self, rollout: Rollout) -> None:
        st = self.st
        rollout.finished_at = st.ts
        rollout.result = names.RESULT_SUCCEEDED
        st.status.current_version = rollout.to_version
        self._append_history(rollout)
        origin = rollout.from_version or (
            f"{rollout.found_version}, found in the database" if rollout.found_version else "empty"
        )
        st.event("Normal", names.EVENT_ROLLOUT_SUCCEEDED, f"release {rollout.to_version} rolled out (from {origin})")
        st.outcome(ROLLOUT, Result.SUCCEEDED)

    def _append_history(self, rollout: Rollout) -> None:
        def seconds(rec: StepRecord) -> float | None:
            start, end = parse_time(rec.started_at), parse_time(rec.finished_at)
            return (end - start).total_seconds() if start and end else None

        entry = HistoryEntry(
            from_version=rollout.from_version,
            found_version=rollout.found_version or None,
            to_version=rollout.to_version,
            result=rollout.result,
            started_at=rollout.started_at,
            finished_at=rollout.finished_at,
            steps={step: HistoryStep(rec.state, seconds(rec), rec.job or None) for step, rec in rollout.steps.items()},
        )
        self.st.status.history = [entry, *(self.st.status.history or [])][: names.HISTORY_LIMIT]


def step_order(rollout: Rollout) -> tuple[str, ...]:
    """A first install contracts before its workloads exist (nothing old runs that the contract could break)."""
    if rollout.first_install:
        return (names.STEP_EXPAND, names.STEP_CONTRACT, names.STEP_DEPLOY)
    return (names.STEP_EXPAND, names.STEP_DEPLOY, names.STEP_CONTRACT)


# -- the status it ends with ------------------------------------------------------------------------------------
STEP_REASONS = {
    StepState.SUCCEEDED: names.REASON_JOB_SUCCEEDED,
    StepState.SKIPPED: names.REASON_NOT_NEEDED,
    StepState.RUNNING: names.REASON_JOB_RUNNING,
    StepState.FAILED: names.REASON_JOB_FAILED,
    StepState.PENDING: names.REASON_NOT_STARTED,
    StepState.WAITING: names.REASON_AWAITING_APPROVAL,
    StepState.ROLLING_BACK: names.REASON_ROLLING_BACK,
    StepState.ROLLED_BACK: names.REASON_ROLLED_BACK,
}
DEPLOY_REASONS = {StepState.SUCCEEDED: names.REASON_ROLLOUT_COMPLETE, StepState.RUNNING: names.REASON_ROLLING_OUT}


def _finish(st: PlanState, spec: DatabaseSpec | None) -> Decision:
    """Phase, `rollout.currentStep` and conditions from what was decided; the Decision."""
    if st.conflicts and not st.stalled:
        st.phase = names.PHASE_FAILED
        st.stall(
            names.REASON_NAME_CONFLICT,
            name_conflict_message(list(st.conflicts.values()), st.obs.namespace),
            event_reason=names.REASON_NAME_CONFLICT,
        )
        # an object outside the watch sends no event when it goes: look again
        st.requeue_within(names.FOREIGN_RECHECK_SECONDS)
    if st.stalled and st.phase != names.PHASE_PAUSED:
        st.phase = names.PHASE_FAILED
    st.status.phase = st.phase
    rollout = st.rollout
    if rollout is not None:
        rollout.current_step = _current_step(rollout)
    conditions = list(st.status.conditions or [])
    if spec is not None:
        conditions = _step_conditions(st, conditions)
    readiness = _readiness(st, spec.version if spec else "?")
    st.status.conditions = readiness.apply(conditions, st.obs.generation, st.ts)
    return Decision(
        status=st.status.to_dict(),
        actions=st.actions,
        requeue_after=st.requeue_after,
        log_pods=tuple(st.log_pods),
        outcomes=tuple(st.outcomes),
    )


def _readiness(st: PlanState, version: str) -> Readiness:
    """Ready, Reconciling and Stalled from the outcome: stalled (with why), ready, paused, or on its way."""
    paused = st.phase == names.PHASE_PAUSED
    if st.stalled:
        reason, message = st.stalled
        return Readiness.is_stalled(reason, message, ready_message=message or st.phase)
    if st.ready and not paused:
        return Readiness.is_ready(f"release {version} rolled out; every workload serves it")
    reason, message = st.progress
    ready = (
        (True, names.REASON_RECONCILED, f"release {version} rolled out; every workload serves it")
        if st.ready
        else (False, reason, message or st.phase)
    )
    return Readiness(ready, (not paused, reason, message), (False, names.REASON_PROGRESSING, ""))


def _current_step(rollout: Rollout) -> str | None:
    """`status.rollout.currentStep`: the step an unfinished rollout is in (or failed in), for `kubectl get -o
    wide` and the plugin; gone once the rollout finished."""
    if rollout.finished_at:
        return None
    return next((s for s in step_order(rollout) if not rollout.steps[s].done), None)


def _step_conditions(st: PlanState, conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One condition per step (SchemaExpanded, WorkloadsUpdated, SchemaContracted): True once it is done."""
    gen, ts, rollout = st.obs.generation, st.ts, st.rollout
    for step, kind in names.STEP_CONDITION.items():
        if rollout is None:
            conditions = set_condition(
                conditions, kind, False, names.REASON_NOT_STARTED, f"{step} has not started", gen, ts
            )
            continue
        rec = rollout.steps[step]
        state = rec.state
        reason = (DEPLOY_REASONS if step == names.STEP_DEPLOY else {}).get(state) or STEP_REASONS.get(state, state)
        if (
            step == names.STEP_CONTRACT
            and state == StepState.WAITING
            and st.progress[0] == names.REASON_CONTRACT_DELAYED
        ):
            reason = names.REASON_CONTRACT_DELAYED
        message = rec.message or f"{step} for release {rollout.to_version}: {state}"
        if state in (StepState.RUNNING, StepState.WAITING) and st.progress[1]:
            message = st.progress[1]
        conditions = set_condition(conditions, kind, state in DONE_STATES, reason, message, gen, ts)
    return conditions


def name_conflict_message(conflicts: list[ForeignChild], namespace: str) -> str:
    """What a user reads on a name collision: each object, who has it, and how to free the name."""
    ordered = sorted(conflicts, key=lambda c: (c.kind, c.name))
    which = "; ".join(f"{c.kind} {c.name} {c.owner}" for c in ordered)
    first = ordered[0]
    workload = " or the workload" if any(c.kind == "Deployment" for c in ordered) else ""
    return printable(
        f"{which}: exists but is not controlled by this {names.KIND} (its controller ownerReference names another "
        f"object, or none), and the operator does not take it over, change or delete it; what needs the name waits. "
        f"Delete it if it is stale (kubectl -n {namespace} delete {first.kind.lower()} {first.name}), or rename "
        f"this resource{workload}",
        names.MESSAGE_LIMIT,
    )


def rejected(
    decision: Decision, previous: dict[str, Any], what: str, message: str, generation: int, now: datetime
) -> Decision:
    """The apiserver refused an object built from the spec (HTTP 400/422): retrying cannot help, so say so.

    The remaining actions are dropped; status becomes Failed and Stalled with reason ApplyFailed and the
    apiserver's own message (it names the field). A Warning Event is emitted once per distinct message; the next
    spec change is tried afresh."""
    return _refused(
        decision,
        previous,
        names.REASON_APPLY_FAILED,
        f"{what} was rejected by the API server: {message}",
        generation,
        now,
    )


def apply_conflict(
    decision: Decision, previous: dict[str, Any], what: str, message: str, generation: int, now: datetime
) -> Decision:
    """A server-side apply without force was refused (HTTP 409) because another field manager owns fields of the
    object: the operator forces its apply only over objects it observed as this resource's, so this is an object it
    does not control (or one that was taken over between its read and its write). Stalled with reason ApplyConflict
    and the apiserver's words (they name the managers and the fields); nothing is retried until something changes."""
    text = (
        f"{what} exists and other field managers own fields the operator would set; it does not force its "
        f"apply over an object this resource does not control: {message}. Delete the object if it is stale, or "
        f"rename this resource"
    )
    return _refused(
        decision, previous, names.REASON_APPLY_CONFLICT, printable(text, names.MESSAGE_LIMIT), generation, now
    )


def _refused(
    decision: Decision, previous: dict[str, Any], reason: str, text: str, generation: int, now: datetime
) -> Decision:
    status = copy.deepcopy(decision.status)
    status["conditions"] = Readiness.is_stalled(reason, text).apply(
        status.get("conditions") or [], generation, iso(now)
    )
    status["phase"] = names.PHASE_FAILED
    before = get_condition(previous.get("conditions") or [], names.COND_STALLED) or {}
    events: list[Action] = []
    if before.get("status") != "True" or before.get("message") != text:
        events.append(EmitEvent("Warning", reason, text))
    return Decision(status=status, actions=events, requeue_after=None)
