"""Kubernetes' own Pod Security admission judges the pods the operator builds (issue 14, item 2): each pod spec a
workload Deployment or a migration Job would run is created by server-side dry run in a namespace that enforces
`restricted`, so the verdict is the apiserver's, not a copy of its rules.

- A workload template that sets nothing but the UID passes once the operator's defaults are merged, and is
  refused as written (the check is live).
- Without a UID the merged template is refused for runAsNonRoot alone: the documented gap (the kubelet cannot
  verify a named USER such as DivBase's `appuser`, so the operator does not add it).
- Migration pods pass for every step, with and without a UID."""

from __future__ import annotations

import time
from typing import Any

import pytest
from divbase_operator.builders import Owner, build_deployment, build_job
from divbase_operator.spec import DatabaseSpec, parse_spec
from kubernetes import client

pytestmark = pytest.mark.cluster

OWNER = Owner("db", "ns", "uid-1")
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}


@pytest.fixture
def restricted_namespace(api_client: Any, namespace: str) -> str:
    core = client.CoreV1Api(api_client)
    core.patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})
    deadline = time.monotonic() + 60  # pods need the namespace's `default` ServiceAccount, made by a controller
    while True:
        try:
            core.read_namespaced_service_account("default", namespace)
            return namespace
        except client.ApiException as e:
            if e.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def _verdict(api_client: Any, namespace: str, pod_spec: dict[str, Any]) -> str | None:
    """None when Pod Security admits a pod of `pod_spec`, else the apiserver's reason."""
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "probe-"}, "spec": pod_spec}
    try:
        client.CoreV1Api(api_client).create_namespaced_pod(namespace, body, dry_run="All")
        return None
    except client.ApiException as e:
        assert e.status == 403 and "violates PodSecurity" in (e.body or ""), e.body
        return str(e.body)


def _spec(pod_security: dict[str, Any] | None = None, **extra: Any) -> DatabaseSpec:
    pod: dict[str, Any] = {"containers": [{"name": "api", "command": ["divbase-api"],
                                           "ports": [{"containerPort": 8000}]}]}
    if pod_security is not None:
        pod["securityContext"] = pod_security
    raw = {"version": "v0.1.0a9", "image": "ghcr.io/scilifelabdatacentre/divbase-fastapi",
           "database": {"secretRef": {"name": "divbase-db"}},
           "workloads": [{"name": "api", "template": {"template": {"spec": pod}}}], **extra}
    spec, errors = parse_spec(raw)
    assert spec is not None and not errors, errors
    return spec


def _workload_pod(spec: DatabaseSpec, restricted: bool) -> dict[str, Any]:
    return build_deployment(OWNER, spec, spec.workloads[0], spec.version, restricted)["spec"]["template"]["spec"]


def test_a_template_with_a_uid_meets_restricted_once_the_defaults_are_merged(api_client: Any,
                                                                              restricted_namespace: str) -> None:
    spec = _spec({"runAsUser": 1000, "runAsGroup": 1000})  # DivBase's images: USER appuser, 1000:1000
    assert _verdict(api_client, restricted_namespace, _workload_pod(spec, restricted=True)) is None
    refused = _verdict(api_client, restricted_namespace, _workload_pod(spec, restricted=False))
    assert refused is not None
    for missing in ("allowPrivilegeEscalation != false", "unrestricted capabilities", "runAsNonRoot != true",
                    "seccompProfile"):
        assert missing in refused, refused


def test_without_a_uid_only_run_as_non_root_is_left_to_the_template(api_client: Any,
                                                                     restricted_namespace: str) -> None:
    refused = _verdict(api_client, restricted_namespace, _workload_pod(_spec(), restricted=True))
    assert refused is not None and "runAsNonRoot != true" in refused, refused
    for merged in ("allowPrivilegeEscalation", "capabilities", "seccompProfile"):
        assert merged not in refused, refused
    explicit = _spec({"runAsNonRoot": True})  # an image with a numeric USER may say so without a UID
    assert _verdict(api_client, restricted_namespace, _workload_pod(explicit, restricted=True)) is None


@pytest.mark.parametrize("migration_job", [{}, {"runAsUser": 1000, "runAsGroup": 1000}], ids=["image-uid", "uid"])
def test_migration_pods_meet_restricted(api_client: Any, restricted_namespace: str,
                                        migration_job: dict[str, Any]) -> None:
    spec = _spec(migrationJob=migration_job)
    for step in ("expand", "plan", "contract"):
        pod = build_job(OWNER, spec, step, spec.version, "")["spec"]["template"]["spec"]
        assert _verdict(api_client, restricted_namespace, pod) is None, step
