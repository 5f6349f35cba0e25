"""The DivBaseDatabase spec as typed values, and the checks the CRD schema cannot express.

The CRD rejects most bad input at admission; what is left (version ordering, the derived image, duplicate
workload names when CEL is not enough) is reported here as `SpecError`s that name the field, so the planner can
put them in a Stalled condition and an Event instead of crashing."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from divbase_migrations import contract, release_version
from packaging.version import Version

from . import names

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
CONTRACT_POLICIES = names.CONTRACT_POLICIES
DB_PART_KEYS = tuple(contract.ENV_DB_PARTS)  # host, port, database, user, password


@dataclass(frozen=True)
class SpecError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"spec.{self.field}: {self.message}"


@dataclass(frozen=True)
class DatabaseRef:
    secret_name: str
    url_key: str | None = "url"
    part_keys: dict[str, str] | None = None


@dataclass(frozen=True)
class Workload:
    name: str
    template: dict[str, Any]
    image: str | None = None  # for its containers without an image; None: spec.image


@dataclass(frozen=True)
class MigrationJobSettings:
    service_account_name: str | None = None
    automount_service_account_token: bool = False
    resources: dict[str, Any] | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = None
    backoff_limit: int = 2
    active_deadline_seconds: int = 900
    ttl_seconds_after_finished: int | None = 86400
    lock_timeout_seconds: int | None = None
    statement_timeout_seconds: int | None = None
    image: str | None = None  # None: spec.image
    run_as_user: int | None = None  # None: the image's USER (the kubelet verifies it is numeric and not 0)
    run_as_group: int | None = None
    command: tuple[str, ...] | None = None  # None: the runner contract's default, ("divbase-migrate",)
    args: tuple[str, ...] = ()  # between the command and the step's arguments


@dataclass(frozen=True)
class ContractPolicy:
    policy: str = names.CONTRACT_AUTO
    delay_seconds: int = 0


@dataclass(frozen=True)
class DatabaseSpec:
    version: str
    image: str
    database: DatabaseRef
    workloads: tuple[Workload, ...] = ()
    migration_job: MigrationJobSettings = field(default_factory=MigrationJobSettings)
    contract: ContractPolicy = field(default_factory=ContractPolicy)
    paused: bool = False
    rollback_on_failure: bool = True

    @property
    def release_image(self) -> str:
        return release_image(self.image, self.version)

    def workload_image(self, workload: Workload, version: str) -> str:
        """DivBase builds one image per component (divbase-fastapi, divbase-worker), all tagged with the release."""
        return release_image(workload.image or self.image, version)

    def migration_image(self, version: str) -> str:
        return release_image(self.migration_job.image or self.image, version)


def release_image(image: str, version: str) -> str:
    """`image` is a repository (the tag is the version exactly as written, e.g. `v0.1.0a9`, as DivBase tags its
    images) unless it already carries a tag or a digest."""
    last = image.rsplit("/", 1)[-1]
    if "@" in image or ":" in last:
        return image
    return f"{image}:{version}"


_OLDEST = Version("0.dev0")


def version_key(version: str) -> Version:
    """Orders releases as PEP 440 does (0.1.0a9 < 0.1.0a10 < 0.1.0 < 2 < 10; v0.1.0a9 = 0.1.0a9).

    spec.version is validated before it is compared; a recorded version that does not parse (written by an older
    operator, whose pattern was looser) sorts before every release instead of crashing the reconcile: at worst a
    step the schema already has is run again, and the runner, which reads the database, refuses what is unsafe."""
    try:
        return release_version.sort_key(version)
    except release_version.InvalidRelease:
        return _OLDEST


def _int(
    raw: dict[str, Any], key: str, default: int | None, path: str, errors: list[SpecError], minimum: int = 0
) -> int | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        errors.append(SpecError(f"{path}.{key}", f"must be an integer >= {minimum}, got {value!r}"))
        return default
    return value


def parse_spec(raw: dict[str, Any] | None) -> tuple[DatabaseSpec | None, list[SpecError]]:
    """Returns the typed spec, or None with every problem found (not just the first)."""
    raw = raw or {}
    errors: list[SpecError] = []

    version = raw.get("version")
    try:
        release_version.check(version)
    except release_version.InvalidRelease as exc:
        errors.append(SpecError("version", f"must be {release_version.EXPECTED}: {exc}"))
    image = raw.get("image")
    _check_image(image, "image", errors)

    database = _parse_database(raw.get("database"), errors)
    workloads = _parse_workloads(raw.get("workloads"), errors)

    job = _parse_migration_job(raw.get("migrationJob") or {}, errors)
    contract_policy = _parse_contract(raw.get("contract") or {}, errors)

    if errors or database is None:
        return None, errors
    assert isinstance(version, str) and isinstance(image, str)
    return DatabaseSpec(
        version=version,
        image=image,
        database=database,
        workloads=tuple(workloads),
        migration_job=job,
        contract=contract_policy,
        paused=bool(raw.get("paused", False)),
        rollback_on_failure=bool((raw.get("rollback") or {}).get("onDeployFailure", True)),
    ), []


def _parse_migration_job(job_raw: dict[str, Any], errors: list[SpecError]) -> MigrationJobSettings:
    """spec.migrationJob with its defaults; each bad field adds a SpecError (parse_spec then returns no spec)."""
    return MigrationJobSettings(
        service_account_name=job_raw.get("serviceAccountName"),
        automount_service_account_token=bool(job_raw.get("automountServiceAccountToken", False)),
        resources=job_raw.get("resources"),
        node_selector=job_raw.get("nodeSelector"),
        tolerations=job_raw.get("tolerations"),
        backoff_limit=_int(job_raw, "backoffLimit", 2, "migrationJob", errors) or 0,
        active_deadline_seconds=_int(job_raw, "activeDeadlineSeconds", 900, "migrationJob", errors, 1) or 900,
        ttl_seconds_after_finished=_int(job_raw, "ttlSecondsAfterFinished", 86400, "migrationJob", errors),
        lock_timeout_seconds=_int(job_raw, "lockTimeoutSeconds", None, "migrationJob", errors, 1),
        statement_timeout_seconds=_int(job_raw, "statementTimeoutSeconds", None, "migrationJob", errors),
        image=_optional_image(job_raw.get("image"), "migrationJob.image", errors),
        run_as_user=_int(job_raw, "runAsUser", None, "migrationJob", errors, 1),
        run_as_group=_int(job_raw, "runAsGroup", None, "migrationJob", errors),
        command=_strings(job_raw.get("command"), "migrationJob.command", errors, min_items=1),
        args=_strings(job_raw.get("args"), "migrationJob.args", errors) or (),
    )


def _parse_contract(contract_raw: dict[str, Any], errors: list[SpecError]) -> ContractPolicy:
    """spec.contract: the policy, and delaySeconds only (and always) for Delayed."""
    policy = contract_raw.get("policy", names.CONTRACT_AUTO)
    if policy not in CONTRACT_POLICIES:
        errors.append(SpecError("contract.policy", f"must be one of {', '.join(CONTRACT_POLICIES)}, got {policy!r}"))
    delay = _int(contract_raw, "delaySeconds", None, "contract", errors)
    if policy == names.CONTRACT_DELAYED and delay is None:
        errors.append(SpecError("contract.delaySeconds", "is required when contract.policy is Delayed"))
    if policy != names.CONTRACT_DELAYED and delay:
        errors.append(SpecError("contract.delaySeconds", f"only applies to policy Delayed, not {policy!r}"))
    return ContractPolicy(policy=policy, delay_seconds=delay or 0)


def _check_image(image: Any, path: str, errors: list[SpecError]) -> bool:
    if not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image):
        errors.append(SpecError(path, f"must be an image repository or reference, got {image!r}"))
        return False
    return True


def _optional_image(image: Any, path: str, errors: list[SpecError]) -> str | None:
    return image if image is not None and _check_image(image, path, errors) else None


def _strings(raw: Any, path: str, errors: list[SpecError], min_items: int = 0) -> tuple[str, ...] | None:
    """A list of strings; the message never quotes the items (arguments may carry what belongs in a Secret)."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        errors.append(SpecError(path, f"must be a list of strings, not a {type(raw).__name__}"))
        return None
    if len(raw) < min_items:
        errors.append(SpecError(path, f"must list at least {min_items} string(s)"))
        return None
    wrong = [f"item {i} is of type {type(a).__name__}" for i, a in enumerate(raw) if not isinstance(a, str)]
    if wrong:
        errors.append(SpecError(path, f"must be a list of strings: {', '.join(wrong)}"))
        return None
    if min_items and not raw[0].strip():
        errors.append(SpecError(path, "must name a program: its first item is empty"))
        return None
    return tuple(raw)


