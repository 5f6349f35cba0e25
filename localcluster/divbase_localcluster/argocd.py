"""Argo CD's application controller and repo server, with a Redis, run against a local cluster.

Both are Argo CD's own code (v3.2, one binary built from its Go module by divbase_localcluster.conformance, cached
with the other checkers) running on this machine beside kube-controller-manager, as the cluster admin; Redis is
Debian's `redis-server`. Everything listens on loopback only (the controller's metrics server excepted, which
Argo CD binds to all addresses): Redis without persistence, the repo server's gRPC in plaintext (as
`--disable-tls` / `--repo-server-plaintext` configure it), the controller's metrics and /healthz. The API server,
UI, Dex, ApplicationSet and notification controllers are not run: Applications are plain objects the test writes.

Setup, as an Argo CD install would have it in its namespace: the Application and AppProject CRDs (shipped from
the Argo CD module), `argocd-cm` (with the caller's keys, e.g. a resource health customization), `argocd-secret`
(a random `server.secretkey`, never logged), and the `default` AppProject that Argo CD's API server creates on
first start.

The destination `https://kubernetes.default.svc` ("in-cluster") is the cluster the controller runs in; Argo CD
builds its client with rest.InClusterConfig(), which a process outside a pod does not have. The controller runs
with Argo CD's own switch for that, ARGOCD_FAKE_IN_CLUSTER=true (what `argocd admin app get-reconcile-results` and
the CLI's core mode set): "in-cluster" is then the cluster of $KUBECONFIG, the local cluster's admin kubeconfig.

    with ArgoCD(cluster, workdir, namespace, cm={...}) as argocd:
        ...  # create Applications in `namespace`; argocd.logs() on failure
"""

from __future__ import annotations

import json
import secrets
import socket
from pathlib import Path

from divbase_testsupport import free_port

from . import conformance
from .cluster import ClusterInfo
from .controllers import LocalControllers, http_ok

BINARY = "argocd-controllers"
CRDS = ("application-crd.yaml", "appproject-crd.yaml")  # not ApplicationSet: its controller is not run
COMPONENTS = ("redis", "repo-server", "application-controller")
PART_OF = {"app.kubernetes.io/part-of": "argocd"}  # Argo CD's settings manager reads only labelled ConfigMaps/Secrets


class ArgoCDError(RuntimeError):
    pass


def crd_files() -> list[Path]:
    shipped = conformance.shipped(BINARY)
    return [shipped / name for name in CRDS]


class ArgoCD(LocalControllers):
    """Installs the CRDs and settings, starts Redis, the repo server and the application controller, waits until
    each answers; stops them on exit (the objects stay: the namespace is the caller's)."""

    components = COMPONENTS
    error = ArgoCDError

    def __init__(
        self,
        cluster: ClusterInfo,
        workdir: Path,
        namespace: str,
        cm: dict[str, str] | None = None,
        app_resync_seconds: int = 120,
    ) -> None:
        super().__init__(cluster, workdir)
        self.namespace = namespace
        self.cm = dict(cm or {})
        self.app_resync_seconds = app_resync_seconds
        self.ports: dict[str, int] = {}

    def _install(self) -> None:
        self.install_crds(crd_files())
        labels = {**PART_OF}
        objects = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "argocd-cm", "namespace": self.namespace, "labels": labels},
                "data": self.cm,
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": "argocd-secret", "namespace": self.namespace, "labels": labels},
                "stringData": {"server.secretkey": secrets.token_urlsafe(32)},
            },
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "AppProject",
                "metadata": {"name": "default", "namespace": self.namespace},
                "spec": {
                    "sourceRepos": ["*"],
                    "destinations": [{"server": "*", "namespace": "*"}],
                    "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
                },
            },
        ]
        self.run_kubectl(
            "apply",
            "--server-side",
            "-f",
            "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
        )

    def _env(self) -> dict[str, str]:
        tmp = self.workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.workdir),
            "TMPDIR": str(tmp),
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "ARGOCD_FAKE_IN_CLUSTER": "true",
            # no GnuPG keyring (commits are not verified); the askpass socket not at the shared /tmp default
            "ARGOCD_GPG_ENABLED": "false",
            "ARGOCD_ASK_PASS_SOCK": str(self.workdir / "askpass.sock"),
        }

    def _redis_ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.ports["redis"]), timeout=2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _start_all(self) -> None:
        binary = str(conformance.build(BINARY, verbose=False))
        self._install()
        for key in ("redis", "repo-server", "repo-server-metrics", "controller-metrics"):
            self.ports[key] = free_port()
        redis = f"127.0.0.1:{self.ports['redis']}"
        env = self._env()
        self.start(
            "redis",
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.ports["redis"]),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            env,
        )
        self.wait_ready("redis", self._redis_ready)
        self.start(
            "repo-server",
            [
                binary,
                "repo-server",
                "--address",
                "127.0.0.1",
                "--port",
                str(self.ports["repo-server"]),
                "--disable-tls",
                "--metrics-address",
                "127.0.0.1",
                "--metrics-port",
                str(self.ports["repo-server-metrics"]),
                "--redis",
                redis,
                "--logformat",
                "text",
            ],
            env,
        )
        # ?full=true: it dials its own gRPC port and asks the gRPC health service
        self.wait_ready(
            "repo-server", lambda: http_ok(f"http://127.0.0.1:{self.ports['repo-server-metrics']}/healthz?full=true")
        )
        self.start(
            "application-controller",
            [
                binary,
                "application-controller",
                "--namespace",
                self.namespace,
                "--repo-server",
                f"127.0.0.1:{self.ports['repo-server']}",
                "--repo-server-plaintext",
                "--redis",
                redis,
                "--metrics-port",
                str(self.ports["controller-metrics"]),
                # status.resources[].health in the Application (Argo CD 3 keeps it only in Redis by default)
                "--persist-resource-health",
                f"--app-resync={self.app_resync_seconds}",
                "--logformat",
                "text",
            ],
            env,
        )
        # /healthz is served once its informers synced
        self.wait_ready(
            "application-controller", lambda: http_ok(f"http://127.0.0.1:{self.ports['controller-metrics']}/healthz")
        )
