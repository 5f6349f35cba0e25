"""`kubectl divbase`: formatting and the patches it sends, on statuses the real planner produced; no cluster.

The command flow (`run`) is exercised with a small fake client standing in for the three API calls, so argument
parsing, refusals and the one-line errors are covered too. Talking to a real apiserver is the cluster tests' job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from divbase_operator import kubectl_plugin as plugin
from divbase_operator import names
from kubernetes.client.exceptions import ApiException
from planner_world import World
from test_kstatus import PHASES, as_object

NOW = datetime(2026, 11, 25, 13, 0, 0, tzinfo=UTC)


def obj_for(case: str) -> dict[str, Any]:
    world = PHASES[case][0]()
    obj = as_object(world)
    obj["metadata"]["resourceVersion"] = "42"
    return obj


class FakeClient:
    def __init__(
        self,
        obj: dict[str, Any] | None = None,
        get_error: int | None = None,
        patch_error: int | None = None,
        namespace: str = "prod",
    ) -> None:
        self.obj, self.get_error, self.patch_error, self.namespace = obj, get_error, patch_error, namespace
        self.patches: list[dict[str, Any]] = []

    def _fail(self, status: int, verb: str, name: str) -> None:
        raise plugin.PluginError(plugin.describe_api_error(ApiException(status=status), verb, name, self.namespace))

    def get(self, name: str) -> dict[str, Any]:
        if self.get_error:
            self._fail(self.get_error, "get", name)
        assert self.obj is not None
        return self.obj

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.patch_error:
            self._fail(self.patch_error, "patch", name)
        self.patches.append(body)
        return self.obj or {}

    def get_configmap(self, name: str) -> dict[str, Any] | None:
        """The plan ConfigMap as the operator published it (the planner world's SQL)."""
        plan = ((self.obj or {}).get("status") or {}).get("contractPlan") or {}
        return {
            "data": {
                names.PLAN_DATA_SQL: World.plan_sql,
                "digest": plan.get("digest"),
                names.PLAN_DATA_TRUNCATED: "false",
            }
        }


# --- formatting ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0, "0s"), (59.6, "1m00s"), (61, "1m01s"), (3600, "1h00m"), (3 * 86400 + 7200, "3d2h"), (-5, "0s")],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert plugin.format_duration(seconds) == text


def test_status_of_a_running_deploy_shows_steps_jobs_and_durations() -> None:
    obj = obj_for("deploying")
    rollout = obj["status"]["rollout"]
    started = plugin.parse_time(rollout["steps"]["deploy"]["startedAt"])
    assert started is not None
    text = plugin.format_status(obj, now=started + timedelta(seconds=75))
    assert "Phase:       Deploying" in text
    assert "Version:     2 (spec)  current: 1  target: 2" in text
    assert "1 -> 2" in text and "registry.example/divbase:2" in text
    expand_job = rollout["steps"]["expand"]["job"]
    step_lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ") and line.split()}
    assert "Succeeded" in step_lines["expand"] and expand_job in step_lines["expand"]
    assert "Running" in step_lines["deploy"] and "1m15s" in step_lines["deploy"]
    assert "Pending" in step_lines["contract"]
    assert "Conditions:" in text and "Reconciling" in text
    assert "approve-contract" not in text


def test_status_of_a_failed_expand_shows_the_jobs_message_and_how_to_retry() -> None:
    obj = obj_for("expand-failed")
    text = plugin.format_status(obj, now=NOW)
    failure = obj["status"]["lastFailure"]
    assert f"Last failure: expand of release 2 (Job {failure['job']}, exit code 1, BackoffLimitExceeded)" in text
    assert "  boom" in text.splitlines()
    assert "kubectl divbase retry db -n prod" in text


def test_status_of_a_waiting_contract_says_how_to_approve() -> None:
    text = plugin.format_status(obj_for("awaiting-manual"), now=NOW)
    assert "Phase:       AwaitingContract" in text
    assert "kubectl divbase approve-contract db -n prod" in text and "release 2 waits" in text
    assert "Plan:        sha256:" in text and "kubectl get configmap db-contract-plan -n prod" in text


def test_status_without_status_hints_at_the_operator() -> None:
    obj = {"metadata": {"name": "db", "namespace": "prod", "generation": 1}, "spec": {"version": "1"}}
    text = plugin.format_status(obj, now=NOW)
    assert "no status yet" in text and "observed -" in text and "has not seen the latest spec" in text


def test_history_lists_rollouts_newest_first_with_step_durations() -> None:
    obj = obj_for("ready")
    world = PHASES["ready"][0]()
    world.set_spec(version="2")
    for act in (
        lambda: None,
        lambda: world.finish_job("expand"),
        world.complete_rollouts,
        lambda: world.finish_job("contract"),
    ):
        act()
        world.reconcile()
    obj = as_object(world)
    lines = plugin.format_history(obj).splitlines()
    assert lines[0].split()[:5] == ["FROM", "TO", "RESULT", "STARTED", "DURATION"]
    assert lines[1].split()[:3] == ["1", "2", "Succeeded"]
    assert lines[2].split()[:3] == ["(empty)", "1", "Succeeded"]
    assert "Succeeded 5s" in lines[1]  # each World.reconcile advances the clock by 5 seconds


def test_history_when_empty() -> None:
    assert "No rollouts recorded for prod/db" in plugin.format_history(
        {"metadata": {"name": "db", "namespace": "prod"}, "status": {}}
    )


# --- approve-contract -----------------------------------------------------------------------------------------------
def test_approve_defaults_to_the_waiting_version() -> None:
    obj = obj_for("awaiting-manual")
    body, message = plugin.approval_patch(obj, None)
    digest = obj["status"]["contractPlan"]["digest"].split(":")[1][:12]
    assert body == {
        "metadata": {"resourceVersion": "42", "annotations": {names.ANNOTATION_APPROVE_CONTRACT: f"2@{digest}"}}
    }
    assert "approved the contract of release 2" in message and digest in message


def test_approve_accepts_another_spelling_of_the_waiting_release() -> None:
    """`2.0` is release 2 (PEP 440); the annotation names the release as the rollout spells it."""
    body, _ = plugin.approval_patch(obj_for("awaiting-manual"), "2.0")
    assert body["metadata"]["annotations"][names.ANNOTATION_APPROVE_CONTRACT].startswith("2@")
    body, _ = plugin.approval_patch(obj_for("expanding"), "v2")
    assert body["metadata"]["annotations"] == {names.ANNOTATION_APPROVE_CONTRACT: "2"}


def test_approve_refuses_another_version() -> None:
    with pytest.raises(plugin.PluginError, match="for release 2, not 3"):
        plugin.approval_patch(obj_for("awaiting-manual"), "3")


@pytest.mark.parametrize("case", ["ready", "awaiting-delay", "expand-failed", "contracting"])
def test_approve_refuses_when_nothing_waits(case: str) -> None:
    with pytest.raises(
        plugin.PluginError, match="nothing waits for contract approval on divbasedatabase 'db' in namespace 'prod'"
    ):
        plugin.approval_patch(obj_for(case), None)


def test_explicit_version_pre_approves_a_rollout_in_progress() -> None:
    body, message = plugin.approval_patch(obj_for("expanding"), "2")
    assert body["metadata"]["annotations"] == {names.ANNOTATION_APPROVE_CONTRACT: "2"}
    assert message.startswith("pre-approved")
    with pytest.raises(plugin.PluginError):
        plugin.approval_patch(obj_for("expanding"), "3")


def test_the_planner_accepts_the_plugins_approval() -> None:
    """The annotation the plugin writes is what the planner waits for: the contract Job starts."""
    world = PHASES["awaiting-manual"][0]()
    body, _ = plugin.approval_patch(as_object(world), None)
    world.annotations.update(body["metadata"]["annotations"])
    world.reconcile()
    assert world.status["phase"] == names.PHASE_CONTRACTING
    assert world.active_job("contract")


# --- retry ----------------------------------------------------------------------------------------------------------
def test_retry_sets_a_new_token_each_time_and_the_planner_retries() -> None:
    world = PHASES["expand-failed"][0]()
    body, message = plugin.retry_patch(as_object(world))
    second, _ = plugin.retry_patch(as_object(world))
    token = body["metadata"]["annotations"][names.ANNOTATION_RETRY]
    assert token and token != second["metadata"]["annotations"][names.ANNOTATION_RETRY]
    assert "retry requested for expand" in message
    world.annotations.update(body["metadata"]["annotations"])
    world.reconcile()
    assert world.status["phase"] == names.PHASE_EXPANDING
    assert world.active_job("expand")


@pytest.mark.parametrize("case", ["ready", "deploying", "awaiting-manual"])
def test_retry_refuses_when_nothing_failed(case: str) -> None:
    with pytest.raises(plugin.PluginError, match="nothing to retry"):
        plugin.retry_patch(obj_for(case))


# --- command line and errors --------------------------------------------------------------------------------------
def test_global_flags_before_or_after_the_subcommand() -> None:
    parser = plugin.build_parser()
    after = parser.parse_args(["status", "db", "-n", "team", "--context", "prod"])
    before = parser.parse_args(["-n", "team", "--context", "prod", "status", "db"])
    neither = parser.parse_args(["history", "db"])
    assert (after.namespace, after.context) == (before.namespace, before.context) == ("team", "prod")
    assert neither.namespace is None and neither.context is None


def test_run_status_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert plugin.run(["status", "db"], client=FakeClient(obj_for("ready"))) == 0
    assert "Phase:       Ready" in capsys.readouterr().out


def test_run_approve_patches(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeClient(obj_for("awaiting-manual"))
    assert plugin.run(["approve-contract", "db"], client=fake) == 0
    assert fake.patches[0]["metadata"]["annotations"][names.ANNOTATION_APPROVE_CONTRACT].startswith("2@")


def test_run_refusal_is_one_line_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeClient(obj_for("ready"))
    assert plugin.run(["retry", "db"], client=fake) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: nothing to retry") and err.count("\n") == 1
    assert fake.patches == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (404, "error: divbasedatabase 'db' in namespace 'prod' not found"),
        (403, "error: forbidden: you may not get divbasedatabase 'db' in namespace 'prod'"),
    ],
)
def test_run_api_errors_name_resource_and_namespace(
    status: int, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert plugin.run(["status", "db"], client=FakeClient(get_error=status)) == 1
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1


def test_forbidden_patch_names_the_verb(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeClient(obj_for("awaiting-manual"), patch_error=403)
    assert plugin.run(["approve-contract", "db"], client=fake) == 1
    assert "may not patch divbasedatabase 'db' in namespace 'prod'" in capsys.readouterr().err


def test_missing_kubeconfig_is_a_clear_error(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert plugin.run(["--kubeconfig", str(missing), "status", "db"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot load kubeconfig") and err.count("\n") == 1


def test_namespace_comes_from_the_context(tmp_path: Any) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("""
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: not-a-real-token}}]
contexts:
  - {name: a, context: {cluster: c, user: u, namespace: team-a}}
  - {name: b, context: {cluster: c, user: u}}
current-context: a
""")
    assert plugin.Client(None, None, str(kubeconfig)).namespace == "team-a"
    assert plugin.Client("b", None, str(kubeconfig)).namespace == "default"
    assert plugin.Client("b", "x", str(kubeconfig)).namespace == "x"
    with pytest.raises(plugin.PluginError, match="context 'zzz' not found"):
        plugin.Client("zzz", None, str(kubeconfig))
