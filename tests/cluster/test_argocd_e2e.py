"""Argo CD for real: Argo CD's own application controller and repo server (v3.2, built from its Go module) sync the
operator and a DivBase release from a Git repository served over HTTP on loopback, with the health check of
docs/examples/argocd-cm-health-patch.yaml in argocd-cm and the Applications of docs/examples/argocd-application.yaml
(their sync policy and options as written; the source is the rendered charts, as in test_flux_e2e.py).

What only Argo CD's own code can show: the Application's health follows the rollout - Progressing while the
operator runs expand -> deploy -> contract, Healthy only when the DivBaseDatabase is Ready at its generation, and
Degraded with the operator's own message when a release cannot be rolled out - as the controller computes it from
the live objects it watches, with the Lua script from argocd-cm. And that the message of a DivBaseDatabase in the
Application follows the operator's phases once argocd-cm lets status updates refresh the Application (Argo CD 3's
default refreshes it only when the health status changes: docs/gitops.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from divbase_localcluster.argocd import ArgoCD
from divbase_localcluster.cluster import ClusterInfo
from divbase_localcluster.gitserver import GitServer
from divbase_operator import names
from kubernetes import client
from test_flux_e2e import _render, app_namespace, remove_release_then_operator
from test_helm_e2e import ROOT, Tools, db_ready_at, migrate_check, needs_pod_network

ARGO_OPERATOR = "argocd-divbase-operator"  # not the Helm or Flux e2e's release name: cluster-scoped names differ
RELEASE = "divbase"  # the example chart's release: DivBaseDatabase `divbase` (db_ready_at reads that name)
APPLICATION = ("argoproj.io", "v1alpha1", "applications")
ROLLOUT_TIMEOUT = 300.0
EXAMPLE = ROOT / "docs" / "examples" / "argocd-application.yaml"
HEALTH_PATCH = ROOT / "docs" / "examples" / "argocd-cm-health-patch.yaml"
OPERATOR_APP, RELEASE_APP = "divbase-operator", "divbase-prod"  # the example's names
# argocd-cm `resource.compareoptions` making a status update of a managed resource refresh its Application even when
# its health status stays the same (Argo CD 3's default ignores /status for that: docs/gitops.md)
LIVE_MESSAGES = "ignoreDifferencesOnResourceUpdates: false\n"


def _example(namespace: str, app_ns: str, url: str) -> list[dict[str, Any]]:
    """docs/examples/argocd-application.yaml with the test's namespaces, and as source the repository's rendered
    charts (./operator, ./prod) instead of the charts themselves; sync policy and options as written."""
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Application", OPERATOR_APP),
        ("Application", RELEASE_APP),
    ]
    for doc, path, dest in zip(docs, ("operator", "prod"), (namespace, app_ns), strict=True):
        doc["metadata"]["namespace"] = namespace
        doc["spec"]["source"] = {"repoURL": url, "targetRevision": "main", "path": path}
        assert doc["spec"]["destination"]["server"] == "https://kubernetes.default.svc", doc["spec"]["destination"]
        doc["spec"]["destination"]["namespace"] = dest
    return docs


class Argo:
    """Reads and nudges the example's Applications in one namespace."""

    def __init__(self, custom: client.CustomObjectsApi, namespace: str) -> None:
        self.custom, self.namespace = custom, namespace

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(*APPLICATION[:2], self.namespace, APPLICATION[2], name))

    def create(self, doc: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(*APPLICATION[:2], self.namespace, APPLICATION[2], doc)

    def refresh(self, name: str) -> None:
        """What `argocd app get --refresh` does (a Git webhook has the same effect): the refresh annotation, so
        the commit is seen at once instead of at the next poll."""
        stamp = {"metadata": {"annotations": {"argocd.argoproj.io/refresh": "normal"}}}
        self.custom.patch_namespaced_custom_object(*APPLICATION[:2], self.namespace, APPLICATION[2], name, stamp)

    def state(self, name: str) -> tuple[str, str, str, dict[str, Any]]:
        """(sync status, synced revision, app health, the DivBaseDatabase's entry in status.resources or {})."""
        status = self.get(name).get("status") or {}
        sync = status.get("sync") or {}
        db = next((r for r in status.get("resources") or [] if r.get("kind") == names.KIND), {})
        return sync.get("status", ""), sync.get("revision", ""), (status.get("health") or {}).get("status", ""), db


def _wait(what: str, check: Any, describe: Any) -> Any:
    deadline = time.monotonic() + ROLLOUT_TIMEOUT
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what} not reached in {ROLLOUT_TIMEOUT:.0f} s: {describe()}"
        time.sleep(0.2)
    return result


