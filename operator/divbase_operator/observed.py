"""What the operator sees of its children, reduced to the few facts the planner decides on.

Each `*_from_body` function is pure: it turns a raw Kubernetes object (as a Kopf index or a watch delivers it)
into a small frozen value, so the planner can be tested with hand-written observations and the indexes keep
little memory per object."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from divbase_migrations.contract import MAX_SUMMARY_CHARS
from divbase_migrations.contract import parse_summary as parse_summary  # the runner's summary, by its contract
from divbase_migrations.contract import read_summary as read_summary

from . import names
from .builders import plan_data_fingerprint
from .conditions import get_condition


class JobState(StrEnum):
    """A Job's state as the planner reads it (not a step's state, not the resource's phase)."""

    ACTIVE = "Active"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


# A pod's phase (status.phase), as Kubernetes writes it: the planner reads only these three.
POD_PENDING, POD_RUNNING, POD_FAILED = "Pending", "Running", "Failed"
POD_UNFINISHED = (POD_PENDING, POD_RUNNING)

JOB_ACTIVE = JobState.ACTIVE
JOB_SUCCEEDED = JobState.SUCCEEDED
JOB_FAILED = JobState.FAILED


@dataclass(frozen=True)
class JobObs:
    name: str
    step: str
    version: str
    state: JobState
    created_at: str | None = None
    finished_at: str | None = None
    reason: str | None = None  # Job condition reason: BackoffLimitExceeded, DeadlineExceeded, PodFailurePolicy...
    message: str | None = None
    deleting: bool = False
    failed: int = 0  # status.failed: pods of this Job that failed (each one an attempt)
    backoff_limit: int | None = None  # spec.backoffLimit: failed pods it takes before the Job fails
    active_deadline_seconds: int | None = None  # spec.activeDeadlineSeconds: the Job controller ends it then
    started_at: str | None = None  # status.startTime: what activeDeadlineSeconds counts from
    uid: str | None = None  # the Job's own uid: its pods name it as their controller
    owner_uid: str | None = None  # uid of its controller ownerReference when a DivBaseDatabase controls it
    controller: str | None = None  # its controller as `Kind name`, for messages (None: it has none)


@dataclass(frozen=True)
class PodObs:
    name: str
    job_name: str | None
    workload: str | None
    version: str | None
    phase: str
    deleting: bool = False
    created_at: str | None = None
    waiting_reason: str | None = None
    waiting_message: str | None = None
    exit_code: int | None = None
    termination_message: str | None = None
    finished_at: str | None = None
    image_id: str | None = None  # what the runtime ran (containerStatuses[].imageID), e.g. repo@sha256:...
    owner_uid: str | None = None  # uid of its controller ownerReference when a Job controls it (a migration pod)
    replicaset: str | None = None  # name of its controller ownerReference when a ReplicaSet controls it
    replicaset_uid: str | None = None  # and its uid (a workload pod is trusted through it: owned_pods)


@dataclass(frozen=True)
class ReplicaSetObs:
    """A workload pod's ReplicaSet, reduced to whose it is: a workload pod counts only when its ReplicaSet's
    controller is one of this resource's Deployments (labels are anyone's to set)."""

    name: str
    uid: str | None
    deployment: str | None = None  # name of its controller ownerReference when a Deployment controls it
    deployment_uid: str | None = None  # and its uid
    orphaned: bool = False  # looked up by name: it, or the Deployment it names, is gone (another uid or none), so
    # the garbage collector deletes it and its pods; until then they count (what they run may still serve)


@dataclass(frozen=True)
class DeploymentObs:
    name: str
    workload: str
    version: str | None
    spec_hash: str | None
    images: tuple[str, ...]
    generation: int
    observed_generation: int
    replicas: int  # desired
    status_replicas: int
    updated_replicas: int
    available_replicas: int
    progress_deadline_exceeded: bool = False
    controller_uid: str | None = None  # uid of its controller ownerReference, if any
    controller: str | None = None  # that controller as `Kind name`, for messages
    owner_uid: str | None = None  # uid of its controller owner reference, when a DivBaseDatabase controls it
    uid: str | None = None  # the Deployment's own uid: a deletion is conditional on it

    @property
    def rollout_complete(self) -> bool:
        """The test `kubectl rollout status` makes: new spec seen, every pod updated and available."""
        return (
            self.observed_generation >= self.generation
            and self.updated_replicas == self.replicas
            and self.status_replicas == self.replicas
            and self.available_replicas >= self.replicas
        )


@dataclass(frozen=True)
class ForeignDeployment:
    """A Deployment with the name of one of our workloads that is not ours to change: another controller owns it,
    or nobody does and it does not carry our labels (created by hand, by another chart)."""

    name: str
    owner: str  # who has it, for the message: `Deployment divbase-api is managed by Helm release divbase`


def _controller(meta: dict[str, Any]) -> dict[str, Any] | None:
    return next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)


def _describe_controller(controller: dict[str, Any], database: str) -> str:
    text = f"{controller.get('kind', '?')} {controller.get('name', '?')}"
    if controller.get("kind") == names.KIND and controller.get("name") == database:
        text += f" (an earlier resource of this name, uid {controller.get('uid')})"
    return text


