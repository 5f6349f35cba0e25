"""Flux for real: Flux's own source-controller and kustomize-controller (built from their Go modules) deliver the
operator and a DivBase release from a Git repository served over HTTP on loopback, the way docs/gitops.md sets it
up: a Kustomization with `wait: true` applies the operator's rendered chart and the release's, and a commit
changing the version drives expand -> deploy -> contract.

What only Flux's own code can show: its health checks (kstatus, as Flux vendors it) hold the Kustomization
not-Ready while the DivBaseDatabase rolls out and make it Ready only when the resource is Ready at its generation;
a failing release shows in the Kustomization's status with the operator's own message.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from divbase_localcluster.cluster import ClusterInfo
from divbase_localcluster.flux import FluxControllers
from divbase_localcluster.gitserver import GitServer
from divbase_operator import names
from kubernetes import client
from test_helm_e2e import OPERATOR_CHART, RELEASE_CHART, ROOT, Tools, db_ready_at, migrate_check, needs_pod_network

FLUX_OPERATOR = "flux-divbase-operator"  # not the Helm e2e's release name: cluster-scoped names must not collide
RELEASE = "divbase"  # the example chart's release: DivBaseDatabase `divbase` (db_ready_at reads that name)
SOURCE = ("source.toolkit.fluxcd.io", "v1", "gitrepositories")
KUSTOMIZATION = ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations")
ROLLOUT_TIMEOUT = 300.0
EXAMPLE = ROOT / "docs" / "examples" / "flux-kustomization.yaml"
SOURCE_NAME, OPERATOR_KS, RELEASE_KS = "divbase-deploy", "divbase-operator", "divbase-prod"  # the example's names


def _render(
    tools: Tools, namespace: str, app_ns: str, version: str, operator_release: str = FLUX_OPERATOR
) -> dict[str, str]:
    """The repository's files, as the example describes them: the operator's chart rendered into ./operator, the
    release's into ./prod (Flux generates each directory's kustomization.yaml; Argo CD reads a directory as is)."""
    operator = tools.run(
        "helm",
        "template",
        operator_release,
        str(OPERATOR_CHART),
        "-n",
        namespace,
        "--include-crds",
        "--set",
        f"watchNamespaces={{{app_ns}}}",
        "--set",
        "image.repository=divbase-operator",
    ).stdout
    release = tools.run(
        "helm",
        "template",
        RELEASE,
        str(RELEASE_CHART),
        "-n",
        app_ns,
        "--set",
        "image.repository=divbase",
        "--set",
        "database.secretName=divbase-db",
        "--set",
        "extraEnv[0].name=PORT",
        "--set-string",
        "extraEnv[0].value=8000",
        "--set",
        "migrationJob.backoffLimit=0",
        "--set-string",
        f"version={version}",
    ).stdout
    return {"operator/operator.yaml": operator, "prod/divbase.yaml": release}


def _example(namespace: str, app_ns: str, url: str) -> list[dict[str, Any]]:
    """docs/examples/flux-kustomization.yaml as it is, but for the test's namespaces, repository and retry pace."""
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("GitRepository", SOURCE_NAME),
        ("Kustomization", OPERATOR_KS),
        ("Kustomization", RELEASE_KS),
    ]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        spec = doc["spec"]
        if doc["kind"] == "GitRepository":
            spec["url"] = url
            continue
        spec["retryInterval"] = "5s"  # the example's 2m: this test does not wait minutes for a retry
        if "targetNamespace" in spec:
            spec["targetNamespace"] = app_ns
        for check in spec.get("healthChecks", []):
            check["namespace"] = app_ns
    return docs


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


