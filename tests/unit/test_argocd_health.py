"""The Argo CD health check (gitops/argocd/health.lua), run the way Argo CD runs it: a Lua VM without io/os,
the resource as the global `obj` (converted from JSON, so every number is a float), the script returns `hs`.

Two sources of inputs: Argo CD's own test convention (health_test.yaml listing testdata/*.yaml with the expected
status and message), and the real planner driven into every phase (the same worlds as the kstatus test)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from divbase_operator import names
from test_kstatus import PHASES, as_object

lupa = pytest.importorskip("lupa", reason="the `lupa` Lua runtime (pip install lupa) runs Argo CD health scripts")

ARGOCD_DIR = Path(__file__).resolve().parents[2] / "gitops" / "argocd"
SCRIPT = (ARGOCD_DIR / "health.lua").read_text()
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)  # Argo CD's JSON -> Lua conversion yields float64 numbers
    raise TypeError(type(value))


# Argo CD's VM (util/lua, without resource.customizations.useOpenLibs) opens only the base, package and table
# libraries and its own safe `os`: no `math`, no `string` (a script calling math.floor fails there with "attempt
# to index a non-table object(nil) with key 'floor'", however well it runs under a full Lua).
NOT_IN_ARGOCDS_SANDBOX = ("io", "os", "require", "loadfile", "dofile", "package", "debug", "math", "string", "utf8",
                          "coroutine")


def health(obj: dict[str, Any]) -> dict[str, str]:
    """Run health.lua on `obj` in a sandbox like Argo CD's default one (NOT_IN_ARGOCDS_SANDBOX removed)."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True, register_eval=False, register_builtins=False)
    g = lua.globals()
    for unsafe in NOT_IN_ARGOCDS_SANDBOX:
        g[unsafe] = None
    obj = json.loads(json.dumps(obj))  # what Argo CD hands over is JSON
    g.obj = _to_lua(lua, obj)
    hs = lua.execute(SCRIPT)
    assert hs is not None, "health.lua must return hs"
    result = {k: hs[k] for k in ("status", "message") if hs[k] is not None}
    assert result.get("status") in ARGO_STATUSES, result
    return result


def _argo_cases() -> list[dict[str, Any]]:
    return yaml.safe_load((ARGOCD_DIR / "health_test.yaml").read_text())["tests"]


@pytest.mark.parametrize("case", _argo_cases(), ids=lambda c: Path(c["inputPath"]).stem)
def test_argocd_convention_cases(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((ARGOCD_DIR / case["inputPath"]).read_text())
    assert obj["kind"] == names.KIND and obj["apiVersion"] == names.API_VERSION
    assert health(obj) == case["healthStatus"]


def test_every_testdata_file_is_listed() -> None:
    listed = {Path(c["inputPath"]).name for c in _argo_cases()}
    present = {p.name for p in (ARGOCD_DIR / "testdata").glob("*.yaml")}
    assert listed == present
    assert {c["healthStatus"]["status"] for c in _argo_cases()} == {"Healthy", "Progressing", "Degraded", "Suspended"}


# What Argo CD shows in each phase of the real planner.
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


def test_expected_covers_every_phase_case() -> None:
    assert set(EXPECTED) == set(PHASES)


@pytest.mark.parametrize("case", list(EXPECTED))
def test_planner_phases(case: str) -> None:
    make, phase, _ = PHASES[case]
    world = make()
    assert world.status["phase"] == phase
    result = health(as_object(world))
    assert result["status"] == EXPECTED[case], (case, result)
    conditions = {c["type"]: c for c in world.status["conditions"]}
    if result["status"] == "Degraded":
        assert result["message"] == conditions[names.COND_STALLED]["message"]
    if case == "awaiting-manual":
        assert f"{names.ANNOTATION_APPROVE_CONTRACT}=2" in result["message"]


def test_missing_status_is_progressing() -> None:
    obj = {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": "db", "generation": 1},
           "spec": {}}
    assert health(obj) == {"status": "Progressing", "message": "Waiting for divbase-operator to report status"}


def test_status_of_an_older_generation_is_progressing_even_when_stalled() -> None:
    make = PHASES["expand-failed"][0]
    world = make()
    obj = as_object(world)
    obj["metadata"]["generation"] = world.generation + 1
    result = health(obj)
    assert result == {"status": "Progressing",
                      "message": "Waiting for divbase-operator to observe the latest spec"}


def test_empty_conditions_are_progressing() -> None:
    obj = {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"generation": 3},
           "status": {"observedGeneration": 3, "conditions": []}}
    assert health(obj)["status"] == "Progressing"


def test_script_does_not_touch_unsafe_globals() -> None:
    assert "io." not in SCRIPT and "os." not in SCRIPT and "require" not in SCRIPT


def test_argocd_cm_patch_embeds_the_tested_script() -> None:
    patch = yaml.safe_load((ARGOCD_DIR.parents[1] / "docs" / "examples" / "argocd-cm-health-patch.yaml").read_text())
    assert patch["kind"] == "ConfigMap" and patch["metadata"]["name"] == "argocd-cm"
    key = f"resource.customizations.health.{names.GROUP}_{names.KIND}"
    assert patch["data"][key] == SCRIPT, "regenerate docs/examples/argocd-cm-health-patch.yaml from health.lua"


def test_argocd_application_example_deploys_both_charts() -> None:
    apps = list(yaml.safe_load_all((ARGOCD_DIR.parents[1] / "docs" / "examples" / "argocd-application.yaml")
                                   .read_text()))
    paths = {app["spec"]["source"]["path"] for app in apps}
    assert paths == {"charts/divbase-operator", "charts/divbase"}
    for app in apps:
        assert app["kind"] == "Application" and app["apiVersion"] == "argoproj.io/v1alpha1"
        chart = ARGOCD_DIR.parents[1] / app["spec"]["source"]["path"]
        assert (chart / "Chart.yaml").is_file()
        values_schema = json.loads((chart / "values.schema.json").read_text())
        unknown = set(app["spec"]["source"]["helm"].get("valuesObject", {})) - set(values_schema["properties"])
        assert not unknown, f"{chart.name}: values not in the chart's schema: {unknown}"
