"""What the planner is shown (Observed) and what it answers (Decision): actions for the reconciler to carry out,
the new status, and the outcomes it decided, which metrics count (not the Events' wording)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from divbase_migrations.contract import LockWait

from .observed import ConfigMapObs, DeploymentObs, ForeignChild, ForeignDeployment, JobObs, PodObs, ReplicaSetObs


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


class Result(StrEnum):
    """What happened to a rollout or one of its steps in this reconcile (each marks a transition, once)."""

    STARTED = "Started"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    RETRIED = "Retried"


ROLLOUT = "rollout"  # the Outcome step of the rollout as a whole


@dataclass(frozen=True)
class Outcome:
    """`step` (expand, deploy, contract, plan, or ROLLOUT) reached `result`: what metrics count. A failed plan
    Job of a Manual contract is step `plan`, not `contract`: the contract itself never ran."""

    step: str
    result: Result


@dataclass
class Decision:
    status: dict[str, Any]
    actions: list[Action] = field(default_factory=list)
    requeue_after: float | None = None  # only for timers the cluster cannot wake us for (contract delay, the
    # bound on waiting for a failed Job's pod)
    log_pods: tuple[str, ...] = ()  # running pods of a step's Job whose log tail may show a lock wait: the
    # reconciler reads them (bounded, every LOCK_WAIT_PROBE_SECONDS) only while a decision names some
    outcomes: tuple[Outcome, ...] = ()
