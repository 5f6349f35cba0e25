"""Service links: the `<NAME>_SERVICE_HOST`/`_PORT` and Docker-link variables a kubelet puts into every container.

The rules of the kubelet's getServiceEnvVarMap and envvars.FromServices, kept free of I/O so they are easy to
read and test: which Services a pod sees (its namespace's unless `enableServiceLinks: false`, and always the
`kubernetes` Service of `default`), which are skipped (no ClusterIP, headless) and the variables each one gives.
The pod's own `env`/`envFrom` win over all of these (podspec.container_env takes them as its `base`).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

MASTER_NAMESPACE = "default"
MASTER_SERVICE = "kubernetes"  # the kubelet's masterServices: added even with enableServiceLinks false
SERVICE_HOST = "KUBERNETES_SERVICE_HOST"


def links_enabled(pod: dict[str, Any]) -> bool:
    """`spec.enableServiceLinks`; the apiserver defaults it to true, so only an explicit false turns links off."""
    return pod.get("spec", {}).get("enableServiceLinks") is not False


def requests(namespace: str, enabled: bool) -> list[tuple[str, dict[str, str]]]:
    """The GETs (path, query) that fetch every Service a pod of `namespace` may see: one or two lists, instead of
    the kubelet's cluster-wide informer cache."""
    master = (f"/api/v1/namespaces/{MASTER_NAMESPACE}/services", {"fieldSelector": f"metadata.name={MASTER_SERVICE}"})
    if not enabled:
        return [master]
    own = (f"/api/v1/namespaces/{namespace}/services", {})
    return [own] if namespace == MASTER_NAMESPACE else [master, own]


def env_name(name: str) -> str:
    """A Service or port name as a variable name part (Service names are DNS-1035 labels: no dots or digit first)."""
    return name.replace("-", "_").upper()


def has_cluster_ip(service: dict[str, Any]) -> bool:
    """Headless (`None`) and ExternalName (empty) Services have no address to link to."""
    return service.get("spec", {}).get("clusterIP") not in (None, "", "None")


def visible(services: list[dict[str, Any]], namespace: str, enabled: bool) -> list[dict[str, Any]]:
    """The Services a pod of `namespace` gets links for, by name: a Service of its own namespace wins over the
    `kubernetes` Service of `default` with the same name (as in the kubelet, whatever the listing order)."""
    chosen: dict[str, dict[str, Any]] = {}
    for svc in services:
        if not has_cluster_ip(svc):
            continue
        meta = svc.get("metadata", {})
        name, ns = meta.get("name", ""), meta.get("namespace", "")
        if enabled and ns == namespace:
            chosen[name] = svc
        elif ns == MASTER_NAMESPACE and name == MASTER_SERVICE:
            chosen.setdefault(name, svc)
    return [chosen[name] for name in sorted(chosen)]


def _port_vars(prefix: str, ip: str, port: dict[str, Any], first: bool) -> dict[str, str]:
    """Docker's link variables of one port (`<NAME>_PORT` for the first port only)."""
    proto = str(port.get("protocol") or "TCP")
    url = f"{proto.lower()}://{ip}:{port['port']}"
    at = f"{prefix}_PORT_{port['port']}_{proto.upper()}"
    out = {f"{prefix}_PORT": url} if first else {}
    return {**out, at: url, f"{at}_PROTO": proto.lower(), f"{at}_PORT": str(port["port"]), f"{at}_ADDR": ip}


def service_vars(service: dict[str, Any]) -> dict[str, str]:
    """One Service's variables: host, first port, each named port, then the Docker-link variables of every port."""
    spec = service.get("spec", {})
    ports = spec.get("ports") or []
    if not has_cluster_ip(service) or not ports:  # validation requires a port; the kubelet would index ports[0]
        return {}
    prefix, ip = env_name(service["metadata"]["name"]), str(spec["clusterIP"])
    out = {f"{prefix}_SERVICE_HOST": ip, f"{prefix}_SERVICE_PORT": str(ports[0]["port"])}
    out.update({f"{prefix}_SERVICE_PORT_{env_name(p['name'])}": str(p["port"]) for p in ports if p.get("name")})
    for i, port in enumerate(ports):
        out.update(_port_vars(prefix, ip, port, first=i == 0))
    return out


def service_env(services: list[dict[str, Any]], namespace: str, enabled: bool) -> dict[str, str]:
    """All service-link variables for a pod of `namespace` from a listing of Services (any namespaces)."""
    out: dict[str, str] = {}
    for svc in visible(services, namespace, enabled):
        out.update(service_vars(svc))
    return out


def apiserver_vars(server: str) -> dict[str, str]:
    """KUBERNETES_SERVICE_HOST/PORT/PORT_HTTPS for an apiserver URL: what in-cluster clients dial."""
    url = urllib.parse.urlsplit(server)
    port = str(url.port or 443)
    return {
        SERVICE_HOST: url.hostname or "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
    }


def base_env(links: dict[str, str], account: dict[str, str], apiserver: str | None) -> dict[str, str]:
    """What a container starts from before its own env: the service links, then the ServiceAccount's variables.

    `apiserver` (no pod network): the `kubernetes` Service's ClusterIP routes nowhere, so its HOST/PORT variables
    point at the apiserver as ServiceAccountToken.env() does, also for pods without a token. With a pod network
    both sources say 10.96.0.1:443.
    """
    if apiserver is not None and SERVICE_HOST in links:
        links = {**links, **apiserver_vars(apiserver)}
    return {**links, **account}
