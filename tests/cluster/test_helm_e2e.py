"""End to end the way a Helm user runs it: `helm install` of the operator chart - the operator running as a pod of
the local node under the chart's ServiceAccount, so every API call it makes goes through the chart's RBAC - then
`helm install` of the example release and `helm upgrade` to the next version, completing expand -> deploy ->
contract with real migration Jobs against a real PostgreSQL and the DivBase API stand-in serving on its pod IPs.

The image map (localcluster images.yaml) runs `divbase-operator:<tag>` as this checkout's `divbase-operator` and
`divbase:<tag>` as this checkout's venv with DIVBASE_RELEASE=<tag>. Pods have network namespaces of their own (the
local cluster's pod network): servers listen on 0.0.0.0 as in any cluster, this test reaches pod IPs from the node
namespace, and pods reach the test's PostgreSQL through the node's gateway.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from divbase_localcluster import build
from divbase_localcluster.cluster import ClusterInfo
from divbase_localcluster.podnet.netns import missing_requirements
from divbase_localcluster.testing import http_get_pod
from divbase_operator import names
from divbase_operator.testing import VENV_BIN
from divbase_testsupport import wait_for
from kubernetes import client, config
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_CHART = ROOT / "charts" / "divbase-operator"
RELEASE_CHART = ROOT / "charts" / "divbase"
OPERATOR = "divbase-operator"  # Helm release (and Deployment, ServiceAccount) of the operator
RELEASE = "divbase"  # Helm release of DivBase: DivBaseDatabase `divbase`, Deployments divbase-api/-worker
API_PORT = 8000  # charts/divbase api.port


class Tools:
    """helm and kubectl built for the local control plane, as the cluster admin."""

    def __init__(self, cluster: ClusterInfo) -> None:
        bin_dir = cluster.bin_dir or build.binaries().bin_dir
        self.bins = {"helm": str(bin_dir / "helm"), "kubectl": str(bin_dir / "kubectl")}
        self.kubeconfig = str(cluster.kubeconfig)

    def run(self, tool: str, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.bins[tool], "--kubeconfig", self.kubeconfig, *args], capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert proc.returncode == 0, f"{tool} {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc


def migrate_check(database_url: str, release: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DIVBASE_DATABASE_URL": database_url, "DIVBASE_TERMINATION_LOG": os.devnull}
    return subprocess.run(
        [str(VENV_BIN / "divbase-migrate"), "check", "--release", release],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def db_ready_at(custom: client.CustomObjectsApi, namespace: str, version: str) -> dict[str, Any] | None:
    """The DivBaseDatabase when Ready for this generation at `version` (kstatus: observedGeneration current)."""
    db = custom.get_namespaced_custom_object(names.GROUP, names.VERSION, namespace, names.PLURAL, RELEASE)
    status = db.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c["type"] == names.COND_READY), {})
    ok = (
        ready.get("status") == "True"
        and status.get("observedGeneration") == db["metadata"]["generation"]
        and status.get("currentVersion") == version
    )
    return db if ok else None


def needs_pod_network(cluster: ClusterInfo) -> None:
    """The charts' servers listen on 0.0.0.0 as in any cluster: without a pod network they would collide."""
    if not cluster.node_netns:
        pytest.skip(
            f"pods here share the host's loopback (no pod network: {missing_requirements()}), so the "
            f"chart's servers on 0.0.0.0 would collide"
        )


