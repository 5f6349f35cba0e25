"""An approval binds what runs (issue 14, item 4): the contract step's arguments carry the approved digest, and
divbase-migrate's own parser takes them. Against PostgreSQL: tests/integration/test_expect_digest.py."""

from __future__ import annotations

import copy
import dataclasses
import random
from typing import Any

import pytest
from divbase_migrations import cli, contract
from divbase_operator import kubectl_plugin as plugin
from divbase_operator import names
from divbase_operator.planner import ApplyConfigMap, CreateJob, EmitEvent
from planner_world import World, base_spec

DIGEST = contract.plan_digest('ALTER TABLE "user" DROP COLUMN name;\n')


def test_contract_args_carry_the_digest_and_the_runner_parses_them() -> None:
    args = contract.step_args("contract", "2", 5, None, expect_digest=DIGEST)
    assert args == ["contract", "--release", "2", "--lock-timeout", "5s", contract.ARG_EXPECT_DIGEST, DIGEST]
    parsed = cli.parser().parse_args(args)
    assert parsed.expect_digest == DIGEST and parsed.release == "2"
    assert cli.parser().parse_args(["contract", "--release", "2"]).expect_digest is None


@pytest.mark.parametrize(
    ("step", "digest"),
    [
        ("expand", DIGEST),
        ("plan", DIGEST),
        ("contract", "sha256:abc"),
        ("contract", DIGEST.upper()),
        ("contract", "md5:" + "0" * 64),
    ],
)
def test_a_digest_only_binds_a_contract_and_only_a_sha256(step: str, digest: str) -> None:
    with pytest.raises(ValueError):
        contract.step_args(step, "2", expect_digest=digest)


def test_the_runner_refuses_a_malformed_digest_as_bad_input() -> None:
    with pytest.raises(SystemExit) as info:
        cli.parser().parse_args(["contract", "--release", "2", contract.ARG_EXPECT_DIGEST, "sha256:abc"])
    assert info.value.code == contract.EXIT_USAGE
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["expand", "--release", "2", contract.ARG_EXPECT_DIGEST, DIGEST])


# --- the operator passes the approved digest ----------------------------------------------------------------------
def _contract_args(world: World) -> list[str]:
    [job] = [a for a in world.reconcile().actions if isinstance(a, CreateJob)]
    assert job.body["metadata"]["labels"][names.LABEL_STEP] == names.STEP_CONTRACT
    return job.body["spec"]["template"]["spec"]["containers"][0]["args"]


def _upgrade_to_contract(world: World) -> None:
    world.set_spec(version="2")
    world.reconcile()
    world.finish_job("expand")
    world.reconcile()
    world.complete_rollouts()


def test_a_manual_contract_job_runs_only_the_approved_plan() -> None:
    world = World(spec=base_spec("1", contract={"policy": "Manual"}))
    world.install("1")
    _upgrade_to_contract(world)
    world.reconcile()  # plan Job
    world.reconcile()  # plan published
    digest = world.status["contractPlan"]["digest"]
    assert digest == contract.plan_digest(world.plan_sql)
    world.annotations[names.ANNOTATION_APPROVE_CONTRACT] = f"2@{digest.split(':')[1][:12]}"
    args = _contract_args(world)
    assert args[-2:] == [contract.ARG_EXPECT_DIGEST, digest]
    assert cli.parser().parse_args(args).expect_digest == digest