def _follow(
    argo: Argo, custom: client.CustomObjectsApi, app_ns: str, revision: str, version: str, what: str
) -> list[str]:
    """Until the release's Application is Synced at `revision` and Healthy: when Argo CD says so, the
    DivBaseDatabase must already be Ready at `version` for its generation. Returns the distinct (app health,
    resource health: message) seen on the way."""
    seen: list[str] = []
    deadline = time.monotonic() + ROLLOUT_TIMEOUT
    while time.monotonic() < deadline:
        sync, synced, health, db = argo.state(RELEASE_APP)
        res = db.get("health") or {}
        line = f"{sync}@{synced[:8]} app={health} {names.KIND}={res.get('status')}: {res.get('message', '')}"
        if not seen or seen[-1] != line:
            seen.append(line)
        if sync == "Synced" and synced == revision and health == "Healthy":
            obj = custom.get_namespaced_custom_object(names.GROUP, names.VERSION, app_ns, names.PLURAL, RELEASE)
            assert db_ready_at(custom, app_ns, version), (
                f"{what}: Argo CD says Healthy at {revision} while the DivBaseDatabase is not Ready at {version}: "
                f"{obj.get('status')}"
            )
            return seen
        time.sleep(0.2)
    raise AssertionError(
        f"{what}: {RELEASE_APP} not Synced and Healthy at {revision} in {ROLLOUT_TIMEOUT:.0f} s: {seen}"
    )


