"""The charts, and what the operator makes of the example release, scored by kube-score itself (zegl/kube-score
v1.20.0, built from its module by divbase_localcluster.conformance). Every check we do not meet is answered in
docs/install.md ("kube-score"); anything else kube-score flags fails here."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml
from divbase_localcluster import conformance
from divbase_operator.builders import Owner, build_deployment, build_job
from divbase_operator.spec import parse_spec
from test_charts import OPERATOR_CHART, RELEASE_CHART, ROOT, by_kind, render

# kube-score check id -> why the charts do not meet it; docs/install.md answers each
ANSWERED = {
    "container-image-pull-policy": "images are pinned by tag or digest; pullPolicy is a value",
    "pod-networkpolicy": "the policy depends on the cluster's CNI and where Prometheus runs",
    "container-cpu-limit": "a throttled operator reacts late; requests reserve what it needs",
}


@functools.cache
def kube_score() -> Path:
    return conformance.build("kube-score")


def score(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """kube-score's JSON report (one entry per object) of `objects`, with the answered checks ignored."""
    ignored = [arg for check in ANSWERED if check != "container-cpu-limit" for arg in ("--ignore-test", check)]
    proc = subprocess.run(
        [str(kube_score()), "score", "-o", "json", "--ignore-container-cpu-limit", *ignored, "-"],
        input=yaml.safe_dump_all(objects),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1: it found something (asserted on below)
    return json.loads(proc.stdout)


def findings(report: list[dict[str, Any]]) -> list[str]:
    """Every WARNING or CRITICAL check, named by object and check, with kube-score's own comments."""
    out = []
    for obj in report:
        for check in obj["checks"]:
            if check["grade"] < 10 and not check["skipped"]:  # 10: ok, 5: warning, 1: critical
                comments = "; ".join(c["summary"] for c in check.get("comments") or [])
                out.append(f"{obj['object_name']} {check['check']['id']}: {comments}")
    return out


def test_every_answered_check_is_answered_in_the_docs() -> None:
    install = (ROOT / "docs" / "install.md").read_text()
    assert [check for check in ANSWERED if f"`{check}`" not in install] == []


def test_the_operator_chart_scores_clean() -> None:
    docs = render(OPERATOR_CHART, "--set", "replicas=2")  # two replicas: what a PDB and HA need
    assert isinstance(docs, list)
    assert findings(score(docs)) == []


def test_the_operator_chart_single_replica_is_the_only_warning() -> None:
    docs = render(OPERATOR_CHART)
    assert isinstance(docs, list)
    assert [f.split(":")[0] for f in findings(score(docs))] == [
        "Deployment/apps/v1/ops/rel-divbase-operator deployment-replicas"
    ]


def test_the_example_release_and_what_the_operator_builds_of_it_score_clean() -> None:
    """The chart's objects together with the Deployments and Jobs the operator creates from its DivBaseDatabase
    (the builders the operator runs), so the Service meets its pods and the workloads are scored as they run."""
    docs = render(RELEASE_CHART, namespace="prod")
    assert isinstance(docs, list)
    [db] = by_kind(docs, "DivBaseDatabase")
    spec, errors = parse_spec(db["spec"])
    assert spec is not None and not errors
    owner = Owner(db["metadata"]["name"], "prod", "uid-1")
    version = db["spec"]["version"]
    built = [build_deployment(owner, spec, w, version) for w in spec.workloads]
    built += [build_job(owner, spec, step, version, "") for step in ("expand", "contract")]
    objects = [d for d in docs if d["kind"] != "DivBaseDatabase"] + built
    assert findings(score(objects)) == []
