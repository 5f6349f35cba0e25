"""No password anywhere a rollout leaves traces: logs of the operator, of every pod and of the node, Events, the
resource's status, Job and Deployment specs. And migration pods run without API credentials.

And no value of any database setting anywhere a failed step leaves traces: every variable a resource can map
(the URL, or host, port, database, user and password) from a Secret holding a marker, for each way the runner
fails; no marker in status, Events, the operator's log or metrics, the Job pods' status or logs."""

from __future__ import annotations

import json
import secrets
import socket
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from divbase_app.rollout import database_spec
from divbase_migrations import contract
from divbase_migrations.testing.postgres import PostgresServer
from divbase_operator import names
from divbase_operator.testing import Kube, OperatorProcess
from divbase_testsupport import wait_for
from kubernetes import client
from sqlalchemy.engine import make_url


def test_a_rollout_leaks_no_password(
    kube: Kube, operator: OperatorProcess, db_secret: str, cluster: Any, api_client: Any
) -> None:
    password = make_url(db_secret).password
    assert password and len(password) >= 16
    kube.create_db("divbase", database_spec("1", replicas=1))
    kube.wait_condition("divbase", names.COND_READY, timeout=240)
    kube.patch_db("divbase", {"spec": {"version": "2"}})
    kube.wait_condition("divbase", names.COND_READY, timeout=240)

    serialize = client.ApiClient().sanitize_for_serialization
    traces: dict[str, str] = {
        "operator log": operator.logs(),
        "resource": json.dumps(kube.get_db("divbase")),
        "events": json.dumps(serialize(kube.core.list_namespaced_event(kube.namespace).items)),
        "jobs": json.dumps(serialize(kube.jobs("divbase"))),
        "deployments": json.dumps(serialize(kube.deployments("divbase"))),
        "node agent log": (Path(cluster.state_dir) / "logs" / "node-agent.log").read_text(),
    }
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


# --- every database setting a marker, every way the runner fails (issue 14, item 3) ---------------------------------
# The resource may map any Secret key to any database variable (a `port` mapped to an API token is a token), and a
# failed step's runner summary becomes status, an Event and a metric's trigger. Each case below is a resource whose
# Secret holds values containing its own random marker, chosen so that the runner reaches one failure path (a port
# that is no number, a host that does not resolve, a wrong password, an unknown release, ...); one operator runs
# them all at once in one namespace, and no marker may be found in anything a reader of the resource, its Events,
# the operator's log, its metrics or the Job pods can see.
@dataclass(frozen=True)
class Real:
    """Where the test's PostgreSQL is, as pods dial it: the parts no marker can stand for on a connected path."""

    host: str
    port: int


@dataclass(frozen=True)
class Case:
    name: str  # the resource's name
    secret: Callable[[str, Real], dict[str, str]]  # (marker, real) -> the Secret's data
    exit_code: int
    says: str  # in status.lastFailure.message: the failure path was reached
    url: bool = False  # the Secret holds `url` (secretRef.key) instead of the parts (secretRef.keys)
    version: str = "1"
    database: str | None = None  # SQL run in the marker's database (as its owner) before the resource is created


def _parts(m: str, real: Real, **changes: str) -> dict[str, str]:
    """Host and port where the server is; user, database and password named with the marker (they exist)."""
    return {
        "host": real.host,
        "port": str(real.port),
        "database": f"{m}_db",
        "user": f"{m}_user",
        "password": f"{m}-pw",
        **changes,
    }


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


