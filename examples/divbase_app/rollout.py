"""The ways of moving DivBase to a new release, each under the same steady load, measured the same way.

`gated_rollout`: patch `spec.version` of a DivBaseDatabase and let the operator run expand → deploy → contract.
`stop_the_world`: what DivBase does today: scale the API to zero, migrate to head, start the new release.
`helm_hook`: what most charts do instead of an operator: a pre-upgrade hook Job migrates to head (expand and
contract at once) while the old release serves, then the Deployment's rolling update starts the new one.
Each returns the load generator's figures; the demo prints them and the end-to-end test asserts on them. The load
goes through a ClusterIP Service of the API pods (kube-proxy on the local cluster's pod network), so endpoint
propagation during a rolling update is what clients meet; the API pods' standard `preStop: sleep` covers it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from divbase_operator import names
from divbase_operator.testing import Kube
from divbase_testsupport import wait_for
from kubernetes import client

from .loadgen import LoadGenerator, ensure_service

API_PORT = 8080
SECRET = "divbase-db"
Progress = Callable[[str], None]
# the image's own release (DIVBASE_RELEASE comes with the image), migrated all the way: DivBase's db-migrator today
MIGRATE_TO_HEAD = "divbase-migrate expand && divbase-migrate contract"
PRESTOP_SLEEP = 2  # s: a terminating pod keeps serving until kube-proxy has taken it out of the Service


def _db_env() -> list[dict[str, Any]]:
    return [{"name": "DIVBASE_DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "url"}}}]


def api_pod_spec(image: str | None = None, prestop_sleep: int = PRESTOP_SLEEP) -> dict[str, Any]:
    """The API listening on 0.0.0.0:8080 of its pod, ready once it reaches the database; on deletion it keeps
    serving for `prestop_sleep` s (0: none) before SIGTERM, as the example chart's api.preStopSleepSeconds."""
    container: dict[str, Any] = {
        "name": "api",
        "command": ["divbase-api"],
        "env": _db_env(),
        "ports": [{"name": "http", "containerPort": API_PORT}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 1,
            "failureThreshold": 1,
            "timeoutSeconds": 2,
        },
    }
    if prestop_sleep:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": prestop_sleep}}}
    if image:
        container["image"] = image
    return {"terminationGracePeriodSeconds": 15, "containers": [container]}


def workloads(replicas: int = 2, prestop_sleep: int = PRESTOP_SLEEP) -> list[dict[str, Any]]:
    """The DivBaseDatabase's gated workloads: the API (rolling, never below `replicas` ready) and a worker."""
    return [
        {
            "name": "api",
            "template": {
                "replicas": replicas,
                "progressDeadlineSeconds": 120,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {"spec": api_pod_spec(prestop_sleep=prestop_sleep)},
            },
        },
        {
            "name": "worker",
            "template": {
                "replicas": 1,
                "template": {
                    "spec": {
                        "terminationGracePeriodSeconds": 5,
                        "containers": [{"name": "worker", "command": ["divbase-worker"], "env": _db_env()}],
                    }
                },
            },
        },
    ]


def database_spec(version: str, replicas: int = 2, prestop_sleep: int = PRESTOP_SLEEP) -> dict[str, Any]:
    return {
        "version": version,
        "image": "divbase",
        "database": {"secretRef": {"name": SECRET}},
        "workloads": workloads(replicas, prestop_sleep),
        "migrationJob": {"backoffLimit": 1, "activeDeadlineSeconds": 300},
    }


class _Restarts:
    """Counts API container restarts and failed starts (a startup refusal shows up as one of them)."""

    def __init__(self, core: client.CoreV1Api, namespace: str, selector: str) -> None:
        self.core, self.namespace, self.selector = core, namespace, selector
        self.seen: dict[str, int] = {}

    def sample(self) -> None:
        for pod in self.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items:
            deleting = pod.metadata.deletion_timestamp is not None  # exit 143 after SIGTERM is no failure
            count = sum(
                (s.restart_count or 0)
                + int(not deleting and bool(s.state and s.state.terminated and s.state.terminated.exit_code))
                for s in pod.status.container_statuses or []
            )
            self.seen[pod.metadata.name] = max(self.seen.get(pod.metadata.name, 0), count)

    @property
    def total(self) -> int:
        return sum(self.seen.values())


