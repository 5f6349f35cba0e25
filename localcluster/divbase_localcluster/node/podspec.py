"""Pure helpers on pod specs: environment like the kubelet builds it, `$(VAR)` expansion, unsupported fields.

Kept free of I/O (Secrets and ConfigMaps come through a lookup callable) so the rules are easy to read and test.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

from . import hooks

DEFAULT_TERMINATION_PATH = "/dev/termination-log"
SUPPORTED_VOLUMES = {"emptyDir", "secret", "configMap", "projected", "downwardAPI"}
NOOP_VOLUME_KEYS = {"name"}
# container fields that mean nothing for a local process and are accepted silently
IGNORED_CONTAINER_FIELDS = {
    "name",
    "image",
    "command",
    "args",
    "env",
    "envFrom",
    "resources",
    "resizePolicy",
    "securityContext",
    "imagePullPolicy",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "readinessProbe",
    "livenessProbe",
    "startupProbe",
    "ports",
    "volumeMounts",
    "stdin",
    "stdinOnce",
    "tty",
    "restartPolicy",
    "workingDir",
    "lifecycle",
    "volumeDevices",
    "restartPolicyRules",
}
_LABEL_PATH = re.compile(r"^metadata\.(labels|annotations)\['([^']*)'\]$")


class ConfigError(Exception):
    """A referenced Secret/ConfigMap/key is missing: the container waits with CreateContainerConfigError."""


Lookup = Callable[[str, str], dict[str, str] | None]  # (kind "Secret"|"ConfigMap", name) -> data or None


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: known names are replaced, `$$` escapes, anything else stays verbatim."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(c)
        i += 1
    return "".join(out)


def field_value(pod: dict[str, Any], path: str) -> str:
    """The downward-API value of `path` (the fieldRef paths a kubelet supports for env)."""
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": status.get("podIP", ""),
        "status.hostIP": status.get("hostIP", ""),
        "status.podIPs": ",".join(p["ip"] for p in status.get("podIPs") or []),
        "status.hostIPs": ",".join(p["ip"] for p in status.get("hostIPs") or []),
    }
    if path in simple:
        return str(simple[path])
    m = _LABEL_PATH.match(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    raise ConfigError(f"unsupported fieldRef fieldPath {path!r}")


def _source(lookup: Lookup, kind: str, name: str, optional: bool) -> dict[str, str] | None:
    data = lookup(kind, name)
    if data is None and not optional:
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    return data


def container_env(
    pod: dict[str, Any], container: dict[str, Any], lookup: Lookup, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The container's env in kubelet order: `base` (the service variables a kubelet adds), envFrom sources, then
    `env` (each value expanded with the vars defined before it). Raises ConfigError with a kubelet-like message for
    a missing non-optional reference."""
    env: dict[str, str] = dict(base or {})
    for src in container.get("envFrom") or []:
        env.update(_env_from(lookup, src))
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        value = _value_from(pod, lookup, var["valueFrom"])
        if value is not None:
            env[name] = value
    return env


def _env_from(lookup: Lookup, src: dict[str, Any]) -> dict[str, str]:
    """The variables of one envFrom source (a Secret and/or a ConfigMap), with its prefix."""
    prefix, env = src.get("prefix", ""), {}
    for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
        ref = src.get(key)
        if ref:
            data = _source(lookup, kind, ref.get("name", ""), bool(ref.get("optional")))
            env.update({prefix + k: v for k, v in (data or {}).items()})
    return env


def _value_from(pod: dict[str, Any], lookup: Lookup, vf: dict[str, Any]) -> str | None:
    """The value of an env var's valueFrom; None leaves it unset (an optional reference that is missing;
    resourceFieldRef and unknown sources, which unsupported_fields reports)."""
    if "fieldRef" in vf:
        return field_value(pod, vf["fieldRef"]["fieldPath"])
    for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
        ref = vf.get(key)
        if ref is None:
            continue
        optional = bool(ref.get("optional"))
        data = _source(lookup, kind, ref.get("name", ""), optional)
        if data is None:
            return None
        if ref["key"] not in data:
            if optional:
                return None
            ns = pod["metadata"]["namespace"]
            raise ConfigError(f"couldn't find key {ref['key']} in {kind} {ns}/{ref.get('name', '')}")
        return data[ref["key"]]
    return None


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    """A Secret's data decoded (stringData never reaches the API object; binary values are decoded leniently)."""
    return {k: base64.b64decode(v).decode(errors="replace") for k, v in (secret.get("data") or {}).items()}


def configmap_data(cm: dict[str, Any]) -> dict[str, str]:
    return dict(cm.get("data") or {})


def unsupported_fields(pod: dict[str, Any]) -> list[str]:
    """Field paths of the pod spec this agent cannot honour (reported as a pod condition, never fatal).

    Silently accepted as no-ops: resources, securityContext (runAsNonRoot, readOnlyRootFilesystem, capabilities,
    seccompProfile, ...), imagePullPolicy/Secrets, scheduling fields, volumeMounts of supported volumes (volumes
    live under the pod directory, see $DIVBASE_VOLUMES_DIR), ports without hostPort.
    """
    spec = pod.get("spec", {})
    found = [f"spec.{k}" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    found += [f"spec.{k}" for k in ("hostAliases", "readinessGates", "ephemeralContainers") if spec.get(k)]
    for i, vol in enumerate(spec.get("volumes") or []):
        kinds = set(vol) - NOOP_VOLUME_KEYS
        found += [f"spec.volumes[{i}].{k}" for k in sorted(kinds - SUPPORTED_VOLUMES)]
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            found += _container_fields(pod, c, f"spec.{group}[{i}]", init=group == "initContainers")
    return found


def _container_fields(pod: dict[str, Any], c: dict[str, Any], at: str, init: bool) -> list[str]:
    """unsupported_fields of one container at path `at`."""
    found = ["restartPolicy"] if init and c.get("restartPolicy") == "Always" else []
    found += ["workingDir"] if c.get("workingDir") else []
    found += [f"lifecycle.{k}" for k in hooks.unsupported_handler_fields(c.get("lifecycle") or {})]
    found += ["volumeDevices"] if c.get("volumeDevices") else []
    found += [f"ports[{j}].hostPort" for j, p in enumerate(c.get("ports") or []) if p.get("hostPort")]
    found += _unsupported_env(pod, c.get("env") or [])
    found += _unsupported_probes(c)
    found += sorted(set(c) - IGNORED_CONTAINER_FIELDS)
    return [f"{at}.{k}" for k in found]


def _unsupported_probes(c: dict[str, Any]) -> list[str]:
    return [
        f"{probe}.grpc"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe")
        if "grpc" in (c.get(probe) or {})
    ]


def _unsupported_env(pod: dict[str, Any], env: list[dict[str, Any]]) -> list[str]:
    return [
        f"env[{j}].valueFrom.{k}"
        for j, var in enumerate(env)
        for k in _unsupported_value_from(pod, var.get("valueFrom") or {})
    ]


def _unsupported_value_from(pod: dict[str, Any], vf: dict[str, Any]) -> list[str]:
    """Paths (relative to valueFrom) container_env cannot resolve: other sources, fieldRef paths it does not know."""
    found = [k for k in vf if k not in ("fieldRef", "secretKeyRef", "configMapKeyRef")]
    fr = vf.get("fieldRef")
    if fr:
        try:
            field_value(pod, fr.get("fieldPath", ""))
        except ConfigError:
            found.append("fieldRef.fieldPath")
    return found
