"""The DivBaseDatabase CustomResourceDefinition, built from `names` so the schema and the code agree.

`python -m divbase_operator.crd` prints it; `crds/divbasedatabases.divbase.io.yaml` is that output, and a unit
test fails when the two differ. The schema rejects at admission everything it can express (types, patterns,
enums, CEL rules), with a message that names the field; the operator reports the rest in status."""

from __future__ import annotations

import copy
import sys
from typing import Any

from divbase_migrations import release_version

from . import names
from .status import StepState

DNS_LABEL_REGEX = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def _str(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _int(description: str, minimum: int = 0, **extra: Any) -> dict[str, Any]:
    return {"type": "integer", "format": "int32", "minimum": minimum, "description": description, **extra}


def _bool(description: str) -> dict[str, Any]:
    return {"type": "boolean", "description": description}


def _free(description: str, kind: str = "object") -> dict[str, Any]:
    return {"type": kind, "description": description, "x-kubernetes-preserve-unknown-fields": True}


def _rule(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def _image(description: str) -> dict[str, Any]:
    return _str(
        f"{description} A repository, whose tag is then spec.version exactly as written (`v0.1.0a9` gives "
        "`<repository>:v0.1.0a9`), or a full reference with a tag or digest, which every release uses as it "
        "is.",
        minLength=1,
        maxLength=512,
        pattern=r"^\S+$",
    )


def spec_schema() -> dict[str, Any]:
    secret_ref = {
        "type": "object",
        "description": "The Secret with the database connection. The operator never reads it: migration Jobs get "
        "its keys as environment variables.",
        "required": ["name"],
        "properties": {
            "name": _str("Name of the Secret, in the resource's namespace.", minLength=1, maxLength=253),
            "key": _str(
                "Key holding a full connection URL (postgresql://user:password@host:port/db). Default `url`.",
                minLength=1,
            ),
            "keys": {
                "type": "object",
                "description": "Keys holding the connection's parts, instead of a URL.",
                "required": ["host", "database", "user"],
                "properties": {
                    part: _str(f"Key holding the {part}.", minLength=1)
                    for part in ("host", "port", "database", "user", "password")
                },
            },
        },
        "x-kubernetes-validations": [
            _rule("!(has(self.key) && has(self.keys))", "set either key (a URL) or keys (its parts), not both"),
        ],
    }
    workload = {
        "type": "object",
        "required": ["name", "template"],
        "properties": {
            "name": _str(
                "Workload name; the Deployment is called `<resource>-<name>`.", pattern=DNS_LABEL_REGEX, maxLength=40
            ),
            "image": _image(
                "The image of this workload's containers that have no `image`, instead of spec.image "
                "(DivBase: `ghcr.io/scilifelabdatacentre/divbase-worker` for the Celery workers)."
            ),
            "template": {
                "type": "object",
                "description": "A Deployment spec (replicas, strategy, progressDeadlineSeconds, template). Leave "
                "`image` empty on containers that run DivBase: the operator sets the release image "
                "(the workload's `image`, else spec.image). The operator sets the selector.",
                "required": ["template"],
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {
                    "replicas": _int("Number of pods.", 0),
                    "progressDeadlineSeconds": _int(
                        "Seconds a rollout may make no progress before the deploy step fails (and rolls back).", 1
                    ),
                    "selector": _free("Not allowed: the operator sets the selector from the workload's name."),
                    "template": {
                        "type": "object",
                        "description": "The pod template (metadata, spec), as in a Deployment.",
                        "required": ["spec"],
                        "x-kubernetes-preserve-unknown-fields": True,
                        "properties": {
                            "metadata": _free("Pod labels and annotations; the operator adds its own labels."),
                            "spec": {
                                "type": "object",
                                "description": "The pod spec.",
                                "required": ["containers"],
                                "x-kubernetes-preserve-unknown-fields": True,
                                "properties": {
                                    "containers": {
                                        "type": "array",
                                        "minItems": 1,
                                        "description": "Containers; an empty `image` gets the release image (the "
                                        "workload's `image`, else spec.image, tagged spec.version), "
                                        "as it does in initContainers.",
                                        "items": _free("A container."),
                                    }
                                },
                            },
                        },
                    },
                },
                "x-kubernetes-validations": [
                    _rule(
                        "!has(self.selector)",
                        "the operator sets the selector; remove template.selector",
                        reason="FieldValueForbidden",
                    ),
                ],
            },
        },
    }
    migration_job = {
        "type": "object",
        "description": "How migration Jobs run.",
        "properties": {
            "serviceAccountName": _str(
                "ServiceAccount of migration pods (default: the namespace's default). It needs no API access."
            ),
            "automountServiceAccountToken": _bool("Mount an API token in migration pods. Default false."),
            "resources": _free("Container resources (requests, limits) of the migration container."),
            "nodeSelector": {
                "type": "object",
                "description": "Node labels migration pods must match.",
                "additionalProperties": {"type": "string"},
            },
            "tolerations": {
                "type": "array",
                "description": "Tolerations of migration pods.",
                "items": _free("A toleration."),
            },
            "backoffLimit": _int("Pod retries before the Job fails. Default 2.", 0, maximum=10),
            "activeDeadlineSeconds": _int("Upper bound on a migration Job's run time. Default 900.", 1),
            "ttlSecondsAfterFinished": _int("Seconds a finished Job is kept. Default 86400.", 0),
            "lockTimeoutSeconds": _int("PostgreSQL lock_timeout for each migration statement.", 1),
            "statementTimeoutSeconds": _int("PostgreSQL statement_timeout (0 disables).", 0),
            "image": _image(
                "The image migration Jobs run, instead of spec.image: one that carries the "
                "release's migrations and its runner."
            ),
            "runAsUser": _int(
                "UID of the migration pod. Migration pods always run with runAsNonRoot, which the "
                "kubelet can verify only for a numeric user: set it when the image's USER is a name "
                "(DivBase's images: `USER appuser`, UID 1000).",
                1,
            ),
            "runAsGroup": _int("GID of the migration pod (DivBase's images: 1000).", 0),
            "command": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string"},
                "description": "The migration runner's command. Default `[divbase-migrate]`. Any program "
                "that honours the runner contract (docs/runner-contract.md) may stand in.",
            },
            "args": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Fixed arguments after the command; the operator appends the step's own "
                "(`expand --release V`, `contract --release V`, `plan contract --release V "
                "--sql`, and the timeouts for expand and contract). No secrets here: use the "
                "database Secret.",
            },
        },
    }
    contract = {
        "type": "object",
        "description": "When the contract step (destructive revisions) runs, once no pod of the old release is left.",
        "properties": {
            "policy": _str(
                "Auto: at once. Manual: when annotation "
                f"`{names.ANNOTATION_APPROVE_CONTRACT}` names the version. Delayed: delaySeconds after "
                "the deploy finished.",
                enum=list(names.CONTRACT_POLICIES),
                default=names.CONTRACT_AUTO,
            ),
            "delaySeconds": _int("Delay for policy Delayed.", 0),
        },
        "x-kubernetes-validations": [
            _rule(
                "!has(self.policy) || self.policy != 'Delayed' || has(self.delaySeconds)",
                "delaySeconds is required when policy is Delayed",
                ".delaySeconds",
                "FieldValueRequired",
            ),
            _rule(
                "!has(self.delaySeconds) || (has(self.policy) && self.policy == 'Delayed')",
                "delaySeconds only applies to policy Delayed",
                ".delaySeconds",
                "FieldValueForbidden",
            ),
        ],
    }
    return {
        "type": "object",
        "description": "The desired DivBase release and how to roll it out.",
        "required": ["version", "image", "database"],
        "properties": {
            "version": _str(
                "The DivBase release to run: a PEP 440 version with an optional leading `v`, e.g. "
                "`v0.1.0a9` (DivBase's tags), `0.1.0a9`, `1.4.0rc1` or `2`. Releases are ordered as "
                "PEP 440 orders them (0.1.0a9 < 0.1.0a10 < 0.1.0 < 2). Written exactly as the image "
                "tag is: an image given as a repository gets this string as its tag. Changing it "
                "starts a rollout.",
                pattern=release_version.PATTERN,
                maxLength=release_version.MAX_LENGTH,
            ),
            "image": _image(
                "The DivBase application image: of migration Jobs and of every workload container "
                "without an `image`, unless workloads[].image or migrationJob.image says otherwise "
                "(DivBase: `ghcr.io/scilifelabdatacentre/divbase-fastapi`)."
            ),
            "database": {
                "type": "object",
                "description": "Where the database's credentials are.",
                "required": ["secretRef"],
                "properties": {"secretRef": secret_ref},
            },
            "workloads": {
                "type": "array",
                "description": "The Deployments gated on migrations (API, Celery workers). The operator creates "
                "and owns them.",
                "maxItems": 20,
                "items": workload,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
            "migrationJob": migration_job,
            "contract": contract,
            "rollback": {
                "type": "object",
                "description": "What a failed deploy does.",
                "properties": {
                    "onDeployFailure": _bool(
                        "Roll workloads back to the previous release when a "
                        "Deployment exceeds its progress deadline. Default true."
                    )
                },
            },
            "paused": _bool("Stop all transitions (a running Job still finishes)."),
        },
    }


# The status records below declare every field the operator writes (status.py is their model): the apiserver prunes
# an undeclared field of a structural schema, so a field written but not declared here would be lost.
def _obj(description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "description": description, "properties": properties}


def _time(description: str, nullable: bool = False) -> dict[str, Any]:
    return _str(f"{description} (RFC 3339, UTC).", **({"nullable": True} if nullable else {}))


def _count(description: str, nullable: bool = False) -> dict[str, Any]:
    return {
        "type": "integer",
        "format": "int64",
        "description": description,
        **({"nullable": True} if nullable else {}),
    }


def _steps(description: str, step: dict[str, Any]) -> dict[str, Any]:
    # a copy each: one dict shared would be dumped as YAML anchors and aliases
    return _obj(
        description, {s: copy.deepcopy(step) for s in (names.STEP_EXPAND, names.STEP_DEPLOY, names.STEP_CONTRACT)}
    )


def _step_record() -> dict[str, Any]:
    attempt = _obj(
        "A failed pod of the step's Job.",
        {
            "pod": _str("The pod."),
            "exitCode": _count("Its exit code.", nullable=True),
            "finishedAt": _time("When it ended"),
            "message": _str("The runner's error (or why there is no summary)."),
        },
    )
    lock_wait = _obj(
        "The migration lock the Job's pod waits for: who holds it, since when.",
        {
            "pod": _str("The waiting pod."),
            "holderPid": _count("The holder's backend pid."),
            "holderApplication": _str("The holder's application_name."),
            "holderSince": _str("When the holder connected."),
            "since": _str("Since when the pod waits."),
        },
    )
    return _obj(
        "One step of the rollout.",
        {
            "phase": _str("The step's state.", enum=[s.value for s in StepState]),
            "job": _str("The step's migration Job."),
            "startedAt": _time("When the step started"),
            "finishedAt": _time("When the step ended"),
            "message": _str("How the step ended, or why it failed."),
            "attempts": {
                "type": "array",
                "description": "Failed attempts (pods) of the running Job, oldest first.",
                "items": attempt,
            },
            "failedAttempts": _count("How many of the Job's pods failed."),
            "lockWait": lock_wait,
        },
    )


def _rollout() -> dict[str, Any]:
    return _obj(
        "The rollout in progress or the last one: versions, steps with Jobs and timings.",
        {
            "fromVersion": _str("The release it started from (null: none ran).", nullable=True),
            "toVersion": _str("The release it rolls out."),
            "image": _str("The release's image.", nullable=True),
            "startedAt": _time("When it started", nullable=True),
            "retryToken": _str("The divbase.io/retry value last acted on."),
            "steps": _steps("Each step's record.", _step_record()),
            "foundVersion": _str("A first rollout on a migrated database: the release its expand found there."),
            "finishedAt": _time("When it ended"),
            "result": _str(
                "How it ended.", enum=[names.RESULT_SUCCEEDED, names.RESULT_FAILED, names.RESULT_SUPERSEDED]
            ),
            "currentStep": _str("The step an unfinished rollout is in."),
        },
    )


def _failure() -> dict[str, Any]:
    return _obj(
        "The last failure: step, Job, exit code, and the runner's own error from its termination message "
        "(the Job's condition message only when no pod said anything).",
        {
            "step": _str("The step that failed."),
            "version": _str("The release it was for."),
            "job": _str("Its Job (null for the deploy step).", nullable=True),
            "reason": _str("Why, in one word (the Job's condition reason, or ProgressDeadlineExceeded)."),
            "exitCode": _count("The last pod's exit code.", nullable=True),
            "message": _str("The runner's error."),
            "time": _time("When it failed", nullable=True),
            "attempts": _count("How many pods of the Job failed."),
        },
    )


def _contract_plan() -> dict[str, Any]:
    return _obj(
        "The reviewed plan of a Manual contract: version, plan Job, sha256 digest of its SQL, revisions, the "
        "ConfigMap holding the SQL, and whether the SQL was left out of it (truncated: too large to publish). "
        "Approve with annotation divbase.io/approve-contract=<version>@<digest prefix>.",
        {
            "version": _str("The release whose contract it plans."),
            "job": _str("The plan Job."),
            "digest": _str("sha256:<hex> of the SQL."),
            "revisions": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The revisions the contract applies.",
            },
            "configMap": _str("The ConfigMap holding the SQL."),
            "published": _str("Fingerprint of what the operator published in the ConfigMap."),
            "truncated": _bool("The SQL was left out of the ConfigMap (too large, or lost)."),
            "image": _str("The image the plan pod ran, by digest: the contract runs that one."),
        },
    )