def foreign_deployment(body: dict[str, Any], database: str, uid: str) -> ForeignDeployment | None:
    """None when the Deployment is ours: its controller ownerReference is this resource. Anything else is foreign,
    with who has it; our labels on it change nothing (anyone who may edit it may set them)."""
    meta = body.get("metadata") or {}
    controller = _controller(meta)
    if controller is not None and controller.get("uid") == uid:
        return None
    return ForeignDeployment(name=meta.get("name", ""), owner=_describe_owner(meta, database))


@dataclass(frozen=True)
class ForeignChild:
    """An object holding the name of a child the resource wants (a migration Job, the plan ConfigMap, a workload's
    Deployment) that this resource does not control: never adopted, changed or deleted; reported (NameConflict)."""

    kind: str  # Job | ConfigMap | Deployment
    name: str
    owner: str  # who has it, as foreign_deployment words it: `is controlled by ...`, `has no owner`


def _describe_owner(meta: dict[str, Any], database: str) -> str:
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    controller = _controller(meta)
    if controller is not None:
        return f"is controlled by {_describe_controller(controller, database)}"
    if annotations.get("meta.helm.sh/release-name"):
        return f"is managed by Helm release {annotations['meta.helm.sh/release-name']}"
    if labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY:  # labels are anyone's: they do not make it ours
        return f"carries {names.MANAGED_BY}'s labels but no controller ownerReference"
    if labels.get(names.LABEL_MANAGED_BY):
        return f"is managed by {labels[names.LABEL_MANAGED_BY]}"
    return "has no owner"


def foreign_child(body: dict[str, Any], kind: str, database: str, uid: str) -> ForeignChild | None:
    """None when the object is this resource's: its controller ownerReference names this resource's uid (labels say
    nothing: anyone who may edit an object may set them)."""
    meta = body.get("metadata") or {}
    if kind == "Deployment":
        verdict = foreign_deployment(body, database, uid)
        return None if verdict is None else ForeignChild(kind, verdict.name, verdict.owner)
    if controller_uid(meta, names.KIND) == uid:
        return None
    return ForeignChild(kind, meta.get("name", ""), _describe_owner(meta, database))


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return get_condition(status.get("conditions") or [], kind)


@dataclass(frozen=True)
class ConfigMapObs:
    """A plan ConfigMap, reduced to what tells whether it still holds what the operator published."""

    name: str
    job: str | None  # data.job: which plan Job's plan it claims to be
    fingerprint: str  # builders.plan_data_fingerprint of its data
    owner_uid: str | None = None  # uid of its controller ownerReference when a DivBaseDatabase controls it
    owner: str = ""  # who has it, for a NameConflict message (as foreign_child words it)
    truncated: bool = False  # data.truncated is "true" (believed only while the fingerprint is the published one)