def _run_under_load(
    api_client: client.ApiClient,
    namespace: str,
    service: str,
    selector: str,
    node_netns: str,
    action: Callable[[], None],
    progress: Progress,
    settle: float = 3.0,
) -> dict[str, Any]:
    """The load through Service `service` (made for `selector` if missing) before, during and after `action`."""
    target = ensure_service(api_client, namespace, service, selector, API_PORT, node_netns)
    load = LoadGenerator(target).start()
    restarts = _Restarts(client.CoreV1Api(api_client), namespace, selector)
    try:
        wait_for("the API answering before the rollout", lambda: load.snapshot()["ok"] >= 20, 60)
        started = time.monotonic()
        action()
        seconds = time.monotonic() - started
        end = time.monotonic() + settle
        while time.monotonic() < end:
            restarts.sample()
            time.sleep(0.5)
    finally:
        figures = load.stop()
    figures.update(rollout_s=round(seconds, 1), restarts=restarts.total)
    progress(f"done: {figures['ok']} requests served, {figures['failed']} failed")
    return figures


def gated_rollout(
    kube: Kube, name: str, version: str, progress: Progress, node_netns: str, timeout: float = 300
) -> dict[str, Any]:
    """Move a Ready DivBaseDatabase to `version` under load; report each phase as the operator enters it."""
    selector = kube.selector(name, **{names.LABEL_WORKLOAD: "api"})

    def action() -> None:
        kube.patch_db(name, {"spec": {"version": version}})
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            db = kube.get_db(name)
            status = db.get("status", {})
            if status.get("observedGeneration") != db["metadata"]["generation"]:
                time.sleep(0.1)  # the operator has not seen the new version yet
                continue
            phase = status.get("phase")
            steps = (status.get("rollout") or {}).get("steps") or {}
            line = f"phase {phase}; " + ", ".join(f"{s} {v.get('phase')}" for s, v in steps.items())
            if line != last:
                progress(line)
                last = line
            ready = next((c for c in status.get("conditions", []) if c["type"] == names.COND_READY), {})
            if status.get("currentVersion") == version and ready.get("status") == "True":
                return
            if phase == names.PHASE_FAILED:
                raise AssertionError(f"rollout failed: {status.get('lastFailure')}")
            time.sleep(0.25)  # the demo's display polls; the operator itself is event-driven
        raise AssertionError(f"{name} not Ready at {version} after {timeout} s")

    return _run_under_load(kube.api_client, kube.namespace, f"{name}-api", selector, node_netns, action, progress)


LEGACY, HOOK = "legacy-api", "hook-api"


def legacy_deployment(namespace: str, version: str, replicas: int, name: str = LEGACY) -> dict[str, Any]:
    """DivBase's deployment today (LEGACY): an init container migrates to head before the API starts. HOOK: the
    Helm-hook chart's, no migrator in the pod (the hook Job migrates) and a rolling update that keeps every
    replica ready (maxUnavailable 0), as the operator's workloads do."""
    spec = api_pod_spec(f"divbase:{version}")
    labels = {"app": name}
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }
    if name == HOOK:
        deployment["spec"]["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        }
    else:
        spec["initContainers"] = [
            {
                "name": "db-migrator",
                "image": f"divbase:{version}",
                "env": _db_env(),
                "command": ["sh", "-c", MIGRATE_TO_HEAD],
            }
        ]
    return deployment


def _available(apps: client.AppsV1Api, namespace: str, replicas: int, name: str = LEGACY) -> bool:
    d = apps.read_namespaced_deployment(name, namespace)
    return (
        d.status.observed_generation == d.metadata.generation
        and (d.status.available_replicas or 0) == replicas
        and (d.status.updated_replicas or 0) == replicas
    )


def _migrate_to_head(batch: client.BatchV1Api, namespace: str, version: str, name: str) -> None:
    """A Job running release `version`'s migrations to head, as DivBase's db-migrator and a Helm hook do."""
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "migrate",
                            "image": f"divbase:{version}",
                            "env": _db_env(),
                            "command": ["sh", "-c", MIGRATE_TO_HEAD],
                        }
                    ],
                }
            },
        },
    }
    batch.create_namespaced_job(namespace, job)
    wait_for(
        f"Job {name} complete", lambda: (batch.read_namespaced_job(name, namespace).status.succeeded or 0) >= 1, 180
    )


