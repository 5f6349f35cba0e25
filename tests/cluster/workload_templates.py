"""DivBaseDatabases with workload templates that ask for what Pod Security `baseline` forbids, and templates it
allows: one corpus for the cluster tests that judge them with Kubernetes' own code (the chart's
ValidatingAdmissionPolicy, test_admission_policy.py; Pod Security admission, test_pod_security.py) and compare
each verdict with the operator's (`spec.privileged_errors`)."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from divbase_operator import names


def restricted_database(namespace: str, name: str = "plain") -> dict[str, Any]:
    """Two plain workloads (api, worker) that meet Pod Security restricted as written."""

    def workload(name: str) -> dict[str, Any]:
        container = {
            "name": name,
            "command": [f"divbase-{name}"],
            "ports": [{"containerPort": 8000}],
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "runAsNonRoot": True,
            },
        }
        pod = {
            "securityContext": {"runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
        }
        return {"name": name, "template": {"template": {"spec": pod}}}

    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "version": "1",
            "image": "ghcr.io/divbase/divbase",
            "database": {"secretRef": {"name": "db"}},
            "workloads": [workload("api"), workload("worker")],
        },
    }


def plain_database(namespace: str, name: str = "plain") -> dict[str, Any]:
    """The same two workloads with no securityContext at all: a template as a Deployment's author may write it."""
    db = restricted_database(namespace, name)
    for workload in db["spec"]["workloads"]:
        pod = workload["template"]["template"]["spec"]
        del pod["securityContext"]
        for container in pod["containers"]:
            del container["securityContext"]
    return db


Mutation = Callable[[dict[str, Any]], None]  # of a workload's pod template (metadata, spec)


def set_at(path: str, value: Any) -> Mutation:
    """Sets `value` at `path` (dots; `[n]` indexes a list, `[+]` appends) in a pod template."""
    parts = re.findall(r"[^.\[\]]+|\[[^\]]+\]", path)

    def mutate(template: dict[str, Any]) -> None:
        node: Any = template
        for part, following in zip(parts, [*parts[1:], None], strict=True):
            if following is None:
                if part == "[+]":
                    node.append(value)
                else:
                    node[int(part[1:-1]) if part.startswith("[") else part] = value
            elif part.startswith("["):
                node = node[int(part[1:-1])]
            else:
                node = node.setdefault(part, {})

    return mutate


def all_of(*mutations: Mutation) -> Mutation:
    def mutate(template: dict[str, Any]) -> None:
        for m in mutations:
            m(template)

    return mutate


APPARMOR = "container.apparmor.security.beta.kubernetes.io/"
C0 = "spec.containers[0]"

