"""The local node agent runs real pods as local processes and reports them the way a kubelet does.

Everything goes through the real apiserver, scheduler, Job and Deployment controllers of the session cluster;
only the container runtime is replaced (by processes, see docs/localcluster.md, "Node agent").
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from divbase_localcluster.cluster import ClusterInfo, LocalCluster
from divbase_localcluster.podnet.layout import Layout
from divbase_localcluster.testing import gone, http_get_pod
from divbase_testsupport import wait_for
from kubernetes import client

SECRET_VALUE = "s3cret-Value-never-logged-7f3a"


def pod_body(name: str, script: str, *, image: str = "busybox:1.36", restart: str = "Never", **spec: Any) -> dict:
    container = {"name": "main", "image": image, "command": ["sh", "-c", script]}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": spec.pop("labels", {"app": name})},
        "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 5, "containers": [container], **spec},
    }


def read_pod(core: client.CoreV1Api, ns: str, name: str) -> client.V1Pod:
    return core.read_namespaced_pod(name, ns)


def wait_phase(core: client.CoreV1Api, ns: str, name: str, phases: set[str], timeout: float = 60) -> client.V1Pod:
    def check() -> client.V1Pod | None:
        pod = read_pod(core, ns, name)
        return pod if pod.status.phase in phases else None

    return wait_for(f"pod {name} in {phases}", check, timeout)


def waiting_reason(core: client.CoreV1Api, ns: str, name: str) -> tuple[str, str] | None:
    statuses = read_pod(core, ns, name).status.container_statuses or []
    if statuses and statuses[0].state.waiting:
        return statuses[0].state.waiting.reason, statuses[0].state.waiting.message or ""
    return None


def waiting_for_reason(core: client.CoreV1Api, ns: str, name: str, reason: str) -> tuple[str, str]:
    """Wait until the first container waits for `reason`: a fresh namespace may first show ContainerCreating
    (its kube-root-ca.crt not published yet), which is not the state under test."""
    return wait_for(reason, lambda: (w := waiting_reason(core, ns, name)) and w[0] == reason and w, 30)


def assert_only_the_apiserver(cluster: ClusterInfo, port: int, request: str) -> None:
    """The node agent's kubelet endpoint on `port` refuses a TLS client without a certificate and answers the
    cluster's admin certificate (not the apiserver's kubelet client) with a 403, whatever `request` asks."""
    pki = cluster.state_dir / "pki"

    def send(ctx: ssl.SSLContext) -> str:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(request.encode())
            chunks = []
            while chunk := tls.recv(4096):  # the server answers HTTP/1.0: it closes after the body
                chunks.append(chunk)
            answer = b"".join(chunks).decode()
        if not answer:
            raise ConnectionResetError("closed without an answer")
        return answer

    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        send(ssl.create_default_context(cafile=str(pki / "ca.crt")))
    admin = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    admin.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    answer = send(admin)
    assert answer.startswith("HTTP/1.0 403") and "only the apiserver" in answer, answer


def condition(pod: client.V1Pod, ctype: str) -> client.V1PodCondition | None:
    return next((c for c in pod.status.conditions or [] if c.type == ctype), None)


def pod_dir(cluster: ClusterInfo, pod: client.V1Pod) -> Path:
    m = pod.metadata
    return cluster.state_dir / "node" / "pods" / f"{m.namespace}_{m.name}_{m.uid}"


def pid_of(pod: client.V1Pod, index: int = 0) -> int:
    cid = pod.status.container_statuses[index].container_id
    assert cid and cid.startswith("local://"), cid
    return int(cid.removeprefix("local://"))


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture
def core(api_client: Any) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


def test_node_registered_ready_and_stays_ready(api_client: Any, node_name: str) -> None:
    """Ready with the expected labels/addresses, and still Ready after the node lifecycle grace period (50 s)."""
    core = client.CoreV1Api(api_client)
    coord = client.CoordinationV1Api(api_client)
    node = core.read_node(node_name)
    labels = node.metadata.labels
    assert labels["kubernetes.io/hostname"] == node_name
    assert labels["kubernetes.io/os"] == "linux"
    assert labels["type"] == "local"
    assert node.status.allocatable["pods"] == "110"
    # pods that request ephemeral storage (the charts' do) fit: the pods' filesystem, in Ki
    assert int(node.status.allocatable["ephemeral-storage"].removesuffix("Ki")) > 1024 * 1024
    assert {"type": "InternalIP", "address": "127.0.0.1"} in [a.to_dict() for a in node.status.addresses]
    first_renew = coord.read_namespaced_lease(node_name, "kube-node-lease").spec.renew_time
    deadline = time.monotonic() + 55
    while time.monotonic() < deadline:
        node = core.read_node(node_name)
        ready = condition(node, "Ready")
        assert ready is not None and ready.status == "True", ready
        assert not [t for t in node.spec.taints or [] if t.key.startswith("node.kubernetes.io/")], node.spec.taints
        time.sleep(5)
    assert coord.read_namespaced_lease(node_name, "kube-node-lease").spec.renew_time > first_renew


def test_pod_succeeds_with_init_container(core: client.CoreV1Api, namespace: str, cluster: ClusterInfo) -> None:
    """Init containers run first, in the per-pod directory; the pod gets its IP and goes Succeeded."""
    body = pod_body("hello", "cat greeting; echo hi; exit 0")
    init = {"name": "prep", "image": "busybox", "command": ["sh", "-c", "echo from-init > greeting"]}
    body["spec"]["initContainers"] = [init]
    core.create_namespaced_pod(namespace, body)
    pod = wait_phase(core, namespace, "hello", {"Succeeded", "Failed"})
    assert pod.status.phase == "Succeeded"
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (0, "Completed")
    assert term.started_at and term.finished_at and term.container_id.startswith("local://")
    assert pod.status.init_container_statuses[0].state.terminated.exit_code == 0
    if cluster.pod_network:  # an address of the pod network (docs/localcluster.md), else a loopback one
        assert pod.status.pod_ip in Layout.for_state_dir(cluster.state_dir).pod_hosts()
    else:
        assert pod.status.pod_ip.startswith("127.") and pod.status.pod_ip != "127.0.0.1"
    assert pod.status.host_ip == "127.0.0.1"
    assert condition(pod, "Initialized").status == "True"
    assert condition(pod, "Ready").status == "False" and condition(pod, "Ready").reason == "PodCompleted"
    log = (pod_dir(cluster, pod) / "logs" / "main" / "0.log").read_text()
    assert log == "from-init\nhi\n"


def test_failure_reports_exit_code_and_termination_message(core: client.CoreV1Api, namespace: str) -> None:
    script = 'echo "database is down" > "$DIVBASE_TERMINATION_LOG"; exit 3'
    core.create_namespaced_pod(namespace, pod_body("fail", script))
    # an argument equal to terminationMessagePath is rewritten to the per-container termination file
    path_arg = pod_body("fail-arg", 'echo "via argument" > "$1"; exit 5')
    path_arg["spec"]["containers"][0]["args"] = ["sh", "/dev/termination-log"]
    core.create_namespaced_pod(namespace, path_arg)
    pod = wait_phase(core, namespace, "fail", {"Succeeded", "Failed"})
    assert pod.status.phase == "Failed"
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason, term.message) == (3, "Error", "database is down\n")
    pod = wait_phase(core, namespace, "fail-arg", {"Succeeded", "Failed"})
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.message) == (5, "via argument\n")


def test_fallback_to_logs_on_error(core: client.CoreV1Api, namespace: str) -> None:
    script = "for i in $(seq 1 100); do echo line $i; done; echo 'fatal: boom' >&2; exit 4"
    core.create_namespaced_pod(
        namespace, pod_body("fallback", script, container={"terminationMessagePolicy": "FallbackToLogsOnError"})
    )
    core.create_namespaced_pod(namespace, pod_body("no-fallback", script))
    pod = wait_phase(core, namespace, "fallback", {"Failed"})
    message = pod.status.container_statuses[0].state.terminated.message
    assert message.endswith("fatal: boom")
    assert "line 22\n" in message and "line 21\n" not in message  # the last 80 lines
    pod = wait_phase(core, namespace, "no-fallback", {"Failed"})
    assert not pod.status.container_statuses[0].state.terminated.message


def test_jobs_complete_and_fail_by_pod_failure_policy(api_client: Any, namespace: str) -> None:
    """The real Job controller sees our pod phases and exit codes: Complete, and FailJob on exit code 2."""
    batch = client.BatchV1Api(api_client)

    def job(name: str, script: str, **spec: Any) -> dict:
        pod = pod_body(name, script)
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {"backoffLimit": 3, "template": {"spec": pod["spec"]}, **spec},
        }

    batch.create_namespaced_job(namespace, job("ok", "echo done"))
    rule = {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [2]}}
    script = "echo 'schema too new' > $DIVBASE_TERMINATION_LOG; exit 2"
    batch.create_namespaced_job(namespace, job("bad", script, podFailurePolicy={"rules": [rule]}))

    def job_condition(name: str, ctype: str) -> client.V1JobCondition | None:
        conds = batch.read_namespaced_job_status(name, namespace).status.conditions or []
        return next((c for c in conds if c.type == ctype and c.status == "True"), None)

    wait_for("Job ok Complete", lambda: job_condition("ok", "Complete"), 90)
    failed = wait_for("Job bad Failed", lambda: job_condition("bad", "Failed"), 90)
    assert failed.reason == "PodFailurePolicy"
    assert "exit code 2" in failed.message
    status = batch.read_namespaced_job_status("bad", namespace).status
    assert status.failed == 1  # FailJob: no retry despite backoffLimit 3


def _deployment(name: str, marker: str) -> dict:
    script = 'exec python -m http.server --bind "$POD_IP" 8080'
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "web",
                            "image": "python:3.11-slim",
                            "command": ["sh", "-c", script],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "env": [
                                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                                {"name": "MARKER", "value": marker},
                            ],
                            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                        }
                    ],
                },
            },
        },
    }


def _http_ok(cluster: ClusterInfo, ip: str) -> bool:
    return http_get_pod(cluster, ip, 8080, timeout=2)[0] == 200


def test_deployment_serves_http_and_rolls(api_client: Any, namespace: str, cluster: ClusterInfo) -> None:
    """2 replicas become Available through readiness probes, answer HTTP on their pod IPs, and roll over."""
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    apps.create_namespaced_deployment(namespace, _deployment("web", "v1"))

    def rolled_out() -> bool:
        d = apps.read_namespaced_deployment_status("web", namespace)
        st = d.status
        return (
            st.observed_generation == d.metadata.generation
            and st.updated_replicas == 2
            and st.available_replicas == 2
            and st.replicas == 2
        )

    wait_for("Deployment available", rolled_out, 90)
    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 2
    for p in pods:
        assert condition(p, "Ready").status == "True"
        assert _http_ok(cluster, p.status.pod_ip), p.status.pod_ip
    old_pids = [pid_of(p) for p in pods]
    assert all(process_alive(pid) for pid in old_pids)

    apps.patch_namespaced_deployment(
        "web",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "web",
                                "env": [
                                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                                    {"name": "MARKER", "value": "v2"},
                                ],
                            }
                        ]
                    }
                }
            }
        },
    )
    wait_for(
        "rollout complete",
        lambda: rolled_out() and len(core.list_namespaced_pod(namespace, label_selector="app=web").items) == 2,
        120,
    )
    new = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert not {p.metadata.uid for p in new} & {p.metadata.uid for p in pods}
    for p in new:
        assert _http_ok(cluster, p.status.pod_ip)
    wait_for("old processes gone", lambda: not any(process_alive(pid) for pid in old_pids), 15)


def test_readiness_probe_failing_keeps_pod_unready(core: client.CoreV1Api, namespace: str) -> None:
    probe = {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1}
    core.create_namespaced_pod(namespace, pod_body("unready", "sleep 60", container={"readinessProbe": probe}))
    wait_phase(core, namespace, "unready", {"Running"})
    # the positive signal that the probe ran and failed, before asserting that the pod did not become Ready
    wait_for(
        "an Unhealthy event",
        lambda: [
            e
            for e in core.list_namespaced_event(namespace, field_selector="involvedObject.name=unready").items
            if e.reason == "Unhealthy"
        ],
        30,
    )
    pod = read_pod(core, namespace, "unready")
    assert pod.status.phase == "Running"
    assert condition(pod, "Ready").status == "False"
    assert condition(pod, "ContainersReady").reason == "ContainersNotReady"
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=unready").items
    assert any(e.reason == "Unhealthy" for e in events)


def test_restart_policy_always_backs_off(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, pod_body("crash", "echo crashing; exit 1", restart="Always"))

    def restarted() -> client.V1ContainerStatus | None:
        st = (read_pod(core, namespace, "crash").status.container_statuses or [None])[0]
        return st if st and st.restart_count >= 2 and st.state.waiting else None

    st = wait_for("two restarts and back-off", restarted, 30)
    assert st.state.waiting.reason == "CrashLoopBackOff"
    assert st.last_state.terminated.exit_code == 1
    assert read_pod(core, namespace, "crash").status.phase == "Running"


def test_kubectl_logs_through_the_apiserver(
    core: client.CoreV1Api, namespace: str, cluster: ClusterInfo, node_name: str
) -> None:
    """`pods/log` goes apiserver -> the agent's log endpoint (TLS both ways): the current run, --tail, --previous,
    --limit-bytes, -f until the container exits; kubectl's own command; nobody but the apiserver is served."""
    import subprocess

    from divbase_localcluster import build

    core.create_namespaced_pod(
        namespace,
        pod_body(
            "talk",
            'echo "run $(date +%s%N)"; for i in 1 2 3; do echo "line $i"; done; sleep 1; echo late; exit 1',
            restart="Always",
        ),
    )
    one_run = re.compile(r"run \d+\nline 1\nline 2\nline 3\nlate\n")

    def restarted_twice() -> client.V1ContainerStatus | None:
        st = (read_pod(core, namespace, "talk").status.container_statuses or [None])[0]
        return st if st and st.restart_count >= 1 and st.state.running else None

    wait_for("a second run of the container", restarted_twice, 60)
    # -f on the running container: everything it writes until it exits, then the stream ends by itself
    followed = core.read_namespaced_pod_log("talk", namespace, follow=True, _request_timeout=30)
    assert one_run.fullmatch(followed), followed
    assert one_run.fullmatch(core.read_namespaced_pod_log("talk", namespace, previous=True))
    assert core.read_namespaced_pod_log("talk", namespace, previous=True, tail_lines=1) == "late\n"
    assert core.read_namespaced_pod_log("talk", namespace, previous=True, limit_bytes=4) == "run "
    kubectl = build.binaries().bin_dir / "kubectl"
    out = subprocess.run(
        [
            str(kubectl),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "-n",
            namespace,
            "logs",
            "talk",
            "--previous",
            "--tail=1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (out.returncode, out.stdout) == (0, "late\n"), out.stderr
    with pytest.raises(client.ApiException) as caught:
        core.read_namespaced_pod_log("talk", namespace, container="nope")
    assert caught.value.status == 400 and "nope" in caught.value.body
    # only the apiserver: no client certificate -> no TLS session; the cluster's admin certificate -> 403
    port = core.read_node(node_name).status.daemon_endpoints.kubelet_endpoint.port
    assert port > 0
    assert_only_the_apiserver(cluster, port, f"GET /containerLogs/{namespace}/talk/main HTTP/1.0\r\n\r\n")


def test_deletion_sends_sigterm(core: client.CoreV1Api, namespace: str, cluster: ClusterInfo) -> None:
    """A TERM trap runs (and the pod goes early); a process ignoring TERM is KILLed after the grace period. Judged
    by the order of events, not the clock: the trap's pod (20 s grace) is gone while the stubborn process (10 s
    grace) still lives through its TERM, which it survives until the KILL."""
    core.create_namespaced_pod(
        namespace,
        pod_body(
            "trap",
            "trap 'echo got-term > trapped; exit 0' TERM; echo up > started; while true; do sleep 0.1; done",
            terminationGracePeriodSeconds=20,
        ),
    )
    core.create_namespaced_pod(
        namespace,
        pod_body("stubborn", "trap '' TERM; while true; do sleep 0.1; done", terminationGracePeriodSeconds=10),
    )
    trap = wait_phase(core, namespace, "trap", {"Running"})
    stubborn = wait_phase(core, namespace, "stubborn", {"Running"})
    trap_dir = pod_dir(cluster, trap)
    wait_for("trap installed", lambda: (trap_dir / "started").exists(), 10)
    trap_pid, stubborn_pid = pid_of(trap), pid_of(stubborn)

    core.delete_namespaced_pod("stubborn", namespace)
    core.delete_namespaced_pod("trap", namespace)  # TERMed after the stubborn one
    wait_for("trap pod gone", lambda: gone(lambda: read_pod(core, namespace, "trap")), 15)
    assert (trap_dir / "trapped").read_text() == "got-term\n"
    assert not process_alive(trap_pid)
    # the trap exited on TERM, not at the end of its grace: the stubborn process, TERMed first with half that grace,
    # still runs (it has its grace period) ...
    assert process_alive(stubborn_pid)
    assert read_pod(core, namespace, "stubborn").metadata.deletion_timestamp is not None
    wait_for("stubborn pod gone", lambda: gone(lambda: read_pod(core, namespace, "stubborn")), 30)
    assert not process_alive(stubborn_pid)  # ... and was then killed


def test_env_sources_and_missing_secret(core: client.CoreV1Api, namespace: str, cluster: ClusterInfo) -> None:
    """secretKeyRef/configMapKeyRef/fieldRef/envFrom/$(VAR); a missing Secret waits, then starts once created."""
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"mode": "fast", "X": "1"}})
    script = """
    set -e
    test "$PASSWORD" = "%s"; test "$MODE" = fast; test "$X" = 1; test "$CFG_X" = 1
    test "$NAME" = env; test "$NS" = "%s"; test "$TIER" = db; test "$COMBINED" = "fast-env"
    test -z "${POD_IP:-}"  # only through a fieldRef, never implicit
    test "$HOME" = "$PWD"; test -n "$DIVBASE_TERMINATION_LOG"; test -d "$DIVBASE_VOLUMES_DIR/scratch"
    echo all-good
    """ % (SECRET_VALUE, namespace)  # noqa: UP031
    env = [
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
        {"name": "COMBINED", "value": "$(MODE)-$(NAME)"},
        {"name": "OPTIONAL", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
    ]
    body = pod_body(
        "env",
        script,
        labels={"tier": "db"},
        volumes=[{"name": "scratch", "emptyDir": {}}],
        container={
            "env": env,
            "envFrom": [{"configMapRef": {"name": "cfg"}}, {"prefix": "CFG_", "configMapRef": {"name": "cfg"}}],
            "terminationMessagePolicy": "FallbackToLogsOnError",
        },
    )
    core.create_namespaced_pod(namespace, body)
    reason = waiting_for_reason(core, namespace, "env", "CreateContainerConfigError")
    assert reason == ("CreateContainerConfigError", 'secret "db" not found')
    core.create_namespaced_secret(namespace, {"metadata": {"name": "db"}, "stringData": {"other": "x"}})
    wait_for(
        "missing key reported",
        lambda: (
            (waiting_reason(core, namespace, "env") or ("", ""))[1]
            == f"couldn't find key password in Secret {namespace}/db"
        ),
        30,
    )
    core.patch_namespaced_secret("db", namespace, {"stringData": {"password": SECRET_VALUE}})
    pod = wait_phase(core, namespace, "env", {"Succeeded", "Failed"}, 30)
    assert pod.status.phase == "Succeeded", pod.status.container_statuses[0].state.terminated.message
    assert (pod_dir(cluster, pod) / "logs" / "main" / "0.log").read_text().strip() == "all-good"
    agent_log = (cluster.log_dir / "node-agent.log").read_text()
    assert SECRET_VALUE not in agent_log


def test_unmapped_image_and_missing_command(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, pod_body("unmapped", "true", image="example.invalid/nothing:1"))
    body = pod_body("nocmd", "true")
    del body["spec"]["containers"][0]["command"]
    core.create_namespaced_pod(namespace, body)
    _, message = waiting_for_reason(core, namespace, "unmapped", "ImageNotMapped")
    assert "example.invalid/nothing:1" in message
    _, message = waiting_for_reason(core, namespace, "nocmd", "CreateContainerError")
    assert "no command specified" in message
    assert read_pod(core, namespace, "unmapped").status.phase == "Pending"


def test_unsupported_fields_reported_and_security_context_accepted(core: client.CoreV1Api, namespace: str) -> None:
    odd = pod_body(
        "odd",
        "true",
        volumes=[{"name": "host", "hostPath": {"path": "/tmp"}}],
        container={"ports": [{"containerPort": 80, "hostPort": 8080}]},
    )
    odd["spec"]["initContainers"] = [
        {"name": "sidecar", "image": "busybox", "command": ["sleep", "300"], "restartPolicy": "Always"}
    ]
    core.create_namespaced_pod(namespace, odd)
    hardened = pod_body(
        "hardened",
        "true",
        securityContext={"runAsNonRoot": False, "seccompProfile": {"type": "RuntimeDefault"}},
        container={
            "resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "512Mi"}},
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "privileged": False,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        },
    )
    core.create_namespaced_pod(namespace, hardened)
    pod = wait_phase(core, namespace, "odd", {"Succeeded", "Failed"})
    cond = condition(pod, "divbase.io/Unsupported")
    assert cond is not None and cond.status == "True"
    for path in (
        "spec.volumes[0].hostPath",
        "spec.containers[0].ports[0].hostPort",
        "spec.initContainers[0].restartPolicy",
    ):
        assert path in cond.message
    assert pod.status.phase == "Succeeded"  # the pod runs without them
    pod = wait_phase(core, namespace, "hardened", {"Succeeded", "Failed"})
    assert pod.status.phase == "Succeeded"
    assert condition(pod, "divbase.io/Unsupported") is None


def test_image_map_sets_release_from_tag(core: client.CoreV1Api, namespace: str) -> None:
    script = 'echo "$DIVBASE_RELEASE $(command -v divbase-migrate)" > "$DIVBASE_TERMINATION_LOG"'
    core.create_namespaced_pod(namespace, pod_body("release", script, image="ghcr.io/divbase/divbase:7"))
    pod = wait_phase(core, namespace, "release", {"Succeeded", "Failed"})
    release, _, migrate = pod.status.container_statuses[0].state.terminated.message.strip().partition(" ")
    assert release == "7"
    if migrate:  # the console script exists once migrations/ ships it; it must come from this checkout's venv
        assert Path(migrate).parent == Path(sys.executable).parent


def test_liveness_probe_restarts_container(core: client.CoreV1Api, namespace: str) -> None:
    """A failing exec liveness probe gets the container SIGTERMed and restarted; readiness works over tcpSocket."""
    container = {
        "livenessProbe": {
            "exec": {"command": ["sh", "-c", "test ! -f unhealthy"]},
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    }
    # first run: unhealthy (liveness fails, restart); second run: healthy
    script = "if [ -f unhealthy ]; then rm unhealthy; else touch unhealthy; fi; "
    script += 'exec python -m http.server --bind "$IP" 8080'
    body = pod_body("live", script, restart="Always", container=container)
    body["spec"]["containers"][0]["env"] = [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    core.create_namespaced_pod(namespace, body)

    def restarted_and_ready() -> client.V1ContainerStatus | None:
        st = (read_pod(core, namespace, "live").status.container_statuses or [None])[0]
        return st if st and st.restart_count == 1 and st.ready else None

    st = wait_for("liveness restart, then ready", restarted_and_ready, 40)
    assert st.last_state.terminated.exit_code == 143  # python's default SIGTERM handling
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=live").items
    assert any(e.reason == "Killing" and "liveness" in e.message for e in events)


def test_agent_restart_and_stop(cluster_factory: Callable[..., LocalCluster]) -> None:
    """Stopping the agent (SIGTERM) kills its pods' process groups and leaves no state.json, so a new agent fails
    the pods it did not start (NodeAgentRestarted); `down` leaves no process behind."""
    lc = cluster_factory(node=True)
    info = lc.info()
    with info.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_pod("default", pod_body("sleeper", "sleep 300 & sleep 300; wait"))
        pod = wait_phase(core, "default", "sleeper", {"Running"}, 60)
        pid = pid_of(pod)
        # Running says the shim started, not that its shell forked both sleeps yet (a busy machine lags)
        wait_for("the shim's shell and both its sleeps", lambda: len(_children(pid)) >= 3, 30)
        children = _children(pid)
        assert process_alive(pid)

        agent_pid = lc._read_pids()["node-agent"]
        os.killpg(agent_pid, signal.SIGTERM)
        wait_for("agent exited", lambda: not process_alive(agent_pid), 10)
        assert not any(process_alive(p) for p in [pid, *children])
        assert not (pod_dir(info, pod) / "state.json").exists()
        node = core.read_node(info.node_name)
        assert condition(node, "Ready").status == "False"

        lc._spawn("node-agent", lc._node_agent_argv(None))  # a fresh agent, as `up` starts it
        pod = wait_phase(core, "default", "sleeper", {"Failed"}, 30)
        assert pod.status.reason == "NodeAgentRestarted"
        wait_for("node Ready again", lambda: condition(core.read_node(info.node_name), "Ready").status == "True", 60)
        core.create_namespaced_pod("default", pod_body("sleeper2", "sleep 300"))
        pod = wait_phase(core, "default", "sleeper2", {"Running"}, 60)
    pid = pid_of(pod)
    assert process_alive(pid)
    lc.down()
    assert not process_alive(pid)
    assert not Path(info.state_dir).exists()


def _children(pid: int) -> list[int]:
    """All descendants of `pid` (the shim's command and what it started)."""
    try:
        kids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


def test_agent_sigkill_resumes_its_pods(cluster_factory: Callable[..., LocalCluster]) -> None:
    """A SIGKILLed agent, started again, carries on from each pod's state.json: (a) a Deployment pod keeps its
    shim pid, IP, network namespace, Running/Ready and restart count 0, `kubectl logs` works, a normal delete
    stops it; (b) Job pods that finished while no agent ran report Succeeded / Failed with their exit codes (the
    shim's exit file); (c) a pod force-deleted meanwhile has its processes and namespace removed."""
    from divbase_localcluster.podnet import netns

    lc = cluster_factory(node=True)
    info = lc.info()
    layout = Layout.for_state_dir(info.state_dir) if info.node_netns else None
    with info.api_client() as api:
        core, apps, batch = client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api)
        web = _deployment("web", "v1")
        web["spec"]["replicas"] = 1
        apps.create_namespaced_deployment("default", web)
        gate = 'echo started; while [ ! -e "$HOME/go" ]; do sleep 0.1; done; echo finishing; exit '
        for name, code in (("job-ok", 0), ("job-bad", 3)):
            pod = pod_body(name, gate + str(code))
            batch.create_namespaced_job(
                "default",
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {"name": name},
                    "spec": {"backoffLimit": 0, "template": {"spec": pod["spec"]}},
                },
            )
        core.create_namespaced_pod("default", pod_body("doomed", "sleep 300 & sleep 300; wait"))

        def ready_web() -> client.V1Pod | None:
            pods = core.list_namespaced_pod("default", label_selector="app=web").items
            ready = len(pods) == 1 and (c := condition(pods[0], "Ready")) is not None and c.status == "True"
            return pods[0] if ready else None

        before = wait_for("web Ready", ready_web, 90)
        jobs = {
            n: wait_for(
                f"{n} running",
                lambda n=n: next(
                    (
                        p
                        for p in core.list_namespaced_pod("default", label_selector=f"job-name={n}").items
                        if p.status.phase == "Running"
                    ),
                    None,
                ),
                60,
            )
            for n in ("job-ok", "job-bad")
        }
        doomed = wait_phase(core, "default", "doomed", {"Running"}, 60)
        web_pid, web_ip = pid_of(before), before.status.pod_ip
        assert _http_ok(info, web_ip)
        doomed_procs = [pid_of(doomed), *_children(pid_of(doomed))]
        assert len(doomed_procs) >= 3 and all(process_alive(p) for p in doomed_procs)  # shim, sh, 2x sleep
        assert (pod_dir(info, before) / "state.json").is_file()

        def while_down() -> None:
            assert _http_ok(info, web_ip)  # the pod serves without an agent
            for p in jobs.values():
                (pod_dir(info, p) / "go").touch()
            wait_for("job processes exited", lambda: not any(process_alive(pid_of(p)) for p in jobs.values()), 15)
            core.delete_namespaced_pod("doomed", "default", grace_period_seconds=0)
            wait_for("doomed gone from the API", lambda: gone(lambda: read_pod(core, "default", "doomed")), 15)
            assert all(process_alive(p) for p in doomed_procs)  # nobody killed them yet

        lc.restart_component("node-agent", sig=signal.SIGKILL, while_down=while_down)

        # (c) deleted while the agent was down: processes and namespace gone, its state.json too
        wait_for("doomed's processes killed", lambda: not any(process_alive(p) for p in doomed_procs), 15)
        assert not (pod_dir(info, doomed) / "state.json").exists()
        if layout is not None:
            assert layout.pod_netns(doomed.status.pod_ip) not in netns.names()

        # (b) Jobs that ended while the agent was down: their exit codes, from the shim's exit files
        for name, phase, code, reason in (("job-ok", "Succeeded", 0, "Completed"), ("job-bad", "Failed", 3, "Error")):
            p = wait_phase(core, "default", jobs[name].metadata.name, {"Succeeded", "Failed"}, 30)
            term = p.status.container_statuses[0].state.terminated
            assert (p.status.phase, term.exit_code, term.reason) == (phase, code, reason), (name, term)
            assert core.read_namespaced_pod_log(p.metadata.name, "default") == "started\nfinishing\n"

        # (a) the Deployment pod was resumed, not restarted
        after = wait_for("web Ready", ready_web, 30)
        st = after.status.container_statuses[0]
        assert after.metadata.uid == before.metadata.uid and after.status.phase == "Running"
        assert (pid_of(after), after.status.pod_ip, st.restart_count, st.ready) == (web_pid, web_ip, 0, True)
        assert st.state.running.started_at == before.status.container_statuses[0].state.running.started_at
        assert process_alive(web_pid) and _http_ok(info, web_ip)
        if layout is not None:
            assert layout.pod_netns(web_ip) in netns.names()
        answered = '"GET / HTTP/1.1" 200'  # python -m http.server's log line for each answered probe (or request)
        probes = core.read_namespaced_pod_log(after.metadata.name, "default").count(answered)
        assert probes
        # probes keep running under the new agent (periodSeconds 1; the test sends no request meanwhile): three more
        # answered, then it is still Ready, still without a restart
        wait_for(
            "three more readiness probes answered",
            lambda: core.read_namespaced_pod_log(after.metadata.name, "default").count(answered) >= probes + 3,
            30,
        )
        again = read_pod(core, "default", after.metadata.name)
        assert condition(again, "Ready").status == "True" and again.status.container_statuses[0].restart_count == 0

        core.delete_namespaced_pod(after.metadata.name, "default")
        wait_for("web pod deleted", lambda: gone(lambda: read_pod(core, "default", after.metadata.name)), 30)
        assert not process_alive(web_pid)
        if layout is not None:
            assert layout.pod_netns(web_ip) not in netns.names()
        assert not (pod_dir(info, after) / "state.json").exists()
        new_web = wait_for("replacement web Ready", ready_web, 60)
        assert new_web.metadata.uid != after.metadata.uid


# --- in-cluster API access: the ServiceAccount token ------------------------------------------------------------------
API_PROBE = r"""
import os, sys
from kubernetes import client, config
out = open(os.environ["DIVBASE_TERMINATION_LOG"], "w")
if "KUBECONFIG" not in os.environ:
    out.write("no-api-access " + ",".join(sorted(k for k in os.environ if k.startswith("KUBE"))))
    sys.exit(0)
try:
    config.load_incluster_config()  # what in-cluster clients try first: no /var/run/secrets here
    out.write("in-cluster?! ")
except config.ConfigException:
    config.load_kube_config()  # ... then KUBECONFIG
ns = open(os.path.join(os.path.dirname(os.environ["KUBECONFIG"]), "namespace")).read()
try:
    out.write(f"listed {len(client.CoreV1Api().list_namespaced_pod(ns).items)} {ns}")
except client.ApiException as e:
    out.write(f"status {e.status}")
"""


KUBERNETES_LINKS = (
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "KUBERNETES_SERVICE_PORT_HTTPS",
    "KUBERNETES_PORT",
    "KUBERNETES_PORT_443_TCP",
    "KUBERNETES_PORT_443_TCP_PROTO",
    "KUBERNETES_PORT_443_TCP_PORT",
    "KUBERNETES_PORT_443_TCP_ADDR",
)


def _rbac_reader(api_client: Any, namespace: str, sa: str) -> None:
    """`sa` may list pods in `namespace` (and nothing else)."""
    rbac = client.RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role(
        namespace,
        {"metadata": {"name": "pod-reader"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]},
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "pod-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
        },
    )


