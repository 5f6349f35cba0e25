"""`kubectl divbase wait`, `status -o json|yaml`, `status --watch` and the history of failed rollouts, on statuses
the real planner produced (tests/unit/planner_world.py) and a fake client that replays a watch; no cluster.

The cluster test `tests/cluster/test_operator_kwok.py::test_kubectl_divbase_wait` runs the same command against
a real apiserver."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import yaml
from divbase_operator import kubectl_plugin as plugin
from divbase_operator import names
from divbase_operator.crd import build_crd
from planner_world import World, base_spec
from test_kstatus import PHASES, as_object


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ReplayClient:
    """`get` returns the first object; `watch` replays the rest, one list per watch request (a request that gets
    nothing lets its whole timeout pass on the fake clock)."""

    def __init__(
        self, first: dict[str, Any] | None, *watches: list[dict[str, Any] | None], clock: Clock | None = None
    ) -> None:
        self.first = first
        self.watches = list(watches)
        self.clock = clock or Clock()
        self.gets = 0
        self.watch_requests: list[tuple[str | None, float]] = []
        self.delivered = 0

    def get(self, name: str) -> dict[str, Any]:
        self.gets += 1
        if self.first is None:
            raise plugin.PluginError(f"divbasedatabase {name!r} in namespace 'prod' not found")
        return self.first

    def watch(self, name: str, resource_version: str | None, timeout: float) -> Iterator[dict[str, Any] | None]:
        self.watch_requests.append((resource_version, timeout))
        events = self.watches.pop(0) if self.watches else []
        if not events:
            self.clock.now += timeout
        for obj in events:
            self.clock.now += 1
            self.delivered += 1
            yield obj


def snapshot(world: World, rv: str = "1") -> dict[str, Any]:
    obj = copy.deepcopy(as_object(world))
    obj["metadata"]["resourceVersion"] = rv
    return obj


def upgrade_snapshots(fail_expand: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A Ready release 1, then what a watch delivers during the upgrade to 2."""
    world = World(spec=base_spec("1"))
    world.install("1")
    first = snapshot(world, "1")
    seen = []
    world.set_spec(version="2")
    seen.append(snapshot(world, "2"))  # generation 2, the operator has not looked yet: Ready=True is stale
    world.reconcile()
    seen.append(snapshot(world, "3"))  # expanding
    if fail_expand:
        world.finish_job(
            "expand",
            ok=False,
            exit_code=3,
            message='{"outcome":"failed","error":"database unavailable: password authentication failed"}',
        )
        world.reconcile()
        seen.append(snapshot(world, "4"))
        return first, seen
    world.finish_job("expand")
    world.reconcile()
    world.complete_rollouts()
    world.reconcile()
    seen.append(snapshot(world, "4"))  # contracting
    world.finish_job("contract")
    world.reconcile()
    seen.append(snapshot(world, "5"))
    assert world.status["phase"] == names.PHASE_READY
    return first, seen


# --- wait -------------------------------------------------------------------------------------------------------
def test_wait_exits_0_once_ready_at_the_current_generation(capsys: pytest.CaptureFixture[str]) -> None:
    _, seen = upgrade_snapshots()
    client = ReplayClient(seen[0], seen[1:])
    assert plugin.run(["wait", "db", "--timeout", "5m"], client=client, clock=client.clock) == plugin.EXIT_OK
    out = capsys.readouterr().out
    assert "condition met: Ready (release 2)" in out
    assert "(not yet observed)" in out and "Expanding" in out and "Contracting" in out
    assert client.delivered == len(seen) - 1


def test_wait_does_not_take_the_previous_generations_ready() -> None:
    _, seen = upgrade_snapshots()
    stale = seen[0]
    assert stale["metadata"]["generation"] == 2 and stale["status"]["observedGeneration"] == 1
    assert plugin.wait_verdict(stale) is None


def test_wait_fails_at_once_on_stalled_with_the_runners_message(capsys: pytest.CaptureFixture[str]) -> None:
    _, seen = upgrade_snapshots(fail_expand=True)
    never = copy.deepcopy(seen[-1])
    client = ReplayClient(seen[0], [*seen[1:], never])
    code = plugin.run(["wait", "db", "--timeout", "1h", "-q"], client=client, clock=client.clock)
    assert code == plugin.EXIT_FAILED
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "divbasedatabase/db failed (JobFailed)" in captured.err
    assert "exit code 3" in captured.err and "password authentication failed" in captured.err
    assert "kubectl divbase retry db -n prod" in captured.err
    assert client.delivered == len(seen) - 1, "it stopped at the first Stalled version, not at the timeout"


