"""A pod's volumes as directories: emptyDir empty, secret/configMap (also as sources of projected) their keys as files.

Volume `<name>` lives at $DIVBASE_VOLUMES_DIR/<name>; volumeMounts' mountPath is not honoured. Projected
serviceAccountToken sources are skipped (no token is written; node/serviceaccount.py provides API access).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import podspec

Lookup = Callable[[str, str], "dict[str, str] | None"]  # (kind, name) -> data, None: not found; may raise ConfigError


def sources(vol: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(kind, reference) of each Secret and ConfigMap the volume draws on, in the order they are written."""
    found: list[tuple[str, dict[str, Any]]] = []
    if "secret" in vol:
        found.append(("Secret", {**vol["secret"], "name": vol["secret"].get("secretName", "")}))
    if "configMap" in vol:
        found.append(("ConfigMap", vol["configMap"]))
    for src in (vol.get("projected") or {}).get("sources") or []:
        found += [(kind, src[key]) for kind, key in (("Secret", "secret"), ("ConfigMap", "configMap")) if key in src]
    return found


def _write(d: Path, kind: str, ref: dict[str, Any], data: dict[str, str]) -> None:
    items = ref.get("items") or [{"key": k, "path": k} for k in data]
    for item in items:
        if item["key"] in data:
            f = d / item["path"]
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(data[item["key"]])
            f.chmod(0o600 if kind == "Secret" else 0o644)


def materialize(volumes: list[dict[str, Any]], root: Path, lookup: Lookup) -> str:
    """Write every volume under `root`; "" when done, else the kubelet's MountVolume.SetUp message of the first
    source that is missing and not optional (the caller retries)."""
    for vol in volumes:
        d = root / vol["name"]
        d.mkdir(parents=True, exist_ok=True)
        for kind, ref in sources(vol):
            name = ref.get("name", "")
            try:
                data, err = lookup(kind, name), f'{kind.lower()} "{name}" not found'
            except podspec.ConfigError as e:
                data, err = None, str(e)
            if data is not None:
                _write(d, kind, ref, data)
            elif not ref.get("optional"):
                return f'MountVolume.SetUp failed for volume "{vol["name"]}" : {err}'
    return ""
