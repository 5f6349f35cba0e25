"""Setup shared by the cluster benchmarks: a local control plane with kwok nodes, the CRD, a namespace."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from divbase_localcluster.cluster import ClusterInfo, LocalCluster
from divbase_operator import names
from divbase_operator.testing import Kube, OperatorProcess, install_crd
from kubernetes import client

KWOK_PLACEMENT = {
    "nodeSelector": {"type": "kwok"},
    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
}


@contextlib.contextmanager
def kwok_cluster(kwok_nodes: int = 2) -> Iterator[tuple[ClusterInfo, client.ApiClient]]:
    with tempfile.TemporaryDirectory(prefix="divbase-bench-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster")
        info = cluster.up(node=False, kwok_nodes=kwok_nodes)
        api = info.api_client()
        try:
            install_crd(api)
            yield info, api
        finally:
            api.close()
            cluster.down()


def make_namespace(api: client.ApiClient, name: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    core.create_namespaced_secret(
        name,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="divbase-db"), string_data={"url": "postgresql://bench@127.0.0.1/x"}
        ),
    )


@contextlib.contextmanager
def operator_with_ready_database(
    api: client.ApiClient, kubeconfig: str, namespace: str, name: str = "db"
) -> Iterator[Kube]:
    """A namespace, the operator watching it, and DivBaseDatabase `name` at release 1, Ready, on kwok nodes."""
    make_namespace(api, namespace)
    kube = Kube(api, namespace)
    with tempfile.TemporaryDirectory() as tmp:
        operator = OperatorProcess(kubeconfig, namespace, Path(tmp) / "operator.log")
        operator.start()
        try:
            kube.create_db(name, kwok_spec("1"))
            kube.wait_condition(name, names.COND_READY, timeout=120)
            yield kube
        finally:
            operator.stop()


def job_complete(status: dict[str, Any]) -> bool:
    """A Job status (as the watch gives it) with condition Complete=True."""
    return any(c.get("type") == "Complete" and c.get("status") == "True" for c in status.get("conditions") or [])


def kwok_spec(version: str, replicas: int = 2, **extra: Any) -> dict[str, Any]:
    """A DivBaseDatabase whose Jobs and pods run on kwok nodes (no processes: pods just report success)."""
    return {
        "version": version,
        "image": "divbase",
        "database": {"secretRef": {"name": "divbase-db"}},
        "migrationJob": dict(KWOK_PLACEMENT),
        "workloads": [
            {
                "name": "api",
                "template": {
                    "replicas": replicas,
                    "template": {
                        "spec": {**KWOK_PLACEMENT, "containers": [{"name": "api", "command": ["divbase-api"]}]}
                    },
                },
            }
        ],
        **extra,
    }
