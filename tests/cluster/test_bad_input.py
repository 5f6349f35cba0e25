"""Every kind of bad input we know, on the real control plane: what the apiserver refuses at admission, and what
the operator reports in status and Events. docs/operator.md's "Bad input" table lists the same cases."""

from __future__ import annotations

import json
from typing import Any

import pytest
from divbase_app.rollout import database_spec
from divbase_operator import names
from divbase_operator.testing import Kube, OperatorProcess
from kubernetes.client.exceptions import ApiException


def spec(**changes: Any) -> dict[str, Any]:
    body = database_spec("1", replicas=1)
    body.update(changes)
    return body


def with_workload(change: dict[str, Any]) -> dict[str, Any]:
    body = spec()
    body["workloads"][0]["template"].update(change)
    return body


def with_container(change: dict[str, Any]) -> dict[str, Any]:
    body = spec()
    body["workloads"][0]["template"]["template"]["spec"]["containers"][0].update(change)
    return body


ADMISSION = {
    "version-not-a-release": (spec(version="two"), "spec.version"),
    "delayed-without-delay": (spec(contract={"policy": "Delayed"}), "delaySeconds is required when policy is Delayed"),
    "delay-without-delayed": (spec(contract={"policy": "Auto", "delaySeconds": 60}), "delaySeconds only applies"),
    "unknown-policy": (spec(contract={"policy": "Sometimes"}), "spec.contract.policy"),
    "secret-key-and-keys": (
        spec(
            database={
                "secretRef": {
                    "name": "db",
                    "key": "url",
                    "keys": {"host": "h", "port": "p", "database": "d", "user": "u", "password": "pw"},
                }
            }
        ),
        "set either key (a URL) or keys (its parts), not both",
    ),
    "no-secret": (spec(database={}), "spec.database.secretRef"),
    "workload-name": (
        spec(
            workloads=[
                {"name": "API", "template": {"template": {"spec": {"containers": [{"name": "a", "command": ["x"]}]}}}}
            ]
        ),
        "spec.workloads[0].name",
    ),
    "workload-selector": (with_workload({"selector": {"matchLabels": {"a": "b"}}}), "the operator sets the selector"),
    "negative-replicas": (with_workload({"replicas": -1}), "spec.workloads[0].template.replicas"),
    "version-latest": (spec(version="latest"), "spec.version"),
    "version-local-label": (spec(version="1.0.0+build.7"), "spec.version"),
    "migration-command-empty": (spec(migrationJob={"command": []}), "spec.migrationJob.command"),
    "workload-image-blank": (spec(workloads=[{**spec()["workloads"][0], "image": "a b"}]), "spec.workloads[0].image"),
}


@pytest.mark.parametrize("case", sorted(ADMISSION))
def test_admission_rejects_with_a_message_naming_the_field(kube: Kube, case: str) -> None:
    body, expected = ADMISSION[case]
    with pytest.raises(ApiException) as caught:
        kube.custom.create_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            kube.namespace,
            names.PLURAL,
            {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": case}, "spec": body},
            field_validation="Strict",
        )  # what kubectl apply does
    assert caught.value.status == 422, caught.value.body
    assert expected in json.loads(caught.value.body)["message"]


def test_admission_takes_divbase_versions_and_the_new_fields(kube: Kube) -> None:
    """The CRD's version pattern as the apiserver evaluates it (Go's regexp, not Python's): DivBase's tags pass,
    and so do per-workload images and a migration runner's command and args (server-side dry run)."""
    for version in ("v0.1.0a9", "0.1.0a9", "0.1.0-a9", "1.2.3", "2", "1.4.0rc1", "1.0.0.post1", "v10.0.0.dev3"):
        body = spec(
            version=version,
            migrationJob={
                "image": "ghcr.io/scilifelabdatacentre/divbase-fastapi",
                "command": ["python", "-m", "divbase_migrations.cli"],
                "args": ["--manifest", "/etc/releases.toml"],
            },
        )
        body["workloads"][0]["image"] = "ghcr.io/scilifelabdatacentre/divbase-worker"
        name = "v-" + version.replace(".", "-").lower()
        created = kube.custom.create_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            kube.namespace,
            names.PLURAL,
            {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": name}, "spec": body},
            dry_run="All",
            field_validation="Strict",
        )
        assert created["spec"]["version"] == version
        assert created["spec"]["workloads"][0]["image"] == "ghcr.io/scilifelabdatacentre/divbase-worker"


def _stalled(kube: Kube, name: str, reason: str, timeout: float = 120) -> str:
    db = kube.wait_condition(name, names.COND_STALLED, timeout=timeout)
    stalled = next(c for c in db["status"]["conditions"] if c["type"] == names.COND_STALLED)
    assert stalled["reason"] == reason, stalled
    assert db["status"]["phase"] == names.PHASE_FAILED
    assert any(e.reason in (reason, names.EVENT_JOB_FAILED) and e.type == "Warning" for e in kube.events(name))
    return str(stalled["message"])


def test_operator_reports_what_only_the_cluster_can_tell(kube: Kube, operator: OperatorProcess, db_secret: str) -> None:
    # a workload the Deployment API refuses: Stalled/ApplyFailed with the apiserver's message, no retry loop
    kube.create_db("bad-port", with_container({"ports": [{"containerPort": 70000}]}))
    # a release the image does not know: the expand Job fails at once (exit 2, no retries)
    kube.create_db("unknown-release", spec(version="9"))
    # a Secret that does not exist: the Job's pod cannot start; said in Ready's message
    missing = spec()
    missing["database"] = {"secretRef": {"name": "no-such-secret"}}
    kube.create_db("missing-secret", missing)

    message = _stalled(kube, "bad-port", names.REASON_APPLY_FAILED, timeout=180)
    assert "containerPort: Invalid value: 70000" in message and "rejected by the API server" in message
    message = _stalled(kube, "unknown-release", names.REASON_JOB_FAILED, timeout=180)
    assert "release '9' is not in the manifest" in message
    db = kube.wait_condition(
        "missing-secret", names.COND_READY, status="False", reason=names.REASON_JOB_POD_BLOCKED, timeout=120
    )
    ready = next(c for c in db["status"]["conditions"] if c["type"] == names.COND_READY)
    assert "no-such-secret" in ready["message"]
    errors = operator.logs().count('"levelname":"ERROR"') + operator.logs().count("Traceback")
    assert errors == 0, operator.logs()[-3000:]


def test_downgrade_past_a_contract_is_refused(kube: Kube, operator: OperatorProcess, db_secret: str) -> None:
    kube.create_db("divbase", spec())
    kube.wait_condition("divbase", names.COND_READY, timeout=180)
    kube.patch_db("divbase", {"spec": {"version": "2"}})
    kube.wait_condition("divbase", names.COND_READY, timeout=180)
    kube.patch_db("divbase", {"spec": {"version": "1"}})
    message = _stalled(kube, "divbase", names.REASON_DOWNGRADE_REFUSED)
    assert "schema was contracted for release 2" in message
    assert {d.spec.template.spec.containers[0].image for d in kube.deployments("divbase")} == {"divbase:2"}
