"""The contract gate: whether a rollout's contract may start now, by its policy.

Auto: at once. Delayed: `delaySeconds` after the deploy finished. Manual: a read-only plan Job renders the SQL,
published in a ConfigMap for review; the contract runs once annotation `divbase.io/approve-contract` approves
that release (and, in the `<version>@<digest prefix>` form, exactly that plan), and its Job runs exactly that SQL
(`--expect-digest`) from the image the plan pod ran."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from divbase_migrations.contract import (
    DIGEST_PATTERN,
    MESSAGE_PROBLEM,
    SUMMARY_DIGEST,
    SUMMARY_REVISIONS,
    SUMMARY_SQL_TRUNCATED,
    SUMMARY_SQL_Z,
    read_plan,
    read_summary,
)
from divbase_migrations.release_version import same_release

from . import names
from .builders import ApprovedPlan, JobTemplate, build_plan_configmap, plan_data_fingerprint
from .decision import ApplyConfigMap, CreateJob, Result
from .observed import JOB_ACTIVE, JOB_SUCCEEDED, JobObs
from .plan_state import PlanState, parse_time, truncate
from .spec import DatabaseSpec, pinned_image
from .status import ContractPlan, Rollout, StepRecord, StepState

# The parts of a plan's summary the approval rests on: any problem with one of them fails the plan.
PLAN_KEYS = (MESSAGE_PROBLEM, SUMMARY_DIGEST, SUMMARY_REVISIONS, SUMMARY_SQL_Z, SUMMARY_SQL_TRUNCATED)


def contract_allowed(st: PlanState, spec: DatabaseSpec, rollout: Rollout, rec: StepRecord) -> bool:
    """True when the contract may start; else the step waits (state Waiting) and the progress says for what."""
    if rec.job:
        return True  # already started: the approval was given when it began
    if spec.contract.policy == names.CONTRACT_MANUAL:
        return _approved(st, spec, rollout, rec)
    if spec.contract.policy == names.CONTRACT_DELAYED:
        return _delay_over(st, spec, rollout, rec)
    return True


def _approved(st: PlanState, spec: DatabaseSpec, rollout: Rollout, rec: StepRecord) -> bool:
    version = rollout.to_version
    plan = contract_plan(st, spec, rollout)
    verdict = (
        approval_verdict(st.obs.annotations.get(names.ANNOTATION_APPROVE_CONTRACT, ""), version, plan.digest)
        if plan
        else None
    )
    if verdict is True:
        return True
    rec.state = StepState.WAITING
    if plan is None:
        return False  # phase Contracting, reason PlanningContract: AwaitingContract means a plan to review
    st.phase = names.PHASE_AWAITING_CONTRACT
    exact = f"{names.ANNOTATION_APPROVE_CONTRACT}={version}@{digest_hex(plan.digest)[:12]}"
    if isinstance(verdict, str):
        st.progress = (
            names.REASON_PLAN_CHANGED,
            f"{verdict}; review ConfigMap {plan.config_map} and approve again with annotation {exact}",
        )
        return False
    st.progress = (
        names.REASON_AWAITING_APPROVAL,
        f"workloads run release {version}; review the contract's SQL in ConfigMap "
        f"{plan.config_map}, then approve with annotation {exact}",
    )
    return False


def _delay_over(st: PlanState, spec: DatabaseSpec, rollout: Rollout, rec: StepRecord) -> bool:
    deployed = parse_time(rollout.steps[names.STEP_DEPLOY].finished_at) or st.now
    remaining = spec.contract.delay_seconds - (st.now - deployed).total_seconds()
    if remaining <= 0:
        return True
    rec.state = StepState.WAITING
    st.phase = names.PHASE_AWAITING_CONTRACT
    st.requeue_after = remaining
    st.progress = (
        names.REASON_CONTRACT_DELAYED,
        f"contract of release {rollout.to_version} starts in {int(remaining + 0.999)}s",
    )
    return False


def approved_plan(st: PlanState, spec: DatabaseSpec, rollout: Rollout, step: str) -> ApprovedPlan | None:
    """The plan a Manual contract was approved against: its Job passes the digest to the runner
    (`--expect-digest`), which runs exactly that SQL or nothing, and runs the image the plan pod ran, by
    digest, when its runtime reported one. None for every other step or policy."""
    if step != names.STEP_CONTRACT or spec.contract.policy != names.CONTRACT_MANUAL or rollout.from_version is None:
        return None
    plan = st.status.contract_plan
    if plan is None or plan.version != rollout.to_version or not isinstance(plan.digest, str):
        return None
    image = plan.image if isinstance(plan.image, str) else None
    return ApprovedPlan(plan.digest, image) if DIGEST_PATTERN.fullmatch(plan.digest) else None


# -- the plan ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _PlanRead:
    """What a finished plan Job left: its digest, SQL and revisions, or why it cannot be approved (`error`)."""

    digest: str
    sql: str | None
    revisions: list[Any]
    error: str | None


def contract_plan(st: PlanState, spec: DatabaseSpec, rollout: Rollout) -> ContractPlan | None:
    """The plan a Manual contract is approved against: a read-only Job renders the SQL, published in a
    ConfigMap; None while it is being made (or failed: then Stalled, retried like any step)."""
    version = rollout.to_version
    template = JobTemplate.of(st.owner, spec, names.STEP_PLAN, version, rollout.retry_token)
    name = template.name
    recorded = st.status.contract_plan
    if recorded is not None and recorded.job == name:
        _keep_published(st, recorded)
        return recorded
    job = st.jobs.get(name)
    if job is None and st.taken_name("Job", name):
        return None
    if job is None or job.state == JOB_ACTIVE:
        if job is None:
            st.actions.append(CreateJob(template.body()))
        st.status.active_job = name
        st.progress = (names.REASON_PLANNING_CONTRACT, f"rendering the contract's SQL for review (Job {name})")
        return None
    if st.await_failed_pod(job):
        st.progress = (names.REASON_PLANNING_CONTRACT, f"plan Job {name} failed; waiting for its pod's message")
        return None
    read = _read_plan(st, job)
    if read.error is not None and st.retry_requested(rollout):
        st.event("Normal", names.EVENT_RETRY, f"retrying the contract plan for release {version}")
        st.outcome(names.STEP_PLAN, Result.RETRIED)
        return contract_plan(st, spec, rollout)  # a new retry token names a new plan Job
    if read.error is not None:
        st.stall(
            names.REASON_JOB_FAILED,
            f"contract plan Job {name} failed: {truncate(read.error)}. Set "
            f"annotation {names.ANNOTATION_RETRY} to a new value to retry",
            event_reason=names.EVENT_JOB_FAILED,
            failed=names.STEP_PLAN,
        )
        return None
    return _publish(st, spec, version, job, read)


def _read_plan(st: PlanState, job: JobObs) -> _PlanRead:
    last_pod = st.last_pod(job.name)
    summary, problems = read_summary(last_pod.termination_message if last_pod else None)
    digest = summary.get(SUMMARY_DIGEST)
    sql, sql_problem = read_plan(summary)
    invalid = [problems[key] for key in PLAN_KEYS if key in problems] + ([sql_problem] if sql_problem else [])
    revisions = list(summary.get(SUMMARY_REVISIONS) or [])
    if job.state == JOB_SUCCEEDED and isinstance(digest, str) and not invalid:
        return _PlanRead(digest, sql, revisions, None)
    if job.state == JOB_SUCCEEDED and invalid:
        error = f"it succeeded but its plan is not valid: {'; '.join(invalid)}"
    elif job.state == JOB_SUCCEEDED:
        error = (
            "it succeeded but left no plan in its termination message (does the image's "
            "divbase-migrate predate reviewed contracts?)"
        )
    else:
        error = st.runner_error(job)[0] or job.message or "no message"
    return _PlanRead("", None, revisions, str(error))


def _publish(st: PlanState, spec: DatabaseSpec, version: str, job: JobObs, read: _PlanRead) -> ContractPlan | None:
    """Publish a new plan in its ConfigMap and record it; None while its name is someone else's ConfigMap."""
    configmap = build_plan_configmap(st.owner, version, job.name, read.digest, read.sql, read.revisions)
    name = configmap["metadata"]["name"]
    if st.taken_name("ConfigMap", name):
        return None  # not published, not recorded: published once the name is free
    st.actions.append(ApplyConfigMap(configmap, force=name in st.configmaps))
    last_pod = st.last_pod(job.name)
    plan = ContractPlan(
        version=version,
        job=job.name,
        digest=read.digest,
        revisions=read.revisions,
        config_map=name,
        published=plan_data_fingerprint(configmap["data"]),
        truncated=sql_left_out(configmap),
    )
    # the contract runs the image that rendered the plan, not whatever the tag names by then
    plan.image = pinned_image(spec.migration_image(version), last_pod.image_id if last_pod else None) or None
    st.status.contract_plan = plan
    st.event(
        "Normal",
        names.EVENT_CONTRACT_PLANNED,
        f"contract of release {version} planned ({len(read.revisions)} revision(s)); review ConfigMap "
        f"{name}, then approve with annotation {names.ANNOTATION_APPROVE_CONTRACT}="
        f"{version}@{digest_hex(read.digest)[:12]}",
    )
    return plan


