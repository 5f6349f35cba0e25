"""Random walks over the rollout state space, checking the safety rules after every single decision.

Scenario tests show the intended paths; these show that no interleaving of Job results, rollout progress,
deadlines, spec edits, pauses, retries, approvals and lost status writes breaks the rules the product promises."""

from __future__ import annotations

import copy
import dataclasses
import random
from datetime import timedelta
from typing import Any

import pytest
from divbase_operator import names
from divbase_operator.crd import status_schema
from divbase_operator.observed import JOB_ACTIVE, JOB_FAILED, JOB_SUCCEEDED, JobObs, PodObs
from divbase_operator.planner import ApplyDeployment, CreateJob, Decision, DeleteDeployment
from divbase_operator.spec import version_key
from planner_world import World, base_spec

# Release ladders the walks climb and descend: plain numbers, and DivBase's tags, where string order is wrong
# (0.1.0a10 < 0.1.0a9 as strings) and spellings mix with and without the `v`.
LADDERS = {
    "numbers": ["1", "2", "3", "4", "5", "6"],
    "divbase": ["0.1.0a9", "v0.1.0a10", "0.1.0b1", "v0.1.0rc1", "0.1.0", "v0.2.0a1", "v0.10.0"],
}
STATUS_SCHEMA = status_schema()
STATUS_FIELDS = set(STATUS_SCHEMA["properties"])  # the apiserver prunes any other top-level status field
JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
}


