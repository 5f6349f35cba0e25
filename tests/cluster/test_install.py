"""The Helm charts against the real control plane: lint, render, server-side validation of every object (OpenAPI
schemas, the CRD's CEL rules, Pod Security admission), schema errors for typos, `helm install`/`uninstall`, and
an RBAC matrix checked by the real RBAC authorizer (`kubectl auth can-i --as=<the operator's ServiceAccount>`).

Nothing here runs the operator as a pod: tests/cluster/test_operator.py runs it as a process."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from divbase_migrations import contract
from divbase_operator import names
from divbase_testsupport import wait_for
from kubernetes import client

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_CHART = ROOT / "charts" / "divbase-operator"
RELEASE_CHART = ROOT / "charts" / "divbase"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


class Tools:
    """helm and kubectl of the local control plane, pointed at its admin kubeconfig."""

    def __init__(self, cluster: Any) -> None:
        from divbase_localcluster import build

        bin_dir = cluster.bin_dir or build.binaries().bin_dir
        self.helm_bin, self.kubectl_bin = str(bin_dir / "helm"), str(bin_dir / "kubectl")
        self.kubeconfig = str(cluster.kubeconfig)

    def helm(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.helm_bin, "--kubeconfig", self.kubeconfig, *args],
            capture_output=True,
            text=True,
            timeout=120,
            input=stdin,
        )
        if check:
            assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stderr}"
        return proc

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args],
            capture_output=True,
            text=True,
            timeout=120,
            input=stdin,
        )
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)}:\n{proc.stderr}"
        return proc

    def template(self, chart: Path, namespace: str, *args: str, release: str = "rel") -> str:
        return self.helm("template", release, str(chart), "--namespace", namespace, *args).stdout

    def server_dry_run(self, manifest: str) -> subprocess.CompletedProcess[str]:
        """Every object through admission (schema, CEL, Pod Security), nothing stored."""
        return self.kubectl("apply", "--dry-run=server", "-f", "-", stdin=manifest)

    def can_i(self, sa: str, verb: str, resource: str, namespace: str | None, subresource: str = "") -> bool:
        args = ["auth", "can-i", verb, resource, f"--as={sa}"]
        args += ["-n", namespace] if namespace else ["--all-namespaces"]
        if subresource:
            args.append(f"--subresource={subresource}")
        proc = self.kubectl(*args, check=False)
        assert proc.stdout.strip() in ("yes", "no"), proc.stderr
        return proc.stdout.strip() == "yes"


@pytest.fixture(scope="module")
def tools(cluster: Any) -> Tools:
    return Tools(cluster)


@pytest.fixture(scope="module")
def crds(tools: Tools) -> None:
    """The chart's CRDs, as Helm installs them (crds/ first), established before anything uses them."""
    path = OPERATOR_CHART / "crds" / "divbasedatabases.divbase.io.yaml"
    tools.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    tools.kubectl("wait", "--for=condition=Established", f"crd/{names.PLURAL}.{names.GROUP}", "--timeout=60s")


@pytest.fixture
def other_namespace(api_client: Any) -> Iterator[str]:
    core = client.CoreV1Api(api_client)
    name = f"t-other-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"divbase-test": "1"})))
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def _docs(manifest: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(manifest) if d]


