"""No password anywhere a rollout leaves traces: logs of the operator, of every pod and of the node, Events, the
resource's status, Job and Deployment specs. And migration pods run without API credentials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from divbase_app.rollout import database_spec
from divbase_operator import names
from divbase_operator.testing import Kube, OperatorProcess
from kubernetes import client
from sqlalchemy.engine import make_url


def test_a_rollout_leaks_no_password(kube: Kube, operator: OperatorProcess, db_secret: str, cluster: Any,
                                     api_client: Any) -> None:
    password = make_url(db_secret).password
    assert password and len(password) >= 16
    kube.create_db("divbase", database_spec("1", replicas=1))
    kube.wait_condition("divbase", names.COND_READY, timeout=240)
    kube.patch_db("divbase", {"spec": {"version": "2"}})
    kube.wait_condition("divbase", names.COND_READY, timeout=240)

    serialize = client.ApiClient().sanitize_for_serialization
    traces: dict[str, str] = {"operator log": operator.logs(),
                              "resource": json.dumps(kube.get_db("divbase")),
                              "events": json.dumps(serialize(kube.core.list_namespaced_event(kube.namespace).items)),
                              "jobs": json.dumps(serialize(kube.jobs("divbase"))),
                              "deployments": json.dumps(serialize(kube.deployments("divbase"))),
                              "node agent log": (Path(cluster.state_dir) / "logs" / "node-agent.log").read_text()}
    pod_dirs = sorted((Path(cluster.state_dir) / "node" / "pods").glob(f"{kube.namespace}_*"))
    for log in (p for d in pod_dirs for p in (d / "logs").rglob("*.log")):
        traces[str(log.relative_to(cluster.state_dir))] = log.read_text(errors="replace")
    assert sum(1 for k in traces if "-expand-" in k or "-contract-" in k) >= 4, sorted(traces)  # Job pod logs
    assert any('"outcome":"applied"' in v for v in traces.values()), "the migration logs were collected"
    leaks = sorted(name for name, text in traces.items() if password in text)
    assert leaks == [], leaks

    # migration pods: no ServiceAccount token, so no API access from a pod holding database credentials
    jobs = kube.jobs("divbase")
    assert jobs and all(j.spec.template.spec.automount_service_account_token is False for j in jobs)
    migration_dirs = [d for d in pod_dirs if "-expand-" in d.name or "-contract-" in d.name]
    assert migration_dirs and not any((d / "serviceaccount").exists() for d in migration_dirs)
