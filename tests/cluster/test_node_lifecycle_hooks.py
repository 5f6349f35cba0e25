"""Lifecycle hooks on the local node agent, as the kubelet runs them: preStop (exec, httpGet, sleep) before SIGTERM
within the grace period, SIGKILL 2 s after a preStop that took the whole grace period, FailedPreStopHook and
FailedPostStartHook Events, postStart before the container counts as running.

Each container records what it sees in files of its pod directory (its cwd, kept after the pod is deleted).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from divbase_localcluster.cluster import ClusterInfo
from divbase_localcluster.testing import gone
from divbase_testsupport import wait_for
from kubernetes import client

# SIGTERM trap: note the time and whether the preStop marker was already there, then exit
TRAP = (
    "trap 'date +%s.%N > term_at; if [ -f marker ]; then echo yes > marker_seen; else echo no > marker_seen; fi;"
    " exit 0' TERM; date +%s.%N > began; while true; do sleep 0.05; done"
)


def pod(name: str, script: str, *, grace: int = 10, lifecycle: dict | None = None, **container: Any) -> dict:
    c = {"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", script], **container}
    if lifecycle is not None:
        c["lifecycle"] = lifecycle
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": grace, "containers": [c]},
    }


@pytest.fixture
def core(api_client: Any) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


def running(core: client.CoreV1Api, ns: str, name: str, timeout: float = 60) -> client.V1Pod:
    def check() -> client.V1Pod | None:
        p = core.read_namespaced_pod(name, ns)
        st = (p.status.container_statuses or [None])[0]
        return p if p.status.phase == "Running" and st is not None and st.state.running else None

    return wait_for(f"pod {name} running", check, timeout)


def pod_dir(cluster: ClusterInfo, p: client.V1Pod) -> Path:
    m = p.metadata
    return cluster.state_dir / "node" / "pods" / f"{m.namespace}_{m.name}_{m.uid}"


def wait_file(path: Path, timeout: float = 10) -> str:
    return wait_for(
        f"{path.name} written",
        lambda: path.read_text().strip() if path.is_file() and path.read_text().strip() else None,
        timeout,
    )


def delete_and_wait_gone(core: client.CoreV1Api, ns: str, name: str, timeout: float = 30) -> float:
    """Delete (the pod's own grace period); returns the wall-clock time of the delete request."""
    at = time.time()
    core.delete_namespaced_pod(name, ns)
    wait_for(f"pod {name} gone", lambda: gone(lambda: core.read_namespaced_pod(name, ns)), timeout)
    return at


def events(core: client.CoreV1Api, ns: str, name: str) -> list[client.CoreV1Event]:
    return core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items


def test_prestop_exec_runs_before_sigterm_in_the_containers_environment(
    core: client.CoreV1Api, namespace: str, cluster: ClusterInfo
) -> None:
    """The hook runs in the container's directory with its env (a pod env var, the image map's PATH), and only once it
    finished does the container get SIGTERM: its trap finds the marker the hook wrote."""
    hook = {"preStop": {"exec": {"command": ["sh", "-c", 'sleep 1; echo "$GREETING $(command -v python)" > marker']}}}
    body = pod("exec-hook", TRAP, lifecycle=hook, env=[{"name": "GREETING", "value": "hello-from-env"}])
    core.create_namespaced_pod(namespace, body)
    p = running(core, namespace, "exec-hook")
    d = pod_dir(cluster, p)
    wait_file(d / "began")
    delete_and_wait_gone(core, namespace, "exec-hook")
    assert (d / "marker_seen").read_text().strip() == "yes", "SIGTERM came before the preStop hook finished"
    greeting, _, python = (d / "marker").read_text().strip().partition(" ")
    assert greeting == "hello-from-env"
    assert python, "PATH from the image map (its venv bin first)"
    assert any(e.reason == "Killing" for e in events(core, namespace, "exec-hook"))


def test_prestop_sleep_delays_sigterm(core: client.CoreV1Api, namespace: str, cluster: ClusterInfo) -> None:
    core.create_namespaced_pod(namespace, pod("sleep-hook", TRAP, lifecycle={"preStop": {"sleep": {"seconds": 3}}}))
    p = running(core, namespace, "sleep-hook")
    d = pod_dir(cluster, p)
    wait_file(d / "began")
    deleted_at = delete_and_wait_gone(core, namespace, "sleep-hook")
    term_at = float(wait_file(d / "term_at"))
    assert 3.0 <= term_at - deleted_at < 5.5, term_at - deleted_at  # upper bound: room for a loaded machine


HTTP_SERVER = r"""
import http.server, os, signal, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open("hooked", "a") as f:
            f.write(f"{self.path} {self.headers.get('X-Hook')} {self.headers.get('User-Agent')}\n")
        self.send_response(500)  # the kubelet does not look at the status: still a successful hook
        self.end_headers()
    def log_message(self, *args):
        pass
def term(*_):
    open("term_seen", "w").write("yes" if os.path.exists("hooked") else "no")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
http.server.HTTPServer((os.environ["POD_IP"], 8080), H).serve_forever()
"""


def test_prestop_http_get_hits_the_containers_server(
    core: client.CoreV1Api, namespace: str, cluster: ClusterInfo
) -> None:
    """httpGet: the pod IP by default, a named port, path and headers; the request arrives before SIGTERM."""
    hook = {
        "preStop": {
            "httpGet": {"path": "/drain?now=1", "port": "web", "httpHeaders": [{"name": "X-Hook", "value": "prestop"}]}
        }
    }
    body = pod(
        "http-hook",
        "",
        lifecycle=hook,
        image="python:3.11",
        ports=[{"name": "web", "containerPort": 8080}],
        env=[{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        readinessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    )
    body["spec"]["containers"][0]["command"] = ["python", "-c", HTTP_SERVER]
    core.create_namespaced_pod(namespace, body)
    wait_for(
        "http-hook ready",
        lambda: (
            (core.read_namespaced_pod("http-hook", namespace).status.container_statuses or [None])[0]
            and core.read_namespaced_pod("http-hook", namespace).status.container_statuses[0].ready
        ),
        60,
    )
    d = pod_dir(cluster, core.read_namespaced_pod("http-hook", namespace))
    delete_and_wait_gone(core, namespace, "http-hook")
    path, header, agent = (d / "hooked").read_text().strip().split(" ")
    assert (path, header) == ("/drain?now=1", "prestop")
    assert agent.startswith("kube-lifecycle/1.")
    assert (d / "term_seen").read_text() == "yes"
    assert not [e for e in events(core, namespace, "http-hook") if e.reason == "FailedPreStopHook"]


def test_failing_prestop_hook_gives_an_event_and_the_pod_still_terminates(
    core: client.CoreV1Api, namespace: str, cluster: ClusterInfo
) -> None:
    """exec exiting non-zero and httpGet to a port nobody listens on: Warning FailedPreStopHook (no details, like
    the kubelet), then SIGTERM as usual."""
    core.create_namespaced_pod(
        namespace, pod("bad-exec", TRAP, lifecycle={"preStop": {"exec": {"command": ["sh", "-c", "exit 3"]}}})
    )
    core.create_namespaced_pod(
        namespace, pod("bad-http", TRAP, lifecycle={"preStop": {"httpGet": {"path": "/", "port": 9}}})
    )
    dirs = {}
    for name in ("bad-exec", "bad-http"):
        p = running(core, namespace, name)
        dirs[name] = pod_dir(cluster, p)
        wait_file(dirs[name] / "began")
    for name in ("bad-exec", "bad-http"):
        delete_and_wait_gone(core, namespace, name)
        assert (dirs[name] / "term_at").is_file(), "SIGTERM reached the container after the failed hook"
        failed = wait_for(
            f"{name}: FailedPreStopHook",
            lambda n=name: [e for e in events(core, namespace, n) if e.reason == "FailedPreStopHook"],
            15,
        )
        assert failed[0].type == "Warning" and failed[0].message == "PreStopHook failed"
        assert failed[0].involved_object.field_path == "spec.containers{main}"


def test_prestop_past_the_grace_period_is_cut_sigkill_two_seconds_later(
    core: client.CoreV1Api, namespace: str, cluster: ClusterInfo
) -> None:
    """A preStop hook longer than the grace period (3 s): SIGTERM at 3 s, SIGKILL at 3 + 2 s (kubelet's minimum
    window); the container ignores SIGTERM and writes a heartbeat until it dies."""
    script = (
        "trap 'date +%s.%N >> term_at' TERM; date +%s.%N > began; while true; do date +%s.%N > beat; sleep 0.05; done"
    )
    hook = {"preStop": {"exec": {"command": ["sh", "-c", "sleep 30"]}}}
    core.create_namespaced_pod(namespace, pod("slow-hook", script, grace=3, lifecycle=hook))
    p = running(core, namespace, "slow-hook")
    d = pod_dir(cluster, p)
    wait_file(d / "began")
    deleted_at = delete_and_wait_gone(core, namespace, "slow-hook")
    term_after = float(wait_file(d / "term_at").split()[0]) - deleted_at  # the first SIGTERM
    killed_after = float((d / "beat").read_text()) - deleted_at
    # lower bounds exact (never before the grace period, never within 2 s of SIGTERM: the last heartbeat may lag the
    # kill by a loop turn); upper bounds leave room for a loaded machine (the agent sees the deletion by a watch)
    assert 3.0 <= term_after < 5.5, term_after
    assert 1.5 <= killed_after - term_after < 3.5, (term_after, killed_after)
    time.sleep(0.5)
    assert float((d / "beat").read_text()) - deleted_at == killed_after, "the container is dead"


def test_liveness_failure_runs_prestop_before_the_restart(
    core: client.CoreV1Api, namespace: str, cluster: ClusterInfo
) -> None:
    """The kubelet runs preStop on a liveness kill too: the first run fails its probe, the hook appends to a file
    before SIGTERM, the container restarts."""
    script = "echo run >> runs; " + TRAP
    body = pod(
        "live-hook",
        script,
        lifecycle={"preStop": {"exec": {"command": ["sh", "-c", "sleep 1; touch marker"]}}},
        livenessProbe={
            "exec": {"command": ["sh", "-c", "test ! -f unhealthy"]},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    )
    body["spec"]["restartPolicy"] = "Always"
    core.create_namespaced_pod(namespace, body)
    p = running(core, namespace, "live-hook")
    d = pod_dir(cluster, p)
    (d / "unhealthy").write_text("")
    wait_for(
        "restarted",
        lambda: core.read_namespaced_pod("live-hook", namespace).status.container_statuses[0].restart_count >= 1,
        30,
    )
    (d / "unhealthy").unlink()
    assert (d / "marker_seen").read_text().strip() == "yes"
    assert any(e.reason == "Killing" and "liveness" in e.message for e in events(core, namespace, "live-hook"))


def test_post_start_runs_before_the_container_counts_as_running_and_its_failure_kills(
    core: client.CoreV1Api, namespace: str, cluster: ClusterInfo
) -> None:
    """postStart: the container is reported running only once the hook returned (its marker exists by then); a
    failing postStart gives FailedPostStartHook and the container is killed (and restarted by restartPolicy)."""
    post = {"postStart": {"exec": {"command": ["sh", "-c", "sleep 2; touch poststarted"]}}}
    core.create_namespaced_pod(namespace, pod("post-ok", "sleep 300", lifecycle=post))
    bad = pod(
        "post-bad",
        "echo run >> runs; sleep 300",
        lifecycle={"postStart": {"exec": {"command": ["sh", "-c", "exit 1"]}}},
    )
    bad["spec"]["restartPolicy"] = "Always"
    core.create_namespaced_pod(namespace, bad)

    def first_sign_of_running() -> client.V1Pod | None:
        p = core.read_namespaced_pod("post-ok", namespace)
        st = (p.status.container_statuses or [None])[0]
        return p if p.status.phase == "Running" or (st is not None and (st.state.running or st.started)) else None

    p = wait_for("post-ok running", first_sign_of_running, 60, interval=0.05)
    assert (pod_dir(cluster, p) / "poststarted").exists(), "reported running before postStart returned"
    p = running(core, namespace, "post-ok")
    failed = wait_for(
        "FailedPostStartHook",
        lambda: [e for e in events(core, namespace, "post-bad") if e.reason == "FailedPostStartHook"],
        30,
    )
    assert failed[0].message == "PostStartHook failed"
    wait_for(
        "post-bad restarted",
        lambda: core.read_namespaced_pod("post-bad", namespace).status.container_statuses[0].restart_count >= 1,
        30,
    )
    assert any(
        e.reason == "Killing" and "FailedPostStartHook" in e.message for e in events(core, namespace, "post-bad")
    )