def _dump(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


# --- lint and render ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chart", [OPERATOR_CHART, RELEASE_CHART], ids=lambda p: p.name)
def test_helm_lint_strict(tools: Tools, chart: Path) -> None:
    out = tools.helm("lint", "--strict", str(chart))
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "watchNamespaces={WATCHED}"],
        ["--set", "replicas=2"],
        ["--set", "leaderElection.enabled=false"],
        ["--set", "metrics.enabled=false"],
    ],
    ids=["cluster-wide", "namespaced", "two-replicas", "no-leader-election", "no-metrics"],
)
def test_operator_chart_objects_pass_the_apiserver(
    tools: Tools, crds: None, namespace: str, other_namespace: str, values: list[str]
) -> None:
    values = [v.replace("WATCHED", other_namespace) for v in values]  # never its own: the chart refuses that
    release = f"op{uuid.uuid4().hex[:6]}"
    manifest = tools.template(OPERATOR_CHART, namespace, *values, release=release)
    docs = _docs(manifest)
    assert {"Deployment", "ServiceAccount"} <= {d["kind"] for d in docs}
    out = tools.server_dry_run(manifest)
    accepted = [line for line in out.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(docs), out.stdout


def test_operator_pod_meets_the_restricted_pod_security_standard(tools: Tools, crds: None, namespace: str) -> None:
    tools.kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
        "--overwrite",
    )
    manifest = tools.template(OPERATOR_CHART, namespace, "--set", "watchNamespaces={team-a}")
    deployment = [d for d in _docs(manifest) if d["kind"] == "Deployment"]
    out = tools.server_dry_run(_dump(deployment))
    assert "violate PodSecurity" not in out.stderr, out.stderr
    # the check is live: a pod template without the hardening is warned about in the same namespace
    loose = yaml.safe_load(_dump(deployment))
    loose["spec"]["template"]["spec"]["containers"][0].pop("securityContext")
    out = tools.server_dry_run(_dump([loose]))
    assert "violate PodSecurity" in out.stderr


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "version=2", "--set", "contract.policy=Manual"],
        [
            "--set",
            "database.createSecret=true",
            "--set",
            "database.url=postgresql://demo@db/divbase",
            "--set",
            "contract.policy=Delayed",
            "--set",
            "contract.delaySeconds=300",
            "--set",
            "worker.enabled=false",
        ],
        ["--set-string", "version=1.4.0-rc.1", "--set", "paused=true", "--set", "rollback.onDeployFailure=false"],
    ],
    ids=["defaults", "manual", "demo-secret-delayed", "prerelease-paused"],
)
def test_release_chart_objects_pass_the_crd_schema_and_cel_rules(
    tools: Tools, crds: None, namespace: str, values: list[str]
) -> None:
    manifest = tools.template(RELEASE_CHART, namespace, *values)
    assert any(d["kind"] == names.KIND for d in _docs(manifest))
    out = tools.server_dry_run(manifest)
    assert f"{names.SINGULAR}.{names.GROUP}/rel-divbase created (server dry run)" in out.stdout, out.stdout


def test_the_apiserver_check_is_live(tools: Tools, crds: None, namespace: str) -> None:
    """The same dry run refuses a DivBaseDatabase the CRD's CEL rules forbid, naming the field."""
    docs = _docs(tools.template(RELEASE_CHART, namespace))
    db = next(d for d in docs if d["kind"] == names.KIND)
    db["spec"]["contract"] = {"policy": "Auto", "delaySeconds": 5}
    out = tools.kubectl("apply", "--dry-run=server", "-f", "-", stdin=_dump([db]), check=False)
    assert out.returncode != 0 and "delaySeconds only applies to policy Delayed" in out.stderr