def test_a_stalled_condition_of_an_older_generation_is_not_a_failure() -> None:
    world = PHASES["expand-failed"][0]()
    world.set_spec(version="3")  # the user fixed the spec; the operator has not looked yet
    assert plugin.wait_verdict(as_object(world)) is None
    world.reconcile()
    assert plugin.wait_verdict(as_object(world)) is None, "a new expand runs"


def test_a_requested_retry_is_not_a_failure_until_the_operator_has_acted() -> None:
    world = PHASES["expand-failed"][0]()
    world.annotations[names.ANNOTATION_RETRY] = "t1"
    assert plugin.wait_verdict(as_object(world)) is None
    world.reconcile()  # the operator retries: Stalled goes away
    assert plugin.wait_verdict(as_object(world)) is None
    world.finish_job("expand", ok=False, exit_code=1, message='{"error":"boom again"}')
    world.reconcile()
    verdict = plugin.wait_verdict(as_object(world))
    assert verdict is not None and verdict.code == plugin.EXIT_FAILED and "boom again" in verdict.message


@pytest.mark.parametrize("case", ["downgrade-refused", "rolled-back"])
def test_other_stalls_fail_the_wait(case: str) -> None:
    verdict = plugin.wait_verdict(as_object(PHASES[case][0]()))
    assert verdict is not None and verdict.code == plugin.EXIT_FAILED


@pytest.mark.parametrize("case", ["paused-mid-rollout", "awaiting-manual", "deploying", "rolling-back"])
def test_unfinished_rollouts_keep_the_wait_waiting(case: str) -> None:
    assert plugin.wait_verdict(as_object(PHASES[case][0]())) is None


def test_wait_times_out_with_its_own_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    world = PHASES["awaiting-manual"][0]()
    client = ReplayClient(snapshot(world))
    code = plugin.run(["wait", "db", "--timeout", "150s"], client=client, clock=client.clock)
    assert code == plugin.EXIT_TIMEOUT
    err = capsys.readouterr().err
    assert "timed out after 2m30s waiting for divbasedatabase/db to be Ready" in err
    assert "last seen: AwaitingContract" in err
    # watches are re-opened from a fresh read at least every minute, and never past the deadline
    assert [t for _, t in client.watch_requests] == [60, 60, 30]
    assert client.gets == 3


def test_wait_with_timeout_0_looks_once(capsys: pytest.CaptureFixture[str]) -> None:
    ready = ReplayClient(snapshot(PHASES["ready"][0]()))
    assert plugin.run(["wait", "db", "--timeout", "0"], client=ready, clock=ready.clock) == plugin.EXIT_OK
    busy = ReplayClient(snapshot(PHASES["expanding"][0]()))
    assert plugin.run(["wait", "db", "--timeout", "0"], client=busy, clock=busy.clock) == plugin.EXIT_TIMEOUT
    assert busy.watch_requests == []


def test_wait_on_a_deleted_or_missing_resource_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    client = ReplayClient(snapshot(PHASES["expanding"][0]()), [None])
    assert plugin.run(["wait", "db"], client=client, clock=client.clock) == plugin.EXIT_ERROR
    assert "was deleted while waiting" in capsys.readouterr().err
    missing = ReplayClient(None)
    assert plugin.run(["wait", "db"], client=missing, clock=missing.clock) == plugin.EXIT_ERROR
    assert "not found" in capsys.readouterr().err
    terminating = snapshot(PHASES["expanding"][0]())
    terminating["metadata"]["deletionTimestamp"] = "2026-11-25T12:00:00Z"
    verdict = plugin.wait_verdict(terminating)
    assert verdict is not None and verdict.code == plugin.EXIT_ERROR


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("90s", 90), ("1h30m", 5400), ("45", 45), ("0", 0), ("1.5s", 1.5), ("500ms", 0.5)],
)
def test_parse_timeout(text: str, seconds: float) -> None:
    assert plugin.parse_timeout(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "10x", "m10", "10m junk"])
def test_parse_timeout_refuses(text: str) -> None:
    with pytest.raises(Exception, match="invalid duration"):
        plugin.parse_timeout(text)


