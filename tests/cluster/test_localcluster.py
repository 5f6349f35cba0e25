"""The local control plane behaves like a real cluster: schema validation, RBAC, garbage collection, isolation.

These run against the real kube-apiserver/controller-manager built from source (fixtures in conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from divbase_localcluster import build
from divbase_localcluster.cluster import DEFAULT_NODE_NAME, ClusterError, ClusterInfo, LocalCluster
from divbase_localcluster.testing import gone
from divbase_testsupport import wait_for
from kubernetes import client


def test_server_reports_pinned_version(api_client: Any, cluster: ClusterInfo) -> None:
    """The version ldflags reach the apiserver and kubectl (so skew is visible, not guessed)."""
    assert client.VersionApi(api_client).get_code().git_version == build.K8S_VERSION
    out = cluster.kubectl("version", "-o", "json").stdout
    assert f'"gitVersion": "{build.K8S_VERSION}"' in out


def test_status_cli_reports_up(cluster: ClusterInfo) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "divbase_localcluster.cli", "status", "--state-dir", str(cluster.state_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("up:")


def test_crd_schema_rejects_bad_object(api_client: Any, namespace: str) -> None:
    group = f"t{uuid.uuid4().hex[:8]}.divbase.test"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    ext = client.ApiextensionsV1Api(api_client)
    ext.create_custom_resource_definition(crd)
    try:

        def established() -> bool:
            conds = ext.read_custom_resource_definition(f"widgets.{group}").status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conds)

        wait_for("CRD Established", established, 30)
        objs = client.CustomObjectsApi(api_client)

        def body(size: Any) -> dict[str, Any]:
            return {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": size}}

        with pytest.raises(client.ApiException) as err:
            objs.create_namespaced_custom_object(group, "v1", namespace, "widgets", body(0))
        assert err.value.status == 422
        assert "spec.size" in err.value.body and "should be greater than or equal to 1" in err.value.body
        created = objs.create_namespaced_custom_object(group, "v1", namespace, "widgets", body(3))
        assert created["spec"]["size"] == 3
    finally:
        ext.delete_custom_resource_definition(f"widgets.{group}")


def _token_client(cluster: ClusterInfo, token: str) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = cluster.server
    cfg.ssl_ca_cert = str(cluster.ca_file)
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(cfg)


def test_service_account_limited_to_its_role(api_client: Any, cluster: ClusterInfo, namespace: str) -> None:
    """A token from the TokenRequest API authenticates as the ServiceAccount and RBAC confines it to its Role."""
    core, rbac = client.CoreV1Api(api_client), client.RbacAuthorizationV1Api(api_client)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="ro")))
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="cm-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="ro-cm-reader"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="cm-reader"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="ro", namespace=namespace)],
        ),
    )
    tr = core.create_namespaced_service_account_token(
        "ro", namespace, client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    )
    with _token_client(cluster, tr.status.token) as sa_client:
        sa_core = client.CoreV1Api(sa_client)
        wait_for(  # RBAC informers in the apiserver see the new binding within a moment
            "RoleBinding effective", lambda: _allowed(lambda: sa_core.list_namespaced_config_map(namespace)), 30
        )
        user = f"system:serviceaccount:{namespace}:ro"
        for attempt in (
            lambda: sa_core.list_namespaced_secret(namespace),
            lambda: sa_core.list_namespaced_config_map("default"),
            lambda: sa_core.create_namespaced_config_map(
                namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x"))
            ),
        ):
            with pytest.raises(client.ApiException) as err:
                attempt()
            assert err.value.status == 403
            assert user in err.value.body


def test_node_identity_confined_by_node_authorizer(cluster: ClusterInfo) -> None:
    """The node agent's credentials (system:node:<name>) cannot touch other nodes or read arbitrary secrets."""
    assert cluster.node_kubeconfig is not None
    from kubernetes import config

    with config.new_client_from_config(config_file=str(cluster.node_kubeconfig)) as node_client:
        core = client.CoreV1Api(node_client)
        with pytest.raises(client.ApiException) as err:
            core.list_namespaced_secret("default")
        assert err.value.status == 403
        assert f"system:node:{DEFAULT_NODE_NAME}" in err.value.body
        with pytest.raises(client.ApiException) as err:  # NodeRestriction admission
            core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="someone-else")))
        assert err.value.status == 403
        assert "someone-else" in err.value.body


def _allowed(call: Callable[[], object]) -> bool:
    try:
        call()
    except client.ApiException as e:
        if e.status == 403:
            return False
        raise
    return True