class Flux:
    """Reads and nudges the example's GitRepository and Kustomizations in one namespace."""

    def __init__(self, custom: client.CustomObjectsApi, namespace: str) -> None:
        self.custom, self.namespace = custom, namespace

    def get(self, kind: tuple[str, str, str], name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(*kind[:2], self.namespace, kind[2], name))

    def create(self, doc: dict[str, Any]) -> None:
        kind = SOURCE if doc["kind"] == "GitRepository" else KUSTOMIZATION
        self.custom.create_namespaced_custom_object(*kind[:2], self.namespace, kind[2], doc)

    def request_reconcile(self) -> None:
        """What `flux reconcile source git` does: the requestedAt annotation, so the commit is seen at once."""
        stamp = {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": str(time.time_ns())}}}
        self.custom.patch_namespaced_custom_object(*SOURCE[:2], self.namespace, SOURCE[2], SOURCE_NAME, stamp)

    def ready_at(self, name: str, revision: str) -> bool:
        ks = self.get(KUSTOMIZATION, name)
        applied = (ks.get("status") or {}).get("lastAppliedRevision", "")
        return _condition(ks, "Ready").get("status") == "True" and applied.endswith(revision)


def _follow(
    flux: Flux, custom: client.CustomObjectsApi, app_ns: str, revision: str, version: str, what: str
) -> list[str]:
    """Until the release's Kustomization is Ready at `revision`: when Flux says so, the DivBaseDatabase must already
    be Ready at `version` for its generation (Flux's health check, not its apply, made it Ready). Returns the
    Kustomization's distinct Ready statuses and messages on the way."""
    seen: list[str] = []
    deadline = time.monotonic() + ROLLOUT_TIMEOUT
    while time.monotonic() < deadline:
        ready = _condition(flux.get(KUSTOMIZATION, RELEASE_KS), "Ready")
        message = f"{ready.get('status')}: {ready.get('message', '')}"
        if not seen or seen[-1] != message:
            seen.append(message)
        if flux.ready_at(RELEASE_KS, revision):
            db = custom.get_namespaced_custom_object(names.GROUP, names.VERSION, app_ns, names.PLURAL, RELEASE)
            assert db_ready_at(custom, app_ns, version), (
                f"{what}: Flux says Ready at {revision} while the DivBaseDatabase is not Ready at {version}: "
                f"{db.get('status')}"
            )
            return seen
        time.sleep(0.2)
    raise AssertionError(f"{what}: {RELEASE_KS} not Ready at {revision} in {ROLLOUT_TIMEOUT:.0f} s: {seen}")


def app_namespace(cluster: ClusterInfo, core: client.CoreV1Api, namespace: str, database_url: str) -> str:
    """The release's namespace, with the database Secret out of band (a Secret in Git is what SOPS is for, not
    these tests)."""
    app_ns = f"{namespace}-app"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=app_ns)))
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name="divbase-db"), string_data={"url": cluster.for_pods(database_url)}
    )
    core.create_namespaced_secret(app_ns, secret)
    return app_ns