LEAK_CASES = [
    Case(
        "port-not-a-number",
        lambda m, r: {
            "host": f"{m}-host",
            "port": m,
            "database": f"{m}_db",
            "user": f"{m}_user",
            "password": f"{m}-pw",
        },
        contract.EXIT_USAGE,
        "DIVBASE_DB_PORT: must be a port number",
    ),
    Case(
        "host-does-not-resolve",
        lambda m, r: _parts(m, r, host=f"{m}-host.invalid"),
        contract.EXIT_UNAVAILABLE,
        "the host name does not resolve",
    ),
    Case(
        "nothing-listens-on-the-port",
        lambda m, r: _parts(m, r, port=_closed_port()),
        contract.EXIT_UNAVAILABLE,
        "database unavailable: ",
    ),  # the pod network's gateway may answer for the port: no single wording
    Case(
        "wrong-password",
        lambda m, r: _parts(m, r, password=f"{m}-wrong"),
        contract.EXIT_UNAVAILABLE,
        "password authentication failed",
    ),
    Case(
        "no-such-user",
        lambda m, r: _parts(m, r, user=f"{m}_nobody"),
        contract.EXIT_UNAVAILABLE,
        "database unavailable: ",
    ),
    Case(
        "no-such-database",
        lambda m, r: _parts(m, r, database=f"{m}_nodb"),
        contract.EXIT_UNAVAILABLE,
        "the database named in the settings does not exist",
    ),
    Case(
        "unknown-release",
        lambda m, r: _parts(m, r),
        contract.EXIT_USAGE,
        "release '9' is not in the manifest",
        version="9",
    ),
    Case(
        "unknown-revision",
        lambda m, r: _parts(m, r),
        contract.EXIT_USAGE,
        "not a revision of this image's",
        database="CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY); "
        "INSERT INTO alembic_version VALUES ('0123456789ab')",
    ),
    Case(
        "migration-fails",
        lambda m, r: _parts(m, r),
        contract.EXIT_FAILED,
        "DuplicateTable",
        database='CREATE TABLE "user" (id int)',
    ),
    Case(
        "url-not-a-url",
        lambda m, r: {"url": m},
        contract.EXIT_USAGE,
        "DIVBASE_DATABASE_URL: not a database URL",
        url=True,
    ),
    Case(
        "url-of-another-scheme",
        lambda m, r: {"url": f"{m}://{m}-u:{m}-p@{m}-h/{m}-d"},
        contract.EXIT_USAGE,
        "the URL's scheme is not PostgreSQL",
        url=True,
    ),
    Case(
        "url-without-a-database",
        lambda m, r: {"url": f"postgresql://{m}-u:{m}-p@{m}-h"},
        contract.EXIT_USAGE,
        "the URL names no database",
        url=True,
    ),
    Case(
        "url-host-does-not-resolve",
        lambda m, r: {"url": f"postgresql://{m}_user:{m}-pw@{m}-h.invalid/{m}_db"},
        contract.EXIT_UNAVAILABLE,
        "the host name does not resolve",
        url=True,
    ),
    Case(
        "url-wrong-password",
        lambda m, r: {"url": f"postgresql://{m}_user:{m}-wrong@{r.host}:{r.port}/{m}_db"},
        contract.EXIT_UNAVAILABLE,
        "password authentication failed",
        url=True,
    ),
]


@dataclass
class LeakRun:
    markers: dict[str, str]  # case -> its marker
    failures: dict[str, dict[str, Any]]  # case -> status.lastFailure
    traces: dict[str, str]  # what was looked at -> its text


def _text(obj: Any) -> str:
    """The whole object as one JSON text: YAML would fold a long message, and a marker with it, across lines."""
    return json.dumps(obj, ensure_ascii=False)


def _marker() -> str:
    """Lower case (role and database names, host names) and random: found nowhere unless it leaked."""
    return f"mk{secrets.token_hex(6)}"


def _reached(kube: Kube) -> dict[str, dict[str, Any]] | None:
    """status.lastFailure of every case once each is Stalled with its runner's exit code, else None."""
    found = {}
    items = kube.custom.list_namespaced_custom_object(names.GROUP, names.VERSION, kube.namespace, names.PLURAL)
    for db in items["items"]:
        status = db.get("status") or {}
        stalled = next((c for c in status.get("conditions") or [] if c["type"] == names.COND_STALLED), {})
        failure = status.get("lastFailure") or {}
        if stalled.get("status") == "True" and failure.get("exitCode") is not None:
            found[db["metadata"]["name"]] = failure
    return found if len(found) == len(LEAK_CASES) else None


