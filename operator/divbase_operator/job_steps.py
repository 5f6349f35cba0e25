"""The migration Job steps (expand, contract): start the step's Job, follow its pods (failed attempts, lock waits,
pods that cannot start), and record how it ended: in the step record, `status.schema` and `status.lastFailure`."""

from __future__ import annotations

from typing import Any

from divbase_migrations.contract import (
    SUMMARY_ERROR,
    SUMMARY_FOUND,
    SUMMARY_TO,
    LockWait,
    describe_problems,
    printable,
    read_summary,
)

from . import contract_gate, names
from .builders import JobTemplate
from .decision import CreateJob, Result
from .observed import JOB_ACTIVE, JOB_SUCCEEDED, POD_FAILED, POD_RUNNING, POD_UNFINISHED, JobObs
from .plan_state import PlanState, attempts_left, pod_error, truncate
from .spec import DatabaseSpec, version_key
from .status import Attempt, Failure, LockWaitRecord, Rollout, SchemaState, StepRecord, StepState

# Pod waiting reasons that mean a migration pod cannot start without someone fixing something.
BLOCKED_REASONS = frozenset(
    {
        "CreateContainerConfigError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ImageNotMapped",
        "CreateContainerError",
        "CrashLoopBackOff",
    }
)


def sync_recorded_jobs(st: PlanState, spec: DatabaseSpec) -> None:
    """Fold finished Jobs into the rollout record, even when the spec has moved on since."""
    rollout = st.rollout
    if not rollout:
        return
    for step in names.JOB_STEPS:
        rec = rollout.steps.get(step)
        job = st.jobs.get(rec.job or "") if rec is not None else None
        if rec is None or job is None or rec.state != StepState.RUNNING or job.state == JOB_ACTIVE:
            continue
        if rollout.to_version == spec.version and st.await_failed_pod(job):
            continue  # recorded once its pod has said how it ended (job_step reports the wait)
        record_job_result(st, rollout, step, rec, job)


def job_step(st: PlanState, spec: DatabaseSpec, rollout: Rollout, step: str, rec: StepRecord) -> bool:
    """Advance a Job step; True once it succeeded. A failed step stays failed until a new retry token."""
    st.phase = names.PHASE_EXPANDING if step == names.STEP_EXPAND else names.PHASE_CONTRACTING
    if rec.state == StepState.FAILED and not _rearm(st, rollout, step, rec):
        return False
    if (
        step == names.STEP_CONTRACT
        and not rollout.first_install
        and not contract_gate.contract_allowed(st, spec, rollout, rec)
    ):
        return False
    version = rollout.to_version
    template: JobTemplate | None = None
    name = rec.job
    if name is None:
        template = _template(st, spec, rollout, step)
        name = template.name
    job = st.jobs.get(name)
    if job is None and st.taken_name("Job", name):
        st.progress = (names.REASON_NAME_CONFLICT, f"{step} Job {name} is not this resource's")
        return False
    if job is None:
        _start_job(st, step, rec, name, template or _template(st, spec, rollout, step), version)
        return False
    return _follow_job(st, spec, rollout, step, rec, job)


def _template(st: PlanState, spec: DatabaseSpec, rollout: Rollout, step: str) -> JobTemplate:
    approved = contract_gate.approved_plan(st, spec, rollout, step)
    return JobTemplate.of(st.owner, spec, step, rollout.to_version, rollout.retry_token, approved)


def _rearm(st: PlanState, rollout: Rollout, step: str, rec: StepRecord) -> bool:
    """A failed step: Stalled (False), or re-armed as Pending when a new retry token asks for it (True)."""
    version = rollout.to_version
    _refresh_failure(st, rec, st.jobs.get(rec.job or ""))
    if not st.retry_requested(rollout):
        st.phase = names.PHASE_FAILED
        failure = st.status.last_failure
        message = failure.message if failure is not None else (rec.message or "")
        st.stall(
            names.REASON_JOB_FAILED,
            f"{step} for release {version} failed: {message}. Set annotation "
            f"{names.ANNOTATION_RETRY} to a new value to retry",
        )
        return False
    st.event("Normal", names.EVENT_RETRY, f"retrying {step} for release {version}")
    st.outcome(step, Result.RETRIED)
    rec.reset()
    return True


