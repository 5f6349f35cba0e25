"""The operator chart's ValidatingAdmissionPolicy against the real apiserver (issue 14, item 2): a DivBaseDatabase
whose workload templates ask for the node's powers is refused at admission, naming the field, exactly when the
operator's own check (`spec.privileged_errors`) refuses it; and it never blocks what does not write a spec, so a
resource that became privileged before the policy can still lose its finalizer and go.

The policy and its binding are rendered with `helm template` (bound to this module's namespace through
watchNamespaces, so no other test of the session meets them) and applied as they are; each verdict is the
apiserver's, by server-side dry run."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from divbase_operator import names
from divbase_operator.spec import parse_spec, privileged_errors
from divbase_testsupport import wait_for
from kubernetes import client
from workload_templates import ALLOWED_CASES, COMBINED, REFUSED_CASES, restricted_database, with_mutation

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_CHART = ROOT / "charts" / "divbase-operator"
RELEASE_CHART = ROOT / "charts" / "divbase"
POLICY_TEMPLATE = "templates/admission-policy.yaml"
REFUSED = re.compile(r"ValidatingAdmissionPolicy '([^']+)' with binding '[^']+' denied request: (spec\.[^:]+): ")
STORED = "stored"  # made privileged before the policy exists (by the `policy` fixture)


class Cluster:
    """helm and kubectl of the local control plane, and the DivBaseDatabase API."""

    def __init__(self, cluster: Any, api_client: Any) -> None:
        from divbase_localcluster import build

        bin_dir = cluster.bin_dir or build.binaries().bin_dir
        self.helm_bin, self.kubectl_bin = str(bin_dir / "helm"), str(bin_dir / "kubectl")
        self.kubeconfig = str(cluster.kubeconfig)
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    def run(self, binary: str, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(
            [binary, "--kubeconfig", self.kubeconfig, *args], capture_output=True, text=True, timeout=120, input=stdin
        )
        assert proc.returncode == 0, f"{binary} {' '.join(args)}:\n{proc.stderr}"
        return proc.stdout

    def template(self, chart: Path, namespace: str, *args: str, release: str = "rel") -> list[dict[str, Any]]:
        out = self.run(self.helm_bin, "template", release, str(chart), "--namespace", namespace, *args)
        return [d for d in yaml.safe_load_all(out) if d]

    def create(self, namespace: str, db: dict[str, Any], dry_run: bool = False) -> None:
        self.custom.create_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.PLURAL, db, **({"dry_run": "All"} if dry_run else {})
        )

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(names.GROUP, names.VERSION, namespace, names.PLURAL, name)

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(names.GROUP, names.VERSION, namespace, names.PLURAL, name, body)

    def delete(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(names.GROUP, names.VERSION, namespace, names.PLURAL, name)

    def verdict(self, namespace: str, db: dict[str, Any]) -> str | None:
        """None when the apiserver admits `db` (server-side dry run), else the field the policy names."""
        try:
            self.create(namespace, db, dry_run=True)
            return None
        except client.ApiException as e:
            return refused_field(e)


def refused_field(e: client.ApiException) -> str:
    """The field named by the chart's policy in a refusal; any other error (a schema error) fails the test."""
    match = REFUSED.search(e.body or "")
    assert e.status == 403 and match and match.group(1).endswith("-privileged-workloads"), e.body
    return match.group(2)


@pytest.fixture(scope="module")
def kube(cluster: Any, api_client: Any) -> Cluster:
    """With the chart's CRD, as Helm installs it."""
    kube = Cluster(cluster, api_client)
    path = OPERATOR_CHART / "crds" / "divbasedatabases.divbase.io.yaml"
    kube.run(kube.kubectl_bin, "apply", "--server-side", "--force-conflicts", "-f", str(path))
    kube.run(
        kube.kubectl_bin, "wait", "--for=condition=Established", f"crd/{names.PLURAL}.{names.GROUP}", "--timeout=60s"
    )
    return kube


def _namespace(kube: Cluster, prefix: str) -> Iterator[str]:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kube.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"divbase-test": "1"}))
    )
    yield name
    kube.core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def watched(kube: Cluster) -> Iterator[str]:
    """The namespace the policy is bound to (the release's watchNamespaces)."""
    yield from _namespace(kube, "t-vap")


@pytest.fixture(scope="module")
def unwatched(kube: Cluster) -> Iterator[str]:
    yield from _namespace(kube, "t-vap-other")


def release_database(kube: Cluster, namespace: str) -> dict[str, Any]:
    """The DivBaseDatabase of the chart divbase's default release (workloads api and worker)."""
    [db] = [d for d in kube.template(RELEASE_CHART, namespace) if d["kind"] == names.KIND]
    return db


