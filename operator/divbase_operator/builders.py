"""Pure builders of the objects the operator owns: migration Jobs and the gated Deployments.

Same inputs, same object, same name: that is what makes a restart safe (the operator finds what it created
before) and a changed spec visible (a different hash, so a different Job or a new Deployment revision)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from divbase_migrations import contract
from divbase_migrations.contract import NON_RETRYABLE_EXIT_CODES

from . import names
from .spec import DatabaseSpec, Workload


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class ApprovedPlan:
    """What a Manual contract was approved against: its Job runs only this SQL (the runner checks `digest`,
    `--expect-digest`) from `image`, the plan pod's image by digest when its runtime reported one (a tag re-pushed
    since then is not pulled)."""

    digest: str
    image: str | None = None


def database_env(spec: DatabaseSpec) -> list[dict[str, Any]]:
    """Connection settings as Secret references: the operator never sees the values."""
    ref = spec.database
    if ref.part_keys:
        return [
            {"name": contract.ENV_DB_PARTS[part], "valueFrom": {"secretKeyRef": {"name": ref.secret_name, "key": key}}}
            for part, key in sorted(ref.part_keys.items())
        ]
    return [
        {
            "name": contract.ENV_DATABASE_URL,
            "valueFrom": {"secretKeyRef": {"name": ref.secret_name, "key": ref.url_key or "url"}},
        }
    ]


def migration_command(
    spec: DatabaseSpec, step: str, version: str, expect_digest: str | None = None
) -> tuple[list[str], list[str]]:
    """(command, args) of a migration container: the resource's command (default `divbase-migrate`) and fixed
    arguments, then the step's arguments as the runner contract defines them, so any runner honouring the contract
    can stand in. The plan (read-only, see `contract.step_args`) never gets the timeouts; a Manual contract gets
    the digest of the plan that was approved (`--expect-digest`), so it runs that SQL or nothing."""
    settings = spec.migration_job
    step_args = contract.step_args(
        step, version, settings.lock_timeout_seconds, settings.statement_timeout_seconds, expect_digest
    )
    return list(settings.command or contract.DEFAULT_COMMAND), [*settings.args, *step_args]


def _job_pod_spec(spec: DatabaseSpec, step: str, version: str, approved: ApprovedPlan | None = None) -> dict[str, Any]:
    settings = spec.migration_job
    command, args = migration_command(spec, step, version, approved.digest if approved else None)
    container: dict[str, Any] = {
        "name": names.MIGRATION_CONTAINER,
        "image": (approved.image if approved else None) or spec.migration_image(version),
        "command": command,
        "args": args,  # the summary goes to the termination-message file, the runner's default
        "env": [*database_env(spec), {"name": contract.ENV_RELEASE, "value": version}],
        "terminationMessagePath": contract.TERMINATION_LOG_PATH,
        # the summary file only: FallbackToLogsOnError would copy the log's tail (whatever the image printed) into
        # status and Events when the runner died without a summary
        "terminationMessagePolicy": "File",
        "resources": settings.resources
        or {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    pod_security: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if settings.run_as_user is not None:  # set only when given: the Job's name hashes this pod spec
        pod_security["runAsUser"] = settings.run_as_user
    if settings.run_as_group is not None:
        pod_security["runAsGroup"] = settings.run_as_group
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": settings.automount_service_account_token,
        "securityContext": pod_security,
        "containers": [container],
    }
    if settings.service_account_name:
        pod["serviceAccountName"] = settings.service_account_name
    if settings.node_selector:
        pod["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        pod["tolerations"] = copy.deepcopy(settings.tolerations)
    return pod


def job_digest(
    spec: DatabaseSpec,
    step: str,
    version: str,
    retry_token: str,
    approved: ApprovedPlan | None = None,
    pod: dict[str, Any] | None = None,
) -> str:
    """Hash of everything that makes one migration attempt different from another (the approved plan included).
    `pod`: the step's pod spec when the caller built it already (it is the costly part)."""
    settings = spec.migration_job
    pod = pod if pod is not None else _job_pod_spec(spec, step, version, approved)
    return names.short_hash(
        {
            "step": step,
            "version": version,
            "pod": pod,
            "retry": retry_token,
            "limits": [settings.backoff_limit, settings.active_deadline_seconds],
        }
    )