def _parse_database(raw: Any, errors: list[SpecError]) -> DatabaseRef | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("secretRef"), dict):
        errors.append(SpecError("database.secretRef", "is required: the Secret with the connection URL or parts"))
        return None
    ref = raw["secretRef"]
    name = ref.get("name")
    if not isinstance(name, str) or not name:
        errors.append(SpecError("database.secretRef.name", "is required"))
        return None
    keys = ref.get("keys")
    if keys is not None:
        if "key" in ref:
            errors.append(SpecError("database.secretRef", "set either key (a URL) or keys (its parts), not both"))
        if not isinstance(keys, dict):
            errors.append(SpecError("database.secretRef.keys", "must map host/port/database/user/password"))
            return None
        unknown = sorted(set(keys) - set(DB_PART_KEYS))
        missing = [k for k in ("host", "database", "user") if k not in keys]
        if unknown:
            errors.append(SpecError("database.secretRef.keys", f"unknown parts {unknown}"))
        if missing:
            errors.append(SpecError("database.secretRef.keys", f"missing parts {missing}"))
        return DatabaseRef(secret_name=name, url_key=None, part_keys=dict(keys))
    return DatabaseRef(secret_name=name, url_key=ref.get("key", "url"))


def _parse_workloads(raw: Any, errors: list[SpecError]) -> list[Workload]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        errors.append(SpecError("workloads", "must be a list of {name, template}"))
        return []
    seen: set[str] = set()
    workloads = []
    for index, item in enumerate(raw):
        path = f"workloads[{index}]"
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not DNS_LABEL.match(name) or len(name) > 40:
            errors.append(SpecError(f"{path}.name", f"must be a DNS label of at most 40 characters, got {name!r}"))
            continue
        if name in seen:
            errors.append(SpecError(f"{path}.name", f"duplicate workload name {name!r}"))
        seen.add(name)
        template = item.get("template")
        if not isinstance(template, dict) or not isinstance(template.get("template"), dict):
            errors.append(SpecError(f"{path}.template", "must be a Deployment spec with a pod template"))
            continue
        containers = (template["template"].get("spec") or {}).get("containers")
        if not isinstance(containers, list) or not containers:
            errors.append(SpecError(f"{path}.template.template.spec.containers", "must list at least one container"))
            continue
        image = _optional_image(item.get("image"), f"{path}.image", errors)
        workloads.append(Workload(name=name, template=template, image=image))
    return workloads


