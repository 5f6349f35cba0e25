"""The ecosystem's own code as the oracle: Argo CD's health path and kstatus' status.Compute, linked from their Go
modules (gitops/conformance/, built into the divbase cache by divbase_localcluster.conformance; `make unit` and
`make test` build them first, a direct pytest run builds what the cache lacks on first use).

Nothing here restates a rule of Argo CD or kstatus: the helpers only feed objects to the real code and read back
what it concluded."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml
from divbase_localcluster import conformance
from divbase_operator import names

ROOT = Path(__file__).resolve().parents[2]
ARGOCD_CM_PATCH = ROOT / "docs" / "examples" / "argocd-cm-health-patch.yaml"
# argocd-cm keys as Argo CD's SettingsManager parses them: resource.customizations.<type>.<group>_<kind>
HEALTH_KEY = f"resource.customizations.health.{names.GROUP}_{names.KIND}"
OPEN_LIBS_KEY = f"resource.customizations.useOpenLibs.{names.GROUP}_{names.KIND}"

CURRENT, IN_PROGRESS, FAILED, TERMINATING = "Current", "InProgress", "Failed", "Terminating"


@functools.cache
def binary(name: str) -> Path:
    return conformance.build(name)


def _run(name: str, requests: list[Any]) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [str(binary(name))],
        input="".join(json.dumps(r) + "\n" for r in requests),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}: {proc.stderr[-2000:]}"
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(out) == len(requests), (proc.stdout, proc.stderr[-2000:])
    return out


# --- kstatus and Flux ------------------------------------------------------------------------------------------------
def kstatus_many(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(status, message) of each object by status.Compute; sigs.k8s.io/cli-utils and Flux's fork must agree."""
    results = []
    for obj, res in zip(objects, _run("kstatus", [{"object": o} for o in objects]), strict=True):
        assert res["upstream"] == res["flux"], ("kstatus and Flux's fork disagree", obj, res)
        assert "error" not in res["upstream"], res
        results.append((res["upstream"]["status"], res["upstream"]["message"]))
    return results


def kstatus(obj: dict[str, Any]) -> tuple[str, str]:
    return kstatus_many([obj])[0]


def flux_cel_many(objects: list[dict[str, Any]], health_check_exprs: list[dict[str, str]]) -> list[dict[str, str]]:
    """What Flux's CEL status reader (a Kustomization's spec.healthCheckExprs) reports for each object:
    {"status", "message"} plus "error" when an expression could not be evaluated (status Unknown)."""
    out = _run("kstatus", [{"object": o, "healthCheckExprs": health_check_exprs} for o in objects])
    return [res["fluxCEL"] for res in out]


# --- Argo CD ---------------------------------------------------------------------------------------------------------
def argocd_cm(script: str | None = None, open_libs: bool | None = None) -> dict[str, str]:
    """The data of argocd-cm: the documented patch (docs/examples/argocd-cm-health-patch.yaml, what users apply), or
    `script` under the same key; `open_libs` sets resource.customizations.useOpenLibs.<group>_<kind> (None: unset,
    Argo CD's default sandbox)."""
    data = dict(yaml.safe_load(ARGOCD_CM_PATCH.read_text())["data"])
    if script is not None:
        data[HEALTH_KEY] = script
    if open_libs is not None:
        data[OPEN_LIBS_KEY] = str(open_libs).lower()
    return data


def argocd_health_many(requests: list[tuple[dict[str, str], dict[str, Any]]]) -> list[dict[str, str]]:
    """Health of each (argocd-cm data, live object) as Argo CD's application controller computes it:
    {"status", "message"} plus "error" when GetResourceHealth returned one (status is then Unknown)."""
    return _run("argocd-health", [{"argocdCM": cm, "object": obj} for cm, obj in requests])


def argocd_health(obj: dict[str, Any], cm: dict[str, str] | None = None) -> dict[str, str]:
    return argocd_health_many([(argocd_cm() if cm is None else cm, obj)])[0]
