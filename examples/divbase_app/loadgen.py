"""A steady load on the API pods, routed the way a Service routes: only to pods that are Ready and not terminating.

There is no kube-proxy on the local control plane, so this is the Service: a watch on the API pods keeps the set of
ready endpoints, and each request goes to the next one (round robin). A request counts as failed when it errors or
gets a non-2xx answer, or when there is no ready endpoint at all (what a client of a Service without endpoints sees:
a refused connection). Every request writes a user through one pod and reads it back through the next one, so the
two releases running side by side during a rollout must agree on the data."""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException


@dataclass
class Endpoint:
    name: str
    ip: str
    release: str


class EndpointTracker:
    """Ready, non-terminating pods matching a label selector, kept current by a watch (re-listed on errors)."""

    def __init__(self, api_client: client.ApiClient, namespace: str, selector: str, port: int) -> None:
        self.core = client.CoreV1Api(api_client)
        self.namespace, self.selector, self.port = namespace, selector, port
        self._endpoints: dict[str, Endpoint] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name="endpoints", daemon=True)

    def start(self, timeout: float = 30.0) -> EndpointTracker:
        """Returns once the first list is in: before that, "no endpoint" would be the tracker's fault."""
        self._thread.start()
        if not self._synced.wait(timeout):
            raise TimeoutError(f"could not list pods {self.selector!r} in {self.namespace} within {timeout} s")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def ready(self) -> list[Endpoint]:
        with self._lock:
            return sorted(self._endpoints.values(), key=lambda e: e.name)

    @staticmethod
    def _endpoint(pod: Any) -> Endpoint | None:
        conditions = {c.type: c.status for c in (pod.status.conditions or [])}
        if pod.metadata.deletion_timestamp is not None or not pod.status.pod_ip or conditions.get("Ready") != "True":
            return None
        image = pod.spec.containers[0].image or ""
        return Endpoint(pod.metadata.name, pod.status.pod_ip, image.rsplit(":", 1)[-1])

    def _apply(self, pod: Any, deleted: bool = False) -> None:
        endpoint = None if deleted else self._endpoint(pod)
        with self._lock:
            if endpoint:
                self._endpoints[pod.metadata.name] = endpoint
            else:
                self._endpoints.pop(pod.metadata.name, None)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listed = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector)
                fresh = {p.metadata.name: e for p in listed.items if (e := self._endpoint(p))}
                with self._lock:  # swapped whole: a re-list never shows an empty set in between
                    self._endpoints = fresh
                self._synced.set()
                stream = watch.Watch()
                for event in stream.stream(self.core.list_namespaced_pod, self.namespace,
                                           label_selector=self.selector, timeout_seconds=5,
                                           resource_version=listed.metadata.resource_version):
                    self._apply(event["object"], deleted=event["type"] == "DELETED")
                    if self._stop.is_set():
                        stream.stop()
            except (ApiException, OSError, ValueError):
                self._stop.wait(0.2)


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    ok: int = 0
    failed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    served_by_release: Counter[str] = field(default_factory=Counter)
    failed_by_release: Counter[str] = field(default_factory=Counter)  # the release of the pod that was asked
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
        return {"requests": self.ok + self.failed, "ok": self.ok, "failed": self.failed,
                "failure_reasons": dict(self.reasons), "served_by_release": dict(self.served_by_release),
                "failed_by_release": dict(self.failed_by_release),
                "longest_gap_s": round(self.longest_gap_s, 3), "unavailable_s": round(unavailable, 3)}


class LoadGenerator:
    """`workers` threads, each sending one write-then-read request pair every `interval` seconds."""

    def __init__(self, tracker: EndpointTracker, workers: int = 4, interval: float = 0.05,
                 timeout: float = 3.0) -> None:
        self.tracker, self.workers, self.interval, self.timeout = tracker, workers, interval, timeout
        self.stats = Stats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._rr = itertools.count()
        self._threads = [threading.Thread(target=self._run, name=f"load-{i}", daemon=True) for i in range(workers)]

    def start(self) -> LoadGenerator:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)
        with self._lock:
            return self.stats.summary()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self.stats.summary()

    def _pick(self) -> Endpoint | None:
        ready = self.tracker.ready()
        return ready[next(self._rr) % len(ready)] if ready else None

    def _call(self, endpoint: Endpoint, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://{endpoint.ip}:{self.tracker.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read())

    def _one(self) -> tuple[bool, str | None, str | None]:
        writer = self._pick()
        if writer is None:
            return False, None, "no ready endpoint"
        name = uuid.uuid4().hex[:12]
        asked = writer
        try:
            created = self._call(writer, "POST", "/users", {"name": name})
            asked = reader = self._pick() or writer
            read = self._call(reader, "GET", f"/users/{created['id']}")
        except urllib.error.HTTPError as exc:
            return False, asked.release, f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            return False, asked.release, type(getattr(exc, "reason", exc)).__name__
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