def _start_job(st: PlanState, step: str, rec: StepRecord, name: str, template: JobTemplate, version: str) -> None:
    """Create the step's Job (`name`: the one the step expects), unless another Job of ours runs: one migration at
    a time."""
    blocking = st.active_job_other_than(name)
    if blocking is not None:
        st.progress = (names.REASON_WAITING_FOR_JOB, f"waiting for Job {blocking.name} to finish")
        st.status.active_job = blocking.name
        return
    st.actions.append(CreateJob(template.body()))
    if rec.job != template.name:
        st.event("Normal", names.EVENT_JOB_CREATED, f"{step} Job {template.name} created for release {version}")
    rec.state, rec.job, rec.started_at = StepState.RUNNING, template.name, rec.started_at or st.ts
    st.status.active_job = template.name
    st.progress = (names.REASON_JOB_RUNNING, f"{step} Job {template.name} started")


def _follow_job(st: PlanState, spec: DatabaseSpec, rollout: Rollout, step: str, rec: StepRecord, job: JobObs) -> bool:
    """The step's Job exists: report it while it runs, record it once it ended."""
    version = rollout.to_version
    if rec.job is None:
        rec.job = job.name
    if rec.started_at is None:
        rec.started_at = job.created_at or st.ts
    if job.state == JOB_ACTIVE:
        _job_running(st, spec, step, rec, job, version)
        return False
    st.status.active_job = None
    rec.lock_wait = None
    if rec.state not in (StepState.SUCCEEDED, StepState.FAILED):
        if st.await_failed_pod(job):
            rec.state = StepState.RUNNING
            st.progress = (
                names.REASON_JOB_RUNNING,
                f"{step} Job {job.name} failed; waiting for its pod's exit status and message",
            )
            return False
        record_job_result(st, rollout, step, rec, job)
    if rec.state == StepState.FAILED:  # just recorded: stalled, or retried at once for a token not used yet
        return job_step(st, spec, rollout, step, rec)
    return True


def _job_running(st: PlanState, spec: DatabaseSpec, step: str, rec: StepRecord, job: JobObs, version: str) -> None:
    rec.state = StepState.RUNNING
    st.status.active_job = job.name
    _record_attempts(st, spec, step, rec, job, version)
    blocked = _blocked_pod(st, job.name)
    waiting = _lock_wait(st, step, rec, job, version)
    if blocked:
        st.progress = (names.REASON_JOB_POD_BLOCKED, f"{step} Job {job.name}: {blocked}")
    elif waiting:
        st.progress = (names.REASON_LOCK_WAIT, waiting)
    else:
        st.progress = (names.REASON_JOB_RUNNING, _attempt_progress(st, spec, step, rec, job))


# -- how a Job ended ---------------------------------------------------------------------------------------------
def record_job_result(st: PlanState, rollout: Rollout, step: str, rec: StepRecord, job: JobObs) -> None:
    rec.lock_wait = None  # a finished Job waits for nothing
    rec.finished_at = job.finished_at or st.ts
    if job.state == JOB_SUCCEEDED:
        _record_success(st, rollout, step, rec, job)
    else:
        _record_failure(st, rollout.to_version, step, rec, job)


def _record_success(st: PlanState, rollout: Rollout, step: str, rec: StepRecord, job: JobObs) -> None:
    version = rollout.to_version
    last_pod = st.last_pod(job.name)
    summary, problems = read_summary(last_pod.termination_message if last_pod else None)
    rec.state = StepState.SUCCEEDED
    rec.message = f"Job {job.name} succeeded"
    if problems:  # the exit code decides; a broken summary only costs the revisions it would have named
        rec.message += f" (its summary is not valid: {truncate(describe_problems(problems))})"
    _record_schema(st, step, version, summary)
    found = summary.get(SUMMARY_FOUND)
    if step == names.STEP_EXPAND and isinstance(found, str) and found and rollout.from_version is None:
        rollout.found_version = found  # a first rollout on a migrated database: what it found there
    st.event("Normal", names.EVENT_JOB_SUCCEEDED, f"{step} Job {job.name} for release {version} succeeded")


