"""Flux's source-controller and kustomize-controller, run against a local cluster.

Both are Flux's own binaries (built from their Go modules by divbase_localcluster.conformance, cached with the
other checkers) running on this machine beside kube-controller-manager, as the cluster admin, with their own CRDs
(shipped from their modules) installed. The source-controller serves its artifacts on a loopback port, which the
kustomize-controller downloads from; a Git source can be a divbase_localcluster.gitserver repository.

    with FluxControllers(cluster, workdir) as flux:
        ...  # create GitRepository and Kustomization objects; flux.logs() on failure
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from . import build, conformance
from .cluster import ClusterInfo, free_port

CONTROLLERS = ("source-controller", "kustomize-controller")
READY_TIMEOUT = 90.0  # seconds for a controller's /readyz (caches synced) after its start
STOP_GRACE = 15.0


class FluxError(RuntimeError):
    pass


def crd_files() -> list[Path]:
    return sorted(p for name in CONTROLLERS for p in conformance.shipped(name).glob("*.yaml"))


class FluxControllers:
    """Installs Flux's CRDs, starts both controllers, waits until they are ready; stops them on exit."""

    def __init__(self, cluster: ClusterInfo, workdir: Path) -> None:
        self.cluster, self.workdir = cluster, workdir
        self.kubectl = str((cluster.bin_dir or build.binaries().bin_dir) / "kubectl")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.health: dict[str, int] = {}

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def logs(self, tail: int = 40) -> str:
        out = []
        for name in CONTROLLERS:
            lines = self.log(name).read_text(errors="replace").splitlines() if self.log(name).is_file() else []
            out.append(f"--- {name} (last {tail} lines) ---\n" + "\n".join(lines[-tail:]))
        return "\n".join(out)

    def _install_crds(self) -> None:
        files = crd_files()
        args = [a for f in files for a in ("-f", str(f))]
        for cmd in (["apply", "--server-side", "--force-conflicts", *args],
                    ["wait", "--for=condition=Established", "--timeout=60s", *args]):  # fmt: skip
            proc = subprocess.run([self.kubectl, f"--kubeconfig={self.cluster.kubeconfig}", *cmd],
                                  capture_output=True, text=True, timeout=90, check=False)  # fmt: skip
            if proc.returncode != 0:
                raise FluxError(f"kubectl {cmd[0]} of Flux's CRDs: {proc.stderr.strip()}")

    def _args(self, name: str) -> list[str]:
        self.health[name] = free_port()
        common = ["--enable-leader-election=false", "--watch-all-namespaces=true", "--log-level=debug",
                  f"--metrics-addr=127.0.0.1:{free_port()}",
                  f"--health-addr=127.0.0.1:{self.health[name]}"]  # fmt: skip
        if name == "source-controller":
            storage = free_port()
            (self.workdir / "storage").mkdir(parents=True, exist_ok=True)
            return [*common, f"--storage-path={self.workdir / 'storage'}", f"--storage-addr=127.0.0.1:{storage}",
                    f"--storage-adv-addr=127.0.0.1:{storage}"]  # fmt: skip
        return [*common, "--no-remote-bases=true"]

    def _ready(self, name: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health[name]}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def __enter__(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._install_crds()
        env = {"KUBECONFIG": str(self.cluster.kubeconfig), "RUNTIME_NAMESPACE": "flux-system",
               "PATH": "/usr/bin:/bin", "HOME": str(self.workdir)}  # fmt: skip
        try:
            for name in CONTROLLERS:
                binary = conformance.build(name, verbose=False)
                with self.log(name).open("ab") as log:
                    self.procs[name] = subprocess.Popen([str(binary), *self._args(name)], stdout=log,
                                                        stderr=subprocess.STDOUT, env=env,
                                                        start_new_session=True)  # fmt: skip
            deadline = time.monotonic() + READY_TIMEOUT
            for name in CONTROLLERS:
                while not self._ready(name):
                    if self.procs[name].poll() is not None:
                        raise FluxError(f"{name} exited with {self.procs[name].returncode}\n{self.logs()}")
                    if time.monotonic() > deadline:
                        raise FluxError(f"{name} not ready after {READY_TIMEOUT:.0f} s\n{self.logs()}")
                    time.sleep(0.2)
        except BaseException:
            self._stop()
            raise
        return self

    def _stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_GRACE)

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop()