@pytest.mark.parametrize(
    ("chart", "args", "message"),
    [
        (OPERATOR_CHART, ["--set", "watchNamespace={a}"], "additional properties 'watchNamespace' not allowed"),
        (OPERATOR_CHART, ["--set", "image.tga=1"], "at '/image': additional properties 'tga' not allowed"),
        (RELEASE_CHART, ["--set", "versoin=2"], "additional properties 'versoin' not allowed"),
        (
            RELEASE_CHART,
            ["--set", "migrationJob.backofLimit=1"],
            "at '/migrationJob': additional properties 'backofLimit' not allowed",
        ),
    ],
)
def test_typos_fail_with_the_value_named(
    tools: Tools, namespace: str, chart: Path, args: list[str], message: str
) -> None:
    out = tools.helm("template", "rel", str(chart), "-n", namespace, *args, check=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr


# --- helm install -------------------------------------------------------------------------------------------------
def test_helm_install_and_uninstall(
    tools: Tools, crds: None, namespace: str, other_namespace: str, api_client: Any
) -> None:
    """A real `helm install` (CRD already present: Helm leaves it alone) in a namespace of its own, watching another.
    The pod is pinned to no node: a second operator must not run beside the cluster tests' own (and the image map
    has no operator image). Watching its own namespace is refused before anything is created."""
    release = "divbase-operator"
    refused = tools.helm(
        "install",
        release,
        str(OPERATOR_CHART),
        "-n",
        namespace,
        "--set",
        f"watchNamespaces={{{namespace}}}",
        check=False,
    )
    assert refused.returncode != 0 and f"watchNamespaces lists {namespace}, the operator's own" in refused.stderr
    install = tools.helm(
        "install",
        release,
        str(OPERATOR_CHART),
        "-n",
        namespace,
        "--set",
        f"watchNamespaces={{{other_namespace}}}",
        "--set-string",
        "nodeSelector.divbase\\.io/never-schedule=true",
    )
    assert "kubectl get dbdb -A" in install.stdout and "kubectl divbase wait <name>" in install.stdout
    assert f"watching namespaces: {other_namespace}." in install.stdout
    apps = client.AppsV1Api(api_client)
    deployment = apps.read_namespaced_deployment(f"{release}", namespace)
    assert deployment.spec.strategy.type == "RollingUpdate"  # leader election: the new pod starts as a standby
    rbac = client.RbacAuthorizationV1Api(api_client)
    assert rbac.read_namespaced_role(release, other_namespace).rules
    assert rbac.read_namespaced_role(f"{release}-leader-election", namespace).rules
    # `helm upgrade` with unchanged values is accepted (schema, immutable fields)
    tools.helm("upgrade", release, str(OPERATOR_CHART), "-n", namespace, "--reuse-values")
    tools.helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "60s")
    assert not apps.list_namespaced_deployment(namespace).items
    ext = client.ApiextensionsV1Api(api_client)
    assert ext.read_custom_resource_definition(f"{names.PLURAL}.{names.GROUP}")  # kept: it holds every dbdb


def test_helm_install_of_a_release_creates_the_database(
    tools: Tools, crds: None, namespace: str, api_client: Any
) -> None:
    """`helm install` then `helm upgrade --set version=2`: the DivBaseDatabase's spec.version follows (a rollout
    starts when an operator runs; that end-to-end run is not part of this test)."""
    tools.helm("install", "divbase", str(RELEASE_CHART), "-n", namespace, "--set", "database.secretName=divbase-db")
    custom = client.CustomObjectsApi(api_client)
    db = custom.get_namespaced_custom_object(names.GROUP, names.VERSION, namespace, names.PLURAL, "divbase")
    assert db["spec"]["version"] == "1" and db["metadata"]["generation"] == 1
    tools.helm("upgrade", "divbase", str(RELEASE_CHART), "-n", namespace, "--reuse-values", "--set", "version=2")
    db = custom.get_namespaced_custom_object(names.GROUP, names.VERSION, namespace, names.PLURAL, "divbase")
    assert db["spec"]["version"] == "2" and db["metadata"]["generation"] == 2
    tools.helm("uninstall", "divbase", "-n", namespace)


# --- RBAC matrix --------------------------------------------------------------------------------------------------
def _apply_rbac(tools: Tools, namespace: str, release: str, *values: str) -> str:
    """Install only the chart's ServiceAccount and RBAC; returns the ServiceAccount's user name."""
    docs = [
        d for d in _docs(tools.template(OPERATOR_CHART, namespace, *values, release=release)) if d["kind"] in RBAC_KINDS
    ]
    tools.kubectl("apply", "-f", "-", stdin=_dump(docs))
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    return f"system:serviceaccount:{namespace}:{sa}"


