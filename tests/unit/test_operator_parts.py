"""Pure parts of the operator: the CRD, the builders, the spec parser, observations, status patches."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from divbase_operator import names
from divbase_operator.builders import Owner, build_deployment, build_job, migration_job_name
from divbase_operator.crd import build_crd, render
from divbase_operator.kube import status_patch
from divbase_operator.observed import deployment_from_body, job_from_body, parse_summary, pod_from_body
from divbase_operator.spec import Workload, parse_spec, release_image, version_key
from divbase_operator.testing import Timeline
from planner_world import base_spec, workload

ROOT = Path(__file__).resolve().parents[2]
OWNER = Owner("db", "prod", "uid-1")


def spec_of(**extra):
    spec, errors = parse_spec(base_spec("2", **extra))
    assert not errors, errors
    return spec


def test_committed_crd_is_the_generated_one():
    committed = (ROOT / "crds" / "divbasedatabases.divbase.io.yaml").read_text()
    assert committed == render(), "run: python -m divbase_operator.crd > crds/divbasedatabases.divbase.io.yaml"


def test_crd_describes_every_spec_field():
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def walk(node, path):
        for key, child in (node.get("properties") or {}).items():
            assert child.get("description"), f"{path}.{key} has no description"
            walk(child, f"{path}.{key}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(schema, "spec")
    printer = [c["name"] for c in build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert {"Version", "Phase", "Ready", "Age"} <= set(printer)


def test_migration_job_is_hardened_and_reads_the_secret_by_reference():
    job = build_job(OWNER, spec_of(), "expand", "2", "")
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["image"] == "registry.example/divbase:2"
    assert container["command"] == ["divbase-migrate"] and container["args"][0] == "expand"
    assert container["terminationMessagePolicy"] == "File"  # never a log tail in status
    [url] = [e for e in container["env"] if e["name"] == "DIVBASE_DATABASE_URL"]
    assert url == {"name": "DIVBASE_DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "divbase-db", "key": "url"}}}
    assert job["metadata"]["ownerReferences"][0]["controller"] is True
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and 2 in rules[0]["onExitCodes"]["values"]


def test_database_parts_become_separate_secret_refs():
    spec = spec_of(
        database={"secretRef": {"name": "pg", "keys": {"host": "h", "database": "d", "user": "u", "password": "p"}}}
    )
    env = build_job(OWNER, spec, "expand", "2", "")["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in env if "valueFrom" in e}
    assert refs == {"DIVBASE_DB_HOST": "h", "DIVBASE_DB_NAME": "d", "DIVBASE_DB_USER": "u", "DIVBASE_DB_PASSWORD": "p"}


def test_job_names_are_deterministic_and_change_with_what_matters():
    spec = spec_of()
    first = migration_job_name(OWNER, spec, "expand", "2", "")
    assert first == migration_job_name(OWNER, spec, "expand", "2", "")
    assert first != migration_job_name(OWNER, spec, "expand", "2", "retry-1")
    assert first != migration_job_name(OWNER, spec, "expand", "3", "")
    assert first != migration_job_name(OWNER, spec_of(migrationJob={"backoffLimit": 5}), "expand", "2", "")
    long_owner = Owner("d" * 80, "prod", "uid")
    assert len(migration_job_name(long_owner, spec, "contract", "2", "")) <= 63


def test_deployment_gets_release_image_selector_and_version_labels():
    template = workload("api")["template"]
    template["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy:1.30"})
    body = build_deployment(OWNER, spec_of(), Workload("api", template), "2")
    containers = body["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == ["registry.example/divbase:2", "envoy:1.30"]
    assert body["spec"]["selector"] == {"matchLabels": {names.LABEL_DATABASE: "db", names.LABEL_WORKLOAD: "api"}}
    assert body["spec"]["template"]["metadata"]["labels"][names.LABEL_VERSION] == "2"
    again = build_deployment(OWNER, spec_of(), Workload("api", template), "2")
    assert again["metadata"]["annotations"] == body["metadata"]["annotations"]
    other = build_deployment(OWNER, spec_of(), Workload("api", template), "3")
    assert other["metadata"]["annotations"] != body["metadata"]["annotations"]


DIVBASE = "ghcr.io/scilifelabdatacentre/divbase"


def test_each_workload_may_have_its_own_image_tagged_with_the_version_as_written():
    """DivBase's images: divbase-fastapi for the API and migrations, divbase-worker for the Celery workers."""
    api, worker, pinned = workload("api"), workload("worker"), workload("metrics")
    worker["image"] = f"{DIVBASE}-worker"
    pinned["image"] = "registry.example/exporter@sha256:0123"
    pinned["template"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy:1.30"})
    spec, errors = parse_spec(
        {**base_spec("v0.1.0a9"), "image": f"{DIVBASE}-fastapi", "workloads": [api, worker, pinned]}
    )
    assert errors == [] and spec is not None
    images = {
        w.name: [
            c["image"] for c in build_deployment(OWNER, spec, w, "v0.1.0a9")["spec"]["template"]["spec"]["containers"]
        ]
        for w in spec.workloads
    }
    assert images == {
        "api": [f"{DIVBASE}-fastapi:v0.1.0a9"],
        "worker": [f"{DIVBASE}-worker:v0.1.0a9"],
        "metrics": ["registry.example/exporter@sha256:0123", "envoy:1.30"],
    }
    [container] = build_job(OWNER, spec, "expand", "v0.1.0a9", "")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{DIVBASE}-fastapi:v0.1.0a9"


def test_init_containers_without_an_image_run_the_release_too():
    """A worker that waits for its broker in an init container of DivBase's image moves with the release; one with
    its own image keeps it."""
    template = workload("worker")["template"]
    template["template"]["spec"]["initContainers"] = [
        {"name": "wait-for-broker", "command": ["divbase-wait"]},
        {"name": "fetch", "image": "busybox:1.36"},
    ]
    spec = spec_of(workloads=[{"name": "worker", "image": f"{DIVBASE}-worker", "template": template}])
    for version in ("v0.1.0a9", "v0.1.0a10"):
        pod = build_deployment(OWNER, spec, spec.workloads[0], version)["spec"]["template"]["spec"]
        assert [c["image"] for c in pod["initContainers"]] == [f"{DIVBASE}-worker:{version}", "busybox:1.36"]
        assert [c["image"] for c in pod["containers"]] == [f"{DIVBASE}-worker:{version}"]
    assert "image" not in template["template"]["spec"]["initContainers"][0]  # the spec itself is not changed


def test_migration_jobs_may_have_their_own_image():
    spec = spec_of(migrationJob={"image": "registry.example/divbase-migrations"})
    for step in ("expand", "contract", "plan"):
        [container] = build_job(OWNER, spec, step, "2", "")["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "registry.example/divbase-migrations:2"
    deployment = build_deployment(OWNER, spec, spec.workloads[0], "2")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/divbase:2"
    assert migration_job_name(OWNER, spec, "expand", "2", "") != migration_job_name(OWNER, spec_of(), "expand", "2", "")


def test_a_workload_image_change_is_a_new_deployment_revision():
    plain = spec_of()
    other = spec_of(workloads=[{**workload("api"), "image": "registry.example/other"}, workload("worker", 1)])
    before = build_deployment(OWNER, plain, plain.workloads[0], "2")
    after = build_deployment(OWNER, other, other.workloads[0], "2")
    assert before["metadata"]["annotations"] != after["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("image", "version", "expected"),
    [
        ("registry.example/divbase", "2", "registry.example/divbase:2"),
        ("localhost:5000/divbase", "2", "localhost:5000/divbase:2"),
        ("registry.example/divbase:pinned", "2", "registry.example/divbase:pinned"),
        ("registry.example/divbase@sha256:abc", "2", "registry.example/divbase@sha256:abc"),
    ],
)
def test_release_image(image, version, expected):
    assert release_image(image, version) == expected


def test_versions_order_as_pep_440():
    assert version_key("10") > version_key("9")
    assert version_key("1.4.0") > version_key("1.3.9")
    assert version_key("2.0.0-rc1") < version_key("2.0.0")
    assert version_key("2") == version_key("2.0.0")
    assert version_key("v0.1.0a10") > version_key("0.1.0a9")
    assert version_key("v0.1.0a9") == version_key("0.1.0a9")
    ordered = ["0.1.0a9", "0.1.0a10", "0.1.0b1", "0.1.0rc1", "0.1.0", "1", "2", "10"]
    assert sorted(reversed(ordered), key=version_key) == ordered


def test_a_recorded_version_that_does_not_parse_sorts_first_instead_of_failing():
    """Status written by an older operator (whose pattern allowed `1.0.0-foo`) must not crash a reconcile."""
    assert version_key("1.0.0-foo") < version_key("0.1.0a1")


def _crd_version_schema():
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "version"
    ]


@pytest.mark.parametrize("version", ["v0.1.0a9", "0.1.0a9", "1.2.3", "2", "1.4.0rc1", "1.0.0.post1"])
def test_divbase_versions_are_accepted_by_the_spec_and_the_crd(version):
    spec, errors = parse_spec(base_spec(version))
    assert errors == [] and spec is not None and spec.version == version
    schema = _crd_version_schema()
    assert re.search(schema["pattern"], version) and len(version) <= schema["maxLength"]


@pytest.mark.parametrize(
    ("version", "why"),
    [
        ("latest", "'latest' is not a PEP 440 version"),
        ("1.2.3.x", "'1.2.3.x' is not a PEP 440 version"),
        ("", "is empty"),
        ("1.0+build", "local label"),
        (2, "not a string"),
    ],
)
def test_other_versions_are_refused_naming_spec_version(version, why):
    spec, errors = parse_spec(base_spec(version))
    assert spec is None
    [error] = errors
    text = str(error)
    assert text.startswith("spec.version: must be a release like v0.1.0a9, 0.1.0a9 or 2"), text
    assert why in text
    if isinstance(version, str):
        assert not re.search(_crd_version_schema()["pattern"], version)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"version": "two"}, "spec.version"),
        ({"image": ""}, "spec.image"),
        ({"database": {}}, "spec.database.secretRef"),
        (
            {
                "database": {
                    "secretRef": {"name": "x", "key": "url", "keys": {"host": "h", "database": "d", "user": "u"}}
                }
            },
            "spec.database.secretRef",
        ),
        ({"workloads": [workload("api"), workload("api")]}, "spec.workloads[1].name"),
        (
            {"workloads": [{"name": "API", "template": {"template": {"spec": {"containers": [{}]}}}}]},
            "spec.workloads[0].name",
        ),
        (
            {"workloads": [{"name": "api", "template": {"template": {"spec": {"containers": []}}}}]},
            "spec.workloads[0].template.template.spec.containers",
        ),
        ({"contract": {"policy": "Delayed"}}, "spec.contract.delaySeconds"),
        ({"contract": {"policy": "Auto", "delaySeconds": 5}}, "spec.contract.delaySeconds"),
        ({"migrationJob": {"backoffLimit": -1}}, "spec.migrationJob.backoffLimit"),
        ({"migrationJob": {"image": "a b"}}, "spec.migrationJob.image"),
        ({"migrationJob": {"image": ""}}, "spec.migrationJob.image"),
        ({"workloads": [workload("api"), {**workload("worker"), "image": ""}]}, "spec.workloads[1].image"),
        ({"workloads": [{**workload("api"), "image": 7}]}, "spec.workloads[0].image"),
    ],
)
def test_bad_spec_names_the_field(patch, field):
    spec, errors = parse_spec({**base_spec("2"), **patch})
    assert spec is None
    assert any(str(e).startswith(field) for e in errors), errors


