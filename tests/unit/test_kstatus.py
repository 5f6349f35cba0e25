"""kstatus conformance: what Flux (and every kstatus client) concludes from the status the REAL planner writes,
computed by kstatus' own code - status.Compute of sigs.k8s.io/cli-utils and of Flux's fork github.com/fluxcd/cli-utils,
linked from their Go modules (gitops/conformance/kstatus; tests/unit/conformance_tools.py runs it) - and what Flux's
own CEL status reader makes of the documented healthCheckExprs (docs/examples/flux-kustomization.yaml).

What that code does with a custom kind (pkg/kstatus/status: checkGenericProperties, then checkReadyCondition): a
deletionTimestamp is Terminating; an observedGeneration that differs from metadata.generation is InProgress; the
first of Reconciling=True (InProgress) or Stalled=True (Failed) in the conditions list decides; otherwise the Ready
condition decides (True: Current, False or Unknown: InProgress); without any of these, Current. So with the
operator's conditions kstatus says Current exactly when Ready=True for the observed generation - paused included.

`phase_worlds` drives the planner (through tests/unit/planner_world.py) into every phase; the Argo CD health check
tests and others reuse PHASES and as_object."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conformance_tools import CURRENT, FAILED, IN_PROGRESS, TERMINATING, flux_cel_many, kstatus, kstatus_many
from divbase_operator import names
from planner_world import World, base_spec

__all__ = ["CURRENT", "FAILED", "IN_PROGRESS", "PHASES", "TERMINATING", "as_object", "kstatus", "phase_worlds"]


def as_object(world: World, name: str = "db") -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {
            "name": name,
            "namespace": "prod",
            "generation": world.generation,
            "annotations": dict(world.annotations),
        },
        "spec": world.spec,
        "status": world.status,
    }


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
    "awaiting-manual": (
        lambda: _upgrade_until("awaiting", contract={"policy": "Manual"}),
        names.PHASE_AWAITING_CONTRACT,
        IN_PROGRESS,
    ),
    "awaiting-delay": (
        lambda: _upgrade_until("awaiting", contract={"policy": "Delayed", "delaySeconds": 600}),
        names.PHASE_AWAITING_CONTRACT,
        IN_PROGRESS,
    ),
    "rolling-back": (_rolling_back, names.PHASE_ROLLING_BACK, IN_PROGRESS),
    "expand-failed": (_expand_failed, names.PHASE_FAILED, FAILED),
    "rolled-back": (_rolled_back, names.PHASE_FAILED, FAILED),
    "downgrade-refused": (_downgrade_refused, names.PHASE_FAILED, FAILED),
    # Paused: neither Reconciling nor Stalled is True, so kstatus goes by Ready - Current once the release is rolled
    # out, InProgress (with the paused message) when paused in the middle of a rollout: dependents keep waiting.
    "paused-mid-rollout": (_paused_mid_rollout, names.PHASE_PAUSED, IN_PROGRESS),
    "paused-ready": (_paused_ready, names.PHASE_PAUSED, CURRENT),
}


def phase_worlds() -> Iterator[tuple[str, World, str, str]]:
    """(case name, world, expected phase, expected kstatus) for every phase the planner can be in."""
    for case, (make, phase, expected) in PHASES.items():
        yield case, make(), phase, expected


def _conditions(world: World) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in world.status["conditions"]}


@pytest.fixture(scope="module")
def real_kstatus() -> dict[str, tuple[str, str]]:
    """kstatus' own verdict on every phase, in one run of the real code."""
    return dict(zip(PHASES, kstatus_many([as_object(make()) for make, _, _ in PHASES.values()]), strict=True))


@pytest.mark.parametrize("case", list(PHASES))
def test_kstatus_of_each_phase(case: str, real_kstatus: dict[str, tuple[str, str]]) -> None:
    make, phase, expected = PHASES[case]
    world = make()
    assert world.status["phase"] == phase, world.status
    status, message = real_kstatus[case]
    assert status == expected, (case, status, message, world.status["conditions"])
    conditions = _conditions(world)
    # Flux and `kubectl wait --for=condition=Ready` agree in every phase, paused included
    assert (status == CURRENT) == (conditions[names.COND_READY]["status"] == "True"), (case, conditions)
    if status == FAILED:
        assert message == conditions[names.COND_STALLED]["message"] and message
    elif conditions[names.COND_RECONCILING]["status"] == "True":
        assert message == conditions[names.COND_RECONCILING]["message"] and message
    elif status == IN_PROGRESS:  # decided by Ready=False: its message
        assert message == conditions[names.COND_READY]["message"] and message
    else:
        assert message == "Resource is Ready"
    for cond in world.status["conditions"]:
        assert cond["observedGeneration"] == world.generation


def test_paused_mid_rollout_is_in_progress_with_the_paused_message() -> None:
    world = _paused_mid_rollout()
    status, message = kstatus(as_object(world))
    assert (status, message) == (IN_PROGRESS, _conditions(world)[names.COND_READY]["message"])
    assert "spec.paused is true" in message


def test_paused_ready_flag_tells_converged_from_mid_rollout() -> None:
    ready = _conditions(_paused_ready())[names.COND_READY]
    mid = _conditions(_paused_mid_rollout())[names.COND_READY]
    assert ready["status"] == "True" and mid["status"] == "False"


