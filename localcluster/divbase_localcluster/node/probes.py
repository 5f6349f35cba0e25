"""Probe verdicts the way the kubelet's prober reaches them (pure: results and times in, decisions out).

The worker runs the probes that are `due` (node/prober.py does the I/O) and applies each `Verdict`: readiness
flips after successThreshold successes / failureThreshold failures, a passed startup probe lets the other two run,
and a liveness or startup probe failing failureThreshold times in a row kills the container.
"""

from __future__ import annotations

from dataclasses import dataclass

from .container import ProbeState

ORDER = ("startupProbe", "livenessProbe", "readinessProbe")  # the order the worker runs due probes in


@dataclass(frozen=True)
class Verdict:
    """What one probe result means: the new counters, and what changes for the container."""

    successes: int
    failures: int
    ready: bool | None = None  # readiness probe: the container's new readiness (None: unchanged)
    started: bool = False  # startup probe passed
    kill: str = ""  # liveness/startup failed failureThreshold times: the reason of the Killing event
    event: str = ""  # failed: the message of the Unhealthy event


def due(kind: str, st: ProbeState, started: bool, now: float) -> bool:
    """Whether the probe runs now: its period is up, and only the startup probe runs until it passed (then never)."""
    if now < st.next_at:
        return False
    return not started if kind == "startupProbe" else started


def judge(kind: str, st: ProbeState, ok: bool, detail: str = "") -> Verdict:
    """The verdict of one result of probe `kind` given the counters so far (`st` is not changed)."""
    if ok:
        successes, failures = st.successes + 1, 0
    else:
        successes, failures = 0, st.failures + 1
    event = "" if ok else f"{kind.removesuffix('Probe').capitalize()} probe failed: {detail}"
    if kind == "readinessProbe":
        ready = True if ok and successes >= st.success_threshold else None
        if not ok and failures >= st.failure_threshold:
            ready = False
        return Verdict(successes, failures, ready=ready, event=event)
    if kind == "startupProbe" and ok:
        return Verdict(successes, failures, started=True)
    kill = ""
    if not ok and failures >= st.failure_threshold:
        kill = f"failed {'startup' if kind == 'startupProbe' else 'liveness'} probe, will be restarted"
    return Verdict(successes, failures, kill=kill, event=event)


def kill_grace(st: ProbeState, pod_grace: float) -> float:
    """The grace period of a kill by this probe: its own terminationGracePeriodSeconds, else the pod's."""
    grace = st.spec.get("terminationGracePeriodSeconds")
    return float(pod_grace if grace is None else grace)