MUST = [
    ("create", "jobs.batch", ""),
    ("delete", "jobs.batch", ""),
    ("watch", "jobs.batch", ""),
    ("patch", "deployments.apps", ""),
    ("create", "deployments.apps", ""),
    ("list", "pods", ""),
    ("patch", f"{names.PLURAL}.{names.GROUP}", "status"),
    ("watch", f"{names.PLURAL}.{names.GROUP}", ""),
    ("patch", f"{names.PLURAL}.{names.GROUP}", ""),
    ("create", "events", ""),
    ("create", "events.events.k8s.io", ""),
    ("create", "configmaps", ""),
    ("patch", "configmaps", ""),
    ("watch", "configmaps", ""),
    ("get", "pods", "log"),  # the lock-wait line of a running migration pod's log tail
    ("watch", "replicasets.apps", ""),
    ("get", "replicasets.apps", ""),
]
MUST_NOT = [
    ("get", "secrets", ""),
    ("list", "secrets", ""),
    ("create", "pods", "exec"),
    ("create", "pods", ""),
    ("delete", "pods", ""),
    ("delete", f"{names.PLURAL}.{names.GROUP}", ""),
    ("update", f"{names.PLURAL}.{names.GROUP}", ""),
    ("create", f"{names.PLURAL}.{names.GROUP}", ""),
    ("update", "deployments.apps", ""),
    ("deletecollection", "deployments.apps", ""),
    ("update", "configmaps", ""),
    ("deletecollection", "jobs.batch", ""),
    ("delete", "replicasets.apps", ""),
    ("patch", "replicasets.apps", ""),
    ("delete", "configmaps", ""),
    ("create", "serviceaccounts", ""),
    ("create", "rolebindings.rbac.authorization.k8s.io", ""),
    ("delete", "leases.coordination.k8s.io", ""),
    ("list", "leases.coordination.k8s.io", ""),
]


def _lease_rights(tools: Tools, sa: str, namespace: str, lease: str, elsewhere: str) -> None:
    """Leader election: its own Lease in its own namespace, nothing else."""
    own = f"leases.coordination.k8s.io/{lease}"
    assert tools.can_i(sa, "create", "leases.coordination.k8s.io", namespace)
    assert tools.can_i(sa, "get", own, namespace) and tools.can_i(sa, "update", own, namespace)
    assert tools.can_i(sa, "delete", own, namespace)  # changing its owner (OwnerReferencesPermissionEnforcement)
    assert not tools.can_i(sa, "update", "leases.coordination.k8s.io/kube-scheduler", namespace)
    assert not tools.can_i(sa, "create", "leases.coordination.k8s.io", elsewhere)


def _user_roles(tools: Tools, namespace: str, elsewhere: str) -> None:
    """Who may use DivBaseDatabases, through the chart's ClusterRoles aggregated to Kubernetes' default roles:
    admin and edit write them (as they write Deployments), view reads them, nobody writes their status."""
    resource = f"{names.PLURAL}.{names.GROUP}"
    for user, role in (("alice", "edit"), ("carol", "admin"), ("bob", "view")):
        tools.kubectl(
            "create", "rolebinding", f"{user}-{role}", f"--clusterrole={role}", f"--user={user}", "-n", namespace
        )
    # the aggregation controller fills the default roles asynchronously
    wait_for(
        "the chart's roles aggregated into edit and view",
        lambda: tools.can_i("alice", "create", resource, namespace) and tools.can_i("bob", "get", resource, namespace),
        60,
        interval=0.5,
    )
    for user in ("alice", "carol"):
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
            assert tools.can_i(user, verb, resource, namespace), f"{user} cannot {verb} {resource}"
        for verb in ("update", "patch"):
            assert not tools.can_i(user, verb, resource, namespace, "status"), f"{user} may {verb} the status"
        assert not tools.can_i(user, "create", resource, elsewhere), "only where the role is bound"
    for verb in ("get", "list", "watch"):
        assert tools.can_i("bob", verb, resource, namespace)
    for verb in ("create", "update", "patch", "delete"):
        assert not tools.can_i("bob", verb, resource, namespace), f"view may {verb} {resource}"
    assert not tools.can_i("bob", "patch", resource, namespace, "status")


