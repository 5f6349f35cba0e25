"""gitops/argocd/health.lua evaluated by Argo CD's own code (v3.2, gitops/conformance/argocd): the documented
argocd-cm patch goes through Argo CD's SettingsManager, the health through gitops-engine's GetResourceHealth with
util/lua - the application controller's path - in Argo CD's default Lua sandbox and with useOpenLibs=true.

Inputs: every case of Argo CD's test convention (gitops/argocd/health_test.yaml) and the real planner's status in
every phase (tests/unit/test_kstatus.py PHASES, with what Argo CD must show in test_argocd_health.EXPECTED)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conformance_tools import argocd_cm, argocd_health, argocd_health_many
from divbase_operator import names
from test_argocd_health import ARGOCD_DIR, EXPECTED, argo_cases
from test_kstatus import PHASES, as_object

SANDBOXES = {"default": None, "useOpenLibs": True}  # resource.customizations.useOpenLibs.<group>_<kind>
OLD_SCRIPT = Path(__file__).resolve().parents[1] / "fixtures" / "argocd" / "health-math-floor.lua"

# which condition's message Argo CD shows in each phase
MESSAGE_OF = {
    "first-install": names.COND_RECONCILING,
    "ready": names.COND_READY,
    "expanding": names.COND_RECONCILING,
    "deploying": names.COND_RECONCILING,
    "contracting": names.COND_RECONCILING,
    "awaiting-manual": names.COND_READY,
    "awaiting-delay": names.COND_RECONCILING,
    "rolling-back": names.COND_RECONCILING,
    "expand-failed": names.COND_STALLED,
    "rolled-back": names.COND_STALLED,
    "downgrade-refused": names.COND_STALLED,
    "paused-mid-rollout": names.COND_RECONCILING,
    "paused-ready": names.COND_RECONCILING,
}


def _case_id(case: dict[str, Any]) -> str:
    return Path(case["inputPath"]).stem


@pytest.fixture(scope="module")
def results() -> dict[tuple[str, str], dict[str, str]]:
    """Everything evaluated in one run of the real code: (sandbox, input name) -> health."""
    inputs: dict[str, dict[str, Any]] = {}
    for case in argo_cases():
        inputs[f"testdata/{_case_id(case)}"] = yaml.safe_load((ARGOCD_DIR / case["inputPath"]).read_text())
    for case, (make, _, _) in PHASES.items():
        inputs[f"phase/{case}"] = as_object(make())
    keys = [(sandbox, name) for sandbox in SANDBOXES for name in inputs]
    out = argocd_health_many([(argocd_cm(open_libs=SANDBOXES[sandbox]), inputs[name]) for sandbox, name in keys])
    return dict(zip(keys, out, strict=True))


@pytest.mark.parametrize("sandbox", list(SANDBOXES))
@pytest.mark.parametrize("case", argo_cases(), ids=_case_id)
def test_argocd_convention_cases(
    case: dict[str, Any], sandbox: str, results: dict[tuple[str, str], dict[str, str]]
) -> None:
    assert results[sandbox, f"testdata/{_case_id(case)}"] == case["healthStatus"]


def test_expected_covers_every_phase_case() -> None:
    assert set(EXPECTED) == set(PHASES) == set(MESSAGE_OF)


@pytest.mark.parametrize("sandbox", list(SANDBOXES))
@pytest.mark.parametrize("case", list(PHASES))
def test_planner_phases(case: str, sandbox: str, results: dict[tuple[str, str], dict[str, str]]) -> None:
    world = PHASES[case][0]()
    conditions = {c["type"]: c for c in world.status["conditions"]}
    message = conditions[MESSAGE_OF[case]]["message"]
    assert message
    assert results[sandbox, f"phase/{case}"] == {"status": EXPECTED[case], "message": message}
    if case == "awaiting-manual":
        assert f"{names.ANNOTATION_APPROVE_CONTRACT}=2" in message


@pytest.mark.parametrize("open_libs", list(SANDBOXES.values()), ids=list(SANDBOXES))
def test_status_missing_older_or_without_conditions(open_libs: bool | None) -> None:
    cm = argocd_cm(open_libs=open_libs)
    no_status = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": "db", "namespace": "prod", "generation": 1},
        "spec": {},
    }
    failed = PHASES["expand-failed"][0]()
    older = as_object(failed)
    older["metadata"]["generation"] = failed.generation + 1  # stalled, but for the previous spec
    no_conditions = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"generation": 3},
        "status": {"observedGeneration": 3, "conditions": []},
    }
    assert argocd_health_many([(cm, no_status), (cm, older), (cm, no_conditions)]) == [
        {"status": "Progressing", "message": "Waiting for divbase-operator to report status"},
        {"status": "Progressing", "message": "Waiting for divbase-operator to observe the latest spec"},
        {"status": "Progressing", "message": "Waiting for Ready"},
    ]


def test_old_script_with_math_floor_fails_only_in_the_default_sandbox() -> None:
    """The harness tells the sandboxes apart: the script before c608aaf called math.floor, which Argo CD's default
    sandbox lacks; the real code turns the Lua error into health Unknown (and the controller logs the error)."""
    old = OLD_SCRIPT.read_text()
    assert "math.floor" in old and "math." not in (ARGOCD_DIR / "health.lua").read_text()
    failed = PHASES["expand-failed"][0]()
    obj = as_object(failed)
    obj["metadata"]["generation"] = failed.generation + 1  # the branch that called math.floor
    default, open_libs = argocd_health_many(
        [(argocd_cm(script=old), obj), (argocd_cm(script=old, open_libs=True), obj)]
    )
    assert default["status"] == "Unknown"
    assert "attempt to index a non-table object(nil) with key 'floor'" in default["message"]
    assert default["error"].startswith("failed to get resource health for prod/db: ")
    assert open_libs == {
        "status": "Progressing",
        "message": f"Waiting for divbase-operator to observe generation {failed.generation + 1}",
    }
    # the same script on a branch without math.floor runs in both
    ready = as_object(PHASES["ready"][0]())
    assert argocd_health(ready, argocd_cm(script=old)) == argocd_health(ready)


def test_without_the_customization_argo_cd_has_no_health_for_the_kind() -> None:
    """The key of the documented patch is the one Argo CD reads: without it there is no health check at all (the
    controller then leaves the resource's health out, and the Application is Healthy as soon as it exists)."""
    obj = as_object(PHASES["expand-failed"][0]())
    assert argocd_health(obj, {})["status"] == ""
    assert argocd_health(obj)["status"] == "Degraded"


def test_a_resource_being_deleted_is_progressing_before_any_script_runs() -> None:
    """gitops-engine decides a deletionTimestamp itself (Pending deletion); health.lua never sees it."""
    obj = as_object(PHASES["expand-failed"][0]())
    obj["metadata"]["deletionTimestamp"] = "2026-11-25T12:00:00Z"
    assert argocd_health(obj) == {"status": "Progressing", "message": "Pending deletion"}
