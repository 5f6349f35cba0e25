"""Kubernetes' own Pod Security admission judges the pods the operator builds (issue 14, item 2): each pod spec a
workload Deployment or a migration Job would run is created by server-side dry run in a namespace that enforces
`restricted`, so the verdict is the apiserver's, not a copy of its rules.

- A workload template that sets nothing but the UID passes once the operator's defaults are merged, and is
  refused as written (the check is live).
- Without a UID the merged template is refused for runAsNonRoot alone: the documented gap (the kubelet cannot
  verify a named USER such as DivBase's `appuser`, so the operator does not add it).
- Migration pods pass for every step, with and without a UID.
- Whatever `baseline` refuses of a workload template, the operator refuses too: every template of the corpus the
  chart's admission policy is tested with (workload_templates.py) as a pod in a namespace enforcing baseline."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from divbase_operator.builders import Owner, build_deployment, build_job
from divbase_operator.spec import DatabaseSpec, parse_spec, privileged_errors
from divbase_testsupport import wait_for
from kubernetes import client
from workload_templates import ALLOWED_CASES, COMBINED, REFUSED_CASES, plain_database, with_mutation

pytestmark = pytest.mark.cluster

OWNER = Owner("db", "ns", "uid-1")
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
BASELINE = {"pod-security.kubernetes.io/enforce": "baseline", "pod-security.kubernetes.io/enforce-version": "latest"}


def _enforcing(api_client: Any, namespace: str, labels: dict[str, str]) -> str:
    core = client.CoreV1Api(api_client)
    core.patch_namespace(namespace, {"metadata": {"labels": labels}})
    # pods need the namespace's `default` ServiceAccount, made by a controller (404 until then)
    wait_for(
        "the namespace's default ServiceAccount", lambda: core.read_namespaced_service_account("default", namespace), 60
    )
    return namespace


@pytest.fixture
def restricted_namespace(api_client: Any, namespace: str) -> str:
    return _enforcing(api_client, namespace, RESTRICTED)


@pytest.fixture
def baseline_namespace(api_client: Any, namespace: str) -> str:
    return _enforcing(api_client, namespace, BASELINE)


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
    pod: dict[str, Any] = {
        "containers": [{"name": "api", "command": ["divbase-api"], "ports": [{"containerPort": 8000}]}]
    }
    if pod_security is not None:
        pod["securityContext"] = pod_security
    raw = {
        "version": "v0.1.0a9",
        "image": "ghcr.io/scilifelabdatacentre/divbase-fastapi",
        "database": {"secretRef": {"name": "divbase-db"}},
        "workloads": [{"name": "api", "template": {"template": {"spec": pod}}}],
        **extra,
    }
    spec, errors = parse_spec(raw)
    assert spec is not None and not errors, errors
    return spec


def _workload_pod(spec: DatabaseSpec, restricted: bool) -> dict[str, Any]:
    return build_deployment(OWNER, spec, spec.workloads[0], spec.version, restricted)["spec"]["template"]["spec"]


def test_a_template_with_a_uid_meets_restricted_once_the_defaults_are_merged(
    api_client: Any, restricted_namespace: str
) -> None:
    spec = _spec({"runAsUser": 1000, "runAsGroup": 1000})  # DivBase's images: USER appuser, 1000:1000
    assert _verdict(api_client, restricted_namespace, _workload_pod(spec, restricted=True)) is None
    refused = _verdict(api_client, restricted_namespace, _workload_pod(spec, restricted=False))
    assert refused is not None
    for missing in (
        "allowPrivilegeEscalation != false",
        "unrestricted capabilities",
        "runAsNonRoot != true",
        "seccompProfile",
    ):
        assert missing in refused, refused


def test_without_a_uid_only_run_as_non_root_is_left_to_the_template(api_client: Any, restricted_namespace: str) -> None:
    refused = _verdict(api_client, restricted_namespace, _workload_pod(_spec(), restricted=True))
    assert refused is not None and "runAsNonRoot != true" in refused, refused
    for merged in ("allowPrivilegeEscalation", "capabilities", "seccompProfile"):
        assert merged not in refused, refused
    explicit = _spec({"runAsNonRoot": True})  # an image with a numeric USER may say so without a UID
    assert _verdict(api_client, restricted_namespace, _workload_pod(explicit, restricted=True)) is None


@pytest.mark.parametrize("migration_job", [{}, {"runAsUser": 1000, "runAsGroup": 1000}], ids=["image-uid", "uid"])
def test_migration_pods_meet_restricted(
    api_client: Any, restricted_namespace: str, migration_job: dict[str, Any]
) -> None:
    spec = _spec(migrationJob=migration_job)
    for step in ("expand", "plan", "contract"):
        pod = build_job(OWNER, spec, step, spec.version, "")["spec"]["template"]["spec"]
        assert _verdict(api_client, restricted_namespace, pod) is None, step


# --- the operator refuses whatever baseline refuses (issue 14, item 2) ---------------------------------------------
ADMITTED, REFUSED, INVALID = "admitted", "refused by Pod Security", "not a valid pod"


def _baseline_verdict(api_client: Any, namespace: str, db: dict[str, Any], reasons: set[str]) -> str:
    """What Kubernetes' Pod Security admission (baseline) says of the pod the first workload's Deployment would
    create, its template as written (the operator's restricted defaults only add what baseline allows). Adds the
    reasons of a refusal (`host namespaces`, `forbidden sysctls`, ...: one per check of Pod Security) to `reasons`."""
    spec, errors = parse_spec(db["spec"])
    assert spec is not None, errors
    template = build_deployment(OWNER, spec, spec.workloads[0], spec.version, restricted=False)["spec"]["template"]
    for kind in ("initContainers", "ephemeralContainers"):  # the operator fills in the image of `containers` only
        for container in template["spec"].get(kind) or []:
            container.setdefault("image", "divbase:1")
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "spec": template["spec"],
        "metadata": {
            "generateName": "probe-",
            "annotations": (template.get("metadata") or {}).get("annotations") or {},
        },
    }
    # as sent, past the client's own models (they refuse some shapes before the apiserver could say anything)
    request = api_client.param_serialize(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        query_params=[("dryRun", "All")],
        body=body,
        auth_settings=["BearerToken"],
        header_params={"Accept": "application/json", "Content-Type": "application/json"},
    )
    response = api_client.call_api(*request)
    message = json.loads(response.read()).get("message", "")
    if response.status == 201:
        return ADMITTED
    if response.status == 403 and 'violates PodSecurity "baseline:latest": ' in message:
        reasons.update(re.findall(r"(?:^|\), )([^()]+?) \(", message.split('"baseline:latest": ', 1)[1]))
        return REFUSED
    assert response.status == 422, message  # pod validation comes first: such a pod cannot exist at all
    return INVALID


# The corpus's cases Pod Security cannot judge: pod validation refuses the pod first (a Windows host process needs
# a Windows pod on the host's network; an unmasked /proc needs a user namespace; an ephemeral container cannot be
# created with its pod; a profile needs its type, an AppArmor annotation a known kind of profile).
NOT_A_POD = {
    "pod-host-process",
    "container-host-process",
    "proc-mount-unmasked",
    "ephemeral-container-host-port",
    "container-seccomp-without-type",
    "apparmor-annotation-other-profile",
}
# ... and where the operator is stricter than baseline, which lets an unmasked /proc be in a user namespace
STRICTER = {"proc-mount-unmasked-in-a-user-namespace"}
BASELINE_REASONS = {
    "host namespaces",
    "hostPath volumes",
    "hostPort",
    "privileged",
    "non-default capabilities",
    "forbidden AppArmor profile",
    "forbidden AppArmor profiles",
    "seLinuxOptions",
    "seccompProfile",
    "forbidden sysctls",
    "probe or lifecycle host",
}


def test_the_operator_refuses_whatever_baseline_refuses(api_client: Any, baseline_namespace: str) -> None:
    """Every template of the corpus (each refusal of `privileged_errors`, templates it accepts, combinations) as a
    pod in a namespace that enforces baseline: whatever Kubernetes' own Pod Security admission refuses, the
    operator refuses too (and the chart's policy, test_admission_policy.py, refuses what the operator does)."""
    mutations = {**{k: m for k, (m, _) in REFUSED_CASES.items()}, **ALLOWED_CASES, **COMBINED}
    verdicts, reasons = {}, set[str]()
    for case, mutation in mutations.items():
        db = with_mutation(plain_database(baseline_namespace), mutation, case, workload=0)
        spec, _ = parse_spec(db["spec"])
        assert spec is not None
        verdicts[case] = (_baseline_verdict(api_client, baseline_namespace, db, reasons), bool(privileged_errors(spec)))
    assert [case for case, (baseline, operator) in verdicts.items() if baseline == REFUSED and not operator] == []
    assert {case for case, (baseline, _) in verdicts.items() if baseline == INVALID} == NOT_A_POD
    assert {case for case, (baseline, operator) in verdicts.items() if baseline == ADMITTED and operator} == STRICTER
    assert {case for case, (baseline, _) in verdicts.items() if baseline == ADMITTED} >= set(ALLOWED_CASES)
    # the corpus reaches every check of baseline that a valid pod can fail (procMount and hostProcess: see above)
    assert reasons == BASELINE_REASONS