def test_service_account_token_gives_api_access_under_rbac(
    core: client.CoreV1Api, api_client: Any, namespace: str, cluster: ClusterInfo
) -> None:
    """A pod gets a TokenRequest token for its ServiceAccount, a kubeconfig and KUBERNETES_SERVICE_*: the kubernetes
    client falls back from in-cluster config to KUBECONFIG, and the real RBAC authorizer decides (200 vs 403).
    automountServiceAccountToken false - on the pod or on its ServiceAccount - gives no API access at all."""
    for sa, automount in (("reader", None), ("nobody", None), ("quiet", False)):
        core.create_namespaced_service_account(
            namespace,
            {"metadata": {"name": sa}, **({} if automount is None else {"automountServiceAccountToken": automount})},
        )
    _rbac_reader(api_client, namespace, "reader")
    cases = {  # pod name -> (ServiceAccount, pod-level automount, expected termination message prefix)
        "reader": ("reader", None, "listed "),
        "nobody": ("nobody", None, "status 403"),
        "sa-says-no": ("quiet", None, "no-api-access"),
        "pod-says-no": ("reader", False, "no-api-access"),
        "pod-says-yes": ("quiet", True, "status 403"),  # the pod's own value wins over its ServiceAccount's
    }
    for name, (sa, automount, _) in cases.items():
        body = pod_body(
            name, "", image="python:3.11", serviceAccountName=sa, container={"command": ["python", "-c", API_PROBE]}
        )
        if automount is not None:
            body["spec"]["automountServiceAccountToken"] = automount
        core.create_namespaced_pod(namespace, body)
    for name, (_, _, expected) in cases.items():
        pod = wait_phase(core, namespace, name, {"Succeeded", "Failed"}, 60)
        term = pod.status.container_statuses[0].state.terminated
        assert pod.status.phase == "Succeeded", (
            name,
            term.message,
            (pod_dir(cluster, pod) / "logs" / "main" / "0.log").read_text()[-2000:],
        )
        assert term.message.startswith(expected), (name, term.message)
        sa_dir = pod_dir(cluster, pod) / "serviceaccount"
        if expected == "no-api-access":
            assert term.message == "no-api-access " + ",".join(sorted(KUBERNETES_LINKS)), (
                "no KUBECONFIG; only the `kubernetes` Service's links, which the kubelet gives every pod"
            )
            assert not sa_dir.exists()
        else:
            assert {p.name for p in sa_dir.iterdir()} == {"ca.crt", "namespace", "kubeconfig"}, "token removed"
            assert (sa_dir / "namespace").read_text() == namespace
            assert oct((sa_dir / "kubeconfig").stat().st_mode & 0o777) == "0o600"
    reader = read_pod(core, namespace, "reader").status.container_statuses[0].state.terminated.message
    assert reader == f"listed {len(cases)} {namespace}"
    agent_log = (cluster.log_dir / "node-agent.log").read_text()
    assert "eyJ" not in agent_log, "no token in the agent's log"


