"""Two operator replicas (issue 8, part 3): they elect one leader through a coordination.k8s.io Lease; only the
leader acts (the standby neither reconciles nor writes); when the leader is killed mid-rollout the standby takes
over and finishes; every migration step runs exactly once; a graceful stop hands the Lease over at once."""

from __future__ import annotations

import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from divbase_operator import names
from divbase_operator.testing import Kube, OperatorProcess
from divbase_testsupport import wait_for
from kubernetes import client
from test_fault_injection import DB, ONE_JOB_EACH, TARGET, assert_converged, install, step_job_counts

ACTED = '"message": "job '  # the reconciler's log line for each Job it creates: only a leader writes one
RECONCILES = "divbase_reconcile_duration_seconds_count"  # observed once per reconcile that reached a decision


def replica(cluster: Any, namespace: str, tmp_path: Path, name: str) -> OperatorProcess:
    return OperatorProcess(
        str(cluster.kubeconfig),
        namespace,
        tmp_path / f"operator-{name}.log",
        extra_args=("--leader-election", "--leader-election-namespace", namespace),
    )


@pytest.fixture
def replicas(cluster: Any, namespace: str, tmp_path: Path) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    pair = (replica(cluster, namespace, tmp_path, "a"), replica(cluster, namespace, tmp_path, "b"))
    for proc in pair:
        proc.start()
    yield pair
    for proc in pair:
        proc.stop()
        print(f"--- {proc.log_path.name} ---\n{proc.logs()[-10000:]}")


def leads(proc: OperatorProcess) -> bool | None:
    """The replica's own view (its leader gauge); None while it is not serving metrics."""
    try:
        return proc.metric("divbase_operator_leader") == 1
    except (OSError, urllib.error.URLError):
        return None


def the_leader(pair: tuple[OperatorProcess, ...], timeout: float = 60) -> OperatorProcess:
    def one() -> OperatorProcess | None:
        views = [leads(proc) for proc in pair]
        return pair[views.index(True)] if views.count(True) == 1 and None not in views else None

    return wait_for("exactly one replica leading", one, timeout)


def lease_holder(api_client: Any, namespace: str) -> str:
    lease = client.CoordinationV1Api(api_client).read_namespaced_lease(names.LEASE_NAME, namespace)
    return lease.spec.holder_identity or ""


def test_two_replicas_one_acts_the_other_takes_over_and_each_step_runs_once(
    replicas: tuple[OperatorProcess, OperatorProcess], kube: Kube, db_secret: str, api_client: Any
) -> None:
    leader = the_leader(replicas)
    standby = next(proc for proc in replicas if proc is not leader)
    first_holder = lease_holder(api_client, kube.namespace)
    assert first_holder and f"leader election: {first_holder} now leads" in leader.logs()

    install(kube, db_secret)
    assert ACTED in leader.logs()
    assert ACTED not in standby.logs() and standby.metric(RECONCILES) == 0, "the standby acted"

    # the leader dies in the middle of the deploy step: the standby waits out the lease, then finishes the rollout
    kube.patch_db(DB, {"spec": {"version": TARGET}})
    kube.wait_phase(DB, names.PHASE_DEPLOYING, timeout=240)
    leader.kill()
    wait_for("the standby taking over", lambda: leads(standby), 60)
    assert lease_holder(api_client, kube.namespace) not in ("", first_holder)
    assert_converged(kube, db_secret)
    assert step_job_counts(kube) == ONE_JOB_EACH
    assert standby.metric(RECONCILES), "the new leader never reconciled"

    # the killed replica comes back as a standby; a graceful stop of the leader releases the Lease at once
    leader.start()
    assert the_leader(replicas) is standby
    second_holder = lease_holder(api_client, kube.namespace)
    standby.stop()
    assert lease_holder(api_client, kube.namespace) != second_holder, "the stopping leader kept the Lease"
    wait_for("the restarted replica taking over", lambda: leads(leader), 30)
    kube.patch_db(DB, {"spec": {"version": "3"}})
    db = kube.wait_condition(DB, names.COND_READY, timeout=300)
    assert db["status"]["currentVersion"] == "3"
    assert {k: n for k, n in step_job_counts(kube).items() if k[1] == "3"} == {("expand", "3"): 1, ("contract", "3"): 1}
