"""status.py converts to and from exactly the `.status` JSON the operator writes: existing resources, the kubectl
plugin, Argo CD's Lua health check and kstatus read that JSON, so a round trip must not change a byte of it."""

from __future__ import annotations

import json
from typing import Any

from divbase_operator import names
from divbase_operator.status import DatabaseStatus, Rollout, StepRecord, StepState
from planner_world import World, base_spec


def _walk() -> list[dict[str, Any]]:
    """Statuses of an install, a Manual-contract upgrade, a failed expand, its retry and a rollback."""
    world = World(spec=base_spec("1", contract={"policy": "Manual"}, rollbackOnFailure=True))
    world.install("1")
    world.set_spec(version="2")
    world.reconcile()
    world.finish_job("expand", ok=False, exit_code=2, message='{"outcome": "failed", "error": "boom"}')
    world.reconcile()
    world.annotations[names.ANNOTATION_RETRY] = "again"
    world.reconcile()
    world.finish_job("expand")
    world.reconcile()
    world.complete_rollouts()
    world.reconcile()
    world.reconcile()  # the plan Job (finished at once here) is recorded: the contract waits for approval
    return [decision.status for decision in world.log]


def test_every_status_the_planner_writes_survives_a_round_trip_unchanged() -> None:
    statuses = _walk()
    last = statuses[-1]
    assert {"history", "lastFailure", "contractPlan", "schema", "rollout"} <= set(last), set(last)
    for status in statuses:
        again = DatabaseStatus.from_dict(status).to_dict()
        assert json.dumps(again, sort_keys=True) == json.dumps(status, sort_keys=True)


def test_fields_it_does_not_know_and_explicit_nulls_are_kept() -> None:
    """An older or newer operator's field survives, and a null stays a null (it is not dropped)."""
    status = {
        "phase": "Ready",
        "kopf": {"progress": {}},
        "currentVersion": None,
        "rollout": {
            "fromVersion": None,
            "toVersion": "2",
            "image": "i:2",
            "startedAt": "T",
            "retryToken": "",
            "steps": {"expand": {"phase": "Succeeded", "future": 1}},
            "finishedAt": None,
            "new": [1],
        },
    }
    assert DatabaseStatus.from_dict(status).to_dict() == status


def test_a_step_record_reads_phase_as_its_state_and_a_retry_resets_it() -> None:
    rollout = Rollout.from_dict(
        {
            "fromVersion": "1",
            "toVersion": "2",
            "image": "i",
            "startedAt": "T",
            "retryToken": "",
            "steps": {"expand": {"phase": "Failed", "job": "j", "message": "boom"}},
        }
    )
    rec = rollout.step("expand")
    assert rec.state == StepState.FAILED and rec.job == "j"
    rec.reset()
    assert rec == StepRecord() and rec.to_dict() == {"phase": "Pending"}
    assert not rollout.first_install and not rollout.succeeded