def test_observations_from_raw_objects():
    job = job_from_body(
        {
            "metadata": {"name": "j", "labels": {names.LABEL_STEP: "expand", names.LABEL_VERSION: "2"}},
            "status": {
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "DeadlineExceeded",
                        "message": "too slow",
                        "lastTransitionTime": "t",
                    }
                ]
            },
        }
    )
    assert (job.state, job.reason, job.finished_at) == ("Failed", "DeadlineExceeded", "t")
    pod = pod_from_body(
        {
            "metadata": {"name": "p", "labels": {"batch.kubernetes.io/job-name": "j"}},
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {"state": {"terminated": {"exitCode": 4, "message": '{"error":"locked"}', "finishedAt": "t"}}}
                ],
            },
        }
    )
    assert (pod.job_name, pod.exit_code, parse_summary(pod.termination_message)) == ("j", 4, {"error": "locked"})
    dep = deployment_from_body(
        {
            "metadata": {"name": "d", "generation": 3, "labels": {names.LABEL_WORKLOAD: "api"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"image": "x:2"}]}}},
            "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2},
        }
    )
    assert dep.rollout_complete and dep.images == ("x:2",)
    stuck = deployment_from_body(
        {
            "metadata": {"name": "d"},
            "status": {
                "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]
            },
        }
    )
    assert stuck.progress_deadline_exceeded
    assert parse_summary("not json") == {}


