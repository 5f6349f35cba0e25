"""Runtime state of one container of a pod as the pod worker tracks it across restarts (no behaviour here).

Kept apart from the worker so the agent (events name a container), the status renderer and the probe logic can use
the type without importing the worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import hooks
from .images import Resolved
from .shimproc import ShimProcess

PROBE_KINDS = ("readinessProbe", "livenessProbe", "startupProbe")


@dataclass
class ProbeState:
    """Consecutive results of one probe and when it runs next (kubelet semantics and defaults)."""

    spec: dict[str, Any]
    next_at: float
    successes: int = 0
    failures: int = 0

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds") or 10)

    @property
    def failure_threshold(self) -> int:
        return int(self.spec.get("failureThreshold") or 3)

    @property
    def success_threshold(self) -> int:
        return int(self.spec.get("successThreshold") or 1)


def fresh_probes(spec: dict[str, Any], started_mono: float, now: float) -> dict[str, ProbeState]:
    """The container's probes for a run that started at `started_mono`: each first due after its initial delay
    (not before `now`, for a run resumed after an agent restart)."""
    return {
        kind: ProbeState(spec[kind], next_at=max(now, started_mono + float(spec[kind].get("initialDelaySeconds", 0))))
        for kind in PROBE_KINDS
        if spec.get(kind)
    }


@dataclass
class Container:
    """Runtime state of one container of the pod (spans restarts)."""

    spec: dict[str, Any]
    init: bool
    proc: ShimProcess | None = None  # its shim while it runs (pid = the shim's = the process group's)
    pid: int = 0
    waiting: tuple[str, str] = ("ContainerCreating", "")
    running_since: str = ""
    started_mono: float = 0.0
    terminated: dict[str, Any] | None = None  # final state: will not run again
    last_terminated: dict[str, Any] | None = None
    restart_count: int = 0
    ever_started: bool = False
    ready: bool = False
    started: bool = False  # startup probe passed (or none)
    backoff: float = 0.0
    next_start: float = 0.0
    kill_deadline: float | None = None  # SIGTERM sent: SIGKILL at this time
    kill_reason: str = ""
    stop_started: float | None = None  # being stopped (preStop, then SIGTERM) since this time
    stop_end: float = 0.0  # the end of its grace period (preStop may not run past it)
    prestop: hooks.HookRun | None = None
    poststart: hooks.HookRun | None = None  # running: the container is reported Waiting until it is done
    proc_env: dict[str, str] = field(default_factory=dict)  # the environment it was started with (for hooks)
    links: dict[str, str] = field(default_factory=dict)  # its service links as created (exec probes see these)
    probes: dict[str, ProbeState] = field(default_factory=dict)
    image_id: str = ""  # imageID of the last run
    resolved: Resolved | None = None  # what the image of the last run resolved to (exec probes run in it)
    skip: bool = False  # a sidecar (init container with restartPolicy Always): reported, never run

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.proc is not None

    @property
    def succeeded(self) -> bool:
        return self.terminated is not None and self.terminated["exitCode"] == 0
