"""One reconcile's working state: the children this resource controls, the status being built (typed), and what
was decided so far (actions, outcomes, the phase and the reason for it). The step modules (job_steps, contract_gate,
workloads) read and write it; planner.py turns it into a Decision."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from divbase_migrations.contract import MESSAGE_PROBLEM, SUMMARY_ERROR, describe_problems, printable

from . import names
from .builders import Owner
from .conditions import get_condition
from .decision import Action, EmitEvent, Observed, Outcome, Result
from .observed import (
    JOB_ACTIVE,
    JOB_FAILED,
    POD_UNFINISHED,
    ConfigMapObs,
    DeploymentObs,
    ForeignChild,
    JobObs,
    PodObs,
    ReplicaSetObs,
    read_summary,
)
from .policy import Policy
from .status import DatabaseStatus, Rollout


def iso(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:  # a timestamp of another shape (fractional seconds) is not worth a failed reconcile
        return None


def truncate(text: str | None, limit: int = names.MESSAGE_LIMIT) -> str:
    """Text from a child's status (a runner's summary, a pod's or Job's message) as it may reach status and Events:
    one printable line (no control or format characters) of at most `limit` characters."""
    return printable(text, limit)


def attempts_left(backoff_limit: int, failed: int) -> str:
    """A Job runs up to backoffLimit + 1 pods (it fails once more than backoffLimit failed); the one starting or
    running now counts as left."""
    left = max(0, backoff_limit + 1 - failed)
    return f"{left} attempt{'' if left == 1 else 's'} left"


def pod_error(pod: PodObs) -> str | None:
    """A migration pod's failure in the runner's words (its summary's `error`), else what can be said without
    quoting an untrusted message: the exit code and why there is no usable summary. None when the pod never said
    how it ended (the Job's own words are used then)."""
    summary, problems = read_summary(pod.termination_message)
    error = truncate(summary.get(SUMMARY_ERROR))
    if error:
        return error
    exit_code = pod.exit_code
    if problems and set(problems) != {MESSAGE_PROBLEM}:
        return f"exit code {exit_code}; the runner's summary is not valid: {describe_problems(problems)}"
    if exit_code is None:
        return None
    if problems:
        return f"exit code {exit_code}, no summary ({problems[MESSAGE_PROBLEM]})"
    return f"exit code {exit_code}, no summary"


def owned_jobs(jobs: tuple[JobObs, ...], uid: str) -> tuple[JobObs, ...]:
    """The Jobs this resource controls (controller ownerReference with its uid): the only ones it counts, waits for
    or deletes. Labels route a Job's events to the resource, they do not make it the resource's."""
    return tuple(j for j in jobs if j.owner_uid == uid)


def job_counts(job: JobObs) -> bool:
    """Whether the planner counts a Job of ours. A finished Job being deleted (ttlSecondsAfterFinished, in the
    foreground) still holds its result and its name: it is recorded, never created again. A running one being
    deleted (by hand, in the foreground: its pods are being killed) counts as gone, as after any other deletion: no
    step waits for it, and its own step asks for it again under the same name (AlreadyExists until it is gone);
    an old pod still running and the new one serialise on the runner's advisory lock."""
    return not job.deleting or job.state != JOB_ACTIVE


def owned_pods(
    pods: tuple[PodObs, ...],
    jobs: tuple[JobObs, ...],
    replicasets: tuple[ReplicaSetObs, ...] = (),
    deployments: tuple[DeploymentObs, ...] = (),
) -> tuple[PodObs, ...]:
    """The pods the planner reads, by ownership (labels are anyone's to set): a migration pod only when its
    controller ownerReference is one of `jobs` (by uid), named after that Job; a workload pod only when its
    controller is a ReplicaSet whose controller is one of `deployments` (by uid), or a ReplicaSet found `orphaned`
    (it or its Deployment is gone: the garbage collector deletes such pods, and until then they may still serve,
    so they count)."""
    by_uid = {j.uid: j.name for j in jobs if j.uid}
    ours = {d.uid for d in deployments if d.uid}
    trusted_sets = {rs.uid for rs in replicasets if rs.uid and (rs.orphaned or rs.deployment_uid in ours)}
    trusted = (_trusted_pod(pod, by_uid, trusted_sets) for pod in pods)
    return tuple(pod for pod in trusted if pod is not None)


def _trusted_pod(pod: PodObs, jobs_by_uid: dict[str, str], trusted_sets: set[str]) -> PodObs | None:
    if pod.owner_uid is not None or pod.job_name is not None:  # a migration pod: its Job must be ours
        return dataclasses.replace(pod, job_name=jobs_by_uid[pod.owner_uid]) if pod.owner_uid in jobs_by_uid else None
    return pod if pod.workload and pod.replicaset_uid in trusted_sets else None


def names_taken(obs: Observed) -> dict[tuple[str, str], ForeignChild]:
    """Names held by someone else's object: never created over, applied to or adopted (NameConflict)."""
    taken: dict[tuple[str, str], ForeignChild] = {(c.kind, c.name): c for c in obs.name_conflicts}
    for j in obs.jobs:
        if j.owner_uid != obs.uid:
            taken.setdefault(("Job", j.name), ForeignChild("Job", j.name, j.controller or "has no owner"))
    for c in obs.configmaps:
        if c.owner_uid != obs.uid:
            taken.setdefault(("ConfigMap", c.name), ForeignChild("ConfigMap", c.name, c.owner or "has no owner"))
    for d in obs.deployments:
        if d.owner_uid != obs.uid:
            owner = d.controller or (f"another {names.KIND} (uid {d.owner_uid})" if d.owner_uid else None)
            taken.setdefault(
                ("Deployment", d.name),
                ForeignChild("Deployment", d.name, f"is controlled by {owner}" if owner else "has no owner"),
            )
    return taken


class PlanState:
    """What one reconcile works on and has decided so far.

    Children count only when this resource is their controller (owner reference), whatever their labels say: a
    relabelled Job, Deployment or ConfigMap of someone else is neither changed, counted nor deleted, and a Job's
    pods count only when that Job is their controller (a forged pod's termination message is not read)."""

    def __init__(self, obs: Observed, now: datetime, policy: Policy) -> None:
        self.obs = obs
        self.now = now
        self.policy = policy
        self.ts = iso(now)
        self.status = DatabaseStatus.from_dict(obs.status)
        self.owner = Owner(obs.name, obs.namespace, obs.uid)
        owned = owned_jobs(obs.jobs, obs.uid)
        self.jobs = {j.name: j for j in owned if job_counts(j)}
        self.deployments = tuple(d for d in obs.deployments if d.owner_uid == obs.uid)
        self.pods = owned_pods(obs.pods, owned, obs.replicasets, self.deployments)
        self.configmaps: dict[str, ConfigMapObs] = {c.name: c for c in obs.configmaps if c.owner_uid == obs.uid}
        self.taken = names_taken(obs)
        self.conflicts: dict[tuple[str, str], ForeignChild] = {}
        self.actions: list[Action] = []
        self.outcomes: list[Outcome] = []
        self.requeue_after: float | None = None
        self.log_pods: list[str] = []
        # outcome of this reconcile, turned into phase and kstatus conditions at the end
        self.phase = names.PHASE_PENDING
        self.stalled: tuple[str, str] | None = None
        self.progress: tuple[str, str] = (names.REASON_PROGRESSING, "")
        self.ready = False

    @property
    def rollout(self) -> Rollout | None:
        return self.status.rollout

    # -- what was decided ---------------------------------------------------------------------------------------
    def event(self, kind: str, reason: str, message: str) -> None:
        self.actions.append(EmitEvent(kind, reason, truncate(message)))

    def outcome(self, step: str, result: Result) -> None:
        self.outcomes.append(Outcome(step, result))

    def stall(self, reason: str, message: str, event_reason: str | None = None, failed: str | None = None) -> None:
        """Stalled with `reason`; a Warning Event (`event_reason`) only when the message is new, and with it the
        outcome `failed` (the step that failed), so a repeated reconcile of the same failure counts it once."""
        previous = get_condition(self.status.conditions or [], names.COND_STALLED)
        repeated = bool(previous and previous.get("status") == "True" and previous.get("message") == message)
        self.stalled = (reason, message)
        if event_reason and not repeated:
            self.event("Warning", event_reason, message)
            if failed:
                self.outcome(failed, Result.FAILED)

    def requeue_within(self, seconds: float) -> None:
        self.requeue_after = min(self.requeue_after or seconds, seconds)

    def taken_name(self, kind: str, name: str) -> bool:
        """True when `name` is held by an object of `kind` this resource does not control: recorded as a conflict
        (Stalled NameConflict at the end), and the caller leaves it alone."""
        foreign = self.taken.get((kind, name))
        if foreign is None:
            return False
        self.conflicts[(kind, name)] = foreign
        return True

    # -- what the Jobs' pods say --------------------------------------------------------------------------------
    def job_pods(self, job_name: str) -> list[PodObs]:
        return [p for p in self.pods if p.job_name == job_name]

    def last_pod(self, job_name: str) -> PodObs | None:
        """The Job's most recently finished pod: its termination message is the runner's summary."""
        pods = sorted(self.job_pods(job_name), key=lambda p: (p.finished_at or "", p.created_at or ""))
        return pods[-1] if pods else None

    def runner_error(self, job: JobObs) -> tuple[str | None, int | None]:
        """(message, exit code) of the Job's last pod in the runner's own words: its summary's `error`; else what is
        wrong with its summary, or that there is none (`exit code N, no summary`). The termination message itself is
        never quoted: it is not the runner's summary then, and whatever the image printed must not reach status and
        Events (Jobs use terminationMessagePolicy File, never a log tail). (None, None) without a pod that ended."""
        last_pod = self.last_pod(job.name)
        if last_pod is None:
            return None, None
        return pod_error(last_pod), last_pod.exit_code

    def await_failed_pod(self, job: JobObs) -> bool:
        """True while a failed Job's pod may still show how it ended: then its result is not recorded yet.

        The Job and its pods come through separate watches, so the Job's Failed condition can be seen while its
        last pod still looks running here; recording then would keep Kubernetes' podFailurePolicy text ("Container
        migrate for pod ... failed with exit code 2 matching FailJob rule at index 0") instead of the runner's
        message. The pod's own update wakes the next reconcile; the grace only bounds a pod that never reports."""
        if job.state != JOB_FAILED:
            return False
        unfinished = [
            p for p in self.job_pods(job.name) if not p.deleting and p.exit_code is None and p.phase in POD_UNFINISHED
        ]
        if not unfinished:
            return False
        finished = parse_time(job.finished_at) or self.now
        remaining = names.FAILED_POD_GRACE_SECONDS - (self.now - finished).total_seconds()
        if remaining <= 0:
            return False
        self.requeue_within(remaining)
        return True

    def active_job_other_than(self, expected: str | None) -> JobObs | None:
        return next((j for j in self.jobs.values() if j.state == JOB_ACTIVE and j.name != expected), None)

    def retry_requested(self, rollout: Rollout) -> bool:
        """A retry annotation value not seen before re-arms the failed step, once."""
        token = self.obs.annotations.get(names.ANNOTATION_RETRY, "")
        if token and token != rollout.retry_token:
            rollout.retry_token = token
            return True
        return False
