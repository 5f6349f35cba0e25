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
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from . import build, conformance
from .cluster import ClusterInfo, free_port

BINARY = "argocd-controllers"
CRDS = ("application-crd.yaml", "appproject-crd.yaml")  # not ApplicationSet: its controller is not run
COMPONENTS = ("redis", "repo-server", "application-controller")
CRD_TIMEOUT = 60.0
READY_TIMEOUT = 90.0  # seconds for every component to answer after its start
STOP_GRACE = 15.0
PART_OF = {"app.kubernetes.io/part-of": "argocd"}  # Argo CD's settings manager reads only labelled ConfigMaps/Secrets


class ArgoCDError(RuntimeError):
    pass


def crd_files() -> list[Path]:
    shipped = conformance.shipped(BINARY)
    return [shipped / name for name in CRDS]


class ArgoCD:
    """Installs the CRDs and settings, starts Redis, the repo server and the application controller, waits until
    each answers; stops them on exit (the objects stay: the namespace is the caller's)."""

    def __init__(self, cluster: ClusterInfo, workdir: Path, namespace: str, cm: dict[str, str] | None = None,
                 app_resync_seconds: int = 120) -> None:  # fmt: skip
        self.cluster, self.workdir, self.namespace = cluster, workdir, namespace
        self.cm = dict(cm or {})
        self.app_resync_seconds = app_resync_seconds
        self.kubectl = str((cluster.bin_dir or build.binaries().bin_dir) / "kubectl")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def logs(self, tail: int = 40) -> str:
        out = []
        for name in COMPONENTS:
            lines = self.log(name).read_text(errors="replace").splitlines() if self.log(name).is_file() else []
            out.append(f"--- {name} (last {tail} lines) ---\n" + "\n".join(lines[-tail:]))
        return "\n".join(out)

    def _kubectl(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run([self.kubectl, f"--kubeconfig={self.cluster.kubeconfig}", *args], input=stdin,
                              capture_output=True, text=True, timeout=90, check=False)  # fmt: skip
        if proc.returncode != 0:
            # stderr of kubectl names objects, never a Secret's data
            raise ArgoCDError(f"kubectl {args[0]}: {proc.stderr.strip()}")
        return proc.stdout

    def _install(self) -> None:
        files = [a for f in crd_files() for a in ("-f", str(f))]
        self._kubectl("apply", "--server-side", "--force-conflicts", *files)
        # polled rather than `kubectl wait`, which fails at once on a CRD whose status is not written yet
        deadline = time.monotonic() + CRD_TIMEOUT
        while not all(any(c["type"] == "Established" and c["status"] == "True"
                          for c in (crd.get("status") or {}).get("conditions") or [])
                      for crd in json.loads(self._kubectl("get", "-o", "json", *files))["items"]):  # fmt: skip
            if time.monotonic() > deadline:
                raise ArgoCDError(f"Argo CD's CRDs not Established after {CRD_TIMEOUT:.0f} s")
            time.sleep(0.2)
        labels = {**PART_OF}
        objects = [
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "argocd-cm", "namespace": self.namespace, "labels": labels}, "data": self.cm},
            {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
             "metadata": {"name": "argocd-secret", "namespace": self.namespace, "labels": labels},
             "stringData": {"server.secretkey": secrets.token_urlsafe(32)}},
            {"apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
             "metadata": {"name": "default", "namespace": self.namespace},
             "spec": {"sourceRepos": ["*"], "destinations": [{"server": "*", "namespace": "*"}],
                      "clusterResourceWhitelist": [{"group": "*", "kind": "*"}]}},
        ]  # fmt: skip
        self._kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                              "items": objects}))  # fmt: skip

    def _env(self) -> dict[str, str]:
        tmp = self.workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return {"PATH": "/usr/bin:/bin", "HOME": str(self.workdir), "TMPDIR": str(tmp),
                "KUBECONFIG": str(self.cluster.kubeconfig), "ARGOCD_FAKE_IN_CLUSTER": "true",
                # no GnuPG keyring (commits are not verified); the askpass socket not at the shared /tmp default
                "ARGOCD_GPG_ENABLED": "false",
                "ARGOCD_ASK_PASS_SOCK": str(self.workdir / "askpass.sock")}  # fmt: skip

    def _start(self, name: str, argv: list[str]) -> None:
        with self.log(name).open("ab") as log:
            self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self._env(),
                                                cwd=self.workdir, start_new_session=True)  # fmt: skip

    def _redis_ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.ports["redis"]), timeout=2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _http_ready(self, port: int, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _ready(self, name: str) -> bool:
        if name == "redis":
            return self._redis_ready()
        if name == "repo-server":  # ?full=true: it dials its own gRPC port and asks the gRPC health service
            return self._http_ready(self.ports["repo-server-metrics"], "/healthz?full=true")
        return self._http_ready(self.ports["controller-metrics"], "/healthz")  # served once its informers synced

    def _wait(self, name: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready(name):
            if self.procs[name].poll() is not None:
                raise ArgoCDError(f"{name} exited with {self.procs[name].returncode}\n{self.logs()}")
            if time.monotonic() > deadline:
                raise ArgoCDError(f"{name} not ready after {READY_TIMEOUT:.0f} s\n{self.logs()}")
            time.sleep(0.2)

    def __enter__(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        binary = str(conformance.build(BINARY, verbose=False))
        self._install()
        for key in ("redis", "repo-server", "repo-server-metrics", "controller-metrics"):
            self.ports[key] = free_port()
        redis = f"127.0.0.1:{self.ports['redis']}"
        try:
            self._start("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(self.ports["redis"]),
                                  "--save", "", "--appendonly", "no", "--dir", str(self.workdir)])  # fmt: skip
            self._wait("redis")
            self._start("repo-server", [binary, "repo-server", "--address", "127.0.0.1",
                                        "--port", str(self.ports["repo-server"]), "--disable-tls",
                                        "--metrics-address", "127.0.0.1",
                                        "--metrics-port", str(self.ports["repo-server-metrics"]),
                                        "--redis", redis, "--logformat", "text"])  # fmt: skip
            self._wait("repo-server")
            self._start("application-controller", [
                binary, "application-controller", "--namespace", self.namespace,
                "--repo-server", f"127.0.0.1:{self.ports['repo-server']}", "--repo-server-plaintext",
                "--redis", redis, "--metrics-port", str(self.ports["controller-metrics"]),
                # status.resources[].health in the Application (Argo CD 3 keeps it only in Redis by default)
                "--persist-resource-health", f"--app-resync={self.app_resync_seconds}",
                "--logformat", "text"])  # fmt: skip
            self._wait("application-controller")
        except BaseException:
            self._stop()
            raise
        return self

    def _stop(self) -> None:
        for name in reversed(COMPONENTS):  # the controller first, Redis last
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_GRACE)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=STOP_GRACE)

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop()
