"""What the operator lets a DivBaseDatabase ask for (issue 14, items 1 and 2): its own flags decide, the planner
refuses with a Stalled condition that says why, and creates nothing."""

from __future__ import annotations

from typing import Any

import pytest
from divbase_operator import main, names
from divbase_operator.observed import JOB_ACTIVE
from divbase_operator.planner import ApplyDeployment, CreateJob, EmitEvent, decide
from divbase_operator.policy import Policy
from divbase_operator.spec import SAFE_SYSCTLS, parse_spec, privileged_errors
from planner_world import T0, World, base_spec


def _decide(world: World, policy: Policy) -> Any:
    decision = decide(world.observe(), T0, policy)
    world.status = decision.status
    return decision


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_a_resource_in_the_operators_own_namespace_is_refused() -> None:
    world = World(spec=base_spec("1"))  # the world's resource lives in namespace "prod"
    decision = _decide(world, Policy(own_namespace="prod"))
    assert not [a for a in decision.actions if isinstance(a, CreateJob | ApplyDeployment)]
    stalled = _condition(decision.status, names.COND_STALLED)
    assert stalled["status"] == "True" and stalled["reason"] == names.REASON_OPERATOR_NAMESPACE
    assert "its own namespace 'prod'" in stalled["message"] and "docs/security.md" in stalled["message"]
    assert decision.status["phase"] == names.PHASE_FAILED
    assert [a.reason for a in decision.actions if isinstance(a, EmitEvent)] == [names.REASON_OPERATOR_NAMESPACE]
    again = _decide(world, Policy(own_namespace="prod"))
    assert not [a for a in again.actions if isinstance(a, EmitEvent)], "said once"


def test_a_resource_elsewhere_is_managed() -> None:
    world = World(spec=base_spec("1"))
    decision = _decide(world, Policy(own_namespace="divbase-system"))
    assert [a for a in decision.actions if isinstance(a, CreateJob)]
    assert _condition(decision.status, names.COND_STALLED)["status"] == "False"


def test_the_operator_takes_its_namespace_from_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "divbase-system")
    assert main.policy_from_args(main.parse_args([])).own_namespace == "divbase-system"


