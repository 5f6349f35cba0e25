"""The handful of Kubernetes API calls the operator makes, as small async functions.

The official client is synchronous; each call runs in a worker thread so the Kopf event loop never blocks.
Nothing here decides anything: it creates, applies, deletes and patches what the planner asked for."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Callable
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from . import names
from .leader import LostRace

log = logging.getLogger(__name__)


class Conflict(Exception):
    """The object changed since we read it; the watch will bring the new version and wake us again."""


API_CONCURRENCY = 32  # parallel API calls: threads and pooled HTTP connections alike


def load_config() -> None:
    """In a pod: the ServiceAccount; elsewhere: KUBECONFIG or ~/.kube/config. Also sizes the worker threads and
    the HTTP connection pool, so hundreds of resources are not served through a handful of connections."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = API_CONCURRENCY
    client.Configuration.set_default(configuration)
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=API_CONCURRENCY, thread_name_prefix="kube-api"))


class KubeApi:
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self._client = api_client or client.ApiClient()
        self.batch = client.BatchV1Api(self._client)
        self.apps = client.AppsV1Api(self._client)
        self.custom = client.CustomObjectsApi(self._client)
        self.core = client.CoreV1Api(self._client)
        self.coordination = client.CoordinationV1Api(self._client)

    async def create_job(self, body: dict[str, Any]) -> bool:
        """Returns False when the Job already exists: deterministic names make that a success."""
        try:
            await asyncio.to_thread(self.batch.create_namespaced_job, body["metadata"]["namespace"], body)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    async def _apply(self, patch: Callable[..., Any], body: dict[str, Any]) -> None:
        """Server-side apply: the operator owns exactly the fields it sets, and nothing fights over them."""
        meta = body["metadata"]
        await asyncio.to_thread(patch, meta["name"], meta["namespace"], body, field_manager=names.FIELD_MANAGER,
                                force=True, _content_type="application/apply-patch+yaml")

    async def apply_deployment(self, body: dict[str, Any]) -> None:
        await self._apply(self.apps.patch_namespaced_deployment, body)

    async def apply_configmap(self, body: dict[str, Any]) -> None:
        """The contract plan's ConfigMap (one per resource, replaced per plan)."""
        await self._apply(self.core.patch_namespaced_config_map, body)

    async def delete_deployment(self, namespace: str, name: str) -> None:
        try:
            await asyncio.to_thread(self.apps.delete_namespaced_deployment, name, namespace,
                                    propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def delete_children(self, namespace: str, database: str) -> None:
        """Jobs first (a running migration is stopped), then workloads. The database itself is never touched."""
        selector = f"{names.LABEL_DATABASE}={database},{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"
        await asyncio.to_thread(self.batch.delete_collection_namespaced_job, namespace, label_selector=selector,
                                propagation_policy="Background")
        await asyncio.to_thread(self.apps.delete_collection_namespaced_deployment, namespace,
                                label_selector=selector, propagation_policy="Background")

    async def patch_status(self, namespace: str, name: str, resource_version: str,
                           status: dict[str, Any]) -> dict[str, Any]:
        """Merge patch guarded by resourceVersion: a write based on stale state is refused, never applied."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            return await asyncio.to_thread(
                self.custom.patch_namespaced_custom_object_status,
                names.GROUP, names.VERSION, namespace, names.PLURAL, name, body,
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                raise Conflict(str(exc.reason)) from None
            raise

    async def patch_finalizers(self, namespace: str, name: str, resource_version: str,
                               finalizers: list[str]) -> dict[str, Any]:
        body = {"metadata": {"resourceVersion": resource_version, "finalizers": finalizers}}
        try:
            return await asyncio.to_thread(
                self.custom.patch_namespaced_custom_object,
                names.GROUP, names.VERSION, namespace, names.PLURAL, name, body,
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                raise Conflict(str(exc.reason)) from None
            raise

    # -- the leader-election Lease (see leader.py) ------------------------------------------------------------
    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            lease = await asyncio.to_thread(self.coordination.read_namespaced_lease, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self._client.sanitize_for_serialization(lease)

    async def create_lease(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}
        return await self._write_lease(self.coordination.create_namespaced_lease, namespace, body)

    async def replace_lease(self, namespace: str, name: str, resource_version: str,
                            spec: dict[str, Any]) -> dict[str, Any]:
        """Guarded by resourceVersion: of two replicas taking over at once, exactly one write succeeds."""
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace, "resourceVersion": resource_version},
                "spec": spec}
        return await self._write_lease(functools.partial(self.coordination.replace_namespaced_lease, name),
                                       namespace, body)

    async def _write_lease(self, call: Callable[..., Any], namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            lease = await asyncio.to_thread(call, namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                raise LostRace(str(exc.reason)) from None
            raise
        return self._client.sanitize_for_serialization(lease)


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch from `old` to `new`: removed keys become null, so they really go away."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if old.get(key) != value:
            if isinstance(value, dict) and isinstance(old.get(key), dict):
                patch[key] = status_patch(old[key], value)
            else:
                patch[key] = value
    return patch
