"""Build (or find in the cache) the ecosystem's own checkers, linked from their Go modules.

- `argocd-health` (gitops/conformance/argocd): Argo CD's application-controller health path - argocd-cm parsed by
  Argo CD's SettingsManager, gitops-engine's health.GetResourceHealth with util/lua's overrides - over JSON lines.
- `argocd-controllers` (the same module, cmd/argocd-controllers): Argo CD's own application controller and repo
  server in one binary, run against the local control plane by divbase_localcluster.argocd
  (tests/cluster/test_argocd_e2e.py).
- `kstatus` (gitops/conformance/kstatus): status.Compute of sigs.k8s.io/cli-utils and of Flux's fork, and Flux's
  CEL status reader for a Kustomization's healthCheckExprs.
- `kube-score` (gitops/conformance/kubescore): zegl/kube-score's own command, built from its module as a Go tool
  (`tool` in go.mod), which scores the charts (tests/unit/test_kube_score.py).
- `source-controller`, `kustomize-controller` (gitops/conformance/flux): Flux's own controllers, tools of one
  module, run against the local control plane by divbase_localcluster.flux (tests/cluster/test_flux_e2e.py).

Each directory is its own Go module (Argo CD pins other Kubernetes versions than the local control plane). Binaries
live under `$DIVBASE_CACHE_DIR/conformance/<name>-<12 hex of sha256(go.mod, go.sum, *.go, cmd/*/*.go)>/`, next to
the local control plane's cache, so a warm run only checks that the file exists and a change of the sources builds
a fresh one.

    python -m divbase_localcluster.conformance [--force] [NAME...]
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .build import cache_root
from .goenv import BuildError, go_env, run_logged

# binary -> its module's directory under gitops/conformance/
CHECKERS = {
    "argocd-health": "argocd",
    "argocd-controllers": "argocd",
    "kstatus": "kstatus",
    "kube-score": "kubescore",
    "source-controller": "flux",
    "kustomize-controller": "flux",
}
# what `go build` builds in that directory: the module's own main package, or a tool its go.mod names
PACKAGES = {
    "argocd-controllers": "./cmd/argocd-controllers",
    "kube-score": "github.com/zegl/kube-score/cmd/kube-score",
    "source-controller": "github.com/fluxcd/source-controller",
    "kustomize-controller": "github.com/fluxcd/kustomize-controller",
}
# files a binary needs beside it, copied from its module at build time (so a run needs no module cache): the
# controllers' own CRDs, installed by divbase_localcluster.flux and divbase_localcluster.argocd
SHIPPED = {
    "argocd-controllers": ("github.com/argoproj/argo-cd/v3", "manifests/crds"),
    "source-controller": ("github.com/fluxcd/source-controller", "config/crd/bases"),
    "kustomize-controller": ("github.com/fluxcd/kustomize-controller", "config/crd/bases"),
}


def source_dir(name: str) -> Path:
    """gitops/conformance/<dir> of the source tree (this package is installed editable from localcluster/)."""
    src = Path(__file__).resolve().parents[2] / "gitops" / "conformance" / CHECKERS[name]
    if not (src / "go.mod").is_file():
        raise BuildError(f"Go sources of {name} not found at {src} (need an editable install)")
    return src


def cache_key(name: str) -> str:
    h = hashlib.sha256()
    src = source_dir(name)
    for path in sorted([src / "go.mod", src / "go.sum", *src.glob("*.go"), *src.glob("cmd/*/*.go")]):
        h.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{name}-{h.hexdigest()[:12]}"


def binary(name: str) -> Path:
    """Where the binary is (or will be) for the current sources; does not build."""
    return cache_root() / "conformance" / cache_key(name) / name


def build(name: str, force: bool = False, verbose: bool = True) -> Path:
    """Return the cached binary, building it when missing (a file lock serialises concurrent builds; the binary is
    linked under a temporary name and renamed, so an interrupted build leaves no half-written executable)."""
    out = binary(name)
    if not force and out.is_file():
        return out
    if shutil.which("go") is None:
        raise BuildError(f"the `go` toolchain is not on PATH; it is needed once to build {name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with (out.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and out.is_file():
            return out
        log = out.parent / "build.log"
        if verbose:
            print(f"building {name} from {source_dir(name)} into {out} (log {log})", file=sys.stderr)
        env = go_env()
        # the module's go.sum is committed; -mod=mod lets a fresh machine fill the module cache through the proxy
        env["GOFLAGS"] = (env["GOFLAGS"] + " -mod=mod").strip()
        tmp = out.with_name(f".{name}.tmp")
        seconds = run_logged(
            ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(tmp), PACKAGES.get(name, ".")],
            log,
            env,
            source_dir(name),
        )
        if name in SHIPPED:
            _ship(name, out.parent / "shipped", env)
        tmp.replace(out)
        timings = out.parent / "timings.json"
        timings.write_text(
            json.dumps({"build_seconds": seconds, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n"
        )
        if verbose:
            print(f"built {name} in {seconds} s", file=sys.stderr)
        return out


def shipped(name: str) -> Path:
    """The directory of files shipped with a built binary (SHIPPED); builds (or ships) what is missing."""
    dest = build(name, verbose=False).parent / "shipped"
    if not dest.is_dir():
        with (dest.parent / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not dest.is_dir():
                env = go_env()
                env["GOFLAGS"] = (env["GOFLAGS"] + " -mod=mod").strip()
                _ship(name, dest, env)
    return dest


def _ship(name: str, dest: Path, env: dict[str, str]) -> None:
    module, subdir = SHIPPED[name]
    proc = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Dir}}", module],
        cwd=source_dir(name),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    src = Path(proc.stdout.strip()) / subdir
    if proc.returncode != 0 or not src.is_dir():
        raise BuildError(f"{module}'s {subdir} not found (go list: {proc.stderr.strip() or proc.stdout.strip()})")
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    for path in [tmp, *tmp.rglob("*")]:  # the module cache is read-only; the copy must be removable
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m divbase_localcluster.conformance",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache has the binary")
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"what to build (default: all of {', '.join(CHECKERS)})"
    )
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(CHECKERS)
    if unknown:
        parser.error(f"unknown checker(s) {sorted(unknown)}; known: {', '.join(CHECKERS)}")
    for name in args.names or CHECKERS:
        start = time.monotonic()
        path = build(name, force=args.force)
        print(f"{name}: {path} ({time.monotonic() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