def test_status_patch_nulls_removed_keys_and_keeps_unchanged_out():
    old = {"phase": "Expanding", "activeJob": "j", "schema": {"expandedTo": "1", "contractedTo": "1"}}
    new = {"phase": "Deploying", "schema": {"expandedTo": "2", "contractedTo": "1"}}
    assert status_patch(old, new) == {"phase": "Deploying", "activeJob": None, "schema": {"expandedTo": "2"}}
    assert status_patch(new, new) == {}


def test_crd_yaml_parses_as_one_document():
    docs = list(yaml.safe_load_all((ROOT / "crds" / "divbasedatabases.divbase.io.yaml").read_text()))
    assert len(docs) == 1 and docs[0]["kind"] == "CustomResourceDefinition"


def test_a_rejected_object_stalls_with_the_apiservers_message_and_one_event() -> None:
    from datetime import UTC, datetime

    from divbase_operator import names
    from divbase_operator.planner import Decision, EmitEvent, rejected

    now = datetime(2026, 1, 1, tzinfo=UTC)
    message = 'Deployment.apps "db-api" is invalid: spec.replicas: Invalid value: -1: must be >= 0'
    first = rejected(
        Decision(status={"phase": "Deploying", "conditions": []}, actions=[]), {}, "Deployment db-api", message, 3, now
    )
    conds = {c["type"]: c for c in first.status["conditions"]}
    assert first.status["phase"] == names.PHASE_FAILED
    assert conds[names.COND_STALLED]["status"] == "True" and conds[names.COND_READY]["status"] == "False"
    assert conds[names.COND_STALLED]["reason"] == names.REASON_APPLY_FAILED
    assert "spec.replicas" in conds[names.COND_STALLED]["message"]
    assert conds[names.COND_STALLED]["observedGeneration"] == 3
    assert [a.reason for a in first.actions if isinstance(a, EmitEvent)] == [names.REASON_APPLY_FAILED]
    again = rejected(
        Decision(status={"conditions": []}, actions=[]), first.status, "Deployment db-api", message, 3, now
    )
    assert again.actions == []  # the same refusal is not announced twice


