"""An approval binds what runs, on the real control plane (issue 14, item 4): a plan ConfigMap someone patched is
published again and not approvable by the kubectl plugin meanwhile; an approval naming a plan that changed before
the contract started is refused (ContractPlanChanged) until the new plan is approved."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import divbase_migrations
from divbase_operator import names
from divbase_operator.testing import Kube, OperatorProcess, wait_for
from sqlalchemy import create_engine, text
from test_operator_node import DB, install, migrate_check

REPUSHED_COMMENT = "repushed"


def plugin(cluster: Any, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "divbase_operator.kubectl_plugin", "--kubeconfig",
                           str(cluster.kubeconfig), "-n", namespace, *args], capture_output=True, text=True,
                          timeout=60)


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
    revision.write_text(body.replace(last, last + f"    op.execute(\"COMMENT ON TABLE \\\"user\\\" IS "
                                                  f"'{REPUSHED_COMMENT}'\")\n"))
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
    db = kube.wait_condition(DB, names.COND_READY, status="False", reason=names.REASON_AWAITING_APPROVAL,
                             timeout=180)
    return dict(db["status"]["contractPlan"])


def test_patched_plan_configmap_is_republished_and_not_approvable(kube: Kube, operator: OperatorProcess,
                                                                  db_secret: str, cluster: Any) -> None:
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
    wait_for(lambda: kube.core.read_namespaced_config_map(plan["configMap"], kube.namespace).data["plan.sql"]
             == original, 60, "the plan published again")
    wait_for(lambda: [e for e in kube.events(DB) if e.reason == names.EVENT_PLAN_REPUBLISHED and e.type == "Warning"],
             30, "a PlanRepublished Warning event")
    assert kube.get_db(DB)["status"]["contractPlan"]["digest"] == plan["digest"], "the plan itself did not change"
    assert ("contract", "2") not in kube.jobs_by_step(DB)
    approved = plugin(cluster, kube.namespace, "approve-contract", DB)
    assert approved.returncode == 0, approved.stderr
    kube.wait_condition(DB, names.COND_READY, timeout=120)
    assert len(kube.jobs_by_step(DB)[("contract", "2")]) == 1
    assert migrate_check(db_secret, "2").returncode == 0


def test_stale_approval_does_not_start_the_contract(kube: Kube, operator: OperatorProcess, db_secret: str,
                                                    tmp_path: Path) -> None:
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
    changed = kube.wait_condition(DB, names.COND_READY, status="False", reason=names.REASON_PLAN_CHANGED,
                                  timeout=180)
    plan = changed["status"]["contractPlan"]
    new = plan["digest"].split(":")[1][:12]
    assert new != old and plan["job"] != first["job"]
    assert f"the approval was for plan {old}, but the contract's plan is now {new}" in ready_message(changed)
    assert ("contract", "2") not in kube.jobs_by_step(DB)
    sql = kube.core.read_namespaced_config_map(plan["configMap"], kube.namespace).data["plan.sql"]
    assert f"COMMENT ON TABLE \"user\" IS '{REPUSHED_COMMENT}'" in sql
    # the stale approval stays refused however often the operator looks
    kube.annotate_db(DB, "test/nudge", "x")
    kube.wait_condition(DB, names.COND_READY, status="False", reason=names.REASON_PLAN_CHANGED, timeout=30)
    assert ("contract", "2") not in kube.jobs_by_step(DB)
    assert user_comment(db_secret) is None
    kube.annotate_db(DB, names.ANNOTATION_APPROVE_CONTRACT, f"2@{new}")
    kube.wait_condition(DB, names.COND_READY, timeout=120)
    assert len(kube.jobs_by_step(DB)[("contract", "2")]) == 1
    assert user_comment(db_secret) == REPUSHED_COMMENT, "the newly approved plan ran"