def test_argocd_syncs_the_operator_and_its_health_follows_the_rollout(
    cluster: ClusterInfo, namespace: str, api_client: Any, database_url: str, tmp_path: Path
) -> None:
    needs_pod_network(cluster)
    tools = Tools(cluster)
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    app_ns = app_namespace(cluster, core, namespace, database_url)
    cm = yaml.safe_load(HEALTH_PATCH.read_text())["data"]  # the patch users merge into argocd-cm, as it is
    argo = Argo(custom, namespace)
    with GitServer(tmp_path / "git") as git:
        repo = git.create("divbase")
        try:
            with ArgoCD(cluster, tmp_path / "argocd", namespace, cm=cm) as argocd, _logs_on_failure(argocd):
                rev1 = repo.commit(_render(tools, namespace, app_ns, "1", ARGO_OPERATOR), "divbase 1")
                operator_app, release_app = _example(namespace, app_ns, git.url("divbase"))

                # 0. the operator first (in an app-of-apps its sync wave -10 orders it): its CRD must exist before the
                # release's DivBaseDatabase can be applied
                argo.create(operator_app)
                _wait(
                    f"{OPERATOR_APP} Synced and Healthy at {rev1}",
                    lambda: argo.state(OPERATOR_APP)[:3] == ("Synced", rev1, "Healthy"),
                    lambda: argo.get(OPERATOR_APP).get("status"),
                )

                # 1. first install from Git: Healthy only with the resource Ready at release 1
                argo.create(release_app)
                seen = _follow(argo, custom, app_ns, rev1, "1", "install")
                print(f"{RELEASE_APP} during the install:", *seen, sep="\n  ")
                assert migrate_check(database_url, "1").returncode == 0

                # 2. a commit moving to version 2: Progressing during expand -> deploy -> contract, then Healthy
                rev2 = repo.commit(_render(tools, namespace, app_ns, "2", ARGO_OPERATOR), "divbase 2")
                argo.refresh(RELEASE_APP)
                seen = _follow(argo, custom, app_ns, rev2, "2", "upgrade")
                print(f"{RELEASE_APP} during the upgrade:", *seen, sep="\n  ")
                at_rev2 = [s for s in seen if s.startswith(f"Synced@{rev2[:8]}")]
                assert any(f"app=Progressing {names.KIND}=Progressing" in s for s in at_rev2), seen
                db = custom.get_namespaced_custom_object(names.GROUP, names.VERSION, app_ns, names.PLURAL, RELEASE)
                history = db["status"]["history"][0]
                assert (history["fromVersion"], history["toVersion"], history["result"]) == ("1", "2", "Succeeded")
                jobs = batch.list_namespaced_job(app_ns, label_selector=f"{names.LABEL_DATABASE}={RELEASE}").items
                steps = {(j.metadata.labels[names.LABEL_STEP], j.metadata.labels[names.LABEL_VERSION]) for j in jobs}
                assert {("expand", "2"), ("contract", "2")} <= steps, sorted(steps)
                assert migrate_check(database_url, "2").returncode == 0
                # Argo CD tracks what it applied by annotation; the operator's children are not its resources (so
                # neither OutOfSync nor pruned with prune: true), only the DivBaseDatabase is
                managed = {(r["kind"], r["name"]) for r in argo.get(RELEASE_APP)["status"]["resources"]}
                assert (names.KIND, RELEASE) in managed, managed
                deployments = client.AppsV1Api(api_client).list_namespaced_deployment(app_ns).items
                children = {("Job", j.metadata.name) for j in jobs}
                children |= {("Deployment", d.metadata.name) for d in deployments}
                # api, worker, expand and contract Jobs at least
                assert len(children) >= 4 and not children & managed, (children, managed)
                tracking = (db["metadata"].get("annotations") or {}).get("argocd.argoproj.io/tracking-id", "")
                assert tracking.startswith(f"{RELEASE_APP}:divbase.io/{names.KIND}:"), db["metadata"]

                # 3. a commit naming a release the image does not have: Degraded, with the operator's message
                rev3 = repo.commit(_render(tools, namespace, app_ns, "9", ARGO_OPERATOR), "divbase 9 (no such release)")
                argo.refresh(RELEASE_APP)

                def degraded() -> str | None:
                    sync, synced, health, res = argo.state(RELEASE_APP)
                    res_health = res.get("health") or {}
                    if (sync, synced, health, res_health.get("status")) == ("Synced", rev3, "Degraded", "Degraded"):
                        return str(res_health.get("message", ""))
                    return None

                message = _wait(f"{RELEASE_APP} Degraded at {rev3}", degraded, lambda: argo.state(RELEASE_APP))
                print(f"{RELEASE_APP} at a failed release:", message)
                assert "release '9' is not in the manifest" in message, message
                db = custom.get_namespaced_custom_object(names.GROUP, names.VERSION, app_ns, names.PLURAL, RELEASE)
                stalled = next(c for c in db["status"]["conditions"] if c["type"] == names.COND_STALLED)
                assert stalled["status"] == "True" and stalled["message"] == message, (stalled, message)

            # 4. Argo CD restarted with status updates refreshing the Application (argocd-cm
            # resource.compareoptions ignoreDifferencesOnResourceUpdates: false): a commit moving on to release 3
            # shows the operator's message of each phase in the Application, not only the first one
            live = {**cm, "resource.compareoptions": LIVE_MESSAGES}
            with ArgoCD(cluster, tmp_path / "argocd-live", namespace, cm=live) as argocd, _logs_on_failure(argocd):
                rev4 = repo.commit(_render(tools, namespace, app_ns, "3", ARGO_OPERATOR), "divbase 3")
                argo.refresh(RELEASE_APP)
                seen = _follow(argo, custom, app_ns, rev4, "3", "next release")
                print(f"{RELEASE_APP} during the upgrade to 3, with live messages:", *seen, sep="\n  ")
                progressing = {s for s in seen if s.startswith(f"Synced@{rev4[:8]} app=Progressing")}
                # the deploy phase's message (`api 1/2 updated, ...`), after the one the rollout started with
                assert any(" updated, " in s for s in progressing) and len(progressing) >= 3, seen
        finally:
            _remove(tools, custom, namespace, app_ns, tmp_path)


@contextlib.contextmanager
def _logs_on_failure(argocd: ArgoCD) -> Iterator[None]:
    try:
        yield
    except BaseException:
        print(argocd.logs())
        raise


def _remove(tools: Tools, custom: client.CustomObjectsApi, namespace: str, app_ns: str, tmp_path: Path) -> None:
    """Delete the Applications without cascading (no resources finalizer: the operator must outlive the resource
    whose finalizer needs it), the release while the operator runs, then the operator's objects but not the CRD
    the other tests share."""
    for name in (RELEASE_APP, OPERATOR_APP):
        try:
            custom.delete_namespaced_custom_object(*APPLICATION[:2], namespace, APPLICATION[2], name)
        except client.ApiException as e:
            if e.status != 404:
                raise
    remove_release_then_operator(tools, namespace, app_ns, ARGO_OPERATOR, tmp_path)
