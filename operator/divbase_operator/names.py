"""Every name the operator writes into the cluster: API coordinates, labels, annotations, condition types,
reasons, phases and child-object names. Defined once here so the planner, the builders, the handlers, the CRD
and the docs cannot drift apart."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

from divbase_migrations import contract

# --- The custom resource --------------------------------------------------------------------------------------
GROUP: Final = "divbase.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "DivBaseDatabase"
PLURAL: Final = "divbasedatabases"
SINGULAR: Final = "divbasedatabase"
SHORT_NAME: Final = "dbdb"
FIELD_MANAGER: Final = "divbase-operator"

# --- Labels on every child (Jobs, Deployments, their pods) ------------------------------------------------------
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "divbase-operator"
LABEL_DATABASE: Final = f"{GROUP}/database"  # name of the owning DivBaseDatabase
LABEL_STEP: Final = f"{GROUP}/step"  # expand | contract (migration Jobs) or workload
LABEL_WORKLOAD: Final = f"{GROUP}/workload"  # workload name within the resource
LABEL_VERSION: Final = f"{GROUP}/version"  # the DivBase release a child runs

# --- Annotations ------------------------------------------------------------------------------------------------
ANNOTATION_RETRY: Final = f"{GROUP}/retry"  # any new value retries the failed step
ANNOTATION_APPROVE_CONTRACT: Final = f"{GROUP}/approve-contract"  # `<version>` or `<version>@<plan digest prefix>`
ANNOTATION_SPEC_HASH: Final = f"{GROUP}/spec-hash"  # desired-state hash of an owned Deployment
ANNOTATION_RETRY_TOKEN: Final = f"{GROUP}/retry-token"  # the retry value a Job was created under
FINALIZER: Final = f"{GROUP}/finalizer"

# --- Leader election ----------------------------------------------------------------------------------------------
LEASE_NAME: Final = "divbase-operator"  # the coordination.k8s.io Lease the replicas share (default)

# --- Steps (the migration steps are the runner contract's: divbase_migrations.contract) --------------------------
STEP_EXPAND: Final = contract.STEP_EXPAND
STEP_DEPLOY: Final = "deploy"
STEP_CONTRACT: Final = contract.STEP_CONTRACT
JOB_STEPS: Final = contract.MIGRATION_STEPS
STEP_PLAN: Final = contract.STEP_PLAN  # the read-only Job that renders a Manual contract's SQL for review
# spec.contract.policy: when a rollout's contract may start (contract_gate.py)
CONTRACT_AUTO: Final = "Auto"  # at once
CONTRACT_MANUAL: Final = "Manual"  # once approved, against a plan rendered for review
CONTRACT_DELAYED: Final = "Delayed"  # delaySeconds after the deploy finished
CONTRACT_POLICIES: Final = (CONTRACT_AUTO, CONTRACT_MANUAL, CONTRACT_DELAYED)
PLAN_DIGEST_MIN: Final = 8  # hex digits of the plan's sha256 an approval must name at least
PLAN_DATA_SQL: Final = "plan.sql"  # the plan ConfigMap's key with the SQL (sha256 of it is the plan's digest)
PLAN_DATA_TRUNCATED: Final = "truncated"  # "true" when the SQL was too large to publish (plan.sql is a note then)

# --- Phases (status.phase, printer column) ----------------------------------------------------------------------
PHASE_PENDING: Final = "Pending"
PHASE_EXPANDING: Final = "Expanding"
PHASE_DEPLOYING: Final = "Deploying"
PHASE_AWAITING_CONTRACT: Final = "AwaitingContract"
PHASE_CONTRACTING: Final = "Contracting"
PHASE_ROLLING_BACK: Final = "RollingBack"
PHASE_READY: Final = "Ready"
PHASE_FAILED: Final = "Failed"
PHASE_PAUSED: Final = "Paused"
PHASE_TERMINATING: Final = "Terminating"  # deleted: the finalizer waits for a running Job, then removes children
PHASES: Final = (
    PHASE_PENDING,
    PHASE_EXPANDING,
    PHASE_DEPLOYING,
    PHASE_AWAITING_CONTRACT,
    PHASE_CONTRACTING,
    PHASE_ROLLING_BACK,
    PHASE_READY,
    PHASE_FAILED,
    PHASE_PAUSED,
    PHASE_TERMINATING,
)

# --- Rollout results (status.rollout.result, status.history[].result) --------------------------------------------
RESULT_SUCCEEDED: Final = "Succeeded"
RESULT_FAILED: Final = "Failed"  # a step failed and the rollout was replaced by a new spec.version before a retry
RESULT_SUPERSEDED: Final = "Superseded"  # replaced by a new spec.version while still running (nothing had failed)

# --- Condition types (kstatus trio plus one per step) -----------------------------------------------------------
COND_READY: Final = "Ready"
COND_RECONCILING: Final = "Reconciling"
COND_STALLED: Final = "Stalled"
COND_SCHEMA_EXPANDED: Final = "SchemaExpanded"
COND_WORKLOADS_UPDATED: Final = "WorkloadsUpdated"
COND_SCHEMA_CONTRACTED: Final = "SchemaContracted"
CONDITION_TYPES: Final = (
    COND_READY,
    COND_RECONCILING,
    COND_STALLED,
    COND_SCHEMA_EXPANDED,
    COND_WORKLOADS_UPDATED,
    COND_SCHEMA_CONTRACTED,
)
STEP_CONDITION: Final = {
    STEP_EXPAND: COND_SCHEMA_EXPANDED,
    STEP_DEPLOY: COND_WORKLOADS_UPDATED,
    STEP_CONTRACT: COND_SCHEMA_CONTRACTED,
}

# --- Condition reasons (CamelCase, as Kubernetes expects) -------------------------------------------------------
REASON_RECONCILED: Final = "Reconciled"
REASON_PROGRESSING: Final = "Progressing"
REASON_JOB_RUNNING: Final = "JobRunning"
REASON_JOB_SUCCEEDED: Final = "JobSucceeded"
REASON_JOB_FAILED: Final = "JobFailed"
REASON_JOB_POD_BLOCKED: Final = "JobPodBlocked"
REASON_LOCK_WAIT: Final = "WaitingForMigrationLock"  # the Job's runner waits for another runner's lock
REASON_WAITING_FOR_JOB: Final = "WaitingForActiveJob"
REASON_ROLLING_OUT: Final = "RollingOut"
REASON_ROLLOUT_COMPLETE: Final = "RolloutComplete"
REASON_PROGRESS_DEADLINE: Final = "ProgressDeadlineExceeded"
REASON_ROLLED_BACK: Final = "RolledBack"
REASON_ROLLING_BACK: Final = "RollingBack"
REASON_AWAITING_APPROVAL: Final = "AwaitingContractApproval"
REASON_PLANNING_CONTRACT: Final = "PlanningContract"
REASON_PLAN_CHANGED: Final = "ContractPlanChanged"
REASON_CONTRACT_DELAYED: Final = "ContractDelayed"
REASON_NOT_STARTED: Final = "NotStarted"
REASON_INVALID_SPEC: Final = "InvalidSpec"
REASON_DOWNGRADE_REFUSED: Final = "DowngradeRefused"
REASON_PAUSED: Final = "Paused"
REASON_APPLY_FAILED: Final = "ApplyFailed"
REASON_UP_TO_DATE: Final = "UpToDate"
REASON_NOT_NEEDED: Final = "NotNeeded"
REASON_TERMINATING: Final = "Terminating"
REASON_FOREIGN_DEPLOYMENT: Final = "ForeignDeployment"  # a Deployment of a workload's name is not ours
REASON_OPERATOR_NAMESPACE: Final = "OperatorNamespace"  # refused: the resource is in the operator's own namespace
REASON_NOT_ALLOWED: Final = "NotAllowed"  # refused: an image or ServiceAccount outside the operator's allow-lists
REASON_NAME_CONFLICT: Final = "NameConflict"  # a child's name is taken by an object this resource does not control
REASON_APPLY_CONFLICT: Final = "ApplyConflict"  # an unforced apply met fields another field manager owns

# --- Event reasons ------------------------------------------------------------------------------------------------
EVENT_ROLLOUT_STARTED: Final = "RolloutStarted"
EVENT_JOB_CREATED: Final = "MigrationJobCreated"
EVENT_JOB_SUCCEEDED: Final = "MigrationJobSucceeded"
EVENT_JOB_FAILED: Final = "MigrationJobFailed"
EVENT_ATTEMPT_FAILED: Final = "MigrationAttemptFailed"  # one pod of a Job failed; the Job may start another
EVENT_LOCK_WAIT: Final = "MigrationLockWait"  # a Job's runner waits for the migration lock (once per pod and holder)
EVENT_WORKLOADS_UPDATING: Final = "WorkloadsUpdating"
EVENT_WORKLOADS_UPDATED: Final = "WorkloadsUpdated"
EVENT_ROLLBACK: Final = "RollingBack"
EVENT_ROLLOUT_SUCCEEDED: Final = "RolloutSucceeded"
EVENT_AWAITING_APPROVAL: Final = "AwaitingContractApproval"
EVENT_CONTRACT_PLANNED: Final = "ContractPlanned"
EVENT_PLAN_REPUBLISHED: Final = "ContractPlanRepublished"  # its ConfigMap was changed by someone else
EVENT_INVALID_SPEC: Final = "InvalidSpec"
EVENT_RETRY: Final = "RetryRequested"
EVENT_FOREIGN_DEPLOYMENT: Final = REASON_FOREIGN_DEPLOYMENT
EVENT_DELETING: Final = "Deleting"  # the finalizer started: what it waits for, what it removes

# Who the Events are from (`reportingComponent`, `source.component`: the FROM column of `kubectl describe`)
EVENT_REPORTING_COMPONENT: Final = MANAGED_BY
EVENT_NAME_PREFIX: Final = f"{MANAGED_BY}-"

# --- Limits -------------------------------------------------------------------------------------------------------
HISTORY_LIMIT: Final = 10  # rollouts kept in status.history
MESSAGE_LIMIT: Final = 1024  # characters of a Job's termination message kept in status and Events
ATTEMPT_MESSAGE_LIMIT: Final = 300  # characters of each failed attempt's message kept in the step's record
FOREIGN_RECHECK_SECONDS: Final = 30  # a foreign Deployment's removal sends us no event: look again this often
DELETION_JOB_GRACE_SECONDS: Final = 60  # past a running Job's activeDeadlineSeconds, deletion stops waiting for it
FAILED_POD_GRACE_SECONDS: Final = 30  # a failed Job's result waits this long for its pod's exit status to arrive
# A running migration pod's log tail, read through the API only for the runner contract's lock-wait line
# (divbase_migrations.contract.read_lock_wait): this often, this much, and only while such a pod runs.
LOCK_WAIT_PROBE_SECONDS: Final = 5.0
LOCK_WAIT_LOG_LINES: Final = 10  # tailLines
LOCK_WAIT_LOG_BYTES: Final = 32 * 1024  # limitBytes
MIGRATION_CONTAINER: Final = "migrate"  # the migration Job's one container: its log and its exit code are read
_MAX_NAME: Final = 63  # DNS label: Job names end up in the pods' job-name label


def short_hash(payload: Any, length: int = 8) -> str:
    """A stable hash of any JSON-able payload; it makes child names deterministic across restarts."""
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:length]


def _bounded(prefix: str, suffix: str) -> str:
    room = _MAX_NAME - len(suffix) - 1
    if len(prefix) > room:
        prefix = prefix[: room - 6].rstrip("-") + "-" + short_hash(prefix, 5)
    return f"{prefix}-{suffix}"


def job_name(database: str, step: str, digest: str) -> str:
    """`<database>-<step>-<hash>`, at most 63 characters, same inputs giving the same name."""
    return _bounded(database, f"{step}-{digest}")


def plan_configmap_name(database: str) -> str:
    return _bounded(database, "contract-plan")


def deployment_name(database: str, workload: str) -> str:
    return _bounded(database, workload)


def child_labels(database: str, **extra: str) -> dict[str, str]:
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_DATABASE: database}
    labels.update(extra)
    return labels