# case: (mutation, the field both the policy and the operator name, under spec.workloads[N].template.template)
REFUSED_CASES: dict[str, tuple[Mutation, str]] = {
    "host-network": (set_at("spec.hostNetwork", True), "spec.hostNetwork"),
    "host-pid": (set_at("spec.hostPID", True), "spec.hostPID"),
    "host-ipc": (set_at("spec.hostIPC", True), "spec.hostIPC"),
    "host-path": (
        set_at("spec.volumes", [{"name": "tmp", "emptyDir": {}}, {"name": "root", "hostPath": {"path": "/"}}]),
        "spec.volumes[1].hostPath",
    ),
    "pod-seccomp-unconfined": (
        set_at("spec.securityContext.seccompProfile", {"type": "Unconfined"}),
        "spec.securityContext.seccompProfile.type",
    ),
    "pod-apparmor-unconfined": (
        set_at("spec.securityContext.appArmorProfile", {"type": "Unconfined"}),
        "spec.securityContext.appArmorProfile.type",
    ),
    "apparmor-annotation": (
        set_at("metadata.annotations", {"note": "x", f"{APPARMOR}api": "unconfined"}),
        f"metadata.annotations[{APPARMOR}api]",
    ),
    "privileged": (set_at(f"{C0}.securityContext.privileged", True), f"{C0}.securityContext.privileged"),
    "capability": (
        set_at(f"{C0}.securityContext.capabilities.add", ["SYS_ADMIN"]),
        f"{C0}.securityContext.capabilities.add",
    ),
    "capability-beside-net-bind": (
        set_at(f"{C0}.securityContext.capabilities.add", ["NET_BIND_SERVICE", "NET_RAW"]),
        f"{C0}.securityContext.capabilities.add",
    ),
    "container-seccomp-unconfined": (
        set_at(f"{C0}.securityContext.seccompProfile", {"type": "Unconfined"}),
        f"{C0}.securityContext.seccompProfile.type",
    ),
    "container-apparmor-unconfined": (
        set_at(f"{C0}.securityContext.appArmorProfile", {"type": "Unconfined"}),
        f"{C0}.securityContext.appArmorProfile.type",
    ),
    "host-port": (
        set_at(f"{C0}.ports", [{"containerPort": 8000}, {"containerPort": 9000, "hostPort": 9000}]),
        f"{C0}.ports[1].hostPort",
    ),
    "init-container-privileged": (
        set_at("spec.initContainers", [{"name": "init", "securityContext": {"privileged": True}}]),
        "spec.initContainers[0].securityContext.privileged",
    ),
    "second-container-capability": (
        set_at("spec.containers[+]", {"name": "side", "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}),
        "spec.containers[1].securityContext.capabilities.add",
    ),
    "ephemeral-container-host-port": (
        set_at("spec.ephemeralContainers", [{"name": "debug", "ports": [{"containerPort": 1, "hostPort": 1}]}]),
        "spec.ephemeralContainers[0].ports[0].hostPort",
    ),
    # the rest of Pod Security baseline (k8s.io/pod-security-admission/policy)
    "apparmor-annotation-other-profile": (
        set_at("metadata.annotations", {f"{APPARMOR}api": "my-profile"}),
        f"metadata.annotations[{APPARMOR}api]",
    ),
    "pod-selinux-type": (
        set_at("spec.securityContext.seLinuxOptions", {"type": "spc_t"}),
        "spec.securityContext.seLinuxOptions.type",
    ),
    "pod-selinux-user": (
        set_at("spec.securityContext.seLinuxOptions", {"user": "system_u"}),
        "spec.securityContext.seLinuxOptions.user",
    ),
    "pod-selinux-role": (
        set_at("spec.securityContext.seLinuxOptions", {"role": "system_r"}),
        "spec.securityContext.seLinuxOptions.role",
    ),
    "container-selinux-type": (
        set_at(f"{C0}.securityContext.seLinuxOptions", {"type": "unconfined_t"}),
        f"{C0}.securityContext.seLinuxOptions.type",
    ),
    "init-container-selinux-user": (
        set_at("spec.initContainers", [{"name": "init", "securityContext": {"seLinuxOptions": {"user": "root"}}}]),
        "spec.initContainers[0].securityContext.seLinuxOptions.user",
    ),
    "sysctl": (
        set_at(
            "spec.securityContext.sysctls",
            [{"name": "net.ipv4.tcp_syncookies", "value": "1"}, {"name": "kernel.msgmax", "value": "65536"}],
        ),
        "spec.securityContext.sysctls[1].name",
    ),
    "proc-mount-unmasked": (set_at(f"{C0}.securityContext.procMount", "Unmasked"), f"{C0}.securityContext.procMount"),
    "proc-mount-unmasked-in-a-user-namespace": (
        all_of(set_at("spec.hostUsers", False), set_at(f"{C0}.securityContext.procMount", "Unmasked")),
        f"{C0}.securityContext.procMount",
    ),
    "pod-host-process": (
        set_at("spec.securityContext.windowsOptions", {"hostProcess": True}),
        "spec.securityContext.windowsOptions.hostProcess",
    ),
    "container-host-process": (
        set_at(f"{C0}.securityContext.windowsOptions", {"hostProcess": True}),
        f"{C0}.securityContext.windowsOptions.hostProcess",
    ),
    "container-seccomp-without-type": (
        set_at(f"{C0}.securityContext.seccompProfile", {}),
        f"{C0}.securityContext.seccompProfile.type",
    ),
    "liveness-probe-host": (
        set_at(f"{C0}.livenessProbe", {"httpGet": {"host": "169.254.169.254", "path": "/", "port": 80}}),
        f"{C0}.livenessProbe.httpGet.host",
    ),
    "pre-stop-host": (
        set_at(f"{C0}.lifecycle", {"preStop": {"tcpSocket": {"host": "10.0.0.1", "port": 80}}}),
        f"{C0}.lifecycle.preStop.tcpSocket.host",
    ),
    "second-container-readiness-probe-host": (
        set_at("spec.containers[+]", {"name": "side", "readinessProbe": {"tcpSocket": {"host": "db", "port": 5432}}}),
        "spec.containers[1].readinessProbe.tcpSocket.host",
    ),
}

ALLOWED_CASES: dict[str, Mutation] = {
    "as-written": all_of(),
    "host-namespaces-false": all_of(
        set_at("spec.hostNetwork", False), set_at("spec.hostPID", False), set_at("spec.hostIPC", False)
    ),
    "empty-dir": set_at("spec.volumes", [{"name": "tmp", "emptyDir": {}}]),
    "net-bind-service": set_at(f"{C0}.securityContext.capabilities.add", ["NET_BIND_SERVICE"]),
    "privileged-false": set_at(f"{C0}.securityContext.privileged", False),
    "host-port-0": set_at(f"{C0}.ports", [{"containerPort": 8000, "hostPort": 0}]),
    "seccomp-localhost": set_at(
        f"{C0}.securityContext.seccompProfile", {"type": "Localhost", "localhostProfile": "x.json"}
    ),
    "apparmor-runtime-default": all_of(
        set_at("metadata.annotations", {f"{APPARMOR}api": "runtime/default", "note": "unconfined"}),
        set_at("spec.securityContext.appArmorProfile", {"type": "RuntimeDefault"}),
    ),
    "apparmor-localhost": all_of(
        set_at("metadata.annotations", {f"{APPARMOR}api": "localhost/divbase"}),
        set_at(f"{C0}.securityContext.appArmorProfile", {"type": "Localhost", "localhostProfile": "divbase"}),
    ),
    "selinux-container-type-and-level": all_of(
        set_at("spec.securityContext.seLinuxOptions", {"type": "container_t", "level": "s0:c123,c456"}),
        set_at(f"{C0}.securityContext.seLinuxOptions", {"type": "container_init_t", "user": ""}),
    ),
    "safe-sysctls": set_at(
        "spec.securityContext.sysctls",
        [
            {"name": "net.ipv4.ip_local_port_range", "value": "1024 65000"},
            {"name": "net.ipv4.tcp_keepalive_time", "value": "600"},
        ],
    ),
    "proc-mount-default": set_at(f"{C0}.securityContext.procMount", "Default"),
    "host-process-false": set_at(f"{C0}.securityContext.windowsOptions", {"hostProcess": False}),
    "probes-on-the-pod": all_of(
        set_at(f"{C0}.readinessProbe", {"httpGet": {"path": "/", "port": 8000}}),
        set_at(f"{C0}.livenessProbe", {"tcpSocket": {"port": 8000, "host": ""}}),
        set_at(f"{C0}.lifecycle", {"preStop": {"sleep": {"seconds": 2}}}),
    ),
}

COMBINED: dict[str, Mutation] = {
    "two-at-once": all_of(REFUSED_CASES["host-network"][0], REFUSED_CASES["privileged"][0]),
    "allowed-and-refused": all_of(ALLOWED_CASES["net-bind-service"], REFUSED_CASES["host-port"][0]),
}


def with_mutation(db: dict[str, Any], mutation: Mutation, name: str, workload: int = 1) -> dict[str, Any]:
    """`db` with `mutation` applied to the pod template of workload `workload` (the second: its index shows)."""
    db = copy.deepcopy(db)
    db["metadata"]["name"] = name
    mutation(db["spec"]["workloads"][workload]["template"]["template"])
    return db