def test_generation_not_yet_observed_is_in_progress_even_if_ready() -> None:
    world = _ready()
    world.set_spec(version="2")  # the apiserver bumped generation; the operator has not reconciled yet
    assert kstatus(as_object(world)) == (
        IN_PROGRESS,
        f"{names.KIND} generation is 2, but latest observed generation is 1",
    )


def test_stale_stalled_condition_does_not_fail_a_new_generation() -> None:
    world = _expand_failed()
    world.set_spec(version="3")
    assert kstatus(as_object(world))[0] == IN_PROGRESS


def test_terminating_wins() -> None:
    obj = as_object(_ready())
    obj["metadata"]["deletionTimestamp"] = "2026-11-25T12:00:00Z"
    assert kstatus(obj) == (TERMINATING, "Resource scheduled for deletion")


def test_kstatus_falls_back_to_ready() -> None:
    """When neither Reconciling nor Stalled is True, kstatus goes by Ready (an earlier version of this suite
    claimed it never reads Ready; kstatus' own code shows otherwise)."""

    def obj(*conditions: tuple[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"generation": 1},
            "status": {
                "observedGeneration": 1,
                "conditions": [
                    {"type": t, "status": s, "reason": "R", "message": f"{t} is {s}"} for t, s in conditions
                ],
            },
        }

    assert kstatus_many(
        [
            obj(("Ready", "False")),
            obj(("Ready", "Unknown")),
            obj(("Ready", "True")),
            obj(),
            obj(("Reconciling", "False"), ("Stalled", "False"), ("Ready", "False")),
            obj(("Ready", "True"), ("Reconciling", "True")),
            obj(("Ready", "True"), ("Stalled", "True"), ("Reconciling", "True")),
        ]
    ) == [
        (IN_PROGRESS, "Ready is False"),
        (IN_PROGRESS, "Ready is Unknown"),
        (CURRENT, "Resource is Ready"),
        (CURRENT, "Resource is current"),
        (IN_PROGRESS, "Ready is False"),
        (IN_PROGRESS, "Reconciling is True"),
        (FAILED, "Stalled is True"),  # the first of Reconciling/Stalled in the list decides
    ]


def test_every_step_of_an_upgrade_is_in_progress_until_ready() -> None:
    """Walk one upgrade reconcile by reconcile: kstatus never says Current before the rollout finished."""
    world = _ready()
    world.set_spec(version="2")
    phases, objects = [], []
    for act in (
        lambda: None,
        lambda: world.finish_job("expand"),
        world.start_rollouts,
        world.complete_rollouts,
        lambda: world.finish_job("contract"),
    ):
        act()
        world.reconcile()
        phases.append(world.status["phase"])
        objects.append(as_object(world))
    seen = list(zip(phases, [status for status, _ in kstatus_many(objects)], strict=True))
    assert seen[-1] == (names.PHASE_READY, CURRENT)
    assert all(status == IN_PROGRESS for _, status in seen[:-1]), seen


def test_flux_example_health_checks_the_database() -> None:
    spec = _flux_release_kustomization()["spec"]
    [check] = spec["healthChecks"]
    assert (check["apiVersion"], check["kind"]) == (names.API_VERSION, names.KIND)
    [expr] = spec["healthCheckExprs"]
    assert (expr["apiVersion"], expr["kind"]) == (names.API_VERSION, names.KIND)
    assert "'Stalled'" in expr["failed"] and "'Ready'" in expr["current"] and "metadata.generation" in expr["current"]
    assert spec["wait"] is False and spec["timeout"]


def _flux_release_kustomization() -> dict[str, Any]:
    """The example's Kustomization of the release (the other one installs the operator)."""
    import yaml

    path = Path(__file__).resolve().parents[2] / "docs" / "examples" / "flux-kustomization.yaml"
    return next(
        d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == "Kustomization" and "healthChecks" in d["spec"]
    )


def _flux_exprs() -> list[dict[str, str]]:
    return list(_flux_release_kustomization()["spec"]["healthCheckExprs"])


def test_flux_cel_expressions_agree_with_kstatus_and_ready(real_kstatus: dict[str, tuple[str, str]]) -> None:
    """Flux's own CEL status reader on the documented healthCheckExprs, in every phase."""
    worlds = {case: make() for case, (make, _, _) in PHASES.items()}
    results = flux_cel_many([as_object(w) for w in worlds.values()], _flux_exprs())
    for (case, world), result in zip(worlds.items(), results, strict=True):
        assert "error" not in result, (case, result)
        assert result["status"] == real_kstatus[case][0] == PHASES[case][2], (case, result)
        assert (result["status"] == CURRENT) == (_conditions(world)[names.COND_READY]["status"] == "True")


def test_flux_cel_expressions_before_the_operator_wrote_status() -> None:
    """Plain kstatus calls a DivBaseDatabase without status Current; the expressions cannot be evaluated on it yet
    (no status.observedGeneration), so Flux's reader says Unknown with the CEL error - not Current: Flux waits."""
    world = World(spec=base_spec("1"))
    obj = as_object(world)
    del obj["status"]
    assert kstatus(obj) == (CURRENT, "Resource is current")  # plain kstatus: the gap the expressions close
    ready = _ready()
    ready.set_spec(version="2")  # generation 2, status of generation 1 (Ready=True)
    no_status, not_observed = flux_cel_many([obj, as_object(ready)], _flux_exprs())
    assert no_status["status"] == "Unknown"
    assert "no such attribute(s): status.observedGeneration" in no_status["error"]
    assert not_observed == {"status": IN_PROGRESS, "message": ""}
