"""The alert rules and the Grafana dashboard only use metrics the operator actually exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from divbase_operator.metrics import REGISTRY

MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
METRIC = re.compile(r"\bdivbase_[a-z_]+\b")


def exported() -> set[str]:
    names = set()
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            names.add(sample.name)
        names.add(metric.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(metric.type, ())
        names.update(metric.name + suffix for suffix in suffixes)  # labelled series exist only once observed
    return names


def used(expressions: list[str]) -> set[str]:
    return {m for e in expressions for m in METRIC.findall(e)}


def test_alert_rules_are_well_formed_and_use_exported_metrics() -> None:
    rules = [r for g in yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {"DivBaseRolloutStalled", "DivBaseContractWaitingTooLong"}
    assert all(
        r["expr"] and r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"] for r in rules
    )
    names = used([r["expr"] for r in rules])
    assert names and names <= exported(), names - exported()


def test_dashboard_uses_exported_metrics() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = used(exprs)
    assert len(names) >= 6 and names <= exported(), names - exported()


def test_every_exported_metric_is_documented() -> None:
    doc = (MONITORING.parent / "metrics.md").read_text()
    families = {m.name + ("_total" if m.type == "counter" else "") for m in REGISTRY.collect()}
    assert families and all(f"`{name}`" in doc for name in families), [n for n in families if f"`{n}`" not in doc]


def test_one_phase_series_per_resource_and_none_after_deletion() -> None:
    from divbase_operator import metrics, names
    from divbase_operator.planner import Decision

    key = ("ns", "phase-series")

    def series() -> dict[str, float]:
        return {
            s.labels["phase"]: s.value
            for family in REGISTRY.collect()
            if family.name == "divbase_phase"
            for s in family.samples
            if (s.labels["namespace"], s.labels["database"]) == key
        }

    for phase in (names.PHASE_EXPANDING, names.PHASE_DEPLOYING, names.PHASE_READY):
        metrics.record_decision(key, Decision(status={"phase": phase}, actions=[]), 0.01, 0.0)
        assert series() == {phase: 1.0}
    metrics.forget(key)
    assert series() == {}


def _failed_steps(key: tuple[str, str]) -> dict[str, float]:
    return {
        s.labels["step"]: s.value
        for family in REGISTRY.collect()
        if family.name == "divbase_rollouts_failed"
        for s in family.samples
        if s.name.endswith("_total") and (s.labels["namespace"], s.labels["database"]) == key
    }


def test_a_failed_contract_plan_job_counts_as_a_plan_failure_not_a_contract_failure() -> None:
    """The plan Job of a Manual contract only renders the SQL: its failure is step `plan`. The contract never ran,
    so `divbase_rollouts_failed_total{step="contract"}` must not move (it did while metrics parsed Event text,
    whose first word for a plan Job is `contract`)."""
    from divbase_operator import metrics, names
    from planner_world import World, base_spec

    world = World(spec=base_spec("1", contract={"policy": "Manual"}))
    world.install("1")
    world.plan_sql = None  # the plan Job fails (its runner reports why)
    world.set_spec(version="2")
    world.reconcile()
    world.finish_job("expand")
    world.reconcile()
    world.complete_rollouts()
    key = ("ns", "plan-fails")
    for _ in range(3):  # the plan Job is created, fails, and the Stalled status is reconciled again (counted once)
        metrics.record_decision(key, world.reconcile(), 0.01, 0.0)
    assert world.condition(names.COND_STALLED)["reason"] == names.REASON_JOB_FAILED
    assert "contract plan Job" in world.condition(names.COND_STALLED)["message"]
    assert _failed_steps(key) == {names.STEP_PLAN: 1.0}
    metrics.forget(key)


def test_rollouts_and_failed_steps_are_counted_from_the_decisions_outcomes() -> None:
    from divbase_operator import metrics, names
    from planner_world import World, base_spec

    def value(name: str, key: tuple[str, str], **labels: str) -> float:
        return sum(
            s.value
            for family in REGISTRY.collect()
            for s in family.samples
            if s.name == name
            and (s.labels.get("namespace"), s.labels.get("database")) == key
            and all(s.labels.get(k) == v for k, v in labels.items())
        )

    key = ("ns", "outcomes")
    world = World(spec=base_spec("1"))
    world.install("1")
    for decision in world.log:
        metrics.record_decision(key, decision, 0.01, 0.0)
    assert value("divbase_rollouts_started_total", key) == 1.0
    assert value("divbase_rollouts_succeeded_total", key) == 1.0
    world.set_spec(version="2")
    metrics.record_decision(key, world.reconcile(), 0.01, 0.0)
    world.finish_job("expand", ok=False, exit_code=2)
    metrics.record_decision(key, world.reconcile(), 0.01, 0.0)
    assert value("divbase_rollouts_started_total", key) == 2.0
    assert value("divbase_rollouts_failed_total", key, step=names.STEP_EXPAND) == 1.0
    world.annotations[names.ANNOTATION_RETRY] = "again"
    metrics.record_decision(key, world.reconcile(), 0.01, 0.0)
    assert value("divbase_job_retries_total", key) == 1.0
    metrics.forget(key)
