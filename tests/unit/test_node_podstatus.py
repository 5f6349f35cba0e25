"""The pod status the node agent reports (divbase_localcluster.node.podstatus), rendered without a cluster."""

from __future__ import annotations

from typing import Any, cast

import pytest
from divbase_localcluster.node import podstatus
from divbase_localcluster.node.container import Container
from divbase_localcluster.node.hooks import HookRun
from divbase_localcluster.node.shimproc import ShimProcess

NOW, LATER = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"
RUNNING = cast(ShimProcess, object())  # a container runs while it has a shim; its status never looks into it


def running(name: str, ready: bool = True, poststart: bool = False, **kw: Any) -> Container:
    c = Container(
        {"name": name, "image": "busybox"},
        False,
        proc=RUNNING,
        pid=42,
        running_since=NOW,
        ever_started=True,
        ready=ready,
        started=True,
        image_id="busybox@sha256:ab",
        **kw,
    )
    if poststart:
        c.poststart = HookRun("PostStart")
    return c


def exited(name: str, code: int, init: bool = False, final: bool = True) -> Container:
    term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}
    c = Container({"name": name}, init, ever_started=True, pid=7)
    if final:
        c.terminated = term
    else:
        c.last_terminated, c.waiting = term, ("CrashLoopBackOff", "back-off 1s")
    return c


@pytest.mark.parametrize(
    ("init", "containers", "policy", "phase"),
    [
        ([], [running("a")], "Always", "Running"),
        ([], [running("a", poststart=True)], "Always", "Pending"),  # not running until postStart returned
        ([], [Container({"name": "a"}, False)], "Always", "Pending"),
        ([exited("i", 1, init=True)], [Container({"name": "a"}, False)], "Never", "Failed"),
        ([exited("i", 0, init=True)], [Container({"name": "a"}, False)], "Never", "Pending"),
        ([Container({"name": "i"}, True)], [running("a")], "Always", "Pending"),  # init not done
        ([], [exited("a", 0), exited("b", 0)], "Never", "Succeeded"),
        ([], [exited("a", 0), exited("b", 1)], "Never", "Failed"),
        ([], [exited("a", 0), exited("b", 1)], "OnFailure", "Running"),
        ([], [exited("a", 0)], "Always", "Running"),
        ([], [exited("a", 1, final=False)], "Always", "Running"),  # in back-off: stopped, not waiting
    ],
)
def test_phase_is_the_kubelets(init: list[Container], containers: list[Container], policy: str, phase: str) -> None:
    assert podstatus.phase(init, containers, policy) == phase


def test_container_status_states() -> None:
    up = podstatus.container_status(running("a"))
    assert up["state"] == {"running": {"startedAt": NOW}}
    assert up["ready"] is True and up["started"] is True and up["containerID"] == "local://42"
    hooked = podstatus.container_status(running("a", poststart=True, waiting=("ContainerCreating", "")))
    assert hooked["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert hooked["ready"] is False and hooked["started"] is False
    backoff = podstatus.container_status(exited("b", 1, final=False))
    assert backoff["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1s"}}
    assert backoff["lastState"] == {"terminated": {"exitCode": 1, "reason": "Error"}}
    never = podstatus.container_status(Container({"name": "c", "image": "x"}, False))
    assert never["imageID"] == "" and "containerID" not in never and never["lastState"] == {}


def conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_ready_conditions_and_their_transition_times() -> None:
    a, b = running("a"), running("b", ready=False)
    facts = podstatus.PodFacts(phase="Running", ip="10.0.0.5", start_time=NOW, init_containers=[], containers=[a, b])
    status, transitions = podstatus.render(facts, {}, NOW)
    c = conds(status)
    assert c["Ready"]["status"] == "False" and c["Ready"]["reason"] == "ContainersNotReady"
    assert c["Ready"]["message"] == "containers with unready status: [b]"
    assert c["Initialized"]["status"] == "True" and "reason" not in c["Initialized"]
    assert status["podIP"] == "10.0.0.5" and status["startTime"] == NOW and "reason" not in status
    b.ready = True
    again, after = podstatus.render(facts, transitions, LATER)
    c = conds(again)
    assert c["Ready"] == {"type": "Ready", "status": "True", "lastProbeTime": None, "lastTransitionTime": LATER}
    assert c["Initialized"]["lastTransitionTime"] == NOW  # unchanged status keeps its time
    assert transitions["Ready"] == ("False", NOW)  # the caller's map is not changed
    assert after["Ready"] == ("True", LATER)


def test_completed_pod_with_unsupported_fields_and_a_reason() -> None:
    facts = podstatus.PodFacts(
        phase="Failed",
        ip="",
        start_time="",
        init_containers=[Container({"name": "i"}, True)],
        containers=[exited("a", 1)],
        pod_reason=("DeadlineExceeded", "too long"),
        unsupported=["spec.hostNetwork"],
    )
    status, _ = podstatus.render(facts, {}, NOW)
    c = conds(status)
    assert c["Ready"]["reason"] == "PodCompleted" and "message" not in c["Ready"]
    assert c["PodReadyToStartContainers"]["status"] == "False"
    assert c["Initialized"]["message"] == "containers with incomplete status: [i]"
    assert c[podstatus.UNSUPPORTED]["message"].endswith("(ignored): spec.hostNetwork")
    assert (status["reason"], status["message"]) == ("DeadlineExceeded", "too long")
    assert "podIP" not in status and "startTime" not in status
