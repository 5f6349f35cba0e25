"""kstatus conformance: what Flux (and `kubectl wait`, cli-utils) conclude from the status the REAL planner writes.

kstatus (sigs.k8s.io/cli-utils/pkg/kstatus) has no rule for a custom kind beyond its generic properties: a
deletionTimestamp means Terminating; an observedGeneration that differs from metadata.generation means
InProgress; Reconciling=True means InProgress and Stalled=True means Failed (whichever comes first in the
conditions list); anything else is Current - kstatus itself never looks at Ready. So the planner must keep
Reconciling/Stalled truthful: a resource kstatus calls Current has to be Ready, except while paused.

`kstatus` below is a faithful transcription of those rules; `phase_worlds` drives the planner (through
tests/unit/planner_world.py) into every phase, and the tests assert what kstatus makes of each. The Argo CD
health check test reuses `phase_worlds`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from divbase_operator import names
from planner_world import World, base_spec

CURRENT, IN_PROGRESS, FAILED, TERMINATING = "Current", "InProgress", "Failed", "Terminating"


def kstatus(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) of a custom resource by kstatus' generic rules (checkGenericProperties + default)."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return TERMINATING, "Resource scheduled for deletion"
    status = obj.get("status") or {}
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and int(observed) != int(generation):
        kind = obj.get("kind")
        return IN_PROGRESS, f"{kind} generation is {generation}, but latest observed generation is {observed}"
    for cond in status.get("conditions") or []:
        if cond.get("type") == names.COND_RECONCILING and cond.get("status") == "True":
            return IN_PROGRESS, cond.get("message") or cond.get("reason") or ""
        if cond.get("type") == names.COND_STALLED and cond.get("status") == "True":
            return FAILED, cond.get("message") or cond.get("reason") or ""
    return CURRENT, "Resource is current"


def as_object(world: World, name: str = "db") -> dict[str, Any]:
    return {"apiVersion": names.API_VERSION, "kind": names.KIND,
            "metadata": {"name": name, "namespace": "prod", "generation": world.generation,
                         "annotations": dict(world.annotations)},
            "spec": world.spec, "status": world.status}


def _ready(version: str = "1", **spec: Any) -> World:
    world = World(spec=base_spec(version, **spec))
    world.install(version)
    return world


def _upgrade_until(step: str, **spec: Any) -> World:
    """An upgrade 1 -> 2 stopped at `step` (expanding, deploying, awaiting, contracting)."""
    world = _ready("1", **spec)
    world.set_spec(version="2")
    world.reconcile()
    if step == "expanding":
        return world
    world.finish_job("expand")
    world.reconcile()
    world.start_rollouts()
    world.reconcile()
    if step == "deploying":
        return world
    world.complete_rollouts()
    world.reconcile()
    if step == "awaiting":
        world.reconcile()  # a Manual contract is planned first (the world's plan Job finishes at once)
    return world


def _expand_failed() -> World:
    world = _ready()
    world.set_spec(version="2")
    world.reconcile()
    world.finish_job("expand", ok=False, exit_code=1, message='{"outcome":"error","error":"boom"}')
    world.reconcile()
    return world


def _rolling_back() -> World:
    world = _upgrade_until("deploying")
    world.expire_deadline()
    world.reconcile()
    return world


def _rolled_back() -> World:
    world = _rolling_back()
    world.complete_rollouts()
    world.reconcile()
    return world


def _paused_mid_rollout() -> World:
    world = _upgrade_until("expanding")
    world.set_spec(paused=True)
    world.reconcile()
    return world


def _paused_ready() -> World:
    world = _ready()
    world.set_spec(paused=True)
    world.reconcile()
    return world


def _first_install_expanding() -> World:
    world = World(spec=base_spec("1"))
    world.reconcile()
    return world


def _downgrade_refused() -> World:
    world = _ready("2")
    world.set_spec(version="1")
    world.reconcile()
    return world


# name -> (how to get there, expected phase, expected kstatus)
PHASES: dict[str, tuple[Callable[[], World], str, str]] = {
    "first-install": (_first_install_expanding, names.PHASE_EXPANDING, IN_PROGRESS),
    "ready": (_ready, names.PHASE_READY, CURRENT),
    "expanding": (lambda: _upgrade_until("expanding"), names.PHASE_EXPANDING, IN_PROGRESS),
    "deploying": (lambda: _upgrade_until("deploying"), names.PHASE_DEPLOYING, IN_PROGRESS),
    "contracting": (lambda: _upgrade_until("contracting"), names.PHASE_CONTRACTING, IN_PROGRESS),
    "awaiting-manual": (lambda: _upgrade_until("awaiting", contract={"policy": "Manual"}),
                        names.PHASE_AWAITING_CONTRACT, IN_PROGRESS),
    "awaiting-delay": (lambda: _upgrade_until("awaiting", contract={"policy": "Delayed", "delaySeconds": 600}),
                       names.PHASE_AWAITING_CONTRACT, IN_PROGRESS),
    "rolling-back": (_rolling_back, names.PHASE_ROLLING_BACK, IN_PROGRESS),
    "expand-failed": (_expand_failed, names.PHASE_FAILED, FAILED),
    "rolled-back": (_rolled_back, names.PHASE_FAILED, FAILED),
    "downgrade-refused": (_downgrade_refused, names.PHASE_FAILED, FAILED),
    # Paused is Current: the operator has done all it will do until spec.paused is false (like a suspended Flux
    # object). Ready still tells whether the release is rolled out, so `kubectl wait --for=condition=Ready` waits.
    "paused-mid-rollout": (_paused_mid_rollout, names.PHASE_PAUSED, CURRENT),
    "paused-ready": (_paused_ready, names.PHASE_PAUSED, CURRENT),
}


def phase_worlds() -> Iterator[tuple[str, World, str, str]]:
    """(case name, world, expected phase, expected kstatus) for every phase the planner can be in."""
    for case, (make, phase, expected) in PHASES.items():
        yield case, make(), phase, expected


@pytest.mark.parametrize("case", list(PHASES))
def test_kstatus_of_each_phase(case: str) -> None:
    make, phase, expected = PHASES[case]
    world = make()
    assert world.status["phase"] == phase, world.status
    obj = as_object(world)
    status, message = kstatus(obj)
    assert status == expected, (case, status, message, world.status["conditions"])
    ready = next(c for c in world.status["conditions"] if c["type"] == names.COND_READY)
    if phase != names.PHASE_PAUSED:
        # beyond kstatus: Current exactly when Ready=True, so Flux and `kubectl wait` agree
        assert (status == CURRENT) == (ready["status"] == "True"), (case, ready)
    if status == FAILED:
        stalled = next(c for c in world.status["conditions"] if c["type"] == names.COND_STALLED)
        assert message == stalled["message"] and message
    for cond in world.status["conditions"]:
        assert cond["observedGeneration"] == world.generation


def test_paused_ready_flag_tells_converged_from_mid_rollout() -> None:
    ready = next(c for c in _paused_ready().status["conditions"] if c["type"] == names.COND_READY)
    mid = next(c for c in _paused_mid_rollout().status["conditions"] if c["type"] == names.COND_READY)
    assert ready["status"] == "True" and mid["status"] == "False"


def test_generation_not_yet_observed_is_in_progress_even_if_ready() -> None:
    world = _ready()
    world.set_spec(version="2")  # the apiserver bumped generation; the operator has not reconciled yet
    status, message = kstatus(as_object(world))
    assert status == IN_PROGRESS and "observed generation is 1" in message


def test_stale_stalled_condition_does_not_fail_a_new_generation() -> None:
    world = _expand_failed()
    world.set_spec(version="3")
    assert kstatus(as_object(world))[0] == IN_PROGRESS


def test_terminating_wins() -> None:
    obj = as_object(_ready())
    obj["metadata"]["deletionTimestamp"] = "2026-11-25T12:00:00Z"
    assert kstatus(obj)[0] == TERMINATING


def test_kstatus_never_looks_at_ready() -> None:
    """Documented kstatus behaviour this test suite relies on: no Reconciling/Stalled True -> Current."""
    obj = {"kind": names.KIND, "metadata": {"generation": 1},
           "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False"}]}}
    assert kstatus(obj)[0] == CURRENT


def test_every_step_of_an_upgrade_is_in_progress_until_ready() -> None:
    """Walk one upgrade reconcile by reconcile: kstatus never says Current before the rollout finished."""
    world = _ready()
    world.set_spec(version="2")
    seen = []
    for act in (lambda: None, lambda: world.finish_job("expand"), world.start_rollouts, world.complete_rollouts,
                lambda: world.finish_job("contract")):
        act()
        world.reconcile()
        seen.append((world.status["phase"], kstatus(as_object(world))[0]))
    assert seen[-1] == (names.PHASE_READY, CURRENT)
    assert all(status == IN_PROGRESS for _, status in seen[:-1]), seen


def test_flux_example_health_checks_the_database() -> None:
    import yaml

    path = Path(__file__).resolve().parents[2] / "docs" / "examples" / "flux-kustomization.yaml"
    kustomization = next(d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == "Kustomization")
    spec = kustomization["spec"]
    [check] = spec["healthChecks"]
    assert (check["apiVersion"], check["kind"]) == (names.API_VERSION, names.KIND)
    [expr] = spec["healthCheckExprs"]
    assert (expr["apiVersion"], expr["kind"]) == (names.API_VERSION, names.KIND)
    assert "'Stalled'" in expr["failed"] and "'Ready'" in expr["current"] and "metadata.generation" in expr["current"]
    assert spec["wait"] is False and spec["timeout"]


def flux_cel_status(exprs: dict[str, str], obj: dict[str, Any]) -> str:
    """Flux's healthCheckExprs evaluation: inProgress, then failed, then current; none true -> InProgress. An
    expression that cannot be evaluated (a field still missing) leaves the resource InProgress."""
    celpy = pytest.importorskip("celpy", reason="cel-python evaluates the Flux CEL expressions")
    env = celpy.Environment()
    activation = {key: celpy.json_to_cel(obj[key]) for key in ("metadata", "spec", "status") if key in obj}
    for key, status in (("inProgress", IN_PROGRESS), ("failed", FAILED), ("current", CURRENT)):
        if key not in exprs:
            continue
        try:
            result = env.program(env.compile(exprs[key])).evaluate(activation)
        except Exception:
            return IN_PROGRESS
        if isinstance(result, celpy.CELEvalError):
            return IN_PROGRESS
        if bool(result):
            return status
    return IN_PROGRESS


def _flux_exprs() -> dict[str, str]:
    import yaml

    path = Path(__file__).resolve().parents[2] / "docs" / "examples" / "flux-kustomization.yaml"
    kustomization = next(d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == "Kustomization")
    return kustomization["spec"]["healthCheckExprs"][0]


@pytest.mark.parametrize("case", list(PHASES))
def test_flux_cel_expressions_agree_with_kstatus_and_ready(case: str) -> None:
    make, phase, expected = PHASES[case]
    world = make()
    obj = as_object(world)
    status = flux_cel_status(_flux_exprs(), obj)
    ready = next(c for c in world.status["conditions"] if c["type"] == names.COND_READY)["status"] == "True"
    if phase == names.PHASE_PAUSED:
        # stricter than kstatus: paused in the middle of a rollout is not Current
        assert status == (CURRENT if ready else IN_PROGRESS)
    else:
        assert status == expected


def test_flux_cel_expressions_before_the_operator_wrote_status() -> None:
    world = World(spec=base_spec("1"))
    obj = as_object(world)
    del obj["status"]
    assert kstatus(obj)[0] == CURRENT  # plain kstatus: the gap the expressions close
    assert flux_cel_status(_flux_exprs(), obj) == IN_PROGRESS
    ready = _ready()
    ready.set_spec(version="2")
    assert flux_cel_status(_flux_exprs(), as_object(ready)) == IN_PROGRESS  # generation not observed yet