def configmap_from_body(body: dict[str, Any]) -> ConfigMapObs:
    meta = body.get("metadata") or {}
    data = body.get("data") or {}
    data = {str(k): v for k, v in data.items()} if isinstance(data, dict) else {}
    job = data.get("job")
    labels = meta.get("labels") or {}
    return ConfigMapObs(
        name=meta.get("name", ""),
        job=job if isinstance(job, str) and len(job) <= 63 else None,
        fingerprint=plan_data_fingerprint(data),
        owner_uid=controller_uid(meta, names.KIND),
        owner=_describe_owner(meta, labels.get(names.LABEL_DATABASE, "")),
        truncated=data.get(names.PLAN_DATA_TRUNCATED) == "true",
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _tail(message: Any) -> str | None:
    """A termination message is written by the pod's image: only its tail is kept (the summary is its last line),
    so a huge one costs neither memory in the index nor time in the planner."""
    return message[-MAX_SUMMARY_CHARS:] if isinstance(message, str) else None


def _job_state(status: dict[str, Any]) -> tuple[JobState, dict[str, Any]]:
    """The Job's state and the condition that says so (empty while it runs)."""
    for state, kind in ((JOB_SUCCEEDED, "Complete"), (JOB_FAILED, "Failed")):
        cond = _condition(status, kind)
        if cond and cond.get("status") == "True":
            return state, cond
    return JOB_ACTIVE, {}


def job_from_body(body: dict[str, Any]) -> JobObs:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = body.get("status") or {}
    state, cond = _job_state(status)
    return JobObs(
        name=meta.get("name", ""),
        step=labels.get(names.LABEL_STEP, ""),
        version=labels.get(names.LABEL_VERSION, ""),
        state=state,
        created_at=meta.get("creationTimestamp"),
        finished_at=(status.get("completionTime") or cond.get("lastTransitionTime")) if cond else None,
        reason=cond.get("reason"),
        message=cond.get("message"),
        deleting=bool(meta.get("deletionTimestamp")),
        failed=int(status.get("failed") or 0),
        backoff_limit=(body.get("spec") or {}).get("backoffLimit"),
        active_deadline_seconds=(body.get("spec") or {}).get("activeDeadlineSeconds"),
        started_at=status.get("startTime"),
        uid=meta.get("uid") if isinstance(meta.get("uid"), str) else None,
        owner_uid=controller_uid(meta, names.KIND),
        controller=_describe_owner(meta, labels.get(names.LABEL_DATABASE, "")),
    )


@dataclass(frozen=True)
class _MainContainer:
    """What a pod's first (main) container reports: migration and workload pods are judged by it."""

    waiting_reason: str | None = None
    waiting_message: str | None = None
    exit_code: int | None = None
    termination: str | None = None
    finished: str | None = None
    image_id: str | None = None

    @classmethod
    def of(cls, status: dict[str, Any]) -> _MainContainer:
        statuses = status.get("containerStatuses") or []
        if not statuses:
            return cls()
        cs = statuses[0]
        state, last = cs.get("state") or {}, cs.get("lastState") or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or last.get("terminated") or {}
        return cls(
            waiting_reason=waiting.get("reason"),
            waiting_message=waiting.get("message"),
            exit_code=_int_or_none(terminated.get("exitCode")) if terminated else None,
            termination=_tail(terminated.get("message")) if terminated else None,
            finished=terminated.get("finishedAt") if terminated else None,
            image_id=cs.get("imageID") if isinstance(cs.get("imageID"), str) else None,
        )


def pod_from_body(body: dict[str, Any]) -> PodObs:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = body.get("status") or {}
    main = _MainContainer.of(status)
    replicaset, replicaset_uid = controller_ref(meta, "ReplicaSet")
    return PodObs(
        name=meta.get("name", ""),
        job_name=labels.get("batch.kubernetes.io/job-name") or labels.get("job-name"),
        workload=labels.get(names.LABEL_WORKLOAD),
        version=labels.get(names.LABEL_VERSION),
        phase=status.get("phase") or "Pending",
        deleting=bool(meta.get("deletionTimestamp")),
        created_at=meta.get("creationTimestamp"),
        waiting_reason=main.waiting_reason,
        waiting_message=main.waiting_message,
        exit_code=main.exit_code,
        termination_message=main.termination,
        finished_at=main.finished,
        image_id=main.image_id[:512] if main.image_id else None,
        owner_uid=controller_uid(meta, "Job"),
        replicaset=replicaset,
        replicaset_uid=replicaset_uid,
    )


def replicaset_from_body(body: dict[str, Any]) -> ReplicaSetObs:
    meta = body.get("metadata") or {}
    deployment, deployment_uid = controller_ref(meta, "Deployment")
    return ReplicaSetObs(
        name=meta.get("name", ""),
        uid=meta.get("uid") if isinstance(meta.get("uid"), str) else None,
        deployment=deployment,
        deployment_uid=deployment_uid,
    )


def controller_ref(meta: dict[str, Any], kind: str) -> tuple[str | None, str | None]:
    """(name, uid) of the object's controller owner reference if that controller is a `kind`, else (None, None)."""
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") is True and ref.get("kind") == kind:
            name, uid = ref.get("name"), ref.get("uid")
            return (name if isinstance(name, str) else None), (uid if isinstance(uid, str) else None)
    return None, None


def controller_uid(meta: dict[str, Any], kind: str) -> str | None:
    """The uid of the object's controller owner reference if that controller is a `kind`: labels can be set by
    anyone who may edit the object, the controller reference is what says who manages it."""
    return controller_ref(meta, kind)[1]


def _count(fields: dict[str, Any], key: str) -> int:
    """A count Kubernetes omits while it is zero."""
    return int(fields.get(key) or 0)


def _deadline_exceeded(progressing: dict[str, Any] | None) -> bool:
    """The Deployment's Progressing condition says it exceeded its progressDeadlineSeconds."""
    return bool(
        progressing
        and progressing.get("status") == "False"
        and progressing.get("reason") == names.REASON_PROGRESS_DEADLINE
    )


def deployment_from_body(body: dict[str, Any]) -> DeploymentObs:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    progressing = _condition(status, "Progressing")
    controller = _controller(meta)
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return DeploymentObs(
        name=meta.get("name", ""),
        workload=labels.get(names.LABEL_WORKLOAD, ""),
        version=labels.get(names.LABEL_VERSION),
        spec_hash=annotations.get(names.ANNOTATION_SPEC_HASH),
        images=tuple(c.get("image", "") for c in containers),
        generation=_count(meta, "generation"),
        observed_generation=_count(status, "observedGeneration"),
        replicas=int(spec.get("replicas", 1)),
        status_replicas=_count(status, "replicas"),
        updated_replicas=_count(status, "updatedReplicas"),
        available_replicas=_count(status, "availableReplicas"),
        progress_deadline_exceeded=_deadline_exceeded(progressing),
        controller_uid=controller.get("uid") if controller else None,
        controller=_describe_controller(controller, labels.get(names.LABEL_DATABASE, "")) if controller else None,
        owner_uid=controller_uid(meta, names.KIND),
        uid=meta.get("uid") if isinstance(meta.get("uid"), str) else None,
    )