@pytest.mark.parametrize("policy", ["Background", "Foreground"])
def test_deleting_owner_collects_children(api_client: Any, namespace: str, policy: str) -> None:
    """The controller-manager's garbage collector follows ownerReferences, in both propagation modes."""
    core = client.CoreV1Api(api_client)
    owner = core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner")))
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid, block_owner_deletion=True
    )
    for i in range(2):
        core.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"child-{i}", owner_references=[ref]))
        )
    core.delete_namespaced_config_map("owner", namespace, propagation_policy=policy)
    if policy == "Foreground":
        # foreground: the owner stays (with the foregroundDeletion finalizer) until its children are gone
        try:
            cm = core.read_namespaced_config_map("owner", namespace)
            assert "foregroundDeletion" in (cm.metadata.finalizers or [])
        except client.ApiException as e:
            assert e.status == 404  # the collector was quicker than us: acceptable
    for name in ("child-0", "child-1", "owner"):
        wait_for(f"{name} collected", lambda n=name: gone(lambda: core.read_namespaced_config_map(n, namespace)), 30)


def test_second_cluster_with_kwok_runs_alongside(
    cluster: ClusterInfo, api_client: Any, cluster_factory: Callable[..., LocalCluster]
) -> None:
    """A second cluster (own ports and state) runs at once; its kwok nodes run a Job and a Deployment."""
    second = cluster_factory(node=False, kwok_nodes=2)
    info = second.info()
    assert info.server != cluster.server
    assert not set(info.ports.values()) & set(cluster.ports.values())
    assert len(info.kwok_nodes) == 2
    with info.api_client() as c2:
        core2, batch2, apps2 = client.CoreV1Api(c2), client.BatchV1Api(c2), client.AppsV1Api(c2)
        core2.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="only-in-second")))
        assert gone(lambda: client.CoreV1Api(api_client).read_namespace("only-in-second"))
        pod_spec = client.V1PodSpec(
            restart_policy="Never",
            node_selector={"type": "kwok"},
            tolerations=[client.V1Toleration(key="kwok.x-k8s.io/node", operator="Exists", effect="NoSchedule")],
            containers=[client.V1Container(name="c", image="example.invalid/fake:1")],
        )
        batch2.create_namespaced_job(
            "only-in-second",
            client.V1Job(
                metadata=client.V1ObjectMeta(name="fake-job"),
                spec=client.V1JobSpec(backoff_limit=0, template=client.V1PodTemplateSpec(spec=pod_spec)),
            ),
        )
        labels = {"app": "fake"}
        dep_spec = client.V1PodSpec(
            node_selector=pod_spec.node_selector, tolerations=pod_spec.tolerations, containers=pod_spec.containers
        )
        apps2.create_namespaced_deployment(
            "only-in-second",
            client.V1Deployment(
                metadata=client.V1ObjectMeta(name="fake-deploy"),
                spec=client.V1DeploymentSpec(
                    replicas=3,
                    selector=client.V1LabelSelector(match_labels=labels),
                    template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=dep_spec),
                ),
            ),
        )

        def job_done() -> bool:
            st = batch2.read_namespaced_job_status("fake-job", "only-in-second").status
            return bool(st.succeeded)

        def deploy_available() -> bool:
            st = apps2.read_namespaced_deployment_status("fake-deploy", "only-in-second").status
            return st.available_replicas == 3

        wait_for("kwok Job succeeded", job_done, timeout=60)
        wait_for("kwok Deployment available", deploy_available, timeout=60)
        pods = core2.list_namespaced_pod("only-in-second").items
        assert {p.spec.node_name for p in pods} <= set(info.kwok_nodes)
    pids = second._read_pids()
    assert set(pids) >= {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
    second.down()
    assert not Path(second.state_dir).exists()
    assert not any(_is_ours(pid, second) for pid in pids.values())


def _is_ours(pid: int, lc: LocalCluster) -> bool:
    try:
        return str(lc.state_dir) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def test_restart_component_restarts_the_apiserver_in_place(cluster_factory: Callable[..., LocalCluster]) -> None:
    """restart_component: a new apiserver process on the same port and data, healthy before it returns, the
    restart marked in its log and pids.json; a client made before the restart keeps working."""
    lc = cluster_factory(node=False)
    before = lc._read_pids()
    with lc.info().api_client() as c:
        core = client.CoreV1Api(c)
        core.create_namespaced_config_map(
            "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="survives"), data={"k": "v"})
        )
        lc.restart_component("kube-apiserver", grace=3)  # SIGKILLed then: it waits for open watches
        after = lc._read_pids()
        assert after["kube-apiserver"] != before["kube-apiserver"]
        assert {k: v for k, v in after.items() if k != "kube-apiserver"} == {
            k: v for k, v in before.items() if k != "kube-apiserver"
        }
        assert not _is_ours(before["kube-apiserver"], lc)
        assert lc.status()["up"], lc.status()
        assert core.read_namespaced_config_map("survives", "default").data == {"k": "v"}
    assert "kube-apiserver restarted" in (lc.log_dir / "kube-apiserver.log").read_text(errors="replace")
    with pytest.raises(ClusterError, match="not started by this LocalCluster"):
        lc.restart_component("kwok")