@pytest.fixture(scope="module")
def policy(kube: Cluster, watched: str) -> Iterator[str]:
    """The chart's policy and binding, applied and enforced, with `STORED` (hostNetwork, the operator's finalizer)
    created before them; returns the policy's name."""
    stored = restricted_database(watched, STORED)
    stored["spec"]["workloads"][1]["template"]["template"]["spec"]["hostNetwork"] = True
    kube.create(watched, {**stored, "metadata": {**stored["metadata"], "finalizers": [names.FINALIZER]}})

    docs = kube.template(
        OPERATOR_CHART,
        "divbase-system",
        "--set",
        f"watchNamespaces={{{watched}}}",
        "--show-only",
        POLICY_TEMPLATE,
        release=f"vap{uuid.uuid4().hex[:6]}",
    )
    assert sorted(d["kind"] for d in docs) == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    manifest = yaml.safe_dump_all(docs)
    kube.run(kube.kubectl_bin, "apply", "-f", "-", stdin=manifest)
    # the apiserver enforces a new policy after a short delay (its informers): retry a known-bad create, bounded
    probe = {**stored, "metadata": {"name": "probe", "namespace": watched}}
    wait_for("the policy enforced", lambda: kube.verdict(watched, probe) is not None, 60, interval=0.5)
    yield docs[0]["metadata"]["name"]
    kube.run(kube.kubectl_bin, "delete", "--ignore-not-found", "-f", "-", stdin=manifest)
    deadline = time.monotonic() + 60
    while True:  # STORED is left when test_a_privileged_resource_can_still_be_deleted failed: its finalizer goes
        try:
            kube.patch(watched, STORED, {"metadata": {"finalizers": None}})
            break
        except client.ApiException as e:
            if e.status == 404:
                break
            assert e.status == 403 and time.monotonic() < deadline, e.body  # until the policy's removal is seen
            time.sleep(0.5)


def _operator_fields(db: dict[str, Any]) -> list[str]:
    """The fields the operator's own check refuses (`spec.<field>`); the spec must parse."""
    spec, errors = parse_spec(db["spec"])
    assert spec is not None, errors
    return [f"spec.{e.field}" for e in privileged_errors(spec)]


@pytest.mark.parametrize("case", sorted(REFUSED_CASES))
def test_refused_naming_the_field_as_the_operator_does(kube: Cluster, policy: str, watched: str, case: str) -> None:
    mutation, field = REFUSED_CASES[case]
    db = with_mutation(restricted_database(watched), mutation, case)
    expected = f"spec.workloads[1].template.template.{field}"
    assert _operator_fields(db) == [expected]
    assert kube.verdict(watched, db) == expected


@pytest.mark.parametrize("base", ["restricted", "release-chart"])
@pytest.mark.parametrize("case", sorted(ALLOWED_CASES))
def test_accepted_as_the_operator_accepts(kube: Cluster, policy: str, watched: str, base: str, case: str) -> None:
    db = restricted_database(watched) if base == "restricted" else release_database(kube, watched)
    db = with_mutation(db, ALLOWED_CASES[case], case)
    assert _operator_fields(db) == []
    assert kube.verdict(watched, db) is None


def test_the_verdict_is_the_operators_for_every_template(kube: Cluster, policy: str, watched: str) -> None:
    """Every case on both bases, in either workload, and combinations: refused at admission exactly when
    `privileged_errors` refuses, naming a field the operator names."""
    mutations = {**{k: m for k, (m, _) in REFUSED_CASES.items()}, **ALLOWED_CASES, **COMBINED}
    verdicts = []
    for base in (restricted_database(watched), release_database(kube, watched)):
        for workload in (0, 1):
            for case, mutation in mutations.items():
                db = with_mutation(base, mutation, case, workload)
                operator = _operator_fields(db)
                admission = kube.verdict(watched, db)
                assert (admission is not None) == bool(operator), (case, workload, admission, operator)
                assert admission is None or admission in operator, (case, workload, admission, operator)
                verdicts.append(admission is not None)
    assert verdicts.count(True) == 4 * (len(REFUSED_CASES) + len(COMBINED))
    assert verdicts.count(False) == 4 * len(ALLOWED_CASES)


def test_bound_to_the_watched_namespaces_only(kube: Cluster, policy: str, unwatched: str) -> None:
    """watchNamespaces: the binding selects those namespaces; this release's operator acts nowhere else."""
    db = with_mutation(restricted_database(unwatched), REFUSED_CASES["host-network"][0], "elsewhere")
    assert _operator_fields(db)
    assert kube.verdict(unwatched, db) is None


def test_updates_are_judged_when_they_write_the_spec(kube: Cluster, policy: str, watched: str) -> None:
    kube.create(watched, restricted_database(watched, "updated"))
    privileged = with_mutation(restricted_database(watched), REFUSED_CASES["host-pid"][0], "updated")["spec"]
    with pytest.raises(client.ApiException) as refused:
        kube.patch(watched, "updated", {"spec": {"workloads": privileged["workloads"]}})
    assert refused_field(refused.value) == "spec.workloads[1].template.template.spec.hostPID"
    kube.patch(watched, "updated", {"spec": {"version": "2"}})
    kube.delete(watched, "updated")


def test_a_privileged_resource_can_still_be_deleted(kube: Cluster, policy: str, watched: str) -> None:
    """A resource stored before the policy (or while it was off) keeps everything that does not write its spec:
    labels, annotations, the operator's finalizer, deletion. A spec change is judged, and refused while the
    resource stays privileged."""
    field = "spec.workloads[1].template.template.spec.hostNetwork"
    assert _operator_fields(kube.get(watched, STORED)) == [field]
    kube.patch(watched, STORED, {"metadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}}})
    with pytest.raises(client.ApiException) as refused:
        kube.patch(watched, STORED, {"spec": {"version": "2"}})
    assert refused_field(refused.value) == field
    kube.delete(watched, STORED)
    db = kube.get(watched, STORED)
    assert db["metadata"].get("deletionTimestamp") and db["metadata"]["finalizers"] == [names.FINALIZER]
    kube.patch(watched, STORED, {"metadata": {"finalizers": None}})  # what the operator does once it cleaned up
    with pytest.raises(client.ApiException) as gone:
        kube.get(watched, STORED)
    assert gone.value.status == 404