def deploy_legacy(
    api_client: client.ApiClient, namespace: str, version: str, replicas: int = 2, name: str = LEGACY
) -> None:
    """Release `version` installed and serving; for HOOK its pre-install hook Job migrates first."""
    apps = client.AppsV1Api(api_client)
    if name == HOOK:
        _migrate_to_head(client.BatchV1Api(api_client), namespace, version, f"pre-install-{version}")
    apps.create_namespaced_deployment(namespace, legacy_deployment(namespace, version, replicas, name))
    wait_for(f"{name} available", lambda: _available(apps, namespace, replicas, name), 180)


def stop_the_world(
    api_client: client.ApiClient, namespace: str, version: str, progress: Progress, node_netns: str, replicas: int = 2
) -> dict[str, Any]:
    """Scale to zero, migrate to head with a Job, start the new release; the same load runs throughout."""
    apps, core, batch = client.AppsV1Api(api_client), client.CoreV1Api(api_client), client.BatchV1Api(api_client)

    def action() -> None:
        progress("scale legacy-api to 0")
        apps.patch_namespaced_deployment_scale(LEGACY, namespace, {"spec": {"replicas": 0}})
        wait_for(
            "old pods gone", lambda: not core.list_namespaced_pod(namespace, label_selector=f"app={LEGACY}").items, 120
        )
        progress(f"migrate to head of release {version}")
        _migrate_to_head(batch, namespace, version, f"migrate-{version}")
        progress(f"start release {version}")
        deployment = apps.read_namespaced_deployment(LEGACY, namespace)
        deployment.spec.replicas = replicas
        for container in deployment.spec.template.spec.init_containers + deployment.spec.template.spec.containers:
            container.image = f"divbase:{version}"
        apps.replace_namespaced_deployment(LEGACY, namespace, deployment)
        wait_for("legacy-api available again", lambda: _available(apps, namespace, replicas), 180)

    return _run_under_load(api_client, namespace, LEGACY, f"app={LEGACY}", node_netns, action, progress)


def helm_hook(
    api_client: client.ApiClient, namespace: str, version: str, progress: Progress, node_netns: str, replicas: int = 2
) -> dict[str, Any]:
    """`helm upgrade` of a chart with a pre-upgrade hook: the hook Job migrates to head (the old release still
    serving, against a schema whose contract has already removed what it reads), then the rolling update."""
    apps, batch = client.AppsV1Api(api_client), client.BatchV1Api(api_client)

    def action() -> None:
        progress(f"pre-upgrade hook: migrate to head of release {version} while the old release serves")
        _migrate_to_head(batch, namespace, version, f"pre-upgrade-{version}")
        progress(f"rolling update to release {version}")
        apps.patch_namespaced_deployment(
            HOOK,
            namespace,
            {"spec": {"template": {"spec": {"containers": [{"name": "api", "image": f"divbase:{version}"}]}}}},
        )
        wait_for(f"{HOOK} rolled out", lambda: _available(apps, namespace, replicas, HOOK), 180)

    return _run_under_load(api_client, namespace, HOOK, f"app={HOOK}", node_netns, action, progress)