def _keep_published(st: PlanState, plan: ContractPlan) -> None:
    """The plan ConfigMap must hold what the operator published (status, which only the operator writes,
    records its fingerprint): anyone who may edit ConfigMaps could otherwise change what a reviewer reads.
    Changed, or deleted, it is published again from the plan pod's summary (or, that pod gone, as a note
    naming the digest and how to render the SQL)."""
    if not isinstance(plan.published, str):
        return  # published by an operator that did not record it
    if st.taken_name("ConfigMap", str(plan.config_map)):
        return  # someone else's ConfigMap holds the name now: not overwritten (NameConflict)
    seen = st.configmaps.get(str(plan.config_map))
    if seen is not None and seen.fingerprint == plan.published:
        if not isinstance(plan.truncated, bool):  # recorded by an operator that did not say: as published
            plan.truncated = seen.truncated
        return
    last_pod = st.last_pod(plan.job)
    summary = read_summary(last_pod.termination_message if last_pod else None)[0]
    sql, _ = read_plan(summary)
    lost = sql is None and summary.get(SUMMARY_DIGEST) != plan.digest
    configmap = build_plan_configmap(
        st.owner, plan.version, plan.job, plan.digest, None if lost else sql, list(plan.revisions or []), lost=lost
    )
    st.actions.append(ApplyConfigMap(configmap, force=seen is not None))
    plan.published = plan_data_fingerprint(configmap["data"])
    plan.truncated = sql_left_out(configmap)
    if seen is not None and seen.job == plan.job:  # not merely an older plan the watch has not updated yet
        st.event(
            "Warning",
            names.EVENT_PLAN_REPUBLISHED,
            f"ConfigMap {plan.config_map} was changed after the operator published it; published "
            f"the plan {digest_hex(plan.digest)[:12]} of release {plan.version} again",
        )