@pytest.fixture(scope="module")
def leak_run(
    api_client: Any, cluster: Any, crd: None, postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LeakRun]:
    core = client.CoreV1Api(api_client)
    namespace = f"t-leaks-{uuid.uuid4().hex[:6]}"
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace, labels={"divbase-test": "1"}))
    )
    kube = Kube(api_client, namespace)
    pod_url = urllib.parse.urlsplit(cluster.for_pods(postgres_server.url().render_as_string(hide_password=False)))
    real = Real(str(pod_url.hostname), int(pod_url.port or 5432))
    markers = {case.name: _marker() for case in LEAK_CASES}
    for m in markers.values():  # a role and a database named with the marker: connected paths log in with them
        postgres_server.psql(f"CREATE ROLE \"{m}_user\" LOGIN PASSWORD '{m}-pw'")
        postgres_server.psql(f'CREATE DATABASE "{m}_db" OWNER "{m}_user"')
    operator = OperatorProcess(str(cluster.kubeconfig), namespace, tmp_path_factory.mktemp("leaks") / "operator.log")
    try:
        for case in LEAK_CASES:
            m = markers[case.name]
            if case.database:
                postgres_server.psql(f'SET ROLE "{m}_user"; {case.database}', database=f"{m}_db")
            data = case.secret(m, real)
            kube.create_secret(case.name, data)
            ref: dict[str, Any] = {"name": case.name}
            ref.update({"key": "url"} if case.url else {"keys": {part: part for part in data}})
            kube.create_db(
                case.name,
                {
                    "version": case.version,
                    "image": "divbase",
                    "database": {"secretRef": ref},
                    "migrationJob": {"backoffLimit": 0, "activeDeadlineSeconds": 180},
                },
            )
        operator.start()
        failures = wait_for("every case Stalled with its runner's exit code", lambda: _reached(kube), 300)
        serialize = client.ApiClient().sanitize_for_serialization
        traces = {
            "metrics": operator.metrics(),
            "operator log": operator.logs(),
            "events": _text(serialize(core.list_namespaced_event(namespace).items)),
            "jobs": _text(serialize(kube.batch.list_namespaced_job(namespace).items)),
        }
        for case in LEAK_CASES:
            traces[f"resource {case.name}"] = _text(kube.get_db(case.name))
        pods = core.list_namespaced_pod(namespace).items
        for pod in pods:
            traces[f"pod {pod.metadata.name} status"] = _text(serialize(pod.status))
        for log in sorted((Path(cluster.state_dir) / "node" / "pods").glob(f"{namespace}_*/logs/**/*.log")):
            traces[str(log.relative_to(cluster.state_dir))] = log.read_text(errors="replace")
        assert len(pods) == len(LEAK_CASES), "one pod per case (backoffLimit 0)"
        yield LeakRun(markers, failures, traces)
    finally:
        operator.stop()
        print(operator.logs()[-20000:])
        core.delete_namespace(namespace, propagation_policy="Background")
        for m in markers.values():
            postgres_server.psql(f'DROP DATABASE IF EXISTS "{m}_db" WITH (FORCE)')
            postgres_server.psql(f'DROP ROLE IF EXISTS "{m}_user"')


@pytest.mark.parametrize("case", LEAK_CASES, ids=[c.name for c in LEAK_CASES])
def test_no_failure_path_leaks_a_setting(leak_run: LeakRun, case: Case) -> None:
    failure = leak_run.failures[case.name]
    assert failure["exitCode"] == case.exit_code and case.says in failure["message"], failure  # the path was reached
    # where a leak would show, the runner's own words are: its pod's termination message, the Events, the metrics
    [pod] = [text for name, text in leak_run.traces.items() if name.startswith(f"pod {case.name}-expand-")]
    assert case.says in pod and case.says in leak_run.traces["events"], "the runner's summary was looked at"
    assert f'database="{case.name}"' in leak_run.traces["metrics"]
    marker = leak_run.markers[case.name]
    leaks = sorted(name for name, text in leak_run.traces.items() if marker in text.lower())
    assert leaks == [], {name: _around(leak_run.traces[name], marker) for name in leaks}


def _around(text: str, marker: str, width: int = 200) -> str:
    at = text.lower().index(marker)
    return text[max(0, at - width) : at + width]