def test_service_account_token_is_bound_to_the_pod_and_refreshed(
    core: client.CoreV1Api, api_client: Any, namespace: str, cluster: ClusterInfo, tmp_path: Path
) -> None:
    """The agent's token logic with the node's own credentials: the Node authorizer lets it request a token for a
    pod bound to the node (not for another ServiceAccount); a refresh is due at 80 % of the lifetime and rewrites
    the token the kubeconfig points at; deleting the pod invalidates the token (it is bound to the pod)."""
    from divbase_localcluster.node.api import Api, ApiError
    from divbase_localcluster.node.serviceaccount import DEFAULT_EXPIRATION, ServiceAccountToken
    from kubernetes import config

    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    _rbac_reader(api_client, namespace, "reader")
    core.create_namespaced_pod(namespace, pod_body("sleeper", "sleep 300", serviceAccountName="reader"))
    pod = wait_phase(core, namespace, "sleeper", {"Running"}, 60)
    assert (pod_dir(cluster, pod) / "serviceaccount" / "token").is_file()  # the agent's own copy, while it runs
    assert cluster.node_kubeconfig is not None
    node_api = Api(cluster.node_kubeconfig, tmp_path / "node-creds")
    body = node_api.request("GET", f"/api/v1/namespaces/{namespace}/pods/sleeper")
    token = ServiceAccountToken(node_api, body, tmp_path / "sa")
    started = time.monotonic()
    token.setup()
    assert token.expiration == DEFAULT_EXPIRATION  # taken from the kube-api-access volume admission added
    assert started + 0.8 * DEFAULT_EXPIRATION <= token.refresh_at <= time.monotonic() + 0.8 * DEFAULT_EXPIRATION

    def list_pods() -> int:
        with config.new_client_from_config(config_file=str(token.kubeconfig)) as api:
            return len(client.CoreV1Api(api).list_namespaced_pod(namespace).items)

    assert list_pods() == 1
    first = token.token_file.read_text()
    token.maybe_refresh(now=token.refresh_at - 1)
    assert token.token_file.read_text() == first  # not due yet
    due = token.refresh_at
    token.maybe_refresh(now=due + 1)
    assert token.token_file.read_text() != first and token.refresh_at > due
    assert list_pods() == 1  # the kubeconfig reads the new token

    other = ServiceAccountToken(
        node_api, {**body, "spec": {**body["spec"], "serviceAccountName": "default"}}, tmp_path / "other"
    )
    with pytest.raises(ApiError) as refused:
        other.setup()  # a token for a ServiceAccount the pod does not run as
    assert refused.value.status in (400, 403), refused.value

    core.delete_namespaced_pod("sleeper", namespace, grace_period_seconds=0)
    wait_for("pod gone", lambda: gone(lambda: read_pod(core, namespace, "sleeper")), 30)

    def rejected() -> bool:
        try:
            list_pods()
        except client.ApiException as e:
            return e.status == 401
        return False

    wait_for("the bound token rejected", rejected, 30)