def sql_left_out(configmap: dict[str, Any]) -> bool:
    """Whether a plan ConfigMap the operator builds carries a note instead of the SQL (too large, or lost): recorded
    in status, the only place the kubectl plugin believes it (anyone who may edit ConfigMaps can set the key)."""
    return bool(configmap["data"][names.PLAN_DATA_TRUNCATED] == "true")


def digest_hex(digest: str) -> str:
    return digest.split(":", 1)[-1]


def approval_verdict(approval: str, version: str, digest: str) -> bool | str | None:
    """True: approved. None: no approval for this version yet. A string: an approval that no longer holds.

    `<version>` approves whatever plan is current; `<version>@<digest prefix>` approves exactly that plan (the
    kubectl plugin writes this form), so an approval given before the plan changed is refused, not reused."""
    wanted, _, named = approval.strip().partition("@")
    if not same_release(wanted, version):  # `0.1.0a9` approves the contract of `v0.1.0a9`: one release
        return None
    if not named:
        return True
    named = named.split(":", 1)[-1].lower()
    if len(named) < names.PLAN_DIGEST_MIN:
        return f"the approval names plan {named!r}: give at least {names.PLAN_DIGEST_MIN} hex digits of the digest"
    if digest_hex(digest).startswith(named):
        return True
    return f"the approval was for plan {named}, but the contract's plan is now {digest_hex(digest)[:12]}"
