"""The handful of Kubernetes API calls the operator makes, as small async functions.

The official client is synchronous; each call runs in a worker thread so the Kopf event loop never blocks.
Nothing here decides anything: it creates, applies, deletes and patches what the planner asked for."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from . import names
from .leader import LostRace

log = logging.getLogger(__name__)


class Conflict(Exception):
    """The object changed since we read it; the watch will bring the new version and wake us again."""


API_CONCURRENCY = 32  # parallel API calls: threads and pooled HTTP connections alike
REQUEST_TIMEOUT = (10, 60)  # (connect, read) seconds: a hung call must not hold a worker thread forever
LOG_REQUEST_TIMEOUT = (5, 10)  # a log tail is a nicety: a node that does not answer soon is asked again later
JOBS = "/apis/batch/v1/namespaces/{namespace}/jobs"
DEPLOYMENTS = "/apis/apps/v1/namespaces/{namespace}/deployments"
REPLICASETS = "/apis/apps/v1/namespaces/{namespace}/replicasets"
CONFIGMAPS = "/api/v1/namespaces/{namespace}/configmaps"
PODS = "/api/v1/namespaces/{namespace}/pods"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
DATABASES = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{{namespace}}/{names.PLURAL}"
BACKGROUND = {"propagationPolicy": "Background"}
COLLECTIONS = {"Job": JOBS, "Deployment": DEPLOYMENTS, "ConfigMap": CONFIGMAPS, "ReplicaSet": REPLICASETS}


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
        concurrent.futures.ThreadPoolExecutor(max_workers=API_CONCURRENCY, thread_name_prefix="kube-api")
    )


class KubeApi:
    """Plain JSON requests through the client's ApiClient, which keeps the auth (including a rotated
    ServiceAccount token), TLS and the connection pool. The typed API classes are not used: they import ~300
    pydantic models, ~29 MiB resident for the dozen endpoints below, and build model objects nobody reads."""

    def __init__(
        self, api_client: client.ApiClient | None = None, lease_owner: list[dict[str, Any]] | None = None
    ) -> None:
        self._client = api_client or client.ApiClient()
        self.lease_owner = lease_owner  # ownerReferences every Lease write carries (leader.pod_owner_references)

    def call(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One JSON request, synchronously: each async call below runs it in a worker thread, and the kubectl
        plugin (a command, no event loop) calls it directly. A non-2xx answer raises ApiException."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        request = self._client.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
        data = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        return json.loads(data) if data else {}

    def _call_text(self, path: str, query: dict[str, str], limit: int) -> str:
        """A GET whose answer is text (a pod's log), at most `limit` bytes of it kept."""
        request = self._client.param_serialize(
            "GET",
            path,
            query_params=list(query.items()),
            header_params={"Accept": "*/*"},
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(*request, _request_timeout=LOG_REQUEST_TIMEOUT)
        data = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        return data[-limit:].decode(errors="replace") if data else ""

    def stream(self, path: str, query: dict[str, str], timeout: float) -> Iterator[dict[str, Any]]:
        """A watch's events ({type, object}), synchronously, until the apiserver ends it or `timeout` seconds pass:
        the kubectl plugin's `wait`. As kubernetes' Watch does, an ERROR event raises ApiException with its code
        (410: the version is too old) and a non-2xx answer raises ApiException."""
        request = self._client.param_serialize(
            "GET",
            path,
            query_params=[*query.items(), ("watch", "true")],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(*request, _request_timeout=timeout)
        try:
            if not 200 <= response.status <= 299:
                response.read()
                raise ApiException(http_resp=response)
            buffer = b""
            for chunk in response.response.stream(amt=None, decode_content=False):
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    try:
                        event = json.loads(line) if line.strip() else None
                    except ValueError:
                        event = None
                    if not isinstance(event, dict):
                        continue
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise ApiException(
                            status=status.get("code"), reason=f"{status.get('reason')}: {status.get('message')}"
                        )
                    yield event
        finally:
            response.response.close()
            response.response.release_conn()

    async def read_pod_log(self, namespace: str, name: str, container: str, tail_lines: int, limit_bytes: int) -> str:
        """The last `tail_lines` lines of a container's log, at most `limit_bytes` (the kubelet cuts it too). Only
        the runner contract's lock-wait line is taken from it (reconciler): nothing of it is stored or shown."""
        query = {"container": container, "tailLines": str(tail_lines), "limitBytes": str(limit_bytes)}
        return await asyncio.to_thread(
            self._call_text, f"{PODS.format(namespace=namespace)}/{name}/log", query, limit_bytes
        )

    async def _request(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self.call, method, path, query, body, content_type)

    async def create_job(self, body: dict[str, Any]) -> bool:
        """Returns False when the Job already exists: deterministic names make that a success."""
        try:
            await self._request("POST", JOBS.format(namespace=body["metadata"]["namespace"]), body=body)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    async def _apply(self, collection: str, body: dict[str, Any], force: bool) -> None:
        """Server-side apply. `force` only for an object observed as the resource's own (its apply wins over
        another manager's edit of its fields); anything else is applied without force, so an object of someone
        else's is refused with 409 naming its managers and fields (ApiException), never taken over."""
        meta = body["metadata"]
        query = {"fieldManager": names.FIELD_MANAGER, **({"force": "true"} if force else {})}
        await self._request(
            "PATCH",
            f"{collection.format(namespace=meta['namespace'])}/{meta['name']}",
            query=query,
            body=body,
            content_type="application/apply-patch+yaml",
        )

    async def apply_deployment(self, body: dict[str, Any], force: bool = False) -> None:
        await self._apply(DEPLOYMENTS, body, force)

    async def apply_configmap(self, body: dict[str, Any], force: bool = False) -> None:
        """The contract plan's ConfigMap (one per resource, replaced per plan)."""
        await self._apply(CONFIGMAPS, body, force)

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A Job, Deployment, ConfigMap or ReplicaSet by name, whoever owns it (the watch only sees labelled ones);
        None when there is none."""
        try:
            return await self._request("GET", f"{COLLECTIONS[kind].format(namespace=namespace)}/{name}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get("Deployment", namespace, name)

    async def delete(self, kind: str, namespace: str, name: str, uid: str | None) -> None:
        """Deletes the object only while it is the one observed (a uid precondition: a namesake created since is
        not touched); gone already, or another object now, is not an error."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            **BACKGROUND,
            **({"preconditions": {"uid": uid}} if uid else {}),
        }
        try:
            await self._request("DELETE", f"{COLLECTIONS[kind].format(namespace=namespace)}/{name}", body=body)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    async def delete_deployment(self, namespace: str, name: str, uid: str | None = None) -> None:
        await self.delete("Deployment", namespace, name, uid)

    async def delete_children(
        self, namespace: str, jobs: Iterable[tuple[str, str | None]], deployments: Iterable[tuple[str, str | None]]
    ) -> None:
        """Jobs first (a running migration is stopped), then the workloads: each by name and uid, and only those
        the resource controls (a Job or Deployment of someone else carrying its labels stays; no delete by label).
        The database itself is never touched."""
        for name, uid in jobs:
            await self.delete("Job", namespace, name, uid)
        for name, uid in deployments:
            await self.delete("Deployment", namespace, name, uid)

    async def _patch_database(
        self, namespace: str, name: str, body: dict[str, Any], subresource: str = ""
    ) -> dict[str, Any]:
        """JSON merge patch guarded by the resourceVersion in `body`: a write based on stale state is refused."""
        path = f"{DATABASES.format(namespace=namespace)}/{name}{subresource}"
        try:
            return await self._request("PATCH", path, body=body, content_type="application/merge-patch+json")
        except ApiException as exc:
            if exc.status in (404, 409):
                raise Conflict(str(exc.reason)) from None
            raise

    async def patch_status(
        self, namespace: str, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        return await self._patch_database(namespace, name, body, "/status")

    async def patch_finalizers(
        self, namespace: str, name: str, resource_version: str, finalizers: list[str]
    ) -> dict[str, Any]:
        body = {"metadata": {"resourceVersion": resource_version, "finalizers": finalizers}}
        return await self._patch_database(namespace, name, body)

    # -- the leader-election Lease (see leader.py) ------------------------------------------------------------
    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", f"{LEASES.format(namespace=namespace)}/{name}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def create_lease(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace, **self._lease_owner()},
            "spec": spec,
        }
        return await self._write_lease("POST", LEASES.format(namespace=namespace), body)

    def _lease_owner(self) -> dict[str, Any]:
        return {"ownerReferences": self.lease_owner} if self.lease_owner else {}

    async def replace_lease(
        self, namespace: str, name: str, resource_version: str, spec: dict[str, Any]
    ) -> dict[str, Any]:
        """Guarded by resourceVersion: of two replicas taking over at once, exactly one write succeeds."""
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "resourceVersion": resource_version,
                **self._lease_owner(),
            },
            "spec": spec,
        }
        return await self._write_lease("PUT", f"{LEASES.format(namespace=namespace)}/{name}", body)

    async def _write_lease(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._request(method, path, body=body)
        except ApiException as exc:
            if exc.status == 409:
                raise LostRace(str(exc.reason)) from None
            raise


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
