"""The product's promise, end to end: a schema rollout with no failed request.

Real apiserver and controllers, the operator, migration Jobs running `divbase-migrate` against a real PostgreSQL,
and the DivBase API stand-in serving HTTP from pods of the local node while a load generator writes and reads
through every ready pod. In the same run, the stop-the-world procedure DivBase uses today is measured under the
same load, so the comparison is like for like."""

from __future__ import annotations

import json
from typing import Any

from divbase_app import rollout
from divbase_migrations.testing.postgres import PostgresServer
from divbase_operator import names
from divbase_operator.testing import Kube, OperatorProcess
from kubernetes import client

DB = "divbase"


def test_gated_rollout_serves_every_request_and_stop_the_world_does_not(
        kube: Kube, operator: OperatorProcess, db_secret: str, api_client: Any, postgres_server: PostgresServer,
        request: Any) -> None:
    lines: list[str] = []
    kube.create_db(DB, rollout.database_spec("1"))
    kube.wait_condition(DB, names.COND_READY, timeout=240)

    gated = rollout.gated_rollout(kube, DB, "2", lines.append, timeout=300)
    status = kube.get_db(DB)["status"]
    assert status["currentVersion"] == "2" and status["phase"] == names.PHASE_READY
    assert gated["failed"] == 0, (gated, lines)
    assert gated["restarts"] == 0, "no pod refused to start (or crashed) at any step"
    assert set(gated["served_by_release"]) == {"1", "2"}, "both releases served during the rollout"
    assert gated["ok"] > 100
    steps = status["history"][0]["steps"]
    assert all(steps[s]["seconds"] is not None for s in ("expand", "deploy", "contract"))

    # the same change, today's way, in another namespace and database, under the same load
    baseline_ns = f"{kube.namespace}-stw"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=baseline_ns)))
    try:
        url = postgres_server.create_database("stop_the_world").render_as_string(hide_password=False)
        Kube(api_client, baseline_ns).create_secret(rollout.SECRET, {"url": url})
        rollout.deploy_legacy(api_client, baseline_ns, "1")
        baseline = rollout.stop_the_world(api_client, baseline_ns, "2", lines.append)
    finally:
        core.delete_namespace(baseline_ns, propagation_policy="Background")
        postgres_server.drop_database("stop_the_world")
    assert baseline["failed"] > 0 and baseline["unavailable_s"] > 1.0, baseline
    assert baseline["failure_reasons"].get("no ready endpoint"), baseline
    print(json.dumps({"gated": gated, "stop_the_world": baseline}, indent=2))