def test_rbac_cluster_wide(tools: Tools, crds: None, namespace: str, other_namespace: str) -> None:
    release = f"rbac{uuid.uuid4().hex[:6]}"
    try:
        sa = _apply_rbac(tools, namespace, release)
        for ns in (namespace, other_namespace):
            for verb, resource, sub in MUST:
                assert tools.can_i(sa, verb, resource, ns, sub), f"operator cannot {verb} {resource}/{sub} in {ns}"
            for verb, resource, sub in MUST_NOT:
                assert not tools.can_i(sa, verb, resource, ns, sub), f"operator may {verb} {resource}/{sub} in {ns}"
        assert tools.can_i(sa, "list", "jobs.batch", None)  # cluster-wide watch
        assert not tools.can_i(sa, "list", "secrets", None)
        _lease_rights(tools, sa, namespace, f"{release}-divbase-operator", other_namespace)
        _user_roles(tools, namespace, other_namespace)
    finally:
        for kind in ("clusterrolebinding", "clusterrole"):
            tools.kubectl("delete", kind, f"{release}-divbase-operator", "--ignore-not-found")
        for role in ("edit", "view"):
            tools.kubectl("delete", "clusterrole", f"{release}-divbase-operator-{role}", "--ignore-not-found")


def test_rbac_namespaced_stays_in_its_namespaces(
    tools: Tools, crds: None, namespace: str, other_namespace: str
) -> None:
    """The operator in `namespace` watching `other_namespace`: its rights there, only its Lease at home."""
    sa = _apply_rbac(tools, namespace, "nsop", "--set", f"watchNamespaces={{{other_namespace}}}")
    for verb, resource, sub in MUST:
        assert tools.can_i(sa, verb, resource, other_namespace, sub), f"operator cannot {verb} {resource}/{sub}"
    for verb, resource, sub in MUST_NOT:
        assert not tools.can_i(sa, verb, resource, other_namespace, sub), f"operator may {verb} {resource}/{sub}"
    _lease_rights(tools, sa, namespace, "nsop-divbase-operator", other_namespace)
    for verb, resource, sub in MUST:
        assert not tools.can_i(sa, verb, resource, namespace, sub), (
            f"namespaced operator may {verb} {resource}/{sub} in its own namespace {namespace}"
        )
    assert not tools.can_i(sa, "list", "jobs.batch", None)


# --- the operator under the chart's RBAC ----------------------------------------------------------------------------
def _token_kubeconfig(tools: Tools, cluster: Any, namespace: str, sa_user: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the operator's ServiceAccount (a TokenRequest token), as in its pod."""
    sa = sa_user.rsplit(":", 1)[1]
    token = tools.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "operator",
                "clusters": [
                    {
                        "name": "local",
                        "cluster": {"server": cluster.server, "certificate-authority": str(cluster.ca_file)},
                    }
                ],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [
                    {"name": "operator", "context": {"cluster": "local", "user": "operator", "namespace": namespace}}
                ],
            }
        )
    )
    path.chmod(0o600)
    return path


# Kopf's optional observers list namespaces and CRDs cluster-wide; the chart grants neither (see docs/install.md).
# Kopf retries, warns once and carries on; with `settings.scanning.disabled` it does not even try.
KOPF_OPTIONAL = (
    "Not enough permissions to list namespaces",
    "Not enough permissions to watch for namespaces",
    "Not enough permissions to watch for resources",
    "GET https://{server}/api/v1/namespaces ->",
    "GET https://{server}/apis/apiextensions.k8s.io/v1/customresourcedefinitions ->",
)