# --- what a workload may not ask for, unless the operator allows it (Pod Security "baseline") -----------------------
# Each set below is Kubernetes' own, from k8s.io/pod-security-admission/policy at the control plane's version
# (v0.36.3, `latest`); tests/cluster/test_pod_security.py has that admission judge every refused template too.
PRIVILEGED_HINT = (
    "refused: the operator creates this pod with its own rights (docs/security.md); start "
    "divbase-operator with --allow-privileged-workloads to allow it"
)
ALLOWED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})  # what Pod Security "restricted" itself allows to add
POD_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
ALLOWED_PROFILE_TYPES = ("RuntimeDefault", "Localhost")  # seccompProfile.type, appArmorProfile.type
ALLOWED_SELINUX_TYPES = ("", "container_t", "container_init_t", "container_kvm_t", "container_engine_t")
SAFE_SYSCTLS = frozenset(
    {  # check_sysctls.go, sysctlsAllowedV1Dot32
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    }
)
HOST_HANDLERS = ("livenessProbe", "readinessProbe", "startupProbe", "lifecycle.postStart", "lifecycle.preStop")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _set(value: Any) -> bool:
    """A value Pod Security counts as set: anything but absent, null and the empty string."""
    return value is not None and value != ""


def _security_context_errors(context: dict[str, Any], path: str, errors: list[SpecError]) -> None:
    """What a pod's or a container's securityContext may not ask for (both have these fields)."""
    for profile in ("seccompProfile", "appArmorProfile"):
        value = context.get(profile)
        if isinstance(value, dict) and value.get("type") not in ALLOWED_PROFILE_TYPES:
            errors.append(SpecError(f"{path}.{profile}.type", f"{value.get('type')} is {PRIVILEGED_HINT}"))
    selinux = _dict(context.get("seLinuxOptions"))
    if selinux.get("type") is not None and selinux.get("type") not in ALLOWED_SELINUX_TYPES:
        errors.append(
            SpecError(
                f"{path}.seLinuxOptions.type",
                f"{selinux['type']} is not one of the container "
                f"types ({', '.join(ALLOWED_SELINUX_TYPES[1:])}): {PRIVILEGED_HINT}",
            )
        )
    for key in ("user", "role"):
        if _set(selinux.get(key)):
            errors.append(SpecError(f"{path}.seLinuxOptions.{key}", f"a custom SELinux {key} is {PRIVILEGED_HINT}"))
    if _dict(context.get("windowsOptions")).get("hostProcess") is True:
        errors.append(SpecError(f"{path}.windowsOptions.hostProcess", f"a Windows host process is {PRIVILEGED_HINT}"))


