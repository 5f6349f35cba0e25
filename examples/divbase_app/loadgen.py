"""A steady load on the API through its Service, the way clients in the cluster reach it: each request goes to the
Service's ClusterIP and kube-proxy picks a ready endpoint, so what a rolling update does to clients (a pod
terminating before kube-proxy stops sending it connections, a Service without endpoints) is what this sees.

Requests are sent from the local cluster's node network namespace (docs/localcluster.md, "Pod network"), where
kube-proxy's rules are. A request counts as failed when it errors or gets a non-2xx answer; an answer names the
release of the pod that gave it (the `X-DivBase-Release` header), so failures are attributed when a pod answered.
Every request writes a user and reads it back in a second request (possibly served by another pod, of another
release), so the two releases running side by side during a rollout must agree on the data."""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from divbase_localcluster.podnet.netns import Sockets
from kubernetes import client

from .api import RELEASE_HEADER


@dataclass(frozen=True)
class ServiceTarget:
    """A Service's ClusterIP and port, dialled from inside the node namespace `node_netns`."""

    node_netns: str
    ip: str
    port: int


def ensure_service(
    api_client: client.ApiClient, namespace: str, name: str, selector: str, port: int, node_netns: str
) -> ServiceTarget:
    """A ClusterIP Service `name` for the pods of an equality `selector` ("k=v,k2=v2"), created if missing."""
    core = client.CoreV1Api(api_client)
    labels = dict(term.split("=", 1) for term in selector.split(","))
    try:
        service = core.read_namespaced_service(name, namespace)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        service = core.create_namespaced_service(
            namespace,
            {"metadata": {"name": name}, "spec": {"selector": labels, "ports": [{"port": port, "targetPort": port}]}},
        )
    return ServiceTarget(node_netns, service.spec.cluster_ip, port)


class HttpError(Exception):
    def __init__(self, status: int, release: str | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.release = status, release


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    ok: int = 0
    failed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    served_by_release: Counter[str] = field(default_factory=Counter)
    failed_by_release: Counter[str] = field(default_factory=Counter)  # of the pod that answered with the error
    last_success: float | None = None
    longest_gap_s: float = 0.0  # longest time between two successful requests
    unavailable_s: float = 0.0  # summed time from a failure to the next success
    _failing_since: float | None = None

    def record(self, at: float, ok: bool, release: str | None, reason: str | None) -> None:
        if ok:
            self.ok += 1
            if release:
                self.served_by_release[release] += 1
            if self.last_success is not None:
                self.longest_gap_s = max(self.longest_gap_s, at - self.last_success)
            if self._failing_since is not None:
                self.unavailable_s += at - self._failing_since
                self._failing_since = None
            self.last_success = at
        else:
            self.failed += 1
            self.reasons[reason or "error"] += 1
            if release:
                self.failed_by_release[release] += 1
            if self._failing_since is None:
                self._failing_since = at

    def summary(self) -> dict[str, Any]:
        unavailable = self.unavailable_s
        if self._failing_since is not None:  # still failing at the end
            unavailable += time.monotonic() - self._failing_since
        return {
            "requests": self.ok + self.failed,
            "ok": self.ok,
            "failed": self.failed,
            "failure_reasons": dict(self.reasons),
            "served_by_release": dict(self.served_by_release),
            "failed_by_release": dict(self.failed_by_release),
            "longest_gap_s": round(self.longest_gap_s, 3),
            "unavailable_s": round(unavailable, 3),
        }


class LoadGenerator:
    """`workers` threads, each sending one write-then-read request pair every `interval` seconds."""

    def __init__(self, target: ServiceTarget, workers: int = 4, interval: float = 0.05, timeout: float = 3.0) -> None:
        self.target, self.workers, self.interval, self.timeout = target, workers, interval, timeout
        self.stats = Stats()
        self._sockets = Sockets(target.node_netns)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"load-{i}", daemon=True) for i in range(workers)]

    def start(self) -> LoadGenerator:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)
        self._sockets.close()
        with self._lock:
            return self.stats.summary()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self.stats.summary()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request on a new connection (each one is balanced by kube-proxy anew)."""
        conn = http.client.HTTPConnection(self.target.ip, self.target.port, timeout=self.timeout)
        try:
            conn.sock = self._sockets.connect((self.target.ip, self.target.port), self.timeout)
            conn.request(
                method,
                path,
                body=json.dumps(body) if body is not None else None,
                headers={"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            data = response.read()
            if not 200 <= response.status < 300:
                raise HttpError(response.status, response.getheader(RELEASE_HEADER))
            return json.loads(data)
        finally:
            conn.close()

    def _one(self) -> tuple[bool, str | None, str | None]:
        name = uuid.uuid4().hex[:12]
        try:
            created = self._call("POST", "/users", {"name": name})
            read = self._call("GET", f"/users/{created['id']}")
        except HttpError as exc:
            return False, exc.release, str(exc)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            return False, None, type(exc).__name__
        if read.get("name") != name:
            return False, None, "read back a different name"
        return True, str(read.get("release")), None

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            ok, release, reason = self._one()
            with self._lock:
                self.stats.record(time.monotonic(), ok, release, reason)
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