def test_flux_delivers_the_operator_and_rolls_out_a_commit(
    cluster: ClusterInfo, namespace: str, api_client: Any, database_url: str, tmp_path: Path
) -> None:
    needs_pod_network(cluster)
    tools = Tools(cluster)
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    app_ns = app_namespace(cluster, core, namespace, database_url)
    flux = Flux(custom, namespace)
    with GitServer(tmp_path / "git") as git, FluxControllers(cluster, tmp_path / "flux") as controllers:
        repo = git.create("divbase")
        try:
            rev1 = repo.commit(_render(tools, namespace, app_ns, "1"), "divbase 1")
            for doc in _example(namespace, app_ns, git.url("divbase")):
                flux.create(doc)

            # 1. first install from Git: the operator, the CRD and release 1; Ready only with the resource Ready
            _follow(flux, custom, app_ns, rev1, "1", "install")
            assert migrate_check(database_url, "1").returncode == 0

            # 2. a commit moving to version 2: expand -> deploy -> contract before Flux calls it Ready
            rev2 = repo.commit(_render(tools, namespace, app_ns, "2"), "divbase 2")
            flux.request_reconcile()
            messages = _follow(flux, custom, app_ns, rev2, "2", "upgrade")
            print(f"{RELEASE_KS} during the upgrade:", *messages, sep="\n  ")
            assert any(m.startswith("Unknown") for m in messages), f"Flux never showed it in progress: {messages}"
            db = custom.get_namespaced_custom_object(names.GROUP, names.VERSION, app_ns, names.PLURAL, RELEASE)
            history = db["status"]["history"][0]
            assert (history["fromVersion"], history["toVersion"], history["result"]) == ("1", "2", "Succeeded")
            jobs = batch.list_namespaced_job(app_ns, label_selector=f"{names.LABEL_DATABASE}={RELEASE}").items
            steps = {(j.metadata.labels[names.LABEL_STEP], j.metadata.labels[names.LABEL_VERSION]): j for j in jobs}
            assert {("expand", "2"), ("contract", "2")} <= set(steps), sorted(steps)
            assert steps[("expand", "2")].status.completion_time <= steps[("contract", "2")].metadata.creation_timestamp
            assert migrate_check(database_url, "2").returncode == 0

            # 3. a commit naming a release the image does not have: the operator's message in Flux's status
            rev3 = repo.commit(_render(tools, namespace, app_ns, "9"), "divbase 9 (no such release)")
            flux.request_reconcile()

            def failed() -> str | None:
                ks = flux.get(KUSTOMIZATION, RELEASE_KS)
                ready = _condition(ks, "Ready")
                attempted = (ks.get("status") or {}).get("lastAttemptedRevision", "")
                return ready.get("message") if ready.get("status") == "False" and attempted.endswith(rev3) else None

            deadline = time.monotonic() + ROLLOUT_TIMEOUT
            while (message := failed()) is None:
                assert time.monotonic() < deadline, (
                    f"{RELEASE_KS} never failed at {rev3}: {flux.get(KUSTOMIZATION, RELEASE_KS).get('status')}"
                )
                time.sleep(0.2)
            print(f"{RELEASE_KS} at a failed release:", message)
            db = custom.get_namespaced_custom_object(names.GROUP, names.VERSION, app_ns, names.PLURAL, RELEASE)
            stalled = _condition(db, names.COND_STALLED)
            assert stalled.get("status") == "True", db.get("status")
            # Flux names the failed resource and its kstatus verdict; the operator's own words stay on the resource
            # (fluxcd/pkg/ssa's WaitForSet prints an object's status, not its message: docs/gitops.md)
            assert f"DivBaseDatabase/{app_ns}/{RELEASE} status: 'Failed'" in message, message
            assert "release '9' is not in the manifest" in stalled["message"], stalled
        except BaseException:
            print(controllers.logs())
            raise
        finally:
            _remove(tools, custom, namespace, app_ns, tmp_path)


def _remove(tools: Tools, custom: client.CustomObjectsApi, namespace: str, app_ns: str, tmp_path: Path) -> None:
    """Stop Flux (pruning would take the operator away from a resource whose finalizer needs it), delete the release
    while the operator runs, then the operator's objects but not the CRD the other tests share."""
    for name in (RELEASE_KS, OPERATOR_KS):
        try:
            custom.patch_namespaced_custom_object(
                *KUSTOMIZATION[:2], namespace, KUSTOMIZATION[2], name, {"spec": {"prune": False, "suspend": True}}
            )
            custom.delete_namespaced_custom_object(*KUSTOMIZATION[:2], namespace, KUSTOMIZATION[2], name)
        except client.ApiException as e:
            if e.status != 404:
                raise
    remove_release_then_operator(tools, namespace, app_ns, FLUX_OPERATOR, tmp_path)


def remove_release_then_operator(
    tools: Tools, namespace: str, app_ns: str, operator_release: str, tmp_path: Path
) -> None:
    """Once the GitOps tool lets go: the release while the operator runs (its finalizer needs it), then the
    operator's objects but not the CRD the other tests share, then the release's namespace."""
    tools.run(
        "kubectl", "-n", app_ns, "delete", "dbdb", "--all", "--wait=true", "--timeout=90s", check=False, timeout=120
    )
    manifest = tmp_path / "operator-to-delete.yaml"
    manifest.write_text(
        tools.run(
            "helm",
            "template",
            operator_release,
            str(OPERATOR_CHART),
            "-n",
            namespace,
            "--set",
            f"watchNamespaces={{{app_ns}}}",
        ).stdout
    )
    tools.run("kubectl", "delete", "-f", str(manifest), "--ignore-not-found", "--wait=true", check=False, timeout=120)
    tools.run("kubectl", "delete", "namespace", app_ns, "--wait=false", check=False)