def test_a_contract_refused_for_another_plan_is_planned_and_approved_again() -> None:
    """The runner refused (exit 5): the image or database moved. A retry makes a new plan; an approval naming the
    old one no longer holds when the SQL differs."""
    world = World(spec=base_spec("1", contract={"policy": "Manual"}))
    world.install("1")
    _upgrade_to_contract(world)
    world.reconcile()
    world.reconcile()
    old = world.status["contractPlan"]["digest"]
    world.annotations[names.ANNOTATION_APPROVE_CONTRACT] = f"2@{old.split(':')[1][:12]}"
    _contract_args(world)
    world.finish_job(
        "contract",
        ok=False,
        exit_code=contract.EXIT_PRECONDITION,
        message='{"error":"the contract of release 2 would run SQL sha256:1, not the approved plan"}',
    )
    world.reconcile()
    assert world.condition(names.COND_STALLED)["status"] == "True"
    assert "not the approved plan" in world.status["lastFailure"]["message"]
    world.plan_sql = 'ALTER TABLE "user" DROP COLUMN name;\nDROP TABLE secrets;\n'  # what the new image renders
    world.annotations[names.ANNOTATION_RETRY] = "r1"
    world.reconcile()  # the new plan Job
    decision = world.reconcile()
    new = world.status["contractPlan"]["digest"]
    assert new != old and not [a for a in decision.actions if isinstance(a, CreateJob)]
    assert world.condition(names.COND_READY)["reason"] == names.REASON_PLAN_CHANGED
    world.annotations[names.ANNOTATION_APPROVE_CONTRACT] = f"2@{new.split(':')[1][:12]}"
    assert _contract_args(world)[-1] == new


@pytest.mark.parametrize("policy", [{"policy": "Auto"}, {"policy": "Delayed", "delaySeconds": 0}])
def test_other_policies_and_first_installs_pass_no_digest(policy: dict) -> None:
    world = World(spec=base_spec("1", contract={"policy": "Manual"}))
    world.reconcile()
    world.finish_job("expand")
    assert contract.ARG_EXPECT_DIGEST not in _contract_args(world), "a first install contracts without a plan"
    world = World(spec=base_spec("1", contract=policy))
    world.install("1")
    _upgrade_to_contract(world)
    assert contract.ARG_EXPECT_DIGEST not in _contract_args(world)


# --- the kubectl plugin approves only the SQL it published ---------------------------------------------------------
class PlanClient:
    """The plugin's API calls on a resource awaiting approval, with the plan ConfigMap as a test leaves it."""

    def __init__(self, obj: dict[str, Any], configmap: dict[str, Any] | None) -> None:
        self.obj, self.configmap, self.patches = obj, configmap, []  # type: ignore[var-annotated]

    def get(self, name: str) -> dict[str, Any]:
        return self.obj

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(body)
        return self.obj

    def get_configmap(self, name: str) -> dict[str, Any] | None:
        assert name == self.obj["status"]["contractPlan"]["configMap"]
        return self.configmap


def _awaiting() -> tuple[World, dict[str, Any], dict[str, Any]]:
    world = World(spec=base_spec("1", contract={"policy": "Manual"}))
    world.install("1")
    _upgrade_to_contract(world)
    world.reconcile()
    world.reconcile()
    obj = {
        "metadata": {"name": "db", "namespace": "prod", "resourceVersion": "7"},
        "spec": world.spec,
        "status": world.status,
    }
    [configmap] = world.configmaps.values()
    return world, obj, configmap


def test_the_plugin_approves_the_published_plan(capsys: pytest.CaptureFixture[str]) -> None:
    _, obj, configmap = _awaiting()
    client = PlanClient(obj, configmap)
    assert plugin.run(["approve-contract", "db"], client=client) == 0
    digest = obj["status"]["contractPlan"]["digest"]
    assert (
        client.patches[0]["metadata"]["annotations"][names.ANNOTATION_APPROVE_CONTRACT]
        == f"2@{digest.split(':')[1][:12]}"
    )


