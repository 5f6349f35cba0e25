"""An approval binds what runs, on the real control plane (issue 14, item 4): a tag re-pushed after the plan (another
entry for it in the node agent's image map) does not change what the approved contract runs; a plan ConfigMap
someone patched is published again and not approvable by the kubectl plugin meanwhile; an approval naming a plan
that changed before the contract started is refused (ContractPlanChanged) until the new plan is approved."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import divbase_migrations
import yaml
from divbase_localcluster.cluster import image_map_default
from divbase_migrations import contract
from divbase_operator import names
from divbase_operator.testing import Kube, OperatorProcess, install_crd
from divbase_testsupport import wait_for
from sqlalchemy import create_engine, text
from test_operator_node import DB, install, migrate_check

REPUSHED_COMMENT = "repushed"


def plugin(cluster: Any, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "divbase_operator.kubectl_plugin",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "-n",
            namespace,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def project_copy(where: Path) -> Path:
    """DivBase's own Alembic project, copied, whose release 2 contract also comments table "user": the same
    release rendering other contract SQL (what a rebuilt image would carry). Returns its alembic.ini."""
    source = Path(divbase_migrations.__file__).resolve().parent
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(source / "alembic", where / "alembic", ignore=ignore)
    shutil.copytree(source / "baseline", where / "baseline", ignore=ignore)
    for name in ("alembic.ini", "releases.toml"):
        shutil.copy(source / name, where / name)
    revision = where / "alembic" / "versions" / "2026-07-01_user_display_name_contract.py"
    body = revision.read_text()
    last = '    op.drop_column("user", "name")\n'
    assert last in body
    revision.write_text(
        body.replace(last, last + f'    op.execute("COMMENT ON TABLE \\"user\\" IS \'{REPUSHED_COMMENT}\'")\n')
    )
    return where / "alembic.ini"


def user_comment(database_url: str) -> str | None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT obj_description('\"user\"'::regclass, 'pg_class')")).scalar()
    finally:
        engine.dispose()


def ready_message(db: dict[str, Any]) -> str:
    return str(next(c for c in db["status"]["conditions"] if c["type"] == names.COND_READY).get("message", ""))


def await_plan(kube: Kube) -> dict[str, Any]:
    db = kube.wait_condition(DB, names.COND_READY, status="False", reason=names.REASON_AWAITING_APPROVAL, timeout=180)
    return dict(db["status"]["contractPlan"])


def repush(image_map: Path, env: dict[str, str]) -> None:
    """Another image behind the same tags: the image map's `divbase` entry gets `env` (read again by the agent)."""
    doc = yaml.safe_load(image_map.read_text())
    entry = next(e for e in doc["images"] if e["name"] == "divbase")
    entry["env"] = {**entry.get("env", {}), **env}
    image_map.write_text(yaml.safe_dump(doc, sort_keys=False))


def contract_pod(kube: Kube) -> Any:
    pods = kube.core.list_namespaced_pod(
        kube.namespace, label_selector=kube.selector(DB, **{names.LABEL_STEP: "contract", names.LABEL_VERSION: "2"})
    ).items
    assert len(pods) == 1, [p.metadata.name for p in pods]
    return pods[0]


def forced_contract(kube: Kube, image: str, digest: str) -> int:
    """Someone runs the approved contract with the tag itself (not the pinned digest): the runner's exit code."""
    name = f"forced-{uuid.uuid4().hex[:6]}"
    kube.batch.create_namespaced_job(
        kube.namespace,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "migrate",
                                "image": image,
                                "command": [
                                    "divbase-migrate",
                                    "contract",
                                    "--release",
                                    "2",
                                    contract.ARG_EXPECT_DIGEST,
                                    digest,
                                ],
                                "env": [
                                    {
                                        "name": contract.ENV_DATABASE_URL,
                                        "valueFrom": {"secretKeyRef": {"name": "divbase-db", "key": "url"}},
                                    }
                                ],
                            }
                        ],
                    }
                },
            },
        },
    )

    def exit_code() -> int | None:
        for pod in kube.core.list_namespaced_pod(kube.namespace, label_selector=f"job-name={name}").items:
            for status in pod.status.container_statuses or []:
                if status.state.terminated is not None:
                    return int(status.state.terminated.exit_code)
        return None

    return int(wait_for(f"Job {name} finished", lambda: (code := exit_code()) is not None and str(code), 120))


def test_repushed_tag_runs_the_approved_plan_by_digest(cluster_factory: Any, database_url: str, tmp_path: Path) -> None:
    """The plan pod's imageID is a content digest (the node agent reports `divbase@sha256:...`), so the plan pins
    the image; divbase:2 is then re-pushed with a contract that also comments table "user". The approved contract
    runs the pinned image and exactly the approved SQL; the re-pushed tag run against the approved digest is
    refused (exit 5) and applies nothing."""
    image_map = tmp_path / "images.yaml"
    shutil.copy(image_map_default(), image_map)
    info = cluster_factory(node=True, image_map=image_map).info()
    api_client = info.api_client()
    try:
        install_crd(api_client)
        namespace = f"t-repush-{uuid.uuid4().hex[:6]}"
        kube = Kube(api_client, namespace)
        kube.core.create_namespace({"metadata": {"name": namespace}})
        kube.create_secret("divbase-db", {"url": info.for_pods(database_url)})
        operator = OperatorProcess(str(info.kubeconfig), namespace, tmp_path / "operator.log")
        operator.start()
        try:
            install(kube, contract={"policy": "Manual"})
            kube.patch_db(DB, {"spec": {"version": "2"}})
            plan = await_plan(kube)
            pinned = plan.get("image")
            assert isinstance(pinned, str) and pinned.startswith("divbase@sha256:"), plan
            approved_sql = kube.core.read_namespaced_config_map(plan["configMap"], namespace).data["plan.sql"]
            assert REPUSHED_COMMENT not in approved_sql
            repush(image_map, {"DIVBASE_MIGRATE_CONFIG": str(project_copy(tmp_path / "project"))})
            assert forced_contract(kube, "divbase:2", plan["digest"]) == contract.EXIT_PRECONDITION
            assert user_comment(database_url) is None and migrate_check(database_url, "1").returncode == 0, (
                "the re-pushed contract applied nothing"
            )
            kube.annotate_db(DB, names.ANNOTATION_APPROVE_CONTRACT, f"2@{plan['digest'].split(':')[1][:12]}")
            kube.wait_condition(DB, names.COND_READY, timeout=180)
            pod = contract_pod(kube)
            assert pod.spec.containers[0].image == pinned
            assert pod.status.container_statuses[0].image_id == pinned
            assert contract.ARG_EXPECT_DIGEST in pod.spec.containers[0].args
            assert user_comment(database_url) is None, "the approved plan ran, not the re-pushed one"
            assert migrate_check(database_url, "2").returncode == 0
        finally:
            operator.stop()
            print(operator.logs()[-20000:])
    finally:
        api_client.close()


