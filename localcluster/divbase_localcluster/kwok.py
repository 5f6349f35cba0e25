"""kwok fake nodes for scale tests: thousands of pods without running a process per pod.

kwok runs as a controller against the cluster and manages only Nodes annotated ``kwok.x-k8s.io/node: fake``. Its
stages (copied from kwok's own `kustomize/stage` "fast" set at build time) make pods on those nodes Running at once,
Job-owned pods Succeeded, and deleted pods vanish; nodes get a Lease so the node-lifecycle controller keeps them
Ready.

The fake nodes carry the label ``type: kwok`` and the taint ``kwok.x-k8s.io/node=fake:NoSchedule``, so ordinary
pods keep landing on the real node agent. A pod that should run on kwok needs both::

    nodeSelector: {type: kwok}
    tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .goenv import go_env, go_source_dir

ANNOTATION = "kwok.x-k8s.io/node"
LABEL = {"type": "kwok"}
TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
STAGE_FILES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)
STAGES_NAME = "kwok-stages.yaml"  # next to the build's bin directory (build.py writes it)


class Binaries(Protocol):
    """What `argv` needs of build.Binaries (kwok does not import build: build imports kwok)."""

    @property
    def bin_dir(self) -> Path: ...

    def __getitem__(self, name: str) -> Path: ...


def write_stages(dest: Path, version: str) -> Path:
    """Concatenate kwok's default stages (the ones `kwokctl` would load) from its module source (sigs.k8s.io/kwok at
    `version`) into `dest`.

    The standalone `kwok` binary ships no stages: without a config it refuses to start ("no stages found").
    """
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"sigs.k8s.io/kwok@{version}"],
        capture_output=True,
        text=True,
        check=True,
        cwd=go_source_dir(),
        env=go_env(),
    )
    stage_dir = Path(json.loads(out.stdout)["Dir"]) / "kustomize" / "stage"
    docs = [(stage_dir / f).read_text().strip() for f in STAGE_FILES]
    dest.write_text("\n---\n".join(docs) + "\n")
    return dest


def argv(bins: Binaries, kubeconfig: Path) -> list[str]:
    """Command line of the kwok controller for one cluster (no server port: nothing here needs logs/exec)."""
    return [
        str(bins["kwok"]),
        f"--kubeconfig={kubeconfig}",
        f"--config={bins.bin_dir.parent / STAGES_NAME}",
        f"--manage-nodes-with-annotation-selector={ANNOTATION}=fake",
        "--cidr=10.64.0.0/12",  # room for a million fake pod IPs
        "--node-lease-duration-seconds=40",
        "--node-ip=10.63.0.1",  # reported only; nothing connects to fake nodes
    ]


def node_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                **LABEL,
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
            },
        },
        "spec": {"taints": [TAINT]},
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
        },
    }


def create_nodes(
    post: Callable[[dict[str, Any]], tuple[int, bytes]], count: int, prefix: str = "kwok-node-"
) -> list[str]:
    """Create `count` fake nodes through `post` (POST /api/v1/nodes as admin); returns their names."""
    names = []
    for i in range(count):
        name = f"{prefix}{i}"
        code, body = post(node_body(name))
        if code not in (201, 409):
            raise RuntimeError(f"creating kwok node {name} failed ({code}): {body[:500]!r}")
        names.append(name)
    return names
