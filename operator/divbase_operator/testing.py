"""Helpers for operator tests and benchmarks on the local control plane: run the real operator as a process, wait for
conditions with bounded loops, and record pod and Job events with timestamps to prove the rollout's order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from divbase_testsupport import free_port, wait_for
from kubernetes import client, utils, watch
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from divbase_operator import names
from divbase_operator.conditions import get_condition
from divbase_operator.kube import KubeApi

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CRD_FILE = REPO / "crds" / "divbasedatabases.divbase.io.yaml"


class OperatorProcess:
    """The real `divbase-operator`, started and killed like a pod would be."""

    def __init__(self, kubeconfig: str, namespace: str, log_path: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.kubeconfig = kubeconfig
        self.extra_args = extra_args
        self.namespace = namespace
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.metrics_port = free_port()

    def start(self) -> None:
        self.starts += 1
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        log = self.log_path.open("ab")
        log.write(f"--- start #{self.starts} ---\n".encode())
        self.proc = subprocess.Popen(
            [
                str(VENV_BIN / "divbase-operator"),
                "-n",
                self.namespace,
                "--log-format",
                "json",
                "--metrics-port",
                str(self.metrics_port),
                "--metrics-address",
                "127.0.0.1",
                "--liveness",
                f"http://127.0.0.1:{free_port()}/healthz",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything, as when a node dies."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of the operator's metrics (None when it is not exported)."""
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class OutputLines:
    """A process's output read line by line in a thread, so a test waits for the line it expects (a positive signal)
    instead of sleeping and then asserting that the process is still there."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._next = 0  # expect() looks after the line it found last
        self._changed = threading.Condition()
        self._ended = False
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def expect(self, text: str, timeout: float) -> int:
        """Waits for a line containing `text` after those already expected; returns its index. Fails when the output
        ends first (the process exited) or at `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((i for i in range(self._next, len(self.lines)) if text in self.lines[i]), None)
                if found is not None:
                    self._next = found + 1
                    return found
                remaining = deadline - time.monotonic()
                if self._ended or remaining <= 0:
                    raise AssertionError(
                        f"{'the output ended' if self._ended else f'{timeout:.0f}s passed'} "
                        f"without a line containing {text!r}: {self.lines}"
                    )
                self._changed.wait(remaining)

    def ended(self, timeout: float) -> list[str]:
        """All lines, once the output has ended (within `timeout`)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._ended, timeout):
                raise AssertionError(f"the output did not end within {timeout:.0f}s: {self.lines}")
            return list(self.lines)


def install_crd(api_client: client.ApiClient) -> None:
    """`kubectl apply -f crds/` (idempotent), then wait until the apiserver serves the resource."""
    body = yaml.safe_load(CRD_FILE.read_text())
    try:
        utils.create_from_dict(api_client, body)
    except utils.FailToCreateError as exc:
        if not all(e.status == 409 for e in exc.api_exceptions):
            raise
    ext = client.ApiextensionsV1Api(api_client)
    wait_for(
        "CRD established",
        lambda: any(
            c.type == "Established" and c.status == "True"
            for c in ext.read_custom_resource_definition(body["metadata"]["name"]).status.conditions or []
        ),
        60,
    )


@dataclass
class Kube:
    """A test's view of one namespace. The DivBaseDatabase goes through the operator's own KubeApi (plain JSON, as
    the operator and the kubectl plugin send it); children are read with kubernetes' typed APIs, whose model
    objects the tests read attribute by attribute."""

    api_client: client.ApiClient
    namespace: str

    def __post_init__(self) -> None:
        self.api = KubeApi(self.api_client)
        self.databases = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{self.namespace}/{names.PLURAL}"
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)

    # -- the custom resource --------------------------------------------------------------------------------------
    def create_db(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": name}, "spec": spec}
        return self.api.call("POST", self.databases, body=body)

    def get_db(self, name: str) -> dict[str, Any]:
        return self.api.call("GET", f"{self.databases}/{name}")

    def patch_db(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.api.call(
            "PATCH", f"{self.databases}/{name}", body=patch, content_type="application/merge-patch+json"
        )

    def patch_db_seen(self, name: str, patch: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        """Patch the spec, then wait until the operator has reconciled that generation (status.observedGeneration):
        the positive signal a negative check waits for before asserting that nothing happened."""
        generation = self.patch_db(name, patch)["metadata"]["generation"]
        return wait_for(
            f"{name} generation {generation} observed by the operator",
            lambda: (db := self.get_db(name)).get("status", {}).get("observedGeneration", 0) >= generation and db,
            timeout,
        )

    def decided_again(self, name: str, timeout: float = 60) -> dict[str, Any]:
        """The positive signal a negative check waits for after an annotation (approval, retry): annotations bump no
        generation, and an unchanged decision writes nothing, so nothing shows the operator has seen them. Pausing
        and resuming does: once the resumed generation is observed, the operator has decided, unpaused, on a state
        that holds every annotation set before (and acted on it: actions come before the status write). Returns the
        resource as that decision left it."""
        self.patch_db_seen(name, {"spec": {"paused": True}}, timeout)
        return self.patch_db_seen(name, {"spec": {"paused": False}}, timeout)

    def annotate_db(self, name: str, key: str, value: str) -> None:
        self.patch_db(name, {"metadata": {"annotations": {key: value}}})

    def condition(self, name: str, kind: str) -> dict[str, Any] | None:
        status = self.get_db(name).get("status") or {}
        return get_condition(status.get("conditions") or [], kind)

    def wait_condition(
        self, name: str, kind: str, status: str = "True", timeout: float = 120, reason: str | None = None
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            db = self.get_db(name)
            cond = get_condition((db.get("status") or {}).get("conditions") or [], kind)
            ok = (
                cond
                and cond["status"] == status
                and (reason is None or cond.get("reason") == reason)
                and db["status"].get("observedGeneration") == db["metadata"]["generation"]
            )
            return db if ok else None

        return wait_for(f"{name} condition {kind}={status} reason={reason}", check, timeout)

    def wait_phase(self, name: str, phase: str, timeout: float = 120) -> dict[str, Any]:
        return wait_for(
            f"{name} phase {phase}",
            lambda: (db := self.get_db(name)).get("status", {}).get("phase") == phase and db,
            timeout,
        )

    # -- children ---------------------------------------------------------------------------------------------------
    def selector(self, name: str, **extra: str) -> str:
        labels = {names.LABEL_DATABASE: name, **extra}
        return ",".join(f"{k}={v}" for k, v in labels.items())

    def jobs(self, name: str) -> list[Any]:
        return self.batch.list_namespaced_job(self.namespace, label_selector=self.selector(name)).items

    def jobs_by_step(self, name: str) -> dict[tuple[str, str], list[str]]:
        """Job names by (step, version): how many times each step of each release was started."""
        found: dict[tuple[str, str], list[str]] = {}
        for job in self.jobs(name):
            labels = job.metadata.labels
            found.setdefault((labels[names.LABEL_STEP], labels[names.LABEL_VERSION]), []).append(job.metadata.name)
        return found

    def deployments(self, name: str) -> list[Any]:
        return self.apps.list_namespaced_deployment(self.namespace, label_selector=self.selector(name)).items

    def workload_pods(self, name: str) -> list[Any]:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector(name)).items
        return [p for p in pods if names.LABEL_WORKLOAD in (p.metadata.labels or {})]

    def events(self, name: str) -> list[Any]:
        return self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name},involvedObject.kind={names.KIND}"
        ).items

    def create_secret(self, name: str, data: dict[str, str]) -> None:
        body = client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data=data)
        try:
            self.core.create_namespaced_secret(self.namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.core.replace_namespaced_secret(name, self.namespace, body)


@dataclass
class Timeline:
    """Watches pods, Jobs (and Deployments, if asked) of one namespace in threads and keeps
    (resourceVersion, event, kind, name, labels, status) for every event.

    Events are ordered by the resourceVersion each one carries, not by when a watch thread received it: every
    stream is delayed on its own (a busy machine delivered a Job's completion after the pod the operator created
    because of it). One etcd serves the local control plane, so the resourceVersions of all kinds are its single
    revision counter, in write order. (Kubernetes calls them opaque to clients in general; this is a test of our
    own cluster, whose store we know.)"""

    api_client: client.ApiClient
    namespace: str
    kinds: tuple[str, ...] = ("Pod", "Job")
    entries: list[tuple[int, str, str, str, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Timeline:
        core, batch = client.CoreV1Api(self.api_client), client.BatchV1Api(self.api_client)
        listers = {
            "Pod": core.list_namespaced_pod,
            "Job": batch.list_namespaced_job,
            "Deployment": client.AppsV1Api(self.api_client).list_namespaced_deployment,
        }
        for kind in self.kinds:
            lister = listers[kind]
            thread = threading.Thread(target=self._watch, args=(kind, lister), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _watch(self, kind: str, lister: Callable[..., Any]) -> None:
        resource_version = None
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    lister, self.namespace, timeout_seconds=5, resource_version=resource_version
                ):
                    obj = event["object"]
                    resource_version = obj.metadata.resource_version
                    status = obj.status.to_dict() if obj.status else {}
                    self.entries.append(
                        (
                            int(resource_version),
                            event["type"],
                            kind,
                            obj.metadata.name,
                            dict(obj.metadata.labels or {}),
                            status,
                        )
                    )
                    if self._stop.is_set():
                        break
            except ApiException as exc:
                if exc.status == 410:
                    resource_version = None
                else:
                    time.sleep(0.5)
            finally:
                stream.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def times(self, kind: str, event: str, where: Callable[[str, dict[str, str], dict[str, Any]], bool]) -> list[int]:
        """When each matching event was written (its resourceVersion), oldest first; empty when none was seen."""
        return sorted(
            t
            for t, e, k, n, labels, status in list(self.entries)
            if k == kind and e == event and where(n, labels, status)
        )

    def first(self, kind: str, event: str, where: Callable[[str, dict[str, str], dict[str, Any]], bool]) -> int:
        """When the first matching event was seen. Never seen fails the test (AssertionError) instead of returning
        an infinity that would make any ordering built on it hold."""
        return self._seen(kind, event, where)[0]

    def last(self, kind: str, event: str, where: Callable[[str, dict[str, str], dict[str, Any]], bool]) -> int:
        """When the last matching event was seen; never seen fails the test, as for `first`. For DELETED it is when
        the last of the matching objects went: each one the watch saw (listed, added or changed) must have been
        seen deleted last, or the test fails naming the ones that were not (a deletion missed or still to come
        would otherwise leave an earlier one standing as "the last old pod gone")."""
        times = self._seen(kind, event, where)
        if event == "DELETED":
            latest: dict[str, str] = {}
            for _, e, k, n, labels, status in sorted(list(self.entries), key=lambda entry: entry[0]):
                if k == kind and where(n, labels, status):
                    latest[n] = e
            standing = sorted(n for n, e in latest.items() if e != "DELETED")
            if standing:
                raise AssertionError(
                    f"the watch saw no DELETED event of {kind} {', '.join(standing)} (matching the "
                    f"lookup, seen before), so the last deletion is not known:\n{self.dump()}"
                )
        return times[-1]

    def _seen(self, kind: str, event: str, where: Callable[[str, dict[str, str], dict[str, Any]], bool]) -> list[int]:
        times = self.times(kind, event, where)
        if not times:
            raise AssertionError(
                f"the watch saw no {event} event of a {kind} matching the lookup "
                f"({len(self.entries)} events seen):\n{self.dump()}"
            )
        return times

    def dump(self) -> str:
        return "\n".join(
            json.dumps([rv, e, k, n, labels.get(names.LABEL_VERSION)])
            for rv, e, k, n, labels, _ in sorted(list(self.entries), key=lambda entry: entry[0])
        )