def _record_schema(st: PlanState, step: str, version: str, summary: dict[str, Any]) -> None:
    """A succeeded step moves `status.schema` forward (never back) and records the revisions the runner named."""
    schema = st.status.schema = st.status.schema or SchemaState()
    if step == names.STEP_EXPAND:
        if not schema.expanded_to or version_key(schema.expanded_to) < version_key(version):
            schema.expanded_to = version
    elif not schema.contracted_to or version_key(schema.contracted_to) < version_key(version):
        schema.contracted_to = version
    revisions = summary.get(SUMMARY_TO) if isinstance(summary.get(SUMMARY_TO), dict) else None
    if revisions:
        schema.revisions = schema.revisions if schema.revisions is not None else {}
        schema.revisions.update({k: v for k, v in revisions.items() if v})


def _record_failure(st: PlanState, version: str, step: str, rec: StepRecord, job: JobObs) -> None:
    rec.state = StepState.FAILED
    error, exit_code = st.runner_error(job)
    error = error or job.message  # Kubernetes' own words only when no pod of the Job said anything
    attempts = max(job.failed, sum(1 for p in st.job_pods(job.name) if p.phase == POD_FAILED))
    failure = Failure(
        step=step,
        version=version,
        job=job.name,
        reason=printable(job.reason, 64) or "Failed",
        exit_code=exit_code,
        message=truncate(error or "the Job failed without a message"),
        time=rec.finished_at,
        attempts=attempts or None,
    )
    rec.message = failure.message
    st.status.last_failure = failure
    st.event(
        "Warning",
        names.EVENT_JOB_FAILED,
        f"{step} Job {job.name} for release {version} failed "
        f"({failure.reason}, exit code {exit_code}): {failure.message}",
    )
    st.outcome(step, Result.FAILED)


def _refresh_failure(st: PlanState, rec: StepRecord, job: JobObs | None) -> None:
    """A failure recorded without the runner's summary (its pod reported after the grace) takes the runner's
    message once the summary is seen, with a Warning Event that carries it (the same failure: not counted again)."""
    failure = st.status.last_failure
    if job is None or failure is None or failure.job != job.name:
        return
    last_pod = st.last_pod(job.name)
    if last_pod is None:
        return
    error = truncate(read_summary(last_pod.termination_message)[0].get(SUMMARY_ERROR))
    if not error or error == failure.message:
        return
    failure.message, failure.exit_code = error, last_pod.exit_code
    rec.message = failure.message
    st.event(
        "Warning",
        names.EVENT_JOB_FAILED,
        f"{failure.step} Job {job.name} for release {failure.version} failed "
        f"({failure.reason}, exit code {last_pod.exit_code}): {failure.message}",
    )


# -- attempts inside a Job: each failed pod, as it happens --------------------------------------------------------
def _backoff_limit(spec: DatabaseSpec, job: JobObs) -> int:
    return job.backoff_limit if job.backoff_limit is not None else spec.migration_job.backoff_limit


def _record_attempts(st: PlanState, spec: DatabaseSpec, step: str, rec: StepRecord, job: JobObs, version: str) -> None:
    """Each failed pod of a running Job is one failed attempt: recorded in the step (exit code, the runner's
    message) with a Warning Event, once per pod, while the Job controller starts the next one."""
    attempts = list(rec.attempts or [])
    seen = {a.pod for a in attempts}
    failed = sorted(
        (p for p in st.job_pods(job.name) if p.phase == POD_FAILED and p.name not in seen),
        key=lambda p: (p.finished_at or "", p.created_at or "", p.name),
    )
    limit = _backoff_limit(spec, job)
    for pod in failed:
        error = pod_error(pod) or "the pod failed without a message"
        attempts.append(
            Attempt(
                pod=pod.name,
                exit_code=pod.exit_code,
                finished_at=pod.finished_at or st.ts,
                message=truncate(error, names.ATTEMPT_MESSAGE_LIMIT),
            )
        )
        st.event(
            "Warning",
            names.EVENT_ATTEMPT_FAILED,
            f"{step} Job {job.name} for release {version}: attempt {len(attempts)} of {limit + 1} failed "
            f"(pod {pod.name}, exit code {pod.exit_code}): {error}; "
            f"{attempts_left(limit, max(job.failed, len(attempts)))}",
        )
    if attempts:
        rec.attempts = attempts[-(names.HISTORY_LIMIT + 1) :]
        rec.failed_attempts = max(job.failed, len(attempts))


