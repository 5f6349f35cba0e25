"""The pod network on the real control plane: pods in their own network namespaces, Services through the real
kube-proxy (nftables, in the cluster's node namespace), EndpointSlices from the real controller, the `kubernetes`
Service from a pod, the host's loopback reached at the gateway, and nothing left behind by `down`."""

from __future__ import annotations

import collections
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from divbase_localcluster import build
from divbase_localcluster.cluster import ClusterInfo, LocalCluster
from divbase_localcluster.podnet import netns
from divbase_localcluster.podnet.layout import KUBERNETES_SERVICE_IP, Layout
from divbase_localcluster.testing import http_get_from_node
from divbase_testsupport import wait_for
from kubernetes import client

pytestmark = pytest.mark.skipif(
    bool(netns.missing_requirements()), reason=f"no pod network here: {'; '.join(netns.missing_requirements())}"
)

# answers with the pod's name (HOSTNAME: pods have no UTS namespace of their own here) on 0.0.0.0:8080
WEB = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["HOSTNAME"].encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, ClusterInfo]]:
    build.build()
    lc = LocalCluster(tmp_path_factory.mktemp("podnet-cluster"))
    info = lc.up(pod_network=True)
    try:
        yield lc, info
    finally:
        lc.down()


@pytest.fixture
def core(net: tuple[LocalCluster, ClusterInfo]) -> Iterator[client.CoreV1Api]:
    api = net[1].api_client()
    try:
        yield client.CoreV1Api(api)
    finally:
        api.close()


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    name = f"pn-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_for("default ServiceAccount", lambda: core.list_namespaced_service_account(name).items, 30)
    try:
        yield name
    finally:
        core.delete_namespace(name)


def python_pod(name: str, script: str, labels: dict[str, str] | None = None, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 10,
            "containers": [{"name": "main", "image": "python:3.11", "command": ["python", "-c", script], **container}],
        },
    }


def web_pods(core: client.CoreV1Api, ns: str, count: int, **container: Any) -> list[client.V1Pod]:
    """`count` pods listening on the same port 8080 (each has its own namespace), Ready, and a Service `web`."""
    probe = {"readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}
    for i in range(count):
        core.create_namespaced_pod(ns, python_pod(f"web-{i}", WEB, {"app": "web"}, **probe, **container))
    core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )

    def ready() -> list[client.V1Pod] | None:
        pods = core.list_namespaced_pod(ns, label_selector="app=web").items
        ok = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
        return pods if len(ok) == count else None

    return wait_for(f"{count} web pods Ready", ready, 60)


def slice_endpoints(api: client.ApiClient, ns: str) -> dict[str, client.V1EndpointConditions]:
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        ns, label_selector="kubernetes.io/service-name=web"
    )
    return {e.addresses[0]: e.conditions for s in slices.items for e in s.endpoints or []}


def cluster_ip(core: client.CoreV1Api, ns: str) -> str:
    return core.read_namespaced_service("web", ns).spec.cluster_ip


def logs_when_done(core: client.CoreV1Api, ns: str, name: str) -> str:
    pod = wait_for(
        f"pod {name} finished",
        lambda: (p := core.read_namespaced_pod(name, ns)).status.phase in ("Succeeded", "Failed") and p,
        60,
    )
    text = core.read_namespaced_pod_log(name, ns)
    assert pod.status.phase == "Succeeded", text
    return text


def test_pods_get_own_addresses_and_services_route_to_them(
    net: tuple[LocalCluster, ClusterInfo], core: client.CoreV1Api, namespace: str
) -> None:
    _, info = net
    layout = Layout.for_state_dir(info.state_dir)
    pods = web_pods(core, namespace, 2)
    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 2 and all(ip in layout.pod_hosts() for ip in ips), ips
    with info.api_client() as api:  # the real EndpointSlice controller accepts them (it refuses 127.x)
        assert (
            set(
                wait_for(
                    "both pods in the EndpointSlice",
                    lambda: (e := slice_endpoints(api, namespace)) and len(e) == 2 and e,
                    30,
                )
            )
            == ips
        )
    vip = cluster_ip(core, namespace)
    script = f"""
import collections, json, urllib.request
seen = collections.Counter(urllib.request.urlopen("http://{vip}/", timeout=5).read().decode() for _ in range(40))
print(json.dumps(seen))
"""
    core.create_namespaced_pod(namespace, python_pod("client", script))
    seen = json.loads(logs_when_done(core, namespace, "client"))
    assert set(seen) == {"web-0", "web-1"} and sum(seen.values()) == 40, seen  # kube-proxy spreads the load
    from_node = collections.Counter(http_get_from_node(info.node_netns or "", vip, 80)[1] for _ in range(40))
    assert set(from_node) == {"web-0", "web-1"}, from_node
    client_ip = core.read_namespaced_pod("client", namespace).status.pod_ip
    wait_for(
        "the finished pod's network namespace removed", lambda: layout.pod_netns(client_ip) not in netns.names(), 15
    )


