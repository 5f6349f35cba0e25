"""What the operator lets a DivBaseDatabase ask for (issue 14, items 1 and 2): its own flags decide, the planner
refuses with a Stalled condition that says why, and creates nothing."""

from __future__ import annotations

from typing import Any

import pytest
from divbase_operator import main, names
from divbase_operator.planner import ApplyDeployment, CreateJob, EmitEvent, decide
from divbase_operator.policy import Policy
from planner_world import T0, World, base_spec


def _decide(world: World, policy: Policy) -> Any:
    decision = decide(world.observe(), T0, policy)
    world.status = decision.status
    return decision


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_a_resource_in_the_operators_own_namespace_is_refused() -> None:
    world = World(spec=base_spec("1"))  # the world's resource lives in namespace "prod"
    decision = _decide(world, Policy(own_namespace="prod"))
    assert not [a for a in decision.actions if isinstance(a, CreateJob | ApplyDeployment)]
    stalled = _condition(decision.status, names.COND_STALLED)
    assert stalled["status"] == "True" and stalled["reason"] == names.REASON_OPERATOR_NAMESPACE
    assert "its own namespace 'prod'" in stalled["message"] and "docs/security.md" in stalled["message"]
    assert decision.status["phase"] == names.PHASE_FAILED
    assert [a.reason for a in decision.actions if isinstance(a, EmitEvent)] == [names.REASON_OPERATOR_NAMESPACE]
    again = _decide(world, Policy(own_namespace="prod"))
    assert not [a for a in again.actions if isinstance(a, EmitEvent)], "said once"


def test_a_resource_elsewhere_is_managed() -> None:
    world = World(spec=base_spec("1"))
    decision = _decide(world, Policy(own_namespace="divbase-system"))
    assert [a for a in decision.actions if isinstance(a, CreateJob)]
    assert _condition(decision.status, names.COND_STALLED)["status"] == "False"


def test_the_operator_takes_its_namespace_from_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "divbase-system")
    assert main.policy_from_args(main.parse_args([])).own_namespace == "divbase-system"
