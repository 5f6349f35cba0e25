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
import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from divbase_migrations.contract import (
    DIGEST_PATTERN,
    MESSAGE_PROBLEM,
    SUMMARY_DIGEST,
    SUMMARY_ERROR,
    SUMMARY_FOUND,
    SUMMARY_REVISIONS,
    SUMMARY_SQL_TRUNCATED,
    SUMMARY_SQL_Z,
    SUMMARY_TO,
    LockWait,
    describe_problems,
    printable,
    read_plan,
)
from divbase_migrations.release_version import same_release

from . import names
from .builders import (
    ApprovedPlan,
    Owner,
    build_deployment,
    build_job,
    build_plan_configmap,
    migration_job_name,
    plan_data_fingerprint,
)
from .conditions import set_condition
from .observed import (
    JOB_ACTIVE,
    JOB_FAILED,
    JOB_SUCCEEDED,
    ConfigMapObs,
    DeploymentObs,
    ForeignChild,
    ForeignDeployment,
    JobObs,
    PodObs,
    ReplicaSetObs,
    read_summary,
)
from .policy import Policy
from .spec import DatabaseSpec, parse_spec, pinned_image, privileged_errors, version_key

# Step record phases in status.rollout.steps.<step>.phase
PENDING, RUNNING, SUCCEEDED, FAILED, SKIPPED = "Pending", "Running", "Succeeded", "Failed", "Skipped"
WAITING, ROLLING_BACK, ROLLED_BACK = "Waiting", "RollingBack", "RolledBack"
DONE_PHASES = (SUCCEEDED, SKIPPED)
# Pod waiting reasons that mean a migration pod cannot start without someone fixing something.
BLOCKED_REASONS = frozenset({
    "CreateContainerConfigError", "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ImageNotMapped",
    "CreateContainerError", "CrashLoopBackOff",
})


@dataclass(frozen=True)
class Observed:
    name: str
    namespace: str
    uid: str
    generation: int
    annotations: dict[str, str]
    spec: dict[str, Any]
    status: dict[str, Any]
    jobs: tuple[JobObs, ...] = ()
    deployments: tuple[DeploymentObs, ...] = ()
    pods: tuple[PodObs, ...] = ()
    foreign: tuple[ForeignDeployment, ...] = ()  # Deployments of our workloads' names that are not ours (looked up
    # when foreign_lookup_needed says so: they are not in the operator's label-selected watch)
    configmaps: tuple[ConfigMapObs, ...] = ()  # the plan ConfigMap, when there is one
    name_conflicts: tuple[ForeignChild, ...] = ()  # objects outside the watch holding a name an action wanted
    # (the reconciler reads by name what the planner would create: conflict_lookups)
    lock_waits: dict[str, LockWait] = field(default_factory=dict)  # running migration pod -> the lock wait its log
    # tail reports (read by the reconciler for the pods Decision.log_pods names)
    replicasets: tuple[ReplicaSetObs, ...] = ()  # the workload pods' ReplicaSets (watched, or read by name when a
    # pod's chain of controllers is not in the watch: workload_chain_lookups)


@dataclass(frozen=True)
class CreateJob:
    body: dict[str, Any]


@dataclass(frozen=True)
class ApplyDeployment:
    body: dict[str, Any]
    force: bool = False  # only for a Deployment observed as this resource's: its apply wins over other managers


@dataclass(frozen=True)
class DeleteDeployment:
    name: str
    uid: str | None = None  # deleted only while it is still this object (a precondition), not a namesake since


@dataclass(frozen=True)
class EmitEvent:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class ApplyConfigMap:
    body: dict[str, Any]
    force: bool = False  # only for the plan ConfigMap observed as this resource's (republishing over an edit)


Action = CreateJob | ApplyDeployment | DeleteDeployment | EmitEvent | ApplyConfigMap


@dataclass
class Decision:
    status: dict[str, Any]
    actions: list[Action] = field(default_factory=list)
    requeue_after: float | None = None  # only for timers the cluster cannot wake us for (contract delay, the
    # bound on waiting for a failed Job's pod)
    log_pods: tuple[str, ...] = ()  # running pods of a step's Job whose log tail may show a lock wait: the
    # reconciler reads them (bounded, every LOCK_WAIT_PROBE_SECONDS) only while a decision names some