# --- workloads safe by default ----------------------------------------------------------------------------------------
def _with_pod(
    pod: dict[str, Any] | None = None, container: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    template: dict[str, Any] = {
        "replicas": 1,
        "template": {
            "spec": {"containers": [{"name": "api", "command": ["divbase-api"], **(container or {})}], **(pod or {})}
        },
    }
    if metadata:
        template["template"]["metadata"] = metadata
    return base_spec("1", workloads=[{"name": "api", "template": template}])


POD = "spec.workloads[0].template.template.spec"
PRIVILEGED = [
    (_with_pod({"hostNetwork": True}), f"{POD}.hostNetwork"),
    (_with_pod({"hostPID": True}), f"{POD}.hostPID"),
    (_with_pod({"hostIPC": True}), f"{POD}.hostIPC"),
    (
        _with_pod({"volumes": [{"name": "ok", "emptyDir": {}}, {"name": "root", "hostPath": {"path": "/"}}]}),
        f"{POD}.volumes[1].hostPath",
    ),
    (_with_pod(container={"securityContext": {"privileged": True}}), f"{POD}.containers[0].securityContext.privileged"),
    (
        _with_pod(container={"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}),
        f"{POD}.containers[0].securityContext.capabilities.add",
    ),
    (
        _with_pod({"initContainers": [{"name": "i", "securityContext": {"privileged": True}}]}),
        f"{POD}.initContainers[0].securityContext.privileged",
    ),
    (_with_pod(container={"ports": [{"containerPort": 80, "hostPort": 80}]}), f"{POD}.containers[0].ports[0].hostPort"),
    (
        _with_pod({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
        f"{POD}.securityContext.seccompProfile.type",
    ),
    (
        _with_pod(container={"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}),
        f"{POD}.containers[0].securityContext.appArmorProfile.type",
    ),
    (
        _with_pod(metadata={"annotations": {"container.apparmor.security.beta.kubernetes.io/api": "unconfined"}}),
        "spec.workloads[0].template.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io/api]",
    ),
    # the rest of Pod Security baseline (k8s.io/pod-security-admission/policy, issue 14 item 2)
    (
        _with_pod({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}),
        f"{POD}.securityContext.seLinuxOptions.type",
    ),
    (
        _with_pod(container={"securityContext": {"seLinuxOptions": {"user": "system_u"}}}),
        f"{POD}.containers[0].securityContext.seLinuxOptions.user",
    ),
    (
        _with_pod({"securityContext": {"seLinuxOptions": {"role": "system_r"}}}),
        f"{POD}.securityContext.seLinuxOptions.role",
    ),
    (
        _with_pod(
            {
                "securityContext": {
                    "sysctls": [
                        {"name": "net.ipv4.tcp_syncookies", "value": "1"},
                        {"name": "kernel.msgmax", "value": "1"},
                    ]
                }
            }
        ),
        f"{POD}.securityContext.sysctls[1].name",
    ),
    (
        _with_pod(container={"securityContext": {"procMount": "Unmasked"}}),
        f"{POD}.containers[0].securityContext.procMount",
    ),
    (
        _with_pod({"securityContext": {"windowsOptions": {"hostProcess": True}}}),
        f"{POD}.securityContext.windowsOptions.hostProcess",
    ),
    (
        _with_pod(container={"securityContext": {"windowsOptions": {"hostProcess": True}}}),
        f"{POD}.containers[0].securityContext.windowsOptions.hostProcess",
    ),
    (
        _with_pod(container={"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
        f"{POD}.containers[0].securityContext.seccompProfile.type",
    ),
    (
        _with_pod({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}),
        f"{POD}.securityContext.appArmorProfile.type",
    ),
    (
        _with_pod(container={"livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}}}),
        f"{POD}.containers[0].livenessProbe.httpGet.host",
    ),
    (
        _with_pod(container={"lifecycle": {"preStop": {"tcpSocket": {"host": "metadata", "port": 80}}}}),
        f"{POD}.containers[0].lifecycle.preStop.tcpSocket.host",
    ),
    (
        _with_pod({"ephemeralContainers": [{"name": "debug", "securityContext": {"procMount": "Unmasked"}}]}),
        f"{POD}.ephemeralContainers[0].securityContext.procMount",
    ),
]


@pytest.mark.parametrize(("spec", "field"), PRIVILEGED, ids=[f.rsplit(".", 1)[-1] for _, f in PRIVILEGED])
def test_a_workload_with_the_nodes_powers_is_refused_naming_the_field(spec: dict[str, Any], field: str) -> None:
    world = World(spec=spec)
    decision = _decide(world, Policy())
    assert not [a for a in decision.actions if isinstance(a, CreateJob | ApplyDeployment)]
    stalled = _condition(decision.status, names.COND_STALLED)
    assert stalled["status"] == "True" and stalled["reason"] == names.REASON_INVALID_SPEC
    assert stalled["message"].startswith(f"{field}: ")
    assert "--allow-privileged-workloads" in stalled["message"]


@pytest.mark.parametrize(("spec", "field"), PRIVILEGED, ids=[f.rsplit(".", 1)[-1] for _, f in PRIVILEGED])
def test_the_operator_flag_allows_them(spec: dict[str, Any], field: str) -> None:
    parsed, errors = parse_spec(spec)
    assert parsed is not None and not errors
    assert [f"spec.{e.field}" for e in privileged_errors(parsed)] == [field], "the one field, and only the flag lets it"
    decision = _decide(World(spec=spec), Policy(allow_privileged_workloads=True))
    assert [a for a in decision.actions if isinstance(a, CreateJob)], "the expand Job starts"
    assert _condition(decision.status, names.COND_STALLED)["status"] == "False"


def test_what_restricted_allows_is_allowed_and_odd_shapes_do_not_crash() -> None:
    for spec in (
        _with_pod(container={"securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}}}),
        _with_pod(
            {"hostNetwork": False, "volumes": "not a list", "securityContext": []},
            container={"securityContext": {"capabilities": {"add": "SYS_ADMIN"}}, "ports": [7]},
        ),
    ):
        decision = _decide(World(spec=spec), Policy())
        assert _condition(decision.status, names.COND_STALLED)["status"] == "False", decision.status


@pytest.mark.parametrize(
    "spec",
    [
        _with_pod(
            {
                "securityContext": {
                    "seLinuxOptions": {"type": "container_t", "level": "s0:c123,c456"},
                    "sysctls": [{"name": n, "value": "1"} for n in sorted(SAFE_SYSCTLS)],
                    "windowsOptions": {"hostProcess": False},
                    "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"},
                    "appArmorProfile": {"type": "RuntimeDefault"},
                }
            },
            container={
                "securityContext": {"procMount": "Default", "seLinuxOptions": {"type": ""}},
                "readinessProbe": {"httpGet": {"path": "/", "port": 80, "host": ""}},
                "lifecycle": {"preStop": {"sleep": {"seconds": 2}}},
            },
            metadata={
                "annotations": {
                    "container.apparmor.security.beta.kubernetes.io/api": "localhost/p",
                    "note": "unconfined",
                }
            },
        ),
        _with_pod(
            container={"startupProbe": {"tcpSocket": {"port": 80}}, "livenessProbe": {"exec": {"command": ["x"]}}}
        ),
    ],
    ids=["every-baseline-field-at-an-allowed-value", "probes-on-the-pod"],
)
def test_what_baseline_allows_is_allowed(spec: dict[str, Any]) -> None:
    parsed, errors = parse_spec(spec)
    assert parsed is not None and not errors
    assert privileged_errors(parsed) == []


# --- allow-lists of image repositories and ServiceAccounts ---------------------------------------------------------
ALLOW = Policy(
    allowed_image_repositories=("registry.example/divbase", "ghcr.io/scilifelabdatacentre/"),
    allowed_service_accounts=("divbase-migrate",),
)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"image": "evil.example/divbase"}, "spec.image: repository 'evil.example/divbase'"),
        ({"image": "registry.example/divbase-other:1"}, "spec.image: repository 'registry.example/divbase-other'"),
        ({"migrationJob": {"image": "ghcr.io/other/divbase:2"}}, "spec.migrationJob.image"),
        (
            {
                "workloads": [
                    {"name": "api", "image": "docker.io/x", "template": _with_pod()["workloads"][0]["template"]}
                ]
            },
            "spec.workloads[0].image",
        ),
        (
            {"workloads": _with_pod(container={"image": "evil.example/api@sha256:" + "0" * 64})["workloads"]},
            f"{POD}.containers[0].image",
        ),
        (
            {"migrationJob": {"serviceAccountName": "operator-sa"}},
            "spec.migrationJob.serviceAccountName: ServiceAccount 'operator-sa' is not allowed",
        ),
        ({"workloads": _with_pod({"serviceAccountName": "ci-deployer"})["workloads"]}, f"{POD}.serviceAccountName"),
    ],
)
def test_outside_the_allow_lists_is_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    world = World(spec={**base_spec("1"), **changes})
    decision = _decide(world, ALLOW)
    assert not [a for a in decision.actions if isinstance(a, CreateJob | ApplyDeployment)]
    stalled = _condition(decision.status, names.COND_STALLED)
    assert stalled["reason"] == names.REASON_NOT_ALLOWED and field in stalled["message"], stalled["message"]
    assert [a.reason for a in decision.actions if isinstance(a, EmitEvent)] == [names.REASON_NOT_ALLOWED]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"image": "registry.example/divbase:v0.1.0a9"},
        {
            "image": "ghcr.io/scilifelabdatacentre/divbase-fastapi",
            "migrationJob": {"serviceAccountName": "divbase-migrate"},
        },
        {
            "workloads": _with_pod(
                {"serviceAccountName": "default"}, container={"image": "ghcr.io/scilifelabdatacentre/divbase-worker:1"}
            )["workloads"]
        },
    ],
)
def test_inside_the_allow_lists_is_managed(changes: dict[str, Any]) -> None:
    decision = _decide(World(spec={**base_spec("1"), **changes}), ALLOW)
    assert [a for a in decision.actions if isinstance(a, CreateJob)]


def test_the_operators_flags_become_its_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    args = main.parse_args(
        [
            "--allow-privileged-workloads",
            "--allowed-image-repository",
            "ghcr.io/org/",
            "--allowed-image-repository=registry.example/divbase",
            "--allowed-service-account",
            "divbase-migrate",
        ]
    )
    policy = main.policy_from_args(args)
    assert policy.allow_privileged_workloads is True
    assert policy.allowed_image_repositories == ("ghcr.io/org/", "registry.example/divbase")
    assert policy.allowed_service_accounts == ("divbase-migrate",)
    default = main.policy_from_args(main.parse_args([]))
    assert (
        default.allow_privileged_workloads,
        default.allowed_image_repositories,
        default.allowed_service_accounts,
    ) == (False, (), ())


def _first_deployments(policy: Policy) -> list[dict[str, Any]]:
    """The Deployments a first install applies under `policy` (expand and contract succeed on the way)."""
    world = World(spec=base_spec("1"))
    for _ in range(10):
        decision = _decide(world, policy)
        for action in decision.actions:
            world._apply(action)
        applied = [a.body for a in decision.actions if isinstance(a, ApplyDeployment)]
        if applied:
            return applied
        active = [j.step for j in world.jobs.values() if j.state == JOB_ACTIVE]
        if active:
            world.finish_job(active[0])
    raise AssertionError(f"no Deployment applied: {world.status}")


def test_workloads_get_the_restricted_defaults_unless_the_operator_allows_privileged_ones() -> None:
    for body in _first_deployments(Policy()):
        pod = body["spec"]["template"]["spec"]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    for body in _first_deployments(Policy(allow_privileged_workloads=True)):
        assert "securityContext" not in body["spec"]["template"]["spec"], "taken as written"
