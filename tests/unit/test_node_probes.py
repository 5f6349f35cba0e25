"""Probe verdicts of the node agent (divbase_localcluster.node.probes): thresholds, gating and kills, no cluster."""

from __future__ import annotations

from typing import Any

from divbase_localcluster.node import probes
from divbase_localcluster.node.container import ProbeState, fresh_probes


def state(spec: dict[str, Any] | None = None, successes: int = 0, failures: int = 0) -> ProbeState:
    return ProbeState(spec or {}, next_at=10.0, successes=successes, failures=failures)


def test_due_only_when_period_is_up_and_startup_gates_the_others() -> None:
    st = state()
    assert not probes.due("livenessProbe", st, started=True, now=9.9)
    assert probes.due("livenessProbe", st, started=True, now=10.0)
    assert not probes.due("readinessProbe", st, started=False, now=11)  # waits for the startup probe
    assert probes.due("startupProbe", st, started=False, now=11)
    assert not probes.due("startupProbe", st, started=True, now=11)  # passed: never again


def test_readiness_flips_after_the_thresholds() -> None:
    st = state({"successThreshold": 2, "failureThreshold": 2})
    v = probes.judge("readinessProbe", st, ok=True)
    assert (v.successes, v.failures, v.ready, v.event) == (1, 0, None, "")
    v = probes.judge("readinessProbe", state(st.spec, successes=1), ok=True)
    assert v.ready is True
    v = probes.judge("readinessProbe", state(st.spec, successes=5), ok=False, detail="exit code 1")
    assert (v.successes, v.failures, v.ready) == (0, 1, None)
    assert v.event == "Readiness probe failed: exit code 1"
    v = probes.judge("readinessProbe", state(st.spec, failures=1), ok=False)
    assert v.ready is False and v.kill == ""  # readiness never kills


def test_liveness_kills_after_failure_threshold_default_three() -> None:
    assert probes.judge("livenessProbe", state(failures=1), ok=False).kill == ""
    v = probes.judge("livenessProbe", state(failures=2), ok=False, detail="HTTP probe failed with statuscode: 500")
    assert v.kill == "failed liveness probe, will be restarted"
    assert v.event == "Liveness probe failed: HTTP probe failed with statuscode: 500"
    assert probes.judge("livenessProbe", state(failures=2), ok=True) == probes.Verdict(1, 0)


def test_startup_passes_or_kills() -> None:
    assert probes.judge("startupProbe", state(), ok=True).started is True
    v = probes.judge("startupProbe", state({"failureThreshold": 1}), ok=False)
    assert v.kill == "failed startup probe, will be restarted" and not v.started
    assert v.event.startswith("Startup probe failed")


def test_kill_grace_prefers_the_probes_own() -> None:
    assert probes.kill_grace(state({"terminationGracePeriodSeconds": 0}), 30.0) == 0.0
    assert probes.kill_grace(state(), 30.0) == 30.0


def test_fresh_probes_wait_for_their_initial_delay() -> None:
    spec = {"name": "a", "livenessProbe": {"initialDelaySeconds": 5}, "readinessProbe": {"exec": {}}}
    got = fresh_probes(spec, started_mono=100.0, now=100.0)
    assert set(got) == {"livenessProbe", "readinessProbe"}
    assert got["livenessProbe"].next_at == 105.0 and got["readinessProbe"].next_at == 100.0
    assert fresh_probes(spec, started_mono=100.0, now=200.0)["livenessProbe"].next_at == 200.0  # resumed later