def _iso(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:  # a timestamp of another shape (fractional seconds) is not worth a failed reconcile
        return None


def _truncate(text: str | None, limit: int = names.MESSAGE_LIMIT) -> str:
    """Text from a child's status (a runner's summary, a pod's or Job's message) as it may reach status and Events:
    one printable line (no control or format characters) of at most `limit` characters."""
    return printable(text, limit)


def _attempts_left(backoff_limit: int, failed: int) -> str:
    """A Job runs up to backoffLimit + 1 pods (it fails once more than backoffLimit failed); the one starting or
    running now counts as left."""
    left = max(0, backoff_limit + 1 - failed)
    return f"{left} attempt{'' if left == 1 else 's'} left"


def _pod_error(pod: PodObs) -> str | None:
    """A migration pod's failure in the runner's words (its summary's `error`), else what can be said without
    quoting an untrusted message: the exit code and why there is no usable summary. None when the pod never said
    how it ended (the Job's own words are used then)."""
    summary, problems = read_summary(pod.termination_message)
    error = _truncate(summary.get(SUMMARY_ERROR))
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


# The parts of a plan's summary the approval rests on: any problem with one of them fails the plan.
PLAN_KEYS = (MESSAGE_PROBLEM, SUMMARY_DIGEST, SUMMARY_REVISIONS, SUMMARY_SQL_Z, SUMMARY_SQL_TRUNCATED)


def decide(obs: Observed, now: datetime, policy: Policy | None = None) -> Decision:
    """The next actions and status for `obs`; `policy` is what the operator's own flags allow a resource."""
    return _Planner(obs, now, policy or Policy()).run()


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
        start = _parse_time(job.started_at) or _parse_time(job.created_at)
        deadline = start + timedelta(seconds=job.active_deadline_seconds) \
            if start is not None and job.active_deadline_seconds else None
        if deadline is None or now < deadline + timedelta(seconds=names.DELETION_JOB_GRACE_SECONDS):
            waiting.append((job, deadline))
    if not waiting:
        overdue = f" ({', '.join(j.name for j in running)} still running past its deadline)" if running else ""
        return Deletion((), f"deleting the migration Jobs and workloads; the database is left as it is{overdue}")
    parts = [f"{job.step} Job {job.name} (release {job.version}"
             + (f"; its activeDeadlineSeconds ends it by {_iso(deadline)}" if deadline else "") + ")"
             for job, deadline in waiting]
    bounds = [(deadline + timedelta(seconds=names.DELETION_JOB_GRACE_SECONDS) - now).total_seconds()
              for _, deadline in waiting if deadline is not None]
    return Deletion(tuple(job.name for job, _ in waiting),
                    f"deleted: waiting for {', '.join(parts)} to finish before removing the Jobs and workloads",
                    requeue_after=min(bounds) if bounds else None)


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


def owned_pods(pods: tuple[PodObs, ...], jobs: tuple[JobObs, ...], replicasets: tuple[ReplicaSetObs, ...] = (),
               deployments: tuple[DeploymentObs, ...] = ()) -> tuple[PodObs, ...]:
    """The pods the planner reads, by ownership (labels are anyone's to set): a migration pod only when its
    controller ownerReference is one of `jobs` (by uid), named after that Job; a workload pod only when its
    controller is a ReplicaSet whose controller is one of `deployments` (by uid), or a ReplicaSet found `orphaned`
    (it or its Deployment is gone: the garbage collector deletes such pods, and until then they may still serve,
    so they count)."""
    by_uid = {j.uid: j.name for j in jobs if j.uid}
    ours = {d.uid for d in deployments if d.uid}
    trusted_sets = {rs.uid for rs in replicasets if rs.uid and (rs.orphaned or rs.deployment_uid in ours)}
    trusted = []
    for pod in pods:
        if pod.owner_uid is not None or pod.job_name is not None:
            if pod.owner_uid in by_uid:
                trusted.append(dataclasses.replace(pod, job_name=by_uid[pod.owner_uid]))
        elif pod.workload and pod.replicaset_uid in trusted_sets:
            trusted.append(pod)
    return tuple(trusted)


def workload_chain_lookup(pod: PodObs, replicasets: dict[str, ReplicaSetObs], ours: set[str],
                          seen: set[str]) -> tuple[str, str, str] | None:
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


def _sql_left_out(configmap: dict[str, Any]) -> bool:
    """Whether a plan ConfigMap the operator builds carries a note instead of the SQL (too large, or lost): recorded
    in status, the only place the kubectl plugin believes it (anyone who may edit ConfigMaps can set the key)."""
    return bool(configmap["data"][names.PLAN_DATA_TRUNCATED] == "true")


def conflict_lookups(decision: Decision, obs: Observed) -> list[tuple[str, str]]:
    """(kind, name) of each object `decision` would create that the watch does not show at all: the reconciler reads
    it by name before acting, since an object of that name outside the watch is someone else's (NameConflict)."""
    seen = {("Job", j.name) for j in obs.jobs} | {("Deployment", d.name) for d in obs.deployments} \
        | {("ConfigMap", c.name) for c in obs.configmaps} | {(c.kind, c.name) for c in obs.name_conflicts}
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
    ts = _iso(now)
    new["observedGeneration"] = generation  # setting deletionTimestamp bumps the generation: this one is seen
    new["phase"] = names.PHASE_TERMINATING
    conds = new.get("conditions") or []
    conds = set_condition(conds, names.COND_READY, False, names.REASON_TERMINATING, message, generation, ts)
    conds = set_condition(conds, names.COND_RECONCILING, True, names.REASON_TERMINATING, message, generation, ts)
    conds = set_condition(conds, names.COND_STALLED, False, names.REASON_TERMINATING, "", generation, ts)
    new["conditions"] = _in_display_order(conds)
    return new


def foreign_lookup_needed(status: dict[str, Any], version: Any) -> bool:
    """Whether Deployments of our workloads' names missing from the watch must be looked up (a GET each): before a
    rollout starts (so a foreign one is reported before any step runs), before a first install creates its
    workloads, and while a foreign one holds the resource up. Not during the migration steps in between, nor once
    the workloads exist: every reconcile would cost a read per workload."""
    conditions = status.get("conditions") or []
    if any(c.get("type") == names.COND_STALLED and c.get("status") == "True"
           and c.get("reason") == names.REASON_FOREIGN_DEPLOYMENT for c in conditions):
        return True
    rollout = status.get("rollout")
    if not rollout or rollout.get("toVersion") != version:
        return True
    steps = rollout.get("steps") or {}
    migrations_done = all((steps.get(step) or {}).get("phase") in DONE_PHASES for step in names.JOB_STEPS)
    return migrations_done or (steps.get(names.STEP_DEPLOY) or {}).get("phase") not in (PENDING, None)


class _Planner:
    """One reconcile's worth of reasoning; holds the status being built and the actions collected."""

    def __init__(self, obs: Observed, now: datetime, policy: Policy) -> None:
        self.obs = obs
        self.now = now
        self.policy = policy
        self.ts = _iso(now)
        self.status: dict[str, Any] = copy.deepcopy(obs.status or {})
        self.actions: list[Action] = []
        self.requeue_after: float | None = None
        self.owner = Owner(obs.name, obs.namespace, obs.uid)
        # Children count only when this resource is their controller (owner reference), whatever their labels say:
        # a relabelled Job, Deployment or ConfigMap of someone else is neither changed, counted nor deleted, and a
        # Job's pods count only when that Job is their controller (a forged pod's termination message is not read)
        owned = owned_jobs(obs.jobs, obs.uid)
        self.jobs = {j.name: j for j in owned if job_counts(j)}
        self.deployments = tuple(d for d in obs.deployments if d.owner_uid == obs.uid)
        self.pods = owned_pods(obs.pods, owned, obs.replicasets, self.deployments)
        self.configmaps = {c.name: c for c in obs.configmaps if c.owner_uid == obs.uid}
        # names held by someone else's object: never created over, applied to or adopted (NameConflict)
        self.taken: dict[tuple[str, str], ForeignChild] = {(c.kind, c.name): c for c in obs.name_conflicts}
        for j in obs.jobs:
            if j.owner_uid != obs.uid:
                self.taken.setdefault(("Job", j.name), ForeignChild("Job", j.name, j.controller or "has no owner"))
        for c in obs.configmaps:
            if c.owner_uid != obs.uid:
                self.taken.setdefault(("ConfigMap", c.name),
                                      ForeignChild("ConfigMap", c.name, c.owner or "has no owner"))
        for d in obs.deployments:
            if d.owner_uid != obs.uid:
                owner = d.controller or (f"another {names.KIND} (uid {d.owner_uid})" if d.owner_uid else None)
                self.taken.setdefault(("Deployment", d.name), ForeignChild(
                    "Deployment", d.name, f"is controlled by {owner}" if owner else "has no owner"))
        self.foreign = {name for kind, name in self.taken if kind == "Deployment"}
        self.conflicts: dict[tuple[str, str], ForeignChild] = {}
        self.spec: DatabaseSpec | None = None
        # outcome of this reconcile, turned into phase and kstatus conditions at the end
        self.phase = names.PHASE_PENDING
        self.stalled: tuple[str, str] | None = None
        self.progress: tuple[str, str] = (names.REASON_PROGRESSING, "")
        self.ready = False
        self.log_pods: list[str] = []

    # -- entry --------------------------------------------------------------------------------------------------
    def run(self) -> Decision:
        self.status["observedGeneration"] = self.obs.generation
        self.status.setdefault("conditions", [])
        refused = self.policy.namespace_refusal(self.obs.namespace)
        spec, errors = parse_spec(self.obs.spec)
        if refused is None and spec is not None and not self.policy.allow_privileged_workloads:
            errors = privileged_errors(spec)
            spec = None if errors else spec
        if refused is None and spec is not None:
            refused = self.policy.spec_refusal(spec)
        if refused is not None:  # nothing is created, changed or deleted for it
            self._stall(refused.reason, printable(refused.message), event_reason=refused.reason)
            self.phase = names.PHASE_FAILED
            return self._finish()
        if errors or spec is None:
            message = printable("; ".join(str(e) for e in errors))
            self._stall(names.REASON_INVALID_SPEC, message, event_reason=names.EVENT_INVALID_SPEC)
            self.phase = names.PHASE_FAILED
            return self._finish()
        self.spec = spec
        self.status["targetVersion"] = spec.version
        self.status.pop("activeJob", None)  # set again below only while a Job of ours really runs
        self._sync_recorded_jobs()
        if spec.paused:
            self._paused()
            return self._finish()
        self._reconcile_rollout()
        return self._finish()

    # -- status bookkeeping -------------------------------------------------------------------------------------
    def _taken(self, kind: str, name: str) -> bool:
        """True when `name` is held by an object of `kind` this resource does not control: recorded as a conflict
        (Stalled NameConflict at the end), and the caller leaves it alone."""
        foreign = self.taken.get((kind, name))
        if foreign is None:
            return False
        self.conflicts[(kind, name)] = foreign
        return True

    def _event(self, kind: str, reason: str, message: str) -> None:
        self.actions.append(EmitEvent(kind, reason, _truncate(message)))

    def _stall(self, reason: str, message: str, event_reason: str | None = None) -> None:
        previous = next((c for c in self.status.get("conditions", []) if c.get("type") == names.COND_STALLED), None)
        repeated = bool(previous and previous.get("status") == "True" and previous.get("message") == message)
        self.stalled = (reason, message)
        if event_reason and not repeated:
            self._event("Warning", event_reason, message)

    def _rollout(self) -> dict[str, Any] | None:
        return self.status.get("rollout")

    def _sync_recorded_jobs(self) -> None:
        """Fold finished Jobs into the rollout record, even when the spec has moved on since."""
        rollout = self._rollout()
        if not rollout:
            return
        assert self.spec is not None
        for step in names.JOB_STEPS:
            rec = rollout["steps"].get(step) or {}
            job = self.jobs.get(rec.get("job") or "")
            if rec.get("phase") == RUNNING and job is not None and job.state != JOB_ACTIVE:
                if rollout["toVersion"] == self.spec.version and self._await_failed_pod(job):
                    continue  # recorded once its pod has said how it ended (_job_step reports the wait)
                self._record_job_result(step, rec, job, rollout["toVersion"])

    def _last_pod(self, job_name: str) -> PodObs | None:
        """The Job's most recently finished pod: its termination message is the runner's summary."""
        pods = sorted((p for p in self.pods if p.job_name == job_name),
                      key=lambda p: (p.finished_at or "", p.created_at or ""))
        return pods[-1] if pods else None

    def _runner_error(self, job: JobObs) -> tuple[str | None, int | None]:
        """(message, exit code) of the Job's last pod in the runner's own words: its summary's `error`; else what is
        wrong with its summary, or that there is none (`exit code N, no summary`). The termination message itself is
        never quoted: it is not the runner's summary then, and whatever the image printed must not reach status and
        Events (Jobs use terminationMessagePolicy File, never a log tail). (None, None) without a pod that ended."""
        last_pod = self._last_pod(job.name)
        if last_pod is None:
            return None, None
        return _pod_error(last_pod), last_pod.exit_code

    def _await_failed_pod(self, job: JobObs) -> bool:
        """True while a failed Job's pod may still show how it ended: then its result is not recorded yet.

        The Job and its pods come through separate watches, so the Job's Failed condition can be seen while its
        last pod still looks running here; recording then would keep Kubernetes' podFailurePolicy text ("Container
        migrate for pod ... failed with exit code 2 matching FailJob rule at index 0") instead of the runner's
        message. The pod's own update wakes the next reconcile; the grace only bounds a pod that never reports."""
        if job.state != JOB_FAILED:
            return False
        unfinished = [p for p in self.pods if p.job_name == job.name and not p.deleting and p.exit_code is None
                      and p.phase in ("Pending", "Running")]
        if not unfinished:
            return False
        finished = _parse_time(job.finished_at) or self.now
        remaining = names.FAILED_POD_GRACE_SECONDS - (self.now - finished).total_seconds()
        if remaining <= 0:
            return False
        self.requeue_after = min(self.requeue_after or remaining, remaining)
        return True

    def _refresh_failure(self, rec: dict[str, Any], job: JobObs | None) -> None:
        """A failure recorded without the runner's summary (its pod reported after the grace) takes the runner's
        message once the summary is seen, with a Warning Event that carries it."""
        failure = self.status.get("lastFailure")
        if job is None or not failure or failure.get("job") != job.name:
            return
        last_pod = self._last_pod(job.name)
        error = _truncate(read_summary(last_pod.termination_message if last_pod else None)[0].get(SUMMARY_ERROR))
        if not error or error == failure.get("message"):
            return
        assert last_pod is not None
        failure.update(message=error, exitCode=last_pod.exit_code)
        rec["message"] = failure["message"]
        self._event("Warning", names.EVENT_JOB_FAILED,
                    f"{failure.get('step')} Job {job.name} for release {failure.get('version')} failed "
                    f"({failure.get('reason')}, exit code {last_pod.exit_code}): {failure['message']}")

    def _record_job_result(self, step: str, rec: dict[str, Any], job: JobObs, version: str) -> None:
        rec.pop("lockWait", None)  # a finished Job waits for nothing
        last_pod = self._last_pod(job.name)
        summary, problems = read_summary(last_pod.termination_message if last_pod else None)
        rec["finishedAt"] = job.finished_at or self.ts
        if job.state == JOB_SUCCEEDED:
            rec["phase"] = SUCCEEDED
            rec["message"] = f"Job {job.name} succeeded"
            if problems:  # the exit code decides; a broken summary only costs the revisions it would have named
                rec["message"] += f" (its summary is not valid: {_truncate(describe_problems(problems))})"
            schema = self.status.setdefault("schema", {})
            key = "expandedTo" if step == names.STEP_EXPAND else "contractedTo"
            if not schema.get(key) or version_key(schema[key]) < version_key(version):
                schema[key] = version
            revisions = summary.get(SUMMARY_TO) if isinstance(summary.get(SUMMARY_TO), dict) else None
            if revisions:
                schema.setdefault("revisions", {}).update({k: v for k, v in revisions.items() if v})
            found, rollout = summary.get(SUMMARY_FOUND), self._rollout()
            if step == names.STEP_EXPAND and isinstance(found, str) and found and rollout is not None \
                    and rollout.get("fromVersion") is None and rollout.get("toVersion") == version:
                rollout["foundVersion"] = found  # a first rollout on a migrated database: what it found there
            self._event("Normal", names.EVENT_JOB_SUCCEEDED, f"{step} Job {job.name} for release {version} succeeded")
            return
        rec["phase"] = FAILED
        error, exit_code = self._runner_error(job)
        error = error or job.message  # Kubernetes' own words only when no pod of the Job said anything
        failure = {
            "step": step,
            "version": version,
            "job": job.name,
            "reason": printable(job.reason, 64) or "Failed",
            "exitCode": exit_code,
            "message": _truncate(error or "the Job failed without a message"),
            "time": rec["finishedAt"],
        }
        attempts = max(job.failed, sum(1 for p in self.pods if p.job_name == job.name and p.phase == "Failed"))
        if attempts:
            failure["attempts"] = attempts
        rec["message"] = failure["message"]
        self.status["lastFailure"] = failure
        self._event("Warning", names.EVENT_JOB_FAILED,
                    f"{step} Job {job.name} for release {version} failed ({failure['reason']}, exit code "
                    f"{exit_code}): {failure['message']}")

    # -- paused -------------------------------------------------------------------------------------------------
    def _paused(self) -> None:
        self.phase = names.PHASE_PAUSED
        self.ready = self._converged()
        self.progress = (names.REASON_PAUSED, "spec.paused is true: no step starts until it is false")

    def _converged(self) -> bool:
        rollout = self._rollout()
        assert self.spec is not None
        return bool(
            rollout and rollout.get("finishedAt") and rollout.get("result") == names.RESULT_SUCCEEDED
            and rollout["toVersion"] == self.spec.version and self._workloads_complete(self.spec.version)
        )

    # -- the rollout ------------------------------------------------------------------------------------------
    def _active_foreign_job(self, expected: str | None) -> JobObs | None:
        return next((j for j in self.jobs.values() if j.state == JOB_ACTIVE and j.name != expected), None)

    def _foreign_deployments(self) -> list[ForeignDeployment]:
        """Deployments with our workloads' names that another owner has (or nobody, without our labels)."""
        assert self.spec is not None
        wanted = {names.deployment_name(self.obs.name, w.name) for w in self.spec.workloads}
        found = {f.name: f for f in self.obs.foreign if f.name in wanted}
        for d in self.obs.deployments:
            if d.name in wanted and d.controller_uid and d.controller_uid != self.obs.uid:
                found.setdefault(d.name, ForeignDeployment(d.name, f"is controlled by {d.controller}"))
        return [found[name] for name in sorted(found)]

    def _refuse_foreign(self, foreign: list[ForeignDeployment]) -> None:
        """Nothing runs (no Job, no Deployment change) while a workload's Deployment belongs to someone else: server-
        side apply would take it over field by field and fail on its immutable selector halfway through a rollout.
        A Job of ours already running finishes (it is never stopped); its result is recorded."""
        which = "; ".join(f"Deployment {f.name} {f.owner}" for f in foreign)
        first = foreign[0].name
        self.phase = names.PHASE_FAILED
        self.requeue_after = names.FOREIGN_RECHECK_SECONDS
        self._stall(names.REASON_FOREIGN_DEPLOYMENT,
                    f"{which}: not managed by this {names.KIND}, so no step runs. Hand it over: delete it "
                    f"(kubectl -n {self.obs.namespace} delete deployment {first} --cascade=orphan keeps its pods "
                    f"serving until the operator's own are ready; docs/operator.md, \"Adopting an existing "
                    f"Deployment\")", event_reason=names.EVENT_FOREIGN_DEPLOYMENT)

    def _reconcile_rollout(self) -> None:
        assert self.spec is not None
        spec = self.spec
        foreign = self._foreign_deployments()
        if foreign:
            self._refuse_foreign(foreign)
            return
        rollout = self._rollout()
        if rollout is None or rollout["toVersion"] != spec.version:
            running = self._active_foreign_job(None)
            if running is not None:
                self.phase = self.status.get("phase") or names.PHASE_PENDING
                self.progress = (names.REASON_WAITING_FOR_JOB,
                                 f"waiting for {running.step} Job {running.name} (release {running.version}) to "
                                 f"finish before rolling out release {spec.version}")
                self.status["activeJob"] = running.name
                return
            if not self._start_rollout():
                return
        self._advance()

    def _start_rollout(self) -> bool:
        assert self.spec is not None
        target = self.spec.version
        current = self.status.get("currentVersion") or self._oldest_running_version()
        schema = self.status.get("schema") or {}
        old = self._rollout()
        contracted = schema.get("contractedTo")
        # a contract past the target refuses it, whatever runs: a first install contracts before any workload runs
        if contracted and version_key(contracted) > version_key(target):
            self.phase = names.PHASE_FAILED
            newest = max((v for v in (current, contracted) if v), key=version_key)
            before = f"the running release {current}, and the schema was contracted for release {contracted}" \
                if current else f"release {contracted}, whose contract already ran on the schema"
            self._stall(names.REASON_DOWNGRADE_REFUSED,
                        f"spec.version {target} is older than {before}: it no longer serves {target}. Set "
                        f"spec.version back to {newest} or newer.", event_reason=names.REASON_DOWNGRADE_REFUSED)
            return False
        if old and not old.get("finishedAt"):
            old["finishedAt"] = self.ts
            failed = any(rec.get("phase") in (FAILED, ROLLING_BACK, ROLLED_BACK) for rec in old["steps"].values())
            old["result"] = names.RESULT_FAILED if failed else names.RESULT_SUPERSEDED
            self._append_history(old)  # the history keeps what it names; the record itself is replaced below
        expanded, contracted = schema.get("expandedTo"), schema.get("contractedTo")
        steps = {
            names.STEP_EXPAND: {"phase": SKIPPED if expanded and version_key(expanded) >= version_key(target)
                                else PENDING},
            names.STEP_DEPLOY: {"phase": PENDING},
            names.STEP_CONTRACT: {"phase": SKIPPED if contracted and version_key(contracted) >= version_key(target)
                                  else PENDING},
        }
        self.status["rollout"] = {
            "fromVersion": current,
            "toVersion": target,
            "image": self.spec.release_image,
            "startedAt": self.ts,
            "retryToken": self.obs.annotations.get(names.ANNOTATION_RETRY, ""),
            "steps": steps,
        }
        self.status.pop("lastFailure", None)
        self._event("Normal", names.EVENT_ROLLOUT_STARTED, f"rolling out release {target} (from "
                                                           f"{current or 'an empty database'})")
        return True

    def _oldest_running_version(self) -> str | None:
        """Workloads may run a release that never finished rolling out (an install superseded mid-deploy)."""
        versions = {d.version for d in self.deployments if d.version}
        versions |= {p.version for p in self.pods if p.workload and p.version}
        return min(versions, key=version_key) if versions else None

    def _first_install(self) -> bool:
        """No release ran before: no workloads of an older release, and the database was empty (its expand did
        not find a release it served). Then contract may run before the workloads exist, without a policy."""
        rollout = self._rollout()
        assert rollout is not None
        return rollout.get("fromVersion") is None and not rollout.get("foundVersion")

    def _step_order(self) -> tuple[str, ...]:
        if self._first_install():
            return (names.STEP_EXPAND, names.STEP_CONTRACT, names.STEP_DEPLOY)
        return (names.STEP_EXPAND, names.STEP_DEPLOY, names.STEP_CONTRACT)

    def _advance(self) -> None:
        rollout = self._rollout()
        assert rollout is not None and self.spec is not None
        if rollout.get("finishedAt") and rollout.get("result") == names.RESULT_SUCCEEDED:
            self._steady()
            return
        for step in self._step_order():
            rec = rollout["steps"][step]
            if rec["phase"] in DONE_PHASES:
                continue
            done = self._deploy_step(rec) if step == names.STEP_DEPLOY else self._job_step(step, rec)
            if not done:
                if step != names.STEP_DEPLOY:
                    self._hold_workloads()
                return
        rollout["finishedAt"] = self.ts
        rollout["result"] = names.RESULT_SUCCEEDED
        self.status["currentVersion"] = rollout["toVersion"]
        self._append_history(rollout)
        origin = rollout.get("fromVersion") or (f"{rollout['foundVersion']}, found in the database"
                                                 if rollout.get("foundVersion") else "empty")
        self._event("Normal", names.EVENT_ROLLOUT_SUCCEEDED,
                    f"release {rollout['toVersion']} rolled out (from {origin})")
        self._steady()

    def _retry_requested(self) -> bool:
        """A retry annotation value not seen before re-arms the failed step, once."""
        rollout = self._rollout()
        assert rollout is not None
        token = self.obs.annotations.get(names.ANNOTATION_RETRY, "")
        if token and token != rollout.get("retryToken", ""):
            rollout["retryToken"] = token
            return True
        return False

    # -- migration Job steps ------------------------------------------------------------------------------------
    def _job_step(self, step: str, rec: dict[str, Any]) -> bool:
        rollout = self._rollout()
        assert rollout is not None and self.spec is not None
        version = rollout["toVersion"]
        self.phase = names.PHASE_EXPANDING if step == names.STEP_EXPAND else names.PHASE_CONTRACTING
        if rec["phase"] == FAILED:
            self._refresh_failure(rec, self.jobs.get(rec.get("job") or ""))
            if not self._retry_requested():
                self.phase = names.PHASE_FAILED
                failure = self.status.get("lastFailure") or {}
                self._stall(names.REASON_JOB_FAILED,
                            f"{step} for release {version} failed: {failure.get('message', rec.get('message', ''))}."
                            f" Set annotation {names.ANNOTATION_RETRY} to a new value to retry")
                return False
            self._event("Normal", names.EVENT_RETRY, f"retrying {step} for release {version}")
            rec.clear()
            rec["phase"] = PENDING
        if step == names.STEP_CONTRACT and not self._first_install() and not self._contract_allowed(rec):
            return False
        retry_token = rollout.get("retryToken", "")
        approved = self._approved_plan(step)
        name = rec.get("job") or migration_job_name(self.owner, self.spec, step, version, retry_token, approved)
        job = self.jobs.get(name)
        if job is None and self._taken("Job", name):
            self.progress = (names.REASON_NAME_CONFLICT, f"{step} Job {name} is not this resource's")
            return False
        if job is None:
            blocking = self._active_foreign_job(name)
            if blocking is not None:
                self.progress = (names.REASON_WAITING_FOR_JOB, f"waiting for Job {blocking.name} to finish")
                self.status["activeJob"] = blocking.name
                return False
            body = build_job(self.owner, self.spec, step, version, retry_token, approved)
            self.actions.append(CreateJob(body))
            if rec.get("job") != body["metadata"]["name"]:
                self._event("Normal", names.EVENT_JOB_CREATED, f"{step} Job {body['metadata']['name']} created for "
                                                               f"release {version}")
            rec.update(phase=RUNNING, job=body["metadata"]["name"], startedAt=rec.get("startedAt") or self.ts)
            self.status["activeJob"] = body["metadata"]["name"]
            self.progress = (names.REASON_JOB_RUNNING, f"{step} Job {body['metadata']['name']} started")
            return False
        rec.setdefault("job", job.name)
        rec.setdefault("startedAt", job.created_at or self.ts)
        if job.state == JOB_ACTIVE:
            rec["phase"] = RUNNING
            self.status["activeJob"] = job.name
            self._record_attempts(step, rec, job, version)
            blocked = self._blocked_pod(job.name)
            waiting = self._lock_wait(step, rec, job, version)
            if blocked:
                self.progress = (names.REASON_JOB_POD_BLOCKED, f"{step} Job {job.name}: {blocked}")
            elif waiting:
                self.progress = (names.REASON_LOCK_WAIT, waiting)
            else:
                self.progress = (names.REASON_JOB_RUNNING, self._attempt_progress(step, rec, job))
            return False
        self.status.pop("activeJob", None)
        rec.pop("lockWait", None)
        if rec["phase"] != SUCCEEDED and rec["phase"] != FAILED:
            if self._await_failed_pod(job):
                rec["phase"] = RUNNING
                self.progress = (names.REASON_JOB_RUNNING, f"{step} Job {job.name} failed; waiting for its pod's "
                                                           f"exit status and message")
                return False
            self._record_job_result(step, rec, job, version)
        if rec["phase"] == FAILED:  # just recorded: stalled, or retried at once for a token not used yet
            return self._job_step(step, rec)
        return True

    # -- attempts inside a Job: each failed pod, as it happens ------------------------------------------------------
    def _backoff_limit(self, job: JobObs) -> int:
        assert self.spec is not None
        return job.backoff_limit if job.backoff_limit is not None else self.spec.migration_job.backoff_limit

    def _record_attempts(self, step: str, rec: dict[str, Any], job: JobObs, version: str) -> None:
        """Each failed pod of a running Job is one failed attempt: recorded in the step (exit code, the runner's
        message) with a Warning Event, once per pod, while the Job controller starts the next one."""
        attempts: list[dict[str, Any]] = list(rec.get("attempts") or [])
        seen = {a.get("pod") for a in attempts}
        failed = sorted((p for p in self.pods if p.job_name == job.name and p.phase == "Failed"
                         and p.name not in seen), key=lambda p: (p.finished_at or "", p.created_at or "", p.name))
        limit = self._backoff_limit(job)
        for pod in failed:
            error = _pod_error(pod) or "the pod failed without a message"
            attempts.append({"pod": pod.name, "exitCode": pod.exit_code, "finishedAt": pod.finished_at or self.ts,
                             "message": _truncate(error, names.ATTEMPT_MESSAGE_LIMIT)})
            self._event("Warning", names.EVENT_ATTEMPT_FAILED,
                        f"{step} Job {job.name} for release {version}: attempt {len(attempts)} of {limit + 1} failed "
                        f"(pod {pod.name}, exit code {pod.exit_code}): {error}; "
                        f"{_attempts_left(limit, max(job.failed, len(attempts)))}")
        if attempts:
            rec["attempts"] = attempts[-(names.HISTORY_LIMIT + 1):]
            rec["failedAttempts"] = max(job.failed, len(attempts))

    def _attempt_progress(self, step: str, rec: dict[str, Any], job: JobObs) -> str:
        """`expand Job X is running (pod P since T)`, and after failed attempts which attempt this is, how the
        last one failed and how many retries are left. No durations: a message that changed with the clock would
        rewrite the status on every reconcile."""
        running = [p for p in self.pods if p.job_name == job.name and p.phase in ("Pending", "Running")
                   and not p.deleting]
        pod = max(running, key=lambda p: (p.created_at or "", p.name)) if running else None
        where = f" (pod {pod.name} {pod.phase.lower()} since {pod.created_at})" if pod and pod.created_at else ""
        failed = int(rec.get("failedAttempts") or 0)
        if not failed:
            return f"{step} Job {job.name} is running{where}"
        limit = self._backoff_limit(job)
        last = (rec.get("attempts") or [{}])[-1]
        return (f"{step} Job {job.name}: attempt {failed + 1} of {limit + 1} running{where}; attempt {failed} failed "
                f"(exit code {last.get('exitCode')}): {last.get('message', '')}; {_attempts_left(limit, failed)}")

    def _lock_wait(self, step: str, rec: dict[str, Any], job: JobObs, version: str) -> str | None:
        """While the Job's pod runs, its runner may wait for another runner's migration lock: the reconciler reads
        the pod's log tail for the runner contract's lock-wait line (log_pods) and tells us what it found. A wait
        is recorded in the step (`lockWait`), with one Normal Event per pod and holder; the progress message (None
        when no pod of the Job waits) names the holder and since when, never anything else of the log."""
        running = sorted((p for p in self.pods if p.job_name == job.name and p.phase == "Running" and not p.deleting),
                         key=lambda p: (p.created_at or "", p.name))
        self.log_pods.extend(p.name for p in running)
        found = [(p, self.obs.lock_waits[p.name]) for p in running if p.name in self.obs.lock_waits]
        if not found:
            rec.pop("lockWait", None)
            return None
        pod, wait = found[-1]
        record = {key: value for key, value in (
            ("pod", pod.name), ("holderPid", wait.holder_pid), ("holderApplication", wait.holder_application),
            ("holderSince", wait.holder_since), ("since", wait.since)) if value is not None}
        text = f"is waiting for the migration lock held by {describe_lock_holder(wait)}" + \
            (f" since {wait.since}" if wait.since else "") + f" (pod {pod.name})"
        previous = rec.get("lockWait") or {}
        if (previous.get("pod"), previous.get("holderPid")) != (pod.name, wait.holder_pid):
            self._event("Normal", names.EVENT_LOCK_WAIT, f"{step} Job {job.name} for release {version} {text}")
        rec["lockWait"] = record
        return f"{step} Job {job.name} {text}"

    def _approved_plan(self, step: str) -> ApprovedPlan | None:
        """The plan a Manual contract was approved against: its Job passes the digest to the runner
        (`--expect-digest`), which runs exactly that SQL or nothing, and runs the image the plan pod ran, by
        digest, when its runtime reported one. None for every other step or policy."""
        rollout = self._rollout()
        assert rollout is not None and self.spec is not None
        if step != names.STEP_CONTRACT or self.spec.contract.policy != "Manual" or rollout.get("fromVersion") is None:
            return None
        plan = self.status.get("contractPlan") or {}
        digest = plan.get("digest")
        if plan.get("version") != rollout["toVersion"] or not isinstance(digest, str):
            return None
        image = plan.get("image") if isinstance(plan.get("image"), str) else None
        return ApprovedPlan(digest, image) if DIGEST_PATTERN.fullmatch(digest) else None

    def _blocked_pod(self, job_name: str) -> str | None:
        for pod in self.pods:
            if pod.job_name == job_name and pod.waiting_reason in BLOCKED_REASONS:
                return f"pod {pod.name} is {pod.waiting_reason}: {_truncate(pod.waiting_message)}"
        return None

    def _contract_allowed(self, rec: dict[str, Any]) -> bool:
        rollout = self._rollout()
        assert rollout is not None and self.spec is not None
        version = rollout["toVersion"]
        policy = self.spec.contract
        if rec.get("job"):
            return True  # already started: the approval was given when it began
        if policy.policy == "Manual":
            plan = self._contract_plan(version)
            verdict = approval_verdict(self.obs.annotations.get(names.ANNOTATION_APPROVE_CONTRACT, ""), version,
                                       plan["digest"]) if plan else None
            if verdict is True:
                return True
            rec["phase"] = WAITING
            if plan is None:
                return False  # phase Contracting, reason PlanningContract: AwaitingContract means a plan to review
            self.phase = names.PHASE_AWAITING_CONTRACT
            exact = f"{names.ANNOTATION_APPROVE_CONTRACT}={version}@{_digest_hex(plan['digest'])[:12]}"
            if isinstance(verdict, str):
                self.progress = (names.REASON_PLAN_CHANGED, f"{verdict}; review ConfigMap {plan['configMap']} "
                                                            f"and approve again with annotation {exact}")
                return False
            self.progress = (names.REASON_AWAITING_APPROVAL,
                             f"workloads run release {version}; review the contract's SQL in ConfigMap "
                             f"{plan['configMap']}, then approve with annotation {exact}")
            return False
        if policy.policy == "Delayed":
            deployed = _parse_time(rollout["steps"][names.STEP_DEPLOY].get("finishedAt")) or self.now
            remaining = policy.delay_seconds - (self.now - deployed).total_seconds()
            if remaining > 0:
                rec["phase"] = WAITING
                self.phase = names.PHASE_AWAITING_CONTRACT
                self.requeue_after = remaining
                self.progress = (names.REASON_CONTRACT_DELAYED,
                                 f"contract of release {version} starts in {int(remaining + 0.999)}s")
                return False
        return True

    def _contract_plan(self, version: str) -> dict[str, Any] | None:
        """The plan a Manual contract is approved against: a read-only Job renders the SQL, published in a
        ConfigMap; None while it is being made (or failed: then Stalled, retried like any step)."""
        rollout = self._rollout()
        assert rollout is not None and self.spec is not None
        retry_token = rollout.get("retryToken", "")
        name = migration_job_name(self.owner, self.spec, names.STEP_PLAN, version, retry_token)
        recorded = self.status.get("contractPlan")
        if recorded and recorded.get("job") == name:
            self._keep_plan_published(recorded)
            return recorded
        job = self.jobs.get(name)
        if job is None and self._taken("Job", name):
            return None
        if job is None:
            self.actions.append(CreateJob(build_job(self.owner, self.spec, names.STEP_PLAN, version, retry_token)))
            self.status["activeJob"] = name
            self.progress = (names.REASON_PLANNING_CONTRACT, f"rendering the contract's SQL for review (Job {name})")
            return None
        if job.state == JOB_ACTIVE:
            self.status["activeJob"] = name
            self.progress = (names.REASON_PLANNING_CONTRACT, f"rendering the contract's SQL for review (Job {name})")
            return None
        if self._await_failed_pod(job):
            self.progress = (names.REASON_PLANNING_CONTRACT, f"plan Job {name} failed; waiting for its pod's message")
            return None
        last_pod = self._last_pod(name)
        summary, problems = read_summary(last_pod.termination_message if last_pod else None)
        digest = summary.get(SUMMARY_DIGEST)
        sql, sql_problem = read_plan(summary)
        invalid = [problems[key] for key in PLAN_KEYS if key in problems] + ([sql_problem] if sql_problem else [])
        usable = job.state == JOB_SUCCEEDED and isinstance(digest, str) and not invalid
        if not usable and self._retry_requested():
            self._event("Normal", names.EVENT_RETRY, f"retrying the contract plan for release {version}")
            return self._contract_plan(version)  # a new retry token names a new plan Job
        if not usable:
            if job.state == JOB_SUCCEEDED and invalid:
                error = f"it succeeded but its plan is not valid: {'; '.join(invalid)}"
            elif job.state == JOB_SUCCEEDED:
                error = ("it succeeded but left no plan in its termination message (does the image's "
                         "divbase-migrate predate reviewed contracts?)")
            else:
                error = self._runner_error(job)[0] or job.message or "no message"
            self._stall(names.REASON_JOB_FAILED, f"contract plan Job {name} failed: {_truncate(str(error))}. Set "
                        f"annotation {names.ANNOTATION_RETRY} to a new value to retry",
                        event_reason=names.EVENT_JOB_FAILED)
            return None
        assert isinstance(digest, str)
        revisions = list(summary.get(SUMMARY_REVISIONS) or [])
        configmap = build_plan_configmap(self.owner, version, name, digest, sql, revisions)
        if self._taken("ConfigMap", configmap["metadata"]["name"]):
            return None  # not published, not recorded: published once the name is free
        self.actions.append(ApplyConfigMap(configmap, force=configmap["metadata"]["name"] in self.configmaps))
        plan = {"version": version, "job": name, "digest": digest, "revisions": revisions,
                "configMap": configmap["metadata"]["name"], "published": plan_data_fingerprint(configmap["data"]),
                "truncated": _sql_left_out(configmap)}
        pinned = pinned_image(self.spec.migration_image(version), last_pod.image_id if last_pod else None)
        if pinned:  # the contract runs the image that rendered the plan, not whatever the tag names by then
            plan["image"] = pinned
        self.status["contractPlan"] = plan
        self._event("Normal", names.EVENT_CONTRACT_PLANNED,
                    f"contract of release {version} planned ({len(revisions)} revision(s)); review ConfigMap "
                    f"{plan['configMap']}, then approve with annotation {names.ANNOTATION_APPROVE_CONTRACT}="
                    f"{version}@{_digest_hex(digest)[:12]}")
        return plan

    def _keep_plan_published(self, plan: dict[str, Any]) -> None:
        """The plan ConfigMap must hold what the operator published (status, which only the operator writes,
        records its fingerprint): anyone who may edit ConfigMaps could otherwise change what a reviewer reads.
        Changed, or deleted, it is published again from the plan pod's summary (or, that pod gone, as a note
        naming the digest and how to render the SQL)."""
        recorded = plan.get("published")
        if not isinstance(recorded, str):
            return  # published by an operator that did not record it
        if self._taken("ConfigMap", str(plan.get("configMap"))):
            return  # someone else's ConfigMap holds the name now: not overwritten (NameConflict)
        seen = self.configmaps.get(str(plan.get("configMap")))
        if seen is not None and seen.fingerprint == recorded:
            if not isinstance(plan.get("truncated"), bool):  # recorded by an operator that did not say: as published
                plan["truncated"] = seen.truncated
            return
        last_pod = self._last_pod(plan["job"])
        summary = read_summary(last_pod.termination_message if last_pod else None)[0]
        sql, _ = read_plan(summary)
        lost = sql is None and summary.get(SUMMARY_DIGEST) != plan["digest"]
        configmap = build_plan_configmap(self.owner, plan["version"], plan["job"], plan["digest"],
                                         None if lost else sql, list(plan.get("revisions") or []), lost=lost)
        self.actions.append(ApplyConfigMap(configmap, force=seen is not None))
        plan["published"] = plan_data_fingerprint(configmap["data"])
        plan["truncated"] = _sql_left_out(configmap)
        if seen is not None and seen.job == plan["job"]:  # not merely an older plan the watch has not updated yet
            self._event("Warning", names.EVENT_PLAN_REPUBLISHED,
                        f"ConfigMap {plan['configMap']} was changed after the operator published it; published "
                        f"the plan {_digest_hex(plan['digest'])[:12]} of release {plan['version']} again")

    # -- workloads ----------------------------------------------------------------------------------------------
    def _desired_deployments(self, version: str) -> list[dict[str, Any]]:
        assert self.spec is not None
        restricted = not self.policy.allow_privileged_workloads
        return [build_deployment(self.owner, self.spec, w, version, restricted) for w in self.spec.workloads]

    def _apply_workloads(self, version: str) -> None:
        """Create or update each workload whose observed state differs from what `version` wants."""
        observed = {d.name: d for d in self.deployments}
        wanted = self._desired_deployments(version)
        for body in wanted:
            if self._taken("Deployment", body["metadata"]["name"]):
                continue
            seen = observed.get(body["metadata"]["name"])
            images = tuple(c.get("image", "") if isinstance(c, dict) else ""  # the apiserver refuses the rest
                           for c in body["spec"]["template"]["spec"]["containers"])
            desired_hash = body["metadata"]["annotations"][names.ANNOTATION_SPEC_HASH]
            if seen is None or seen.spec_hash != desired_hash or seen.images != images or seen.version != version:
                self.actions.append(ApplyDeployment(body, force=seen is not None))
        wanted_names = {b["metadata"]["name"] for b in wanted}
        for name in sorted(set(observed) - wanted_names):
            self.actions.append(DeleteDeployment(name, observed[name].uid))

    def _workloads_at(self, version: str) -> list[DeploymentObs]:
        assert self.spec is not None
        wanted = {names.deployment_name(self.obs.name, w.name) for w in self.spec.workloads}
        return [d for d in self.deployments if d.name in wanted and d.version == version]

    def _workloads_complete(self, version: str) -> bool:
        assert self.spec is not None
        at_version = self._workloads_at(version)
        if len(at_version) != len(self.spec.workloads) or not all(d.rollout_complete for d in at_version):
            return False
        return not self._old_pods(version)

    def _old_pods(self, version: str) -> list[PodObs]:
        return [p for p in self.pods if p.workload and p.version != version]

    def _workload_progress(self, version: str) -> str:
        assert self.spec is not None
        parts = []
        for d in self._workloads_at(version):
            parts.append(f"{d.workload} {d.updated_replicas}/{d.replicas} updated, {d.available_replicas} available")
        missing = len(self.spec.workloads) - len(parts)
        if missing:
            parts.append(f"{missing} workload(s) not yet at release {version}")
        old = self._old_pods(version)
        if old:
            parts.append(f"{len(old)} pod(s) of other releases left")
        return "; ".join(parts) or "no workloads"

    def _hold_workloads(self) -> None:
        """While a migration step runs, workloads stay exactly as they are; only a deleted one is recreated."""
        rollout = self._rollout()
        assert rollout is not None
        deploy = rollout["steps"][names.STEP_DEPLOY]
        if deploy["phase"] in (RUNNING, SUCCEEDED):
            self._apply_workloads(rollout["toVersion"])
        elif rollout.get("fromVersion"):
            present = {d.name for d in self.deployments}
            for body in self._desired_deployments(rollout["fromVersion"]):
                name = body["metadata"]["name"]
                if name not in present and not self._taken("Deployment", name):
                    self.actions.append(ApplyDeployment(body))

    def _deploy_step(self, rec: dict[str, Any]) -> bool:
        rollout = self._rollout()
        assert rollout is not None and self.spec is not None
        version, previous = rollout["toVersion"], rollout.get("fromVersion")
        self.phase = names.PHASE_DEPLOYING
        if rec["phase"] in (FAILED, ROLLED_BACK, ROLLING_BACK) and self._retry_requested():
            self._event("Normal", names.EVENT_RETRY, f"retrying the deploy of release {version}")
            rec.clear()
            rec["phase"] = PENDING
        if rec["phase"] in (ROLLING_BACK, ROLLED_BACK):
            return self._rolling_back(rec, previous or version)
        if rec["phase"] == FAILED:
            self.phase = names.PHASE_FAILED
            self._stall(names.REASON_PROGRESS_DEADLINE, rec.get("message", "deploy failed"))
            return False
        if rec["phase"] == PENDING:
            rec.update(phase=RUNNING, startedAt=self.ts)
            self._event("Normal", names.EVENT_WORKLOADS_UPDATING, f"moving workloads to release {version}")
        self._apply_workloads(version)
        stuck = [d for d in self._workloads_at(version)
                 if d.progress_deadline_exceeded and d.observed_generation >= d.generation]
        if stuck:
            message = (f"deploy of release {version} failed: Deployment(s) {', '.join(d.name for d in stuck)} "
                       f"exceeded their progress deadline")
            self.status["lastFailure"] = {"step": names.STEP_DEPLOY, "version": version, "job": None,
                                          "reason": names.REASON_PROGRESS_DEADLINE, "exitCode": None,
                                          "message": message, "time": self.ts}
            if self.spec.rollback_on_failure and previous:
                rec.update(phase=ROLLING_BACK, message=message)
                self._event("Warning", names.EVENT_ROLLBACK, f"{message}; rolling back to release {previous}")
                self.actions = [a for a in self.actions if not isinstance(a, ApplyDeployment)]
                return self._rolling_back(rec, previous)
            rec.update(phase=FAILED, message=message, finishedAt=self.ts)
            self.phase = names.PHASE_FAILED
            self._stall(names.REASON_PROGRESS_DEADLINE, message, event_reason=names.REASON_PROGRESS_DEADLINE)
            return False
        if not self._workloads_complete(version):
            self.progress = (names.REASON_ROLLING_OUT, self._workload_progress(version))
            return False
        rec.update(phase=SUCCEEDED, finishedAt=self.ts)
        self.status["currentVersion"] = version
        self._event("Normal", names.EVENT_WORKLOADS_UPDATED, f"every workload runs release {version}")
        return True

    def _rolling_back(self, rec: dict[str, Any], previous: str) -> bool:
        self._apply_workloads(previous)
        if not self._workloads_complete(previous):
            self.phase = names.PHASE_ROLLING_BACK
            self.progress = (names.REASON_ROLLING_BACK, f"rolling back to release {previous}: "
                                                        f"{self._workload_progress(previous)}")
            return False
        if rec["phase"] != ROLLED_BACK:
            rec.update(phase=ROLLED_BACK, finishedAt=self.ts)
        self.phase = names.PHASE_FAILED
        failure = (self.status.get("lastFailure") or {}).get("message", "deploy failed")
        self._stall(names.REASON_ROLLED_BACK,
                    f"{failure}; workloads rolled back to release {previous}. Set annotation "
                    f"{names.ANNOTATION_RETRY} to a new value to retry, or change spec.version",
                    event_reason=names.REASON_ROLLED_BACK)
        return False

    def _steady(self) -> None:
        rollout = self._rollout()
        assert rollout is not None and self.spec is not None
        version = rollout["toVersion"]
        self._apply_workloads(version)
        stuck = [d for d in self._workloads_at(version)
                 if d.progress_deadline_exceeded and d.observed_generation >= d.generation]
        if stuck:
            self.phase = names.PHASE_FAILED
            self._stall(names.REASON_PROGRESS_DEADLINE,
                        f"Deployment(s) {', '.join(d.name for d in stuck)} exceeded their progress deadline",
                        event_reason=names.REASON_PROGRESS_DEADLINE)
            return
        if any(isinstance(a, ApplyDeployment | DeleteDeployment) for a in self.actions) or \
                not self._workloads_complete(version):
            self.phase = names.PHASE_DEPLOYING
            self.progress = (names.REASON_ROLLING_OUT, self._workload_progress(version))
            return
        self.phase = names.PHASE_READY
        self.ready = True

    # -- history and conditions ---------------------------------------------------------------------------------
    def _append_history(self, rollout: dict[str, Any]) -> None:
        def seconds(rec: dict[str, Any]) -> float | None:
            start, end = _parse_time(rec.get("startedAt")), _parse_time(rec.get("finishedAt"))
            return (end - start).total_seconds() if start and end else None

        entry = {
            "fromVersion": rollout.get("fromVersion"),
            **({"foundVersion": rollout["foundVersion"]} if rollout.get("foundVersion") else {}),
            "toVersion": rollout["toVersion"],
            "result": rollout.get("result"),
            "startedAt": rollout.get("startedAt"),
            "finishedAt": rollout.get("finishedAt"),
            "steps": {step: {"phase": rec.get("phase"), "seconds": seconds(rec), **({"job": rec["job"]}
                                                                                    if rec.get("job") else {})}
                      for step, rec in rollout["steps"].items()},
        }
        history = [entry, *(self.status.get("history") or [])]
        self.status["history"] = history[: names.HISTORY_LIMIT]

    def _current_step(self) -> None:
        """`status.rollout.currentStep`: the step an unfinished rollout is in (or failed in), for `kubectl get -o
        wide` and the plugin; gone once the rollout finished."""
        rollout = self._rollout()
        if not rollout:
            return
        if rollout.get("finishedAt"):
            rollout.pop("currentStep", None)
            return
        step = next((s for s in self._step_order() if rollout["steps"][s]["phase"] not in DONE_PHASES), None)
        if step is None:
            rollout.pop("currentStep", None)
        else:
            rollout["currentStep"] = step

    def _step_conditions(self) -> None:
        gen, ts = self.obs.generation, self.ts
        rollout = self._rollout()
        conds = self.status["conditions"]
        if not rollout:
            for step, kind in names.STEP_CONDITION.items():
                conds = set_condition(conds, kind, False, names.REASON_NOT_STARTED, f"{step} has not started", gen, ts)
            self.status["conditions"] = conds
            return
        version = rollout["toVersion"]
        reasons = {SUCCEEDED: names.REASON_JOB_SUCCEEDED, SKIPPED: names.REASON_NOT_NEEDED,
                   RUNNING: names.REASON_JOB_RUNNING, FAILED: names.REASON_JOB_FAILED,
                   PENDING: names.REASON_NOT_STARTED, WAITING: names.REASON_AWAITING_APPROVAL,
                   ROLLING_BACK: names.REASON_ROLLING_BACK, ROLLED_BACK: names.REASON_ROLLED_BACK}
        for step, kind in names.STEP_CONDITION.items():
            rec = rollout["steps"][step]
            phase = rec["phase"]
            reason = reasons.get(phase, phase)
            if step == names.STEP_DEPLOY:
                deploy_reasons = {SUCCEEDED: names.REASON_ROLLOUT_COMPLETE, RUNNING: names.REASON_ROLLING_OUT}
                reason = deploy_reasons.get(phase, reason)
            if step == names.STEP_CONTRACT and phase == WAITING and self.progress[0] == names.REASON_CONTRACT_DELAYED:
                reason = names.REASON_CONTRACT_DELAYED
            message = rec.get("message") or f"{step} for release {version}: {phase}"
            if phase in (RUNNING, WAITING) and self.progress[1]:
                message = self.progress[1]
            conds = set_condition(conds, kind, phase in DONE_PHASES, reason, message, gen, ts)
        self.status["conditions"] = conds

    def _finish(self) -> Decision:
        gen, ts = self.obs.generation, self.ts
        if self.conflicts and not self.stalled:
            self.phase = names.PHASE_FAILED
            self._stall(names.REASON_NAME_CONFLICT, name_conflict_message(
                list(self.conflicts.values()), self.obs.namespace), event_reason=names.REASON_NAME_CONFLICT)
            # an object outside the watch sends no event when it goes: look again
            self.requeue_after = min(self.requeue_after or names.FOREIGN_RECHECK_SECONDS,
                                     names.FOREIGN_RECHECK_SECONDS)
        if self.stalled:
            self.phase = names.PHASE_FAILED if self.phase != names.PHASE_PAUSED else self.phase
        self.status["phase"] = self.phase
        self._current_step()
        if self.spec is not None:
            self._step_conditions()
        conds = self.status["conditions"]
        version = self.spec.version if self.spec else "?"
        if self.ready:
            conds = set_condition(conds, names.COND_READY, True, names.REASON_RECONCILED,
                                  f"release {version} rolled out; every workload serves it", gen, ts)
        else:
            reason, message = self.stalled or self.progress
            conds = set_condition(conds, names.COND_READY, False, reason, message or self.phase, gen, ts)
        if self.stalled:
            conds = set_condition(conds, names.COND_STALLED, True, self.stalled[0], self.stalled[1], gen, ts)
            conds = set_condition(conds, names.COND_RECONCILING, False, self.stalled[0], "stalled", gen, ts)
        else:
            conds = set_condition(conds, names.COND_STALLED, False, names.REASON_PROGRESSING, "", gen, ts)
            reconciling = not self.ready and self.phase != names.PHASE_PAUSED
            reason, message = (self.progress if reconciling else (names.REASON_UP_TO_DATE, ""))
            if self.phase == names.PHASE_PAUSED:
                reason, message = self.progress
            conds = set_condition(conds, names.COND_RECONCILING, reconciling, reason, message, gen, ts)
        self.status["conditions"] = _in_display_order(conds)
        return Decision(status=self.status, actions=self.actions, requeue_after=self.requeue_after,
                        log_pods=tuple(self.log_pods))


def describe_lock_holder(wait: LockWait) -> str:
    """`pid 4242 (application divbase-migrate, connected since T)`: the holder as the runner's log line names it
    (each part checked by contract.read_lock_wait), or `another session` when it could not say."""
    details = [f"application {wait.holder_application}" if wait.holder_application else "",
               f"connected since {wait.holder_since}" if wait.holder_since else ""]
    shown = ", ".join(d for d in details if d)
    who = f"pid {wait.holder_pid}" if wait.holder_pid is not None else "another session"
    return f"{who} ({shown})" if shown else who


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
        f"this resource{workload}", names.MESSAGE_LIMIT)