def test_the_operator_works_with_exactly_the_charts_rbac(
    tools: Tools, crds: None, cluster: Any, namespace: str, other_namespace: str, api_client: Any, tmp_path: Path
) -> None:
    """The real operator, authenticated as the chart's ServiceAccount (installed in a namespace of its own, watching
    `namespace`), takes a resource through its first step and its deletion (finalizer, Job cleanup) without a
    single forbidden call beyond Kopf's optional observers. The step's runner reports a lock wait in its log (a
    stand-in that writes the runner contract's line, then waits for a file): the operator reads it (pods/log)."""
    from divbase_operator.testing import Kube, OperatorProcess

    sa_user = _apply_rbac(tools, other_namespace, "op", "--set", f"watchNamespaces={{{namespace}}}")
    kubeconfig = _token_kubeconfig(tools, cluster, other_namespace, sa_user, tmp_path / "operator.kubeconfig")
    kube = Kube(api_client, namespace)
    kube.create_secret("divbase-db", {"url": "postgresql://divbase@127.0.0.1:1/divbase"})
    released = tmp_path / "lock-released"  # the local node runs pods as processes of this machine
    line = json.dumps(contract.lock_wait_fields({"pid": 4242, "application_name": "psql"}, "2026-11-25T12:00:41Z"))
    runner = f"echo '{line}' >&2; while [ ! -e {released} ]; do sleep 0.2; done; exit 3"
    operator = OperatorProcess(str(kubeconfig), namespace, tmp_path / "operator.log")
    operator.start()
    started = time.monotonic()
    try:
        kube.create_db(
            "db",
            {
                "version": "1",
                "image": "divbase",
                "database": {"secretRef": {"name": "divbase-db"}},
                "workloads": [
                    {
                        "name": "api",
                        "template": {
                            "replicas": 1,
                            "template": {"spec": {"containers": [{"name": "api", "command": ["sleep", "3600"]}]}},
                        },
                    }
                ],
                "migrationJob": {"backoffLimit": 0, "command": ["sh", "-c", runner]},
            },
        )
        db = wait_for(
            "the operator writes status",
            lambda: (lambda d: d if (d.get("status") or {}).get("phase") else None)(kube.get_db("db")),
            90,
        )
        print(f"first status {time.monotonic() - started:.1f}s after the operator started")
        assert names.FINALIZER in db["metadata"]["finalizers"]  # patch on divbasedatabases
        assert db["status"]["phase"] == names.PHASE_EXPANDING
        wait_for("the expand Job", lambda: kube.jobs("db"), 30)  # create on jobs
        wait_for(
            "an Event from the operator",
            lambda: [e for e in kube.events("db") if e.reason == names.EVENT_JOB_CREATED],
            30,
        )  # create on events
        waiting = kube.wait_condition(
            "db", names.COND_READY, status="False", reason=names.REASON_LOCK_WAIT, timeout=60
        )  # get on pods/log
        assert "held by pid 4242 (application psql) since 2026-11-25T12:00:41Z" in next(
            c["message"] for c in waiting["status"]["conditions"] if c["type"] == names.COND_READY
        )
        released.touch()
        kube.wait_condition("db", names.COND_STALLED, timeout=60)
        kube.custom.delete_namespaced_custom_object(names.GROUP, names.VERSION, namespace, names.PLURAL, "db")

        def gone() -> bool:
            try:
                kube.get_db("db")
            except client.ApiException as exc:
                return exc.status == 404
            return False

        wait_for("the finalizer released", gone, 60)  # delete owned jobs and deployments by name, finalizers
        wait_for("the Jobs deleted", lambda: not [j for j in kube.jobs("db") if not j.metadata.deletion_timestamp], 30)
    finally:
        operator.stop()
    optional = [text.format(server=cluster.server.removeprefix("https://")) for text in KOPF_OPTIONAL]
    forbidden = [
        line
        for line in operator.logs().splitlines()
        if ("403" in line or "orbidden" in line) and not any(text in line for text in optional)
    ]
    assert not forbidden, "\n".join(forbidden[:10])
    assert "Traceback" not in operator.logs()


