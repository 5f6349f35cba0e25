"""Build (or find in the cache) the binaries of the local control plane.

The Kubernetes components are linked from their Go modules into one multicall binary (localcluster/main.go) with
symlinks named after each component; helm and kwok are `go install`ed at pinned versions next to it. Everything
lives under one cache directory keyed by the Kubernetes version and a hash of the Go sources and tool versions, so a
warm run only checks that the files exist, and changing go.mod/main.go or a pinned version builds a fresh directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import kwok
from .goenv import BuildError, go_env, go_source_dir, run_logged

__all__ = ["BuildError", "go_source_dir"]  # re-exported: callers know them as build.BuildError, build.go_source_dir

K8S_VERSION = "v1.36.3"
HELM_VERSION = "v3.22.0"
KWOK_VERSION = "v0.8.0"

MULTICALL = "localcluster"
K8S_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "etcd", "kubectl")
TOOLS = {"helm": f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}", "kwok": f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"}
# stamp helm's real version (its Makefile does this; plain `go install` would report only "v3.22")
TOOL_LDFLAGS = {"helm": f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"}
GO_SOURCES = ("go.mod", "go.sum", "main.go")
KWOK_STAGES = kwok.STAGES_NAME  # kwok's default stages, copied from its module source


def cache_root() -> Path:
    """`$DIVBASE_CACHE_DIR` (default ~/.cache/divbase): one place for binaries, clusters and timings."""
    return Path(os.environ.get("DIVBASE_CACHE_DIR") or Path.home() / ".cache" / "divbase")


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of the built executables (symlinks into the multicall binary for Kubernetes ones)."""

    bin_dir: Path

    def __getitem__(self, name: str) -> Path:
        return self.bin_dir / name

    @property
    def all_names(self) -> tuple[str, ...]:
        return (MULTICALL, *K8S_COMPONENTS, *TOOLS)

    def missing(self) -> list[str]:
        missing = [n for n in self.all_names if not os.access(self.bin_dir / n, os.X_OK)]
        if not (self.bin_dir.parent / KWOK_STAGES).is_file():
            missing.append(KWOK_STAGES)
        return missing


def cache_key() -> str:
    """`<k8s-version>-<12 hex of sha256(go.mod, go.sum, main.go, pinned tool versions and their ldflags)>`."""
    h = hashlib.sha256()
    src = go_source_dir()
    for name in GO_SOURCES:
        h.update(name.encode() + b"\0" + (src / name).read_bytes() + b"\0")
    h.update(json.dumps([TOOLS, TOOL_LDFLAGS], sort_keys=True).encode())
    return f"{K8S_VERSION}-{h.hexdigest()[:12]}"


def build_dir() -> Path:
    return cache_root() / "localcluster" / cache_key()


def binaries() -> Binaries:
    """Where the binaries are (or will be) for the current sources; does not build."""
    return Binaries(build_dir() / "bin")


def _version_ldflags() -> str:
    """Stamp the real release into component-base/client-go, as upstream's hack/lib/version.sh does."""
    major, minor = K8S_VERSION.lstrip("v").split(".")[:2]
    build_date = "1970-01-01T00:00:00Z"
    info = _go_json(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{K8S_VERSION}"]).get("Info")
    if info and Path(info).is_file():
        # the release's publication time: deterministic, so rebuilding gives the same binary
        build_date = json.loads(Path(info).read_text()).get("Time", build_date)
    values = {
        "gitVersion": K8S_VERSION,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": build_date,
    }
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X '{pkg}.{k}={v}'" for k, v in values.items()]
    return " ".join(flags)


def _go_json(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=go_source_dir(), env=go_env(), check=False)
    if out.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout)


def build(force: bool = False, verbose: bool = True) -> Binaries:
    """Return the cached binaries, building whatever is missing (a no-op when the cache is warm).

    A file lock serialises concurrent builds (e.g. two pytest sessions); the multicall binary is linked into a
    temporary name and renamed, so an interrupted build never leaves a half-written executable in the cache.
    """
    if shutil.which("go") is None:
        raise BuildError("the `go` toolchain is not on PATH; it is needed once to build the local control plane")
    out = build_dir()
    bins = Binaries(out / "bin")
    if not force and not bins.missing():
        return bins
    out.mkdir(parents=True, exist_ok=True)
    bins.bin_dir.mkdir(exist_ok=True)
    with (out / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and not bins.missing():
            return bins
        total = time.monotonic()
        timings = _build_missing(bins, out / "build.log", force, verbose)
        if force or KWOK_STAGES in bins.missing():
            kwok.write_stages(out / KWOK_STAGES, KWOK_VERSION)
        timings["total"] = round(time.monotonic() - total, 1)
        record_timing("build", timings, out)
        if bins.missing():
            raise BuildError(f"build finished but {bins.missing()} are missing in {bins.bin_dir}")
        if verbose:
            print(f"built in {timings['total']} s: {timings}", file=sys.stderr)
        return bins


def _build_missing(bins: Binaries, log: Path, force: bool, verbose: bool) -> dict[str, float]:
    """Build the multicall binary and the tools that are missing (all with `force`), link the components to it;
    seconds each build took."""
    src = go_source_dir()
    timings: dict[str, float] = {}
    if force or MULTICALL in bins.missing():
        if verbose:
            print(f"building Kubernetes {K8S_VERSION} components into {bins.bin_dir} (log {log})", file=sys.stderr)
        tmp = bins.bin_dir / f".{MULTICALL}.tmp"
        cmd = ["go", "build", "-trimpath", f"-ldflags={_version_ldflags()}", "-o", str(tmp), "."]
        timings[MULTICALL] = run_logged(cmd, log, go_env(), src)
        tmp.replace(bins[MULTICALL])
    for name in K8S_COMPONENTS:
        link = bins[name]
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(MULTICALL)
    for name, pkg in TOOLS.items():
        if force or name in bins.missing():
            if verbose:
                print(f"building {pkg}", file=sys.stderr)
            timings[name] = _install_tool(name, pkg, bins, log, src)
    return timings


def _install_tool(name: str, pkg: str, bins: Binaries, log: Path, src: Path) -> float:
    """`go install` one pinned tool into a private GOBIN, then move it into the bin directory."""
    gobin = bins.bin_dir.parent / f".gobin-{name}"
    cmd = ["go", "install", "-trimpath", f"-ldflags=-s -w {TOOL_LDFLAGS.get(name, '')}".strip(), pkg]
    seconds = run_logged(cmd, log, go_env(gobin), src)
    (gobin / name).replace(bins[name])
    shutil.rmtree(gobin, ignore_errors=True)
    return seconds


def record_timing(kind: str, values: dict[str, float], where: Path | None = None) -> None:
    """Keep the last measured timings in `<cache>/localcluster/timings.json` (and per build directory)."""
    entry = {
        "k8s_version": K8S_VERSION,
        "cache_key": cache_key(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": values,
    }
    targets = [cache_root() / "localcluster" / "timings.json"]
    if where is not None:
        targets.append(where / "timings.json")
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        data[kind] = entry
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)