def migration_job_name(
    owner: Owner, spec: DatabaseSpec, step: str, version: str, retry_token: str, approved: ApprovedPlan | None = None
) -> str:
    return JobTemplate.of(owner, spec, step, version, retry_token, approved).name


def build_job(
    owner: Owner, spec: DatabaseSpec, step: str, version: str, retry_token: str, approved: ApprovedPlan | None = None
) -> dict[str, Any]:
    """A migration Job: runs `divbase-migrate <step>` from the release's image, once, hardened. `approved`: the
    plan a Manual contract was approved against (its SQL's digest, and the image the plan pod ran)."""
    return JobTemplate.of(owner, spec, step, version, retry_token, approved).body()


@dataclass(frozen=True)
class JobTemplate:
    """One step's migration Job with its pod spec built once: its name (which hashes the pod spec) and its body
    come from the same build, so a reconcile that names a Job and then creates it builds the pod spec once."""

    owner: Owner
    spec: DatabaseSpec
    step: str
    version: str
    retry_token: str
    pod: dict[str, Any]
    name: str

    @classmethod
    def of(
        cls,
        owner: Owner,
        spec: DatabaseSpec,
        step: str,
        version: str,
        retry_token: str,
        approved: ApprovedPlan | None = None,
    ) -> JobTemplate:
        pod = _job_pod_spec(spec, step, version, approved)
        name = names.job_name(owner.name, step, job_digest(spec, step, version, retry_token, approved, pod))
        return cls(owner, spec, step, version, retry_token, pod, name)

    def body(self) -> dict[str, Any]:
        settings = self.spec.migration_job
        labels = names.child_labels(self.owner.name, **{names.LABEL_STEP: self.step, names.LABEL_VERSION: self.version})
        job_spec: dict[str, Any] = {
            "backoffLimit": settings.backoff_limit,
            "activeDeadlineSeconds": settings.active_deadline_seconds,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": names.MIGRATION_CONTAINER,
                            "operator": "In",
                            "values": list(NON_RETRYABLE_EXIT_CODES),
                        },
                    },
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": copy.deepcopy(self.pod),
            },
        }
        if settings.ttl_seconds_after_finished is not None:
            job_spec["ttlSecondsAfterFinished"] = settings.ttl_seconds_after_finished
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": self.name,
                "namespace": self.owner.namespace,
                "labels": labels,
                "annotations": {names.ANNOTATION_RETRY_TOKEN: self.retry_token},
                "ownerReferences": [self.owner.reference()],
            },
            "spec": job_spec,
        }


