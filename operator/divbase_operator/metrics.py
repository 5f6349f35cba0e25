"""Prometheus metrics, derived from the planner's decisions so that what is counted is what was decided.

Rollout and step counters follow the outcomes the planner decided (Decision.outcomes: each marks a transition,
once; never parsed from Event text), durations come from the rollout record, and the phase gauge mirrors
status.phase. Served on the operator's metrics port."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from . import names
from .decision import ROLLOUT, Decision, Outcome, Result
from .status import HistoryEntry, StepState

REGISTRY = CollectorRegistry()
_awaiting: dict[tuple[str, str], float] = {}
_phase: dict[tuple[str, str], str] = {}  # the one phase series exported per resource
_STEP_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)

ROLLOUTS_STARTED = Counter(
    "divbase_rollouts_started_total",
    "Rollouts started (expand Job created or deploy begun for a new release).",
    ["namespace", "database"],
    registry=REGISTRY,
)
ROLLOUTS_SUCCEEDED = Counter(
    "divbase_rollouts_succeeded_total", "Rollouts that reached Ready.", ["namespace", "database"], registry=REGISTRY
)
ROLLOUTS_FAILED = Counter(
    "divbase_rollouts_failed_total",
    "Rollout failures, by the step that failed.",
    ["namespace", "database", "step"],
    registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "divbase_step_duration_seconds",
    "Seconds from a step's start to its end, for rollouts that succeeded.",
    ["step"],
    buckets=_STEP_BUCKETS,
    registry=REGISTRY,
)
JOB_RETRIES = Counter(
    "divbase_job_retries_total",
    "Failed steps retried through the retry annotation.",
    ["namespace", "database"],
    registry=REGISTRY,
)
PHASE = Gauge(
    "divbase_phase",
    "1, labelled with the resource's current phase (one series per resource: a series "
    "per phase and resource would be 9x the cardinality and memory at scale).",
    ["namespace", "database", "phase"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "divbase_reconcile_errors_total",
    "Reconciles that failed on an API error and were retried with backoff.",
    ["namespace", "database"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "divbase_reconcile_duration_seconds",
    "Time to plan and act for one reconcile.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
AWAITING_SINCE = Gauge(
    "divbase_contract_awaiting_since_timestamp_seconds",
    "When the resource started waiting for a manual or delayed contract (0 when not waiting).",
    ["namespace", "database"],
    registry=REGISTRY,
)

LEADER = Gauge(
    "divbase_operator_leader",
    "1 while this replica is the one that acts (always 1 without leader election).",
    registry=REGISTRY,
)


def record_decision(key: tuple[str, str], decision: Decision, seconds: float, now_ts: float) -> None:
    RECONCILE_SECONDS.observe(seconds)
    _record_phase(key, decision.status.get("phase", names.PHASE_PENDING), now_ts)
    for outcome in decision.outcomes:
        _count(key, outcome, decision)


def _record_phase(key: tuple[str, str], phase: str, now_ts: float) -> None:
    namespace, database = key
    previous = _phase.get(key)
    if previous != phase:
        if previous is not None:
            PHASE.remove(namespace, database, previous)
        PHASE.labels(namespace, database, phase).set(1)
        _phase[key] = phase
    if phase == names.PHASE_AWAITING_CONTRACT:
        AWAITING_SINCE.labels(namespace, database).set(_awaiting.setdefault(key, now_ts))
    else:
        _awaiting.pop(key, None)
        AWAITING_SINCE.labels(namespace, database).set(0)


def _count(key: tuple[str, str], outcome: Outcome, decision: Decision) -> None:
    if outcome.result == Result.RETRIED:
        JOB_RETRIES.labels(*key).inc()
    elif outcome.result == Result.FAILED:
        ROLLOUTS_FAILED.labels(*key, outcome.step).inc()
    elif outcome.step == ROLLOUT and outcome.result == Result.STARTED:
        ROLLOUTS_STARTED.labels(*key).inc()
    elif outcome.step == ROLLOUT and outcome.result == Result.SUCCEEDED:
        ROLLOUTS_SUCCEEDED.labels(*key).inc()
        _observe_step_durations(decision)


def _observe_step_durations(decision: Decision) -> None:
    """The steps of the rollout that just succeeded: the newest history entry."""
    history = decision.status.get("history") or []
    if not history:
        return
    for step, rec in HistoryEntry.from_dict(history[0]).steps.items():
        if rec.seconds is not None and rec.state == StepState.SUCCEEDED:
            STEP_DURATION.labels(step).observe(rec.seconds)


def record_error(key: tuple[str, str]) -> None:
    RECONCILE_ERRORS.labels(*key).inc()


def forget(key: tuple[str, str]) -> None:
    """A deleted resource's series go away with it."""
    _awaiting.pop(key, None)
    phase = _phase.pop(key, None)
    series = [(AWAITING_SINCE, key)] + ([(PHASE, (*key, phase))] if phase else [])
    for metric, labels in series:
        with contextlib.suppress(KeyError):
            metric.remove(*labels)


def serve(port: int, address: str = "0.0.0.0") -> None:
    start_http_server(port, addr=address, registry=REGISTRY)