@pytest.mark.parametrize("tamper", ["sql", "missing", "no-sql", "says-truncated", "sql-and-says-truncated"])
def test_the_plugin_refuses_a_plan_configmap_changed_after_publishing(
    tamper: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, obj, configmap = _awaiting()
    changed = copy.deepcopy(configmap)
    if tamper == "sql":
        changed["data"][names.PLAN_DATA_SQL] = "SELECT 1; -- looks harmless\n"
    elif tamper == "no-sql":
        del changed["data"][names.PLAN_DATA_SQL]
    elif tamper.endswith("says-truncated"):  # only status says the SQL was left out: the flag here is anyone's
        changed["data"][names.PLAN_DATA_TRUNCATED] = "true"
        changed["data"][names.PLAN_DATA_SQL] = "-- too large to publish, trust me\n"
        if tamper.startswith("sql-"):
            changed["data"][names.PLAN_DATA_SQL] = "DROP TABLE user_credentials;\n"
    client = PlanClient(obj, None if tamper == "missing" else changed)
    assert plugin.run(["approve-contract", "db"], client=client) == 1
    assert client.patches == []
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert ("is missing" if tamper == "missing" else "is not the plan sha256:") in err


def test_a_plan_too_large_to_publish_is_approved_by_digest_with_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    world = World(spec=base_spec("1", contract={"policy": "Manual"}))
    noise = random.Random(14)
    world.plan_sql = "".join(f"-- {noise.getrandbits(128):032x}\n" for _ in range(400))  # too big for a summary
    world.install("1")
    _upgrade_to_contract(world)
    world.reconcile()
    world.reconcile()
    [configmap] = world.configmaps.values()
    assert configmap["data"][names.PLAN_DATA_TRUNCATED] == "true"
    assert world.status["contractPlan"]["truncated"] is True, "status says so: the plugin believes only status"
    obj = {
        "metadata": {"name": "db", "namespace": "prod", "resourceVersion": "7"},
        "spec": world.spec,
        "status": world.status,
    }
    assert plugin.run(["approve-contract", "db"], client=PlanClient(obj, configmap)) == 0
    assert "too large to publish, so it was not checked here" in capsys.readouterr().out


def test_status_records_whether_the_published_plan_carries_its_sql() -> None:
    world, _, configmap = _awaiting()
    assert world.status["contractPlan"]["truncated"] is False
    assert configmap["data"][names.PLAN_DATA_TRUNCATED] == "false"
    world.configmaps[configmap["metadata"]["name"]]["data"][names.PLAN_DATA_TRUNCATED] = "true"
    assert _republished(world.reconcile()), "a changed flag is a changed ConfigMap: published again, with its SQL"
    assert world.status["contractPlan"]["truncated"] is False
    del world.status["contractPlan"]["truncated"]  # recorded by an operator that did not say: taken from the
    assert not _republished(world.reconcile())  # ConfigMap while it is as published (its fingerprint in status)
    assert world.status["contractPlan"]["truncated"] is False


# --- the operator republishes a plan ConfigMap someone changed ------------------------------------------------------
def _republished(decision: Any) -> list[Any]:
    return [a for a in decision.actions if isinstance(a, ApplyConfigMap)]


def test_a_changed_plan_configmap_is_published_again_with_a_warning() -> None:
    world, _, configmap = _awaiting()
    assert not _republished(world.reconcile()), "an intact ConfigMap is left alone"
    name = configmap["metadata"]["name"]
    tampered = copy.deepcopy(configmap)
    tampered["data"][names.PLAN_DATA_SQL] = "SELECT 1; -- nothing to see\n"
    world.configmaps[name] = tampered
    decision = world.reconcile()
    [apply] = _republished(decision)
    assert apply.body["data"] == configmap["data"]
    [warning] = [a for a in decision.actions if isinstance(a, EmitEvent) and a.reason == names.EVENT_PLAN_REPUBLISHED]
    assert warning.type == "Warning" and name in warning.message
    assert not _republished(world.reconcile()), "published once; intact again"
    assert world.condition(names.COND_READY)["reason"] == names.REASON_AWAITING_APPROVAL


@pytest.mark.parametrize("key", ["digest", "revisions", names.PLAN_DATA_TRUNCATED])
def test_any_changed_key_counts(key: str) -> None:
    world, _, configmap = _awaiting()
    published = copy.deepcopy(configmap["data"])
    world.configmaps[configmap["metadata"]["name"]] = changed = copy.deepcopy(configmap)
    changed["data"][key] = "true" if key == names.PLAN_DATA_TRUNCATED else "x"
    [apply] = _republished(world.reconcile())
    assert apply.body["data"] == published


def test_a_deleted_plan_configmap_is_published_again_quietly() -> None:
    world, _, configmap = _awaiting()
    del world.configmaps[configmap["metadata"]["name"]]
    decision = world.reconcile()
    assert [a.body["data"] for a in _republished(decision)] == [configmap["data"]]
    assert not [a for a in decision.actions if isinstance(a, EmitEvent) and a.reason == names.EVENT_PLAN_REPUBLISHED]


def test_without_the_plan_pod_the_republished_configmap_names_the_digest_and_the_command() -> None:
    world, obj, configmap = _awaiting()
    world.pods = [p for p in world.pods if p.job_name != world.status["contractPlan"]["job"]]  # TTL took the Job
    world.configmaps[configmap["metadata"]["name"]] = changed = copy.deepcopy(configmap)
    changed["data"][names.PLAN_DATA_SQL] = "SELECT 1;\n"
    [apply] = _republished(world.reconcile())
    data = apply.body["data"]
    digest = world.status["contractPlan"]["digest"]
    assert data[names.PLAN_DATA_TRUNCATED] == "true" and data["digest"] == digest
    assert world.status["contractPlan"]["truncated"] is True
    assert (
        digest in data[names.PLAN_DATA_SQL]
        and "divbase-migrate plan contract --release 2 --sql" in data[names.PLAN_DATA_SQL]
    )
    assert not _republished(world.reconcile())
    # the plugin approves it by digest, saying it could not check the SQL
    client = PlanClient({**obj, "status": world.status}, apply.body)
    assert plugin.run(["approve-contract", "db"], client=client) == 0


# --- the contract runs the image that rendered the plan -------------------------------------------------------------
HEX = "4f" * 32


@pytest.mark.parametrize(
    ("image_id", "expected"),
    [
        (f"docker-pullable://registry.example/divbase@sha256:{HEX}", f"registry.example/divbase@sha256:{HEX}"),
        (f"registry.example/divbase@sha256:{HEX}", f"registry.example/divbase@sha256:{HEX}"),
        (f"mirror.internal/divbase@sha256:{HEX}", f"registry.example/divbase@sha256:{HEX}"),  # same manifest, our name
        (
            f"sha256:{HEX}",
            "registry.example/divbase:2",
        ),  # an image ID names no manifest: the tag, and the runner's check
        ("local://registry.example/divbase", "registry.example/divbase:2"),
        (None, "registry.example/divbase:2"),
    ],
)
def test_a_manual_contract_runs_the_plan_pods_image_by_digest(image_id: str | None, expected: str) -> None:
    world = World(spec=base_spec("1", contract={"policy": "Manual"}))
    world.install("1")
    _upgrade_to_contract(world)
    world.reconcile()  # the plan Job, finished at once by the world
    [plan_pod] = [p for p in world.pods if p.job_name and "-plan-" in p.job_name]
    world.pods = [p for p in world.pods if p is not plan_pod] + [dataclasses.replace(plan_pod, image_id=image_id)]
    world.reconcile()  # published
    digest = world.status["contractPlan"]["digest"]
    world.annotations[names.ANNOTATION_APPROVE_CONTRACT] = f"2@{digest.split(':')[1][:12]}"
    [job] = [a for a in world.reconcile().actions if isinstance(a, CreateJob)]
    [container] = job.body["spec"]["template"]["spec"]["containers"]
    assert container["image"] == expected
    assert container["args"][-2:] == [contract.ARG_EXPECT_DIGEST, digest]


def test_the_pod_observation_keeps_the_image_id() -> None:
    from divbase_operator.observed import pod_from_body

    pod = pod_from_body(
        {
            "metadata": {"name": "p"},
            "status": {
                "containerStatuses": [{"imageID": f"ghcr.io/x@sha256:{HEX}", "state": {"terminated": {"exitCode": 0}}}]
            },
        }
    )
    assert pod.image_id == f"ghcr.io/x@sha256:{HEX}"
    assert (
        pod_from_body({"metadata": {"name": "p"}, "status": {"containerStatuses": [{"imageID": 7}]}}).image_id is None
    )
