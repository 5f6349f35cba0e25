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
    assert all(r["expr"] and r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"]
               for r in rules)
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
        return {s.labels["phase"]: s.value for family in REGISTRY.collect() if family.name == "divbase_phase"
                for s in family.samples if (s.labels["namespace"], s.labels["database"]) == key}

    for phase in (names.PHASE_EXPANDING, names.PHASE_DEPLOYING, names.PHASE_READY):
        metrics.record_decision(key, Decision(status={"phase": phase}, actions=[]), 0.01, 0.0)
        assert series() == {phase: 1.0}
    metrics.forget(key)
    assert series() == {}
