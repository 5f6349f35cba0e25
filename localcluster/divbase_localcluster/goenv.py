"""The Go toolchain as this package uses it: where the Go module is, the environment `go` runs with, a logged run.

Shared by build.py (compiles the control plane and tools), kwok.py (fetches kwok's stages from its module source)
and conformance.py, so none of them needs another's private helpers (build and kwok used to import each other).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


class BuildError(RuntimeError):
    """The binaries could not be built; the message carries the failing command and its output tail."""


def go_source_dir() -> Path:
    """The Go module (localcluster/) sits next to this package in the source tree."""
    src = Path(__file__).resolve().parent.parent
    if not (src / "go.mod").is_file():
        raise BuildError(f"Go sources of the local control plane not found at {src} (need an editable install)")
    return src


def go_env(gobin: Path | None = None) -> dict[str, str]:
    """This process's environment for `go`: no VCS stamping (the module sits inside the project's git tree), the
    local toolchain, and `GOBIN` when given (where `go install` puts a tool)."""
    env = dict(os.environ)
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -buildvcs=false").strip()
    env.setdefault("GOTOOLCHAIN", "local")
    if gobin is not None:
        env["GOBIN"] = str(gobin)
    return env


def run_logged(cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> float:
    """Run `cmd` with its output appended to `log`; its duration in seconds, or BuildError with the log's tail."""
    start = time.monotonic()
    with log.open("ab") as f:
        f.write(f"$ {' '.join(cmd)}\n".encode())
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd, check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise BuildError(f"{' '.join(cmd)} exited {proc.returncode}; log {log}:\n{tail}")
    return round(time.monotonic() - start, 1)
