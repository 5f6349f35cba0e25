"""Flux's source-controller and kustomize-controller, run against a local cluster.

Both are Flux's own binaries (built from their Go modules by divbase_localcluster.conformance, cached with the
other checkers) running on this machine beside kube-controller-manager, as the cluster admin, with their own CRDs
(shipped from their modules) installed. The source-controller serves its artifacts on a loopback port, which the
kustomize-controller downloads from; a Git source can be a divbase_localcluster.gitserver repository.

    with FluxControllers(cluster, workdir) as flux:
        ...  # create GitRepository and Kustomization objects; flux.logs() on failure
"""

from __future__ import annotations

from pathlib import Path

from divbase_testsupport import free_port

from . import conformance
from .cluster import ClusterInfo
from .controllers import LocalControllers, http_ok

CONTROLLERS = ("source-controller", "kustomize-controller")


class FluxError(RuntimeError):
    pass


def crd_files() -> list[Path]:
    return sorted(p for name in CONTROLLERS for p in conformance.shipped(name).glob("*.yaml"))


class FluxControllers(LocalControllers):
    """Installs Flux's CRDs, starts both controllers, waits until they are ready; stops them on exit."""

    components = CONTROLLERS
    error = FluxError

    def __init__(self, cluster: ClusterInfo, workdir: Path) -> None:
        super().__init__(cluster, workdir)
        self.health: dict[str, int] = {}

    def _args(self, name: str) -> list[str]:
        self.health[name] = free_port()
        common = [
            "--enable-leader-election=false",
            "--watch-all-namespaces=true",
            "--log-level=debug",
            f"--metrics-addr=127.0.0.1:{free_port()}",
            f"--health-addr=127.0.0.1:{self.health[name]}",
        ]
        if name == "source-controller":
            storage = free_port()
            (self.workdir / "storage").mkdir(parents=True, exist_ok=True)
            return [
                *common,
                f"--storage-path={self.workdir / 'storage'}",
                f"--storage-addr=127.0.0.1:{storage}",
                f"--storage-adv-addr=127.0.0.1:{storage}",
            ]
        return [*common, "--no-remote-bases=true"]

    def _start_all(self) -> None:
        self.install_crds(crd_files())
        env = {
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "RUNTIME_NAMESPACE": "flux-system",
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.workdir),
        }
        for name in CONTROLLERS:
            self.start(name, [str(conformance.build(name, verbose=False)), *self._args(name)], env)
        for name in CONTROLLERS:
            self.wait_ready(name, lambda name=name: http_ok(f"http://127.0.0.1:{self.health[name]}/readyz", 2))
