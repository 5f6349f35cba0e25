"""What the API gives a pod's containers, read by the node as a kubelet reads it: the ServiceAccount token (API
access), Secrets and ConfigMaps (environment and volumes) and the service links.

One `PodInputs` per pod worker; it holds the pod's token (if any) so the worker only decides when to ask again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from . import podspec, serviceaccount, servicelinks, volumes
from .api import ApiError
from .host import PodHost
from .serviceaccount import ServiceAccountToken

log = logging.getLogger(__name__)


class PodInputs:
    """The API reads of one pod (namespace `ns`, directory `pod_dir`) through its node's credentials."""

    def __init__(self, host: PodHost, ns: str, key: str, pod_dir: Path) -> None:
        self.host = host
        self.api = host.api
        self.ns, self.key, self.dir = ns, key, pod_dir
        self.token: ServiceAccountToken | None = None  # None: no API access (automount false) or not yet

    # -- ServiceAccount token ---------------------------------------------------------------------------------
    def setup_token(self, pod: dict[str, Any]) -> str:
        """API access unless automount is off (pod, then ServiceAccount): "" when settled, else the kubelet's
        message for a refused TokenRequest (the caller keeps the containers in ContainerCreating and retries)."""
        spec = pod.get("spec", {})
        sa_name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        account = None
        if spec.get("automountServiceAccountToken") is None:
            try:  # the Node authorizer lets a node read the ServiceAccounts of its pods
                account = self.api.request("GET", f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa_name}")
            except ApiError as e:
                log.info("pod %s: cannot read ServiceAccount %s (%s); going by its volumes", self.key, sa_name, e)
        if not serviceaccount.wants_token(pod, account):
            return ""
        token = ServiceAccountToken(self.api, pod, self.dir / "serviceaccount", self.host.pod_api_server)
        try:
            token.setup()
        except (ApiError, OSError) as e:
            detail = e.message if isinstance(e, ApiError) else str(e)
            volume = next(
                (v["name"] for v in spec.get("volumes") or [] if v["name"].startswith("kube-api-access-")),
                "kube-api-access",
            )
            msg = f'MountVolume.SetUp failed for volume "{volume}" : failed to fetch token: {detail}'
            log.warning("pod %s: %s", self.key, msg)
            return msg
        self.token = token
        log.info("pod %s: API access as ServiceAccount %s (%s)", self.key, sa_name, token.kubeconfig)
        return ""

    def resume_token(self, pod: dict[str, Any]) -> None:
        """The token a previous agent set up for this pod (after a restart): refreshed from now on."""
        self.token = ServiceAccountToken(self.api, pod, self.dir / "serviceaccount", self.host.pod_api_server)
        self.token.resume()

    def refresh_token(self, now: float) -> None:
        if self.token is not None:
            self.token.maybe_refresh(now)

    def remove_token(self) -> None:
        if self.token is not None:
            self.token.remove()

    # -- Secrets, ConfigMaps, service links -------------------------------------------------------------------
    def lookup(self, kind: str, name: str) -> dict[str, str] | None:
        """A Secret's or ConfigMap's data; None when it does not exist, ConfigError when it cannot be read."""
        plural = "secrets" if kind == "Secret" else "configmaps"
        try:
            obj = self.api.request("GET", f"/api/v1/namespaces/{self.ns}/{plural}/{name}")
        except ApiError as e:
            if e.status == 404:
                return None
            raise podspec.ConfigError(f'cannot read {kind.lower()} "{name}": {e}') from None
        return podspec.secret_data(obj) if kind == "Secret" else podspec.configmap_data(obj)

    def service_links(self, pod: dict[str, Any]) -> dict[str, str]:
        """The service variables as of now (a kubelet, too, never updates them in a running container).

        The kubelet reads Services from its informer cache: before the first sync it refuses to create containers
        of API pods (CreateContainerConfigError "services have not yet been read at least once"), after it uses
        whatever the cache holds, however stale, and never fails. Here every creation lists afresh, so a failed
        list is the stale-cache case: logged, and the container starts without links; KUBERNETES_SERVICE_HOST/PORT
        still come from the ServiceAccount variables when the pod has a token.
        """
        enabled = servicelinks.links_enabled(pod)
        services: list[dict[str, Any]] = []
        try:
            for path, query in servicelinks.requests(self.ns, enabled):
                services += self.api.request("GET", path, query=query).get("items") or []
        except ApiError as e:
            log.warning(
                "pod %s: cannot list Services for its environment variables (%s); starting without them",
                self.key,
                e.message[:300],
            )
            return {}
        return servicelinks.service_env(services, self.ns, enabled)

    def container_env(
        self, pod: dict[str, Any], ip: str, container: dict[str, Any], links: dict[str, str]
    ) -> dict[str, str]:
        """The container's variables (podspec.container_env) on top of the service links and ServiceAccount
        variables; without a pod network KUBERNETES_SERVICE_* name the apiserver's loopback address (see
        servicelinks.base_env). Raises ConfigError for a missing reference."""
        apiserver = None if self.host.network is not None else self.host.pod_api_server
        base = servicelinks.base_env(links, self.token.env() if self.token is not None else {}, apiserver)
        return podspec.container_env(with_ips(pod, ip), container, self.lookup, base=base)

    def materialize_volumes(self, pod: dict[str, Any]) -> str:
        """The pod's volumes under its directory (node/volumes.py): "" when done, else why not."""
        return volumes.materialize(pod.get("spec", {}).get("volumes") or [], self.dir / "volumes", self.lookup)


def with_ips(pod: dict[str, Any], ip: str) -> dict[str, Any]:
    """The pod as the downward API sees it: with the IPs this agent assigned (maybe not yet in the API)."""
    pod = dict(pod)
    pod["status"] = {
        **pod.get("status", {}),
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
    }
    return pod
