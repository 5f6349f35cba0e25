"""Fixtures for tests against the real local control plane (see docs/localcluster.md).

`cluster` (session): builds the binaries if the cache lacks them (never skips), starts etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and - when the node agent package is installed - the node agent, and stops
them all at the end. `api_client` is an admin `kubernetes.client.ApiClient`; `namespace` gives each test its own
namespace. A failing test's report carries the tail of every component log (and the node agent's).

Environment: DIVBASE_CLUSTER_NODE=0 starts no node agent, =1 requires it (default: start it when installed);
DIVBASE_KEEP_CLUSTER=1 keeps the state directory (logs, etcd data) after the session.
"""

from __future__ import annotations

import importlib.util
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from divbase_localcluster import build
from divbase_localcluster.cluster import ClusterInfo, LocalCluster, image_map_default
from divbase_operator.testing import Kube, OperatorProcess, install_crd

LOG_TAIL_LINES = 60

# every cluster started by these fixtures (or registered by a test), for log attachment on failure
ACTIVE_CLUSTERS: list[LocalCluster] = []


def _want_node() -> bool:
    setting = os.environ.get("DIVBASE_CLUSTER_NODE", "auto").lower()
    if setting in ("0", "false", "no"):
        return False
    if setting in ("1", "true", "yes"):
        return True
    return importlib.util.find_spec("divbase_localcluster.node") is not None and image_map_default().is_file()


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """The LocalCluster object itself (state dir, logs, status); most tests want `cluster` instead."""
    build.build()  # a no-op when the cache is warm; a cold build takes a while on small machines
    lc = LocalCluster(tmp_path_factory.mktemp("localcluster"))
    ACTIVE_CLUSTERS.append(lc)
    # a failed `up` stops what it started but keeps the state dir, so its logs reach the error report
    lc.up(node=_want_node())
    try:
        yield lc
    finally:
        keep = os.environ.get("DIVBASE_KEEP_CLUSTER") == "1" or request.session.testsfailed > 0
        lc.down(remove_state=not keep)
        ACTIVE_CLUSTERS.remove(lc)


@pytest.fixture(scope="session")
def cluster(local_cluster: LocalCluster) -> ClusterInfo:
    """A running cluster: `.kubeconfig`, `.server`, `.ca_file`, `.node_name` (None without node agent), ..."""
    return local_cluster.info()


@pytest.fixture(scope="session")
def api_client(cluster: ClusterInfo) -> Iterator[Any]:
    """Admin (system:masters) `kubernetes.client.ApiClient` for the session cluster."""
    client = cluster.api_client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def cluster_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LocalCluster]]:
    """Start extra clusters inside one test: ``lc = cluster_factory(node=False, kwok_nodes=2)``; `lc.info()`.

    Each gets its own state dir and ports; all are stopped (and their state removed) when the test ends.
    """
    started: list[LocalCluster] = []

    def start(**up_kwargs: Any) -> LocalCluster:
        lc = LocalCluster(tmp_path_factory.mktemp("extra-cluster"))
        started.append(lc)
        ACTIVE_CLUSTERS.append(lc)
        lc.up(**up_kwargs)
        return lc

    try:
        yield start
    finally:
        for lc in started:
            lc.down()
            ACTIVE_CLUSTERS.remove(lc)


@pytest.fixture
def node_name(cluster: ClusterInfo) -> str:
    """Name of the Ready node run by the node agent; fails (does not skip) when the cluster has none."""
    if not cluster.node_name:
        pytest.fail("the session cluster has no node agent (DIVBASE_CLUSTER_NODE=0 or the node package missing)")
    return cluster.node_name


@pytest.fixture
def namespace(api_client: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test; deleted afterwards (without waiting for finalization)."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{base}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"divbase-test": "1"})))
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except client.ApiException as e:
            if e.status != 404:
                raise


# -- the operator under test -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def crd(api_client: Any) -> None:
    install_crd(api_client)


@pytest.fixture
def kube(api_client: Any, namespace: str, crd: None) -> Kube:
    return Kube(api_client, namespace)


@pytest.fixture
def operator(cluster: Any, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator watching only this test's namespace; its log is printed at teardown (shown on failure)."""
    proc = OperatorProcess(str(cluster.kubeconfig), namespace, tmp_path / "operator.log")
    proc.start()
    yield proc
    proc.stop()
    print(proc.logs()[-20000:])


@pytest.fixture
def pod_database_url(cluster: ClusterInfo, database_url: str) -> str:
    """The test's database as pods dial it (with a pod network, through the gateway; docs/localcluster.md)."""
    return cluster.for_pods(database_url)


@pytest.fixture
def db_secret(kube: Kube, database_url: str, pod_database_url: str) -> str:
    """Secret `divbase-db` holding the URL pods dial; returns the URL this process dials (for its own checks)."""
    kube.create_secret("divbase-db", {"url": pod_database_url})
    return database_url


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 200 * lines))
            text = f.read().decode(errors="replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(text.splitlines()[-lines:])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the tail of each component log of every active cluster to a failing test's report."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed or not ACTIVE_CLUSTERS or "local_cluster" not in getattr(item, "fixturenames", ()):
        return
    for lc in ACTIVE_CLUSTERS:
        for component, path in lc.log_files().items():
            report.sections.append((f"{component} log ({path}, last {LOG_TAIL_LINES} lines)", _tail(path)))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/cluster needs the control plane: mark it so `-m "not cluster"` deselects it."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)
