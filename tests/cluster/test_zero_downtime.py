"""The product's promise, end to end: a schema rollout with no failed request.

Real apiserver and controllers, the operator, migration Jobs running `divbase-migrate` against a real PostgreSQL,
and the DivBase API stand-in serving HTTP from pods of the local node while a load generator writes and reads
through the API's Service (ClusterIP, the real kube-proxy on the local cluster's pod network). In the same run,
the stop-the-world procedure DivBase uses today, and the Helm pre-upgrade hook most charts use instead of an
operator, are measured under the same load, so the comparison is like for like."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from divbase_app import rollout
from divbase_localcluster.cluster import ClusterInfo
from divbase_localcluster.podnet.netns import missing_requirements
from divbase_migrations.testing.postgres import PostgresServer
from divbase_operator import names
from divbase_operator.testing import Kube, OperatorProcess
from kubernetes import client

DB = "divbase"


def test_gated_rollout_serves_every_request_and_stop_the_world_does_not(
    kube: Kube,
    operator: OperatorProcess,
    db_secret: str,
    api_client: Any,
    postgres_server: PostgresServer,
    cluster: ClusterInfo,
) -> None:
    if not cluster.node_netns:
        pytest.skip(f"the load goes through a Service, which needs the pod network: {missing_requirements()}")
    netns = cluster.node_netns
    lines: list[str] = []
    kube.create_db(DB, rollout.database_spec("1"))
    kube.wait_condition(DB, names.COND_READY, timeout=240)

    gated = rollout.gated_rollout(kube, DB, "2", lines.append, netns, timeout=300)
    status = kube.get_db(DB)["status"]
    assert status["currentVersion"] == "2" and status["phase"] == names.PHASE_READY
    assert gated["failed"] == 0, (gated, lines)
    assert gated["restarts"] == 0, "no pod refused to start (or crashed) at any step"
    assert set(gated["served_by_release"]) == {"1", "2"}, "both releases served during the rollout"
    assert gated["ok"] > 100
    steps = status["history"][0]["steps"]
    assert all(steps[s]["seconds"] is not None for s in ("expand", "deploy", "contract"))

    # the same change, today's way and a Helm hook's way, each in another namespace and database, same load
    baseline = _elsewhere(
        api_client, cluster, postgres_server, f"{kube.namespace}-stw", rollout.LEGACY, rollout.stop_the_world, lines
    )
    assert baseline["failed"] > 0 and baseline["unavailable_s"] > 1.0, baseline
    # no pod answered at all (a Service without endpoints: refused, or a pod gone before kube-proxy knew: no answer)
    assert not [r for r in baseline["failure_reasons"] if r.startswith("HTTP")], baseline
    hook = _elsewhere(
        api_client, cluster, postgres_server, f"{kube.namespace}-hook", rollout.HOOK, rollout.helm_hook, lines
    )
    # never without an endpoint (the rolling update keeps every replica ready), yet release 1's pods fail once the
    # hook's contract has removed what they read: what expand/deploy/contract exists to prevent
    assert hook["failure_reasons"].get("HTTP 500"), hook  # answers of pods, not a missing Service endpoint
    assert hook["failed_by_release"].get("1", 0) > 0 and not hook["failed_by_release"].get("2"), hook
    print(json.dumps({"gated": gated, "stop_the_world": baseline, "helm_hook": hook}, indent=2))


def _elsewhere(
    api_client: Any,
    cluster: ClusterInfo,
    postgres_server: PostgresServer,
    namespace: str,
    deployment: str,
    change: Callable[..., dict[str, Any]],
    lines: list[str],
) -> dict[str, Any]:
    """Release 1 installed as `deployment` in its own namespace and database, then `change` to release 2."""
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    database = namespace.replace("-", "_")[-40:]
    try:
        url = postgres_server.create_database(database).render_as_string(hide_password=False)
        Kube(api_client, namespace).create_secret(rollout.SECRET, {"url": cluster.for_pods(url)})
        rollout.deploy_legacy(api_client, namespace, "1", name=deployment)
        return change(api_client, namespace, "2", lines.append, cluster.node_netns)
    finally:
        core.delete_namespace(namespace, propagation_policy="Background")
        postgres_server.drop_database(database)