def _history_entry() -> dict[str, Any]:
    step = _obj(
        "A step of a finished rollout.",
        {
            "phase": _str("The step's state.", nullable=True),
            "seconds": {"type": "number", "nullable": True, "description": "How long the step took."},
            "job": _str("The step's migration Job."),
        },
    )
    return _obj(
        "A finished rollout.",
        {
            "fromVersion": _str("The release it started from.", nullable=True),
            "foundVersion": _str("The release its expand found in the database."),
            "toVersion": _str("The release it rolled out."),
            "result": _str("How it ended.", nullable=True),
            "startedAt": _time("When it started", nullable=True),
            "finishedAt": _time("When it ended", nullable=True),
            "steps": _steps("Each step's state and duration.", step),
        },
    )


def _schema_state() -> dict[str, Any]:
    return _obj(
        "Releases whose expand and contract steps were applied, and the revisions reported.",
        {
            "expandedTo": _str("The newest release whose expand ran."),
            "contractedTo": _str("The newest release whose contract ran."),
            "revisions": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Branch -> revision the database is at, as the runner reported.",
            },
        },
    )


def status_schema() -> dict[str, Any]:
    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": _str("Condition type."),
            "status": _str("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": _str("Machine-readable reason."),
            "message": _str("Human-readable detail."),
            "observedGeneration": {"type": "integer", "format": "int64"},
            "lastTransitionTime": _str("When status last changed.", format="date-time"),
        },
    }
    return {
        "type": "object",
        "description": "What the operator observed and did.",
        "properties": {
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The spec generation this status describes.",
            },
            "phase": _str("Where the rollout is.", enum=list(names.PHASES)),
            "currentVersion": _str("The release every workload runs.", nullable=True),
            "targetVersion": _str("spec.version as last seen."),
            "activeJob": _str("The migration Job running now."),
            "schema": _schema_state(),
            "rollout": _rollout(),
            "lastFailure": _failure(),
            "contractPlan": _contract_plan(),
            "history": {
                "type": "array",
                "description": "Recent rollouts, newest first, with step timings.",
                "items": _history_entry(),
            },
            "conditions": {
                "type": "array",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "description": "Ready, Reconciling, Stalled and one per step.",
            },
            "kopf": _free("Kopf's own bookkeeping."),
        },
    }