def _attempt_progress(st: PlanState, spec: DatabaseSpec, step: str, rec: StepRecord, job: JobObs) -> str:
    """`expand Job X is running (pod P since T)`, and after failed attempts which attempt this is, how the
    last one failed and how many retries are left. No durations: a message that changed with the clock would
    rewrite the status on every reconcile."""
    running = [p for p in st.job_pods(job.name) if p.phase in POD_UNFINISHED and not p.deleting]
    pod = max(running, key=lambda p: (p.created_at or "", p.name)) if running else None
    where = f" (pod {pod.name} {pod.phase.lower()} since {pod.created_at})" if pod and pod.created_at else ""
    failed = int(rec.failed_attempts or 0)
    if not failed:
        return f"{step} Job {job.name} is running{where}"
    limit = _backoff_limit(spec, job)
    last = rec.attempts[-1] if rec.attempts else Attempt(exit_code=None)
    return (
        f"{step} Job {job.name}: attempt {failed + 1} of {limit + 1} running{where}; attempt {failed} failed "
        f"(exit code {last.exit_code}): {last.message}; {attempts_left(limit, failed)}"
    )


def _lock_wait(st: PlanState, step: str, rec: StepRecord, job: JobObs, version: str) -> str | None:
    """While the Job's pod runs, its runner may wait for another runner's migration lock: the reconciler reads
    the pod's log tail for the runner contract's lock-wait line (log_pods) and tells us what it found. A wait
    is recorded in the step (`lockWait`), with one Normal Event per pod and holder; the progress message (None
    when no pod of the Job waits) names the holder and since when, never anything else of the log."""
    running = sorted(
        (p for p in st.job_pods(job.name) if p.phase == POD_RUNNING and not p.deleting),
        key=lambda p: (p.created_at or "", p.name),
    )
    st.log_pods.extend(p.name for p in running)
    found = [(p, st.obs.lock_waits[p.name]) for p in running if p.name in st.obs.lock_waits]
    if not found:
        rec.lock_wait = None
        return None
    pod, wait = found[-1]
    record = LockWaitRecord(
        pod=pod.name,
        holder_pid=wait.holder_pid,
        holder_application=wait.holder_application,
        holder_since=wait.holder_since,
        since=wait.since,
    )
    text = (
        f"is waiting for the migration lock held by {describe_lock_holder(wait)}"
        + (f" since {wait.since}" if wait.since else "")
        + f" (pod {pod.name})"
    )
    previous = rec.lock_wait or LockWaitRecord()
    if (previous.pod, previous.holder_pid) != (pod.name, wait.holder_pid):
        st.event("Normal", names.EVENT_LOCK_WAIT, f"{step} Job {job.name} for release {version} {text}")
    rec.lock_wait = record
    return f"{step} Job {job.name} {text}"


def _blocked_pod(st: PlanState, job_name: str) -> str | None:
    for pod in st.job_pods(job_name):
        if pod.waiting_reason in BLOCKED_REASONS:
            return f"pod {pod.name} is {pod.waiting_reason}: {truncate(pod.waiting_message)}"
    return None


def describe_lock_holder(wait: LockWait) -> str:
    """`pid 4242 (application divbase-migrate, connected since T)`: the holder as the runner's log line names it
    (each part checked by contract.read_lock_wait), or `another session` when it could not say."""
    details = [
        f"application {wait.holder_application}" if wait.holder_application else "",
        f"connected since {wait.holder_since}" if wait.holder_since else "",
    ]
    shown = ", ".join(d for d in details if d)
    who = f"pid {wait.holder_pid}" if wait.holder_pid is not None else "another session"
    return f"{who} ({shown})" if shown else who