def test_a_timeline_lookup_of_an_event_never_seen_fails_instead_of_returning_infinity():
    timeline = Timeline(api_client=None, namespace="ns")  # type: ignore[arg-type]  # no watch is started
    timeline.entries += [
        (30, "DELETED", "Pod", "api-1", {names.LABEL_VERSION: "1"}, {}),
        (20, "DELETED", "Pod", "api-0", {names.LABEL_VERSION: "1"}, {}),
        (40, "ADDED", "Job", "db-contract-x", {}, {}),
    ]
    old_pod = lambda n, labels, s: labels.get(names.LABEL_VERSION) == "1"  # noqa: E731
    assert (timeline.first("Pod", "DELETED", old_pod), timeline.last("Pod", "DELETED", old_pod)) == (20, 30)
    assert timeline.times("Pod", "ADDED", old_pod) == []
    with pytest.raises(AssertionError, match="the watch saw no DELETED event of a Job"):
        timeline.last("Job", "DELETED", lambda n, labels, s: True)
    with pytest.raises(AssertionError, match="the watch saw no ADDED event of a Pod"):
        timeline.first("Pod", "ADDED", old_pod)


def test_the_last_deletion_is_known_only_once_every_pod_it_is_about_was_seen_deleted():
    """`last(DELETED)` of old pods is when the last of them went: an old pod seen but never seen deleted (a missed
    event, or one still terminating) fails the lookup instead of leaving an earlier deletion as the last."""
    timeline = Timeline(api_client=None, namespace="ns")  # type: ignore[arg-type]  # no watch is started
    old_pod = lambda n, labels, s: labels.get(names.LABEL_VERSION) == "1"  # noqa: E731
    v1 = {names.LABEL_VERSION: "1"}
    timeline.entries += [
        (10, "ADDED", "Pod", "api-0", v1, {}),
        (10, "ADDED", "Pod", "api-1", v1, {}),
        (15, "ADDED", "Pod", "api-2", {names.LABEL_VERSION: "2"}, {}),
        (20, "MODIFIED", "Pod", "api-0", v1, {}),
        (30, "DELETED", "Pod", "api-0", v1, {}),
    ]
    with pytest.raises(AssertionError, match="the watch saw no DELETED event of Pod api-1 "):
        timeline.last("Pod", "DELETED", old_pod)
    assert timeline.last("Pod", "MODIFIED", old_pod) == 20  # other events: the last one seen
    timeline.entries.append((40, "DELETED", "Pod", "api-1", v1, {}))
    assert timeline.last("Pod", "DELETED", old_pod) == 40
    timeline.entries.append((50, "ADDED", "Pod", "api-1", v1, {}))  # a pod of that name again: not gone
    with pytest.raises(AssertionError, match="no DELETED event of Pod api-1 "):
        timeline.last("Pod", "DELETED", old_pod)