def _kubectl(
    cluster: ClusterInfo, *args: str, stdin: str | None = None, websockets: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The cluster's own kubectl as admin, with something on its stdin (ClusterInfo.kubectl gives it none);
    `websockets=False`: exec over SPDY from kubectl on, its fallback when WebSockets fail."""
    from divbase_localcluster import build

    kubectl = (cluster.bin_dir or build.binaries().bin_dir) / "kubectl"
    env = {**os.environ, "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "true" if websockets else "false"}
    return subprocess.run(
        [str(kubectl), f"--kubeconfig={cluster.kubeconfig}", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_kubectl_exec_runs_commands_in_the_container(
    core: client.CoreV1Api, namespace: str, cluster: ClusterInfo
) -> None:
    """`pods/exec`: kubectl (WebSocket) -> apiserver (SPDY/3.1) -> the agent's /exec, and kubectl's SPDY fallback
    proxied as it is. The command runs with the container's environment in its directory; stdout and stderr stay
    apart; its exit code is kubectl's; `-i` feeds stdin until it ends; a container that does not run is refused
    with the kubelet's message."""
    body = pod_body("shell", "sleep 3600", container={"env": [{"name": "GREETING", "value": "hello"}]})
    body["spec"]["containers"].append({"name": "done", "image": "busybox:1.36", "command": ["sh", "-c", "exit 0"]})
    core.create_namespaced_pod(namespace, body)

    def main_runs_done_ended() -> client.V1Pod | None:
        pod = read_pod(core, namespace, "shell")
        states = {s.name: s.state for s in pod.status.container_statuses or []}
        return pod if states and states["main"].running and states["done"].terminated else None

    pod = wait_for("main running, done terminated", main_runs_done_ended, 60)
    out = _kubectl(
        cluster,
        "-n",
        namespace,
        "exec",
        "shell",
        "-c",
        "main",
        "--",
        "sh",
        "-c",
        'echo "$GREETING from $PWD"; echo oops >&2; exit 3',
    )
    assert (out.returncode, out.stdout) == (3, f"hello from {pod_dir(cluster, pod)}\n"), out.stderr
    assert out.stderr == "oops\ncommand terminated with exit code 3\n"
    ok = _kubectl(cluster, "-n", namespace, "exec", "shell", "-c", "main", "--", "echo", "hi")
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "hi\n", "")
    text = "".join(f"line {i} of what kubectl reads from its stdin\n" for i in range(5000))  # ~230 KB
    echoed = _kubectl(cluster, "-n", namespace, "exec", "-i", "shell", "-c", "main", "--", "cat", stdin=text)
    assert (echoed.returncode, echoed.stderr) == (0, "") and echoed.stdout == text
    counted = _kubectl(cluster, "-n", namespace, "exec", "-i", "shell", "-c", "main", "--", "wc", "-l", stdin="a\nb\n")
    assert counted.stdout.strip() == "2"  # stdin ended: wc saw EOF
    spdy = _kubectl(
        cluster,
        "-n",
        namespace,
        "exec",
        "-i",
        "shell",
        "-c",
        "main",
        "--",
        "sh",
        "-c",
        "cat; exit 4",
        stdin="untranslated\n",
        websockets=False,
    )  # the apiserver proxies kubectl's SPDY as it is
    assert (spdy.returncode, spdy.stdout, spdy.stderr) == (4, "untranslated\n", "command terminated with exit code 4\n")
    refused = _kubectl(cluster, "-n", namespace, "exec", "shell", "-c", "done", "--", "true")
    assert refused.returncode == 1 and 'container not found ("done")' in refused.stderr, refused.stderr
    missing = _kubectl(cluster, "-n", namespace, "exec", "shell", "-c", "main", "--", "no-such-command")
    assert missing.returncode == 1
    assert 'exec: "no-such-command": executable file not found in $PATH' in missing.stderr, missing.stderr