def _container_errors(container: dict[str, Any], where: str, errors: list[SpecError]) -> None:
    context = _dict(container.get("securityContext"))
    if context.get("privileged") is True:
        errors.append(SpecError(f"{where}.securityContext.privileged", f"true is {PRIVILEGED_HINT}"))
    added = [str(c) for c in _list(_dict(context.get("capabilities")).get("add"))]
    if set(added) - ALLOWED_CAPABILITIES:
        errors.append(
            SpecError(
                f"{where}.securityContext.capabilities.add",
                f"adding {', '.join(sorted(set(added) - ALLOWED_CAPABILITIES))} is {PRIVILEGED_HINT}",
            )
        )
    if context.get("procMount") not in (None, "Default"):
        errors.append(
            SpecError(
                f"{where}.securityContext.procMount", f"{context['procMount']} (an unmasked /proc) is {PRIVILEGED_HINT}"
            )
        )
    _security_context_errors(context, f"{where}.securityContext", errors)
    for n, port in enumerate(_list(container.get("ports"))):
        if _dict(port).get("hostPort"):
            errors.append(SpecError(f"{where}.ports[{n}].hostPort", f"binds a port of the node: {PRIVILEGED_HINT}"))
    for handler in HOST_HANDLERS:
        node = container
        for part in handler.split("."):
            node = _dict(node.get(part))
        for kind in ("httpGet", "tcpSocket"):
            if _set(_dict(node.get(kind)).get("host")):
                errors.append(
                    SpecError(
                        f"{where}.{handler}.{kind}.host", f"a probe or hook aimed at another host is {PRIVILEGED_HINT}"
                    )
                )


def _apparmor_annotation_allowed(value: Any) -> bool:
    return value == "" or value == "runtime/default" or (isinstance(value, str) and value.startswith("localhost/"))