# --- Pod Security `restricted` defaults (issue 14, item 2) --------------------------------------------------------
def _pod(body: dict) -> dict:
    return body["spec"]["template"]["spec"]


def test_workload_templates_get_the_restricted_defaults_where_they_set_nothing():
    spec = spec_of()
    pod = _pod(build_deployment(OWNER, spec, spec.workloads[0], "2"))
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}  # no UID: no runAsNonRoot
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert spec.workloads[0].template["template"]["spec"].get("securityContext") is None, "the spec is not changed"


def test_what_a_template_sets_is_kept_and_a_uid_brings_run_as_non_root():
    api = workload("api")
    api["template"]["template"]["spec"]["securityContext"] = {
        "runAsUser": 1000,
        "seccompProfile": {"type": "Localhost", "localhostProfile": "divbase.json"},
    }
    api["template"]["template"]["spec"]["initContainers"] = [
        {
            "name": "wait",
            "securityContext": {
                "allowPrivilegeEscalation": True,
                "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["NET_RAW"]},
            },
        }
    ]
    spec = spec_of(workloads=[api])
    pod = _pod(build_deployment(OWNER, spec, spec.workloads[0], "2"))
    assert pod["securityContext"] == {
        "runAsUser": 1000,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "Localhost", "localhostProfile": "divbase.json"},
    }
    assert pod["initContainers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": True,
        "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["NET_RAW"]},
    }
    root = workload("api")
    root["template"]["template"]["spec"]["securityContext"] = {"runAsUser": 0}
    spec = spec_of(workloads=[root])
    assert "runAsNonRoot" not in _pod(build_deployment(OWNER, spec, spec.workloads[0], "2"))["securityContext"]


def test_a_privileged_container_is_not_given_what_the_api_refuses_beside_it():
    api = workload("api")
    api["template"]["template"]["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    spec = spec_of(workloads=[api])
    [container] = _pod(build_deployment(OWNER, spec, spec.workloads[0], "2"))["containers"]
    assert container["securityContext"] == {"privileged": True, "capabilities": {"drop": ["ALL"]}}


def test_without_restricted_defaults_the_template_is_taken_as_written():
    spec = spec_of()
    pod = _pod(build_deployment(OWNER, spec, spec.workloads[0], "2", restricted=False))
    assert "securityContext" not in pod and "securityContext" not in pod["containers"][0]


def test_odd_template_shapes_are_left_to_the_apiserver():
    api = workload("api")
    api["template"]["template"]["spec"].update({"securityContext": [], "initContainers": "no list"})
    api["template"]["template"]["spec"]["containers"].append("not a container")
    spec = spec_of(workloads=[api])
    pod = _pod(build_deployment(OWNER, spec, spec.workloads[0], "2"))
    assert pod["securityContext"] == [] and pod["initContainers"] == "no list"
    assert pod["containers"][1] == "not a container"


def test_migration_pods_run_as_the_uid_given_and_keep_their_name_without_one():
    plain = spec_of()
    security = build_job(OWNER, plain, "expand", "2", "")["spec"]["template"]["spec"]["securityContext"]
    assert security == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    divbase = spec_of(migrationJob={"runAsUser": 1000, "runAsGroup": 1000})
    security = build_job(OWNER, divbase, "expand", "2", "")["spec"]["template"]["spec"]["securityContext"]
    assert security == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsUser": 1000,
        "runAsGroup": 1000,
    }
    assert migration_job_name(OWNER, divbase, "expand", "2", "") != migration_job_name(OWNER, plain, "expand", "2", "")


@pytest.mark.parametrize(("field", "value"), [("runAsUser", 0), ("runAsUser", "1000"), ("runAsGroup", -1)])
def test_migration_uid_and_gid_are_checked_naming_the_field(field: str, value: object):
    _, errors = parse_spec({**base_spec("2"), "migrationJob": {field: value}})
    assert [e.field for e in errors] == [f"migrationJob.{field}"]