def _in_display_order(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ready, Reconciling, Stalled, then the steps: the order `kubectl describe` readers expect."""
    order = {kind: i for i, kind in enumerate(names.CONDITION_TYPES)}
    return sorted(conditions, key=lambda c: order.get(c["type"], 99))


def _digest_hex(digest: str) -> str:
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
    if _digest_hex(digest).startswith(named):
        return True
    return f"the approval was for plan {named}, but the contract's plan is now {_digest_hex(digest)[:12]}"


def rejected(decision: Decision, previous: dict[str, Any], what: str, message: str, generation: int,
             now: datetime) -> Decision:
    """The apiserver refused an object built from the spec (HTTP 400/422): retrying cannot help, so say so.

    The remaining actions are dropped; status becomes Failed and Stalled with reason ApplyFailed and the
    apiserver's own message (it names the field). A Warning Event is emitted once per distinct message; the next
    spec change is tried afresh."""
    return _refused(decision, previous, names.REASON_APPLY_FAILED, f"{what} was rejected by the API server: {message}",
                    generation, now)


def apply_conflict(decision: Decision, previous: dict[str, Any], what: str, message: str, generation: int,
                   now: datetime) -> Decision:
    """A server-side apply without force was refused (HTTP 409) because another field manager owns fields of the
    object: the operator forces its apply only over objects it observed as this resource's, so this is an object it
    does not control (or one that was taken over between its read and its write). Stalled with reason ApplyConflict
    and the apiserver's words (they name the managers and the fields); nothing is retried until something changes."""
    text = (f"{what} exists and other field managers own fields the operator would set; it does not force its "
            f"apply over an object this resource does not control: {message}. Delete the object if it is stale, or "
            f"rename this resource")
    return _refused(decision, previous, names.REASON_APPLY_CONFLICT, printable(text, names.MESSAGE_LIMIT), generation,
                    now)


def _refused(decision: Decision, previous: dict[str, Any], reason: str, text: str, generation: int,
             now: datetime) -> Decision:
    status = copy.deepcopy(decision.status)
    ts = _iso(now)
    conds = status.get("conditions") or []
    conds = set_condition(conds, names.COND_READY, False, reason, text, generation, ts)
    conds = set_condition(conds, names.COND_STALLED, True, reason, text, generation, ts)
    conds = set_condition(conds, names.COND_RECONCILING, False, reason, "stalled", generation, ts)
    status["conditions"] = _in_display_order(conds)
    status["phase"] = names.PHASE_FAILED
    before = next((c for c in previous.get("conditions") or [] if c.get("type") == names.COND_STALLED), {})
    events: list[Action] = []
    if before.get("status") != "True" or before.get("message") != text:
        events.append(EmitEvent("Warning", reason, text))
    return Decision(status=status, actions=events, requeue_after=None)