def with_restricted_defaults(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """`pod_spec` with Pod Security `restricted`'s settings filled in wherever the template left them unset (a
    value the template sets is kept): seccomp RuntimeDefault, no privilege escalation, every capability dropped
    (an `add` still adds), and runAsNonRoot when the pod names a UID. Without a UID, runAsNonRoot stays unset:
    the kubelet refuses it for an image whose USER is a name (DivBase's `USER appuser`), so such an image needs
    `runAsUser` in the template, and then gets runAsNonRoot too."""
    pod = copy.deepcopy(pod_spec)
    security = pod.setdefault("securityContext", {})
    if isinstance(security, dict):  # any other shape is the apiserver's to refuse, with its own message
        security.setdefault("seccompProfile", {"type": "RuntimeDefault"})
        run_as_user = security.get("runAsUser")
        if isinstance(run_as_user, int) and not isinstance(run_as_user, bool) and run_as_user > 0:
            security.setdefault("runAsNonRoot", True)
    for kind in ("initContainers", "containers"):
        containers = pod.get(kind)
        for container in containers if isinstance(containers, list) else []:
            context = container.setdefault("securityContext", {}) if isinstance(container, dict) else None
            if not isinstance(context, dict):
                continue
            if context.get("privileged") is not True:  # the API refuses privileged without escalation
                context.setdefault("allowPrivilegeEscalation", False)
            capabilities = context.setdefault("capabilities", {})
            if isinstance(capabilities, dict):
                capabilities.setdefault("drop", ["ALL"])
    return pod


def build_deployment(
    owner: Owner, spec: DatabaseSpec, workload: Workload, version: str, restricted: bool = True
) -> dict[str, Any]:
    """The workload's Deployment at `version`: containers and init containers without an image get the workload's
    image (or spec.image) at the release, so every DivBase container moves only when the rollout moves it (an init
    container that waits for the database or warms a cache runs the release it starts). `restricted`:
    the template gets Pod Security `restricted`'s defaults where it sets nothing (off only when the operator
    allows privileged workloads, whose templates are then taken as written)."""
    template = copy.deepcopy(workload.template)
    selector = {names.LABEL_DATABASE: owner.name, names.LABEL_WORKLOAD: workload.name}
    labels = names.child_labels(owner.name, **{names.LABEL_WORKLOAD: workload.name, names.LABEL_VERSION: version})
    template.pop("selector", None)
    pod_template = template.setdefault("template", {})
    pod_meta = pod_template.setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **labels}
    if restricted:
        pod_template["spec"] = with_restricted_defaults(pod_template.get("spec") or {})
    pod_spec = pod_template.get("spec") or {}
    for container in [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]:
        if isinstance(container, dict) and not container.get("image"):
            container["image"] = spec.workload_image(workload, version)
    template["selector"] = {"matchLabels": selector}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": names.deployment_name(owner.name, workload.name),
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": {},
            "ownerReferences": [owner.reference()],
        },
        "spec": template,
    }
    deployment["metadata"]["annotations"][names.ANNOTATION_SPEC_HASH] = names.short_hash(deployment["spec"], 12)
    return deployment


def plan_data_fingerprint(data: dict[str, Any]) -> str:
    """What identifies a plan ConfigMap's data: a hash of every key but the SQL, and the SQL's sha256. The operator
    records it when it publishes, and republishes when the ConfigMap it observes no longer has it."""
    sql = data.get(names.PLAN_DATA_SQL)
    rest = {k: v for k, v in data.items() if k != names.PLAN_DATA_SQL}
    return f"{names.short_hash(rest, 16)}/{contract.plan_digest(sql) if isinstance(sql, str) else 'none'}"


def build_plan_configmap(
    owner: Owner, version: str, job: str, digest: str, sql: str | None, revisions: list[str], lost: bool = False
) -> dict[str, Any]:
    """What a Manual contract would run, for the person approving it (owned by the resource, replaced per plan).
    Without the SQL (too large for a termination message, or `lost`: its plan pod is gone since) the ConfigMap says
    how to render it; the contract still runs only SQL of this digest (`--expect-digest`)."""
    render = f"-- Render it with: divbase-migrate plan contract --release {version} --sql\n"
    if sql is not None:
        note = sql
    elif lost:
        note = (
            f"-- this ConfigMap was changed after the operator published it, and the plan's SQL is no longer at "
            f"hand; its digest is {digest}.\n{render}"
        )
    else:
        note = f"-- the plan is larger than a termination message can carry; its digest is {digest}.\n{render}"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": names.plan_configmap_name(owner.name),
            "namespace": owner.namespace,
            "labels": names.child_labels(
                owner.name, **{names.LABEL_STEP: names.STEP_PLAN, names.LABEL_VERSION: version}
            ),
            "ownerReferences": [owner.reference()],
        },
        "data": {
            names.PLAN_DATA_SQL: note,
            "version": version,
            "digest": digest,
            "job": job,
            "revisions": "\n".join(revisions),
            names.PLAN_DATA_TRUNCATED: "false" if sql is not None else "true",
        },
    }