# --- status -o json|yaml, --watch ---------------------------------------------------------------------------------
@pytest.mark.parametrize("output", ["json", "yaml"])
def test_status_as_data(output: str, capsys: pytest.CaptureFixture[str]) -> None:
    client = ReplayClient(snapshot(PHASES["expand-failed"][0]()))
    assert plugin.run(["status", "db", "-o", output], client=client) == 0
    text = capsys.readouterr().out
    doc = json.loads(text) if output == "json" else yaml.safe_load(text)
    assert doc["phase"] == names.PHASE_FAILED and doc["stalled"] is True and doc["ready"] is False
    assert doc["lastFailure"]["message"] == "boom" and doc["lastFailure"]["exitCode"] == 1
    assert doc["rollout"]["currentStep"] == "expand"
    assert doc["rollout"]["progress"].startswith("failed after")
    assert [s["step"] for s in doc["rollout"]["steps"]] == ["expand", "deploy", "contract"]
    assert doc["next"] == "kubectl divbase retry db -n prod"


def test_status_watch_prints_each_change_once(capsys: pytest.CaptureFixture[str]) -> None:
    _, seen = upgrade_snapshots()
    same_again = copy.deepcopy(seen[2])
    same_again["metadata"]["resourceVersion"] = "99"  # a write that changes nothing shown
    client = ReplayClient(seen[0], [seen[1], seen[2], same_again, seen[3], None])
    assert plugin.run(["status", "db", "--watch", "-o", "json"], client=client, clock=client.clock) == 0
    lines = capsys.readouterr().out.splitlines()
    docs = [json.loads(line) for line in lines[:-1]]
    assert [d["phase"] for d in docs] == ["Ready", "Expanding", "Contracting", "Ready"]
    assert [d["generation"] - d["observedGeneration"] for d in docs] == [1, 0, 0, 0]
    assert lines[-1] == "divbasedatabase/db was deleted"


# --- a failed rollout is not "running", and history keeps it as Failed -------------------------------------------
def test_status_of_a_failed_rollout_says_when_it_failed_not_running_for() -> None:
    world = PHASES["expand-failed"][0]()
    world.now += timedelta(hours=1)
    world.reconcile()  # an hour later, nothing changed
    failed_at = world.status["lastFailure"]["time"]
    text = plugin.format_status(as_object(world), now=world.now)
    rollout_line = next(line for line in text.splitlines() if line.strip().startswith("started"))
    assert "running for" not in rollout_line and "1h" not in rollout_line
    assert f"failed after 0s (at {failed_at}); waiting for a retry or a new spec.version" in rollout_line


def test_history_lists_the_failed_rollout_first_and_keeps_it_as_failed_when_superseded() -> None:
    world = PHASES["expand-failed"][0]()
    lines = plugin.format_history(as_object(world)).splitlines()
    assert lines[1].split()[:3] == ["1", "2", "Failed"]
    assert lines[2].split()[:3] == ["(empty)", "1", "Succeeded"]
    world.set_spec(version="3")  # instead of a retry, the next release
    world.reconcile()
    assert world.status["history"][0]["result"] == names.RESULT_FAILED
    lines = plugin.format_history(as_object(world)).splitlines()
    assert [line.split()[:3] for line in lines[1:4]] == [
        ["1", "3", "Running"],
        ["1", "2", "Failed"],
        ["(empty)", "1", "Succeeded"],
    ]


def test_a_running_rollout_replaced_by_a_new_version_is_superseded() -> None:
    world = PHASES["deploying"][0]()
    world.set_spec(version="3")
    world.reconcile()
    assert world.status["history"][0]["result"] == names.RESULT_SUPERSEDED


# --- printer columns --------------------------------------------------------------------------------------------
def test_wide_printer_columns_point_at_fields_the_planner_writes() -> None:
    columns = build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    wide = {c["name"]: c["jsonPath"] for c in columns if c.get("priority") == 1}
    assert set(wide) == {"Step", "Active Job", "Message"}
    assert all(c.get("priority", 0) == 0 for c in columns if c["name"] not in wide)
    status = PHASES["expanding"][0]().status
    assert status["rollout"]["currentStep"] == "expand" and status["activeJob"]
    assert wide["Step"] == ".status.rollout.currentStep" and wide["Active Job"] == ".status.activeJob"
    assert wide["Message"] == '.status.conditions[?(@.type=="Ready")].message'
    ready = PHASES["ready"][0]().status
    assert "currentStep" not in ready["rollout"], "a finished rollout has no current step"
    first = PHASES["first-install"][0]().status
    assert first["rollout"]["currentStep"] == "expand"
