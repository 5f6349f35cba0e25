"""The Argo CD health check's files: gitops/argocd/health.lua, its cases in Argo CD's test convention
(health_test.yaml listing testdata/*.yaml with the expected status and message), the argocd-cm patch and the
Application example in docs/examples, and what Argo CD must show in each phase of the planner (EXPECTED).

The script itself is evaluated by Argo CD's own code in tests/unit/test_argocd_lua_real.py (both Lua sandboxes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from divbase_operator import names

ARGOCD_DIR = Path(__file__).resolve().parents[2] / "gitops" / "argocd"
SCRIPT = (ARGOCD_DIR / "health.lua").read_text()


def argo_cases() -> list[dict[str, Any]]:
    return yaml.safe_load((ARGOCD_DIR / "health_test.yaml").read_text())["tests"]


def test_convention_cases_are_divbase_databases() -> None:
    for case in argo_cases():
        obj = yaml.safe_load((ARGOCD_DIR / case["inputPath"]).read_text())
        assert obj["kind"] == names.KIND and obj["apiVersion"] == names.API_VERSION, case["inputPath"]


def test_every_testdata_file_is_listed() -> None:
    listed = {Path(c["inputPath"]).name for c in argo_cases()}
    present = {p.name for p in (ARGOCD_DIR / "testdata").glob("*.yaml")}
    assert listed == present
    assert {c["healthStatus"]["status"] for c in argo_cases()} == {"Healthy", "Progressing", "Degraded", "Suspended"}


# What Argo CD shows in each phase of the real planner (checked with its own code in test_argocd_lua_real.py).
EXPECTED = {
    "first-install": "Progressing",
    "ready": "Healthy",
    "expanding": "Progressing",
    "deploying": "Progressing",
    "contracting": "Progressing",
    "awaiting-manual": "Suspended",  # waits for a person: not progress, not failure
    "awaiting-delay": "Progressing",  # a timer will start the contract on its own
    "rolling-back": "Progressing",
    "expand-failed": "Degraded",
    "rolled-back": "Degraded",
    "downgrade-refused": "Degraded",
    "paused-mid-rollout": "Suspended",
    "paused-ready": "Suspended",
}


def test_argocd_cm_patch_embeds_the_tested_script() -> None:
    patch = yaml.safe_load((ARGOCD_DIR.parents[1] / "docs" / "examples" / "argocd-cm-health-patch.yaml").read_text())
    assert patch["kind"] == "ConfigMap" and patch["metadata"]["name"] == "argocd-cm"
    key = f"resource.customizations.health.{names.GROUP}_{names.KIND}"
    assert patch["data"][key] == SCRIPT, "regenerate docs/examples/argocd-cm-health-patch.yaml from health.lua"


def test_argocd_application_example_deploys_both_charts() -> None:
    apps = list(
        yaml.safe_load_all((ARGOCD_DIR.parents[1] / "docs" / "examples" / "argocd-application.yaml").read_text())
    )
    paths = {app["spec"]["source"]["path"] for app in apps}
    assert paths == {"charts/divbase-operator", "charts/divbase"}
    for app in apps:
        assert app["kind"] == "Application" and app["apiVersion"] == "argoproj.io/v1alpha1"
        chart = ARGOCD_DIR.parents[1] / app["spec"]["source"]["path"]
        assert (chart / "Chart.yaml").is_file()
        values_schema = json.loads((chart / "values.schema.json").read_text())
        unknown = set(app["spec"]["source"]["helm"].get("valuesObject", {})) - set(values_schema["properties"])
        assert not unknown, f"{chart.name}: values not in the chart's schema: {unknown}"
