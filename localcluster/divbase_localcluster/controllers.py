"""Other projects' controllers run as local processes against a local cluster (Flux's, Argo CD's): the plumbing
they share. Their CRDs are applied server-side and polled until Established; each process gets its own log file
in the work directory and its own session, is awaited with a bounded readiness check, and is stopped (SIGTERM,
then SIGKILL after a grace) in the reverse order of its start."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from . import build
from .cluster import ClusterInfo

CRD_TIMEOUT = 60.0
READY_TIMEOUT = 90.0  # seconds for a process to answer its readiness check after its start
STOP_GRACE = 15.0


def http_ok(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class LocalControllers:
    """Subclasses name their `components` (in start order) and their `error`, and start them in `_start_all`."""

    components: tuple[str, ...] = ()
    error: type[RuntimeError] = RuntimeError

    def __init__(self, cluster: ClusterInfo, workdir: Path) -> None:
        self.cluster, self.workdir = cluster, workdir
        self.kubectl = str((cluster.bin_dir or build.binaries().bin_dir) / "kubectl")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def logs(self, tail: int = 40) -> str:
        out = []
        for name in self.components:
            lines = self.log(name).read_text(errors="replace").splitlines() if self.log(name).is_file() else []
            out.append(f"--- {name} (last {tail} lines) ---\n" + "\n".join(lines[-tail:]))
        return "\n".join(out)

    def run_kubectl(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(
            [self.kubectl, f"--kubeconfig={self.cluster.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        if proc.returncode != 0:
            # kubectl's stderr names objects, never a Secret's data
            raise self.error(f"kubectl {args[0]}: {proc.stderr.strip()}")
        return proc.stdout

    def install_crds(self, files: list[Path]) -> None:
        """Polled rather than `kubectl wait --for=condition=Established`, which fails at once on a CRD whose status
        the apiserver has not written yet (`.status.conditions accessor error: <nil>`)."""
        args = [a for f in files for a in ("-f", str(f))]
        self.run_kubectl("apply", "--server-side", "--force-conflicts", *args)
        deadline = time.monotonic() + CRD_TIMEOUT
        while not all(
            any(
                c["type"] == "Established" and c["status"] == "True"
                for c in (crd.get("status") or {}).get("conditions") or []
            )
            for crd in json.loads(self.run_kubectl("get", "-o", "json", *args))["items"]
        ):
            if time.monotonic() > deadline:
                raise self.error(f"CRDs not Established after {CRD_TIMEOUT:.0f} s: {', '.join(f.name for f in files)}")
            time.sleep(0.2)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with self.log(name).open("ab") as log:
            self.procs[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir, start_new_session=True
            )

    def wait_ready(self, name: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready():
            if self.procs[name].poll() is not None:
                raise self.error(f"{name} exited with {self.procs[name].returncode}\n{self.logs()}")
            if time.monotonic() > deadline:
                raise self.error(f"{name} not ready after {READY_TIMEOUT:.0f} s\n{self.logs()}")
            time.sleep(0.2)

    def _start_all(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        for name in reversed(self.components):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_GRACE)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=STOP_GRACE)

    def __enter__(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_all()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