def test_patched_plan_configmap_is_republished_and_not_approvable(
    kube: Kube, operator: OperatorProcess, db_secret: str, cluster: Any
) -> None:
    install(kube, contract={"policy": "Manual"})
    kube.patch_db(DB, {"spec": {"version": "2"}})
    plan = await_plan(kube)
    original = kube.core.read_namespaced_config_map(plan["configMap"], kube.namespace).data["plan.sql"]
    assert 'ALTER TABLE "user" DROP COLUMN name' in original
    # someone who may patch ConfigMaps rewrites what a reviewer reads, while the operator is not looking
    operator.stop()
    forged = "SELECT 1; -- nothing to see here\n"
    kube.core.patch_namespaced_config_map(plan["configMap"], kube.namespace, {"data": {"plan.sql": forged}})
    refused = plugin(cluster, kube.namespace, "approve-contract", DB)
    assert refused.returncode != 0, refused.stdout
    assert f"the SQL in ConfigMap {plan['configMap']} is not the plan" in refused.stderr, refused.stderr
    annotations = kube.get_db(DB)["metadata"].get("annotations") or {}
    assert names.ANNOTATION_APPROVE_CONTRACT not in annotations, "nothing was approved"
    # the operator publishes the plan it recorded again, and says so
    operator.start()
    wait_for(
        "the plan published again",
        lambda: kube.core.read_namespaced_config_map(plan["configMap"], kube.namespace).data["plan.sql"] == original,
        60,
    )
    wait_for(
        "a PlanRepublished Warning event",
        lambda: [e for e in kube.events(DB) if e.reason == names.EVENT_PLAN_REPUBLISHED and e.type == "Warning"],
        30,
    )
    assert kube.get_db(DB)["status"]["contractPlan"]["digest"] == plan["digest"], "the plan itself did not change"
    assert ("contract", "2") not in kube.jobs_by_step(DB)
    approved = plugin(cluster, kube.namespace, "approve-contract", DB)
    assert approved.returncode == 0, approved.stderr
    kube.wait_condition(DB, names.COND_READY, timeout=120)
    assert len(kube.jobs_by_step(DB)[("contract", "2")]) == 1
    assert migrate_check(db_secret, "2").returncode == 0


def test_stale_approval_does_not_start_the_contract(
    kube: Kube, operator: OperatorProcess, db_secret: str, tmp_path: Path
) -> None:
    install(kube, contract={"policy": "Manual"})
    kube.patch_db(DB, {"spec": {"version": "2"}})
    first = await_plan(kube)
    old = first["digest"].split(":")[1][:12]
    # approved while paused, then the plan changes before the contract could start: the migrations now come from
    # a project whose release 2 contract renders other SQL (as a rebuilt image would)
    kube.patch_db_seen(DB, {"spec": {"paused": True}})
    kube.annotate_db(DB, names.ANNOTATION_APPROVE_CONTRACT, f"2@{old}")
    ini = project_copy(tmp_path / "project")
    kube.patch_db_seen(DB, {"spec": {"migrationJob": {"args": ["--config", str(ini)]}}})
    kube.patch_db(DB, {"spec": {"paused": False}})
    changed = kube.wait_condition(DB, names.COND_READY, status="False", reason=names.REASON_PLAN_CHANGED, timeout=180)
    plan = changed["status"]["contractPlan"]
    new = plan["digest"].split(":")[1][:12]
    assert new != old and plan["job"] != first["job"]
    assert f"the approval was for plan {old}, but the contract's plan is now {new}" in ready_message(changed)
    assert ("contract", "2") not in kube.jobs_by_step(DB)
    sql = kube.core.read_namespaced_config_map(plan["configMap"], kube.namespace).data["plan.sql"]
    assert f"COMMENT ON TABLE \"user\" IS '{REPUSHED_COMMENT}'" in sql
    # the stale approval stays refused however often the operator looks
    again = kube.decided_again(DB)
    assert f"the approval was for plan {old}, but the contract's plan is now {new}" in ready_message(again)
    assert ("contract", "2") not in kube.jobs_by_step(DB)
    assert user_comment(db_secret) is None
    kube.annotate_db(DB, names.ANNOTATION_APPROVE_CONTRACT, f"2@{new}")
    kube.wait_condition(DB, names.COND_READY, timeout=120)
    assert len(kube.jobs_by_step(DB)[("contract", "2")]) == 1
    assert user_comment(db_secret) == REPUSHED_COMMENT, "the newly approved plan ran"