def build_crd() -> dict[str, Any]:
    ready = f'.status.conditions[?(@.type=="{names.COND_READY}")].status'
    ready_message = f'.status.conditions[?(@.type=="{names.COND_READY}")].message'
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{names.PLURAL}.{names.GROUP}"},
        "spec": {
            "group": names.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": names.KIND,
                "listKind": f"{names.KIND}List",
                "plural": names.PLURAL,
                "singular": names.SINGULAR,
                "shortNames": [names.SHORT_NAME],
                "categories": ["divbase"],
            },
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": "Version",
                            "type": "string",
                            "jsonPath": ".spec.version",
                            "description": "Desired release",
                        },
                        {
                            "name": "Current",
                            "type": "string",
                            "jsonPath": ".status.currentVersion",
                            "description": "Release the workloads run",
                        },
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Ready", "type": "string", "jsonPath": ready},
                        # priority 1: only with `kubectl get -o wide`
                        {
                            "name": "Step",
                            "type": "string",
                            "jsonPath": ".status.rollout.currentStep",
                            "priority": 1,
                            "description": "The step an unfinished rollout is in: expand, deploy or contract",
                        },
                        {
                            "name": "Active Job",
                            "type": "string",
                            "jsonPath": ".status.activeJob",
                            "priority": 1,
                            "description": "The migration Job running now",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                        {
                            "name": "Message",
                            "type": "string",
                            "jsonPath": ready_message,
                            "priority": 1,
                            "description": "The Ready condition's message: progress, or what failed",
                        },
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "A DivBase database and the release of the code that uses it. The operator rolls "
                                "a new release out as expand (additive migrations), deploy (workloads), contract "
                                "(destructive migrations), each gated on the one before."
                            ),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    import yaml

    header = "# Generated by `python -m divbase_operator.crd`; edit operator/divbase_operator/crd.py instead.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render())