def schema_problems(value: Any, schema: dict[str, Any], path: str = "status") -> list[str]:
    """Where `value` strays from the CRD's structural schema: a field it does not declare (the apiserver prunes it,
    so the operator would lose it), a null where it is not nullable, a value of another type or outside its enum
    (the apiserver rejects the status update)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if value is None:
        return [] if schema.get("nullable") else [f"{path} is null"]
    kind = schema.get("type")
    if kind and (not isinstance(value, JSON_TYPES[kind]) or (kind != "boolean" and isinstance(value, bool))):
        return [f"{path} is {type(value).__name__}, not {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not one of {schema['enum']}"]
    problems: list[str] = []
    if kind == "array":
        for i, item in enumerate(value):
            problems += schema_problems(item, schema["items"], f"{path}[{i}]")
    elif kind == "object" and "properties" in schema:
        for key, item in value.items():
            declared = schema["properties"].get(key)
            problems += (
                schema_problems(item, declared, f"{path}.{key}")
                if declared
                else [f"{path}.{key} is not declared (pruned)"]
            )
    elif kind == "object" and "additionalProperties" in schema:
        for key, item in value.items():
            problems += schema_problems(item, schema["additionalProperties"], f"{path}.{key}")
    return problems


POLICIES = [{"policy": "Auto"}, {"policy": "Manual"}, {"policy": "Delayed", "delaySeconds": 30}]


def _succeeded_expand_at_least(world: World, version: str) -> bool:
    """An expand Job for `version` or a later release succeeded, even if its TTL has deleted it since."""
    return any(
        j.step == "expand" and j.state == JOB_SUCCEEDED and version_key(j.version) >= version_key(version)
        for j in world.finished.values()
    )


@dataclasses.dataclass(frozen=True)
class Before:
    """What the planner was shown: the invariants judge each decision against it, not against what followed."""

    jobs: dict[str, JobObs]
    pods: list[PodObs]
    status: dict[str, Any]
    annotations: dict[str, str]
    paused: bool

    @classmethod
    def of(cls, world: World) -> Before:
        return cls(
            dict(world.jobs),
            list(world.pods),
            copy.deepcopy(world.status),
            dict(world.annotations),
            bool(world.spec.get("paused")),
        )


def _check(world: World, decision: Decision, before: Before) -> None:
    """The safety rules, for every decision, whether or not its status write is then lost: its actions were
    applied either way."""
    creates = [a for a in decision.actions if isinstance(a, CreateJob)]
    applies = [a for a in decision.actions if isinstance(a, ApplyDeployment)]
    deletes = [a for a in decision.actions if isinstance(a, DeleteDeployment)]
    status = decision.status
    # one migration at a time, and never beside another running Job of ours (plan Jobs included); a Job deleted
    # while it runs is gone as soon as its deletion is seen (docs/operator.md: created again under its name, its
    # old pod serialised on the advisory lock), so only a running Job not being deleted holds a Job back, and only
    # such a one may be asked for again while it is still there (AlreadyExists)
    assert len(creates) <= 1
    for create in creates:
        name = create.body["metadata"]["name"]
        others = [j for j in before.jobs.values() if j.state == JOB_ACTIVE and not j.deleting and j.name != name]
        assert not others, f"created {name} while {others} runs"
        there = before.jobs.get(name)
        assert there is None or (there.deleting and there.state == JOB_ACTIVE), (
            f"created {name} again while it is there ({there})"
        )
    # a step that failed runs again only for a retry token not used before; a finished step never does
    old = before.status.get("rollout")
    if old and (status.get("rollout") or {}).get("startedAt") == old.get("startedAt"):
        for create in creates:
            step = create.body["metadata"]["labels"][names.LABEL_STEP]
            phase = old["steps"].get(step, {}).get("phase")
            assert phase not in ("Succeeded", "Skipped"), f"{step} ran again after it {phase}"
            if phase == "Failed":
                token = before.annotations.get(names.ANNOTATION_RETRY, "")
                assert token and token != old.get("retryToken", ""), f"{step} re-run with used token {token!r}"
    # fail closed: workloads only move to a release whose expand (or a later one) has succeeded
    for apply in applies:
        version = apply.body["metadata"]["labels"][names.LABEL_VERSION]
        assert _succeeded_expand_at_least(world, version), f"workloads moved to {version} before its expand"
        image = apply.body["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.endswith(f":{version}")
    # a contract starts only when no pod of another release is left, not even a terminating one
    for create in creates:
        labels = create.body["metadata"]["labels"]
        if labels[names.LABEL_STEP] == "contract":
            version = labels[names.LABEL_VERSION]
            assert _succeeded_expand_at_least(world, version)
            stale = [p for p in before.pods if p.workload and p.version != version]
            assert not stale, f"contract of {version} while pods of other releases run: {stale}"
    if before.paused:
        assert not creates and not applies and not deletes
    # kstatus: the trio is always there, for this generation, and consistent
    conds = {c["type"]: c for c in status["conditions"]}
    for kind in (names.COND_READY, names.COND_RECONCILING, names.COND_STALLED):
        assert conds[kind]["observedGeneration"] == world.generation
    assert status["observedGeneration"] == world.generation
    assert not (conds[names.COND_READY]["status"] == "True" and conds[names.COND_STALLED]["status"] == "True")
    if conds[names.COND_READY]["status"] == "True":
        assert status["currentVersion"] == world.spec["version"]
    assert status["phase"] in names.PHASES
    assert set(status) <= STATUS_FIELDS, f"status fields the CRD would prune: {set(status) - STATUS_FIELDS}"
    assert not schema_problems(status, STATUS_SCHEMA), schema_problems(status, STATUS_SCHEMA)
    assert len(status.get("history") or []) <= names.HISTORY_LIMIT


def _finish_some_job(world: World, rng: random.Random) -> None:
    """A running Job ends, also one being deleted in the foreground (its pod ended before it was killed)."""
    job = rng.choice([j for j in world.jobs.values() if j.state == JOB_ACTIVE])
    ok = rng.random() < 0.8
    if job.step == names.STEP_PLAN and ok and not job.deleting:
        done = world.finish_plan()
    else:
        done = world.finish_job(job.step, ok=ok, exit_code=rng.choice([1, 3, 4]), message="boom", name=job.name)
    if rng.random() < 0.3:  # the Job's condition seen before its pod's terminated status (separate watches)
        world.pods = [
            dataclasses.replace(p, phase="Running", exit_code=None, termination_message=None, finished_at=None)
            if p.job_name == done.name
            else p
            for p in world.pods
        ]


def _random_event(world: World, rng: random.Random, ladder: list[str]) -> None:
    active = [j for j in world.jobs.values() if j.state == JOB_ACTIVE]
    roll = rng.random()
    if any(j.step == names.STEP_PLAN for j in active) and rng.random() < 0.3:  # the policy changes under a plan Job
        world.set_spec(contract=rng.choice(POLICIES))
    elif active and roll < 0.3:
        _finish_some_job(world, rng)
    elif roll < 0.33:  # lagging pod statuses arrive
        world.pods = [
            dataclasses.replace(p, phase="Failed", exit_code=1, termination_message="boom")
            if p.job_name and p.exit_code is None and world.jobs[p.job_name].state == JOB_FAILED
            else p
            for p in world.pods
        ]
    elif roll < 0.45:  # half the time the old pods are still terminating behind complete Deployments
        world.complete_rollouts(terminating=rng.random() < 0.5)
    elif roll < 0.48:
        world.finish_terminating()
    elif roll < 0.52:
        world.start_rollouts()
    elif roll < 0.56:
        world.expire_deadline()
    elif roll < 0.58:  # finished Jobs reach their TTL: first deleted in the foreground, then gone
        world.ttl_expire()
    elif roll < 0.6:  # Jobs being deleted (by their TTL or by hand) are gone with their pods
        world.ttl_gone()
    elif active and roll < 0.62:  # someone deletes a running Job in the foreground: still active while it goes
        world.delete_job(rng.choice(active).name)
    elif roll < 0.66:
        current = ladder.index(world.spec["version"])
        world.set_spec(version=ladder[max(0, min(len(ladder) - 2, current + rng.choice([1, 1, 2, -1])))])
    elif roll < 0.7:
        world.set_spec(paused=not world.spec.get("paused", False))
    elif roll < 0.8:
        world.annotations[names.ANNOTATION_RETRY] = f"r{rng.randrange(1000)}"
    elif roll < 0.84:
        world.annotations[names.ANNOTATION_APPROVE_CONTRACT] = world.spec["version"]
    elif roll < 0.9:  # policy changes, also while a plan or contract Job runs
        world.set_spec(contract=rng.choice(POLICIES))
    else:
        world.now += timedelta(seconds=rng.choice([10, 40]))


@pytest.mark.parametrize("ladder", sorted(LADDERS))
@pytest.mark.parametrize("seed", range(40))
def test_random_walk_keeps_the_safety_rules(seed: int, ladder: str) -> None:
    rng = random.Random(seed)
    versions = LADDERS[ladder]
    world = World(spec=base_spec(versions[0], contract=rng.choice(POLICIES)))
    world.auto_plan = rng.random() < 0.5  # else plan Jobs run until an event finishes them
    for _ in range(120):
        before = Before.of(world)
        decision = world.reconcile(persist=rng.random() > 0.1)  # sometimes the status write is lost
        _check(world, decision, before)
        _random_event(world, rng, versions)


@pytest.mark.parametrize("ladder", sorted(LADDERS))
@pytest.mark.parametrize("seed", range(15))
def test_random_walk_converges_once_the_world_behaves(seed: int, ladder: str) -> None:
    """After any chaos, with Jobs succeeding, rollouts completing and approvals given, it ends Ready."""
    rng = random.Random(1000 + seed)
    versions = LADDERS[ladder]
    world = World(spec=base_spec(versions[0], contract=rng.choice(POLICIES)))
    for _ in range(60):
        world.reconcile(persist=rng.random() > 0.1)
        _random_event(world, rng, versions)
    newer = versions[versions.index(world.spec["version"]) + 1]
    world.set_spec(paused=False, contract={"policy": "Auto"}, version=newer)
    world.annotations[names.ANNOTATION_RETRY] = "final"
    for _ in range(30):
        world.reconcile()
        world.ttl_gone()
        for job in [j for j in world.jobs.values() if j.state == JOB_ACTIVE]:
            if job.step == names.STEP_PLAN:
                world.finish_plan()
            else:
                world.finish_job(job.step, name=job.name)
        world.complete_rollouts()
        world.now += timedelta(seconds=60)
        if world.status.get("phase") == names.PHASE_READY:
            break
    assert world.status["phase"] == names.PHASE_READY, world.status
    assert world.status["currentVersion"] == world.spec["version"]
    assert {d.version for d in world.deployments.values()} == {world.spec["version"]}