def privileged_errors(spec: DatabaseSpec) -> list[SpecError]:
    """Every field of the workload templates that Pod Security `baseline` forbids, as Kubernetes' own checks read
    them: host namespaces, host paths and ports, privileged containers, added capabilities (stricter: all but
    NET_BIND_SERVICE), seccomp and AppArmor profiles other than RuntimeDefault/Localhost (fields or annotation),
    SELinux types, users and roles, unsafe sysctls, an unmasked /proc, Windows host processes, probes and hooks
    aimed at another host. Each names its field. Migration Jobs are built by the operator (restricted)."""
    errors: list[SpecError] = []
    for index, workload in enumerate(spec.workloads):
        pod_template = _dict(workload.template.get("template"))
        base = f"workloads[{index}].template.template"
        pod = _dict(pod_template.get("spec"))
        path = f"{base}.spec"
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(key) is True:
                errors.append(SpecError(f"{path}.{key}", f"shares a namespace of the node: {PRIVILEGED_HINT}"))
        for j, volume in enumerate(_list(pod.get("volumes"))):
            if "hostPath" in _dict(volume):
                errors.append(
                    SpecError(f"{path}.volumes[{j}].hostPath", f"mounts a path of the node: {PRIVILEGED_HINT}")
                )
        pod_context = _dict(pod.get("securityContext"))
        _security_context_errors(pod_context, f"{path}.securityContext", errors)
        for j, sysctl in enumerate(_list(pod_context.get("sysctls"))):
            name = _dict(sysctl).get("name")
            if not isinstance(name, str) or name not in SAFE_SYSCTLS:
                errors.append(
                    SpecError(
                        f"{path}.securityContext.sysctls[{j}].name",
                        f"{name} is not one of the namespaced, isolated sysctls: {PRIVILEGED_HINT}",
                    )
                )
        for key, value in _dict(_dict(pod_template.get("metadata")).get("annotations")).items():
            if str(key).startswith(_APPARMOR_ANNOTATION) and not _apparmor_annotation_allowed(value):
                errors.append(SpecError(f"{base}.metadata.annotations[{key}]", f"{value} is {PRIVILEGED_HINT}"))
        for kind in POD_CONTAINER_LISTS:
            for k, container in enumerate(_list(pod.get(kind))):
                _container_errors(_dict(container), f"{path}.{kind}[{k}]", errors)
    return errors


_IMAGE_ID_DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})$")


def pinned_image(image: str, image_id: str | None) -> str | None:
    """`image` by the digest a container runtime reported having run (a pod's containerStatuses[].imageID, such as
    `docker-pullable://ghcr.io/org/app@sha256:...` or `ghcr.io/org/app@sha256:...`), or None when it reported none
    (an image ID alone, `sha256:...`, names no manifest a registry serves)."""
    match = _IMAGE_ID_DIGEST.search(image_id or "")
    return f"{image_repository(image)}@{match.group(1)}" if match else None


def image_repository(image: str) -> str:
    """`ghcr.io/org/app` of `ghcr.io/org/app:v1` or `ghcr.io/org/app@sha256:...` (a registry port stays)."""
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def images_of(spec: DatabaseSpec) -> list[tuple[str, str]]:
    """(field, image) of every image the resource runs: spec.image, the per-workload and migration images, and any
    container of a workload template that names its own."""
    found = [("image", spec.image)]
    if spec.migration_job.image:
        found.append(("migrationJob.image", spec.migration_job.image))
    for index, workload in enumerate(spec.workloads):
        if workload.image:
            found.append((f"workloads[{index}].image", workload.image))
        pod = _dict(_dict(workload.template.get("template")).get("spec"))
        for kind in POD_CONTAINER_LISTS:
            for k, container in enumerate(_list(pod.get(kind))):
                image = _dict(container).get("image")
                if isinstance(image, str) and image:
                    found.append((f"workloads[{index}].template.template.spec.{kind}[{k}].image", image))
    return found


def service_accounts_of(spec: DatabaseSpec) -> list[tuple[str, str]]:
    """(field, ServiceAccount) the resource's pods would run as, where it names one (else the namespace's
    `default`)."""
    found = []
    if spec.migration_job.service_account_name:
        found.append(("migrationJob.serviceAccountName", spec.migration_job.service_account_name))
    for index, workload in enumerate(spec.workloads):
        pod = _dict(_dict(workload.template.get("template")).get("spec"))
        for key in ("serviceAccountName", "serviceAccount"):
            if isinstance(pod.get(key), str) and pod[key]:
                found.append((f"workloads[{index}].template.template.spec.{key}", pod[key]))
    return found