def test_kubectl_exec_with_a_tty_and_when_kubectl_goes(
    core: client.CoreV1Api, namespace: str, cluster: ClusterInfo
) -> None:
    """`-it`: the command gets a terminal of kubectl's size (the resize stream) as its controlling terminal. A
    kubectl killed mid-command takes the command (its whole process group) with it."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    from divbase_localcluster import build

    core.create_namespaced_pod(namespace, pod_body("tty", "sleep 3600"))
    pod = wait_phase(core, namespace, "tty", {"Running"})
    kubectl = [
        str((cluster.bin_dir or build.binaries().bin_dir) / "kubectl"),
        f"--kubeconfig={cluster.kubeconfig}",
        "-n",
        namespace,
        "exec",
    ]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 97, 0, 0))
    proc = subprocess.Popen(
        [*kubectl, "-it", "tty", "--", "sh", "-c", "stty size; tty -s && echo on-a-tty; exit 5"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    seen, deadline = b"", time.monotonic() + 30
    try:
        while time.monotonic() < deadline and b"exit code" not in seen:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:  # EIO: kubectl closed the terminal
                    break
        assert proc.wait(timeout=30) == 5, seen
    finally:
        proc.kill()
        os.close(master)
    text = seen.decode(errors="replace").replace("\r\n", "\n")
    assert "33 97\non-a-tty\n" in text and "command terminated with exit code 5" in text, text

    pid_file = pod_dir(cluster, pod) / "exec.pid"
    held = subprocess.Popen(
        [*kubectl, "tty", "--", "sh", "-c", "echo $$ > exec.pid; sleep 300 & wait"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        pid = wait_for("the command's pid", lambda: pid_file.is_file() and pid_file.read_text().strip(), 30)
        assert process_alive(int(pid))
    finally:
        held.kill()
        held.wait()
    wait_for("the command killed with its session", lambda: not process_alive(int(pid)), 30)
    assert pid_of(read_pod(core, namespace, "tty")) and read_pod(core, namespace, "tty").status.phase == "Running"


def test_exec_endpoint_serves_only_the_apiserver(core: client.CoreV1Api, cluster: ClusterInfo, node_name: str) -> None:
    """The agent's /exec answers the apiserver's kubelet client certificate only: the cluster's admin certificate
    gets a 403 before any upgrade, no certificate no TLS session."""
    port = core.read_node(node_name).status.daemon_endpoints.kubelet_endpoint.port
    request = (
        "POST /exec/default/any/main?command=id&output=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
        "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
    )
    assert_only_the_apiserver(cluster, port, request)
