"""The pod status a kubelet would report, rendered from the worker's container states (pure: no I/O, no clock).

`render` is the whole `status` sub-object the worker patches; condition transition times are carried in a map the
caller keeps between calls (a condition's lastTransitionTime changes only when its status does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .container import Container

UNSUPPORTED = "divbase.io/Unsupported"
HOST_IP = "127.0.0.1"
Transitions = dict[str, tuple[str, str]]  # condition type -> (status, lastTransitionTime)


@dataclass(frozen=True)
class PodFacts:
    """What the status is made of: the worker's view of the pod at one moment."""

    phase: str
    ip: str
    start_time: str
    init_containers: Sequence[Container]
    containers: Sequence[Container]
    pod_reason: tuple[str, str] | None = None
    unsupported: Sequence[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


def init_done(init_containers: Sequence[Container]) -> bool:
    return all(c.succeeded or c.skip for c in init_containers)


def _waiting(c: Container) -> dict[str, Any]:
    reason, message = c.waiting
    return {"waiting": {"reason": reason, **({"message": message} if message else {})}}


def container_status(c: Container) -> dict[str, Any]:
    """One entry of containerStatuses: running only once its postStart hook returned (as the kubelet reports)."""
    up = c.running and c.poststart is None
    if up:
        state: dict[str, Any] = {"running": {"startedAt": c.running_since}}
    elif not c.running and c.terminated is not None:
        state = {"terminated": c.terminated}
    else:
        state = _waiting(c)
    st: dict[str, Any] = {
        "name": c.name,
        "image": c.spec.get("image", ""),
        "imageID": c.image_id if c.ever_started else "",
        "ready": c.ready and up,
        "started": up and c.started,
        "restartCount": c.restart_count,
        "state": state,
        "lastState": {"terminated": c.last_terminated} if c.last_terminated else {},
    }
    if c.ever_started:
        st["containerID"] = f"local://{c.pid}"
    return st


def _count(containers: Sequence[Container]) -> tuple[int, int, int, int]:
    """(waiting, running, stopped, succeeded) as the kubelet's getPhase counts them."""
    waiting = running = stopped = succeeded = 0
    for c in containers:
        if c.running and c.poststart is not None:
            waiting += 1  # not running for the kubelet until its postStart hook returned
        elif c.running:
            running += 1
        elif c.terminated is not None:
            stopped += 1
            succeeded += c.succeeded
        elif c.last_terminated is not None:
            stopped += 1
        else:
            waiting += 1
    return waiting, running, stopped, succeeded


def phase(init_containers: Sequence[Container], containers: Sequence[Container], policy: str) -> str:
    """kubelet's getPhase, on our container states."""
    if any(c.terminated is not None and not c.succeeded for c in init_containers):
        return "Failed"
    if not init_done(init_containers):
        return "Pending"
    waiting, running, stopped, succeeded = _count(containers)
    if waiting:
        return "Pending"
    if running or policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    return "Failed" if policy == "Never" else "Running"


def condition(
    transitions: Transitions, now: str, ctype: str, status: bool, reason: str = "", message: str = ""
) -> dict[str, Any]:
    """One pod condition; records a transition in `transitions` when its status changed."""
    value = "True" if status else "False"
    prev = transitions.get(ctype)
    if prev is None or prev[0] != value:
        transitions[ctype] = (value, now)
    cond: dict[str, Any] = {
        "type": ctype,
        "status": value,
        "lastProbeTime": None,
        "lastTransitionTime": transitions[ctype][1],
    }
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _ready(facts: PodFacts) -> tuple[bool, str, str]:
    """(ready, reason, message) of the Ready and ContainersReady conditions."""
    unready = [c.name for c in facts.containers if not (c.ready and c.running)]
    if facts.done:
        return False, "PodCompleted", ""
    if unready:
        return False, "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]"
    return init_done(facts.init_containers), "", ""


def conditions(facts: PodFacts, transitions: Transitions, now: str) -> list[dict[str, Any]]:
    initialized = init_done(facts.init_containers)
    incomplete = [c.name for c in facts.init_containers if not (c.succeeded or c.skip)]
    ready, reason, message = _ready(facts)
    conds = [
        condition(transitions, now, "PodReadyToStartContainers", bool(facts.ip) and not facts.done),
        condition(
            transitions,
            now,
            "Initialized",
            initialized,
            "" if initialized else "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(incomplete)}]" if incomplete else "",
        ),
        condition(transitions, now, "ContainersReady", ready, reason, message),
        condition(transitions, now, "Ready", ready, reason, message),
    ]
    if facts.unsupported:
        conds.append(
            condition(
                transitions,
                now,
                UNSUPPORTED,
                True,
                "UnsupportedFields",
                "not supported by the local node agent (ignored): " + ", ".join(facts.unsupported),
            )
        )
    return conds


def render(facts: PodFacts, transitions: Transitions, now: str) -> tuple[dict[str, Any], Transitions]:
    """The pod's status and the condition transition times as they are after it (`transitions` is not changed)."""
    transitions = dict(transitions)
    status: dict[str, Any] = {
        "phase": facts.phase,
        "conditions": conditions(facts, transitions, now),
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "initContainerStatuses": [container_status(c) for c in facts.init_containers],
        "containerStatuses": [container_status(c) for c in facts.containers],
    }
    if facts.ip:
        status |= {"podIP": facts.ip, "podIPs": [{"ip": facts.ip}]}
    if facts.start_time:
        status["startTime"] = facts.start_time
    if facts.pod_reason:
        status["reason"], status["message"] = facts.pod_reason
    return status, transitions
