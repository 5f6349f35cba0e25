"""In-cluster API access for pods on the local node: the kubelet's projected ServiceAccount token, the local way.

A kubelet writes a TokenRequest token, the cluster CA and the namespace into the pod's `kube-api-access-*` volume
at /var/run/secrets/kubernetes.io/serviceaccount and clients find the API through KUBERNETES_SERVICE_HOST/PORT.
Here no path can be mounted, so the same three files go to `<pod dir>/serviceaccount/` together with a kubeconfig
(`tokenFile` + CA + the pod's namespace) that KUBECONFIG points at. In-cluster loaders (the kubernetes client,
Kopf) fail on the missing /var/run/secrets/... file and fall back to KUBECONFIG; client-go re-reads `tokenFile`.

The token is requested with the node's own credentials (the Node authorizer allows `serviceaccounts/token` for
pods bound to the node, NodeRestriction checks the pod binding and audiences) and refreshed at 80 % of its
requested lifetime, as the kubelet does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import yaml

from . import servicelinks
from .api import Api, ApiError

log = logging.getLogger(__name__)

# What the ServiceAccount admission plugin puts into kube-api-access-*: the apiserver answers this exact value with
# a token valid for a year that only *warns* after an hour, so clients that never re-read the token keep working.
DEFAULT_EXPIRATION = 3607
REFRESH_FRACTION = 0.8
RETRY_SECONDS = 10.0


def token_source(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The projected `serviceAccountToken` source for the API (no audience) that admission added, if any."""
    for vol in pod.get("spec", {}).get("volumes") or []:
        for src in (vol.get("projected") or {}).get("sources") or []:
            sat = src.get("serviceAccountToken")
            if sat is not None and not sat.get("audience"):
                return sat
    return None


def wants_token(pod: dict[str, Any], service_account: dict[str, Any] | None) -> bool:
    """automountServiceAccountToken: the pod's own value wins, then its ServiceAccount's; unset means true.

    `service_account` is None when it could not be read: then admission's verdict counts, i.e. whether it added
    the token source (it does so exactly when neither the pod nor the ServiceAccount said false).
    """
    own = pod.get("spec", {}).get("automountServiceAccountToken")
    if own is not None:
        return bool(own)
    if service_account is None:
        return token_source(pod) is not None
    return service_account.get("automountServiceAccountToken") is not False


def _write(path: Path, data: str, mode: int) -> None:
    """Atomically (write + rename), so a client re-reading the token never sees half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class ServiceAccountToken:
    """The token files of one pod: `setup()` once before its containers start, `maybe_refresh()` every tick."""

    def __init__(self, api: Api, pod: dict[str, Any], directory: Path, server: str | None = None) -> None:
        self.api = api
        self.server = server or api.server  # what the pod's clients dial (the `kubernetes` Service, or loopback)
        meta, spec = pod["metadata"], pod.get("spec", {})
        self.ns, self.pod_name, self.pod_uid = meta["namespace"], meta["name"], meta["uid"]
        self.sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        source = token_source(pod) or {}
        self.expiration = int(source.get("expirationSeconds") or DEFAULT_EXPIRATION)
        self.dir = directory
        self.refresh_at = 0.0  # monotonic; 0: no token yet

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def token_file(self) -> Path:
        return self.dir / "token"

    def env(self) -> dict[str, str]:
        """What every container gets (its own env wins): the kubeconfig and the kubelet's service variables."""
        return {"KUBECONFIG": str(self.kubeconfig), **servicelinks.apiserver_vars(self.server)}

    def setup(self) -> None:
        """Write ca.crt, namespace and kubeconfig, then the first token. Raises ApiError when it is refused."""
        self.dir.mkdir(parents=True, exist_ok=True)
        _write(self.dir / "ca.crt", Path(self.api.ca_file).read_text(), 0o644)
        _write(self.dir / "namespace", self.ns, 0o644)
        self.refresh()
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [
                {"name": "local", "cluster": {"server": self.server, "certificate-authority": str(self.dir / "ca.crt")}}
            ],
            "users": [{"name": self.sa, "user": {"tokenFile": str(self.token_file)}}],
            "contexts": [
                {"name": "in-cluster", "context": {"cluster": "local", "user": self.sa, "namespace": self.ns}}
            ],
            "current-context": "in-cluster",
        }
        _write(self.kubeconfig, yaml.safe_dump(doc, sort_keys=False), 0o600)

    def refresh(self) -> None:
        """A new token bound to the pod (it dies with the pod); the next refresh is due at 80 % of its lifetime."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": self.expiration,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.pod_name, "uid": self.pod_uid},
            },
        }
        issued = time.monotonic()
        answer = self.api.retrying(
            "POST", f"/api/v1/namespaces/{self.ns}/serviceaccounts/{self.sa}/token", body, attempts=3
        )
        _write(self.token_file, answer["status"]["token"], 0o600)
        self.refresh_at = issued + REFRESH_FRACTION * self.expiration

    def resume(self) -> None:
        """Take over the files a previous (SIGKILLed) agent wrote: the next refresh is due at 80 % of the lifetime
        counted from when the token file was written; at once when it is missing."""
        try:
            age = time.time() - self.token_file.stat().st_mtime
        except OSError:
            age = float(self.expiration)
        self.refresh_at = max(1e-3, time.monotonic() - age + REFRESH_FRACTION * self.expiration)

    def maybe_refresh(self, now: float | None = None) -> None:
        """Refresh when due; a failure is logged and retried later (the old token stays valid until it expires)."""
        now = time.monotonic() if now is None else now
        if not self.refresh_at or now < self.refresh_at:
            return
        try:
            self.refresh()
            log.info("pod %s/%s: refreshed its ServiceAccount token", self.ns, self.pod_name)
        except ApiError as e:
            log.warning(
                "pod %s/%s: token refresh failed (retrying in %.0fs): %s",
                self.ns,
                self.pod_name,
                RETRY_SECONDS,
                e.message[:300],
            )
            self.refresh_at = now + RETRY_SECONDS

    def remove(self) -> None:
        """The pod is done: its token goes, as the kubelet tears down the pod's volumes."""
        self.refresh_at = 0.0
        with contextlib.suppress(FileNotFoundError):
            self.token_file.unlink()