def test_helm_install_operator_pod_then_release_upgrade(
    cluster: ClusterInfo, node_name: str, namespace: str, api_client: Any, database_url: str, tmp_path: Path
) -> None:
    needs_pod_network(cluster)
    tools = Tools(cluster)
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    batch, custom = client.BatchV1Api(api_client), client.CustomObjectsApi(api_client)
    started = time.monotonic()
    timings: dict[str, float] = {}

    # 1. the operator chart: a namespaced install watching the application's namespace (the operator refuses
    # resources in its own: docs/security.md), the operator as a pod of the local node
    app_ns = f"{namespace}-app"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=app_ns)))
    tools.run(
        "helm",
        "install",
        OPERATOR,
        str(OPERATOR_CHART),
        "-n",
        namespace,
        "--set",
        f"watchNamespaces={{{app_ns}}}",
        "--set",
        "image.repository=divbase-operator",
        "--wait",
        "--timeout",
        "120s",
        timeout=150,
    )
    tools.run(
        "kubectl",
        "-n",
        namespace,
        "wait",
        f"deployment/{OPERATOR}",
        "--for=condition=Available",
        "--timeout=60s",
        timeout=90,
    )
    timings["operator available"] = time.monotonic() - started
    [op_pod] = core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={OPERATOR}").items
    assert op_pod.spec.node_name == node_name
    assert op_pod.spec.service_account_name == OPERATOR
    sa_dir = cluster.state_dir / "node" / "pods" / f"{namespace}_{op_pod.metadata.name}_{op_pod.metadata.uid}"
    pod_kubeconfig = sa_dir / "serviceaccount" / "kubeconfig"
    assert pod_kubeconfig.is_file(), "the node agent gave the pod API access"
    # the pod's credentials, from this process: the apiserver at its loopback address (the pod dials the Service)
    as_pod = yaml.safe_load(pod_kubeconfig.read_text())
    as_pod["clusters"][0]["cluster"]["server"] = cluster.server
    with config.new_client_from_config_dict(as_pod) as as_operator:
        review = client.AuthenticationV1Api(as_operator).create_self_subject_review({})
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:{OPERATOR}"
        with pytest.raises(client.ApiException) as forbidden:
            client.CoreV1Api(as_operator).list_namespaced_secret(namespace)
        assert forbidden.value.status == 403, "the chart's RBAC: no Secrets"

    try:
        # 2. the example release at version 1, the database Secret made out of band
        pod_url = cluster.for_pods(database_url)
        core.create_namespaced_secret(
            app_ns, client.V1Secret(metadata=client.V1ObjectMeta(name="divbase-db"), string_data={"url": pod_url})
        )
        values = tmp_path / "divbase-values.yaml"
        values.write_text(
            yaml.safe_dump(
                {
                    "image": {"repository": "divbase"},
                    "database": {"secretName": "divbase-db"},
                    "extraEnv": [{"name": "PORT", "value": str(API_PORT)}],  # the API stand-in on 0.0.0.0:PORT
                    "migrationJob": {"backoffLimit": 0, "activeDeadlineSeconds": 300},
                }
            )
        )
        tools.run("helm", "install", RELEASE, str(RELEASE_CHART), "-n", app_ns, "-f", str(values), "--set", "version=1")
        tools.run(
            "kubectl", "-n", app_ns, "wait", f"dbdb/{RELEASE}", "--for=condition=Ready", "--timeout=240s", timeout=260
        )
        wait_for("release 1 Ready", lambda: db_ready_at(custom, app_ns, "1"), 30)
        timings["release 1 ready"] = time.monotonic() - started
        assert migrate_check(database_url, "1").returncode == 0

        # 3. helm upgrade to version 2: expand -> deploy -> contract
        tools.run("helm", "upgrade", RELEASE, str(RELEASE_CHART), "-n", app_ns, "--reuse-values", "--set", "version=2")
        wait_for(
            "the operator to see generation 2",
            lambda: (
                (
                    custom.get_namespaced_custom_object(names.GROUP, names.VERSION, app_ns, names.PLURAL, RELEASE).get(
                        "status"
                    )
                    or {}
                ).get("observedGeneration")
                == 2
            ),
            60,
        )
        tools.run(
            "kubectl", "-n", app_ns, "wait", f"dbdb/{RELEASE}", "--for=condition=Ready", "--timeout=240s", timeout=260
        )
        db = wait_for("release 2 Ready", lambda: db_ready_at(custom, app_ns, "2"), 30)
        timings["release 2 ready"] = time.monotonic() - started

        jobs = batch.list_namespaced_job(app_ns, label_selector=f"{names.LABEL_DATABASE}={RELEASE}").items
        by_step = {(j.metadata.labels[names.LABEL_STEP], j.metadata.labels[names.LABEL_VERSION]): j for j in jobs}
        assert {("expand", "2"), ("contract", "2")} <= set(by_step), sorted(by_step)
        for step in ("expand", "contract"):
            job = by_step[(step, "2")]
            assert (job.status.succeeded or 0) >= 1 and not job.status.failed, (step, job.status)
            assert job.spec.template.spec.containers[0].image == "divbase:2"
        expand, contract = by_step[("expand", "2")], by_step[("contract", "2")]
        assert expand.status.completion_time <= contract.metadata.creation_timestamp
        history = db["status"]["history"][0]
        assert (history["fromVersion"], history["toVersion"], history["result"]) == ("1", "2", "Succeeded")

        deployments = apps.list_namespaced_deployment(app_ns, label_selector=f"{names.LABEL_DATABASE}={RELEASE}").items
        assert {d.metadata.name for d in deployments} == {f"{RELEASE}-api", f"{RELEASE}-worker"}
        for d in deployments:
            assert [c.image for c in d.spec.template.spec.containers] == ["divbase:2"], d.metadata.name
            assert d.status.updated_replicas == d.status.available_replicas == d.spec.replicas, d.status
        pods = core.list_namespaced_pod(app_ns, label_selector=f"{names.LABEL_DATABASE}={RELEASE}").items
        workload_pods = [
            p for p in pods if names.LABEL_WORKLOAD in p.metadata.labels and not p.metadata.deletion_timestamp
        ]
        assert {p.metadata.labels[names.LABEL_VERSION] for p in workload_pods} == {"2"}
        api_pods = [p for p in workload_pods if p.metadata.name.startswith(f"{RELEASE}-api-")]
        assert api_pods
        for p in api_pods:  # the release 2 API answers on its pod IP
            code, body = http_get_pod(cluster, p.status.pod_ip, API_PORT, "/readyz")
            assert code == 200 and json.loads(body)["release"] == "2", (code, body)

        assert migrate_check(database_url, "2").returncode == 0
        assert migrate_check(database_url, "1").returncode != 0, "release 2's contract removed user.name"

        # the operator ran as its pod the whole time: metrics on its pod IP, no restart, no forbidden call
        op_pod = core.read_namespaced_pod(op_pod.metadata.name, namespace)
        assert op_pod.status.container_statuses[0].restart_count == 0
        code, metrics = http_get_pod(cluster, op_pod.status.pod_ip, 9090, "/metrics")
        assert code == 200 and "divbase_rollouts_succeeded_total" in metrics
        # 4. its log, as `kubectl logs` reads it (the apiserver, then the node agent's log endpoint): no password,
        # no forbidden call, no traceback
        log = core.read_namespaced_pod_log(op_pod.metadata.name, namespace, container="operator")
        assert '"severity":' in log, log[-3000:]
        password = make_url(database_url).password
        assert password and password not in log
        assert database_url not in log
        assert not [line for line in log.splitlines() if "403" in line or "orbidden" in line], log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        print("timings (s):", {k: round(v, 1) for k, v in timings.items()})
        # 5. uninstall in docs/install.md's order: the release first (its finalizer needs the operator), then the
        # operator, whose leader-election Lease goes with its pod (ownerReference: the chart's RBAC is deleted
        # before the pod stops, so the operator's own release of the Lease is refused)
        leases = client.CoordinationV1Api(api_client)
        [lease] = leases.list_namespaced_lease(namespace).items
        assert lease.metadata.name == OPERATOR
        assert lease.spec.holder_identity.startswith(f"{op_pod.metadata.name}_"), lease.spec  # NOTES.txt's hint
        tools.run("helm", "uninstall", RELEASE, "-n", app_ns, "--wait", "--timeout", "60s", timeout=90)
        wait_for(
            "the DivBaseDatabase deleted",
            lambda: not custom.list_namespaced_custom_object(names.GROUP, names.VERSION, app_ns, names.PLURAL)["items"],
            60,
        )
        tools.run("helm", "uninstall", OPERATOR, "-n", namespace, "--wait", "--timeout", "60s", timeout=90)
        wait_for("the operator's Lease removed", lambda: not leases.list_namespaced_lease(namespace).items, 60)
    finally:
        # the operator must release its finalizer before it goes, or the namespace would hang in Terminating
        tools.run("helm", "uninstall", RELEASE, "-n", app_ns, "--wait", "--timeout", "60s", check=False, timeout=90)
        try:
            wait_for(
                "the DivBaseDatabase deleted",
                lambda: (
                    not custom.list_namespaced_custom_object(names.GROUP, names.VERSION, app_ns, names.PLURAL)["items"]
                ),
                60,
            )
        finally:
            tools.run(
                "helm", "uninstall", OPERATOR, "-n", namespace, "--wait", "--timeout", "60s", check=False, timeout=90
            )
            core.delete_namespace(app_ns)