def test_kubernetes_service_from_a_pod(core: client.CoreV1Api, namespace: str) -> None:
    """A pod finds the apiserver as the `kubernetes` Service (10.96.0.1:443 -> kube-proxy -> the gateway ->
    the apiserver), with its ServiceAccount token and the CA, as the kubernetes client does in any cluster."""
    script = """
import os
from kubernetes import client, config
config.load_kube_config()
print(os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
print(client.Configuration.get_default_copy().host)
print(client.VersionApi().get_code().git_version)
"""
    core.create_namespaced_pod(namespace, python_pod("api-client", script))
    lines = logs_when_done(core, namespace, "api-client").split()
    assert lines == [KUBERNETES_SERVICE_IP, "443", f"https://{KUBERNETES_SERVICE_IP}:443", build.K8S_VERSION]


def test_pods_reach_the_hosts_loopback_at_the_gateway(
    net: tuple[LocalCluster, ClusterInfo], core: client.CoreV1Api, namespace: str
) -> None:
    """A server on the host's 127.0.0.1 (PostgreSQL in the tests and the demo) is at <gateway>:<its port> for
    pods; 127.0.0.1 inside a pod is the pod's own."""
    _, info = net
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    served: list[str] = []

    def serve() -> None:
        for _ in range(1):
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"hello from the host")
                served.append("ok")

    threading.Thread(target=serve, daemon=True).start()
    script = f"""
import socket
print(socket.create_connection(("{info.host_address}", {port}), timeout=5).recv(100).decode())
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2)
    print("own loopback reached the host")
except OSError as e:
    print("own loopback:", type(e).__name__)
"""
    core.create_namespaced_pod(namespace, python_pod("host-client", script))
    text = logs_when_done(core, namespace, "host-client")
    server.close()
    assert info.host_address != "127.0.0.1"
    assert text.splitlines() == ["hello from the host", "own loopback: ConnectionRefusedError"], text
    assert served == ["ok"]


def test_a_deleted_pod_leaves_the_service_at_once(
    net: tuple[LocalCluster, ClusterInfo], core: client.CoreV1Api, namespace: str
) -> None:
    """While a deleted pod runs its preStop hook and grace period, the EndpointSlice marks it not ready and
    terminating and kube-proxy stops sending it new connections: the real cause of dropped requests in a rolling
    update is this propagation, which the preStop sleep covers."""
    _, info = net
    web_pods(core, namespace, 2, lifecycle={"preStop": {"sleep": {"seconds": 8}}})
    vip = cluster_ip(core, namespace)
    deleted_at = time.monotonic()
    core.delete_namespaced_pod("web-0", namespace)
    with info.api_client() as api:
        conds = wait_for(
            "web-0 terminating in the EndpointSlice",
            lambda: (
                (c := slice_endpoints(api, namespace).get(core.read_namespaced_pod("web-0", namespace).status.pod_ip))
                and c.terminating
                and c
            ),
            5,
        )
    assert conds.ready is False and conds.serving is True  # still serving in-flight work during preStop
    # kube-proxy's minSyncPeriod (1 s) bounds how long new connections may still reach it
    time.sleep(max(0.0, deleted_at + 2.5 - time.monotonic()))
    answers = collections.Counter(http_get_from_node(info.node_netns or "", vip, 80)[1] for _ in range(30))
    assert answers == {"web-1": 30}, answers
    assert core.read_namespaced_pod("web-0", namespace).metadata.deletion_timestamp is not None  # still there


def test_service_environment_variables(core: client.CoreV1Api, namespace: str) -> None:
    """A pod gets the kubelet's service links for a Service of its namespace that existed before it (the
    variables are fixed when the container is created; there is no DNS to find it otherwise)."""
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    vip = cluster_ip(core, namespace)
    script = 'import os; print(*(os.environ[k] for k in ("WEB_SERVICE_HOST", "WEB_SERVICE_PORT", "WEB_PORT")))'
    core.create_namespaced_pod(namespace, python_pod("env-client", script))
    assert logs_when_done(core, namespace, "env-client").split() == [vip, "80", f"tcp://{vip}:80"]


def test_down_removes_every_namespace_and_up_clears_a_crashs_leftovers(
    cluster_factory: Callable[..., LocalCluster], tmp_path_factory: pytest.TempPathFactory
) -> None:
    state = tmp_path_factory.mktemp("podnet-leftovers")
    layout = Layout.for_state_dir(state)
    leftover = layout.pod_netns("10.244.7.7")
    netns.add(leftover)  # as a SIGKILLed agent would leave it
    lc = LocalCluster(state)
    try:
        info = lc.up(pod_network=True)
        assert leftover not in netns.names()
        assert info.node_netns in netns.names()
        with info.api_client() as api:
            core = client.CoreV1Api(api)
            core.create_namespaced_pod("default", python_pod("sleeper", "import time; time.sleep(600)"))
            pod = wait_for(
                "sleeper running",
                lambda: (p := core.read_namespaced_pod("sleeper", "default")).status.phase == "Running" and p,
                30,
            )
        assert layout.pod_netns(pod.status.pod_ip) in netns.names()
    finally:
        lc.down()
    assert [n for n in netns.names() if layout.owns(n)] == []