# --- kubectl divbase against the real apiserver -------------------------------------------------------------------
def _plugin(kubeconfig: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run(
        [sys.executable, "-m", "divbase_operator.kubectl_plugin", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_kubectl_plugin_on_a_real_resource(
    tools: Tools, crds: None, cluster: Any, namespace: str, api_client: Any, tmp_path: Path
) -> None:
    """Status written as the planner writes it (no operator runs here), then the plugin's reads and patches go
    through the real apiserver: merge patches with a resourceVersion precondition, 404 and 403 as one line."""
    from test_kstatus import PHASES

    world = PHASES["awaiting-manual"][0]()
    custom = client.CustomObjectsApi(api_client)
    body = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": "db"},
        "spec": {**world.spec, "version": "1"},
    }
    custom.create_namespaced_custom_object(names.GROUP, names.VERSION, namespace, names.PLURAL, body)
    out = _plugin(cluster.kubeconfig, "status", "db", "-n", namespace)
    assert out.returncode == 0 and "no status yet" in out.stdout, out.stderr
    assert world.generation == 2
    custom.patch_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.PLURAL, "db", {"spec": {"version": "2"}}
    )
    custom.patch_namespaced_custom_object_status(
        names.GROUP, names.VERSION, namespace, names.PLURAL, "db", {"status": world.status}
    )
    out = _plugin(cluster.kubeconfig, "status", "db", "-n", namespace)
    assert out.returncode == 0, out.stderr
    assert "Phase:       AwaitingContract" in out.stdout and "approve-contract db" in out.stdout
    assert "Generation:  2 (observed 2)\n" in out.stdout
    out = _plugin(cluster.kubeconfig, "retry", "db", "-n", namespace)
    assert out.returncode == 1 and out.stderr.startswith("error: nothing to retry")
    out = _plugin(cluster.kubeconfig, "approve-contract", "db", "-n", namespace)  # no plan ConfigMap yet
    assert out.returncode == 1 and "with the plan's SQL is missing" in out.stderr, out.stderr
    plan = world.configmaps[world.status["contractPlan"]["configMap"]]  # as the operator publishes it
    client.CoreV1Api(api_client).create_namespaced_config_map(
        namespace,
        {"metadata": {"name": plan["metadata"]["name"], "labels": plan["metadata"]["labels"]}, "data": plan["data"]},
    )
    out = _plugin(cluster.kubeconfig, "approve-contract", "db", "-n", namespace)
    assert out.returncode == 0 and "approved the contract of release 2" in out.stdout, out.stderr
    db = custom.get_namespaced_custom_object(names.GROUP, names.VERSION, namespace, names.PLURAL, "db")
    assert db["metadata"]["annotations"][names.ANNOTATION_APPROVE_CONTRACT].startswith("2@")  # that exact plan
    out = _plugin(cluster.kubeconfig, "history", "db", "-n", namespace)
    assert out.returncode == 0 and "Succeeded" in out.stdout

    out = _plugin(cluster.kubeconfig, "status", "nope", "-n", namespace)
    assert out.returncode == 1
    assert (
        out.stderr == f"error: divbasedatabase 'nope' in namespace '{namespace}' not found (is the name right, "
        f"and the DivBaseDatabase CRD installed?)\n"
    )
    # a ServiceAccount without any RBAC: forbidden, one line naming resource and namespace
    tools.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    kubeconfig = _token_kubeconfig(
        tools, cluster, namespace, f"system:serviceaccount:{namespace}:nobody", tmp_path / "nobody.kubeconfig"
    )
    out = _plugin(kubeconfig, "status", "db")  # namespace from the kubeconfig context
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: forbidden: you may not get divbasedatabase 'db' in namespace '{namespace}'")
    assert out.stderr.count("\n") == 1
